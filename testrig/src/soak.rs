//! Observers for the fault-injection soak (`tests/it/soak.rs`): what a test
//! reads from outside the supervisors to check the invariants of issue 20
//! while faults are injected. Nothing here changes the system under test.
//!
//! - [`Verified`]: the SHA-256 of every binary the mirror really published
//!   (the stand-in stamped per version), computed by the test from its own
//!   inputs, so a tampered download can never be counted as verified.
//! - [`scan_releases`]: a releases dir holds, under every non-temporary
//!   name, only whole verified binaries; `current`/`previous` resolve.
//! - [`agent_processes`] + [`ExeHashes`]: every agent process running from
//!   under a work dir, and the hash of the file it executes
//!   (`/proc/<pid>/exe`, readable even when the file was replaced).
//! - [`proc_stats`]: RSS and open descriptors of a process.
//! - [`EventLog`]: the stand-in event log (standin/README "Event log"),
//!   split into runs: which stops were graceful, when each agent was down.
//! - [`RssSeries`]: RSS and descriptor samples of one supervisor process,
//!   and whether they grew after a warm-up.
//! - [`Membership`] + [`max_upgrade_down`]: the stand-ins' membership log
//!   (standin/README "Membership log"): how many servers of a cluster were
//!   down at once for an upgrade.
//!
//! Test support only: the agents observed are stand-ins, never the real
//! Consul or Nomad.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::mirror::stamp_standin_version;

/// Prefix of the supervisor's temporary names (its `release::fsutil`):
/// staged files are invisible until renamed into place.
pub const TEMP_PREFIX: &str = ".tmp-";

/// The binaries the mirror published: SHA-256 (hex) to `(product,
/// version)`.
#[derive(Debug, Clone, Default)]
pub struct Verified {
    by_hash: HashMap<String, (String, String)>,
}

impl Verified {
    /// The stand-in at `standin`, stamped with each `(product, version)`
    /// as [`crate::mirror::MirrorBuilder`] stamps it.
    pub fn from_standin(standin: &Path, versions: &[(String, String)]) -> std::io::Result<Self> {
        let base = std::fs::read(standin)?;
        let mut by_hash = HashMap::new();
        for (product, version) in versions {
            let mut bin = base.clone();
            stamp_standin_version(&mut bin, version);
            by_hash.insert(
                hex::encode(Sha256::digest(&bin)),
                (product.clone(), version.clone()),
            );
        }
        Ok(Verified { by_hash })
    }

    /// What the binary of this hash is, if the mirror published it.
    pub fn lookup(&self, sha256: &str) -> Option<(&str, &str)> {
        self.by_hash
            .get(sha256)
            .map(|(p, v)| (p.as_str(), v.as_str()))
    }
}

/// SHA-256 (hex) of everything `r` yields.
pub fn sha256_reader(mut r: impl Read) -> std::io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Hashes of files seen, keyed by identity (device, inode, size, mtime),
/// so a sampler hashes each installed binary once.
#[derive(Debug, Default)]
pub struct ExeHashes {
    seen: HashMap<(u64, u64, u64, i64, i64), String>,
}

impl ExeHashes {
    /// SHA-256 of the file at `path` (following symlinks, so
    /// `/proc/<pid>/exe` is the executed file), from the cache when its
    /// identity was seen.
    pub fn hash(&mut self, path: &Path) -> std::io::Result<String> {
        use std::os::unix::fs::MetadataExt;
        let file = std::fs::File::open(path)?;
        let m = file.metadata()?;
        let key = (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec());
        if let Some(h) = self.seen.get(&key) {
            return Ok(h.clone());
        }
        let h = sha256_reader(file)?;
        self.seen.insert(key, h.clone());
        Ok(h)
    }
}

/// Checks one releases dir (`<state>/releases`): every
/// `<product>/<version>/<product>` is a whole binary the mirror published
/// as that product and version, and `current`/`previous` point to a
/// version dir holding one. Temporary names ([`TEMP_PREFIX`]) are not
/// visible and skipped. Returns each problem found.
pub fn scan_releases(dir: &Path, verified: &Verified, hashes: &mut ExeHashes) -> Vec<String> {
    let mut problems = Vec::new();
    let Ok(products) = std::fs::read_dir(dir) else {
        return problems;
    };
    for p in products.flatten() {
        let product = p.file_name().to_string_lossy().into_owned();
        if product.starts_with(TEMP_PREFIX) || !p.path().is_dir() {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(p.path()) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(TEMP_PREFIX) {
                continue;
            }
            let path = e.path();
            let is_link = e.file_type().is_ok_and(|t| t.is_symlink());
            if is_link {
                // A pointer switched atomically: it must resolve, and to a
                // version dir (checked below through its own name).
                match std::fs::read_link(&path) {
                    Ok(target) => {
                        let bin = p.path().join(&target).join(&product);
                        // The pointed-to dir may be pruned between the two
                        // reads only if the pointer moved too: re-read it.
                        if !bin.is_file() && std::fs::read_link(&path).ok() == Some(target.clone())
                        {
                            problems.push(format!(
                                "{} -> {} has no {product} binary",
                                path.display(),
                                target.display()
                            ));
                        }
                    }
                    Err(err) => problems.push(format!("{}: {err}", path.display())),
                }
                continue;
            }
            if !path.is_dir() {
                continue;
            }
            let bin = path.join(&product);
            match hashes.hash(&bin) {
                Ok(h) => match verified.lookup(&h) {
                    Some((vp, vv)) if vp == product && vv == name => {}
                    Some((vp, vv)) => problems.push(format!(
                        "{} is the {vp} {vv} binary, not {product} {name}",
                        bin.display()
                    )),
                    None => problems.push(format!(
                        "{} (sha256 {h}) is no binary the mirror published",
                        bin.display()
                    )),
                },
                // Not there (yet, or pruned): nothing visible to judge.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => problems.push(format!("{}: {e}", bin.display())),
            }
        }
    }
    problems
}

/// One agent process found in `/proc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentProc {
    /// Its pid.
    pub pid: i32,
    /// Its parent's pid.
    pub ppid: i32,
    /// `/proc/<pid>/exe` as the kernel shows it (may end ` (deleted)`).
    pub exe: PathBuf,
}

/// Every process whose executable lies under `root` (e.g. a demo's work
/// dir: the agents run from `<node>/state/releases/...`).
pub fn agent_processes(root: &Path) -> Vec<AgentProc> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(exe) = std::fs::read_link(e.path().join("exe")) else {
            continue;
        };
        if !exe.starts_with(root) {
            continue;
        }
        let Some(ppid) = parent_pid(pid) else {
            continue;
        };
        out.push(AgentProc { pid, ppid, exe });
    }
    out.sort_by_key(|p| p.pid);
    out
}

/// The parent of `pid` (`/proc/<pid>/stat`, field 4), while it lives.
pub fn parent_pid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields
    // after it start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Resident set size (KiB) and open descriptors of a live process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStats {
    /// `VmRSS` in KiB.
    pub rss_kib: u64,
    /// Entries of `/proc/<pid>/fd`.
    pub fds: u64,
}

/// [`ProcStats`] of `pid`, while it lives.
pub fn proc_stats(pid: u32) -> Option<ProcStats> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(ProcStats { rss_kib, fds })
}

/// Samples of one supervisor process.
#[derive(Debug, Clone)]
pub struct RssSeries {
    /// Node it runs on.
    pub node: String,
    /// Its pid.
    pub pid: u32,
    /// `(time since the series began, stats)`.
    pub samples: Vec<(Duration, ProcStats)>,
    began: Instant,
}

impl RssSeries {
    /// An empty series for the supervisor `pid` of `node`.
    pub fn new(node: &str, pid: u32) -> Self {
        RssSeries {
            node: node.to_string(),
            pid,
            samples: Vec::new(),
            began: Instant::now(),
        }
    }

    /// Adds a sample taken now.
    pub fn push(&mut self, s: ProcStats) {
        self.samples.push((self.began.elapsed(), s));
    }

    /// How long the series covers.
    pub fn span(&self) -> Duration {
        self.samples.last().map(|s| s.0).unwrap_or_default()
    }

    /// The first sample after `warm_up` and the last one.
    pub fn settled_and_last(&self, warm_up: Duration) -> Option<(ProcStats, ProcStats)> {
        let first = self.samples.iter().find(|s| s.0 >= warm_up)?.1;
        let last = self.samples.last()?.1;
        Some((first, last))
    }

    /// Whether the process grew past `warm_up`: the median of the last
    /// third of the samples against the median of the first third after
    /// warm-up, beyond `rss_slack_kib` + `rss_ratio` × the earlier RSS, or
    /// `fd_slack` descriptors. `None` when too few samples to judge.
    pub fn growth(
        &self,
        warm_up: Duration,
        rss_ratio: f64,
        rss_slack_kib: u64,
        fd_slack: u64,
    ) -> Option<Result<(), String>> {
        let after: Vec<ProcStats> = self
            .samples
            .iter()
            .filter(|s| s.0 >= warm_up)
            .map(|s| s.1)
            .collect();
        if after.len() < 9 {
            return None;
        }
        let third = after.len() / 3;
        let median = |v: &[ProcStats], f: fn(&ProcStats) -> u64| {
            let mut x: Vec<u64> = v.iter().map(f).collect();
            x.sort_unstable();
            x[x.len() / 2]
        };
        let early = &after[..third];
        let late = &after[after.len() - third..];
        let (rss0, rss1) = (median(early, |s| s.rss_kib), median(late, |s| s.rss_kib));
        let (fd0, fd1) = (median(early, |s| s.fds), median(late, |s| s.fds));
        let rss_allowed = rss0 as f64 * (1.0 + rss_ratio) + rss_slack_kib as f64;
        let mut why = String::new();
        if rss1 as f64 > rss_allowed {
            let _ = write!(
                why,
                "RSS grew from {rss0} KiB to {rss1} KiB (allowed {rss_allowed:.0}); "
            );
        }
        if fd1 > fd0 + fd_slack {
            let _ = write!(why, "descriptors grew from {fd0} to {fd1}; ");
        }
        Some(if why.is_empty() { Ok(()) } else { Err(why) })
    }
}

/// One start-to-stop life of an agent in a stand-in event log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Run {
    /// Its pid (`start pid=`).
    pub pid: i32,
    /// `consul` or `nomad`.
    pub product: String,
    /// The version it ran as.
    pub version: String,
    /// Every event line after `start`, in order.
    pub events: Vec<String>,
    /// Its exit code (`exit <code>`); `None` while running or when killed.
    pub exit: Option<i32>,
    /// Line numbers (0-based) of its first and last line in the log.
    pub lines: (usize, usize),
}

impl Run {
    /// Whether the agent's end was orderly: it exited by itself (an
    /// `exit` line) after a stop signal (SIGINT/SIGTERM; with or without
    /// a leave, as its config says), or it failed before `ready` (a
    /// release that cannot start). A run without `exit` was SIGKILLed.
    pub fn is_orderly_end(&self) -> bool {
        if self.exit.is_none() {
            return false;
        }
        let signalled = self
            .events
            .iter()
            .any(|e| e == "signal SIGINT" || e == "signal SIGTERM");
        let ready = self.events.iter().any(|e| e == "ready");
        signalled || !ready
    }
}

/// A stand-in event log split into runs.
#[derive(Debug, Clone, Default)]
pub struct EventLog {
    /// The runs, in order.
    pub runs: Vec<Run>,
}

impl EventLog {
    /// Parses an event log's text. Lines before the first `start` are
    /// ignored; a `start` begins a run.
    pub fn parse(text: &str) -> EventLog {
        let mut runs: Vec<Run> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("start ") {
                let mut run = Run {
                    lines: (i, i),
                    ..Run::default()
                };
                for kv in rest.split_whitespace() {
                    match kv.split_once('=') {
                        Some(("pid", v)) => run.pid = v.parse().unwrap_or(0),
                        Some(("product", v)) => run.product = v.to_string(),
                        Some(("version", v)) => run.version = v.to_string(),
                        _ => {}
                    }
                }
                runs.push(run);
                continue;
            }
            let Some(run) = runs.last_mut() else {
                continue;
            };
            run.lines.1 = i;
            if let Some(code) = line.strip_prefix("exit ") {
                run.exit = code.trim().parse().ok();
            }
            run.events.push(line.to_string());
        }
        EventLog { runs }
    }

    /// Reads and parses the log at `path` (a missing file: no runs).
    pub fn read(path: &Path) -> EventLog {
        EventLog::parse(&std::fs::read_to_string(path).unwrap_or_default())
    }
}

/// One line of the stand-ins' membership log (standin/README "Membership
/// log"): `server-up|server-down|client-up|client-down <product> <node>
/// <version> <unix_ms>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// `false` for a client agent's line (`client-up`, `client-down`).
    pub server: bool,
    /// `true` for `server-up` (`client-up`).
    pub up: bool,
    /// `consul` or `nomad`.
    pub product: String,
    /// The server's node name.
    pub node: String,
    /// Its version.
    pub version: String,
    /// When, in Unix milliseconds.
    pub unix_ms: u64,
}

impl Membership {
    /// Parses the log's text; other lines are skipped.
    pub fn parse_log(text: &str) -> Vec<Membership> {
        text.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let (server, up) = match *f.first()? {
                    "server-up" => (true, true),
                    "server-down" => (true, false),
                    "client-up" => (false, true),
                    "client-down" => (false, false),
                    _ => return None,
                };
                Some(Membership {
                    server,
                    up,
                    product: f.get(1)?.to_string(),
                    node: f.get(2)?.to_string(),
                    version: f.get(3)?.to_string(),
                    unix_ms: f.get(4)?.parse().ok()?,
                })
            })
            .collect()
    }
}

/// The most servers of one cluster (`product` on `nodes`) down at once
/// for an upgrade: a server is down for an upgrade from its `server-down`
/// to its next `server-up` when that one has another version (a restart on
/// the same version, a kill or a partition is not an upgrade). Returns the
/// maximum and when it was first reached (Unix ms).
pub fn max_upgrade_down(log: &[Membership], product: &str, nodes: &[String]) -> (usize, u64) {
    let mut edges: Vec<(u64, i32)> = Vec::new();
    for node in nodes {
        let mine: Vec<&Membership> = log
            .iter()
            .filter(|m| m.server && m.product == product && &m.node == node)
            .collect();
        let mut down: Option<&Membership> = None;
        for m in mine {
            match (m.up, down) {
                (false, None) => down = Some(m),
                (true, Some(d)) => {
                    if d.version != m.version {
                        edges.push((d.unix_ms, 1));
                        edges.push((m.unix_ms, -1));
                    }
                    down = None;
                }
                _ => {}
            }
        }
    }
    // At one instant a server coming up counts before another going down.
    edges.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut cur, mut max, mut at) = (0i32, 0i32, 0u64);
    for (t, d) in edges {
        cur += d;
        if cur > max {
            max = cur;
            at = t;
        }
    }
    (usize::try_from(max).unwrap_or(0), at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_logs_split_into_runs_and_stops_are_judged() {
        let log = EventLog::parse(
            "ready\n\
             start pid=10 product=nomad version=1.10.4\n\
             ready\nsignal SIGTERM\nleave\nexit 0\n\
             start pid=11 product=nomad version=1.10.5\n\
             ready\n\
             start pid=12 product=nomad version=1.10.5\n\
             exit 1\n\
             start pid=13 product=nomad version=1.10.5\n\
             ready\nsignal SIGINT\nexit 1\n\
             start pid=14 product=nomad version=1.10.5\n\
             ready\nexit 2\n",
        );
        assert_eq!(log.runs.len(), 5);
        assert_eq!(log.runs[0].pid, 10);
        assert_eq!(log.runs[0].version, "1.10.4");
        assert!(log.runs[0].is_orderly_end(), "leave then exit");
        assert_eq!(log.runs[1].exit, None);
        assert!(!log.runs[1].is_orderly_end(), "killed: no exit line");
        assert!(log.runs[2].is_orderly_end(), "failed at start");
        assert!(
            log.runs[3].is_orderly_end(),
            "a server that does not leave exits 1 after SIGINT"
        );
        assert_eq!(log.runs[3].lines, (10, 13));
        assert!(!log.runs[4].is_orderly_end(), "crashed after ready");
    }

    #[test]
    fn upgrade_downtime_overlaps_are_counted_per_cluster() {
        let text = "\
            server-up nomad a 1.10.4 1000\n\
            server-up nomad b 1.10.4 1000\n\
            server-up nomad c 1.10.4 1000\n\
            server-up consul a 1.21.4 1000\n\
            server-down nomad a 1.10.4 10000\n\
            garbage line\n\
            server-down consul a 1.21.4 10100\n\
            server-up nomad a 1.11.0 10500\n\
            server-up consul a 1.22.0 10600\n\
            server-down nomad b 1.10.4 10500\n\
            server-up nomad b 1.11.0 11000\n\
            server-down nomad c 1.10.4 12000\n\
            server-up nomad c 1.10.4 13000\n\
            client-down nomad c 1.10.4 10200\n\
            client-up nomad c 1.11.0 10300\n";
        let log = Membership::parse_log(text);
        assert_eq!(log.len(), 14);
        assert!(!log[13].server && log[13].up);
        let nomad: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        // a's upgrade ends as b's begins (same ms): one at a time; c's
        // restart on the same version is no upgrade.
        assert_eq!(max_upgrade_down(&log, "nomad", &nomad), (1, 10000));
        let mut overlap = log.clone();
        overlap.push(Membership {
            server: true,
            up: false,
            product: "nomad".into(),
            node: "c".into(),
            version: "1.10.4".into(),
            unix_ms: 10200,
        });
        overlap.push(Membership {
            server: true,
            up: true,
            product: "nomad".into(),
            node: "c".into(),
            version: "1.11.0".into(),
            unix_ms: 10300,
        });
        overlap.sort_by_key(|m| (m.node.clone(), m.unix_ms));
        assert_eq!(max_upgrade_down(&overlap, "nomad", &nomad), (2, 10200));
        assert_eq!(max_upgrade_down(&log, "consul", &nomad[..1]), (1, 10100));
        assert_eq!(max_upgrade_down(&[], "nomad", &nomad), (0, 0));
    }

    #[test]
    fn growth_is_judged_after_warm_up_on_medians() {
        let mut s = RssSeries::new("n", 1);
        for i in 0..30u64 {
            s.samples.push((
                Duration::from_secs(i),
                ProcStats {
                    rss_kib: if i < 5 { 100_000 } else { 10_000 + i },
                    fds: 20,
                },
            ));
        }
        assert_eq!(s.growth(Duration::from_secs(5), 0.2, 1024, 8), Some(Ok(())));
        s.samples.push((
            Duration::from_secs(31),
            ProcStats {
                rss_kib: 1,
                fds: 20,
            },
        ));
        for i in 31..60u64 {
            s.samples.push((
                Duration::from_secs(i),
                ProcStats {
                    rss_kib: 10_000 + i * 1000,
                    fds: 20 + i,
                },
            ));
        }
        let why = s
            .growth(Duration::from_secs(5), 0.2, 1024, 8)
            .expect("enough samples")
            .expect_err("grew");
        assert!(
            why.contains("RSS grew") && why.contains("descriptors grew"),
            "{why}"
        );
        assert_eq!(s.growth(Duration::from_secs(58), 0.2, 1024, 8), None);
    }

    #[test]
    fn releases_hold_only_published_binaries() {
        let dir = tempfile::tempdir().expect("temp dir");
        let standin = dir.path().join("standin");
        let mut bin = b"ELF".to_vec();
        bin.extend_from_slice(crate::mirror::STANDIN_VERSION_SLOT_MARKER);
        bin.extend_from_slice(&[0u8; 64]);
        std::fs::write(&standin, &bin).expect("write");
        let verified = Verified::from_standin(
            &standin,
            &[
                ("nomad".into(), "1.10.4".into()),
                ("nomad".into(), "1.10.5".into()),
            ],
        )
        .expect("hash");
        let rel = dir.path().join("releases");
        let write_version = |v: &str, data: &[u8]| {
            let d = rel.join("nomad").join(v);
            std::fs::create_dir_all(&d).expect("mkdir");
            std::fs::write(d.join("nomad"), data).expect("write");
        };
        let mut stamped = bin.clone();
        stamp_standin_version(&mut stamped, "1.10.4");
        write_version("1.10.4", &stamped);
        std::os::unix::fs::symlink("1.10.4", rel.join("nomad/current")).expect("link");
        std::fs::write(rel.join("nomad/.tmp-half"), b"EL").expect("write");
        let mut hashes = ExeHashes::default();
        assert_eq!(
            scan_releases(&rel, &verified, &mut hashes),
            Vec::<String>::new()
        );
        // The 1.10.4 binary under 1.10.5's name, a half-written one, a
        // dangling pointer.
        write_version("1.10.5", &stamped);
        write_version("1.10.6", b"EL");
        std::os::unix::fs::symlink("1.9.0", rel.join("nomad/previous")).expect("link");
        let problems = scan_releases(&rel, &verified, &mut hashes);
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn parent_pids_and_stats_of_this_process_are_read() {
        let me = std::process::id();
        let stats = proc_stats(me).expect("own stats");
        assert!(stats.rss_kib > 0 && stats.fds > 0);
        let ppid = parent_pid(i32::try_from(me).expect("pid fits")).expect("own parent");
        assert!(ppid > 0);
    }
}

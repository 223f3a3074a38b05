//! Fault-injection soak (issue 20): the five-node reference scenario
//! (`hashi_testrig::demo`, real `supervisor` binaries in network
//! namespaces, **stand-in** agents: test support, not the real Consul or
//! Nomad) under a seeded storm of random faults for `SOAK_SECONDS` (300 by
//! default; `SOAK_SEED` replays a run, the seed is always printed):
//!
//! - an agent SIGKILLed; a supervisor SIGKILLed (its agents orphaned) and
//!   started again;
//! - SIGHUP after a valid role change, and after an invalid role file
//!   (then the valid one restored and SIGHUP again);
//! - a version change (SIGHUP) with a clean mirror, with a mirror dropping
//!   the download's connection, and to a version the mirror only ever
//!   serves tampered (the node must keep its version; the role is then
//!   put back);
//! - the WAN link between the datacenters cut, then healed;
//! - a node disappearing (supervisor stopped, its network down), then back;
//! - with the upgrade gate (UPGRADE's branch; detected from `supervisor
//!   --help`, or `SOAK_GATE=1`): a new version on every node at once.
//!
//! A sampler thread checks throughout: every rendered config file parses;
//! every release dir holds only whole binaries the mirror published (the
//! test hashes the stand-in per version itself); every running agent
//! executes such a binary; the supervisors' RSS and descriptors. After each
//! fault the cluster must re-converge within a bound (every node ready on
//! its expected versions, leaders, members, no orphan agent). At the end:
//! every agent stop was orderly unless the test killed it (stand-in event
//! logs), at most one Nomad server down for an upgrade at a time (asserted
//! with the gate, reported without), no agent process left after the
//! supervisors stop, no supervisor grew past warm-up. The report (faults by
//! kind, durations, RSS over time) goes to stderr and to `SOAK_REPORT`
//! (default `target/tmp/soak-report.txt`).
//!
//! Needs root, `ip`: a missing one fails the test. Ignored by the README's
//! test command (it runs ~6 minutes); run it with
//! `cargo nextest run -p hashi-supervisor --test it --run-ignored only -E 'test(/^soak::/)' --no-capture`
//! (what `.ci/run` does) or `cargo test --test it soak:: -- --ignored --nocapture`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hashi_testrig::demo::{Demo, DemoExtras, DemoOptions, Security, reference_demo_nodes};
use hashi_testrig::mirror::{Fault, MirrorControl, zip_path};
use hashi_testrig::soak::{
    EventLog, ExeHashes, Membership, RssSeries, Verified, agent_processes, max_upgrade_down,
    proc_stats, scan_releases,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::Value;

use crate::support::{standin::standin_bin, supervisor_bin};

/// Default soak length once the cluster is ready.
const DEFAULT_SECONDS: u64 = 300;
/// Debug supervisors on two shared cores: first readiness.
const READY_WITHIN: Duration = Duration::from_secs(420);
/// Bound on re-convergence after one fault.
const CONVERGE_WITHIN: Duration = Duration::from_secs(180);
/// How long a node may take to report a tampered download.
const TAMPERED_WAIT: Duration = Duration::from_secs(30);
/// Bound on a graceful supervisor stop.
const STOP_WITHIN: Duration = Duration::from_secs(60);
/// Sampler period (a sampling rate, not a wait).
const SAMPLE_EVERY: Duration = Duration::from_millis(500);
/// Poll period while waiting for a condition.
const POLL: Duration = Duration::from_millis(250);
/// Samples of a supervisor younger than this are its start-up.
const WARM_UP: Duration = Duration::from_secs(60);
/// Growth allowed after warm-up: 25 % + 4 MiB of RSS, 16 descriptors.
const RSS_RATIO: f64 = 0.25;
const RSS_SLACK_KIB: u64 = 4096;
const FD_SLACK: u64 = 16;
/// The Nomad servers of region `eu` in the reference scenario.
const NOMAD_SERVERS: u64 = 3;

/// Versions on the mirror, the examples' first: the good ones...
const CONSUL_VERSIONS: [&str; 3] = ["1.21.4", "1.21.5", "1.22.0"];
const NOMAD_VERSIONS: [&str; 3] = ["1.10.4", "1.10.5", "1.11.0"];
/// ...and one per product the mirror only ever serves tampered.
const CONSUL_TAMPERED: &str = "1.21.9";
const NOMAD_TAMPERED: &str = "1.10.9";
/// Offset of the byte flipped in a tampered zip (inside the deflated
/// binary: the zip no longer matches its signed SHA-256).
const TAMPER_AT: u64 = 4096;
/// The release zips' architecture on this machine.
const ARCH: &str = if cfg!(target_arch = "aarch64") {
    "arm64"
} else {
    "amd64"
};

/// What the soak does to the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum FaultKind {
    AgentKill,
    SupervisorKill,
    SighupValid,
    SighupInvalid,
    Upgrade,
    UpgradeMirrorDrops,
    UpgradeTampered,
    Partition,
    NodeDisappears,
    FleetUpgrade,
}

impl FaultKind {
    const ALL: [FaultKind; 10] = [
        FaultKind::AgentKill,
        FaultKind::SupervisorKill,
        FaultKind::SighupValid,
        FaultKind::SighupInvalid,
        FaultKind::Upgrade,
        FaultKind::UpgradeMirrorDrops,
        FaultKind::UpgradeTampered,
        FaultKind::Partition,
        FaultKind::NodeDisappears,
        FaultKind::FleetUpgrade,
    ];

    fn name(self) -> &'static str {
        match self {
            FaultKind::AgentKill => "agent SIGKILL",
            FaultKind::SupervisorKill => "supervisor SIGKILL + restart",
            FaultKind::SighupValid => "SIGHUP, valid role change",
            FaultKind::SighupInvalid => "SIGHUP, invalid role file",
            FaultKind::Upgrade => "version change",
            FaultKind::UpgradeMirrorDrops => "version change, mirror drops connections",
            FaultKind::UpgradeTampered => "version change, mirror serves tampered zip",
            FaultKind::Partition => "WAN partition ams2 | lon1",
            FaultKind::NodeDisappears => "node disappears + returns",
            FaultKind::FleetUpgrade => "fleet-wide version change (gate)",
        }
    }
}

/// What the sampler thread sees, shared with the driver.
#[derive(Default)]
struct Observed {
    /// Invariant violations seen by the sampler: `(seconds, what)`.
    violations: Vec<(f64, String)>,
    /// One series per supervisor process (a restart starts a new one).
    rss: Vec<RssSeries>,
    /// The supervisors to sample: node -> pid (kept by the driver).
    supervisors: BTreeMap<String, u32>,
    /// Samples taken.
    samples: u64,
    /// Agent processes whose executable was hashed and found verified.
    agents_verified: u64,
}

/// Everything the soak knows about its run.
struct Soak {
    seed: u64,
    demo: Demo,
    work: PathBuf,
    obs: Arc<Mutex<Observed>>,
    began: Instant,
    /// node -> product -> version it must run.
    want: BTreeMap<String, BTreeMap<String, String>>,
    /// Agent pids the test SIGKILLed (their runs end without `exit`).
    killed_agents: HashSet<i32>,
    /// Agents of supervisors the test SIGKILLed (taken over later).
    orphaned: HashSet<i32>,
    /// Per fault kind: the time each took to re-converge.
    done: BTreeMap<FaultKind, Vec<Duration>>,
    /// Notes for the report.
    notes: Vec<String>,
    /// Unix seconds when the last fault's action ended: an agent's status
    /// checked before it says nothing about the state after it.
    fault_ended_unix: u64,
    gate: bool,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn cmp_versions(a: &str, b: &str) -> std::cmp::Ordering {
    let parse = |v: &str| -> Vec<u64> { v.split('.').map(|x| x.parse().unwrap_or(0)).collect() };
    parse(a).cmp(&parse(b))
}

fn version_le(a: &str, b: &str) -> bool {
    cmp_versions(a, b) != std::cmp::Ordering::Greater
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Whether the supervisors upgrade through the gate (README "Upgrades"):
/// `SOAK_GATE=0|1`, else whether their `/v1/status` reports
/// `agents[].upgrade` (installed, wanted, waiting for).
fn has_upgrade_gate(demo: &Demo, node: &str) -> bool {
    if let Some(v) = env_u64("SOAK_GATE") {
        return v == 1;
    }
    status(demo, node).is_ok_and(|st| {
        st["agents"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a.get("upgrade").is_some()))
    })
}

/// Event log of `product` on `node`.
fn event_log(work: &Path, node: &str, product: &str) -> PathBuf {
    work.join("events").join(format!("{node}.{product}.log"))
}

/// The membership log every server stand-in appends to.
fn membership_log(work: &Path) -> PathBuf {
    work.join("events").join("membership.log")
}

/// The stand-in knob file of an agent (standin/README "Fault knobs"): the
/// supervisor starts agents with a clean environment, so the event log is
/// named there, in the agent's data dir, before the supervisor starts.
fn write_knobs(work: &Path, demo: &Demo) {
    use std::os::unix::fs::PermissionsExt;
    let events = work.join("events");
    std::fs::create_dir_all(&events).expect("create the event log dir");
    std::fs::set_permissions(&events, std::fs::Permissions::from_mode(0o755))
        .expect("chmod events");
    for n in demo.nodes().iter().filter(|n| n.supervised) {
        let state = n
            .role_file
            .parent()
            .expect("role file in its node dir")
            .join("state/data");
        for product in ["consul", "nomad"] {
            let log = event_log(work, &n.name, product);
            std::fs::write(&log, b"").expect("create an event log");
            let members = membership_log(work);
            if !members.exists() {
                std::fs::write(&members, b"").expect("create the membership log");
                std::fs::set_permissions(&members, std::fs::Permissions::from_mode(0o666))
                    .expect("chmod membership log");
            }
            // The agents run as their own users.
            std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o666))
                .expect("chmod event log");
            let dir = state.join(product);
            std::fs::create_dir_all(&dir).expect("create a data dir");
            let knobs = dir.join("standin.env");
            std::fs::write(
                &knobs,
                format!(
                    "STANDIN_EVENT_LOG={}\nSTANDIN_MEMBERSHIP_LOG={}\n",
                    log.display(),
                    membership_log(work).display()
                ),
            )
            .expect("write the knob file");
            std::fs::set_permissions(&knobs, std::fs::Permissions::from_mode(0o644))
                .expect("chmod knobs");
        }
    }
}

fn read_role(path: &Path) -> toml::Table {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read role file {}: {e}", path.display()));
    text.parse()
        .unwrap_or_else(|e| panic!("parse role file {}: {e}", path.display()))
}

/// Replaces a role file at once (temp file + rename): the supervisor reads
/// either the old or the new one.
fn write_role_text(path: &Path, text: &str) {
    let tmp = path.with_extension("toml.soak-tmp");
    std::fs::write(&tmp, text).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename {}: {e}", path.display()));
}

fn write_role(path: &Path, role: &toml::Table, comment: &str) {
    let text = format!(
        "# {comment}\n{}",
        toml::to_string(role).expect("a role table serialises")
    );
    write_role_text(path, &text);
}

fn sha256_file(path: &Path) -> String {
    hashi_testrig::soak::sha256_reader(
        std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display())),
    )
    .expect("hash a file")
}

fn status(demo: &Demo, node: &str) -> Result<Value, String> {
    let (code, body) = demo
        .get(node, "/v1/status", "application/json")
        .map_err(|e| e.to_string())?;
    if code != 200 {
        return Err(format!("/v1/status {code}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("/v1/status is not JSON: {e}"))
}

fn signal_supervisor(demo: &Demo, node: &str, sig: Signal) {
    let pid = demo
        .node(node)
        .and_then(|n| n.pid())
        .unwrap_or_else(|| panic!("no supervisor runs on {node}"));
    kill(Pid::from_raw(i32::try_from(pid).expect("pid fits")), sig)
        .unwrap_or_else(|e| panic!("{sig} to the supervisor on {node}: {e}"));
}

/// The node a process under the work dir belongs to
/// (`<work>/demo/nodes/<node>/...`).
fn node_of(exe: &Path) -> Option<String> {
    let mut it = exe.components().map(|c| c.as_os_str().to_string_lossy());
    it.by_ref().find(|c| c == "nodes")?;
    it.next().map(|s| s.into_owned())
}

/// Every rendered config file of a node parses (JSON or HCL); files the
/// agents do not load (temp names) are not judged.
fn check_configs(config_dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["consul.d", "nomad.d"] {
        let Ok(dir) = std::fs::read_dir(config_dir.join(sub)) else {
            continue;
        };
        for e in dir.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            if name.ends_with(".json") {
                if let Err(err) = serde_json::from_str::<Value>(&text) {
                    out.push(format!("{} is not whole JSON: {err}", path.display()));
                }
            } else if name.ends_with(".hcl")
                && let Err(err) = hcl::from_str::<hcl::Body>(&text)
            {
                out.push(format!("{} is not whole HCL: {err}", path.display()));
            }
        }
    }
    out
}

/// The sampler: invariants that must hold at every moment, and the
/// supervisors' RSS and descriptors.
fn sampler(
    work: PathBuf,
    nodes: Vec<(String, PathBuf, PathBuf)>,
    verified: Verified,
    obs: Arc<Mutex<Observed>>,
    stop: Arc<AtomicBool>,
    began: Instant,
) {
    let mut hashes = ExeHashes::default();
    let mut exe_ok: HashMap<i32, ()> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let t = began.elapsed().as_secs_f64();
        let mut violations = Vec::new();
        // No half-written config, no unverified binary in a releases dir.
        for (_, config_dir, releases) in &nodes {
            violations.extend(check_configs(config_dir));
            violations.extend(scan_releases(releases, &verified, &mut hashes));
        }
        // Every agent executes a binary the mirror published, as the
        // product and version its path says.
        for p in agent_processes(&work) {
            if exe_ok.contains_key(&p.pid) {
                continue;
            }
            let exe = PathBuf::from(format!("/proc/{}/exe", p.pid));
            let Ok(h) = hashes.hash(&exe) else {
                continue; // exited meanwhile
            };
            let path = p.exe.to_string_lossy().into_owned();
            match verified.lookup(&h) {
                // Installed, or in its staging dir while the install runs
                // `<binary> version` (after the zip was verified).
                Some((product, version))
                    if path.contains(&format!("/{product}/{version}/{product}"))
                        || path.contains(&format!("/{product}/.tmp-{version}-")) =>
                {
                    exe_ok.insert(p.pid, ());
                    obs.lock().expect("observed lock").agents_verified += 1;
                }
                Some((product, version)) => violations.push(format!(
                    "pid {} runs {path}, which is the {product} {version} binary",
                    p.pid
                )),
                None => violations.push(format!(
                    "pid {} runs {path} (sha256 {h}): no binary the mirror published",
                    p.pid
                )),
            }
        }
        let supervisors: Vec<(String, u32)> = {
            let o = obs.lock().expect("observed lock");
            o.supervisors.iter().map(|(n, p)| (n.clone(), *p)).collect()
        };
        let stats: Vec<(String, u32, Option<hashi_testrig::soak::ProcStats>)> = supervisors
            .into_iter()
            .map(|(n, pid)| (n, pid, proc_stats(pid)))
            .collect();
        {
            let mut o = obs.lock().expect("observed lock");
            o.samples += 1;
            for v in violations {
                o.violations.push((t, v));
            }
            for (node, pid, s) in stats {
                let Some(s) = s else { continue };
                match o.rss.iter_mut().find(|r| r.pid == pid) {
                    Some(series) => series.push(s),
                    None => {
                        let mut series = RssSeries::new(&node, pid);
                        series.push(s);
                        o.rss.push(series);
                    }
                }
            }
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
}

impl Soak {
    fn secs(&self) -> f64 {
        self.began.elapsed().as_secs_f64()
    }

    fn log(&self, msg: &str) {
        eprintln!("soak [{:7.1}s] {msg}", self.secs());
    }

    /// Tells the sampler which supervisors run now.
    fn refresh_supervisors(&self) {
        let mut o = self.obs.lock().expect("observed lock");
        o.supervisors = self
            .demo
            .nodes()
            .iter()
            .filter_map(|n| n.pid().map(|p| (n.name.clone(), p)))
            .collect();
    }

    fn mirror(&self) -> &MirrorControl {
        self.demo.mirror()
    }

    /// Only the permanent faults: the tampered versions' zips.
    fn reset_mirror_faults(&self) {
        self.mirror().clear_faults();
        for (product, version) in [("consul", CONSUL_TAMPERED), ("nomad", NOMAD_TAMPERED)] {
            self.mirror().set_fault(
                &zip_path(product, version, ARCH),
                Fault::Tamper { offset: TAMPER_AT },
            );
        }
    }

    /// The last lines of every supervisor's log.
    fn log_tails(&self) -> String {
        let mut out = String::new();
        for n in self.demo.nodes().iter().filter(|n| n.supervised) {
            let log = std::fs::read_to_string(&n.log_file).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            let _ = writeln!(out, "--- {} ({})", n.name, n.log_file.display());
            for l in tail.into_iter().rev() {
                let _ = writeln!(out, "{l}");
            }
        }
        out
    }

    /// Fails the soak: the report so far, the seed and what broke.
    fn fail(&mut self, what: &str) -> ! {
        let report = self.report();
        write_report(&report);
        panic!(
            "soak failed (SOAK_SEED={} replays it): {what}\n{report}\n{}",
            self.seed,
            self.log_tails()
        );
    }

    /// Violations the sampler saw so far.
    fn check_sampler(&mut self) {
        let v = self.obs.lock().expect("observed lock").violations.clone();
        if let Some((t, what)) = v.first() {
            let n = v.len();
            self.fail(&format!(
                "invariant broken at {t:.1}s ({n} violation(s)); first: {what}"
            ));
        }
    }

    /// Why the cluster has not converged (empty: it has).
    fn divergence(&self) -> Vec<String> {
        let mut why = Vec::new();
        for n in self.demo.nodes().iter().filter(|n| n.supervised) {
            let node = &n.name;
            let Some(sup) = n.pid() else {
                why.push(format!("{node}: no supervisor"));
                continue;
            };
            let st = match status(&self.demo, node) {
                Ok(st) => st,
                Err(e) => {
                    why.push(format!("{node}: {e}"));
                    continue;
                }
            };
            if st["healthy"] != true {
                why.push(format!("{node}: not healthy"));
            }
            if !st["reload_error"].is_null() {
                why.push(format!("{node}: reload error {}", st["reload_error"]));
            }
            let hash = sha256_file(&n.role_file);
            if st["config_hash"] != hash.as_str() {
                why.push(format!(
                    "{node}: runs another role file than the one on disk"
                ));
            }
            let agents = st["agents"].as_array().cloned().unwrap_or_default();
            for (product, version) in self.want.get(node).into_iter().flatten() {
                let Some(a) = agents.iter().find(|a| a["agent"] == product.as_str()) else {
                    why.push(format!("{node}: no {product} agent"));
                    continue;
                };
                if a["checked_unix"].as_u64().unwrap_or(0) <= self.fault_ended_unix {
                    why.push(format!("{node}: {product} not checked since the fault"));
                }
                if a["state"] != "running" || a["ready"] != true {
                    why.push(format!(
                        "{node}: {product} {} ready={}",
                        a["state"], a["ready"]
                    ));
                }
                if a["version"] != version.as_str() {
                    why.push(format!(
                        "{node}: {product} {} (want {version})",
                        a["version"]
                    ));
                }
                if a["server"] == true && product == "consul" {
                    let c = &a["consul"];
                    if c["leader"].as_str().unwrap_or("").is_empty() {
                        why.push(format!("{node}: consul has no leader"));
                    }
                    if c["wan_members"].as_u64() != Some(2)
                        || c["wan_failed"].as_array().is_some_and(|f| !f.is_empty())
                    {
                        why.push(format!(
                            "{node}: consul WAN {} members, failed {}",
                            c["wan_members"], c["wan_failed"]
                        ));
                    }
                }
                if a["server"] == true && product == "nomad" {
                    let m = &a["nomad"];
                    if m["leader"].as_str().unwrap_or("").is_empty() {
                        why.push(format!("{node}: nomad has no leader"));
                    }
                    if m["members_alive"].as_u64() != Some(NOMAD_SERVERS) {
                        why.push(format!(
                            "{node}: nomad servers alive {}",
                            m["members_alive"]
                        ));
                    }
                }
            }
            // No orphan: every agent of this node is its supervisor's child.
            for p in agent_processes(&self.work) {
                if node_of(&p.exe).as_deref() == Some(node.as_str())
                    && u32::try_from(p.ppid).ok() != Some(sup)
                {
                    why.push(format!(
                        "{node}: agent pid {} ({}) is not the supervisor's child (parent {})",
                        p.pid,
                        p.exe.display(),
                        p.ppid
                    ));
                }
            }
        }
        why
    }

    /// Waits (bounded) until the cluster re-converged; fails the soak if
    /// it does not. Returns how long it took.
    fn converge(&mut self, after: &str) -> Duration {
        let start = Instant::now();
        loop {
            if let Some((node, st)) = self.demo.exited() {
                self.fail(&format!(
                    "the supervisor on {node} exited ({st}) after {after}"
                ));
            }
            self.check_sampler();
            let why = self.divergence();
            if why.is_empty() {
                return start.elapsed();
            }
            if start.elapsed() > CONVERGE_WITHIN {
                self.fail(&format!(
                    "the cluster did not re-converge within {CONVERGE_WITHIN:?} after {after}:\n  {}",
                    why.join("\n  ")
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits (bounded) until `node`'s status satisfies `pred`.
    fn wait_status(&self, node: &str, within: Duration, pred: impl Fn(&Value) -> bool) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if status(&self.demo, node).is_ok_and(|st| pred(&st)) {
                return true;
            }
            std::thread::sleep(POLL);
        }
        false
    }

    fn supervised(&self) -> Vec<String> {
        self.demo
            .nodes()
            .iter()
            .filter(|n| n.supervised)
            .map(|n| n.name.clone())
            .collect()
    }

    fn role_file(&self, node: &str) -> PathBuf {
        self.demo.node(node).expect("node").role_file.clone()
    }

    /// Sets `[product] version` of `node`'s role file (atomically).
    fn set_version(&self, node: &str, product: &str, version: &str) {
        let path = self.role_file(node);
        let mut role = read_role(&path);
        if let Some(toml::Value::Table(t)) = role.get_mut(product) {
            t.insert("version".into(), version.into());
        }
        write_role(&path, &role, &format!("soak: {product} {version}"));
    }

    /// Whether `node` runs `product` as a server.
    fn is_server(&self, node: &str, product: &str) -> bool {
        let role = read_role(&self.role_file(node));
        role.get("roles")
            .and_then(|r| r.as_array())
            .is_some_and(|r| {
                r.iter()
                    .any(|x| x.as_str() == Some(&format!("{product}-server")))
            })
    }

    /// The lowest version the servers of `product` must run.
    fn min_server_version(&self, product: &str) -> Option<String> {
        self.want
            .iter()
            .filter(|(n, _)| self.is_server(n, product))
            .filter_map(|(_, p)| p.get(product).cloned())
            .min_by(|a, b| cmp_versions(a, b))
    }

    fn run_fault(&mut self, kind: FaultKind, rng: &mut StdRng) {
        let nodes = self.supervised();
        let node = nodes[rng.random_range(0..nodes.len())].clone();
        let what = match kind {
            FaultKind::AgentKill => {
                let agents: Vec<_> = agent_processes(&self.work);
                if agents.is_empty() {
                    self.fail("no agent process to kill");
                }
                let p = agents[rng.random_range(0..agents.len())].clone();
                self.killed_agents.insert(p.pid);
                let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
                format!("SIGKILL agent pid {} ({})", p.pid, p.exe.display())
            }
            FaultKind::SupervisorKill => {
                for p in agent_processes(&self.work) {
                    if node_of(&p.exe).as_deref() == Some(node.as_str()) {
                        self.orphaned.insert(p.pid);
                    }
                }
                self.demo.kill_node(&node);
                self.refresh_supervisors();
                let pause = Duration::from_millis(rng.random_range(0..3000));
                std::thread::sleep(pause);
                self.demo
                    .start_node(&node)
                    .unwrap_or_else(|e| panic!("restart {node}: {e}"));
                self.refresh_supervisors();
                format!("SIGKILL supervisor on {node}, restarted after {pause:?}")
            }
            FaultKind::SighupValid => {
                let path = self.role_file(&node);
                let role = read_role(&path);
                write_role(&path, &role, &format!("soak: valid change {}", self.secs()));
                signal_supervisor(&self.demo, &node, Signal::SIGHUP);
                format!("SIGHUP {node} after a valid role change")
            }
            FaultKind::SighupInvalid => {
                let path = self.role_file(&node);
                let good = std::fs::read_to_string(&path).expect("read role");
                let bad = if rng.random_bool(0.5) {
                    // Syntax: a table never closed.
                    format!("{good}\n[nomad\n")
                } else {
                    // Semantics: a version that is no version.
                    let mut role = read_role(&path);
                    let product = if role.contains_key("consul") {
                        "consul"
                    } else {
                        "nomad"
                    };
                    if let Some(toml::Value::Table(t)) = role.get_mut(product) {
                        t.insert("version".into(), "not-a-version".into());
                    }
                    format!("# soak: invalid\n{}", toml::to_string(&role).expect("toml"))
                };
                write_role_text(&path, &bad);
                signal_supervisor(&self.demo, &node, Signal::SIGHUP);
                if !self.wait_status(&node, CONVERGE_WITHIN, |st| !st["reload_error"].is_null()) {
                    self.fail(&format!("{node} never reported the invalid role file"));
                }
                // Still running its agents on the old role.
                if let Err(e) = self.demo.get(&node, "/ready", "text/plain").map(|r| r.0) {
                    self.fail(&format!(
                        "{node} stopped answering after an invalid role: {e}"
                    ));
                }
                write_role_text(&path, &good);
                signal_supervisor(&self.demo, &node, Signal::SIGHUP);
                format!("SIGHUP {node} with an invalid role file, then the valid one")
            }
            FaultKind::Upgrade | FaultKind::UpgradeMirrorDrops | FaultKind::UpgradeTampered => {
                let products: Vec<String> = self.want[&node].keys().cloned().collect();
                let product = products[rng.random_range(0..products.len())].clone();
                let current = self.want[&node][&product].clone();
                let all: &[&str] = if product == "consul" {
                    &CONSUL_VERSIONS
                } else {
                    &NOMAD_VERSIONS
                };
                // Through the gate a client waits until its servers run its
                // version or newer: a client is only moved to one it can reach.
                let ceiling = if self.gate && !self.is_server(&node, &product) {
                    self.min_server_version(&product)
                } else {
                    None
                };
                let others: Vec<&str> = all
                    .iter()
                    .copied()
                    .filter(|v| *v != current)
                    .filter(|v| ceiling.as_ref().is_none_or(|c| version_le(v, c)))
                    .collect();
                if others.is_empty() && kind != FaultKind::UpgradeTampered {
                    self.log(&format!(
                        "{node}: no {product} version to change to; skipped"
                    ));
                    self.notes.push(format!(
                        "{} skipped on {node}: no {product} version its servers allow",
                        kind.name()
                    ));
                    return;
                }
                let target = if kind == FaultKind::UpgradeTampered {
                    if product == "consul" {
                        CONSUL_TAMPERED
                    } else {
                        NOMAD_TAMPERED
                    }
                } else {
                    others[rng.random_range(0..others.len())]
                };
                if kind == FaultKind::UpgradeMirrorDrops {
                    let times = rng.random_range(1..=3);
                    self.mirror().set_fault(
                        &zip_path(&product, target, ARCH),
                        Fault::DropAfter {
                            bytes: rng.random_range(1000..2_000_000),
                            times,
                        },
                    );
                }
                // Through the gate the Nomad leader goes last, once the
                // other servers run the new version: a Nomad server's
                // version changes with its whole cluster's (a rollout).
                let group: Vec<String> = if self.gate
                    && kind != FaultKind::UpgradeTampered
                    && product == "nomad"
                    && self.is_server(&node, &product)
                {
                    nodes
                        .iter()
                        .filter(|n| self.is_server(n, &product))
                        .cloned()
                        .collect()
                } else {
                    vec![node.clone()]
                };
                for n in &group {
                    self.set_version(n, &product, target);
                }
                for n in &group {
                    signal_supervisor(&self.demo, n, Signal::SIGHUP);
                }
                if kind == FaultKind::UpgradeTampered {
                    // Refused: the node reports it and keeps its version.
                    if !self.wait_status(&node, TAMPERED_WAIT, |st| !st["reload_error"].is_null()) {
                        self.notes.push(format!(
                            "{node}: no reload error reported for tampered {product} {target}"
                        ));
                    }
                    self.set_version(&node, &product, &current);
                    signal_supervisor(&self.demo, &node, Signal::SIGHUP);
                    format!("{node}: {product} {current} -> {target} (tampered), put back")
                } else {
                    for n in &group {
                        self.want
                            .get_mut(n)
                            .expect("node")
                            .insert(product.clone(), target.to_string());
                    }
                    // A download that failed every retry is reported; the
                    // operator's retry (SIGHUP again) then succeeds.
                    let deadline = Instant::now() + CONVERGE_WITHIN;
                    let mut retried = false;
                    while Instant::now() < deadline {
                        let Ok(st) = status(&self.demo, &node) else {
                            std::thread::sleep(POLL);
                            continue;
                        };
                        let runs = st["agents"].as_array().is_some_and(|a| {
                            a.iter()
                                .any(|a| a["agent"] == product.as_str() && a["version"] == target)
                        });
                        if runs {
                            break;
                        }
                        if !st["reload_error"].is_null() && !retried {
                            retried = true;
                            self.reset_mirror_faults();
                            signal_supervisor(&self.demo, &node, Signal::SIGHUP);
                            self.notes.push(format!(
                                "{node}: {product} {target} failed through the faulty mirror \
                                 ({}); SIGHUP again with the mirror healed",
                                st["reload_error"]
                            ));
                        }
                        std::thread::sleep(POLL);
                    }
                    format!("{}: {product} {current} -> {target}", group.join(", "))
                }
            }
            FaultKind::Partition => {
                let hold = Duration::from_millis(rng.random_range(3000..20_000));
                self.demo
                    .topology()
                    .cut("ams2", "lon1")
                    .unwrap_or_else(|e| panic!("cut the WAN link: {e}"));
                std::thread::sleep(hold);
                self.demo
                    .topology()
                    .heal("ams2", "lon1")
                    .unwrap_or_else(|e| panic!("heal the WAN link: {e}"));
                format!("WAN ams2 | lon1 cut for {hold:?}")
            }
            FaultKind::NodeDisappears => {
                let hold = Duration::from_millis(rng.random_range(2000..15_000));
                if self.demo.stop_node(&node, STOP_WITHIN).is_none() {
                    self.fail(&format!("the supervisor on {node} did not stop in time"));
                }
                self.refresh_supervisors();
                self.demo
                    .topology()
                    .take_down(&node)
                    .unwrap_or_else(|e| panic!("take {node} down: {e}"));
                std::thread::sleep(hold);
                self.demo
                    .topology()
                    .bring_up(&node)
                    .unwrap_or_else(|e| panic!("bring {node} up: {e}"));
                self.demo
                    .start_node(&node)
                    .unwrap_or_else(|e| panic!("start {node}: {e}"));
                self.refresh_supervisors();
                format!("{node} gone for {hold:?}")
            }
            FaultKind::FleetUpgrade => {
                let consul = CONSUL_VERSIONS[rng.random_range(0..CONSUL_VERSIONS.len())];
                let nomad = NOMAD_VERSIONS[rng.random_range(0..NOMAD_VERSIONS.len())];
                for n in &nodes {
                    let products: Vec<String> = self.want[n].keys().cloned().collect();
                    for p in products {
                        let v = if p == "consul" { consul } else { nomad };
                        self.set_version(n, &p, v);
                        self.want
                            .get_mut(n)
                            .expect("node")
                            .insert(p.clone(), v.to_string());
                    }
                }
                for n in &nodes {
                    signal_supervisor(&self.demo, n, Signal::SIGHUP);
                }
                format!("every node to consul {consul}, nomad {nomad}")
            }
        };
        self.fault_ended_unix = unix_now();
        self.log(&format!("{}: {what}", kind.name()));
        let took = self.converge(&format!("{} ({what})", kind.name()));
        self.reset_mirror_faults();
        self.log(&format!("  re-converged in {took:.1?}"));
        self.done.entry(kind).or_default().push(took);
    }

    /// The most servers of each cluster down at once for an upgrade, from
    /// the membership log: `(cluster, servers, most down, at unix ms)`.
    fn upgrade_downtime(&self) -> Vec<(String, usize, usize, u64)> {
        let text = std::fs::read_to_string(membership_log(&self.work)).unwrap_or_default();
        let log = Membership::parse_log(&text);
        let mut clusters: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
        for n in self.demo.nodes().iter().filter(|n| n.supervised) {
            let role = read_role(&n.role_file);
            let roles: Vec<String> = role
                .get("roles")
                .and_then(|r| r.as_array())
                .map(|r| {
                    r.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            if roles.iter().any(|r| r == "consul-server") {
                clusters
                    .entry(format!("consul {}", n.datacenter))
                    .or_insert_with(|| ("consul".into(), Vec::new()))
                    .1
                    .push(n.name.clone());
            }
            if roles.iter().any(|r| r == "nomad-server") {
                clusters
                    .entry("nomad eu".into())
                    .or_insert_with(|| ("nomad".into(), Vec::new()))
                    .1
                    .push(n.name.clone());
            }
        }
        clusters
            .into_iter()
            .map(|(name, (product, nodes))| {
                let (down, at) = max_upgrade_down(&log, &product, &nodes);
                (name, nodes.len(), down, at)
            })
            .collect()
    }

    /// Runs recorded in the agents' event logs: `(runs, ended orderly)`.
    /// Every agent the node was told to run must have at least one run:
    /// else the logs (and the invariants read from them) saw nothing.
    fn event_runs(&self) -> Result<(usize, usize), String> {
        let (mut runs, mut orderly) = (0, 0);
        for (node, products) in &self.want {
            for product in products.keys() {
                let log = EventLog::read(&event_log(&self.work, node, product));
                if log.runs.is_empty() {
                    return Err(format!(
                        "{node}: the {product} event log recorded no run (knob file not read?)"
                    ));
                }
                runs += log.runs.len();
                orderly += log.runs.iter().filter(|r| r.is_orderly_end()).count();
            }
        }
        Ok((runs, orderly))
    }

    /// Agent stops that were not orderly and not the test's doing.
    fn disorderly_stops(&self) -> Vec<String> {
        let mut out = Vec::new();
        for n in self.supervised() {
            for product in ["consul", "nomad"] {
                let log = EventLog::read(&event_log(&self.work, &n, product));
                for r in &log.runs {
                    let alive = Path::new(&format!("/proc/{}", r.pid)).exists();
                    if r.is_orderly_end() || self.killed_agents.contains(&r.pid) || alive {
                        continue;
                    }
                    out.push(format!(
                        "{n}: {product} {} pid {} ended without an orderly stop: {:?}",
                        r.version, r.pid, r.events
                    ));
                }
            }
        }
        out
    }

    fn report(&self) -> String {
        let mut r = String::new();
        let _ = writeln!(r, "== soak report (seed {})", self.seed);
        let _ = writeln!(
            r,
            "duration {:.0} s, gate {}",
            self.secs(),
            if self.gate { "present" } else { "absent" }
        );
        let total: usize = self.done.values().map(Vec::len).sum();
        let _ = writeln!(r, "faults: {total}");
        for (kind, times) in &self.done {
            let max = times.iter().max().copied().unwrap_or_default();
            let sum: Duration = times.iter().sum();
            let mean = sum / u32::try_from(times.len().max(1)).unwrap_or(1);
            let _ = writeln!(
                r,
                "  {:<45} {:>3}  re-converged mean {:>5.1} s, max {:>5.1} s",
                kind.name(),
                times.len(),
                mean.as_secs_f64(),
                max.as_secs_f64()
            );
        }
        let o = self.obs.lock().expect("observed lock");
        let _ = writeln!(
            r,
            "sampler: {} samples, {} violations, {} agent processes verified by hash",
            o.samples,
            o.violations.len(),
            o.agents_verified
        );
        drop(o);
        match self.event_runs() {
            Ok((runs, orderly)) => {
                let _ = writeln!(
                    r,
                    "agent runs: {runs} ({orderly} ended orderly, {} SIGKILLed by the test, the rest running)",
                    self.killed_agents.len()
                );
            }
            Err(e) => {
                let _ = writeln!(r, "agent runs: {e}");
            }
        }
        let o = self.obs.lock().expect("observed lock");
        let _ = writeln!(r, "supervisor RSS (KiB) / descriptors, per process:");
        for s in &o.rss {
            let first = s.samples.first().map(|x| x.1);
            let settled = s.settled_and_last(WARM_UP);
            let over_time: Vec<String> = s
                .samples
                .iter()
                .step_by((s.samples.len() / 8).max(1))
                .map(|(t, x)| format!("{:.0}s:{}", t.as_secs_f64(), x.rss_kib))
                .collect();
            let _ = writeln!(
                r,
                "  {:<15} pid {:>7} lived {:>5.0} s  start {:>6} / {:>3}  settled {}  end {}  [{}]",
                s.node,
                s.pid,
                s.span().as_secs_f64(),
                first.map_or(0, |x| x.rss_kib),
                first.map_or(0, |x| x.fds),
                settled.map_or("-".into(), |(a, _)| format!("{} / {}", a.rss_kib, a.fds)),
                settled.map_or("-".into(), |(_, b)| format!("{} / {}", b.rss_kib, b.fds)),
                over_time.join(" ")
            );
        }
        let _ = writeln!(
            r,
            "agents orphaned by supervisor SIGKILLs (taken over by the next supervisor): {}",
            self.orphaned.len()
        );
        for n in &self.notes {
            let _ = writeln!(r, "note: {n}");
        }
        r
    }
}

fn report_path() -> PathBuf {
    std::env::var_os("SOAK_REPORT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("soak-report.txt"))
}

fn write_report(report: &str) {
    let path = report_path();
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match std::fs::write(&path, report) {
        Ok(()) => eprintln!("soak report written to {}", path.display()),
        Err(e) => eprintln!("failed to write the soak report {}: {e}", path.display()),
    }
}

#[test]
#[ignore = "the ~6-minute soak: run by .ci/run's soak step (`--run-ignored only`)"]
fn five_nodes_hold_every_invariant_through_a_storm_of_random_faults() {
    assert!(
        hashi_testrig::netns::is_available().is_ok(),
        "network namespaces are needed by this test (root, iproute2)"
    );
    let seed = env_u64("SOAK_SEED").unwrap_or_else(rand::random);
    let seconds = env_u64("SOAK_SECONDS")
        .unwrap_or(DEFAULT_SECONDS)
        .clamp(10, 86_400);
    eprintln!("soak: seed {seed} (SOAK_SEED={seed} replays), {seconds} s of faults");

    let tmp = tempfile::Builder::new()
        .prefix("hashi-soak")
        .tempdir()
        .expect("temp dir");
    // SOAK_KEEP=1 keeps the work dir (logs, event logs, state) for a look.
    let work = if env_u64("SOAK_KEEP") == Some(1) {
        tmp.keep()
    } else {
        tmp.path().to_path_buf()
    };
    eprintln!("soak: work dir {}", work.display());
    let mut extra: Vec<(String, String)> = Vec::new();
    for v in CONSUL_VERSIONS.iter().chain([&CONSUL_TAMPERED]) {
        extra.push(("consul".into(), (*v).into()));
    }
    for v in NOMAD_VERSIONS.iter().chain([&NOMAD_TAMPERED]) {
        extra.push(("nomad".into(), (*v).into()));
    }
    // Published and verifiable: every version but the tampered ones.
    let good: Vec<(String, String)> = extra
        .iter()
        .filter(|(_, v)| v != CONSUL_TAMPERED && v != NOMAD_TAMPERED)
        .cloned()
        .collect();
    let verified = Verified::from_standin(&standin_bin(), &good).expect("hash the stand-in");
    let opts = DemoOptions {
        supervisor: supervisor_bin(),
        standin: standin_bin(),
        examples_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/examples"),
        work_dir: work.join("demo"),
        forward_base_port: 0,
        nodes: reference_demo_nodes()
            .into_iter()
            .map(|n| n.deferred())
            .collect(),
        dns: Vec::new(),
        silent_nameservers: Vec::new(),
    };
    let mut demo = Demo::start_extended(
        &opts,
        &Security::Plaintext,
        &DemoExtras {
            extra_versions: extra,
        },
    )
    .expect("start the demo");
    write_knobs(&work, &demo);
    let names: Vec<String> = demo
        .nodes()
        .iter()
        .filter(|n| n.supervised)
        .map(|n| n.name.clone())
        .collect();
    let mut want = BTreeMap::new();
    for n in &names {
        let role = read_role(&demo.node(n).expect("node").role_file);
        let mut products = BTreeMap::new();
        for p in ["consul", "nomad"] {
            if let Some(v) = role
                .get(p)
                .and_then(|t| t.get("version"))
                .and_then(|v| v.as_str())
            {
                products.insert(p.to_string(), v.to_string());
            }
        }
        want.insert(n.clone(), products);
    }
    for n in &names {
        demo.start_node(n).expect("start a node");
    }
    let sampled: Vec<(String, PathBuf, PathBuf)> = demo
        .nodes()
        .iter()
        .filter(|n| n.supervised)
        .map(|n| {
            let dir = n.role_file.parent().expect("node dir").to_path_buf();
            (n.name.clone(), n.config_dir(), dir.join("state/releases"))
        })
        .collect();
    let obs = Arc::new(Mutex::new(Observed::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let began = Instant::now();
    let sampler_thread = {
        let (work, obs, stop) = (work.clone(), obs.clone(), stop.clone());
        std::thread::spawn(move || sampler(work, sampled, verified, obs, stop, began))
    };
    let mut soak = Soak {
        seed,
        demo,
        work: work.clone(),
        obs,
        began,
        want,
        killed_agents: HashSet::new(),
        orphaned: HashSet::new(),
        done: BTreeMap::new(),
        notes: Vec::new(),
        fault_ended_unix: 0,
        gate: false,
    };
    soak.refresh_supervisors();
    soak.reset_mirror_faults();
    if let Err(e) = soak.demo.wait_ready(READY_WITHIN) {
        soak.fail(&format!("the cluster never became ready: {e}"));
    }
    let first = soak.converge("start");
    soak.gate = has_upgrade_gate(&soak.demo, &names[0]);
    soak.log(&format!(
        "upgrade gate {}",
        if soak.gate {
            "present: fleet-wide version changes on, quorum asserted"
        } else {
            "absent"
        }
    ));
    soak.log(&format!(
        "cluster formed ({first:.1?} after ready); faults begin"
    ));

    // Every kind once (shuffled), then at random until the time is up.
    let mut rng = StdRng::seed_from_u64(seed);
    let kinds: Vec<FaultKind> = FaultKind::ALL
        .into_iter()
        .filter(|k| soak.gate || *k != FaultKind::FleetUpgrade)
        .collect();
    let mut queue = kinds.clone();
    for i in (1..queue.len()).rev() {
        queue.swap(i, rng.random_range(0..=i));
    }
    let storm = Instant::now();
    let length = Duration::from_secs(seconds);
    while storm.elapsed() < length || !queue.is_empty() {
        let kind = queue
            .pop()
            .unwrap_or_else(|| kinds[rng.random_range(0..kinds.len())]);
        soak.run_fault(kind, &mut rng);
        std::thread::sleep(Duration::from_millis(rng.random_range(0..2000)));
    }
    let storm_took = storm.elapsed();
    soak.log(&format!("storm over after {storm_took:.0?}"));

    // At the end: stops, the gate, growth, orphans.
    let mut worst = 0;
    for (cluster, servers, down, at) in soak.upgrade_downtime() {
        soak.notes.push(format!(
            "{cluster}: at most {down} of {servers} servers down at once for an upgrade{}",
            if down > 0 {
                format!(" (first at unix ms {at})")
            } else {
                String::new()
            }
        ));
        worst = worst.max(down);
    }
    let membership_lines = std::fs::read_to_string(membership_log(&work))
        .map(|t| Membership::parse_log(&t).len())
        .unwrap_or(0);
    if membership_lines == 0 {
        soak.fail("the membership log recorded nothing (knob file not read?)");
    }
    if soak.gate && worst > 1 {
        soak.fail(&format!(
            "{worst} servers of one cluster were down at once for an upgrade (the gate allows 1)"
        ));
    }
    if let Err(e) = soak.event_runs() {
        soak.fail(&e);
    }
    let verified_agents = soak.obs.lock().expect("observed lock").agents_verified;
    let agents: usize = soak.want.values().map(BTreeMap::len).sum();
    if verified_agents < agents as u64 {
        soak.fail(&format!(
            "only {verified_agents} agent processes were checked against the published hashes \
             (at least {agents} ran)"
        ));
    }
    let disorderly = soak.disorderly_stops();
    if !disorderly.is_empty() {
        soak.fail(&format!(
            "agent stops that were not orderly:\n  {}",
            disorderly.join("\n  ")
        ));
    }
    let (judged, growth): (usize, Vec<String>) = {
        let o = soak.obs.lock().expect("observed lock");
        let verdicts: Vec<_> = o
            .rss
            .iter()
            .filter_map(|s| {
                s.growth(WARM_UP, RSS_RATIO, RSS_SLACK_KIB, FD_SLACK)
                    .map(|v| (s, v))
            })
            .collect();
        (
            verdicts.len(),
            verdicts
                .into_iter()
                .filter_map(|(s, v)| {
                    v.err()
                        .map(|why| format!("{} (pid {}): {why}", s.node, s.pid))
                })
                .collect(),
        )
    };
    soak.notes.push(format!(
        "supervisor processes judged for growth (lived past {WARM_UP:?} with enough samples): {judged}"
    ));
    if !growth.is_empty() {
        soak.fail(&format!("supervisors grew: {}", growth.join("; ")));
    }
    if judged == 0 && seconds >= 2 * WARM_UP.as_secs() {
        soak.fail("no supervisor lived long enough to judge its growth");
    }
    for (node, st) in soak.demo.stop(STOP_WITHIN) {
        match st {
            Some(st) if st.success() => {}
            other => soak.fail(&format!(
                "the supervisor on {node} stopped badly: {other:?}"
            )),
        }
    }
    soak.refresh_supervisors();
    let left = agent_processes(&work);
    if !left.is_empty() {
        soak.fail(&format!(
            "agents left running after every supervisor stopped: {left:?}"
        ));
    }
    let disorderly = soak.disorderly_stops();
    if !disorderly.is_empty() {
        soak.fail(&format!(
            "agent stops that were not orderly at the final stop:\n  {}",
            disorderly.join("\n  ")
        ));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = sampler_thread.join();
    soak.check_sampler();
    let report = soak.report();
    eprintln!("{report}");
    write_report(&report);
}

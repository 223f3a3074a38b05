//! Discovery as the daemon follows it: a re-plan on every published
//! [`DiscoveryReport`] whose peers differ from the ones the running plan
//! was built with (after a quiet time, [`DiscoveryFeed::debounce`]), and the
//! report's persistence in `<state_dir>/discovery.json` (the next start's
//! seeds, and what `render` and `check` read).
//!
//! A re-plan keeps the role in force ([`DiscoveryFeed::role`]): only
//! SIGHUP re-reads the role file. It renders through the [`Preparer`] and
//! restarts Nomad (with the signal that keeps its workloads) only when its
//! rendered `consul.address` changed; any other change of peers only
//! rewrites the files, the live joins being discovery's own work. A failed
//! render keeps the running agents and their files, logged and counted
//! ([`ReplanCounts`]).
//!
//! This module never discovers anything itself (that is
//! `catalog::discovery`, which it must not import: it is told through the
//! feed's receiver and callback).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{Daemon, Preparer, error_chain, on_release};
use crate::peers::{DiscoveryReport, Learned, PeerKind, PeerRecord, Peers, Source};
use crate::plan::Plan;
use crate::render::{self, RenderedFile};
use crate::role::NodeRole;
use crate::supervise::actor::Control;
use crate::supervise::status::{AgentState, NodeIdentity};
use crate::vocab::Product;

/// Name of the persisted report inside the state dir.
pub const DISCOVERY_FILE: &str = "discovery.json";
/// Mode of the persisted report: readable by operators' tools, no secret in it.
pub const DISCOVERY_FILE_MODE: u32 = 0o644;
/// Default quiet time between a change of peers and the re-plan.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_secs(1);
/// Format version of [`DISCOVERY_FILE`].
const CACHE_VERSION: u32 = 1;
/// Largest persisted report read back (a bounded file of ours).
const MAX_CACHE_BYTES: u64 = 1024 * 1024;
/// Most peer records read back (as many as discovery keeps).
const MAX_CACHED_RECORDS: usize = 256;
/// Most entries of each peer list read back.
const MAX_CACHED_PEERS: usize = 256;
/// Longest address, node, region or datacenter read back.
const MAX_CACHED_FIELD: usize = 255;

/// Tells discovery the role and plan the node runs with now.
pub type OnPlan = Arc<dyn Fn(&NodeRole, &Plan) + Send + Sync>;

/// Discovery as the daemon follows it ([`super::RunOptions::discovery`]).
#[derive(Clone)]
pub struct DiscoveryFeed {
    /// The reports discovery publishes.
    pub reports: watch::Receiver<DiscoveryReport>,
    /// The role in force, identity already learned: what a re-plan builds
    /// on (a SIGHUP replaces it).
    pub role: NodeRole,
    /// The peers the starting plan was built with.
    pub applied: Peers,
    /// Tells discovery the role and plan the node runs with now
    /// (`catalog::discovery::Discovery::set_role`).
    pub on_plan: OnPlan,
    /// Quiet time after a change of peers before the re-plan.
    pub debounce: Duration,
    /// Re-plans by outcome (`/metrics`).
    pub counts: Arc<ReplanCounts>,
}

impl std::fmt::Debug for DiscoveryFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscoveryFeed")
            .field("applied", &self.applied)
            .field("debounce", &self.debounce)
            .finish_non_exhaustive()
    }
}

/// Re-plans on a change of peers, by outcome.
#[derive(Debug, Default)]
pub struct ReplanCounts {
    ok: AtomicU64,
    failed: AtomicU64,
    nomad_restarts: AtomicU64,
}

impl ReplanCounts {
    /// Re-plans applied.
    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }
    /// Re-plans that failed (the running plan kept).
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
    /// Nomad restarts a changed Consul address asked for.
    pub fn nomad_restarts(&self) -> u64 {
        self.nomad_restarts.load(Ordering::Relaxed)
    }
}

/// The Consul address Nomad's rendered config names.
fn nomad_consul_address(plan: &Plan) -> Option<&str> {
    plan.render
        .nomad
        .as_ref()
        .and_then(|n| n.consul_address.as_deref())
}

impl<P: Preparer> Daemon<P> {
    /// Whether `report` asks for work: its peers differ from the applied
    /// ones, or what it persists (sightings aside) changed.
    pub(super) fn discovery_pending(&self, report: &DiscoveryReport) -> bool {
        let Some(feed) = &self.opts.discovery else {
            return false;
        };
        report.peers != feed.applied
            || self.persisted.as_ref().map(Cached::without_sightings)
                != Some(Cached::of(report).without_sightings())
    }

    /// Whether `report`'s peers differ from the ones the plan in force was
    /// built with (a re-plan touches the agents: it waits for the rollout).
    pub(super) fn replan_needed(&self, report: &DiscoveryReport) -> bool {
        self.opts
            .discovery
            .as_ref()
            .is_some_and(|feed| report.peers != feed.applied)
    }

    /// Applies `report` if its peers differ from the applied ones: re-plan
    /// with the role in force, render, restart Nomad when its Consul
    /// address moved. Persists the report either way.
    pub(super) async fn follow_discovery(&mut self, report: &DiscoveryReport) {
        let Some(feed) = &self.opts.discovery else {
            return;
        };
        if report.peers != feed.applied {
            let role = feed.role.clone();
            self.replan(&role, &report.peers).await;
        }
        self.persist_discovery(report);
    }

    /// Writes `report` to the state dir when what it persists changed.
    pub(super) fn persist_discovery(&mut self, report: &DiscoveryReport) {
        if self.opts.discovery.is_none() {
            return;
        }
        let cached = Cached::of(report);
        if self.persisted.as_ref() == Some(&cached) {
            return;
        }
        match write_cached(&self.plan.state_dir, &cached) {
            Ok(()) => self.persisted = Some(cached),
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "failed to persist the discovery report");
            }
        }
    }

    /// Re-plans with `peers`; the running plan stays on a failure.
    async fn replan(&mut self, role: &NodeRole, peers: &Peers) {
        let new = Plan::build(role, peers);
        let Some(feed) = self.opts.discovery.clone() else {
            return;
        };
        tracing::info!(
            consul_lan = ?peers.consul_lan,
            consul_wan = ?peers.consul_wan,
            consul_http = ?peers.consul_http,
            nomad_servers = ?peers.nomad_servers,
            "discovered peers changed, re-rendering"
        );
        if let Err(e) = self.preparer.render(&new).await {
            feed.counts.failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %error_chain(&e), "failed to render the discovered peers, keeping the running configuration");
            return;
        }
        let restart_nomad = nomad_consul_address(&self.plan) != nomad_consul_address(&new);
        for agent in &new.agents {
            if let Some(h) = self.handle(agent.product) {
                let a = on_release(agent, self.installed.get(&agent.product));
                let _ = h.send(Control::UpdatePlan(Box::new(a), None));
            }
        }
        if restart_nomad {
            if let Some(h) = self.handle(Product::Nomad) {
                // Only a live Nomad restarts; one not started yet (or in
                // backoff) starts on the new file anyway.
                let live = matches!(h.status().state, AgentState::Starting | AgentState::Running);
                if live {
                    tracing::info!(
                        from = ?nomad_consul_address(&self.plan),
                        to = ?nomad_consul_address(&new),
                        "nomad's consul address changed, restarting nomad"
                    );
                    feed.counts.nomad_restarts.fetch_add(1, Ordering::Relaxed);
                    let _ = h.send(Control::Restart);
                }
            }
        }
        feed.counts.ok.fetch_add(1, Ordering::Relaxed);
        (feed.on_plan)(role, &new);
        let node = NodeIdentity::of(&new);
        self.plan = new;
        self.status.send_modify(|s| s.node = Some(node));
        if let Some(f) = self.opts.discovery.as_mut() {
            f.applied = peers.clone();
            f.role = role.clone();
        }
        // E.g. a client that found its servers: Nomad's consul.address,
        // where its gate keeps the locks.
        self.refresh_gate();
    }
}

/// The path of the persisted report of a state dir.
pub fn cache_path(state_dir: &Path) -> PathBuf {
    state_dir.join(DISCOVERY_FILE)
}

/// Why the persisted report could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The file could not be read.
    #[error("failed to read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a report of ours.
    #[error("failed to use {}: {why}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
}

/// The persisted report of `state_dir`: `None` when there is none. Only
/// what it seeds with is kept (peers, records, learned identity).
pub fn load_cached(state_dir: &Path) -> Result<Option<DiscoveryReport>, CacheError> {
    use std::io::Read;
    let path = cache_path(state_dir);
    let read = |source| CacheError::Read {
        path: path.clone(),
        source,
    };
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read(e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_CACHE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    parse_cached(&bytes)
        .map(Some)
        .map_err(|why| CacheError::Invalid {
            path: path.clone(),
            why,
        })
}

/// Parses and checks a persisted report.
fn parse_cached(bytes: &[u8]) -> Result<DiscoveryReport, String> {
    if bytes.len() as u64 > MAX_CACHE_BYTES {
        return Err(format!("larger than {MAX_CACHE_BYTES} bytes"));
    }
    let c: Cached = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if c.version != CACHE_VERSION {
        return Err(format!(
            "format version {} (this supervisor reads {CACHE_VERSION})",
            c.version
        ));
    }
    c.check()?;
    Ok(c.into_report())
}

/// Writes `report`'s persisted part atomically (mode 0644).
pub fn persist(state_dir: &Path, report: &DiscoveryReport) -> Result<(), render::RenderError> {
    write_cached(state_dir, &Cached::of(report))
}

fn write_cached(state_dir: &Path, cached: &Cached) -> Result<(), render::RenderError> {
    let mut contents = serde_json::to_string_pretty(cached).unwrap_or_default();
    contents.push('\n');
    // The project's one atomic writer; `product` only labels the file for
    // callers that classify changes, which nobody does for this one.
    let file = RenderedFile {
        product: Product::Consul,
        path: cache_path(state_dir),
        contents,
        mode: DISCOVERY_FILE_MODE,
        owner: None,
    };
    render::write::write_files(std::slice::from_ref(&file)).map(|_| ())
}

/// The persisted part of a report, as written to [`DISCOVERY_FILE`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Cached {
    version: u32,
    peers: CachedPeers,
    records: Vec<CachedRecord>,
    learned: CachedLearned,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CachedPeers {
    consul_lan: Vec<String>,
    consul_wan: Vec<String>,
    consul_http: Option<String>,
    nomad_servers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CachedRecord {
    address: String,
    kind: CachedKind,
    source: CachedSource,
    node: Option<String>,
    datacenter: Option<String>,
    region: Option<String>,
    last_seen_unix: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CachedLearned {
    region: Option<String>,
    datacenter: Option<String>,
    from_node: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum CachedKind {
    ConsulServer,
    ConsulAgent,
    ConsulWan,
    NomadServer,
    Supervisor,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum CachedSource {
    Static,
    Dns,
    Mdns,
    Cloud,
}

impl From<PeerKind> for CachedKind {
    fn from(k: PeerKind) -> Self {
        match k {
            PeerKind::ConsulServer => Self::ConsulServer,
            PeerKind::ConsulAgent => Self::ConsulAgent,
            PeerKind::ConsulWan => Self::ConsulWan,
            PeerKind::NomadServer => Self::NomadServer,
            PeerKind::Supervisor => Self::Supervisor,
        }
    }
}

impl From<CachedKind> for PeerKind {
    fn from(k: CachedKind) -> Self {
        match k {
            CachedKind::ConsulServer => Self::ConsulServer,
            CachedKind::ConsulAgent => Self::ConsulAgent,
            CachedKind::ConsulWan => Self::ConsulWan,
            CachedKind::NomadServer => Self::NomadServer,
            CachedKind::Supervisor => Self::Supervisor,
        }
    }
}

impl From<Source> for CachedSource {
    fn from(s: Source) -> Self {
        match s {
            Source::Static => Self::Static,
            Source::Dns => Self::Dns,
            Source::Mdns => Self::Mdns,
            Source::Cloud => Self::Cloud,
        }
    }
}

impl From<CachedSource> for Source {
    fn from(s: CachedSource) -> Self {
        match s {
            CachedSource::Static => Self::Static,
            CachedSource::Dns => Self::Dns,
            CachedSource::Mdns => Self::Mdns,
            CachedSource::Cloud => Self::Cloud,
        }
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Cached {
    fn of(r: &DiscoveryReport) -> Self {
        Self {
            version: CACHE_VERSION,
            peers: CachedPeers {
                consul_lan: r.peers.consul_lan.clone(),
                consul_wan: r.peers.consul_wan.clone(),
                consul_http: r.peers.consul_http.clone(),
                nomad_servers: r.peers.nomad_servers.clone(),
            },
            records: r
                .records
                .iter()
                .take(MAX_CACHED_RECORDS)
                .map(|p| CachedRecord {
                    address: p.address.clone(),
                    kind: p.kind.into(),
                    source: p.source.into(),
                    node: p.node.clone(),
                    datacenter: p.datacenter.clone(),
                    region: p.region.clone(),
                    last_seen_unix: unix(p.last_seen),
                })
                .collect(),
            learned: CachedLearned {
                region: r.learned.region.clone(),
                datacenter: r.learned.datacenter.clone(),
                from_node: r.learned.from_node.clone(),
            },
        }
    }

    /// The same without the sightings' times (which change on every
    /// announcement and are not worth a write each).
    fn without_sightings(&self) -> Self {
        let mut c = self.clone();
        c.records.iter_mut().for_each(|r| r.last_seen_unix = 0);
        c
    }

    /// Bounds every list and field: the file is ours, but a bad one must
    /// be refused with a reason, never trusted blindly.
    fn check(&self) -> Result<(), String> {
        let field = |what: &str, v: &str| -> Result<(), String> {
            if v.is_empty() || v.len() > MAX_CACHED_FIELD || v.chars().any(char::is_control) {
                Err(format!(
                    "{what} `{}` is empty, longer than {MAX_CACHED_FIELD} bytes or holds control characters",
                    v.escape_debug()
                ))
            } else {
                Ok(())
            }
        };
        let p = &self.peers;
        for (what, list) in [
            ("peers.consul_lan", &p.consul_lan),
            ("peers.consul_wan", &p.consul_wan),
            ("peers.nomad_servers", &p.nomad_servers),
        ] {
            if list.len() > MAX_CACHED_PEERS {
                return Err(format!("{what} has more than {MAX_CACHED_PEERS} entries"));
            }
            list.iter().try_for_each(|v| field(what, v))?;
        }
        if let Some(h) = &p.consul_http {
            field("peers.consul_http", h)?;
        }
        if self.records.len() > MAX_CACHED_RECORDS {
            return Err(format!("more than {MAX_CACHED_RECORDS} records"));
        }
        for r in &self.records {
            field("records.address", &r.address)?;
            for v in [&r.node, &r.datacenter, &r.region].into_iter().flatten() {
                field("records.node/datacenter/region", v)?;
            }
        }
        let l = &self.learned;
        for v in [&l.region, &l.datacenter, &l.from_node]
            .into_iter()
            .flatten()
        {
            field("learned", v)?;
        }
        Ok(())
    }

    fn into_report(self) -> DiscoveryReport {
        DiscoveryReport {
            peers: Peers {
                consul_lan: self.peers.consul_lan,
                consul_wan: self.peers.consul_wan,
                consul_http: self.peers.consul_http,
                nomad_servers: self.peers.nomad_servers,
            },
            records: self
                .records
                .into_iter()
                .map(|r| PeerRecord {
                    address: r.address,
                    kind: r.kind.into(),
                    source: r.source.into(),
                    node: r.node,
                    datacenter: r.datacenter,
                    region: r.region,
                    // A value past what a clock can hold (a hand-edited or
                    // corrupted file) reads as the epoch: never a panic.
                    last_seen: SystemTime::UNIX_EPOCH
                        .checked_add(Duration::from_secs(r.last_seen_unix))
                        .unwrap_or(SystemTime::UNIX_EPOCH),
                })
                .collect(),
            learned: Learned {
                region: self.learned.region,
                datacenter: self.learned.datacenter,
                from_node: self.learned.from_node,
            },
            ..DiscoveryReport::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn report() -> DiscoveryReport {
        DiscoveryReport {
            peers: Peers {
                consul_lan: vec!["10.0.1.11".into(), "10.0.1.12".into()],
                consul_wan: vec!["203.0.113.7".into()],
                consul_http: Some("10.0.1.11:8500".into()),
                nomad_servers: vec!["10.0.1.11".into()],
            },
            records: vec![PeerRecord {
                address: "10.0.1.11".into(),
                kind: PeerKind::ConsulServer,
                source: Source::Mdns,
                node: Some("ams2-server-01".into()),
                datacenter: Some("ams2".into()),
                region: Some("eu".into()),
                last_seen: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            }],
            learned: Learned {
                region: Some("eu".into()),
                datacenter: Some("ams2".into()),
                from_node: Some("ams2-server-01".into()),
            },
            problems: vec!["not persisted".into()],
            warnings: vec!["not persisted".into()],
            joins: vec![("consul".into(), 3)],
            errors: vec![("dns".into(), 1)],
        }
    }

    #[test]
    fn a_persisted_report_reads_back_its_peers_records_and_learned_identity() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_cached(dir.path()).unwrap().is_none(), "none yet");
        let r = report();
        persist(dir.path(), &r).unwrap();
        let mode = std::fs::metadata(cache_path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, DISCOVERY_FILE_MODE);
        let back = load_cached(dir.path()).unwrap().unwrap();
        assert_eq!(back.peers, r.peers);
        assert_eq!(back.records, r.records);
        assert_eq!(back.learned, r.learned);
        // Runtime state is not seeded from a file.
        assert!(back.problems.is_empty() && back.warnings.is_empty());
        assert!(back.joins.is_empty() && back.errors.is_empty());
    }

    #[test]
    fn a_last_seen_past_any_clock_reads_as_the_epoch_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Cached::of(&report());
        c.records
            .iter_mut()
            .for_each(|r| r.last_seen_unix = u64::MAX);
        let text = serde_json::to_string(&c).unwrap();
        let path = cache_path(dir.path());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        #[allow(clippy::disallowed_methods)]
        std::fs::write(&path, text).unwrap();
        let back = load_cached(dir.path()).unwrap().unwrap();
        assert_eq!(back.records[0].last_seen, SystemTime::UNIX_EPOCH);
    }

    #[test]
    fn a_bad_persisted_report_is_refused_with_its_path_and_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = cache_path(dir.path());
        let cases: Vec<(String, &str)> = vec![
            ("not json".into(), "expected"),
            (
                serde_json::to_string(&Cached::of(&report()))
                    .unwrap()
                    .replace("\"version\":1", "\"version\":9"),
                "format version 9",
            ),
            (
                serde_json::to_string(&Cached::of(&report()))
                    .unwrap()
                    .replace("ams2-server-01", &"x".repeat(300)),
                "longer than 255",
            ),
            (
                serde_json::to_string(&Cached::of(&report()))
                    .unwrap()
                    .replace("10.0.1.12", "10.0.1.12\\u0007"),
                "control characters",
            ),
            (" ".repeat(MAX_CACHE_BYTES as usize + 10), "larger than"),
        ];
        for (text, why) in cases {
            let mut f = RenderedFile {
                product: Product::Consul,
                path: path.clone(),
                contents: text,
                mode: 0o644,
                owner: None,
            };
            f.contents.push('\n');
            render::write::write_files(&[f]).unwrap();
            let err = load_cached(dir.path()).unwrap_err().to_string();
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(err.contains(why), "{why}: {err}");
        }
    }

    #[test]
    fn too_many_records_are_refused() {
        let mut r = report();
        let one = r.records[0].clone();
        r.records = vec![one; MAX_CACHED_RECORDS];
        let mut c = Cached::of(&r);
        assert!(c.check().is_ok());
        c.records.push(c.records[0].clone());
        assert!(c.check().unwrap_err().contains("more than 256 records"));
    }
}

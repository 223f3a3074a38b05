//! Discovery at run time: finds the peers a node joins and publishes them
//! as a [`DiscoveryReport`] (the plan's [`Peers`](crate::peers::Peers) plus records, learned
//! identity, problems, warnings and counters).
//!
//! Owns the providers ([`static`](statics) role lists, [`dns`] names
//! re-resolved on an interval, [`mdns`] announcements between supervisors
//! on the LAN), the merging of what they find into one deterministic peer
//! set ([`merge`]), the choice of a healthy Consul server for a Nomad
//! without a local Consul ([`choice`]) and the live joins through the
//! node's own agents' APIs ([`joins`]).
//!
//! Must not: write any file (the daemon persists the peers), import
//! `health`, restart an agent, or join a peer of another region. What
//! other supervisors announce is untrusted input: it is checked field by
//! field ([`txt`]) and a bad announcement is a warning, never a crash.

pub mod backoff;
pub mod choice;
pub mod dns;
pub mod joins;
pub mod mdns;
pub mod merge;
pub mod statics;
pub mod txt;

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent::AgentClient;
use crate::peers::{DiscoveryReport, Learned, PeerKind, PeerRecord, Source};
use crate::plan::Plan;
use crate::role::NodeRole;
use crate::vocab::Product;

pub use merge::Found;

/// Warnings kept in the report (newest last).
pub const MAX_WARNINGS: usize = 32;
/// The same warning (same key) is shown at most once per this period.
pub const WARNING_REPEAT: Duration = Duration::from_secs(60);
/// Keys remembered for the rate limit of warnings.
const MAX_WARNING_KEYS: usize = 512;

/// What discovery starts from: the node (role and plan), its health
/// address (the port it announces) and the peers of the last run.
#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    role: NodeRole,
    plan: Plan,
    health: SocketAddr,
    cached: Option<DiscoveryReport>,
}

impl DiscoveryConfig {
    /// `health` = the node's health listen address (announced port); `cached` = peers from the
    /// last run (wire17 persists them), used as seeds with their source kept as recorded.
    pub fn new(
        role: &NodeRole,
        plan: &Plan,
        health: SocketAddr,
        cached: Option<DiscoveryReport>,
    ) -> Self {
        Self {
            role: role.clone(),
            plan: plan.clone(),
            health,
            cached,
        }
    }
}

/// The node as discovery sees it: who it is, where it runs, which agents
/// it has. Derived from the role and plan in force ([`Discovery::set_role`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The role in force.
    pub role: NodeRole,
    /// The plan in force.
    pub plan: Plan,
    /// The health listen address (its port is announced).
    pub health: SocketAddr,
}

impl Node {
    /// The node's own addresses (never peers of itself).
    pub fn own_addresses(&self) -> Vec<IpAddr> {
        let a = &self.role.addresses;
        let mut v = vec![a.private];
        v.extend(a.public);
        if !a.bind.is_unspecified() {
            v.push(a.bind);
        }
        v
    }

    /// Whether this node runs Nomad without a local Consul (so it needs
    /// the address of a Consul server: the Consul choice).
    pub fn needs_consul_choice(&self) -> bool {
        self.role.roles.is_nomad() && !self.role.roles.is_consul()
    }

    /// The HTTP API of the local agent of `product`, if it runs here.
    pub fn local_agent(&self, product: Product) -> Option<&crate::plan::AgentPlan> {
        self.plan.agents.iter().find(|a| a.product == product)
    }
}

/// Mutable state behind a [`Discovery`]: what each provider found, the
/// choice, warnings and counters. One lock, never held across an await.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) node: Node,
    /// Static role lists (recomputed on every role change).
    pub(crate) statics: Vec<Found>,
    /// The last good answer of each DNS name.
    pub(crate) dns: BTreeMap<String, Vec<Found>>,
    /// mDNS nodes by node name, with when each was last seen.
    pub(crate) mdns: BTreeMap<String, mdns::Seen>,
    /// Seeds of the last run, kept until their source has answered (DNS:
    /// a name resolved; mDNS: browsing for 3 announcement TTLs) or is off.
    pub(crate) cached: Vec<Found>,
    /// The chosen Consul HTTP API and the problem when none is healthy.
    pub(crate) choice: Option<String>,
    pub(crate) choice_problem: Option<String>,
    pub(crate) warnings: VecDeque<String>,
    warned: BTreeMap<String, Instant>,
    pub(crate) joins: BTreeMap<String, u64>,
    pub(crate) errors: BTreeMap<String, u64>,
}

impl State {
    fn new(node: Node, cached: Option<DiscoveryReport>) -> Self {
        let now = SystemTime::now();
        let statics = statics::found(&node.role, now);
        let cached = cached
            .map(|c| merge::seeds(&c))
            .unwrap_or_default()
            .into_iter()
            // Static and cloud seeds are recomputed from the role in force.
            .filter(|f| matches!(f.record.source, Source::Dns | Source::Mdns))
            .collect();
        Self {
            node,
            statics,
            dns: BTreeMap::new(),
            mdns: BTreeMap::new(),
            cached,
            choice: None,
            choice_problem: None,
            warnings: VecDeque::new(),
            warned: BTreeMap::new(),
            joins: BTreeMap::new(),
            errors: BTreeMap::new(),
        }
    }

    /// Adds a warning unless the same `key` was warned about within
    /// [`WARNING_REPEAT`]; logs it too. Bounded.
    pub(crate) fn warn(&mut self, key: &str, text: String) {
        let now = Instant::now();
        if let Some(t) = self.warned.get(key) {
            if now.duration_since(*t) < WARNING_REPEAT {
                return;
            }
        }
        if self.warned.len() >= MAX_WARNING_KEYS {
            // Forget the oldest key.
            if let Some(oldest) = self
                .warned
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(k, _)| k.clone())
            {
                self.warned.remove(&oldest);
            }
        }
        self.warned.insert(key.to_string(), now);
        tracing::warn!(target: "hashi_supervisor::discovery", "{text}");
        if self.warnings.len() >= MAX_WARNINGS {
            self.warnings.pop_front();
        }
        self.warnings.push_back(text);
    }

    /// Counts one error of `source` (`dns`, `mdns`, `consul`, `join`).
    pub(crate) fn count_error(&mut self, source: &str) {
        *self.errors.entry(source.to_string()).or_insert(0) += 1;
    }

    /// Counts one join made through `agent` (`consul`, `nomad`).
    pub(crate) fn count_join(&mut self, agent: &str) {
        *self.joins.entry(agent.to_string()).or_insert(0) += 1;
    }

    /// Everything found, static first, then DNS, mDNS and seeds.
    pub(crate) fn all_found(&self) -> Vec<Found> {
        let mut v = self.statics.clone();
        for f in self.dns.values() {
            v.extend(f.iter().cloned());
        }
        v.extend(self.mdns_found());
        v.extend(self.cached.iter().cloned());
        v
    }

    /// What the announcing nodes are to this node now. A Consul API whose
    /// security differs from this node's (HTTPS `tls=1` on a plaintext
    /// node, or plain HTTP on a secured one) is no Consul choice for it:
    /// it could not (or must not) be asked.
    pub(crate) fn mdns_found(&self) -> Vec<Found> {
        let ident = merge::Identity::of(&self.node, &self.report_learned());
        let secured = self.node.role.security.material.is_some();
        self.mdns
            .values()
            .flat_map(|s| {
                let mut f = merge::from_announcement(&ident, &s.ann, s.seen);
                if s.ann.tls != secured {
                    f.iter_mut().for_each(|f| f.consul_http = None);
                }
                f
            })
            .collect()
    }

    /// The report of the current state (pure).
    pub(crate) fn report(&self) -> DiscoveryReport {
        let found = self.all_found();
        let ident = merge::Identity::of(&self.node, &self.learned_now().0);
        let mut peers = merge::peers(&ident, &found);
        if self.node.needs_consul_choice() {
            peers.consul_http = self.choice.clone();
        }
        let (learned, learn_problem) = self.learned_now();
        let mut problems = Vec::new();
        problems.extend(learn_problem);
        problems.extend(self.choice_problem.clone());
        DiscoveryReport {
            peers,
            records: merge::records(&found),
            learned,
            problems,
            warnings: self.warnings.iter().cloned().collect(),
            joins: self.joins.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            errors: self.errors.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        }
    }

    /// What the announcements teach (without the problem).
    pub(crate) fn report_learned(&self) -> Learned {
        self.learned_now().0
    }

    /// What the announcements teach for the role's unwritten identity.
    fn learned_now(&self) -> (Learned, Option<String>) {
        let anns: Vec<&txt::Announcement> = self.mdns.values().map(|s| &s.ann).collect();
        merge::learn(&self.node.role, &anns)
    }
}

/// Shared between the handle and the provider tasks.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    tx: watch::Sender<DiscoveryReport>,
    /// Bumped on every role change, so tasks notice.
    pub(crate) node_tx: watch::Sender<Node>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data; keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the state with `f` and publishes the new report when it
    /// differs from the last one.
    pub(crate) fn update<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let (r, report) = {
            let mut s = self.lock();
            let r = f(&mut s);
            (r, s.report())
        };
        self.tx.send_if_modified(|cur| {
            if *cur == report {
                false
            } else {
                *cur = report;
                true
            }
        });
        r
    }

    pub(crate) fn node(&self) -> Node {
        self.node_tx.borrow().clone()
    }
}

/// Handle on the running discovery; cheap to clone.
#[derive(Debug, Clone)]
pub struct Discovery {
    shared: Arc<Shared>,
}

/// Starts discovery for `cfg` on `tracker`: the static provider at once,
/// DNS and mDNS when the role enables them, the Consul choice for a Nomad
/// without a local Consul, and the live joins through `agents`. Every task
/// ends on `cancel` (the mDNS daemon is shut down).
pub fn start(
    cfg: DiscoveryConfig,
    agents: &AgentClient,
    tracker: &TaskTracker,
    cancel: &CancellationToken,
) -> Discovery {
    let node = Node {
        role: cfg.role,
        plan: cfg.plan,
        health: cfg.health,
    };
    let state = State::new(node.clone(), cfg.cached);
    let (tx, _) = watch::channel(state.report());
    let (node_tx, _) = watch::channel(node);
    let shared = Arc::new(Shared {
        state: Mutex::new(state),
        tx,
        node_tx,
    });
    tracker.spawn(dns::run(shared.clone(), cancel.clone()));
    mdns::start(shared.clone(), tracker, cancel);
    tracker.spawn(choice::run(shared.clone(), agents.clone(), cancel.clone()));
    tracker.spawn(joins::run(shared.clone(), agents.clone(), cancel.clone()));
    Discovery { shared }
}

impl Discovery {
    /// The report, updated whenever it changes.
    pub fn subscribe(&self) -> watch::Receiver<DiscoveryReport> {
        self.shared.tx.subscribe()
    }

    /// The report now.
    pub fn report(&self) -> DiscoveryReport {
        self.shared.tx.borrow().clone()
    }

    /// The identity/plan the node now runs with (after learning, after a SIGHUP): announcements,
    /// the choice and the joins follow it.
    pub fn set_role(&self, role: &NodeRole, plan: &Plan) {
        let node = {
            let cur = self.shared.node();
            Node {
                role: role.clone(),
                plan: plan.clone(),
                health: cur.health,
            }
        };
        self.shared.update(|s| {
            s.statics = statics::found(&node.role, SystemTime::now());
            s.node = node.clone();
        });
        self.shared.node_tx.send_if_modified(|cur| {
            if *cur == node {
                false
            } else {
                *cur = node;
                true
            }
        });
    }
}

/// What this role cannot start without that discovery has not found yet, in words
/// ("the Consul server of this datacenter (mDNS on eth0, DNS consul.ams2.eu.hashi.test)",
/// "region and datacenter (no Consul server announced on eth0 yet)"). Empty: the node can start.
pub fn missing(role: &NodeRole, report: &DiscoveryReport) -> Vec<String> {
    let mut out = Vec::new();
    // mDNS as configured: on an interface, or why it cannot run.
    let mdns: Option<Result<String, String>> = role.discovery.mdns.then(|| {
        mdns::interface_of(role)
            .map(|(name, _)| name)
            .ok_or_else(|| format!("no interface holds {}", role.addresses.private))
    });
    let learnable = role.learnable.region || role.learnable.datacenter;
    if let (true, Some(m)) = (learnable, &mdns) {
        let region_ok = !role.learnable.region || report.learned.region.is_some();
        let dc_ok = !role.learnable.datacenter || report.learned.datacenter.is_some();
        if !(region_ok && dc_ok) {
            let what = match (role.learnable.region, role.learnable.datacenter) {
                (true, true) => "region and datacenter",
                (true, false) => "region",
                _ => "datacenter",
            };
            match m {
                Ok(iface) => out.push(format!(
                    "{what} (no Consul server announced on {iface} yet)"
                )),
                Err(why) => out.push(format!("{what} (mDNS cannot run: {why})")),
            }
        }
    }
    let roles = role.roles;
    if roles.is_nomad() && !roles.is_consul() {
        // A written `consul_address` is used as written until discovery
        // finds a healthy one.
        let has_consul =
            report.peers.consul_http.is_some() || role.discovery.consul_address.is_some();
        // Where Consul can be found (mDNS, DNS names) and the role names no
        // Nomad server of its own, Nomad finds its servers through that
        // Consul: it waits for the choice rather than start without one and
        // be restarted on it a moment later.
        let consul_findable = mdns.is_some()
            || role
                .discovery
                .dns
                .as_ref()
                .is_some_and(|d| !d.consul_servers.is_empty());
        let nomad_named = !role.discovery.nomad_retry_join.is_empty()
            || role
                .discovery
                .dns
                .as_ref()
                .is_some_and(|d| !d.nomad_servers.is_empty());
        let has_nomad = if consul_findable && !nomad_named {
            false
        } else {
            nomad_named || !report.peers.nomad_servers.is_empty() || roles.nomad_server
        };
        if !has_consul && !has_nomad {
            let mut looked = Vec::new();
            match &mdns {
                Some(Ok(iface)) => looked.push(format!("mDNS on {iface}")),
                Some(Err(why)) => looked.push(format!("mDNS cannot run: {why}")),
                None => {}
            }
            if let Some(d) = &role.discovery.dns {
                if !d.consul_servers.is_empty() {
                    looked.push(format!("DNS {}", d.consul_servers.join(", ")));
                }
            }
            if let Some(p) = report
                .problems
                .iter()
                .find(|p| p.starts_with("no healthy Consul server"))
            {
                looked.push(p.clone());
            }
            let looked = if looked.is_empty() {
                "no discovery provider is on: set discovery.consul_address, \
                 [discovery.dns] consul_servers or turn mDNS on"
                    .to_string()
            } else {
                looked.join(", ")
            };
            out.push(format!("the Consul server of this datacenter ({looked})"));
        }
    }
    out
}

/// One bounded pass for `check`: static + DNS once + mDNS browse for `within`; announces nothing,
/// joins nothing. Never longer than `within` plus a second.
pub async fn probe(role: &NodeRole, within: Duration) -> DiscoveryReport {
    let now = tokio::time::Instant::now;
    let hard = now() + within + Duration::from_millis(900);
    let node = Node {
        role: role.clone(),
        plan: Plan::from_role(role),
        health: role.health_listen,
    };
    // A secured node probes Consul servers over HTTPS, as `run` does.
    let client = AgentClient::for_plan_and_role(&node.plan, role)
        .ok()
        .filter(|_| node.needs_consul_choice());
    // A probe never outlives the pass.
    let left = move || choice::PROBE_TIMEOUT.min(hard.saturating_duration_since(now()));
    // DNS, then its and the role file's Consul servers asked, while mDNS
    // browses for the whole of `within`.
    let early = async {
        let mut st = State::new(node.clone(), None);
        match dns::resolve_all(&node.role, within).await {
            Ok(out) => {
                dns::apply(&mut st, out);
            }
            Err(why) => {
                st.count_error("dns");
                st.warn("dns resolver", format!("DNS discovery is off: {why}"));
            }
        }
        let asked = match &client {
            Some(c) => choice::probe_all(c, &choice::candidates(&st), left()).await,
            None => Vec::new(),
        };
        (st, asked)
    };
    let ((mut state, mut asked), browsed) = tokio::join!(early, mdns::browse_once(&node, within));
    mdns::apply_browse(&mut state, browsed);
    if let Some(c) = &client {
        let cands = choice::candidates(&state);
        let new: Vec<String> = cands
            .iter()
            .filter(|c| !asked.iter().any(|(a, _)| a == *c))
            .cloned()
            .collect();
        asked.extend(choice::probe_all(c, &new, left()).await);
        let results: Vec<(String, choice::Health)> = cands
            .iter()
            .filter_map(|c| asked.iter().find(|(a, _)| a == c).cloned())
            .collect();
        let dc = merge::Identity::of(&state.node, &state.report_learned()).datacenter;
        let (pick, problem) = choice::choose(None, &results, &dc);
        state.choice = pick;
        state.choice_problem = problem;
    }
    state.report()
}

/// A peer record found now by `source`.
pub(crate) fn record(
    address: String,
    kind: PeerKind,
    source: Source,
    now: SystemTime,
) -> PeerRecord {
    PeerRecord {
        address,
        kind,
        source,
        node: None,
        datacenter: None,
        region: None,
        last_seen: now,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::peers::Peers;

    /// A role on an address no interface of the test machine holds.
    fn role(text: &str, roles: &[&str]) -> NodeRole {
        let host = crate::role::StaticHost {
            hostname: Some("ams2-client-01".into()),
            interfaces: vec![("eth1".into(), std::net::Ipv4Addr::new(10, 213, 57, 21))],
            ..crate::role::StaticHost::default()
        };
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        crate::role::parse(
            std::path::Path::new("/r/node.toml"),
            &crate::role::with_plaintext(text),
            &roles,
            &host,
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn node_of(role: NodeRole) -> Node {
        let plan = Plan::from_role(&role);
        Node {
            health: role.health_listen,
            role,
            plan,
        }
    }

    #[test]
    fn a_role_less_client_misses_its_identity_and_consul_until_found() {
        let r = role("schema = 1\n", &["nomad-client"]);
        assert!(r.discovery.mdns && r.learnable.region && r.learnable.datacenter);
        let m = missing(&r, &DiscoveryReport::default());
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(
            m[0].starts_with(
                "region and datacenter (mDNS cannot run: no interface holds 10.213.57.21"
            ),
            "{m:?}"
        );
        assert!(
            m[1].starts_with("the Consul server of this datacenter (mDNS cannot run"),
            "{m:?}"
        );
        let found = DiscoveryReport {
            learned: Learned {
                region: Some("eu".into()),
                datacenter: Some("ams2".into()),
                from_node: Some("ams2-server-01".into()),
            },
            peers: Peers {
                consul_http: Some("10.213.57.11:8500".into()),
                ..Peers::default()
            },
            ..DiscoveryReport::default()
        };
        assert!(missing(&r, &found).is_empty());
    }

    #[test]
    fn a_nomad_that_can_find_consul_waits_for_the_choice_not_just_for_servers() {
        let r = role(
            "schema = 1\nregion = \"eu\"\ndatacenter = \"ams2\"\n",
            &["nomad-server"],
        );
        assert!(r.discovery.mdns);
        // Nomad servers announced, no Consul chosen yet: still missing (it
        // would start, then restart on the choice).
        let servers_only = DiscoveryReport {
            peers: Peers {
                nomad_servers: vec!["10.213.57.12".into()],
                ..Peers::default()
            },
            ..DiscoveryReport::default()
        };
        let m = missing(&r, &servers_only);
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(
            m[0].starts_with("the Consul server of this datacenter"),
            "{m:?}"
        );
        let chosen = DiscoveryReport {
            peers: Peers {
                consul_http: Some("10.213.57.11:8500".into()),
                ..servers_only.peers.clone()
            },
            ..DiscoveryReport::default()
        };
        assert!(missing(&r, &chosen).is_empty());
        // With no way to find Consul a Nomad server starts on its own.
        let alone = role(
            "schema = 1\nregion = \"eu\"\ndatacenter = \"ams2\"\n[discovery]\nmdns = false\nnomad_retry_join = [\"10.213.57.12\"]\n",
            &["nomad-server"],
        );
        assert!(missing(&alone, &DiscoveryReport::default()).is_empty());
    }

    #[test]
    fn written_values_are_never_missing() {
        let r = role(
            "schema = 1\nregion = \"eu\"\ndatacenter = \"ams2\"\n\
             [discovery]\nconsul_address = \"10.213.57.11\"\n",
            &["nomad-client"],
        );
        assert!(missing(&r, &DiscoveryReport::default()).is_empty());
        let servers = role(
            "schema = 1\nregion = \"eu\"\ndatacenter = \"ams2\"\n\
             [discovery]\nmdns = false\nnomad_retry_join = [\"10.213.57.11\"]\n",
            &["nomad-client"],
        );
        assert!(missing(&servers, &DiscoveryReport::default()).is_empty());
        let consul = role(
            "schema = 1\nregion = \"eu\"\ndatacenter = \"ams2\"\n",
            &["consul-client", "nomad-client"],
        );
        assert!(missing(&consul, &DiscoveryReport::default()).is_empty());
    }

    #[test]
    fn the_report_lists_static_peers_and_warnings_are_rate_limited_and_bounded() {
        let r = role(
            "schema = 1\nregion = \"eu\"\ndatacenter = \"ams2\"\n\
             [discovery]\nconsul_retry_join = [\"10.213.57.12\", \"10.213.57.11\"]\n",
            &["consul-client", "nomad-client"],
        );
        let mut s = State::new(node_of(r), None);
        let rep = s.report();
        assert_eq!(rep.peers.consul_lan, vec!["10.213.57.11", "10.213.57.12"]);
        assert_eq!(rep.records.len(), 2);
        assert!(rep.records.iter().all(|r| r.source == Source::Static));
        s.warn("k", "first".into());
        s.warn("k", "again".into());
        assert_eq!(s.report().warnings, vec!["first".to_string()]);
        for i in 0..(MAX_WARNINGS * 2) {
            s.warn(&format!("k{i}"), format!("w{i}"));
        }
        let w = s.report().warnings;
        assert_eq!(w.len(), MAX_WARNINGS);
        assert_eq!(w.last().map(String::as_str), Some("w63"));
        s.count_error("dns");
        s.count_error("dns");
        s.count_join("consul");
        let rep = s.report();
        assert_eq!(rep.errors, vec![("dns".to_string(), 2)]);
        assert_eq!(rep.joins, vec![("consul".to_string(), 1)]);
    }

    #[test]
    fn cached_seeds_are_used_until_their_source_answers_and_static_ones_are_recomputed() {
        let r = role(
            "schema = 1\nregion = \"eu\"\ndatacenter = \"ams2\"\n",
            &["consul-client", "nomad-client"],
        );
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(9);
        let cached = DiscoveryReport {
            records: vec![
                record(
                    "10.213.57.11".into(),
                    PeerKind::ConsulServer,
                    Source::Dns,
                    t,
                ),
                record(
                    "10.213.57.99".into(),
                    PeerKind::ConsulAgent,
                    Source::Static,
                    t,
                ),
            ],
            ..DiscoveryReport::default()
        };
        let mut s = State::new(node_of(r), Some(cached));
        let rep = s.report();
        assert_eq!(rep.peers.consul_lan, vec!["10.213.57.11"]);
        assert_eq!(rep.records[0].source, Source::Dns);
        assert_eq!(rep.records[0].last_seen, t);
        // DNS answers: its seeds go.
        dns::apply(
            &mut s,
            vec![(
                dns::NameKind::ConsulServers,
                "c.example".into(),
                Ok(Vec::new()),
            )],
        );
        assert!(s.report().peers.consul_lan.is_empty());
    }
}

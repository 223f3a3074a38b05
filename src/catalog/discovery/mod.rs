//! Discovery at run time: finds the peers a node joins and publishes them
//! as a [`DiscoveryReport`] (the plan's [`Peers`] plus records, learned
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
    /// Seeds of the last run, kept until their source has answered.
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
            // Static seeds are recomputed from the role in force.
            .filter(|f| f.record.source != Source::Static)
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

    /// What the announcing nodes are to this node now.
    pub(crate) fn mdns_found(&self) -> Vec<Found> {
        let ident = merge::Identity::of(&self.node, &self.report_learned());
        self.mdns
            .values()
            .flat_map(|s| merge::from_announcement(&ident, &s.ann, s.seen))
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
    let iface = mdns::interface_of(role).map(|(name, _)| name);
    let mdns_on = role.discovery.mdns && iface.is_some();
    let where_mdns = iface.as_deref().unwrap_or("the private interface");
    let learnable = role.learnable.region || role.learnable.datacenter;
    if learnable && mdns_on {
        let region_ok = !role.learnable.region || report.learned.region.is_some();
        let dc_ok = !role.learnable.datacenter || report.learned.datacenter.is_some();
        if !(region_ok && dc_ok) {
            let what = match (role.learnable.region, role.learnable.datacenter) {
                (true, true) => "region and datacenter",
                (true, false) => "region",
                _ => "datacenter",
            };
            out.push(format!(
                "{what} (no Consul server announced on {where_mdns} yet)"
            ));
        }
    }
    let roles = role.roles;
    if roles.is_nomad() && !roles.is_consul() {
        let has_consul = report.peers.consul_http.is_some();
        let has_nomad = !role.discovery.nomad_retry_join.is_empty()
            || !report.peers.nomad_servers.is_empty()
            || roles.nomad_server;
        if !has_consul && !has_nomad {
            let mut looked = Vec::new();
            if mdns_on {
                looked.push(format!("mDNS on {where_mdns}"));
            }
            if let Some(d) = &role.discovery.dns {
                if !d.consul_servers.is_empty() {
                    looked.push(format!("DNS {}", d.consul_servers.join(", ")));
                }
            }
            if let Some(a) = &role.discovery.consul_address {
                looked.push(format!("consul_address {a}: no answer"));
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
    let deadline = tokio::time::Instant::now() + within;
    let node = Node {
        role: role.clone(),
        plan: Plan::from_role(role),
        health: role.health_listen,
    };
    let mut state = State::new(node.clone(), None);
    let dns_pass = dns::resolve_all(&node.role, within);
    let mdns_pass = mdns::browse_once(&node, within);
    let (dns_out, mdns_out) = tokio::join!(dns_pass, mdns_pass);
    match dns_out {
        Ok(out) => {
            dns::apply(&mut state, out);
        }
        Err(why) => {
            state.count_error("dns");
            state.warn("dns resolver", format!("DNS discovery is off: {why}"));
        }
    }
    mdns::apply_browse(&mut state, mdns_out);
    if node.needs_consul_choice() {
        let budget = deadline.saturating_duration_since(tokio::time::Instant::now())
            + Duration::from_millis(500);
        if let Ok(client) = AgentClient::plain() {
            let cands = choice::candidates(&state);
            let probed = tokio::time::timeout(budget, choice::probe_all(&client, &cands)).await;
            if let Ok(results) = probed {
                let (pick, problem) = choice::choose(None, &results, &state.node.role.datacenter);
                state.choice = pick;
                state.choice_problem = problem;
            } else {
                state.choice_problem = Some(format!(
                    "no Consul server of {} answered within {} ms",
                    state.node.role.datacenter,
                    budget.as_millis()
                ));
            }
        }
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

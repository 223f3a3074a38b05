//! The background checker: on an interval, asks each agent of the plan what
//! it reports (every request bounded by a timeout) and publishes a fresh
//! [`HealthSnapshot`]; between rounds it republishes on every change of the
//! supervisor's status. Queries run beside the loop, so a hung agent delays
//! only its own report, never the snapshot's other parts nor any request.
//!
//! An agent whose state changes (started, ready, exited: its state, ready
//! flag or pid in the [`SupervisorStatus`]) is asked again at once, so
//! `/ready` never keeps the failure of an earlier round of an agent that is
//! up now. A round that started before the agent's latest change is stale:
//! it is aborted and its report, if it still arrives, is dropped.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::snapshot::{
    AgentReport, AgentTarget, ConsulReport, HealthSnapshot, NodeInfo, NomadReport,
};
use super::{HealthError, Metrics};
use crate::agent_api::{self, AgentApiError, ConsulClient, NomadClient};
use crate::plan::{Plan, Product};
use crate::supervise::{AgentState, SupervisorStatus};

/// Default interval between two rounds of agent queries.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Checker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckerConfig {
    /// Interval between rounds.
    pub interval: Duration,
    /// Timeout of each request to an agent.
    pub request_timeout: Duration,
}

impl Default for CheckerConfig {
    fn default() -> Self {
        Self {
            interval: DEFAULT_CHECK_INTERVAL,
            request_timeout: agent_api::DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// The checker task. Build with [`Checker::new`], spawn [`Checker::run`].
#[derive(Debug)]
pub struct Checker {
    config: CheckerConfig,
    status: watch::Receiver<SupervisorStatus>,
    tx: watch::Sender<HealthSnapshot>,
    /// Per agent of the node, in its order: its API, or why it has none.
    endpoints: Vec<Result<agent_api::Endpoint, String>>,
}

impl Checker {
    /// A checker of the plan's agents, reading the supervisor's status from
    /// `status`. Returns the receiver the server reads snapshots from.
    pub fn new(
        plan: &Plan,
        status: watch::Receiver<SupervisorStatus>,
        metrics: Arc<Metrics>,
        config: CheckerConfig,
    ) -> Result<(Self, watch::Receiver<HealthSnapshot>), HealthError> {
        Self::for_node(NodeInfo::from_plan(plan), status, metrics, config)
    }

    /// As [`Checker::new`], from node info directly.
    pub fn for_node(
        node: NodeInfo,
        status: watch::Receiver<SupervisorStatus>,
        metrics: Arc<Metrics>,
        config: CheckerConfig,
    ) -> Result<(Self, watch::Receiver<HealthSnapshot>), HealthError> {
        // One endpoint per agent, built once: a TLS API gets its own client
        // holding its CA. An endpoint that cannot be built (unreadable CA)
        // is reported in every round of that agent.
        let endpoints = node
            .agents
            .iter()
            .map(|t| {
                agent_api::Endpoint::new(t.http_addr, t.api_tls.as_ref(), config.request_timeout)
                    .map_err(|e| e.one_line())
            })
            .collect();
        let mut snap = HealthSnapshot::new(node, metrics);
        snap.set_supervisor(status.borrow().clone());
        let (tx, rx) = watch::channel(snap);
        Ok((
            Self {
                config,
                status,
                tx,
                endpoints,
            },
            rx,
        ))
    }

    /// Runs until `cancel`. Never returns an error from an agent: those go
    /// into the snapshot.
    pub async fn run(mut self, cancel: CancellationToken) -> Result<(), HealthError> {
        let mut tick = tokio::time::interval(self.config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let targets = self.tx.borrow().node().agents.clone();
        let bound = self.config.request_timeout * ROUND_TIMEOUT_FACTOR;
        let mut rounds = Rounds::new(&targets, &self.status.borrow());
        let mut status_open = true;
        // One task per agent and round; a report is published as soon as
        // its agent answers (or times out), independently of the others.
        let mut queries: JoinSet<(usize, u64, AgentReport)> = JoinSet::new();
        let start = |queries: &mut JoinSet<_>, rounds: &mut Rounds, i: usize| {
            let (endpoint, t) = (self.endpoints[i].clone(), targets[i].clone());
            let generation = rounds.generation(i);
            let h = queries.spawn(async move {
                let report = match tokio::time::timeout(bound, query_one(endpoint, &t)).await {
                    Ok(r) => r,
                    Err(_) => timed_out(&t, bound),
                };
                (i, generation, report)
            });
            rounds.started(i, h);
        };
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                changed = self.status.changed(), if status_open => {
                    if changed.is_err() {
                        // The supervisor is gone; keep serving the last status.
                        status_open = false;
                        continue;
                    }
                    let st = self.status.borrow_and_update().clone();
                    // An agent that started, became ready or exited is asked
                    // again at once, so its report never lags its state by
                    // an interval; a round of it still running is stale.
                    for i in rounds.changed(&st) {
                        debug!(agent = %targets[i].product, "agent changed state, checking it now");
                        start(&mut queries, &mut rounds, i);
                    }
                    self.tx.send_modify(|s| s.set_supervisor(st));
                }
                Some(done) = queries.join_next_with_id(), if !queries.is_empty() => match done {
                    Ok((id, (i, generation, report))) => {
                        rounds.finished(id);
                        if rounds.is_current(i, generation) {
                            self.tx.send_modify(|s| s.set_report(report));
                        } else {
                            debug!(agent = %report.product, "report of a round older than the agent's state dropped");
                        }
                    }
                    Err(e) => {
                        rounds.finished(e.id());
                        if !e.is_cancelled() {
                            warn!(error = %e, "agent query task ended abnormally");
                        }
                    }
                },
                _ = tick.tick() => {
                    // Every agent without a round in flight (one that hangs
                    // is not asked twice at once).
                    for i in rounds.idle() {
                        start(&mut queries, &mut rounds, i);
                    }
                }
            }
        }
        queries.abort_all();
        Ok(())
    }
}

/// What of an agent's status starts a new round when it changes: started,
/// became ready, exited (or any other state change).
type StateKey = Option<(AgentState, bool, Option<u32>)>;

fn state_key(status: &SupervisorStatus, product: Product) -> StateKey {
    status
        .agents
        .iter()
        .find(|a| a.product == product)
        .map(|a| (a.state, a.ready, a.pid))
}

/// The checker's bookkeeping of rounds, one slot per agent of the node (in
/// the node's order): the agent's state last seen, a generation bumped on
/// each change of it, and the round in flight. A report is current when
/// its round started in the agent's current generation.
#[derive(Debug)]
struct Rounds {
    agents: Vec<Slot>,
}

#[derive(Debug)]
struct Slot {
    product: Product,
    seen: StateKey,
    generation: u64,
    in_flight: Option<AbortHandle>,
}

impl Rounds {
    fn new(targets: &[AgentTarget], status: &SupervisorStatus) -> Self {
        Self {
            agents: targets
                .iter()
                .map(|t| Slot {
                    product: t.product,
                    seen: state_key(status, t.product),
                    generation: 0,
                    in_flight: None,
                })
                .collect(),
        }
    }

    /// The agents whose state changed in `status`, each with its
    /// generation bumped and its round in flight (now stale) aborted.
    fn changed(&mut self, status: &SupervisorStatus) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, slot) in self.agents.iter_mut().enumerate() {
            let key = state_key(status, slot.product);
            if key != slot.seen {
                slot.seen = key;
                slot.generation += 1;
                if let Some(h) = slot.in_flight.take() {
                    h.abort();
                }
                out.push(i);
            }
        }
        out
    }

    fn generation(&self, i: usize) -> u64 {
        self.agents[i].generation
    }

    /// Records the round just started for agent `i`.
    fn started(&mut self, i: usize, h: AbortHandle) {
        self.agents[i].in_flight = Some(h);
    }

    /// Records the end of the round task `id` (answered, timed out,
    /// aborted or failed).
    fn finished(&mut self, id: tokio::task::Id) {
        for slot in &mut self.agents {
            if slot.in_flight.as_ref().is_some_and(|h| h.id() == id) {
                slot.in_flight = None;
            }
        }
    }

    /// Whether a round started in `generation` of agent `i` may publish.
    fn is_current(&self, i: usize, generation: u64) -> bool {
        self.agents[i].generation == generation
    }

    /// The agents with no round in flight.
    fn idle(&self) -> Vec<usize> {
        (0..self.agents.len())
            .filter(|&i| self.agents[i].in_flight.is_none())
            .collect()
    }
}

/// A round of one agent is bounded by this many request timeouts (its
/// requests run concurrently, so one timeout is the normal worst case).
const ROUND_TIMEOUT_FACTOR: u32 = 3;

fn timed_out(t: &AgentTarget, bound: Duration) -> AgentReport {
    let msg = format!("agent queries did not finish within {}s", bound.as_secs());
    unreachable_api(t, msg)
}

/// The report of an agent whose API gave no answer, saying why.
fn unreachable_api(t: &AgentTarget, msg: String) -> AgentReport {
    AgentReport {
        product: t.product,
        checked_at: SystemTime::now(),
        consul: (t.product == Product::Consul).then(|| ConsulReport {
            leader_error: Some(msg.clone()),
            ..Default::default()
        }),
        nomad: (t.product == Product::Nomad).then(|| NomadReport {
            health_error: Some(msg.clone()),
            ..Default::default()
        }),
    }
}

fn note<T>(errors: &mut Vec<String>, r: Result<T, AgentApiError>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            errors.push(e.one_line());
            None
        }
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

async fn query_one(endpoint: Result<agent_api::Endpoint, String>, t: &AgentTarget) -> AgentReport {
    let endpoint = match endpoint {
        Ok(e) => e,
        Err(why) => return unreachable_api(t, why),
    };
    let report = match t.product {
        Product::Consul => AgentReport {
            product: t.product,
            checked_at: SystemTime::now(),
            consul: Some(query_consul(ConsulClient::at(endpoint), t.server).await),
            nomad: None,
        },
        Product::Nomad => AgentReport {
            product: t.product,
            checked_at: SystemTime::now(),
            consul: None,
            nomad: Some(query_nomad(NomadClient::at(endpoint), t.server).await),
        },
    };
    debug!(agent = %t.product, "agent queried");
    AgentReport {
        checked_at: SystemTime::now(),
        ..report
    }
}

/// Asks a Consul agent for its leader, members and (on servers) autopilot.
pub async fn query_consul(c: ConsulClient, server: bool) -> ConsulReport {
    let (leader, lan, wan, autopilot, me) = tokio::join!(
        c.leader(),
        c.members(false),
        async {
            if server {
                Some(c.members(true).await)
            } else {
                None
            }
        },
        async {
            if server {
                Some(c.autopilot_health().await)
            } else {
                None
            }
        },
        c.agent_self(),
    );
    let mut r = ConsulReport::default();
    match leader {
        Ok(l) => r.leader = l,
        Err(e) => r.leader_error = Some(e.one_line()),
    }
    if let Some(m) = note(&mut r.errors, lan) {
        r.lan_members = Some(count(m.len()));
        r.lan_members_alive = Some(count(m.iter().filter(|m| m.is_alive()).count()));
    }
    if let Some(m) = wan.and_then(|w| note(&mut r.errors, w)) {
        r.wan_members = Some(count(m.len()));
    }
    if let Some(a) = autopilot.and_then(|a| note(&mut r.errors, a)) {
        r.failure_tolerance = Some(a.failure_tolerance);
        r.autopilot_healthy = Some(a.healthy);
    }
    if let Some(me) = note(&mut r.errors, me) {
        r.version = Some(me.config.version);
    }
    r
}

/// Asks a Nomad agent for its health, leader, known servers and (on
/// servers) members.
pub async fn query_nomad(c: NomadClient, server: bool) -> NomadReport {
    let (health, leader, me, members) =
        tokio::join!(c.health(), c.leader(), c.agent_self(), async {
            if server {
                Some(c.members().await)
            } else {
                None
            }
        },);
    let mut r = NomadReport::default();
    match health {
        Ok(h) => {
            r.health_server = h.server;
            r.health_client = h.client;
        }
        Err(e) => r.health_error = Some(e.one_line()),
    }
    if let Some(l) = note(&mut r.errors, leader) {
        r.leader = l;
    }
    if let Some(me) = note(&mut r.errors, me) {
        r.version = me.version();
        r.known_servers = me.known_servers();
    }
    if let Some(m) = members.and_then(|m| note(&mut r.errors, m)) {
        r.members = Some(count(m.members.len()));
        r.members_alive = Some(count(m.members.iter().filter(|m| m.is_alive()).count()));
    }
    r
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::supervise::AgentStatus;

    fn target(product: Product) -> AgentTarget {
        AgentTarget {
            product,
            server: true,
            client: false,
            http_addr: "127.0.0.1:1".parse().unwrap(),
            api_tls: None,
        }
    }

    fn status(agents: &[(Product, AgentState, bool, Option<u32>)]) -> SupervisorStatus {
        SupervisorStatus {
            agents: agents
                .iter()
                .map(|&(product, state, ready, pid)| AgentStatus {
                    state,
                    ready,
                    pid,
                    ..AgentStatus::new(product)
                })
                .collect(),
            config_hash: String::new(),
            reload_error: None,
            stopping: false,
            node: None,
        }
    }

    fn rounds() -> Rounds {
        let start = status(&[
            (Product::Consul, AgentState::Starting, false, Some(10)),
            (Product::Nomad, AgentState::Stopped, false, None),
        ]);
        Rounds::new(&[target(Product::Consul), target(Product::Nomad)], &start)
    }

    #[test]
    fn only_a_change_of_state_ready_or_pid_starts_a_round_and_stales_older_reports() {
        let mut r = rounds();
        // Same state with other fields changed (restarts, lines): no round.
        let mut same = status(&[
            (Product::Consul, AgentState::Starting, false, Some(10)),
            (Product::Nomad, AgentState::Stopped, false, None),
        ]);
        same.agents[0].restarts = 3;
        same.agents[0]
            .last_lines
            .push("==> Consul agent running!".into());
        assert!(r.changed(&same).is_empty());
        assert!(r.is_current(0, 0) && r.is_current(1, 0));
        // Consul becomes ready: asked again; a report of a round started
        // before is stale, Nomad's is not.
        let ready = status(&[
            (Product::Consul, AgentState::Running, true, Some(10)),
            (Product::Nomad, AgentState::Stopped, false, None),
        ]);
        assert_eq!(r.changed(&ready), vec![0]);
        assert!(!r.is_current(0, 0));
        assert!(r.is_current(0, 1));
        assert!(r.is_current(1, 0));
        // Nomad started (pid) and Consul exited, in one status.
        let both = status(&[
            (Product::Consul, AgentState::Backoff, false, None),
            (Product::Nomad, AgentState::Starting, false, Some(11)),
        ]);
        assert_eq!(r.changed(&both), vec![0, 1]);
        assert!(r.is_current(0, 2) && r.is_current(1, 1));
        // A restart under a new pid in the same state is a change too.
        let mut restarted = both.clone();
        restarted.agents[1].pid = Some(12);
        assert_eq!(r.changed(&restarted), vec![1]);
        // An agent missing from the status (not started yet) then present.
        let mut r = rounds();
        let none = status(&[(Product::Consul, AgentState::Starting, false, Some(10))]);
        assert_eq!(r.changed(&none), vec![1]);
    }

    #[tokio::test]
    async fn a_change_aborts_the_agents_round_in_flight_and_frees_its_slot() {
        let mut r = rounds();
        let mut set: JoinSet<()> = JoinSet::new();
        let consul = set.spawn(std::future::pending());
        let nomad = set.spawn(std::future::pending());
        let consul_id = consul.id();
        r.started(0, consul);
        r.started(1, nomad);
        assert!(r.idle().is_empty());
        let ready = status(&[
            (Product::Consul, AgentState::Running, true, Some(10)),
            (Product::Nomad, AgentState::Stopped, false, None),
        ]);
        assert_eq!(r.changed(&ready), vec![0]);
        let e = set.join_next_with_id().await.unwrap().unwrap_err();
        assert!(e.is_cancelled());
        assert_eq!(e.id(), consul_id);
        r.finished(e.id());
        // Consul is free for its new round; Nomad's round still runs.
        assert_eq!(r.idle(), vec![0]);
        set.abort_all();
    }
}

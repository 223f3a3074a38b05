//! The background checker: on an interval, asks each agent of the plan what
//! it reports (every request bounded by a timeout) and publishes a fresh
//! [`HealthSnapshot`]; between rounds it republishes on every change of the
//! supervisor's status. Queries run beside the loop, so a hung agent delays
//! only its own report, never the snapshot's other parts nor any request.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::snapshot::{
    AgentReport, AgentTarget, ConsulReport, HealthSnapshot, NodeInfo, NomadReport,
};
use super::{HealthError, Metrics};
use crate::agent_api::{self, AgentApiError, ConsulClient, NomadClient};
use crate::plan::{Plan, Product};
use crate::supervise::SupervisorStatus;

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
        let mut status_open = true;
        // One task per agent and round; a report is published as soon as
        // its agent answers (or times out), independently of the others.
        let mut queries: JoinSet<AgentReport> = JoinSet::new();
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
                    self.tx.send_modify(|s| s.set_supervisor(st));
                }
                Some(done) = queries.join_next(), if !queries.is_empty() => match done {
                    Ok(report) => self.tx.send_modify(|s| s.set_report(report)),
                    Err(e) => warn!(error = %e, "agent query task ended abnormally"),
                },
                _ = tick.tick(), if queries.is_empty() => {
                    for (t, endpoint) in targets.iter().zip(&self.endpoints) {
                        let endpoint = endpoint.clone();
                        let t = t.clone();
                        queries.spawn(async move {
                            match tokio::time::timeout(bound, query_one(endpoint, &t)).await {
                                Ok(r) => r,
                                Err(_) => timed_out(&t, bound),
                            }
                        });
                    }
                }
            }
        }
        queries.abort_all();
        Ok(())
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

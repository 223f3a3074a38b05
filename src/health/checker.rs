//! The background checker: publishes a fresh [`HealthSnapshot`] on every
//! change of the supervisor's status and on every new report of an agent's
//! observer (`agent::observe`, which polls each agent on its interval,
//! every request bounded by a timeout). It asks no agent anything itself,
//! so a hung agent delays only its own report, never the snapshot's other
//! parts nor any request.
//!
//! An agent whose state changes (started, ready, exited: its state, ready
//! flag or pid in the [`SupervisorStatus`]) gets a fresh poll at once (its
//! observer's refresh), so `/ready` never keeps the failure of an earlier
//! poll of an agent that is up now. A report of a poll that started before
//! the agent's latest change is stale: the observer abandons that poll,
//! and its report, if it still arrives, is dropped here.

use std::sync::Arc;

use futures_util::future::select_all;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::security::SecurityStatus;
use super::snapshot::{AgentTarget, DiscoveryView, HealthSnapshot, NodeInfo};
use super::{HealthError, Metrics};
use crate::agent::{Observation, ObserverHandle, Observers};
use crate::plan::Plan;
use crate::supervise::{AgentState, SupervisorStatus};
use crate::vocab::Product;

/// The checker task. Build with [`Checker::new`], spawn [`Checker::run`].
#[derive(Debug)]
pub struct Checker {
    status: watch::Receiver<SupervisorStatus>,
    /// Discovery's view, once `run` publishes it.
    discovery: Option<watch::Receiver<Option<DiscoveryView>>>,
    /// The node's security, once `run` publishes it.
    security: Option<watch::Receiver<Option<SecurityStatus>>>,
    tx: watch::Sender<HealthSnapshot>,
    /// Per agent of the node, in its order: its observer, if one runs.
    observers: Vec<Option<ObserverHandle>>,
}

impl Checker {
    /// A checker of the plan's agents, reading the supervisor's status from
    /// `status` and the agents' reports from `observers`. Returns the
    /// receiver the server reads snapshots from.
    pub fn new(
        plan: &Plan,
        status: watch::Receiver<SupervisorStatus>,
        metrics: Arc<Metrics>,
        observers: Observers,
    ) -> (Self, watch::Receiver<HealthSnapshot>) {
        Self::for_node(NodeInfo::from_plan(plan), status, metrics, observers)
    }

    /// As [`Checker::new`], from node info directly.
    pub fn for_node(
        node: NodeInfo,
        status: watch::Receiver<SupervisorStatus>,
        metrics: Arc<Metrics>,
        observers: Observers,
    ) -> (Self, watch::Receiver<HealthSnapshot>) {
        let observers = node
            .agents
            .iter()
            .map(|t| observers.get(t.product).cloned())
            .collect();
        let mut snap = HealthSnapshot::new(node, metrics);
        snap.set_supervisor(status.borrow().clone());
        let (tx, rx) = watch::channel(snap);
        (
            Self {
                status,
                discovery: None,
                security: None,
                tx,
                observers,
            },
            rx,
        )
    }

    /// Also follows discovery's view (`None` until published).
    pub fn with_discovery(mut self, rx: watch::Receiver<Option<DiscoveryView>>) -> Self {
        if let Some(v) = rx.borrow().clone() {
            self.tx.send_modify(|s| s.set_discovery(v));
        }
        self.discovery = Some(rx);
        self
    }

    /// Also follows the node's security (`None` until published).
    pub fn with_security(mut self, rx: watch::Receiver<Option<SecurityStatus>>) -> Self {
        if let Some(v) = rx.borrow().clone() {
            self.tx.send_modify(|s| s.set_security(v));
        }
        self.security = Some(rx);
        self
    }

    /// Runs until `cancel`. Never returns an error from an agent: those go
    /// into the snapshot.
    pub async fn run(mut self, cancel: CancellationToken) -> Result<(), HealthError> {
        let targets = self.tx.borrow().node().agents.clone();
        let mut rounds = Rounds::new(&targets, &self.status.borrow());
        let mut status_open = true;
        // One receiver per agent with an observer; `None` once closed.
        let mut reports: Vec<Option<watch::Receiver<Observation>>> = self
            .observers
            .iter()
            .map(|o| o.as_ref().map(ObserverHandle::subscribe))
            .collect();
        loop {
            let open: Vec<_> = reports
                .iter_mut()
                .enumerate()
                .filter_map(|(i, rx)| {
                    rx.as_mut()
                        .map(|rx| Box::pin(async move { (i, rx.changed().await.is_ok()) }))
                })
                .collect();
            let any_report = async {
                if open.is_empty() {
                    std::future::pending().await
                } else {
                    select_all(open).await.0
                }
            };
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                r = discovery_changed(self.discovery.as_mut()) => match r {
                    Some(Some(v)) => self.tx.send_modify(|s| s.set_discovery(v)),
                    Some(None) => {}
                    None => self.discovery = None,
                },
                r = discovery_changed(self.security.as_mut()) => match r {
                    Some(Some(v)) => self.tx.send_modify(|s| s.set_security(v)),
                    Some(None) => {}
                    None => self.security = None,
                },
                changed = self.status.changed(), if status_open => {
                    if changed.is_err() {
                        // The supervisor is gone; keep serving the last status.
                        status_open = false;
                        continue;
                    }
                    let st = self.status.borrow_and_update().clone();
                    // An agent that started, became ready or exited is
                    // polled again at once, so its report never lags its
                    // state by an interval; a poll of it in flight is stale.
                    for i in rounds.changed(&st) {
                        if let Some(o) = &self.observers[i] {
                            debug!(agent = %targets[i].product, "agent changed state, polling it now");
                            rounds.require(i, o.refresh());
                        }
                    }
                    self.tx.send_modify(|s| s.set_supervisor(st));
                }
                (i, open) = any_report => {
                    let Some(rx) = reports[i].as_mut() else { continue };
                    if !open {
                        reports[i] = None;
                        continue;
                    }
                    let latest = rx.borrow_and_update().report.clone();
                    if let Some((stamp, report)) = latest {
                        if rounds.is_current(i, stamp.refreshes) {
                            self.tx.send_modify(|s| s.set_report(report));
                        } else {
                            debug!(agent = %report.product, "report of a poll older than the agent's state dropped");
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// The next view of `rx` (`Some(None)`: still unpublished), or forever
/// without a receiver; `None` once it closed.
async fn discovery_changed<T: Clone>(
    rx: Option<&mut watch::Receiver<Option<T>>>,
) -> Option<Option<T>> {
    match rx {
        Some(rx) => match rx.changed().await {
            Ok(()) => Some(rx.borrow_and_update().clone()),
            Err(_) => None,
        },
        None => std::future::pending().await,
    }
}

/// What of an agent's status asks for a fresh poll when it changes:
/// started, became ready, exited (or any other state change).
type StateKey = Option<(AgentState, bool, Option<u32>)>;

fn state_key(status: &SupervisorStatus, product: Product) -> StateKey {
    status
        .agents
        .iter()
        .find(|a| a.product == product)
        .map(|a| (a.state, a.ready, a.pid))
}

/// The checker's bookkeeping, one slot per agent of the node (in the
/// node's order): the agent's state last seen and the refresh number a
/// report must answer to be current (the one asked on the latest change).
#[derive(Debug)]
struct Rounds {
    agents: Vec<Slot>,
}

#[derive(Debug)]
struct Slot {
    product: Product,
    seen: StateKey,
    required: u64,
}

impl Rounds {
    fn new(targets: &[AgentTarget], status: &SupervisorStatus) -> Self {
        Self {
            agents: targets
                .iter()
                .map(|t| Slot {
                    product: t.product,
                    seen: state_key(status, t.product),
                    required: 0,
                })
                .collect(),
        }
    }

    /// The agents whose state changed in `status`.
    fn changed(&mut self, status: &SupervisorStatus) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, slot) in self.agents.iter_mut().enumerate() {
            let key = state_key(status, slot.product);
            if key != slot.seen {
                slot.seen = key;
                out.push(i);
            }
        }
        out
    }

    /// Records the refresh asked of agent `i`'s observer on its change.
    fn require(&mut self, i: usize, refresh: u64) {
        self.agents[i].required = refresh;
    }

    /// Whether a report of agent `i` from a poll stamped `refreshes` may
    /// publish: it started after the agent's latest change.
    fn is_current(&self, i: usize, refreshes: u64) -> bool {
        refreshes >= self.agents[i].required
    }
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
    fn only_a_change_of_state_ready_or_pid_asks_a_fresh_poll_and_stales_older_reports() {
        let mut r = rounds();
        // Same state with other fields changed (restarts, lines): nothing.
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
        // Consul becomes ready: polled again (refresh 1); a report of a
        // poll started before is stale, Nomad's is not.
        let ready = status(&[
            (Product::Consul, AgentState::Running, true, Some(10)),
            (Product::Nomad, AgentState::Stopped, false, None),
        ]);
        assert_eq!(r.changed(&ready), vec![0]);
        r.require(0, 1);
        assert!(!r.is_current(0, 0));
        assert!(r.is_current(0, 1) && r.is_current(0, 2));
        assert!(r.is_current(1, 0));
        // Nomad started (pid) and Consul exited, in one status.
        let both = status(&[
            (Product::Consul, AgentState::Backoff, false, None),
            (Product::Nomad, AgentState::Starting, false, Some(11)),
        ]);
        assert_eq!(r.changed(&both), vec![0, 1]);
        r.require(0, 2);
        r.require(1, 1);
        assert!(!r.is_current(0, 1) && r.is_current(0, 2));
        assert!(!r.is_current(1, 0) && r.is_current(1, 1));
        // A restart under a new pid in the same state is a change too.
        let mut restarted = both.clone();
        restarted.agents[1].pid = Some(12);
        assert_eq!(r.changed(&restarted), vec![1]);
        // An agent missing from the status (not started yet) then present.
        let mut r = rounds();
        let none = status(&[(Product::Consul, AgentState::Starting, false, Some(10))]);
        assert_eq!(r.changed(&none), vec![1]);
    }
}

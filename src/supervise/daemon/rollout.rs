//! Versions: brings each agent to the version its spec resolves to now,
//! through the upgrade gate ([`crate::upgrade::Gate`]) when the node has
//! one. At start (pinned by default: the agents were started on the
//! release installed before, whatever the role file asks now) and after
//! each reload.
//!
//! The wanted release is fetched and verified first, beside the running
//! one (`current` untouched), so the turn is held only for the restart.
//! Then: wait for the turn (the gate says what it waits for, published in
//! the agent's [`UpgradeStatus`]), switch `current`, restart, and wait for
//! the agent to be ready and the cluster's tolerance to be back; a release
//! that does not become ready within the deadline is rolled back and the
//! cluster's rollout pauses.
//!
//! # Its own task, and who may touch the agents
//!
//! A rollout runs on its own task ([`Runner::spawn`], a [`Rollout`] in the
//! daemon), so that the daemon's loop keeps serving (watchdog pings,
//! status, discovery, signals) while a node waits at the gate (hours, for
//! a paused rollout) or settles. At most one rollout exists at a time.
//!
//! The agents have one owner at a time, never two: while a rollout task
//! exists, only it sends an agent `UpdatePlan`/`Restart`; the daemon's own
//! paths that do (a reload, a discovery re-plan, a renewal's reload) first
//! end the rollout and run once its task has returned. Ending it
//! ([`Rollout::wind_down`]):
//!
//! * while it fetches or waits at the gate (it holds no turn and touched
//!   nothing yet): the wait ends at once and the task returns;
//! * while it holds a turn (restart, readiness, settle, a rollback): that
//!   agent's step finishes (or rolls back) first, then the task returns
//!   before the next agent.
//!
//! The daemon then applies the reload or re-plan and starts a new rollout
//! from the plan now in force, carrying over what the ended one had not
//! finished. The releases the task installed come back in its [`Outcome`]
//! (the daemon's copy is stale only while the task runs, and the daemon
//! uses it only once the task has returned).
//!
//! Shutdown (the daemon's token) ends a gate wait at once and cuts a step
//! short: a restart not ready yet puts `current` back on the previous
//! release (the next start runs it and takes the turn again), a settle is
//! abandoned; the turn is dropped without a round trip (its renewal stops
//! and the session's TTL frees the lock), and the agents then get their
//! usual stop (graceful leave) from `stop`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Preparer, error_chain, on_release};
use crate::plan::{AgentPlan, Plan, ReleasePlan};
use crate::release::Installed;
use crate::supervise::actor::{AgentHandle, Control};
use crate::supervise::status::{AgentState, AgentStatus, SupervisorStatus, UpgradeStatus};
use crate::upgrade::Gate;
use crate::version::VersionSpec;
use crate::vocab::Product;

/// Longest time resolving and fetching the wanted release may take
/// (retries included); past it the wanted version is unknown for now.
pub const FETCH_BOUND: Duration = Duration::from_secs(600);

/// A rollout running on its task; see the module docs.
pub(super) struct Rollout {
    /// Ends a gate wait; a step in progress finishes first.
    stop: CancellationToken,
    /// It holds a turn (restarting, settling, rolling back) now.
    busy: Arc<AtomicBool>,
    /// The agents whose spec a reload changed, for a successor.
    changed: Vec<Product>,
    task: JoinHandle<Outcome>,
}

/// What a rollout task gives back.
pub(super) struct Outcome {
    /// The releases installed per product now.
    pub installed: HashMap<Product, Installed>,
    /// One line per agent that could not be upgraded.
    pub errors: Vec<String>,
    /// Every agent was looked at (not ended early).
    pub finished: bool,
}

impl Rollout {
    /// Asks the task to end: at once while it waits, after the step in
    /// progress otherwise.
    pub(super) fn wind_down(&self) {
        if !self.stop.is_cancelled() {
            if self.busy.load(Ordering::SeqCst) {
                tracing::info!(
                    "the rollout finishes the restart in progress before the reload or re-plan"
                );
            } else {
                tracing::info!("ending the rollout's wait for a reload or re-plan");
            }
        }
        self.stop.cancel();
    }

    /// The agents whose spec had changed for this rollout.
    pub(super) fn changed(&self) -> &[Product] {
        &self.changed
    }

    /// The task's end (for a `select!`).
    pub(super) async fn ended(&mut self) -> Result<Outcome, tokio::task::JoinError> {
        (&mut self.task).await
    }

    /// Ends the task for good (abort after `bound`).
    pub(super) async fn finish(mut self, bound: Duration) -> Option<Outcome> {
        self.stop.cancel();
        match tokio::time::timeout(bound, &mut self.task).await {
            Ok(Ok(o)) => Some(o),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "the rollout task failed");
                None
            }
            Err(_) => {
                tracing::warn!(
                    bound_secs = bound.as_secs(),
                    "the rollout did not end in time, abandoning it"
                );
                self.task.abort();
                None
            }
        }
    }
}

/// Everything a rollout task owns.
pub(super) struct Runner<P> {
    pub plan: Plan,
    pub changed: Vec<Product>,
    pub preparer: Arc<P>,
    pub gate: Option<Arc<Gate>>,
    pub handles: Vec<AgentHandle>,
    pub installed: HashMap<Product, Installed>,
    pub status: Arc<watch::Sender<SupervisorStatus>>,
    /// Readiness window of a restart without a gate.
    pub rollback_window: Duration,
    /// Wait (bounded) for the agents to be ready or failed first (start).
    pub wait_ready: Option<Duration>,
    pub shutdown: CancellationToken,
}

/// How one restart ended.
enum Step {
    Ready,
    Failed(String),
    /// Shutdown came first.
    Shutdown,
}

impl<P: Preparer> Runner<P> {
    /// Runs on its own task.
    pub(super) fn spawn(self) -> Rollout {
        let stop = CancellationToken::new();
        let busy = Arc::new(AtomicBool::new(false));
        let changed = self.changed.clone();
        let task = tokio::spawn(self.run(stop.clone(), busy.clone()));
        Rollout {
            stop,
            busy,
            changed,
            task,
        }
    }

    fn ended(&self, stop: &CancellationToken) -> bool {
        stop.is_cancelled() || self.shutdown.is_cancelled()
    }

    async fn run(mut self, stop: CancellationToken, busy: Arc<AtomicBool>) -> Outcome {
        if let Some(bound) = self.wait_ready {
            let all = async {
                for h in &self.handles {
                    let _ = h
                        .wait_for(|s| s.ready || s.state == AgentState::Failed)
                        .await;
                }
            };
            tokio::select! {
                () = stop.cancelled() => {}
                () = self.shutdown.cancelled() => {}
                _ = tokio::time::timeout(bound, all) => {}
            }
        }
        let mut errors = Vec::new();
        let mut finished = true;
        let agents = self.plan.agents.clone();
        for agent in &agents {
            if self.ended(&stop) {
                finished = false;
                break;
            }
            let spec_changed = self.changed.contains(&agent.product);
            if let Err(e) = self.converge_agent(agent, spec_changed, &stop, &busy).await {
                errors.push(e);
            }
        }
        if self.ended(&stop) {
            finished = false;
        }
        Outcome {
            installed: self.installed,
            errors,
            finished,
        }
    }

    fn handle(&self, product: Product) -> Option<&AgentHandle> {
        self.handles.iter().find(|h| h.product() == product)
    }

    async fn converge_agent(
        &mut self,
        agent: &AgentPlan,
        spec_changed: bool,
        stop: &CancellationToken,
        busy: &AtomicBool,
    ) -> Result<(), String> {
        let product = agent.product;
        let Some(h) = self.handle(product).cloned() else {
            return Ok(());
        };
        let running = self.installed.get(&product).cloned();
        let installed = running.as_ref().map(|i| i.version.to_string());
        match (&agent.version, &running) {
            // Nothing known to compare with, and nothing asked.
            (_, None) if !spec_changed => return Ok(()),
            (VersionSpec::Exact(v), Some(r)) if *v == r.version => {
                set_upgrade(&self.status, product, None);
                return Ok(());
            }
            _ => {}
        }
        let release = self.plan.release.clone();
        let fetched = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = self.shutdown.cancelled() => return Ok(()),
            r = tokio::time::timeout(FETCH_BOUND, self.preparer.fetch(&release, agent)) => r,
        };
        let why = match fetched {
            Ok(Ok(inst)) => {
                if running.as_ref().is_some_and(|r| r.version == inst.version) {
                    set_upgrade(&self.status, product, None);
                    return Ok(());
                }
                return self
                    .upgrade_gated(&h, agent, inst, &release, stop, busy)
                    .await;
            }
            Ok(Err(e)) => error_chain(&e),
            Err(_) => format!("timed out after {}s", FETCH_BOUND.as_secs()),
        };
        set_upgrade(
            &self.status,
            product,
            Some(UpgradeStatus {
                installed,
                wanted: None,
                waiting_for: Some(format!(
                    "the release `{}` resolves to: {why}",
                    agent.version
                )),
                paused: None,
            }),
        );
        if spec_changed {
            Err(format!(
                "failed to install {product} {}: {why}",
                agent.version
            ))
        } else {
            tracing::warn!(agent = %product, spec = %agent.version, error = %why,
                "the wanted version is unknown; keeping the installed release");
            Ok(())
        }
    }

    /// Restarts `h` onto `inst` once the gate gives the node its turn (at
    /// once without a gate), rolls back and pauses the rollout if it fails.
    async fn upgrade_gated(
        &mut self,
        h: &AgentHandle,
        new: &AgentPlan,
        inst: Installed,
        release: &ReleasePlan,
        stop: &CancellationToken,
        busy: &AtomicBool,
    ) -> Result<(), String> {
        let product = new.product;
        let from = self.installed.get(&product).map(|i| i.version.to_string());
        let base = UpgradeStatus {
            installed: from.clone(),
            wanted: Some(inst.version.to_string()),
            waiting_for: None,
            paused: None,
        };
        let Some(gate) = self.gate.clone() else {
            set_upgrade(&self.status, product, Some(base));
            let window = self.rollback_window;
            busy.store(true, Ordering::SeqCst);
            let r = self.restart_on(h, new, inst, release, window, false).await;
            busy.store(false, Ordering::SeqCst);
            return match r {
                Step::Ready => {
                    set_upgrade(&self.status, product, None);
                    Ok(())
                }
                Step::Failed(why) => Err(why),
                Step::Shutdown => Ok(()),
            };
        };
        let deadline = gate.settings().health_deadline;
        loop {
            let report = {
                let status = self.status.clone();
                let base = base.clone();
                move |w: Option<String>| {
                    let paused = w
                        .as_deref()
                        .and_then(|w| w.strip_prefix("rollout paused: "))
                        .map(str::to_string);
                    let u = UpgradeStatus {
                        waiting_for: w,
                        paused,
                        ..base.clone()
                    };
                    status.send_modify(|s| {
                        if let Some(a) = s.agents.iter_mut().find(|a| a.product == product) {
                            a.upgrade = Some(u);
                        }
                    });
                }
            };
            report(Some("the upgrade gate".into()));
            let turn = tokio::select! {
                () = self.shutdown.cancelled() => return Ok(()),
                () = stop.cancelled() => {
                    tracing::info!(agent = %product, "the wait at the upgrade gate ends (reload or re-plan)");
                    return Ok(());
                }
                t = gate.acquire(product, &inst.version, &report) => t,
            };
            busy.store(true, Ordering::SeqCst);
            let step = self
                .step(&gate, turn, h, new, &inst, release, &from, &base, deadline)
                .await;
            busy.store(false, Ordering::SeqCst);
            match step {
                Some(r) => return r,
                // Rolled back and paused: back to the gate, which waits
                // (saying so) until an operator clears the pause, or a
                // reload asks for something else.
                None if self.ended(stop) => return Ok(()),
                None => {}
            }
        }
    }

    /// One turn: restart on `inst`, settle, or roll back and pause.
    /// `None`: rolled back (the caller goes back to the gate).
    #[allow(clippy::too_many_arguments)]
    async fn step(
        &mut self,
        gate: &Gate,
        turn: crate::upgrade::Turn,
        h: &AgentHandle,
        new: &AgentPlan,
        inst: &Installed,
        release: &ReleasePlan,
        from: &Option<String>,
        base: &UpgradeStatus,
        deadline: Duration,
    ) -> Option<Result<(), String>> {
        let product = new.product;
        tracing::info!(agent = %product, from = ?from, to = %inst.version, cluster = %turn.cluster(),
            single_server = turn.single, leader = turn.leader, "upgrade turn taken");
        set_upgrade(&self.status, product, Some(base.clone()));
        tokio::select! {
            () = self.shutdown.cancelled() => {
                drop_turn(turn);
                return Some(Ok(()));
            }
            () = gate.before_restart(&turn) => {}
        }
        let to = inst.version.to_string();
        let why = match self
            .restart_on(h, new, inst.clone(), release, deadline, true)
            .await
        {
            Step::Shutdown => {
                drop_turn(turn);
                return Some(Ok(()));
            }
            Step::Ready => {
                let settled = tokio::select! {
                    () = self.shutdown.cancelled() => {
                        tracing::info!(agent = %product, "stopping while the cluster settles");
                        // The settle owns the turn; dropped with it.
                        return Some(Ok(()));
                    }
                    r = gate.settle(turn, deadline) => r,
                };
                return Some(match settled {
                    Ok(()) => {
                        set_upgrade(&self.status, product, None);
                        Ok(())
                    }
                    Err((turn, why)) => {
                        // Running and ready, but the cluster did not
                        // recover: nobody else goes until someone looks.
                        let why = format!("{why}; it keeps running {to}");
                        let described = gate
                            .pause(turn, from.as_deref().unwrap_or("nothing"), &to, &why)
                            .await;
                        set_upgrade(
                            &self.status,
                            product,
                            Some(UpgradeStatus {
                                installed: Some(to.clone()),
                                wanted: Some(to),
                                waiting_for: None,
                                paused: Some(described),
                            }),
                        );
                        Err(why)
                    }
                });
            }
            Step::Failed(why) => why,
        };
        let back = self.installed.get(&product).map(|i| i.version.to_string());
        let described = gate
            .pause(turn, back.as_deref().unwrap_or("nothing"), &to, &why)
            .await;
        set_upgrade(
            &self.status,
            product,
            Some(UpgradeStatus {
                paused: Some(described),
                ..base.clone()
            }),
        );
        None
    }

    /// Makes `inst` current, restarts on it, and rolls back to the
    /// release running before if it is not ready within `window` (or
    /// when shutdown comes first: the next start runs the previous one).
    async fn restart_on(
        &mut self,
        h: &AgentHandle,
        new: &AgentPlan,
        inst: Installed,
        release: &ReleasePlan,
        window: Duration,
        strict: bool,
    ) -> Step {
        let product = new.product;
        tracing::info!(agent = %product, to = %inst.version, "upgrading");
        if let Err(e) = self.preparer.activate(release, &inst).await {
            return Step::Failed(format!(
                "failed to switch {product} to {}: {}",
                inst.version,
                error_chain(&e)
            ));
        }
        let previous = self.installed.get(&product).cloned();
        let before = h.status();
        let a = on_release(new, Some(&inst));
        let _ = h.send(Control::UpdatePlan(
            Box::new(a),
            Some(inst.version.to_string()),
        ));
        let _ = h.send(Control::Restart);
        // With a gate the deadline is the issue's: ready, or rolled back.
        let ok = tokio::select! {
            () = self.shutdown.cancelled() => None,
            ok = started_ok(h, &before, window, strict) => Some(ok),
        };
        match ok {
            Some(true) => {
                tracing::info!(agent = %product, version = %inst.version, "upgrade done");
                self.installed.insert(product, inst);
                return Step::Ready;
            }
            Some(false) => {}
            None => {
                if h.status().ready && h.status().restarts > before.restarts {
                    self.installed.insert(product, inst);
                    return Step::Shutdown;
                }
                // Not proven: `current` goes back, so that the next start
                // runs the previous release and the rollout takes its
                // turn again.
                tracing::warn!(agent = %product, version = %inst.version,
                    "stopping before the new version was ready: the previous release stays current");
                if let Some(prev) = &previous {
                    let back = tokio::time::timeout(
                        Duration::from_secs(10),
                        self.preparer.rollback(release, prev),
                    )
                    .await;
                    if !matches!(back, Ok(Ok(()))) {
                        tracing::error!(agent = %product, "failed to make the previous release current again");
                    }
                    let a = on_release(new, Some(prev));
                    let _ = h.send(Control::UpdatePlan(
                        Box::new(a),
                        Some(prev.version.to_string()),
                    ));
                }
                return Step::Shutdown;
            }
        }
        let Some(prev) = previous else {
            return Step::Failed(format!(
                "{product} {} failed to start and no previous release is known",
                inst.version
            ));
        };
        tracing::error!(agent = %product, version = %inst.version, previous = %prev.version, "new version failed to start, rolling back");
        if let Err(e) = self.preparer.rollback(release, &prev).await {
            return Step::Failed(format!(
                "{product} {} failed to start, and rollback failed: {}",
                inst.version,
                error_chain(&e)
            ));
        }
        let a = on_release(new, Some(&prev));
        let why = format!(
            "version {} failed to start, rolled back to {}",
            inst.version, prev.version
        );
        let _ = h.send(Control::UpdatePlan(
            Box::new(a),
            Some(prev.version.to_string()),
        ));
        let _ = h.send(Control::Note(Some(why.clone())));
        let _ = h.send(Control::Restart);
        Step::Failed(why)
    }
}

/// Gives a turn up without a round trip: its session's renewal stops and
/// the TTL frees the lock (shutdown must not wait on Consul).
fn drop_turn(turn: crate::upgrade::Turn) {
    tracing::info!(cluster = %turn.cluster(), "stopping with the upgrade turn held: its lock is freed when its session's TTL expires");
    drop(turn);
}

/// Publishes `u` as `product`'s upgrade status.
pub(super) fn set_upgrade(
    status: &watch::Sender<SupervisorStatus>,
    product: Product,
    u: Option<UpgradeStatus>,
) {
    status.send_if_modified(
        |s| match s.agents.iter_mut().find(|a| a.product == product) {
            Some(a) if a.upgrade != u => {
                a.upgrade = u;
                true
            }
            _ => false,
        },
    );
}

/// Whether the agent, restarted after `before`, became ready without a crash
/// within `window`. A still-starting process at the end of the window counts
/// as started (slow, not failed) unless `strict`.
async fn started_ok(h: &AgentHandle, before: &AgentStatus, window: Duration, strict: bool) -> bool {
    let r0 = before.restarts;
    let was_live = matches!(before.state, AgentState::Starting | AgentState::Running);
    let failed = move |s: &AgentStatus| {
        s.state == AgentState::Failed
            || s.restarts > r0.saturating_add(1)
            || (s.state == AgentState::Backoff && (s.restarts > r0 || was_live))
    };
    let outcome = tokio::time::timeout(
        window,
        h.wait_for(|s| failed(s) || (s.restarts > r0 && s.ready)),
    )
    .await;
    let s = h.status();
    match outcome {
        Ok(_) => !failed(&s),
        Err(_) => !failed(&s) && s.pid.is_some() && (!strict || s.ready),
    }
}

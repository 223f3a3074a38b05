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
//! A wait at the gate ends on shutdown and on a reload request (the
//! reload then runs, and converges again with the plan it loads).

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Daemon, DaemonEvent, Preparer, error_chain, on_release};
use crate::plan::{AgentPlan, Plan, ReleasePlan};
use crate::release::Installed;
use crate::supervise::actor::{AgentHandle, Control};
use crate::supervise::status::{AgentState, AgentStatus, UpgradeStatus};
use crate::version::VersionSpec;
use crate::vocab::Product;

/// Longest time resolving and fetching the wanted release may take
/// (retries included); past it the wanted version is unknown for now.
pub const FETCH_BOUND: Duration = Duration::from_secs(600);

impl<P: Preparer> Daemon<P> {
    /// Publishes `u` as `product`'s upgrade status.
    fn set_upgrade(&self, product: Product, u: Option<UpgradeStatus>) {
        self.status.send_if_modified(|s| {
            match s.agents.iter_mut().find(|a| a.product == product) {
                Some(a) if a.upgrade != u => {
                    a.upgrade = u;
                    true
                }
                _ => false,
            }
        });
    }

    /// Brings every agent of `plan` to its wanted version; `changed`
    /// lists the agents whose spec the reload changed. One error line per
    /// agent that could not be upgraded.
    pub(super) async fn converge(
        &mut self,
        plan: &Plan,
        changed: &[Product],
        events: &mut mpsc::UnboundedReceiver<DaemonEvent>,
        shutdown: &CancellationToken,
    ) -> Vec<String> {
        let mut errors = Vec::new();
        for agent in &plan.agents {
            if shutdown.is_cancelled() || self.reload_again.is_some() {
                break;
            }
            let spec_changed = changed.contains(&agent.product);
            if let Err(e) = self
                .converge_agent(plan, agent, spec_changed, events, shutdown)
                .await
            {
                errors.push(e);
            }
        }
        errors
    }

    async fn converge_agent(
        &mut self,
        plan: &Plan,
        agent: &AgentPlan,
        spec_changed: bool,
        events: &mut mpsc::UnboundedReceiver<DaemonEvent>,
        shutdown: &CancellationToken,
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
                self.set_upgrade(product, None);
                return Ok(());
            }
            _ => {}
        }
        let fetched = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            r = tokio::time::timeout(FETCH_BOUND, self.preparer.fetch(&plan.release, agent)) => r,
        };
        let why = match fetched {
            Ok(Ok(inst)) => {
                if running.as_ref().is_some_and(|r| r.version == inst.version) {
                    self.set_upgrade(product, None);
                    return Ok(());
                }
                return self
                    .upgrade_gated(&h, agent, inst, &plan.release, events, shutdown)
                    .await;
            }
            Ok(Err(e)) => error_chain(&e),
            Err(_) => format!("timed out after {}s", FETCH_BOUND.as_secs()),
        };
        self.set_upgrade(
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
        events: &mut mpsc::UnboundedReceiver<DaemonEvent>,
        shutdown: &CancellationToken,
    ) -> Result<(), String> {
        let product = new.product;
        let from = self.installed.get(&product).map(|i| i.version.to_string());
        let base = UpgradeStatus {
            installed: from.clone(),
            wanted: Some(inst.version.to_string()),
            waiting_for: None,
            paused: None,
        };
        let Some(gate) = self.opts.gate.clone() else {
            self.set_upgrade(product, Some(base));
            let window = self.opts.rollback_window;
            let r = self.restart_on(h, new, inst, release, window).await;
            if r.is_ok() {
                self.set_upgrade(product, None);
            }
            return r;
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
                () = shutdown.cancelled() => return Ok(()),
                again = next_reload(events, &mut self.hurry) => {
                    tracing::info!(agent = %product, "reload requested while waiting for the upgrade gate");
                    self.reload_again = Some(again);
                    return Ok(());
                }
                t = gate.acquire(product, &inst.version, &report) => t,
            };
            tracing::info!(agent = %product, from = ?from, to = %inst.version, cluster = %turn.cluster(),
                single_server = turn.single, leader = turn.leader, "upgrade turn taken");
            self.set_upgrade(product, Some(base.clone()));
            gate.before_restart(&turn).await;
            let to = inst.version.to_string();
            let outcome = self
                .restart_on(h, new, inst.clone(), release, deadline)
                .await;
            let why = match outcome {
                Ok(()) => match gate.settle(turn, deadline).await {
                    Ok(()) => {
                        self.set_upgrade(product, None);
                        return Ok(());
                    }
                    Err((turn, why)) => {
                        // Running and ready, but the cluster did not
                        // recover: nobody else goes until someone looks.
                        let described = gate
                            .pause(turn, from.as_deref().unwrap_or("nothing"), &to, &why)
                            .await;
                        self.set_upgrade(
                            product,
                            Some(UpgradeStatus {
                                installed: Some(to.clone()),
                                wanted: Some(to),
                                waiting_for: None,
                                paused: Some(described),
                            }),
                        );
                        return Err(why);
                    }
                },
                Err(why) => why,
            };
            let back = self.installed.get(&product).map(|i| i.version.to_string());
            let described = gate
                .pause(turn, back.as_deref().unwrap_or("nothing"), &to, &why)
                .await;
            self.set_upgrade(
                product,
                Some(UpgradeStatus {
                    paused: Some(described),
                    ..base.clone()
                }),
            );
            // Back to the gate: it waits (saying so) until an operator
            // clears the pause, or a reload asks for something else.
        }
    }

    /// Makes `inst` current, restarts on it, and rolls back to the
    /// release running before if it is not ready within `window`.
    async fn restart_on(
        &mut self,
        h: &AgentHandle,
        new: &AgentPlan,
        inst: Installed,
        release: &ReleasePlan,
        window: Duration,
    ) -> Result<(), String> {
        let product = new.product;
        tracing::info!(agent = %product, to = %inst.version, "upgrading");
        self.preparer.activate(release, &inst).await.map_err(|e| {
            format!(
                "failed to switch {product} to {}: {}",
                inst.version,
                error_chain(&e)
            )
        })?;
        let previous = self.installed.get(&product).cloned();
        let before = h.status();
        let a = on_release(new, Some(&inst));
        let _ = h.send(Control::UpdatePlan(
            Box::new(a),
            Some(inst.version.to_string()),
        ));
        let _ = h.send(Control::Restart);
        // With a gate the deadline is the issue's: ready, or rolled back.
        let strict = self.opts.gate.is_some();
        if started_ok(h, &before, window, strict).await {
            tracing::info!(agent = %product, version = %inst.version, "upgrade done");
            self.installed.insert(product, inst);
            return Ok(());
        }
        let Some(prev) = previous else {
            return Err(format!(
                "{product} {} failed to start and no previous release is known",
                inst.version
            ));
        };
        tracing::error!(agent = %product, version = %inst.version, previous = %prev.version, "new version failed to start, rolling back");
        if let Err(e) = self.preparer.rollback(release, &prev).await {
            return Err(format!(
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
        Err(why)
    }
}

/// The next reload request (`true`: a renewal's); a second stop request
/// meanwhile only hurries the stop to come.
async fn next_reload(events: &mut mpsc::UnboundedReceiver<DaemonEvent>, hurry: &mut bool) -> bool {
    loop {
        match events.recv().await {
            Some(DaemonEvent::Reload) => return false,
            Some(DaemonEvent::Renewed) => return true,
            Some(DaemonEvent::Hurry) => *hurry = true,
            None => std::future::pending::<()>().await,
        }
    }
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

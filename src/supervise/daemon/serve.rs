//! The steady loop between start and stop: tells systemd the agents'
//! status, readiness and watchdog pings, dispatches reloads and the
//! second stop request, and gives the start-up working set back each time
//! all agents become ready and after each reload
//! ([`crate::supervise::trim`]), and re-plans (after a quiet time) when
//! discovery's peers change (`discovery`). It changes no agent itself.
//!
//! The rollout runs on its own task meanwhile (`rollout`): the loop keeps
//! serving while it waits at the gate. A reload or re-plan asks it to end
//! and waits for that in the loop (at once for a gate wait, after the
//! step for a restart), then applies and starts the next rollout.

use sd_notify::NotifyState;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Daemon, DaemonEvent, Preparer};
use crate::supervise::machine::deadline_after;
use crate::supervise::notify::notify_systemd;
use crate::supervise::status::SupervisorStatus;
use crate::supervise::trim;

impl<P: Preparer> Daemon<P> {
    /// Until shutdown: reloads on request, keeps systemd informed.
    pub(super) async fn serve(
        &mut self,
        events: &mut mpsc::UnboundedReceiver<DaemonEvent>,
        shutdown: &CancellationToken,
    ) {
        let mut rx = self.status.subscribe();
        let mut told_ready = false;
        let mut was_all_ready = false;
        let mut last_status_line = String::new();
        let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
        let mut next_watchdog = watchdog.map(|d| deadline_after(Instant::now(), d));
        // Discovery's reports (a clone: the daemon's own copy is read in
        // the handler), and when the pending re-plan is due.
        let mut reports = self.opts.discovery.as_ref().map(|f| f.reports.clone());
        let mut replan_at: Option<Instant> = None;
        if let Some(rx) = &mut reports {
            // Whatever changed while the agents started counts too.
            let now = rx.borrow_and_update().clone();
            if self.discovery_pending(&now) {
                replan_at = Some(Instant::now());
            }
        }
        loop {
            {
                let s = rx.borrow_and_update();
                let line = status_line(&s);
                let all_ready = !s.agents.is_empty() && s.agents.iter().all(|a| a.ready);
                drop(s);
                if line != last_status_line {
                    notify_systemd(&[NotifyState::Status(&line)]);
                    last_status_line = line;
                }
                if all_ready && !told_ready {
                    tracing::info!("all agents ready");
                    notify_systemd(&[NotifyState::Ready]);
                    told_ready = true;
                }
                // Start-up (or a restart) is over: what getting here touched
                // goes back; the steady state keeps only what it uses.
                if all_ready && !was_all_ready && self.opts.trim_memory {
                    trim::release_startup_memory();
                }
                was_all_ready = all_ready;
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                ev = events.recv() => match ev {
                    Some(ev @ (DaemonEvent::Reload | DaemonEvent::Renewed)) => {
                        let renewed = ev == DaemonEvent::Renewed;
                        if self.pending.reload.is_none() {
                            // READY=1 follows once the reload is applied
                            // (after a restart in progress at most, never
                            // after a gate wait).
                            notify_systemd(&[NotifyState::Reloading]);
                        }
                        self.pending.reload = Some(renewed || self.pending.reload == Some(true));
                        if self.agents_free() {
                            self.run_pending(shutdown).await;
                        }
                    }
                    Some(DaemonEvent::Hurry) => self.hurry = true,
                    None => {}
                },
                outcome = rollout_end(self.rollout.as_mut()) => {
                    let changed = self.rollout.take().map(|r| r.changed().to_vec()).unwrap_or_default();
                    self.rollout_ended(changed, outcome);
                    self.run_pending(shutdown).await;
                }
                r = rx.changed() => if r.is_err() { return },
                r = changed_some(reports.as_mut()) => match r {
                    Ok(report) => {
                        // The first change starts the quiet time; later
                        // ones before it ends are folded in.
                        if replan_at.is_none() && self.discovery_pending(&report) {
                            let debounce = self.opts.discovery.as_ref().map(|f| f.debounce).unwrap_or_default();
                            replan_at = Some(Instant::now() + debounce);
                        }
                    }
                    Err(()) => reports = None,
                },
                () = sleep_until_some(replan_at) => {
                    replan_at = None;
                    if let Some(report) = reports.as_ref().map(|rx| rx.borrow().clone()) {
                        if self.replan_needed(&report) {
                            self.pending.replan = true;
                            if self.agents_free() {
                                self.run_pending(shutdown).await;
                            }
                        }
                        self.persist_discovery(&report);
                    }
                }
                () = sleep_until_some(next_watchdog) => {
                    notify_systemd(&[NotifyState::Watchdog]);
                    next_watchdog = watchdog.map(|d| deadline_after(Instant::now(), d));
                }
            }
        }
    }
}

impl<P: Preparer> Daemon<P> {
    /// With no rollout running: applies the waiting re-plan, then the
    /// waiting reload (which starts the next rollout), else carries on a
    /// rollout that ended before it was done.
    async fn run_pending(&mut self, shutdown: &CancellationToken) {
        if self.rollout.is_some() || shutdown.is_cancelled() {
            return;
        }
        // The re-plan first: a reload after it plans with the same peers
        // (and a refused reload does not lose it).
        if std::mem::take(&mut self.pending.replan) {
            if let Some(report) = self
                .opts
                .discovery
                .as_ref()
                .map(|f| f.reports.borrow().clone())
            {
                self.follow_discovery(&report).await;
            }
        }
        if let Some(renewed) = self.pending.reload.take() {
            self.reload(shutdown, renewed).await;
            // A reload ran start-up code again (the role file read and
            // validated, configs rendered, perhaps a release fetched):
            // give it back too.
            if self.opts.trim_memory {
                trim::release_startup_memory();
            }
            return;
        }
        if self.unfinished.is_some() {
            self.start_rollout(Vec::new(), None);
        }
    }
}

/// The rollout task's end, or forever without one.
async fn rollout_end(
    r: Option<&mut super::rollout::Rollout>,
) -> Result<super::rollout::Outcome, tokio::task::JoinError> {
    match r {
        Some(r) => r.ended().await,
        None => std::future::pending().await,
    }
}

/// The next report of `rx`, or forever without one; `Err` once it closed.
async fn changed_some(
    rx: Option<&mut tokio::sync::watch::Receiver<crate::peers::DiscoveryReport>>,
) -> Result<crate::peers::DiscoveryReport, ()> {
    match rx {
        Some(rx) => match rx.changed().await {
            Ok(()) => Ok(rx.borrow_and_update().clone()),
            Err(_) => Err(()),
        },
        None => std::future::pending().await,
    }
}

/// Sleeps until `at`, or forever when there is no `at`.
pub(super) async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// `STATUS=` line for systemd: `consul running ready, nomad starting`.
fn status_line(s: &SupervisorStatus) -> String {
    s.agents
        .iter()
        .map(|a| {
            let st = serde_json::to_value(a.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            format!(
                "{} {}{}",
                a.product,
                st,
                if a.ready { " ready" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervise::status::{AgentState, AgentStatus};
    use crate::vocab::Product;

    #[test]
    fn status_line_names_each_agent_and_readiness() {
        let mut a = AgentStatus::new(Product::Consul);
        a.state = AgentState::Running;
        a.ready = true;
        let b = AgentStatus::new(Product::Nomad);
        let s = SupervisorStatus {
            agents: vec![a, b],
            config_hash: String::new(),
            reload_error: None,
            stopping: false,
            node: None,
        };
        assert_eq!(status_line(&s), "consul running ready, nomad stopped");
    }
}

//! Stopping the agents in reverse start order (Nomad before the Consul it
//! may use), each with its stop signal and grace, or with the signal that
//! keeps its workloads when the restart marker says the stop is a restart;
//! a second stop request cuts the remaining grace.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::mpsc;

use super::restart::{keep_workloads_signal, take_restart_marker};
use super::{AFTER_KILL_WAIT, Daemon, DaemonEvent, Preparer};
use crate::plan::AgentPlan;
use crate::supervise::actor::Control;
use crate::supervise::notify::notify_systemd;
use crate::supervise::status::AgentState;

impl<P: Preparer> Daemon<P> {
    /// Stops agents in reverse start order, each with its signal and grace;
    /// a `Hurry` event cuts the grace of the current and later ones.
    pub(super) async fn stop_all(&mut self, events: &mut mpsc::UnboundedReceiver<DaemonEvent>) {
        self.status.send_modify(|s| s.stopping = true);
        notify_systemd(&[NotifyState::Stopping]);
        let restart = self
            .opts
            .restart_marker
            .as_deref()
            .is_some_and(|m| take_restart_marker(m, self.started_at));
        if restart {
            tracing::info!(
                "stopping agents for a restart: nomad stops without leaving or draining, its workloads keep running"
            );
        } else {
            tracing::info!("stopping agents");
        }
        let plans: Vec<AgentPlan> = self.plan.agents.iter().rev().cloned().collect();
        for agent in plans {
            let Some(h) = self.handle(agent.product).cloned() else {
                continue;
            };
            let grace = if self.hurry {
                Duration::ZERO
            } else {
                agent.stop_timeout
            };
            let signal = if restart {
                keep_workloads_signal(&self.plan, &agent)
            } else {
                agent.stop_signal
            };
            let _ = h.send(Control::Stop { signal, grace });
            let bound = grace.saturating_add(AFTER_KILL_WAIT);
            let stopped =
                h.wait_for(|s| matches!(s.state, AgentState::Stopped | AgentState::Failed));
            tokio::pin!(stopped);
            let deadline = tokio::time::sleep(bound);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    () = &mut deadline => {
                        tracing::error!(agent = %agent.product, "agent did not stop, leaving it");
                        break;
                    }
                    ev = events.recv() => if let Some(DaemonEvent::Hurry) = ev {
                        if !self.hurry {
                            tracing::warn!("second stop request, skipping the remaining grace");
                        }
                        self.hurry = true;
                        let _ = h.send(Control::Stop { signal, grace: Duration::ZERO });
                    },
                }
            }
        }
    }
}

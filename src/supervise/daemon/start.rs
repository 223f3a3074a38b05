//! Ordered start: Consul first, then Nomad once Consul is ready, or, after
//! a bounded wait ([`super::RunOptions::consul_wait`]) or Consul's failure,
//! anyway with a note saying why. It only sends `Start`s; the actors spawn.

use tokio_util::sync::CancellationToken;

use super::{Daemon, Preparer};
use crate::supervise::actor::Control;
use crate::supervise::status::AgentState;
use crate::vocab::Product;

impl<P: Preparer> Daemon<P> {
    /// Starts Consul, then Nomad once Consul is ready (bounded). `false` if
    /// shutdown came first.
    pub(super) async fn start_in_order(&self, shutdown: &CancellationToken) -> bool {
        for h in &self.handles {
            if shutdown.is_cancelled() {
                return false;
            }
            if h.product() == Product::Nomad {
                if let Some(consul) = self.handle(Product::Consul) {
                    let ready = tokio::select! {
                        () = shutdown.cancelled() => return false,
                        r = tokio::time::timeout(
                            self.opts.consul_wait,
                            consul.wait_for(|s| s.ready || s.state == AgentState::Failed),
                        ) => r,
                    };
                    let why = match ready {
                        Ok(_) if consul.status().ready => None,
                        Ok(_) => Some("consul failed, nomad started anyway".to_string()),
                        Err(_) => Some(format!(
                            "consul not ready after {}s, nomad started anyway",
                            self.opts.consul_wait.as_secs()
                        )),
                    };
                    if let Some(why) = &why {
                        tracing::warn!(agent = "nomad", reason = %why, "starting without a ready consul");
                    }
                    let _ = h.send(Control::Note(why));
                }
            }
            if let Err(e) = h.send(Control::Start) {
                tracing::error!(error = %e, "failed to start agent");
            }
        }
        true
    }
}

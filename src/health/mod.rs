//! The health endpoint: a small, read-only, hardened HTTP server answering
//! "is this node's Consul and Nomad working, and if not, why".
//!
//! * [`snapshot`]: the [`HealthSnapshot`] every answer is computed from
//!   (node info, the supervisor's published status, what the agents report),
//!   redacted when built so it carries no secret.
//! * [`checker`]: the background task that builds snapshots from the
//!   supervisor's status and the agents' observations (`agent::observe`:
//!   one observer per agent polls its API; the checker asks it for a fresh
//!   poll when the agent's state changes: started, ready, exited), and
//!   publishes them on a `watch` channel. A request to the endpoint never
//!   waits on an agent.
//! * [`checks`]: the readiness checks, a pure function of a snapshot.
//! * [`handlers`]: the routes, pure functions `(request parts, snapshot) ->
//!   response`, tested without sockets.
//! * [`server`]: hyper 1.x accept loop with a header read timeout, a body
//!   limit and a bound on connections.
//! * [`security`]: the node's security as shown ([`SecurityStatus`]:
//!   mode, certificate names and expiry, ACLs, CA holder, renewals), which
//!   `run` and the renewal task publish on [`Started::security`].
//! * [`metrics`]: counters other components bump (fetch/verify outcomes,
//!   re-plans on discovered peers).
//!
//! Discovery (`catalog::discovery`) is shown from the
//! [`DiscoveryView`] `run` publishes ([`Started::discovery`]): peers with
//! their sources in `/v1/status` and on the page, its counters in
//! `/metrics`, and its problems (or what the node waits for) in `/ready`.
//!
//! This module must not write anything but HTTP answers and logs, must
//! never expose a secret (gossip key, token, key file content), never asks
//! an agent anything itself (it reads the observers) and does not register
//! the node anywhere (that is `catalog`, which it must not import).

pub mod checker;
pub mod checks;
pub mod handlers;
pub mod metrics;
pub mod redact;
pub mod security;
pub mod server;
pub mod snapshot;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use checker::Checker;
pub use checks::Check;
pub use handlers::{StatusDoc, handle};
pub use metrics::Metrics;
pub use security::{Renewals, SecurityMode, SecurityStatus};
pub use server::{ServerLimits, bind, default_listen, serve, serve_with};
pub use snapshot::{
    AgentReport, ConsulReport, DiscoveryView, HealthSnapshot, NodeInfo, NomadReport,
};

use crate::agent::{AgentError, Observers};
use crate::plan::Plan;
use crate::supervise::SupervisorStatus;

/// What [`start`] spawned.
#[derive(Debug)]
pub struct Started {
    /// The address the endpoint listens on (the real port when the plan
    /// asked for port 0).
    pub addr: SocketAddr,
    /// The snapshots the endpoint serves (for other readers, e.g. sd_notify
    /// or tests).
    pub snapshot: watch::Receiver<HealthSnapshot>,
    /// Where `run` publishes discovery's view once discovery runs (the
    /// endpoint starts first: discovery announces its port).
    pub discovery: watch::Sender<Option<DiscoveryView>>,
    /// Where `run` publishes the node's security
    /// ([`SecurityStatus::of_role`]) and the renewal task updates it
    /// (`send_modify` with [`SecurityStatus::record_renewal`] and
    /// friends). Until then `/v1/status` has no `security` object.
    pub security: watch::Sender<Option<SecurityStatus>>,
}

/// Binds the plan's `health_listen`, then spawns the checker (reading the
/// agents' `observers`) and the server on `tracker`. Both stop on
/// `cancel`, which the daemon cancels last (after the agents are stopped)
/// so the node stays observable while it shuts down. A bind failure is
/// returned at once.
pub async fn start(
    plan: &Plan,
    status: watch::Receiver<SupervisorStatus>,
    metrics: Arc<Metrics>,
    observers: Observers,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> Result<Started, HealthError> {
    let listener = bind(plan.health_listen).await?;
    let addr = listener.local_addr().map_err(HealthError::LocalAddr)?;
    let (discovery, discovery_rx) = watch::channel(None);
    let (security, security_rx) = watch::channel(None);
    let (checker, snapshot) = Checker::new(plan, status, metrics, observers);
    let checker = checker
        .with_discovery(discovery_rx)
        .with_security(security_rx);
    tracker.spawn(checker.run(cancel.clone()));
    tracker.spawn(serve(listener, snapshot.clone(), cancel));
    Ok(Started {
        addr,
        snapshot,
        discovery,
        security,
    })
}

/// Why the health endpoint (or a client of it) failed.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The listen address could not be bound.
    #[error("failed to bind the health endpoint to {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The listener's own address could not be read.
    #[error("failed to read the health endpoint's local address")]
    LocalAddr(#[source] std::io::Error),
    /// A node's health endpoint could not be reached.
    #[error("failed to reach the health endpoint at {addr}")]
    Unreachable {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: AgentError,
    },
    /// A node's health endpoint answered something that is not a status.
    #[error("failed to read the status answered by {addr}")]
    BadStatus {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: AgentError,
    },
}

#[cfg(test)]
mod tests;

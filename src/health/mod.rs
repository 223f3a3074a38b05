//! The health endpoint: a small, read-only, hardened HTTP server answering
//! "is this node's Consul and Nomad working, and if not, why".
//!
//! * [`snapshot`]: the [`HealthSnapshot`] every answer is computed from
//!   (node info, the supervisor's published status, what the agents report),
//!   redacted when built so it carries no secret.
//! * [`checker`]: the background task that queries the agents on an interval,
//!   and an agent at once when its state changes (started, ready, exited),
//!   every request bounded by a timeout, and publishes snapshots on a
//!   `watch` channel. A request to the endpoint never waits on an agent.
//! * [`checks`]: the readiness checks, a pure function of a snapshot.
//! * [`handlers`]: the routes, pure functions `(request parts, snapshot) ->
//!   response`, tested without sockets.
//! * [`server`]: hyper 1.x accept loop with a header read timeout, a body
//!   limit and a bound on connections.
//! * [`metrics`]: counters other components bump (fetch/verify outcomes).
//! * [`register`]: the `hashi-supervisor` service in the Consul catalog.
//!
//! This module must not write anything but HTTP answers and logs, and must
//! never expose a secret (gossip key, token, key file content).

pub mod checker;
pub mod checks;
pub mod handlers;
pub mod metrics;
pub mod redact;
pub mod register;
pub mod server;
pub mod snapshot;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use checker::{Checker, CheckerConfig};
pub use checks::Check;
pub use handlers::{StatusDoc, handle};
pub use metrics::Metrics;
pub use register::{deregister_self, keep_registration, register_self, run_registration};
pub use server::{ServerLimits, bind, default_listen, serve, serve_with};
pub use snapshot::{AgentReport, ConsulReport, HealthSnapshot, NodeInfo, NomadReport};

use crate::agent_api::AgentApiError;
use crate::error::{EXIT_FAILURE, EXIT_UNAVAILABLE};
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
    /// The Consul registration, when one was started.
    pub registration: Option<Registration>,
}

/// Handle on the running Consul registration.
#[derive(Debug)]
pub struct Registration {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Registration {
    /// Deregisters now and waits (at most `within`) until it is done, so a
    /// caller can do it before the Consul agent stops.
    pub async fn deregister(self, within: std::time::Duration) {
        self.stop.cancel();
        if tokio::time::timeout(within, self.task).await.is_err() {
            tracing::warn!(
                within_ms = within.as_millis() as u64,
                "deregistration from consul did not finish in time"
            );
        }
    }
}

/// Binds the plan's `health_listen`, then spawns the checker, the server
/// and (when `register_with` names a Consul agent's HTTP address) the
/// Consul registration on `tracker`. All three stop on `cancel`, which the
/// daemon cancels last (after the agents are stopped) so the node stays
/// observable while it shuts down. A bind failure is returned at once.
pub async fn start(
    plan: &Plan,
    status: watch::Receiver<SupervisorStatus>,
    metrics: Arc<Metrics>,
    register_with: Option<String>,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> Result<Started, HealthError> {
    let listener = bind(plan.health_listen).await?;
    let addr = listener.local_addr().map_err(HealthError::LocalAddr)?;
    let (checker, snapshot) =
        Checker::new(plan, status.clone(), metrics, CheckerConfig::default())?;
    tracker.spawn(checker.run(cancel.clone()));
    tracker.spawn(serve(listener, snapshot.clone(), cancel.clone()));
    let registration = register_with.map(|consul| {
        // Deregister when told to (see [`Registration::deregister`]), or at
        // the latest as soon as the supervisor starts stopping its agents.
        let stop = cancel.child_token();
        tracker.spawn(cancel_when_stopping(status.clone(), stop.clone()));
        // The node's own Consul: its restart is noticed at once.
        let local = plan
            .agents
            .iter()
            .any(|a| a.product == crate::plan::Product::Consul);
        let keep = register::Keep {
            local_consul: local.then(|| status.clone()),
            ..register::Keep::default()
        };
        let task = tracker.spawn(keep_registration(
            consul,
            plan.node_name.clone(),
            advertised_addr(plan, addr),
            keep,
            stop.clone(),
        ));
        Registration { stop, task }
    });
    Ok(Started {
        addr,
        snapshot,
        registration,
    })
}

/// The Consul agent a node registers with (`ip:port` or `host:port`): its
/// own Consul, else the one the role file names for a node without a local
/// Consul (`discovery.consul_address`, which Nomad uses too).
pub fn registration_target(plan: &Plan) -> Option<String> {
    if let Some(consul) = plan
        .agents
        .iter()
        .find(|a| a.product == crate::plan::Product::Consul)
    {
        return Some(consul.http_addr.to_string());
    }
    plan.render.nomad.as_ref()?.consul_address.clone()
}

/// The address Consul checks `/ready` on: the listen address, or for a
/// wildcard listen the node's private address (a remote Consul agent
/// cannot reach this node's loopback).
pub fn advertised_addr(plan: &Plan, listen: SocketAddr) -> SocketAddr {
    if !listen.ip().is_unspecified() {
        return listen;
    }
    let private = plan
        .render
        .consul
        .as_ref()
        .map(|c| c.advertise_addr)
        .or_else(|| plan.render.nomad.as_ref().map(|n| n.advertise_http));
    match private {
        Some(ip) if !ip.is_unspecified() => SocketAddr::new(ip, listen.port()),
        _ => listen,
    }
}

/// Cancels `token` once the supervisor reports it is stopping (or the
/// status channel closes); returns early when `token` is cancelled.
async fn cancel_when_stopping(
    mut status: watch::Receiver<SupervisorStatus>,
    token: CancellationToken,
) {
    tokio::select! {
        _ = token.cancelled() => {}
        r = status.wait_for(|s| s.stopping) => {
            if r.is_ok() {
                token.cancel();
            }
        }
    }
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
        source: AgentApiError,
    },
    /// A node's health endpoint answered something that is not a status.
    #[error("failed to read the status answered by {addr}")]
    BadStatus {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: AgentApiError,
    },
    /// Registering the supervisor in Consul failed.
    #[error("failed to register the hashi-supervisor service with consul at {consul}")]
    Register {
        /// The Consul agent's HTTP address (`ip:port` or `host:port`).
        consul: String,
        /// The cause.
        #[source]
        source: AgentApiError,
    },
    /// Deregistering the supervisor from Consul failed.
    #[error("failed to deregister the hashi-supervisor service from consul at {consul}")]
    Deregister {
        /// The Consul agent's HTTP address (`ip:port` or `host:port`).
        consul: String,
        /// The cause.
        #[source]
        source: AgentApiError,
    },
}

impl HealthError {
    /// Exit code: 69 when a node's endpoint is unreachable, else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Unreachable { .. } => EXIT_UNAVAILABLE,
            _ => EXIT_FAILURE,
        }
    }
}

#[cfg(test)]
mod tests;

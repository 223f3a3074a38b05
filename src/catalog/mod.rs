//! What the supervisor tells and asks the cluster through Consul's catalog.
//!
//! * [`register`]: the node's own `hashi-supervisor` service, with an HTTP
//!   check on its `/ready`, kept while the node runs and removed when it
//!   stops, so the fleet can be listed from the catalog.
//!
//! * [`discovery`]: finding the peers to join (static lists, DNS, mDNS
//!   announcements between supervisors, cloud auto-join strings passed
//!   through), the Consul server a Nomad without a local Consul uses, and
//!   the live joins through the node's agents' APIs.
//!
//! * [`fleet`]: `supervisor fleet`, the poller of every supervisor's
//!   `/v1/status` (targets from a file, DNS, the Consul catalog or mDNS),
//!   its findings, table, page and Prometheus documents.
//!
//! Stage: after `agent` and `supervise`, beside `health`; the node's own
//! code talks to Consul only through its one [`AgentClient`], reads the
//! supervisor's status, and must not import `health` (nor `health` import
//! it). Nothing here writes a file: `discovery.json` is written by the
//! daemon, the fleet's Prometheus file by the `fleet` command.

pub mod discovery;
pub mod fleet;
pub mod register;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use register::{deregister_self, keep_registration, register_self, run_registration};

use crate::agent::{AgentClient, AgentError};
use crate::plan::Plan;
use crate::supervise::SupervisorStatus;
use crate::vocab::Product;

/// Why a catalog operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// Registering the supervisor in Consul failed.
    #[error("failed to register the hashi-supervisor service with consul at {consul}")]
    Register {
        /// The Consul agent's HTTP address (`ip:port` or `host:port`).
        consul: String,
        /// The cause.
        #[source]
        source: AgentError,
    },
    /// Deregistering the supervisor from Consul failed.
    #[error("failed to deregister the hashi-supervisor service from consul at {consul}")]
    Deregister {
        /// The Consul agent's HTTP address (`ip:port` or `host:port`).
        consul: String,
        /// The cause.
        #[source]
        source: AgentError,
    },
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
    pub async fn deregister(self, within: Duration) {
        self.stop.cancel();
        if tokio::time::timeout(within, self.task).await.is_err() {
            tracing::warn!(
                within_ms = within.as_millis() as u64,
                "deregistration from consul did not finish in time"
            );
        }
    }
}

/// Spawns the node's registration with the Consul agent the plan names
/// ([`registration_target`]) on `tracker`, for a health endpoint listening
/// on `health`; `None` when the node has no Consul to register with. It
/// deregisters when told to ([`Registration::deregister`]), as soon as the
/// supervisor starts stopping its agents, or at the latest on `cancel`.
pub fn start_registration(
    plan: &Plan,
    client: &AgentClient,
    status: &watch::Receiver<SupervisorStatus>,
    health: SocketAddr,
    tracker: &TaskTracker,
    cancel: &CancellationToken,
) -> Option<Registration> {
    let consul = registration_target(plan)?;
    let stop = cancel.child_token();
    tracker.spawn(cancel_when_stopping(status.clone(), stop.clone()));
    // The node's own Consul: its restart is noticed at once.
    let local = plan.agents.iter().any(|a| a.product == Product::Consul);
    let keep = register::Keep {
        local_consul: local.then(|| status.clone()),
        ..register::Keep::default()
    };
    let task = tracker.spawn(keep_registration(
        client.clone(),
        consul,
        plan.node_name.clone(),
        advertised_addr(plan, health),
        keep,
        stop.clone(),
    ));
    Some(Registration { stop, task })
}

/// The Consul agent a node registers with (`ip:port` or `host:port`): its
/// own Consul, else the one the role file names for a node without a local
/// Consul (`discovery.consul_address`, which Nomad uses too).
pub fn registration_target(plan: &Plan) -> Option<String> {
    if let Some(consul) = plan.agents.iter().find(|a| a.product == Product::Consul) {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn plan_of(text: &str, roles: &[&str]) -> crate::plan::Plan {
        use std::net::Ipv4Addr;
        use std::path::Path;
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        let host = crate::role::StaticHost {
            hostname: Some("ams2-client-01".into()),
            interfaces: vec![("eth1".into(), Ipv4Addr::new(10, 0, 1, 21))],
            ..crate::role::StaticHost::default()
        };
        let role = crate::role::parse(
            Path::new("/r/node.toml"),
            &crate::role::with_plaintext(text),
            &roles,
            &host,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        crate::plan::Plan::from_role(&role)
    }

    #[test]
    fn registration_goes_to_the_local_consul_else_the_role_files_consul_address() {
        let local = plan_of(
            "schema = 1\n[discovery]\nconsul_retry_join = [\"10.0.1.11\"]\n",
            &["consul-client", "nomad-client"],
        );
        assert_eq!(
            registration_target(&local).as_deref(),
            Some("127.0.0.1:8500")
        );
        let remote = plan_of(
            "schema = 1\n[discovery]\nconsul_address = \"10.0.1.11\"\nnomad_retry_join = [\"10.0.1.11\"]\n",
            &["nomad-client"],
        );
        assert_eq!(
            registration_target(&remote).as_deref(),
            Some("10.0.1.11:8500")
        );
        // A DNS name is kept as written: the client resolves it per request.
        let named = plan_of(
            "schema = 1\n[discovery]\nconsul_address = \"consul.service.ams2.consul:8500\"\nnomad_retry_join = [\"10.0.1.11\"]\n",
            &["nomad-client"],
        );
        assert_eq!(
            registration_target(&named).as_deref(),
            Some("consul.service.ams2.consul:8500")
        );
        let none = plan_of(
            "schema = 1\n[discovery]\nnomad_retry_join = [\"10.0.1.11\"]\n",
            &["nomad-client"],
        );
        assert_eq!(registration_target(&none), None);
    }

    #[test]
    fn wildcard_listen_is_advertised_on_the_private_address() {
        let p = plan_of(
            "schema = 1\n[discovery]\nconsul_address = \"10.0.1.11\"\nnomad_retry_join = [\"10.0.1.11\"]\n",
            &["nomad-client"],
        );
        let any: SocketAddr = "0.0.0.0:4680".parse().unwrap();
        assert_eq!(
            advertised_addr(&p, any),
            "10.0.1.21:4680".parse::<SocketAddr>().unwrap()
        );
        let own: SocketAddr = "192.0.2.7:4680".parse().unwrap();
        assert_eq!(advertised_addr(&p, own), own);
    }
}

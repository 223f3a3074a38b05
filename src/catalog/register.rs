//! Registration of the supervisor itself in the Consul catalog as the
//! `hashi-supervisor` service, with an HTTP check on `/ready` (never a
//! script check: a default Consul agent refuses those over HTTP), so the
//! fleet can be listed from the catalog.
//!
//! The registration is kept, not made once: a Consul agent that restarted
//! without its state or was replaced has forgotten it, so the task checks
//! on an interval (and at once when the node's own Consul becomes ready
//! again after a restart) and registers again when the service is gone.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::CatalogError;
use crate::agent::{AgentClient, ConsulClient, ServiceCheck, ServiceRegistration};
use crate::supervise::SupervisorStatus;
use crate::vocab::Product;

/// Consul service name of every supervisor.
pub const SERVICE_NAME: &str = "hashi-supervisor";
/// How often Consul polls `/ready`.
const CHECK_INTERVAL: &str = "10s";
/// Timeout of Consul's poll.
const CHECK_TIMEOUT: &str = "2s";
/// A node gone this long leaves the catalog by itself.
const DEREGISTER_CRITICAL_AFTER: &str = "30m";
/// Timeout of a (de)registration request.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(5);
/// First delay between registration attempts while Consul is not there
/// yet (it starts after the endpoint); doubled up to [`REGISTER_RETRY_MAX`].
const REGISTER_RETRY_MIN: Duration = Duration::from_millis(250);
/// Longest delay between registration attempts.
const REGISTER_RETRY_MAX: Duration = Duration::from_secs(10);
/// How often a registered node checks that Consul still has its service
/// (one local `GET /v1/agent/services`), as often as Consul checks `/ready`.
pub const DEFAULT_REASSERT_INTERVAL: Duration = Duration::from_secs(10);

/// How a registration is kept once made.
#[derive(Debug, Clone)]
pub struct Keep {
    /// Period of the "is it still registered" check.
    pub interval: Duration,
    /// The supervisor's status when the Consul registered with is the
    /// node's own: its becoming ready again (a restart) triggers a check
    /// at once.
    pub local_consul: Option<watch::Receiver<SupervisorStatus>>,
}

impl Default for Keep {
    fn default() -> Self {
        Self {
            interval: DEFAULT_REASSERT_INTERVAL,
            local_consul: None,
        }
    }
}

/// The service ID: unique per node, since nodes without a local Consul
/// register through a shared agent.
pub fn service_id(node_name: &str) -> String {
    format!("{SERVICE_NAME}-{node_name}")
}

/// The registration payload for a node whose endpoint listens on `health`.
/// An unspecified listen address (0.0.0.0) is advertised as loopback, which
/// only a local Consul agent can check: listen on the private address.
pub fn registration(node_name: &str, health: SocketAddr) -> ServiceRegistration {
    let ip = if health.ip().is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        health.ip()
    };
    let addr = SocketAddr::new(ip, health.port());
    let mut meta = BTreeMap::new();
    meta.insert("node".to_string(), node_name.to_string());
    meta.insert("version".to_string(), crate::SUPERVISOR_VERSION.to_string());
    ServiceRegistration {
        id: service_id(node_name),
        name: SERVICE_NAME.to_string(),
        tags: Vec::new(),
        address: ip.to_string(),
        port: health.port(),
        meta,
        check: ServiceCheck {
            http: format!("http://{addr}/ready"),
            method: "GET".to_string(),
            interval: CHECK_INTERVAL.to_string(),
            timeout: CHECK_TIMEOUT.to_string(),
            deregister_critical_service_after: DEREGISTER_CRITICAL_AFTER.to_string(),
        },
    }
}

/// The Consul agent at `consul_http` (`ip:port` or `host:port`; a host
/// name is resolved on each new connection, so a DNS name that is not
/// resolvable yet at boot works once it is), through the node's client.
///
/// The node's own Consul serving HTTPS is asked through its TLS API (its
/// CA, the node's certificate, the supervisor's token); a remote one over
/// HTTPS when the node has the cluster's material, else plain HTTP.
fn consul(client: &AgentClient, consul_http: &str) -> ConsulClient {
    if let Ok(addr) = consul_http.parse::<SocketAddr>() {
        if let Some(api) = client.tls_endpoint(addr, REGISTER_TIMEOUT) {
            return ConsulClient::new(api);
        }
    }
    let scheme = if client.has_remote_consul_tls() {
        "https"
    } else {
        "http"
    };
    ConsulClient::new(client.endpoint_at(format!("{scheme}://{consul_http}"), REGISTER_TIMEOUT))
}

/// Registers the node's supervisor with the Consul agent at `consul_http`;
/// returns the service ID.
pub async fn register_self(
    client: &AgentClient,
    consul_http: &str,
    node_name: &str,
    health: SocketAddr,
) -> Result<String, CatalogError> {
    register_with(&consul(client, consul_http), consul_http, node_name, health).await
}

async fn register_with(
    consul: &ConsulClient,
    consul_http: &str,
    node_name: &str,
    health: SocketAddr,
) -> Result<String, CatalogError> {
    let reg = registration(node_name, health);
    consul
        .register_service(&reg)
        .await
        .map_err(|source| CatalogError::Register {
            consul: consul_http.to_string(),
            source,
        })?;
    Ok(reg.id)
}

/// Deregisters a service ID registered by [`register_self`].
pub async fn deregister_self(
    client: &AgentClient,
    consul_http: &str,
    service_id: &str,
) -> Result<(), CatalogError> {
    deregister_with(&consul(client, consul_http), consul_http, service_id).await
}

async fn deregister_with(
    consul: &ConsulClient,
    consul_http: &str,
    service_id: &str,
) -> Result<(), CatalogError> {
    consul
        .deregister_service(service_id)
        .await
        .map_err(|source| CatalogError::Deregister {
            consul: consul_http.to_string(),
            source,
        })
}

/// Registers (retrying with a growing delay while Consul is not reachable
/// yet), keeps the registration with the defaults of [`Keep`], waits for
/// `cancel`, then deregisters. Failures are logged, not returned.
pub async fn run_registration(
    client: AgentClient,
    consul_http: String,
    node_name: String,
    health: SocketAddr,
    cancel: CancellationToken,
) {
    keep_registration(
        client,
        consul_http,
        node_name,
        health,
        Keep::default(),
        cancel,
    )
    .await;
}

/// As [`run_registration`], keeping the registration as `keep` says: when
/// Consul no longer has the service (restarted without its state,
/// replaced), it is registered again.
pub async fn keep_registration(
    client: AgentClient,
    consul_http: String,
    node_name: String,
    health: SocketAddr,
    mut keep: Keep,
    cancel: CancellationToken,
) {
    // One client for both ends, so deregistering at shutdown costs one
    // request and no client set-up.
    let consul = consul(&client, &consul_http);
    let Some(id) = register_until_done(&consul, &consul_http, &node_name, health, &cancel).await
    else {
        return;
    };
    let mut consul_ready = keep.local_consul.as_mut().is_some_and(is_consul_ready);
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + keep.interval, keep.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {}
            now_ready = consul_became_ready(keep.local_consul.as_mut(), &mut consul_ready) => {
                if !now_ready {
                    continue;
                }
                debug!(consul = %consul_http, "local consul ready again, checking the registration");
            }
        }
        match consul.has_service(&id).await {
            Ok(true) => {}
            Ok(false) => {
                warn!(service = %id, consul = %consul_http, "consul lost the registration (restarted or replaced), registering again");
                match register_with(&consul, &consul_http, &node_name, health).await {
                    Ok(_) => info!(service = %id, consul = %consul_http, "registered in consul"),
                    Err(e) => {
                        warn!(error = %e, consul = %consul_http, "registration failed, will retry")
                    }
                }
            }
            // Consul down or restarting: the next round asks again.
            Err(e) => debug!(error = %e, consul = %consul_http, "could not check the registration"),
        }
    }
    if let Err(e) = deregister_with(&consul, &consul_http, &id).await {
        warn!(error = %e, service = %id, "deregistration failed");
    } else {
        info!(service = %id, "deregistered from consul");
    }
}

/// Registers, retrying with a growing delay; `None` when cancelled first.
async fn register_until_done(
    consul: &ConsulClient,
    consul_http: &str,
    node_name: &str,
    health: SocketAddr,
    cancel: &CancellationToken,
) -> Option<String> {
    let mut delay = REGISTER_RETRY_MIN;
    loop {
        match register_with(consul, consul_http, node_name, health).await {
            Ok(id) => {
                info!(service = %id, consul = %consul_http, "registered in consul");
                return Some(id);
            }
            // Expected while the local Consul starts: not a warning yet.
            Err(e) if delay < REGISTER_RETRY_MAX => {
                debug!(error = %e, consul = %consul_http, "registration failed, will retry")
            }
            Err(e) => warn!(error = %e, consul = %consul_http, "registration failed, will retry"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(REGISTER_RETRY_MAX);
    }
}

fn is_consul_ready(rx: &mut watch::Receiver<SupervisorStatus>) -> bool {
    rx.borrow_and_update()
        .agents
        .iter()
        .any(|a| a.product == Product::Consul && a.ready)
}

/// Waits for the next change of the local Consul's readiness; `true` when
/// it became ready. Pends forever without a status (or once it closed).
async fn consul_became_ready(
    rx: Option<&mut watch::Receiver<SupervisorStatus>>,
    was_ready: &mut bool,
) -> bool {
    let Some(rx) = rx else {
        return std::future::pending().await;
    };
    loop {
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
        let ready = is_consul_ready(rx);
        if ready != *was_ready {
            *was_ready = ready;
            return ready;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::agent::testtls::{CONSUL_TOKEN, Ca, api_tls, client_pem, tls_agent};

    #[tokio::test]
    async fn catalog_registration_goes_over_the_local_consuls_tls_api_with_the_token() {
        let ca = Ca::new();
        let (addr, seen) = tls_agent(&ca, &ca).await;
        let dir = tempfile::tempdir().unwrap();
        let tls = api_tls(
            dir.path(),
            &ca,
            Some(client_pem(&ca)),
            "localhost",
            Some(CONSUL_TOKEN),
        );
        let client = AgentClient::new([(Product::Consul, addr, &tls)]).unwrap();
        let health: SocketAddr = "127.0.0.1:4680".parse().unwrap();
        let id = register_self(&client, &addr.to_string(), "ams2-server-01", health)
            .await
            .unwrap();
        assert_eq!(id, "hashi-supervisor-ams2-server-01");
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].path, "/v1/agent/service/register");
        assert_eq!(seen[0].consul_token.as_deref(), Some(CONSUL_TOKEN));
    }

    #[tokio::test]
    async fn catalog_registration_with_a_remote_consul_uses_https_and_the_token() {
        let ca = Ca::new();
        let (addr, seen) = tls_agent(&ca, &ca).await;
        let dir = tempfile::tempdir().unwrap();
        let tls = api_tls(
            dir.path(),
            &ca,
            Some(client_pem(&ca)),
            "",
            Some(CONSUL_TOKEN),
        );
        // A node without a local Consul: the cluster client, by address.
        let client = AgentClient::plain().unwrap().with_remote_consul(&tls);
        let health: SocketAddr = "10.0.1.21:4680".parse().unwrap();
        register_self(&client, &addr.to_string(), "ams2-client-01", health)
            .await
            .unwrap();
        assert_eq!(
            seen.lock().unwrap()[0].consul_token.as_deref(),
            Some(CONSUL_TOKEN)
        );
        // A plain client asks plain HTTP, which a TLS port refuses: an
        // error, and the token never left the node.
        let plain = AgentClient::plain().unwrap();
        let e = register_self(&plain, &addr.to_string(), "ams2-client-01", health)
            .await
            .unwrap_err();
        assert!(!format!("{e:?}").contains(CONSUL_TOKEN));
        assert_eq!(seen.lock().unwrap().len(), 1);
    }
}

//! The join endpoint a CA holder serves (HTTPS, default port
//! [`crate::paths::DEFAULT_JOIN_PORT`]): `POST /v1/join` signs a joining node's
//! certificate request when its join token checks out, `POST /v1/renew`
//! signs a renewal for a node presenting its current certificate (mutual
//! TLS), and `GET /v1/cluster/tokens` hands the join-token records to
//! another CA holder (a client certificate with a server name).
//!
//! The serving certificate is minted from the cluster CA at start (and
//! again before it expires) for [`crate::paths::JOIN_SERVER_NAME`], chain
//! `[leaf, ca]`: a joining node trusts it through its token's pin
//! (`pin`). Client certificates are optional at the TLS layer (a join has
//! none) and required by the handlers that need them.
//!
//! Hardening: at most [`MAX_CONNECTIONS`] connections served at once and
//! [`MAX_CONNECTIONS_PER_IP`] from one source address (more wait up to
//! [`QUEUE_WAIT`] for a slot, at most [`MAX_OPEN`] open in all), the TLS
//! handshake bounded by [`HANDSHAKE_TIMEOUT`], request and answer by
//! [`CONNECTION_TIMEOUT`], one request per connection, bodies bounded by [`wire::MAX_REQUEST_BYTES`]. Every
//! refusal is logged with the peer address and the token id, never the
//! secret. Owns no file but reads the cluster dir for each request (so a
//! token created or revoked by the CLI counts at once) and records uses
//! through `TokenStore::modify`.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::ca::{self, CaError, ClusterCa};
use super::store::{self, ClusterHandover};
use super::token::{self, TokenRecord, TokenStore};
use super::wire::{self, ErrorBody, JoinRequest, JoinResponse};
use super::{acl, join_client, names, pin};
use crate::role::names as role_names;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Connections served at once from one source address: idle or slow
/// connections from one host cannot take every slot. More from the same
/// address wait (up to [`QUEUE_WAIT`]) for one of its slots.
pub const MAX_CONNECTIONS_PER_IP: usize = 8;
/// Connections open at once, served or waiting; past this a new
/// connection waits in the listen backlog.
pub const MAX_OPEN: usize = 512;
/// Longest a connection waits for a slot (its address's, then a served
/// one) before it is closed.
pub const QUEUE_WAIT: Duration = Duration::from_secs(5);
/// Time a client has for the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Time one connection may take after the handshake: request, answer.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Time a client has to send its request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Most IP addresses a certificate request may name.
pub const MAX_IPS: usize = 8;
/// The serving certificate is minted again when less than this is left.
const REMINT_BEFORE: Duration = Duration::from_secs(86_400);
/// Pause after a failed accept (e.g. out of file descriptors).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// Time open connections get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum JoinServerError {
    /// The cluster CA could not be read.
    #[error("failed to load the cluster CA from {}", dir.display())]
    Cluster {
        /// The dir.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: CaError,
    },
    /// The serving certificate could not be made.
    #[error("failed to mint the join endpoint's certificate")]
    Mint(#[source] CaError),
    /// rustls refused the configuration.
    #[error("failed to configure TLS for the join endpoint: {0}")]
    Tls(String),
    /// The listen address could not be bound.
    #[error("failed to listen on {addr} for joins")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The endpoint of one CA holder.
#[derive(Debug, Clone)]
pub struct JoinEndpoint {
    cluster_dir: PathBuf,
    cert_lifetime: Duration,
    /// Addresses of this node and of the servers and CA holders it knows:
    /// a joining node may not name one in its certificate (unless it joins
    /// from that address itself).
    protected: Option<tokio::sync::watch::Receiver<Vec<IpAddr>>>,
}

/// A refusal: its status and the message the client gets.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    message: String,
    /// [`join_client::REFUSAL_HEADER`]'s value, if any.
    kind: Option<&'static str>,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind: None,
        }
    }

    /// A refused join token; one this endpoint does not know is marked so
    /// the client asks another CA holder (it may have synced it already).
    fn token(r: &token::TokenRefusal) -> Self {
        let mut out = Self::new(status(r.status()), r.to_string());
        if matches!(r, token::TokenRefusal::Unknown { .. }) {
            out.kind = Some(join_client::REFUSAL_UNKNOWN_TOKEN);
        }
        out
    }
}

/// A semaphore of [`MAX_CONNECTIONS_PER_IP`] per source address (FIFO,
/// so a queued connection is not passed over), dropped with its last user.
#[derive(Debug, Default)]
struct PerIp {
    table: std::sync::Mutex<std::collections::HashMap<IpAddr, Arc<Semaphore>>>,
}

/// One served connection of an address; frees its slot on drop.
struct IpSlot {
    table: Arc<PerIp>,
    ip: IpAddr,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl PerIp {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<IpAddr, Arc<Semaphore>>> {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot for `ip`, waiting in line until `deadline` for one to free.
    async fn wait_take(
        self: &Arc<Self>,
        ip: IpAddr,
        deadline: tokio::time::Instant,
    ) -> Option<IpSlot> {
        let sem = self
            .lock()
            .entry(ip)
            .or_insert_with(|| Arc::new(Semaphore::new(MAX_CONNECTIONS_PER_IP)))
            .clone();
        let permit = tokio::time::timeout_at(deadline, sem.acquire_owned()).await;
        let slot = IpSlot {
            table: self.clone(),
            ip,
            permit: permit.ok().and_then(Result::ok),
        };
        // A slot without a permit still tidies the table on drop.
        slot.permit.is_some().then_some(slot)
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        drop(self.permit.take());
        let mut t = self.table.lock();
        // Only the table holds it: nobody served or waiting from there.
        if t.get(&self.ip).is_some_and(|s| Arc::strong_count(s) == 1) {
            t.remove(&self.ip);
        }
    }
}

/// What the handler knows of the TLS peer.
#[derive(Debug, Clone)]
struct Peer {
    addr: SocketAddr,
    /// The verified client certificate (leaf), if one was presented.
    cert: Option<CertificateDer<'static>>,
}

/// Binds the endpoint's listener.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, JoinServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| JoinServerError::Bind { addr, source })
}

impl JoinEndpoint {
    /// The endpoint of the CA held in `cluster_dir`, signing node
    /// certificates valid for `cert_lifetime`.
    pub fn new(cluster_dir: &Path, cert_lifetime: Duration) -> Self {
        Self {
            cluster_dir: cluster_dir.to_path_buf(),
            cert_lifetime,
            protected: None,
        }
    }

    /// Refuses joins whose certificate request names one of the addresses
    /// `protected` holds (this node's, the known servers' and CA holders'),
    /// unless the request comes from that address.
    #[must_use]
    pub fn with_protected_ips(
        mut self,
        protected: tokio::sync::watch::Receiver<Vec<IpAddr>>,
    ) -> Self {
        self.protected = Some(protected);
        self
    }

    /// A TLS acceptor with a freshly minted serving certificate, and its
    /// expiry (Unix seconds).
    fn acceptor(&self) -> Result<(TlsAcceptor, u64), JoinServerError> {
        let ca = ClusterCa::load(&self.cluster_dir).map_err(|e| JoinServerError::Cluster {
            dir: self.cluster_dir.clone(),
            source: e,
        })?;
        let (cert, key) = ca.mint_join_server_cert().map_err(JoinServerError::Mint)?;
        let tls = |e: &dyn std::fmt::Display| JoinServerError::Tls(e.to_string());
        let ca_der =
            CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).map_err(|e| tls(&e))?;
        let leaf = CertificateDer::from_pem_slice(cert.pem.as_bytes()).map_err(|e| tls(&e))?;
        let key = PrivateKeyDer::from_pem_slice(key.expose().as_bytes()).map_err(|e| tls(&e))?;
        let provider = pin::provider();
        let mut roots = RootCertStore::empty();
        roots.add(ca_der.clone()).map_err(|e| tls(&e))?;
        // A join has no client certificate; renewals and token sync do,
        // and their handlers require it.
        let clients =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| tls(&e))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls(&e))?
            .with_client_cert_verifier(clients)
            .with_single_cert(vec![leaf, ca_der], key)
            .map_err(|e| tls(&e))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok((TlsAcceptor::from(Arc::new(config)), cert.not_after))
    }

    /// Serves joins on `listener` until `cancel`. Fails only if the first
    /// serving certificate cannot be made; a later re-mint that fails keeps
    /// the current one (and says so).
    pub async fn serve(
        self,
        listener: TcpListener,
        cancel: CancellationToken,
    ) -> Result<(), JoinServerError> {
        let (mut acceptor, mut not_after) = self.acceptor()?;
        let local = listener.local_addr().ok();
        info!(addr = ?local, "join endpoint listening");
        let this = Arc::new(self);
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let open = Arc::new(Semaphore::new(MAX_OPEN));
        let per_ip = Arc::new(PerIp::default());
        let tracker = TaskTracker::new();
        loop {
            let open_permit = tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                p = open.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let (stream, peer) = tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        warn!(error = %e, "failed to accept a join connection");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        continue;
                    }
                },
            };
            if ca::now_unix().saturating_add(REMINT_BEFORE.as_secs()) >= not_after {
                match this.acceptor() {
                    Ok((a, n)) => (acceptor, not_after) = (a, n),
                    Err(e) => {
                        warn!(error = %error_chain(&e), "failed to mint a new join endpoint certificate; keeping the current one")
                    }
                }
            }
            let _ = stream.set_nodelay(true);
            let acceptor = acceptor.clone();
            let this = this.clone();
            let cancel = cancel.clone();
            let (per_ip, slots) = (per_ip.clone(), slots.clone());
            tracker.spawn(async move {
                let _open = open_permit;
                // This address's slot, then a served one, both within
                // QUEUE_WAIT: one host's connections cannot take them all.
                let deadline = tokio::time::Instant::now() + QUEUE_WAIT;
                let wait = async {
                    let ip_slot = per_ip.wait_take(peer.ip(), deadline).await?;
                    let permit = tokio::time::timeout_at(deadline, slots.acquire_owned())
                        .await
                        .ok()?
                        .ok()?;
                    Some((ip_slot, permit))
                };
                let slot = tokio::select! {
                    () = cancel.cancelled() => return,
                    s = wait => s,
                };
                let Some((_ip_slot, _permit)) = slot else {
                    debug!(%peer, per_ip = MAX_CONNECTIONS_PER_IP, "no join slot within {QUEUE_WAIT:?}; closed");
                    return;
                };
                this.serve_connection(acceptor, stream, peer, cancel).await;
            });
        }
        tracker.close();
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait()).await;
        info!(addr = ?local, "join endpoint stopped");
        Ok(())
    }

    async fn serve_connection(
        self: Arc<Self>,
        acceptor: TlsAcceptor,
        stream: tokio::net::TcpStream,
        addr: SocketAddr,
        cancel: CancellationToken,
    ) {
        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                debug!(peer = %addr, error = %e, "join TLS handshake failed");
                return;
            }
            Err(_) => {
                debug!(peer = %addr, "no join TLS handshake within {HANDSHAKE_TIMEOUT:?}; closed");
                return;
            }
        };
        let cert = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.clone().into_owned());
        let peer = Peer { addr, cert };
        let svc = service_fn(move |req: Request<Incoming>| {
            let this = self.clone();
            let peer = peer.clone();
            async move { Ok::<_, Infallible>(this.handle(req, peer).await) }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .keep_alive(false)
            .serve_connection(TokioIo::new(tls), svc);
        tokio::pin!(conn);
        tokio::select! {
            r = tokio::time::timeout(CONNECTION_TIMEOUT, conn.as_mut()) => match r {
                Ok(Err(e)) => debug!(peer = %addr, error = %e, "join connection ended with an error"),
                Ok(Ok(())) => {}
                Err(_) => debug!(peer = %addr, "join connection timed out"),
            },
            () = cancel.cancelled() => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
            }
        }
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>, peer: Peer) -> Response<Full<Bytes>> {
        let route = (req.method().clone(), req.uri().path().to_string());
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .and_then(token::parse_bearer);
        let token_id = bearer.as_ref().map(|(id, _)| id.clone());
        let result = match (&route.0, route.1.as_str()) {
            (&Method::POST, "/v1/join") => match read_json::<JoinRequest>(req).await {
                Ok(body) => {
                    let this = self.clone();
                    let peer = peer.clone();
                    blocking(move || this.join(bearer, body, &peer)).await
                }
                Err(r) => Err(r),
            },
            (&Method::POST, "/v1/renew") => match read_json::<JoinRequest>(req).await {
                Ok(body) => {
                    let this = self.clone();
                    let peer = peer.clone();
                    blocking(move || this.renew(body, &peer)).await
                }
                Err(r) => Err(r),
            },
            (&Method::GET, "/v1/cluster/tokens") => {
                let this = self.clone();
                let peer = peer.clone();
                blocking(move || this.tokens(&peer)).await
            }
            (_, "/v1/join" | "/v1/renew" | "/v1/cluster/tokens") => Err(Refusal::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{} is not allowed on {}", route.0, route.1),
            )),
            _ => Err(Refusal::new(
                StatusCode::NOT_FOUND,
                format!("no such endpoint {}", route.1),
            )),
        };
        match result {
            Ok(body) => json_response(StatusCode::OK, body),
            Err(r) => {
                warn!(
                    peer = %peer.addr,
                    token = token_id.as_deref().unwrap_or("-"),
                    path = %route.1,
                    status = r.status.as_u16(),
                    reason = %r.message,
                    "join endpoint refused a request"
                );
                let body = serde_json::to_vec(&ErrorBody { error: r.message })
                    .unwrap_or_else(|_| b"{}".to_vec());
                let mut resp = json_response(r.status, body);
                if let Some(kind) = r.kind {
                    resp.headers_mut()
                        .insert(join_client::REFUSAL_HEADER, HeaderValue::from_static(kind));
                }
                resp
            }
        }
    }

    fn load(&self) -> Result<store::ClusterMaterial, Refusal> {
        store::load_cluster_dir(&self.cluster_dir).map_err(|e| {
            warn!(dir = %self.cluster_dir.display(), error = %error_chain(&e), "join endpoint cannot read the cluster dir");
            Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the join endpoint cannot read its cluster dir",
            )
        })
    }

    /// `POST /v1/join`.
    fn join(
        &self,
        bearer: Option<(String, crate::role::Secret)>,
        req: JoinRequest,
        peer: &Peer,
    ) -> Result<Vec<u8>, Refusal> {
        let Some((id, secret)) = bearer else {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "no join token: send `Authorization: Bearer <id>.<secret>`",
            ));
        };
        let material = self.load()?;
        let now = ca::now_unix();
        let record = material
            .tokens
            .check(&id, &secret, now)
            .map_err(|r| Refusal::token(&r))?
            .clone();
        let checked = check_request(&req)?;
        let protected = self
            .protected
            .as_ref()
            .map(|p| p.borrow().clone())
            .unwrap_or_default();
        if let Some(problem) = req
            .ips
            .iter()
            .find_map(|ip| ip_problem(*ip, peer.addr.ip(), &protected))
        {
            return Err(Refusal::new(StatusCode::BAD_REQUEST, problem));
        }
        let server = names::is_server(checked.roles);
        if server && record.clients_only {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                format!(
                    "join token {id} joins clients only, and roles {} include a server",
                    req.roles.join(", ")
                ),
            ));
        }
        let signed = sign(&material.ca, &req, &checked, self.cert_lifetime)?;
        let secrets = narrow(
            store::secrets_for(
                &material.cluster,
                checked.roles,
                &req.datacenter,
                &checked.dns,
                &req.ips,
                &signed,
            ),
            checked.roles,
        );
        let cluster = server.then(|| ClusterHandover::of(&material).to_value());
        // Counted once the answer is ready; checked again under the lock
        // so a revocation that raced this join wins.
        let mut still_valid = false;
        TokenStore::modify(&self.cluster_dir, &material.ca.pin(), |s| {
            if s.check(&id, &secret, now).is_ok() {
                s.record_use(&id);
                still_valid = true;
            }
            Ok(())
        })
        .map_err(|e| {
            warn!(error = %error_chain(&e), "failed to record a join token's use");
            Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the join endpoint cannot record the token's use",
            )
        })?;
        if !still_valid {
            warn!(token = %id, "join token revoked or expired while its join was signed; answer withheld");
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "the join token was revoked or expired during the join",
            ));
        }
        info!(
            peer = %peer.addr,
            token = %id,
            node = %req.node,
            roles = %req.roles.join(","),
            ca_handover = server,
            not_after = signed.not_after,
            "signed a joining node's certificate"
        );
        encode(&JoinResponse {
            certificate: signed.pem,
            ca: material.ca.cert_pem().to_string(),
            secrets,
            cluster,
        })
    }

    /// `POST /v1/renew`: the names must be the presented certificate's.
    fn renew(&self, req: JoinRequest, peer: &Peer) -> Result<Vec<u8>, Refusal> {
        let Some(cert) = &peer.cert else {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "a renewal needs the node's current certificate (mutual TLS)",
            ));
        };
        let (dns, ips) = ca::names_of_cert_der(cert).map_err(|e| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("cannot read the presented certificate: {e}"),
            )
        })?;
        let checked = check_request(&req)?;
        if !same_set(&dns, &checked.dns) || !same_set(&ips, &req.ips) {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                format!(
                    "a renewal keeps the current certificate's names ({}), the request asks for {}",
                    shown_names(&dns, &ips),
                    shown_names(&checked.dns, &req.ips)
                ),
            ));
        }
        let material = self.load()?;
        let signed = sign(&material.ca, &req, &checked, self.cert_lifetime)?;
        let secrets = narrow(
            store::secrets_for(
                &material.cluster,
                checked.roles,
                &req.datacenter,
                &checked.dns,
                &req.ips,
                &signed,
            ),
            checked.roles,
        );
        info!(peer = %peer.addr, node = %req.node, not_after = signed.not_after, "renewed a node certificate");
        encode(&JoinResponse {
            certificate: signed.pem,
            ca: material.ca.cert_pem().to_string(),
            secrets,
            cluster: None,
        })
    }

    /// `GET /v1/cluster/tokens`: for another CA holder (its certificate
    /// names a server).
    fn tokens(&self, peer: &Peer) -> Result<Vec<u8>, Refusal> {
        let Some(cert) = &peer.cert else {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "the token records need a server's certificate (mutual TLS)",
            ));
        };
        let (dns, _) = ca::names_of_cert_der(cert).map_err(|e| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("cannot read the presented certificate: {e}"),
            )
        })?;
        if !dns
            .iter()
            .any(|d| d.starts_with("server.") && (d.ends_with(".consul") || d.ends_with(".nomad")))
        {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "the token records are for servers only",
            ));
        }
        let material = self.load()?;
        encode(&material.tokens.list().to_vec())
    }
}

/// What a node of `roles` gets of the cluster's secrets, narrowed to what
/// its roles use: the Nomad gossip key only on Nomad servers (only they
/// gossip), the Consul gossip key only where Consul runs, and on a
/// client-only node (no Consul or Nomad server) the client supervisors'
/// tokens instead of the servers', both derived one way from them: Consul
/// ([`acl::CONSUL_SUPERVISOR_CLIENT`]: its own service, operator read,
/// key/value write only on the client upgrade slots) and Nomad
/// ([`acl::NOMAD_SUPERVISOR_CLIENT`]: agent write, node and operator
/// read). A key left out is empty (the role loader accepts that for a key
/// the roles do not use).
pub fn narrow(
    mut secrets: crate::role::security::NodeSecretsFile,
    roles: crate::role::RoleSet,
) -> crate::role::security::NodeSecretsFile {
    if !roles.nomad_server {
        secrets.nomad_gossip_key.clear();
    }
    if !roles.is_consul() {
        secrets.consul_gossip_key.clear();
    }
    if !names::is_server(roles) {
        secrets.acl.consul_supervisor = secrets
            .acl
            .consul_supervisor
            .as_deref()
            .map(acl::consul_client_supervisor_secret);
        secrets.acl.nomad_supervisor = secrets
            .acl
            .nomad_supervisor
            .as_deref()
            .map(acl::nomad_client_supervisor_secret);
    }
    secrets
}

/// Why a joining node may not name `ip` in its certificate, joining from
/// `from`: an address no single host owns (unspecified, multicast,
/// broadcast), or one of the `protected` addresses of this node and the
/// servers it knows, unless `from` is that address. Loopback is every
/// node's own (each certificate names 127.0.0.1).
pub fn ip_problem(ip: IpAddr, from: IpAddr, protected: &[IpAddr]) -> Option<String> {
    let ip = canonical(ip);
    let nobodys = match ip {
        IpAddr::V4(v4) => v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast(),
        IpAddr::V6(v6) => v6.is_unspecified() || v6.is_multicast(),
    };
    if nobodys {
        return Some(format!(
            "IP address {ip} is not a unicast address a node can own"
        ));
    }
    if ip.is_loopback() || ip == canonical(from) {
        return None;
    }
    protected
        .iter()
        .any(|p| canonical(*p) == ip)
        .then(|| {
            format!(
                "IP address {ip} belongs to a server or CA holder of the cluster; a node joining from {from} cannot have a certificate for it"
            )
        })
}

/// `::ffff:a.b.c.d` as `a.b.c.d`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A request's roles and the DNS names they need.
struct Checked {
    roles: crate::role::RoleSet,
    dns: Vec<String>,
}

/// The request's own rules: roles, names, address count.
fn check_request(req: &JoinRequest) -> Result<Checked, Refusal> {
    let bad = |m: String| Refusal::new(StatusCode::BAD_REQUEST, m);
    let roles = names::role_set(&req.roles).map_err(|e| bad(e.to_string()))?;
    if let Some(p) = role_names::node_name_problem(&req.node) {
        return Err(bad(format!("node name: {p}")));
    }
    if let Some(p) = role_names::region_problem(&req.region) {
        return Err(bad(format!("region: {p}")));
    }
    if let Some(p) = role_names::datacenter_problem(&req.datacenter) {
        return Err(bad(format!("datacenter: {p}")));
    }
    if req.ips.len() > MAX_IPS {
        return Err(bad(format!(
            "{} IP addresses asked for, at most {MAX_IPS}",
            req.ips.len()
        )));
    }
    let dns = names::dns_names(roles, &req.region, &req.datacenter);
    Ok(Checked { roles, dns })
}

fn sign(
    ca: &ClusterCa,
    req: &JoinRequest,
    checked: &Checked,
    lifetime: Duration,
) -> Result<ca::SignedCert, Refusal> {
    ca.sign_csr(&req.csr, &checked.dns, &req.ips, lifetime)
        .map_err(|e| match e {
            CaError::BadCsr(_) | CaError::KeyAlgorithm | CaError::Names { .. } => {
                Refusal::new(StatusCode::BAD_REQUEST, e.to_string())
            }
            other => {
                warn!(error = %error_chain(&other), "failed to sign a certificate request");
                Refusal::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the join endpoint failed to sign the request",
                )
            }
        })
}

fn same_set<T: Ord + Clone>(a: &[T], b: &[T]) -> bool {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort();
    a.dedup();
    b.sort();
    b.dedup();
    a == b
}

fn shown_names(dns: &[String], ips: &[IpAddr]) -> String {
    dns.iter()
        .cloned()
        .chain(ips.iter().map(ToString::to_string))
        .collect::<Vec<_>>()
        .join(", ")
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::FORBIDDEN)
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, Refusal> {
    serde_json::to_vec(value).map_err(|e| {
        Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to encode the answer: {e}"),
        )
    })
}

/// Runs a handler that reads files and signs off the async threads.
async fn blocking(
    f: impl FnOnce() -> Result<Vec<u8>, Refusal> + Send + 'static,
) -> Result<Vec<u8>, Refusal> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        warn!(error = %e, "a join handler panicked");
        Err(Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the join endpoint failed",
        ))
    })
}

/// Reads a JSON body of at most [`wire::MAX_REQUEST_BYTES`].
async fn read_json<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, Refusal> {
    let too_big = || {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is over {} bytes", wire::MAX_REQUEST_BYTES),
        )
    };
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|n| n > wire::MAX_REQUEST_BYTES as u64) {
        return Err(too_big());
    }
    let body = Limited::new(req.into_body(), wire::MAX_REQUEST_BYTES)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                too_big()
            } else {
                Refusal::new(StatusCode::BAD_REQUEST, "failed to read the request body")
            }
        })?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("the request body is not a join request: {e}"),
        )
    })
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// `error: cause: cause` on one line, for logs.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The records another CA holder answered `GET /v1/cluster/tokens` with.
pub type TokenRecords = Vec<TokenRecord>;

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn a_joining_node_names_only_addresses_it_can_own() {
        let servers = [ip("10.0.1.11"), ip("203.0.113.11")];
        let from = ip("10.0.1.21");
        // Its own addresses and loopback.
        assert_eq!(ip_problem(ip("10.0.1.21"), from, &servers), None);
        assert_eq!(ip_problem(ip("198.51.100.7"), from, &servers), None);
        assert_eq!(ip_problem(ip("127.0.0.1"), from, &servers), None);
        // A server's, private or public, also written as a mapped v6.
        for s in ["10.0.1.11", "203.0.113.11", "::ffff:10.0.1.11"] {
            let p = ip_problem(ip(s), from, &servers).expect(s);
            assert!(p.contains("belongs to a server or CA holder"), "{p}");
        }
        // ... unless the request comes from that address.
        assert_eq!(ip_problem(ip("10.0.1.11"), ip("10.0.1.11"), &servers), None);
        // Addresses no host owns.
        for s in ["0.0.0.0", "255.255.255.255", "224.0.0.251", "::", "ff02::1"] {
            let p = ip_problem(ip(s), ip(s), &servers).expect(s);
            assert!(p.contains("not a unicast address"), "{p}");
        }
    }
}

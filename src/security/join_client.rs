//! A new node's side of the join: make a key pair here (it never leaves
//! the node), ask a CA holder's join endpoint to sign a request for exactly
//! the names the node's roles need, trusting the endpoint only through the
//! CA its join token pins (`pin`), and write what comes back: the node's
//! material (`store::write_node_material`) and, for a server joining with a
//! token that allows servers, the cluster dir that makes it a CA holder.
//!
//! Candidates are tried in order; the first answer wins. A refused token
//! (a wrong secret for a token the endpoint knows: 401; expired, revoked,
//! not for servers: 403) or a rejected request (other 4xx) is final:
//! asking another CA holder the same would be refused the same. A token
//! the endpoint does not know (401 with [`REFUSAL_HEADER`]
//! `unknown-token`) is not: a CA holder that has not synced yet does not
//! know a token made elsewhere, so the next candidate is asked. An endpoint that cannot
//! be reached, answers 5xx, or presents another CA is passed over (a rogue
//! node on the LAN must not stop a join); when no candidate answers, the
//! error lists each and why, and a CA mismatch seen on the way is what it
//! reports (exit 77).
//!
//! The same exchange with the node's current certificate (mutual TLS) is
//! a renewal ([`exchange`] with [`Credential::Certificate`]).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::ca::{self, CaError};
use super::names;
use super::pin::{self, PinnedCaVerifier};
use super::store::{self, ClusterHandover, StoreError};
use super::token::JoinToken;
use super::wire::{self, ErrorBody, JoinRequest, JoinResponse};
use crate::paths;
use crate::peers::Peers;
use crate::role::{NodeRole, Secret};

/// Time to resolve and connect to one candidate.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for the TLS handshake with one candidate once connected: a
/// candidate that accepts and then stalls costs no more than this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// The response header a join endpoint names the kind of a 401 in:
/// [`REFUSAL_UNKNOWN_TOKEN`] when it does not know the token's id (another
/// CA holder may: tokens reach every CA holder within a sync round).
pub const REFUSAL_HEADER: &str = "hashi-join-refusal";
/// [`REFUSAL_HEADER`]'s value for a token id the endpoint does not know.
pub const REFUSAL_UNKNOWN_TOKEN: &str = "unknown-token";
/// Time for one whole exchange with a candidate once connected.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a join (or a renewal) failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The endpoint refused the token (401, 403).
    #[error("the join endpoint at {endpoint} refused the join token: {message}")]
    Refused {
        /// `host:port`.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// The endpoint's reason.
        message: String,
    },
    /// No endpoint that answered knew the token's id (a token made on one
    /// CA holder reaches the others within a sync round, so a caller may
    /// try again for a while).
    #[error("no join endpoint knows the join token: {}", tried.join("; "))]
    UnknownToken {
        /// `endpoint: why`, one per candidate.
        tried: Vec<String>,
    },
    /// The endpoint presented another CA than the token pins.
    #[error(
        "the join endpoint at {endpoint} is not this cluster's: it presents CA {presented}, the token pins {pinned}"
    )]
    PinMismatch {
        /// `host:port`.
        endpoint: String,
        /// The presented CA's pin.
        presented: String,
        /// The token's pin.
        pinned: String,
    },
    /// The endpoint rejected the request itself (400, 413, ...).
    #[error("the join endpoint at {endpoint} rejected the request (status {status}): {message}")]
    Rejected {
        /// `host:port`.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// The endpoint's reason.
        message: String,
    },
    /// No address to try.
    #[error(
        "no join endpoint to try: name one in the role file's `[security] join`, or let discovery find the servers"
    )]
    NoCandidates,
    /// No candidate answered.
    #[error("no join endpoint answered: {}", tried.join("; "))]
    Unreachable {
        /// `endpoint: why`, one per candidate.
        tried: Vec<String>,
    },
    /// The answer was not a usable join response.
    #[error("the join endpoint at {endpoint} answered badly: {reason}")]
    BadAnswer {
        /// `host:port`.
        endpoint: String,
        /// What was wrong.
        reason: String,
    },
    /// The key or the request could not be made.
    #[error("failed to make the node's key and certificate request")]
    Key(#[source] CaError),
    /// The node's own files could not be read (renewal).
    #[error("failed to read the node's current material in {}", dir.display())]
    Material {
        /// The security dir.
        dir: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The material could not be written.
    #[error("failed to write the node's security material")]
    Write(#[source] StoreError),
    /// The join token is not one.
    #[error("the join token is not valid: {0}")]
    BadToken(String),
    /// The role names no roles a certificate is for.
    #[error("the node's roles cannot join: {0}")]
    Roles(String),
}

impl JoinError {
    /// Whether the cluster refused or could not be trusted (exit 77).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::Refused { .. } | Self::PinMismatch { .. } | Self::UnknownToken { .. }
        )
    }
}

/// What a join did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinOutcome {
    /// The endpoint that signed (`host:port`).
    pub endpoint: String,
    /// The certificate's expiry (Unix seconds).
    pub not_after: u64,
    /// Whether the node became a CA holder (the cluster dir was written).
    pub ca_holder: bool,
}

/// How the node proves itself to the endpoint.
pub enum Credential<'a> {
    /// A join token (`POST /v1/join`).
    Token(&'a JoinToken),
    /// The node's current certificate chain and key (`POST /v1/renew`).
    Certificate {
        /// The certificate (PEM).
        cert_pem: &'a str,
        /// Its key (PEM).
        key_pem: &'a Secret,
    },
}

/// The request a node of `role` sends: its names and addresses, and a CSR
/// for them made with `key`.
pub fn request_for(role: &NodeRole, key: &rcgen::KeyPair) -> Result<JoinRequest, JoinError> {
    if role.roles.dev {
        return Err(JoinError::Roles(
            "`dev` runs a single node on loopback and is never secured".into(),
        ));
    }
    let dns = names::dns_names(role.roles, &role.region, &role.datacenter);
    let ips = names::ips(&role.addresses);
    let csr = ca::make_csr(key, &dns, &ips).map_err(JoinError::Key)?;
    Ok(JoinRequest {
        node: role.node_name.clone(),
        roles: role.role_names.clone(),
        region: role.region.clone(),
        datacenter: role.datacenter.clone(),
        ips,
        csr,
    })
}

/// Joins the cluster of `token` through the first of `candidates` (`host`
/// or `host:port`, port [`paths::DEFAULT_JOIN_PORT`] by default) that
/// answers, and writes the node's material under `role.config_dir`.
pub async fn join(
    role: &NodeRole,
    token: &JoinToken,
    candidates: &[String],
) -> Result<JoinOutcome, JoinError> {
    let key = ca::new_key_pair().map_err(JoinError::Key)?;
    let request = request_for(role, &key)?;
    let (endpoint, answer) =
        exchange(candidates, &token.pin, Credential::Token(token), &request).await?;
    let checked = check_answer(&endpoint, &token.pin, &key, &request, answer)?;
    let handover = match &checked.cluster {
        Some(v) => {
            let (h, ca) =
                ClusterHandover::from_value(v.clone()).map_err(|e| JoinError::BadAnswer {
                    endpoint: endpoint.clone(),
                    reason: format!(
                        "the cluster handover: {}",
                        super::join_server::error_chain(&e)
                    ),
                })?;
            if ca.pin() != token.pin {
                return Err(JoinError::BadAnswer {
                    endpoint,
                    reason: format!("the handed-over CA is {}, not {}", ca.pin(), token.pin),
                });
            }
            Some((h, ca))
        }
        None => None,
    };
    let not_after = checked.secrets.not_after;
    let config_dir = role.config_dir.clone();
    let consul_user = role.roles.is_consul().then(|| role.consul.user.clone());
    let nomad_user = role.roles.is_nomad().then(|| role.nomad.user.clone());
    let key_pem = ca::key_pem_of(&key);
    let ca_holder = handover.is_some();
    tokio::task::spawn_blocking(move || {
        // One lock for the node's material and the cluster dir a server
        // receives: a renewal or the ACL bootstrap never runs in between.
        let _lock = lock(&config_dir)?;
        write_material_locked(
            &config_dir,
            &checked,
            &key_pem,
            consul_user.as_deref(),
            nomad_user.as_deref(),
        )?;
        if let Some((h, ca)) = handover {
            store::write_cluster_dir(
                &config_dir.join(paths::CLUSTER_SUBDIR),
                &ca,
                &h.cluster,
                &h.tokens,
            )
            .map_err(JoinError::Write)?;
        }
        Ok::<_, JoinError>(())
    })
    .await
    .map_err(|e| JoinError::Material {
        dir: role.config_dir.join(paths::SECURITY_SUBDIR),
        reason: format!("the writer failed: {e}"),
    })??;
    Ok(JoinOutcome {
        endpoint,
        not_after,
        ca_holder,
    })
}

/// Writes `answer` as the node's material in `<config_dir>/security/`,
/// holding the security dir's lock ([`store::lock_material`]) as every
/// writer does: it waits while a renewal or the ACL bootstrap writes.
pub fn write_material(
    config_dir: &Path,
    answer: &JoinResponse,
    key_pem: &Secret,
    consul_user: Option<&str>,
    nomad_user: Option<&str>,
) -> Result<(), JoinError> {
    let _lock = lock(config_dir)?;
    write_material_locked(config_dir, answer, key_pem, consul_user, nomad_user)
}

/// Takes the security dir's lock of `config_dir` (blocking).
fn lock(config_dir: &Path) -> Result<store::MaterialLock, JoinError> {
    store::lock_material(&config_dir.join(paths::SECURITY_SUBDIR)).map_err(JoinError::Write)
}

/// [`write_material`] for a caller that holds the security dir's lock
/// already (a second `flock` of the same file from this process would
/// wait for itself).
pub(crate) fn write_material_locked(
    config_dir: &Path,
    answer: &JoinResponse,
    key_pem: &Secret,
    consul_user: Option<&str>,
    nomad_user: Option<&str>,
) -> Result<(), JoinError> {
    store::write_node_material(
        &config_dir.join(paths::SECURITY_SUBDIR),
        &answer.ca,
        &answer.certificate,
        key_pem,
        &answer.secrets,
        consul_user,
        nomad_user,
    )
    .map_err(JoinError::Write)
}

/// Checks a join or renewal answer: the CA is the pinned one, the
/// certificate is for our key and exactly the names asked for, and
/// `node.json` says so too.
pub fn check_answer(
    endpoint: &str,
    pinned: &str,
    key: &rcgen::KeyPair,
    request: &JoinRequest,
    answer: JoinResponse,
) -> Result<JoinResponse, JoinError> {
    use rcgen::PublicKeyData;
    let bad = |reason: String| JoinError::BadAnswer {
        endpoint: endpoint.to_string(),
        reason,
    };
    let ca_pin = ca::pin_of_cert_pem(&answer.ca).map_err(|e| bad(format!("its CA: {e}")))?;
    if ca_pin != pinned {
        return Err(bad(format!("its CA is {ca_pin}, the token pins {pinned}")));
    }
    let cert_key = ca::pin_of_cert_pem(&answer.certificate)
        .map_err(|e| bad(format!("its certificate: {e}")))?;
    if cert_key != ca::pin_of_spki_der(&key.subject_public_key_info()) {
        return Err(bad("the certificate is not for this node's key".into()));
    }
    let (dns, ips) = ca::names_of_cert_pem(&answer.certificate)
        .map_err(|e| bad(format!("its certificate: {e}")))?;
    let want = names::dns_names(
        names::role_set(&request.roles).map_err(|e| bad(e.to_string()))?,
        &request.region,
        &request.datacenter,
    );
    if sorted(dns.clone()) != sorted(want.clone())
        || sorted(ips.clone()) != sorted(request.ips.clone())
    {
        return Err(bad(format!(
            "the certificate names {dns:?} {ips:?}, asked for {want:?} {:?}",
            request.ips
        )));
    }
    if answer.secrets.ca_sha256 != pinned {
        return Err(bad("node.json names another CA".into()));
    }
    Ok(answer)
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v.dedup();
    v
}

/// `host:port` of a candidate (`host`, `host:port`, `[v6]:port`, `v6`).
pub fn endpoint_of(candidate: &str) -> String {
    let c = candidate.trim();
    if c.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv6()) {
        return format!("[{c}]:{}", paths::DEFAULT_JOIN_PORT);
    }
    if c.starts_with('[') && c.ends_with(']') {
        return format!("{c}:{}", paths::DEFAULT_JOIN_PORT);
    }
    match c.rsplit_once(':') {
        Some((_, port)) if port.parse::<u16>().is_ok() => c.to_string(),
        _ => format!("{c}:{}", paths::DEFAULT_JOIN_PORT),
    }
}

/// Where a node of `role` looks for a join endpoint, in order: the role
/// file's `[security] join`, then the servers the role file and `peers`
/// (discovery) name: Consul `retry_join` entries, the Consul HTTP address,
/// Nomad servers, DNS names of `[discovery.dns]` (A/AAAA names only; an
/// SRV name needs a lookup discovery does). Each on the join port unless
/// `[security] join` gives one; cloud auto-join strings are skipped.
pub fn candidates(role: &NodeRole, peers: &Peers) -> Vec<String> {
    let mut out: Vec<String> = role.security.join.clone();
    let d = &role.discovery;
    let dns = d.dns.iter().flat_map(|n| {
        n.consul_servers
            .iter()
            .chain(&n.nomad_servers)
            .filter(|s| !s.starts_with('_'))
    });
    let servers = peers
        .consul_lan
        .iter()
        .chain(peers.consul_http.iter())
        .chain(&peers.nomad_servers)
        .chain(&d.consul_retry_join)
        .chain(&d.consul_retry_join_wan)
        .chain(d.consul_address.iter())
        .chain(&d.nomad_retry_join)
        .chain(dns);
    for s in servers {
        if let Some(h) = host_of(s) {
            if !out.contains(&h) {
                out.push(h);
            }
        }
    }
    out
}

/// Whether the candidate `entry` names the host `host`.
pub fn host_is(entry: &str, host: &str) -> bool {
    host_of(entry).is_some_and(|h| h == host)
}

/// The host of a `host`, `host:port`, `ip`, `[v6]:port` entry; `None` for
/// a cloud auto-join string (`provider=...`).
pub fn host_of(entry: &str) -> Option<String> {
    let e = entry.trim();
    if e.is_empty() || e.contains('=') || e.contains(' ') {
        return None;
    }
    if let Ok(sa) = e.parse::<std::net::SocketAddr>() {
        return Some(sa.ip().to_string());
    }
    if e.parse::<IpAddr>().is_ok() {
        return Some(e.to_string());
    }
    if let Some(rest) = e.strip_prefix('[') {
        return rest.split(']').next().map(str::to_string);
    }
    match e.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => Some(h.to_string()),
        _ => Some(e.to_string()),
    }
}

/// What one candidate did.
enum Attempt {
    /// A final answer (success or a refusal not to be asked elsewhere).
    Done(Box<Result<JoinResponse, JoinError>>),
    /// Try the next one; why.
    Next(String),
    /// It presents another CA.
    Mismatch(JoinError),
    /// It does not know the token (try the next; its message).
    Unknown(String),
}

impl Attempt {
    fn done(r: Result<JoinResponse, JoinError>) -> Self {
        Self::Done(Box::new(r))
    }
}

/// Sends `request` with `credential` to the first of `candidates` that
/// answers, trusting only the CA `pinned`. Returns the endpoint and its
/// (unchecked) answer.
pub async fn exchange(
    candidates: &[String],
    pinned: &str,
    credential: Credential<'_>,
    request: &JoinRequest,
) -> Result<(String, JoinResponse), JoinError> {
    if candidates.is_empty() {
        return Err(JoinError::NoCandidates);
    }
    let body = serde_json::to_vec(request).map_err(|e| JoinError::BadAnswer {
        endpoint: "-".into(),
        reason: format!("failed to encode the request: {e}"),
    })?;
    let (path, bearer, client_auth) = match &credential {
        Credential::Token(t) => ("/v1/join", Some(t.bearer()), None),
        Credential::Certificate { cert_pem, key_pem } => {
            ("/v1/renew", None, Some(client_auth(cert_pem, key_pem)?))
        }
    };
    let mut tried = Vec::new();
    let mut mismatch = None;
    let mut unknown = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for c in candidates {
        let endpoint = endpoint_of(c);
        if !seen.insert(endpoint.clone()) {
            continue;
        }
        let verifier = Arc::new(PinnedCaVerifier::new(pinned, pin::provider()));
        let attempt = attempt(
            &endpoint,
            verifier,
            client_auth.clone(),
            path,
            bearer.as_ref(),
            body.clone(),
        )
        .await;
        match attempt {
            Attempt::Done(r) => return (*r).map(|a| (endpoint, a)),
            Attempt::Next(why) => {
                tracing::warn!(%endpoint, reason = %why, "join endpoint unreachable, trying the next");
                tried.push(format!("{endpoint}: {why}"));
            }
            Attempt::Mismatch(e) => {
                tracing::warn!(%endpoint, error = %e, "join endpoint presents another CA, trying the next");
                tried.push(format!("{endpoint}: presents another CA"));
                mismatch.get_or_insert(e);
            }
            Attempt::Unknown(why) => {
                tracing::warn!(%endpoint, reason = %why, "join endpoint does not know the token (not synced yet?), trying the next");
                tried.push(format!("{endpoint}: {why}"));
                unknown.push(format!("{endpoint}: {why}"));
            }
        }
    }
    // An endpoint of this cluster that answered outranks one that did not.
    if !unknown.is_empty() {
        return Err(JoinError::UnknownToken { tried });
    }
    Err(mismatch.unwrap_or(JoinError::Unreachable { tried }))
}

pub(crate) type ClientAuth = (Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>);

pub(crate) fn client_auth(cert_pem: &str, key_pem: &Secret) -> Result<ClientAuth, JoinError> {
    let bad = |reason: String| JoinError::Material {
        dir: PathBuf::from(paths::SECURITY_SUBDIR),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("the node certificate: {e}")))?;
    if certs.is_empty() {
        return Err(bad("no certificate in the node certificate file".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.expose().as_bytes())
        .map_err(|_| bad("the node key is not a PEM private key".into()))?;
    Ok((certs, Arc::new(key)))
}

/// What one HTTP exchange with a candidate gave.
pub(crate) enum Sent {
    /// The endpoint answered: status, the refusal kind header, body.
    Answer {
        /// The HTTP status.
        status: StatusCode,
        /// [`REFUSAL_HEADER`], if sent.
        refusal: Option<String>,
        /// The body (at most the bound given).
        body: Bytes,
    },
    /// Not reached or no usable answer: why (try the next).
    Next(String),
    /// It presents another CA.
    Mismatch(JoinError),
    /// The exchange could not even be set up (final).
    Failed(JoinError),
}

/// One request to one candidate: TCP connect bounded by
/// [`CONNECT_TIMEOUT`], the TLS handshake (pinned CA, optional client
/// certificate) by [`HANDSHAKE_TIMEOUT`], then request and answer by
/// `exchange_timeout`; the answer's body is read up to `max_body` bytes.
#[allow(clippy::too_many_arguments)] // one call site each for join, renewal, token sync
pub(crate) async fn send(
    endpoint: &str,
    verifier: Arc<PinnedCaVerifier>,
    client_auth: Option<ClientAuth>,
    method: Method,
    path: &str,
    bearer: Option<&Secret>,
    body: Vec<u8>,
    exchange_timeout: Duration,
    max_body: usize,
) -> Sent {
    let builder = match rustls::ClientConfig::builder_with_provider(pin::provider())
        .with_safe_default_protocol_versions()
    {
        Ok(b) => b
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone()),
        Err(e) => return Sent::Failed(tls_config_error(endpoint, &e)),
    };
    let config = match client_auth {
        Some((certs, key)) => match builder.with_client_auth_cert(certs, key.clone_key()) {
            Ok(c) => c,
            Err(e) => return Sent::Failed(tls_config_error(endpoint, &e)),
        },
        None => builder.with_no_client_auth(),
    };
    let mut config = config;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = match ServerName::try_from(paths::JOIN_SERVER_NAME) {
        Ok(n) => n,
        Err(e) => return Sent::Failed(tls_config_error(endpoint, &e)),
    };
    let connect = async {
        let tcp = TcpStream::connect(endpoint).await?;
        let _ = tcp.set_nodelay(true);
        Ok::<_, std::io::Error>(tcp)
    };
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return Sent::Next(format!("failed to connect: {e}")),
        Err(_) => return Sent::Next(format!("no connection within {CONNECT_TIMEOUT:?}")),
    };
    let handshake = TlsConnector::from(Arc::new(config)).connect(name, tcp);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            // The verifier says whether it was the CA.
            if let Some(m) = verifier.mismatch() {
                return Sent::Mismatch(JoinError::PinMismatch {
                    endpoint: endpoint.to_string(),
                    presented: m.presented,
                    pinned: m.pinned,
                });
            }
            return Sent::Next(format!("TLS handshake failed: {e}"));
        }
        Err(_) => return Sent::Next(format!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}")),
    };
    let exchange = async {
        let (mut sender, conn) =
            match hyper::client::conn::http1::handshake(TokioIo::new(tls)).await {
                Ok(x) => x,
                Err(e) => return Sent::Next(format!("HTTP handshake failed: {e}")),
            };
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, paths::JOIN_SERVER_NAME)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(b) = bearer {
            match HeaderValue::from_str(&format!("Bearer {}", b.expose())) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    req = req.header(header::AUTHORIZATION, v);
                }
                Err(_) => {
                    return Sent::Failed(JoinError::Roles(
                        "the join token is not a header value".into(),
                    ));
                }
            }
        }
        let req = match req.body(Full::new(Bytes::from(body))) {
            Ok(r) => r,
            Err(e) => return Sent::Failed(tls_config_error(endpoint, &e)),
        };
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => return Sent::Next(format!("the request failed: {e}")),
        };
        let status = resp.status();
        let refusal = resp
            .headers()
            .get(REFUSAL_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match Limited::new(resp.into_body(), max_body).collect().await {
            Ok(b) => Sent::Answer {
                status,
                refusal,
                body: b.to_bytes(),
            },
            Err(e) => Sent::Next(format!("failed to read the answer: {e}")),
        }
    };
    match tokio::time::timeout(exchange_timeout, exchange).await {
        Ok(a) => a,
        Err(_) => Sent::Next(format!("no answer within {exchange_timeout:?}")),
    }
}

async fn attempt(
    endpoint: &str,
    verifier: Arc<PinnedCaVerifier>,
    client_auth: Option<ClientAuth>,
    path: &str,
    bearer: Option<&Secret>,
    body: Vec<u8>,
) -> Attempt {
    match send(
        endpoint,
        verifier,
        client_auth,
        Method::POST,
        path,
        bearer,
        body,
        EXCHANGE_TIMEOUT,
        wire::MAX_RESPONSE_BYTES,
    )
    .await
    {
        Sent::Answer {
            status,
            refusal,
            body,
        } => answer(endpoint, status, refusal.as_deref(), &body),
        Sent::Next(why) => Attempt::Next(why),
        Sent::Mismatch(e) => Attempt::Mismatch(e),
        Sent::Failed(e) => Attempt::done(Err(e)),
    }
}

fn answer(endpoint: &str, status: StatusCode, refusal: Option<&str>, bytes: &[u8]) -> Attempt {
    let message = || {
        serde_json::from_slice::<ErrorBody>(bytes)
            .map(|b| b.error)
            .unwrap_or_else(|_| {
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned()
            })
    };
    match status.as_u16() {
        200 => Attempt::done(serde_json::from_slice::<JoinResponse>(bytes).map_err(|e| {
            JoinError::BadAnswer {
                endpoint: endpoint.to_string(),
                reason: format!("not a join response: {e}"),
            }
        })),
        401 if refusal == Some(REFUSAL_UNKNOWN_TOKEN) => Attempt::Unknown(message()),
        401 | 403 => Attempt::done(Err(JoinError::Refused {
            endpoint: endpoint.to_string(),
            status: status.as_u16(),
            message: message(),
        })),
        s @ 400..=499 => Attempt::done(Err(JoinError::Rejected {
            endpoint: endpoint.to_string(),
            status: s,
            message: message(),
        })),
        s => Attempt::Next(format!("status {s}: {}", message())),
    }
}

fn tls_config_error(endpoint: &str, e: &dyn std::fmt::Display) -> JoinError {
    JoinError::BadAnswer {
        endpoint: endpoint.to_string(),
        reason: format!("failed to set up the exchange: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `/proc/locks` shows a process waiting for a lock on the
    /// file with inode `ino` (a blocked `flock` is listed as `->`).
    fn someone_waits_for(ino: u64) -> bool {
        let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
        let end = format!(":{ino}");
        locks
            .lines()
            .any(|l| l.contains("->") && l.split_whitespace().any(|f| f.ends_with(&end)))
    }

    #[test]
    fn write_material_waits_for_the_security_dir_lock() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let config_dir = tmp.path().to_path_buf();
        let sec = config_dir.join(paths::SECURITY_SUBDIR);
        let ca = ca::ClusterCa::create().unwrap();
        let key = ca::new_key_pair().unwrap();
        let dns = vec!["localhost".to_string()];
        let ips: Vec<std::net::IpAddr> = vec!["127.0.0.1".parse().unwrap()];
        let cert = ca
            .issue(&key, &dns, &ips, std::time::Duration::from_secs(86_400))
            .unwrap();
        let cluster = store::ClusterFile::new(
            &ca,
            &Secret::new("Y29uc3Vs"),
            &Secret::new("bm9tYWQ="),
            "ams2",
            true,
        );
        let answer = JoinResponse {
            certificate: cert.pem.clone(),
            ca: ca.cert_pem().to_string(),
            secrets: store::secrets_for(
                &cluster,
                crate::role::RoleSet::default(),
                "ams2",
                &dns,
                &ips,
                &cert,
            ),
            cluster: None,
        };
        let key_pem = ca::key_pem_of(&key);
        // Another writer (a renewal) holds the lock.
        let held = store::lock_material(&sec).unwrap();
        let ino = std::fs::metadata(sec.join(store::LOCK_FILE)).unwrap().ino();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let dir = config_dir.clone();
        let writer = std::thread::spawn(move || {
            let r = write_material(&dir, &answer, &key_pem, None, None);
            let _ = done_tx.send(());
            r
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            assert!(
                done_rx.try_recv().is_err(),
                "write_material wrote while another writer held {}",
                store::LOCK_FILE
            );
            if someone_waits_for(ino) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "write_material neither waited for the lock nor finished"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(
            !sec.join(paths::NODE_SECRETS_FILE).exists(),
            "nothing is written while the lock is held"
        );
        drop(held);
        writer.join().unwrap().unwrap();
        assert!(sec.join(paths::NODE_SECRETS_FILE).exists());
    }

    #[test]
    fn hosts_of_join_entries_drop_ports_and_skip_cloud_strings() {
        assert_eq!(host_of("10.0.0.1:8301").as_deref(), Some("10.0.0.1"));
        assert_eq!(host_of("10.0.0.1").as_deref(), Some("10.0.0.1"));
        assert_eq!(host_of("[fd00::1]:8301").as_deref(), Some("fd00::1"));
        assert_eq!(host_of("fd00::1").as_deref(), Some("fd00::1"));
        assert_eq!(
            host_of("consul.example:8500").as_deref(),
            Some("consul.example")
        );
        assert_eq!(host_of("provider=aws tag_key=x tag_value=y"), None);
    }

    #[test]
    fn candidates_get_the_default_join_port() {
        assert_eq!(endpoint_of("10.0.0.1"), "10.0.0.1:4681");
        assert_eq!(endpoint_of("10.0.0.1:9000"), "10.0.0.1:9000");
        assert_eq!(endpoint_of("srv.example"), "srv.example:4681");
        assert_eq!(endpoint_of("fd00::1"), "[fd00::1]:4681");
        assert_eq!(endpoint_of("[fd00::1]"), "[fd00::1]:4681");
        assert_eq!(endpoint_of("[fd00::1]:77"), "[fd00::1]:77");
    }

    #[test]
    fn refusals_are_final_and_server_errors_are_not() {
        let body = br#"{"error":"wrong secret for join token abc123"}"#;
        match answer("a:1", StatusCode::UNAUTHORIZED, None, body) {
            Attempt::Done(r) if r.is_err() => {
                let Err(e) = *r else { unreachable!() };
                assert!(e.is_refusal());
                assert_eq!(
                    e.to_string(),
                    "the join endpoint at a:1 refused the join token: wrong secret for join token abc123"
                );
            }
            _ => panic!("401 must be final"),
        }
        match answer("a:1", StatusCode::BAD_REQUEST, None, body) {
            Attempt::Done(r) => assert!(matches!(*r, Err(JoinError::Rejected { status: 400, .. }))),
            _ => panic!("400 must be final"),
        }
        assert!(matches!(
            answer("a:1", StatusCode::SERVICE_UNAVAILABLE, None, body),
            Attempt::Next(_)
        ));
        // A token this endpoint does not know: the next may (not synced yet).
        let body = br#"{"error":"unknown join token abc123"}"#;
        assert!(matches!(
            answer(
                "a:1",
                StatusCode::UNAUTHORIZED,
                Some(REFUSAL_UNKNOWN_TOKEN),
                body
            ),
            Attempt::Unknown(m) if m == "unknown join token abc123"
        ));
    }
}

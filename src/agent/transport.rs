//! [`AgentClient`]: the one HTTP client of the node's agents, and
//! [`Endpoint`], one agent's API through it.
//!
//! Pooled reqwest clients (the release downloader's crate: hyper-util's
//! pooled client underneath, URL handling, TLS by rustls), built once from
//! the plan by `supervisor run` and cloned to every user: the observers
//! (readiness and the health snapshot), the Consul registration and
//! discovery's joins and probes. A clone shares the connection pools;
//! nothing here is process-wide. No proxy (agents are local or on the
//! private network) and no public roots.
//!
//! An agent API served over TLS (Consul's HTTPS port, Nomad with
//! `tls.http`) gets its own pooled client: verified against that API's CA
//! only, under the server name the plan gives (a DNS name is resolved to
//! the API's address, so the check holds whatever address the API listens
//! on; an IP name is the address itself), presenting the node's client
//! certificate when the plan names one (Consul's `verify_incoming`), and
//! carrying the supervisor's ACL token on every request (`X-Consul-Token`
//! / `X-Nomad-Token`, as HashiCorp's API docs name them). The token is a
//! sensitive header: never in a URL, a log line, an error or a `Debug`.
//! [`AgentClient::reload_tls`] re-reads every CA, certificate and key (a
//! renewed node certificate) without a new client for the users.
//!
//! Remote Consul agents (discovery's probes of the servers it found, the
//! registration of a node without a local Consul) are asked through
//! [`AgentClient::endpoint_at`]: an `https://` base goes through the
//! cluster client (the cluster CA, the node's certificate and the
//! supervisor's Consul token), an `http://` base through the plain one.
//!
//! Every exchange (connect, request, whole answer) is bounded by the
//! caller's timeout and every answer by [`MAX_BODY_BYTES`]. A request that
//! failed before any answer for another reason than a refused connection
//! (typically a kept connection the agent closed when it restarted) is
//! sent once more within the same deadline; every request to an agent is
//! idempotent (GETs, and PUTs of the same registration).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::{AgentError, Answer};
use crate::plan::{ApiTls, Plan};
use crate::vocab::Product;

/// Largest answer read from an agent (Nomad's `/v1/nodes` of a large
/// cluster is a few MiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Idle connections kept per agent address for the next poll.
const MAX_IDLE_PER_AGENT: usize = 2;
/// Consul's ACL token header (Consul API docs, "Authentication").
pub const CONSUL_TOKEN_HEADER: &str = "x-consul-token";
/// Nomad's ACL token header (Nomad API docs, "Authentication").
pub const NOMAD_TOKEN_HEADER: &str = "x-nomad-token";

/// The ACL token header of `product`'s API.
pub fn token_header(product: Product) -> &'static str {
    match product {
        Product::Consul => CONSUL_TOKEN_HEADER,
        Product::Nomad => NOMAD_TOKEN_HEADER,
    }
}

/// Why one exchange with an agent failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The request could not be built (an invalid URL, path or header).
    #[error("failed to build the request")]
    Build(#[source] reqwest::Error),
    /// No connection.
    #[error("failed to connect")]
    Connect(#[source] reqwest::Error),
    /// The exchange broke (reset, closed, malformed answer).
    #[error("failed to exchange the request")]
    Exchange(#[source] reqwest::Error),
    /// The body broke off.
    #[error("failed to read the answer's body")]
    Body(#[source] reqwest::Error),
    /// The body exceeded [`MAX_BODY_BYTES`].
    #[error("the answer exceeds {0} bytes")]
    TooLarge(usize),
    /// The exchange did not finish within the request's timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl TransportError {
    /// Whether the exchange timed out (a hung agent).
    pub fn is_timeout(&self) -> bool {
        match self {
            Self::Timeout(_) => true,
            Self::Build(e) | Self::Connect(e) | Self::Exchange(e) | Self::Body(e) => e.is_timeout(),
            Self::TooLarge(_) => false,
        }
    }

    fn of_send(e: reqwest::Error) -> Self {
        if e.is_builder() {
            Self::Build(e)
        } else if e.is_connect() {
            Self::Connect(e)
        } else {
            Self::Exchange(e)
        }
    }

    /// Whether sending the request again may succeed: it failed before any
    /// answer on a connection that was open (not refused, not a bad URL).
    fn is_resendable(&self) -> bool {
        matches!(self, Self::Exchange(e) if !e.is_timeout())
    }
}

/// One pooled client and how to build it again (a renewed certificate).
struct Conn {
    /// What the client verifies and presents; `None`: plain HTTP.
    tls: Option<TlsSettings>,
    /// The token it sends: the plan's, until the node's `node.json` gets a
    /// newer one ([`AgentClient::reload_tls_and_tokens`]).
    token: RwLock<Option<crate::role::Secret>>,
    /// The client, or why it could not be built (innermost cause).
    http: RwLock<Result<reqwest::Client, String>>,
}

/// The TLS settings of one client.
struct TlsSettings {
    /// The API's settings (paths, server name, token).
    api: ApiTls,
    /// Whose API (the token header's name).
    product: Product,
    /// The address the server name resolves to; `None` for the cluster
    /// client (remote agents are named by their address).
    addr: Option<SocketAddr>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Conn");
        if let Some(t) = &self.tls {
            d.field("product", &t.product)
                .field("server_name", &t.api.server_name)
                .field("ca_file", &t.api.ca_file)
                .field("client_cert", &t.api.client_cert.is_some())
                .field("token", &t.api.token.is_some());
        }
        d.finish_non_exhaustive()
    }
}

impl Conn {
    fn new(tls: Option<TlsSettings>) -> Self {
        let token = tls.as_ref().and_then(|t| t.api.token.clone());
        let http = build(tls.as_ref(), token.as_ref());
        if let (Err(e), Some(t)) = (&http, &tls) {
            tracing::warn!(agent = %t.product, ca = %t.api.ca_file.display(), error = %e, "cannot load the TLS files of an agent's https API");
        }
        Self {
            tls,
            token: RwLock::new(token),
            http: RwLock::new(http),
        }
    }

    /// The current client (a cheap handle on its pool).
    fn client(&self) -> Result<reqwest::Client, String> {
        self.http
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Builds the client again from the files; keeps the old one when the
    /// new files cannot be loaded.
    fn reload(&self) -> Result<(), String> {
        if self.tls.is_none() {
            return Ok(());
        }
        let token = self
            .token
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let fresh = build(self.tls.as_ref(), token.as_ref());
        let mut slot = self
            .http
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match fresh {
            Ok(c) => {
                *slot = Ok(c);
                Ok(())
            }
            Err(e) => {
                if slot.is_err() {
                    *slot = Err(e.clone());
                }
                Err(e)
            }
        }
    }

    fn has_token(&self) -> bool {
        self.token
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some()
    }

    /// Takes `token` for the next build (a token is never taken away).
    fn set_token(&self, token: Option<&crate::role::Secret>) {
        if let (Some(t), Some(_)) = (token, &self.tls) {
            *self
                .token
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(t.clone());
        }
    }
}

/// The base of every client: no proxy, no public roots, a small pool.
fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .pool_max_idle_per_host(MAX_IDLE_PER_AGENT)
}

/// A client for `tls` (plain without): its CA as the only root, its client
/// certificate, its token as a default sensitive header, its server name
/// resolved to its address.
fn build(
    tls: Option<&TlsSettings>,
    token: Option<&crate::role::Secret>,
) -> Result<reqwest::Client, String> {
    let mut b = builder();
    if let Some(t) = tls {
        for c in load_ca(&t.api)? {
            b = b.add_root_certificate(c);
        }
        if let Some(cc) = &t.api.client_cert {
            b = b.identity(load_identity(cc)?);
        }
        if let Some(token) = token {
            let mut v = HeaderValue::from_str(token.expose())
                .map_err(|_| "the ACL token is not a valid header value".to_string())?;
            v.set_sensitive(true);
            let mut h = HeaderMap::new();
            h.insert(HeaderName::from_static(token_header(t.product)), v);
            b = b.default_headers(h);
        }
        if let Some(addr) = t.addr {
            if t.api.server_name.parse::<IpAddr>().is_err() {
                b = b.resolve(&t.api.server_name, addr);
            }
        }
    }
    b.build().map_err(|e| innermost(&e))
}

fn innermost(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The one client of the node's agent APIs; cheap to clone (clones share
/// the connection pools).
#[derive(Debug, Clone)]
pub struct AgentClient {
    plain_http: reqwest::Client,
    plain: Arc<Conn>,
    tls: Arc<[Arc<Conn>]>,
    /// Remote Consul agents over HTTPS (`endpoint_at` with `https://`).
    cluster: Option<Arc<Conn>>,
}

impl AgentClient {
    /// A client of plain-HTTP APIs only.
    pub fn plain() -> Result<Self, AgentError> {
        Self::new(std::iter::empty())
    }

    /// The client of the plan's agents: their TLS APIs' files loaded; the
    /// local Consul's TLS settings (when it serves HTTPS) also reach remote
    /// Consul agents over HTTPS.
    pub fn for_plan(plan: &Plan) -> Result<Self, AgentError> {
        let c = Self::new(
            plan.agents
                .iter()
                .filter_map(|a| a.api_tls.as_ref().map(|t| (a.product, a.http_addr, t))),
        )?;
        let consul = plan
            .agents
            .iter()
            .find(|a| a.product == Product::Consul)
            .and_then(|a| a.api_tls.as_ref());
        Ok(match consul {
            Some(t) => c.with_remote_consul(t),
            None => c,
        })
    }

    /// As [`AgentClient::for_plan`]; a node with the cluster's material
    /// and no local Consul asks remote Consul agents over HTTPS with the
    /// cluster CA, the node's certificate and the supervisor's Consul
    /// token (registration through another node's Consul, discovery's
    /// probes).
    pub fn for_plan_and_role(
        plan: &Plan,
        role: &crate::role::NodeRole,
    ) -> Result<Self, AgentError> {
        let c = Self::for_plan(plan)?;
        match (&c.cluster, &role.security.material) {
            (None, Some(m)) => {
                let tls = ApiTls {
                    ca_file: m.ca_file.clone(),
                    server_name: String::new(),
                    client_cert: Some(crate::plan::ClientCert {
                        cert_file: m.cert_file.clone(),
                        key_file: m.key_file.clone(),
                    }),
                    token: m.secrets.acl.consul_supervisor.clone(),
                };
                Ok(c.with_remote_consul(&tls))
            }
            _ => Ok(c),
        }
    }

    /// This client, asking remote Consul agents at an `https://` base
    /// ([`AgentClient::endpoint_at`]) with `tls`'s CA, client certificate
    /// and token (its server name is unused: a remote agent is verified
    /// under the address or name its base carries).
    pub fn with_remote_consul(mut self, tls: &ApiTls) -> Self {
        self.cluster = Some(Arc::new(Conn::new(Some(TlsSettings {
            api: tls.clone(),
            product: Product::Consul,
            addr: None,
        }))));
        self
    }

    /// A client that reaches each `(product, address, tls)` API over
    /// HTTPS with its own pool. A file that cannot be loaded is not an
    /// error here: that agent's [`AgentClient::endpoint`] says why, every
    /// time it is asked (readiness and health keep reporting it; the rest
    /// works).
    pub fn new<'a>(
        tls_apis: impl IntoIterator<Item = (Product, SocketAddr, &'a ApiTls)>,
    ) -> Result<Self, AgentError> {
        let plain = builder().build().map_err(AgentError::Client)?;
        let tls = tls_apis
            .into_iter()
            .map(|(product, addr, api)| {
                Arc::new(Conn::new(Some(TlsSettings {
                    api: api.clone(),
                    product,
                    addr: Some(addr),
                })))
            })
            .collect();
        Ok(Self {
            plain: Arc::new(Conn {
                tls: None,
                token: RwLock::new(None),
                http: RwLock::new(Ok(plain.clone())),
            }),
            plain_http: plain,
            tls,
            cluster: None,
        })
    }

    /// Takes the supervisor tokens of `acl` (a renewal or the ACL bootstrap
    /// handed the node a token it did not have) and reloads the TLS files
    /// ([`Self::reload_tls`]).
    pub fn reload_tls_and_tokens(&self, acl: &crate::role::security::AclTokens) -> Vec<String> {
        for c in self.tls.iter().chain(self.cluster.iter()) {
            let product = c.tls.as_ref().map(|t| t.product);
            c.set_token(match product {
                Some(Product::Nomad) => acl.nomad_supervisor.as_ref(),
                _ => acl.consul_supervisor.as_ref(),
            });
        }
        self.reload_tls()
    }

    /// Reads every CA, client certificate and key again (after a renewal
    /// wrote new ones); every endpoint made before uses the new files for
    /// its next connection. A file that cannot be read keeps the client
    /// built before; returns those problems, one line each.
    pub fn reload_tls(&self) -> Vec<String> {
        self.tls
            .iter()
            .chain(self.cluster.iter())
            .filter_map(|c| c.reload().err())
            .collect()
    }

    /// The API of the agent at `addr` (`tls`: served over HTTPS), each
    /// request bounded by `timeout`.
    pub fn endpoint(
        &self,
        addr: SocketAddr,
        tls: Option<&ApiTls>,
        timeout: Duration,
    ) -> Result<Endpoint, AgentError> {
        let Some(tls) = tls else {
            return Ok(self.endpoint_at(format!("http://{addr}"), timeout));
        };
        let known = self
            .tls
            .iter()
            .find(|c| {
                c.tls.as_ref().is_some_and(|t| {
                    t.api.server_name == tls.server_name
                        && t.api.ca_file == tls.ca_file
                        && t.addr == Some(addr)
                })
            })
            .ok_or_else(|| AgentError::NoTls {
                server_name: tls.server_name.clone(),
            })?;
        if let Err(why) = known.client() {
            return Err(AgentError::Ca {
                path: tls.ca_file.clone(),
                source: why.into(),
            });
        }
        let host = match tls.server_name.parse::<IpAddr>() {
            // An IP name: the address connected to is the one verified.
            Ok(_) => addr.ip().to_string(),
            Err(_) => tls.server_name.clone(),
        };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        Ok(Endpoint {
            conn: known.clone(),
            base: format!("https://{host}:{}", addr.port()),
            timeout,
        })
    }

    /// The TLS API of the agent at `addr`, when this client has one (its
    /// files loaded): the endpoint under the server name the plan gave.
    pub fn tls_endpoint(&self, addr: SocketAddr, timeout: Duration) -> Option<Endpoint> {
        let tls = self
            .tls
            .iter()
            .filter_map(|c| c.tls.as_ref())
            .find(|t| t.addr == Some(addr))?;
        self.endpoint(addr, Some(&tls.api), timeout).ok()
    }

    /// The API at `base` (`http://host:port`, or `https://host:port`
    /// through the cluster client; a host name is resolved on each new
    /// connection, so a name not resolvable yet at boot works once it is).
    pub fn endpoint_at(&self, base: String, timeout: Duration) -> Endpoint {
        let conn = match &self.cluster {
            Some(c) if base.starts_with("https://") => c.clone(),
            _ => self.plain.clone(),
        };
        Endpoint {
            conn,
            base,
            timeout,
        }
    }

    /// Whether remote Consul agents are asked over HTTPS (the node has the
    /// cluster's TLS material).
    pub fn has_remote_consul_tls(&self) -> bool {
        self.cluster.is_some()
    }

    /// Sends `method url` with an optional JSON body through the plain
    /// client and reads the whole answer, all within `timeout`.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        json: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<(u16, Bytes), TransportError> {
        send(&self.plain_http, method, url, json, timeout).await
    }
}

/// Sends `method url` through `http`, one resend as the module says, all
/// within `timeout`.
async fn send(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    json: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<(u16, Bytes), TransportError> {
    let json = json.map(Bytes::from);
    let exchange = async {
        match exchange(http, method.clone(), url, json.clone()).await {
            Err(e) if e.is_resendable() => {
                tracing::debug!(url, error = %e, "agent exchange failed before an answer, sending once more");
                exchange(http, method, url, json).await
            }
            done => done,
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| TransportError::Timeout(timeout))?
}

async fn exchange(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    json: Option<Bytes>,
) -> Result<(u16, Bytes), TransportError> {
    let mut req = http.request(method, url);
    if let Some(body) = json {
        req = req.header("content-type", "application/json").body(body);
    }
    let mut resp = req.send().await.map_err(TransportError::of_send)?;
    let status = resp.status().as_u16();
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_BODY_BYTES as u64)
    {
        return Err(TransportError::TooLarge(MAX_BODY_BYTES));
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(TransportError::Body)? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(TransportError::TooLarge(MAX_BODY_BYTES));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, body.freeze()))
}

/// Reads the PEM bundle of a TLS API's CA: a role-named file, read as a
/// regular file with a size limit, never blocking.
fn load_ca(tls: &ApiTls) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = crate::role::file::read_regular(&tls.ca_file, crate::role::limits::TLS_FILE_BYTES)
        .map_err(|e| format!("{}: {}", tls.ca_file.display(), innermost(&e)))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{}: {}", tls.ca_file.display(), innermost(&e)))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no PEM certificate in the file",
            tls.ca_file.display()
        ));
    }
    Ok(certs)
}

/// Reads the client certificate chain and its key (each bounded as the
/// CA); the key's content never reaches an error.
fn load_identity(cc: &crate::plan::ClientCert) -> Result<reqwest::Identity, String> {
    let read = |p: &std::path::Path| {
        crate::role::file::read_regular(p, crate::role::limits::TLS_FILE_BYTES)
            .map_err(|e| format!("{}: {}", p.display(), innermost(&e)))
    };
    let mut pem = read(&cc.cert_file)?;
    pem.push(b'\n');
    pem.extend_from_slice(&read(&cc.key_file)?);
    reqwest::Identity::from_pem(&pem).map_err(|_| {
        format!(
            "{} and {}: not a PEM certificate and private key",
            cc.cert_file.display(),
            cc.key_file.display()
        )
    })
}

/// One agent's API: its client, the base URL of its requests and the
/// timeout of each.
#[derive(Debug, Clone)]
pub struct Endpoint {
    conn: Arc<Conn>,
    base: String,
    timeout: Duration,
}

impl Endpoint {
    /// `http://<addr>`, or `https://<server name>:<port>` for a TLS API.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The timeout of each request.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether requests carry the supervisor's ACL token.
    pub fn has_token(&self) -> bool {
        self.conn.has_token()
    }

    /// Sends `method path` (with a JSON body) and reads the answer.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        json: Option<Vec<u8>>,
    ) -> Result<Answer, AgentError> {
        let url = format!("{}{path}", self.base);
        let http = match self.conn.client() {
            Ok(h) => h,
            Err(why) => {
                let path = self
                    .conn
                    .tls
                    .as_ref()
                    .map(|t| t.api.ca_file.clone())
                    .unwrap_or_default();
                return Err(AgentError::Ca {
                    path,
                    source: why.into(),
                });
            }
        };
        match send(&http, method, &url, json, self.timeout).await {
            Ok((status, body)) => Ok(Answer {
                url,
                status,
                body,
                token: self.has_token(),
            }),
            Err(source) => Err(AgentError::Request { url, source }),
        }
    }

    /// `GET path`, requiring one of the `ok` statuses.
    pub async fn get(&self, path: &str, ok: &[u16]) -> Result<Answer, AgentError> {
        self.send(Method::GET, path, None).await?.require(ok)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    const T: Duration = Duration::from_secs(5);

    /// Reads one request head (up to the blank line); `None` at EOF.
    async fn read_head(s: &mut TcpStream) -> Option<String> {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte).await.ok()? == 0 {
                return None;
            }
            head.push(byte[0]);
        }
        Some(String::from_utf8_lossy(&head).into_owned())
    }

    /// A listener on a free loopback port whose first connection is handed
    /// to `serve`; the task's result is `serve`'s.
    async fn one_connection<R, F>(
        serve: impl FnOnce(TcpStream) -> F + Send + 'static,
    ) -> (SocketAddr, tokio::task::JoinHandle<R>)
    where
        F: std::future::Future<Output = R> + Send,
        R: Send + 'static,
    {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move { serve(l.accept().await.unwrap().0).await });
        (addr, task)
    }

    /// A server that answers `body` to `answers` requests per connection,
    /// then reads one more request and closes the connection without an
    /// answer (an agent that restarted); counts connections accepted.
    async fn server(body: &'static str, answers: usize) -> (String, Arc<AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let n = conns.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                n.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    for answered in 0.. {
                        if read_head(&mut s).await.is_none() || answered == answers {
                            return;
                        }
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        s.write_all(resp.as_bytes()).await.unwrap();
                    }
                });
            }
        });
        (format!("http://{addr}"), conns)
    }

    #[tokio::test]
    async fn sequential_requests_reuse_one_connection() {
        let (base, conns) = server("\"10.0.0.1:8300\"", usize::MAX).await;
        let c = AgentClient::plain().unwrap();
        for _ in 0..3 {
            let (status, body) = c
                .send(Method::GET, &format!("{base}/v1/status/leader"), None, T)
                .await
                .unwrap();
            assert_eq!(status, 200);
            assert_eq!(&body[..], b"\"10.0.0.1:8300\"");
        }
        assert_eq!(conns.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_closed_while_idle_is_replaced() {
        // Each connection answers once; the next request on it is read
        // and the connection closed unanswered: that request goes out
        // again on a new connection, and every request gets its answer.
        let (base, conns) = server("ok", 1).await;
        let c = AgentClient::plain().unwrap();
        for _ in 0..3 {
            let (_, body) = c
                .send(Method::GET, &format!("{base}/x"), None, T)
                .await
                .unwrap();
            assert_eq!(&body[..], b"ok");
        }
        assert_eq!(conns.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_hung_agent_times_out() {
        let (addr, _server) = one_connection(|s| async move {
            // Accepts, never answers.
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(s);
        })
        .await;
        let c = AgentClient::plain().unwrap();
        let url = format!("http://{addr}/v1/agent/health");
        let e = c
            .send(Method::GET, &url, None, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(e.is_timeout(), "{e}");
    }

    #[tokio::test]
    async fn an_answer_over_the_body_cap_is_refused() {
        let (addr, _server) = one_connection(|mut s| async move {
            read_head(&mut s).await;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
                MAX_BODY_BYTES + 1
            );
            s.write_all(head.as_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_secs(60)).await;
        })
        .await;
        let c = AgentClient::plain().unwrap();
        let e = c
            .send(Method::GET, &format!("http://{addr}/v1/nodes"), None, T)
            .await
            .unwrap_err();
        assert!(matches!(e, TransportError::TooLarge(_)), "{e:?}");
    }

    #[tokio::test]
    async fn put_sends_the_json_body_and_host() {
        let (addr, got) = one_connection(|mut s| async move {
            let head = read_head(&mut s).await.unwrap();
            let mut body = [0u8; 10];
            s.read_exact(&mut body).await.unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
            (head, body)
        })
        .await;
        let c = AgentClient::plain().unwrap();
        let e = c.endpoint(addr, None, T).unwrap();
        let a = e
            .send(
                Method::PUT,
                "/v1/agent/service/register",
                Some(b"{\"ID\":\"x\"}".to_vec()),
            )
            .await
            .unwrap();
        assert_eq!(a.status, 200);
        let (head, body) = got.await.unwrap();
        assert!(
            head.starts_with("PUT /v1/agent/service/register HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("host: {addr}\r\n")),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json\r\n")
        );
        assert_eq!(&body, b"{\"ID\":\"x\"}");
    }

    #[tokio::test]
    async fn refused_connections_and_bad_urls_are_errors() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let c = AgentClient::plain().unwrap();
        let e = c
            .send(Method::GET, &format!("http://{addr}/"), None, T)
            .await
            .unwrap_err();
        assert!(matches!(e, TransportError::Connect(_)), "{e:?}");
        let e = c
            .send(Method::GET, "http://user@:/x y", None, T)
            .await
            .unwrap_err();
        assert!(matches!(e, TransportError::Build(_)), "{e:?}");
    }

    #[test]
    fn an_unreadable_ca_is_reported_by_its_agents_endpoint_only() {
        let tls = ApiTls {
            ca_file: "/nonexistent/ca.pem".into(),
            server_name: "server.eu.nomad".into(),
            client_cert: None,
            token: None,
        };
        let addr: SocketAddr = "127.0.0.1:4646".parse().unwrap();
        let c = AgentClient::new([(Product::Nomad, addr, &tls)]).unwrap();
        let e = c.endpoint(addr, Some(&tls), T).unwrap_err();
        assert!(matches!(e, AgentError::Ca { .. }), "{e:?}");
        assert!(
            e.one_line().contains("/nonexistent/ca.pem"),
            "{}",
            e.one_line()
        );
        // Plain APIs through the same client are unaffected.
        let plain = c.endpoint("127.0.0.1:8500".parse().unwrap(), None, T);
        assert_eq!(plain.unwrap().base(), "http://127.0.0.1:8500");
        // A TLS API the client was not built for says so.
        let other = ApiTls {
            server_name: "client.eu.nomad".into(),
            ..tls
        };
        let e = c.endpoint(addr, Some(&other), T).unwrap_err();
        assert!(matches!(e, AgentError::NoTls { .. }), "{e:?}");
    }

    // ------------------------------------------------ TLS APIs, for real ---

    use std::sync::Mutex;

    use super::super::testtls::{CONSUL_TOKEN, Ca, api_tls, client_pem, tls_agent};

    const TOKEN: &str = CONSUL_TOKEN;

    /// Everything logged (any level, any target) while the returned guard
    /// lives, on this thread (a current-thread test runtime: every task).
    fn capture_logs() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
        #[derive(Clone)]
        struct W(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for W {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = W(buf.clone());
        let sub = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || w.clone())
            .finish();
        (buf, tracing::subscriber::set_default(sub))
    }

    #[tokio::test]
    async fn a_tls_api_requiring_a_client_cert_answers_the_supervisor_with_its_token() {
        let ca = Ca::new();
        let (addr, seen) = tls_agent(&ca, &ca).await;
        let dir = tempfile::tempdir().unwrap();
        let tls = api_tls(
            dir.path(),
            &ca,
            Some(client_pem(&ca)),
            "localhost",
            Some(TOKEN),
        );
        let c = AgentClient::new([(Product::Consul, addr, &tls)]).unwrap();
        let e = c.endpoint(addr, Some(&tls), T).unwrap();
        assert_eq!(e.base(), format!("https://localhost:{}", addr.port()));
        assert!(!e.base().contains(TOKEN));
        let consul = super::super::ConsulClient::new(e);
        assert_eq!(
            consul.leader().await.unwrap().as_deref(),
            Some("10.0.0.1:8300")
        );
        assert_eq!(
            consul.leader().await.unwrap().as_deref(),
            Some("10.0.0.1:8300")
        );
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2);
        for s in &seen {
            assert_eq!(s.path, "/v1/status/leader");
            assert_eq!(s.consul_token.as_deref(), Some(TOKEN), "every request");
            assert_eq!(s.nomad_token, None, "Consul's header only");
        }
    }

    #[tokio::test]
    async fn nomad_gets_its_own_header_and_an_ip_server_name_is_verified_as_an_ip() {
        let ca = Ca::new();
        let (addr, seen) = tls_agent(&ca, &ca).await;
        let dir = tempfile::tempdir().unwrap();
        let tls = api_tls(
            dir.path(),
            &ca,
            Some(client_pem(&ca)),
            "127.0.0.1",
            Some(TOKEN),
        );
        let c = AgentClient::new([(Product::Nomad, addr, &tls)]).unwrap();
        let e = c.endpoint(addr, Some(&tls), T).unwrap();
        assert_eq!(e.base(), format!("https://{addr}"));
        assert_eq!(
            e.get("/v1/status/leader", &[200]).await.unwrap().status,
            200
        );
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen[0].nomad_token.as_deref(), Some(TOKEN));
        assert_eq!(seen[0].consul_token, None);
    }

    #[tokio::test]
    async fn without_a_client_cert_the_api_refuses_and_the_error_says_so() {
        let ca = Ca::new();
        let (addr, seen) = tls_agent(&ca, &ca).await;
        let dir = tempfile::tempdir().unwrap();
        let tls = api_tls(dir.path(), &ca, None, "localhost", Some(TOKEN));
        let c = AgentClient::new([(Product::Consul, addr, &tls)]).unwrap();
        let e = c.endpoint(addr, Some(&tls), T).unwrap();
        let err = e.get("/v1/status/leader", &[200]).await.unwrap_err();
        let line = err.one_line();
        assert!(
            line.contains(&format!(
                "https://localhost:{}/v1/status/leader",
                addr.port()
            )),
            "{line}"
        );
        assert!(
            line.contains("the agent requires a client certificate"),
            "{line}"
        );
        assert!(!line.contains(TOKEN), "{line}");
        assert!(seen.lock().unwrap().is_empty(), "no request got through");
    }

    #[tokio::test]
    async fn a_server_cert_of_another_ca_is_refused() {
        let (ca, other) = (Ca::new(), Ca::new());
        let (addr, seen) = tls_agent(&other, &ca).await;
        let dir = tempfile::tempdir().unwrap();
        let tls = api_tls(
            dir.path(),
            &ca,
            Some(client_pem(&ca)),
            "localhost",
            Some(TOKEN),
        );
        let c = AgentClient::new([(Product::Consul, addr, &tls)]).unwrap();
        let err = c
            .endpoint(addr, Some(&tls), T)
            .unwrap()
            .get("/v1/status/leader", &[200])
            .await
            .unwrap_err();
        assert!(
            err.one_line().to_lowercase().contains("certificate"),
            "{}",
            err.one_line()
        );
        assert!(
            seen.lock().unwrap().is_empty(),
            "the token never left the node"
        );
    }

    #[tokio::test]
    async fn a_403_is_a_refused_token_and_the_token_is_in_no_error_log_or_debug() {
        let (logs, _guard) = capture_logs();
        let ca = Ca::new();
        let (addr, seen) = tls_agent(&ca, &ca).await;
        let dir = tempfile::tempdir().unwrap();
        let tls = api_tls(
            dir.path(),
            &ca,
            Some(client_pem(&ca)),
            "localhost",
            Some(TOKEN),
        );
        let c = AgentClient::new([(Product::Consul, addr, &tls)]).unwrap();
        let e = c.endpoint(addr, Some(&tls), T).unwrap();
        let err = e.get("/denied", &[200]).await.unwrap_err();
        assert!(matches!(err, AgentError::TokenRefused { .. }), "{err:?}");
        let line = err.one_line();
        assert!(
            line.starts_with("the agent refused the supervisor's token: "),
            "{line}"
        );
        assert!(line.contains("lacks permission"), "{line}");
        assert_eq!(seen.lock().unwrap()[0].consul_token.as_deref(), Some(TOKEN));
        // The same agent without a token: it wants one.
        let bare = api_tls(dir.path(), &ca, Some(client_pem(&ca)), "localhost", None);
        let c2 = AgentClient::new([(Product::Consul, addr, &bare)]).unwrap();
        let err2 = c2
            .endpoint(addr, Some(&bare), T)
            .unwrap()
            .get("/denied", &[200])
            .await
            .unwrap_err();
        assert!(matches!(err2, AgentError::TokenMissing { .. }), "{err2:?}");
        // A failed connection's error and every log line, at trace level.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let gone = l.local_addr().unwrap();
        drop(l);
        let c3 = AgentClient::new([(Product::Consul, gone, &tls)]).unwrap();
        let err3 = c3
            .endpoint(gone, Some(&tls), T)
            .unwrap()
            .get("/v1/status/leader", &[200])
            .await
            .unwrap_err();
        tracing::info!(error = %err.one_line(), "logged as the observers log it");
        tracing::info!(error = %err3.one_line(), "logged as the observers log it");
        let everything = format!(
            "{err}\n{err:?}\n{line}\n{err2:?}\n{err3:?}\n{}\n{c:?}\n{e:?}\n{tls:?}",
            err3.one_line()
        );
        assert!(!everything.contains(TOKEN), "{everything}");
        let logged = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
        assert!(
            logged.contains("logged as the observers log it"),
            "capture works"
        );
        assert!(!logged.contains(TOKEN), "{logged}");
    }

    #[tokio::test]
    async fn reload_tls_picks_up_a_renewed_client_certificate() {
        let (ca, stranger) = (Ca::new(), Ca::new());
        let (addr, _seen) = tls_agent(&ca, &ca).await;
        let dir = tempfile::tempdir().unwrap();
        // First a client cert the agent does not trust.
        let tls = api_tls(
            dir.path(),
            &ca,
            Some(client_pem(&stranger)),
            "localhost",
            Some(TOKEN),
        );
        let c = AgentClient::new([(Product::Consul, addr, &tls)]).unwrap();
        let e = c.endpoint(addr, Some(&tls), T).unwrap();
        let refused = e.get("/v1/status/leader", &[200]).await.unwrap_err();
        assert!(
            refused.one_line().contains("fatal alert"),
            "{}",
            refused.one_line()
        );
        // The renewal writes a good one in the same files.
        let (cert, key) = client_pem(&ca);
        let cc = tls.client_cert.as_ref().unwrap();
        std::fs::write(&cc.cert_file, cert).unwrap();
        std::fs::write(&cc.key_file, key).unwrap();
        assert!(c.reload_tls().is_empty());
        // The endpoint made before the reload uses the new files.
        assert_eq!(
            e.get("/v1/status/leader", &[200]).await.unwrap().status,
            200
        );
        // Unreadable files keep the client that works, and say why.
        std::fs::remove_file(&cc.key_file).unwrap();
        let problems = c.reload_tls();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("node-key.pem"), "{problems:?}");
        assert_eq!(
            e.get("/v1/status/leader", &[200]).await.unwrap().status,
            200
        );
    }

    #[tokio::test]
    async fn remote_consul_over_https_goes_through_the_cluster_client() {
        let ca = Ca::new();
        let (addr, seen) = tls_agent(&ca, &ca).await;
        let dir = tempfile::tempdir().unwrap();
        let tls = api_tls(
            dir.path(),
            &ca,
            Some(client_pem(&ca)),
            "localhost",
            Some(TOKEN),
        );
        let c = AgentClient::plain().unwrap().with_remote_consul(&tls);
        assert!(c.has_remote_consul_tls());
        let remote = c.endpoint_at(format!("https://{addr}"), T);
        assert_eq!(
            remote
                .get("/v1/status/leader", &[200])
                .await
                .unwrap()
                .status,
            200
        );
        assert_eq!(seen.lock().unwrap()[0].consul_token.as_deref(), Some(TOKEN));
        // Without the cluster settings an https base has no CA to trust.
        let plain = AgentClient::plain().unwrap();
        assert!(
            plain
                .endpoint_at(format!("https://{addr}"), T)
                .get("/v1/status/leader", &[200])
                .await
                .is_err()
        );
        assert_eq!(seen.lock().unwrap().len(), 1);
    }
}

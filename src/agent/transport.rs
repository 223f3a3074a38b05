//! [`AgentClient`]: the one HTTP client of the node's agents, and
//! [`Endpoint`], one agent's API through it.
//!
//! A pooled reqwest client (the release downloader's crate: hyper-util's
//! pooled client underneath, URL handling, TLS by rustls), built once from
//! the plan by `supervisor run` and cloned to every user: the observers
//! (readiness and the health snapshot) and the Consul registration. A clone
//! shares the connection pool; nothing here is process-wide. No proxy
//! (agents are local or on the private network) and no public roots: an
//! agent API served over TLS (Nomad with `tls.http`) is verified against
//! the cluster CA the plan names, under the server name its certificates
//! carry, which this client resolves to the API's address.
//!
//! Every exchange (connect, request, whole answer) is bounded by the
//! caller's timeout and every answer by [`MAX_BODY_BYTES`]. A request that
//! failed before any answer for another reason than a refused connection
//! (typically a kept connection the agent closed when it restarted) is
//! sent once more within the same deadline; every request to an agent is
//! idempotent (GETs, and PUTs of the same registration).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::Method;

use super::{AgentError, Answer};
use crate::plan::{ApiTls, Plan};

/// Largest answer read from an agent (Nomad's `/v1/nodes` of a large
/// cluster is a few MiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Idle connections kept per agent address for the next poll.
const MAX_IDLE_PER_AGENT: usize = 2;

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

/// The TLS settings of one agent API, as loaded into the client.
#[derive(Debug)]
struct TlsApi {
    server_name: String,
    ca_file: std::path::PathBuf,
    /// Why its CA could not be loaded (innermost cause), if it could not.
    problem: Option<String>,
}

/// The one client of the node's agent APIs; cheap to clone (clones share
/// the connection pool).
#[derive(Debug, Clone)]
pub struct AgentClient {
    http: reqwest::Client,
    tls: Arc<[TlsApi]>,
}

impl AgentClient {
    /// A client of plain-HTTP APIs only.
    pub fn plain() -> Result<Self, AgentError> {
        Self::new(std::iter::empty())
    }

    /// The client of the plan's agents: their TLS APIs' CAs loaded.
    pub fn for_plan(plan: &Plan) -> Result<Self, AgentError> {
        Self::new(
            plan.agents
                .iter()
                .filter_map(|a| a.api_tls.as_ref().map(|t| (a.http_addr, t))),
        )
    }

    /// A client that reaches each `(address, tls)` API over HTTPS, verified
    /// against that API's CA only, under its server name resolved to the
    /// address. A CA that cannot be loaded is not an error here: that
    /// agent's [`AgentClient::endpoint`] says why, every time it is asked
    /// (readiness and health keep reporting it; the rest works).
    pub fn new<'a>(
        tls_apis: impl IntoIterator<Item = (SocketAddr, &'a ApiTls)>,
    ) -> Result<Self, AgentError> {
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .tls_built_in_root_certs(false)
            .pool_max_idle_per_host(MAX_IDLE_PER_AGENT);
        let mut loaded = Vec::new();
        for (addr, tls) in tls_apis {
            let problem = match load_ca(tls) {
                Ok(certs) => {
                    for c in certs {
                        b = b.add_root_certificate(c);
                    }
                    b = b.resolve(&tls.server_name, addr);
                    None
                }
                Err(e) => {
                    tracing::warn!(ca = %tls.ca_file.display(), error = %e, "cannot load the CA of an agent's https API");
                    Some(e)
                }
            };
            loaded.push(TlsApi {
                server_name: tls.server_name.clone(),
                ca_file: tls.ca_file.clone(),
                problem,
            });
        }
        Ok(Self {
            http: b.build().map_err(AgentError::Client)?,
            tls: loaded.into(),
        })
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
            .find(|t| t.server_name == tls.server_name && t.ca_file == tls.ca_file)
            .ok_or_else(|| AgentError::NoTls {
                server_name: tls.server_name.clone(),
            })?;
        if let Some(why) = &known.problem {
            return Err(AgentError::Ca {
                path: known.ca_file.clone(),
                source: why.clone().into(),
            });
        }
        Ok(self.endpoint_at(
            format!("https://{}:{}", tls.server_name, addr.port()),
            timeout,
        ))
    }

    /// The plain-HTTP API at `base` (`http://host:port`; a host name is
    /// resolved on each new connection, so a name not resolvable yet at
    /// boot works once it is).
    pub fn endpoint_at(&self, base: String, timeout: Duration) -> Endpoint {
        Endpoint {
            client: self.clone(),
            base,
            timeout,
        }
    }

    /// Sends `method url` with an optional JSON body and reads the whole
    /// answer, all within `timeout`.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        json: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<(u16, Bytes), TransportError> {
        let json = json.map(Bytes::from);
        let exchange = async {
            match self.exchange(method.clone(), url, json.clone()).await {
                Err(e) if e.is_resendable() => {
                    tracing::debug!(url, error = %e, "agent exchange failed before an answer, sending once more");
                    self.exchange(method, url, json).await
                }
                done => done,
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| TransportError::Timeout(timeout))?
    }

    async fn exchange(
        &self,
        method: Method,
        url: &str,
        json: Option<Bytes>,
    ) -> Result<(u16, Bytes), TransportError> {
        let mut req = self.http.request(method, url);
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
}

/// Reads the PEM bundle of a TLS API's CA: a role-named file, read as a
/// regular file with a size limit, never blocking.
fn load_ca(tls: &ApiTls) -> Result<Vec<reqwest::Certificate>, String> {
    let innermost = |e: &dyn std::error::Error| {
        let mut cur = e;
        while let Some(next) = cur.source() {
            cur = next;
        }
        cur.to_string()
    };
    let pem = crate::role::file::read_regular(&tls.ca_file, crate::role::limits::TLS_FILE_BYTES)
        .map_err(|e| innermost(&e))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| innermost(&e))?;
    if certs.is_empty() {
        return Err("no PEM certificate in the file".into());
    }
    Ok(certs)
}

/// One agent's API: the client, the base URL of its requests and the
/// timeout of each.
#[derive(Debug, Clone)]
pub struct Endpoint {
    client: AgentClient,
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

    /// Sends `method path` (with a JSON body) and reads the answer.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        json: Option<Vec<u8>>,
    ) -> Result<Answer, AgentError> {
        let url = format!("{}{path}", self.base);
        match self.client.send(method, &url, json, self.timeout).await {
            Ok((status, body)) => Ok(Answer { url, status, body }),
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
        let c = AgentClient::new([(addr, &tls)]).unwrap();
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
}

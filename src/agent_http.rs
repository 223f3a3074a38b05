//! The transport of the agents' HTTP APIs: plain HTTP/1.1 over hyper's
//! connection API for `http://` agents (what a node talks to every few
//! seconds: readiness checks, the health checker, registration), reqwest for
//! an agent whose API is served over TLS.
//!
//! Why not reqwest for all: it is the release downloader's client (TLS,
//! proxies, redirects, HTTP/2), and every request through it runs its client
//! stack (URL parsing with IDNA, the connection pool of hyper-util, tower
//! layers, a TLS session cache even for plain HTTP). A node's steady state
//! ran that code every 5 s and kept it mapped; the agents' plain APIs need
//! one request on one connection, which hyper (already the health server's)
//! does by itself. Memory measured in BENCHMARKS.md ("A whole node").
//!
//! Connections: one idle connection per agent address is kept for the next
//! request (process-wide; the readiness checks, the checker and registration
//! talk to the same agents); more concurrent requests open more and close
//! them when done. A request that fails on a kept connection before any
//! answer (the agent restarted and closed it) is sent once more on a new
//! one; every request to an agent is idempotent (GETs, and PUTs of the same
//! registration). The whole exchange, connect included, is bounded by the
//! client's timeout, and an answer is read up to [`MAX_BODY_BYTES`].

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Largest answer read from an agent (Nomad's `/v1/nodes` of a large
/// cluster is a few MiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Why one exchange with an agent failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL is not one this transport takes.
    #[error("unsupported URL {0}: the plain agent client speaks http:// only")]
    Url(String),
    /// No connection.
    #[error("failed to connect to {authority}")]
    Connect {
        /// `host:port`.
        authority: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The request could not be built (an invalid path or header).
    #[error("failed to build the request")]
    Build(#[source] hyper::http::Error),
    /// The exchange broke (reset, closed, malformed answer).
    #[error("failed to exchange the request")]
    Exchange(#[source] hyper::Error),
    /// The body broke off or exceeded [`MAX_BODY_BYTES`].
    #[error("failed to read the answer's body")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The exchange did not finish within the client's timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// A TLS agent endpoint's request (reqwest).
    #[error(transparent)]
    Tls(#[from] reqwest::Error),
}

impl HttpError {
    /// Whether the exchange timed out (a hung agent).
    pub fn is_timeout(&self) -> bool {
        match self {
            Self::Timeout(_) => true,
            Self::Tls(e) => e.is_timeout(),
            _ => false,
        }
    }
}

/// A status and a whole body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: Bytes,
}

/// The client of one agent API: plain HTTP, or reqwest holding the agent's
/// CA for a TLS API.
#[derive(Debug, Clone)]
pub enum AgentHttp {
    /// `http://` agents.
    Plain(PlainClient),
    /// `https://` agents (reqwest with the agent's CA only).
    Tls(reqwest::Client),
}

impl AgentHttp {
    /// Sends `method url` with an optional JSON body and reads the answer.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        json: Option<Vec<u8>>,
    ) -> Result<Answer, HttpError> {
        match self {
            Self::Plain(c) => c.send(method, url, json).await,
            Self::Tls(c) => {
                let mut req = c.request(method, url);
                if let Some(body) = json {
                    req = req.header("content-type", "application/json").body(body);
                }
                let resp = req.send().await?;
                let status = resp.status().as_u16();
                let body = resp.bytes().await?;
                Ok(Answer { status, body })
            }
        }
    }

    /// `GET url`.
    pub async fn get(&self, url: &str) -> Result<Answer, HttpError> {
        self.send(Method::GET, url, None).await
    }
}

/// A plain-HTTP/1.1 client with one timeout for the whole exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlainClient {
    timeout: Duration,
}

/// Connections kept for the next request, at most one per `host:port`.
static IDLE: Mutex<Vec<(String, SendRequest<Full<Bytes>>)>> = Mutex::new(Vec::new());

fn take_idle(authority: &str) -> Option<SendRequest<Full<Bytes>>> {
    let mut idle = IDLE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Drop the ones whose connection has ended meanwhile.
    idle.retain(|(_, s)| !s.is_closed());
    let i = idle.iter().position(|(a, _)| a == authority)?;
    Some(idle.swap_remove(i).1)
}

fn keep_idle(authority: &str, sender: SendRequest<Full<Bytes>>) {
    if sender.is_closed() {
        return;
    }
    let mut idle = IDLE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if idle.iter().all(|(a, _)| a != authority) {
        idle.push((authority.to_string(), sender));
    }
}

/// `http://host:port/path?query` → (`host:port`, `/path?query`).
fn split_url(url: &str) -> Result<(&str, &str), HttpError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| HttpError::Url(url.to_string()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(HttpError::Url(url.to_string()));
    }
    Ok((authority, path))
}

/// `host:port` to connect to (port 80 when the authority has none).
fn connect_target(authority: &str) -> String {
    let has_port = match authority.rfind(']') {
        Some(i) => authority[i..].contains(':'), // [v6]:port
        None => authority.contains(':'),
    };
    if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    }
}

impl PlainClient {
    /// A client whose exchanges (connect, request, whole answer) each end
    /// within `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }

    /// Sends `method url` with an optional JSON body and reads the answer.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        json: Option<Vec<u8>>,
    ) -> Result<Answer, HttpError> {
        let (authority, path) = split_url(url)?;
        let json = json.map(Bytes::from);
        let request = || {
            let mut b = Request::builder()
                .method(method.clone())
                .uri(path)
                .header(header::HOST, authority);
            if json.is_some() {
                b = b.header(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
            }
            b.body(Full::new(json.clone().unwrap_or_default()))
                .map_err(HttpError::Build)
        };
        let exchange = async {
            if let Some(kept) = take_idle(authority) {
                match exchange(kept, authority, request()?).await {
                    Ok(answer) => return Ok(answer),
                    // Closed by the agent while idle: once more, anew.
                    Err(Failed::BeforeAnswer(_)) => {}
                    Err(Failed::After(e)) => return Err(e),
                }
            }
            let sender = connect(authority).await?;
            exchange(sender, authority, request()?)
                .await
                .map_err(Failed::into_inner)
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| HttpError::Timeout(self.timeout))?
    }
}

/// Where an exchange failed: before any answer (safe to send again) or after.
enum Failed {
    BeforeAnswer(HttpError),
    After(HttpError),
}

impl Failed {
    fn into_inner(self) -> HttpError {
        match self {
            Self::BeforeAnswer(e) | Self::After(e) => e,
        }
    }
}

async fn connect(authority: &str) -> Result<SendRequest<Full<Bytes>>, HttpError> {
    let connect_err = |source| HttpError::Connect {
        authority: authority.to_string(),
        source,
    };
    let stream = TcpStream::connect(connect_target(authority))
        .await
        .map_err(connect_err)?;
    stream.set_nodelay(true).map_err(connect_err)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(HttpError::Exchange)?;
    // Drives the connection; ends when the sender is dropped or the peer
    // closes. Its error, if any, is the request's error too.
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "agent connection ended");
        }
    });
    Ok(sender)
}

async fn exchange(
    mut sender: SendRequest<Full<Bytes>>,
    authority: &str,
    request: Request<Full<Bytes>>,
) -> Result<Answer, Failed> {
    sender
        .ready()
        .await
        .map_err(|e| Failed::BeforeAnswer(HttpError::Exchange(e)))?;
    let resp = sender
        .send_request(request)
        .await
        .map_err(|e| Failed::BeforeAnswer(HttpError::Exchange(e)))?;
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| Failed::After(HttpError::Body(e)))?
        .to_bytes();
    keep_idle(authority, sender);
    Ok(Answer { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

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
    async fn one_connection<T, F>(
        serve: impl FnOnce(TcpStream) -> F + Send + 'static,
    ) -> (std::net::SocketAddr, tokio::task::JoinHandle<T>)
    where
        F: std::future::Future<Output = T> + Send,
        T: Send + 'static,
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
        let c = PlainClient::new(Duration::from_secs(5));
        for _ in 0..3 {
            let a = c
                .send(Method::GET, &format!("{base}/v1/status/leader"), None)
                .await
                .unwrap();
            assert_eq!(a.status, 200);
            assert_eq!(&a.body[..], b"\"10.0.0.1:8300\"");
        }
        assert_eq!(conns.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_closed_while_idle_is_replaced() {
        // Each connection answers once; the next request on it is read
        // and the connection closed unanswered: that request goes out
        // again on a new connection, and every request gets its answer.
        let (base, conns) = server("ok", 1).await;
        let c = PlainClient::new(Duration::from_secs(5));
        for _ in 0..3 {
            let a = c
                .send(Method::GET, &format!("{base}/x"), None)
                .await
                .unwrap();
            assert_eq!(&a.body[..], b"ok");
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
        let c = PlainClient::new(Duration::from_millis(200));
        let e = c
            .send(Method::GET, &format!("http://{addr}/v1/agent/health"), None)
            .await
            .unwrap_err();
        assert!(e.is_timeout(), "{e}");
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
        let c = PlainClient::new(Duration::from_secs(5));
        let url = format!("http://{addr}/v1/agent/service/register");
        let a = c
            .send(Method::PUT, &url, Some(b"{\"ID\":\"x\"}".to_vec()))
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
    async fn refused_connections_and_other_schemes_are_errors() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let c = PlainClient::new(Duration::from_secs(5));
        let e = c
            .send(Method::GET, &format!("http://{addr}/"), None)
            .await
            .unwrap_err();
        assert!(matches!(e, HttpError::Connect { .. }), "{e:?}");
        let e = c
            .send(Method::GET, "https://127.0.0.1:4646/", None)
            .await
            .unwrap_err();
        assert!(matches!(e, HttpError::Url(_)), "{e:?}");
    }

    #[test]
    fn urls_split_into_authority_and_path() {
        assert_eq!(
            split_url("http://127.0.0.1:8500/v1/agent/members?wan=1").unwrap(),
            ("127.0.0.1:8500", "/v1/agent/members?wan=1")
        );
        assert_eq!(split_url("http://[::1]:4646").unwrap(), ("[::1]:4646", "/"));
        assert!(split_url("http://user@host:1/").is_err());
        assert_eq!(connect_target("consul.service:8500"), "consul.service:8500");
        assert_eq!(connect_target("consul.service"), "consul.service:80");
        assert_eq!(connect_target("[::1]"), "[::1]:80");
        assert_eq!(connect_target("[::1]:8500"), "[::1]:8500");
    }
}

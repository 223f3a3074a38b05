//! Polls every target's `/v1/status` through one hyper client: at most
//! [`PollOptions::concurrency`] requests in flight, each attempt bounded by
//! [`PollOptions::timeout`] (connect, request and body together), one retry
//! for a node that did not answer or answered 5xx, bodies bounded by
//! [`PollOptions::max_body`]. Every target ends in exactly one
//! [`NodeResult`]; a slow, hanging, refusing, resetting or garbling node
//! costs at most `(1 + retries) × timeout` of one concurrency slot and
//! never delays the others' results.
//!
//! Connections are kept for reuse when the poll repeats (`--watch`,
//! `fleet serve`) and the descriptor limit allows one per target.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, USER_AGENT};
use hyper::{Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

use super::status::{NodeStatus, clean, parse_status};
use super::targets::Target;

/// Default number of requests in flight.
pub const DEFAULT_CONCURRENCY: usize = 256;
/// Default timeout of one attempt.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest `/v1/status` body read (a real one is 2-5 KiB).
pub const DEFAULT_MAX_BODY: usize = 256 * 1024;
/// Most requests in flight that `--concurrency` may ask for.
pub const MAX_CONCURRENCY: usize = 4096;
/// Pause before the retry of a node that did not answer.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// How long an idle kept connection lives.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// How to poll.
#[derive(Debug, Clone)]
pub struct PollOptions {
    /// Requests in flight at most.
    pub concurrency: usize,
    /// Timeout of one attempt: connect, request and whole body.
    pub timeout: Duration,
    /// Further attempts after a failed one (no answer, reset, 5xx).
    pub retries: u8,
    /// Largest body read.
    pub max_body: usize,
    /// Keep idle connections for the next poll.
    pub reuse_connections: bool,
}

impl Default for PollOptions {
    fn default() -> Self {
        Self {
            concurrency: DEFAULT_CONCURRENCY,
            timeout: DEFAULT_TIMEOUT,
            retries: 1,
            max_body: DEFAULT_MAX_BODY,
            reuse_connections: false,
        }
    }
}

/// A node's health as the poll saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// No answer: refused, reset, timed out, unroutable.
    Unreachable,
    /// An answer that is not a status document: HTTP error, wrong content
    /// type, malformed JSON, too large.
    BadAnswer,
    /// A status document whose checks do not all pass (or the node is
    /// shutting down).
    Unhealthy,
    /// A status document whose checks all pass.
    Healthy,
}

impl NodeState {
    /// The lowercase word shown.
    pub fn word(self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::BadAnswer => "bad answer",
            Self::Unhealthy => "unhealthy",
            Self::Healthy => "healthy",
        }
    }
}

/// One target's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeResult {
    /// The endpoint.
    pub target: Target,
    /// Health.
    pub state: NodeState,
    /// Why it is unreachable, a bad answer, or unhealthy (one line).
    pub problem: Option<String>,
    /// Attempts made (1 or 2).
    pub attempts: u8,
    /// Time from the first attempt to the outcome, milliseconds.
    pub elapsed_ms: u64,
    /// What the node said, when it said a status document.
    pub status: Option<NodeStatus>,
}

/// A failed attempt: the state it leaves the node in, why, and whether
/// another attempt may help.
struct Failed {
    state: NodeState,
    why: String,
    retry: bool,
}

impl Failed {
    fn unreachable(why: impl Into<String>) -> Self {
        Self {
            state: NodeState::Unreachable,
            why: why.into(),
            retry: true,
        }
    }
    fn bad(why: impl Into<String>) -> Self {
        Self {
            state: NodeState::BadAnswer,
            why: why.into(),
            retry: false,
        }
    }
}

/// The fleet's HTTP client and how to use it.
#[derive(Debug, Clone)]
pub struct Poller {
    client: Client<HttpConnector, Empty<Bytes>>,
    opts: PollOptions,
}

impl Poller {
    /// One client for every poll of this process.
    pub fn new(mut opts: PollOptions) -> Self {
        opts.concurrency = opts.concurrency.clamp(1, MAX_CONCURRENCY);
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(opts.timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(usize::from(opts.reuse_connections))
            .build(connector);
        Self { client, opts }
    }

    /// The options in force.
    pub fn options(&self) -> &PollOptions {
        &self.opts
    }

    /// Polls every target; the results are in the targets' order. Each
    /// target is its own task, so a multi-threaded runtime spreads the work
    /// over its workers; at most `concurrency` run at once. `done` counts
    /// finished targets (for a progress line).
    pub async fn poll_all(
        self: &Arc<Self>,
        targets: Arc<Vec<Target>>,
        done: Arc<AtomicUsize>,
    ) -> Vec<NodeResult> {
        let n = targets.len();
        let mut slots: Vec<Option<NodeResult>> = vec![None; n];
        let mut set = tokio::task::JoinSet::new();
        let mut next = 0;
        loop {
            while set.len() < self.opts.concurrency && next < n {
                let (me, ts, i) = (self.clone(), targets.clone(), next);
                set.spawn(async move {
                    let r = me.poll_one(&ts[i]).await;
                    (i, r)
                });
                next += 1;
            }
            match set.join_next().await {
                Some(Ok((i, r))) => {
                    done.fetch_add(1, Ordering::Relaxed);
                    if let Some(slot) = slots.get_mut(i) {
                        *slot = Some(r);
                    }
                }
                Some(Err(e)) => {
                    done.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, "fleet poll task failed");
                }
                None => break,
            }
        }
        slots
            .into_iter()
            .zip(targets.iter())
            .map(|(slot, t)| {
                slot.unwrap_or_else(|| NodeResult {
                    target: t.clone(),
                    state: NodeState::BadAnswer,
                    problem: Some("internal error: its poll task failed".into()),
                    attempts: 0,
                    elapsed_ms: 0,
                    status: None,
                })
            })
            .collect()
    }

    /// [`Self::poll_all`] as a future that owns its inputs (to spawn).
    pub async fn poll_owned(
        self: Arc<Self>,
        targets: Arc<Vec<Target>>,
        done: Arc<AtomicUsize>,
    ) -> Vec<NodeResult> {
        self.poll_all(targets, done).await
    }

    /// Polls one target, with its retries.
    pub async fn poll_one(&self, target: &Target) -> NodeResult {
        let start = Instant::now();
        let mut attempts = 0u8;
        let outcome = loop {
            attempts += 1;
            match self.attempt(target).await {
                Ok(s) => break Ok(s),
                Err(f) if f.retry && attempts <= self.opts.retries => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(f) => break Err(f),
            }
        };
        let elapsed_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        match outcome {
            Ok(status) => {
                let healthy = status.healthy && !status.stopping;
                let problem = (!healthy).then(|| unhealthy_reason(&status));
                NodeResult {
                    target: target.clone(),
                    state: if healthy {
                        NodeState::Healthy
                    } else {
                        NodeState::Unhealthy
                    },
                    problem,
                    attempts,
                    elapsed_ms,
                    status: Some(status),
                }
            }
            Err(f) => NodeResult {
                target: target.clone(),
                state: f.state,
                problem: Some(f.why),
                attempts,
                elapsed_ms,
                status: None,
            },
        }
    }

    async fn attempt(&self, target: &Target) -> Result<NodeStatus, Failed> {
        let uri: Uri = format!("http://{}/v1/status", target.authority())
            .parse()
            .map_err(|e| Failed::bad(format!("invalid address: {e}")))?;
        let req = Request::get(uri)
            .header(
                USER_AGENT,
                concat!("hashi-supervisor-fleet/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::new())
            .map_err(|e| Failed::bad(format!("invalid request: {e}")))?;
        let timeout = self.opts.timeout;
        let max_body = self.opts.max_body;
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| {
                let why = describe(&e);
                Failed::unreachable(why)
            })?;
            let status = resp.status();
            let content_type = resp
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_ascii_lowercase();
            let declared = resp
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > max_body as u64) {
                return Err(Failed::bad(format!("answer larger than {max_body} bytes")));
            }
            let body = Limited::new(resp.into_body(), max_body)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        Failed::bad(format!("answer larger than {max_body} bytes"))
                    } else {
                        Failed::unreachable(format!("answer cut short: {}", describe(&*e)))
                    }
                })?
                .to_bytes();
            Ok((status, content_type, body))
        };
        let (status, content_type, body) = match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(Failed::unreachable(format!(
                    "timed out after {}",
                    human_duration(timeout)
                )));
            }
        };
        if status != StatusCode::OK {
            let snippet = clean(&String::from_utf8_lossy(&body), 80);
            return Err(Failed {
                state: NodeState::BadAnswer,
                why: format!("HTTP {}: {snippet}", status.as_u16()),
                retry: status.is_server_error(),
            });
        }
        let essence = content_type.split(';').next().unwrap_or("").trim();
        if essence != "application/json" {
            return Err(Failed::bad(format!(
                "content type `{}`, not application/json",
                clean(&content_type, 60)
            )));
        }
        parse_status(&body).map_err(|e| Failed::bad(format!("not a status document: {e}")))
    }
}

/// The one line saying why a node that answered is unhealthy.
fn unhealthy_reason(s: &NodeStatus) -> String {
    if s.stopping {
        return "shutting down".into();
    }
    match s.failing.first() {
        Some(c) if s.failing.len() > 1 => {
            format!("{}: {} (+{} more)", c.name, c.reason, s.failing.len() - 1)
        }
        Some(c) => format!("{}: {}", c.name, c.reason),
        None => "checks failing".into(),
    }
}

/// A client error as one line: the kind of failure first (refused, reset,
/// ...), then the innermost cause.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut kind = None;
    let mut innermost = e.to_string();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            kind = Some(match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused",
                std::io::ErrorKind::ConnectionReset => "connection reset",
                std::io::ErrorKind::ConnectionAborted => "connection aborted",
                std::io::ErrorKind::TimedOut => "connect timed out",
                std::io::ErrorKind::HostUnreachable | std::io::ErrorKind::NetworkUnreachable => {
                    "unreachable"
                }
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::BrokenPipe => {
                    "connection closed"
                }
                _ => "i/o error",
            });
        }
        if let Some(h) = c.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() && kind.is_none() {
                kind = Some("connection closed before an answer");
            }
        }
        innermost = c.to_string();
        cur = c.source();
    }
    let innermost = clean(&innermost, 120);
    match kind {
        Some(k) if !innermost.to_lowercase().contains(k) => format!("{k} ({innermost})"),
        Some(k) => k.to_string(),
        None => innermost,
    }
}

/// `2s`, `1500ms`.
pub fn human_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

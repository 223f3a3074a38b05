//! The hyper 1.x server of the health endpoint.
//!
//! Hardening: a header read timeout (a slowloris client is dropped), no
//! request bodies (anything announcing more than a few bytes gets 413), a
//! bound on concurrent connections (beyond it, new connections wait in the
//! listen backlog until a slot frees; slow ones free theirs within the
//! header timeout), keep-alive for well-behaved pollers, and a bounded
//! graceful shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::HealthError;
use super::handlers::AnswerCache;
use super::snapshot::HealthSnapshot;

/// Limits of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time a client has to send a complete request head.
    pub header_read_timeout: Duration,
    /// Largest request body announced that is still answered (we read none).
    pub max_body_bytes: u64,
    /// Time open connections get to finish at shutdown.
    pub shutdown_grace: Duration,
    /// Largest request head, in bytes.
    pub max_header_bytes: usize,
}

/// Default bound on concurrent connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Default header read timeout.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Default largest accepted request body (we expect none).
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024;
/// Default shutdown grace.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Default largest request head (hyper's minimum read buffer is 8 KiB).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Pause after a failed accept (e.g. out of file descriptors).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
        }
    }
}

/// Binds the endpoint's listener.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, HealthError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| HealthError::Bind { addr, source })
}

/// Serves the endpoint on `listener` with default limits until `cancel`.
pub async fn serve(
    listener: TcpListener,
    snapshot: watch::Receiver<HealthSnapshot>,
    cancel: CancellationToken,
) -> Result<(), HealthError> {
    serve_with(listener, snapshot, cancel, ServerLimits::default()).await
}

fn too_large(req: &Request<Incoming>, limit: u64) -> bool {
    let h = req.headers();
    let len = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match len {
        Some(n) => n > limit,
        // A chunked body has no announced size: refuse it, we read none.
        None => h.contains_key(header::TRANSFER_ENCODING),
    }
}

/// Serves the endpoint on `listener` with `limits` until `cancel`.
pub async fn serve_with(
    listener: TcpListener,
    snapshot: watch::Receiver<HealthSnapshot>,
    cancel: CancellationToken,
    limits: ServerLimits,
) -> Result<(), HealthError> {
    let local = listener.local_addr().map_err(HealthError::LocalAddr)?;
    info!(addr = %local, "health endpoint listening");
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // One cache for every connection of this listener.
    let cache = Arc::new(Mutex::new(AnswerCache::new(snapshot)));
    let tracker = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            p = slots.clone().acquire_owned() => p.expect("the connection semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "failed to accept a connection");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let cache = cache.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let _permit = permit;
            serve_connection(stream, peer, cache, cancel, limits).await;
        });
    }
    tracker.close();
    if tokio::time::timeout(limits.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        debug!("health connections still open after the grace; dropping them");
    }
    info!(addr = %local, "health endpoint stopped");
    Ok(())
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    cache: Arc<Mutex<AnswerCache>>,
    cancel: CancellationToken,
    limits: ServerLimits,
) {
    let svc = service_fn(move |req: Request<Incoming>| {
        // Answered synchronously: the snapshot is read, never awaited on,
        // and the cache is locked only for that.
        let resp = if too_large(&req, limits.max_body_bytes) {
            let mut r = Response::new(Full::new(Bytes::from_static(b"request body too large\n")));
            *r.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            r
        } else {
            let (parts, _body) = req.into_parts();
            cache
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .handle(&parts)
        };
        std::future::ready(Ok::<_, Infallible>(resp))
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                debug!(%peer, error = %e, "health connection ended with an error");
            }
        }
        _ = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(limits.shutdown_grace, conn).await;
        }
    }
}

/// The default listen address of a node whose private address is `ip`:
/// that address and [`crate::paths::DEFAULT_HEALTH_PORT`].
pub fn default_listen(ip: std::net::IpAddr) -> SocketAddr {
    SocketAddr::new(ip, crate::paths::DEFAULT_HEALTH_PORT)
}

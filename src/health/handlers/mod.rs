//! The routes, as pure functions of the request head and a
//! [`HealthSnapshot`]. No I/O, no awaiting, no state: [`handle`] renders
//! its answer from the snapshot it is given, in the few microseconds the
//! server holds it.
//!
//! * routing (here): path → [`Route`], `HEAD` and other methods, 404, the
//!   headers every answer carries;
//! * [`ready`]: `/live`, `/ready` and `/health`, as text or JSON;
//! * [`json`]: the `/v1/status` document;
//! * [`prometheus`]: `/metrics`, Prometheus text;
//! * [`html`]: `/`, the self-contained status page;
//! * [`cache`]: the server's cache of rendered answers. It wraps these
//!   functions from outside (the server owns it; neither the snapshot nor
//!   the functions above know of it).

pub mod cache;
pub mod html;
pub mod json;
pub mod prometheus;
pub mod ready;

use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Method, Response, StatusCode};

use super::snapshot::HealthSnapshot;

pub use cache::AnswerCache;
pub use html::render_page;
pub use json::{AgentDoc, ExitDoc, StatusDoc, status_doc};
pub use prometheus::render_metrics;

/// Response type of every route.
pub type HealthResponse = Response<Full<Bytes>>;

/// Methods every route allows.
const ALLOW: &str = "GET, HEAD";
const TEXT: &str = "text/plain; charset=utf-8";

/// What a request asks for: a route, with the request flags its answer
/// depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/live`.
    Live,
    /// `/ready` or `/health`: the failing checks (all with `?verbose`), as
    /// JSON when the client accepts it.
    Ready {
        /// `?verbose`.
        verbose: bool,
        /// `Accept: application/json`.
        json: bool,
    },
    /// `/v1/status`.
    Status,
    /// `/metrics`.
    Metrics,
    /// `/`.
    Page,
}

impl Route {
    /// The route of a request; `None` for an unknown path.
    pub fn of(parts: &Parts) -> Option<Route> {
        Some(match parts.uri.path() {
            "/live" => Route::Live,
            "/ready" | "/health" => Route::Ready {
                verbose: has_query_flag(parts, "verbose"),
                json: wants_json(parts),
            },
            "/v1/status" => Route::Status,
            "/metrics" => Route::Metrics,
            "/" => Route::Page,
            _ => return None,
        })
    }

    /// Whether the answer also depends on the clock (uptimes) and the live
    /// counters, not only on the snapshot's content.
    pub fn is_timed(self) -> bool {
        matches!(self, Route::Status | Route::Metrics | Route::Page)
    }
}

/// The answer of a route: status, content type and body, before the
/// request method is applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// Status code.
    pub status: StatusCode,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Body.
    pub body: Bytes,
}

impl Answer {
    fn ok(content_type: &'static str, body: impl Into<Bytes>) -> Self {
        Self {
            status: StatusCode::OK,
            content_type,
            body: body.into(),
        }
    }
}

/// Renders the answer of `route` from `s`, uptimes as of `now`.
pub fn answer(route: Route, s: &HealthSnapshot, now: SystemTime) -> Answer {
    match route {
        Route::Live => ready::live(),
        Route::Ready { verbose, json } => ready::ready(s, verbose, json),
        Route::Status => json::status(s, now),
        Route::Metrics => prometheus::metrics(s, now),
        Route::Page => html::page(s, now),
    }
}

/// Answers one request. `HEAD` gets the `GET` answer's status and headers
/// with an empty body; other methods 405 with `Allow`; unknown paths 404.
pub fn handle(parts: &Parts, s: &HealthSnapshot) -> HealthResponse {
    respond_with(parts, |route| answer(route, s, SystemTime::now()))
}

/// Answers one request, `get` giving the answer of its route (called once,
/// and only for `GET` and `HEAD` on a known path).
pub fn respond_with(parts: &Parts, get: impl FnOnce(Route) -> Answer) -> HealthResponse {
    let Some(route) = Route::of(parts) else {
        return respond(StatusCode::NOT_FOUND, TEXT, "not found\n");
    };
    if parts.method == Method::GET {
        let a = get(route);
        respond(a.status, a.content_type, a.body)
    } else if parts.method == Method::HEAD {
        let a = get(route);
        let r = respond(a.status, a.content_type, a.body);
        let (mut head, body) = r.into_parts();
        let size = hyper::body::Body::size_hint(&body).exact().unwrap_or(0);
        head.headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
        Response::from_parts(head, Full::new(Bytes::new()))
    } else {
        let mut r = respond(StatusCode::METHOD_NOT_ALLOWED, TEXT, "method not allowed\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(ALLOW));
        r
    }
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> HealthResponse {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

fn has_query_flag(parts: &Parts, flag: &str) -> bool {
    parts.uri.query().is_some_and(|q| {
        q.split('&').any(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            k == flag && !matches!(v, "0" | "false")
        })
    })
}

fn wants_json(parts: &Parts) -> bool {
    parts
        .headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/json"))
}

//! The server's cache of rendered answers.
//!
//! Rendering `/v1/status`, `/metrics` or `/` per request costs more than
//! serving it (the health server benchmark: `/v1/status` at 29% of a
//! hello-world server uncached, over 80% cached; see BENCHMARKS.md). So the
//! server keeps one [`AnswerCache`] per listener, shared by its
//! connections: an answer is rendered once per snapshot, and an answer with
//! uptimes or live counters ([`Route::is_timed`]) at most once per second
//! of the clock, so those may lag by up to a second.
//!
//! It owns the snapshot receiver it reads: the watch channel's own version
//! says when the snapshot changed, so the snapshot carries no cache and
//! knows nothing of answers. It must not hold the snapshot beyond one
//! request.

use std::time::{SystemTime, UNIX_EPOCH};

use hyper::http::request::Parts;
use tokio::sync::watch;

use super::{Answer, HealthResponse, Route, answer, respond_with};
use crate::health::snapshot::HealthSnapshot;

/// Rendered answers of the newest snapshot.
#[derive(Debug)]
pub struct AnswerCache {
    snapshot: watch::Receiver<HealthSnapshot>,
    /// Route, the second it was rendered in (0 for an untimed route), and
    /// the answer.
    answers: Vec<(Route, u64, Answer)>,
}

impl AnswerCache {
    /// A cache of the answers of the snapshots `snapshot` receives.
    pub fn new(snapshot: watch::Receiver<HealthSnapshot>) -> Self {
        Self {
            snapshot,
            answers: Vec::new(),
        }
    }

    /// Answers one request from the newest snapshot, as
    /// [`super::handle`] would, rendering only what is not cached.
    pub fn handle(&mut self, parts: &Parts) -> HealthResponse {
        let snap = self.snapshot.borrow_and_update();
        if snap.has_changed() {
            self.answers.clear();
        }
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let answers = &mut self.answers;
        respond_with(parts, |route| {
            let at = if route.is_timed() { second } else { 0 };
            if let Some((_, _, a)) = answers.iter().find(|(r, t, _)| *r == route && *t == at) {
                return a.clone();
            }
            answers.retain(|(r, _, _)| *r != route);
            let a = answer(route, &snap, now);
            answers.push((route, at, a.clone()));
            a
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use hyper::{Method, Request, StatusCode};

    use super::*;
    use crate::health::handlers::handle;
    use crate::health::metrics::Metrics;
    use crate::health::snapshot::NodeInfo;
    use crate::supervise::SupervisorStatus;

    fn snapshot() -> HealthSnapshot {
        let node = NodeInfo {
            node_name: "ams2-server-01".into(),
            region: "eu".into(),
            datacenter: "ams2".into(),
            roles: vec!["consul-server".into()],
            agents: Vec::new(),
        };
        HealthSnapshot::new(node, Arc::new(Metrics::default()))
    }

    fn parts(method: Method, uri: &str) -> Parts {
        Request::builder()
            .method(method)
            .uri(uri)
            .body(())
            .expect("a valid test request")
            .into_parts()
            .0
    }

    async fn body(r: HealthResponse) -> Bytes {
        http_body_util::BodyExt::collect(r.into_body())
            .await
            .expect("a full body never fails")
            .to_bytes()
    }

    #[tokio::test]
    async fn cached_answers_are_the_handlers_answers() {
        let (_tx, rx) = watch::channel(snapshot());
        let mut cache = AnswerCache::new(rx.clone());
        for uri in [
            "/live",
            "/ready",
            "/ready?verbose",
            "/health",
            "/v1/status",
            "/metrics",
            "/",
            "/nope",
        ] {
            for method in [Method::GET, Method::HEAD, Method::POST] {
                // Twice: rendered, then from the cache.
                for _ in 0..2 {
                    let want = handle(&parts(method.clone(), uri), &rx.borrow());
                    let got = cache.handle(&parts(method.clone(), uri));
                    assert_eq!(got.status(), want.status(), "{method} {uri}");
                    assert_eq!(got.headers(), want.headers(), "{method} {uri}");
                    assert_eq!(body(got).await, body(want).await, "{method} {uri}");
                }
            }
        }
    }

    #[tokio::test]
    async fn a_new_snapshot_is_answered_from_at_once() {
        let (tx, rx) = watch::channel(snapshot());
        let mut cache = AnswerCache::new(rx);
        let ready = || parts(Method::GET, "/ready");
        assert_eq!(cache.handle(&ready()).status(), StatusCode::OK);
        tx.send_modify(|s| {
            s.set_supervisor(SupervisorStatus {
                agents: Vec::new(),
                config_hash: String::new(),
                reload_error: None,
                stopping: true,
                node: None,
            });
        });
        let r = cache.handle(&ready());
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let text = body(r).await;
        assert!(
            String::from_utf8_lossy(&text).contains("shutting down"),
            "{text:?}"
        );
    }
}

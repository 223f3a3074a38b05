//! `/live`, `/ready` and `/health`: the verdict of the readiness checks and
//! the failing ones (all with `?verbose`), as text or JSON.

use std::fmt::Write as _;

use bytes::Bytes;
use hyper::StatusCode;
use serde::Serialize;

use super::{Answer, TEXT};
use crate::health::checks::{self, Check};
use crate::health::snapshot::HealthSnapshot;

const JSON: &str = "application/json";

/// `/live`: the supervisor loop runs (it answers at all).
pub(super) fn live() -> Answer {
    Answer::ok(TEXT, "live\n")
}

/// `/ready` and `/health`: 200 when every check passes, else 503.
pub(super) fn ready(s: &HealthSnapshot, verbose: bool, json: bool) -> Answer {
    Answer {
        status: if s.is_healthy() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        content_type: if json { JSON } else { TEXT },
        body: render_ready(s.checks(), verbose, json),
    }
}

/// Renders a `/ready` body: the failing checks (all with `verbose`), as
/// text or JSON.
pub fn render_ready(all: &[Check], verbose: bool, json: bool) -> Bytes {
    let healthy = checks::is_healthy(all);
    let shown: Vec<&Check> = all.iter().filter(|c| verbose || !c.ok).collect();
    if json {
        #[derive(Serialize)]
        struct Body<'a> {
            healthy: bool,
            checks: Vec<&'a Check>,
        }
        let body = serde_json::to_vec(&Body {
            healthy,
            checks: shown,
        })
        .unwrap_or_default();
        return Bytes::from(body);
    }
    let mut out = String::new();
    if healthy {
        out.push_str("ok\n");
    } else {
        let n = all.iter().filter(|c| !c.ok).count();
        let _ = writeln!(
            out,
            "unhealthy: {n} failing check{}",
            if n == 1 { "" } else { "s" }
        );
    }
    for c in shown {
        let _ = writeln!(
            out,
            "{} {}: {}",
            if c.ok { "[ok]  " } else { "[FAIL]" },
            c.name,
            c.reason
        );
    }
    Bytes::from(out)
}

//! `supervisor fleet serve`: the fleet page (`/`), the last report as JSON
//! (`/v1/fleet`) and per-datacenter counts for Prometheus (`/metrics`).
//!
//! Every answer is rendered once per completed poll into a [`Published`]
//! and served from a `watch` channel: a request never waits for a poll, a
//! node or a lock. The page is one self-contained HTML document (inline
//! style and script, no external asset) that reloads itself and keeps its
//! filter across reloads. Polling is the command's loop, not this module's.

use crate::html::escape as esc;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::poll::NodeState;
use super::report::{FleetReport, dc_of, row};

/// Connections served at once.
const MAX_CONNECTIONS: usize = 256;
/// Time a client has to send its request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed accept (out of descriptors, ...).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The three answers of one poll, rendered once.
#[derive(Debug, Clone)]
pub struct Published {
    /// The page.
    pub html: Bytes,
    /// `/v1/fleet`.
    pub json: Bytes,
    /// `/metrics`.
    pub metrics: Bytes,
}

impl Published {
    /// What to serve before the first poll completes.
    pub fn waiting(refresh: Duration) -> Self {
        Self {
            html: Bytes::from(page(None, refresh)),
            json: Bytes::from_static(b"{\"polling\":true}\n"),
            metrics: Bytes::from_static(b""),
        }
    }

    /// The answers of a completed poll.
    pub fn from_report(report: &FleetReport, refresh: Duration) -> Self {
        let mut json = serde_json::to_vec(report).unwrap_or_else(|_| b"{}".to_vec());
        json.push(b'\n');
        Self {
            html: Bytes::from(page(Some(report), refresh)),
            json: Bytes::from(json),
            metrics: Bytes::from(report.metrics()),
        }
    }
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:1em;color:#222}\
table{border-collapse:collapse;width:100%}th,td{padding:3px 8px;text-align:left;border-bottom:1px solid #ddd}\
th{background:#eee}tr.dc th{background:#cfd8e3;font-size:15px}\
tr.healthy{background:#e6f4e6}tr.unhealthy{background:#fde2c4}tr.unreachable{background:#f8c9c9}\
tr.bad_answer{background:#f3d0f0}.summary{font-weight:bold}ul.findings li{color:#a00}\
#filter{width:24em;padding:4px;margin:6px 0}";

const SCRIPT: &str = "(function(){\
var f=document.getElementById('filter');\
function apply(){var q=f.value.toLowerCase();sessionStorage.setItem('fleet-filter',f.value);\
document.querySelectorAll('tr.node').forEach(function(r){\
r.style.display=(q===''||r.textContent.toLowerCase().indexOf(q)>=0)?'':'none';});}\
f.value=sessionStorage.getItem('fleet-filter')||'';f.addEventListener('input',apply);apply();\
var s=parseInt(document.body.getAttribute('data-refresh'),10);\
if(s>0){setTimeout(function(){location.reload();},s*1000);}})();";

/// The fleet page of a report (`None`: the first poll is running).
pub fn page(report: Option<&FleetReport>, refresh: Duration) -> String {
    let mut o = String::with_capacity(4096);
    let _ = write!(
        o,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>hashi-supervisor fleet</title><style>{STYLE}</style></head>\
<body data-refresh=\"{}\"><h1>Fleet</h1>",
        refresh.as_secs().max(1)
    );
    let Some(r) = report else {
        o.push_str("<p class=\"summary\" id=\"summary\">first poll running…</p>");
        let _ = write!(o, "<script>{SCRIPT_WAIT}</script></body></html>");
        return o;
    };
    let _ = write!(
        o,
        "<p class=\"summary\" id=\"summary\">{}</p>",
        esc(&r.summary_line())
    );
    if !r.findings.is_empty() {
        o.push_str("<ul class=\"findings\" id=\"findings\">");
        for f in &r.findings {
            let _ = write!(o, "<li class=\"{}\">{}</li>", esc(&f.kind), esc(&f.message));
        }
        o.push_str("</ul>");
    }
    o.push_str(
        "<input id=\"filter\" type=\"search\" placeholder=\"filter: node, address, state, version…\">\
<table id=\"fleet\"><thead><tr><th>node</th><th>address</th><th>dc</th><th>roles</th>\
<th>health</th><th>consul</th><th>nomad</th><th>restarts</th><th>uptime</th><th>problem</th></tr></thead>",
    );
    // Grouped by datacenter; within one, problems first (the report's order).
    let mut dcs: Vec<&str> = r
        .nodes
        .iter()
        .map(|n| dc_of(n).unwrap_or("unknown"))
        .collect();
    dcs.sort_unstable();
    dcs.dedup();
    for dc in dcs {
        let nodes: Vec<_> = r
            .nodes
            .iter()
            .filter(|n| dc_of(n).unwrap_or("unknown") == dc)
            .collect();
        let bad = nodes
            .iter()
            .filter(|n| n.state != NodeState::Healthy)
            .count();
        let _ = write!(
            o,
            "<tbody data-dc=\"{0}\"><tr class=\"dc\"><th colspan=\"10\">{0}: {1} node{2}, {3} with problems</th></tr>",
            esc(dc),
            nodes.len(),
            if nodes.len() == 1 { "" } else { "s" },
            bad
        );
        for n in nodes {
            let state = match n.state {
                NodeState::Healthy => "healthy",
                NodeState::Unhealthy => "unhealthy",
                NodeState::Unreachable => "unreachable",
                NodeState::BadAnswer => "bad_answer",
            };
            let _ = write!(o, "<tr class=\"node {state}\" data-state=\"{state}\">");
            for cell in row(n) {
                let _ = write!(o, "<td>{}</td>", esc(&cell));
            }
            o.push_str("</tr>");
        }
        o.push_str("</tbody>");
    }
    let _ = write!(o, "</table><script>{SCRIPT}</script></body></html>");
    o
}

const SCRIPT_WAIT: &str = "setTimeout(function(){location.reload();},1000);";

fn answer(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The answer to one request, from the last published poll.
pub fn route(method: &Method, path: &str, p: &Published) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return answer(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"only GET\n"),
        );
    }
    match path {
        "/" | "/index.html" => answer(StatusCode::OK, "text/html; charset=utf-8", p.html.clone()),
        "/v1/fleet" => answer(StatusCode::OK, "application/json", p.json.clone()),
        "/metrics" => answer(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            p.metrics.clone(),
        ),
        _ => answer(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"not found\n"),
        ),
    }
}

/// Serves the fleet page on `listener` until `cancel`, answering from the
/// latest value of `published`.
pub async fn serve(
    listener: TcpListener,
    published: watch::Receiver<Arc<Published>>,
    cancel: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let tracker = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "fleet page: accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let published = published.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req: Request<Incoming>| {
                let p = published.borrow().clone();
                let resp = route(req.method(), req.uri().path(), &p);
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = cancel.cancelled() => conn.as_mut().graceful_shutdown(),
            }
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), tracker.wait()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::fleet::poll::NodeResult;
    use crate::catalog::fleet::status::parse_status;
    use crate::catalog::fleet::targets::Target;

    fn node(name: &str, healthy: bool) -> NodeResult {
        let body = format!(
            r#"{{"node":"{name}","datacenter":"dc<1>","region":"eu","healthy":{healthy},
               "checks":[{{"name":"nomad.api","ok":{healthy},"reason":"<img src=x onerror=alert(1)>"}}]}}"#
        );
        let status = parse_status(body.as_bytes()).unwrap();
        NodeResult {
            target: Target {
                host: "10.0.0.1".into(),
                port: 4680,
                origin: "t".into(),
                datacenter: None,
            },
            state: if healthy {
                NodeState::Healthy
            } else {
                NodeState::Unhealthy
            },
            problem: (!healthy).then(|| "nomad.api: <img src=x onerror=alert(1)>".into()),
            attempts: 1,
            elapsed_ms: 1,
            status: Some(status),
        }
    }

    #[test]
    fn page_escapes_what_peers_send_and_has_no_external_asset() {
        let r = FleetReport::new(
            vec![node("<script>x</script>", false), node("ok", true)],
            0,
            1,
        );
        let html = page(Some(&r), Duration::from_secs(5));
        assert!(!html.contains("<script>x"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("&lt;script&gt;x&lt;/script&gt;"), "{html}");
        assert!(html.contains("data-dc=\"dc&lt;1&gt;\""), "{html}");
        assert!(html.contains("class=\"node unhealthy\""), "{html}");
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "{html}"
        );
        assert!(html.contains("data-refresh=\"5\""), "{html}");
    }

    #[test]
    fn routes_answer_from_the_published_poll() {
        let r = FleetReport::new(vec![node("a", true)], 0, 1);
        let p = Published::from_report(&r, Duration::from_secs(5));
        let resp = route(&Method::GET, "/v1/fleet", &p);
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(route(&Method::GET, "/metrics", &p).status(), StatusCode::OK);
        assert_eq!(
            route(&Method::GET, "/nope", &p).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            route(&Method::POST, "/", &p).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        let waiting = Published::waiting(Duration::from_secs(5));
        assert_eq!(&waiting.json[..], b"{\"polling\":true}\n");
    }
}

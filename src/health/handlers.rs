//! The routes, as pure functions of the request head and a
//! [`HealthSnapshot`]. No I/O, no awaiting: the server calls [`handle`]
//! while holding the snapshot for the few microseconds it takes.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Method, Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::checks::{self, Check, state_name};
use super::snapshot::{ConsulReport, HealthSnapshot, NomadReport, Timed};
use crate::plan::Product;
use crate::supervise::AgentState;

/// Response type of every route.
pub type HealthResponse = Response<Full<Bytes>>;

/// Methods every route allows.
const ALLOW: &str = "GET, HEAD";
const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";
const HTML: &str = "text/html; charset=utf-8";
/// Prometheus text exposition format, version 0.0.4.
const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Every agent state, for the one-hot `agent_state` metric.
const ALL_STATES: [AgentState; 6] = [
    AgentState::Stopped,
    AgentState::Starting,
    AgentState::Running,
    AgentState::Stopping,
    AgentState::Backoff,
    AgentState::Failed,
];
/// How often the HTML page reloads itself.
const PAGE_REFRESH_SECS: u32 = 5;

/// `/v1/status`: the node and each agent. Also what `supervisor status` and
/// the fleet poller read, hence `Deserialize`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusDoc {
    /// Node name.
    pub node: String,
    /// Region.
    pub region: String,
    /// Datacenter.
    pub datacenter: String,
    /// Roles.
    pub roles: Vec<String>,
    /// The supervisor's version.
    pub supervisor_version: String,
    /// SHA-256 of the role file in force.
    pub config_hash: String,
    /// Whether every check passes (what `/ready` answers).
    pub healthy: bool,
    /// Shutdown has begun.
    pub stopping: bool,
    /// Why the last reload was refused.
    pub reload_error: Option<String>,
    /// Every check.
    pub checks: Vec<Check>,
    /// One entry per agent of the plan.
    pub agents: Vec<AgentDoc>,
}

/// One agent in [`StatusDoc`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentDoc {
    /// `consul` or `nomad`.
    pub agent: String,
    /// Server mode.
    pub server: bool,
    /// Client mode.
    pub client: bool,
    /// `stopped`, `starting`, `running`, `stopping`, `backoff`, `failed`.
    pub state: String,
    /// Why it is in that state.
    pub reason: Option<String>,
    /// Main pid.
    pub pid: Option<u32>,
    /// Version running.
    pub version: Option<String>,
    /// Start of the current run, seconds since the Unix epoch.
    pub since_unix: Option<u64>,
    /// Seconds since that start.
    pub uptime_secs: Option<u64>,
    /// Restarts since the supervisor started.
    pub restarts: u64,
    /// How the previous run ended.
    pub last_exit: Option<ExitDoc>,
    /// Readiness.
    pub ready: bool,
    /// Last log lines, redacted.
    pub last_lines: Vec<String>,
    /// When the agent was last queried, seconds since the Unix epoch.
    pub checked_unix: Option<u64>,
    /// What Consul reports.
    pub consul: Option<ConsulReport>,
    /// What Nomad reports.
    pub nomad: Option<NomadReport>,
}

/// How a run ended, in [`AgentDoc`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitDoc {
    /// Exit code.
    pub code: Option<i32>,
    /// Signal name.
    pub signal: Option<String>,
    /// When, seconds since the Unix epoch.
    pub at_unix: u64,
    /// Whether the supervisor asked for it.
    pub expected: bool,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Builds the `/v1/status` document.
pub fn status_doc(s: &HealthSnapshot, now: SystemTime) -> StatusDoc {
    let checks = s.derived().checks.clone();
    let sup = s.supervisor();
    let agents = s
        .node()
        .agents
        .iter()
        .map(|t| {
            let st = sup.agents.iter().find(|a| a.product == t.product);
            let report = s.report(t.product);
            let running = st.is_some_and(|a| a.state == AgentState::Running);
            AgentDoc {
                agent: t.product.to_string(),
                server: t.server,
                client: t.client,
                state: st.map_or("stopped", |a| state_name(a.state)).to_string(),
                reason: st.and_then(|a| a.reason.clone()),
                pid: st.and_then(|a| a.pid),
                version: st.and_then(|a| a.version.clone()),
                since_unix: st.and_then(|a| a.since).map(unix),
                uptime_secs: st
                    .and_then(|a| a.since)
                    .filter(|_| running)
                    .map(|since| now.duration_since(since).map(|d| d.as_secs()).unwrap_or(0)),
                restarts: st.map_or(0, |a| a.restarts),
                last_exit: st.and_then(|a| a.last_exit.as_ref()).map(|e| ExitDoc {
                    code: e.code,
                    signal: e.signal.clone(),
                    at_unix: unix(e.at),
                    expected: e.expected,
                }),
                ready: st.is_some_and(|a| a.ready),
                last_lines: st.map(|a| a.last_lines.clone()).unwrap_or_default(),
                checked_unix: report.map(|r| unix(r.checked_at)),
                consul: report.and_then(|r| r.consul.clone()),
                nomad: report.and_then(|r| r.nomad.clone()),
            }
        })
        .collect();
    StatusDoc {
        node: s.node().node_name.clone(),
        region: s.node().region.clone(),
        datacenter: s.node().datacenter.clone(),
        roles: s.node().roles.clone(),
        supervisor_version: crate::SUPERVISOR_VERSION.to_string(),
        config_hash: sup.config_hash.clone(),
        healthy: checks::is_healthy(&checks),
        stopping: sup.stopping,
        reload_error: sup.reload_error.clone(),
        checks,
        agents,
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

/// Answers one request. `HEAD` gets the `GET` answer's status and headers
/// with an empty body; other methods 405 with `Allow`; unknown paths 404.
pub fn handle(parts: &Parts, s: &HealthSnapshot) -> HealthResponse {
    let route: fn(&Parts, &HealthSnapshot) -> HealthResponse = match parts.uri.path() {
        "/live" => live,
        "/ready" | "/health" => ready,
        "/v1/status" => status,
        "/metrics" => metrics,
        "/" => page,
        _ => {
            return respond(StatusCode::NOT_FOUND, TEXT, "not found\n");
        }
    };
    if parts.method == Method::GET {
        route(parts, s)
    } else if parts.method == Method::HEAD {
        let r = route(parts, s);
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

fn live(_: &Parts, _: &HealthSnapshot) -> HealthResponse {
    respond(StatusCode::OK, TEXT, "live\n")
}

fn ready(parts: &Parts, s: &HealthSnapshot) -> HealthResponse {
    let d = s.derived();
    let verbose = has_query_flag(parts, "verbose");
    let json = wants_json(parts);
    let code = if d.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = d.ready[usize::from(verbose) + 2 * usize::from(json)].clone();
    respond(code, if json { JSON } else { TEXT }, body)
}

/// Renders a `/ready` body: the failing checks (all with `verbose`), as
/// text or JSON.
pub(crate) fn render_ready(all: &[Check], verbose: bool, json: bool) -> Bytes {
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

fn status(_: &Parts, s: &HealthSnapshot) -> HealthResponse {
    let now = SystemTime::now();
    let body = s.timed(Timed::Status, now, || {
        let doc = status_doc(s, now);
        Bytes::from(
            serde_json::to_vec(&doc)
                .expect("a StatusDoc serialises: string keys and plain values only"),
        )
    });
    respond(StatusCode::OK, JSON, body)
}

/// Escapes a Prometheus label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renders the Prometheus text exposition.
pub fn render_metrics(s: &HealthSnapshot, now: SystemTime) -> String {
    let mut o = String::with_capacity(2048);
    let sup = s.supervisor();
    let checks = &s.derived().checks;
    let _ = writeln!(
        o,
        "# HELP hashi_supervisor_build_info Build information of the supervisor."
    );
    let _ = writeln!(o, "# TYPE hashi_supervisor_build_info gauge");
    let _ = writeln!(
        o,
        "hashi_supervisor_build_info{{version=\"{}\",node=\"{}\",datacenter=\"{}\",region=\"{}\"}} 1",
        label(crate::SUPERVISOR_VERSION),
        label(&s.node().node_name),
        label(&s.node().datacenter),
        label(&s.node().region)
    );
    let _ = writeln!(
        o,
        "# HELP hashi_supervisor_healthy Whether every readiness check passes."
    );
    let _ = writeln!(o, "# TYPE hashi_supervisor_healthy gauge");
    let _ = writeln!(
        o,
        "hashi_supervisor_healthy {}",
        u8::from(checks::is_healthy(checks))
    );

    type Row<'a> = (
        &'a str,
        &'a str,
        &'a str,
        Box<dyn Fn(Product) -> String + 'a>,
    );
    let find = |p: Product| sup.agents.iter().find(|a| a.product == p);
    let rows: Vec<Row> = vec![
        (
            "hashi_supervisor_agent_up",
            "gauge",
            "Whether the agent process is running.",
            Box::new(|p| {
                u8::from(find(p).is_some_and(|a| a.state == AgentState::Running)).to_string()
            }),
        ),
        (
            "hashi_supervisor_agent_ready",
            "gauge",
            "Whether the agent is ready.",
            Box::new(|p| u8::from(find(p).is_some_and(|a| a.ready)).to_string()),
        ),
        (
            "hashi_supervisor_agent_restarts_total",
            "counter",
            "Restarts of the agent since the supervisor started.",
            Box::new(|p| find(p).map_or(0, |a| a.restarts).to_string()),
        ),
        (
            "hashi_supervisor_agent_uptime_seconds",
            "gauge",
            "Seconds since the agent's current run started (0 when not running).",
            Box::new(|p| {
                find(p)
                    .filter(|a| a.state == AgentState::Running)
                    .and_then(|a| a.since)
                    .and_then(|since| now.duration_since(since).ok())
                    .map_or(0, |d| d.as_secs())
                    .to_string()
            }),
        ),
    ];
    for (name, kind, help, value) in &rows {
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} {kind}");
        for t in &s.node().agents {
            let _ = writeln!(o, "{name}{{agent=\"{}\"}} {}", t.product, value(t.product));
        }
    }
    let _ = writeln!(
        o,
        "# HELP hashi_supervisor_agent_state The agent's state (one-hot)."
    );
    let _ = writeln!(o, "# TYPE hashi_supervisor_agent_state gauge");
    for t in &s.node().agents {
        let cur = find(t.product).map_or(AgentState::Stopped, |a| a.state);
        for st in ALL_STATES {
            let _ = writeln!(
                o,
                "hashi_supervisor_agent_state{{agent=\"{}\",state=\"{}\"}} {}",
                t.product,
                state_name(st),
                u8::from(st == cur)
            );
        }
    }
    for (name, help, get) in [
        (
            "hashi_supervisor_fetch_total",
            "Release downloads by outcome.",
            (|m: &super::Metrics, p, ok| m.fetch_count(p, ok))
                as fn(&super::Metrics, Product, bool) -> u64,
        ),
        (
            "hashi_supervisor_verify_total",
            "Release verifications by outcome.",
            |m: &super::Metrics, p, ok| m.verify_count(p, ok),
        ),
    ] {
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} counter");
        for p in [Product::Consul, Product::Nomad] {
            for (ok, outcome) in [(true, "ok"), (false, "error")] {
                let _ = writeln!(
                    o,
                    "{name}{{agent=\"{p}\",outcome=\"{outcome}\"}} {}",
                    get(&s.metrics, p, ok)
                );
            }
        }
    }
    o
}

fn metrics(_: &Parts, s: &HealthSnapshot) -> HealthResponse {
    let now = SystemTime::now();
    let body = s.timed(Timed::Metrics, now, || Bytes::from(render_metrics(s, now)));
    respond(StatusCode::OK, PROMETHEUS, body)
}

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Renders the self-contained HTML status page.
pub fn render_page(s: &HealthSnapshot, now: SystemTime) -> String {
    let doc = status_doc(s, now);
    let mut o = String::with_capacity(4096);
    let verdict = if doc.healthy { "healthy" } else { "unhealthy" };
    let _ = write!(
        o,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"refresh\" content=\"{PAGE_REFRESH_SECS}\">\
<title>{node}: {verdict}</title><style>\
body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}\
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}\
.ok{{color:#176b2c}}.fail{{color:#a1151f;font-weight:bold}}\
.healthy{{background:#e3f5e6}}.unhealthy{{background:#fbe3e4}}pre{{background:#f4f4f4;padding:.5em}}\
</style></head><body>\
<h1 id=\"verdict\" class=\"{verdict}\" data-healthy=\"{healthy}\">{node}: {verdict}</h1>\
<p>region <b>{region}</b>, datacenter <b>{dc}</b>, roles <b>{roles}</b>; supervisor {ver}; config {hash}</p>",
        node = esc(&doc.node),
        healthy = doc.healthy,
        region = esc(&doc.region),
        dc = esc(&doc.datacenter),
        roles = esc(&doc.roles.join(", ")),
        ver = esc(&doc.supervisor_version),
        hash = esc(doc.config_hash.get(..12).unwrap_or(&doc.config_hash)),
    );
    o.push_str("<h2>Agents</h2><table><tr><th>agent</th><th>state</th><th>pid</th><th>version</th><th>uptime</th><th>restarts</th><th>ready</th><th>reported</th></tr>");
    for a in &doc.agents {
        let reported = match (&a.consul, &a.nomad) {
            (Some(c), _) => format!(
                "leader {}, LAN {}, WAN {}, failure tolerance {}",
                c.leader.as_deref().unwrap_or("none"),
                c.lan_members.map_or("?".into(), |n| n.to_string()),
                c.wan_members.map_or("-".into(), |n| n.to_string()),
                c.failure_tolerance.map_or("-".into(), |n| n.to_string()),
            ),
            (_, Some(n)) => format!(
                "leader {}, server {}, client {}, known servers {}",
                n.leader.as_deref().unwrap_or("none"),
                n.health_server
                    .as_ref()
                    .map_or("-".into(), |h| h.message.clone()),
                n.health_client
                    .as_ref()
                    .map_or("-".into(), |h| h.message.clone()),
                n.known_servers.len()
            ),
            _ => "-".into(),
        };
        let _ = write!(
            o,
            "<tr id=\"agent-{name}\" data-state=\"{state}\"><td>{name}</td><td class=\"state\">{state}{reason}</td>\
<td>{pid}</td><td>{ver}</td><td>{up}</td><td>{restarts}</td><td>{ready}</td><td>{reported}</td></tr>",
            name = esc(&a.agent),
            state = esc(&a.state),
            reason = a
                .reason
                .as_deref()
                .map(|r| format!(" ({})", esc(r)))
                .unwrap_or_default(),
            pid = a.pid.map_or("-".into(), |p| p.to_string()),
            ver = esc(a.version.as_deref().unwrap_or("-")),
            up = a.uptime_secs.map_or("-".into(), |u| format!("{u}s")),
            restarts = a.restarts,
            ready = if a.ready { "yes" } else { "no" },
            reported = esc(&reported),
        );
    }
    o.push_str("</table><h2>Checks</h2><ul id=\"checks\">");
    for c in &doc.checks {
        let _ = write!(
            o,
            "<li class=\"{cls}\" data-check=\"{n}\">{mark} {n}: {r}</li>",
            cls = if c.ok { "ok" } else { "fail" },
            mark = if c.ok { "ok" } else { "FAIL" },
            n = esc(&c.name),
            r = esc(&c.reason)
        );
    }
    o.push_str("</ul>");
    for a in &doc.agents {
        if !a.last_lines.is_empty() {
            let _ = write!(o, "<h3>{} last lines</h3><pre>", esc(&a.agent));
            for l in &a.last_lines {
                let _ = writeln!(o, "{}", esc(l));
            }
            o.push_str("</pre>");
        }
    }
    o.push_str("<p><a href=\"/v1/status\">/v1/status</a> · <a href=\"/metrics\">/metrics</a> · <a href=\"/ready?verbose\">/ready?verbose</a></p></body></html>\n");
    o
}

fn page(_: &Parts, s: &HealthSnapshot) -> HealthResponse {
    let now = SystemTime::now();
    let body = s.timed(Timed::Page, now, || Bytes::from(render_page(s, now)));
    respond(StatusCode::OK, HTML, body)
}

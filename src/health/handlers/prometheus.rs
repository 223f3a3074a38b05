//! `/metrics`: the Prometheus text exposition (format 0.0.4) of the
//! snapshot and the live fetch/verify counters.

use std::fmt::Write as _;
use std::time::SystemTime;

use super::Answer;
use crate::health::checks::{self, state_name};
use crate::health::metrics::Metrics;
use crate::health::snapshot::HealthSnapshot;
use crate::peers::Source;
use crate::supervise::AgentState;
use crate::vocab::Product;

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
    let checks = s.checks();
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
    if let Some(sec) = s.security() {
        let plain = sec.mode == crate::health::security::SecurityMode::Plaintext;
        let _ = writeln!(
            o,
            "# HELP hashi_supervisor_security_plaintext Whether the node's agents run without TLS, gossip encryption and ACLs."
        );
        let _ = writeln!(o, "# TYPE hashi_supervisor_security_plaintext gauge");
        let _ = writeln!(o, "hashi_supervisor_security_plaintext {}", u8::from(plain));
        if let Some(na) = sec.not_after {
            let _ = writeln!(
                o,
                "# HELP hashi_supervisor_cert_expiry_seconds Expiry of the node certificate, Unix seconds."
            );
            let _ = writeln!(o, "# TYPE hashi_supervisor_cert_expiry_seconds gauge");
            let _ = writeln!(o, "hashi_supervisor_cert_expiry_seconds {na}");
        }
    }
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
            (|m: &Metrics, p, ok| m.fetch_count(p, ok)) as fn(&Metrics, Product, bool) -> u64,
        ),
        (
            "hashi_supervisor_verify_total",
            "Release verifications by outcome.",
            |m: &Metrics, p, ok| m.verify_count(p, ok),
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
    discovery_metrics(s, &mut o);
    o
}

/// Discovery's counters (joins by agent, errors by source), its peers by
/// source and kind, and the daemon's re-plans on them.
fn discovery_metrics(s: &HealthSnapshot, o: &mut String) {
    let r = s.discovery().map(|d| &d.report);
    let _ = writeln!(
        o,
        "# HELP hashi_supervisor_discovery_joins_total Joins made through the agents' APIs for discovered peers."
    );
    let _ = writeln!(o, "# TYPE hashi_supervisor_discovery_joins_total counter");
    for agent in ["consul", "nomad"] {
        let n = r
            .and_then(|r| r.joins.iter().find(|(a, _)| a == agent))
            .map_or(0, |(_, n)| *n);
        let _ = writeln!(
            o,
            "hashi_supervisor_discovery_joins_total{{agent=\"{agent}\"}} {n}"
        );
    }
    let _ = writeln!(
        o,
        "# HELP hashi_supervisor_discovery_errors_total Discovery errors by source."
    );
    let _ = writeln!(o, "# TYPE hashi_supervisor_discovery_errors_total counter");
    let mut sources: Vec<(String, u64)> =
        [Source::Static, Source::Dns, Source::Mdns, Source::Cloud]
            .iter()
            .map(|s| (s.as_str().to_string(), 0))
            .collect();
    for (src, n) in r.map(|r| r.errors.as_slice()).unwrap_or_default() {
        match sources.iter_mut().find(|(s, _)| s == src) {
            Some((_, c)) => *c = *n,
            None => sources.push((src.clone(), *n)),
        }
    }
    for (src, n) in &sources {
        let _ = writeln!(
            o,
            "hashi_supervisor_discovery_errors_total{{source=\"{}\"}} {n}",
            label(src)
        );
    }
    let _ = writeln!(
        o,
        "# HELP hashi_supervisor_discovery_peers Peers known, by source and kind."
    );
    let _ = writeln!(o, "# TYPE hashi_supervisor_discovery_peers gauge");
    let mut by: std::collections::BTreeMap<(&str, String), u64> = Default::default();
    for p in r.map(|r| r.records.as_slice()).unwrap_or_default() {
        let kind = serde_json::to_value(p.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        *by.entry((p.source.as_str(), kind)).or_default() += 1;
    }
    for ((src, kind), n) in &by {
        let _ = writeln!(
            o,
            "hashi_supervisor_discovery_peers{{source=\"{src}\",kind=\"{}\"}} {n}",
            label(kind)
        );
    }
    let _ = writeln!(
        o,
        "# HELP hashi_supervisor_discovery_replans_total Re-plans on a change of discovered peers, by outcome."
    );
    let _ = writeln!(o, "# TYPE hashi_supervisor_discovery_replans_total counter");
    let c = &s.metrics.replans;
    for (outcome, n) in [("ok", c.ok()), ("error", c.failed())] {
        let _ = writeln!(
            o,
            "hashi_supervisor_discovery_replans_total{{outcome=\"{outcome}\"}} {n}"
        );
    }
}

/// The `/metrics` answer.
pub(super) fn metrics(s: &HealthSnapshot, now: SystemTime) -> Answer {
    Answer::ok(PROMETHEUS, render_metrics(s, now))
}

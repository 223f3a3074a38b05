//! A poll's outcome as a [`FleetReport`]: the nodes problems first, the
//! counts, version skew and the cluster findings no single node can see;
//! and its renderings (table, Prometheus metrics, Prometheus file_sd).
//! Pure: no I/O.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::poll::{NodeResult, NodeState};
use super::status::AgentSummary;

/// How many nodes a finding names at most.
const NAMES_SHOWN: usize = 5;

/// Counts by state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Targets polled.
    pub total: usize,
    /// All checks pass.
    pub healthy: usize,
    /// Some check fails.
    pub unhealthy: usize,
    /// No answer.
    pub unreachable: usize,
    /// An answer that is not a status document.
    pub bad_answer: usize,
}

/// A fleet-level observation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// `version_skew`, `leader_disagreement`, `nomad_servers_short`,
    /// `no_healthy_consul_server`.
    pub kind: String,
    /// The datacenter concerned, when it is one.
    pub datacenter: Option<String>,
    /// One line for a person.
    pub message: String,
}

/// One poll of the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetReport {
    /// When the poll ended, seconds since the Unix epoch.
    pub polled_at_unix: u64,
    /// How long it took, milliseconds.
    pub duration_ms: u64,
    /// Counts by state.
    pub counts: Counts,
    /// Version skew and cluster findings.
    pub findings: Vec<Finding>,
    /// Every node, problems first.
    pub nodes: Vec<NodeResult>,
}

impl FleetReport {
    /// Builds the report of a poll: sorts problems first and computes the
    /// counts and findings.
    pub fn new(mut nodes: Vec<NodeResult>, polled_at_unix: u64, duration_ms: u64) -> Self {
        nodes.sort_by(|a, b| (a.state, dc_of(a), name_of(a)).cmp(&(b.state, dc_of(b), name_of(b))));
        let mut counts = Counts {
            total: nodes.len(),
            ..Counts::default()
        };
        for n in &nodes {
            match n.state {
                NodeState::Healthy => counts.healthy += 1,
                NodeState::Unhealthy => counts.unhealthy += 1,
                NodeState::Unreachable => counts.unreachable += 1,
                NodeState::BadAnswer => counts.bad_answer += 1,
            }
        }
        let findings = findings(&nodes);
        Self {
            polled_at_unix,
            duration_ms,
            counts,
            findings,
            nodes,
        }
    }

    /// Whether every node is healthy (exit 0).
    pub fn all_healthy(&self) -> bool {
        self.counts.healthy == self.counts.total
    }

    /// The summary line.
    pub fn summary_line(&self) -> String {
        let c = &self.counts;
        let mut s = format!(
            "{} nodes: {} healthy, {} unhealthy, {} unreachable",
            c.total, c.healthy, c.unhealthy, c.unreachable
        );
        if c.bad_answer > 0 {
            let _ = write!(s, ", {} bad answer", c.bad_answer);
        }
        let _ = write!(s, " (polled in {} ms)", self.duration_ms);
        s
    }

    /// The table, summary and findings for a terminal.
    pub fn table(&self) -> String {
        let header = [
            "NODE", "ADDRESS", "DC", "ROLES", "HEALTH", "CONSUL", "NOMAD", "RESTARTS", "UPTIME",
            "PROBLEM",
        ];
        let rows: Vec<[String; 10]> = self.nodes.iter().map(row).collect();
        let mut widths = header.map(str::len);
        for r in &rows {
            for (w, cell) in widths.iter_mut().zip(r.iter()).take(9) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, cells: &[&str]| {
            for (i, c) in cells.iter().enumerate() {
                if i == cells.len() - 1 {
                    out.push_str(c);
                } else {
                    let pad = widths[i].saturating_sub(c.chars().count());
                    out.push_str(c);
                    out.push_str(&" ".repeat(pad + 2));
                }
            }
            let trimmed = out.trim_end_matches(' ').len();
            out.truncate(trimmed);
            out.push('\n');
        };
        line(&mut out, &header);
        for r in &rows {
            let cells: Vec<&str> = r.iter().map(String::as_str).collect();
            line(&mut out, &cells);
        }
        out.push('\n');
        out.push_str(&self.summary_line());
        out.push('\n');
        for f in &self.findings {
            let _ = writeln!(out, "finding: {}", f.message);
        }
        out
    }

    /// Prometheus text exposition: nodes by datacenter and state, findings
    /// by kind, the poll's duration and time.
    pub fn metrics(&self) -> String {
        let mut by_dc: BTreeMap<String, BTreeMap<NodeState, usize>> = BTreeMap::new();
        for n in &self.nodes {
            *by_dc
                .entry(dc_of(n).unwrap_or("unknown").to_string())
                .or_default()
                .entry(n.state)
                .or_default() += 1;
        }
        let mut o = String::new();
        o.push_str(
            "# HELP hashi_fleet_nodes Nodes at the last completed poll, by datacenter and state.\n",
        );
        o.push_str("# TYPE hashi_fleet_nodes gauge\n");
        for (dc, states) in &by_dc {
            for s in [
                NodeState::Healthy,
                NodeState::Unhealthy,
                NodeState::Unreachable,
                NodeState::BadAnswer,
            ] {
                let _ = writeln!(
                    o,
                    "hashi_fleet_nodes{{datacenter=\"{}\",state=\"{}\"}} {}",
                    label(dc),
                    state_label(s),
                    states.get(&s).copied().unwrap_or(0)
                );
            }
        }
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for f in &self.findings {
            *kinds.entry(f.kind.as_str()).or_default() += 1;
        }
        o.push_str(
            "# HELP hashi_fleet_findings Fleet findings at the last completed poll, by kind.\n",
        );
        o.push_str("# TYPE hashi_fleet_findings gauge\n");
        for k in FINDING_KINDS {
            let _ = writeln!(
                o,
                "hashi_fleet_findings{{kind=\"{k}\"}} {}",
                kinds.get(k).copied().unwrap_or(0)
            );
        }
        o.push_str(
            "# HELP hashi_fleet_poll_duration_seconds Duration of the last completed poll.\n",
        );
        o.push_str("# TYPE hashi_fleet_poll_duration_seconds gauge\n");
        let _ = writeln!(
            o,
            "hashi_fleet_poll_duration_seconds {}",
            self.duration_ms as f64 / 1000.0
        );
        o.push_str(
            "# HELP hashi_fleet_last_poll_timestamp_seconds When the last poll completed.\n",
        );
        o.push_str("# TYPE hashi_fleet_last_poll_timestamp_seconds gauge\n");
        let _ = writeln!(
            o,
            "hashi_fleet_last_poll_timestamp_seconds {}",
            self.polled_at_unix
        );
        o
    }

    /// The targets as a Prometheus file_sd document: one group per
    /// datacenter (`unknown` for nodes that never said theirs), labelled
    /// `datacenter`.
    pub fn prometheus_sd(&self) -> String {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for n in &self.nodes {
            groups
                .entry(dc_of(n).unwrap_or("unknown").to_string())
                .or_default()
                .push(n.target.authority());
        }
        let doc: Vec<serde_json::Value> = groups
            .into_iter()
            .map(|(dc, mut targets)| {
                targets.sort();
                serde_json::json!({
                    "targets": targets,
                    "labels": { "datacenter": dc, "job": "hashi-supervisor" },
                })
            })
            .collect();
        let mut s = serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "[]".into());
        s.push('\n');
        s
    }
}

/// Every finding kind, for stable metrics.
pub const FINDING_KINDS: [&str; 4] = [
    "version_skew",
    "leader_disagreement",
    "nomad_servers_short",
    "no_healthy_consul_server",
];

fn state_label(s: NodeState) -> &'static str {
    match s {
        NodeState::Healthy => "healthy",
        NodeState::Unhealthy => "unhealthy",
        NodeState::Unreachable => "unreachable",
        NodeState::BadAnswer => "bad_answer",
    }
}

/// A Prometheus label value, escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The node's datacenter: what it said, else what its source said.
pub fn dc_of(n: &NodeResult) -> Option<&str> {
    n.status
        .as_ref()
        .map(|s| s.datacenter.as_str())
        .or(n.target.datacenter.as_deref())
}

/// The node's name, else its address.
pub fn name_of(n: &NodeResult) -> String {
    n.status
        .as_ref()
        .map_or_else(|| n.target.authority(), |s| s.node.clone())
}

fn agent_cell(a: Option<&AgentSummary>) -> String {
    match a {
        None => "-".into(),
        Some(a) => {
            let state = if a.state == "running" && !a.ready {
                "not-ready"
            } else {
                a.state.as_str()
            };
            format!("{state} {}", a.version.as_deref().unwrap_or("?"))
        }
    }
}

/// `3d4h`, `5h12m`, `4m10s`, `9s`.
pub fn uptime(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m}m")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// A node's table cells.
pub fn row(n: &NodeResult) -> [String; 10] {
    let s = n.status.as_ref();
    let agents = || {
        s.into_iter()
            .flat_map(|s| s.consul.iter().chain(s.nomad.iter()))
    };
    let restarts: u64 = agents().map(|a| a.restarts).sum();
    let up = agents().filter_map(|a| a.uptime_secs).min();
    [
        s.map_or("-".into(), |s| s.node.clone()),
        n.target.authority(),
        dc_of(n).unwrap_or("-").to_string(),
        s.map_or("-".into(), |s| {
            if s.roles.is_empty() {
                "-".into()
            } else {
                s.roles.join(",")
            }
        }),
        n.state.word().to_uppercase(),
        s.map_or("-".into(), |s| agent_cell(s.consul.as_ref())),
        s.map_or("-".into(), |s| agent_cell(s.nomad.as_ref())),
        s.map_or("-".into(), |_| restarts.to_string()),
        up.map_or("-".into(), uptime),
        n.problem.clone().unwrap_or_else(|| upgrade_cell(s)),
    ]
}

/// The upgrades a node's agents wait for, and a paused rollout first.
fn upgrade_cell(s: Option<&super::status::NodeStatus>) -> String {
    let Some(s) = s else {
        return String::new();
    };
    let agents = [("consul", s.consul.as_ref()), ("nomad", s.nomad.as_ref())];
    let paused = agents
        .iter()
        .filter_map(|(p, a)| Some(format!("{p} rollout paused: {}", (*a)?.paused.as_deref()?)));
    let pending = agents
        .iter()
        .filter(|(_, a)| a.is_some_and(|a| a.paused.is_none()))
        .filter_map(|(p, a)| Some(format!("{p} upgrade: {}", (*a)?.upgrade.as_deref()?)));
    paused.chain(pending).collect::<Vec<_>>().join("; ")
}

fn names(list: &[String]) -> String {
    let mut s = list
        .iter()
        .take(NAMES_SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if list.len() > NAMES_SHOWN {
        let _ = write!(s, " and {} more", list.len() - NAMES_SHOWN);
    }
    s
}

/// Version skew across the fleet and per-datacenter cluster findings.
pub fn findings(nodes: &[NodeResult]) -> Vec<Finding> {
    let answered: Vec<(&NodeResult, &super::status::NodeStatus)> = nodes
        .iter()
        .filter_map(|n| n.status.as_ref().map(|s| (n, s)))
        .collect();
    let mut out = Vec::new();

    // Version skew: one product, more than one version.
    type VersionOf = fn(&super::status::NodeStatus) -> Option<String>;
    let products: [(&str, VersionOf); 3] = [
        ("consul", |s| {
            s.consul.as_ref().and_then(|a| a.version.clone())
        }),
        ("nomad", |s| {
            s.nomad.as_ref().and_then(|a| a.version.clone())
        }),
        ("supervisor", |s| {
            (!s.supervisor_version.is_empty()).then(|| s.supervisor_version.clone())
        }),
    ];
    for (product, version_of) in products {
        let mut by_version: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (_, s) in &answered {
            if let Some(v) = version_of(s) {
                by_version.entry(v).or_default().push(s.node.clone());
            }
        }
        if by_version.len() > 1 {
            let mut parts: Vec<(String, Vec<String>)> = by_version.into_iter().collect();
            parts.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
            let text = parts
                .iter()
                .enumerate()
                .map(|(i, (v, ns))| {
                    if i == 0 {
                        format!("{v} on {} nodes", ns.len())
                    } else {
                        format!("{v} on {} ({})", ns.len(), names(ns))
                    }
                })
                .collect::<Vec<_>>()
                .join("; ");
            out.push(Finding {
                kind: "version_skew".into(),
                datacenter: None,
                message: format!("{product} versions differ: {text}"),
            });
        }
    }

    // Nomad's gossip and Raft span a region: leaders and servers per region.
    let mut by_region: BTreeMap<&str, Vec<&super::status::NodeStatus>> = BTreeMap::new();
    for (_, s) in &answered {
        by_region.entry(s.region.as_str()).or_default().push(s);
    }
    for (region, members) in by_region {
        if let Some(f) = leader_split(&members, "nomad", region, |s| s.nomad.as_ref()) {
            out.push(f);
        }
        let servers: Vec<&AgentSummary> = members
            .iter()
            .filter_map(|s| s.nomad.as_ref().filter(|a| a.server))
            .collect();
        if servers.is_empty() {
            continue;
        }
        let reported_alive = servers
            .iter()
            .filter(|a| a.is_up())
            .filter_map(|a| a.members_alive)
            .max()
            .map(|m| m as usize);
        let up = servers.iter().filter(|a| a.is_up()).count();
        let expected = servers
            .iter()
            .filter_map(|a| a.members)
            .map(|m| m as usize)
            .max()
            .unwrap_or(0)
            .max(servers.len());
        // Alive: what the gossip of the running servers says, but a server
        // that answered and is down is not alive whatever the gossip still
        // says, and one that answered and is up is.
        let down = servers.len() - up;
        let alive = reported_alive.map_or(up, |r| r.min(expected.saturating_sub(down)).max(up));
        if alive < expected {
            let quorum = expected / 2 + 1;
            out.push(Finding {
                kind: "nomad_servers_short".into(),
                datacenter: None,
                message: format!(
                    "region {region}: {alive} of {expected} nomad servers alive{}",
                    if alive < quorum {
                        format!(" (below the quorum of {quorum})")
                    } else {
                        String::new()
                    }
                ),
            });
        }
    }

    // Consul is per datacenter.
    let mut by_dc: BTreeMap<&str, Vec<&super::status::NodeStatus>> = BTreeMap::new();
    for (_, s) in &answered {
        by_dc.entry(s.datacenter.as_str()).or_default().push(s);
    }
    for (dc, members) in by_dc {
        if let Some(f) = leader_split(&members, "consul", dc, |s| s.consul.as_ref()) {
            out.push(f);
        }

        // No healthy Consul server.
        let consul_servers: Vec<&AgentSummary> = members
            .iter()
            .filter_map(|s| s.consul.as_ref().filter(|a| a.server))
            .collect();
        if !consul_servers.iter().any(|a| a.is_up()) {
            out.push(Finding {
                kind: "no_healthy_consul_server".into(),
                datacenter: Some(dc.to_string()),
                message: if consul_servers.is_empty() {
                    format!("{dc}: no consul server among the nodes that answered")
                } else {
                    format!(
                        "{dc}: none of its {} consul servers is running and ready",
                        consul_servers.len()
                    )
                },
            });
        }
    }
    out
}

/// Servers of one group (a datacenter for Consul, a region for Nomad)
/// that are running but name different leaders (or none).
fn leader_split(
    members: &[&super::status::NodeStatus],
    product: &str,
    group: &str,
    agent_of: fn(&super::status::NodeStatus) -> Option<&AgentSummary>,
) -> Option<Finding> {
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in members {
        if let Some(a) = agent_of(s).filter(|a| a.server && a.state == "running") {
            let l = a.leader.clone().unwrap_or_else(|| "no leader".into());
            seen.entry(l).or_default().push(s.node.clone());
        }
    }
    (seen.len() > 1).then(|| {
        let text = seen
            .iter()
            .map(|(l, ns)| format!("{l} ({})", names(ns)))
            .collect::<Vec<_>>()
            .join(" vs ");
        let (is_dc, label) = if product == "consul" {
            (true, group.to_string())
        } else {
            (false, format!("region {group}"))
        };
        Finding {
            kind: "leader_disagreement".into(),
            datacenter: is_dc.then(|| group.to_string()),
            message: format!("{label}: {product} servers disagree on the leader: {text}"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_is_short_and_readable() {
        assert_eq!(uptime(9), "9s");
        assert_eq!(uptime(250), "4m10s");
        assert_eq!(uptime(5 * 3600 + 12 * 60), "5h12m");
        assert_eq!(uptime(3 * 86400 + 4 * 3600 + 1), "3d4h");
    }

    #[test]
    fn a_paused_rollout_is_the_problem_a_healthy_node_shows() {
        let s =
            super::super::status::parse_status(super::super::status::tests::PAUSED_DOC).unwrap();
        assert_eq!(
            upgrade_cell(Some(&s)),
            "nomad rollout paused: nomad 1.10.99 failed on ams2-server-01?[2J"
        );
        assert_eq!(upgrade_cell(None), "");
    }

    #[test]
    fn metric_labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}

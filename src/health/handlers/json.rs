//! `/v1/status`: the node and each agent as a JSON document ([`StatusDoc`]),
//! also what `supervisor status` and the fleet poller read.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::Answer;
use crate::health::checks::{self, Check, state_name};
use crate::health::snapshot::{ConsulReport, HealthSnapshot, NomadReport};
use crate::supervise::AgentState;

const JSON: &str = "application/json";

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
    /// What discovery found, once it runs (absent from older supervisors).
    #[serde(default)]
    pub discovery: Option<DiscoveryDoc>,
    /// How the node is secured, once `run` published it (absent from older
    /// supervisors). Never a token or a key.
    #[serde(default)]
    pub security: Option<SecurityDoc>,
}

/// The node's security in [`StatusDoc`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityDoc {
    /// `tls`, `plaintext` or `manual-tls`.
    pub mode: String,
    /// `sha256:<hex>` pin of the cluster CA.
    #[serde(default)]
    pub ca_sha256: Option<String>,
    /// DNS names of the node certificate.
    #[serde(default)]
    pub names: Vec<String>,
    /// The node certificate's expiry (RFC 3339, UTC).
    #[serde(default)]
    pub not_after: Option<String>,
    /// The same, Unix seconds.
    #[serde(default)]
    pub not_after_unix: Option<u64>,
    /// Whole days left (negative once expired).
    #[serde(default)]
    pub days_left: Option<i64>,
    /// Whether the cluster runs with ACLs.
    #[serde(default)]
    pub acl_enabled: bool,
    /// Whether this node holds the CA and serves joins.
    #[serde(default)]
    pub ca_holder: bool,
    /// Where it serves joins (CA holders).
    #[serde(default)]
    pub join_listen: Option<String>,
    /// Renewals of the node certificate.
    #[serde(default)]
    pub renewals: crate::health::security::Renewals,
}

fn security_doc(s: &HealthSnapshot, now: SystemTime) -> Option<SecurityDoc> {
    let sec = s.security()?;
    Some(SecurityDoc {
        mode: sec.mode.as_str().to_string(),
        ca_sha256: sec.ca_sha256.clone(),
        names: sec.names.clone(),
        not_after: sec.not_after.map(crate::health::security::rfc3339),
        not_after_unix: sec.not_after,
        days_left: sec.days_left(now),
        acl_enabled: sec.acl_enabled,
        ca_holder: sec.ca_holder,
        join_listen: sec.join_listen.map(|a| a.to_string()),
        renewals: sec.renewals.clone(),
    })
}

/// Discovery in [`StatusDoc`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveryDoc {
    /// What the node waits for before starting its agents (empty once
    /// started).
    #[serde(default)]
    pub waiting_for: Vec<String>,
    /// Every peer known.
    #[serde(default)]
    pub peers: Vec<PeerDoc>,
    /// What the plan is built with now.
    #[serde(default)]
    pub applied: AppliedDoc,
    /// The identity learned for what the role file left unwritten.
    #[serde(default)]
    pub learned: LearnedDoc,
    /// Problems (they make `/ready` fail).
    #[serde(default)]
    pub problems: Vec<String>,
    /// Warnings (they do not).
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Joins made through the agents' APIs, by agent.
    #[serde(default)]
    pub joins: std::collections::BTreeMap<String, u64>,
    /// Discovery errors, by source.
    #[serde(default)]
    pub errors: std::collections::BTreeMap<String, u64>,
}

/// One peer in [`DiscoveryDoc`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerDoc {
    /// `host` or `host:port`.
    pub address: String,
    /// `consul-server`, `consul-agent`, `consul-wan`, `nomad-server`,
    /// `supervisor`.
    pub kind: String,
    /// `static`, `dns`, `mdns`, `cloud`.
    pub source: String,
    /// Its node name, when known.
    pub node: Option<String>,
    /// Its datacenter, when known.
    pub datacenter: Option<String>,
    /// Its region, when known.
    pub region: Option<String>,
    /// Last sighting, seconds since the Unix epoch.
    pub last_seen: u64,
    /// Seconds since that sighting.
    pub ago_secs: u64,
    /// The same in words (`12s ago`).
    pub ago: String,
}

/// The peers a plan is built with, in [`DiscoveryDoc`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedDoc {
    /// Consul `retry_join` additions.
    #[serde(default)]
    pub consul_lan: Vec<String>,
    /// Consul `retry_join_wan` additions.
    #[serde(default)]
    pub consul_wan: Vec<String>,
    /// Nomad's Consul address, when discovered.
    #[serde(default)]
    pub consul_http: Option<String>,
    /// Nomad `server_join` additions.
    #[serde(default)]
    pub nomad_servers: Vec<String>,
}

/// The learned identity in [`DiscoveryDoc`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnedDoc {
    /// Region, when learned.
    pub region: Option<String>,
    /// Datacenter, when learned.
    pub datacenter: Option<String>,
    /// The node whose announcement taught it.
    pub from_node: Option<String>,
    /// Where that node was seen (`mdns`, `dns`, ...).
    #[serde(default)]
    pub from_source: Option<String>,
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
    /// A pending, waiting or paused upgrade of the agent: installed X,
    /// wanted Y, waiting for Z (absent: none).
    #[serde(default)]
    pub upgrade: Option<crate::supervise::status::UpgradeStatus>,
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
    let checks = s.checks().to_vec();
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
                upgrade: st.and_then(|a| a.upgrade.clone()),
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
        discovery: discovery_doc(s, now),
        security: security_doc(s, now),
    }
}

/// `12s ago`, `4m ago`, `2h ago`, `3d ago`.
pub fn ago_words(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

/// The WAN warning of a Consul server some of whose WAN peers serf marks
/// failed: "WAN: 1 of 2 datacenters' servers failed: lon1-server-01.lon1".
fn wan_warning(c: &ConsulReport) -> Option<String> {
    if c.wan_failed.is_empty() {
        return None;
    }
    let dcs: std::collections::BTreeSet<&str> = c
        .wan_failed
        .iter()
        .map(|n| n.rsplit_once('.').map_or("", |(_, dc)| dc))
        .collect();
    Some(format!(
        "WAN: {} of {} datacenters' servers failed: {}",
        dcs.len(),
        c.wan_datacenters.map_or(dcs.len(), |n| n as usize),
        c.wan_failed.join(", ")
    ))
}

/// Discovery's part of the document: the view `run` published, and the
/// WAN warning of a Consul server (present with either).
fn discovery_doc(s: &HealthSnapshot, now: SystemTime) -> Option<DiscoveryDoc> {
    let wan = s
        .report(crate::vocab::Product::Consul)
        .and_then(|r| r.consul.as_ref())
        .and_then(wan_warning);
    let view = s.discovery();
    if view.is_none() && wan.is_none() {
        return None;
    }
    let mut doc = DiscoveryDoc::default();
    if let Some(v) = view {
        let r = &v.report;
        doc.waiting_for.clone_from(&v.waiting_for);
        doc.peers = r
            .records
            .iter()
            .map(|p| {
                let ago = now.duration_since(p.last_seen).map_or(0, |d| d.as_secs());
                PeerDoc {
                    address: p.address.clone(),
                    kind: serde_json::to_value(p.kind)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    source: p.source.as_str().to_string(),
                    node: p.node.clone(),
                    datacenter: p.datacenter.clone(),
                    region: p.region.clone(),
                    last_seen: unix(p.last_seen),
                    ago_secs: ago,
                    ago: ago_words(ago),
                }
            })
            .collect();
        doc.applied = AppliedDoc {
            consul_lan: r.peers.consul_lan.clone(),
            consul_wan: r.peers.consul_wan.clone(),
            consul_http: r.peers.consul_http.clone(),
            nomad_servers: r.peers.nomad_servers.clone(),
        };
        doc.learned = LearnedDoc {
            region: r.learned.region.clone(),
            datacenter: r.learned.datacenter.clone(),
            from_node: r.learned.from_node.clone(),
            from_source: r.learned.from_node.as_ref().and_then(|n| {
                r.records
                    .iter()
                    .find(|p| p.node.as_ref() == Some(n))
                    .map(|p| p.source.as_str().to_string())
            }),
        };
        doc.problems.clone_from(&r.problems);
        doc.warnings.clone_from(&r.warnings);
        doc.joins = r.joins.iter().cloned().collect();
        doc.errors = r.errors.iter().cloned().collect();
    }
    doc.warnings.extend(wan);
    Some(doc)
}

/// The `/v1/status` answer.
pub(super) fn status(s: &HealthSnapshot, now: SystemTime) -> Answer {
    let doc = status_doc(s, now);
    Answer::ok(
        JSON,
        serde_json::to_vec(&doc)
            .expect("a StatusDoc serialises: string keys and plain values only"),
    )
}

//! What the fleet view keeps of one node's `/v1/status` answer.
//!
//! The wire types mirror the document the health endpoint serves (see
//! `health::handlers::json::StatusDoc`), read leniently: unknown fields are
//! ignored and optional ones may be missing, so that a fleet of mixed
//! supervisor versions can be polled. Only `node`, `datacenter` and
//! `healthy` are required: without them the answer is not a status
//! document. Everything kept is cut to a bounded size and stripped of
//! control characters ([`clean`]): it comes from a peer and ends on a
//! terminal or a page. Pure: no I/O.

use serde::{Deserialize, Serialize};

/// Longest name-like string kept (node, datacenter, version, role).
const MAX_NAME: usize = 128;
/// Longest free text kept (check reasons, reload errors).
const MAX_TEXT: usize = 240;
/// Most roles kept per node.
const MAX_ROLES: usize = 16;
/// Most failing checks kept per node.
const MAX_FAILING: usize = 16;

/// `s` cut to `max` characters, with control characters (terminal escapes
/// included) replaced by `?`.
pub fn clean(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

#[derive(Debug, Deserialize)]
struct WireDoc {
    node: String,
    #[serde(default)]
    region: String,
    datacenter: String,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    supervisor_version: String,
    healthy: bool,
    #[serde(default)]
    stopping: bool,
    #[serde(default)]
    reload_error: Option<String>,
    #[serde(default)]
    checks: Vec<WireCheck>,
    #[serde(default)]
    agents: Vec<WireAgent>,
}

#[derive(Debug, Deserialize)]
struct WireCheck {
    #[serde(default)]
    name: String,
    #[serde(default)]
    ok: bool,
    #[serde(default)]
    reason: String,
}

#[derive(Debug, Deserialize)]
struct WireAgent {
    #[serde(default)]
    agent: String,
    #[serde(default)]
    server: bool,
    #[serde(default)]
    client: bool,
    #[serde(default)]
    state: String,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    uptime_secs: Option<u64>,
    #[serde(default)]
    restarts: u64,
    #[serde(default)]
    ready: bool,
    #[serde(default)]
    consul: Option<WireConsul>,
    #[serde(default)]
    nomad: Option<WireNomad>,
    #[serde(default)]
    upgrade: Option<WireUpgrade>,
}

#[derive(Debug, Deserialize)]
struct WireUpgrade {
    #[serde(default)]
    installed: Option<String>,
    #[serde(default)]
    wanted: Option<String>,
    #[serde(default)]
    waiting_for: Option<String>,
    #[serde(default)]
    paused: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WireConsul {
    #[serde(default)]
    leader: Option<String>,
    #[serde(default)]
    lan_members: Option<u32>,
    #[serde(default)]
    lan_members_alive: Option<u32>,
    #[serde(default)]
    version: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WireNomad {
    #[serde(default)]
    leader: Option<String>,
    #[serde(default)]
    members: Option<u32>,
    #[serde(default)]
    members_alive: Option<u32>,
    #[serde(default)]
    version: Option<String>,
}

/// One failing check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailingCheck {
    /// Check name (`consul.ready`, ...).
    pub name: String,
    /// Why it fails.
    pub reason: String,
}

/// One agent of a node, as the fleet view shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSummary {
    /// Server mode.
    pub server: bool,
    /// Client mode.
    pub client: bool,
    /// `running`, `backoff`, `failed`, ...
    pub state: String,
    /// Version running (what the agent reports, else what was started).
    pub version: Option<String>,
    /// Readiness.
    pub ready: bool,
    /// Restarts since the supervisor started.
    pub restarts: u64,
    /// Seconds since the current run started.
    pub uptime_secs: Option<u64>,
    /// Raft leader as the agent sees it.
    pub leader: Option<String>,
    /// Gossip members (Consul LAN, Nomad Serf).
    pub members: Option<u32>,
    /// Gossip members alive.
    pub members_alive: Option<u32>,
    /// A pending upgrade: `installed X, wanted Y, waiting for: Z`.
    #[serde(default)]
    pub upgrade: Option<String>,
    /// The rollout of the agent's cluster is paused: why.
    #[serde(default)]
    pub paused: Option<String>,
}

impl AgentSummary {
    /// Running and ready.
    pub fn is_up(&self) -> bool {
        self.state == "running" && self.ready
    }
}

/// One node, as the fleet view shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Node name.
    pub node: String,
    /// Region.
    pub region: String,
    /// Datacenter.
    pub datacenter: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Supervisor version.
    pub supervisor_version: String,
    /// Every check passes.
    pub healthy: bool,
    /// Shutting down.
    pub stopping: bool,
    /// Why the last reload was refused.
    pub reload_error: Option<String>,
    /// Failing checks.
    pub failing: Vec<FailingCheck>,
    /// The Consul agent, when the node runs one.
    pub consul: Option<AgentSummary>,
    /// The Nomad agent, when the node runs one.
    pub nomad: Option<AgentSummary>,
}

/// Parses a `/v1/status` body into what the fleet view keeps.
pub fn parse_status(body: &[u8]) -> Result<NodeStatus, serde_json::Error> {
    let doc: WireDoc = serde_json::from_slice(body)?;
    let agent = |name: &str| {
        doc.agents.iter().find(|a| a.agent == name).map(|a| {
            let (rep_version, leader, members, alive) = match (&a.consul, &a.nomad) {
                (Some(c), _) => (
                    c.version.clone(),
                    c.leader.clone(),
                    c.lan_members,
                    c.lan_members_alive,
                ),
                (None, Some(n)) => (
                    n.version.clone(),
                    n.leader.clone(),
                    n.members,
                    n.members_alive,
                ),
                (None, None) => (None, None, None, None),
            };
            AgentSummary {
                server: a.server,
                client: a.client,
                state: clean(&a.state, 16),
                version: rep_version
                    .or_else(|| a.version.clone())
                    .map(|v| clean(&v, MAX_NAME)),
                ready: a.ready,
                restarts: a.restarts,
                uptime_secs: a.uptime_secs,
                leader: leader
                    .filter(|l| !l.is_empty())
                    .map(|l| clean(&l, MAX_NAME)),
                members,
                members_alive: alive,
                upgrade: a.upgrade.as_ref().map(|u| {
                    let summary = crate::supervise::status::UpgradeStatus {
                        installed: u.installed.clone(),
                        wanted: u.wanted.clone(),
                        waiting_for: u.waiting_for.clone(),
                        paused: None,
                    }
                    .summary();
                    clean(&summary, MAX_TEXT)
                }),
                paused: a
                    .upgrade
                    .as_ref()
                    .and_then(|u| u.paused.as_deref())
                    .map(|p| clean(p, MAX_TEXT)),
            }
        })
    };
    let failing: Vec<FailingCheck> = doc
        .checks
        .iter()
        .filter(|c| !c.ok)
        .take(MAX_FAILING)
        .map(|c| FailingCheck {
            name: clean(&c.name, MAX_NAME),
            reason: clean(&c.reason, MAX_TEXT),
        })
        .collect();
    Ok(NodeStatus {
        node: clean(&doc.node, MAX_NAME),
        region: clean(&doc.region, MAX_NAME),
        datacenter: clean(&doc.datacenter, MAX_NAME),
        roles: doc
            .roles
            .iter()
            .take(MAX_ROLES)
            .map(|r| clean(r, MAX_NAME))
            .collect(),
        supervisor_version: clean(&doc.supervisor_version, MAX_NAME),
        healthy: doc.healthy,
        stopping: doc.stopping,
        reload_error: doc.reload_error.as_deref().map(|e| clean(e, MAX_TEXT)),
        failing,
        consul: agent("consul"),
        nomad: agent("nomad"),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn clean_cuts_and_strips_escapes() {
        assert_eq!(clean("a\x1b[2Jb", 10), "a?[2Jb");
        assert_eq!(clean("abcdef", 3), "abc…");
    }

    #[test]
    fn parses_a_minimal_doc_and_rejects_other_json() {
        let s =
            parse_status(br#"{"node":"n1","datacenter":"dc1","healthy":true,"extra":1}"#).unwrap();
        assert_eq!(s.node, "n1");
        assert!(s.consul.is_none());
        assert!(parse_status(br#"{"hello":"world"}"#).is_err());
        assert!(parse_status(b"[1,2").is_err());
    }

    /// The doc of a node whose Nomad waits at the upgrade gate, paused.
    pub(crate) const PAUSED_DOC: &[u8] = br#"{"node":"ams2-server-03","datacenter":"ams2","healthy":true,
        "agents":[{"agent":"nomad","server":true,"state":"running","version":"1.10.4","ready":true,
        "upgrade":{"installed":"1.10.4","wanted":"1.10.99","waiting_for":"rollout paused: nomad 1.10.99 failed on ams2-server-01",
        "paused":"nomad 1.10.99 failed on ams2-server-01\u001b[2J"}}]}"#;

    #[test]
    fn an_agents_upgrade_and_paused_rollout_are_kept_cleaned() {
        let s = parse_status(PAUSED_DOC).unwrap();
        let n = s.nomad.unwrap();
        assert_eq!(
            n.upgrade.as_deref(),
            Some(
                "installed 1.10.4, wanted 1.10.99, waiting for: rollout paused: nomad 1.10.99 failed on ams2-server-01"
            )
        );
        assert_eq!(
            n.paused.as_deref(),
            Some("nomad 1.10.99 failed on ams2-server-01?[2J")
        );
        // An older supervisor says nothing of upgrades.
        let old = parse_status(
            br#"{"node":"n1","datacenter":"dc1","healthy":true,"agents":[{"agent":"consul","state":"running","ready":true}]}"#,
        )
        .unwrap();
        assert_eq!(old.consul.unwrap().upgrade, None);
    }
}

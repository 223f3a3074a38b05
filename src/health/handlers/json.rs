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

/// The `/v1/status` answer.
pub(super) fn status(s: &HealthSnapshot, now: SystemTime) -> Answer {
    let doc = status_doc(s, now);
    Answer::ok(
        JSON,
        serde_json::to_vec(&doc)
            .expect("a StatusDoc serialises: string keys and plain values only"),
    )
}

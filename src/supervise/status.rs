//! The supervisor's published state: one [`AgentStatus`] per agent inside a
//! [`SupervisorStatus`], sent on a `tokio::sync::watch` channel. The health
//! endpoint only reads this; it never talks to the supervise actors.
//!
//! CONTRACT between supervise (writer) and health (reader): fields may be
//! added, not renamed or removed.

use std::time::SystemTime;

use crate::vocab::Product;

/// Lifecycle state of one agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentState {
    /// Not running and not supposed to be (before start, after stop).
    Stopped,
    /// Spawned, not yet ready.
    Starting,
    /// Running (see `AgentStatus::ready` for readiness).
    Running,
    /// Stop signal sent, waiting for exit.
    Stopping,
    /// Crashed; waiting before the next restart.
    Backoff,
    /// Gave up (restart mode `fail`) or could not be started.
    Failed,
}

/// How an agent's last run ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ExitInfo {
    /// Exit status, when it exited.
    pub code: Option<i32>,
    /// Signal name (e.g. `SIGKILL`), when a signal killed it.
    pub signal: Option<String>,
    /// When it ended.
    pub at: SystemTime,
    /// Whether the supervisor asked for it (a stop, not a crash).
    pub expected: bool,
}

/// Everything the supervisor knows about one agent process.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AgentStatus {
    /// Which agent.
    pub product: Product,
    /// Current state.
    pub state: AgentState,
    /// Why it is in that state, when that needs saying (e.g. "consul not
    /// ready after 60s, started anyway", "restart mode fail: 3 failures").
    pub reason: Option<String>,
    /// Main pid while running.
    pub pid: Option<u32>,
    /// Version installed and running (e.g. `1.20.1`).
    pub version: Option<String>,
    /// Start of the current run.
    pub since: Option<SystemTime>,
    /// Restarts since the supervisor started.
    pub restarts: u64,
    /// How the previous run ended.
    pub last_exit: Option<ExitInfo>,
    /// Ready: sd_notify READY=1 from the agent and/or its own HTTP check.
    pub ready: bool,
    /// The agent's last log lines (oldest first), bounded.
    pub last_lines: Vec<String>,
    /// A pending, waiting or failed upgrade of this agent (`None`: it runs
    /// what the node wants, or nothing was asked yet).
    pub upgrade: Option<UpgradeStatus>,
}

/// Where an agent's rolling upgrade stands ([`crate::upgrade`]): installed
/// X, wanted Y, waiting for Z.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UpgradeStatus {
    /// The version installed and running (`None`: nothing installed yet).
    pub installed: Option<String>,
    /// The version the role file's spec resolves to now (`None`: unknown,
    /// e.g. the mirror could not be reached).
    pub wanted: Option<String>,
    /// What the upgrade waits for, in words (the lock's holder, the
    /// cluster's failure tolerance, servers not yet upgraded, a paused
    /// rollout); `None` while it restarts.
    pub waiting_for: Option<String>,
    /// The rollout of this agent's cluster is paused (a rollback's
    /// record): why, until an operator clears it.
    pub paused: Option<String>,
}

impl UpgradeStatus {
    /// `installed X, wanted Y, waiting for: Z` (the words `check`, the
    /// status page and `fleet` show).
    pub fn summary(&self) -> String {
        let mut s = format!(
            "installed {}, wanted {}",
            self.installed.as_deref().unwrap_or("nothing"),
            self.wanted.as_deref().unwrap_or("unknown"),
        );
        if let Some(w) = &self.waiting_for {
            s.push_str(", waiting for: ");
            s.push_str(w);
        }
        if let Some(p) = &self.paused {
            s.push_str(", rollout paused: ");
            s.push_str(p);
        }
        s
    }
}

impl AgentStatus {
    /// The initial status of an agent the plan runs.
    pub fn new(product: Product) -> Self {
        Self {
            product,
            state: AgentState::Stopped,
            reason: None,
            pid: None,
            version: None,
            since: None,
            restarts: 0,
            last_exit: None,
            ready: false,
            last_lines: Vec::new(),
            upgrade: None,
        }
    }
}

/// The node as the plan in force names it; a reload may change it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeIdentity {
    /// Node name.
    pub node_name: String,
    /// Region.
    pub region: String,
    /// Datacenter.
    pub datacenter: String,
    /// Roles.
    pub roles: Vec<String>,
}

impl NodeIdentity {
    /// The identity `plan` gives the node.
    pub fn of(plan: &crate::plan::Plan) -> Self {
        Self {
            node_name: plan.node_name.clone(),
            region: plan.region.clone(),
            datacenter: plan.datacenter.clone(),
            roles: plan.roles.clone(),
        }
    }
}

/// The whole supervisor's state.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SupervisorStatus {
    /// One entry per agent of the plan, in start order.
    pub agents: Vec<AgentStatus>,
    /// SHA-256 (hex) of the role file content in force.
    pub config_hash: String,
    /// The last reload's error, if the last reload was refused.
    pub reload_error: Option<String>,
    /// Set once shutdown has begun (the node is then not ready).
    pub stopping: bool,
    /// The node as the applied plan names it (`None`: as the plan the
    /// health endpoint was started with).
    pub node: Option<NodeIdentity>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upgrade_says_installed_wanted_and_what_it_waits_for() {
        let mut u = UpgradeStatus {
            installed: Some("1.10.4".into()),
            wanted: Some("1.10.5".into()),
            waiting_for: Some("the upgrade lock of nomad/eu held by ams2-server-01".into()),
            paused: None,
        };
        assert_eq!(
            u.summary(),
            "installed 1.10.4, wanted 1.10.5, waiting for: the upgrade lock of nomad/eu held by ams2-server-01"
        );
        u.waiting_for = None;
        u.wanted = None;
        u.paused = Some("nomad 1.10.5 failed on ams2-server-03".into());
        assert_eq!(
            u.summary(),
            "installed 1.10.4, wanted unknown, rollout paused: nomad 1.10.5 failed on ams2-server-03"
        );
    }
}

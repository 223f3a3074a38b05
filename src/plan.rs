//! The plan: a pure value computed from a validated [`NodeRole`]. Which agents
//! run, which versions, their argv, config dirs, users, start order, stop
//! signals and timeouts, restart policies. Every side effect reads the plan;
//! building one touches nothing on the system.
//!
//! OWNER NOTE (skeleton): the role/plan/render work fills in `Plan::from_role`
//! and may add fields; the fields below are the contract other modules use.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::role::NodeRole;
use crate::version::VersionSpec;

/// One of the two HashiCorp products we supervise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Product {
    /// HashiCorp Consul.
    Consul,
    /// HashiCorp Nomad.
    Nomad,
}

impl Product {
    /// Lowercase name, as in release file names and binaries.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Consul => "consul",
            Self::Nomad => "nomad",
        }
    }
}

impl std::fmt::Display for Product {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the restart policy does once `attempts` failures happened within
/// `interval` (the shape of Nomad's `restart` block).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RestartMode {
    /// Wait (with capped exponential backoff) and keep trying, forever.
    Delay,
    /// Mark the agent failed and stop trying.
    Fail,
}

/// Restart policy of one agent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RestartPolicy {
    /// Restarts allowed within `interval` before `mode` applies.
    pub attempts: u32,
    /// Window in which `attempts` are counted.
    pub interval: Duration,
    /// Delay before a restart; may be zero.
    pub delay: Duration,
    /// What happens once the attempts are used up.
    pub mode: RestartMode,
    /// Cap of the exponential backoff.
    pub max_delay: Duration,
    /// Uptime after which the failure count is reset.
    pub stable_after: Duration,
}

/// Everything needed to run one agent.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AgentPlan {
    /// Which product.
    pub product: Product,
    /// Version the operator asked for.
    #[serde(serialize_with = "ser_display")]
    pub version: VersionSpec,
    /// Whether this agent runs in server mode.
    pub server: bool,
    /// Whether this agent runs in client mode (Nomad `client.enabled`).
    pub client: bool,
    /// Unix user the agent runs as (`consul`, `nomad`, or `root`).
    pub user: String,
    /// Path of the binary (`<state>/releases/<product>/current/<product>`).
    pub binary: PathBuf,
    /// Arguments after the binary (`agent -config-dir=DIR`).
    pub args: Vec<String>,
    /// Directory holding the rendered config files.
    pub config_dir: PathBuf,
    /// The agent's data dir.
    pub data_dir: PathBuf,
    /// Signal that stops the agent the way its role needs.
    #[serde(serialize_with = "ser_signal")]
    pub stop_signal: Signal,
    /// Grace before SIGKILL.
    pub stop_timeout: Duration,
    /// Restart policy.
    pub restart: RestartPolicy,
    /// Address of the agent's local HTTP API (for checks and joins).
    pub http_addr: SocketAddr,
}

/// Release settings shared by both agents.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ReleasePlan {
    /// Mirror base URL (`https://`, `http://`, `file://`) or a local directory.
    pub mirror: String,
    /// Whether HashiCorp's embedded release key is trusted.
    pub trust_hashicorp_key: bool,
    /// Extra trusted OpenPGP public key files (armored or binary).
    pub extra_trusted_keys: Vec<PathBuf>,
    /// Where releases are installed (`<state>/releases`).
    pub releases_dir: PathBuf,
    /// How many installed versions to keep per product (current + previous).
    pub keep_versions: usize,
    /// Upper bound on a download's size.
    pub max_download_bytes: u64,
}

/// The whole plan for one node.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Plan {
    /// Node name.
    pub node_name: String,
    /// Nomad region.
    pub region: String,
    /// Datacenter.
    pub datacenter: String,
    /// Roles, normalised and sorted.
    pub roles: Vec<String>,
    /// Agents in start order (Consul before Nomad); stop order is the reverse.
    pub agents: Vec<AgentPlan>,
    /// Release settings.
    pub release: ReleasePlan,
    /// Health endpoint listen address.
    pub health_listen: SocketAddr,
    /// State dir (`/var/lib/hashi-supervisor`).
    pub state_dir: PathBuf,
    /// Config dir (`/etc/hashi-supervisor`).
    pub config_dir: PathBuf,
}

impl Plan {
    /// Computes the plan of a validated role. Pure: reads nothing, writes
    /// nothing.
    pub fn from_role(role: &NodeRole) -> Plan {
        let _ = role;
        unimplemented!("skeleton: filled in by the role/plan/render work")
    }

    /// The agent of a product, if the plan runs it.
    pub fn agent(&self, product: Product) -> Option<&AgentPlan> {
        self.agents.iter().find(|a| a.product == product)
    }
}

fn ser_display<T: std::fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn ser_signal<S: serde::Serializer>(v: &Signal, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.as_str())
}

//! Shared vocabulary (stage 0 of the layering in `lib.rs`): the words every
//! stage of the pipeline uses, from the role file to the health endpoint.
//! Which product, its restart policy, the agents' default users, and what a
//! release install did as `/metrics` counts it.
//!
//! Owns plain data types and constants only. It must not import any other
//! module of this crate, and holds no behaviour beyond naming and printing
//! its values: decisions about them belong to the stage that makes them
//! (`role` validates a restart policy, `plan` picks a user, `release` says
//! which of its errors is a fetch or a verification failure).

use std::time::Duration;

/// Unix user of Consul (unless the role file's `[consul] user` names another).
pub const CONSUL_USER: &str = "consul";
/// Unix user of a server-only Nomad (unless `[nomad] user` names another).
pub const NOMAD_USER: &str = "nomad";
/// Unix user of a Nomad client: it runs task drivers, which need root.
pub const ROOT_USER: &str = "root";

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

/// What one release install (`release::ensure_installed`) did, in the terms
/// the `/metrics` counters use. `release` builds it from its own result, so
/// the counters need no release types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseOutcome {
    /// Installed and verified; `downloaded` is false when the version was
    /// already there (nothing fetched).
    Installed {
        /// Whether the zip was downloaded.
        downloaded: bool,
    },
    /// Failed while reaching the mirror or getting what is needed from it.
    FetchFailed,
    /// Failed while checking what was got (signature, sums, archive, binary).
    VerifyFailed,
    /// Failed for a local reason (the trust set, I/O, a bug): counted as
    /// neither a fetch nor a verification.
    LocalFailure,
}

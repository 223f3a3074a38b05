//! Supervision of the agents: one actor per agent (spawn, readiness, restart
//! policy, graceful stop, reload), the daemon that orders them, and reaping.
//!
//! * [`machine`]: the pure state machine; [`policy`]: restart bookkeeping.
//! * [`actor`]: the task owning one child; [`AgentHandle`] sends [`Control`]s.
//! * [`spawn`]: process creation, pidfiles, `/proc` identity.
//! * [`notify`]: the agents' `NOTIFY_SOCKET` and our own sd_notify.
//! * [`check`]: pluggable readiness checks; the default one reads the
//!   agent's observer (`agent::observe`), which does the asking.
//! * [`reap`]: adopted orphans as PID 1 or subreaper.
//! * [`daemon`]: [`run`], start order, shutdown order, SIGHUP reload, and
//!   the re-plan when discovery's peers change (told through
//!   [`RunOptions::discovery`]; `catalog::discovery` itself is never
//!   imported here).
//! * [`runtime`]: the async runtime of the binary (and of the benchmark).
//! * [`trim`]: gives back the start-up working set once the agents run.
//!
//! This module must not read the role file, download, or render by itself:
//! those steps are injected through [`Preparer`] so tests can fake them.

pub mod actor;
pub mod check;
pub mod daemon;
pub mod machine;
pub mod notify;
pub mod policy;
pub mod reap;
pub mod runtime;
pub mod spawn;
pub mod status;
pub mod trim;

pub use actor::{AgentHandle, Control};
pub use daemon::{DaemonEvent, Preparer, RunOptions, run};
pub use status::{AgentState, AgentStatus, ExitInfo, NodeIdentity, SupervisorStatus};

use crate::vocab::Product;

/// Why supervision failed.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// An agent's actor ended while still needed.
    #[error("failed to reach the {0} actor")]
    ActorGone(Product),
    /// Another live supervisor holds the state dir's lock.
    #[error("failed to lock {path}: another supervisor runs on this state dir")]
    AlreadyRunning {
        /// The lock file.
        path: std::path::PathBuf,
    },
    /// The state dir's lock file could not be opened or locked.
    #[error("failed to lock {path}")]
    Lock {
        /// The lock file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The run directory could not be created.
    #[error("failed to create run directory {path}")]
    RunDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

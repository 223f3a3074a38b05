//! Supervision of the agents.
//!
//! SKELETON: replaced by the supervise work.

pub mod status;

pub use status::{AgentState, AgentStatus, ExitInfo, SupervisorStatus};

/// Why supervision failed.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// Placeholder.
    #[error("supervision is not built yet")]
    NotBuilt,
}

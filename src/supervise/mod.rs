//! Supervision of the agents.
//!
//! SKELETON: replaced by the supervise work.

/// Why supervision failed.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// Placeholder.
    #[error("supervision is not built yet")]
    NotBuilt,
}

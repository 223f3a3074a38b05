//! The health endpoint.
//!
//! SKELETON: replaced by the health work.

/// Why the health endpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// Placeholder.
    #[error("the health endpoint is not built yet")]
    NotBuilt,
}

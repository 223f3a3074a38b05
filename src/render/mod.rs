//! Rendering of the agents' config files from a plan.
//!
//! SKELETON: replaced by the role/plan/render work.

/// Why rendering or writing failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// Placeholder.
    #[error("rendering is not built yet")]
    NotBuilt,
}

impl RenderError {
    /// Exit code of this error.
    pub fn exit_code(&self) -> u8 {
        crate::error::EXIT_FAILURE
    }
}

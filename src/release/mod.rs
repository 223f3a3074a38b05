//! Releases: resolve, download, verify, install.
//!
//! SKELETON: replaced by the release work.

/// Why a release could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// Placeholder.
    #[error("release handling is not built yet")]
    NotBuilt,
}

impl ReleaseError {
    /// Exit code of this error.
    pub fn exit_code(&self) -> u8 {
        crate::error::EXIT_UNAVAILABLE
    }
}

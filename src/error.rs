//! The top-level error and its exit codes (STYLE.md): 0 ok, 64 usage,
//! 78 invalid role file or config, 69 a release or mirror unavailable or
//! failing verification, 70 internal, 1 other runtime failure.

use crate::{health, release, render, role, supervise};

/// Exit code: command-line usage error.
pub const EXIT_USAGE: u8 = 64;
/// Exit code: a release or mirror is unavailable or failed verification.
pub const EXIT_UNAVAILABLE: u8 = 69;
/// Exit code: internal error.
pub const EXIT_INTERNAL: u8 = 70;
/// Exit code: invalid role file or config.
pub const EXIT_CONFIG: u8 = 78;
/// Exit code: any other runtime failure.
pub const EXIT_FAILURE: u8 = 1;

/// Every error a command can end with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad command-line usage.
    #[error("{0}")]
    Usage(String),
    /// The role file is invalid.
    #[error(transparent)]
    Role(#[from] role::RoleError),
    /// Rendering or writing the agents' configs failed.
    #[error(transparent)]
    Render(#[from] render::RenderError),
    /// Fetching, verifying or installing a release failed.
    #[error(transparent)]
    Release(#[from] release::ReleaseError),
    /// Supervising the agents failed.
    #[error(transparent)]
    Supervise(#[from] supervise::SuperviseError),
    /// The health endpoint failed.
    #[error(transparent)]
    Health(#[from] health::HealthError),
    /// A local I/O operation failed.
    #[error("failed to {what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A bug: an invariant did not hold.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => EXIT_USAGE,
            Self::Role(_) => EXIT_CONFIG,
            Self::Render(e) => e.exit_code(),
            Self::Release(e) => e.exit_code(),
            Self::Health(e) => e.exit_code(),
            Self::Supervise(_) | Self::Io { .. } => EXIT_FAILURE,
            Self::Internal(_) => EXIT_INTERNAL,
        }
    }

    /// What the operator can do next, when this error has an obvious next
    /// step (printed by `main` after the error and its causes).
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Release(e) => e.hint(),
            _ => None,
        }
    }

    /// Builds an [`Error::Io`].
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

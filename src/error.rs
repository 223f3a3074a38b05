//! The top-level error, and the one place that maps every error to its exit
//! code (STYLE.md): 0 ok, 64 usage, 78 invalid role file or config, 69 a
//! release or mirror unavailable or failing verification, 70 internal, 1
//! other runtime failure. The numbers live in [`crate::exit`].
//!
//! This module is in the last stage of the layering (`lib.rs`): it wraps
//! every stage's error, so no stage below `commands` may import it; a stage
//! returns its own error type and `commands` converts it with `?`.

use crate::health::HealthError;
use crate::release::ReleaseError;
use crate::render::RenderError;
use crate::security::join_client::JoinError;
use crate::{health, release, render, role, supervise};

// The exit codes at their old path, until every import names `crate::exit`
// (the lead rewrites them after the issue-16 merge).
pub use crate::exit::{EXIT_CONFIG, EXIT_FAILURE, EXIT_INTERNAL, EXIT_UNAVAILABLE, EXIT_USAGE};

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
    /// Polling the fleet failed before any node was asked.
    #[error(transparent)]
    Fleet(#[from] crate::catalog::fleet::FleetError),
    /// Joining the cluster (or renewing the certificate) failed.
    #[error(transparent)]
    Join(#[from] crate::security::join_client::JoinError),
    /// The join endpoint of a CA holder could not start.
    #[error(transparent)]
    JoinServer(#[from] crate::security::join_server::JoinServerError),
    /// The cluster's or the node's security material could not be read or
    /// written (`supervisor cluster`).
    #[error(transparent)]
    Security(#[from] crate::security::store::StoreError),
    /// A join token could not be made, listed or revoked.
    #[error(transparent)]
    Token(#[from] crate::security::token::TokenError),
    /// The role cannot be secured as asked (`cluster init` on a `dev` or
    /// `plaintext` role): a role file problem.
    #[error("{0}")]
    Unsecurable(String),
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
    /// The process exit code for this error: the whole mapping from the
    /// stages' errors to exit codes is here and in the functions below.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => EXIT_USAGE,
            Self::Role(_) => EXIT_CONFIG,
            Self::Render(e) => render_exit_code(e),
            Self::Release(e) => release_exit_code(e),
            Self::Health(e) => health_exit_code(e),
            Self::Supervise(_) | Self::Io { .. } => EXIT_FAILURE,
            Self::Internal(_) => EXIT_INTERNAL,
            Self::Fleet(e) if e.is_usage() => EXIT_USAGE,
            Self::Fleet(_) => EXIT_FAILURE,
            Self::Join(e) => join_exit_code(e),
            Self::JoinServer(_) => EXIT_FAILURE,
            Self::Security(_) => EXIT_FAILURE,
            Self::Token(e) => token_exit_code(e),
            Self::Unsecurable(_) => EXIT_CONFIG,
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

/// Render: pass-through values and unreachable directories come from the
/// role file (78); file errors are runtime failures (1); the rest are bugs.
fn render_exit_code(e: &RenderError) -> u8 {
    match e {
        RenderError::Extra { .. }
        | RenderError::ExtraNumber { .. }
        | RenderError::Unreachable { .. } => EXIT_CONFIG,
        RenderError::Encode { .. } | RenderError::Relocate { .. } => EXIT_INTERNAL,
        RenderError::Io { .. } => EXIT_FAILURE,
    }
}

/// Release: 69 for a release or mirror that is unavailable or cannot be
/// verified, 1 for a local failure (I/O, the trust set, a binary that does
/// not run here, a mirror setting that is not one), 70 for a bug.
fn release_exit_code(e: &ReleaseError) -> u8 {
    match e {
        ReleaseError::Io { .. }
        | ReleaseError::NoPrevious { .. }
        | ReleaseError::InvalidMirror { .. }
        | ReleaseError::Keys(_)
        | ReleaseError::RunBinary { .. } => EXIT_FAILURE,
        ReleaseError::Internal(_) => EXIT_INTERNAL,
        ReleaseError::Fetch { .. }
        | ReleaseError::NotFound { .. }
        | ReleaseError::TooLarge { .. }
        | ReleaseError::Index { .. }
        | ReleaseError::NoMatchingVersion { .. }
        | ReleaseError::NoBuild { .. }
        | ReleaseError::UnsupportedArch(_)
        | ReleaseError::MissingSignature { .. }
        | ReleaseError::Verify { .. }
        | ReleaseError::NotInSums { .. }
        | ReleaseError::HashMismatch { .. }
        | ReleaseError::BadArchive { .. }
        | ReleaseError::VersionMismatch { .. } => EXIT_UNAVAILABLE,
    }
}

/// Join: 77 when the cluster refused the token (or no CA holder knows it)
/// or the endpoint is not
/// the cluster's (its CA is not the pinned one), 70 when the node's own
/// key or request could not be made, 78 for a token that is not one,
/// else 1 (nothing reachable, a rejected request, a write failure).
fn join_exit_code(e: &JoinError) -> u8 {
    match e {
        JoinError::Refused { .. }
        | JoinError::PinMismatch { .. }
        | JoinError::UnknownToken { .. } => crate::exit::EXIT_NOPERM,
        JoinError::Key(_) => EXIT_INTERNAL,
        JoinError::BadToken(_) => EXIT_CONFIG,
        JoinError::Rejected { .. }
        | JoinError::NoCandidates
        | JoinError::Unreachable { .. }
        | JoinError::BadAnswer { .. }
        | JoinError::Material { .. }
        | JoinError::Write(_)
        | JoinError::Roles(_) => EXIT_FAILURE,
    }
}

/// Tokens: a bad lifetime or description is a usage error (64); the rest
/// are runtime failures (1).
fn token_exit_code(e: &crate::security::token::TokenError) -> u8 {
    use crate::security::token::TokenError;
    match e {
        TokenError::Ttl | TokenError::Description => EXIT_USAGE,
        _ => EXIT_FAILURE,
    }
}

/// Health: 69 when a node's endpoint cannot be reached, else 1.
fn health_exit_code(e: &HealthError) -> u8 {
    match e {
        HealthError::Unreachable { .. } => EXIT_UNAVAILABLE,
        HealthError::Bind { .. } | HealthError::LocalAddr(_) | HealthError::BadStatus { .. } => {
            EXIT_FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refused archive (a zip bomb, an oversized or surplus entry: see
    /// `release::install`'s tests, which check those end as `BadArchive`)
    /// ends the command with 69, as a release that fails verification.
    #[test]
    fn a_refused_archive_exits_69() {
        let e = ReleaseError::BadArchive {
            path: "/s/releases/consul.zip".into(),
            reason: "failed to decompress `consul`".into(),
        };
        assert_eq!(Error::from(e).exit_code(), EXIT_UNAVAILABLE);
    }

    #[test]
    fn local_release_failures_exit_1_and_bugs_70() {
        let e = ReleaseError::NoPrevious {
            product: crate::vocab::Product::Consul,
        };
        assert_eq!(Error::from(e).exit_code(), EXIT_FAILURE);
        let e = ReleaseError::Internal("x".into());
        assert_eq!(Error::from(e).exit_code(), EXIT_INTERNAL);
    }
}

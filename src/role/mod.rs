//! The role file: TOML → `RawRole` (serde mirror) → validated [`NodeRole`].
//!
//! SKELETON: replaced by the role/plan/render work.

use std::path::Path;

/// A validated role file.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRole {}

/// Why a role file was refused.
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    /// Placeholder.
    #[error("role file support is not built yet")]
    NotBuilt,
}

/// Loads and validates the role file at `path` (a missing file is allowed
/// when `must_exist` is false), with `roles_override` from `--role`.
pub fn load(
    path: &Path,
    must_exist: bool,
    roles_override: &[String],
) -> Result<NodeRole, RoleError> {
    let _ = (path, must_exist, roles_override);
    Err(RoleError::NotBuilt)
}

//! `supervisor versions`. SKELETON: replaced by the release work.

use crate::cli::{GlobalArgs, VersionsArgs};
use crate::error::Error;

/// Runs `supervisor versions`.
pub async fn run(global: &GlobalArgs, args: &VersionsArgs) -> Result<u8, Error> {
    let _ = (global, args);
    Err(Error::Internal("`versions` is not built yet".into()))
}

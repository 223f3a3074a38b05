//! `supervisor status`. SKELETON: replaced by the health work.

use crate::cli::{GlobalArgs, StatusArgs};
use crate::error::Error;

/// Runs `supervisor status`.
pub async fn run(global: &GlobalArgs, args: &StatusArgs) -> Result<u8, Error> {
    let _ = (global, args);
    Err(Error::Internal("`status` is not built yet".into()))
}

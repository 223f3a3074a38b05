//! `supervisor check`. SKELETON: replaced by the role/plan/render work.

use crate::cli::{CheckArgs, GlobalArgs};
use crate::error::Error;

/// Runs `supervisor check`.
pub fn run(global: &GlobalArgs, args: &CheckArgs) -> Result<u8, Error> {
    let _ = (global, args);
    Err(Error::Internal("`check` is not built yet".into()))
}

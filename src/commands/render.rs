//! `supervisor render`. SKELETON: replaced by the role/plan/render work.

use crate::cli::{GlobalArgs, RenderArgs};
use crate::error::Error;

/// Runs `supervisor render`.
pub fn run(global: &GlobalArgs, args: &RenderArgs) -> Result<u8, Error> {
    let _ = (global, args);
    Err(Error::Internal("`render` is not built yet".into()))
}

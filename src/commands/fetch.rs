//! `supervisor fetch`. SKELETON: replaced by the release work.

use crate::cli::GlobalArgs;
use crate::error::Error;

/// Runs `supervisor fetch`.
pub async fn run(global: &GlobalArgs) -> Result<u8, Error> {
    let _ = global;
    Err(Error::Internal("`fetch` is not built yet".into()))
}

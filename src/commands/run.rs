//! `supervisor run`. SKELETON: replaced by the supervise work.

use crate::cli::GlobalArgs;
use crate::error::Error;

/// Runs the daemon.
pub async fn run(global: &GlobalArgs) -> Result<u8, Error> {
    let _ = global;
    Err(Error::Internal("`run` is not built yet".into()))
}

//! `supervisor cluster init|token`: the cluster CA, gossip keys and join
//! tokens (`security`).

use crate::cli::{ClusterArgs, GlobalArgs};
use crate::error::Error;

/// Runs `supervisor cluster ...`.
pub async fn run(_global: &GlobalArgs, _args: &ClusterArgs) -> Result<u8, Error> {
    Err(Error::Usage(
        "supervisor cluster: not built yet (seam)".to_string(),
    ))
}

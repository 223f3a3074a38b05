//! `supervisor fetch`: resolve, download, verify and install the releases the
//! plan needs (consul and nomad concurrently); start nothing. For image
//! baking and package post-install.

use std::io::Write;

use crate::cli::GlobalArgs;
use crate::error::Error;
use crate::release;

/// Runs `supervisor fetch`.
pub async fn run(global: &GlobalArgs) -> Result<u8, Error> {
    let plan = super::load(global)?.plan;
    let installed = release::fetch_plan(&plan).await?;
    let mut out = std::io::stdout().lock();
    for i in installed {
        writeln!(
            out,
            "{} {} {} sha256:{}{}",
            i.product,
            i.version,
            i.binary.display(),
            i.sha256,
            if i.downloaded {
                ""
            } else {
                " (already installed)"
            }
        )
        .map_err(|e| Error::io("write to stdout", e))?;
    }
    Ok(0)
}

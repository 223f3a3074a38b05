//! `supervisor versions PRODUCT [--mirror URL]`: lists what a release mirror
//! has, newest first, marking pre-releases and enterprise builds. Without
//! `--mirror` the role file's mirror is used (HashiCorp's when the role file
//! does not exist).

use std::io::Write;

use crate::cli::{GlobalArgs, VersionsArgs};
use crate::error::Error;
use crate::paths::DEFAULT_MIRROR;
use crate::release::{self, FetchOptions};
use crate::vocab::Product;

/// Runs `supervisor versions`.
pub async fn run(global: &GlobalArgs, args: &VersionsArgs) -> Result<u8, Error> {
    let product = match args.product.as_str() {
        "consul" => Product::Consul,
        "nomad" => Product::Nomad,
        other => {
            return Err(Error::Usage(format!(
                "unknown product `{other}`: expected `consul` or `nomad`"
            )));
        }
    };
    let mirror = match &args.mirror {
        Some(m) => m.clone(),
        None => mirror_from_role(global)?,
    };
    let versions = release::list_versions(&mirror, product, &FetchOptions::default()).await?;
    let mut out = std::io::stdout().lock();
    for v in versions {
        let mark = match (v.prerelease, v.enterprise) {
            (true, _) => "  (prerelease)",
            (false, true) => "  (enterprise)",
            (false, false) => "",
        };
        writeln!(out, "{}{mark}", v.version).map_err(|e| Error::io("write to stdout", e))?;
    }
    Ok(0)
}

/// The mirror of the role file; HashiCorp's when no role file exists at the
/// default path.
fn mirror_from_role(global: &GlobalArgs) -> Result<String, Error> {
    let (path, explicit) = global.role_file();
    if !explicit && !path.exists() {
        return Ok(DEFAULT_MIRROR.to_string());
    }
    Ok(super::load(global)?.plan.release.mirror)
}

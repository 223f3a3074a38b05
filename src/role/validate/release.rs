//! `[release]`: the mirror, trusted key files (parsed as OpenPGP keys here,
//! exactly as the release verifier will, so a wrong key is refused before
//! any fetch), versions kept and the download limit.

use std::path::Path;

use super::{Checked, Context, Findings, sizes};
use crate::paths::DEFAULT_MIRROR;
use crate::role::ReleaseRole;
use crate::role::host::Host;
use crate::role::limits;
use crate::role::raw::RawRelease;

/// Default installed versions kept per product (current + previous).
const DEFAULT_KEEP_VERSIONS: u64 = 2;
/// Default download cap: 1 GiB (Consul and Nomad zips are ~50-150 MB).
const DEFAULT_MAX_DOWNLOAD_BYTES: u64 = 1 << 30;

/// The release settings, in the order above.
pub(super) fn check(cx: Context<'_>, rr: &RawRelease) -> Checked<ReleaseRole> {
    let mut found = Findings::default();
    let mirror = match &rr.mirror {
        None => DEFAULT_MIRROR.to_string(),
        Some(s) => {
            let m = s.get_ref().trim_end_matches('/').to_string();
            let ok = ["https://", "http://", "file://"]
                .iter()
                .any(|p| m.len() > p.len() && m.starts_with(p))
                || Path::new(&m).is_absolute();
            if !ok {
                found.span(
                    s,
                    "`mirror` must be an https://, http:// or file:// URL, or an absolute directory",
                );
            }
            m
        }
    };
    let mut trusted_key_files = Vec::new();
    for s in rr.trusted_key_files.iter().flat_map(|l| l.get_ref()) {
        let p = cx.resolve_path(s.get_ref());
        if let Some(why) = check_trusted_key_file(cx.host, &p) {
            found.span(s, why);
        }
        trusted_key_files.push(p);
    }
    let keep_versions = sizes::number(
        &mut found,
        &rr.keep_versions,
        "keep_versions",
        &limits::KEEP_VERSIONS,
        DEFAULT_KEEP_VERSIONS,
    );
    let max_download_bytes = sizes::number(
        &mut found,
        &rr.max_download_bytes,
        "max_download_bytes",
        &limits::MAX_DOWNLOAD_BYTES,
        DEFAULT_MAX_DOWNLOAD_BYTES,
    );
    let release = ReleaseRole {
        mirror,
        trust_hashicorp_key: rr.trust_hashicorp_key.unwrap_or(true),
        trusted_key_files,
        // In range (at most 100): the conversion cannot fail.
        keep_versions: usize::try_from(keep_versions).unwrap_or(usize::MAX),
        max_download_bytes,
    };
    (release, found)
}

/// A trusted key file that cannot be read or holds no OpenPGP public key,
/// parsed exactly as the release verifier will.
fn check_trusted_key_file(host: &dyn Host, path: &Path) -> Option<String> {
    let what = "`release.trusted_key_files` entry";
    let bytes = match host.read_file(path, limits::KEY_FILE_BYTES) {
        Ok(b) => b,
        Err(e) => return Some(format!("failed to read {what} {}: {e}", path.display())),
    };
    // rPGP's own message quotes raw bytes: not for an operator.
    crate::openpgp::parse_public_keys(&bytes).err().map(|_| {
        format!(
            "{what} {} is not an OpenPGP public key (armored or binary)",
            path.display()
        )
    })
}

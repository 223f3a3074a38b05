//! Files of secrets an agent reads: the gossip key (read and checked here:
//! base64 of 16, 24 or 32 bytes) and TLS certificate, key and CA files
//! (checked readable within their size limit). A key's value is held in
//! [`Secret`] from the moment it is read.

use super::{Context, Findings};
use crate::role::limits;
use crate::role::raw::SpStr;
use crate::role::{GossipKey, Secret, TlsFiles};

/// Decoded lengths Consul and Nomad accept for a gossip key (AES-128/192/256).
const GOSSIP_KEY_LENGTHS: [usize; 3] = [16, 24, 32];

/// `<product>.encrypt_key_file`, read and checked.
pub(super) fn gossip_key(
    found: &mut Findings,
    cx: Context<'_>,
    v: &Option<SpStr>,
    product: &str,
) -> Option<GossipKey> {
    let s = v.as_ref()?;
    let file = cx.resolve_path(s.get_ref());
    let text = cx
        .host
        .read_file(&file, limits::GOSSIP_KEY_FILE_BYTES)
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    match text {
        Ok(text) => {
            let key = text.trim().to_string();
            if !is_gossip_key(&key) {
                found.span(
                    s,
                    format!(
                        "gossip key file {} does not hold a base64 key of 16, 24 or 32 bytes (make one with `supervisor keygen`)",
                        file.display()
                    ),
                );
                return None;
            }
            Some(GossipKey {
                file,
                key: Secret::new(key),
            })
        }
        Err(e) => {
            found.span(
                s,
                format!(
                    "failed to read `{product}.encrypt_key_file` {}: {e}",
                    file.display()
                ),
            );
            None
        }
    }
}

/// `[<table>]`'s `ca_file`, `cert_file` and `key_file`: all or none.
pub(super) fn files(
    found: &mut Findings,
    cx: Context<'_>,
    [ca, cert, key]: [&Option<SpStr>; 3],
    table: &str,
) -> Option<TlsFiles> {
    let given: Vec<&SpStr> = [ca, cert, key].into_iter().flatten().collect();
    if given.is_empty() {
        return None;
    }
    if given.len() != 3 {
        found.span(
            given[0],
            format!("`[{table}]` needs `ca_file`, `cert_file` and `key_file` together"),
        );
        return None;
    }
    let mut files = Vec::new();
    for (s, key) in given.into_iter().zip(["ca_file", "cert_file", "key_file"]) {
        let p = cx.resolve_path(s.get_ref());
        if let Err(e) = cx.host.check_file(&p, limits::TLS_FILE_BYTES) {
            found.span(
                s,
                format!("failed to read `{table}.{key}` {}: {e}", p.display()),
            );
        }
        files.push(p);
    }
    let key_file = files.pop()?;
    let cert_file = files.pop()?;
    let ca_file = files.pop()?;
    Some(TlsFiles {
        ca_file,
        cert_file,
        key_file,
    })
}

/// Whether `key` is base64 (standard alphabet, padded) of 16, 24 or 32 bytes.
pub(super) fn is_gossip_key(key: &str) -> bool {
    let body = key.trim_end_matches('=');
    let pad = key.len() - body.len();
    let ok_chars = body
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    ok_chars
        && pad <= 2
        && key.len() % 4 == 0
        && GOSSIP_KEY_LENGTHS.contains(&(key.len() / 4 * 3 - pad))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gossip_keys_of_accepted_lengths_pass() {
        assert!(is_gossip_key(
            "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s="
        ));
        assert!(is_gossip_key("AAAAAAAAAAAAAAAAAAAAAA=="));
        assert!(!is_gossip_key("not a key"));
        assert!(!is_gossip_key("AAAA"));
    }
}

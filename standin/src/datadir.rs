//! What the real agents write into their `data_dir` as they start, so a
//! supervisor that hands an agent a data dir it cannot write sees the same
//! failed start as with the real agent (exit 1, one `==> Error starting
//! agent` line on stderr).
//!
//! * Consul (`agent/agent.go` `setupNodeID`): `<data_dir>/node-id`, a UUID
//!   written once (mode 0600, its dir created 0755 with `lib.EnsurePath`)
//!   and read back on every later start; a file that holds no UUID is an
//!   error.
//! * Nomad (`command/agent/agent.go`): a server keeps Raft and Serf under
//!   `<data_dir>/server`, a client its state under `<data_dir>/client` and
//!   its allocations under `<data_dir>/alloc`; each is created at start.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use crate::Product;
use crate::config::AgentConfig;

/// Name of Consul's node id file inside its data dir.
pub const NODE_ID_FILE: &str = "node-id";

/// Creates what the agent keeps in its data dir; the error is the line the
/// agent prints before exiting 1.
pub fn prepare(product: Product, cfg: &AgentConfig) -> Result<(), String> {
    let dir = Path::new(&cfg.data_dir);
    match product {
        Product::Consul => node_id(dir).map(|_| ()),
        Product::Nomad => {
            let mut subdirs = Vec::new();
            if cfg.server {
                subdirs.push(("server", 0o700));
            }
            if cfg.client {
                subdirs.push(("client", 0o700));
                subdirs.push(("alloc", 0o711));
            }
            for (name, mode) in subdirs {
                let path = dir.join(name);
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(mode)
                    .create(&path)
                    .map_err(|e| format!("mkdir {}: {}", path.display(), os_text(&e)))?;
                // Nomad fails at its first write into the dir, not at mkdir
                // of a dir that already exists (say, owned by another user).
                probe_writable(&path)?;
            }
            Ok(())
        }
    }
}

/// Reads `<dir>/node-id`, or creates it with a fresh UUID.
fn node_id(dir: &Path) -> Result<String, String> {
    let path = dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim().to_string();
            if is_uuid(&id) {
                Ok(id)
            } else {
                Err(format!(
                    "failed to setup node ID: node ID {id:?} in {} is invalid",
                    path.display()
                ))
            }
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(|e| {
                    format!(
                        "failed to setup node ID: mkdir {}: {}",
                        dir.display(),
                        os_text(&e)
                    )
                })?;
            let id = new_uuid().map_err(|e| format!("failed to setup node ID: {e}"))?;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .and_then(|mut f| f.write_all(id.as_bytes()))
                .map_err(|e| {
                    format!(
                        "failed to setup node ID: open {}: {}",
                        path.display(),
                        os_text(&e)
                    )
                })?;
            Ok(id)
        }
        Err(e) => Err(format!(
            "failed to setup node ID: open {}: {}",
            path.display(),
            os_text(&e)
        )),
    }
}

/// Creates and removes a file in `dir`.
fn probe_writable(dir: &Path) -> Result<(), String> {
    let probe = dir.join(format!(".standin-probe-{}", std::process::id()));
    std::fs::File::create(&probe)
        .map_err(|e| format!("open {}: {}", probe.display(), os_text(&e)))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// A random (version 4) UUID in the lowercase form Consul writes.
fn new_uuid() -> std::io::Result<String> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

/// Whether `s` has the 8-4-4-4-12 hex shape of a UUID.
fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Go prints `permission denied`, not Rust's `Permission denied (os error 13)`.
fn os_text(e: &std::io::Error) -> String {
    match e.kind() {
        ErrorKind::PermissionDenied => "permission denied".to_string(),
        ErrorKind::NotFound => "no such file or directory".to_string(),
        ErrorKind::NotADirectory => "not a directory".to_string(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_uuids_have_the_uuid_shape_and_differ() {
        let a = new_uuid().unwrap();
        assert!(is_uuid(&a), "{a}");
        assert_ne!(a, new_uuid().unwrap());
        assert!(!is_uuid("not-a-uuid"));
    }
}

//! Shared test support: temp roots, the stand-in agent, the signed mirror,
//! network namespaces.
#![allow(dead_code)]

pub mod mirror;
pub mod netns;
pub mod standin;

use std::path::PathBuf;

/// Path of the `supervisor` binary under test.
pub fn supervisor_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_supervisor"))
}

/// The workspace's target directory for the current profile (where the
/// stand-in binary is built by `cargo build --workspace`).
pub fn target_profile_dir() -> PathBuf {
    let mut p = supervisor_bin();
    p.pop();
    p
}

/// `../shared` beside the checkout (read-only data: real HashiCorp key and
/// signed files, agent API samples).
pub fn shared_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared")
}

/// Every path of the health endpoint that answers a GET: the ones checked
/// for leaked secrets.
pub const HEALTH_PATHS: &[&str] = &[
    "/",
    "/ready?verbose",
    "/health",
    "/v1/status",
    "/metrics",
    "/live",
];

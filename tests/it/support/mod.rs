//! Shared test support: temp roots, the stand-in agent, the signed mirror,
//! network namespaces.
#![allow(dead_code)]

pub mod mirror;
pub mod netns;
pub mod standin;

use std::path::PathBuf;

/// Path of the `supervisor` binary under test. As root, first makes sure
/// the `consul` and `nomad` users exist, as on a node with the package
/// installed: `check`, `render` and `run` refuse a plan whose agent user is
/// missing.
pub fn supervisor_bin() -> PathBuf {
    agent_users();
    PathBuf::from(env!("CARGO_BIN_EXE_supervisor"))
}

/// Creates the agents' users when missing (root only; see
/// `hashi_testrig::users`).
pub fn agent_users() {
    if let Err(e) = hashi_testrig::users::ensure_agent_users() {
        panic!("{e}");
    }
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

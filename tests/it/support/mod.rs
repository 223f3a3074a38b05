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

/// `tests/data` of this checkout: public HashiCorp data the tests read
/// (agent API samples, the release key and signed vectors), kept in the
/// repository; see its README.md for where each file comes from.
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// The bytes of `tests/data/<rel>`; panics naming the full path it tried.
pub fn read_data(rel: &str) -> Vec<u8> {
    let p = data_dir().join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("failed to read test data {}: {e}", p.display()))
}

/// As [`read_data`], as text.
pub fn read_data_string(rel: &str) -> String {
    let p = data_dir().join(rel);
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("failed to read test data {}: {e}", p.display()))
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

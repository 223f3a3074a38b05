//! Tests of the stand-in agent (a test-only imitation of consul/nomad):
//! its CLI, config refusal, HTTP shapes against `tests/data/agent-api`,
//! signals, sd_notify, membership between instances, and fault knobs. They
//! drive the real binary through the same helper the main crate's
//! integration tests use (`tests/it/support/standin.rs`).

// Test code: a failed unwrap is a failed test (the workspace lints deny
// it elsewhere; clippy's allow-unwrap-in-tests does not reach helpers here).
#![allow(clippy::unwrap_used)]
// clippy.toml's disallowed methods guard the supervisor's code; tests write
// fixtures and wait in plain threads.
#![allow(clippy::disallowed_methods, reason = "tests write fixtures directly")]

#[path = "../../../tests/it/support/standin.rs"]
#[allow(dead_code)]
mod support;

mod api;
mod cli;
mod cluster;
mod datadir;
mod faults;
mod kv;
mod security;
mod shape;
mod signals;

use std::path::PathBuf;

/// Directory of the stand-in binary under test.
pub fn target_profile_dir() -> PathBuf {
    let mut p = PathBuf::from(env!("CARGO_BIN_EXE_hashi-standin"));
    p.pop();
    p
}

/// `tests/data/agent-api` of the checkout (the agent API samples).
pub fn agent_api_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/agent-api")
}

/// The text of `tests/data/agent-api/<rel>`; panics naming the full path.
pub fn agent_api_file(rel: &str) -> String {
    let p = agent_api_dir().join(rel);
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("failed to read test data {}: {e}", p.display()))
}

//! Integration tests of hashi-supervisor, one file per component. They drive
//! the real `supervisor` binary and the library against real files, real
//! HTTP on loopback, real processes (the test-only stand-in agent) and real
//! network namespaces.

// clippy.toml's disallowed methods guard the supervisor's code; tests write
// fixtures and wait in plain threads.
#![allow(clippy::disallowed_methods, reason = "tests write fixtures directly")]

mod support;

mod cluster;
mod day_one;
mod discovery;
mod discovery_unit;
mod discovery_wire;
mod fleet;
mod health;
mod health_e2e;
mod kv_lock;
mod layering;
mod netns;
mod release;
mod render;
mod role;
mod rollout;
mod secure_cluster;
mod security_acl;
mod security_cli;
mod security_join;
mod soak;
mod supervise;
mod upgrade;
mod upgrade_fleet;

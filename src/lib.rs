//! hashi-supervisor: one node agent that installs, configures and supervises
//! HashiCorp Consul and Nomad.
//!
//! # Architecture
//!
//! ```text
//! node.toml ──► role ──► plan ──┬─► release: resolve ► download ► verify ► install
//! (--role)       (validated)    ├─► render: consul.json / nomad.hcl (atomic, 0640)
//!                               ├─► agent: one client + one observer per agent
//!                               ├─► supervise: consul ─(ready)─► nomad
//!                               ├─► catalog: registration, discovery, fleet poller
//!                               └─► health: /health /v1/status /metrics
//! ```
//!
//! * [`role`] parses and validates the TOML role file into a [`role::NodeRole`].
//! * [`peers`] holds what discovery finds as plain values (the plan's
//!   second input, the report health shows).
//! * [`plan`] turns a `NodeRole` into a pure [`plan::Plan`]: which agents run,
//!   their argv, users, files, start order, stop signals and timeouts.
//! * [`render`] turns a `Plan` into the agents' config files; `render::write`
//!   is the only place that writes them (atomically).
//! * [`release`] resolves, downloads, verifies (OpenPGP + SHA-256) and installs
//!   the agents' binaries.
//! * [`agent`] is the one client of the agents' HTTP APIs and runs one
//!   observer per agent whose reports supervision and health both read.
//! * [`supervise`] runs one actor per agent: spawn, restart policy, graceful
//!   stop, reload.
//! * [`health`] serves pure functions of a snapshot over HTTP.
//! * [`catalog`] keeps the node's registration in Consul, finds its peers
//!   (static, DNS, mDNS, cloud) and joins them live, and polls the fleet.
//!
//! # Layering
//!
//! Dependencies point one way, along the pipeline. A module imports only
//! from an earlier stage; modules of one stage don't import each other,
//! except in the last one, which wires the rest together:
//!
//! ```text
//! 0  shared vocabulary  vocab (Product, RestartPolicy, agent users,
//!                       ReleaseOutcome), exit (exit codes), paths, version
//! 1  formats            openpgp (public keys, for role checks and release), html (escaping)
//! 2  logging            telemetry
//! 3  role               the role file → NodeRole
//! 4  plan               NodeRole → Plan
//! 5  release, render    what the plan installs / writes
//! 6  agent              the client of the agents' HTTP APIs, the observers
//! 7  supervise          the agents' processes
//! 8  health, catalog    what the node tells about itself
//! 9  application        commands, cli, error, shutdown, main
//! ```
//!
//! Errors flow up the same way: each stage returns its own error type, and
//! [`error::Error`] wraps them and maps each to its exit code in one place.
//! Nothing below `main` calls `exit`. `tests/it/layering.rs` reads every
//! `crate::` path in `src/` and fails on an import against this order (and
//! on a module missing from its table), and clippy's `disallowed-methods`
//! (`clippy.toml`) keeps writes, sleeps, exits and reaping where they belong.
//!
//! # Shutdown order
//!
//! Mark not ready → stop pollers → stop Nomad (its leave signal, grace, then
//! SIGKILL to its main pid) → stop Consul (same) → stop health, all under one
//! overall deadline.

// Test code writes fixtures and sleeps freely; the non-test build of every
// module is still held to clippy.toml's disallowed methods.
#![cfg_attr(
    test,
    allow(
        clippy::disallowed_methods,
        reason = "unit tests write fixtures directly"
    )
)]

pub mod agent;
pub mod catalog;
pub mod cli;
pub mod commands;
pub mod error;
pub mod exit;
// The fuzz targets' entry points: built only for cargo-fuzz (which sets
// `--cfg fuzzing`) and for their own corpus-replay tests, never shipped.
#[cfg(any(fuzzing, test))]
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod html;
pub mod openpgp;
pub mod paths;
pub mod peers;
pub mod plan;
pub mod release;
pub mod render;
pub mod role;
pub mod security;
pub mod shutdown;
pub mod supervise;
pub mod telemetry;
pub mod upgrade;
pub mod version;
pub mod vocab;

pub use error::Error;

/// The supervisor's own version, as reported by `--version`, `/v1/status`
/// and the `build_info` metric.
pub const SUPERVISOR_VERSION: &str = env!("CARGO_PKG_VERSION");

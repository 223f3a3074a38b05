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
//!                               ├─► catalog: registration in consul
//!                               └─► health: /health /v1/status /metrics
//! ```
//!
//! * [`role`] parses and validates the TOML role file into a [`role::NodeRole`].
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
//! * [`catalog`] keeps the node's registration in Consul (and is the home
//!   of discovery and the fleet poller).
//!
//! Dependencies point one way: role → plan → render/release → agent →
//! supervise → health/catalog → commands. Nothing below `main` calls
//! `exit`.
//!
//! # Shutdown order
//!
//! Mark not ready → stop pollers → stop Nomad (its leave signal, grace, then
//! SIGKILL to its main pid) → stop Consul (same) → stop health, all under one
//! overall deadline.

pub mod agent;
pub mod catalog;
pub mod cli;
pub mod commands;
pub mod error;
pub mod health;
pub mod paths;
pub mod plan;
pub mod release;
pub mod render;
pub mod role;
pub mod shutdown;
pub mod supervise;
pub mod telemetry;
pub mod version;

pub use error::Error;

/// The supervisor's own version, as reported by `--version`, `/v1/status`
/// and the `build_info` metric.
pub const SUPERVISOR_VERSION: &str = env!("CARGO_PKG_VERSION");

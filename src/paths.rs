//! Default paths and well-known names. Every default the operator can
//! override lives in the role file; these are only the fallbacks.

/// Default role file.
pub const DEFAULT_ROLE_FILE: &str = "/etc/hashi-supervisor/node.toml";
/// Default directory for the rendered agent configs (`consul.d/`, `nomad.d/`).
pub const DEFAULT_CONFIG_DIR: &str = "/etc/hashi-supervisor";
/// Default state directory: releases, agent data dirs, pidfiles.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/hashi-supervisor";
/// Sub-directory of the state dir holding installed releases.
pub const RELEASES_SUBDIR: &str = "releases";
/// Sub-directory of the state dir holding runtime files (pidfiles, sockets).
pub const RUN_SUBDIR: &str = "run";
/// Default release mirror (HashiCorp's own).
pub const DEFAULT_MIRROR: &str = "https://releases.hashicorp.com";
/// Default port of the supervisor's health endpoint. Chosen to collide with
/// nothing Consul (8300-8302, 8500-8503, 8600, 20000-21755), Nomad
/// (4646-4648, 20000-32000) or Prometheus (9090, 9093, 9100-9110) use.
pub const DEFAULT_HEALTH_PORT: u16 = 4680;

//! Test rig of hashi-supervisor: a signed local release mirror laid out like
//! releases.hashicorp.com (built at test time with a test key, never
//! HashiCorp's) and a small HTTP server for it with fault injection, and
//! network-namespace nodes for multi-node tests, DNS servers inside them
//! (dnsmasq and a silent one), and the offline five-node demo built from
//! them.
//!
//! Binaries zipped into the mirror are stand-ins (the `hashi-standin` test
//! agent or a script), never the real Consul or Nomad.

// The disallowed methods (clippy.toml) guard the supervisor's own code: the
// rig writes fixtures and mirrors directly and waits in plain threads.
#![allow(
    clippy::disallowed_methods,
    reason = "test infrastructure, not the supervisor's code"
)]

pub mod demo;
pub mod dns;
pub mod mirror;
pub mod netns;
pub mod require;
pub mod soak;
pub mod users;

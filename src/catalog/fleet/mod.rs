//! The fleet poller: which supervisors there are, what each one's
//! `/v1/status` says, and what the fleet as a whole looks like.
//!
//! * [`targets`]: the list of endpoints to ask, from a file, DNS (A/AAAA or
//!   SRV), the Consul catalog (the `hashi-supervisor` service that
//!   [`super::register`] keeps, in every datacenter) or the mDNS
//!   announcements heard on one interface.
//! * [`status`]: the part of a node's `/v1/status` document the fleet view
//!   needs, parsed leniently from the peer's bytes and cut to size.
//! * [`poll`]: one HTTP client polling every target with bounded
//!   concurrency, a per-request timeout and one retry; every node ends in
//!   one [`poll::NodeState`], none can stall the others.
//! * [`report`]: the poll's outcome as a [`report::FleetReport`] (problems
//!   first, counts, version skew, cluster findings no single node can see),
//!   rendered as a table, JSON, Prometheus metrics, file_sd JSON or the
//!   fleet page.
//! * [`serve`]: the fleet page server, answering from the last completed
//!   poll only.
//!
//! It must not import `health` (it reads the status document as a peer
//! sends it, like any other client would), nor write any file: the command
//! writes the Prometheus SD file. Peers are untrusted: bodies are bounded,
//! every string is cut and stripped of control characters before it is
//! shown on a terminal or a page.

pub mod poll;
pub mod report;
pub mod serve;
pub mod status;
pub mod targets;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use poll::{NodeResult, NodeState, PollOptions, Poller};
pub use report::{Finding, FleetReport};
pub use targets::{DEFAULT_PORT, Target};

/// Why the fleet command could not run.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The command line asks for something impossible.
    #[error("{0}")]
    Usage(String),
    /// A targets file could not be read.
    #[error("failed to read the targets file {path}")]
    TargetFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A targets file has bad lines.
    #[error("invalid targets file {path}:\n{}", problems.join("\n"))]
    TargetLines {
        /// The file.
        path: PathBuf,
        /// One `file:line: what` per bad line.
        problems: Vec<String>,
    },
    /// A DNS lookup for targets failed.
    #[error("failed to look up {name} in DNS")]
    Dns {
        /// The name asked.
        name: String,
        /// The cause.
        #[source]
        source: hickory_resolver::ResolveError,
    },
    /// The Consul catalog could not be listed.
    #[error("failed to list the hashi-supervisor service from consul at {url}: {reason}")]
    Consul {
        /// The Consul HTTP address.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The mDNS browse could not run.
    #[error("failed to browse mDNS on {interface}: {reason}")]
    Mdns {
        /// The interface named.
        interface: String,
        /// What went wrong.
        reason: String,
    },
    /// No source gave any target.
    #[error("no targets: {0}")]
    NoTargets(String),
    /// The fleet page could not listen.
    #[error("failed to listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl FleetError {
    /// Whether this is a usage error (exit 64): the command line or a file
    /// it names is wrong, as opposed to the fleet or a lookup failing.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Self::Usage(_) | Self::TargetFile { .. } | Self::TargetLines { .. }
        )
    }
}

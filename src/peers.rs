//! What discovery finds, as plain values: the [`Peers`] a plan is built
//! with (`plan::Plan::build`), and the [`DiscoveryReport`] that
//! `catalog::discovery` publishes and `health` shows (`/v1/status`,
//! `/metrics`, `/ready`). No behaviour beyond small helpers: the providers,
//! the joins and the choice of a Consul server live in `catalog`.
//! A stage of its own between `role` and `plan`, so the plan, the daemon,
//! health and catalog can all name these types without importing one
//! another.

use std::time::SystemTime;

/// What discovery found, as the rendered configs take it: the input of
/// `plan::Plan::build` beside the role. Static lists of the role file come
/// first in every rendered list; these follow, without repeats. Pure data:
/// `catalog::discovery` fills it, the daemon re-plans when it changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Peers {
    /// Consul agents of this datacenter to join over the LAN (Consul
    /// `retry_join`: `host` or `host:port` of the Serf LAN port).
    pub consul_lan: Vec<String>,
    /// Consul servers of other datacenters (Consul `retry_join_wan`; used
    /// by Consul servers only).
    pub consul_wan: Vec<String>,
    /// The Consul HTTP API (`host:port`) a Nomad without a local Consul
    /// uses: a healthy Consul server of its datacenter. Replaces the role
    /// file's `consul_address` when set.
    pub consul_http: Option<String>,
    /// Nomad servers of the region (Nomad `server_join.retry_join`: `host`
    /// or `host:port`; the agent's default port applies without one).
    pub nomad_servers: Vec<String>,
}

impl Peers {
    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self == &Peers::default()
    }
}

/// Where a peer was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A list in the role file.
    Static,
    /// A DNS name of `[discovery.dns]`.
    Dns,
    /// An mDNS/DNS-SD announcement of another supervisor.
    Mdns,
    /// A cloud auto-join string (resolved by the agents themselves).
    Cloud,
}

impl Source {
    /// The lower-case name used in status, logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Static => "static",
            Source::Dns => "dns",
            Source::Mdns => "mdns",
            Source::Cloud => "cloud",
        }
    }
}

/// What a found peer is to this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeerKind {
    /// A Consul server of this node's datacenter.
    ConsulServer,
    /// A Consul agent of this node's datacenter (LAN gossip peer).
    ConsulAgent,
    /// A Consul server of another datacenter (WAN).
    ConsulWan,
    /// A Nomad server of this node's region.
    NomadServer,
    /// Another supervisor seen on the LAN that runs none of the above.
    Supervisor,
}

/// One peer as `/v1/status` and `check` list it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PeerRecord {
    /// The address the agents are given (`host` or `host:port`).
    pub address: String,
    /// What it is to this node.
    pub kind: PeerKind,
    /// Where it was found.
    pub source: Source,
    /// Its node name, when the source says (mDNS).
    pub node: Option<String>,
    /// Its datacenter, when the source says.
    pub datacenter: Option<String>,
    /// Its region, when the source says.
    pub region: Option<String>,
    /// When it was last seen (announced, resolved, read from the file).
    #[serde(serialize_with = "unix_seconds")]
    pub last_seen: SystemTime,
}

/// Identity values learned from announcements for what the role file left
/// to its defaults (`role::NodeRole::learn`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Learned {
    /// Region, when learned.
    pub region: Option<String>,
    /// Datacenter, when learned.
    pub datacenter: Option<String>,
    /// The node whose announcement taught it.
    pub from_node: Option<String>,
}

/// The state of discovery as published to the rest of the supervisor.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DiscoveryReport {
    /// What the plan is built with now.
    pub peers: Peers,
    /// Every peer known, with its source and last sighting.
    pub records: Vec<PeerRecord>,
    /// What was learned for the role's unwritten identity.
    pub learned: Learned,
    /// Problems to show in health (`/ready` says degraded with these), in
    /// words an operator acts on: "no healthy Consul server of ams2: ...".
    pub problems: Vec<String>,
    /// Warnings that do not make the node unready (a rogue announcement,
    /// an unreachable seed, a DNS timeout), newest last, bounded.
    pub warnings: Vec<String>,
    /// Joins made through the agents' APIs, by agent (`consul`, `nomad`).
    pub joins: Vec<(String, u64)>,
    /// Discovery errors, by source.
    pub errors: Vec<(String, u64)>,
}

fn unix_seconds<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    s.serialize_u64(secs)
}

//! What one poll of an agent found ([`AgentReport`]), and the queries that
//! build it: every request of a poll runs concurrently, each bounded by the
//! endpoint's timeout; an error becomes a line of the report, never an
//! error of the poll. Also the readiness probe: the one request that says
//! whether an agent is ready (Consul has a raft leader, Nomad's own health
//! passes).

use std::net::SocketAddr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::AgentError;
use super::consul::{ConsulClient, ConsulMember, SERF_STATUS_FAILED};
use super::nomad::{NomadClient, NomadHealthItem};
use super::transport::Endpoint;
use crate::plan::ApiTls;
use crate::vocab::Product;

/// An agent the plan runs, as far as observing it needs.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentTarget {
    /// Which agent.
    pub product: Product,
    /// Server mode.
    pub server: bool,
    /// Client mode.
    pub client: bool,
    /// The agent's local HTTP API.
    pub http_addr: SocketAddr,
    /// TLS of that API, if any.
    pub api_tls: Option<ApiTls>,
}

/// What a Consul agent reports about itself and its cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConsulReport {
    /// Raft leader address; `None` when there is none (or it was not learnt).
    pub leader: Option<String>,
    /// Why the leader could not be asked, when it could not.
    pub leader_error: Option<String>,
    /// LAN pool members.
    pub lan_members: Option<u32>,
    /// LAN pool members alive.
    pub lan_members_alive: Option<u32>,
    /// WAN pool members (servers only).
    pub wan_members: Option<u32>,
    /// Datacenters in the WAN pool (servers only).
    #[serde(default)]
    pub wan_datacenters: Option<u32>,
    /// WAN pool members serf marks failed (`<node>.<dc>`, servers only).
    #[serde(default)]
    pub wan_failed: Vec<String>,
    /// Autopilot failure tolerance (servers only).
    pub failure_tolerance: Option<u32>,
    /// Autopilot's overall health (servers only).
    pub autopilot_healthy: Option<bool>,
    /// Version the agent reports.
    pub version: Option<String>,
    /// Other queries that failed, one line each.
    pub errors: Vec<String>,
}

/// What a Nomad agent reports about itself and its cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NomadReport {
    /// `/v1/agent/health` server half.
    pub health_server: Option<NomadHealthItem>,
    /// `/v1/agent/health` client half.
    pub health_client: Option<NomadHealthItem>,
    /// Why `/v1/agent/health` could not be asked, when it could not.
    pub health_error: Option<String>,
    /// Raft leader as the agent sees it.
    pub leader: Option<String>,
    /// Servers known to the client.
    pub known_servers: Vec<String>,
    /// Serf members (servers only).
    pub members: Option<u32>,
    /// Serf members alive (servers only).
    pub members_alive: Option<u32>,
    /// Version the agent reports.
    pub version: Option<String>,
    /// Other queries that failed, one line each.
    pub errors: Vec<String>,
}

/// The last round of queries to one agent.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentReport {
    /// Which agent.
    pub product: Product,
    /// When the round ended.
    pub checked_at: SystemTime,
    /// Consul's answers.
    pub consul: Option<ConsulReport>,
    /// Nomad's answers.
    pub nomad: Option<NomadReport>,
}

/// The report of an agent whose API gave no answer, saying why.
pub fn unreachable_api(t: &AgentTarget, msg: String) -> AgentReport {
    AgentReport {
        product: t.product,
        checked_at: SystemTime::now(),
        consul: (t.product == Product::Consul).then(|| ConsulReport {
            leader_error: Some(msg.clone()),
            ..Default::default()
        }),
        nomad: (t.product == Product::Nomad).then(|| NomadReport {
            health_error: Some(msg.clone()),
            ..Default::default()
        }),
    }
}

fn note<T>(errors: &mut Vec<String>, r: Result<T, AgentError>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            errors.push(e.one_line());
            None
        }
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Polls the agent `t` behind `api` (or reports why it has no API): its
/// report, and whether it is ready by [`probe`]'s rule.
pub async fn poll(api: Result<Endpoint, String>, t: &AgentTarget) -> (AgentReport, bool) {
    let api = match api {
        Ok(e) => e,
        Err(why) => return (unreachable_api(t, why), false),
    };
    let (consul, nomad, ready) = match t.product {
        Product::Consul => {
            let r = query_consul(ConsulClient::new(api), t.server).await;
            let ready = r.leader.is_some();
            (Some(r), None, ready)
        }
        Product::Nomad => {
            let (r, ready) = query_nomad(NomadClient::new(api), t.server).await;
            (None, Some(r), ready)
        }
    };
    tracing::debug!(agent = %t.product, ready, "agent polled");
    let report = AgentReport {
        product: t.product,
        checked_at: SystemTime::now(),
        consul,
        nomad,
    };
    (report, ready)
}

/// Whether the agent behind `api` is ready, by one request: Consul's
/// `/v1/status/leader` names a leader; Nomad's `/v1/agent/health` answers
/// 200 (every half ok). Any failure is "not ready".
pub async fn probe(api: Result<Endpoint, String>, product: Product) -> bool {
    let Ok(api) = api else {
        return false;
    };
    match product {
        Product::Consul => matches!(ConsulClient::new(api).leader().await, Ok(Some(_))),
        Product::Nomad => matches!(NomadClient::new(api).health_answer().await, Ok((200, _))),
    }
}

/// Asks a Consul agent for its leader, members, (on servers) WAN members
/// and autopilot health, and its version.
pub async fn query_consul(c: ConsulClient, server: bool) -> ConsulReport {
    let (leader, lan, wan, autopilot, me) = tokio::join!(
        c.leader(),
        c.members(false),
        async {
            if server {
                Some(c.members(true).await)
            } else {
                None
            }
        },
        async {
            if server {
                Some(c.autopilot_health().await)
            } else {
                None
            }
        },
        c.agent_self(),
    );
    let mut r = ConsulReport::default();
    match leader {
        Ok(l) => r.leader = l,
        Err(e) => r.leader_error = Some(e.one_line()),
    }
    if let Some(m) = note(&mut r.errors, lan) {
        r.lan_members = Some(count(m.len()));
        r.lan_members_alive = Some(count(m.iter().filter(|m| m.is_alive()).count()));
    }
    if let Some(m) = wan.and_then(|w| note(&mut r.errors, w)) {
        r.wan_members = Some(count(m.len()));
        let dcs: std::collections::BTreeSet<&str> =
            m.iter().map(ConsulMember::datacenter).collect();
        r.wan_datacenters = Some(count(dcs.len()));
        r.wan_failed = m
            .iter()
            .filter(|m| m.status == SERF_STATUS_FAILED)
            .map(|m| m.name.clone())
            .collect();
    }
    if let Some(a) = autopilot.and_then(|a| note(&mut r.errors, a)) {
        r.failure_tolerance = Some(a.failure_tolerance);
        r.autopilot_healthy = Some(a.healthy);
    }
    if let Some(me) = note(&mut r.errors, me) {
        r.version = Some(me.config.version);
    }
    r
}

/// Asks a Nomad agent for its health, leader, known servers and (on
/// servers) members; also says whether its health answered 200.
pub async fn query_nomad(c: NomadClient, server: bool) -> (NomadReport, bool) {
    let (health, leader, me, members) =
        tokio::join!(c.health_answer(), c.leader(), c.agent_self(), async {
            if server {
                Some(c.members().await)
            } else {
                None
            }
        },);
    let mut r = NomadReport::default();
    let mut ready = false;
    match health {
        Ok((status, h)) => {
            ready = status == 200;
            r.health_server = h.server;
            r.health_client = h.client;
        }
        Err(e) => r.health_error = Some(e.one_line()),
    }
    if let Some(l) = note(&mut r.errors, leader) {
        r.leader = l;
    }
    if let Some(me) = note(&mut r.errors, me) {
        r.version = me.version();
        r.known_servers = me.known_servers();
    }
    if let Some(m) = members.and_then(|m| note(&mut r.errors, m)) {
        r.members = Some(count(m.members.len()));
        r.members_alive = Some(count(m.members.iter().filter(|m| m.is_alive()).count()));
    }
    (r, ready)
}

//! Nomad's HTTP API: the endpoints the supervisor uses, one typed request
//! each, and their response shapes (`Status` of a member is a string,
//! `/v1/agent/members` an object, `config.Version` an object or, in old
//! agents, a string; `/v1/agent/health` answers 500 with its JSON when
//! unhealthy).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::consul::{AutopilotHealth, parse_consul_leader, percent_encode};
use super::transport::Endpoint;
use super::{AgentError, de_null_as_default, decode, truncate};

/// One half of Nomad's `/v1/agent/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NomadHealthItem {
    /// Whether this half is healthy.
    pub ok: bool,
    /// Why (`ok`, `no known servers`, ...).
    #[serde(default)]
    pub message: String,
}

/// Nomad's `/v1/agent/health`: `server` on servers, `client` on clients.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct NomadHealth {
    /// The client half, on a client.
    pub client: Option<NomadHealthItem>,
    /// The server half, on a server.
    pub server: Option<NomadHealthItem>,
}

impl NomadHealth {
    /// Whether every half present is ok (and at least one is present).
    pub fn is_ok(&self) -> bool {
        let halves = [&self.client, &self.server];
        halves.iter().any(|h| h.is_some()) && halves.into_iter().flatten().all(|h| h.ok)
    }
}

/// Nomad's `config.Version`: an object in current agents, a string (with a
/// separate `VersionPrerelease`) in the 0.5-era doc sample.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum NomadVersion {
    /// `{Version, VersionPrerelease, VersionMetadata, Revision, BuildDate}`.
    Info {
        /// `1.9.3`.
        #[serde(rename = "Version")]
        version: String,
        /// `dev`, `beta1`, or empty.
        #[serde(rename = "VersionPrerelease", default)]
        prerelease: Option<String>,
        /// `ent`, or empty.
        #[serde(rename = "VersionMetadata", default)]
        metadata: Option<String>,
    },
    /// A plain version string.
    Text(String),
}

/// Nomad's `/v1/agent/self` `config` (the parts we use).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NomadSelfConfig {
    /// Region.
    #[serde(default)]
    pub region: String,
    /// Datacenter.
    #[serde(default)]
    pub datacenter: String,
    /// Node name (may be empty: defaults to the hostname).
    #[serde(default)]
    pub node_name: String,
    /// Version.
    pub version: Option<NomadVersion>,
    /// Prerelease of the old string form.
    #[serde(default)]
    pub version_prerelease: Option<String>,
}

/// A Nomad serf member (`Status` is a string).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NomadMember {
    /// `<node>.<region>`; empty on a client-only agent's `member`.
    #[serde(default)]
    pub name: String,
    /// Gossip address.
    #[serde(default)]
    pub addr: String,
    /// Gossip port.
    #[serde(default)]
    pub port: u16,
    /// Serf tags.
    #[serde(default, deserialize_with = "de_null_as_default")]
    pub tags: BTreeMap<String, String>,
    /// `alive`, `leaving`, `left`, `failed`, `none`.
    #[serde(default)]
    pub status: String,
}

impl NomadMember {
    /// Whether serf sees the member alive.
    pub fn is_alive(&self) -> bool {
        self.status == "alive"
    }
}

/// Nomad's `/v1/agent/self` (the parts we use).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct NomadSelf {
    /// Configuration.
    pub config: NomadSelfConfig,
    /// The agent's serf member (empty on a client-only agent).
    pub member: Option<NomadMember>,
    /// `stats.<section>.<key>` strings.
    #[serde(default, deserialize_with = "de_null_as_default")]
    pub stats: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
}

impl NomadSelf {
    /// The version as a display string (`1.9.3`, `0.5.5-dev`).
    pub fn version(&self) -> Option<String> {
        let join = |v: &str, pre: Option<&str>| match pre {
            Some(p) if !p.is_empty() => format!("{v}-{p}"),
            _ => v.to_string(),
        };
        match &self.config.version {
            Some(NomadVersion::Info {
                version,
                prerelease,
                ..
            }) => Some(join(version, prerelease.as_deref())),
            Some(NomadVersion::Text(v)) => Some(join(v, self.config.version_prerelease.as_deref())),
            None => None,
        }
    }

    fn stat(&self, section: &str, key: &str) -> Option<String> {
        match self.stats.get(section)?.get(key)? {
            serde_json::Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }

    /// Servers a client knows (`stats.client.known_servers`, comma-separated).
    pub fn known_servers(&self) -> Vec<String> {
        self.stat("client", "known_servers")
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|x| !x.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Nomad's `/v1/agent/members`: an object, unlike Consul's list.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NomadMembers {
    /// This server's name.
    #[serde(default)]
    pub server_name: String,
    /// This server's region.
    #[serde(default)]
    pub server_region: String,
    /// This server's datacenter.
    #[serde(rename = "ServerDC", default)]
    pub server_dc: String,
    /// The serf members (servers of every region).
    #[serde(default, deserialize_with = "de_null_as_default")]
    pub members: Vec<NomadMember>,
}

/// One entry of Nomad's `/v1/nodes`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NomadNode {
    /// Node ID.
    #[serde(rename = "ID")]
    pub id: String,
    /// Node name.
    pub name: String,
    /// Datacenter.
    #[serde(default)]
    pub datacenter: String,
    /// `initializing`, `ready`, `down`, `disconnected`.
    pub status: String,
    /// Client version.
    #[serde(default)]
    pub version: String,
}
/// Nomad's answer to `PUT /v1/agent/join`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NomadJoin {
    /// How many of the addresses were joined.
    pub num_joined: u32,
    /// The join errors, `;`-separated; empty when all joined.
    #[serde(default)]
    pub error: String,
}

/// Nomad's `/v1/operator/autopilot/health`: Consul's shape (Nomad encodes
/// `LastContact` as nanoseconds; [`AutopilotHealth`] reads both).
pub type NomadAutopilotHealth = AutopilotHealth;

/// One server of Nomad's `/v1/operator/raft/configuration`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RaftServer {
    /// Raft ID (a UUID with raft protocol 3).
    #[serde(rename = "ID")]
    pub id: String,
    /// `<node>.<region>`.
    #[serde(default)]
    pub node: String,
    /// Raft address (`ip:port`).
    #[serde(default)]
    pub address: String,
    /// Whether it is the leader.
    #[serde(default)]
    pub leader: bool,
    /// Whether it votes.
    #[serde(default)]
    pub voter: bool,
}

/// Nomad's `/v1/operator/raft/configuration`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RaftConfiguration {
    /// Raft index of the configuration.
    #[serde(default)]
    pub index: u64,
    /// The servers.
    #[serde(default, deserialize_with = "de_null_as_default")]
    pub servers: Vec<RaftServer>,
}

impl RaftConfiguration {
    /// The server leadership goes to when the leader hands it off: the
    /// first voter, by Raft ID, that is not the leader.
    pub fn transfer_target(&self) -> Option<&RaftServer> {
        self.servers
            .iter()
            .filter(|s| s.voter && !s.leader)
            .min_by(|a, b| a.id.cmp(&b.id))
    }
}

/// `address=a&address=b`, each percent-encoded.
fn address_query(addresses: &[String]) -> String {
    addresses
        .iter()
        .map(|a| format!("address={}", percent_encode(a)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Nomad `/v1/status/leader`: a JSON string; empty means no leader.
pub fn parse_nomad_leader(url: &str, body: &[u8]) -> Result<Option<String>, AgentError> {
    parse_consul_leader(url, body)
}

/// Client of one Nomad agent's HTTP API.
#[derive(Debug, Clone)]
pub struct NomadClient {
    api: Endpoint,
}

impl NomadClient {
    /// A client of the agent behind `api`.
    pub fn new(api: Endpoint) -> Self {
        Self { api }
    }

    /// The agent's API.
    pub fn endpoint(&self) -> &Endpoint {
        &self.api
    }

    /// `GET /v1/agent/health`. Unhealthy is 500 with the JSON in a
    /// `text/plain` body; that is a result, not an error.
    pub async fn health(&self) -> Result<NomadHealth, AgentError> {
        Ok(self.health_answer().await?.1)
    }

    /// As [`NomadClient::health`], with the answer's status (200 only
    /// when every half is ok).
    pub async fn health_answer(&self) -> Result<(u16, NomadHealth), AgentError> {
        let a = self.api.get("/v1/agent/health", &[200, 500]).await?;
        match decode(&a.url, &a.body) {
            Ok(h) => Ok((a.status, h)),
            Err(e) if a.status == 200 => Err(e),
            Err(_) => Err(AgentError::Status {
                url: a.url,
                status: a.status,
                body: truncate(&a.body),
            }),
        }
    }

    /// `GET /v1/agent/self`.
    pub async fn agent_self(&self) -> Result<NomadSelf, AgentError> {
        let a = self.api.get("/v1/agent/self", &[200]).await?;
        decode(&a.url, &a.body)
    }

    /// `GET /v1/agent/members` (servers only).
    pub async fn members(&self) -> Result<NomadMembers, AgentError> {
        let a = self.api.get("/v1/agent/members", &[200]).await?;
        decode(&a.url, &a.body)
    }

    /// `GET /v1/status/leader?stale`: `?stale` so a server without a leader
    /// answers at once instead of holding the request for 5 s and answering
    /// `500 No cluster leader` (nomad/rpc.go).
    pub async fn leader(&self) -> Result<Option<String>, AgentError> {
        let a = self.api.get("/v1/status/leader?stale", &[200]).await?;
        parse_nomad_leader(&a.url, &a.body)
    }

    /// `PUT /v1/agent/join?address=..` (servers): joins the server gossip
    /// pool of each of `addresses` (`host` or `host:port`, Serf port 4648
    /// when none). Nomad answers 200 even when a join failed, with the
    /// errors in `error`: that is an error here, with the count joined.
    pub async fn join(&self, addresses: &[String]) -> Result<NomadJoin, AgentError> {
        let path = format!("/v1/agent/join?{}", address_query(addresses));
        let a = self
            .api
            .send(reqwest::Method::PUT, &path, None)
            .await?
            .require(&[200])?;
        let j: NomadJoin = decode(&a.url, &a.body)?;
        if !j.error.is_empty() {
            return Err(AgentError::Status {
                url: a.url,
                status: a.status,
                body: truncate(j.error.as_bytes()),
            });
        }
        Ok(j)
    }

    /// `PUT /v1/agent/servers?address=..` (clients): replaces the client's
    /// list of servers with `addresses` (`host:port` of their RPC port).
    pub async fn set_servers(&self, addresses: &[String]) -> Result<(), AgentError> {
        let path = format!("/v1/agent/servers?{}", address_query(addresses));
        self.api
            .send(reqwest::Method::PUT, &path, None)
            .await?
            .require(&[200])?;
        Ok(())
    }

    /// `GET /v1/operator/autopilot/health`; 429 (unhealthy) carries the
    /// same body and is a result, not an error.
    pub async fn autopilot_health(&self) -> Result<NomadAutopilotHealth, AgentError> {
        let a = self
            .api
            .get("/v1/operator/autopilot/health", &[200, 429])
            .await?;
        decode(&a.url, &a.body)
    }

    /// `GET /v1/operator/raft/configuration?stale` (a management token
    /// when ACLs are on).
    pub async fn raft_configuration(&self) -> Result<RaftConfiguration, AgentError> {
        let a = self
            .api
            .get("/v1/operator/raft/configuration?stale", &[200])
            .await?;
        decode(&a.url, &a.body)
    }

    /// `PUT /v1/operator/raft/transfer-leadership?id=<raft id>`: the leader
    /// hands leadership to the server with Raft ID `id` (Nomad API docs,
    /// "Transfer Leadership to another Raft Peer": `id` or `address` is
    /// required; raft protocol 3 on every server). 200 without a body.
    pub async fn transfer_leadership_to(&self, id: &str) -> Result<(), AgentError> {
        let path = format!(
            "/v1/operator/raft/transfer-leadership?id={}",
            percent_encode(id)
        );
        self.api
            .send(reqwest::Method::PUT, &path, None)
            .await?
            .require(&[200])?;
        Ok(())
    }

    /// Hands leadership to another voter: reads the raft configuration and
    /// asks for [`RaftConfiguration::transfer_target`]. An error when
    /// there is no other voter (a single server keeps its leadership).
    pub async fn transfer_leadership(&self) -> Result<(), AgentError> {
        let conf = self.raft_configuration().await?;
        let Some(target) = conf.transfer_target() else {
            return Err(AgentError::Status {
                url: format!("{}/v1/operator/raft/configuration", self.api.base()),
                status: 200,
                body: "no other voting server to transfer leadership to".into(),
            });
        };
        self.transfer_leadership_to(&target.id).await
    }

    /// `GET /v1/nodes`.
    pub async fn nodes(&self) -> Result<Vec<NomadNode>, AgentError> {
        let a = self.api.get("/v1/nodes", &[200]).await?;
        Ok(decode::<Option<Vec<NomadNode>>>(&a.url, &a.body)?.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::sample;

    #[test]
    fn nomad_health_sample_is_ok_and_client_without_servers_is_not() {
        let h: NomadHealth = decode("u", &sample("nomad/agent_health.json")).unwrap();
        assert!(h.is_ok());
        let bad: NomadHealth = decode(
            "u",
            br#"{"client":{"ok":false,"message":"no known servers"}}"#,
        )
        .unwrap();
        assert!(!bad.is_ok());
        assert!(bad.server.is_none());
        assert_eq!(bad.client.unwrap().message, "no known servers");
        assert!(!NomadHealth::default().is_ok());
    }

    #[test]
    fn nomad_agent_self_version_is_string_in_sample_and_object_in_real_agents() {
        let s: NomadSelf = decode("u", &sample("nomad/agent_self.json")).unwrap();
        assert_eq!(s.version().as_deref(), Some("0.5.5-dev"));
        assert_eq!(s.config.region, "global");
        assert_eq!(s.known_servers(), vec!["127.0.0.1:4647".to_string()]);
        let real = br#"{"config":{"Region":"eu","Datacenter":"ams2","NodeName":"ams2-client-01","Version":{"BuildDate":"2024-11-11T00:00:00Z","Revision":"abc","Version":"1.9.3","VersionPrerelease":"","VersionMetadata":""}},"member":{"Name":"","Addr":"","Port":0,"Tags":null,"Status":"none"},"stats":{"client":{"known_servers":"10.0.0.1:4647,10.0.0.2:4647"}}}"#;
        let r: NomadSelf = decode("u", real).unwrap();
        assert_eq!(r.version().as_deref(), Some("1.9.3"));
        assert_eq!(r.known_servers().len(), 2);
        assert!(!r.member.unwrap().is_alive());
    }

    #[test]
    fn nomad_members_is_an_object_with_string_status() {
        let m: NomadMembers = decode("u", &sample("nomad/agent_members.json")).unwrap();
        assert_eq!(m.server_region, "global");
        assert_eq!(m.server_dc, "dc1");
        assert_eq!(m.members.len(), 1);
        assert!(m.members[0].is_alive());
        // A Consul-shaped list is not Nomad's answer.
        assert!(decode::<NomadMembers>("u", &sample("consul/agent_members.json")).is_err());
    }

    #[test]
    fn nomad_join_sample_parses_and_addresses_are_encoded() {
        let j: NomadJoin = decode("u", &sample("nomad/agent_join.json")).unwrap();
        assert_eq!(j.num_joined, 2);
        assert!(j.error.is_empty());
        assert_eq!(
            address_query(&["10.0.1.11:4647".into(), "fd00::1".into(), "a b&c".into()]),
            "address=10.0.1.11%3A4647&address=fd00%3A%3A1&address=a%20b%26c"
        );
    }

    #[test]
    fn nomad_autopilot_and_raft_configuration_samples_parse() {
        let h: NomadAutopilotHealth =
            decode("u", &sample("nomad/operator_autopilot_health.json")).unwrap();
        assert!(h.healthy);
        assert_eq!(h.servers.iter().filter(|s| s.leader).count(), 1);
        let c: RaftConfiguration =
            decode("u", &sample("nomad/operator_raft_configuration.json")).unwrap();
        assert_eq!(c.servers.len(), 3);
        assert!(c.servers[1].leader);
        // Not the leader, the lowest Raft ID of the other voters.
        assert_eq!(
            c.transfer_target().map(|s| s.node.as_str()),
            Some("node3.global")
        );
        let single: RaftConfiguration = decode(
            "u",
            br#"{"Index":1,"Servers":[{"Address":"a:4647","ID":"x","Leader":true,"Node":"n.eu","RaftProtocol":"3","Voter":true}]}"#,
        )
        .unwrap();
        assert!(single.transfer_target().is_none());
    }

    #[test]
    fn nomad_leader_and_nodes_samples_parse() {
        assert_eq!(
            parse_nomad_leader("u", &sample("nomad/status_leader.json")).unwrap(),
            Some("127.0.0.1:4647".into())
        );
        let n: Vec<NomadNode> = decode("u", &sample("nomad/nodes.json")).unwrap();
        assert_eq!(n[0].name, "nomad-4");
        assert_eq!(n[0].status, "ready");
    }
}

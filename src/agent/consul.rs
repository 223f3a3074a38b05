//! Consul's HTTP API: the endpoints the supervisor uses, one typed request
//! each, and their response shapes (`Status` of a member is serf's
//! integer, unlike Nomad's string; `LastContact` a Go duration string).
//! The autopilot answer has the same shape in Nomad, which uses it from
//! here.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::duration::de_go_duration;
use super::transport::Endpoint;
use super::{AgentError, de_null_as_default, decode};

/// Serf's integer member status for a live member (Consul's `Status: 1`).
pub const SERF_STATUS_ALIVE: u8 = 1;
/// Serf's integer member status for a member it declared failed.
pub const SERF_STATUS_FAILED: u8 = 4;

/// A serf member as Consul lists it (`Status` is serf's integer).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConsulMember {
    /// Node name (`<node>.<dc>` in the WAN pool).
    pub name: String,
    /// Gossip address.
    pub addr: String,
    /// Gossip port.
    pub port: u16,
    /// Serf tags (`role`, `dc`, ...).
    #[serde(default, deserialize_with = "de_null_as_default")]
    pub tags: BTreeMap<String, String>,
    /// 0 none, 1 alive, 2 leaving, 3 left, 4 failed.
    pub status: u8,
}

impl ConsulMember {
    /// Whether serf sees the member alive.
    pub fn is_alive(&self) -> bool {
        self.status == SERF_STATUS_ALIVE
    }

    /// The member's datacenter: its `dc` tag, else what follows the last
    /// dot of a WAN name (`<node>.<dc>`).
    pub fn datacenter(&self) -> &str {
        self.tags
            .get("dc")
            .map(String::as_str)
            .or_else(|| self.name.rsplit_once('.').map(|(_, dc)| dc))
            .unwrap_or("")
    }
}

/// `Config` of Consul's `/v1/agent/self`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConsulSelfConfig {
    /// Datacenter.
    pub datacenter: String,
    /// Node name.
    pub node_name: String,
    /// Whether the agent is a server.
    pub server: bool,
    /// Version (`1.20.1`).
    pub version: String,
    /// Git revision.
    #[serde(default)]
    pub revision: String,
}

/// Consul's `/v1/agent/self` (the parts we use).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConsulSelf {
    /// Configuration summary.
    pub config: ConsulSelfConfig,
    /// The agent's own LAN member.
    pub member: Option<ConsulMember>,
}

/// One server in an autopilot health answer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AutopilotServer {
    /// Raft ID.
    #[serde(rename = "ID")]
    pub id: String,
    /// Node name.
    pub name: String,
    /// Raft address.
    pub address: String,
    /// Serf status (`alive`, ...).
    pub serf_status: String,
    /// Server version.
    pub version: String,
    /// Whether it is the leader.
    pub leader: bool,
    /// Time since last contact with the leader (number of ns in Nomad, string
    /// in Consul).
    #[serde(default, deserialize_with = "de_go_duration")]
    pub last_contact: Option<Duration>,
    /// Whether autopilot finds it healthy.
    pub healthy: bool,
    /// Whether it votes.
    pub voter: bool,
}

/// `/v1/operator/autopilot/health` (Consul and Nomad; 429 when unhealthy).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AutopilotHealth {
    /// Overall health.
    pub healthy: bool,
    /// Servers that may fail without losing quorum.
    pub failure_tolerance: u32,
    /// Per server.
    #[serde(default, deserialize_with = "de_null_as_default")]
    pub servers: Vec<AutopilotServer>,
}

/// A service registration (`PUT /v1/agent/service/register`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceRegistration {
    /// Unique ID on the agent.
    #[serde(rename = "ID")]
    pub id: String,
    /// Service name.
    pub name: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Address.
    pub address: String,
    /// Port.
    pub port: u16,
    /// Metadata.
    pub meta: BTreeMap<String, String>,
    /// The service's check.
    pub check: ServiceCheck,
}

/// An HTTP check definition (never a script check: a default agent refuses
/// those from the HTTP API).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceCheck {
    /// URL the agent polls.
    #[serde(rename = "HTTP")]
    pub http: String,
    /// Method.
    pub method: String,
    /// Go duration, e.g. `10s`.
    pub interval: String,
    /// Go duration.
    pub timeout: String,
    /// Go duration after which a critical service is deregistered.
    pub deregister_critical_service_after: String,
}

// --------------------------------------------------------------- parsers ---

/// Consul `/v1/status/leader`: `""` (no leader) becomes `None`.
pub fn parse_consul_leader(url: &str, body: &[u8]) -> Result<Option<String>, AgentError> {
    let s: String = decode(url, body)?;
    Ok((!s.is_empty()).then_some(s))
}

/// Consul or Nomad `/v1/status/peers`: `null` (Consul before bootstrap)
/// becomes an empty list.
pub fn parse_peers(url: &str, body: &[u8]) -> Result<Vec<String>, AgentError> {
    Ok(decode::<Option<Vec<String>>>(url, body)?.unwrap_or_default())
}

/// Consul `/v1/agent/members` (LAN or WAN); `null` (WAN on a client) is empty.
pub fn parse_consul_members(url: &str, body: &[u8]) -> Result<Vec<ConsulMember>, AgentError> {
    Ok(decode::<Option<Vec<ConsulMember>>>(url, body)?.unwrap_or_default())
}

/// `s` with every byte but the unreserved ones (RFC 3986: letters,
/// digits, `-._~`) percent-encoded: a path segment or query value (a peer
/// address may come from DNS or a role file).
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Client of one Consul agent's HTTP API.
#[derive(Debug, Clone)]
pub struct ConsulClient {
    api: Endpoint,
}

impl ConsulClient {
    /// A client of the agent behind `api`.
    pub fn new(api: Endpoint) -> Self {
        Self { api }
    }

    /// The agent's API.
    pub fn endpoint(&self) -> &Endpoint {
        &self.api
    }

    /// `GET /v1/status/leader`; `None` when the cluster has no leader.
    pub async fn leader(&self) -> Result<Option<String>, AgentError> {
        let a = self.api.get("/v1/status/leader", &[200]).await?;
        parse_consul_leader(&a.url, &a.body)
    }

    /// `GET /v1/status/peers`.
    pub async fn peers(&self) -> Result<Vec<String>, AgentError> {
        let a = self.api.get("/v1/status/peers", &[200]).await?;
        parse_peers(&a.url, &a.body)
    }

    /// `GET /v1/agent/self`.
    pub async fn agent_self(&self) -> Result<ConsulSelf, AgentError> {
        let a = self.api.get("/v1/agent/self", &[200]).await?;
        decode(&a.url, &a.body)
    }

    /// `GET /v1/agent/members` (`?wan=1` for the WAN pool).
    pub async fn members(&self, wan: bool) -> Result<Vec<ConsulMember>, AgentError> {
        let path = if wan {
            "/v1/agent/members?wan=1"
        } else {
            "/v1/agent/members"
        };
        let a = self.api.get(path, &[200]).await?;
        parse_consul_members(&a.url, &a.body)
    }

    /// `GET /v1/operator/autopilot/health`; 429 (unhealthy) carries the
    /// same body and is not an error.
    pub async fn autopilot_health(&self) -> Result<AutopilotHealth, AgentError> {
        let a = self
            .api
            .get("/v1/operator/autopilot/health", &[200, 429])
            .await?;
        decode(&a.url, &a.body)
    }

    /// `PUT /v1/agent/service/register`.
    pub async fn register_service(&self, reg: &ServiceRegistration) -> Result<(), AgentError> {
        const PATH: &str = "/v1/agent/service/register";
        let body = serde_json::to_vec(reg).map_err(|source| AgentError::Decode {
            url: format!("{}{PATH}", self.api.base()),
            source,
        })?;
        self.api
            .send(Method::PUT, PATH, Some(body))
            .await?
            .require(&[200])?;
        Ok(())
    }

    /// Whether the local agent has a service with ID `id`
    /// (`GET /v1/agent/services`, a map keyed by service ID).
    pub async fn has_service(&self, id: &str) -> Result<bool, AgentError> {
        let a = self.api.get("/v1/agent/services", &[200]).await?;
        let services: BTreeMap<String, serde::de::IgnoredAny> = decode(&a.url, &a.body)?;
        Ok(services.contains_key(id))
    }

    /// `PUT /v1/agent/join/<address>` (`?wan=1`: the WAN pool, servers
    /// only): asks the agent to join the gossip pool of `address` (`host`
    /// or `host:port`; Serf's LAN/WAN port when none). 200 with an empty
    /// body when joined; the agent's 500 carries the join error.
    pub async fn join(&self, address: &str, wan: bool) -> Result<(), AgentError> {
        let mut path = format!("/v1/agent/join/{}", percent_encode(address));
        if wan {
            path.push_str("?wan=1");
        }
        self.api
            .send(Method::PUT, &path, None)
            .await?
            .require(&[200])?;
        Ok(())
    }

    /// `PUT /v1/agent/service/deregister/<id>`. An unknown ID (404, the
    /// agent's answer, although the doc says no action) counts as done.
    pub async fn deregister_service(&self, id: &str) -> Result<(), AgentError> {
        let path = format!("/v1/agent/service/deregister/{id}");
        self.api
            .send(Method::PUT, &path, None)
            .await?
            .require(&[200, 404])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::sample;

    #[test]
    fn consul_leader_sample_parses_and_empty_means_no_leader() {
        assert_eq!(
            parse_consul_leader("u", &sample("consul/status_leader.json")).unwrap(),
            Some("10.1.10.12:8300".into())
        );
        assert_eq!(parse_consul_leader("u", b"\"\"").unwrap(), None);
    }

    #[test]
    fn peers_sample_parses_and_null_is_empty() {
        assert_eq!(
            parse_peers("u", &sample("consul/status_peers.json"))
                .unwrap()
                .len(),
            3
        );
        assert_eq!(
            parse_peers("u", &sample("nomad/status_peers.json")).unwrap(),
            vec!["127.0.0.1:4647".to_string()]
        );
        assert!(parse_peers("u", b"null").unwrap().is_empty());
    }

    #[test]
    fn consul_members_have_integer_status_and_null_wan_is_empty() {
        let m = parse_consul_members("u", &sample("consul/agent_members.json")).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].name, "foobar");
        assert!(m[0].is_alive());
        assert_eq!(m[0].tags.get("role").map(String::as_str), Some("consul"));
        assert!(parse_consul_members("u", b"null").unwrap().is_empty());
        assert!(
            parse_consul_members(
                "u",
                br#"[{"Name":"x","Addr":"a","Port":1,"Tags":null,"Status":4}]"#
            )
            .unwrap()[0]
                .tags
                .is_empty()
        );
    }

    #[test]
    fn consul_members_with_string_status_are_refused() {
        // Nomad's shape is not Consul's: keep them apart.
        let body = br#"[{"Name":"x","Addr":"a","Port":1,"Tags":{},"Status":"alive"}]"#;
        assert!(parse_consul_members("u", body).is_err());
    }

    #[test]
    fn consul_agent_self_sample_parses() {
        let s: ConsulSelf = decode("u", &sample("consul/agent_self.json")).unwrap();
        assert_eq!(s.config.node_name, "foobar");
        assert_eq!(s.config.datacenter, "dc1");
        assert!(s.config.server);
        assert_eq!(s.config.version, "1.0.0");
        assert_eq!(s.member.unwrap().status, 1);
    }

    #[test]
    fn autopilot_last_contact_parses_as_string_and_as_nanoseconds() {
        let c: AutopilotHealth =
            decode("u", &sample("consul/operator_autopilot_health.json")).unwrap();
        assert!(c.healthy);
        assert_eq!(c.failure_tolerance, 0);
        assert_eq!(c.servers.len(), 2);
        assert_eq!(c.servers[0].last_contact, Some(Duration::ZERO));
        assert_eq!(
            c.servers[1].last_contact,
            Some(Duration::from_nanos(27_291_304))
        );
        let n: AutopilotHealth =
            decode("u", &sample("nomad/operator_autopilot_health.json")).unwrap();
        assert_eq!(n.servers.len(), 2);
        // The real Nomad encodes time.Duration as a number of nanoseconds.
        let real = br#"{"Healthy":false,"FailureTolerance":1,"Servers":[{"ID":"a","Name":"n","Address":"x:4647","SerfStatus":"alive","Version":"1.9.3","Leader":false,"LastContact":27291304,"LastTerm":2,"LastIndex":46,"Healthy":false,"Voter":true,"StableSince":"2017-03-06T22:18:26Z"}]}"#;
        let r: AutopilotHealth = decode("u", real).unwrap();
        assert!(!r.healthy);
        assert_eq!(r.failure_tolerance, 1);
        assert_eq!(
            r.servers[0].last_contact,
            Some(Duration::from_nanos(27_291_304))
        );
    }

    #[test]
    fn registration_serialises_an_http_check_and_no_script() {
        let reg = ServiceRegistration {
            id: "hashi-supervisor-ams2-server-01".into(),
            name: "hashi-supervisor".into(),
            tags: vec![],
            address: "10.0.0.1".into(),
            port: 4680,
            meta: BTreeMap::new(),
            check: ServiceCheck {
                http: "http://10.0.0.1:4680/ready".into(),
                method: "GET".into(),
                interval: "10s".into(),
                timeout: "2s".into(),
                deregister_critical_service_after: "30m".into(),
            },
        };
        let v = serde_json::to_value(&reg).unwrap();
        assert_eq!(v["ID"], "hashi-supervisor-ams2-server-01");
        assert_eq!(v["Check"]["HTTP"], "http://10.0.0.1:4680/ready");
        assert!(v["Check"].get("Args").is_none());
        // Same key spelling as the documented payload.
        let doc: serde_json::Value =
            serde_json::from_slice(&sample("consul/agent_service_register.request.json")).unwrap();
        for k in ["ID", "Name", "Tags", "Address", "Port", "Meta", "Check"] {
            assert!(doc.get(k).is_some() && v.get(k).is_some(), "{k}");
        }
        assert!(doc["Check"].get("DeregisterCriticalServiceAfter").is_some());
    }
}

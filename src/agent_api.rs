//! Typed client of the Consul and Nomad HTTP endpoints the supervisor uses.
//!
//! Owns the response shapes (as the real agents produce them, quirks
//! included, see `tests/data/agent-api/README.md`) and one request per
//! endpoint. Every request is bounded by the client's timeout; nothing here
//! retries or caches: callers (the health checker, registration) decide.
//!
//! Parsing is split from fetching (`parse_*` functions) so the samples can be
//! fed to the parsers without sockets.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::agent_http::{AgentHttp, HttpError, PlainClient};

/// Default timeout of one request to a local agent.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Upper bound of an error body kept in an error message.
const MAX_ERROR_BODY_CHARS: usize = 200;
/// Serf's integer member status for a live member (Consul's `Status: 1`).
pub const SERF_STATUS_ALIVE: u8 = 1;

/// Why a request to an agent failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentApiError {
    /// The HTTP client could not be built.
    #[error("failed to build the agent http client")]
    Client(#[source] reqwest::Error),
    /// The request did not complete (connect, timeout, reset).
    #[error("failed to request {url}")]
    Request {
        /// The URL asked.
        url: String,
        /// The cause.
        #[source]
        source: HttpError,
    },
    /// The agent answered with an unexpected status.
    #[error("failed to get a successful answer from {url}: status {status}: {body}")]
    Status {
        /// The URL asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of the body (agents answer errors as text).
        body: String,
    },
    /// The CA of an agent's TLS API could not be read or parsed.
    #[error("failed to load the CA certificate {path} of the agent's https API")]
    Ca {
        /// The CA file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The body was not the expected JSON.
    #[error("failed to decode the answer of {url}")]
    Decode {
        /// The URL asked.
        url: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

impl AgentApiError {
    /// Whether the request timed out (a hung agent).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Request { source, .. } if source.is_timeout())
    }

    /// A one-line description, with the innermost cause, for health reasons.
    pub fn one_line(&self) -> String {
        let mut s = self.to_string();
        let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(self);
        let mut last = None;
        while let Some(e) = cur {
            last = Some(e.to_string());
            cur = e.source();
        }
        if self.is_timeout() {
            s.push_str(": timed out");
        } else if let Some(l) = last {
            s.push_str(": ");
            s.push_str(&l);
        }
        s
    }
}

/// The plain-HTTP client for agents, each exchange (connect included)
/// bounded by `timeout`: no proxy (agents are local or on the private
/// network), no TLS; idle connections are shared by all its users
/// (`agent_http`).
pub fn http_client(timeout: Duration) -> AgentHttp {
    AgentHttp::Plain(PlainClient::new(timeout))
}

/// One agent's API: the client to use and the base URL of its requests.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The client (plain, or reqwest holding the agent's CA).
    pub http: AgentHttp,
    /// `http://<addr>`, or `https://<server name>:<port>` for a TLS API.
    pub base: String,
}

impl Endpoint {
    /// The endpoint of the agent at `addr`: plain HTTP without `tls`;
    /// with it, HTTPS verified against `tls.ca_file` only (no public roots)
    /// under `tls.server_name`, which this client resolves to `addr`.
    pub fn new(
        addr: SocketAddr,
        tls: Option<&crate::plan::ApiTls>,
        timeout: Duration,
    ) -> Result<Self, AgentApiError> {
        let Some(tls) = tls else {
            return Ok(Self {
                http: http_client(timeout),
                base: format!("http://{addr}"),
            });
        };
        let ca_err = |source: Box<dyn std::error::Error + Send + Sync>| AgentApiError::Ca {
            path: tls.ca_file.clone(),
            source,
        };
        // A role-named file: a regular file with a size limit, never blocking.
        let pem =
            crate::role::file::read_regular(&tls.ca_file, crate::role::limits::TLS_FILE_BYTES)
                .map_err(|e| ca_err(Box::new(e)))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_err(Box::new(e)))?;
        if certs.is_empty() {
            return Err(ca_err("no PEM certificate in the file".into()));
        }
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .tls_built_in_root_certs(false)
            .https_only(true)
            .resolve(&tls.server_name, addr)
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_max_idle_per_host(2);
        for c in certs {
            b = b.add_root_certificate(c);
        }
        Ok(Self {
            http: AgentHttp::Tls(b.build().map_err(AgentApiError::Client)?),
            base: format!("https://{}:{}", tls.server_name, addr.port()),
        })
    }
}

fn truncate(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let s = s.trim();
    match s.char_indices().nth(MAX_ERROR_BODY_CHARS) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn decode<T: serde::de::DeserializeOwned>(url: &str, body: &[u8]) -> Result<T, AgentApiError> {
    serde_json::from_slice(body).map_err(|source| AgentApiError::Decode {
        url: url.to_string(),
        source,
    })
}

/// A raw answer: status and body.
struct Answer {
    url: String,
    status: u16,
    body: bytes::Bytes,
}

impl Answer {
    fn require(self, ok: &[u16]) -> Result<Self, AgentApiError> {
        if ok.contains(&self.status) {
            Ok(self)
        } else {
            Err(AgentApiError::Status {
                url: self.url,
                status: self.status,
                body: truncate(&self.body),
            })
        }
    }
}

async fn send(
    http: &AgentHttp,
    method: hyper::Method,
    url: String,
    json: Option<Vec<u8>>,
) -> Result<Answer, AgentApiError> {
    match http.send(method, &url, json).await {
        Ok(a) => Ok(Answer {
            url,
            status: a.status,
            body: a.body,
        }),
        Err(source) => Err(AgentApiError::Request { url, source }),
    }
}

// ---------------------------------------------------------------- shapes ---

/// A Go `time.Duration` as the agents encode it: a number of nanoseconds
/// (Nomad) or a duration string such as `"27.291304ms"` (Consul's
/// `api.ReadableDuration`).
fn de_go_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Nanos(u64),
        Float(f64),
        Text(String),
    }
    Ok(match Option::<Raw>::deserialize(d)? {
        None => None,
        Some(Raw::Nanos(n)) => Some(Duration::from_nanos(n)),
        Some(Raw::Float(f)) if f.is_finite() && f >= 0.0 => Some(Duration::from_nanos(f as u64)),
        Some(Raw::Float(_)) => None,
        Some(Raw::Text(s)) => parse_go_duration(&s),
    })
}

/// Parses a Go duration string (`"0s"`, `"1m30s"`, `"27.291304ms"`, `"5µs"`).
/// Negative or malformed durations give `None`.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return None;
        }
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += n * nanos_per;
    }
    Some(Duration::from_nanos(total as u64))
}

fn de_null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

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
    pub check: HttpCheck,
}

/// An HTTP check definition (never a script check: a default agent refuses
/// those from the HTTP API).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct HttpCheck {
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
pub fn parse_consul_leader(url: &str, body: &[u8]) -> Result<Option<String>, AgentApiError> {
    let s: String = decode(url, body)?;
    Ok((!s.is_empty()).then_some(s))
}

/// Consul or Nomad `/v1/status/peers`: `null` (Consul before bootstrap)
/// becomes an empty list.
pub fn parse_peers(url: &str, body: &[u8]) -> Result<Vec<String>, AgentApiError> {
    Ok(decode::<Option<Vec<String>>>(url, body)?.unwrap_or_default())
}

/// Consul `/v1/agent/members` (LAN or WAN); `null` (WAN on a client) is empty.
pub fn parse_consul_members(url: &str, body: &[u8]) -> Result<Vec<ConsulMember>, AgentApiError> {
    Ok(decode::<Option<Vec<ConsulMember>>>(url, body)?.unwrap_or_default())
}

/// Nomad `/v1/status/leader`: a JSON string; empty means no leader.
pub fn parse_nomad_leader(url: &str, body: &[u8]) -> Result<Option<String>, AgentApiError> {
    parse_consul_leader(url, body)
}

// ---------------------------------------------------------------- clients ---

/// Client of one Consul agent's HTTP API.
#[derive(Debug, Clone)]
pub struct ConsulClient {
    http: AgentHttp,
    base: String,
}

impl ConsulClient {
    /// A client of the agent at `addr` over plain HTTP.
    pub fn new(http: AgentHttp, addr: SocketAddr) -> Self {
        Self::at(Endpoint {
            http,
            base: format!("http://{addr}"),
        })
    }

    /// A client of the agent behind `endpoint` (plain or TLS).
    pub fn at(endpoint: Endpoint) -> Self {
        Self {
            http: endpoint.http,
            base: endpoint.base,
        }
    }

    async fn get(&self, path: &str, ok: &[u16]) -> Result<Answer, AgentApiError> {
        let url = format!("{}{path}", self.base);
        send(&self.http, hyper::Method::GET, url, None)
            .await?
            .require(ok)
    }

    /// `GET /v1/status/leader`; `None` when the cluster has no leader.
    pub async fn leader(&self) -> Result<Option<String>, AgentApiError> {
        let a = self.get("/v1/status/leader", &[200]).await?;
        parse_consul_leader(&a.url, &a.body)
    }

    /// `GET /v1/status/peers`.
    pub async fn peers(&self) -> Result<Vec<String>, AgentApiError> {
        let a = self.get("/v1/status/peers", &[200]).await?;
        parse_peers(&a.url, &a.body)
    }

    /// `GET /v1/agent/self`.
    pub async fn agent_self(&self) -> Result<ConsulSelf, AgentApiError> {
        let a = self.get("/v1/agent/self", &[200]).await?;
        decode(&a.url, &a.body)
    }

    /// `GET /v1/agent/members` (`?wan=1` for the WAN pool).
    pub async fn members(&self, wan: bool) -> Result<Vec<ConsulMember>, AgentApiError> {
        let path = if wan {
            "/v1/agent/members?wan=1"
        } else {
            "/v1/agent/members"
        };
        let a = self.get(path, &[200]).await?;
        parse_consul_members(&a.url, &a.body)
    }

    /// `GET /v1/operator/autopilot/health`; 429 (unhealthy) carries the
    /// same body and is not an error.
    pub async fn autopilot_health(&self) -> Result<AutopilotHealth, AgentApiError> {
        let a = self
            .get("/v1/operator/autopilot/health", &[200, 429])
            .await?;
        decode(&a.url, &a.body)
    }

    /// `PUT /v1/agent/service/register`.
    pub async fn register_service(&self, reg: &ServiceRegistration) -> Result<(), AgentApiError> {
        let url = format!("{}/v1/agent/service/register", self.base);
        let body = serde_json::to_vec(reg).map_err(|source| AgentApiError::Decode {
            url: url.clone(),
            source,
        })?;
        send(&self.http, hyper::Method::PUT, url, Some(body))
            .await?
            .require(&[200])?;
        Ok(())
    }

    /// Whether the local agent has a service with ID `id`
    /// (`GET /v1/agent/services`, a map keyed by service ID).
    pub async fn has_service(&self, id: &str) -> Result<bool, AgentApiError> {
        let a = self.get("/v1/agent/services", &[200]).await?;
        let services: std::collections::BTreeMap<String, serde::de::IgnoredAny> =
            decode(&a.url, &a.body)?;
        Ok(services.contains_key(id))
    }

    /// `PUT /v1/agent/service/deregister/<id>`. An unknown ID (404, the
    /// agent's answer, although the doc says no action) counts as done.
    pub async fn deregister_service(&self, id: &str) -> Result<(), AgentApiError> {
        let url = format!("{}/v1/agent/service/deregister/{id}", self.base);
        send(&self.http, hyper::Method::PUT, url, None)
            .await?
            .require(&[200, 404])?;
        Ok(())
    }
}

/// Client of one Nomad agent's HTTP API.
#[derive(Debug, Clone)]
pub struct NomadClient {
    http: AgentHttp,
    base: String,
}

impl NomadClient {
    /// A client of the agent at `addr` over plain HTTP.
    pub fn new(http: AgentHttp, addr: SocketAddr) -> Self {
        Self::at(Endpoint {
            http,
            base: format!("http://{addr}"),
        })
    }

    /// A client of the agent behind `endpoint` (plain or TLS).
    pub fn at(endpoint: Endpoint) -> Self {
        Self {
            http: endpoint.http,
            base: endpoint.base,
        }
    }

    async fn get(&self, path: &str, ok: &[u16]) -> Result<Answer, AgentApiError> {
        let url = format!("{}{path}", self.base);
        send(&self.http, hyper::Method::GET, url, None)
            .await?
            .require(ok)
    }

    /// `GET /v1/agent/health`. Unhealthy is 500 with the JSON in a
    /// `text/plain` body; that is a result, not an error.
    pub async fn health(&self) -> Result<NomadHealth, AgentApiError> {
        let a = self.get("/v1/agent/health", &[200, 500]).await?;
        match decode(&a.url, &a.body) {
            Ok(h) => Ok(h),
            Err(e) if a.status == 200 => Err(e),
            Err(_) => Err(AgentApiError::Status {
                url: a.url,
                status: a.status,
                body: truncate(&a.body),
            }),
        }
    }

    /// `GET /v1/agent/self`.
    pub async fn agent_self(&self) -> Result<NomadSelf, AgentApiError> {
        let a = self.get("/v1/agent/self", &[200]).await?;
        decode(&a.url, &a.body)
    }

    /// `GET /v1/agent/members` (servers only).
    pub async fn members(&self) -> Result<NomadMembers, AgentApiError> {
        let a = self.get("/v1/agent/members", &[200]).await?;
        decode(&a.url, &a.body)
    }

    /// `GET /v1/status/leader?stale`: `?stale` so a server without a leader
    /// answers at once instead of holding the request for 5 s and answering
    /// `500 No cluster leader` (nomad/rpc.go).
    pub async fn leader(&self) -> Result<Option<String>, AgentApiError> {
        let a = self.get("/v1/status/leader?stale", &[200]).await?;
        parse_nomad_leader(&a.url, &a.body)
    }

    /// `GET /v1/nodes`.
    pub async fn nodes(&self) -> Result<Vec<NomadNode>, AgentApiError> {
        let a = self.get("/v1/nodes", &[200]).await?;
        Ok(decode::<Option<Vec<NomadNode>>>(&a.url, &a.body)?.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn sample(rel: &str) -> Vec<u8> {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/agent-api")
            .join(rel);
        std::fs::read(&p)
            .unwrap_or_else(|e| panic!("failed to read test data {}: {e}", p.display()))
    }

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
    fn go_durations_parse() {
        assert_eq!(parse_go_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("5µs"), Some(Duration::from_micros(5)));
        assert_eq!(parse_go_duration("abc"), None);
        assert_eq!(parse_go_duration("-1s"), None);
        assert_eq!(parse_go_duration(""), None);
    }

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
    fn nomad_leader_and_nodes_samples_parse() {
        assert_eq!(
            parse_nomad_leader("u", &sample("nomad/status_leader.json")).unwrap(),
            Some("127.0.0.1:4647".into())
        );
        let n: Vec<NomadNode> = decode("u", &sample("nomad/nodes.json")).unwrap();
        assert_eq!(n[0].name, "nomad-4");
        assert_eq!(n[0].status, "ready");
    }

    #[test]
    fn every_manifest_body_is_valid_json() {
        // Guards against a sample the parsers above silently skip.
        let manifest: serde_json::Value = serde_json::from_slice(&sample("manifest.json")).unwrap();
        let mut n = 0;
        for product in ["consul", "nomad"] {
            for e in manifest[product].as_array().unwrap() {
                if let Some(b) = e["body"].as_str() {
                    let body = sample(&format!("{product}/{b}"));
                    serde_json::from_slice::<serde_json::Value>(&body)
                        .unwrap_or_else(|err| panic!("{product}/{b}: {err}"));
                    n += 1;
                }
            }
        }
        assert!(n >= 15, "only {n} bodies");
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
            check: HttpCheck {
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

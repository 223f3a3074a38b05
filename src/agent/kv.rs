//! Consul's KV store and sessions: the requests of Consul's documented lock
//! pattern (a session with a TTL, `PUT /v1/kv/<key>?acquire=<session>`,
//! renew while holding, `?release=` when done; Consul API docs "KV Store"
//! and "Session"), the catalog's node list and its datacenters. Every
//! request may name a datacenter (`?dc=`): the agent forwards it to that
//! datacenter's servers.
//!
//! What it must not do: decide anything about locks (who may hold what is
//! the upgrade logic's), retry, or log a value (a KV value may be anything
//! an operator wrote).
//!
//! A request that breaks before any answer is sent once more by the
//! transport: harmless for every request here but `session_create`, where
//! a lost answer leaves an unused session that Consul invalidates after
//! its TTL (and the caller creates another).

use std::time::Duration;

use base64::Engine as _;
use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::consul::{ConsulClient, percent_encode};
use super::{AgentError, Answer, decode, truncate};

/// Shortest session TTL Consul accepts (Session API docs: "between 10s and
/// 86400s").
pub const SESSION_TTL_MIN: Duration = Duration::from_secs(10);
/// Longest session TTL Consul accepts.
pub const SESSION_TTL_MAX: Duration = Duration::from_secs(86_400);
/// Longest lock delay Consul applies (its session endpoint caps
/// `LockDelay` at 60 s).
pub const LOCK_DELAY_MAX: Duration = Duration::from_secs(60);

/// One KV entry, its value decoded from base64.
#[derive(Clone, PartialEq, Eq)]
pub struct KvPair {
    /// Full key.
    pub key: String,
    /// Value (empty when Consul answers `null`).
    pub value: Vec<u8>,
    /// The session holding the key's lock, if any.
    pub session: Option<String>,
    /// How many times the key's lock was acquired.
    pub lock_index: u64,
    /// The last index that modified the key (for `?cas=`).
    pub modify_index: u64,
    /// Opaque flags.
    pub flags: u64,
}

impl std::fmt::Debug for KvPair {
    // The value may be anything an operator stored: its length only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvPair")
            .field("key", &self.key)
            .field("value_len", &self.value.len())
            .field("session", &self.session)
            .field("lock_index", &self.lock_index)
            .field("modify_index", &self.modify_index)
            .field("flags", &self.flags)
            .finish()
    }
}

/// A KV entry as Consul encodes it (`GET /v1/kv/<key>`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawKvPair {
    key: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    lock_index: u64,
    #[serde(default)]
    modify_index: u64,
    #[serde(default)]
    flags: u64,
}

/// What `PUT /v1/session/create` is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRequest {
    /// Human-readable name.
    pub name: String,
    /// The session is invalidated when not renewed within its TTL (Consul
    /// waits up to twice the TTL). Clamped to
    /// [`SESSION_TTL_MIN`]..=[`SESSION_TTL_MAX`], the range Consul accepts.
    pub ttl: Duration,
    /// `Behavior: "delete"` (the held keys are deleted on invalidation)
    /// instead of `"release"`.
    pub behavior_delete: bool,
    /// After an invalidation, how long the keys it held cannot be acquired
    /// (clamped to [`LOCK_DELAY_MAX`]; zero is sent as `0s`).
    pub lock_delay: Duration,
    /// The node of the session; `None`: the agent's node.
    pub node: Option<String>,
    /// Node checks that invalidate the session; `None`: Consul's default
    /// (`serfHealth`); `Some(vec![])`: none, the TTL alone.
    pub node_checks: Option<Vec<String>>,
}

/// The JSON body of `PUT /v1/session/create`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct SessionCreateBody<'a> {
    name: &'a str,
    #[serde(rename = "TTL")]
    ttl: String,
    behavior: &'static str,
    lock_delay: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node_checks: Option<&'a [String]>,
}

impl SessionRequest {
    fn body(&self) -> SessionCreateBody<'_> {
        SessionCreateBody {
            name: &self.name,
            ttl: go_duration(self.ttl.clamp(SESSION_TTL_MIN, SESSION_TTL_MAX)),
            behavior: if self.behavior_delete {
                "delete"
            } else {
                "release"
            },
            lock_delay: go_duration(self.lock_delay.min(LOCK_DELAY_MAX)),
            node: self.node.as_deref(),
            node_checks: self.node_checks.as_deref(),
        }
    }
}

/// A duration as a Go duration string Consul parses: whole seconds as
/// `Ns`, anything finer as `Nms`.
fn go_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// `PUT /v1/session/create`'s answer.
#[derive(Debug, Deserialize)]
struct SessionCreated {
    #[serde(rename = "ID")]
    id: String,
}

/// One entry of Consul's node catalog (`GET /v1/catalog/nodes`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CatalogNode {
    /// Node name.
    pub node: String,
    /// Address.
    #[serde(default)]
    pub address: String,
    /// Datacenter.
    #[serde(default)]
    pub datacenter: String,
}

/// A session as Consul describes it (`/v1/session/info`, `/renew`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SessionInfo {
    /// Session ID.
    #[serde(rename = "ID")]
    pub id: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Node.
    #[serde(default)]
    pub node: String,
    /// `release` or `delete`.
    #[serde(default)]
    pub behavior: String,
    /// TTL as a Go duration string (Consul may answer a longer one than
    /// asked when loaded).
    #[serde(rename = "TTL", default)]
    pub ttl: String,
}

// --------------------------------------------------------------- parsers ---

/// `GET /v1/kv/<key>` (with or without `?recurse`): a list of entries,
/// values base64-decoded.
pub fn parse_kv_pairs(url: &str, body: &[u8]) -> Result<Vec<KvPair>, AgentError> {
    let raw: Option<Vec<RawKvPair>> = decode(url, body)?;
    raw.unwrap_or_default()
        .into_iter()
        .map(|r| {
            let value = match r.value.as_deref() {
                None | Some("") => Vec::new(),
                Some(v) => base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .map_err(|_| AgentError::Status {
                        url: url.to_string(),
                        status: 200,
                        body: format!("the value of key {:?} is not base64", r.key),
                    })?,
            };
            Ok(KvPair {
                key: r.key,
                value,
                session: r.session.filter(|s| !s.is_empty()),
                lock_index: r.lock_index,
                modify_index: r.modify_index,
                flags: r.flags,
            })
        })
        .collect()
}

/// `PUT /v1/session/create`: the new session's ID.
pub fn parse_session_created(url: &str, body: &[u8]) -> Result<String, AgentError> {
    Ok(decode::<SessionCreated>(url, body)?.id)
}

/// `GET /v1/session/info/<id>`, `PUT /v1/session/renew/<id>`: a list of
/// sessions (empty: unknown session).
pub fn parse_sessions(url: &str, body: &[u8]) -> Result<Vec<SessionInfo>, AgentError> {
    Ok(decode::<Option<Vec<SessionInfo>>>(url, body)?.unwrap_or_default())
}

/// The KV and session answers that are a bare JSON `true` or `false`.
pub fn parse_bool(url: &str, body: &[u8]) -> Result<bool, AgentError> {
    decode(url, body)
}

/// `GET /v1/catalog/nodes`.
pub fn parse_catalog_nodes(url: &str, body: &[u8]) -> Result<Vec<CatalogNode>, AgentError> {
    Ok(decode::<Option<Vec<CatalogNode>>>(url, body)?.unwrap_or_default())
}

/// `GET /v1/catalog/datacenters`: the federation's datacenter names.
pub fn parse_datacenters(url: &str, body: &[u8]) -> Result<Vec<String>, AgentError> {
    Ok(decode::<Option<Vec<String>>>(url, body)?.unwrap_or_default())
}

/// `key` as a URL path: each `/`-separated segment percent-encoded.
fn key_path(key: &str) -> String {
    key.split('/')
        .map(percent_encode)
        .collect::<Vec<_>>()
        .join("/")
}

/// `path` with `params` (and `dc=` when given) as its query.
fn with_query(path: &str, dc: Option<&str>, params: &[(&str, Option<&str>)]) -> String {
    let mut parts: Vec<String> = params
        .iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k}={}", percent_encode(v)),
            None => (*k).to_string(),
        })
        .collect();
    if let Some(dc) = dc {
        parts.push(format!("dc={}", percent_encode(dc)));
    }
    if parts.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", parts.join("&"))
    }
}

impl ConsulClient {
    async fn put_raw(&self, path: &str, body: Option<Vec<u8>>) -> Result<Answer, AgentError> {
        self.endpoint()
            .send(Method::PUT, path, body)
            .await?
            .require(&[200])
    }

    /// `PUT /v1/session/create`: a new session, its ID.
    pub async fn session_create(
        &self,
        dc: Option<&str>,
        req: &SessionRequest,
    ) -> Result<String, AgentError> {
        let path = with_query("/v1/session/create", dc, &[]);
        let body = serde_json::to_vec(&req.body()).map_err(|source| AgentError::Decode {
            url: format!("{}{path}", self.endpoint().base()),
            source,
        })?;
        let a = self.put_raw(&path, Some(body)).await?;
        parse_session_created(&a.url, &a.body)
    }

    /// `PUT /v1/session/renew/<id>`: `false` when the session is gone (404:
    /// invalidated or destroyed); its locks are then lost.
    pub async fn session_renew(&self, dc: Option<&str>, id: &str) -> Result<bool, AgentError> {
        let path = with_query(
            &format!("/v1/session/renew/{}", percent_encode(id)),
            dc,
            &[],
        );
        let a = self
            .endpoint()
            .send(Method::PUT, &path, None)
            .await?
            .require(&[200, 404])?;
        if a.status == 404 {
            return Ok(false);
        }
        Ok(parse_sessions(&a.url, &a.body)?.iter().any(|s| s.id == id))
    }

    /// `PUT /v1/session/destroy/<id>` (an unknown session is not an error:
    /// the endpoint is idempotent). The keys it held are released.
    pub async fn session_destroy(&self, dc: Option<&str>, id: &str) -> Result<(), AgentError> {
        let path = with_query(
            &format!("/v1/session/destroy/{}", percent_encode(id)),
            dc,
            &[],
        );
        self.put_raw(&path, None).await?;
        Ok(())
    }

    /// `GET /v1/session/info/<id>`: `None` when the session does not exist.
    pub async fn session_info(
        &self,
        dc: Option<&str>,
        id: &str,
    ) -> Result<Option<SessionInfo>, AgentError> {
        let path = with_query(&format!("/v1/session/info/{}", percent_encode(id)), dc, &[]);
        let a = self.endpoint().get(&path, &[200]).await?;
        Ok(parse_sessions(&a.url, &a.body)?
            .into_iter()
            .find(|s| s.id == id))
    }

    /// `GET /v1/kv/<key>`: `None` when the key does not exist (404).
    pub async fn kv_get(&self, dc: Option<&str>, key: &str) -> Result<Option<KvPair>, AgentError> {
        let path = with_query(&format!("/v1/kv/{}", key_path(key)), dc, &[]);
        let a = self.endpoint().get(&path, &[200, 404]).await?;
        if a.status == 404 {
            return Ok(None);
        }
        Ok(parse_kv_pairs(&a.url, &a.body)?
            .into_iter()
            .find(|p| p.key == key))
    }

    /// `GET /v1/kv/<prefix>?recurse`: every key under `prefix` (none: 404).
    pub async fn kv_list(&self, dc: Option<&str>, prefix: &str) -> Result<Vec<KvPair>, AgentError> {
        let path = with_query(
            &format!("/v1/kv/{}", key_path(prefix)),
            dc,
            &[("recurse", None)],
        );
        let a = self.endpoint().get(&path, &[200, 404]).await?;
        if a.status == 404 {
            return Ok(Vec::new());
        }
        parse_kv_pairs(&a.url, &a.body)
    }

    /// `PUT /v1/kv/<key>` with `value` as the body: whether it was written.
    pub async fn kv_put(
        &self,
        dc: Option<&str>,
        key: &str,
        value: &[u8],
    ) -> Result<bool, AgentError> {
        let path = with_query(&format!("/v1/kv/{}", key_path(key)), dc, &[]);
        let a = self.put_raw(&path, Some(value.to_vec())).await?;
        parse_bool(&a.url, &a.body)
    }

    /// `PUT /v1/kv/<key>?cas=<index>`: written only when the key's
    /// `ModifyIndex` is `index` (0: only when the key does not exist).
    pub async fn kv_cas(
        &self,
        dc: Option<&str>,
        key: &str,
        index: u64,
        value: &[u8],
    ) -> Result<bool, AgentError> {
        let index = index.to_string();
        let path = with_query(
            &format!("/v1/kv/{}", key_path(key)),
            dc,
            &[("cas", Some(&index))],
        );
        let a = self.put_raw(&path, Some(value.to_vec())).await?;
        parse_bool(&a.url, &a.body)
    }

    /// `PUT /v1/kv/<key>?acquire=<session>`: whether `session` now holds
    /// the key's lock (`true` also when it already held it; `false` when
    /// another session holds it, or within the lock delay of an
    /// invalidated holder).
    pub async fn kv_acquire(
        &self,
        dc: Option<&str>,
        key: &str,
        session: &str,
        value: &[u8],
    ) -> Result<bool, AgentError> {
        let path = with_query(
            &format!("/v1/kv/{}", key_path(key)),
            dc,
            &[("acquire", Some(session))],
        );
        let a = self.put_raw(&path, Some(value.to_vec())).await?;
        parse_bool(&a.url, &a.body)
    }

    /// `PUT /v1/kv/<key>?release=<session>`: whether the lock was released
    /// (`false` when `session` did not hold it).
    pub async fn kv_release(
        &self,
        dc: Option<&str>,
        key: &str,
        session: &str,
        value: &[u8],
    ) -> Result<bool, AgentError> {
        let path = with_query(
            &format!("/v1/kv/{}", key_path(key)),
            dc,
            &[("release", Some(session))],
        );
        let a = self.put_raw(&path, Some(value.to_vec())).await?;
        parse_bool(&a.url, &a.body)
    }

    /// `DELETE /v1/kv/<key>` (a missing key is not an error).
    pub async fn kv_delete(&self, dc: Option<&str>, key: &str) -> Result<(), AgentError> {
        let path = with_query(&format!("/v1/kv/{}", key_path(key)), dc, &[]);
        self.endpoint()
            .send(Method::DELETE, &path, None)
            .await?
            .require(&[200])?;
        Ok(())
    }

    /// `GET /v1/catalog/nodes`: the names of the datacenter's nodes.
    pub async fn catalog_nodes(&self, dc: Option<&str>) -> Result<Vec<String>, AgentError> {
        Ok(self
            .catalog_node_entries(dc)
            .await?
            .into_iter()
            .map(|n| n.node)
            .collect())
    }

    /// `GET /v1/catalog/nodes`: the datacenter's nodes.
    pub async fn catalog_node_entries(
        &self,
        dc: Option<&str>,
    ) -> Result<Vec<CatalogNode>, AgentError> {
        let path = with_query("/v1/catalog/nodes", dc, &[]);
        let a = self.endpoint().get(&path, &[200]).await?;
        parse_catalog_nodes(&a.url, &a.body)
    }

    /// `GET /v1/catalog/service/consul`: the Consul servers of `dc` (every
    /// server registers the `consul` service), node names sorted.
    pub async fn consul_servers(&self, dc: Option<&str>) -> Result<Vec<String>, AgentError> {
        let path = with_query("/v1/catalog/service/consul", dc, &[]);
        let a = self.endpoint().get(&path, &[200]).await?;
        let mut names: Vec<String> = parse_catalog_nodes(&a.url, &a.body)?
            .into_iter()
            .map(|n| n.node)
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// `GET /v1/catalog/datacenters`: every datacenter of the WAN
    /// federation the agent's servers know (Consul orders them by round
    /// trip time, nearest first: sort them for a stable choice). A client
    /// agent answers through its servers.
    pub async fn catalog_datacenters(&self) -> Result<Vec<String>, AgentError> {
        let a = self
            .endpoint()
            .get("/v1/catalog/datacenters", &[200])
            .await?;
        parse_datacenters(&a.url, &a.body)
    }

    /// `POST /v1/operator/raft/transfer-leader` (Consul 1.15 and later):
    /// the leader hands leadership to another server of its choice. The
    /// agent answers `{"Success": bool}` (the Go API's
    /// `TransferLeaderResponse`); `false` is an error here.
    pub async fn transfer_leader(&self) -> Result<(), AgentError> {
        let a = self
            .endpoint()
            .send(Method::POST, "/v1/operator/raft/transfer-leader", None)
            .await?
            .require(&[200])?;
        #[derive(Deserialize)]
        struct Transferred {
            #[serde(rename = "Success")]
            success: bool,
        }
        let t: Transferred = decode(&a.url, &a.body)?;
        if !t.success {
            return Err(AgentError::Status {
                url: a.url,
                status: a.status,
                body: format!("leadership was not transferred: {}", truncate(&a.body)),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::sample;

    #[test]
    fn kv_sample_decodes_base64_value_and_session() {
        let p = parse_kv_pairs("u", &sample("consul/kv_get.json")).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].key, "zip");
        assert_eq!(p[0].value, b"test");
        assert_eq!(
            p[0].session.as_deref(),
            Some("adf4238a-882b-9ddc-4a9d-5b6758e4159e")
        );
        assert_eq!(
            (p[0].lock_index, p[0].modify_index, p[0].flags),
            (200, 200, 0)
        );
        assert_eq!(
            parse_kv_pairs("u", &sample("consul/kv_list.json")).unwrap(),
            p
        );
    }

    #[test]
    fn kv_null_value_is_empty_and_bad_base64_is_an_error() {
        let p = parse_kv_pairs(
            "u",
            br#"[{"Key":"a","Value":null,"LockIndex":0,"ModifyIndex":3,"Flags":0,"CreateIndex":3}]"#,
        )
        .unwrap();
        assert!(p[0].value.is_empty());
        assert!(p[0].session.is_none());
        assert!(parse_kv_pairs("u", br#"[{"Key":"a","Value":"%%%"}]"#).is_err());
        assert!(parse_kv_pairs("u", b"null").unwrap().is_empty());
    }

    #[test]
    fn kv_debug_shows_no_value() {
        let p = parse_kv_pairs("u", &sample("consul/kv_get.json")).unwrap();
        let d = format!("{:?}", p[0]);
        assert!(d.contains("value_len: 4") && !d.contains("test"), "{d}");
    }

    #[test]
    fn session_samples_parse() {
        assert_eq!(
            parse_session_created("u", &sample("consul/session_create.json")).unwrap(),
            "adf4238a-882b-9ddc-4a9d-5b6758e4159e"
        );
        let s = parse_sessions("u", &sample("consul/session_info.json")).unwrap();
        assert_eq!(s[0].behavior, "release");
        assert_eq!(s[0].ttl, "30s");
        assert_eq!(
            parse_sessions("u", &sample("consul/session_renew.json")).unwrap(),
            s
        );
        assert!(parse_sessions("u", b"[]").unwrap().is_empty());
        assert!(parse_bool("u", &sample("consul/session_destroy.json")).unwrap());
        assert!(parse_bool("u", &sample("consul/kv_put.json")).unwrap());
    }

    #[test]
    fn session_request_uses_the_documented_keys_and_clamps_ranges() {
        let req = SessionRequest {
            name: "upgrade".into(),
            ttl: Duration::from_secs(1),
            behavior_delete: true,
            lock_delay: Duration::from_millis(1500),
            node: None,
            node_checks: Some(vec![]),
        };
        let v = serde_json::to_value(req.body()).unwrap();
        assert_eq!(v["TTL"], "10s");
        assert_eq!(v["Behavior"], "delete");
        assert_eq!(v["LockDelay"], "1500ms");
        assert!(v.get("Node").is_none());
        assert_eq!(v["NodeChecks"], serde_json::json!([]));
        let long = SessionRequest {
            ttl: Duration::from_secs(1_000_000),
            lock_delay: Duration::from_secs(600),
            behavior_delete: false,
            node_checks: None,
            ..req
        };
        let v = serde_json::to_value(long.body()).unwrap();
        assert_eq!(v["TTL"], "86400s");
        assert_eq!(v["LockDelay"], "60s");
        assert_eq!(v["Behavior"], "release");
        assert!(v.get("NodeChecks").is_none());
        let doc: serde_json::Value =
            serde_json::from_slice(&sample("consul/session_create.request.json")).unwrap();
        for k in ["Name", "TTL", "Behavior", "LockDelay"] {
            assert!(doc.get(k).is_some() && v.get(k).is_some(), "{k}");
        }
    }

    #[test]
    fn catalog_nodes_sample_parses() {
        let n = parse_catalog_nodes("u", &sample("consul/catalog_nodes.json")).unwrap();
        assert_eq!(
            n.iter().map(|n| n.node.as_str()).collect::<Vec<_>>(),
            ["baz", "t2.320"]
        );
        assert_eq!(n[1].datacenter, "dc2");
    }

    #[test]
    fn catalog_service_sample_parses_as_nodes() {
        let nodes = parse_catalog_nodes("u", &sample("consul/catalog_service.json")).unwrap();
        assert_eq!(nodes[0].node, "t2.320");
    }

    #[test]
    fn catalog_datacenters_sample_parses() {
        assert_eq!(
            parse_datacenters("u", &sample("consul/catalog_datacenters.json")).unwrap(),
            ["dc1", "dc2"]
        );
        assert!(parse_datacenters("u", b"null").unwrap().is_empty());
        assert!(parse_datacenters("u", b"{}").is_err());
    }

    #[test]
    fn keys_and_queries_are_encoded() {
        assert_eq!(
            key_path("hashi-supervisor/upgrade/consul/ams2/lock"),
            "hashi-supervisor/upgrade/consul/ams2/lock"
        );
        assert_eq!(key_path("a b/c?d"), "a%20b/c%3Fd");
        assert_eq!(
            with_query("/v1/kv/x", Some("lon1"), &[("acquire", Some("s 1"))]),
            "/v1/kv/x?acquire=s%201&dc=lon1"
        );
        assert_eq!(
            with_query("/v1/kv/x", None, &[("recurse", None)]),
            "/v1/kv/x?recurse"
        );
        assert_eq!(with_query("/v1/kv/x", None, &[]), "/v1/kv/x");
        assert_eq!(go_duration(Duration::from_secs(15)), "15s");
        assert_eq!(go_duration(Duration::ZERO), "0s");
    }
}

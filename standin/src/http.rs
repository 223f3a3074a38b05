//! The stand-in's HTTP API: the Consul and Nomad endpoints hashi-supervisor
//! uses, with the shapes of the `tests/data/agent-api/` samples and the
//! quirks the stand-in's README lists, plus the hidden `/_standin/gossip`
//! endpoint.

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::Product;
use crate::agent::Shared;
use crate::gossip;
use crate::link;
use crate::state::{ALIVE, FAILED, LEAVING, LEFT, Member, Pool, host_port, now_ms};

pub(crate) type Resp = Response<Full<Bytes>>;

/// The stand-in-only list of verified TLS peer handshakes.
pub const TLS_PEERS_PATH: &str = "/_standin/tls-peers";
/// The stand-in-only list of requests refused by the ACL check.
pub const DENIED_PATH: &str = "/_standin/acl-denied";

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The HTTP(S) API (and, without TLS, the gossip endpoint).
    Api,
    /// A serf port with TLS on: the gossip endpoint only.
    Gossip,
    /// The RPC port over TLS: the stand-in's RPC links and gossip.
    Rpc,
}

/// What is known of a connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub kind: Kind,
    pub remote: String,
    /// A client certificate was presented and verified against the CA.
    pub client_cert: bool,
    /// That certificate also carries this DC's / region's server name.
    pub peer_server: bool,
}

/// Which TLS side a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsSide {
    /// The HTTPS API ([`crate::tls::NodeTls::https_acceptor`]).
    Https,
    /// The RPC port ([`crate::tls::NodeTls::rpc_acceptor`]).
    Rpc,
}

/// The acceptor of `side` from the TLS material of the moment (so a
/// reload's new certificate serves the next connection).
fn acceptor(shared: &Shared, side: TlsSide) -> Option<TlsAcceptor> {
    let t = shared.tls()?;
    match side {
        TlsSide::Https => t.https_acceptor(),
        TlsSide::Rpc => t.rpc_acceptor(),
    }
    .ok()
}

/// Accept connections forever on `listener` (over TLS with `tls`).
pub fn serve(shared: Arc<Shared>, listener: TcpListener, tls: Option<TlsSide>, kind: Kind) {
    let hang = crate::knobs::var("STANDIN_HTTP_HANG").is_some_and(|v| v == "1");
    tokio::spawn(async move {
        loop {
            let Ok((stream, remote)) = listener.accept().await else {
                continue;
            };
            if hang {
                // Keep the connection open and never answer.
                tokio::spawn(async move {
                    let _keep = stream;
                    std::future::pending::<()>().await;
                });
                continue;
            }
            let shared = shared.clone();
            tokio::spawn(async move {
                let http = hyper::server::conn::http1::Builder::new();
                let mut info = ConnInfo {
                    kind,
                    remote: remote.to_string(),
                    client_cert: false,
                    peer_server: false,
                };
                match tls {
                    // A failed handshake (plain HTTP, unknown CA, no client
                    // certificate when one is required) just closes.
                    Some(side) => {
                        let Some(tls) = acceptor(&shared, side) else {
                            return;
                        };
                        if let Ok(stream) = tls.accept(stream).await {
                            let certs = stream.get_ref().1.peer_certificates();
                            info.client_cert = certs.is_some_and(|c| !c.is_empty());
                            if let (Some(certs), Some(t)) = (certs, shared.tls()) {
                                let cfg = shared.cfg();
                                let name = crate::tls::server_name(
                                    cfg.product,
                                    match cfg.product {
                                        Product::Consul => &cfg.datacenter,
                                        Product::Nomad => &cfg.region,
                                    },
                                );
                                info.peer_server = t.cert_has_name(certs, &name);
                            }
                            let svc = service_fn(move |req| {
                                let shared = shared.clone();
                                let info = info.clone();
                                async move { Ok::<_, Infallible>(handle(shared, req, info).await) }
                            });
                            let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                    None => {
                        let svc = service_fn(move |req| {
                            let shared = shared.clone();
                            let info = info.clone();
                            async move { Ok::<_, Infallible>(handle(shared, req, info).await) }
                        });
                        let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                    }
                }
            });
        }
    });
}

pub(crate) fn resp(status: u16, ctype: Option<&str>, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(ct) = ctype {
        if let Ok(v) = ct.parse() {
            r.headers_mut().insert(CONTENT_TYPE, v);
        }
    }
    r
}

pub(crate) fn json_resp(status: u16, v: &Value) -> Resp {
    resp(status, Some(JSON), v.to_string())
}

pub(crate) fn text(status: u16, msg: &str) -> Resp {
    resp(status, Some(TEXT), msg.to_string())
}

pub(crate) fn empty() -> Resp {
    resp(200, None, Bytes::new())
}

pub(crate) fn not_found() -> Resp {
    text(404, "404 page not found\n")
}

/// Consul's method enforcement (agent/http.go): 405 with an Allow header.
fn consul_method_not_allowed(method: &Method, allow: &str) -> Resp {
    let mut r = text(405, &format!("method {method} not allowed"));
    if let Ok(v) = allow.parse() {
        r.headers_mut().insert(ALLOW, v);
    }
    r
}

pub(crate) fn query_param(req: &Request<Incoming>, key: &str) -> Option<String> {
    req.uri().query().and_then(|q| {
        q.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == key).then(|| percent_decode(v))
        })
    })
}

fn query_params(req: &Request<Incoming>, key: &str) -> Vec<String> {
    req.uri()
        .query()
        .map(|q| {
            q.split('&')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (k == key).then(|| percent_decode(v))
                })
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(x) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(x);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>, info: ConnInfo) -> Resp {
    // STANDIN_HANG_FILE: while the file exists, requests are never answered.
    if let Some(f) = crate::knobs::var("STANDIN_HANG_FILE") {
        if !f.is_empty() && std::path::Path::new(&f).exists() {
            std::future::pending::<()>().await;
        }
    }
    let path = req.uri().path().to_string();
    if path == gossip::GOSSIP_PATH {
        let proof = header(&req, gossip::MAC_HEADER);
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return text(400, &e.to_string()),
        };
        return match gossip::handle_exchange(&shared, &body, proof.as_deref(), &info.remote) {
            Ok(v) => json_resp(200, &v),
            Err(e) => text(500, &e),
        };
    }
    if info.kind == Kind::Gossip {
        return not_found();
    }
    // A stand-in calling over its TLS RPC link names itself: record the
    // verified peer.
    if info.kind == Kind::Rpc && info.client_cert {
        if let (Some(node), Some(tls)) = (header(&req, link::NODE_HEADER), shared.tls()) {
            tls.record_peer(
                "in",
                &node,
                &info.remote,
                "client certificate signed by the CA",
            );
        }
    }
    match path.as_str() {
        // Stand-in only: every verified TLS peer handshake (README "TLS").
        TLS_PEERS_PATH => {
            let peers = shared.tls().map(|t| t.peers()).unwrap_or_else(|| json!([]));
            return json_resp(200, &peers);
        }
        // Only from a server of this DC / region (its certificate carries
        // the server name), over the TLS RPC port.
        link::ACL_SYNC_PATH if info.kind == Kind::Rpc && info.peer_server => {
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return text(400, &e.to_string()),
            };
            let Ok(v) = serde_json::from_slice::<Value>(&body) else {
                return text(400, "bad ACL state");
            };
            let mut acl = shared.acl();
            if shared.cfg().server && shared.cfg().acl.enabled {
                acl.merge(&v);
            }
            return json_resp(200, &acl.to_json());
        }
        // Stand-in only: requests refused for want of a valid token.
        DENIED_PATH => {
            let list = shared.acl().denied.clone();
            return json_resp(200, &Value::Array(list));
        }
        crate::kv_api::RULES_PATH => {
            return crate::kv_api::rules_endpoint(&shared, &req).await;
        }
        crate::acl_api::REPLICATE_PATH => {
            return crate::acl_api::replicate_endpoint(&shared, &req).await;
        }
        link::PING_PATH => {
            let node = shared.lock().me.node.clone();
            return json_resp(200, &json!({"Node": node}));
        }
        _ => {}
    }
    if let Some(denied) = crate::acl_api::gate(&shared, &req, &path, &info.remote).await {
        return denied;
    }
    if path.starts_with("/v1/acl/") {
        return crate::acl_api::endpoint(shared, req, &path).await;
    }
    match shared.product {
        Product::Consul => consul(shared, req, &path).await,
        Product::Nomad => nomad(shared, req, &path).await,
    }
}

// ---------------------------------------------------------------- Consul

const NO_SERVERS: &str = "No known Consul servers";

fn consul_member_json(m: &Member, version: &str) -> Value {
    let mut tags = Map::new();
    tags.insert("dc".into(), json!(m.dc));
    tags.insert("id".into(), json!(m.node_id));
    tags.insert("build".into(), json!(format!("{version}:00000000")));
    tags.insert("vsn".into(), json!("2"));
    tags.insert("vsn_min".into(), json!("2"));
    tags.insert("vsn_max".into(), json!("3"));
    tags.insert("segment".into(), json!(""));
    if m.server {
        tags.insert("role".into(), json!("consul"));
        tags.insert("port".into(), json!(m.rpc_port.to_string()));
        if m.expect == 1 {
            tags.insert("bootstrap".into(), json!("1"));
        } else if m.expect > 1 {
            tags.insert("expect".into(), json!(m.expect.to_string()));
        }
    } else {
        tags.insert("role".into(), json!("node"));
    }
    json!({
        "Name": m.name, "Addr": m.addr, "Port": m.port, "Tags": tags,
        "Status": m.status,
        "ProtocolMin": 1, "ProtocolMax": 5, "ProtocolCur": 2,
        "DelegateMin": 2, "DelegateMax": 5, "DelegateCur": 4,
    })
}

/// Case-insensitive field of a JSON object (Consul accepts `Name`/`name`).
pub(crate) fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    let snake: String = name
        .chars()
        .enumerate()
        .flat_map(|(i, c)| {
            if c.is_ascii_uppercase() && i > 0 {
                vec!['_', c.to_ascii_lowercase()]
            } else {
                vec![c.to_ascii_lowercase()]
            }
        })
        .collect();
    v.as_object()?.iter().find_map(|(k, val)| {
        (k.eq_ignore_ascii_case(name) || k.eq_ignore_ascii_case(&snake)).then_some(val)
    })
}

async fn consul(shared: Arc<Shared>, req: Request<Incoming>, path: &str) -> Resp {
    let cfg = shared.cfg();
    let method = req.method().clone();
    let get_only = |allow_put: bool| -> Option<Resp> {
        let ok = if allow_put {
            method == Method::PUT
        } else {
            method == Method::GET
        };
        (!ok).then(|| {
            consul_method_not_allowed(
                &method,
                if allow_put {
                    "OPTIONS,PUT"
                } else {
                    "GET,OPTIONS"
                },
            )
        })
    };
    if crate::kv_api::is_kv_path(path) {
        return crate::kv_api::route(shared, req, path).await;
    }
    if path == "/v1/operator/raft/transfer-leader" {
        return crate::kv_api::transfer(shared, req).await;
    }
    // RPC-backed endpoints on a client without servers.
    let rpc_backed = path.starts_with("/v1/status/")
        || path.starts_with("/v1/catalog/")
        || path.starts_with("/v1/health/")
        || path.starts_with("/v1/operator/");
    if rpc_backed && !cfg.server && !shared.lock().knows_servers() {
        return text(500, NO_SERVERS);
    }
    // Requests for another datacenter go over the WAN to one of its servers;
    // a client hands them (and the datacenter list) to a server of its own.
    let dc = query_param(&req, "dc").filter(|d| !d.is_empty() && *d != cfg.datacenter);
    let forward_dc =
        dc.is_some() && (path.starts_with("/v1/catalog/") || path.starts_with("/v1/health/"));
    let forward_list = path == "/v1/catalog/datacenters" && !cfg.server;
    if (forward_dc || forward_list) && method == Method::GET {
        let target = {
            let st = shared.lock();
            if cfg.server {
                st.wan
                    .values()
                    .find(|m| m.status == ALIVE && Some(&m.dc) == dc.as_ref())
                    .cloned()
            } else {
                st.servers().into_iter().find(|m| m.status == ALIVE)
            }
        };
        let Some(target) = target else {
            return text(500, "No path to datacenter");
        };
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| path.to_string());
        let token = crate::acl_api::request_token(&req, Product::Consul);
        return match link::call(&shared, &target, "GET", &pq, token.as_deref(), "", 1).await {
            Ok((200, body)) => with_index(resp(200, Some(JSON), body)),
            Ok((code, body)) => text(code, &body),
            Err(e) => text(500, &e),
        };
    }
    match path {
        "/v1/status/leader" => {
            if let Some(r) = get_only(false) {
                return r;
            }
            let leader = shared
                .lock()
                .leader()
                .map(|m| m.rpc_addr())
                .unwrap_or_default();
            json_resp(200, &json!(leader))
        }
        "/v1/status/peers" => {
            if let Some(r) = get_only(false) {
                return r;
            }
            let peers = shared.lock().peers();
            // A nil slice before bootstrap encodes as null.
            json_resp(
                200,
                &if peers.is_empty() {
                    Value::Null
                } else {
                    json!(peers)
                },
            )
        }
        "/v1/agent/self" => {
            if let Some(r) = get_only(false) {
                return r;
            }
            let st = shared.lock();
            let v = &shared.version;
            json_resp(
                200,
                &json!({
                    "Config": {
                        "Datacenter": cfg.datacenter, "PrimaryDatacenter": cfg.datacenter,
                        "NodeName": cfg.node_name, "NodeID": st.me.node_id,
                        "Server": cfg.server, "Revision": v.revision,
                        "Version": v.parts().0, "BuildDate": v.build_date,
                    },
                    "DebugConfig": {
                        "Datacenter": cfg.datacenter, "NodeName": cfg.node_name,
                        "ServerMode": cfg.server, "BootstrapExpect": cfg.bootstrap_expect,
                        "LeaveOnTerm": cfg.leave_on_terminate,
                        "SkipLeaveOnInt": !cfg.leave_on_interrupt,
                        "RetryJoinLAN": cfg.retry_join, "RetryJoinWAN": cfg.retry_join_wan,
                        "LogLevel": cfg.log_level, "HTTPPort": cfg.http_port,
                        "EnableScriptChecks": cfg.enable_script_checks,
                    },
                    "Coord": {"Adjustment": 0, "Error": 1.5, "Height": 0.0001, "Vec": [0,0,0,0,0,0,0,0]},
                    "Member": consul_member_json(&st.me, &v.full),
                    "Meta": {},
                }),
            )
        }
        "/v1/agent/members" => {
            if let Some(r) = get_only(false) {
                return r;
            }
            // WAN when the parameter is non-empty (Query().Get("wan") != "").
            let wan = query_param(&req, "wan").is_some_and(|w| !w.is_empty());
            if wan && !cfg.server {
                return json_resp(200, &Value::Null);
            }
            let pool = if wan { Pool::Wan } else { Pool::Lan };
            let members = shared.lock().members(pool, cfg.serf_wan_port);
            let list: Vec<Value> = members
                .iter()
                .map(|m| consul_member_json(m, &m.version))
                .collect();
            json_resp(200, &Value::Array(list))
        }
        "/v1/agent/leave" => {
            if let Some(r) = get_only(true) {
                return r;
            }
            shared.leave_requested.notify_one();
            empty()
        }
        "/v1/agent/reload" => {
            if let Some(r) = get_only(true) {
                return r;
            }
            match shared.reload() {
                Ok(()) => empty(),
                Err(e) => text(500, &e),
            }
        }
        "/v1/agent/services" => {
            if let Some(r) = get_only(false) {
                return r;
            }
            let st = shared.lock();
            let mut out = Map::new();
            for s in &st.me.services {
                let id = s["ID"].as_str().unwrap_or_default().to_string();
                let mut s = s.clone();
                if let Some(o) = s.as_object_mut() {
                    o.remove("Checks");
                    o.remove("Generation");
                    o.insert("Datacenter".into(), json!(cfg.datacenter));
                }
                out.insert(id, s);
            }
            json_resp(200, &Value::Object(out))
        }
        "/v1/agent/service/register" => {
            if let Some(r) = get_only(true) {
                return r;
            }
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return text(400, &e.to_string()),
            };
            register_service(&shared, &body)
        }
        "/v1/agent/checks" => {
            if let Some(r) = get_only(false) {
                return r;
            }
            let st = shared.lock();
            let mut out = Map::new();
            for s in &st.me.services {
                for c in s["Checks"].as_array().into_iter().flatten() {
                    let id = c["CheckID"].as_str().unwrap_or_default().to_string();
                    out.insert(
                        id,
                        json!({
                            "Node": cfg.node_name, "CheckID": c["CheckID"], "Name": c["Name"],
                            "Status": c["Status"], "Notes": c["Notes"], "Output": c["Output"],
                            "ServiceID": s["ID"], "ServiceName": s["Service"],
                            "ServiceTags": s["Tags"], "Type": c["Type"],
                        }),
                    );
                }
            }
            json_resp(200, &Value::Object(out))
        }
        "/v1/catalog/datacenters" => {
            if let Some(r) = get_only(false) {
                return r;
            }
            let st = shared.lock();
            let mut dcs: Vec<String> = st
                .wan
                .values()
                .filter(|m| m.status != LEFT)
                .map(|m| m.dc.clone())
                .filter(|d| *d != cfg.datacenter)
                .collect();
            dcs.sort();
            dcs.dedup();
            dcs.insert(0, cfg.datacenter.clone());
            json_resp(200, &json!(dcs))
        }
        "/v1/operator/autopilot/health" => {
            if let Some(r) = get_only(false) {
                return r;
            }
            autopilot(&shared, Product::Consul)
        }
        "/v1/catalog/nodes" => {
            if let Some(r) = get_only(false) {
                return r;
            }
            crate::kv_api::catalog_nodes(&shared)
        }
        _ => {
            if let Some(id) = path.strip_prefix("/v1/agent/join/") {
                if let Some(r) = get_only(true) {
                    return r;
                }
                let wan = query_param(&req, "wan").is_some_and(|w| !w.is_empty());
                if wan && !cfg.server {
                    return text(500, "Must be a server to join WAN cluster");
                }
                let (pool, port) = if wan {
                    (Pool::Wan, crate::config::DEFAULT_CONSUL_SERF_WAN_PORT)
                } else {
                    (Pool::Lan, crate::config::DEFAULT_CONSUL_SERF_LAN_PORT)
                };
                let target = gossip::resolve(&percent_decode(id), port);
                return match gossip::join(&shared, pool, &target).await {
                    Ok(()) => empty(),
                    Err(e) => text(500, &e),
                };
            }
            if let Some(rest) = path.strip_prefix("/v1/agent/check/") {
                if let Some((kind, id)) = rest.split_once('/') {
                    if matches!(kind, "pass" | "warn" | "fail" | "update") {
                        if let Some(r) = get_only(true) {
                            return r;
                        }
                        let note = query_param(&req, "note");
                        let body = match req.into_body().collect().await {
                            Ok(b) => b.to_bytes(),
                            Err(e) => return text(400, &e.to_string()),
                        };
                        return update_check(&shared, kind, &percent_decode(id), note, &body);
                    }
                }
            }
            if let Some(id) = path.strip_prefix("/v1/agent/service/deregister/") {
                if let Some(r) = get_only(true) {
                    return r;
                }
                let id = percent_decode(id);
                let mut st = shared.lock();
                let before = st.me.services.len();
                st.me
                    .services
                    .retain(|s| s["ID"].as_str() != Some(id.as_str()));
                if st.me.services.len() == before {
                    return text(
                        404,
                        &format!(
                            "Unknown service ID {id:?}. Ensure that the service ID is passed, not the service name."
                        ),
                    );
                }
                st.me.incarnation += 1;
                return empty();
            }
            if let Some(name) = path.strip_prefix("/v1/catalog/service/") {
                if let Some(r) = get_only(false) {
                    return r;
                }
                let tag = query_param(&req, "tag");
                return with_index(json_resp(
                    200,
                    &catalog_service(&shared, &percent_decode(name), tag.as_deref()),
                ));
            }
            if let Some(name) = path.strip_prefix("/v1/health/service/") {
                if let Some(r) = get_only(false) {
                    return r;
                }
                let passing = query_param(&req, "passing").is_some();
                let tag = query_param(&req, "tag");
                return with_index(json_resp(
                    200,
                    &health_service(&shared, &percent_decode(name), passing, tag.as_deref()),
                ));
            }
            not_found()
        }
    }
}

pub(crate) fn with_index(mut r: Resp) -> Resp {
    let h = r.headers_mut();
    if let Ok(v) = "1".parse() {
        h.insert("X-Consul-Index", v);
    }
    if let Ok(v) = "true".parse() {
        h.insert("X-Consul-KnownLeader", v);
    }
    if let Ok(v) = "0".parse() {
        h.insert("X-Consul-LastContact", v);
    }
    r
}

/// Distinguishes successive registrations of one service ID (check runners
/// of an older registration stop).
static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn register_service(shared: &Arc<Shared>, body: &[u8]) -> Resp {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return text(400, "Request decode failed: invalid JSON");
    };
    let Some(name) = field(&v, "Name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    else {
        return text(400, "Missing service name");
    };
    let mut checks: Vec<Value> = Vec::new();
    if let Some(c) = field(&v, "Check").filter(|c| c.is_object()) {
        checks.push(c.clone());
    }
    if let Some(Value::Array(cs)) = field(&v, "Checks") {
        checks.extend(cs.iter().cloned());
    }
    let scripts_enabled = shared.lock().enable_script_checks;
    if !scripts_enabled
        && checks
            .iter()
            .any(|c| field(c, "Args").is_some() || field(c, "Script").is_some())
    {
        return text(
            500,
            "Scripts are disabled on this agent from remote calls; to enable, configure 'enable_script_checks' to true",
        );
    }
    let id = field(&v, "ID")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or(name)
        .to_string();
    let norm_checks: Vec<Value> = checks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let check_id = field(c, "CheckID")
                .or_else(|| field(c, "ID"))
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| {
                    if checks.len() == 1 {
                        format!("service:{id}")
                    } else {
                        format!("service:{id}:{}", i + 1)
                    }
                });
            let ty = if field(c, "HTTP").is_some() {
                "http"
            } else if field(c, "TCP").is_some() {
                "tcp"
            } else if field(c, "TTL").is_some() {
                "ttl"
            } else {
                ""
            };
            json!({
                "CheckID": check_id,
                "Name": field(c, "Name").and_then(Value::as_str).map(str::to_string)
                    .unwrap_or_else(|| format!("Service '{name}' check")),
                "Status": field(c, "Status").and_then(Value::as_str).unwrap_or("critical"),
                "Notes": field(c, "Notes").and_then(Value::as_str).unwrap_or(""),
                "Output": "",
                "Type": ty,
                "HTTP": field(c, "HTTP").cloned().unwrap_or(Value::Null),
                "Method": field(c, "Method").cloned().unwrap_or(Value::Null),
                "TCP": field(c, "TCP").cloned().unwrap_or(Value::Null),
                "Interval": field(c, "Interval").cloned().unwrap_or(Value::Null),
                "Timeout": field(c, "Timeout").cloned().unwrap_or(Value::Null),
            })
        })
        .collect();
    let service = json!({
        "ID": id,
        "Service": name,
        "Tags": field(&v, "Tags").cloned().filter(Value::is_array).unwrap_or(json!([])),
        "Address": field(&v, "Address").and_then(Value::as_str).unwrap_or(""),
        "Port": field(&v, "Port").and_then(Value::as_u64).unwrap_or(0),
        "Meta": field(&v, "Meta").cloned().filter(Value::is_object).unwrap_or(json!({})),
        "EnableTagOverride": field(&v, "EnableTagOverride").and_then(Value::as_bool).unwrap_or(false),
        "Weights": field(&v, "Weights").cloned().filter(Value::is_object)
            .unwrap_or(json!({"Passing": 1, "Warning": 1})),
        "Checks": norm_checks,
        "Generation": GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
    });
    {
        let mut st = shared.lock();
        st.me
            .services
            .retain(|s| s["ID"].as_str() != Some(id.as_str()));
        st.me.services.push(service.clone());
        st.me.incarnation += 1;
    }
    crate::checks::start(shared, &service);
    empty()
}

/// `PUT /v1/agent/check/{pass,warn,fail,update}/<id>` (TTL checks).
fn update_check(shared: &Shared, kind: &str, id: &str, note: Option<String>, body: &[u8]) -> Resp {
    let Some(sid) = crate::checks::find(shared, id) else {
        return text(
            404,
            &format!(
                "Unknown check ID {id:?}. Ensure that the check ID is passed, not the check name."
            ),
        );
    };
    let (status, output) = match kind {
        "pass" => ("passing".to_string(), note.unwrap_or_default()),
        "warn" => ("warning".to_string(), note.unwrap_or_default()),
        "fail" => ("critical".to_string(), note.unwrap_or_default()),
        _ => {
            let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let status = field(&v, "Status")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if !matches!(status.as_str(), "passing" | "warning" | "critical") {
                return text(400, &format!("Invalid check status: {status:?}"));
            }
            (
                status,
                field(&v, "Output")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            )
        }
    };
    crate::checks::set_status(shared, &sid, None, id, &status, &output);
    empty()
}

/// Agents of the own DC holding services (self plus LAN members not left).
pub(crate) fn dc_agents(shared: &Shared) -> Vec<Member> {
    let cfg = shared.cfg();
    let st = shared.lock();
    let mut out: Vec<Member> = st
        .lan
        .values()
        .filter(|m| m.dc == cfg.datacenter && m.status != LEFT)
        .cloned()
        .collect();
    out.push(st.me.clone());
    out.sort_by(|a, b| a.node.cmp(&b.node));
    out
}

pub(crate) fn tagged(m: &Member) -> Value {
    json!({"lan": m.addr, "lan_ipv4": m.addr, "wan": m.addr, "wan_ipv4": m.addr})
}

fn has_tag(s: &Value, tag: Option<&str>) -> bool {
    tag.is_none_or(|t| {
        s["Tags"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(t)))
    })
}

fn catalog_service(shared: &Shared, name: &str, tag: Option<&str>) -> Value {
    let mut out = Vec::new();
    // Every Consul server registers the `consul` service (port: its server
    // RPC port), as the real servers do.
    if shared.product == Product::Consul && name == "consul" && tag.is_none() {
        for m in dc_agents(shared).iter().filter(|m| m.server) {
            out.push(json!({
                "ID": m.node_id, "Node": m.node, "Address": m.addr, "Datacenter": m.dc,
                "TaggedAddresses": tagged(m), "NodeMeta": {},
                "CreateIndex": 10, "ModifyIndex": 10,
                "ServiceAddress": "", "ServiceEnableTagOverride": false,
                "ServiceID": "consul", "ServiceName": "consul", "ServicePort": m.rpc_port,
                "ServiceMeta": {}, "ServiceTags": [], "ServiceKind": "",
                "ServiceWeights": {"Passing": 1, "Warning": 1}, "ServiceSocketPath": "",
                "ServiceProxy": {"Mode": "", "MeshGateway": {}, "Expose": {}},
                "ServiceConnect": {},
            }));
        }
    }
    for m in dc_agents(shared) {
        for s in &m.services {
            if s["Service"].as_str() != Some(name) || !has_tag(s, tag) {
                continue;
            }
            let addr = s["Address"].as_str().unwrap_or("");
            out.push(json!({
                "ID": m.node_id, "Node": m.node, "Address": m.addr, "Datacenter": m.dc,
                "TaggedAddresses": tagged(&m), "NodeMeta": {},
                "CreateIndex": 10, "ModifyIndex": 10,
                "ServiceAddress": addr, "ServiceEnableTagOverride": s["EnableTagOverride"],
                "ServiceID": s["ID"], "ServiceName": s["Service"], "ServicePort": s["Port"],
                "ServiceMeta": s["Meta"], "ServiceTags": s["Tags"], "ServiceKind": "",
                "ServiceWeights": s["Weights"], "ServiceSocketPath": "",
                "ServiceProxy": {"Mode": "", "MeshGateway": {}, "Expose": {}},
                "ServiceConnect": {},
            }));
        }
    }
    Value::Array(out)
}

fn health_service(shared: &Shared, name: &str, passing_only: bool, tag: Option<&str>) -> Value {
    let mut out = Vec::new();
    for m in dc_agents(shared) {
        for s in &m.services {
            if s["Service"].as_str() != Some(name) || !has_tag(s, tag) {
                continue;
            }
            let serf_status = if m.status == ALIVE {
                "passing"
            } else {
                "critical"
            };
            let mut checks = vec![json!({
                "Node": m.node, "CheckID": "serfHealth", "Name": "Serf Health Status",
                "Status": serf_status,
                "Notes": "", "Output": if m.status == ALIVE { "Agent alive and reachable" } else { "Agent not live or unreachable" },
                "ServiceID": "", "ServiceName": "", "ServiceTags": [], "Type": "",
                "Definition": {}, "CreateIndex": 10, "ModifyIndex": 10,
            })];
            for c in s["Checks"].as_array().into_iter().flatten() {
                checks.push(json!({
                    "Node": m.node, "CheckID": c["CheckID"], "Name": c["Name"],
                    "Status": c["Status"], "Notes": c["Notes"], "Output": c["Output"],
                    "ServiceID": s["ID"], "ServiceName": s["Service"], "ServiceTags": s["Tags"],
                    "Type": c["Type"], "Definition": {}, "CreateIndex": 10, "ModifyIndex": 10,
                }));
            }
            if passing_only && checks.iter().any(|c| c["Status"] != "passing") {
                continue;
            }
            out.push(json!({
                "Node": {
                    "ID": m.node_id, "Node": m.node, "Address": m.addr, "Datacenter": m.dc,
                    "TaggedAddresses": tagged(&m), "Meta": {},
                    "CreateIndex": 10, "ModifyIndex": 10,
                },
                "Service": {
                    "ID": s["ID"], "Service": s["Service"], "Tags": s["Tags"],
                    "Address": s["Address"], "Meta": s["Meta"], "Port": s["Port"],
                    "Weights": s["Weights"], "EnableTagOverride": s["EnableTagOverride"],
                    "Proxy": {"Mode": "", "MeshGateway": {}, "Expose": {}}, "Connect": {},
                    "PeerName": "", "CreateIndex": 10, "ModifyIndex": 10,
                },
                "Checks": checks,
            }));
        }
    }
    Value::Array(out)
}

fn autopilot(shared: &Shared, product: Product) -> Resp {
    let mut st = shared.lock();
    let Some(leader) = st.leader() else {
        return text(500, "No cluster leader");
    };
    let servers: Vec<Member> = st
        .servers()
        .into_iter()
        .filter(|m| m.status != LEFT)
        .collect();
    drop(st);
    let alive = servers.iter().filter(|m| m.status == ALIVE).count();
    let quorum = servers.len() / 2 + 1;
    let healthy = alive == servers.len();
    let list: Vec<Value> = servers
        .iter()
        .map(|m| {
            let ok = m.status == ALIVE;
            let serf = match m.status {
                ALIVE => "alive",
                LEAVING => "leaving",
                FAILED => "failed",
                _ => "left",
            };
            let last_contact = match product {
                Product::Consul => json!("0s"),
                Product::Nomad => json!(0),
            };
            json!({
                "ID": m.node_id, "Name": m.node, "Address": m.rpc_addr(), "SerfStatus": serf,
                "Version": m.version, "Leader": m.name == leader.name, "LastContact": last_contact,
                "LastTerm": 2, "LastIndex": 46, "Healthy": ok, "Voter": true,
                "StableSince": "2024-01-01T00:00:00Z",
            })
        })
        .collect();
    let mut body = json!({
        "Healthy": healthy,
        "FailureTolerance": alive.saturating_sub(quorum),
        "Servers": list,
    });
    if product == Product::Nomad {
        body["Leader"] = json!(leader.node_id);
        body["Voters"] = json!(
            servers
                .iter()
                .map(|m| m.node_id.clone())
                .collect::<Vec<_>>()
        );
    }
    json_resp(if healthy { 200 } else { 429 }, &body)
}

// ---------------------------------------------------------------- Nomad

fn nomad_status(s: u8) -> &'static str {
    match s {
        ALIVE => "alive",
        LEAVING => "leaving",
        LEFT => "left",
        FAILED => "failed",
        _ => "none",
    }
}

fn nomad_member_json(m: &Member) -> Value {
    let mut tags = Map::new();
    tags.insert("role".into(), json!("nomad"));
    tags.insert("region".into(), json!(m.region));
    tags.insert("dc".into(), json!(m.dc));
    tags.insert("build".into(), json!(m.version));
    tags.insert("revision".into(), json!(""));
    tags.insert("vsn".into(), json!("1"));
    tags.insert("raft_vsn".into(), json!("3"));
    tags.insert("id".into(), json!(m.node_id));
    tags.insert("rpc_addr".into(), json!(m.addr));
    tags.insert("port".into(), json!(m.rpc_port.to_string()));
    if m.expect == 1 {
        tags.insert("bootstrap".into(), json!("1"));
    } else if m.expect > 1 {
        tags.insert("expect".into(), json!(m.expect.to_string()));
    }
    json!({
        "Name": m.name, "Addr": m.addr, "Port": m.port, "Tags": tags,
        "Status": nomad_status(m.status),
        "ProtocolMin": 1, "ProtocolMax": 5, "ProtocolCur": 2,
        "DelegateMin": 2, "DelegateMax": 5, "DelegateCur": 4,
    })
}

/// `/v1/agent/health`, optionally only for `?type=client|server`.
fn nomad_health(shared: &Shared, only: Option<&str>) -> (bool, Value) {
    let cfg = shared.cfg();
    let mut st = shared.lock();
    let mut body = Map::new();
    let mut ok_all = true;
    if cfg.client && only != Some("server") {
        let known = st.knows_servers() || cfg.server;
        ok_all &= known;
        body.insert(
            "client".into(),
            json!({"ok": known, "message": if known { "ok" } else { "no known servers" }}),
        );
    }
    if cfg.server && only != Some("client") {
        let leader = st.leader().is_some();
        ok_all &= leader;
        body.insert(
            "server".into(),
            json!({"ok": leader, "message": if leader { "ok" } else { "No cluster leader" }}),
        );
    }
    (ok_all, Value::Object(body))
}

async fn nomad(shared: Arc<Shared>, req: Request<Incoming>, path: &str) -> Resp {
    let cfg = shared.cfg();
    let method = req.method().clone();
    let is_get = method == Method::GET;
    match path {
        "/v1/agent/health" => {
            let (ok, body) = nomad_health(&shared, query_param(&req, "type").as_deref());
            if ok {
                json_resp(200, &body)
            } else {
                // CodedError(500, json): JSON body, text/plain content type.
                resp(500, Some(TEXT), body.to_string())
            }
        }
        "/v1/agent/self" => {
            let st = shared.lock();
            let (ver, pre, meta) = shared.version.parts();
            let member = if cfg.server {
                nomad_member_json(&st.me)
            } else {
                json!({"Name": "", "Addr": "", "Port": 0, "Tags": null, "Status": "none",
                       "ProtocolMin": 0, "ProtocolMax": 0, "ProtocolCur": 0,
                       "DelegateMin": 0, "DelegateMax": 0, "DelegateCur": 0})
            };
            let ip = |a: &str| {
                if a.is_empty() {
                    cfg.bind_ip.clone()
                } else {
                    a.to_string()
                }
            };
            json_resp(
                200,
                &json!({
                    "config": {
                        "Addresses": {"HTTP": cfg.http_ip, "RPC": ip(""), "Serf": cfg.bind_ip},
                        "AdvertiseAddrs": {
                            "HTTP": host_port(&cfg.advertise_ip, cfg.http_port),
                            "RPC": host_port(&cfg.advertise_ip, cfg.rpc_port),
                            "Serf": host_port(&cfg.advertise_ip, cfg.serf_port),
                        },
                        "BindAddr": cfg.bind_ip,
                        "Client": {"Enabled": cfg.client, "Servers": if cfg.client { json!(cfg.retry_join) } else { Value::Null }},
                        "Consuls": [{"Name": "default", "Addr": cfg.consul.address}],
                        "DataDir": "", "Datacenter": cfg.datacenter, "DevMode": false,
                        "DisableAnonymousSignature": false, "DisableUpdateCheck": false,
                        "EnableDebug": false, "EnableSyslog": false,
                        "Files": cfg.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
                        "HTTPAPIResponseHeaders": {},
                        "LeaveOnInt": cfg.leave_on_interrupt, "LeaveOnTerm": cfg.leave_on_terminate,
                        "LogLevel": cfg.log_level, "NodeName": cfg.node_name,
                        "Ports": {"HTTP": cfg.http_port, "RPC": cfg.rpc_port, "Serf": cfg.serf_port},
                        "Region": cfg.region,
                        "Server": {"Enabled": cfg.server, "BootstrapExpect": cfg.bootstrap_expect,
                                   "ServerJoin": {"RetryJoin": if cfg.server { json!(cfg.retry_join) } else { json!([]) }}},
                        "SyslogFacility": "LOCAL0", "TLSConfig": {}, "Telemetry": {},
                        "Vaults": [],
                        "Version": {"BuildDate": shared.version.build_date, "Revision": shared.version.revision,
                                    "Version": ver, "VersionPrerelease": pre, "VersionMetadata": meta},
                    },
                    "member": member,
                    "stats": {"runtime": {"arch": "amd64", "kernel.name": "linux"}},
                }),
            )
        }
        "/v1/agent/members" => {
            let st = shared.lock();
            let members = if cfg.server {
                st.members(Pool::Lan, 0)
            } else {
                st.servers()
            };
            let answering = if cfg.server {
                Some(st.me.clone())
            } else {
                members.iter().find(|m| m.status == ALIVE).cloned()
            };
            let Some(srv) = answering else {
                return text(500, "no known servers");
            };
            let list: Vec<Value> = members.iter().map(nomad_member_json).collect();
            json_resp(
                200,
                &json!({"ServerName": srv.node, "ServerRegion": srv.region, "ServerDC": srv.dc, "Members": list}),
            )
        }
        "/v1/agent/join" => {
            if !cfg.server {
                return text(501, "Invalid method");
            }
            if method != Method::PUT && method != Method::POST {
                return text(405, "Invalid method");
            }
            let addrs = query_params(&req, "address");
            if addrs.is_empty() {
                return text(400, "missing address to join");
            }
            let mut joined = 0;
            let mut errors = Vec::new();
            for a in addrs {
                let target = gossip::resolve(&a, crate::config::DEFAULT_NOMAD_SERF_PORT);
                match gossip::join(&shared, Pool::Lan, &target).await {
                    Ok(()) => joined += 1,
                    Err(e) => errors.push(e),
                }
            }
            json_resp(
                200,
                &json!({"error": errors.join("; "), "num_joined": joined}),
            )
        }
        "/v1/agent/servers" => {
            if !cfg.client {
                return text(501, "Invalid method");
            }
            if is_get {
                let list: Vec<String> = shared
                    .lock()
                    .servers()
                    .iter()
                    .filter(|m| m.status == ALIVE)
                    .map(Member::rpc_addr)
                    .collect();
                return json_resp(200, &json!(list));
            }
            if method != Method::PUT && method != Method::POST {
                return text(405, "Invalid method");
            }
            for a in query_params(&req, "address") {
                let target = gossip::resolve(&a, crate::config::DEFAULT_NOMAD_RPC_PORT);
                if let Err(e) = gossip::join(&shared, Pool::Client, &target).await {
                    return text(500, &e);
                }
            }
            empty()
        }
        "/v1/status/leader" => {
            if !is_get {
                return text(405, "Invalid method");
            }
            match shared.lock().leader() {
                Some(m) => json_resp(200, &json!(m.rpc_addr())),
                None => text(500, "No cluster leader"),
            }
        }
        "/v1/status/peers" => {
            if !is_get {
                return text(405, "Invalid method");
            }
            json_resp(200, &json!(shared.lock().peers()))
        }
        "/v1/nodes" => {
            if !is_get {
                return text(405, "Invalid method");
            }
            nodes(&shared)
        }
        "/v1/operator/autopilot/health" => {
            if !is_get {
                return text(404, "Invalid method");
            }
            autopilot(&shared, Product::Nomad)
        }
        "/v1/operator/raft/configuration" => {
            if !is_get {
                return text(404, "Invalid method");
            }
            crate::kv_api::raft_configuration(&shared)
        }
        "/v1/operator/raft/transfer-leadership" => crate::kv_api::transfer(shared, req).await,
        _ => not_found(),
    }
}

/// Heartbeats older than this many push-pull periods make a node `down`.
const NODE_DOWN_AFTER_MS: u64 = 5_000;

fn nodes(shared: &Shared) -> Resp {
    let st = shared.lock();
    let now = now_ms();
    let list: Vec<Value> = st
        .nodes
        .values()
        .map(|n| {
            let status = if now.saturating_sub(n.last_seen_ms) > NODE_DOWN_AFTER_MS {
                "down"
            } else {
                "ready"
            };
            json!({
                "Address": n.addr, "Attributes": {"os.name": "linux", "kernel.name": "linux"},
                "CreateIndex": 10, "Datacenter": n.dc, "Drain": false, "Drivers": {},
                "ID": n.id, "LastDrain": null, "ModifyIndex": 10, "Name": n.name,
                "NodeClass": "", "NodePool": "default", "SchedulingEligibility": "eligible",
                "Status": status, "StatusDescription": "", "Version": n.version,
            })
        })
        .collect();
    json_resp(200, &Value::Array(list))
}

//! The HTTP side of the stand-in's Consul KV store and sessions
//! (`/v1/kv/...`, `/v1/session/...`), the node catalog, and leadership
//! transfer on both products.
//!
//! Where a KV or session request is answered: `?dc=<other>` goes over the
//! WAN to a server of that DC (a client hands it to its server first); a
//! client hands every request to a server of its DC; a server that is not
//! its DC's leader hands it to the leader; the leader answers from its
//! [`crate::kv::KvStore`]. At most [`MAX_HOPS`] hand-offs. A request body
//! travels base64-encoded between stand-ins (`_standin_b64=1` in the
//! query), since the links carry text.
//!
//! With ACLs on (`default_policy = "deny"`) the answering server checks the
//! token's rules: `key`/`key_prefix` (read for GET, write for PUT and
//! DELETE; a recursive GET leaves out the keys it may not read) and
//! `session`/`session_prefix` on the session's node (write to create,
//! renew, destroy; read for info); a management token may do anything.
//! Refused: 403 `Permission denied`. A session's node must be an agent of
//! the answering datacenter (else 500 `Missing node registration`, as
//! Consul's catalog check).

use std::sync::Arc;

use base64::Engine as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request};
use serde_json::{Value, json};

use crate::Product;
use crate::agent::Shared;
use crate::http::{Resp, json_resp, percent_decode, query_param, resp, text};
use crate::kv::Access;
use crate::link;
use crate::state::{ALIVE, LEFT, Member, now_ms};

/// Most hand-offs of one request (client → server → leader → other DC).
const MAX_HOPS: u32 = 4;
/// The stand-in-only endpoint answering a token's rules (servers).
pub const RULES_PATH: &str = "/_standin/acl-rules";
/// Query marker of a base64 body between stand-ins.
const B64_MARK: &str = "_standin_b64";
/// How often a leader looks for expired sessions.
pub const REAP_INTERVAL_MS: u64 = 250;

/// Whether `path` is served here.
pub fn is_kv_path(path: &str) -> bool {
    path.starts_with("/v1/kv/") || path == "/v1/kv" || path.starts_with("/v1/session/")
}

/// Where this agent hands a KV/session request for `dc`; None: answer here.
fn target(shared: &Shared, dc: Option<&str>) -> Result<Option<Member>, &'static str> {
    let cfg = shared.cfg();
    let mut st = shared.lock();
    if let Some(dc) = dc.filter(|d| *d != cfg.datacenter) {
        let m = if cfg.server {
            st.wan
                .values()
                .find(|m| m.status == ALIVE && m.server && m.dc == dc)
                .cloned()
        } else {
            st.servers().into_iter().find(|m| m.status == ALIVE)
        };
        return m.map(Some).ok_or("No path to datacenter");
    }
    if !cfg.server {
        return st
            .servers()
            .into_iter()
            .find(|m| m.status == ALIVE)
            .map(Some)
            .ok_or("No known Consul servers");
    }
    match st.leader() {
        None => Err("No cluster leader"),
        Some(l) if l.node == st.me.node => Ok(None),
        Some(l) => Ok(Some(l)),
    }
}

/// `/v1/kv/...` and `/v1/session/...` of a Consul agent.
pub async fn route(shared: Arc<Shared>, req: Request<Incoming>, path: &str) -> Resp {
    let dc = query_param(&req, "dc").filter(|d| !d.is_empty());
    let hops = crate::acl_api::hops(&req);
    let token = crate::acl_api::request_token(&req, Product::Consul);
    let method = req.method().clone();
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| path.to_string());
    let b64 = query_param(&req, B64_MARK).is_some();
    let query: Vec<(String, String)> = req
        .uri()
        .query()
        .map(|q| {
            q.split('&')
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (k.to_string(), percent_decode(v))
                })
                .collect()
        })
        .unwrap_or_default();
    let raw = match req.into_body().collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(e) => return text(400, &e.to_string()),
    };
    let mut body = if b64 {
        match base64::engine::general_purpose::STANDARD.decode(&raw) {
            Ok(b) => b,
            Err(_) => return text(400, "bad forwarded body"),
        }
    } else {
        raw
    };
    // The agent asked first names the session's node (its own, as Consul's
    // agent fills in `Node` before forwarding).
    if path == "/v1/session/create" && hops == 0 {
        body = with_node(&body, &shared.cfg().node_name);
    }
    match target(&shared, dc.as_deref()) {
        Err(why) => return text(500, why),
        Ok(Some(m)) => {
            if hops >= MAX_HOPS {
                return text(500, "stand-in: too many forwards");
            }
            let sep = if pq.contains('?') { '&' } else { '?' };
            let fwd_path = if b64 {
                pq.clone()
            } else {
                format!("{pq}{sep}{B64_MARK}=1")
            };
            let fwd_body = base64::engine::general_purpose::STANDARD.encode(&body);
            return match link::call(
                &shared,
                &m,
                method.as_str(),
                &fwd_path,
                token.as_deref(),
                &fwd_body,
                hops + 1,
            )
            .await
            {
                Ok((code, b)) if (200..300).contains(&code) => {
                    crate::http::with_index(resp(code, Some("application/json"), b))
                }
                Ok((code, b)) => text(code, &b),
                Err(e) => text(500, &e),
            };
        }
        Ok(None) => {}
    }
    let rules = if shared.acl().deny {
        match token.as_deref() {
            None => return text(403, "Permission denied"),
            Some(t) => match token_rules(&shared, t, hops).await {
                Some(r) => Some(r),
                None => return text(403, "ACL not found"),
            },
        }
    } else {
        None
    };
    let q = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let allowed = |kind: &str, name: &str, need: Access| -> bool {
        match &rules {
            None => true,
            Some((true, _)) => true,
            Some((false, r)) => crate::kv::access(r, kind, name).is_some_and(|a| a >= need),
        }
    };
    let denied = || text(403, "Permission denied");
    if let Some(key) = path.strip_prefix("/v1/kv") {
        let key = percent_decode(key.strip_prefix('/').unwrap_or(key));
        let recurse = q("recurse").is_some();
        let keys = q("keys").is_some();
        let parse_u64 = |k: &str| -> Result<Option<u64>, String> {
            match q(k) {
                None => Ok(None),
                Some(v) => v
                    .parse::<u64>()
                    .map(Some)
                    .map_err(|_| format!("Invalid {k} index")),
            }
        };
        match method {
            Method::GET => {
                let found = shared.kv().get(&key, recurse, keys);
                let Some(Value::Array(list)) = found else {
                    return crate::http::with_index(text(404, ""));
                };
                if !(recurse || keys || allowed("key", &key, Access::Read)) {
                    return denied();
                }
                let list: Vec<Value> = list
                    .into_iter()
                    .filter(|v| {
                        let k = v.as_str().or_else(|| v["Key"].as_str()).unwrap_or("");
                        allowed("key", k, Access::Read)
                    })
                    .collect();
                if list.is_empty() {
                    return crate::http::with_index(text(404, ""));
                }
                crate::http::with_index(json_resp(200, &Value::Array(list)))
            }
            Method::PUT => {
                if !allowed("key", &key, Access::Write) {
                    return denied();
                }
                let (flags, cas) = match (parse_u64("flags"), parse_u64("cas")) {
                    (Ok(f), Ok(c)) => (f, c),
                    (Err(e), _) | (_, Err(e)) => return text(400, &e),
                };
                let acquire = q("acquire");
                let release = q("release");
                let res = shared.kv().put(
                    &key,
                    body,
                    flags,
                    cas,
                    acquire.as_deref(),
                    release.as_deref(),
                );
                match res {
                    Ok(b) => json_resp(200, &json!(b)),
                    Err((code, msg)) => text(code, &msg),
                }
            }
            Method::DELETE => {
                if !allowed("key", &key, Access::Write) {
                    return denied();
                }
                let cas = match parse_u64("cas") {
                    Ok(c) => c,
                    Err(e) => return text(400, &e),
                };
                let ok = shared.kv().delete(&key, recurse, cas);
                json_resp(200, &json!(ok))
            }
            _ => text(405, &format!("method {method} not allowed")),
        }
    } else {
        let rest = path.strip_prefix("/v1/session/").unwrap_or("");
        let (op, id) = rest.split_once('/').unwrap_or((rest, ""));
        let id = percent_decode(id);
        let node_of = |id: &str| shared.kv().sessions.get(id).map(|s| s.node.clone());
        match (op, &method) {
            ("create", &Method::PUT) => {
                let me = shared.cfg().node_name;
                let node = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| {
                        crate::http::field(&v, "Node")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    })
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| me.clone());
                if !allowed("session", &node, Access::Write) {
                    return denied();
                }
                // Consul's state store binds a session to a node of the
                // catalog of its own datacenter.
                if !crate::http::dc_agents(&shared)
                    .iter()
                    .any(|m| m.node == node)
                {
                    return text(500, "Missing node registration");
                }
                match shared.kv().session_create(&body, &me) {
                    Ok(id) => json_resp(200, &json!({"ID": id})),
                    Err((code, msg)) => text(code, &msg),
                }
            }
            ("renew", &Method::PUT) => {
                let Some(node) = node_of(&id) else {
                    return text(404, &format!("Session id '{id}' not found"));
                };
                if !allowed("session", &node, Access::Write) {
                    return denied();
                }
                match shared.kv().session_renew(&id) {
                    Some(s) => json_resp(200, &json!([s])),
                    None => text(404, &format!("Session id '{id}' not found")),
                }
            }
            ("destroy", &Method::PUT) => {
                if let Some(node) = node_of(&id) {
                    if !allowed("session", &node, Access::Write) {
                        return denied();
                    }
                }
                shared.kv().session_destroy(&id);
                json_resp(200, &json!(true))
            }
            ("info", &Method::GET) | ("list", &Method::GET) => {
                let filter = (op == "info").then_some(id.as_str());
                let list = shared.kv().session_info(filter);
                let list: Vec<Value> = list
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|s| allowed("session", s["Node"].as_str().unwrap_or(""), Access::Read))
                    .collect();
                crate::http::with_index(json_resp(200, &Value::Array(list)))
            }
            ("create" | "renew" | "destroy", _) => {
                text(405, &format!("method {method} not allowed"))
            }
            ("info" | "list", _) => text(405, &format!("method {method} not allowed")),
            _ => crate::http::not_found(),
        }
    }
}

/// A session-create body with `Node` set to `node` when it names none
/// (an unreadable body is left for the store to refuse).
fn with_node(body: &[u8], node: &str) -> Vec<u8> {
    let mut v: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(_) => return body.to_vec(),
        }
    };
    let named = crate::http::field(&v, "Node")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    if let (false, Some(o)) = (named, v.as_object_mut()) {
        o.retain(|k, _| !k.eq_ignore_ascii_case("node"));
        o.insert("Node".into(), json!(node));
    }
    serde_json::to_vec(&v).unwrap_or_else(|_| body.to_vec())
}

/// The token's (management, rules): from the local ACL state, else asked
/// of the server that resolves tokens for this agent
/// ([`crate::acl_api::resolver`]) through [`RULES_PATH`].
pub async fn token_rules(shared: &Shared, secret: &str, hops: u32) -> Option<(bool, Vec<String>)> {
    if let Some(r) = local_rules(shared, secret) {
        return Some(r);
    }
    if hops >= MAX_HOPS {
        return None;
    }
    let target = crate::acl_api::resolver(shared);
    let body = crate::acl_api::remote_lookup(shared, target, RULES_PATH, secret, hops).await?;
    let v: Value = serde_json::from_str(&body).ok()?;
    Some((
        v["Management"].as_bool().unwrap_or(false),
        v["Rules"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
    ))
}

fn local_rules(shared: &Shared, secret: &str) -> Option<(bool, Vec<String>)> {
    let acl = shared.acl();
    let t = acl.resolve(secret)?;
    let management = t.management
        || t.policies
            .iter()
            .any(|p| p == crate::acl::GLOBAL_MANAGEMENT);
    let rules = t
        .policies
        .iter()
        .filter_map(|name| acl.policies.values().find(|p| &p.name == name))
        .map(|p| p.rules.clone())
        .collect();
    Some((management, rules))
}

/// `GET /_standin/acl-rules` with the token in its header.
pub async fn rules_endpoint(shared: &Shared, req: &Request<Incoming>) -> Resp {
    let Some(token) = crate::acl_api::request_token(req, shared.product) else {
        return text(403, "Permission denied");
    };
    match token_rules(shared, &token, crate::acl_api::hops(req)).await {
        Some((m, r)) => json_resp(200, &json!({"Management": m, "Rules": r})),
        None => text(403, "ACL not found"),
    }
}

/// Invalidate expired sessions every [`REAP_INTERVAL_MS`] (Consul
/// servers; only the leader's store is used).
pub async fn run_reaper(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(REAP_INTERVAL_MS)).await;
        let gone = shared.kv().reap(now_ms());
        for id in gone {
            crate::events::log(&format!(
                "    [INFO] consul.session: (stand-in) session invalidated: id={id}"
            ));
        }
        let left = std::mem::take(&mut shared.lock().left_nodes);
        if !left.is_empty() {
            for id in shared.kv().reap_nodes(&left, now_ms()) {
                crate::events::log(&format!(
                    "    [INFO] consul.session: (stand-in) session invalidated, its node left: id={id}"
                ));
            }
        }
    }
}

/// `GET /v1/catalog/nodes`: the DC's agents.
pub fn catalog_nodes(shared: &Shared) -> Resp {
    let list: Vec<Value> = crate::http::dc_agents(shared)
        .iter()
        .map(|m| {
            json!({
                "ID": m.node_id, "Node": m.node, "Address": m.addr, "Datacenter": m.dc,
                "TaggedAddresses": crate::http::tagged(m), "Meta": {"consul-network-segment": ""},
                "CreateIndex": 5, "ModifyIndex": 5,
            })
        })
        .collect();
    crate::http::with_index(json_resp(200, &Value::Array(list)))
}

/// This server gives up leadership: it stops counting as a candidate
/// (`yielded`, spread by gossip) and names the server it hands to (`to`;
/// none: the lowest-named other alive server leads).
fn yield_leadership(shared: &Shared, to: Option<&Member>) {
    let mut st = shared.lock();
    st.me.yielded = true;
    st.me.handoff = to.map(|m| m.node.clone()).unwrap_or_default();
    st.me.handoff_ms = now_ms();
    st.me.incarnation += 1;
}

/// Consul `POST /v1/operator/raft/transfer-leader[?id=]` and Nomad
/// `PUT|POST /v1/operator/raft/transfer-leadership?id=|address=`.
pub async fn transfer(shared: Arc<Shared>, req: Request<Incoming>) -> Resp {
    let product = shared.product;
    let method = req.method().clone();
    let ok_method = match product {
        Product::Consul => method == Method::POST,
        Product::Nomad => method == Method::PUT || method == Method::POST,
    };
    if !ok_method {
        return match product {
            Product::Consul => text(405, &format!("method {method} not allowed")),
            Product::Nomad => text(405, "Invalid method"),
        };
    }
    let id = query_param(&req, "id").filter(|s| !s.is_empty());
    let address = query_param(&req, "address").filter(|s| !s.is_empty());
    if product == Product::Nomad && id.is_some() == address.is_some() {
        return text(400, "must specify either id or address, but not both");
    }
    let cfg = shared.cfg();
    if !cfg.server {
        return text(
            500,
            "stand-in: leadership transfer must be asked of a server",
        );
    }
    let (leader, me, alive) = {
        let mut st = shared.lock();
        let leader = st.leader();
        let me = st.me.clone();
        let alive: Vec<Member> = st
            .servers()
            .into_iter()
            .filter(|m| m.status == ALIVE)
            .collect();
        (leader, me, alive)
    };
    let Some(leader) = leader else {
        return text(500, "No cluster leader");
    };
    // Any alive server but the leader may take over.
    let others: Vec<&Member> = alive.iter().filter(|m| m.node != leader.node).collect();
    let mut to = None;
    if let Some(want) = id.as_deref().or(address.as_deref()) {
        to = others
            .iter()
            .find(|m| m.node_id == want || m.rpc_addr() == want)
            .map(|m| (*m).clone());
        if to.is_none() {
            return text(
                400,
                &format!("cannot find peer {want:?} in the raft configuration"),
            );
        }
    }
    if others.is_empty() {
        return text(500, "cannot transfer leadership: no other voting server");
    }
    if leader.node != me.node {
        let hops = crate::acl_api::hops(&req);
        if hops >= MAX_HOPS {
            return text(500, "stand-in: too many forwards");
        }
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default();
        let token = crate::acl_api::request_token(&req, product);
        return match link::call(
            &shared,
            &leader,
            method.as_str(),
            &pq,
            token.as_deref(),
            "",
            hops + 1,
        )
        .await
        {
            Ok((200, b)) => resp(200, Some("application/json"), b),
            Ok((code, b)) => text(code, &b),
            Err(e) => text(500, &e),
        };
    }
    yield_leadership(&shared, to.as_ref());
    crate::events::log("    [INFO] agent: (stand-in) leadership transferred");
    crate::gossip::push_all(&shared).await;
    match product {
        Product::Consul => json_resp(200, &json!({"Success": true})),
        Product::Nomad => resp(200, None, hyper::body::Bytes::new()),
    }
}

/// Nomad `GET /v1/operator/raft/configuration`.
pub fn raft_configuration(shared: &Shared) -> Resp {
    let mut st = shared.lock();
    let Some(leader) = st.leader() else {
        return text(500, "No cluster leader");
    };
    let servers: Vec<Value> = st
        .servers()
        .iter()
        .filter(|m| m.status != LEFT)
        .map(|m| {
            json!({
                "Address": m.rpc_addr(), "ID": m.node_id, "Leader": m.name == leader.name,
                "Node": m.name, "RaftProtocol": "3", "Voter": true,
            })
        })
        .collect();
    json_resp(200, &json!({"Index": 1, "Servers": servers}))
}

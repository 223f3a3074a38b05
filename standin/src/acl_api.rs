//! The ACL side of the stand-in's HTTP API, following the documented
//! endpoints (samples in `tests/data/agent-api/{consul,nomad}/acl_*`):
//! the token check in front of every endpoint (403 without a token that
//! exists, except the endpoints the real agents leave open; 403
//! `Permission denied` for an operator endpoint the token's rules do not
//! allow, [`crate::acl::need_of`]), and
//! Consul's `PUT /v1/acl/bootstrap|policy|token`, Nomad's `POST
//! /v1/acl/bootstrap|policy/<name>|token`, and `GET /v1/acl/token/self`.
//!
//! Where the token is looked up: a server in its own state; a server that
//! does not know it asks its leader, and a Consul leader outside the primary
//! datacenter asks a primary server over the WAN (as Consul resolves tokens
//! without token replication); a client asks one of its servers. Writes on
//! a client (or a Consul server outside the primary DC) go to such a server.

use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request};
use serde_json::{Value, json};

use crate::Product;
use crate::acl::AclState;
use crate::agent::Shared;
use crate::http::{Resp, empty, field, json_resp, query_param, text};
use crate::link;
use crate::state::{ALIVE, Member};

/// Most forwarding steps of one token lookup (client → server → leader →
/// primary DC).
const MAX_HOPS: u32 = 3;

/// The request's token: the product's header, else `Authorization: Bearer`,
/// else (Consul) `?token=`.
pub fn request_token(req: &Request<Incoming>, product: Product) -> Option<String> {
    let h = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.trim().to_string())
    };
    h(link::token_header(product))
        .or_else(|| {
            h("authorization").and_then(|a| a.strip_prefix("Bearer ").map(|t| t.trim().to_string()))
        })
        .or_else(|| match product {
            Product::Consul => query_param(req, "token"),
            Product::Nomad => None,
        })
        .filter(|t| !t.is_empty())
}

pub(crate) fn hops(req: &Request<Incoming>) -> u32 {
    req.headers()
        .get(link::FORWARDED_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Endpoints the real agents answer without a token.
fn is_open(product: Product, path: &str) -> bool {
    match product {
        // Consul's status endpoints check no ACL (agent/status_endpoint.go).
        Product::Consul => matches!(
            path,
            "/v1/status/leader" | "/v1/status/peers" | "/v1/acl/bootstrap" | "/v1/acl/token/self"
        ),
        // Nomad: status/leader; health (Nomad's own Consul HTTP checks call
        // it without a token and pass on ACL clusters).
        Product::Nomad => matches!(
            path,
            "/v1/status/leader" | "/v1/agent/health" | "/v1/acl/bootstrap" | "/v1/acl/token/self"
        ),
    }
}

fn not_found_text(product: Product) -> &'static str {
    match product {
        Product::Consul => "ACL not found",
        Product::Nomad => "ACL token not found",
    }
}

/// The token check: None to go on, else the 403 answer.
pub async fn gate(
    shared: &Arc<Shared>,
    req: &Request<Incoming>,
    path: &str,
    remote: &str,
) -> Option<Resp> {
    let product = shared.product;
    if !shared.acl().deny || is_open(product, path) {
        return None;
    }
    let Some(token) = request_token(req, product) else {
        record_denied(shared, req, remote, "no token");
        return Some(text(403, "Permission denied"));
    };
    if resolve(shared, &token, hops(req)).await.is_none() {
        record_denied(shared, req, remote, "unknown token");
        return Some(text(403, not_found_text(product)));
    }
    // The operator endpoints check the token's rules, as the agents do.
    let need = crate::acl::need_of(product, path)?;
    let allowed = match crate::kv_api::token_rules(shared, &token, hops(req)).await {
        Some((management, rules)) => crate::acl::allows(management, &rules, need),
        None => false,
    };
    if allowed {
        return None;
    }
    record_denied(
        shared,
        req,
        remote,
        &format!("the token lacks {}", need.name()),
    );
    Some(text(403, "Permission denied"))
}

/// Log and keep a refused request (never the token itself).
fn record_denied(shared: &Shared, req: &Request<Incoming>, remote: &str, reason: &str) {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    crate::events::log(&format!(
        "    [WARN] standin: request refused by ACLs: method={method} path={path} from={remote} reason=\"{reason}\""
    ));
    let mut acl = shared.acl();
    if acl.denied.len() >= crate::acl::DENIED_KEEP {
        acl.denied.remove(0);
    }
    acl.denied
        .push(json!({"Method": method, "Path": path, "From": remote, "Reason": reason}));
}

/// How long a token looked up elsewhere is used without asking again:
/// Consul's `acl.token_ttl` and Nomad's client `acl.token_ttl` (both 30 s
/// by default).
const TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// A token lookup this agent cannot answer itself (`path` on `target`):
/// the answer of the last [`TOKEN_TTL`], else asked; when it cannot be
/// asked (no server or primary reachable, an error other than "not
/// found": a server restarting), the last answer of any age, as the
/// agents' default `acl.down_policy = "extend-cache"` does. A "not found"
/// forgets it.
pub(crate) async fn remote_lookup(
    shared: &Shared,
    target: Option<Member>,
    path: &'static str,
    secret: &str,
    hops: u32,
) -> Option<String> {
    let key = (path, secret.to_string());
    let cached = shared.acl().remote.get(&key).cloned();
    if let Some((body, at)) = &cached {
        if at.elapsed() < TOKEN_TTL {
            return Some(body.clone());
        }
    }
    let Some(target) = target else {
        return cached.map(|c| c.0);
    };
    match link::call(shared, &target, "GET", path, Some(secret), "", hops + 1).await {
        Ok((200, body)) => {
            shared
                .acl()
                .remote
                .insert(key, (body.clone(), std::time::Instant::now()));
            Some(body)
        }
        Ok((403 | 404, _)) => {
            shared.acl().remote.remove(&key);
            None
        }
        Ok((code, _)) => {
            crate::events::log(&format!(
                "    [WARN] agent: (stand-in) token lookup at {} answered {code}; using the cached token",
                target.node
            ));
            cached.map(|c| c.0)
        }
        Err(e) => {
            crate::events::log(&format!(
                "    [WARN] agent: (stand-in) token lookup at {} failed: {e}; using the cached token",
                target.node
            ));
            cached.map(|c| c.0)
        }
    }
}

/// Stand-in only: the primary datacenter's replicated ACL state
/// ([`crate::acl::AclState::replication_json`]), for a token with `acl =
/// "write"` (Consul's requirement for a replication token).
pub const REPLICATE_PATH: &str = "/_standin/acl-replicate";

/// How often a secondary datacenter's server replicates (Consul replicates
/// with blocking queries, at once; a second is close enough here).
const REPLICATE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// [`REPLICATE_PATH`] on a server of the primary datacenter.
pub async fn replicate_endpoint(shared: &Shared, req: &Request<Incoming>) -> Resp {
    let cfg = shared.cfg();
    if !cfg.server || !cfg.acl.enabled || cfg.datacenter != cfg.acl.primary_datacenter {
        return text(500, "not a server of the primary datacenter");
    }
    let Some(token) = request_token(req, shared.product) else {
        return text(403, "Permission denied");
    };
    let allowed = match crate::kv_api::token_rules(shared, &token, u32::MAX).await {
        Some((management, rules)) => {
            management || crate::acl::rule_access(&rules, "acl") == Some(crate::kv::Access::Write)
        }
        None => false,
    };
    if !allowed {
        return text(403, "Permission denied");
    }
    json_resp(200, &shared.acl().replication_json())
}

/// A Consul server outside the primary datacenter with
/// `acl.enable_token_replication`: copies the primary's policies and global
/// tokens into its own (persisted) state, so that it resolves them itself,
/// also after a restart and while the primary is unreachable.
pub async fn run_replication(shared: Arc<Shared>) {
    let (token, primary) = {
        let cfg = shared.cfg();
        if cfg.product != Product::Consul
            || !cfg.server
            || !cfg.acl.enabled
            || !cfg.acl.token_replication
            || cfg.datacenter == cfg.acl.primary_datacenter
        {
            return;
        }
        (
            cfg.acl.replication_token.clone(),
            cfg.acl.primary_datacenter.clone(),
        )
    };
    let Some(token) = token else {
        crate::events::log(
            "    [WARN] agent: (stand-in) ACL token replication enabled without acl.tokens.replication",
        );
        return;
    };
    let mut last_ok: Option<bool> = None;
    loop {
        let target = {
            let cfg = shared.cfg();
            let st = shared.lock();
            primary_server(&cfg, &st)
        };
        let outcome = match target {
            None => Err(format!("no server of {primary} reachable")),
            Some(m) => {
                match link::call(&shared, &m, "GET", REPLICATE_PATH, Some(&token.0), "", 1).await {
                    Ok((200, body)) => serde_json::from_str::<Value>(&body)
                        .map(|v| {
                            shared.acl().merge(&v);
                        })
                        .map_err(|e| e.to_string()),
                    Ok((code, body)) => Err(format!("{code} {}", body.trim())),
                    Err(e) => Err(e),
                }
            }
        };
        let ok = outcome.is_ok();
        if last_ok != Some(ok) {
            crate::events::log(&match &outcome {
                Ok(()) => format!(
                    "    [INFO] agent: (stand-in) ACL token replication from {primary}: in sync"
                ),
                Err(e) => format!(
                    "    [WARN] agent: (stand-in) ACL token replication from {primary} failed: {e}"
                ),
            });
            last_ok = Some(ok);
        }
        tokio::time::sleep(REPLICATE_EVERY).await;
    }
}

/// Where a token lookup this agent cannot answer goes (see module doc).
pub(crate) fn resolver(shared: &Shared) -> Option<Member> {
    let cfg = shared.cfg();
    let mut st = shared.lock();
    if !cfg.server {
        return st.servers().into_iter().find(|m| m.status == ALIVE);
    }
    if let Some(leader) = st.leader() {
        if leader.node != st.me.node {
            return Some(leader);
        }
    }
    primary_server(&cfg, &st)
}

/// A Consul server of the primary datacenter, for a server outside it.
fn primary_server(cfg: &crate::config::AgentConfig, st: &crate::state::State) -> Option<Member> {
    if cfg.product != Product::Consul || cfg.datacenter == cfg.acl.primary_datacenter {
        return None;
    }
    st.wan
        .values()
        .find(|m| m.status == ALIVE && m.server && m.dc == cfg.acl.primary_datacenter)
        .cloned()
}

/// The token's JSON when the token exists (asking further when needed).
pub async fn resolve(shared: &Shared, secret: &str, hops: u32) -> Option<Value> {
    {
        let acl = shared.acl();
        if let Some(t) = acl.resolve(secret) {
            return Some(acl.token_json(&t));
        }
    }
    if hops >= MAX_HOPS {
        return None;
    }
    let body = remote_lookup(shared, resolver(shared), "/v1/acl/token/self", secret, hops).await?;
    serde_json::from_str(&body).ok()
}

/// Where an ACL write of this agent goes: a client's server, a Consul
/// server's primary DC; None to apply it here.
fn write_target(shared: &Shared) -> Option<Member> {
    let cfg = shared.cfg();
    let st = shared.lock();
    if !cfg.server {
        return st.servers().into_iter().find(|m| m.status == ALIVE);
    }
    primary_server(&cfg, &st)
}

fn err(e: (u16, String)) -> Resp {
    text(e.0, &e.1)
}

/// `/v1/acl/...`.
pub async fn endpoint(shared: Arc<Shared>, req: Request<Incoming>, path: &str) -> Resp {
    let product = shared.product;
    let method = req.method().clone();
    let token = request_token(&req, product);
    let hops = hops(&req);
    if !shared.cfg().acl.enabled {
        return match product {
            Product::Consul => text(401, "ACL support disabled"),
            Product::Nomad => text(400, "ACL support disabled"),
        };
    }
    if path == "/v1/acl/token/self" {
        if method != Method::GET {
            return text(405, &format!("method {method} not allowed"));
        }
        let Some(token) = token else {
            return text(403, not_found_text(product));
        };
        return match resolve(&shared, &token, hops).await {
            Some(v) => json_resp(200, &v),
            None => text(403, not_found_text(product)),
        };
    }
    let write_ok = match product {
        Product::Consul => method == Method::PUT,
        Product::Nomad => method == Method::PUT || method == Method::POST,
    };
    if !write_ok {
        return match product {
            Product::Consul => text(405, &format!("method {method} not allowed")),
            Product::Nomad => text(405, "Invalid method"),
        };
    }
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| path.to_string());
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return text(400, &e.to_string()),
    };
    let body_text = String::from_utf8_lossy(&body).into_owned();
    if hops < MAX_HOPS {
        if let Some(target) = write_target(&shared) {
            return match link::call(
                &shared,
                &target,
                method.as_str(),
                &pq,
                token.as_deref(),
                &body_text,
                hops + 1,
            )
            .await
            {
                Ok((code, b)) if code == 200 && !b.is_empty() => {
                    crate::http::resp(200, Some("application/json"), b)
                }
                Ok((200, _)) => empty(),
                Ok((code, b)) => text(code, &b),
                Err(e) => text(500, &e),
            };
        }
    }
    let v: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return text(400, &format!("Request decode failed: {e}")),
        }
    };
    let s = |k: &str| field(&v, k).and_then(Value::as_str).map(str::to_string);
    match (product, path) {
        (_, "/v1/acl/bootstrap") => {
            let mut acl = shared.acl();
            match acl.bootstrap(s("BootstrapSecret")) {
                Ok(t) => {
                    crate::events::log("    [INFO] agent: (stand-in) ACL bootstrap completed");
                    let mut v = acl.token_json(&t);
                    // Consul's legacy `ID`, a copy of SecretID (api-docs/acl).
                    if product == Product::Consul {
                        v["ID"] = json!(t.secret);
                    }
                    json_resp(200, &v)
                }
                Err(e) => err(e),
            }
        }
        (Product::Consul, "/v1/acl/policy") => {
            let mut acl = shared.acl();
            match acl.upsert_policy(
                &s("Name").unwrap_or_default(),
                &s("Description").unwrap_or_default(),
                &s("Rules").unwrap_or_default(),
            ) {
                Ok(p) => json_resp(200, &AclState::policy_json(&p)),
                Err(e) => err(e),
            }
        }
        (Product::Consul, "/v1/acl/token") => {
            let mut acl = shared.acl();
            let mut names = Vec::new();
            for p in field(&v, "Policies")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let name = field(p, "Name").and_then(Value::as_str).or_else(|| {
                    let id = field(p, "ID").and_then(Value::as_str)?;
                    if id == crate::acl::GLOBAL_MANAGEMENT_ID {
                        return Some(crate::acl::GLOBAL_MANAGEMENT);
                    }
                    acl.policies.get(id).map(|x| x.name.as_str())
                });
                match name {
                    Some(n) => names.push(n.to_string()),
                    None => return text(400, "Invalid Policy: no such policy"),
                }
            }
            let management = names.iter().any(|n| n == crate::acl::GLOBAL_MANAGEMENT);
            // Global unless `Local` (a local token is not replicated).
            let global = !field(&v, "Local").and_then(Value::as_bool).unwrap_or(false);
            match acl.create_token(
                s("SecretID"),
                s("AccessorID"),
                &s("Description").unwrap_or_default(),
                names,
                management,
                global,
            ) {
                Ok(t) => json_resp(200, &acl.token_json(&t)),
                Err(e) => err(e),
            }
        }
        (Product::Nomad, "/v1/acl/token") => {
            let mut acl = shared.acl();
            let names: Vec<String> = field(&v, "Policies")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            let management = s("Type").as_deref() == Some("management");
            if !management && names.is_empty() {
                return text(400, "client token missing policies");
            }
            // Nomad generates the SecretID itself unless the body carries
            // one (operator-generated tokens, Nomad 2.0).
            let global = field(&v, "Global")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            match acl.create_token(
                s("SecretID"),
                s("AccessorID"),
                &s("Name").unwrap_or_default(),
                names,
                management,
                global,
            ) {
                Ok(t) => json_resp(200, &acl.token_json(&t)),
                Err(e) => err(e),
            }
        }
        (Product::Nomad, p) if p.starts_with("/v1/acl/policy/") => {
            let name = p.trim_start_matches("/v1/acl/policy/");
            if let Some(body_name) = s("Name") {
                if body_name != name {
                    return text(400, "Policy name does not match request path");
                }
            }
            let mut acl = shared.acl();
            match acl.upsert_policy(
                name,
                &s("Description").unwrap_or_default(),
                &s("Rules").unwrap_or_default(),
            ) {
                Ok(_) => empty(),
                Err(e) => err(e),
            }
        }
        _ => crate::http::not_found(),
    }
}

/// Consul with ACLs: check the agent token (`acl.tokens.agent`), the token
/// of the agent's own calls, until it resolves; while it does not, warn
/// once as Consul does when its node updates are refused
/// (`Node info update blocked by ACLs`).
pub async fn watch_agent_token(shared: Arc<Shared>) {
    let cfg = shared.cfg();
    if cfg.product != Product::Consul || !cfg.acl.enabled || !cfg.acl.default_deny {
        return;
    }
    let mut warned = false;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        if shared.lock().leader().is_none() {
            continue;
        }
        let ok = match &cfg.acl.agent_token {
            Some(t) => resolve(&shared, &t.0, 0).await.is_some(),
            None => false,
        };
        if ok {
            crate::events::log("    [INFO] agent: (stand-in) agent token accepted");
            return;
        }
        if !warned {
            crate::events::log(&format!(
                "    [WARN] agent: Node info update blocked by ACLs: node={}",
                cfg.node_name
            ));
            warned = true;
        }
    }
}

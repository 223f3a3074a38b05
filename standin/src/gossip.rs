//! A tiny membership exchange between stand-ins, in place of serf: a join
//! POSTs the joiner's record and member list to the target's hidden
//! `/_standin/gossip` endpoint (served on every listener of a stand-in:
//! HTTP, serf and RPC ports), the answer carries the target's list; a
//! background push-pull keeps lists converging and marks a member failed
//! after a few failed pushes in a row. A Consul server also flood-joins the
//! servers of its own DC into the WAN, as the real servers do
//! ([`run_flood`]). Not serf, and not meant to be.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Product;
use crate::agent::Shared;
use crate::state::{LEFT, Member, NodeRec, Pool, now_ms};

/// The hidden stand-in-only endpoint.
pub const GOSSIP_PATH: &str = "/_standin/gossip";
/// Time allowed for one exchange.
const EXCHANGE_TIMEOUT: Duration = Duration::from_millis(1500);
/// Default push-pull period (`STANDIN_GOSSIP_INTERVAL_MS`).
const DEFAULT_GOSSIP_INTERVAL_MS: u64 = 300;
/// Default retry_join period (`STANDIN_RETRY_INTERVAL_MS`).
const DEFAULT_RETRY_INTERVAL_MS: u64 = 300;
/// Failed pushes in a row before a member is marked failed.
const FAIL_LIMIT: u32 = 3;

fn env_ms(name: &str, default: u64) -> Duration {
    Duration::from_millis(
        crate::knobs::var(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

/// A minimal HTTP/1.1 request over a fresh connection; returns (status, body).
pub async fn http_request_with(
    addr: &str,
    method: &str,
    path: &str,
    body: &str,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let req = Req {
        addr,
        method,
        path,
        headers: &[],
        body,
    };
    send(&req, None, timeout).await
}

/// One request of the stand-in's own links.
pub struct Req<'a> {
    pub addr: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub headers: &'a [(&'a str, String)],
    pub body: &'a str,
}

/// TLS for a request: the connector and the server name to verify.
pub struct Tls<'a> {
    pub connector: tokio_rustls::TlsConnector,
    pub name: &'a str,
}

/// Send a request (over TLS with `tls`) and read the whole answer.
pub async fn send(
    req: &Req<'_>,
    tls: Option<Tls<'_>>,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let addr = req.addr;
    let fut = async {
        let s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("dial tcp {addr}: {e}"))?;
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
            req.method,
            req.path,
            req.body.len()
        );
        for (k, v) in req.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        head.push_str(req.body);
        let buf = match tls {
            Some(tls) => {
                let name =
                    tokio_rustls::rustls::pki_types::ServerName::try_from(tls.name.to_string())
                        .map_err(|e| format!("bad TLS name {}: {e}", tls.name))?;
                let mut s = tls
                    .connector
                    .connect(name, s)
                    .await
                    .map_err(|e| format!("tls handshake with {addr} ({}): {e}", tls.name))?;
                exchange(&mut s, head.as_bytes()).await?
            }
            None => {
                let mut s = s;
                exchange(&mut s, head.as_bytes()).await?
            }
        };
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| "malformed response".to_string())?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| "malformed status line".to_string())?;
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        let body = if chunked {
            dechunk(body)
        } else {
            body.to_string()
        };
        Ok((status, body))
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| format!("i/o timeout talking to {addr}"))?
}

async fn exchange<S>(s: &mut S, req: &[u8]) -> Result<Vec<u8>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    s.write_all(req).await.map_err(|e| e.to_string())?;
    s.flush().await.map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    // A peer closing without TLS close_notify still gave us its answer.
    match s.read_to_end(&mut buf).await {
        Ok(_) => Ok(buf),
        Err(e) if !buf.is_empty() => {
            let _ = e;
            Ok(buf)
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Header carrying the proof of the gossip key (HMAC-SHA256 of the body
/// with the decoded key, base64): the stand-in's stand-in for memberlist's
/// encryption. No key, no header.
pub const MAC_HEADER: &str = "X-Standin-Gossip-Mac";

/// The proof of `key` over `body`.
pub fn mac(key: &[u8], body: &[u8]) -> String {
    use base64::Engine;
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&k, body).as_ref())
}

/// Whether `proof` is the proof of `key` over `body` (constant time).
fn mac_ok(key: &[u8], body: &[u8], proof: &str) -> bool {
    use base64::Engine;
    let Ok(tag) = base64::engine::general_purpose::STANDARD.decode(proof.trim()) else {
        return false;
    };
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::verify(&k, body, &tag).is_ok()
}

/// A gossip POST of `msg` to `addr`, with the key's proof when this agent
/// has a key; over TLS when `tls` is given (Nomad client to server RPC).
async fn post_gossip(
    shared: &Shared,
    addr: &str,
    msg: &str,
    tls: Option<Tls<'_>>,
) -> Result<(u16, String), String> {
    let headers: Vec<(&str, String)> = match &shared.cfg().gossip_key {
        Some(key) => vec![(MAC_HEADER, mac(&key.0, msg.as_bytes()))],
        None => Vec::new(),
    };
    let req = Req {
        addr,
        method: "POST",
        path: GOSSIP_PATH,
        headers: &headers,
        body: msg,
    };
    send(&req, tls, EXCHANGE_TIMEOUT).await
}

/// The TLS of a Nomad client's exchange with a server (its RPC port is
/// TLS with `tls.rpc`), as (connector, verified name).
fn client_rpc_tls(shared: &Shared) -> Option<(tokio_rustls::TlsConnector, String)> {
    let tls = shared.rpc_tls()?;
    let connector = tls.connector().ok()?;
    let cfg = shared.cfg();
    Some((
        connector,
        crate::tls::server_name(Product::Nomad, &cfg.region),
    ))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(len.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Resolve a join address: a bare host gets the pool's default port.
pub fn resolve(addr: &str, default_port: u16) -> String {
    let a = addr.trim();
    if a.starts_with('[') {
        return if a.contains("]:") {
            a.to_string()
        } else {
            format!("{a}:{default_port}")
        };
    }
    if a.contains(':') {
        a.to_string()
    } else {
        format!("{a}:{default_port}")
    }
}

/// Build the message a member sends about a pool.
fn message(shared: &Shared, pool: Pool) -> Value {
    let st = shared.lock();
    let wan_port = shared.cfg().serf_wan_port;
    let from = match pool {
        Pool::Wan => st.me_wan(wan_port),
        _ => st.me.clone(),
    };
    let members: Vec<Value> = match pool {
        Pool::Client => Vec::new(),
        _ => st.pool(pool).values().map(Member::to_json).collect(),
    };
    let nodes: Vec<Value> = st.nodes.values().map(NodeRec::to_json).collect();
    json!({"pool": pool.as_str(), "from": from.to_json(), "members": members, "nodes": nodes,
           "product": shared.product.name()})
}

/// Whether `peer` shares this server's ACL state: both servers of one
/// Consul DC / Nomad region, with ACLs on.
pub fn is_acl_peer(shared: &Shared, peer: &Member) -> bool {
    let cfg = shared.cfg();
    cfg.acl.enabled
        && cfg.server
        && peer.server
        && match cfg.product {
            Product::Consul => peer.dc == cfg.datacenter,
            Product::Nomad => peer.region == cfg.region,
        }
}

/// Add this server's ACL state to a message for `peer` when it shares it
/// (plain gossip only: with TLS links the state goes over the RPC link,
/// [`crate::link::sync_acl`], never in the clear).
fn with_acl(shared: &Shared, msg: &mut Value, peer: &Member) {
    if shared.rpc_tls().is_none() && is_acl_peer(shared, peer) {
        msg["acl"] = shared.acl().to_json();
    }
}

/// Apply a peer's answer (its own record plus its list).
fn absorb(shared: &Shared, pool: Pool, answer: &Value) {
    let from = answer.get("from").and_then(Member::from_json);
    let members: Vec<Member> = answer
        .get("members")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Member::from_json).collect())
        .unwrap_or_default();
    let nodes: Vec<NodeRec> = answer
        .get("nodes")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(NodeRec::from_json).collect())
        .unwrap_or_default();
    if let (Some(acl), Some(f)) = (answer.get("acl"), from.as_ref()) {
        if shared.rpc_tls().is_none() && is_acl_peer(shared, f) {
            shared.acl().merge(acl);
        }
    }
    let mut st = shared.lock();
    // A Nomad client keeps the servers it learns in its LAN map.
    let target = if pool == Pool::Client {
        Pool::Lan
    } else {
        pool
    };
    let changed = st.merge(target, from, members);
    st.merge_nodes(nodes);
    drop(st);
    if changed && target == Pool::Lan {
        shared.lan_changed.notify_one();
    }
}

/// Join one address in a pool; returns an error text like the agents'.
pub async fn join(shared: &Arc<Shared>, pool: Pool, addr: &str) -> Result<(), String> {
    let msg = message(shared, pool).to_string();
    let rpc_tls = if pool == Pool::Client && shared.product == Product::Nomad {
        client_rpc_tls(shared)
    } else {
        None
    };
    let tls = rpc_tls.as_ref().map(|(c, n)| Tls {
        connector: c.clone(),
        name: n,
    });
    let (status, body) = post_gossip(shared, addr, &msg, tls).await?;
    if let Some((_, name)) = &rpc_tls {
        if let (Some(tls), Ok(answer)) = (shared.tls(), serde_json::from_str::<Value>(&body)) {
            let node = answer["from"]["node"].as_str().unwrap_or(addr).to_string();
            tls.record_peer("out", &node, addr, name);
        }
    }
    if status != 200 {
        return Err(format!("{addr}: {}", body.trim()));
    }
    let answer: Value = serde_json::from_str(&body).map_err(|e| format!("{addr}: {e}"))?;
    absorb(shared, pool, &answer);
    if pool == Pool::Lan || pool == Pool::Client {
        shared.lan_joined();
    }
    Ok(())
}

/// Server side of an exchange: record the sender, answer with our view.
pub fn handle_exchange(
    shared: &Shared,
    body: &[u8],
    proof: Option<&str>,
    remote: &str,
) -> Result<Value, String> {
    let msg: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let pool = msg
        .get("pool")
        .and_then(Value::as_str)
        .and_then(Pool::parse)
        .ok_or("missing pool")?;
    // A Nomad client's exchange stands for its RPC with a server, which
    // serf's key does not cover; every other pool is serf gossip.
    if pool != Pool::Client {
        check_proof(shared, body, proof, remote)?;
    }
    if msg.get("product").and_then(Value::as_str) != Some(shared.product.name()) {
        return Err("stand-in product mismatch".to_string());
    }
    let cfg = shared.cfg();
    if pool == Pool::Wan && !cfg.server {
        return Err("Must be a server to join WAN cluster".to_string());
    }
    if pool == Pool::Client {
        if !cfg.server {
            return Err("not a server".to_string());
        }
        if let Some(from) = msg.get("from").and_then(Member::from_json) {
            let now = now_ms();
            let mut st = shared.lock();
            let create = st.nodes.get(&from.node_id).map_or(now, |n| n.create_ms);
            st.merge_nodes(vec![NodeRec {
                id: from.node_id.clone(),
                name: from.node.clone(),
                dc: from.dc.clone(),
                addr: from.addr.clone(),
                version: from.version.clone(),
                last_seen_ms: now,
                create_ms: create,
            }]);
        }
        // Answer with our server pool so the client learns every server.
        let mut reply = message(shared, Pool::Lan);
        let st = shared.lock();
        let servers: Vec<Value> = st
            .pool(Pool::Lan)
            .values()
            .filter(|m| m.server)
            .map(Member::to_json)
            .collect();
        reply["members"] = Value::Array(servers);
        return Ok(reply);
    }
    absorb(shared, pool, &msg);
    let mut reply = message(shared, pool);
    if let Some(from) = msg.get("from").and_then(Member::from_json) {
        with_acl(shared, &mut reply, &from);
    }
    Ok(reply)
}

/// memberlist's checks of an incoming message: with a key, the proof must
/// verify; without one, a message carrying a proof is refused too.
fn check_proof(
    shared: &Shared,
    body: &[u8],
    proof: Option<&str>,
    remote: &str,
) -> Result<(), String> {
    // memberlist's error texts (memberlist security.go / net.go).
    const NO_KEYS: &str = "No installed keys could decrypt the message";
    const NOT_CONFIGURED: &str = "Remote state is encrypted and encryption is not configured";
    match (&shared.cfg().gossip_key, proof) {
        (Some(key), Some(p)) if mac_ok(&key.0, body, p) => Ok(()),
        (Some(_), _) => {
            crate::events::log(&format!(
                "    [ERR] memberlist: failed to receive: {NO_KEYS} from={remote}"
            ));
            Err(NO_KEYS.to_string())
        }
        (None, Some(_)) => {
            crate::events::log(&format!(
                "    [ERR] memberlist: failed to receive: {NOT_CONFIGURED} from={remote}"
            ));
            Err(NOT_CONFIGURED.to_string())
        }
        (None, None) => Ok(()),
    }
}

/// Push our view to every known member, forever (push-pull anti-entropy).
pub async fn run_push_pull(shared: Arc<Shared>) {
    let period = env_ms("STANDIN_GOSSIP_INTERVAL_MS", DEFAULT_GOSSIP_INTERVAL_MS);
    loop {
        tokio::time::sleep(period).await;
        push_all(&shared).await;
    }
}

/// One round of pushes (also used to announce a leave).
pub async fn push_all(shared: &Arc<Shared>) {
    let cfg = shared.cfg();
    let mut pools = vec![Pool::Lan];
    if cfg.product == Product::Consul && cfg.server {
        pools.push(Pool::Wan);
    }
    let nomad_client_only = cfg.product == Product::Nomad && !cfg.server;
    let mut tasks = Vec::new();
    for pool in pools {
        let targets: Vec<(String, String, Member)> = {
            let st = shared.lock();
            st.pool(pool)
                .values()
                .filter(|m| m.status != LEFT && !m.gossip.is_empty())
                .filter(|m| !nomad_client_only || m.server)
                .map(|m| {
                    // A Nomad client talks to a server's TLS RPC port.
                    if nomad_client_only && shared.rpc_tls().is_some() {
                        (m.name.clone(), m.rpc_addr(), m.clone())
                    } else {
                        (m.name.clone(), m.gossip.clone(), m.clone())
                    }
                })
                .collect()
        };
        let send_pool = if nomad_client_only {
            Pool::Client
        } else {
            pool
        };
        for (name, addr, member) in targets {
            let shared = shared.clone();
            tasks.push(tokio::spawn(async move {
                let mut msg = message(&shared, send_pool);
                with_acl(&shared, &mut msg, &member);
                let msg = msg.to_string();
                let rpc_tls = if send_pool == Pool::Client {
                    client_rpc_tls(&shared)
                } else {
                    None
                };
                let tls = rpc_tls.as_ref().map(|(c, n)| Tls {
                    connector: c.clone(),
                    name: n,
                });
                let res = post_gossip(&shared, &addr, &msg, tls).await;
                if let (Ok((200, _)), Some((_, n)), Some(t)) = (&res, &rpc_tls, shared.tls()) {
                    t.record_peer("out", name.split('.').next().unwrap_or(&name), &addr, n);
                }
                match res.and_then(|(status, body)| {
                    if status == 200 {
                        serde_json::from_str::<Value>(&body).map_err(|e| e.to_string())
                    } else {
                        Err(body)
                    }
                }) {
                    Ok(answer) => absorb(&shared, send_pool, &answer),
                    Err(_) => shared.lock().push_failed(pool, &name, FAIL_LIMIT),
                }
            }));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    crate::link::ping_servers(shared).await;
    crate::link::sync_acl(shared).await;
}

/// A Consul server's flood loop (consul:agent/consul/flood.go Server.Flood):
/// every gossip interval, and at once on a LAN member event, WAN-join the
/// servers of its own DC that are missing from the WAN pool
/// ([`crate::state::State::flood_targets`]). A failed flood join is retried
/// on the next round; like the real agent's (debug-level) it is not logged.
pub async fn run_flood(shared: Arc<Shared>) {
    let period = env_ms("STANDIN_GOSSIP_INTERVAL_MS", DEFAULT_GOSSIP_INTERVAL_MS);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shared.lan_changed.notified() => {}
        }
        flood(&shared).await;
    }
}

/// One flood round; returns how many servers were joined into the WAN.
pub async fn flood(shared: &Arc<Shared>) -> usize {
    let targets = shared.lock().flood_targets();
    let mut joined = 0;
    for (name, addr) in targets {
        if join(shared, Pool::Wan, &addr).await.is_ok() {
            joined += 1;
            crate::events::log(&format!(
                "    [INFO] agent.server: (stand-in) flood-joined server into the WAN: server={name} address={addr}"
            ));
        }
    }
    joined
}

/// Join the configured addresses, retrying until one succeeds (retry_join).
pub async fn run_retry_join(shared: Arc<Shared>, pool: Pool, addrs: Vec<String>) {
    if addrs.is_empty() {
        return;
    }
    let cfg = shared.cfg();
    let default_port = match (cfg.product, pool) {
        (Product::Consul, Pool::Wan) => crate::config::DEFAULT_CONSUL_SERF_WAN_PORT,
        (Product::Consul, _) => crate::config::DEFAULT_CONSUL_SERF_LAN_PORT,
        (Product::Nomad, Pool::Client) => crate::config::DEFAULT_NOMAD_RPC_PORT,
        (Product::Nomad, _) => crate::config::DEFAULT_NOMAD_SERF_PORT,
    };
    let period = env_ms("STANDIN_RETRY_INTERVAL_MS", DEFAULT_RETRY_INTERVAL_MS);
    let what = if pool == Pool::Wan { "WAN" } else { "LAN" };
    loop {
        let mut joined = 0;
        for a in &addrs {
            if a.contains("provider=") {
                crate::events::log(&format!(
                    "    [WARN] stand-in: cloud auto-join {a:?} is not supported by the stand-in"
                ));
                continue;
            }
            let target = resolve(a, default_port);
            match join(&shared, pool, &target).await {
                Ok(()) => joined += 1,
                Err(e) => crate::events::log(&format!(
                    "    [WARN] agent: (stand-in) {what} join failed: error={e}"
                )),
            }
        }
        if joined > 0 {
            crate::events::log(&format!(
                "    [INFO] agent: (stand-in) Join cluster completed. Synced with initial agents: cluster={what} num_agents={joined}"
            ));
            return;
        }
        tokio::time::sleep(period).await;
    }
}

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
pub async fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, String), String> {
    http_request_with(addr, method, path, body, EXCHANGE_TIMEOUT).await
}

/// [`http_request`] with a chosen timeout.
pub async fn http_request_with(
    addr: &str,
    method: &str,
    path: &str,
    body: &str,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let fut = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("dial tcp {addr}: {e}"))?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
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
    let (status, body) = http_request(addr, "POST", GOSSIP_PATH, &msg).await?;
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
pub fn handle_exchange(shared: &Shared, body: &[u8]) -> Result<Value, String> {
    let msg: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let pool = msg
        .get("pool")
        .and_then(Value::as_str)
        .and_then(Pool::parse)
        .ok_or("missing pool")?;
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
    Ok(message(shared, pool))
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
        let targets: Vec<(String, String)> = {
            let st = shared.lock();
            st.pool(pool)
                .values()
                .filter(|m| m.status != LEFT && !m.gossip.is_empty())
                .filter(|m| !nomad_client_only || m.server)
                .map(|m| (m.name.clone(), m.gossip.clone()))
                .collect()
        };
        let send_pool = if nomad_client_only {
            Pool::Client
        } else {
            pool
        };
        for (name, addr) in targets {
            let shared = shared.clone();
            tasks.push(tokio::spawn(async move {
                let msg = message(&shared, send_pool).to_string();
                let res = http_request(&addr, "POST", GOSSIP_PATH, &msg).await;
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

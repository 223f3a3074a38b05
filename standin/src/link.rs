//! The stand-in's own calls to other agents where the real agents use RPC:
//! a Consul client asking a server, a server asking its leader or the
//! primary datacenter, `?dc=` forwarding, the TLS "RPC ping" that records
//! every verified peer handshake. With RPC TLS on (Consul
//! `verify_outgoing`, Nomad `tls.rpc`) they go to the peer's RPC port over
//! TLS, presenting the node certificate and verifying the peer for
//! `server.<dc>.consul` / `server.<region>.nomad`; without, to the peer's
//! gossip address in plain HTTP (as before TLS existed here).

use std::time::Duration;

use crate::Product;
use crate::agent::Shared;
use crate::gossip::{self, Req, Tls};
use crate::state::Member;

/// Time allowed for one call.
const CALL_TIMEOUT: Duration = Duration::from_millis(3000);
/// Header naming the calling node on RPC links (recorded as a TLS peer).
pub const NODE_HEADER: &str = "X-Standin-Node";
/// Header marking a request forwarded by a stand-in (no further forwarding).
pub const FORWARDED_HEADER: &str = "X-Standin-Forwarded";
/// The ping path of RPC links.
pub const PING_PATH: &str = "/_standin/rpc-ping";
/// ACL state exchange between servers over the TLS RPC link.
pub const ACL_SYNC_PATH: &str = "/_standin/acl-sync";

/// Token header of the product.
pub fn token_header(product: Product) -> &'static str {
    match product {
        Product::Consul => "X-Consul-Token",
        Product::Nomad => "X-Nomad-Token",
    }
}

/// Call `member` (a server) over the RPC link; returns (status, body).
pub async fn call(
    shared: &Shared,
    member: &Member,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
    hops: u32,
) -> Result<(u16, String), String> {
    let node = shared.lock().me.node.clone();
    let mut headers: Vec<(&str, String)> =
        vec![(NODE_HEADER, node), (FORWARDED_HEADER, hops.to_string())];
    if let Some(t) = token.filter(|t| !t.is_empty()) {
        headers.push((token_header(shared.product), t.to_string()));
    }
    match shared.rpc_tls() {
        Some(tls) => {
            let name = crate::tls::server_name(
                shared.product,
                match shared.product {
                    Product::Consul => &member.dc,
                    Product::Nomad => &member.region,
                },
            );
            let addr = member.rpc_addr();
            let connector = tls.connector()?;
            let req = Req {
                addr: &addr,
                method,
                path,
                headers: &headers,
                body,
            };
            let res = gossip::send(
                &req,
                Some(Tls {
                    connector,
                    name: &name,
                }),
                CALL_TIMEOUT,
            )
            .await?;
            tls.record_peer("out", &member.node, &addr, &name);
            Ok(res)
        }
        None => {
            let req = Req {
                addr: &member.gossip,
                method,
                path,
                headers: &headers,
                body,
            };
            gossip::send(&req, None, CALL_TIMEOUT).await
        }
    }
}

/// One ping per known server not yet verified over TLS (RPC TLS only):
/// Consul to the servers of its DC (and, on servers, of the WAN), Nomad to
/// the servers of its region.
pub async fn ping_servers(shared: &Shared) {
    let Some(tls) = shared.rpc_tls() else {
        return;
    };
    let verified: Vec<String> = tls
        .peers()
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|p| p["Direction"] == "out")
                .filter_map(|p| p["Node"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let targets: Vec<Member> = {
        let cfg = shared.cfg();
        let st = shared.lock();
        let mut t: Vec<Member> = st
            .servers()
            .into_iter()
            .filter(|m| m.node != st.me.node)
            .collect();
        if cfg.product == Product::Consul && cfg.server {
            t.extend(st.wan.values().filter(|m| m.server).cloned());
        }
        t.into_iter()
            .filter(|m| m.status == crate::state::ALIVE)
            .filter(|m| !verified.contains(&m.node))
            .collect()
    };
    for m in targets {
        if let Err(e) = call(shared, &m, "GET", PING_PATH, None, "", 1).await {
            crate::events::log(&format!(
                "    [WARN] standin: rpc link to {} failed: {e}",
                m.node
            ));
        }
    }
}

/// A request of a Nomad agent to its Consul agent (`consul {}` block):
/// HTTPS with `ssl` (verified for the address's host with `verify_ssl`,
/// client certificate when given) and `X-Consul-Token` with `token`.
pub async fn consul_request(
    shared: &Shared,
    addr: &str,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, String), String> {
    let c = shared.cfg().consul;
    let mut headers: Vec<(&str, String)> = Vec::new();
    if let Some(t) = &c.token {
        headers.push(("X-Consul-Token", t.0.clone()));
    }
    let req = Req {
        addr,
        method,
        path,
        headers: &headers,
        body,
    };
    if c.tls.ssl {
        let connector = crate::tls::consul_client_connector(&c.tls)?;
        let host = host_of(addr);
        gossip::send(
            &req,
            Some(Tls {
                connector,
                name: &host,
            }),
            CALL_TIMEOUT,
        )
        .await
    } else {
        gossip::send(&req, None, CALL_TIMEOUT).await
    }
}

/// The host part of `host:port` / `[v6]:port`.
fn host_of(addr: &str) -> String {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest).to_string();
    }
    addr.rsplit_once(':')
        .map(|(h, _)| h.to_string())
        .unwrap_or_else(|| addr.to_string())
}

/// With TLS links, servers exchange their ACL state over the RPC link
/// (each push-pull round, with every alive server of the own DC / region):
/// the request carries ours, the answer theirs; both merge.
pub async fn sync_acl(shared: &Shared) {
    if shared.rpc_tls().is_none() {
        return;
    }
    let peers: Vec<Member> = {
        let st = shared.lock();
        st.servers()
            .into_iter()
            .filter(|m| m.node != st.me.node && m.status == crate::state::ALIVE)
            .collect()
    };
    for m in peers {
        if !gossip::is_acl_peer(shared, &m) {
            continue;
        }
        let body = shared.acl().to_json().to_string();
        if let Ok((200, answer)) = call(shared, &m, "POST", ACL_SYNC_PATH, None, &body, 1).await {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&answer) {
                shared.acl().merge(&v);
            }
        }
    }
}

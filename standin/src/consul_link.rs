//! Nomad's use of Consul, as the stand-in imitates it (`consul {}` block,
//! agent-facts §5): with `auto_advertise` the agent registers its services
//! (`nomad` with tags http/rpc/serf on servers, `nomad-client` with tag http
//! on clients) in the local Consul agent; with `server_auto_join` a server
//! without leader looks up `nomad` (tag serf) in every Consul datacenter and
//! joins what it finds; with `client_auto_join` a client without servers
//! looks up `nomad` (tag rpc). Talks to Consul's HTTP API only.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::agent::Shared;
use crate::events::log;
use crate::gossip;
use crate::link::consul_request;
use crate::state::{ALIVE, Pool, host_port, is_wildcard};

/// Default period of the Consul sync loop (`STANDIN_RETRY_INTERVAL_MS`).
const DEFAULT_PERIOD_MS: u64 = 300;
/// How often registrations are checked once made.
const RESYNC_EVERY: u32 = 10;

/// The services this agent registers: (ID, name, tag, port, check).
fn services(shared: &Shared) -> Vec<Value> {
    let cfg = shared.cfg();
    let ip = if is_wildcard(&cfg.http_ip) {
        cfg.advertise_ip.clone()
    } else {
        cfg.http_ip.clone()
    };
    let id = shared.lock().me.node_id.clone();
    let mut out = Vec::new();
    if cfg.server {
        let name = &cfg.consul.server_service_name;
        out.push(json!({
            "ID": format!("_nomad-server-{id}-http"), "Name": name, "Tags": ["http"],
            "Address": ip, "Port": cfg.http_port,
            "Check": http_check(&cfg, "Nomad Server HTTP Check", &ip, "server"),
        }));
        out.push(json!({
            "ID": format!("_nomad-server-{id}-rpc"), "Name": name, "Tags": ["rpc"],
            "Address": cfg.advertise_ip, "Port": cfg.rpc_port,
            "Check": {"Name": "Nomad Server RPC Check", "Interval": "10s", "Timeout": "3s",
                      "TCP": host_port(&cfg.advertise_ip, cfg.rpc_port)},
        }));
        out.push(json!({
            "ID": format!("_nomad-server-{id}-serf"), "Name": name, "Tags": ["serf"],
            "Address": cfg.advertise_ip, "Port": cfg.serf_port,
            "Check": {"Name": "Nomad Server Serf Check", "Interval": "10s", "Timeout": "3s",
                      "TCP": host_port(&cfg.advertise_ip, cfg.serf_port)},
        }));
    }
    if cfg.client {
        out.push(json!({
            "ID": format!("_nomad-client-{id}-http"), "Name": cfg.consul.client_service_name,
            "Tags": ["http"], "Address": ip, "Port": cfg.http_port,
            "Check": http_check(&cfg, "Nomad Client HTTP Check", &ip, "client"),
        }));
    }
    out
}

/// The HTTP check of a Nomad service; with `tls.http` the stand-in's check
/// runner (plain `http://` only) gets a TCP check of the HTTPS port instead
/// (the real Nomad registers an `https://` check with TLSSkipVerify).
fn http_check(cfg: &crate::config::AgentConfig, name: &str, ip: &str, ty: &str) -> Value {
    let addr = host_port(ip, cfg.http_port);
    if cfg.http_tls {
        json!({"Name": name, "Interval": "10s", "Timeout": "3s", "TCP": addr})
    } else {
        json!({"Name": name, "Interval": "10s", "Timeout": "3s",
               "HTTP": format!("http://{addr}/v1/agent/health?type={ty}")})
    }
}

fn consul_addr(address: &str) -> String {
    address
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string()
}

/// Register every service; true when all succeeded.
async fn register(shared: &Shared, consul: &str, services: &[Value]) -> Result<(), String> {
    for s in services {
        let (code, body) = consul_request(
            shared,
            consul,
            "PUT",
            "/v1/agent/service/register",
            &s.to_string(),
        )
        .await?;
        if code != 200 {
            return Err(format!("{code} {}", body.trim()));
        }
    }
    Ok(())
}

/// Whether all our service IDs are still registered with the Consul agent.
async fn registered(shared: &Shared, consul: &str, services: &[Value]) -> bool {
    let Ok((200, body)) = consul_request(shared, consul, "GET", "/v1/agent/services", "").await
    else {
        return false;
    };
    let Ok(v) = serde_json::from_str::<Value>(&body) else {
        return false;
    };
    services
        .iter()
        .all(|s| s["ID"].as_str().is_some_and(|id| v.get(id).is_some()))
}

/// `address:port` of every instance of `name` with `tag` in all datacenters.
async fn discover(
    shared: &Shared,
    consul: &str,
    name: &str,
    tag: &str,
) -> Result<Vec<String>, String> {
    let (code, body) = consul_request(shared, consul, "GET", "/v1/catalog/datacenters", "").await?;
    if code != 200 {
        return Err(format!("{code} {}", body.trim()));
    }
    let dcs: Vec<String> = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for dc in dcs {
        let path = format!("/v1/catalog/service/{name}?tag={tag}&dc={dc}");
        let Ok((200, body)) = consul_request(shared, consul, "GET", &path, "").await else {
            continue;
        };
        let Ok(Value::Array(list)) = serde_json::from_str::<Value>(&body) else {
            continue;
        };
        for e in list {
            let addr = e["ServiceAddress"]
                .as_str()
                .filter(|a| !a.is_empty())
                .or(e["Address"].as_str())
                .unwrap_or("");
            if let Some(port) = e["ServicePort"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
            {
                out.push(host_port(addr, port));
            }
        }
    }
    Ok(out)
}

/// The Consul sync loop of a Nomad stand-in.
pub async fn run(shared: Arc<Shared>) {
    let cfg = shared.cfg();
    let c = cfg.consul.clone();
    if !(c.auto_advertise || c.server_auto_join || c.client_auto_join) {
        return;
    }
    let consul = consul_addr(&c.address);
    let period = Duration::from_millis(
        crate::knobs::var("STANDIN_RETRY_INTERVAL_MS")
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_PERIOD_MS),
    );
    let own = services(&shared);
    let mut registered_ok = false;
    let mut last_error = String::new();
    let mut tick: u32 = 0;
    loop {
        tick = tick.wrapping_add(1);
        if c.auto_advertise && (!registered_ok || tick % RESYNC_EVERY == 0) {
            if registered_ok && registered(&shared, &consul, &own).await {
                // still there
            } else {
                match register(&shared, &consul, &own).await {
                    Ok(()) => {
                        if !registered_ok {
                            log(&format!(
                                "    [INFO] nomad.consul: (stand-in) registered services with Consul at {consul}"
                            ));
                        }
                        registered_ok = true;
                    }
                    Err(e) => {
                        registered_ok = false;
                        if e != last_error {
                            log(&format!(
                                "    [WARN] nomad.consul: (stand-in) failed to register services: {e}"
                            ));
                            last_error = e;
                        }
                    }
                }
            }
        }
        if cfg.server && c.server_auto_join && shared.lock().leader().is_none() {
            join_found(&shared, &consul, &c.server_service_name, "serf", Pool::Lan).await;
        }
        if cfg.client && !cfg.server && c.client_auto_join && !shared.lock().knows_servers() {
            join_found(
                &shared,
                &consul,
                &c.server_service_name,
                "rpc",
                Pool::Client,
            )
            .await;
        }
        tokio::time::sleep(period).await;
    }
}

async fn join_found(shared: &Arc<Shared>, consul: &str, name: &str, tag: &str, pool: Pool) {
    let Ok(addrs) = discover(shared, consul, name, tag).await else {
        return;
    };
    let known: Vec<String> = {
        let st = shared.lock();
        let mut k: Vec<String> = st
            .lan
            .values()
            .filter(|m| m.status == ALIVE)
            .flat_map(|m| [host_port(&m.addr, m.port), host_port(&m.addr, m.rpc_port)])
            .collect();
        k.push(host_port(&st.me.addr, st.me.port));
        k.push(host_port(&st.me.addr, st.me.rpc_port));
        k
    };
    for a in addrs.into_iter().filter(|a| !known.contains(a)) {
        match gossip::join(shared, pool, &a).await {
            Ok(()) => log(&format!(
                "    [INFO] nomad: (stand-in) joined {a} found in Consul (tag {tag})"
            )),
            Err(e) => log(&format!(
                "    [WARN] nomad: (stand-in) join of {a} found in Consul failed: {e}"
            )),
        }
    }
}

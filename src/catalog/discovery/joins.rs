//! Live joins: when discovery finds a new peer, the node's own agents are
//! asked to join it through their APIs, so no agent restarts for a peer
//! change (the daemon re-renders the configs for the next start).
//!
//! A new Consul LAN peer → `PUT /v1/agent/join/<addr>`; a new WAN peer on a
//! Consul server → `?wan=1`; a new Nomad server → on a Nomad server
//! `PUT /v1/agent/join?address=<addr>`, on a Nomad client
//! `PUT /v1/agent/servers?address=..` with the whole list (RPC port 4647).
//! The role file's lists are joined the same way, so a dead seed is a
//! warning naming it (cloud strings are left to the agents). A local agent that does not answer (not running yet,
//! restarting) is asked again shortly, quietly; a join the agent refuses
//! is counted, warned and retried with backoff. Joins only what the merge
//! published, which never holds a peer of another region.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::agent::consul::ConsulClient;
use crate::agent::nomad::NomadClient;
use crate::agent::{AgentClient, AgentError, TransportError};
use crate::peers::Peers;
use crate::vocab::Product;

use super::Node;
use super::Shared;
use super::backoff::Backoff;
use super::merge::host_of;

/// Nomad servers' RPC port, which a client's server list names.
pub const NOMAD_RPC_PORT: u16 = 4647;
/// Timeout of one join request (the agent contacts the peer first).
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest wait before asking again after a refused join.
pub const MAX_RETRY: Duration = Duration::from_secs(30);
/// Longest wait before asking a local agent that did not answer again.
pub const MAX_AGENT_WAIT: Duration = Duration::from_secs(5);

/// One join to make.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// Consul LAN join of this address.
    ConsulLan(String),
    /// Consul WAN join of this address (servers).
    ConsulWan(String),
    /// Nomad server join of this address.
    NomadJoin(String),
    /// A Nomad client's whole server list (`host:4647`, sorted).
    NomadServers(Vec<String>),
}

impl Target {
    /// The agent that makes it (`consul`, `nomad`).
    pub fn agent(&self) -> &'static str {
        match self {
            Target::ConsulLan(_) | Target::ConsulWan(_) => "consul",
            _ => "nomad",
        }
    }

    /// In words, for logs and warnings.
    pub fn describe(&self) -> String {
        match self {
            Target::ConsulLan(a) => format!("consul join {a}"),
            Target::ConsulWan(a) => format!("consul join -wan {a}"),
            Target::NomadJoin(a) => format!("nomad server join {a}"),
            Target::NomadServers(l) => format!("nomad client servers {}", l.join(",")),
        }
    }
}

/// The joins `peers` call for on `node`, sorted, each through the local
/// agent that can make it. The role file's lists are joined too (they are
/// in the rendered configs, and joining a member again is a no-op): a dead
/// seed is then a warning naming it. Cloud strings are the agents' own.
pub fn wanted(node: &Node, peers: &Peers) -> Vec<Target> {
    let d = &node.role.discovery;
    let mut out = BTreeSet::new();
    let not_cloud = |a: &&String| !d.cloud_auto_join.contains(*a);
    if let Some(c) = node.local_agent(Product::Consul) {
        let lan = d.consul_retry_join.iter().chain(&peers.consul_lan);
        for a in lan.filter(not_cloud) {
            out.insert(Target::ConsulLan(a.clone()));
        }
        if c.server {
            let wan = d.consul_retry_join_wan.iter().chain(&peers.consul_wan);
            for a in wan.filter(not_cloud) {
                out.insert(Target::ConsulWan(a.clone()));
            }
        }
    }
    if let Some(n) = node.local_agent(Product::Nomad) {
        let all: BTreeSet<&String> = d
            .nomad_retry_join
            .iter()
            .chain(&peers.nomad_servers)
            .collect();
        if n.server {
            for a in all {
                out.insert(Target::NomadJoin(a.clone()));
            }
        } else if n.client && !all.is_empty() {
            let rpc: BTreeSet<String> = all.into_iter().map(|a| rpc_address(a)).collect();
            out.insert(Target::NomadServers(rpc.into_iter().collect()));
        }
    }
    out.into_iter().collect()
}

/// `host:4647` of a server address (`host` or `host:port`).
pub fn rpc_address(address: &str) -> String {
    let host = host_of(address);
    if host.contains(':') {
        format!("[{host}]:{NOMAD_RPC_PORT}")
    } else {
        format!("{host}:{NOMAD_RPC_PORT}")
    }
}

/// Whether a failure means the local agent did not answer at all (not
/// running yet, restarting): asked again quietly.
fn agent_down(e: &AgentError) -> bool {
    matches!(
        e,
        AgentError::Request {
            source: TransportError::Connect(_),
            ..
        }
    )
}

/// Makes one join through the local agent of `node`.
async fn join(node: &Node, agents: &AgentClient, t: &Target) -> Result<(), AgentError> {
    let product = match t {
        Target::ConsulLan(_) | Target::ConsulWan(_) => Product::Consul,
        _ => Product::Nomad,
    };
    let Some(agent) = node.local_agent(product) else {
        return Ok(());
    };
    let api = agents.endpoint(agent.http_addr, agent.api_tls.as_ref(), JOIN_TIMEOUT)?;
    match t {
        Target::ConsulLan(a) => ConsulClient::new(api).join(a, false).await,
        Target::ConsulWan(a) => ConsulClient::new(api).join(a, true).await,
        Target::NomadJoin(a) => NomadClient::new(api)
            .join(std::slice::from_ref(a))
            .await
            .map(|_| ()),
        Target::NomadServers(l) => NomadClient::new(api).set_servers(l).await,
    }
}

#[derive(Debug)]
struct Retry {
    backoff: Backoff,
    due: Instant,
}

/// One join, owning what it needs (so several run at once).
async fn attempt(node: Node, agents: AgentClient, t: Target) -> (Target, Result<(), AgentError>) {
    let r = join(&node, &agents, &t).await;
    (t, r)
}

/// Joins new peers as the report publishes them, until `cancel`. Joins
/// run at once, each on its own: a seed that hangs for the whole request
/// timeout delays no other join.
pub(crate) async fn run(shared: Arc<Shared>, agents: AgentClient, cancel: CancellationToken) {
    let mut reports = shared.tx.subscribe();
    let mut done: BTreeSet<Target> = BTreeSet::new();
    let mut retry: BTreeMap<Target, Retry> = BTreeMap::new();
    let mut inflight: BTreeSet<Target> = BTreeSet::new();
    let mut pending = FuturesUnordered::new();
    loop {
        let node = shared.node();
        let peers = reports.borrow_and_update().peers.clone();
        let want = wanted(&node, &peers);
        // A peer that left and comes back is joined again.
        done.retain(|t| want.contains(t));
        retry.retain(|t, _| want.contains(t));
        let now = Instant::now();
        for t in &want {
            if done.contains(t) || inflight.contains(t) || retry.get(t).is_some_and(|r| r.due > now)
            {
                continue;
            }
            inflight.insert(t.clone());
            pending.push(attempt(node.clone(), agents.clone(), t.clone()));
        }
        let next_due = retry
            .iter()
            .filter(|(t, _)| !inflight.contains(*t))
            .map(|(_, r)| r.due)
            .min();
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = reports.changed() => if r.is_err() { return },
            Some((t, result)) = pending.next(), if !pending.is_empty() => {
                inflight.remove(&t);
                finished(&shared, &mut done, &mut retry, t, result);
            }
            _ = async {
                match next_due {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
}

/// Records how one join ended: done and counted, or retried later (a
/// local agent that did not answer quietly, a refusal counted and warned).
fn finished(
    shared: &Shared,
    done: &mut BTreeSet<Target>,
    retry: &mut BTreeMap<Target, Retry>,
    t: Target,
    result: Result<(), AgentError>,
) {
    match result {
        Ok(()) => {
            tracing::info!(target: "hashi_supervisor::discovery", join = %t.describe(), "joined a peer");
            retry.remove(&t);
            shared.update(|s| s.count_join(t.agent()));
            done.insert(t);
        }
        Err(e) => {
            let down = agent_down(&e);
            let r = retry.entry(t.clone()).or_insert_with(|| Retry {
                backoff: Backoff::new(if down { MAX_AGENT_WAIT } else { MAX_RETRY }),
                due: Instant::now(),
            });
            let wait = r.backoff.fail();
            r.due = Instant::now() + wait;
            if down {
                tracing::debug!(target: "hashi_supervisor::discovery", join = %t.describe(), error = %e.one_line(), "local agent not answering; will ask again");
            } else {
                shared.update(|s| {
                    s.count_error("join");
                    s.warn(
                        &format!("join {}", t.describe()),
                        format!(
                            "{} failed (again in {} s): {}",
                            t.describe(),
                            wait.as_secs(),
                            e.one_line()
                        ),
                    );
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn node(text: &str, roles: &[&str]) -> Node {
        let host = crate::role::StaticHost {
            hostname: Some("ams2-server-01".into()),
            interfaces: vec![("eth1".into(), std::net::Ipv4Addr::new(10, 0, 1, 11))],
            ..crate::role::StaticHost::default()
        };
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        let role = crate::role::parse(
            std::path::Path::new("/r/node.toml"),
            &crate::role::with_plaintext(text),
            &roles,
            &host,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let plan = crate::plan::Plan::from_role(&role);
        Node {
            health: role.health_listen,
            role,
            plan,
        }
    }

    fn peers() -> Peers {
        Peers {
            consul_lan: vec!["10.0.1.12".into(), "10.0.1.13".into()],
            consul_wan: vec!["203.0.113.21".into()],
            consul_http: None,
            nomad_servers: vec!["10.0.1.12".into(), "203.0.113.21".into()],
        }
    }

    #[test]
    fn a_server_joins_lan_wan_and_nomad_servers_its_static_lists_included() {
        let n = node(
            "schema = 1\n[discovery]\nconsul_retry_join = [\"10.0.1.13\"]\n\
             cloud_auto_join = [\"provider=aws tag_key=consul tag_value=ams2\"]\n",
            &["consul-server", "nomad-server"],
        );
        assert_eq!(
            wanted(&n, &peers()),
            vec![
                Target::ConsulLan("10.0.1.12".into()),
                Target::ConsulLan("10.0.1.13".into()),
                Target::ConsulWan("203.0.113.21".into()),
                Target::NomadJoin("10.0.1.12".into()),
                Target::NomadJoin("203.0.113.21".into()),
            ]
        );
    }

    #[test]
    fn a_consul_client_joins_no_wan_and_a_nomad_client_sets_the_whole_list() {
        let n = node(
            "schema = 1\n[discovery]\nconsul_retry_join = [\"10.0.1.11\"]\n\
             nomad_retry_join = [\"10.0.1.14:4648\"]\n",
            &["consul-client", "nomad-client"],
        );
        assert_eq!(
            wanted(&n, &peers()),
            vec![
                Target::ConsulLan("10.0.1.11".into()),
                Target::ConsulLan("10.0.1.12".into()),
                Target::ConsulLan("10.0.1.13".into()),
                Target::NomadServers(vec![
                    "10.0.1.12:4647".into(),
                    "10.0.1.14:4647".into(),
                    "203.0.113.21:4647".into()
                ]),
            ]
        );
        // A Nomad without a local Consul and nothing found: nothing to do.
        let bare = node(
            "schema = 1\n[discovery]\nconsul_address = \"10.0.1.11\"\n",
            &["nomad-client"],
        );
        assert!(wanted(&bare, &Peers::default()).is_empty());
    }

    #[test]
    fn rpc_addresses() {
        assert_eq!(rpc_address("10.0.1.12"), "10.0.1.12:4647");
        assert_eq!(rpc_address("10.0.1.12:4648"), "10.0.1.12:4647");
        assert_eq!(rpc_address("fd00::1"), "[fd00::1]:4647");
        assert_eq!(rpc_address("nomad.example:4648"), "nomad.example:4647");
    }
}

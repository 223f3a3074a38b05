//! The stand-in's view of the cluster: member pools (Consul LAN and WAN,
//! Nomad servers), the Nomad client nodes, the locally registered Consul
//! services, and the leader rule (the lowest-named alive server of the
//! DC/region once `bootstrap_expect` servers were seen, then while a majority
//! of the non-left servers is alive). Pure data; no I/O here.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::Product;
use crate::config::AgentConfig;

/// Serf member status (serf MemberStatus numbers).
pub const ALIVE: u8 = 1;
pub const LEAVING: u8 = 2;
pub const LEFT: u8 = 3;
pub const FAILED: u8 = 4;

/// Which gossip pool a message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pool {
    /// Consul LAN (servers and clients of one DC); Nomad servers.
    Lan,
    /// Consul WAN (servers of all DCs).
    Wan,
    /// A Nomad client registering with / heartbeating to a server.
    Client,
}

impl Pool {
    pub fn as_str(self) -> &'static str {
        match self {
            Pool::Lan => "lan",
            Pool::Wan => "wan",
            Pool::Client => "client",
        }
    }

    pub fn parse(s: &str) -> Option<Pool> {
        match s {
            "lan" => Some(Pool::Lan),
            "wan" => Some(Pool::Wan),
            "client" => Some(Pool::Client),
            _ => None,
        }
    }
}

/// One member as exchanged between stand-ins.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// Pool name: Consul LAN `node`, WAN `node.dc`; Nomad `node.region`.
    pub name: String,
    pub node: String,
    pub node_id: String,
    pub addr: String,
    pub port: u16,
    pub rpc_port: u16,
    /// Consul server: its serf WAN port (what the real agent advertises in
    /// its LAN `wan_join_port` tag); 0 when unknown or not a Consul server.
    /// LAN peers flood-join it into the WAN at `addr:wan_port`.
    pub wan_port: u16,
    pub dc: String,
    pub region: String,
    pub server: bool,
    pub expect: u64,
    pub status: u8,
    /// Owner-set version: start time in ms, bumped on every change.
    pub incarnation: u64,
    /// `ip:port` where gossip is pushed: the serf listener, else HTTP.
    pub gossip: String,
    pub version: String,
    /// Consul services registered on that agent (normalised JSON).
    pub services: Vec<Value>,
    /// The server gave up leadership (a leadership transfer): it does not
    /// lead while another alive server can; cleared by a restart.
    pub yielded: bool,
    /// With `yielded`: the server it handed leadership to (empty: the next
    /// in line) and when (unix ms), so the newest hand-off wins.
    pub handoff: String,
    pub handoff_ms: u64,
}

impl Member {
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name, "node": self.node, "node_id": self.node_id,
            "addr": self.addr, "port": self.port, "rpc_port": self.rpc_port,
            "wan_port": self.wan_port, "dc": self.dc, "region": self.region, "server": self.server,
            "expect": self.expect, "status": self.status,
            "incarnation": self.incarnation, "gossip": self.gossip,
            "version": self.version, "services": self.services,
            "yielded": self.yielded, "handoff": self.handoff, "handoff_ms": self.handoff_ms,
        })
    }

    pub fn from_json(v: &Value) -> Option<Member> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let n = |k: &str| v.get(k).and_then(Value::as_u64);
        Some(Member {
            name: s("name")?,
            node: s("node")?,
            node_id: s("node_id").unwrap_or_default(),
            addr: s("addr")?,
            port: u16::try_from(n("port")?).ok()?,
            rpc_port: u16::try_from(n("rpc_port").unwrap_or(0)).ok()?,
            // Absent in records from older stand-ins: 0, never flooded.
            wan_port: u16::try_from(n("wan_port").unwrap_or(0)).ok()?,
            dc: s("dc").unwrap_or_default(),
            region: s("region").unwrap_or_default(),
            server: v.get("server").and_then(Value::as_bool).unwrap_or(false),
            expect: n("expect").unwrap_or(0),
            status: u8::try_from(n("status").unwrap_or(1)).ok()?,
            incarnation: n("incarnation").unwrap_or(0),
            gossip: s("gossip").unwrap_or_default(),
            version: s("version").unwrap_or_default(),
            services: v
                .get("services")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            yielded: v.get("yielded").and_then(Value::as_bool).unwrap_or(false),
            handoff: s("handoff").unwrap_or_default(),
            handoff_ms: n("handoff_ms").unwrap_or(0),
        })
    }

    pub fn rpc_addr(&self) -> String {
        host_port(&self.addr, self.rpc_port)
    }
}

/// A Nomad client node as the servers know it (`/v1/nodes`).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRec {
    pub id: String,
    pub name: String,
    pub dc: String,
    pub addr: String,
    pub version: String,
    /// Last heartbeat, ms since the epoch.
    pub last_seen_ms: u64,
    pub create_ms: u64,
}

impl NodeRec {
    pub fn to_json(&self) -> Value {
        json!({"id": self.id, "name": self.name, "dc": self.dc, "addr": self.addr,
               "version": self.version, "last_seen_ms": self.last_seen_ms,
               "create_ms": self.create_ms})
    }

    pub fn from_json(v: &Value) -> Option<NodeRec> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        Some(NodeRec {
            id: s("id")?,
            name: s("name")?,
            dc: s("dc").unwrap_or_default(),
            addr: s("addr").unwrap_or_default(),
            version: s("version").unwrap_or_default(),
            last_seen_ms: v.get("last_seen_ms").and_then(Value::as_u64).unwrap_or(0),
            create_ms: v.get("create_ms").and_then(Value::as_u64).unwrap_or(0),
        })
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The whole mutable view.
#[derive(Debug)]
pub struct State {
    pub product: Product,
    /// Own LAN record (Consul) / server-pool record (Nomad server) / client identity.
    pub me: Member,
    pub lan: BTreeMap<String, Member>,
    pub wan: BTreeMap<String, Member>,
    pub nodes: BTreeMap<String, NodeRec>,
    /// Consecutive failed pushes per (pool, name).
    pub fails: BTreeMap<(Pool, String), u32>,
    /// Whether the server set reached bootstrap_expect once.
    pub bootstrapped: bool,
    /// Whether a LAN join succeeded (Consul sends READY=1 then).
    pub joined_lan: bool,
    /// Whether the own election delay passed (servers).
    pub election_done: bool,
    pub enable_script_checks: bool,
    /// LAN members seen leaving (node names), not yet handled: a Consul
    /// leader deregisters a node that leaves and invalidates the sessions
    /// bound to it (`crate::kv_api::run_reaper` drains this).
    pub left_nodes: Vec<String>,
}

/// Deterministic id from a name (the stand-in has no state dir to keep one).
pub fn node_id_for(name: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    let h2 = h.rotate_left(17) ^ 0x9e3779b97f4a7c15;
    let hex = format!("{h:016x}{h2:016x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

impl State {
    pub fn new(cfg: &AgentConfig, version: &str) -> State {
        let name = match cfg.product {
            Product::Consul => cfg.node_name.clone(),
            Product::Nomad => format!("{}.{}", cfg.node_name, cfg.region),
        };
        let gossip_ip = if is_wildcard(&cfg.http_ip) {
            cfg.advertise_ip.clone()
        } else {
            cfg.http_ip.clone()
        };
        let me = Member {
            name,
            node: cfg.node_name.clone(),
            node_id: node_id_for(&cfg.node_name),
            addr: cfg.advertise_ip.clone(),
            port: cfg.serf_port,
            rpc_port: cfg.rpc_port,
            wan_port: if cfg.product == Product::Consul && cfg.server {
                cfg.serf_wan_port
            } else {
                0
            },
            dc: cfg.datacenter.clone(),
            region: cfg.region.clone(),
            server: cfg.server,
            expect: cfg.bootstrap_expect,
            status: ALIVE,
            incarnation: now_ms(),
            gossip: host_port(&gossip_ip, cfg.http_port),
            version: version.to_string(),
            services: Vec::new(),
            yielded: false,
            handoff: String::new(),
            handoff_ms: 0,
        };
        State {
            product: cfg.product,
            me,
            lan: BTreeMap::new(),
            wan: BTreeMap::new(),
            nodes: BTreeMap::new(),
            fails: BTreeMap::new(),
            bootstrapped: false,
            joined_lan: false,
            election_done: false,
            enable_script_checks: cfg.enable_script_checks,
            left_nodes: Vec::new(),
        }
    }

    /// Own record as seen in the WAN pool (`node.dc`, serf_wan port).
    pub fn me_wan(&self, wan_port: u16) -> Member {
        let mut m = self.me.clone();
        m.name = format!("{}.{}", m.node, m.dc);
        m.port = wan_port;
        m.services.clear();
        m
    }

    pub fn pool(&self, pool: Pool) -> &BTreeMap<String, Member> {
        match pool {
            Pool::Wan => &self.wan,
            _ => &self.lan,
        }
    }

    fn pool_mut(&mut self, pool: Pool) -> &mut BTreeMap<String, Member> {
        match pool {
            Pool::Wan => &mut self.wan,
            _ => &mut self.lan,
        }
    }

    /// Merge records learnt from a peer. `direct` is the sender's own record.
    /// Returns whether a member was added or changed status (a member event).
    pub fn merge(&mut self, pool: Pool, direct: Option<Member>, others: Vec<Member>) -> bool {
        let mut changed = false;
        // Only a Consul server drains them (the session reaper).
        let tracks_leaves = pool == Pool::Lan && self.product == Product::Consul && self.me.server;
        let my_names = [
            self.me.name.clone(),
            format!("{}.{}", self.me.node, self.me.dc),
        ];
        if let Some(m) = direct {
            self.fails.remove(&(pool, m.name.clone()));
            if !my_names.contains(&m.name) {
                let map = self.pool_mut(pool);
                let take = map.get(&m.name).is_none_or(|old| {
                    m.incarnation > old.incarnation
                        || (m.incarnation == old.incarnation && old.status == FAILED)
                });
                if take {
                    changed |= is_event(map.get(&m.name), &m);
                    let left = is_leave(map.get(&m.name), &m);
                    map.insert(m.name.clone(), m.clone());
                    if left && tracks_leaves {
                        self.left_nodes.push(m.node);
                    }
                }
            }
        }
        for m in others {
            if my_names.contains(&m.name) {
                continue;
            }
            let map = self.pool_mut(pool);
            let take = match map.get(&m.name) {
                None => true,
                Some(old) => {
                    m.incarnation > old.incarnation
                        || (m.incarnation == old.incarnation
                            && m.status == LEFT
                            && old.status != LEFT)
                }
            };
            if take {
                changed |= is_event(map.get(&m.name), &m);
                let left = is_leave(map.get(&m.name), &m);
                let node = m.node.clone();
                map.insert(m.name.clone(), m);
                if left && tracks_leaves {
                    self.left_nodes.push(node);
                }
            }
        }
        changed
    }

    /// Consul servers of the own DC to flood-join into the WAN, as
    /// `(WAN member name, join address)`: the alive LAN members that are
    /// servers of this DC, advertise a serf WAN port, and have no alive
    /// `node.dc` record in the WAN pool (consul:agent/router/serf_flooder.go
    /// FloodJoins; the join address is the member's LAN address with its
    /// WAN join port, as consul:agent/consul/server.go builds it). Empty
    /// unless this agent is a Consul server. Clients are never flooded.
    pub fn flood_targets(&self) -> Vec<(String, String)> {
        if self.product != Product::Consul || !self.me.server {
            return Vec::new();
        }
        self.lan
            .values()
            .filter(|m| m.status == ALIVE && m.server && m.dc == self.me.dc)
            .filter(|m| m.wan_port != 0 && !m.addr.is_empty())
            .map(|m| (format!("{}.{}", m.node, m.dc), m))
            .filter(|(wan_name, _)| {
                self.wan
                    .get(wan_name)
                    .is_none_or(|w| w.status != ALIVE || !w.server)
            })
            .map(|(wan_name, m)| (wan_name, host_port(&m.addr, m.wan_port)))
            .collect()
    }

    pub fn merge_nodes(&mut self, nodes: Vec<NodeRec>) {
        for n in nodes {
            match self.nodes.get_mut(&n.id) {
                Some(old) => {
                    if n.last_seen_ms > old.last_seen_ms {
                        *old = n;
                    }
                }
                None => {
                    self.nodes.insert(n.id.clone(), n);
                }
            }
        }
    }

    /// Record a failed push to a member; mark it failed after `limit` in a row.
    pub fn push_failed(&mut self, pool: Pool, name: &str, limit: u32) {
        let key = (pool, name.to_string());
        let n = self.fails.entry(key).or_insert(0);
        *n += 1;
        let count = *n;
        if count >= limit {
            if let Some(m) = self.pool_mut(pool).get_mut(name) {
                if m.status == ALIVE {
                    m.status = FAILED;
                }
            }
        }
    }

    /// Servers of the own DC (Consul) / region (Nomad), including self.
    pub fn servers(&self) -> Vec<Member> {
        let mut out: Vec<Member> = self
            .lan
            .values()
            .filter(|m| m.server)
            .filter(|m| match self.product {
                Product::Consul => m.dc == self.me.dc,
                Product::Nomad => m.region == self.me.region,
            })
            .cloned()
            .collect();
        if self.me.server {
            out.push(self.me.clone());
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Recompute `bootstrapped` and return the leader, if any.
    pub fn leader(&mut self) -> Option<Member> {
        if self.me.server && !self.election_done {
            return None;
        }
        let servers = self.servers();
        let alive: Vec<&Member> = servers.iter().filter(|m| m.status == ALIVE).collect();
        let voters = servers.iter().filter(|m| m.status != LEFT).count();
        let expect = servers.iter().map(|m| m.expect).max().unwrap_or(0);
        if !self.bootstrapped {
            if expect == 0 || (alive.len() as u64) < expect {
                return None;
            }
            self.bootstrapped = true;
        }
        if alive.len() * 2 <= voters {
            return None;
        }
        // The lowest name leads; a server that transferred its leadership
        // away steps aside while another alive server can lead.
        // The server named by the newest hand-off, when it can lead.
        let handed = servers
            .iter()
            .filter(|m| m.yielded && !m.handoff.is_empty())
            .max_by_key(|m| m.handoff_ms)
            .and_then(|h| {
                alive
                    .iter()
                    .find(|m| m.node == h.handoff && !m.yielded)
                    .copied()
            });
        handed
            .or_else(|| alive.iter().find(|m| !m.yielded).copied())
            .or(alive.first().copied())
            .cloned()
    }

    /// Raft peers: the non-left servers once bootstrapped.
    pub fn peers(&mut self) -> Vec<String> {
        let _ = self.leader();
        if !self.bootstrapped {
            return Vec::new();
        }
        self.servers()
            .iter()
            .filter(|m| m.status != LEFT)
            .map(Member::rpc_addr)
            .collect()
    }

    /// Whether any server is known (Consul clients need one for RPCs).
    pub fn knows_servers(&self) -> bool {
        self.servers().iter().any(|m| m.status == ALIVE)
    }

    /// Members of a pool including self, sorted by name.
    pub fn members(&self, pool: Pool, wan_port: u16) -> Vec<Member> {
        let mut out: Vec<Member> = self.pool(pool).values().cloned().collect();
        match pool {
            Pool::Wan => out.push(self.me_wan(wan_port)),
            _ => out.push(self.me.clone()),
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

/// Whether taking `new` over `old` is a member event (join, or a status change).
/// A member known and not left before, left now.
fn is_leave(old: Option<&Member>, new: &Member) -> bool {
    new.status == LEFT && old.is_some_and(|o| o.status != LEFT)
}

fn is_event(old: Option<&Member>, new: &Member) -> bool {
    old.is_none_or(|o| o.status != new.status || o.server != new.server)
}

/// `host:port`, with brackets around an IPv6 address.
pub fn host_port(ip: &str, port: u16) -> String {
    if ip.contains(':') && !ip.starts_with('[') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// Whether an address is a wildcard bind address.
pub fn is_wildcard(ip: &str) -> bool {
    matches!(ip, "" | "0.0.0.0" | "::" | "[::]")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, server: bool, expect: u64, status: u8) -> Member {
        Member {
            name: name.into(),
            node: name.into(),
            node_id: node_id_for(name),
            addr: "10.0.0.1".into(),
            port: 8301,
            rpc_port: 8300,
            wan_port: if server { 8302 } else { 0 },
            dc: "dc1".into(),
            region: "global".into(),
            server,
            expect,
            status,
            incarnation: 1,
            gossip: "10.0.0.1:8500".into(),
            version: "1.20.1".into(),
            services: vec![],
            yielded: false,
            handoff: String::new(),
            handoff_ms: 0,
        }
    }

    fn state(me: Member) -> State {
        State {
            product: Product::Consul,
            me,
            lan: BTreeMap::new(),
            wan: BTreeMap::new(),
            nodes: BTreeMap::new(),
            fails: BTreeMap::new(),
            bootstrapped: false,
            joined_lan: false,
            election_done: true,
            enable_script_checks: false,
            left_nodes: Vec::new(),
        }
    }

    #[test]
    fn leader_waits_for_bootstrap_expect_then_lowest_name_wins() {
        let mut s = state(member("b", true, 3, ALIVE));
        s.merge(Pool::Lan, Some(member("c", true, 3, ALIVE)), vec![]);
        assert!(s.leader().is_none());
        s.merge(Pool::Lan, Some(member("a", true, 3, ALIVE)), vec![]);
        assert_eq!(s.leader().unwrap().name, "a");
    }

    #[test]
    fn leader_survives_one_failure_of_three_but_not_two() {
        let mut s = state(member("b", true, 3, ALIVE));
        s.merge(Pool::Lan, Some(member("a", true, 3, ALIVE)), vec![]);
        s.merge(Pool::Lan, Some(member("c", true, 3, ALIVE)), vec![]);
        assert!(s.leader().is_some());
        s.push_failed(Pool::Lan, "a", 1);
        assert_eq!(s.leader().unwrap().name, "b");
        s.push_failed(Pool::Lan, "c", 1);
        assert!(s.leader().is_none());
    }

    #[test]
    fn higher_incarnation_wins_and_left_spreads() {
        let mut s = state(member("me", false, 0, ALIVE));
        s.merge(Pool::Lan, None, vec![member("x", false, 0, ALIVE)]);
        let mut left = member("x", false, 0, LEFT);
        left.incarnation = 2;
        s.merge(Pool::Lan, None, vec![left]);
        assert_eq!(s.lan["x"].status, LEFT);
        s.merge(Pool::Lan, None, vec![member("x", false, 0, ALIVE)]);
        assert_eq!(s.lan["x"].status, LEFT);
    }

    fn wan_record(node: &str, dc: &str, status: u8) -> Member {
        let mut m = member(node, true, 0, status);
        m.name = format!("{node}.{dc}");
        m.dc = dc.into();
        m
    }

    #[test]
    fn flood_targets_are_alive_own_dc_servers_missing_from_the_wan() {
        let mut s = state(member("s1", true, 1, ALIVE));
        let mut s2 = member("s2", true, 1, ALIVE);
        s2.addr = "10.0.0.2".into();
        s2.wan_port = 9302;
        let client = member("c1", false, 0, ALIVE);
        let failed = member("s3", true, 1, FAILED);
        let mut other_dc = member("x1", true, 1, ALIVE);
        other_dc.dc = "dc2".into();
        let mut no_port = member("s4", true, 1, ALIVE);
        no_port.wan_port = 0;
        let changed = s.merge(
            Pool::Lan,
            None,
            vec![
                s2,
                client,
                failed,
                other_dc,
                no_port,
                member("s5", true, 1, ALIVE),
            ],
        );
        assert!(changed, "new LAN members are a member event");
        s.merge(Pool::Wan, None, vec![wan_record("s5", "dc1", ALIVE)]);
        assert_eq!(
            s.flood_targets(),
            vec![("s2.dc1".to_string(), "10.0.0.2:9302".to_string())]
        );
        // A failed WAN record does not count as joined.
        s.merge(Pool::Wan, None, vec![wan_record("s2", "dc1", FAILED)]);
        assert_eq!(s.flood_targets().len(), 1);
        let mut alive = wan_record("s2", "dc1", ALIVE);
        alive.incarnation = 2;
        s.merge(Pool::Wan, None, vec![alive]);
        assert!(s.flood_targets().is_empty());
        // Merging the same records again is no member event.
        assert!(!s.merge(Pool::Lan, None, vec![member("s5", true, 1, ALIVE)]));
    }

    #[test]
    fn clients_never_flood_and_old_records_without_wan_port_parse() {
        let mut s = state(member("c0", false, 0, ALIVE));
        s.merge(Pool::Lan, None, vec![member("s1", true, 1, ALIVE)]);
        assert!(
            s.flood_targets().is_empty(),
            "a client agent does not flood"
        );
        let mut old = member("s1", true, 1, ALIVE).to_json();
        old.as_object_mut().unwrap().remove("wan_port");
        assert_eq!(Member::from_json(&old).unwrap().wan_port, 0);
        let mut bad = member("s1", true, 1, ALIVE).to_json();
        bad["wan_port"] = json!(70000);
        assert_eq!(
            Member::from_json(&bad),
            None,
            "out-of-range port is refused"
        );
    }
}

//! Network-namespace nodes for multi-node tests and the offline demo.
//!
//! A [`Topology`] builds, per datacenter, a router namespace holding a
//! bridge (the DC's LAN, `10.0.<n>.0/24`, router at `.1`) and, per node, a
//! namespace whose `eth0` is a veth plugged into that bridge. Routers of
//! different datacenters are joined by one veth pair each (the "WAN link"),
//! so the link between two DCs can be cut and healed. A node may also get a
//! "public" `/32` address (`203.0.113.<k>`) on its `eth0`, routed through the
//! routers, for WAN gossip (servers have one, clients need none). Everything is deleted on drop, and namespaces left
//! behind by a crashed earlier run (same prefix, dead owner pid) are removed
//! when a new topology is built.
//!
//! Requires root and `ip` (iproute2). [`is_available`] says whether the
//! caller can build one, so tests can skip with a clear message.

use std::fmt;
use std::net::Ipv4Addr;
use std::process::{Command, Output, Stdio};

/// Prefix of every namespace this module creates: `hst<pid>-...`.
const NS_PREFIX: &str = "hst";

/// An error running `ip`.
#[derive(Debug)]
pub struct NetnsError {
    /// The command that failed.
    pub command: String,
    /// What it printed on stderr (or the spawn error).
    pub detail: String,
}

impl fmt::Display for NetnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "failed to run `{}`: {}", self.command, self.detail)
    }
}

impl std::error::Error for NetnsError {}

/// Whether network namespaces can be built here; `Err` says why not.
pub fn is_available() -> Result<(), String> {
    if !nix_is_root() {
        return Err("not running as root".into());
    }
    match Command::new("ip").args(["netns", "list"]).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "`ip netns list` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("`ip` is not available: {e}")),
    }
}

fn nix_is_root() -> bool {
    // Reading our own effective uid without libc: /proc/self/status.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// One node to build.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Node name (e.g. `ams2-server-01`).
    pub name: String,
    /// Datacenter name (e.g. `ams2`).
    pub datacenter: String,
    /// Last octet of the private address (`10.0.<dc>.<host>`).
    pub host: u8,
    /// Last octet of the public address (`203.0.113.<public_host>`), if the
    /// node has one.
    pub public_host: Option<u8>,
}

/// A built node.
#[derive(Debug, Clone)]
pub struct Node {
    /// Node name.
    pub name: String,
    /// Datacenter.
    pub datacenter: String,
    /// The namespace the node lives in.
    pub netns: String,
    /// Private (LAN) address on `eth0`.
    pub private_ip: Ipv4Addr,
    /// "Public" (WAN) address on `eth0`, if the node has one.
    pub public_ip: Option<Ipv4Addr>,
}

impl Node {
    /// A command that runs `program` inside this node's namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns, program]);
        c
    }
}

#[derive(Debug, Clone)]
struct Dc {
    name: String,
    index: u8,
    router_ns: String,
}

/// A set of namespace nodes in one or more datacenters; torn down on drop.
#[derive(Debug)]
pub struct Topology {
    id: String,
    dcs: Vec<Dc>,
    nodes: Vec<Node>,
    namespaces: Vec<String>,
}

/// The LAN of the datacenter with index `i` (1-based): `10.0.<i>.0/24`.
pub fn lan_address(dc_index: u8, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, dc_index, host)
}

/// A public address: `203.0.113.<host>` (TEST-NET-3).
pub fn public_address(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(203, 0, 113, host)
}

fn wan_link_addresses(a: u8, b: u8) -> (Ipv4Addr, Ipv4Addr) {
    // One /30 per pair of datacenters in 192.0.2.0/24 (TEST-NET-1).
    let base = (a.saturating_mul(8)).saturating_add(b.saturating_mul(4));
    (
        Ipv4Addr::new(192, 0, 2, base.saturating_add(1)),
        Ipv4Addr::new(192, 0, 2, base.saturating_add(2)),
    )
}

fn run(args: &[&str]) -> Result<Output, NetnsError> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| NetnsError {
            command: format!("ip {}", args.join(" ")),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(NetnsError {
            command: format!("ip {}", args.join(" ")),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out)
}

fn run_in(ns: &str, args: &[&str]) -> Result<Output, NetnsError> {
    let mut full = vec!["-n", ns];
    full.extend_from_slice(args);
    run(&full)
}

fn sysctl_in(ns: &str, key: &str, value: &str) -> Result<(), NetnsError> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "sysctl",
            "-qw",
            &format!("{key}={value}"),
        ])
        .output()
        .map_err(|e| NetnsError {
            command: format!("sysctl {key}"),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        // Fall back to /proc through `sh` (no sysctl binary on minimal images).
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "sh",
                "-c",
                &format!("echo {value} > {path}"),
            ])
            .output()
            .map_err(|e| NetnsError {
                command: format!("write {path}"),
                detail: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(NetnsError {
                command: format!("write {path}"),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
    }
    Ok(())
}

/// Runs `f` on a new thread that first enters network namespace `ns`
/// (a name under `/var/run/netns`): sockets `f` creates live in that
/// namespace, and stay there when handed back to the caller.
pub fn in_netns<T, F>(ns: &str, f: F) -> Result<T, NetnsError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let path = format!("/var/run/netns/{ns}");
    let file = std::fs::File::open(&path).map_err(|e| NetnsError {
        command: format!("open {path}"),
        detail: e.to_string(),
    })?;
    let join = std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| e.to_string())?;
        Ok::<T, String>(f())
    });
    match join.join() {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(NetnsError {
            command: format!("setns {ns}"),
            detail: e,
        }),
        Err(_) => Err(NetnsError {
            command: format!("thread in {ns}"),
            detail: "panicked".into(),
        }),
    }
}

/// Received and sent bytes of interface `dev` inside namespace `ns` (the
/// kernel's counters: for a node's `eth0`, everything it put on its LAN).
pub fn link_bytes(ns: &str, dev: &str) -> Result<(u64, u64), NetnsError> {
    let out = run_in(ns, &["-s", "-j", "link", "show", "dev", dev])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let parsed: serde_json::Value = serde_json::from_str(&text).map_err(|e| NetnsError {
        command: format!("ip -n {ns} -s -j link show dev {dev}"),
        detail: format!("unreadable JSON: {e}"),
    })?;
    let stats = &parsed[0]["stats64"];
    match (stats["rx"]["bytes"].as_u64(), stats["tx"]["bytes"].as_u64()) {
        (Some(rx), Some(tx)) => Ok((rx, tx)),
        _ => Err(NetnsError {
            command: format!("ip -n {ns} -s -j link show dev {dev}"),
            detail: format!("no byte counters in {text}"),
        }),
    }
}

/// Deletes namespaces with our prefix whose owning process is gone (left
/// behind by a test that was killed before its drop ran).
pub fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let pid: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        if pid.is_empty() {
            continue;
        }
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run(&["netns", "del", name]);
        }
    }
}

impl Topology {
    /// Builds the nodes. `dcs` lists datacenter names in order (index 1, 2,
    /// ...); each node names its datacenter. On any failure, what was built
    /// is removed before the error is returned.
    pub fn build(dcs: &[&str], nodes: &[NodeSpec]) -> Result<Topology, NetnsError> {
        remove_stale();
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let id = format!("{NS_PREFIX}{}x{n}", std::process::id());
        let mut topo = Topology {
            id,
            dcs: Vec::new(),
            nodes: Vec::new(),
            namespaces: Vec::new(),
        };
        topo.build_inner(dcs, nodes)?;
        Ok(topo)
    }

    fn add_ns(&mut self, name: &str) -> Result<(), NetnsError> {
        run(&["netns", "add", name])?;
        self.namespaces.push(name.to_string());
        run_in(name, &["link", "set", "lo", "up"])?;
        Ok(())
    }

    fn build_inner(&mut self, dcs: &[&str], nodes: &[NodeSpec]) -> Result<(), NetnsError> {
        for (i, dc) in dcs.iter().enumerate() {
            let index = u8::try_from(i + 1).unwrap_or(u8::MAX);
            let router_ns = format!("{}-r{index}", self.id);
            self.add_ns(&router_ns)?;
            sysctl_in(&router_ns, "net.ipv4.ip_forward", "1")?;
            run_in(&router_ns, &["link", "add", "br0", "type", "bridge"])?;
            let gw = format!("{}/24", lan_address(index, 1));
            run_in(&router_ns, &["addr", "add", &gw, "dev", "br0"])?;
            run_in(&router_ns, &["link", "set", "br0", "up"])?;
            self.dcs.push(Dc {
                name: (*dc).to_string(),
                index,
                router_ns,
            });
        }
        // WAN links: a veth pair between every two routers.
        let dcs_built = self.dcs.clone();
        for a in &dcs_built {
            for b in dcs_built.iter().filter(|b| b.index > a.index) {
                let (ip_a, ip_b) = wan_link_addresses(a.index, b.index);
                let name_a = format!("w{}", b.index);
                let name_b = format!("w{}", a.index);
                run(&[
                    "link",
                    "add",
                    "hstmpwa",
                    "netns",
                    &a.router_ns,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "hstmpwb",
                    "netns",
                    &b.router_ns,
                ])?;
                run_in(&a.router_ns, &["link", "set", "hstmpwa", "name", &name_a])?;
                run_in(&b.router_ns, &["link", "set", "hstmpwb", "name", &name_b])?;
                run_in(
                    &a.router_ns,
                    &["addr", "add", &format!("{ip_a}/30"), "dev", &name_a],
                )?;
                run_in(
                    &b.router_ns,
                    &["addr", "add", &format!("{ip_b}/30"), "dev", &name_b],
                )?;
                run_in(&a.router_ns, &["link", "set", &name_a, "up"])?;
                run_in(&b.router_ns, &["link", "set", &name_b, "up"])?;
                let lan_b = format!("10.0.{}.0/24", b.index);
                let lan_a = format!("10.0.{}.0/24", a.index);
                run_in(
                    &a.router_ns,
                    &["route", "add", &lan_b, "via", &ip_b.to_string()],
                )?;
                run_in(
                    &b.router_ns,
                    &["route", "add", &lan_a, "via", &ip_a.to_string()],
                )?;
            }
        }
        for (k, spec) in nodes.iter().enumerate() {
            let dc = self
                .dcs
                .iter()
                .find(|d| d.name == spec.datacenter)
                .cloned()
                .ok_or_else(|| NetnsError {
                    command: "build topology".into(),
                    detail: format!(
                        "node {} names unknown datacenter {}",
                        spec.name, spec.datacenter
                    ),
                })?;
            let ns = format!("{}-n{k}", self.id);
            self.add_ns(&ns)?;
            let host_if = format!("n{k}");
            run(&[
                "link",
                "add",
                "hstmpna",
                "netns",
                &ns,
                "type",
                "veth",
                "peer",
                "name",
                "hstmpnb",
                "netns",
                &dc.router_ns,
            ])?;
            run_in(&ns, &["link", "set", "hstmpna", "name", "eth0"])?;
            run_in(&dc.router_ns, &["link", "set", "hstmpnb", "name", &host_if])?;
            run_in(&dc.router_ns, &["link", "set", &host_if, "master", "br0"])?;
            run_in(&dc.router_ns, &["link", "set", &host_if, "up"])?;
            let private_ip = lan_address(dc.index, spec.host);
            run_in(
                &ns,
                &["addr", "add", &format!("{private_ip}/24"), "dev", "eth0"],
            )?;
            let public_ip = spec.public_host.map(public_address);
            if let Some(public_ip) = public_ip {
                run_in(
                    &ns,
                    &["addr", "add", &format!("{public_ip}/32"), "dev", "eth0"],
                )?;
            }
            run_in(&ns, &["link", "set", "eth0", "up"])?;
            run_in(
                &ns,
                &[
                    "route",
                    "add",
                    "default",
                    "via",
                    &lan_address(dc.index, 1).to_string(),
                ],
            )?;
            if let Some(public_ip) = public_ip {
                self.route_public(&dcs_built, dc.index, public_ip, private_ip)?;
            }
            self.nodes.push(Node {
                name: spec.name.clone(),
                datacenter: spec.datacenter.clone(),
                netns: ns,
                private_ip,
                public_ip,
            });
        }
        Ok(())
    }

    /// Makes a node's public address reachable from every router.
    fn route_public(
        &self,
        dcs: &[Dc],
        node_dc: u8,
        public_ip: Ipv4Addr,
        private_ip: Ipv4Addr,
    ) -> Result<(), NetnsError> {
        for r in dcs {
            let via = if r.index == node_dc {
                private_ip
            } else {
                let (ip_lo, ip_hi) = wan_link_addresses(r.index.min(node_dc), r.index.max(node_dc));
                if node_dc < r.index { ip_lo } else { ip_hi }
            };
            run_in(
                &r.router_ns,
                &[
                    "route",
                    "add",
                    &format!("{public_ip}/32"),
                    "via",
                    &via.to_string(),
                ],
            )?;
        }
        Ok(())
    }

    /// The built nodes, in the order given.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The router namespace of datacenter `dc` and its LAN gateway address
    /// (`10.0.<dc>.1`, reachable from every node of every datacenter).
    pub fn router(&self, dc: &str) -> Option<(&str, Ipv4Addr)> {
        self.dcs
            .iter()
            .find(|d| d.name == dc)
            .map(|d| (d.router_ns.as_str(), lan_address(d.index, 1)))
    }

    /// The router namespace of datacenter `a` and its interface towards `b`.
    fn wan_link(&self, a: &str, b: &str) -> Result<(String, String), NetnsError> {
        let find = |n: &str| {
            self.dcs
                .iter()
                .find(|d| d.name == n)
                .cloned()
                .ok_or_else(|| NetnsError {
                    command: "find datacenter".into(),
                    detail: format!("unknown datacenter {n}"),
                })
        };
        let (da, db) = (find(a)?, find(b)?);
        Ok((da.router_ns, format!("w{}", db.index)))
    }

    /// Adds `cidr` (e.g. `10.0.1.53/32`) to the LAN bridge of datacenter
    /// `dc`'s router: a second address there for a service of the test
    /// (a nameserver), reachable from every node.
    pub fn add_router_address(&self, dc: &str, cidr: &str) -> Result<(), NetnsError> {
        let (ns, _) = self.router(dc).ok_or_else(|| NetnsError {
            command: "add router address".into(),
            detail: format!("unknown datacenter {dc}"),
        })?;
        run_in(ns, &["addr", "add", cidr, "dev", "br0"])?;
        Ok(())
    }

    /// Cuts the WAN link between two datacenters.
    pub fn cut(&self, a: &str, b: &str) -> Result<(), NetnsError> {
        let (router_a, if_a) = self.wan_link(a, b)?;
        run_in(&router_a, &["link", "set", &if_a, "down"])?;
        Ok(())
    }

    /// Heals the WAN link between two datacenters (routes are restored).
    pub fn heal(&self, a: &str, b: &str) -> Result<(), NetnsError> {
        let (router_a, if_a) = self.wan_link(a, b)?;
        run_in(&router_a, &["link", "set", &if_a, "up"])?;
        // Routes through a downed link are removed by the kernel: re-add.
        let da = self.dcs.iter().find(|d| d.name == a);
        let db = self.dcs.iter().find(|d| d.name == b);
        if let (Some(da), Some(db)) = (da, db) {
            let (lo, hi) = wan_link_addresses(da.index.min(db.index), da.index.max(db.index));
            let via = if da.index < db.index { hi } else { lo };
            let _ = run_in(
                &da.router_ns,
                &[
                    "route",
                    "replace",
                    &format!("10.0.{}.0/24", db.index),
                    "via",
                    &via.to_string(),
                ],
            );
            for public_ip in self
                .nodes
                .iter()
                .filter(|n| n.datacenter == db.name)
                .filter_map(|n| n.public_ip)
            {
                let _ = run_in(
                    &da.router_ns,
                    &[
                        "route",
                        "replace",
                        &format!("{public_ip}/32"),
                        "via",
                        &via.to_string(),
                    ],
                );
            }
        }
        Ok(())
    }

    /// Takes a node off the network (its `eth0` goes down).
    pub fn take_down(&self, node: &str) -> Result<(), NetnsError> {
        let n = self.node(node).ok_or_else(|| NetnsError {
            command: "take node down".into(),
            detail: format!("unknown node {node}"),
        })?;
        run_in(&n.netns, &["link", "set", "eth0", "down"])?;
        Ok(())
    }

    /// Brings a node back (its `eth0` up and its default route restored).
    pub fn bring_up(&self, node: &str) -> Result<(), NetnsError> {
        let n = self.node(node).ok_or_else(|| NetnsError {
            command: "bring node up".into(),
            detail: format!("unknown node {node}"),
        })?;
        run_in(&n.netns, &["link", "set", "eth0", "up"])?;
        let gw = Ipv4Addr::new(
            n.private_ip.octets()[0],
            n.private_ip.octets()[1],
            n.private_ip.octets()[2],
            1,
        );
        let _ = run_in(
            &n.netns,
            &["route", "replace", "default", "via", &gw.to_string()],
        );
        Ok(())
    }

    /// Names of every namespace this topology created.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// Kills every process inside the namespaces, then deletes them.
    pub fn teardown(&mut self) {
        for ns in self.namespaces.drain(..).rev() {
            if let Ok(out) = Command::new("ip").args(["netns", "pids", &ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
            let _ = run(&["netns", "del", &ns]);
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// The five nodes of the reference scenario (DESIGN.md) with the addresses
/// of `config/examples/`: `ams2` is DC 1 (10.0.1.0/24), `lon1` DC 2
/// (10.0.2.0/24); the three servers have public addresses, the clients none.
pub fn reference_nodes() -> Vec<NodeSpec> {
    let n = |name: &str, dc: &str, host, public_host| NodeSpec {
        name: name.into(),
        datacenter: dc.into(),
        host,
        public_host,
    };
    vec![
        n("ams2-server-01", "ams2", 11, Some(11)),
        n("ams2-server-03", "ams2", 13, Some(13)),
        n("ams2-client-01", "ams2", 21, None),
        n("lon1-server-01", "lon1", 11, Some(21)),
        n("lon1-client-01", "lon1", 21, None),
    ]
}

/// The reference nodes plus a second Consul server in `ams2`
/// (`ams2-server-02`, `10.0.1.12`, public `203.0.113.12`): the variant
/// topology where ams2's Nomad nodes have a Consul server to move to.
pub fn variant_nodes() -> Vec<NodeSpec> {
    let mut nodes = reference_nodes();
    nodes.insert(
        1,
        NodeSpec {
            name: "ams2-server-02".into(),
            datacenter: "ams2".into(),
            host: 12,
            public_host: Some(12),
        },
    );
    nodes
}

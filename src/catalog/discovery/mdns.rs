//! The mDNS provider (mdns-sd): announces this node as
//! `_hashi-sup._tcp.local.` (instance = node name, port = health port,
//! address = the private address, TXT per [`txt`]) and browses for the
//! other supervisors, on the interface holding the private address only,
//! and only when `role.discovery.mdns` is on. A node whose private address
//! is loopback, or on no interface, announces and browses nothing.
//!
//! Announcements are untrusted: each is checked ([`txt::parse`]); a bad one
//! is a rate-limited warning naming its source address and why. Another
//! region is kept as a record but never joined (warned once per node);
//! this node's own announcement is ignored. At most [`MAX_PEERS`] nodes are
//! kept (the oldest dropped); one unseen for 3 × [`ANNOUNCE_TTL`], or
//! removed (a goodbye), is dropped. The daemon is shut down on cancel.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mdns_sd::{IfKind, ResolvedService, ServiceDaemon, ServiceEvent, ServiceInfo};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::peers::Source;
use crate::role::NodeRole;

use super::backoff::Backoff;
use super::txt::{self, Announcement, SERVICE_TYPE};
use super::{Node, Shared, State};

/// The lifetime of an announcement's records (mdns-sd's host record TTL):
/// a node unseen for three of these is dropped.
pub const ANNOUNCE_TTL: Duration = Duration::from_secs(120);
/// How often the browse is restarted, which re-reads the live cache and
/// asks the LAN again (so a live node's sighting stays fresh).
pub const REBROWSE: Duration = Duration::from_secs(40);
/// Most other nodes kept.
pub const MAX_PEERS: usize = 256;
/// Most nodes of another region remembered for their one warning.
const MAX_REGION_WARNED: usize = 256;

/// One announcing node as last seen.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Its DNS-SD instance full name.
    pub fullname: String,
    /// Its checked announcement.
    pub ann: Announcement,
    /// When it was last resolved (for the report).
    pub seen: SystemTime,
    /// When it was last resolved (for expiry).
    pub at: Instant,
}

/// An announcement as received, before any check.
#[derive(Debug, Clone)]
pub struct Raw {
    /// Instance full name.
    pub fullname: String,
    /// TXT properties (a value that is not UTF-8 is refused later).
    pub props: Vec<(String, Option<String>)>,
    /// Its addresses.
    pub addresses: Vec<IpAddr>,
    /// Its port.
    pub port: u16,
}

impl Raw {
    fn of(rs: &ResolvedService) -> Self {
        let mut addresses: Vec<IpAddr> = rs.addresses.iter().map(|a| a.to_ip_addr()).collect();
        addresses.sort();
        addresses.truncate(txt::MAX_ADDRESSES * 4);
        let props = rs
            .txt_properties
            .iter()
            .take(txt::MAX_PROPERTIES + 1)
            .map(|p| {
                let v = match p.val() {
                    None => Some(String::new()),
                    Some(b) => std::str::from_utf8(b).ok().map(str::to_string),
                };
                (p.key().to_string(), v)
            })
            .collect();
        Self {
            fullname: rs.fullname.clone(),
            props,
            addresses,
            port: rs.port,
        }
    }

    /// Where it came from, for a warning: its first address, else its name.
    pub fn source(&self) -> String {
        self.addresses
            .first()
            .map(|a| a.to_string())
            .unwrap_or_else(|| txt::short(&self.fullname))
    }
}

/// The interface holding `role`'s private address and that address, when
/// mDNS may run there: mDNS on, the address not loopback nor unspecified.
pub fn interface_of(role: &NodeRole) -> Option<(String, IpAddr)> {
    let ip = role.addresses.private;
    if !role.discovery.mdns || ip.is_loopback() || ip.is_unspecified() {
        return None;
    }
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    for a in addrs {
        let Some(sa) = a.address else { continue };
        let found = if let Some(v4) = sa.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = sa.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        if found == ip {
            return Some((a.interface_name, ip));
        }
    }
    None
}

/// Takes one received announcement into `state`: this node's own is
/// ignored, a bad one warned about, another region warned once.
pub(crate) fn take(state: &mut State, raw: &Raw, region_warned: &mut BTreeSet<String>) {
    let own = state.node.own_addresses();
    let me = &state.node.role.node_name;
    let props: Result<Vec<(String, String)>, String> = raw
        .props
        .iter()
        .map(|(k, v)| match v {
            Some(v) => Ok((k.clone(), v.clone())),
            None => Err(format!("TXT `{}` is not UTF-8", txt::short(k))),
        })
        .collect();
    let parsed = props.and_then(|p| {
        // Our own announcement comes back to us: not a peer.
        let node = p.iter().find(|(k, _)| k == "node").map(|(_, v)| v.as_str());
        if node == Some(me.as_str()) && raw.addresses.iter().any(|a| own.contains(a)) {
            return Err(String::new());
        }
        txt::parse(&raw.fullname, &p, &raw.addresses, raw.port)
    });
    let ann = match parsed {
        Ok(a) => a,
        Err(why) if why.is_empty() => return,
        Err(why) => {
            state.count_error("mdns");
            state.warn(
                &format!("mdns {} {}", raw.source(), txt::short(&raw.fullname)),
                format!(
                    "ignored an mDNS announcement from {} ({}): {why}",
                    raw.source(),
                    txt::short(&raw.fullname)
                ),
            );
            return;
        }
    };
    if ann.node == *me {
        // Another host claims our name: never a peer.
        state.warn(
            &format!("mdns name {}", raw.source()),
            format!(
                "ignored an mDNS announcement from {}: it claims this node's name {me}",
                raw.source()
            ),
        );
        return;
    }
    let (node, region, source) = (ann.node.clone(), ann.region.clone(), raw.source());
    state.mdns.insert(
        ann.node.clone(),
        Seen {
            fullname: raw.fullname.clone(),
            ann,
            seen: SystemTime::now(),
            at: Instant::now(),
        },
    );
    // Compared with the identity this announcement may have taught.
    let ident = super::merge::Identity::of(&state.node, &state.report_learned());
    if region != ident.region
        && region_warned.len() < MAX_REGION_WARNED
        && region_warned.insert(node.clone())
    {
        state.warn(
            &format!("mdns region {node}"),
            format!(
                "{node} ({source}) announces region {region}, not {}: it is never joined",
                ident.region
            ),
        );
    }
    while state.mdns.len() > MAX_PEERS {
        let oldest = state
            .mdns
            .iter()
            .min_by_key(|(_, s)| s.at)
            .map(|(k, _)| k.clone());
        match oldest {
            Some(k) => {
                state.mdns.remove(&k);
            }
            None => break,
        }
    }
}

/// Drops the node announced as `fullname` (a goodbye or an expiry).
pub(crate) fn remove(state: &mut State, fullname: &str) {
    state.mdns.retain(|_, s| s.fullname != fullname);
}

/// Drops nodes unseen for 3 × [`ANNOUNCE_TTL`].
pub(crate) fn expire(state: &mut State, now: Instant) {
    state
        .mdns
        .retain(|_, s| now.duration_since(s.at) < ANNOUNCE_TTL * 3);
}

/// A daemon on `ip`'s interface only.
fn daemon(ip: IpAddr) -> Result<ServiceDaemon, String> {
    let d = ServiceDaemon::new().map_err(|e| format!("cannot start mDNS: {e}"))?;
    let r = d
        .disable_interface(IfKind::All)
        .and_then(|_| d.enable_interface(IfKind::Addr(ip)));
    if let Err(e) = r {
        shutdown(&d);
        return Err(format!("cannot limit mDNS to {ip}: {e}"));
    }
    Ok(d)
}

fn shutdown(d: &ServiceDaemon) {
    // The daemon's thread ends on its own; its status is not awaited.
    if let Err(e) = d.shutdown() {
        tracing::debug!(target: "hashi_supervisor::discovery", error = %e, "mdns daemon shutdown");
    }
}

/// This node's service record.
fn service(node: &Node, ip: IpAddr) -> Result<ServiceInfo, String> {
    let name = &node.role.node_name;
    let host = format!("{name}.local.");
    let props: Vec<(String, String)> = txt::build(node);
    let props: Vec<(&str, &str)> = props
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    ServiceInfo::new(
        SERVICE_TYPE,
        name,
        &host,
        ip,
        node.health.port(),
        &props[..],
    )
    .map_err(|e| format!("cannot build this node's mDNS record: {e}"))
}

/// What an announcement session depends on (interface, address, TXT,
/// port, whether it announces): the session restarts when it changes.
type SessionKey = (String, IpAddr, Vec<(String, String)>, u16, bool);

/// Whether `node` announces itself: a Consul server always (others learn
/// from it); any other node once the identity its role file left open is
/// settled (learned, and taken by [`super::Discovery::set_role`]), so a
/// node never announces the defaults it is about to replace.
pub fn announces(node: &Node, learned: &crate::peers::Learned) -> bool {
    let role = &node.role;
    if role.roles.consul_server || role.roles.dev {
        return true;
    }
    let region = !role.learnable.region || learned.region.as_deref() == Some(role.region.as_str());
    let dc = !role.learnable.datacenter
        || learned.datacenter.as_deref() == Some(role.datacenter.as_str());
    region && dc
}

fn session_key(node: &Node, learned: &crate::peers::Learned) -> Option<SessionKey> {
    let (iface, ip) = interface_of(&node.role)?;
    Some((
        iface,
        ip,
        txt::build(node),
        node.health.port(),
        announces(node, learned),
    ))
}

fn key_now(shared: &Shared, node: &Node) -> Option<SessionKey> {
    let learned = shared.lock().report_learned();
    session_key(node, &learned)
}

/// Spawns the provider on `tracker`.
pub(crate) fn start(shared: Arc<Shared>, tracker: &TaskTracker, cancel: &CancellationToken) {
    tracker.spawn(run(shared, cancel.clone()));
}

async fn run(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut nodes = shared.node_tx.subscribe();
    let mut backoff = Backoff::new(Duration::from_secs(60));
    loop {
        let node = nodes.borrow_and_update().clone();
        let key = key_now(&shared, &node);
        let outcome = match &key {
            None => {
                shared.update(|s| {
                    s.mdns.clear();
                    // mDNS is off: its seeds of the last run cannot be
                    // confirmed.
                    s.cached.retain(|c| c.record.source != Source::Mdns);
                });
                Ok(())
            }
            Some((iface, ip, _, _, announce)) => {
                session(
                    &shared,
                    &node,
                    (iface, *ip, *announce),
                    &key,
                    &mut nodes,
                    &cancel,
                )
                .await
            }
        };
        if cancel.is_cancelled() {
            return;
        }
        let wait = match outcome {
            Ok(()) => {
                backoff.reset();
                None
            }
            Err(why) => {
                let wait = backoff.fail();
                shared.update(|s| {
                    s.count_error("mdns");
                    s.warn(
                        "mdns daemon",
                        format!("{why} (again in {} s)", wait.as_secs()),
                    );
                });
                Some(wait)
            }
        };
        // Wait for a role change (or the retry).
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = nodes.changed(), if key.is_none() => if r.is_err() { return },
            _ = async {
                match wait {
                    Some(w) => tokio::time::sleep(w).await,
                    None if key.is_some() => {}
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
}

/// Announces and browses until the node's announcement changes (Ok) or
/// the daemon fails (Err); on `cancel` it unregisters and shuts down.
async fn session(
    shared: &Arc<Shared>,
    node: &Node,
    (iface, ip, announce): (&str, IpAddr, bool),
    key: &Option<SessionKey>,
    nodes: &mut tokio::sync::watch::Receiver<Node>,
    cancel: &CancellationToken,
) -> Result<(), String> {
    let d = daemon(ip)?;
    let mut fullname = None;
    if announce {
        let info = match service(node, ip) {
            Ok(i) => i,
            Err(e) => {
                shutdown(&d);
                return Err(e);
            }
        };
        let name = info.get_fullname().to_string();
        if let Err(e) = d.register(info) {
            shutdown(&d);
            return Err(format!("cannot announce on {iface}: {e}"));
        }
        fullname = Some(name);
    }
    let mut reports = shared.tx.subscribe();
    tracing::info!(target: "hashi_supervisor::discovery", interface = iface, %ip, announce, "mdns: browsing");
    let mut rx = match d.browse(SERVICE_TYPE) {
        Ok(rx) => rx,
        Err(e) => {
            shutdown(&d);
            return Err(format!("cannot browse on {iface}: {e}"));
        }
    };
    let mut region_warned = BTreeSet::new();
    let browsing_since = Instant::now();
    let mut tick = tokio::time::interval(REBROWSE);
    tick.tick().await;
    let result = loop {
        tokio::select! {
            _ = cancel.cancelled() => break Ok(()),
            r = nodes.changed() => {
                if r.is_err() { break Ok(()) }
                let now = nodes.borrow_and_update().clone();
                if key_now(shared, &now) != *key { break Ok(()) }
            }
            r = reports.changed() => {
                if r.is_err() { break Ok(()) }
                // Learning may settle the identity: announce then.
                if key_now(shared, node) != *key { break Ok(()) }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                shared.update(|s| {
                    expire(s, now);
                    // The last run's mDNS seeds, once every live node has
                    // had time to answer.
                    if now.duration_since(browsing_since) >= ANNOUNCE_TTL * 3 {
                        s.cached.retain(|c| c.record.source != Source::Mdns);
                    }
                });
                let _ = d.stop_browse(SERVICE_TYPE);
                rx = match d.browse(SERVICE_TYPE) {
                    Ok(rx) => rx,
                    Err(e) => break Err(format!("cannot browse on {iface}: {e}")),
                };
            }
            ev = rx.recv_async() => match ev {
                Ok(ServiceEvent::ServiceResolved(rs)) => {
                    let raw = Raw::of(&rs);
                    shared.update(|s| take(s, &raw, &mut region_warned));
                }
                Ok(ServiceEvent::ServiceRemoved(_, name)) => {
                    shared.update(|s| remove(s, &name));
                }
                Ok(_) => {}
                // A browse channel closes when it is replaced; wait for the
                // next tick's.
                Err(_) => {
                    tokio::select! {
                        _ = cancel.cancelled() => break Ok(()),
                        _ = tick.tick() => {
                            rx = match d.browse(SERVICE_TYPE) {
                                Ok(rx) => rx,
                                Err(e) => break Err(format!("cannot browse on {iface}: {e}")),
                            };
                        }
                    }
                }
            }
        }
    };
    if let Some(name) = &fullname {
        // The goodbye: the others drop this node at once.
        if let Ok(rx) = d.unregister(name) {
            let _ = tokio::time::timeout(Duration::from_secs(1), rx.recv_async()).await;
        }
    }
    shutdown(&d);
    result
}

/// A one-off browse for `check`: everything resolved within `within`,
/// announcing nothing.
pub async fn browse_once(node: &Node, within: Duration) -> Result<Vec<Raw>, String> {
    let Some((iface, ip)) = interface_of(&node.role) else {
        return Ok(Vec::new());
    };
    let d = daemon(ip)?;
    let rx = match d.browse(SERVICE_TYPE) {
        Ok(rx) => rx,
        Err(e) => {
            shutdown(&d);
            return Err(format!("cannot browse on {iface}: {e}"));
        }
    };
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(Ok(ev)) = tokio::time::timeout_at(deadline, rx.recv_async()).await {
        if let ServiceEvent::ServiceResolved(rs) = ev {
            if out.len() < MAX_PEERS * 2 {
                out.push(Raw::of(&rs));
            }
        }
    }
    shutdown(&d);
    Ok(out)
}

/// Takes a one-off browse's announcements into `state`.
pub(crate) fn apply_browse(state: &mut State, got: Result<Vec<Raw>, String>) {
    match got {
        Ok(raws) => {
            let mut warned = BTreeSet::new();
            for r in &raws {
                take(state, r, &mut warned);
            }
        }
        Err(why) => {
            state.count_error("mdns");
            state.warn("mdns daemon", why);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::plan::Plan;

    fn state() -> State {
        let host = crate::role::StaticHost {
            hostname: Some("ams2-client-01".into()),
            interfaces: vec![("eth1".into(), std::net::Ipv4Addr::new(10, 0, 1, 21))],
            ..crate::role::StaticHost::default()
        };
        let role = crate::role::parse(
            std::path::Path::new("/r/node.toml"),
            "schema = 1\nregion = \"eu\"\ndatacenter = \"ams2\"\nnode_name = \"ams2-client-01\"\n[security]\nplaintext = true\n",
            &["consul-client".to_string(), "nomad-client".to_string()],
            &host,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let plan = Plan::from_role(&role);
        let node = Node {
            health: role.health_listen,
            role,
            plan,
        };
        State::new(node, None)
    }

    fn raw(node: &str, ip: &str, pairs: &[(&str, &str)]) -> Raw {
        let mut props = vec![
            ("v".to_string(), Some("1".to_string())),
            ("node".to_string(), Some(node.to_string())),
        ];
        props.extend(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Some(v.to_string()))),
        );
        Raw {
            fullname: format!("{node}.{SERVICE_TYPE}"),
            props,
            addresses: vec![ip.parse().unwrap()],
            port: 9100,
        }
    }

    const SERVER: &[(&str, &str)] = &[
        ("region", "eu"),
        ("dc", "ams2"),
        ("roles", "consul-server,nomad-server"),
        ("consul_http", "10.0.1.11:8500"),
    ];

    #[test]
    fn a_good_announcement_is_a_peer_and_a_goodbye_drops_it() {
        let mut s = state();
        let mut warned = BTreeSet::new();
        take(
            &mut s,
            &raw("ams2-server-01", "10.0.1.11", SERVER),
            &mut warned,
        );
        let r = s.report();
        assert_eq!(r.peers.consul_lan, vec!["10.0.1.11"]);
        assert_eq!(r.peers.nomad_servers, vec!["10.0.1.11"]);
        assert!(r.warnings.is_empty(), "{r:?}");
        remove(&mut s, &format!("ams2-server-01.{SERVICE_TYPE}"));
        assert!(s.report().peers.is_empty());
    }

    #[test]
    fn own_bad_and_foreign_announcements_are_never_peers() {
        let mut s = state();
        let mut warned = BTreeSet::new();
        // Our own, coming back: silently ignored.
        take(
            &mut s,
            &raw(
                "ams2-client-01",
                "10.0.1.21",
                &[("region", "eu"), ("dc", "ams2"), ("roles", "nomad-client")],
            ),
            &mut warned,
        );
        assert!(s.report().records.is_empty());
        assert!(s.report().warnings.is_empty());
        // Another host claiming our name.
        take(
            &mut s,
            &raw(
                "ams2-client-01",
                "10.0.1.66",
                &[("region", "eu"), ("dc", "ams2"), ("roles", "nomad-client")],
            ),
            &mut warned,
        );
        // Malformed: a value that is not UTF-8, an unknown role.
        let mut not_utf8 = raw("rogue-1", "10.0.1.66", SERVER);
        not_utf8.props.push(("x".into(), None));
        take(&mut s, &not_utf8, &mut warned);
        take(
            &mut s,
            &raw(
                "rogue-2",
                "10.0.1.66",
                &[("region", "eu"), ("dc", "ams2"), ("roles", "root")],
            ),
            &mut warned,
        );
        // Another region: warned once, never listed.
        let foreign = raw(
            "us-server-01",
            "10.0.1.67",
            &[("region", "us"), ("dc", "ams2"), ("roles", "nomad-server")],
        );
        take(&mut s, &foreign, &mut warned);
        take(&mut s, &foreign, &mut warned);
        let r = s.report();
        assert!(r.records.is_empty(), "{r:?}");
        assert!(r.peers.is_empty());
        assert_eq!(r.warnings.len(), 4, "{:#?}", r.warnings);
        assert!(r.warnings[0].contains("10.0.1.66") && r.warnings[0].contains("this node's name"));
        assert!(r.warnings[1].contains("10.0.1.66") && r.warnings[1].contains("UTF-8"));
        assert!(r.warnings[2].contains("10.0.1.66") && r.warnings[2].contains("root"));
        assert!(
            r.warnings[3].contains("us-server-01")
                && r.warnings[3].contains("10.0.1.67")
                && r.warnings[3].contains("region us")
        );
        assert_eq!(r.errors, vec![("mdns".to_string(), 2)]);
    }

    #[test]
    fn at_most_max_peers_are_kept_and_unseen_ones_expire() {
        let mut s = state();
        let mut warned = BTreeSet::new();
        for i in 0..(MAX_PEERS + 10) {
            let ip = format!("10.1.{}.{}", i / 200, i % 200 + 1);
            take(
                &mut s,
                &raw(
                    &format!("n{i}"),
                    &ip,
                    &[("region", "eu"), ("dc", "ams2"), ("roles", "consul-client")],
                ),
                &mut warned,
            );
        }
        assert_eq!(s.mdns.len(), MAX_PEERS);
        // The oldest went.
        assert!(!s.mdns.contains_key("n0") && s.mdns.contains_key(&format!("n{}", MAX_PEERS + 9)));
        let later = Instant::now() + ANNOUNCE_TTL * 3;
        expire(&mut s, later);
        assert!(s.mdns.is_empty());
    }
}

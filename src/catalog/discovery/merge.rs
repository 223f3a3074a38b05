//! What the providers found, merged into the plan's [`Peers`] and the
//! report's records: pure functions of the node's identity and the
//! [`Found`] list, in a deterministic (sorted) order so an unchanged set
//! never looks changed. Also what announcements teach for an unwritten
//! region/datacenter ([`learn`]). Reads nothing, sends nothing.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::SystemTime;

use crate::peers::{DiscoveryReport, Learned, PeerKind, PeerRecord, Peers, Source};
use crate::role::{NodeRole, RoleSet};

use super::Node;
use super::txt::Announcement;

/// One thing a provider found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The record as status shows it.
    pub record: PeerRecord,
    /// The HTTP API of a Consul server (`host:port`): a candidate for the
    /// Consul choice.
    pub consul_http: Option<String>,
    /// Whether `record.address` goes to the agents' join lists (false: a
    /// Consul choice candidate only, the role file's `consul_address`).
    pub join: bool,
}

/// Who this node is, as the merge needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Node name.
    pub node: String,
    /// Region (learned when the role left it to its default).
    pub region: String,
    /// Datacenter (likewise).
    pub datacenter: String,
    /// The node's own addresses.
    pub own: Vec<IpAddr>,
    /// Its agents.
    pub roles: RoleSet,
}

impl Identity {
    /// The identity of `node`, with what was `learned` for the values its
    /// role file left to their defaults.
    pub fn of(node: &Node, learned: &Learned) -> Self {
        let role = &node.role;
        let region = learned
            .region
            .clone()
            .filter(|_| role.learnable.region)
            .unwrap_or_else(|| role.region.clone());
        let datacenter = learned
            .datacenter
            .clone()
            .filter(|_| role.learnable.datacenter)
            .unwrap_or_else(|| role.datacenter.clone());
        Self {
            node: role.node_name.clone(),
            region,
            datacenter,
            own: node.own_addresses(),
            roles: role.roles,
        }
    }

    /// Whether `address` (`host` or `host:port`) is one of ours.
    pub fn is_own(&self, address: &str) -> bool {
        host_ip(address).is_some_and(|ip| self.own.contains(&ip))
    }
}

/// The IP of `host` or `host:port` or `[v6]:port`, when it is one.
pub fn host_ip(address: &str) -> Option<IpAddr> {
    if let Ok(ip) = address.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = address.parse::<std::net::SocketAddr>() {
        return Some(sa.ip());
    }
    None
}

/// The host part of `host`, `host:port` or `[v6]:port`.
pub fn host_of(address: &str) -> String {
    if let Ok(sa) = address.parse::<std::net::SocketAddr>() {
        return sa.ip().to_string();
    }
    if address.parse::<IpAddr>().is_ok() {
        return address.to_string();
    }
    match address.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.parse::<u16>().is_ok() => h.to_string(),
        _ => address.to_string(),
    }
}

/// The plan's peers from everything found: Consul agents of this
/// datacenter (LAN), Consul servers of other datacenters of this region
/// (WAN), Nomad servers of this region; never this node, never a peer of
/// another region; each list sorted and without repeats. Cloud strings are
/// not here: the plan passes the role file's as written. `consul_http`
/// is the Consul choice's and is left `None` here.
pub fn peers(ident: &Identity, found: &[Found]) -> Peers {
    let mut lan = BTreeSet::new();
    let mut wan = BTreeSet::new();
    let mut nomad = BTreeSet::new();
    for f in found {
        let r = &f.record;
        if !f.join || r.source == Source::Cloud || ident.is_own(&r.address) {
            continue;
        }
        if r.node.as_deref() == Some(ident.node.as_str()) {
            continue;
        }
        if r.region.as_deref().is_some_and(|g| g != ident.region) {
            continue;
        }
        let this_dc = r
            .datacenter
            .as_deref()
            .is_none_or(|d| d == ident.datacenter);
        match r.kind {
            PeerKind::ConsulServer | PeerKind::ConsulAgent if this_dc => {
                lan.insert(r.address.clone());
            }
            PeerKind::ConsulWan => {
                wan.insert(r.address.clone());
            }
            PeerKind::NomadServer => {
                nomad.insert(r.address.clone());
            }
            _ => {}
        }
    }
    Peers {
        consul_lan: lan.into_iter().collect(),
        consul_wan: wan.into_iter().collect(),
        consul_http: None,
        nomad_servers: nomad.into_iter().collect(),
    }
}

/// The report's records: one per (address, kind, source), the newest
/// sighting kept, sorted by kind, address and source.
pub fn records(found: &[Found]) -> Vec<PeerRecord> {
    let mut out: Vec<PeerRecord> = Vec::new();
    let mut sorted: Vec<&Found> = found.iter().collect();
    sorted.sort_by(|a, b| {
        let ka = (&a.record.kind, &a.record.address, &a.record.source);
        let kb = (&b.record.kind, &b.record.address, &b.record.source);
        ka.cmp(&kb)
            .then_with(|| b.record.last_seen.cmp(&a.record.last_seen))
    });
    for f in sorted {
        let r = &f.record;
        let dup = out
            .last()
            .is_some_and(|l| l.kind == r.kind && l.address == r.address && l.source == r.source);
        if !dup {
            out.push(r.clone());
        }
    }
    out
}

/// The peers of the last run's report as seeds: its records, and its
/// Consul choice as a choice candidate (source as recorded for that
/// address, else mDNS).
pub fn seeds(report: &DiscoveryReport) -> Vec<Found> {
    let mut out: Vec<Found> = report
        .records
        .iter()
        // The chosen Consul HTTP address is a candidate, never a gossip
        // peer: it comes back below, not joined.
        .filter(|r| report.peers.consul_http.as_deref() != Some(r.address.as_str()))
        .map(|r| Found {
            record: r.clone(),
            consul_http: None,
            join: true,
        })
        .collect();
    if let Some(c) = &report.peers.consul_http {
        let host = host_of(c);
        let source = report
            .records
            .iter()
            .find(|r| host_of(&r.address) == host)
            .map(|r| r.source)
            .unwrap_or(Source::Mdns);
        out.push(Found {
            record: PeerRecord {
                address: c.clone(),
                kind: PeerKind::ConsulServer,
                source,
                node: None,
                datacenter: None,
                region: None,
                last_seen: SystemTime::now(),
            },
            consul_http: Some(c.clone()),
            join: false,
        });
    }
    out
}

/// What one announcement is to this node: one [`Found`] per thing it
/// runs (a supervisor record when it runs no agent we join). Another
/// region: nothing at all (never a peer, not even listed).
pub fn from_announcement(ident: &Identity, a: &Announcement, seen: SystemTime) -> Vec<Found> {
    let Some(private) = a.private() else {
        return Vec::new();
    };
    let rec = |address: String, kind: PeerKind| PeerRecord {
        address,
        kind,
        source: Source::Mdns,
        node: Some(a.node.clone()),
        datacenter: Some(a.datacenter.clone()),
        region: Some(a.region.clone()),
        last_seen: seen,
    };
    let found = |address: String, kind: PeerKind, consul_http: Option<String>| Found {
        record: rec(address, kind),
        consul_http,
        join: true,
    };
    if a.region != ident.region {
        return Vec::new();
    }
    let roles = a.role_set();
    let mut out = Vec::new();
    {
        let same_dc = a.datacenter == ident.datacenter;
        if roles.consul_server {
            if same_dc {
                out.push(found(
                    private.to_string(),
                    PeerKind::ConsulServer,
                    a.consul_http.map(|c| c.to_string()),
                ));
            } else if let Some(p) = a.public {
                out.push(found(p.to_string(), PeerKind::ConsulWan, None));
            }
        } else if roles.consul_client && same_dc {
            out.push(found(private.to_string(), PeerKind::ConsulAgent, None));
        }
        if roles.nomad_server {
            let at = if same_dc {
                private
            } else {
                a.public.unwrap_or(private)
            };
            out.push(found(at.to_string(), PeerKind::NomadServer, None));
        }
    }
    if out.is_empty() {
        out.push(Found {
            record: rec(private.to_string(), PeerKind::Supervisor),
            consul_http: None,
            join: false,
        });
    }
    out
}

/// What announcements teach for the values `role` left to its defaults:
/// the region and datacenter of the Consul servers announcing (of the
/// written region, when only the datacenter is learnable), when they all
/// agree. When they disagree nothing is learned and the problem says which
/// values were seen.
pub fn learn(role: &NodeRole, anns: &[&Announcement]) -> (Learned, Option<String>) {
    let l = role.learnable;
    if !l.region && !l.datacenter {
        return (Learned::default(), None);
    }
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    let mut from: Option<String> = None;
    let mut sorted: Vec<&&Announcement> = anns.iter().collect();
    sorted.sort_by(|a, b| a.node.cmp(&b.node));
    for a in sorted {
        if !a.role_set().consul_server || a.node == role.node_name {
            continue;
        }
        if !l.region && a.region != role.region {
            continue;
        }
        let region = if l.region {
            a.region.clone()
        } else {
            String::new()
        };
        let dc = if l.datacenter {
            a.datacenter.clone()
        } else {
            String::new()
        };
        if seen.insert((region, dc)) && from.is_none() {
            from = Some(a.node.clone());
        }
    }
    match seen.len() {
        0 => (Learned::default(), None),
        1 => {
            let (region, dc) = seen.into_iter().next().unwrap_or_default();
            (
                Learned {
                    region: l.region.then_some(region),
                    datacenter: l.datacenter.then_some(dc),
                    from_node: from,
                },
                None,
            )
        }
        _ => {
            let what: Vec<String> = seen
                .iter()
                .map(|(r, d)| match (l.region, l.datacenter) {
                    (true, true) => format!("region {r} datacenter {d}"),
                    (true, false) => format!("region {r}"),
                    _ => format!("datacenter {d}"),
                })
                .collect();
            (
                Learned::default(),
                Some(format!(
                    "Consul servers on the LAN announce different identities ({}); \
                     nothing learned: write region and datacenter in the role file",
                    what.join(", ")
                )),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ident() -> Identity {
        Identity {
            node: "ams2-client-01".into(),
            region: "eu".into(),
            datacenter: "ams2".into(),
            own: vec!["10.0.1.21".parse().unwrap()],
            roles: RoleSet {
                nomad_client: true,
                ..RoleSet::default()
            },
        }
    }

    fn ann(node: &str, dc: &str, roles: &str, ip: &str, public: Option<&str>) -> Announcement {
        let ip: IpAddr = ip.parse().unwrap();
        let roles: Vec<String> = roles.split(',').map(String::from).collect();
        let server = super::super::txt::role_set(&roles).consul_server;
        Announcement {
            node: node.into(),
            region: "eu".into(),
            datacenter: dc.into(),
            roles,
            consul_http: server.then(|| std::net::SocketAddr::new(ip, 8500)),
            tls: false,
            public: public.map(|p| p.parse().unwrap()),
            addresses: vec![ip],
            port: 9100,
        }
    }

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs)
    }

    #[test]
    fn announcements_become_lan_wan_and_nomad_peers_by_datacenter_and_region() {
        let id = ident();
        let mut found = Vec::new();
        let s1 = ann(
            "ams2-server-01",
            "ams2",
            "consul-server,nomad-server",
            "10.0.1.11",
            Some("203.0.113.11"),
        );
        let l1 = ann(
            "lon1-server-01",
            "lon1",
            "consul-server,nomad-server",
            "10.0.2.11",
            Some("203.0.113.21"),
        );
        let c2 = ann("ams2-client-02", "ams2", "consul-client", "10.0.1.22", None);
        let mut other = ann("us-server-01", "nyc1", "consul-server", "10.0.3.11", None);
        other.region = "us".into();
        for a in [&s1, &l1, &c2, &other] {
            found.extend(from_announcement(&id, a, t(1)));
        }
        let p = peers(&id, &found);
        assert_eq!(p.consul_lan, vec!["10.0.1.11", "10.0.1.22"]);
        assert_eq!(p.consul_wan, vec!["203.0.113.21"]);
        assert_eq!(p.nomad_servers, vec!["10.0.1.11", "203.0.113.21"]);
        assert_eq!(p.consul_http, None);
        // The other region is nothing: never joined, never listed.
        assert!(from_announcement(&id, &other, t(1)).is_empty());
        assert!(!found.iter().any(|f| f.record.address == "10.0.3.11"));
        // A node running no agent we join is listed, never joined.
        let plain = ann("ams2-client-09", "ams2", "nomad-client", "10.0.1.29", None);
        let f = from_announcement(&id, &plain, t(1));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].record.kind, PeerKind::Supervisor);
        assert!(!f[0].join);
        // The server of this DC offers its Consul API as a candidate.
        assert!(
            found
                .iter()
                .any(|f| f.consul_http.as_deref() == Some("10.0.1.11:8500"))
        );
    }

    #[test]
    fn self_and_other_regions_are_never_peers_and_order_is_stable() {
        let id = ident();
        let me = Found {
            record: super::super::record(
                "10.0.1.21".into(),
                PeerKind::ConsulAgent,
                Source::Dns,
                t(1),
            ),
            consul_http: None,
            join: true,
        };
        let mut far = me.clone();
        far.record.address = "10.9.9.9".into();
        far.record.region = Some("us".into());
        let mut b = me.clone();
        b.record.address = "10.0.1.30".into();
        let mut a = me.clone();
        a.record.address = "10.0.1.12".into();
        let p1 = peers(&id, &[me.clone(), far.clone(), b.clone(), a.clone()]);
        let p2 = peers(&id, &[a, b, far, me]);
        assert_eq!(p1.consul_lan, vec!["10.0.1.12", "10.0.1.30"]);
        assert_eq!(p1, p2);
    }

    #[test]
    fn choice_only_and_cloud_entries_are_not_joined() {
        let id = ident();
        let mut addr = Found {
            record: super::super::record(
                "10.0.1.11:8500".into(),
                PeerKind::ConsulServer,
                Source::Static,
                t(1),
            ),
            consul_http: Some("10.0.1.11:8500".into()),
            join: false,
        };
        let cloud = Found {
            record: super::super::record(
                "provider=aws tag_key=k".into(),
                PeerKind::ConsulAgent,
                Source::Cloud,
                t(1),
            ),
            consul_http: None,
            join: true,
        };
        assert!(peers(&id, &[addr.clone(), cloud]).is_empty());
        addr.join = true;
        assert_eq!(peers(&id, &[addr]).consul_lan, vec!["10.0.1.11:8500"]);
    }

    #[test]
    fn records_keep_the_newest_sighting_once() {
        let mk = |secs| Found {
            record: super::super::record(
                "10.0.1.11".into(),
                PeerKind::ConsulServer,
                Source::Mdns,
                t(secs),
            ),
            consul_http: None,
            join: true,
        };
        let mut dns = mk(1);
        dns.record.source = Source::Dns;
        let r = records(&[mk(1), mk(5), dns, mk(3)]);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].source, Source::Dns);
        assert_eq!(r[1].last_seen, t(5));
    }

    #[test]
    fn host_parts() {
        assert_eq!(host_of("10.0.1.11:8500"), "10.0.1.11");
        assert_eq!(host_of("10.0.1.11"), "10.0.1.11");
        assert_eq!(host_of("[::1]:8500"), "::1");
        assert_eq!(host_of("::1"), "::1");
        assert_eq!(host_of("consul.example:8500"), "consul.example");
        assert_eq!(host_of("consul.example"), "consul.example");
        assert_eq!(host_ip("[fd00::1]:1"), Some("fd00::1".parse().unwrap()));
        assert_eq!(host_ip("consul.example"), None);
    }

    fn learnable_role() -> NodeRole {
        let host = crate::role::StaticHost {
            hostname: Some("ams2-client-01".into()),
            interfaces: vec![("eth1".into(), std::net::Ipv4Addr::new(10, 0, 1, 21))],
            ..crate::role::StaticHost::default()
        };
        let mut role = crate::role::parse(
            std::path::Path::new("/r/node.toml"),
            "schema = 1\n[discovery]\nconsul_address = \"10.0.1.11\"\n[security]\nplaintext = true\n",
            &["nomad-client".to_string()],
            &host,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        role.learnable.region = true;
        role.learnable.datacenter = true;
        role
    }

    #[test]
    fn identity_is_learned_from_agreeing_consul_servers_only() {
        let role = learnable_role();
        let s1 = ann("ams2-server-01", "ams2", "consul-server", "10.0.1.11", None);
        let s2 = ann(
            "ams2-server-02",
            "ams2",
            "consul-server,nomad-server",
            "10.0.1.12",
            None,
        );
        let client = ann("lon1-client-01", "lon1", "consul-client", "10.0.1.40", None);
        let (l, p) = learn(&role, &[&s2, &client, &s1]);
        assert_eq!(p, None);
        assert_eq!(l.region.as_deref(), Some("eu"));
        assert_eq!(l.datacenter.as_deref(), Some("ams2"));
        assert_eq!(l.from_node.as_deref(), Some("ams2-server-01"));
        // Disagreeing servers: nothing learned, the problem names both.
        let l1 = ann("lon1-server-01", "lon1", "consul-server", "10.0.1.13", None);
        let (l, p) = learn(&role, &[&s1, &l1]);
        assert_eq!(l, Learned::default());
        let p = p.unwrap();
        assert!(p.contains("ams2") && p.contains("lon1"), "{p}");
        // Nothing learnable: nothing learned.
        let mut fixed = role.clone();
        fixed.learnable = crate::role::Learnable::default();
        assert_eq!(learn(&fixed, &[&s1, &l1]), (Learned::default(), None));
        // Only the datacenter learnable: servers of another region ignored.
        let mut dc_only = role;
        dc_only.learnable.region = false;
        let mut us = ann("us-server-01", "nyc1", "consul-server", "10.0.1.50", None);
        us.region = "us".into();
        dc_only.region = "eu".into();
        let (l, p) = learn(&dc_only, &[&s1, &us]);
        assert_eq!(p, None);
        assert_eq!(l.region, None);
        assert_eq!(l.datacenter.as_deref(), Some("ams2"));
    }

    #[test]
    fn seeds_keep_their_source_and_the_choice() {
        let report = DiscoveryReport {
            peers: Peers {
                consul_http: Some("10.0.1.11:8500".into()),
                ..Peers::default()
            },
            records: vec![super::super::record(
                "10.0.1.11".into(),
                PeerKind::ConsulServer,
                Source::Dns,
                t(7),
            )],
            ..DiscoveryReport::default()
        };
        let s = seeds(&report);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].record.source, Source::Dns);
        assert_eq!(s[0].record.last_seen, t(7));
        assert_eq!(s[1].consul_http.as_deref(), Some("10.0.1.11:8500"));
        assert_eq!(s[1].record.source, Source::Dns);
        assert!(!s[1].join);
    }

    #[test]
    fn a_cached_choice_never_comes_back_as_a_lan_peer() {
        // A report written by a run that had chosen 10.0.1.11:8500 lists
        // that address among its records too; read back as seeds it must
        // stay a candidate, not become `retry_join` "10.0.1.11:8500".
        let choice = super::super::record(
            "10.0.1.11:8500".into(),
            PeerKind::ConsulServer,
            Source::Mdns,
            t(3),
        );
        let report = DiscoveryReport {
            peers: Peers {
                consul_http: Some("10.0.1.11:8500".into()),
                ..Peers::default()
            },
            records: vec![choice],
            ..DiscoveryReport::default()
        };
        let s = seeds(&report);
        assert_eq!(s.len(), 1, "{s:?}");
        assert!(!s[0].join);
        let id = Identity {
            node: "ams2-client-01".into(),
            region: "eu".into(),
            datacenter: "ams2".into(),
            own: Vec::new(),
            roles: RoleSet::default(),
        };
        assert!(peers(&id, &s).consul_lan.is_empty());
    }
}

//! The mDNS announcement of a supervisor as TXT properties: built for this
//! node ([`build`]) and checked field by field when another node's arrives
//! ([`parse`]). Pure: no sockets. An announcement is untrusted input: every
//! value has a range, and a bad one is refused with the reason, never a
//! panic.
//!
//! Keys (the contract shared with the daemon and the test rig): `v=1`,
//! `node`, `region`, `dc`, `roles` (comma-separated role names),
//! `consul_http` (`ip:port`, only on a Consul server), `tls` (`1`: that
//! Consul API is HTTPS with the cluster's certificates: the node has the
//! cluster's material; absent or `0`: plain HTTP) and `public` (the node's
//! public IP, when it has one).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use crate::role::{ROLE_NAMES, RoleSet, names};
use crate::vocab::Product;

use super::Node;

/// The DNS-SD service type every supervisor announces.
pub const SERVICE_TYPE: &str = "_hashi-sup._tcp.local.";
/// The announcement format version this supervisor writes and reads.
pub const VERSION: &str = "1";
/// Longest TXT value accepted (one TXT string is at most 255 bytes).
pub const MAX_VALUE: usize = 255;
/// Most TXT properties read from one announcement.
pub const MAX_PROPERTIES: usize = 16;
/// Most addresses read from one announcement.
pub const MAX_ADDRESSES: usize = 8;

/// Another supervisor's announcement, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// Its node name (also the instance name).
    pub node: String,
    /// Its region.
    pub region: String,
    /// Its datacenter.
    pub datacenter: String,
    /// Its roles, sorted, each one of [`ROLE_NAMES`].
    pub roles: Vec<String>,
    /// The HTTP API of its Consul server, an address of the announcement.
    pub consul_http: Option<SocketAddr>,
    /// Whether its Consul API is HTTPS (`tls=1`).
    pub tls: bool,
    /// Its public address.
    pub public: Option<IpAddr>,
    /// Its addresses (the private one), sorted, IPv4 first.
    pub addresses: Vec<IpAddr>,
    /// Its health port.
    pub port: u16,
}

impl Announcement {
    /// The agents and modes its roles name.
    pub fn role_set(&self) -> RoleSet {
        role_set(&self.roles)
    }

    /// The address peers join it at (its first address: IPv4 first).
    pub fn private(&self) -> Option<IpAddr> {
        self.addresses.first().copied()
    }
}

/// The agents and modes named by `roles` (`dev` is all of them).
pub fn role_set(roles: &[String]) -> RoleSet {
    let has = |r: &str| roles.iter().any(|x| x == r);
    let dev = has("dev");
    RoleSet {
        consul_server: dev || has("consul-server"),
        consul_client: has("consul-client"),
        nomad_server: dev || has("nomad-server"),
        nomad_client: dev || has("nomad-client"),
        dev,
    }
}

/// The TXT properties this node announces.
pub fn build(node: &Node) -> Vec<(String, String)> {
    let role = &node.role;
    let mut props = vec![
        ("v".to_string(), VERSION.to_string()),
        ("node".to_string(), role.node_name.clone()),
        ("region".to_string(), role.region.clone()),
        ("dc".to_string(), role.datacenter.clone()),
        ("roles".to_string(), role.role_names.join(",")),
    ];
    if role.roles.consul_server || role.roles.dev {
        if let Some(c) = node.local_agent(Product::Consul) {
            let http = SocketAddr::new(role.addresses.private, c.http_addr.port());
            props.push(("consul_http".to_string(), http.to_string()));
            if c.api_tls.is_some() {
                props.push(("tls".to_string(), "1".to_string()));
            }
        }
    }
    if let Some(p) = role.addresses.public {
        props.push(("public".to_string(), p.to_string()));
    }
    props
}

/// Checks an announcement: `instance` is the DNS-SD instance name,
/// `props` its TXT properties, `addresses` the addresses it came with and
/// `port` its port. The error says why it was refused.
pub fn parse(
    instance: &str,
    props: &[(String, String)],
    addresses: &[IpAddr],
    port: u16,
) -> Result<Announcement, String> {
    if props.len() > MAX_PROPERTIES {
        return Err(format!(
            "{} TXT properties, at most {MAX_PROPERTIES} are read",
            props.len()
        ));
    }
    let mut map: BTreeMap<&str, &str> = BTreeMap::new();
    for (k, v) in props {
        if v.len() > MAX_VALUE || k.len() > MAX_VALUE {
            return Err(format!(
                "TXT `{}` is longer than {MAX_VALUE} bytes",
                short(k)
            ));
        }
        if map.insert(k.as_str(), v.as_str()).is_some() {
            return Err(format!("TXT `{}` appears twice", short(k)));
        }
    }
    let get = |k: &str| map.get(k).copied();
    match get("v") {
        Some(VERSION) => {}
        Some(v) => return Err(format!("unknown announcement version `v={}`", short(v))),
        None => return Err("no `v` (announcement version)".into()),
    }
    let node = get("node").ok_or("no `node`")?;
    name_check("node", node, names::node_name_problem(node))?;
    let instance = instance.strip_suffix(".").unwrap_or(instance);
    let instance = instance
        .strip_suffix(SERVICE_TYPE.trim_end_matches('.'))
        .map(|i| i.trim_end_matches('.'))
        .unwrap_or(instance);
    if instance != node {
        return Err(format!(
            "instance name `{}` is not its `node` `{node}`",
            short(instance)
        ));
    }
    let region = get("region").ok_or("no `region`")?;
    name_check("region", region, names::region_problem(region))?;
    let datacenter = get("dc").ok_or("no `dc`")?;
    name_check("dc", datacenter, names::datacenter_problem(datacenter))?;
    let roles_txt = get("roles").ok_or("no `roles`")?;
    let mut roles = Vec::new();
    for r in roles_txt.split(',') {
        if !ROLE_NAMES.contains(&r) {
            return Err(format!("unknown role `{}` in `roles`", short(r)));
        }
        if !roles.iter().any(|x| x == r) {
            roles.push(r.to_string());
        }
    }
    roles.sort();
    let mut addrs: Vec<IpAddr> = addresses.iter().copied().filter(usable).collect();
    addrs.sort_by_key(|a| (a.is_ipv6(), *a));
    addrs.dedup();
    addrs.truncate(MAX_ADDRESSES);
    if addrs.is_empty() {
        return Err("no usable address (loopback, unspecified or multicast only)".into());
    }
    let set = role_set(&roles);
    let consul_http = match get("consul_http") {
        None => None,
        Some(c) => {
            if !set.consul_server {
                return Err("`consul_http` from a node that is no Consul server".into());
            }
            let sa: SocketAddr = c
                .parse()
                .map_err(|_| format!("`consul_http` `{}` is not ip:port", short(c)))?;
            if sa.port() == 0 || !addrs.contains(&sa.ip()) {
                return Err(format!(
                    "`consul_http` {sa} is not on one of its own addresses"
                ));
            }
            Some(sa)
        }
    };
    let tls = match get("tls") {
        None | Some("0") => false,
        Some("1") if consul_http.is_some() => true,
        Some("1") => return Err("`tls=1` without `consul_http`".into()),
        Some(t) => return Err(format!("`tls` `{}` is not 0 or 1", short(t))),
    };
    let public = match get("public") {
        None => None,
        Some(p) => {
            let ip: IpAddr = p
                .parse()
                .map_err(|_| format!("`public` `{}` is not an IP address", short(p)))?;
            if !usable(&ip) {
                return Err(format!("`public` {ip} is not a usable address"));
            }
            Some(ip)
        }
    };
    if port == 0 {
        return Err("port 0".into());
    }
    Ok(Announcement {
        node: node.to_string(),
        region: region.to_string(),
        datacenter: datacenter.to_string(),
        roles,
        consul_http,
        tls,
        public,
        addresses: addrs,
        port,
    })
}

/// An address a peer can be joined at.
fn usable(ip: &IpAddr) -> bool {
    !(ip.is_loopback() || ip.is_unspecified() || ip.is_multicast())
}

/// At most 40 characters of untrusted text, for a warning, with control
/// characters replaced.
pub fn short(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(40)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > 40 {
        out.push('…');
    }
    out
}

/// A name refused by the role file's rules ([`crate::role::names`]), with
/// the (shortened) value.
fn name_check(key: &str, value: &str, problem: Option<String>) -> Result<(), String> {
    match problem {
        None => Ok(()),
        Some(why) => Err(format!("`{key}` `{}`: {why}", short(value))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn props(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn good() -> Vec<(String, String)> {
        props(&[
            ("v", "1"),
            ("node", "ams2-server-01"),
            ("region", "eu"),
            ("dc", "ams2"),
            ("roles", "consul-server,nomad-server"),
            ("consul_http", "10.0.1.11:8500"),
            ("public", "203.0.113.11"),
        ])
    }

    const ADDRS: [IpAddr; 1] = [IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 1, 11))];

    #[test]
    fn a_good_announcement_parses() {
        let a = parse(
            "ams2-server-01._hashi-sup._tcp.local.",
            &good(),
            &ADDRS,
            9100,
        )
        .unwrap();
        assert_eq!(a.node, "ams2-server-01");
        assert_eq!(a.region, "eu");
        assert_eq!(a.datacenter, "ams2");
        assert_eq!(a.roles, vec!["consul-server", "nomad-server"]);
        assert_eq!(a.consul_http, Some("10.0.1.11:8500".parse().unwrap()));
        assert_eq!(a.public, Some("203.0.113.11".parse().unwrap()));
        assert!(a.role_set().consul_server && a.role_set().nomad_server);
        assert_eq!(a.private(), Some(ADDRS[0]));
        // The bare instance name is accepted too.
        assert!(parse("ams2-server-01", &good(), &ADDRS, 9100).is_ok());
    }

    #[test]
    fn catalog_tls_flag_marks_an_https_consul_and_is_checked() {
        let mut p = good();
        p.push(("tls".into(), "1".into()));
        p.retain(|(k, _)| k != "consul_http");
        p.push(("consul_http".into(), "10.0.1.11:8501".into()));
        let a = parse("ams2-server-01", &p, &ADDRS, 9100).unwrap();
        assert!(a.tls);
        assert_eq!(a.consul_http, Some("10.0.1.11:8501".parse().unwrap()));
        assert!(!parse("ams2-server-01", &good(), &ADDRS, 9100).unwrap().tls);
        assert!(refused(p.clone(), "tls", Some("yes")).contains("not 0 or 1"));
        let mut no_http = p;
        no_http.retain(|(k, _)| k != "consul_http");
        assert!(
            parse("ams2-server-01", &no_http, &ADDRS, 9100)
                .unwrap_err()
                .contains("without `consul_http`")
        );
    }

    fn refused(mut p: Vec<(String, String)>, key: &str, value: Option<&str>) -> String {
        p.retain(|(k, _)| k != key);
        if let Some(v) = value {
            p.push((key.to_string(), v.to_string()));
        }
        parse("ams2-server-01", &p, &ADDRS, 9100).unwrap_err()
    }

    #[test]
    fn every_field_is_checked() {
        assert!(refused(good(), "v", None).contains("version"));
        assert!(refused(good(), "v", Some("2")).contains("v=2"));
        assert!(refused(good(), "node", None).contains("node"));
        assert!(refused(good(), "node", Some("other")).contains("instance name"));
        assert!(refused(good(), "region", Some("e u")).contains("region"));
        assert!(refused(good(), "region", None).contains("region"));
        assert!(refused(good(), "dc", Some("AMS2")).contains("dc"));
        assert!(refused(good(), "dc", Some(&"a".repeat(64))).contains("at most 63"));
        assert!(refused(good(), "roles", Some("consul-server,root")).contains("root"));
        assert!(refused(good(), "roles", Some("")).contains("unknown role"));
        assert!(refused(good(), "consul_http", Some("10.0.1.99:8500")).contains("own"));
        assert!(refused(good(), "consul_http", Some("10.0.1.11")).contains("ip:port"));
        assert!(refused(good(), "consul_http", Some("10.0.1.11:0")).contains("own"));
        assert!(refused(good(), "public", Some("example.org")).contains("public"));
        assert!(refused(good(), "public", Some("127.0.0.1")).contains("public"));
        let mut client = good();
        client.retain(|(k, _)| k != "roles");
        client.push(("roles".into(), "nomad-client".into()));
        assert!(
            parse("ams2-server-01", &client, &ADDRS, 9100)
                .unwrap_err()
                .contains("no Consul server")
        );
    }

    #[test]
    fn sizes_and_addresses_are_bounded() {
        let mut many = good();
        for i in 0..MAX_PROPERTIES {
            many.push((format!("x{i}"), "y".into()));
        }
        assert!(
            parse("ams2-server-01", &many, &ADDRS, 9100)
                .unwrap_err()
                .contains("TXT properties")
        );
        let mut long = good();
        long.push(("x".into(), "y".repeat(300)));
        assert!(
            parse("ams2-server-01", &long, &ADDRS, 9100)
                .unwrap_err()
                .contains("longer")
        );
        let mut twice = good();
        twice.push(("dc".into(), "lon1".into()));
        assert!(
            parse("ams2-server-01", &twice, &ADDRS, 9100)
                .unwrap_err()
                .contains("twice")
        );
        let lo = ["127.0.0.1".parse().unwrap()];
        assert!(
            parse("ams2-server-01", &good(), &lo, 9100)
                .unwrap_err()
                .contains("usable")
        );
        assert!(parse("ams2-server-01", &good(), &ADDRS, 0).is_err());
        // Unknown keys are ignored (a newer supervisor may add some).
        let mut extra = good();
        extra.push(("future".into(), "x".into()));
        assert!(parse("ams2-server-01", &extra, &ADDRS, 9100).is_ok());
    }

    #[test]
    fn untrusted_text_in_warnings_is_short_and_printable() {
        assert_eq!(short("a\nb"), "a?b");
        assert_eq!(short(&"x".repeat(100)).chars().count(), 41);
    }

    #[test]
    fn dev_is_every_role() {
        let s = role_set(&["dev".to_string()]);
        assert!(s.consul_server && s.nomad_server && s.nomad_client && s.dev);
        assert!(!role_set(&["consul-client".to_string()]).consul_server);
    }
}

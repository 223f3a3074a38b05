//! `[discovery]`: the static join lists, the Consul address of a node
//! without a local Consul, cloud auto-join strings (their shape:
//! [`super::cloud`]), mDNS on or off, the DNS provider ([`super::dns`]),
//! and whether they fit the roles (only Consul servers join the WAN; a
//! Nomad without a local Consul needs some way to find its servers).

use std::net::{IpAddr, SocketAddr};

use toml::Spanned;

use super::roles::Roles;
use super::{Checked, Findings, cloud, dns};
use crate::role::diag::Location;
use crate::role::is_private_network;
use crate::role::raw::{RawDiscovery, SpStr};
use crate::role::{Discovery, RoleSet};

/// Consul's HTTP port, appended to a `consul_address` without one.
const CONSUL_HTTP_PORT: u16 = 8500;

/// The node's private address as `[addresses]` resolved it: `None` when
/// that failed (then reported there, and nothing here depends on it).
pub(super) type Private = Option<IpAddr>;

/// The discovery settings. `list_loc`: where the roles are listed (the
/// problem of a Nomad that cannot find its servers points there);
/// `private`: the node's private address (mDNS is on by default on a
/// private network); `source`: the role file text (a problem inside a
/// cloud auto-join string points at its column).
pub(super) fn check(
    rd: &RawDiscovery,
    roles: &Roles,
    list_loc: &Location,
    private: Private,
    source: &str,
) -> Checked<Discovery> {
    let mut found = Findings::default();
    let set = roles.set;
    let consul_address = rd.consul_address.as_ref().and_then(|s| {
        let text = s.get_ref().trim();
        match normalise_host_port(text, CONSUL_HTTP_PORT) {
            Some(a) => Some(a),
            None => {
                found.span(s, format!("`{text}` is not a host or host:port"));
                None
            }
        }
    });
    for s in rd.cloud_auto_join.iter().flat_map(|l| l.get_ref()) {
        cloud::check(&mut found, s, source);
    }
    let mdns = found.keep(mdns(rd.mdns.as_ref(), set, private));
    let dns = rd.dns.as_ref().map(|d| found.keep(dns::check(d, set)));
    let discovery = Discovery {
        consul_retry_join: list(&mut found, &rd.consul_retry_join, "consul_retry_join"),
        consul_retry_join_wan: list(
            &mut found,
            &rd.consul_retry_join_wan,
            "consul_retry_join_wan",
        ),
        nomad_retry_join: list(&mut found, &rd.nomad_retry_join, "nomad_retry_join"),
        consul_address,
        cloud_auto_join: list(&mut found, &rd.cloud_auto_join, "cloud_auto_join"),
        mdns,
        dns,
    };
    if let Some(first) = rd
        .consul_retry_join_wan
        .as_ref()
        .and_then(|l| l.get_ref().first())
    {
        if !set.consul_server && !set.dev {
            found.span(first, "only Consul servers join the WAN: `consul_retry_join_wan` needs the consul-server role");
        }
    }
    if roles.all_known && set.is_nomad() && !set.is_consul() {
        if let Some(why) = nomad_cannot_find_servers(rd, &discovery, private) {
            found.at(list_loc.clone(), why);
        }
    }
    if rd.consul_address.is_some() && set.is_consul() {
        if let Some(s) = &rd.consul_address {
            found.span(
                s,
                "`consul_address` is for nodes without a local Consul; this node runs one",
            );
        }
    }
    (discovery, found)
}

/// `mdns`: as written, else on when the private address is on a private
/// network (and not for `dev`, which stays on its own machine). Written
/// `true` on a loopback or unspecified private address is refused: mDNS
/// runs only on the interface holding the private address, and there is
/// none.
fn mdns(written: Option<&Spanned<bool>>, set: RoleSet, private: Private) -> Checked<bool> {
    let mut found = Findings::default();
    let on = match written {
        Some(m) => {
            let on = *m.get_ref();
            if let Some(ip) = private.filter(|ip| on && (ip.is_loopback() || ip.is_unspecified())) {
                found.span(
                    m,
                    format!(
                        "`mdns = true` needs a private address on a network interface, and {ip} is not one: \
                         mDNS announces and browses only on the interface holding `addresses.private`"
                    ),
                );
            }
            on
        }
        None => !set.dev && private.is_some_and(is_private_network),
    };
    (on, found)
}

/// Why a Nomad without a local Consul has no way to find its servers, or
/// `None` when it has one: a written Consul address, a static Nomad server
/// list, DNS names of Consul or Nomad servers, or mDNS.
fn nomad_cannot_find_servers(rd: &RawDiscovery, d: &Discovery, private: Private) -> Option<String> {
    let dns_names = d
        .dns
        .as_ref()
        .is_some_and(|n| !n.consul_servers.is_empty() || !n.nomad_servers.is_empty());
    // A written but malformed address is reported at its line: not twice.
    let written_address = rd.consul_address.is_some();
    if written_address || !d.nomad_retry_join.is_empty() || dns_names || d.mdns {
        return None;
    }
    let why_no_mdns = match (&rd.mdns, private) {
        (Some(_), _) => "mDNS is off (`discovery.mdns = false`)".to_string(),
        (None, Some(ip)) => format!(
            "mDNS is off because the private address {ip} is not on a private network \
             (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7)"
        ),
        // The private address is already refused: say nothing of it.
        (None, None) => return None,
    };
    Some(format!(
        "a Nomad role without a local Consul needs a way to find its servers: \
         `discovery.consul_address`, `discovery.nomad_retry_join`, \
         `[discovery.dns] consul_servers` or `nomad_servers`, or mDNS (`discovery.mdns`); \
         {why_no_mdns}"
    ))
}

/// The non-empty entries of a list of addresses, trimmed.
fn list(found: &mut Findings, v: &Option<Spanned<Vec<SpStr>>>, key: &str) -> Vec<String> {
    let mut out = Vec::new();
    for s in v.iter().flat_map(|l| l.get_ref()) {
        if s.get_ref().trim().is_empty() {
            found.span(s, format!("`{key}` holds an empty address"));
        } else {
            out.push(s.get_ref().trim().to_string());
        }
    }
    out
}

/// `host` or `host:port` (IPv6 in brackets) → `host:port`.
fn normalise_host_port(text: &str, default_port: u16) -> Option<String> {
    if text.is_empty() || text.contains(char::is_whitespace) || text.contains("://") {
        return None;
    }
    if let Ok(sa) = text.parse::<SocketAddr>() {
        return Some(sa.to_string());
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, default_port).to_string());
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().ok()?),
        None => (text, default_port),
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '.');
    host_ok.then(|| format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consul_address_gets_default_port() {
        assert_eq!(
            normalise_host_port("10.0.1.11", 8500).as_deref(),
            Some("10.0.1.11:8500")
        );
        assert_eq!(
            normalise_host_port("consul.lan:8501", 8500).as_deref(),
            Some("consul.lan:8501")
        );
        assert_eq!(normalise_host_port("http://x", 8500), None);
        assert_eq!(normalise_host_port("a b", 8500), None);
    }
}

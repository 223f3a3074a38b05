//! `[discovery.dns]`: the nameserver (an address, never a name: it is what
//! names are resolved with), the names discovery resolves (each by
//! [`crate::role::names::dns_name_problem`]), and the interval. Lengths and
//! list sizes are [`super::sizes`]'s; a name already reported too long there
//! is not reported again here.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use toml::Spanned;

use super::sizes::number;
use super::{Checked, Findings};
use crate::role::raw::{RawDns, SpStr};
use crate::role::{DnsDiscovery, RoleSet, limits, names};

/// The DNS port, for a nameserver written without one.
const DNS_PORT: u16 = 53;
/// `interval_secs` when not written.
pub(super) const DEFAULT_INTERVAL_SECS: u64 = 30;

/// The DNS provider of `[discovery.dns]`.
pub(super) fn check(dns: &Spanned<RawDns>, set: RoleSet) -> Checked<DnsDiscovery> {
    let mut found = Findings::default();
    let d = dns.get_ref();
    let nameserver = d
        .nameserver
        .as_ref()
        .and_then(|s| match nameserver(s.get_ref().trim()) {
            Ok(a) => Some(a),
            Err(why) => {
                found.span(s, why);
                None
            }
        });
    let consul_servers = names_of(&mut found, &d.consul_servers, "consul_servers");
    let consul_wan = names_of(&mut found, &d.consul_wan, "consul_wan");
    let nomad_servers = names_of(&mut found, &d.nomad_servers, "nomad_servers");
    let interval = number(
        &mut found,
        &d.interval_secs,
        "interval_secs",
        &limits::DNS_INTERVAL_SECS,
        DEFAULT_INTERVAL_SECS,
    );
    let written =
        |l: &Option<Spanned<Vec<SpStr>>>| l.as_ref().is_some_and(|l| !l.get_ref().is_empty());
    if !written(&d.consul_servers) && !written(&d.consul_wan) && !written(&d.nomad_servers) {
        found.span(
            dns,
            "`[discovery.dns]` names nothing to resolve: give `consul_servers`, `consul_wan` or `nomad_servers`",
        );
    }
    if let Some(first) = d.consul_wan.as_ref().and_then(|l| l.get_ref().first()) {
        if !set.consul_server && !set.dev {
            found.span(
                first,
                "only Consul servers join the WAN: `discovery.dns.consul_wan` needs the consul-server role",
            );
        }
    }
    let dns = DnsDiscovery {
        nameserver,
        consul_servers,
        consul_wan,
        nomad_servers,
        interval: Duration::from_secs(interval),
    };
    (dns, found)
}

/// `ip` or `ip:port` (IPv6 with a port in brackets), port 53 by default.
fn nameserver(text: &str) -> Result<SocketAddr, String> {
    let addr = text
        .parse::<SocketAddr>()
        .ok()
        .or_else(|| {
            text.parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, DNS_PORT))
        })
        .ok_or_else(|| {
            format!(
                "`{text}` is not an ip or ip:port: a nameserver is given by its address, not by a name"
            )
        })?;
    if addr.port() == 0 || addr.ip().is_unspecified() {
        return Err(format!("`{text}` is not an address a query can be sent to"));
    }
    Ok(addr)
}

/// The names of one list, trimmed; each one that is not a DNS name is
/// reported (one too long for [`limits::DNS_NAME_CHARS`] only by sizes).
fn names_of(found: &mut Findings, v: &Option<Spanned<Vec<SpStr>>>, key: &str) -> Vec<String> {
    let mut out = Vec::new();
    for s in v.iter().flat_map(|l| l.get_ref()) {
        let name = s.get_ref().trim();
        if name.chars().count() > limits::DNS_NAME_CHARS {
            continue;
        }
        match names::dns_name_problem(name) {
            Some(why) => found.span(s, format!("`discovery.dns.{key}` entry `{name}` {why}")),
            None => out.push(name.to_string()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nameserver_is_an_address_with_port_53_by_default() {
        assert_eq!(nameserver("10.0.1.1"), Ok("10.0.1.1:53".parse().unwrap()));
        assert_eq!(
            nameserver("10.0.1.1:5353"),
            Ok("10.0.1.1:5353".parse().unwrap())
        );
        assert_eq!(nameserver("fd00::1"), Ok("[fd00::1]:53".parse().unwrap()));
        assert_eq!(
            nameserver("[fd00::1]:5353"),
            Ok("[fd00::1]:5353".parse().unwrap())
        );
        for bad in ["ns1.example", "10.0.1.1:0", "0.0.0.0", "10.0.1.1:99999", ""] {
            assert!(nameserver(bad).is_err(), "{bad}");
        }
    }
}

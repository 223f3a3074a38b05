//! `[discovery]`: join addresses, the Consul address of a node without a
//! local Consul, cloud auto-join strings, and whether they fit the roles
//! (only Consul servers join the WAN; a Nomad without a local Consul needs a
//! way to find its servers).

use std::net::{IpAddr, SocketAddr};

use toml::Spanned;

use super::roles::Roles;
use super::{Checked, Findings};
use crate::role::Discovery;
use crate::role::diag::Location;
use crate::role::raw::{RawDiscovery, SpStr};

/// Consul's HTTP port, appended to a `consul_address` without one.
const CONSUL_HTTP_PORT: u16 = 8500;

/// The discovery settings. `list_loc`: where the roles are listed (the
/// problem of a Nomad that cannot find its servers points there).
pub(super) fn check(rd: &RawDiscovery, roles: &Roles, list_loc: &Location) -> Checked<Discovery> {
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
        if !s.get_ref().trim_start().starts_with("provider=") {
            found.span(s, "a cloud auto-join string starts with `provider=`");
        }
    }
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
        // Parsed and defaulted by the discovery issue's role work.
        mdns: false,
        dns: None,
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
    if roles.all_known
        && set.is_nomad()
        && !set.is_consul()
        && rd.consul_address.is_none()
        && discovery.nomad_retry_join.is_empty()
    {
        found.at(
            list_loc.clone(),
            "a Nomad role without a local Consul needs `discovery.consul_address` or `discovery.nomad_retry_join` to find its servers",
        );
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

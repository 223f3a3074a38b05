//! The static provider: the role file's `[discovery]` lists as records.
//! `consul_retry_join` are Consul LAN peers, `consul_retry_join_wan` WAN
//! peers, `nomad_retry_join` Nomad servers, `consul_address` a Consul
//! choice candidate (never joined), `cloud_auto_join` strings passed
//! through as they are (the agents resolve them, we never do). Pure.

use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

use crate::peers::{PeerKind, Source};
use crate::role::NodeRole;

use super::merge::Found;
use super::record;

/// Consul's default HTTP port, for a Consul address written without one.
pub const CONSUL_HTTP_PORT: u16 = 8500;

/// Everything the role file lists, found `now`.
pub fn found(role: &NodeRole, now: SystemTime) -> Vec<Found> {
    let d = &role.discovery;
    let mut out = Vec::new();
    let mut push = |list: &[String], kind: PeerKind, source: Source| {
        for a in list {
            out.push(Found {
                record: record(a.clone(), kind, source, now),
                consul_http: None,
                join: true,
            });
        }
    };
    push(&d.consul_retry_join, PeerKind::ConsulAgent, Source::Static);
    push(
        &d.consul_retry_join_wan,
        PeerKind::ConsulWan,
        Source::Static,
    );
    push(&d.nomad_retry_join, PeerKind::NomadServer, Source::Static);
    push(&d.cloud_auto_join, PeerKind::ConsulAgent, Source::Cloud);
    if let Some(a) = &d.consul_address {
        let http = with_port(a, CONSUL_HTTP_PORT);
        out.push(Found {
            record: record(http.clone(), PeerKind::ConsulServer, Source::Static, now),
            consul_http: Some(http),
            join: false,
        });
    }
    out
}

/// `address` with `port` added when it has none (`host`, `ip`, `v6`).
pub fn with_port(address: &str, port: u16) -> String {
    if address.parse::<SocketAddr>().is_ok() {
        return address.to_string();
    }
    if let Ok(ip) = address.parse::<IpAddr>() {
        return SocketAddr::new(ip, port).to_string();
    }
    match address.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => address.to_string(),
        _ => format!("{address}:{port}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn role(text: &str, roles: &[&str]) -> NodeRole {
        let host = crate::role::StaticHost {
            hostname: Some("ams2-client-01".into()),
            interfaces: vec![("eth1".into(), std::net::Ipv4Addr::new(10, 0, 1, 21))],
            ..crate::role::StaticHost::default()
        };
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        crate::role::parse(
            std::path::Path::new("/r/node.toml"),
            &crate::role::with_plaintext(text),
            &roles,
            &host,
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn every_list_becomes_records_of_its_kind() {
        let r = role(
            "schema = 1\n[discovery]\nconsul_retry_join = [\"10.0.1.11\"]\n\
             consul_retry_join_wan = [\"203.0.113.21\"]\nnomad_retry_join = [\"10.0.1.12\"]\n\
             cloud_auto_join = [\"provider=aws tag_key=consul tag_value=ams2\"]\n",
            &["consul-server", "nomad-server"],
        );
        let f = found(&r, SystemTime::UNIX_EPOCH);
        let kinds: Vec<(&str, PeerKind, Source)> = f
            .iter()
            .map(|f| (f.record.address.as_str(), f.record.kind, f.record.source))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("10.0.1.11", PeerKind::ConsulAgent, Source::Static),
                ("203.0.113.21", PeerKind::ConsulWan, Source::Static),
                ("10.0.1.12", PeerKind::NomadServer, Source::Static),
                (
                    "provider=aws tag_key=consul tag_value=ams2",
                    PeerKind::ConsulAgent,
                    Source::Cloud
                ),
            ]
        );
        assert!(f.iter().all(|f| f.join && f.consul_http.is_none()));
    }

    #[test]
    fn the_consul_address_is_a_candidate_with_its_port_and_never_joined() {
        let r = role(
            "schema = 1\n[discovery]\nconsul_address = \"10.0.1.11\"\n",
            &["nomad-client"],
        );
        let f = found(&r, SystemTime::UNIX_EPOCH);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].consul_http.as_deref(), Some("10.0.1.11:8500"));
        assert_eq!(f[0].record.kind, PeerKind::ConsulServer);
        assert!(!f[0].join);
    }

    #[test]
    fn ports_are_added_only_where_missing() {
        assert_eq!(with_port("10.0.1.11", 8500), "10.0.1.11:8500");
        assert_eq!(with_port("10.0.1.11:8501", 8500), "10.0.1.11:8501");
        assert_eq!(with_port("fd00::1", 8500), "[fd00::1]:8500");
        assert_eq!(with_port("[fd00::1]:1", 8500), "[fd00::1]:1");
        assert_eq!(with_port("consul.example", 8500), "consul.example:8500");
        assert_eq!(with_port("consul.example:9", 8500), "consul.example:9");
    }
}

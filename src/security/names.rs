//! The names in a node certificate: one function for the signer (the join
//! endpoint checks a request against it) and the requester (a joining node
//! builds its CSR from it), so both always agree.
//!
//! Consul checks `server.<datacenter>.consul` on a server's certificate
//! when `verify_server_hostname` is on, and Nomad checks
//! `server.<region>.nomad` / `client.<region>.nomad` (Consul "Secure Consul
//! agent communication with TLS encryption", Nomad "Enable TLS encryption
//! for Nomad"). `localhost` and 127.0.0.1 are there for the local API
//! clients (the supervisor, the agents' CLIs). Pure: reads nothing.

use std::net::{IpAddr, Ipv4Addr};

use crate::role::{Addresses, ROLE_NAMES, RoleSet};

/// Why a list of role names is not one a certificate can be issued for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleNamesError {
    /// No role at all.
    #[error("no roles given")]
    Empty,
    /// A name that is not a role.
    #[error(
        "unknown role `{0}`, expected one of: consul-server, consul-client, nomad-server, nomad-client"
    )]
    Unknown(String),
    /// A role listed twice.
    #[error("role `{0}` is listed twice")]
    Duplicate(String),
    /// `dev`: a single loopback node, never secured.
    #[error("role `dev` runs a single node on loopback and is never secured")]
    Dev,
    /// Consul in both modes.
    #[error("`consul-server` and `consul-client` cannot run on one node")]
    ConsulBoth,
}

/// The DNS names a node of `roles` needs in its certificate: Consul's
/// `server.<dc>.consul` or `client.<dc>.consul`, Nomad's
/// `server.<region>.nomad` and/or `client.<region>.nomad`, and `localhost`.
/// Sorted and deduplicated, so two callers compare them as lists.
pub fn dns_names(roles: RoleSet, region: &str, datacenter: &str) -> Vec<String> {
    let mut names = Vec::with_capacity(5);
    if roles.consul_server {
        names.push(format!("server.{datacenter}.consul"));
    }
    if roles.consul_client {
        names.push(format!("client.{datacenter}.consul"));
    }
    if roles.nomad_server {
        names.push(format!("server.{region}.nomad"));
    }
    if roles.nomad_client {
        names.push(format!("client.{region}.nomad"));
    }
    names.push("localhost".to_string());
    names.sort();
    names.dedup();
    names
}

/// The IP addresses a node needs in its certificate: 127.0.0.1, its
/// private address and its public one when it has one; deduplicated, in
/// that order.
pub fn ips(addresses: &Addresses) -> Vec<IpAddr> {
    let mut out = vec![IpAddr::V4(Ipv4Addr::LOCALHOST), addresses.private];
    out.extend(addresses.public);
    let mut seen = Vec::with_capacity(out.len());
    out.retain(|ip| {
        if seen.contains(ip) {
            false
        } else {
            seen.push(*ip);
            true
        }
    });
    out
}

/// Whether a node of `roles` runs a server (Consul or Nomad): servers
/// joining with a token that allows them become CA holders.
pub fn is_server(roles: RoleSet) -> bool {
    roles.consul_server || roles.nomad_server
}

/// The roles named by `names` (as in a join request), by the role file's
/// names ([`ROLE_NAMES`]): unknown or repeated names, `dev`, and Consul in
/// both modes are refused, as the role file refuses them.
pub fn role_set(names: &[String]) -> Result<RoleSet, RoleNamesError> {
    if names.is_empty() {
        return Err(RoleNamesError::Empty);
    }
    let mut set = RoleSet::default();
    let mut seen: Vec<&str> = Vec::with_capacity(names.len());
    for name in names {
        let n = name.as_str();
        if !ROLE_NAMES.contains(&n) {
            // Bounded: a role name is short; an absurd one is cut in the message.
            let shown: String = n.chars().take(40).collect();
            return Err(RoleNamesError::Unknown(shown));
        }
        if seen.contains(&n) {
            return Err(RoleNamesError::Duplicate(n.to_string()));
        }
        seen.push(n);
        match n {
            "consul-server" => set.consul_server = true,
            "consul-client" => set.consul_client = true,
            "nomad-server" => set.nomad_server = true,
            "nomad-client" => set.nomad_client = true,
            _ => return Err(RoleNamesError::Dev),
        }
    }
    if set.consul_server && set.consul_client {
        return Err(RoleNamesError::ConsulBoth);
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles(names: &[&str]) -> RoleSet {
        role_set(&names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn a_consul_and_nomad_server_needs_both_server_names_and_localhost() {
        let names = dns_names(roles(&["consul-server", "nomad-server"]), "eu", "ams2");
        assert_eq!(
            names,
            vec!["localhost", "server.ams2.consul", "server.eu.nomad"]
        );
    }

    #[test]
    fn a_client_gets_client_names_only() {
        let names = dns_names(roles(&["consul-client", "nomad-client"]), "eu", "ams2");
        assert_eq!(
            names,
            vec!["client.ams2.consul", "client.eu.nomad", "localhost"]
        );
    }

    #[test]
    fn a_nomad_server_and_client_gets_both_nomad_names() {
        let names = dns_names(
            roles(&["consul-server", "nomad-server", "nomad-client"]),
            "global",
            "dc1",
        );
        assert_eq!(
            names,
            vec![
                "client.global.nomad",
                "localhost",
                "server.dc1.consul",
                "server.global.nomad"
            ]
        );
    }

    #[test]
    fn ips_are_loopback_private_public_without_duplicates() {
        let a = Addresses {
            bind: "0.0.0.0".parse().unwrap(),
            private: "10.0.0.5".parse().unwrap(),
            public: Some("203.0.113.7".parse().unwrap()),
        };
        let want: Vec<IpAddr> = ["127.0.0.1", "10.0.0.5", "203.0.113.7"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(ips(&a), want);
        let lo = Addresses {
            bind: "127.0.0.1".parse().unwrap(),
            private: "127.0.0.1".parse().unwrap(),
            public: None,
        };
        assert_eq!(ips(&lo), vec!["127.0.0.1".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn role_names_parse_and_bad_lists_are_refused() {
        let s = roles(&["nomad-client", "consul-client"]);
        assert!(s.consul_client && s.nomad_client && !s.consul_server && !s.dev);
        assert!(!is_server(s));
        assert!(is_server(roles(&["nomad-server"])));
        let p = |v: &[&str]| role_set(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(p(&[]), Err(RoleNamesError::Empty));
        assert_eq!(
            p(&["consul-servr"]),
            Err(RoleNamesError::Unknown("consul-servr".into()))
        );
        assert_eq!(
            p(&["nomad-client", "nomad-client"]),
            Err(RoleNamesError::Duplicate("nomad-client".into()))
        );
        assert_eq!(p(&["dev"]), Err(RoleNamesError::Dev));
        assert_eq!(
            p(&["consul-server", "consul-client"]),
            Err(RoleNamesError::ConsulBoth)
        );
    }
}

//! `[addresses]` (an IP literal, an interface's first IPv4, or `auto`) and
//! `health.listen`, resolved against the machine through [`Host`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::{Checked, Findings};
use crate::paths::DEFAULT_HEALTH_PORT;
use crate::role::diag::Location;
use crate::role::host::{Host, first_private_ipv4};
use crate::role::raw::{RawAddresses, RawHealth, SpStr};
use crate::role::{Addresses, RoleSet};

/// Address spec meaning "the first private IPv4 of the host".
const AUTO: &str = "auto";

/// The private, bind and public addresses, in that order. `dev` stays on
/// loopback unless told otherwise.
pub(super) fn check(a: &RawAddresses, set: RoleSet, host: &dyn Host) -> Checked<Addresses> {
    let mut found = Findings::default();
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let unspecified = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let private = match &a.private {
        Some(s) => address(&mut found, host, s, "addresses.private").unwrap_or(loopback),
        None if set.dev => loopback,
        None => match first_private_ipv4(host) {
            Some(ip) => ip,
            None => {
                if set.is_consul() || set.is_nomad() {
                    found.at(
                        Location::File,
                        "`addresses.private` is not set and this host has no private IPv4 address",
                    );
                }
                loopback
            }
        },
    };
    let bind = match &a.bind {
        Some(s) => address(&mut found, host, s, "addresses.bind").unwrap_or(unspecified),
        None if set.dev => private,
        None => unspecified,
    };
    let public = a
        .public
        .as_ref()
        .and_then(|s| address(&mut found, host, s, "addresses.public"));
    let addresses = Addresses {
        bind,
        private,
        public,
    };
    (addresses, found)
}

/// An IP literal, an interface name (its first IPv4), or `auto`.
fn address(found: &mut Findings, host: &dyn Host, s: &SpStr, key: &str) -> Option<IpAddr> {
    let text = s.get_ref().trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if text == AUTO {
        let ip = first_private_ipv4(host);
        if ip.is_none() {
            found.span(
                s,
                format!("`{key}` is `auto` but this host has no private IPv4 address"),
            );
        }
        return ip;
    }
    match host.interface_ipv4(text) {
        Some(ips) => match ips.first() {
            Some(ip) => Some(IpAddr::V4(*ip)),
            None => {
                found.span(s, format!("interface `{text}` has no IPv4 address"));
                None
            }
        },
        None => {
            found.span(
                s,
                format!("`{text}` is neither an IP address, `auto`, nor an interface of this host"),
            );
            None
        }
    }
}

/// `health.listen`; by default the private address only (not the public
/// one), port 4680.
pub(super) fn health_listen(h: &RawHealth, private: IpAddr) -> Checked<SocketAddr> {
    let mut found = Findings::default();
    let listen = match &h.listen {
        None => SocketAddr::new(private, DEFAULT_HEALTH_PORT),
        Some(s) => match s.get_ref().parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                found.span(s, format!("`{}` is not an ip:port address", s.get_ref()));
                SocketAddr::new(private, DEFAULT_HEALTH_PORT)
            }
        },
    };
    (listen, found)
}

//! What loading a role file needs from the machine: its hostname, its
//! network interfaces, the key files the role names and the Unix users the
//! agents run as. Behind a trait so tests can load role files without
//! depending on the host they run on.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use super::file::FileError;

/// The machine a role file is loaded on.
pub trait Host {
    /// The hostname, used as the default node name.
    fn hostname(&self) -> Option<String>;
    /// IPv4 addresses of interface `name` (`None` if there is no such
    /// interface).
    fn interface_ipv4(&self, name: &str) -> Option<Vec<Ipv4Addr>>;
    /// All IPv4 addresses of all interfaces that are up, in interface order.
    fn all_ipv4(&self) -> Vec<Ipv4Addr>;
    /// Reads a regular file of at most `limit` bytes (a gossip key, a
    /// trusted key), without blocking (see [`super::file`]).
    fn read_file(&self, path: &Path, limit: u64) -> Result<Vec<u8>, FileError>;
    /// Whether a regular file of at most `limit` bytes can be opened for
    /// reading (a TLS file, read by the agent itself).
    fn check_file(&self, path: &Path, limit: u64) -> Result<(), FileError>;
    /// Whether `path` is a directory (the cluster dir of a CA holder).
    fn is_dir(&self, path: &Path) -> bool;
    /// Whether the agents switch to their own users here: only a supervisor
    /// running as root can, otherwise they run as the supervisor's user.
    fn switches_users(&self) -> bool;
    /// Whether the Unix user `name` exists.
    fn user_exists(&self, name: &str) -> bool;
}

/// Whether `ip` is an RFC 1918 private IPv4 address (what `auto` picks).
pub fn is_private_v4(ip: Ipv4Addr) -> bool {
    ip.is_private()
}

/// Whether `ip` belongs to a private network: IPv4 RFC 1918 (10/8,
/// 172.16/12, 192.168/16) or shared address space (100.64/10, RFC 6598,
/// carrier-grade NAT), IPv6 unique local (fc00::/7, RFC 4193). Loopback,
/// link-local, unspecified and public addresses are not. mDNS discovery is
/// on by default only on such an address: multicast stays on the LAN.
pub fn is_private_network(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private() || (a == 100 && (b & 0xc0) == 64)
        }
        IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

/// The first private IPv4 address of the host, if any.
pub fn first_private_ipv4(host: &dyn Host) -> Option<IpAddr> {
    host.all_ipv4()
        .into_iter()
        .find(|ip| is_private_v4(*ip))
        .map(IpAddr::V4)
}

/// The real machine.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemHost;

impl SystemHost {
    fn ifaddrs() -> Vec<(String, Ipv4Addr, bool)> {
        let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
            return Vec::new();
        };
        addrs
            .filter_map(|a| {
                let ip = a.address.as_ref()?.as_sockaddr_in()?.ip();
                let up = a.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP);
                Some((a.interface_name, ip, up))
            })
            .collect()
    }
}

impl Host for SystemHost {
    fn hostname(&self) -> Option<String> {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| !h.is_empty())
    }

    fn interface_ipv4(&self, name: &str) -> Option<Vec<Ipv4Addr>> {
        let exists = nix::net::if_::if_nameindex()
            .map(|l| l.iter().any(|i| i.name().to_str() == Ok(name)))
            .unwrap_or(false);
        if !exists {
            return None;
        }
        Some(
            Self::ifaddrs()
                .into_iter()
                .filter(|(n, _, _)| n == name)
                .map(|(_, ip, _)| ip)
                .collect(),
        )
    }

    fn all_ipv4(&self) -> Vec<Ipv4Addr> {
        Self::ifaddrs()
            .into_iter()
            .filter(|(_, _, up)| *up)
            .map(|(_, ip, _)| ip)
            .collect()
    }

    fn read_file(&self, path: &Path, limit: u64) -> Result<Vec<u8>, FileError> {
        super::file::read_regular(path, limit)
    }

    fn check_file(&self, path: &Path, limit: u64) -> Result<(), FileError> {
        super::file::open_regular(path, limit).map(drop)
    }

    fn is_dir(&self, path: &Path) -> bool {
        std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
    }

    fn switches_users(&self) -> bool {
        nix::unistd::Uid::effective().is_root()
    }

    fn user_exists(&self, name: &str) -> bool {
        matches!(nix::unistd::User::from_name(name), Ok(Some(_)))
    }
}

/// A host described by value: for tests, and for checking a role file
/// meant for another machine.
#[derive(Debug, Clone, Default)]
pub struct StaticHost {
    /// Hostname.
    pub hostname: Option<String>,
    /// `(interface, IPv4)` pairs, in order.
    pub interfaces: Vec<(String, Ipv4Addr)>,
    /// Readable files and their contents.
    pub files: std::collections::BTreeMap<std::path::PathBuf, String>,
    /// Whether the supervisor runs as root (and so switches users).
    pub root: bool,
    /// The Unix users that exist.
    pub users: Vec<String>,
}

impl Host for StaticHost {
    fn hostname(&self) -> Option<String> {
        self.hostname.clone()
    }

    fn interface_ipv4(&self, name: &str) -> Option<Vec<Ipv4Addr>> {
        let ips: Vec<Ipv4Addr> = self
            .interfaces
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, ip)| *ip)
            .collect();
        (!ips.is_empty()).then_some(ips)
    }

    fn all_ipv4(&self) -> Vec<Ipv4Addr> {
        self.interfaces.iter().map(|(_, ip)| *ip).collect()
    }

    fn read_file(&self, path: &Path, limit: u64) -> Result<Vec<u8>, FileError> {
        let text = self
            .files
            .get(path)
            .ok_or_else(|| FileError::Open(io::Error::from(io::ErrorKind::NotFound)))?;
        if text.len() as u64 > limit {
            return Err(FileError::TooLarge { limit });
        }
        Ok(text.as_bytes().to_vec())
    }

    fn check_file(&self, path: &Path, limit: u64) -> Result<(), FileError> {
        self.read_file(path, limit).map(drop)
    }

    /// A directory here is one that holds one of [`StaticHost::files`].
    fn is_dir(&self, path: &Path) -> bool {
        self.files.keys().any(|f| f != path && f.starts_with(path))
    }

    fn switches_users(&self) -> bool {
        self.root
    }

    fn user_exists(&self, name: &str) -> bool {
        self.users.iter().any(|u| u == name)
    }
}

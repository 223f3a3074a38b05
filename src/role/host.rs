//! What loading a role file needs from the machine: its hostname, its
//! network interfaces and the key files the role names. Behind a trait so
//! tests can load role files without depending on the host they run on.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

/// The machine a role file is loaded on.
pub trait Host {
    /// The hostname, used as the default node name.
    fn hostname(&self) -> Option<String>;
    /// IPv4 addresses of interface `name` (`None` if there is no such
    /// interface).
    fn interface_ipv4(&self, name: &str) -> Option<Vec<Ipv4Addr>>;
    /// All IPv4 addresses of all interfaces that are up, in interface order.
    fn all_ipv4(&self) -> Vec<Ipv4Addr>;
    /// Reads a small text file (a gossip key).
    fn read_to_string(&self, path: &Path) -> io::Result<String>;
    /// Whether a file exists and can be opened for reading.
    fn check_readable(&self, path: &Path) -> io::Result<()>;
}

/// Whether `ip` is an RFC 1918 private IPv4 address (what `auto` picks).
pub fn is_private_v4(ip: Ipv4Addr) -> bool {
    ip.is_private()
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

    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn check_readable(&self, path: &Path) -> io::Result<()> {
        let f = std::fs::File::open(path)?;
        if f.metadata()?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                "is a directory",
            ));
        }
        Ok(())
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

    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    fn check_readable(&self, path: &Path) -> io::Result<()> {
        self.read_to_string(path).map(|_| ())
    }
}

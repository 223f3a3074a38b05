//! Where the fleet's supervisors are: a targets file, DNS, the Consul
//! catalog, or the mDNS announcements on one interface. Each source yields
//! [`Target`]s; [`dedup`] merges them.
//!
//! Reads files, asks DNS servers and Consul, and browses mDNS (sending only
//! queries, on the one interface it is given, for a bounded time); writes
//! nothing, announces nothing and polls nothing. Discovery's own mDNS
//! (announcing and joining) is not here.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{ResolveError, TokioResolver};
use serde::{Deserialize, Serialize};

use super::FleetError;
use crate::catalog::register::SERVICE_NAME;

/// The supervisor's default health port.
pub const DEFAULT_PORT: u16 = crate::paths::DEFAULT_HEALTH_PORT;
/// Largest targets file read.
pub const MAX_TARGETS_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Most targets one poll takes.
pub const MAX_TARGETS: usize = 200_000;
/// Longest host name or address accepted (DNS's limit).
const MAX_HOST_LEN: usize = 253;
/// Timeout of one Consul catalog request.
const CONSUL_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest Consul catalog answer read.
const MAX_CONSUL_BODY: usize = 64 * 1024 * 1024;
/// Most datacenters asked.
const MAX_DATACENTERS: usize = 1000;

/// One supervisor health endpoint to poll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// Host name or IP address.
    pub host: String,
    /// Health port.
    pub port: u16,
    /// Where it came from (`FILE:LINE`, `dns NAME`, `consul DC`).
    pub origin: String,
    /// The datacenter, when the source knows it (Consul does).
    pub datacenter: Option<String>,
}

impl Target {
    /// `host:port`, with brackets around an IPv6 address.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Parses `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address.
pub fn parse_target(text: &str, default_port: u16) -> Result<(String, u16), String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty target".into());
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let Some((h, after)) = rest.split_once(']') else {
            return Err(format!("`{text}`: missing `]`"));
        };
        let port = match after {
            "" => None,
            p => match p.strip_prefix(':') {
                Some(p) => Some(p),
                None => return Err(format!("`{text}`: expected `:PORT` after `]`")),
            },
        };
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("`{h}` is not an IPv6 address"));
        }
        (h, port)
    } else if text.matches(':').count() > 1 {
        if text.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!(
                "`{text}` is not an IPv6 address (write [ADDR]:PORT)"
            ));
        }
        (text, None)
    } else {
        match text.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        }
    };
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("`{p}` is not a port (1-65535)")),
        },
    };
    if host.parse::<IpAddr>().is_err() && !valid_hostname(host) {
        return Err(format!("`{host}` is not a host name or IP address"));
    }
    Ok((host.to_string(), port))
}

fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= MAX_HOST_LEN
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Parses a targets file's text: one `host[:port]` a line, `#` starts a
/// comment. Every bad line is reported, as `FILE:LINE: what`.
pub fn parse_targets(
    path: &Path,
    text: &str,
    default_port: u16,
) -> Result<Vec<Target>, FleetError> {
    let mut targets = Vec::new();
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let content = line.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        match parse_target(content, default_port) {
            Ok((host, port)) => targets.push(Target {
                host,
                port,
                origin: format!("{}:{line_no}", path.display()),
                datacenter: None,
            }),
            Err(e) => problems.push(format!("{}:{line_no}: {e}", path.display())),
        }
        if targets.len() > MAX_TARGETS {
            problems.push(format!(
                "{}:{line_no}: more than {MAX_TARGETS} targets",
                path.display()
            ));
            break;
        }
    }
    if problems.is_empty() {
        Ok(targets)
    } else {
        Err(FleetError::TargetLines {
            path: path.to_path_buf(),
            problems,
        })
    }
}

/// Reads and parses a targets file.
pub fn read_targets_file(path: &Path, default_port: u16) -> Result<Vec<Target>, FleetError> {
    use std::io::Read as _;
    let err = |source| FleetError::TargetFile {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(err)?;
    let mut bytes = Vec::new();
    file.take(MAX_TARGETS_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(err)?;
    if bytes.len() as u64 > MAX_TARGETS_FILE_BYTES {
        return Err(FleetError::TargetLines {
            path: path.to_path_buf(),
            problems: vec![format!(
                "{}: larger than {MAX_TARGETS_FILE_BYTES} bytes",
                path.display()
            )],
        });
    }
    let text = String::from_utf8(bytes).map_err(|_| FleetError::TargetLines {
        path: path.to_path_buf(),
        problems: vec![format!("{}: not UTF-8 text", path.display())],
    })?;
    parse_targets(path, &text, default_port)
}

/// A resolver asking `nameserver` (UDP, then TCP), or the system's
/// (`/etc/resolv.conf`) when none is given.
pub fn resolver(nameserver: Option<SocketAddr>) -> Result<TokioResolver, ResolveError> {
    match nameserver {
        Some(ns) => {
            let mut config = ResolverConfig::new();
            config.add_name_server(NameServerConfig::new(ns, Protocol::Udp));
            config.add_name_server(NameServerConfig::new(ns, Protocol::Tcp));
            let mut b =
                TokioResolver::builder_with_config(config, TokioConnectionProvider::default());
            b.options_mut().timeout = Duration::from_secs(2);
            b.options_mut().attempts = 2;
            Ok(b.build())
        }
        None => Ok(TokioResolver::builder_tokio()?.build()),
    }
}

/// Targets from DNS: a name starting with `_` is an SRV name (each record
/// one node, its target resolved to one address, its port used); any other
/// name's A and AAAA records are one node each at `default_port`.
pub async fn dns_targets(
    resolver: &TokioResolver,
    name: &str,
    default_port: u16,
) -> Result<Vec<Target>, FleetError> {
    let err = |source| FleetError::Dns {
        name: name.to_string(),
        source,
    };
    let origin = format!("dns {name}");
    let mut out = Vec::new();
    if name.starts_with('_') {
        let srv = resolver.srv_lookup(name).await.map_err(err)?;
        for record in srv.iter().take(MAX_TARGETS) {
            let target = record.target().to_utf8();
            let host = target.trim_end_matches('.').to_string();
            let ip = resolver
                .lookup_ip(target.as_str())
                .await
                .ok()
                .and_then(|l| l.iter().next());
            out.push(Target {
                host: ip.map_or(host, |ip| ip.to_string()),
                port: record.port(),
                origin: origin.clone(),
                datacenter: None,
            });
        }
    } else {
        let ips = resolver.lookup_ip(name).await.map_err(err)?;
        for ip in ips.iter().take(MAX_TARGETS) {
            out.push(Target {
                host: ip.to_string(),
                port: default_port,
                origin: origin.clone(),
                datacenter: None,
            });
        }
    }
    Ok(out)
}

/// One entry of `/v1/catalog/service/:name`.
#[derive(Debug, Deserialize)]
struct CatalogEntry {
    #[serde(rename = "Node", default)]
    node: String,
    #[serde(rename = "Address", default)]
    address: String,
    #[serde(rename = "Datacenter", default)]
    datacenter: Option<String>,
    #[serde(rename = "ServiceAddress", default)]
    service_address: String,
    #[serde(rename = "ServicePort", default)]
    service_port: u16,
}

/// Targets from the Consul catalog at `url` (`http(s)://host:port`): the
/// `hashi-supervisor` service in every datacenter `/v1/catalog/datacenters`
/// lists, with `token` as the ACL token when given.
pub async fn consul_targets(url: &str, token: Option<&str>) -> Result<Vec<Target>, FleetError> {
    let base = url.trim_end_matches('/').to_string();
    let fail = |reason: String| FleetError::Consul {
        url: base.clone(),
        reason,
    };
    // No proxy from the environment, as for every agent API call
    // (`agent::transport`): Consul is asked directly.
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(CONSUL_TIMEOUT)
        .build()
        .map_err(|e| fail(format!("failed to build an HTTP client: {e}")))?;
    let get = |path: String| {
        let mut req = client.get(format!("{base}{path}"));
        if let Some(t) = token {
            req = req.header("X-Consul-Token", t);
        }
        req
    };
    let dcs: Vec<String> = fetch_json(get("/v1/catalog/datacenters".into()))
        .await
        .map_err(|e| fail(format!("/v1/catalog/datacenters: {e}")))?;
    let mut out = Vec::new();
    for dc in dcs.iter().take(MAX_DATACENTERS) {
        let path = format!(
            "/v1/catalog/service/{SERVICE_NAME}?dc={}",
            dc.bytes()
                .map(|b| if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                })
                .collect::<String>()
        );
        let entries: Vec<CatalogEntry> = fetch_json(get(path.clone()))
            .await
            .map_err(|e| fail(format!("{path}: {e}")))?;
        for e in entries {
            let host = if e.service_address.is_empty() {
                e.address
            } else {
                e.service_address
            };
            let port = if e.service_port == 0 {
                DEFAULT_PORT
            } else {
                e.service_port
            };
            let Ok((host, port)) = parse_target(&host, port).map(|(h, _)| (h, port)) else {
                continue;
            };
            out.push(Target {
                host,
                port,
                origin: format!("consul {dc} node {}", super::status::clean(&e.node, 64)),
                datacenter: Some(e.datacenter.unwrap_or_else(|| dc.clone())),
            });
            if out.len() >= MAX_TARGETS {
                return Ok(out);
            }
        }
    }
    Ok(out)
}

async fn fetch_json<T: for<'de> Deserialize<'de>>(
    req: reqwest::RequestBuilder,
) -> Result<T, String> {
    let mut resp = req.send().await.map_err(|e| error_chain(&e))?;
    let status = resp.status();
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| error_chain(&e))? {
        if body.len() + chunk.len() > MAX_CONSUL_BODY {
            return Err(format!("answer larger than {MAX_CONSUL_BODY} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body);
        return Err(format!(
            "HTTP {}: {}",
            status.as_u16(),
            super::status::clean(&text, 200)
        ));
    }
    serde_json::from_slice(&body).map_err(|e| format!("not the expected JSON: {e}"))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// The service type the supervisors announce (the discovery contract).
pub const MDNS_SERVICE: &str = "_hashi-sup._tcp.local.";
/// How long an mDNS browse listens for announcements.
pub const MDNS_BROWSE: Duration = Duration::from_secs(3);

/// Targets from the mDNS announcements heard on `interface` within `wait`:
/// one per announced instance (`v=1`), at its first IPv4 address (else its
/// first address) and announced port, with its `dc` TXT key as datacenter.
pub async fn mdns_targets(interface: &str, wait: Duration) -> Result<Vec<Target>, FleetError> {
    use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent};
    let fail = |what: &str, e: mdns_sd::Error| FleetError::Mdns {
        interface: interface.to_string(),
        reason: format!("{what}: {e}"),
    };
    let daemon = ServiceDaemon::new().map_err(|e| fail("start the mDNS daemon", e))?;
    let browse = async {
        daemon
            .disable_interface(IfKind::All)
            .map_err(|e| fail("leave the other interfaces", e))?;
        daemon
            .enable_interface(IfKind::Name(interface.to_string()))
            .map_err(|e| fail("use the interface", e))?;
        let events = daemon.browse(MDNS_SERVICE).map_err(|e| fail("browse", e))?;
        let deadline = tokio::time::Instant::now() + wait;
        let mut out: Vec<Target> = Vec::new();
        while let Ok(Ok(event)) = tokio::time::timeout_at(deadline, events.recv_async()).await {
            let ServiceEvent::ServiceResolved(s) = event else {
                continue;
            };
            if s.get_property_val_str("v") != Some("1") || s.port == 0 {
                continue;
            }
            let mut ips: Vec<IpAddr> = s.addresses.iter().map(|a| a.to_ip_addr()).collect();
            ips.sort_by_key(|ip| (!ip.is_ipv4(), *ip));
            let Some(ip) = ips.first() else { continue };
            let node = super::status::clean(s.fullname.split('.').next().unwrap_or(""), 64);
            out.retain(|t| !t.origin.ends_with(&format!(" {node}")));
            out.push(Target {
                host: ip.to_string(),
                port: s.port,
                origin: format!("mdns {interface} {node}"),
                datacenter: s
                    .get_property_val_str("dc")
                    .map(|dc| super::status::clean(dc, 64)),
            });
            if out.len() >= MAX_TARGETS {
                break;
            }
        }
        Ok(out)
    }
    .await;
    let _ = daemon.shutdown();
    browse
}

/// Drops repeated endpoints (same `host:port`), keeping the first.
pub fn dedup(targets: Vec<Target>) -> Vec<Target> {
    let mut seen = HashSet::new();
    targets
        .into_iter()
        .filter(|t| seen.insert(t.authority()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_ports_and_ipv6() {
        assert_eq!(
            parse_target("10.0.0.1", 4680).unwrap(),
            ("10.0.0.1".into(), 4680)
        );
        assert_eq!(
            parse_target("node-1.example:99", 4680).unwrap(),
            ("node-1.example".into(), 99)
        );
        assert_eq!(parse_target("[::1]:5", 4680).unwrap(), ("::1".into(), 5));
        assert_eq!(parse_target("[::1]", 4680).unwrap(), ("::1".into(), 4680));
        assert_eq!(
            parse_target("fe80::1", 4680).unwrap(),
            ("fe80::1".into(), 4680)
        );
        for bad in [
            "a:0", "a:70000", "a:x", "[::1", "[nope]:1", "a b", "x..y", ":1", "1:2:3",
        ] {
            assert!(parse_target(bad, 4680).is_err(), "{bad}");
        }
    }

    #[test]
    fn targets_file_reports_every_bad_line_with_file_and_line() {
        let text = "# fleet\n10.0.0.1\n\nnode-2:4681 # comment\nbad host\n[::1]:0\n";
        let err = parse_targets(Path::new("t.txt"), text, 4680).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("t.txt:5:"), "{msg}");
        assert!(msg.contains("t.txt:6:"), "{msg}");
        let ok =
            parse_targets(Path::new("t.txt"), "# x\n10.0.0.1\nnode-2:4681 # c\n", 4680).unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[1].authority(), "node-2:4681");
        assert_eq!(ok[1].origin, "t.txt:3");
    }

    #[test]
    fn dedup_keeps_first() {
        let t = |h: &str, o: &str| Target {
            host: h.into(),
            port: 1,
            origin: o.into(),
            datacenter: None,
        };
        let d = dedup(vec![t("a", "1"), t("b", "2"), t("a", "3")]);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].origin, "1");
    }
}

//! The DNS provider: the names of `[discovery.dns]` resolved with
//! hickory-resolver (the role's nameserver, else the system's resolver
//! configuration), again every `interval`, and after a failure with a
//! backoff from 1 s doubling up to the interval. A name starting with `_`
//! is an SRV name (its targets resolved, its ports kept), any other an
//! A/AAAA name. Each query is bounded by [`QUERY_TIMEOUT`]; a failure is
//! counted (`dns`) and shown as a warning, and the name's last good answer
//! is kept. Asks only the configured resolver; sends nothing else.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use tokio_util::sync::CancellationToken;

use crate::peers::{PeerKind, Source};
use crate::role::{DnsDiscovery, NodeRole, names};

use super::backoff::Backoff;
use super::merge::Found;
use super::statics::CONSUL_HTTP_PORT;
use super::{Shared, State, record};

/// Timeout of one DNS query.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Most addresses kept from one name.
pub const MAX_ADDRESSES: usize = 32;
/// Most SRV targets resolved for one name.
pub const MAX_SRV_TARGETS: usize = 16;
/// Shortest interval (a smaller configured one is raised to it).
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// What a configured name stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NameKind {
    /// `consul_servers`: Consul servers of this datacenter (LAN joins and
    /// Consul choice candidates; an SRV port is their HTTP port).
    ConsulServers,
    /// `consul_wan`: Consul servers of other datacenters.
    ConsulWan,
    /// `nomad_servers`: Nomad servers.
    NomadServers,
}

impl NameKind {
    fn key(self) -> &'static str {
        match self {
            NameKind::ConsulServers => "consul_servers",
            NameKind::ConsulWan => "consul_wan",
            NameKind::NomadServers => "nomad_servers",
        }
    }
}

/// The configured names with their kinds, in order.
pub fn names(dns: &DnsDiscovery) -> Vec<(NameKind, String)> {
    let mut out = Vec::new();
    for (kind, list) in [
        (NameKind::ConsulServers, &dns.consul_servers),
        (NameKind::ConsulWan, &dns.consul_wan),
        (NameKind::NomadServers, &dns.nomad_servers),
    ] {
        for n in list {
            out.push((kind, n.clone()));
        }
    }
    out
}

/// The state key of a name of a kind.
pub fn key(kind: NameKind, name: &str) -> String {
    format!("{}:{name}", kind.key())
}

/// A resolver for `dns`: its nameserver (UDP, then TCP) or the system's
/// configuration, one attempt per query of [`QUERY_TIMEOUT`].
pub fn resolver(dns: &DnsDiscovery) -> Result<TokioResolver, String> {
    let mut b = match dns.nameserver {
        Some(ns) => {
            let mut cfg = ResolverConfig::new();
            cfg.add_name_server(NameServerConfig::new(ns, Protocol::Udp));
            cfg.add_name_server(NameServerConfig::new(ns, Protocol::Tcp));
            let mut b = TokioResolver::builder_with_config(cfg, TokioConnectionProvider::default());
            b.options_mut().use_hosts_file = ResolveHosts::Never;
            b
        }
        None => TokioResolver::builder_tokio()
            .map_err(|e| format!("cannot read the system's resolver configuration: {e}"))?,
    };
    let o = b.options_mut();
    o.timeout = QUERY_TIMEOUT;
    o.attempts = 1;
    // Every pass asks the server: no answer outlives a second here.
    o.positive_max_ttl = Some(Duration::from_secs(1));
    o.negative_max_ttl = Some(Duration::from_secs(1));
    Ok(b.build())
}

/// The addresses of `name` (`host:port` for an SRV name) in a stable
/// order, or why not.
pub async fn lookup(r: &TokioResolver, name: &str) -> Result<Vec<(IpAddr, Option<u16>)>, String> {
    let mut out = Vec::new();
    if names::is_srv_name(name) {
        let srv = r.srv_lookup(name).await.map_err(|e| e.to_string())?;
        let mut targets: Vec<(u16, String)> = srv
            .iter()
            .map(|s| (s.port(), s.target().to_ascii()))
            .collect();
        targets.sort();
        targets.dedup();
        targets.truncate(MAX_SRV_TARGETS);
        for (port, target) in targets {
            // A target that is an address needs no lookup.
            if let Ok(ip) = target.trim_end_matches('.').parse::<IpAddr>() {
                out.push((ip, Some(port)));
                continue;
            }
            let ips = r
                .lookup_ip(target.as_str())
                .await
                .map_err(|e| format!("SRV target {target}: {e}"))?;
            out.extend(ips.iter().map(|ip| (ip, Some(port))));
        }
    } else {
        let ips = r.lookup_ip(name).await.map_err(|e| e.to_string())?;
        out.extend(ips.iter().map(|ip| (ip, None)));
    }
    let answered = out.len();
    out.retain(|&(ip, port)| usable(ip, port));
    out.sort();
    out.dedup();
    out.truncate(MAX_ADDRESSES);
    if out.is_empty() {
        return Err(if answered == 0 {
            "no address records".into()
        } else {
            format!(
                "{answered} answer(s), none usable (loopback, unspecified, multicast or port 0)"
            )
        });
    }
    Ok(out)
}

/// Whether a DNS answer can be a peer: the same rule announcements follow
/// (no loopback, unspecified, multicast or broadcast address, no port 0),
/// so a sinkholed or parked name never becomes a join target or a Consul
/// candidate.
fn usable(ip: IpAddr, port: Option<u16>) -> bool {
    let addr_ok = match ip {
        IpAddr::V4(v4) => {
            !(v4.is_loopback() || v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast())
        }
        IpAddr::V6(v6) => !(v6.is_loopback() || v6.is_unspecified() || v6.is_multicast()),
    };
    addr_ok && port != Some(0)
}

/// What the addresses of a name of `kind` are, found `now`.
pub fn found(kind: NameKind, addrs: &[(IpAddr, Option<u16>)], now: SystemTime) -> Vec<Found> {
    addrs
        .iter()
        .map(|&(ip, port)| {
            let with = |p: u16| std::net::SocketAddr::new(ip, p).to_string();
            match kind {
                NameKind::ConsulServers => Found {
                    record: record(ip.to_string(), PeerKind::ConsulServer, Source::Dns, now),
                    consul_http: Some(with(port.unwrap_or(CONSUL_HTTP_PORT))),
                    join: true,
                },
                NameKind::ConsulWan | NameKind::NomadServers => {
                    let kind = if kind == NameKind::ConsulWan {
                        PeerKind::ConsulWan
                    } else {
                        PeerKind::NomadServer
                    };
                    let address = port.map(with).unwrap_or_else(|| ip.to_string());
                    Found {
                        record: record(address, kind, Source::Dns, now),
                        consul_http: None,
                        join: true,
                    }
                }
            }
        })
        .collect()
}

/// One pass's outcome per name.
pub type Outcome = Vec<(NameKind, String, Result<Vec<Found>, String>)>;

/// Resolves every name of `dns` once, all at once; each name bounded.
pub async fn pass(r: &TokioResolver, dns: &DnsDiscovery) -> Outcome {
    let names = names(dns);
    let each = names.into_iter().map(|(kind, name)| async move {
        // An SRV name is one query plus one per target: bound the whole.
        let bound = QUERY_TIMEOUT * 3;
        let res = match tokio::time::timeout(bound, lookup(r, &name)).await {
            Ok(Ok(addrs)) => Ok(found(kind, &addrs, SystemTime::now())),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("no answer within {} s", bound.as_secs())),
        };
        (kind, name, res)
    });
    futures_util::future::join_all(each).await
}

/// Where a role's names are asked, for warnings.
fn server_of(dns: &DnsDiscovery) -> String {
    dns.nameserver
        .map(|n| n.to_string())
        .unwrap_or_else(|| "the system resolver".into())
}

/// Applies one pass's outcome: a good answer replaces the name's last one
/// (and the last run's DNS seeds go); a failure is counted and warned and
/// the last good answer kept. Returns whether anything failed.
pub(crate) fn apply(state: &mut State, out: Outcome) -> bool {
    let server = state
        .node
        .role
        .discovery
        .dns
        .as_ref()
        .map(server_of)
        .unwrap_or_default();
    let mut failed = false;
    for (kind, name, res) in out {
        match res {
            Ok(f) => {
                state.cached.retain(|c| c.record.source != Source::Dns);
                state.dns.insert(key(kind, &name), f);
            }
            Err(why) => {
                failed = true;
                state.count_error("dns");
                state.warn(
                    &format!("dns {name}"),
                    format!("DNS {name} (asked {server}): {why}"),
                );
            }
        }
    }
    failed
}

/// A one-off pass for `check`: every name of `role` once, within `within`.
pub async fn resolve_all(role: &NodeRole, within: Duration) -> Result<Outcome, String> {
    let Some(dns) = &role.discovery.dns else {
        return Ok(Vec::new());
    };
    let r = resolver(dns)?;
    match tokio::time::timeout(within, pass(&r, dns)).await {
        Ok(o) => Ok(o),
        Err(_) => Ok(names(dns)
            .into_iter()
            .map(|(k, n)| {
                (
                    k,
                    n,
                    Err(format!("no answer within {} ms", within.as_millis())),
                )
            })
            .collect()),
    }
}

/// Keeps the names resolved while the role has `[discovery.dns]`: a pass
/// every interval, after a failure with backoff; a role change applies at
/// once. Ends on `cancel`.
pub(crate) async fn run(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut nodes = shared.node_tx.subscribe();
    loop {
        let dns = shared.node().role.discovery.dns.clone();
        // Forget names the role no longer has.
        let keep: Vec<String> = dns
            .as_ref()
            .map(|d| names(d).iter().map(|(k, n)| key(*k, n)).collect())
            .unwrap_or_default();
        let on = dns.is_some();
        shared.update(|s| {
            s.dns.retain(|k, _| keep.contains(k));
            if !on {
                // DNS is off: its seeds of the last run cannot be confirmed.
                s.cached.retain(|c| c.record.source != Source::Dns);
            }
        });
        let Some(dns) = dns else {
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = nodes.changed() => if r.is_err() { return },
            }
            continue;
        };
        let interval = dns.interval.max(MIN_INTERVAL);
        let mut backoff = Backoff::new(interval);
        let mut current: Option<TokioResolver> = None;
        // Passes until the role changes.
        loop {
            if current.is_none() {
                match resolver(&dns) {
                    Ok(r) => current = Some(r),
                    Err(why) => shared.update(|s| {
                        s.count_error("dns");
                        s.warn("dns resolver", format!("DNS discovery is off: {why}"));
                    }),
                }
            }
            let wait = match &current {
                Some(r) => {
                    let out = tokio::select! {
                        _ = cancel.cancelled() => return,
                        o = pass(r, &dns) => o,
                    };
                    if shared.update(|s| apply(s, out)) {
                        backoff.fail()
                    } else {
                        backoff.reset();
                        interval
                    }
                }
                // Asked again (the system's configuration may appear).
                None => backoff.fail(),
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                r = nodes.changed() => {
                    if r.is_err() { return }
                    let changed = nodes.borrow_and_update().role.discovery.dns != Some(dns.clone());
                    if changed { break }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn sinkholed_and_portless_answers_are_not_peers() {
        let ip = |t: &str| t.parse::<IpAddr>().unwrap();
        assert!(usable(ip("10.0.1.11"), Some(8500)));
        assert!(usable(ip("fd00::11"), None));
        for bad in [
            "127.0.0.1",
            "0.0.0.0",
            "224.0.0.251",
            "255.255.255.255",
            "::1",
            "::",
            "ff02::fb",
        ] {
            assert!(!usable(ip(bad), None), "{bad}");
        }
        assert!(!usable(ip("10.0.1.11"), Some(0)));
    }

    #[test]
    fn a_and_srv_answers_become_records_of_their_kind() {
        let ip: IpAddr = "10.0.1.11".parse().unwrap();
        let t = SystemTime::UNIX_EPOCH;
        let a = found(NameKind::ConsulServers, &[(ip, None)], t);
        assert_eq!(a[0].record.address, "10.0.1.11");
        assert_eq!(a[0].record.kind, PeerKind::ConsulServer);
        assert_eq!(a[0].consul_http.as_deref(), Some("10.0.1.11:8500"));
        let srv = found(NameKind::ConsulServers, &[(ip, Some(8501))], t);
        assert_eq!(srv[0].record.address, "10.0.1.11");
        assert_eq!(srv[0].consul_http.as_deref(), Some("10.0.1.11:8501"));
        let wan = found(NameKind::ConsulWan, &[(ip, Some(8302))], t);
        assert_eq!(wan[0].record.address, "10.0.1.11:8302");
        assert_eq!(wan[0].record.kind, PeerKind::ConsulWan);
        let nomad = found(NameKind::NomadServers, &[(ip, None)], t);
        assert_eq!(nomad[0].record.address, "10.0.1.11");
        assert_eq!(nomad[0].record.kind, PeerKind::NomadServer);
        assert!(
            nomad
                .iter()
                .all(|f| f.record.source == Source::Dns && f.join)
        );
    }

    #[test]
    fn names_keep_their_kind_and_keys_do_not_collide() {
        let d = DnsDiscovery {
            nameserver: None,
            consul_servers: vec!["consul.ams2.example".into()],
            consul_wan: vec!["_consul-wan._tcp.example".into()],
            nomad_servers: vec!["consul.ams2.example".into()],
            interval: Duration::from_secs(30),
        };
        let n = names(&d);
        assert_eq!(n.len(), 3);
        assert_ne!(key(n[0].0, &n[0].1), key(n[2].0, &n[2].1));
    }
}

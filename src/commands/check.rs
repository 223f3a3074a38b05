//! `supervisor check`: validate the role file and print the resolved plan.
//! It runs exactly what `run` runs before starting anything
//! ([`super::load`], then rendering in memory).
//!
//! Its "Discovery" section says where every peer value of the rendered
//! configs comes from (Consul `retry_join` and `retry_join_wan`, Nomad's
//! `consul.address` and `server_join`), which providers are on, and, when
//! the role leaves something to discovery, runs one bounded pass
//! (`catalog::discovery::probe`, `--discover-secs`, 3 s by default) and
//! prints what it found, or exactly what is missing. Missing items make
//! the exit 1 (the node would wait) only when `--discover-secs` was given:
//! the packaged unit runs `check` before every start and reload, and a
//! node that waits for discovery must still start (`run` waits, observable
//! on `/ready`).

use std::io::Write;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::catalog::discovery;
use crate::cli::{CheckArgs, GlobalArgs};
use crate::error::{EXIT_FAILURE, Error};
use crate::peers::{DiscoveryReport, PeerKind, PeerRecord};
use crate::plan::Plan;
use crate::render::{self, RenderedFile};
use crate::role::NodeRole;

/// Runs `supervisor check`.
pub async fn run(global: &GlobalArgs, args: &CheckArgs) -> Result<u8, Error> {
    let super::Loaded { role, plan, .. } = super::load(global)?;
    // Rendering can still refuse a pass-through block: part of the check.
    render::render_plan(&plan)?;
    let strict = args.discover_secs.is_some();
    let secs = args.discover_secs.unwrap_or(DEFAULT_DISCOVER_SECS);
    let section = discovery_section(&role, Duration::from_secs(secs), strict).await;
    // What `run` would render once discovery found what the probe found.
    let plan = section.plan.clone();
    let files = render::render_plan(&plan)?;
    // Only an asked-for probe that ran fails on what is missing.
    let code = if strict && section.doc.probe.is_some() && !section.doc.missing.is_empty() {
        EXIT_FAILURE
    } else {
        0
    };
    let upgrades = upgrade_docs(&plan).await;
    let mut out = std::io::stdout().lock();
    let text = if args.json {
        let doc = serde_json::json!({
            "upgrades": upgrades,
            "role_file": role.source.as_ref().map(|p| p.display().to_string()),
            "plan": plan,
            "files": files.iter().map(|f| f.path.display().to_string()).collect::<Vec<_>>(),
            "discovery": section.doc,
            "security": security_doc(&role, SystemTime::now()),
        });
        let mut s = serde_json::to_string_pretty(&doc)
            .map_err(|e| Error::Internal(format!("failed to encode the plan: {e}")))?;
        s.push('\n');
        s
    } else {
        // The section goes before the verdict line, which stays last.
        let mut s = summary(&role, &plan, &files);
        let verdict = s.rfind("role file is valid\n").unwrap_or(s.len());
        s.insert_str(verdict, &upgrade_text(&upgrades));
        let verdict = s.rfind("role file is valid\n").unwrap_or(s.len());
        s.insert_str(verdict, &discovery_text(&section.doc));
        let verdict = s.rfind("role file is valid\n").unwrap_or(s.len());
        s.insert_str(
            verdict,
            &security_text(&security_doc(&role, SystemTime::now())),
        );
        s
    };
    out.write_all(text.as_bytes())
        .map_err(|e| Error::io("write to stdout", e))?;
    Ok(code)
}

/// How long `check` asks the mirror what a version spec resolves to.
const RESOLVE_WITHIN: Duration = Duration::from_secs(3);
/// How long `check` asks the running supervisor what its upgrades wait for.
const ASK_RUNNING_WITHIN: Duration = Duration::from_secs(2);

/// Per agent: installed X (pinned), wanted Y (the spec resolved against the
/// mirror now, bounded; unknown offline), and what the running supervisor
/// says its upgrade waits for (when one runs and answers).
async fn upgrade_docs(plan: &Plan) -> Vec<(String, crate::supervise::status::UpgradeStatus)> {
    let running = {
        let mut a = plan.health_listen;
        if a.ip().is_unspecified() {
            a.set_ip(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
        }
        tokio::time::timeout(ASK_RUNNING_WITHIN, super::status::fetch_status(a))
            .await
            .ok()
            .and_then(Result::ok)
            .map(|(doc, _)| doc)
    };
    // One quick look: no retries, every agent at once.
    let opts = crate::release::FetchOptions {
        connect_timeout: RESOLVE_WITHIN,
        read_timeout: RESOLVE_WITHIN,
        retry: crate::release::RetryPolicy {
            retries: 0,
            ..crate::release::FetchOptions::default().retry
        },
        arch: None,
    };
    let resolved = futures_util::future::join_all(plan.agents.iter().map(|a| {
        tokio::time::timeout(
            RESOLVE_WITHIN,
            crate::release::resolve(&plan.release, a.product, &a.version, &opts),
        )
    }))
    .await;
    let mut out = Vec::new();
    for (a, resolved) in plan.agents.iter().zip(resolved) {
        let installed = crate::release::pinned(&plan.release.releases_dir, a.product)
            .map(|i| i.version.to_string());
        let wanted = match resolved {
            Ok(Ok(v)) => Ok(v.to_string()),
            Ok(Err(e)) => Err(crate::supervise::daemon::error_chain(&e)),
            Err(_) => Err(format!(
                "the mirror did not answer within {}s",
                RESOLVE_WITHIN.as_secs()
            )),
        };
        let live = running
            .as_ref()
            .and_then(|d| d.agents.iter().find(|x| x.agent == a.product.as_str()))
            .and_then(|x| x.upgrade.clone());
        let waiting_for = match (&wanted, &live) {
            (_, Some(l)) => l.waiting_for.clone(),
            (Err(e), None) => Some(format!("the wanted version is unknown: {e}")),
            (Ok(w), None) if installed.as_deref() != Some(w.as_str()) && installed.is_some() => {
                Some(
                    "the upgrade gate (the running supervisor takes it after a start or SIGHUP)"
                        .into(),
                )
            }
            _ => None,
        };
        out.push((
            a.product.to_string(),
            crate::supervise::status::UpgradeStatus {
                installed,
                wanted: wanted.ok(),
                waiting_for,
                paused: live.and_then(|l| l.paused),
            },
        ));
    }
    out
}

/// The "Upgrades" section of `check`.
fn upgrade_text(list: &[(String, crate::supervise::status::UpgradeStatus)]) -> String {
    let mut s = String::new();
    for (agent, u) in list {
        s.push_str(&format!("upgrade:    {agent}: {}\n", u.summary()));
    }
    s
}

/// How long `check` looks for peers without `--discover-secs`.
pub const DEFAULT_DISCOVER_SECS: u64 = 3;

/// The discovery part of `check`: the document, and the plan built with
/// what the probe found.
struct Section {
    doc: DiscoveryDoc,
    plan: Plan,
}

/// The "Discovery" section as `--json` carries it.
#[derive(Debug, Clone, Serialize)]
pub struct DiscoveryDoc {
    /// Which providers run and with what.
    pub providers: Providers,
    /// Each destination of the rendered configs, its values and sources.
    pub destinations: Vec<Destination>,
    /// The bounded pass, when the role leaves something to discovery and
    /// `--discover-secs` is not 0.
    pub probe: Option<Probe>,
    /// What `run` would wait for (empty: it would start at once); without
    /// a probe, what the role leaves to discovery.
    pub missing: Vec<String>,
    /// Whether what is missing fails the check (`--discover-secs` given).
    pub strict: bool,
}

/// Providers on and off.
#[derive(Debug, Clone, Serialize)]
pub struct Providers {
    /// The role file's own lists (always on).
    pub r#static: bool,
    /// mDNS: `on eth0 (10.0.1.21)`, or `off (...)` and why.
    pub mdns: String,
    /// Whether mDNS runs.
    pub mdns_on: bool,
    /// The DNS names asked, and of which nameserver.
    pub dns: Option<DnsProvider>,
    /// Cloud auto-join strings, passed to the agents as written.
    pub cloud: Vec<String>,
}

/// `[discovery.dns]` as `check` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DnsProvider {
    /// `ip:port`, or `system` (`/etc/resolv.conf`).
    pub nameserver: String,
    /// Consul servers of this datacenter.
    pub consul_servers: Vec<String>,
    /// Consul servers of other datacenters.
    pub consul_wan: Vec<String>,
    /// Nomad servers.
    pub nomad_servers: Vec<String>,
    /// Re-resolved every this many seconds.
    pub interval_secs: u64,
}

/// One destination of the rendered configs.
#[derive(Debug, Clone, Serialize)]
pub struct Destination {
    /// `consul retry_join`, `consul retry_join_wan`, `nomad consul.address`,
    /// `nomad server_join`.
    pub name: String,
    /// Its values in rendered order, each with where it came from.
    pub values: Vec<Sourced>,
}

/// A value and where it came from.
#[derive(Debug, Clone, Serialize)]
pub struct Sourced {
    /// The value as rendered.
    pub value: String,
    /// `static`, `cloud`, `dns`, `mdns`, `local` (this node's own agent).
    pub source: String,
}

/// What the bounded pass found.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    /// How long it browsed.
    pub within_secs: u64,
    /// Every peer found, with its source.
    pub peers: Vec<PeerRecord>,
    /// The identity it would learn.
    pub learned: crate::peers::Learned,
    /// Its problems.
    pub problems: Vec<String>,
    /// Its warnings.
    pub warnings: Vec<String>,
}

/// Whether the role leaves anything to discovery: a provider beyond the
/// role's own lists, an identity to learn, the choice of a healthy Consul
/// server (a Nomad without a local Consul), or something missing without
/// one.
fn leaves_to_discovery(role: &NodeRole) -> bool {
    (role.roles.is_nomad() && !role.roles.is_consul())
        || role.discovery.mdns
        || role.discovery.dns.is_some()
        || role.learnable.region
        || role.learnable.datacenter
        || !discovery::missing(role, &DiscoveryReport::default()).is_empty()
}

async fn discovery_section(role: &NodeRole, within: Duration, strict: bool) -> Section {
    let (report, probe) = if !within.is_zero() && leaves_to_discovery(role) {
        let r = discovery::probe(role, within).await;
        let p = Probe {
            within_secs: within.as_secs(),
            peers: r.records.clone(),
            learned: r.learned.clone(),
            problems: r.problems.clone(),
            warnings: r.warnings.clone(),
        };
        (r, Some(p))
    } else {
        (DiscoveryReport::default(), None)
    };
    let missing = discovery::missing(role, &report);
    let mut learned = role.clone();
    learned.learn(
        report.learned.region.as_deref(),
        report.learned.datacenter.as_deref(),
    );
    let plan = Plan::build(&learned, &report.peers);
    Section {
        doc: DiscoveryDoc {
            providers: providers(role),
            destinations: destinations(role, &plan, &report),
            probe,
            missing,
            strict,
        },
        plan,
    }
}

fn providers(role: &NodeRole) -> Providers {
    let private = role.addresses.private;
    let mdns = if !role.discovery.mdns {
        "off (discovery.mdns = false)".to_string()
    } else if private.is_loopback() || private.is_unspecified() {
        format!("off ({private} is not a LAN address)")
    } else {
        match discovery::mdns::interface_of(role) {
            Some((i, ip)) => format!("on {i} ({ip})"),
            None => format!("off (no interface holds {private})"),
        }
    };
    Providers {
        r#static: true,
        mdns_on: mdns.starts_with("on "),
        mdns,
        dns: role.discovery.dns.as_ref().map(|d| DnsProvider {
            nameserver: d
                .nameserver
                .map_or_else(|| "system".to_string(), |n| n.to_string()),
            consul_servers: d.consul_servers.clone(),
            consul_wan: d.consul_wan.clone(),
            nomad_servers: d.nomad_servers.clone(),
            interval_secs: d.interval.as_secs(),
        }),
        cloud: role
            .discovery
            .cloud_auto_join
            .iter()
            .map(|c| crate::role::redact_cloud_auto_join(c))
            .collect(),
    }
}

/// The "Security" section: how the node is secured, never a secret (the
/// join token is only said to be there).
#[derive(Debug, Clone, Serialize)]
pub struct SecurityDoc {
    /// `plaintext` (on purpose), `cluster` (the cluster's material),
    /// `joining` (a join token, no material yet), `own` (the operator's
    /// own TLS and gossip files), `dev` (a single node on loopback).
    pub mode: &'static str,
    /// `[security] plaintext = true`.
    pub plaintext: bool,
    /// The cluster CA's pin (`sha256:<hex>`), with material.
    pub ca_sha256: Option<String>,
    /// DNS names of the node certificate.
    pub cert_names: Vec<String>,
    /// IP addresses of the node certificate.
    pub cert_ips: Vec<String>,
    /// Certificate expiry, Unix seconds.
    pub cert_not_after: Option<u64>,
    /// Certificate expiry, `YYYY-MM-DD` (UTC).
    pub cert_expires: Option<String>,
    /// Whole days until the certificate expires (negative: expired).
    pub cert_days_left: Option<i64>,
    /// Renewed when fewer days than this are left.
    pub renew_before_days: u64,
    /// Whether the cluster runs ACLs (default deny).
    pub acl: bool,
    /// Whether this node holds the cluster CA (and serves joins).
    pub ca_holder: bool,
    /// Where it serves joins, when it holds the CA.
    pub join_listen: Option<String>,
    /// Whether a join token is configured (never its value).
    pub join_token: bool,
    /// `[security] join` endpoints.
    pub join: Vec<String>,
}

/// Seconds in a day.
const DAY_SECS: u64 = 86_400;

/// The security section of `role` at `now`.
pub fn security_doc(role: &NodeRole, now: SystemTime) -> SecurityDoc {
    let sec = &role.security;
    let m = sec.material.as_ref();
    let mode = if role.roles.dev {
        "dev"
    } else if m.is_some() {
        "cluster"
    } else if sec.plaintext {
        "plaintext"
    } else if sec.join_token.is_some() {
        "joining"
    } else {
        "own"
    };
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let not_after = m.map(|m| m.secrets.not_after);
    SecurityDoc {
        mode,
        plaintext: sec.plaintext,
        ca_sha256: m.map(|m| m.secrets.ca_sha256.clone()),
        cert_names: m.map(|m| m.secrets.names.clone()).unwrap_or_default(),
        cert_ips: m
            .map(|m| m.secrets.ips.iter().map(ToString::to_string).collect())
            .unwrap_or_default(),
        cert_not_after: not_after,
        cert_expires: not_after.map(utc_date),
        cert_days_left: not_after.map(|t| {
            let left = i128::from(t) - i128::from(now);
            i64::try_from(left.div_euclid(i128::from(DAY_SECS))).unwrap_or(i64::MIN)
        }),
        renew_before_days: sec.renew_before.as_secs() / DAY_SECS,
        acl: m.is_some_and(|m| m.secrets.acl_enabled),
        ca_holder: sec.ca_holder,
        join_listen: sec.ca_holder.then(|| sec.join_listen.to_string()),
        join_token: sec.join_token.is_some(),
        join: sec.join.clone(),
    }
}

/// `YYYY-MM-DD` (UTC) of Unix seconds `t` (the proleptic Gregorian
/// calendar; days-from-civil inverted as in Howard Hinnant's `civil_from_days`).
fn utc_date(t: u64) -> String {
    let z = i64::try_from(t / DAY_SECS).unwrap_or(i64::MAX / 2) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The "Security" section as text: plaintext said loudly.
pub fn security_text(d: &SecurityDoc) -> String {
    use std::fmt::Write as _;
    let mut s = String::from("security:\n");
    match d.mode {
        "dev" => s.push_str("  mode:     dev (a single node on loopback, not secured)\n"),
        "plaintext" => s.push_str(
            "  mode:     PLAINTEXT: no TLS, no gossip encryption, no ACLs (`[security] plaintext = true`)\n",
        ),
        "joining" => s.push_str(
            "  mode:     joining: a join token is configured; the node gets its certificate, gossip keys and ACL tokens at start\n",
        ),
        "own" => s.push_str("  mode:     the operator's own TLS and gossip key files\n"),
        _ => {
            let _ = writeln!(s, "  mode:     cluster TLS, gossip encryption{}", if d.acl { ", ACLs (default deny)" } else { ", no ACLs" });
            if let Some(pin) = &d.ca_sha256 {
                let _ = writeln!(s, "  pin:      {pin}");
            }
            let _ = writeln!(s, "  names:    {}", d.cert_names.join(", "));
            let _ = writeln!(s, "  ips:      {}", d.cert_ips.join(", "));
            if let (Some(date), Some(left)) = (&d.cert_expires, d.cert_days_left) {
                let when = if left < 0 {
                    "EXPIRED".to_string()
                } else {
                    format!("{left} days left")
                };
                let _ = writeln!(
                    s,
                    "  expires:  {date} ({when}; renewed {} days before)",
                    d.renew_before_days
                );
            }
        }
    }
    let _ = writeln!(
        s,
        "  holder:   {}",
        if d.ca_holder {
            format!(
                "held here (joins served on {})",
                d.join_listen.as_deref().unwrap_or("?")
            )
        } else {
            "not held here".to_string()
        }
    );
    if d.join_token {
        s.push_str("  token:    a join token is configured (not shown)\n");
    }
    if !d.join.is_empty() {
        let _ = writeln!(s, "  join:     {}", d.join.join(", "));
    }
    s
}

/// Where a discovered value came from: the source of the record whose
/// address it is (or whose host it names).
fn found_source(value: &str, kinds: &[PeerKind], report: &DiscoveryReport) -> String {
    let host = |a: &str| -> String {
        a.parse::<std::net::SocketAddr>()
            .map_or_else(|_| a.to_string(), |s| s.ip().to_string())
    };
    report
        .records
        .iter()
        .filter(|r| kinds.is_empty() || kinds.contains(&r.kind))
        .find(|r| r.address == value)
        .or_else(|| {
            report
                .records
                .iter()
                .filter(|r| kinds.is_empty() || kinds.contains(&r.kind))
                .find(|r| host(&r.address) == host(value))
        })
        .map_or_else(
            || "discovered".to_string(),
            |r| r.source.as_str().to_string(),
        )
}

fn destinations(role: &NodeRole, plan: &Plan, report: &DiscoveryReport) -> Vec<Destination> {
    let d = &role.discovery;
    let label = |value: &str, statics: &[&Vec<String>], kinds: &[PeerKind]| -> Sourced {
        let source = if d.cloud_auto_join.iter().any(|c| c == value) {
            "cloud".to_string()
        } else if statics.iter().any(|l| l.iter().any(|v| v == value)) {
            "static".to_string()
        } else {
            found_source(value, kinds, report)
        };
        Sourced {
            value: crate::role::shown_join(value),
            source,
        }
    };
    let mut out = Vec::new();
    if let Some(c) = &plan.render.consul {
        out.push(Destination {
            name: "consul retry_join".into(),
            values: c
                .retry_join
                .iter()
                .map(|v| {
                    label(
                        v,
                        &[&d.consul_retry_join],
                        &[PeerKind::ConsulServer, PeerKind::ConsulAgent],
                    )
                })
                .collect(),
        });
        if c.server {
            out.push(Destination {
                name: "consul retry_join_wan".into(),
                values: c
                    .retry_join_wan
                    .iter()
                    .map(|v| label(v, &[&d.consul_retry_join_wan], &[PeerKind::ConsulWan]))
                    .collect(),
            });
        }
    }
    if let Some(n) = &plan.render.nomad {
        let address = n.consul_address.as_deref().map(|v| {
            if role.roles.is_consul() {
                Sourced {
                    value: v.to_string(),
                    source: "local".into(),
                }
            } else if d.consul_address.as_deref() == Some(v) && report.peers.consul_http.is_none() {
                Sourced {
                    value: v.to_string(),
                    source: "static".into(),
                }
            } else {
                label(v, &[], &[PeerKind::ConsulServer])
            }
        });
        out.push(Destination {
            name: "nomad consul.address".into(),
            values: address.into_iter().collect(),
        });
        out.push(Destination {
            name: "nomad server_join".into(),
            values: n
                .retry_join
                .iter()
                .map(|v| label(v, &[&d.nomad_retry_join], &[PeerKind::NomadServer]))
                .collect(),
        });
    }
    out
}

/// The "Discovery" section as text.
pub fn discovery_text(d: &DiscoveryDoc) -> String {
    use std::fmt::Write as _;
    let mut s = String::from("Discovery\n");
    let _ = writeln!(s, "  static:   on (role file lists)");
    let _ = writeln!(s, "  mdns:     {}", d.providers.mdns);
    match &d.providers.dns {
        Some(dns) => {
            let _ = writeln!(
                s,
                "  dns:      on via {} every {}s",
                dns.nameserver, dns.interval_secs
            );
            for (what, names) in [
                ("consul servers", &dns.consul_servers),
                ("consul wan", &dns.consul_wan),
                ("nomad servers", &dns.nomad_servers),
            ] {
                if !names.is_empty() {
                    let _ = writeln!(s, "            {what}: {}", names.join(", "));
                }
            }
        }
        None => {
            let _ = writeln!(s, "  dns:      off");
        }
    }
    if d.providers.cloud.is_empty() {
        let _ = writeln!(s, "  cloud:    none");
    } else {
        for c in &d.providers.cloud {
            let _ = writeln!(s, "  cloud:    {c}");
        }
    }
    for dest in &d.destinations {
        let values = if dest.values.is_empty() {
            "none".to_string()
        } else {
            dest.values
                .iter()
                .map(|v| format!("{} ({})", v.value, v.source))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(s, "  {:<22} {values}", format!("{}:", dest.name));
    }
    match &d.probe {
        Some(p) => {
            let _ = writeln!(
                s,
                "  probe ({}s): {} peer{} found",
                p.within_secs,
                p.peers.len(),
                if p.peers.len() == 1 { "" } else { "s" }
            );
            for r in &p.peers {
                let kind = serde_json::to_value(r.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                let _ = writeln!(
                    s,
                    "    {} {kind} from {}{}",
                    r.address,
                    r.source.as_str(),
                    match (&r.node, &r.datacenter) {
                        (Some(n), Some(dc)) => format!(" ({n}, {dc})"),
                        (Some(n), None) => format!(" ({n})"),
                        _ => String::new(),
                    }
                );
            }
            if let (Some(r), Some(dc)) = (&p.learned.region, &p.learned.datacenter) {
                let _ = writeln!(
                    s,
                    "    would learn region {r} and datacenter {dc} from {}",
                    p.learned.from_node.as_deref().unwrap_or("?")
                );
            }
            for w in &p.problems {
                let _ = writeln!(s, "    problem: {w}");
            }
            for w in &p.warnings {
                let _ = writeln!(s, "    warning: {w}");
            }
        }
        None if !d.missing.is_empty() => {
            let _ = writeln!(s, "  probe:    skipped (--discover-secs 0)");
            for m in &d.missing {
                let _ = writeln!(s, "  left to discovery: {m}");
            }
            return s;
        }
        None => {
            let _ = writeln!(s, "  probe:    not run (nothing left to discovery)");
        }
    }
    if d.missing.is_empty() {
        let _ = writeln!(s, "  nothing missing: the node can start");
    } else {
        for m in &d.missing {
            let _ = writeln!(s, "  MISSING: {m}");
        }
        if d.strict {
            let _ = writeln!(s, "  the node would wait for discovery");
        } else {
            let _ = writeln!(
                s,
                "  the node would wait for discovery (no failure: `--discover-secs N` makes it one)"
            );
        }
    }
    s
}

/// The human summary of a plan.
pub fn summary(role: &NodeRole, plan: &Plan, files: &[RenderedFile]) -> String {
    let mut s = String::new();
    let source = role.source.as_ref().map_or_else(
        || "none (defaults and --role)".to_string(),
        |p| p.display().to_string(),
    );
    s.push_str(&format!("role file:  {source}\n"));
    s.push_str(&format!(
        "node:       {} (region {}, datacenter {})\n",
        plan.node_name, plan.region, plan.datacenter
    ));
    s.push_str(&format!("roles:      {}\n", plan.roles.join(", ")));
    for a in &plan.agents {
        let mode = match (a.server, a.client) {
            (true, true) => "server+client",
            (true, false) => "server",
            _ => "client",
        };
        let leaves = match a.product {
            crate::vocab::Product::Consul => {
                plan.render.consul.as_ref().map(|c| c.leave_on_terminate)
            }
            crate::vocab::Product::Nomad => {
                plan.render.nomad.as_ref().map(|n| n.leave_on_terminate)
            }
        };
        let leave = if leaves == Some(true) {
            "leaves the cluster"
        } else {
            "keeps its cluster membership"
        };
        let then = match a.restart.mode {
            crate::vocab::RestartMode::Delay => "keep retrying",
            crate::vocab::RestartMode::Fail => "give up",
        };
        s.push_str(&format!(
            "{}:\n  version:  {}\n  mode:     {mode}\n  user:     {}\n  command:  {} {}\n  stop:     {} ({leave}), SIGKILL after {}s\n  restart:  {} attempts in {}s, delay {}s (max {}s), then {then}\n  http:     {}\n",
            a.product,
            a.version,
            a.user,
            a.binary.display(),
            a.args.join(" "),
            a.stop_signal.as_str(),
            a.stop_timeout.as_secs(),
            a.restart.attempts,
            a.restart.interval.as_secs(),
            a.restart.delay.as_secs(),
            a.restart.max_delay.as_secs(),
            a.http_addr,
        ));
    }
    if plan.agents.is_empty() {
        s.push_str("agents:     none\n");
    }
    s.push_str(&format!(
        "release:    {} (keep {}, max {} bytes)\n",
        plan.release.mirror, plan.release.keep_versions, plan.release.max_download_bytes
    ));
    s.push_str(&format!("health:     {}\n", plan.health_listen));
    for f in files {
        s.push_str(&format!("renders:    {}\n", f.path.display()));
    }
    s.push_str("role file is valid\n");
    s
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::SystemTime;

    use super::*;
    use crate::peers::{Peers, Source};
    use crate::role::StaticHost;

    fn role(text: &str) -> NodeRole {
        let host = StaticHost {
            hostname: Some("ams2-server-01".into()),
            ..StaticHost::default()
        };
        crate::role::parse(
            Path::new("/r/node.toml"),
            &crate::role::with_plaintext(text),
            &[],
            &host,
        )
        .unwrap()
    }

    #[test]
    fn plaintext_is_said_loudly_and_cloud_credentials_never_shown() {
        let r = role(
            "schema = 1\nroles = [\"consul-server\"]\n[addresses]\nprivate = \"10.0.1.11\"\n[discovery]\n\
             cloud_auto_join = [\"provider=aws tag_key=consul tag_value=ams2 secret_access_key=s3cr3tv4lue\"]\n",
        );
        let d = security_doc(&r, SystemTime::UNIX_EPOCH);
        assert_eq!(d.mode, "plaintext");
        let text = security_text(&d);
        assert!(
            text.contains("  mode:     PLAINTEXT: no TLS, no gossip encryption, no ACLs"),
            "{text}"
        );
        assert!(text.contains("  holder:   not held here"), "{text}");
        let plan = Plan::from_role(&r);
        let json = serde_json::to_string(&serde_json::json!({"role": r, "plan": plan})).unwrap();
        assert!(!json.contains("s3cr3tv4lue"), "{json}");
        assert!(json.contains("secret_access_key=<redacted>"), "{json}");
        let providers = providers(&r);
        assert_eq!(
            providers.cloud,
            ["provider=aws tag_key=consul tag_value=ams2 secret_access_key=<redacted>"]
        );
        // The rendered file keeps the real string: Consul needs it.
        let files = render::render_plan(&plan).unwrap();
        assert!(files[0].contents.contains("secret_access_key=s3cr3tv4lue"));
    }

    #[test]
    fn a_secured_node_shows_its_pin_names_expiry_and_acl_but_no_secret() {
        use crate::role::security::{NodeMaterial, NodeSecretsFile};
        let mut r =
            role("schema = 1\nroles = [\"consul-server\"]\n[addresses]\nprivate = \"10.0.1.11\"\n");
        let pin = format!("sha256:{}", "ab".repeat(32));
        let file = NodeSecretsFile {
            version: 1,
            ca_sha256: pin.clone(),
            names: vec!["server.ams2.consul".into(), "localhost".into()],
            ips: vec!["127.0.0.1".parse().unwrap(), "10.0.1.11".parse().unwrap()],
            not_before: 1_700_000_000,
            not_after: 1_707_776_000,
            primary_datacenter: "ams2".into(),
            consul_gossip_key: "GOSSIPGOSSIPGOSSIPGOSS==".into(),
            nomad_gossip_key: "GOSSIPGOSSIPGOSSIPGOSS==".into(),
            acl_enabled: true,
            acl: Default::default(),
        };
        r.security.plaintext = false;
        r.security.join_token = Some(crate::role::Secret::new("abc123.TOKENSECRET"));
        r.security.material = Some(NodeMaterial {
            dir: "/s".into(),
            ca_file: "/s/ca.pem".into(),
            cert_file: "/s/node.pem".into(),
            key_file: "/s/node-key.pem".into(),
            consul_key_file: "/s/consul-key.pem".into(),
            nomad_key_file: "/s/nomad-key.pem".into(),
            secrets: file.into_secrets(),
        });
        // 10 days and a bit before expiry.
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_707_776_000 - 10 * 86_400 - 5);
        let d = security_doc(&r, now);
        assert_eq!(d.mode, "cluster");
        assert_eq!(d.cert_days_left, Some(10));
        let text = security_text(&d);
        for want in [
            "  mode:     cluster TLS, gossip encryption, ACLs (default deny)\n",
            &format!("  pin:      {pin}\n"),
            "  names:    server.ams2.consul, localhost\n",
            "  ips:      127.0.0.1, 10.0.1.11\n",
            "  expires:  2024-02-12 (10 days left; renewed 30 days before)\n",
            "  token:    a join token is configured (not shown)\n",
        ] {
            assert!(text.contains(want), "{want:?} in\n{text}");
        }
        let json = serde_json::to_string(&d).unwrap();
        let role_json = serde_json::to_string(&r).unwrap();
        for shown in [&text, &json, &role_json] {
            assert!(
                !shown.contains("GOSSIP") && !shown.contains("TOKENSECRET"),
                "{shown}"
            );
        }
        let later = SystemTime::UNIX_EPOCH + Duration::from_secs(1_707_776_000 + 1);
        assert!(security_text(&security_doc(&r, later)).contains("(EXPIRED;"));
    }

    #[test]
    fn utc_dates_of_unix_seconds() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(951_782_400), "2000-02-29");
        assert_eq!(utc_date(1_707_776_000), "2024-02-12");
        assert_eq!(utc_date(4_102_444_800), "2100-01-01");
    }

    fn found(address: &str, kind: PeerKind, source: Source) -> PeerRecord {
        PeerRecord {
            address: address.into(),
            kind,
            source,
            node: None,
            datacenter: None,
            region: None,
            last_seen: SystemTime::now(),
        }
    }

    #[test]
    fn each_rendered_peer_is_labelled_with_where_it_came_from() {
        let r = role(
            "schema = 1\nroles = [\"consul-server\", \"nomad-server\"]\nnode_name = \"ams2-server-01\"\n\
             region = \"eu\"\ndatacenter = \"ams2\"\n[addresses]\nprivate = \"127.0.0.1\"\n\
             [discovery]\nconsul_retry_join = [\"10.0.1.12\"]\n\
             cloud_auto_join = [\"provider=aws tag_key=consul tag_value=ams2\"]\n",
        );
        let report = DiscoveryReport {
            peers: Peers {
                consul_lan: vec!["10.0.1.13".into(), "10.0.1.14:8301".into()],
                consul_wan: vec!["203.0.113.7".into()],
                nomad_servers: vec!["10.0.1.13".into()],
                consul_http: None,
            },
            records: vec![
                found("10.0.1.13", PeerKind::ConsulServer, Source::Mdns),
                found("10.0.1.14", PeerKind::ConsulAgent, Source::Dns),
                found("203.0.113.7", PeerKind::ConsulWan, Source::Dns),
                found("10.0.1.13", PeerKind::NomadServer, Source::Mdns),
            ],
            ..DiscoveryReport::default()
        };
        let plan = Plan::build(&r, &report.peers);
        let d = destinations(&r, &plan, &report);
        let show = |name: &str| -> Vec<(String, String)> {
            d.iter()
                .find(|x| x.name == name)
                .unwrap()
                .values
                .iter()
                .map(|v| (v.value.clone(), v.source.clone()))
                .collect()
        };
        let pair = |v: &str, s: &str| (v.to_string(), s.to_string());
        assert_eq!(
            show("consul retry_join"),
            vec![
                pair("10.0.1.12", "static"),
                pair("provider=aws tag_key=consul tag_value=ams2", "cloud"),
                pair("10.0.1.13", "mdns"),
                pair("10.0.1.14:8301", "dns"),
            ]
        );
        assert_eq!(
            show("consul retry_join_wan"),
            vec![pair("203.0.113.7", "dns")]
        );
        assert_eq!(
            show("nomad consul.address"),
            vec![pair("127.0.0.1:8500", "local")]
        );
        let text = discovery_text(&DiscoveryDoc {
            providers: providers(&r),
            destinations: d,
            probe: None,
            missing: Vec::new(),
            strict: false,
        });
        assert!(text.contains("  mdns:     off ("), "{text}");
        assert!(
            text.contains("  cloud:    provider=aws tag_key=consul tag_value=ams2\n"),
            "{text}"
        );
        assert!(
            text.contains("  consul retry_join:     10.0.1.12 (static), provider=aws"),
            "{text}"
        );
    }
}

//! `supervisor status`: reads a node's `/v1/status` and prints a summary.
//! Exit 0 healthy, 1 unhealthy, 69 unreachable.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::agent::{AgentClient, AgentError};
use crate::cli::{GlobalArgs, StatusArgs};
use crate::error::{EXIT_FAILURE, Error};
use crate::health::{HealthError, StatusDoc};
use crate::paths::DEFAULT_HEALTH_PORT;

/// Timeout of the status request.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `supervisor status`.
pub async fn run(global: &GlobalArgs, args: &StatusArgs) -> Result<u8, Error> {
    let addr = args.addr.unwrap_or_else(|| default_addr(global));
    let (doc, raw) = fetch_status(addr).await?;
    let mut out = std::io::stdout().lock();
    let text = if args.json {
        let mut s = String::from_utf8_lossy(&raw).into_owned();
        s.push('\n');
        s
    } else {
        summary(&doc)
    };
    out.write_all(text.as_bytes())
        .map_err(|e| Error::io("write the status to stdout", e))?;
    Ok(if doc.healthy { 0 } else { EXIT_FAILURE })
}

/// The address to ask without `--addr`: the role file's health listen
/// address (loopback when it listens on every address), else the default.
fn default_addr(global: &GlobalArgs) -> SocketAddr {
    let fallback = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_HEALTH_PORT);
    let Ok(loaded) = super::load(global) else {
        return fallback;
    };
    let mut a = loaded.plan.health_listen;
    if a.ip().is_unspecified() {
        a.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    a
}

/// GETs `http://addr/v1/status`; returns the parsed document and the raw body.
pub async fn fetch_status(addr: SocketAddr) -> Result<(StatusDoc, bytes::Bytes), HealthError> {
    let url = format!("http://{addr}/v1/status");
    let client =
        AgentClient::plain().map_err(|source| HealthError::Unreachable { addr, source })?;
    let answer = client
        .endpoint_at(format!("http://{addr}"), STATUS_TIMEOUT)
        .send(reqwest::Method::GET, "/v1/status", None)
        .await
        .map_err(|source| HealthError::Unreachable { addr, source })?;
    let (status, body) = (answer.status, answer.body);
    if status != 200 {
        return Err(HealthError::BadStatus {
            addr,
            source: AgentError::Status {
                url,
                status,
                body: String::from_utf8_lossy(&body).chars().take(200).collect(),
            },
        });
    }
    let doc = serde_json::from_slice(&body).map_err(|source| HealthError::BadStatus {
        addr,
        source: AgentError::Decode { url, source },
    })?;
    Ok((doc, body))
}

/// The readable summary of a status document.
pub fn summary(doc: &StatusDoc) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{} ({}/{}) roles: {}  {}",
        doc.node,
        doc.region,
        doc.datacenter,
        doc.roles.join(","),
        if doc.healthy { "HEALTHY" } else { "UNHEALTHY" }
    );
    let _ = writeln!(
        o,
        "supervisor {}  config {}",
        doc.supervisor_version,
        doc.config_hash.get(..12).unwrap_or(&doc.config_hash)
    );
    if let Some(sec) = &doc.security {
        let _ = writeln!(o, "{}", security_line(sec));
    }
    if doc.stopping {
        let _ = writeln!(o, "shutting down");
    }
    if let Some(e) = &doc.reload_error {
        let _ = writeln!(o, "last reload refused: {e}");
    }
    for a in &doc.agents {
        let _ = write!(
            o,
            "  {:<6} {:<8} pid {:<7} version {:<10} uptime {:<8} restarts {:<3} ready {}",
            a.agent,
            a.state,
            a.pid.map_or("-".into(), |p| p.to_string()),
            a.version.as_deref().unwrap_or("-"),
            a.uptime_secs.map_or("-".into(), |u| format!("{u}s")),
            a.restarts,
            if a.ready { "yes" } else { "no" }
        );
        if let Some(c) = &a.consul {
            let _ = write!(
                o,
                "  leader {} lan {} wan {} tolerance {}",
                c.leader.as_deref().unwrap_or("none"),
                c.lan_members.map_or("?".into(), |n| n.to_string()),
                c.wan_members.map_or("-".into(), |n| n.to_string()),
                c.failure_tolerance.map_or("-".into(), |n| n.to_string())
            );
        }
        if let Some(n) = &a.nomad {
            let _ = write!(
                o,
                "  leader {} known servers {}",
                n.leader.as_deref().unwrap_or("none"),
                n.known_servers.len()
            );
        }
        o.push('\n');
        if let Some(u) = &a.upgrade {
            let _ = writeln!(o, "         upgrade: {}", u.summary());
        }
    }
    let failing: Vec<_> = doc.checks.iter().filter(|c| !c.ok).collect();
    for c in failing {
        let _ = writeln!(o, "  FAIL {}: {}", c.name, c.reason);
    }
    if let Some(d) = &doc.discovery {
        discovery_summary(d, &mut o);
    }
    o
}

/// `security: tls, certificate until <RFC 3339> (<n> days left), ACLs on`,
/// or `security: PLAINTEXT (...)`.
pub fn security_line(sec: &crate::health::handlers::json::SecurityDoc) -> String {
    if sec.mode == "plaintext" {
        return "security: PLAINTEXT (no TLS, no gossip encryption, no ACLs)".to_string();
    }
    let mut l = format!("security: {}", sec.mode);
    if let Some(at) = &sec.not_after {
        l.push_str(&format!(", certificate until {at}"));
        match sec.days_left {
            Some(d) if d < 0 => l.push_str(" (EXPIRED)"),
            Some(d) => l.push_str(&format!(" ({d} days left)")),
            None => {}
        }
    }
    if sec.acl_enabled {
        l.push_str(", ACLs on");
    }
    if sec.ca_holder {
        l.push_str(", holds the CA");
    }
    if sec.renewals.errors > 0 {
        l.push_str(&format!(
            ", {} failed renewal{}",
            sec.renewals.errors,
            if sec.renewals.errors == 1 { "" } else { "s" }
        ));
    }
    l
}

/// The discovery lines of the summary: learned identity, peers with their
/// source and last sighting, warnings.
fn discovery_summary(d: &crate::health::handlers::json::DiscoveryDoc, o: &mut String) {
    use std::fmt::Write as _;
    let _ = writeln!(
        o,
        "discovery: {} peer{}",
        d.peers.len(),
        if d.peers.len() == 1 { "" } else { "s" }
    );
    if let (Some(r), Some(dc)) = (&d.learned.region, &d.learned.datacenter) {
        let _ = writeln!(
            o,
            "  learned region {r} and datacenter {dc} from {} ({})",
            d.learned.from_node.as_deref().unwrap_or("?"),
            d.learned.from_source.as_deref().unwrap_or("discovery")
        );
    }
    for w in &d.waiting_for {
        let _ = writeln!(o, "  waiting for {w}");
    }
    for p in &d.peers {
        let _ = writeln!(
            o,
            "  {:<24} {:<13} {:<6} {:<20} {}",
            p.address,
            p.kind,
            p.source,
            match (&p.node, &p.datacenter) {
                (Some(n), Some(dc)) => format!("{n} ({dc})"),
                (Some(n), None) => n.clone(),
                _ => "-".into(),
            },
            p.ago
        );
    }
    if let Some(c) = &d.applied.consul_http {
        let _ = writeln!(o, "  nomad uses consul at {c}");
    }
    for w in &d.warnings {
        let _ = writeln!(o, "  WARN {w}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::handlers::json::SecurityDoc;

    fn doc(mode: &str) -> SecurityDoc {
        SecurityDoc {
            mode: mode.into(),
            ca_sha256: Some(format!("sha256:{}", "ab".repeat(32))),
            names: vec!["server.ams2.consul".into()],
            not_after: Some("2027-03-03T22:00:00Z".into()),
            not_after_unix: Some(1_803_938_400),
            days_left: Some(89),
            acl_enabled: true,
            ca_holder: true,
            join_listen: Some("10.0.1.11:4681".into()),
            renewals: Default::default(),
        }
    }

    #[test]
    fn status_security_line_shows_mode_expiry_and_days_left_or_plaintext() {
        assert_eq!(
            security_line(&doc("tls")),
            "security: tls, certificate until 2027-03-03T22:00:00Z (89 days left), ACLs on, holds the CA"
        );
        let mut gone = doc("tls");
        gone.days_left = Some(-2);
        gone.renewals.errors = 3;
        assert!(security_line(&gone).contains("(EXPIRED)"));
        assert!(security_line(&gone).ends_with("3 failed renewals"));
        assert_eq!(
            security_line(&SecurityDoc {
                not_after: None,
                days_left: None,
                ..doc("plaintext")
            }),
            "security: PLAINTEXT (no TLS, no gossip encryption, no ACLs)"
        );
    }
}

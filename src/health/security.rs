//! The node's security as health shows it: how the agents are secured
//! ([`SecurityMode`]), the node certificate's names and expiry, whether
//! ACLs are on, whether this node holds the CA and serves joins, and the
//! renewals of its certificate ([`Renewals`]).
//!
//! [`SecurityStatus`] is data `run` publishes on the channel
//! [`super::Started::security`] (built from the role with
//! [`SecurityStatus::of_role`]), and the renewal task updates in place
//! ([`SecurityStatus::record_renewal`],
//! [`SecurityStatus::record_renewal_error`],
//! [`SecurityStatus::set_next_renewal`]). It holds no secret: the CA pin
//! is a hash of a public key, names are public, and a renewal error is
//! redacted when it enters the snapshot. Never a token or a key.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::role::NodeRole;

/// Below this much validity left the node is not ready: the agents are
/// about to refuse each other.
pub const EXPIRY_NOT_READY_SECS: u64 = 24 * 3600;

/// How the node's agents are secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecurityMode {
    /// The cluster's material (`cluster init` or a join): TLS, gossip
    /// encryption and, when the cluster has them, ACLs.
    Tls,
    /// No TLS, no gossip encryption, no ACLs (`[security] plaintext = true`
    /// or the single-node `dev` role).
    Plaintext,
    /// TLS and gossip files the operator named in the role file.
    ManualTls,
}

impl SecurityMode {
    /// `tls`, `plaintext`, `manual-tls`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tls => "tls",
            Self::Plaintext => "plaintext",
            Self::ManualTls => "manual-tls",
        }
    }
}

/// Renewals of the node certificate, as the renewal task records them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Renewals {
    /// Last successful renewal, Unix seconds.
    #[serde(default)]
    pub last: Option<u64>,
    /// Next renewal attempt, Unix seconds.
    #[serde(default)]
    pub next: Option<u64>,
    /// Failed renewal attempts since the last success.
    #[serde(default)]
    pub errors: u64,
    /// Why the last attempt failed, when it did (redacted).
    #[serde(default)]
    pub last_error: Option<String>,
}

/// The node's security, as `/v1/status`, the page, `/metrics` and `/ready`
/// show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityStatus {
    /// How the agents are secured.
    pub mode: SecurityMode,
    /// `sha256:<hex>` pin of the cluster CA (with material).
    pub ca_sha256: Option<String>,
    /// DNS names of the node certificate.
    pub names: Vec<String>,
    /// The node certificate's expiry, Unix seconds.
    pub not_after: Option<u64>,
    /// Whether the cluster runs with ACLs.
    pub acl_enabled: bool,
    /// Whether this node holds the CA (and serves joins).
    pub ca_holder: bool,
    /// Where it serves joins, when it holds the CA.
    pub join_listen: Option<SocketAddr>,
    /// Renewals of the node certificate.
    pub renewals: Renewals,
}

impl SecurityStatus {
    /// The security of a loaded role: its material, else `plaintext`
    /// (explicit, or the `dev` role), else the operator's own TLS files.
    pub fn of_role(role: &NodeRole) -> Self {
        let sec = &role.security;
        let manual = role.consul.tls.is_some() || role.nomad.tls.is_some();
        let mode = match (&sec.material, sec.plaintext, manual) {
            (Some(_), _, _) => SecurityMode::Tls,
            (None, false, true) => SecurityMode::ManualTls,
            (None, _, _) => SecurityMode::Plaintext,
        };
        let m = sec.material.as_ref().map(|m| &m.secrets);
        Self {
            mode,
            ca_sha256: m.map(|s| s.ca_sha256.clone()),
            names: m.map(|s| s.names.clone()).unwrap_or_default(),
            not_after: m.map(|s| s.not_after),
            acl_enabled: m.is_some_and(|s| s.acl_enabled),
            ca_holder: sec.ca_holder,
            join_listen: sec.ca_holder.then_some(sec.join_listen),
            renewals: Renewals::default(),
        }
    }

    /// A plaintext node (no material, nothing known).
    pub fn plaintext() -> Self {
        Self {
            mode: SecurityMode::Plaintext,
            ca_sha256: None,
            names: Vec::new(),
            not_after: None,
            acl_enabled: false,
            ca_holder: false,
            join_listen: None,
            renewals: Renewals::default(),
        }
    }

    /// A renewal succeeded at `at`: the new certificate's expiry and names,
    /// and when the next one is due.
    pub fn record_renewal(
        &mut self,
        at: u64,
        not_after: u64,
        names: Vec<String>,
        next: Option<u64>,
    ) {
        self.not_after = Some(not_after);
        if !names.is_empty() {
            self.names = names;
        }
        self.renewals.last = Some(at);
        self.renewals.next = next;
        self.renewals.errors = 0;
        self.renewals.last_error = None;
    }

    /// A renewal attempt failed with `error` (one line, no secret); the
    /// next attempt is at `next`.
    pub fn record_renewal_error(&mut self, error: &str, next: Option<u64>) {
        self.renewals.errors += 1;
        self.renewals.last_error = Some(error.to_string());
        self.renewals.next = next;
    }

    /// When the next renewal is due.
    pub fn set_next_renewal(&mut self, next: Option<u64>) {
        self.renewals.next = next;
    }

    /// Seconds of validity left at `now` (negative: expired).
    pub fn secs_left(&self, now: SystemTime) -> Option<i64> {
        let na = i64::try_from(self.not_after?).ok()?;
        Some(na - i64::try_from(unix(now)).ok()?)
    }

    /// Whole days of validity left at `now` (negative once expired).
    pub fn days_left(&self, now: SystemTime) -> Option<i64> {
        self.secs_left(now).map(|s| s.div_euclid(86_400))
    }

    /// Why the node is not ready for its certificate, if it is not: it
    /// expired, or expires within [`EXPIRY_NOT_READY_SECS`].
    pub fn expiry_problem(&self, now: SystemTime) -> Option<String> {
        let left = self.secs_left(now)?;
        if left <= 0 {
            Some(format!(
                "the node certificate expired at {}",
                self.not_after.map(rfc3339).unwrap_or_default()
            ))
        } else if (left as u64) < EXPIRY_NOT_READY_SECS {
            Some(format!("certificate expires in {}h", left / 3600))
        } else {
            None
        }
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `2026-12-03T22:05:25Z` for Unix seconds `secs` (UTC, RFC 3339).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_is_utc_and_exact() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_798_761_599), "2026-12-31T23:59:59Z");
        assert_eq!(rfc3339(4_107_542_400), "2100-03-01T00:00:00Z");
    }

    fn tls(not_after: u64) -> SecurityStatus {
        SecurityStatus {
            mode: SecurityMode::Tls,
            not_after: Some(not_after),
            ..SecurityStatus::plaintext()
        }
    }

    #[test]
    fn expiry_under_a_day_or_past_is_a_problem_and_days_left_counts_down() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let at = |s: u64| 1_000_000_000 + s;
        assert_eq!(tls(at(90 * 86_400)).days_left(now), Some(90));
        assert_eq!(tls(at(90 * 86_400)).expiry_problem(now), None);
        assert_eq!(tls(at(86_400)).expiry_problem(now), None);
        assert_eq!(
            tls(at(5 * 3600 + 10)).expiry_problem(now).as_deref(),
            Some("certificate expires in 5h")
        );
        let gone = tls(1_000_000_000 - 10);
        assert_eq!(gone.days_left(now), Some(-1));
        assert!(
            gone.expiry_problem(now)
                .is_some_and(|p| p.starts_with("the node certificate expired at 2001-09-09T01:46:"))
        );
        // No certificate, no problem (plaintext is shown, not failed).
        assert_eq!(SecurityStatus::plaintext().expiry_problem(now), None);
    }

    #[test]
    fn a_renewal_resets_the_errors_and_moves_the_expiry() {
        let mut s = tls(100);
        s.record_renewal_error(
            "the join endpoint at 10.0.1.11:4681 did not answer",
            Some(200),
        );
        s.record_renewal_error("again", Some(300));
        assert_eq!(s.renewals.errors, 2);
        assert_eq!(s.renewals.next, Some(300));
        s.record_renewal(400, 9_000, vec!["server.ams2.consul".into()], Some(5_000));
        assert_eq!(s.not_after, Some(9_000));
        assert_eq!(
            s.renewals,
            Renewals {
                last: Some(400),
                next: Some(5_000),
                errors: 0,
                last_error: None
            }
        );
        assert_eq!(s.names, ["server.ams2.consul"]);
    }
}

//! The node's identity: region, datacenter and node name (each by the
//! agents' own rules, the node name from the hostname when not set), and
//! the agents' log level.

use super::{Checked, Findings};
use crate::role::diag::Location;
use crate::role::host::Host;
use crate::role::limits;
use crate::role::raw::{RawRole, SpStr};

/// Nomad's and Consul's default region / datacenter.
const DEFAULT_REGION: &str = "global";
const DEFAULT_DATACENTER: &str = "dc1";
/// Agents' default log level.
const DEFAULT_LOG_LEVEL: &str = "info";
/// Accepted log levels (both agents accept these, case-insensitively).
const LOG_LEVELS: [&str; 5] = ["trace", "debug", "info", "warn", "error"];

/// Who the node is.
pub(super) struct Identity {
    pub region: String,
    pub datacenter: String,
    pub node_name: String,
    pub log_level: String,
}

/// Region, datacenter, node name and log level, in that order.
pub(super) fn check(raw: &RawRole, host: &dyn Host) -> Checked<Identity> {
    let mut found = Findings::default();
    let region = name(&mut found, &raw.region, DEFAULT_REGION, check_region_name);
    let datacenter = name(
        &mut found,
        &raw.datacenter,
        DEFAULT_DATACENTER,
        check_datacenter_name,
    );
    let node_name = match &raw.node_name {
        Some(_) => name(&mut found, &raw.node_name, "", check_node_name),
        None => match host.hostname() {
            Some(h) => {
                if let Some(why) = check_node_name(&h) {
                    found.at(
                        Location::File,
                        format!(
                            "`node_name` is not set and the hostname is not a node name: {why}"
                        ),
                    );
                }
                h
            }
            None => {
                found.at(
                    Location::File,
                    "`node_name` is not set and the hostname cannot be read",
                );
                String::new()
            }
        },
    };
    let log_level = log_level(&mut found, &raw.log_level);
    let identity = Identity {
        region,
        datacenter,
        node_name,
        log_level,
    };
    (identity, found)
}

/// A region, datacenter or node name, checked by `check` (one of the
/// `check_*_name` functions).
fn name(
    found: &mut Findings,
    v: &Option<SpStr>,
    default: &str,
    check: fn(&str) -> Option<String>,
) -> String {
    let Some(s) = v else {
        return default.to_string();
    };
    if let Some(why) = check(s.get_ref()) {
        found.span(s, why);
    }
    s.get_ref().clone()
}

/// The log level, lower-cased.
fn log_level(found: &mut Findings, v: &Option<SpStr>) -> String {
    match v {
        None => DEFAULT_LOG_LEVEL.to_string(),
        Some(s) => {
            let l = s.get_ref().to_ascii_lowercase();
            if !LOG_LEVELS.contains(&l.as_str()) {
                found.span(
                    s,
                    format!(
                        "unknown log level `{}`, expected one of: {}",
                        s.get_ref(),
                        LOG_LEVELS.join(", ")
                    ),
                );
            }
            l
        }
    }
}

/// A name longer than a DNS label, or empty.
fn check_name_length(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".to_string());
    }
    (name.len() > limits::NAME_CHARS).then(|| {
        format!(
            "is {} bytes long, at most {} are allowed",
            name.len(),
            limits::NAME_CHARS
        )
    })
}

/// Consul's own rule for a datacenter: `^[a-z0-9_-]+$` (consul
/// `agent/config/builder.go`, `Builder.Validate`: "Datacenter must be
/// alpha-numeric with underscores and hyphens only"; Consul lower-cases the
/// value first, Nomad does not, so upper case would name two different
/// datacenters). Nomad's rule (no NUL, no `*`: nomad
/// `command/agent/command.go`, `isValidConfig`) is weaker.
fn check_datacenter_name(name: &str) -> Option<String> {
    if let Some(why) = check_name_length(name) {
        return Some(format!("`datacenter` {why}"));
    }
    let ok = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    (!ok).then(|| {
        "`datacenter` may only hold lower-case letters, digits, `-` and `_` (Consul's rule)"
            .to_string()
    })
}

/// Nomad's region: no NUL (nomad `command/agent/command.go`,
/// `isValidConfig`); it is also one label of the name Nomad's TLS checks
/// (`server.<region>.nomad`), so no `.` and nothing outside a DNS label.
fn check_region_name(name: &str) -> Option<String> {
    if let Some(why) = check_name_length(name) {
        return Some(format!("`region` {why}"));
    }
    let ok = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (!ok).then(|| "`region` may only hold letters, digits, `-` and `_`".to_string())
}

/// Consul refuses an empty node name and warns when it is not a DNS label
/// of at most 63 bytes (consul `agent/config/builder.go`: "will not be
/// discoverable via DNS"). We refuse what is longer, and keep the
/// characters we always allowed (a dotted hostname is common).
fn check_node_name(name: &str) -> Option<String> {
    if let Some(why) = check_name_length(name) {
        return Some(format!("`node_name` {why}"));
    }
    let ok = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    (!ok).then(|| "`node_name` may only hold letters, digits, `-`, `_` and `.`".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_agents_own_rules() {
        for ok in ["ams2", "lon1", "dc_1-a", &"d".repeat(63)] {
            assert_eq!(check_datacenter_name(ok), None, "{ok}");
        }
        for bad in [
            "DC1",
            "dc.1",
            "ams 2",
            "",
            "dc*",
            "dc\0",
            "dé",
            &"d".repeat(64),
        ] {
            assert!(check_datacenter_name(bad).is_some(), "{bad:?}");
        }
        for ok in ["eu", "global", "EU-West_1"] {
            assert_eq!(check_region_name(ok), None, "{ok}");
        }
        for bad in ["eu.west", "", "e u", &"r".repeat(64)] {
            assert!(check_region_name(bad).is_some(), "{bad:?}");
        }
        for ok in ["ams2-server-01", "ams2-server-01.eu.example", "n_1"] {
            assert_eq!(check_node_name(ok), None, "{ok}");
        }
        for bad in ["", "a b", "n\u{202e}", &"n".repeat(1_000_000)] {
            assert!(
                check_node_name(bad).is_some(),
                "{:?}",
                &bad[..bad.len().min(8)]
            );
        }
    }
}

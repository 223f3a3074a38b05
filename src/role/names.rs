//! The agents' own rules for a region, datacenter and node name, public so
//! that the role file check and discovery (names read from a peer's
//! announcement) refuse exactly the same names. Each function returns why a
//! name is refused, or `None` when it is good. This module only judges
//! strings: it reads nothing and knows no role file.

use crate::role::limits;

/// A name longer than a DNS label, or empty.
fn length_problem(name: &str) -> Option<String> {
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
pub fn datacenter_problem(name: &str) -> Option<String> {
    if let Some(why) = length_problem(name) {
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
pub fn region_problem(name: &str) -> Option<String> {
    if let Some(why) = length_problem(name) {
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
pub fn node_name_problem(name: &str) -> Option<String> {
    if let Some(why) = length_problem(name) {
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
            assert_eq!(datacenter_problem(ok), None, "{ok}");
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
            assert!(datacenter_problem(bad).is_some(), "{bad:?}");
        }
        for ok in ["eu", "global", "EU-West_1"] {
            assert_eq!(region_problem(ok), None, "{ok}");
        }
        for bad in ["eu.west", "", "e u", &"r".repeat(64)] {
            assert!(region_problem(bad).is_some(), "{bad:?}");
        }
        for ok in ["ams2-server-01", "ams2-server-01.eu.example", "n_1"] {
            assert_eq!(node_name_problem(ok), None, "{ok}");
        }
        for bad in ["", "a b", "n\u{202e}", &"n".repeat(1_000_000)] {
            assert!(
                node_name_problem(bad).is_some(),
                "{:?}",
                &bad[..bad.len().min(8)]
            );
        }
    }
}

//! The agents' own rules for a region, datacenter and node name, public so
//! that the role file check and discovery (names read from a peer's
//! announcement) refuse exactly the same names. Each function returns why a
//! name is refused, or `None` when it is good. This module only judges
//! strings: it reads nothing and knows no role file. The DNS name rule
//! ([`dns_name_problem`]) is here for the same reason: `[discovery.dns]`
//! names are checked by it, and discovery may check the names it is given.

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

/// SRV protocol labels (RFC 2782: `_tcp`, `_udp`).
const SRV_PROTOCOLS: [&str; 2] = ["_tcp", "_udp"];

/// Whether `name` is an SRV name (`_service._proto.domain`) rather than an
/// A/AAAA name: it starts with `_`. Check it with [`dns_name_problem`].
pub fn is_srv_name(name: &str) -> bool {
    name.starts_with('_')
}

/// Why `name` is not a DNS name discovery can resolve, or `None`. At most
/// 253 characters (a trailing `.` allowed), labels of 1 to 63 letters,
/// digits and `-` (not first or last); an SRV name starts with
/// `_service._tcp.` or `_service._udp.` followed by such a domain. An IP
/// address is refused: it belongs in a static list.
pub fn dns_name_problem(name: &str) -> Option<String> {
    let bare = name.strip_suffix('.').unwrap_or(name);
    if bare.is_empty() {
        return Some("is not a DNS name: it is empty".to_string());
    }
    let chars = bare.chars().count();
    if chars > limits::DNS_NAME_CHARS {
        return Some(format!(
            "is {chars} characters long, a DNS name has at most {}",
            limits::DNS_NAME_CHARS
        ));
    }
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return Some(
            "is an IP address, not a name: static addresses go in `consul_retry_join`, \
             `consul_retry_join_wan`, `nomad_retry_join` or `consul_address`"
                .to_string(),
        );
    }
    let labels: Vec<&str> = bare.split('.').collect();
    let host_labels = if is_srv_name(bare) {
        let service = labels[0].strip_prefix('_').unwrap_or_default();
        let service_ok = !service.is_empty()
            && service.len() < limits::DNS_LABEL_CHARS
            && service
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        let proto_ok = labels
            .get(1)
            .is_some_and(|p| SRV_PROTOCOLS.contains(&p.to_ascii_lowercase().as_str()));
        if !service_ok || !proto_ok || labels.len() < 3 {
            return Some(
                "is not an SRV name: it must look like `_service._tcp.domain` \
                 (or `_udp`), the service made of letters, digits and `-`"
                    .to_string(),
            );
        }
        &labels[2..]
    } else {
        &labels[..]
    };
    for label in host_labels {
        if let Some(why) = label_problem(label) {
            return Some(format!("is not a DNS name: {why}"));
        }
    }
    let last = host_labels.last().copied().unwrap_or_default();
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Some(format!(
            "is not a DNS name: its last label `{last}` is all digits"
        ));
    }
    None
}

/// Why one host label is not an LDH label (RFC 1035, RFC 1123), or `None`.
fn label_problem(label: &str) -> Option<String> {
    if label.is_empty() {
        return Some("it has an empty label".to_string());
    }
    if label.len() > limits::DNS_LABEL_CHARS {
        return Some(format!(
            "a label is {} bytes long, at most {} are allowed",
            label.len(),
            limits::DNS_LABEL_CHARS
        ));
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Some(format!(
            "label `{label}` holds something other than letters, digits and `-`"
        ));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Some(format!("label `{label}` starts or ends with `-`"));
    }
    None
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

    #[test]
    fn dns_names_srv_names_and_what_is_neither() {
        for ok in [
            "consul.ams2.eu.hashi.test",
            "consul.ams2.eu.hashi.test.",
            "consul",
            "_consul-server._tcp.ams2.eu.hashi.test",
            "_nomad._UDP.example",
            "a-1.b2.example",
            &format!("{}.example", "a".repeat(63)),
        ] {
            assert_eq!(dns_name_problem(ok), None, "{ok}");
        }
        assert!(is_srv_name("_consul-server._tcp.ams2.eu.hashi.test"));
        assert!(!is_srv_name("consul.ams2.eu.hashi.test"));
        for (bad, why) in [
            ("", "empty"),
            (".", "empty"),
            ("10.0.1.11", "IP address"),
            ("::1", "IP address"),
            ("a..b", "empty label"),
            ("-a.b", "starts or ends with `-`"),
            ("a-.b", "starts or ends with `-`"),
            ("a_b.example", "other than letters"),
            ("a b", "other than letters"),
            ("consul.ams2.1", "all digits"),
            ("_consul.ams2.example", "not an SRV name"),
            ("_._tcp.example", "not an SRV name"),
            ("_consul._tcp", "not an SRV name"),
            ("_consul._sctp.example", "not an SRV name"),
            ("_con sul._tcp.example", "not an SRV name"),
            ("_consul._tcp.a_b", "other than letters"),
        ] {
            let got = dns_name_problem(bad).unwrap_or_else(|| panic!("{bad:?} passed"));
            assert!(got.contains(why), "{bad:?}: {got}");
        }
        let long_label = format!("{}.example", "a".repeat(64));
        assert!(
            dns_name_problem(&long_label)
                .unwrap()
                .contains("at most 63")
        );
        let long = ["abcdefghi"; 26].join(".");
        assert_eq!(long.len(), 259);
        assert!(dns_name_problem(&long).unwrap().contains("at most 253"));
        let huge = "a".repeat(1_000_000);
        assert!(dns_name_problem(&huge).unwrap().len() < 100);
    }
}

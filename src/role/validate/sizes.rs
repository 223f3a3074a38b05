//! How long, how many, how much: strings longer than anything they could
//! mean, lists with too many entries, numbers outside their range (the
//! bounds live in [`crate::role::limits`]).

use std::ops::{Range, RangeInclusive};
use std::time::Duration;

use toml::Spanned;

use super::Findings;
use crate::role::limits;
use crate::role::raw::{RawRole, SpStr};

/// A list of strings with its position.
type SpList = Spanned<Vec<SpStr>>;

/// A number outside its range, in the role file's words.
pub(super) fn check_range(key: &str, n: u64, range: &RangeInclusive<u64>) -> Option<String> {
    (!range.contains(&n)).then(|| {
        format!(
            "{key} must be between {} and {} (got {n})",
            range.start(),
            range.end()
        )
    })
}

/// A number of `key` within `range`; `default` when absent or out of range
/// (then reported).
pub(super) fn number(
    found: &mut Findings,
    v: &Option<Spanned<u64>>,
    key: &str,
    range: &RangeInclusive<u64>,
    default: u64,
) -> u64 {
    let Some(s) = v else {
        return default;
    };
    match check_range(key, *s.get_ref(), range) {
        Some(why) => {
            found.span(s, why);
            default
        }
        None => *s.get_ref(),
    }
}

/// An optional duration in seconds within `range` (`None` when absent or
/// out of range, then reported).
pub(super) fn secs(
    found: &mut Findings,
    v: &Option<Spanned<u64>>,
    key: &str,
    range: &RangeInclusive<u64>,
) -> Option<Duration> {
    let s = v.as_ref()?;
    if let Some(why) = check_range(key, *s.get_ref(), range) {
        found.span(s, why);
        return None;
    }
    Some(Duration::from_secs(*s.get_ref()))
}

/// Reports every `(span, problem)` of a `check_*` function.
fn report(list: Vec<(Range<usize>, String)>) -> Findings {
    let mut found = Findings::default();
    for (span, why) in list {
        found.at(crate::role::diag::Location::Span(span), why);
    }
    found
}

/// Every string of the role file longer than anything it could mean.
pub(super) fn check_lengths(raw: &RawRole) -> Findings {
    report(long_strings(raw))
}

/// Every list with more entries than anything it could mean.
pub(super) fn check_list_sizes(raw: &RawRole) -> Findings {
    report(long_lists(raw))
}

/// `(span, problem)` of every string longer than anything it could mean.
fn long_strings(raw: &RawRole) -> Vec<(Range<usize>, String)> {
    use limits::{ADDRESS_CHARS, PATH_CHARS, VERSION_CHARS};
    let (rc, rn, rr, rd) = (&raw.consul, &raw.nomad, &raw.release, &raw.discovery);
    let dns = rd.dns.as_ref().map(|d| d.get_ref());
    let none = None;
    let dns_nameserver = dns.map_or(&none, |d| &d.nameserver);
    let single: [(&Option<SpStr>, &str, usize); 21] = [
        (&raw.log_level, "log_level", VERSION_CHARS),
        (&raw.addresses.bind, "addresses.bind", ADDRESS_CHARS),
        (&raw.addresses.private, "addresses.private", ADDRESS_CHARS),
        (&raw.addresses.public, "addresses.public", ADDRESS_CHARS),
        (&rc.version, "consul.version", VERSION_CHARS),
        (&rc.encrypt_key_file, "consul.encrypt_key_file", PATH_CHARS),
        (&rc.tls.ca_file, "consul.tls.ca_file", PATH_CHARS),
        (&rc.tls.cert_file, "consul.tls.cert_file", PATH_CHARS),
        (&rc.tls.key_file, "consul.tls.key_file", PATH_CHARS),
        (&rn.version, "nomad.version", VERSION_CHARS),
        (&rn.encrypt_key_file, "nomad.encrypt_key_file", PATH_CHARS),
        (&rn.tls.ca_file, "nomad.tls.ca_file", PATH_CHARS),
        (&rn.tls.cert_file, "nomad.tls.cert_file", PATH_CHARS),
        (&rn.tls.key_file, "nomad.tls.key_file", PATH_CHARS),
        (&rr.mirror, "release.mirror", ADDRESS_CHARS),
        (
            &rd.consul_address,
            "discovery.consul_address",
            ADDRESS_CHARS,
        ),
        (&raw.health.listen, "health.listen", ADDRESS_CHARS),
        (&raw.paths.config_dir, "paths.config_dir", PATH_CHARS),
        (&raw.paths.state_dir, "paths.state_dir", PATH_CHARS),
        (&rn.advertise, "nomad.advertise", VERSION_CHARS),
        (dns_nameserver, "discovery.dns.nameserver", ADDRESS_CHARS),
    ];
    let no_list = None;
    let dns_lists = dns_lists(raw, &no_list);
    let lists: [(&Option<SpList>, &str, usize); 8] = [
        (
            &rr.trusted_key_files,
            "release.trusted_key_files",
            PATH_CHARS,
        ),
        (
            &rd.consul_retry_join,
            "discovery.consul_retry_join",
            ADDRESS_CHARS,
        ),
        (
            &rd.consul_retry_join_wan,
            "discovery.consul_retry_join_wan",
            ADDRESS_CHARS,
        ),
        (
            &rd.nomad_retry_join,
            "discovery.nomad_retry_join",
            ADDRESS_CHARS,
        ),
        (
            &rd.cloud_auto_join,
            "discovery.cloud_auto_join",
            ADDRESS_CHARS,
        ),
        (dns_lists[0].0, dns_lists[0].1, limits::DNS_NAME_CHARS),
        (dns_lists[1].0, dns_lists[1].1, limits::DNS_NAME_CHARS),
        (dns_lists[2].0, dns_lists[2].1, limits::DNS_NAME_CHARS),
    ];
    let entries = single
        .into_iter()
        .filter_map(|(v, key, max)| v.as_ref().map(|s| (s, key, max)))
        .chain(lists.into_iter().flat_map(|(v, key, max)| {
            v.iter()
                .flat_map(|l| l.get_ref())
                .map(move |s| (s, key, max))
        }));
    entries
        .filter(|(s, _, max)| s.get_ref().chars().count() > *max)
        .map(|(s, key, max)| {
            (
                s.span(),
                format!(
                    "`{key}` is {} characters long, at most {max} are allowed",
                    s.get_ref().chars().count()
                ),
            )
        })
        .collect()
}

/// The three name lists of `[discovery.dns]` with their keys (`none` for
/// each when the table is not written).
fn dns_lists<'a>(
    raw: &'a RawRole,
    none: &'a Option<SpList>,
) -> [(&'a Option<SpList>, &'static str); 3] {
    let dns = raw.discovery.dns.as_ref().map(|d| d.get_ref());
    [
        (
            dns.map_or(none, |d| &d.consul_servers),
            "discovery.dns.consul_servers",
        ),
        (
            dns.map_or(none, |d| &d.consul_wan),
            "discovery.dns.consul_wan",
        ),
        (
            dns.map_or(none, |d| &d.nomad_servers),
            "discovery.dns.nomad_servers",
        ),
    ]
}

/// `(span, problem)` of every list with more entries than anything it could mean.
fn long_lists(raw: &RawRole) -> Vec<(Range<usize>, String)> {
    let rd = &raw.discovery;
    let none = None;
    let most = limits::LIST_ENTRIES;
    let dns = dns_lists(raw, &none).map(|(l, key)| (l, key, limits::DNS_NAMES));
    [
        (&raw.roles, "roles", most),
        (
            &raw.release.trusted_key_files,
            "release.trusted_key_files",
            most,
        ),
        (&rd.consul_retry_join, "discovery.consul_retry_join", most),
        (
            &rd.consul_retry_join_wan,
            "discovery.consul_retry_join_wan",
            most,
        ),
        (&rd.nomad_retry_join, "discovery.nomad_retry_join", most),
        (&rd.cloud_auto_join, "discovery.cloud_auto_join", most),
    ]
    .into_iter()
    .chain(dns)
    .filter_map(|(v, key, most)| v.as_ref().map(|l| (l, key, most)))
    .filter(|(l, _, most)| l.get_ref().len() > *most)
    .map(|(l, key, most)| {
        (
            l.span(),
            format!(
                "`{key}` has {} entries, at most {most} are allowed",
                l.get_ref().len(),
            ),
        )
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_outside_its_range_says_the_range() {
        assert_eq!(
            check_range("delay_secs", 5, &limits::RESTART_DELAY_SECS),
            None
        );
        assert_eq!(
            check_range("delay_secs", u64::MAX, &limits::RESTART_DELAY_SECS).as_deref(),
            Some("delay_secs must be between 0 and 3600 (got 18446744073709551615)")
        );
    }
}

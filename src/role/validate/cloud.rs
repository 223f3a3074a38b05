//! The shape of a cloud auto-join string (`discovery.cloud_auto_join`):
//! `provider=<name>` followed by space-separated `key=value` pairs, the way
//! go-discover (the library Consul resolves them with) reads them. We never
//! resolve these strings: they go to Consul's `retry_join` unchanged, so a
//! typo would only show as a join that never happens. This check catches
//! the shape and the provider name; the provider's own keys stay Consul's
//! business.

use std::ops::Range;

use super::Findings;
use crate::role::diag::{Location, did_you_mean};
use crate::role::raw::SpStr;

/// The providers Consul's `retry_join` resolves: go-discover's registry
/// (`discover.go`, `Providers`) plus the ones Consul adds itself
/// (`agent/retry_join.go`, `newDiscover`: `k8s`, `hcp`).
pub(super) const PROVIDERS: [&str; 17] = [
    "aliyun",
    "aws",
    "azure",
    "digitalocean",
    "exoscale",
    "gce",
    "hcp",
    "k8s",
    "linode",
    "mdns",
    "os",
    "packet",
    "scaleway",
    "softlayer",
    "tencentcloud",
    "triton",
    "vsphere",
];

/// Parts of go-discover provider argument names whose values are
/// credentials (`secret_access_key` (aws), `client_secret` (azure),
/// `access_key_secret` (aliyun), `secret_key` (tencentcloud), `api_token`
/// (digitalocean, linode), `token` (scaleway), `auth_token` (packet),
/// `password` (os, vsphere), `api_key` (softlayer, exoscale `api_secret`),
/// `key` (exoscale and others)). The one list every printer of the role
/// uses; rendering keeps the real value.
const SECRET_ARG_PARTS: [&str; 4] = ["secret", "password", "token", "api_key"];

/// Whether the value of provider argument `key` is a credential.
fn is_secret_arg(key: &str) -> bool {
    key == "key" || SECRET_ARG_PARTS.iter().any(|p| key.contains(p))
}

/// A cloud auto-join string with the value of every credential argument
/// replaced by `<redacted>`; a string that does not parse is redacted
/// whole (the role loader refuses those anyway).
pub(crate) fn redact(text: &str) -> String {
    let Ok(pairs) = pairs(text) else {
        return crate::role::REDACTED.to_string();
    };
    let mut out = text.to_string();
    for p in pairs.iter().rev().filter(|p| is_secret_arg(&p.key)) {
        out.replace_range(p.value_at.clone(), crate::role::REDACTED);
    }
    out
}

/// One `key=value` pair: the key, the value (unquoted), and the byte ranges
/// of each within the string.
struct Pair {
    key: String,
    key_at: Range<usize>,
    value: String,
    value_at: Range<usize>,
}

/// Checks one cloud auto-join string. `source` is the role file text: a
/// problem inside the string points at its own column when the string is
/// written without escapes, else at the whole string.
pub(super) fn check(found: &mut Findings, s: &SpStr, source: &str) {
    let text = s.get_ref();
    let span = s.span();
    // Where the string's first character is in the file, when each byte of
    // the value is written as itself (no escapes).
    let base = source.get(span.clone()).and_then(|lit| {
        let inner = lit
            .strip_prefix('"')
            .and_then(|l| l.strip_suffix('"'))
            .or_else(|| lit.strip_prefix('\'').and_then(|l| l.strip_suffix('\'')))?;
        (inner == text.as_str()).then_some(span.start + 1)
    });
    let at = |r: &Range<usize>| match base {
        Some(b) => Location::Span(b + r.start..b + r.end),
        None => Location::Span(span.clone()),
    };
    let whole = Location::Span(span.clone());
    if !text.trim_start().starts_with("provider=") {
        found.at(whole, "a cloud auto-join string starts with `provider=`");
        return;
    }
    if let Some((i, c)) = text.char_indices().find(|(_, c)| c.is_control()) {
        found.at(
            at(&(i..i + c.len_utf8())),
            "a cloud auto-join string holds a control character; a value with spaces is quoted: key=\"a b\"",
        );
        return;
    }
    let pairs = match pairs(text) {
        Ok(p) => p,
        Err((r, why)) => {
            found.at(at(&r), why);
            return;
        }
    };
    let mut seen: Vec<&str> = Vec::new();
    for p in &pairs {
        if seen.contains(&p.key.as_str()) {
            found.at(
                at(&p.key_at),
                format!("`{}` appears twice in a cloud auto-join string", p.key),
            );
        }
        seen.push(&p.key);
    }
    // `pairs` starts with `provider`: checked above.
    if let Some(p) = pairs.first() {
        if !PROVIDERS.contains(&p.value.as_str()) {
            let msg = match did_you_mean(&p.value, PROVIDERS) {
                Some(near) => format!(
                    "unknown cloud auto-join provider `{}`, did you mean `{near}`?",
                    p.value
                ),
                None => format!(
                    "unknown cloud auto-join provider `{}`, expected one of: {}",
                    p.value,
                    PROVIDERS.join(", ")
                ),
            };
            found.at(at(&p.value_at), msg);
        }
    }
}

/// Splits `text` into `key=value` pairs (go-discover's syntax: pairs
/// separated by spaces, a value with a space, `"`, `\` or `=` in double
/// quotes with `\` escapes), or says where and why it cannot.
fn pairs(text: &str) -> Result<Vec<Pair>, (Range<usize>, String)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        if i >= bytes.len() {
            return Ok(out);
        }
        let key_start = i;
        while i < bytes.len() && bytes[i] != b'=' && bytes[i] != b' ' {
            i += 1;
        }
        let key = &text[key_start..i];
        let key_at = key_start..i;
        let key_ok = key.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
            && key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !key_ok {
            return Err((
                key_at,
                format!(
                    "`{key}` is not a cloud auto-join key: keys are lower-case letters, digits and `_`"
                ),
            ));
        }
        if i >= bytes.len() || bytes[i] != b'=' {
            return Err((key_at, format!("`{key}` has no `=value`")));
        }
        i += 1;
        let value_start = i;
        let value = if bytes.get(i) == Some(&b'"') {
            let (value, end) = quoted(text, i)?;
            i = end;
            value
        } else {
            while i < bytes.len() && bytes[i] != b' ' {
                if bytes[i] == b'=' || bytes[i] == b'"' {
                    return Err((
                        i..i + 1,
                        format!(
                            "the value of `{key}` holds `{}`: quote it, {key}=\"...\"",
                            char::from(bytes[i])
                        ),
                    ));
                }
                i += 1;
            }
            text[value_start..i].to_string()
        };
        if value.is_empty() {
            return Err((key_at, format!("`{key}` has an empty value")));
        }
        if i < bytes.len() && bytes[i] != b' ' {
            return Err((
                i..i + 1,
                format!("a space must follow the value of `{key}`"),
            ));
        }
        out.push(Pair {
            key: key.to_string(),
            key_at,
            value,
            value_at: value_start..i,
        });
    }
}

/// The double-quoted value starting at byte `start` (the `"`), unescaped,
/// and the byte after its closing quote.
fn quoted(text: &str, start: usize) -> Result<(String, usize), (Range<usize>, String)> {
    let mut value = String::new();
    let mut chars = text[start + 1..].char_indices();
    while let Some((j, c)) = chars.next() {
        match c {
            '"' => return Ok((value, start + 1 + j + 1)),
            '\\' => match chars.next() {
                Some((_, e)) => value.push(e),
                None => break,
            },
            c => value.push(c),
        }
    }
    Err((start..text.len(), "unbalanced quotes".to_string()))
}

#[cfg(test)]
mod redact_tests {
    use super::*;

    #[test]
    fn credential_values_are_redacted_and_the_rest_kept() {
        assert_eq!(
            redact(
                "provider=aws tag_key=consul tag_value=ams2 access_key_id=AKIA secret_access_key=s3cr3t"
            ),
            "provider=aws tag_key=consul tag_value=ams2 access_key_id=AKIA secret_access_key=<redacted>"
        );
        assert_eq!(
            redact(
                "provider=azure tenant_id=t client_id=c client_secret=\"a b\" subscription_id=s"
            ),
            "provider=azure tenant_id=t client_id=c client_secret=<redacted> subscription_id=s"
        );
        assert_eq!(
            redact("provider=exoscale key=k1 secret=k2 api_token=k3 password=k4"),
            "provider=exoscale key=<redacted> secret=<redacted> api_token=<redacted> password=<redacted>"
        );
        assert_eq!(redact("provider=aws secret_access_key"), "<redacted>");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The problems of the TOML string `literal` (quotes included) as the
    /// value of a line of its own: `(column of the problem, message)`.
    fn problems_of(literal: &str) -> Vec<(usize, String)> {
        let source = format!("x = {literal}\n");
        let s = toml::from_str::<toml::Table>(&source).unwrap();
        let inner = s["x"].as_str().unwrap().to_string();
        let sp = toml::Spanned::new(4..source.len() - 1, inner);
        let mut found = Findings::default();
        check(&mut found, &sp, &source);
        found
            .0
            .into_iter()
            .map(|(loc, m)| match loc {
                Location::Span(r) => (r.start + 1, m),
                _ => (0, m),
            })
            .collect()
    }

    /// [`problems_of`] `value` as a literal string (no escapes: every
    /// column is exact).
    fn problems(value: &str) -> Vec<(usize, String)> {
        problems_of(&format!("'{value}'"))
    }

    #[test]
    fn good_strings_pass() {
        for ok in [
            "provider=aws tag_key=consul tag_value=ams2",
            "provider=aws  region=eu-west-1",
            "provider=gce project_name=p zone_pattern=eu-west-*",
            "provider=mdns service=consul v6=false",
            "provider=k8s label_selector=\"app=consul\"",
            "provider=azure tag_name=consul tag_value=\"a b\"",
            "provider=os",
        ] {
            assert_eq!(problems(ok), Vec::new(), "{ok}");
        }
    }

    #[test]
    fn bad_strings_say_what_and_where() {
        for (bad, col, why) in [
            ("tag_key=x", 5, "starts with `provider=`"),
            ("provider=awz tag_key=x", 15, "did you mean `aws`?"),
            ("provider=nope", 15, "expected one of: aliyun, aws,"),
            (
                "provider=aws Tag=x",
                19,
                "lower-case letters, digits and `_`",
            ),
            ("provider=aws tag_key", 19, "has no `=value`"),
            ("provider=aws tag_key=", 19, "has an empty value"),
            ("provider=aws tag_key=a=b", 28, "quote it"),
            ("provider=aws tag_key=x tag_key=y", 29, "appears twice"),
            ("provider=aws tag_key=\"a", 27, "unbalanced quotes"),
            ("provider=aws tag_key=\"a\"b", 30, "a space must follow"),
        ] {
            let got = problems(bad);
            assert_eq!(got.len(), 1, "{bad}: {got:?}");
            assert_eq!(got[0].0, col, "{bad}: {got:?}");
            assert!(got[0].1.contains(why), "{bad}: {got:?}");
        }
    }

    proptest::proptest! {
        /// Any string: no panic, and every problem inside the string as
        /// written.
        #[test]
        fn any_string_gets_a_verdict_inside_itself(
            value in "(provider=)?[a-z_ =\"\\\\Zé\u{85}-]{0,40}"
        ) {
            let literal = format!("'{value}'");
            let source = format!("x = {literal}\n");
            let span = 4..4 + literal.len();
            let sp = toml::Spanned::new(span.clone(), value.clone());
            let mut found = Findings::default();
            check(&mut found, &sp, &source);
            for (loc, _) in &found.0 {
                let Location::Span(r) = loc else {
                    panic!("{loc:?}");
                };
                proptest::prop_assert!(r.start >= span.start && r.end <= span.end, "{r:?} {value:?}");
            }
        }
    }

    #[test]
    fn a_string_with_escapes_points_at_itself_as_a_whole() {
        // `\t` in TOML: the value's bytes are not the file's.
        let got = problems_of("\"provider=aws\\ttag=x\"");
        assert_eq!(got[0].0, 5, "{got:?}");
        assert!(got[0].1.contains("control character"), "{got:?}");
    }
}

//! Redaction of secrets from free text (agent log lines, reasons, reload
//! errors) before it enters a [`super::HealthSnapshot`].
//!
//! Three patterns: a secret-named key followed by `=` or `:` and a value
//! (`encrypt = "…"`, `token: …`, `"password":"…"`, ACL fields such as
//! `SecretID`, `X-Consul-Token`, `initial_management`, `BootstrapSecret`),
//! any word shaped like a gossip key (32 bytes in standard base64: 43
//! characters and `=`), and any word shaped like a join token's
//! `<id>.<secret>` (6 and 16 lowercase letters or digits).

/// What replaces a secret.
pub const REDACTED: &str = "[redacted]";

/// Key names whose value is a secret (matched case-insensitively as a
/// suffix of the key, so `acl_token`, `SecretID` and `encrypt_key` match).
const SECRET_KEYS: &[&str] = &[
    "encrypt",
    "token",
    "secret",
    "secretid",
    "password",
    "passwd",
    "key",
    "private_key",
    "key_file",
    "credentials",
    // ACL fields of Consul and Nomad (agent output, API bodies).
    "initial_management",
    "bootstrapsecret",
    "replication",
];

/// Lengths of a join token's id and secret (`<id>.<secret>`).
const JOIN_TOKEN_PARTS: (usize, usize) = (6, 16);

/// Length of a base64-encoded 32-byte gossip key.
const GOSSIP_KEY_B64_LEN: usize = 44;

/// Returns `line` with every secret value replaced by [`REDACTED`].
pub fn redact(line: &str) -> String {
    let step1 = redact_key_values(line);
    redact_join_tokens(&redact_gossip_keys(&step1))
}

fn is_join_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.'
}

/// Replaces every word shaped like `<id>.<secret>` of a join token.
fn redact_join_tokens(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let shaped = word.split_once('.').is_some_and(|(id, secret)| {
            id.len() == JOIN_TOKEN_PARTS.0
                && secret.len() == JOIN_TOKEN_PARTS.1
                && !secret.contains('.')
        });
        out.push_str(if shaped { REDACTED } else { word });
        word.clear();
    };
    for c in line.chars() {
        if is_join_char(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.'
}

fn redact_key_values(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < chars.len() {
        // Find the end of a key-like word starting at i.
        if is_key_char(chars[i]) && (i == 0 || !is_key_char(chars[i - 1])) {
            let start = i;
            let mut j = i;
            while j < chars.len() && is_key_char(chars[j]) {
                j += 1;
            }
            let word: String = chars[start..j]
                .iter()
                .collect::<String>()
                .to_ascii_lowercase();
            out.extend(&chars[start..j]);
            i = j;
            if SECRET_KEYS.iter().any(|k| word.ends_with(k)) {
                // Optional closing quote of a JSON key, spaces, then = or :.
                let mut k = i;
                while k < chars.len() && (chars[k] == '"' || chars[k] == '\'' || chars[k] == ' ') {
                    k += 1;
                }
                if k < chars.len() && (chars[k] == '=' || chars[k] == ':') {
                    k += 1;
                    while k < chars.len() && chars[k] == ' ' {
                        k += 1;
                    }
                    out.extend(&chars[i..k]);
                    // The value: quoted string, or a run up to a separator.
                    if k < chars.len() && (chars[k] == '"' || chars[k] == '\'') {
                        let q = chars[k];
                        let mut e = k + 1;
                        while e < chars.len() && chars[e] != q {
                            e += 1;
                        }
                        out.push(q);
                        out.push_str(REDACTED);
                        if e < chars.len() {
                            out.push(q);
                            e += 1;
                        }
                        i = e;
                    } else {
                        let mut e = k;
                        while e < chars.len() && !matches!(chars[e], ' ' | ',' | '}' | ']' | ';') {
                            e += 1;
                        }
                        if e > k {
                            out.push_str(REDACTED);
                        }
                        i = e;
                    }
                }
            }
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

fn is_b64_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '='
}

fn redact_gossip_keys(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.len() == GOSSIP_KEY_B64_LEN
            && word.ends_with('=')
            && !word[..GOSSIP_KEY_B64_LEN - 1].contains('=')
        {
            out.push_str(REDACTED);
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in line.chars() {
        if is_b64_char(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=";

    #[test]
    fn hcl_and_json_secret_values_are_redacted() {
        let l = redact(&format!(
            r#"config: encrypt = "{KEY}" bind_addr = "10.0.0.1""#
        ));
        assert!(!l.contains(KEY), "{l}");
        assert!(l.contains("10.0.0.1"));
        let j = redact(r#"{"acl":{"tokens":{"agent_token":"s3cr3t-agent"}},"node":"n1"}"#);
        assert!(!j.contains("s3cr3t-agent"), "{j}");
        assert!(j.contains("n1"));
        let t = redact("X-Consul-Token: 0f1a2b3c-aaaa-bbbb-cccc-ddddeeeeffff next");
        assert!(!t.contains("0f1a2b3c"), "{t}");
        assert!(t.ends_with("next"));
    }

    #[test]
    fn acl_token_fields_in_agent_output_are_redacted() {
        const T: &str = "8f2d6c1e-4b7a-4e0f-9c3d-1a2b3c4d5e6f";
        for line in [
            format!(r#"{{"AccessorID":"a1","SecretID":"{T}","Description":"x"}}"#),
            format!("[DEBUG] agent.http: Request: X-Consul-Token: {T} path=/v1/agent/self"),
            format!("X-Nomad-Token={T}"),
            format!(r#"acl {{ tokens {{ initial_management = "{T}" }} }}"#),
            format!(r#"{{"BootstrapSecret": "{T}"}}"#),
            format!(r#"tokens {{ replication = "{T}", agent = "a" }}"#),
        ] {
            let r = redact(&line);
            assert!(!r.contains(T), "{line} -> {r}");
            assert!(r.contains(REDACTED), "{r}");
        }
        // The accessor ID is no secret and stays.
        assert!(redact(r#"{"AccessorID":"a1"}"#).contains("a1"));
    }

    #[test]
    fn a_join_token_is_redacted_anywhere_and_lookalikes_stay() {
        let l = redact("joining with abc123.0123456789abcdef@sha256:00ff now");
        assert!(!l.contains("0123456789abcdef"), "{l}");
        assert!(l.contains("now"));
        assert_eq!(redact("node ams2.server.01 up"), "node ams2.server.01 up");
        assert_eq!(redact("consul v1.20.1"), "consul v1.20.1");
    }

    #[test]
    fn bare_gossip_key_is_redacted_anywhere() {
        let l = redact(&format!("keyring: installing {KEY} now"));
        assert_eq!(l, format!("keyring: installing {REDACTED} now"));
    }

    #[test]
    fn ordinary_lines_are_untouched() {
        let l = "2026-01-01T00:00:00Z [INFO] agent: Synced node info: node=ams2-server-01";
        assert_eq!(redact(l), l);
        assert_eq!(redact("monkey business"), "monkey business");
    }
}

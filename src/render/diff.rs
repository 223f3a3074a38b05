//! A unified-style line diff for `render --check`, with secret values
//! masked so drift output never shows a gossip key or token.

use std::fmt::Write as _;

/// Lines of context around each change.
const CONTEXT: usize = 3;

/// Key-name fragments whose values are masked in diffs.
const SECRET_KEYS: [&str; 4] = ["encrypt", "token", "secret", "password"];

/// Whole key names whose values are masked: the ACL tokens of Consul's
/// `acl.tokens` block, whose names say nothing of a secret.
const SECRET_NAMES: [&str; 6] = [
    "agent",
    "initial_management",
    "replication",
    "default",
    "agent_recovery",
    "config_file_service_registration",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Same,
    Del,
    Add,
}

/// Masks the value of a `"key": value` or `key = value` line whose key
/// names a secret.
pub fn redact_line(line: &str) -> String {
    // A cloud auto-join string in a `retry_join` list: its credentials.
    let item = line.trim();
    if let Some(inner) = item
        .strip_prefix("\"provider=")
        .map(|_| item.trim_end_matches(',').trim_matches('"'))
    {
        let indent = &line[..line.len() - line.trim_start().len()];
        let comma = if item.ends_with(',') { "," } else { "" };
        return format!(
            "{indent}\"{}\"{comma}",
            crate::role::redact_cloud_auto_join(inner)
        );
    }
    let (sep, idx) = match (line.find("\":"), line.find(" = ")) {
        (Some(i), _) => ("\":", i),
        (None, Some(i)) => (" = ", i),
        _ => return line.to_string(),
    };
    let key = line[..idx].to_ascii_lowercase();
    let name = key.trim().trim_matches('"');
    let value = line[idx + sep.len()..].trim_start();
    // A table or list opening (`"tokens": {`) holds no value itself.
    let opens = value.starts_with('{') || value.starts_with('[');
    if !opens && (SECRET_KEYS.iter().any(|s| key.contains(s)) || SECRET_NAMES.contains(&name)) {
        let end = idx + sep.trim_end().len();
        let comma = if line.trim_end().ends_with(',') {
            ","
        } else {
            ""
        };
        format!("{} \"{}\"{comma}", &line[..end], crate::role::REDACTED)
    } else {
        line.to_string()
    }
}

/// Line operations turning `a` into `b` (longest common subsequence).
fn ops<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<(Op, &'a str)> {
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            out.push((Op::Same, a[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push((Op::Del, a[i]));
            i += 1;
        } else {
            out.push((Op::Add, b[j]));
            j += 1;
        }
    }
    out
}

/// A unified diff of `old` → `new` (empty when equal), secrets masked.
pub fn unified(old: &str, new: &str, old_label: &str, new_label: &str) -> String {
    if old == new {
        return String::new();
    }
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let ops = ops(&a, &b);
    let mut out = format!("--- {old_label}\n+++ {new_label}\n");
    let changes: Vec<usize> = (0..ops.len()).filter(|&k| ops[k].0 != Op::Same).collect();
    let mut k = 0;
    while k < changes.len() {
        let start = changes[k].saturating_sub(CONTEXT);
        let mut end = (changes[k] + CONTEXT + 1).min(ops.len());
        while k + 1 < changes.len() && changes[k + 1] <= end + CONTEXT {
            k += 1;
            end = (changes[k] + CONTEXT + 1).min(ops.len());
        }
        // Line numbers of the hunk's start on each side.
        let old_start = ops[..start].iter().filter(|o| o.0 != Op::Add).count();
        let new_start = ops[..start].iter().filter(|o| o.0 != Op::Del).count();
        let old_len = ops[start..end].iter().filter(|o| o.0 != Op::Add).count();
        let new_len = ops[start..end].iter().filter(|o| o.0 != Op::Del).count();
        let _ = writeln!(
            out,
            "@@ -{},{old_len} +{},{new_len} @@",
            old_start + usize::from(old_len > 0),
            new_start + usize::from(new_len > 0)
        );
        for (op, line) in &ops[start..end] {
            let mark = match op {
                Op::Same => ' ',
                Op::Del => '-',
                Op::Add => '+',
            };
            let _ = writeln!(out, "{mark}{}", redact_line(line));
        }
        k += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_texts_have_no_diff() {
        assert_eq!(unified("a\nb\n", "a\nb\n", "x", "y"), "");
    }

    #[test]
    fn changed_line_shows_as_removed_and_added_with_context() {
        let d = unified("a\nb\nc\n", "a\nB\nc\n", "disk", "rendered");
        assert_eq!(
            d,
            "--- disk\n+++ rendered\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n"
        );
    }

    #[test]
    fn secrets_are_masked_in_both_formats() {
        assert_eq!(
            redact_line("  \"encrypt\": \"abc=\","),
            "  \"encrypt\": \"<redacted>\","
        );
        assert_eq!(
            redact_line("  encrypt = \"abc=\""),
            "  encrypt = \"<redacted>\""
        );
        assert_eq!(redact_line("  region = \"eu\""), "  region = \"eu\"");
    }

    #[test]
    fn acl_tokens_and_cloud_credentials_are_masked() {
        for (line, want) in [
            (
                "      \"agent\": \"1111\",",
                "      \"agent\": \"<redacted>\",",
            ),
            (
                "      \"initial_management\": \"2222\",",
                "      \"initial_management\": \"<redacted>\",",
            ),
            (
                "      \"replication\": \"3333\"",
                "      \"replication\": \"<redacted>\"",
            ),
            ("  token = \"4444\"", "  token = \"<redacted>\""),
            ("    \"tokens\": {", "    \"tokens\": {"),
            (
                "    \"provider=aws tag_key=k secret_access_key=5555\",",
                "    \"provider=aws tag_key=k secret_access_key=<redacted>\",",
            ),
            ("    \"10.0.1.11\",", "    \"10.0.1.11\","),
        ] {
            assert_eq!(redact_line(line), want);
        }
    }
}

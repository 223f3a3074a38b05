//! A small HCL writer for Nomad's config, and a reader of exactly what the
//! writer produces (used to compare two rendered files key by key).
//!
//! Output stays in the subset HCL1 (what Nomad parses) and HCL2 share:
//! `key = value` attributes, `name { ... }` blocks, inline lists of scalars,
//! double-quoted strings. Attributes come before blocks, each sorted by key,
//! so the same tree always gives the same bytes.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Why a TOML value cannot be written as HCL.
#[derive(Debug, thiserror::Error)]
#[error("`{path}` mixes tables and plain values in one list, which HCL cannot express")]
pub struct HclError {
    /// Dotted path of the value.
    pub path: String,
}

const INDENT: &str = "  ";

/// Writes a table as the body of an HCL file.
pub fn write_body(table: &toml::Table) -> Result<String, HclError> {
    let mut out = String::new();
    write_table(&mut out, table, 0, "")?;
    Ok(out)
}

fn is_block_list(v: &toml::Value) -> bool {
    matches!(v, toml::Value::Array(a) if !a.is_empty() && a.iter().all(toml::Value::is_table))
}

fn write_table(
    out: &mut String,
    t: &toml::Table,
    depth: usize,
    path: &str,
) -> Result<(), HclError> {
    let pad = INDENT.repeat(depth);
    let mut keys: Vec<&String> = t.keys().collect();
    keys.sort();
    let (blocks, attrs): (Vec<&String>, Vec<&String>) = keys
        .into_iter()
        .partition(|k| t[k.as_str()].is_table() || is_block_list(&t[k.as_str()]));
    for k in &attrs {
        let here = join(path, k);
        let _ = writeln!(out, "{pad}{} = {}", key(k), value(&t[k.as_str()], &here)?);
    }
    for (i, k) in blocks.iter().enumerate() {
        if depth == 0 && (i > 0 || !attrs.is_empty()) {
            out.push('\n');
        }
        let here = join(path, k);
        let tables: Vec<&toml::Table> = match &t[k.as_str()] {
            toml::Value::Table(inner) => vec![inner],
            toml::Value::Array(a) => a.iter().filter_map(toml::Value::as_table).collect(),
            _ => Vec::new(),
        };
        for inner in tables {
            let _ = writeln!(out, "{pad}{} {{", key(k));
            write_table(out, inner, depth + 1, &here)?;
            let _ = writeln!(out, "{pad}}}");
        }
    }
    Ok(())
}

fn join(path: &str, k: &str) -> String {
    if path.is_empty() {
        k.to_string()
    } else {
        format!("{path}.{k}")
    }
}

fn key(k: &str) -> String {
    let bare = k
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare { k.to_string() } else { quote(k) }
}

/// A double-quoted HCL string.
pub fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\r' => q.push_str("\\r"),
            '\t' => q.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(q, "\\u{:04x}", u32::from(c));
            }
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

fn value(v: &toml::Value, path: &str) -> Result<String, HclError> {
    Ok(match v {
        toml::Value::String(s) => quote(s),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => {
            let s = f.to_string();
            if s.contains(['.', 'e', 'E']) || !f.is_finite() {
                s
            } else {
                format!("{s}.0")
            }
        }
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => quote(&d.to_string()),
        toml::Value::Array(a) => {
            let items: Result<Vec<String>, HclError> = a
                .iter()
                .map(|x| match x {
                    toml::Value::Table(_) => Err(HclError {
                        path: path.to_string(),
                    }),
                    other => value(other, path),
                })
                .collect();
            format!("[{}]", items?.join(", "))
        }
        toml::Value::Table(_) => {
            return Err(HclError {
                path: path.to_string(),
            });
        }
    })
}

/// Reads a file the writer produced into `dotted.path → value text`.
/// Repeated blocks get `#n` suffixes. `None` if the text is not in the
/// writer's subset (e.g. edited by hand).
pub fn flatten(text: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut stack: Vec<String> = Vec::new();
    let mut seen_blocks: BTreeMap<String, usize> = BTreeMap::new();
    for line in text.lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with("//") {
            continue;
        }
        if l == "}" {
            stack.pop()?;
            continue;
        }
        if let Some(name) = l.strip_suffix('{') {
            let name = name.trim().trim_matches('"');
            let mut full = stack
                .last()
                .map_or(name.to_string(), |p| format!("{p}.{name}"));
            let n = seen_blocks.entry(full.clone()).or_insert(0);
            *n += 1;
            if *n > 1 {
                full = format!("{full}#{n}");
            }
            stack.push(full);
            continue;
        }
        let (k, v) = l.split_once(" = ")?;
        let k = k.trim().trim_matches('"');
        let full = stack.last().map_or(k.to_string(), |p| format!("{p}.{k}"));
        out.insert(full, v.trim().to_string());
    }
    stack.is_empty().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_come_before_blocks_and_are_sorted() {
        let t: toml::Table = toml::from_str(
            "z = 1\na = \"x\"\n[server]\nenabled = true\n[server.server_join]\nretry_join = [\"a\", \"b\"]\n[advertise]\nhttp = \"10.0.0.1\"\n",
        )
        .unwrap();
        let out = write_body(&t).unwrap();
        assert_eq!(
            out,
            "a = \"x\"\nz = 1\n\nadvertise {\n  http = \"10.0.0.1\"\n}\n\nserver {\n  enabled = true\n  server_join {\n    retry_join = [\"a\", \"b\"]\n  }\n}\n"
        );
        let flat = flatten(&out).unwrap();
        assert_eq!(flat["server.server_join.retry_join"], "[\"a\", \"b\"]");
        assert_eq!(flat["a"], "\"x\"");
    }

    #[test]
    fn strings_are_escaped_and_odd_keys_quoted() {
        let mut t = toml::Table::new();
        t.insert("odd key".into(), toml::Value::String("a\"b\\c\n".into()));
        assert_eq!(
            write_body(&t).unwrap(),
            "\"odd key\" = \"a\\\"b\\\\c\\n\"\n"
        );
    }

    #[test]
    fn lists_mixing_tables_and_values_are_refused() {
        let t: toml::Table = toml::from_str("x = [1, { a = 1 }]").unwrap();
        assert!(write_body(&t).is_err());
    }

    #[test]
    fn unbalanced_text_does_not_flatten() {
        assert!(flatten("a {\n b = 1\n").is_none());
        assert!(flatten("not hcl at all").is_none());
    }
}

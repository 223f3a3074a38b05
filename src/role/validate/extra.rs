//! `[<agent>.extra]`: pass-through tables copied into the agent's config.
//! Their values must be expressible in the agent's format: HCL has no list
//! mixing blocks and plain values, JSON no NaN or infinity.

use toml::Spanned;

use super::Findings;

/// The table (empty when absent), its first inexpressible value reported.
pub(super) fn table(
    found: &mut Findings,
    v: &Option<Spanned<toml::Table>>,
    product: &str,
) -> toml::Table {
    let Some(t) = v else {
        return toml::Table::default();
    };
    if let Some((path, why)) = bad_value(t.get_ref(), "") {
        found.span(t, format!("`{product}.extra.{path}` {why}"));
    }
    t.get_ref().clone()
}

/// The first value of a pass-through table that neither JSON nor HCL can
/// hold, and why.
fn bad_value(t: &toml::Table, prefix: &str) -> Option<(String, &'static str)> {
    let mut keys: Vec<&String> = t.keys().collect();
    keys.sort();
    for k in keys {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match &t[k.as_str()] {
            toml::Value::Float(f) if !f.is_finite() => {
                return Some((path, "is not a finite number"));
            }
            toml::Value::Table(inner) => {
                if let Some(found) = bad_value(inner, &path) {
                    return Some(found);
                }
            }
            toml::Value::Array(a) => {
                let tables = a.iter().filter(|x| x.is_table()).count();
                if tables > 0 && tables < a.len() {
                    return Some((path, "mixes tables and plain values in one list"));
                }
                for x in a {
                    if let toml::Value::Table(inner) = x {
                        if let Some(found) = bad_value(inner, &path) {
                            return Some(found);
                        }
                    } else if let toml::Value::Float(f) = x {
                        if !f.is_finite() {
                            return Some((path, "is not a finite number"));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    None
}

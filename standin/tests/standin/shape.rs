//! Compare an answer's JSON shape with a sample of `tests/data/agent-api`:
//! every key of the sample must be present with the same JSON type, except
//! the manifest's deviations ('a.b' not compared, 'a.b.*' compared for
//! presence and type only). Extra keys are allowed (the real agents return
//! more fields than their docs show).

use serde_json::Value;

use crate::agent_api_file;

/// The sample body and deviations of a manifest entry.
pub fn sample(product: &str, name: &str) -> (Value, Vec<String>) {
    let manifest: Value =
        serde_json::from_str(&agent_api_file("manifest.json")).expect("manifest is JSON");
    let entry = manifest[product]
        .as_array()
        .expect("product list")
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no manifest entry {product}/{name}"))
        .clone();
    let file = entry["body"].as_str().expect("entry has a body file");
    let body: Value = serde_json::from_str(&agent_api_file(&format!("{product}/{file}")))
        .expect("sample is JSON");
    let devs = entry["deviations"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d["path"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    (body, devs)
}

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Panic with every difference between the sample's shape and `actual`.
pub fn assert_shape(product: &str, name: &str, actual: &Value) {
    let (sample, devs) = sample(product, name);
    let mut errors = Vec::new();
    compare(&sample, actual, "", &devs, &mut errors);
    assert!(
        errors.is_empty(),
        "{product}/{name} shape differs from the sample:\n  {}\nactual: {actual:#}",
        errors.join("\n  ")
    );
}

fn compare(sample: &Value, actual: &Value, path: &str, devs: &[String], errors: &mut Vec<String>) {
    if devs.iter().any(|d| d == path) {
        return;
    }
    if sample.is_null() {
        return;
    }
    if type_of(sample) != type_of(actual) {
        errors.push(format!(
            "{}: expected {}, got {}",
            if path.is_empty() { "<root>" } else { path },
            type_of(sample),
            type_of(actual)
        ));
        return;
    }
    if devs.iter().any(|d| *d == format!("{path}.*")) {
        return;
    }
    match (sample, actual) {
        (Value::Object(s), Value::Object(a)) => {
            for (k, sv) in s {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                if devs.contains(&p) {
                    continue;
                }
                match a.get(k) {
                    Some(av) => compare(sv, av, &p, devs, errors),
                    None => errors.push(format!("{p}: missing")),
                }
            }
        }
        (Value::Array(s), Value::Array(a)) => {
            // An empty actual list has nothing to compare; callers assert
            // non-emptiness where it matters.
            if let Some(first) = s.first() {
                for av in a {
                    compare(first, av, &format!("{path}[]"), devs, errors);
                }
            }
        }
        _ => {}
    }
}

#[test]
fn shape_check_reports_missing_keys_and_wrong_types() {
    let mut errors = Vec::new();
    let sample = serde_json::json!({"a": 1, "b": {"c": "x"}, "d": [{"e": true}]});
    let actual = serde_json::json!({"a": "1", "b": {}, "d": [{"e": 1}]});
    compare(&sample, &actual, "", &[], &mut errors);
    assert_eq!(
        errors,
        vec![
            "a: expected number, got string",
            "b.c: missing",
            "d[].e: expected bool, got number"
        ]
    );
}

//! Fault knobs: `STANDIN_*` settings read from the environment or, for an
//! agent started with a clean environment (as hashi-supervisor starts its
//! agents), from the knob file `standin.env` in the agent's `data_dir`.
//!
//! The file holds `KEY=VALUE` lines (`#` comments and blank lines ignored);
//! only `STANDIN_*` keys are taken. It is read once, right after the config
//! is loaded, so it serves the knobs read from then on; the environment wins
//! over the file.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

/// Name of the knob file inside the agent's `data_dir`.
pub const KNOB_FILE: &str = "standin.env";

static FILE_KNOBS: OnceLock<HashMap<String, String>> = OnceLock::new();

/// Reads `<data_dir>/standin.env` when it exists (once; later calls do
/// nothing). A missing file means no file knobs.
pub fn load(data_dir: &Path) {
    let path = data_dir.join(KNOB_FILE);
    let map = match std::fs::read_to_string(&path) {
        Ok(text) => parse(&text),
        Err(_) => HashMap::new(),
    };
    if !map.is_empty() {
        let mut names: Vec<&str> = map.keys().map(String::as_str).collect();
        names.sort_unstable();
        crate::events::log(&format!(
            "    [INFO] stand-in: knobs from {}: {}",
            path.display(),
            names.join(", ")
        ));
    }
    let _ = FILE_KNOBS.set(map);
}

fn parse(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| k.starts_with("STANDIN_"))
        .collect()
}

/// A knob's value: the environment first, then the knob file.
pub fn var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .or_else(|| FILE_KNOBS.get().and_then(|m| m.get(name).cloned()))
}

/// A knob's value from a non-empty environment variable, else the knob
/// file (an empty variable counts as unset).
pub fn non_empty_var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| FILE_KNOBS.get().and_then(|m| m.get(name).cloned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knob_file_lines_are_parsed_and_only_standin_keys_kept() {
        let m = parse(
            "# faults\nSTANDIN_CRASH_AFTER_MS = 500\n\nPATH=/x\nSTANDIN_HANG_FILE=/tmp/h\nnonsense\n",
        );
        assert_eq!(m.len(), 2);
        assert_eq!(m["STANDIN_CRASH_AFTER_MS"], "500");
        assert_eq!(m["STANDIN_HANG_FILE"], "/tmp/h");
    }
}

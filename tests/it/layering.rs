//! The layering of `src/`, checked: dependencies point one way along the
//! pipeline (`lib.rs`, "Architecture"), so the architecture stays true
//! without anyone watching it.
//!
//! Every `crate::` path in a module's code (a `use` line, `pub use`, a group
//! `use crate::{a, b::{c}}`, or a path in an expression or a type) names the
//! top-level module it reaches into. A module may reach only into modules of
//! an earlier stage of [`STAGES`]. Modules of one stage are siblings and must
//! not reach into each other either (`release` and `render` are two
//! independent consumers of the plan, `health` and `catalog` two independent
//! readers of the node), except in the last stage, which is the
//! application's wiring (`commands` parses with `cli` and returns `error`).
//!
//! Unit tests beside the code count as the module's code: a test that needs
//! a later stage (building a plan from a role) lives with that later stage or
//! in `tests/it`. Comments, doc links and string literals are not code and
//! are skipped. Paths through `super::` stay inside a module and are not
//! read; the crate writes cross-module paths as `crate::`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The stages in pipeline order, each with its top-level modules (a file
/// `src/<m>.rs` or a directory `src/<m>/`). A module missing here fails the
/// test: put it where it belongs. A module listed here but absent from
/// `src/` is fine (`agent` and `catalog` arrive with another branch).
const STAGES: &[(&str, &[&str])] = &[
    // Words and numbers every stage uses: no behaviour, no imports.
    ("shared vocabulary", &["vocab", "exit", "paths", "version"]),
    // Parsers of outside formats that know nothing of the pipeline.
    ("formats", &["openpgp", "html"]),
    // Every stage logs, and supervise routes the agents' output through it.
    ("logging", &["telemetry"]),
    ("role", &["role"]),
    // What discovery finds, as values the plan, health and catalog share.
    ("peers", &["peers"]),
    ("plan", &["plan"]),
    ("release/render", &["release", "render"]),
    // The one client of the agents' HTTP APIs and the observers.
    ("agent", &["agent"]),
    // The rolling-upgrade gate: asks the agents, decides; supervise acts.
    ("upgrade", &["upgrade"]),
    ("supervise", &["supervise"]),
    (
        "health/catalog/security",
        &["health", "catalog", "security"],
    ),
    // The application: commands wire the stages together, `error` wraps
    // every stage's error and maps it to an exit code, `shutdown` turns
    // signals into daemon events, `main` is the binary.
    (
        "application",
        &["commands", "cli", "error", "shutdown", "main", "fuzzing"],
    ),
];

/// Items of the crate root (`lib.rs`) and the module they belong to.
const ROOT_ITEMS: &[(&str, &str)] = &[
    // `pub use error::Error`.
    ("Error", "error"),
    // The supervisor's own version.
    ("SUPERVISOR_VERSION", "version"),
];

/// One `crate::` path found in a source file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CratePath {
    /// 1-based line of the path's first segment.
    line: usize,
    /// The first segment after `crate::` (a module or a root item).
    first: String,
    /// The path as written, for messages (`crate::error::EXIT_CONFIG`).
    text: String,
}

/// A module reaching into one it must not.
#[derive(Debug)]
struct Violation {
    file: String,
    line: usize,
    from: String,
    to: String,
    text: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (fs, fname) = stage_of(&self.from).unwrap_or((usize::MAX, "?"));
        let (ts, tname) = stage_of(&self.to).unwrap_or((usize::MAX, "?"));
        let why = if fs == ts {
            "a sibling of the same stage"
        } else {
            "a later stage"
        };
        write!(
            f,
            "{}:{}: `{}` (stage {fname}) imports `{}` (stage {tname}), {why}: `{}`",
            self.file, self.line, self.from, self.to, self.text
        )
    }
}

/// The stage index and name of a top-level module.
fn stage_of(module: &str) -> Option<(usize, &'static str)> {
    STAGES
        .iter()
        .enumerate()
        .find(|(_, (_, mods))| mods.contains(&module))
        .map(|(i, (name, _))| (i, *name))
}

/// Whether `from` may reach into `to`.
fn is_allowed(from: &str, to: &str) -> Result<bool, String> {
    if from == to {
        return Ok(true);
    }
    let (fs, _) = stage_of(from).ok_or_else(|| format!("module `{from}` has no stage"))?;
    let (ts, _) = stage_of(to).ok_or_else(|| format!("module `{to}` has no stage"))?;
    Ok(ts < fs || (ts == fs && fs == STAGES.len() - 1))
}

/// The module a path's first segment reaches: a module, or the module a
/// crate-root item belongs to.
fn target_module(first: &str) -> Option<&'static str> {
    if let Some((_, mods)) = STAGES.iter().find(|(_, mods)| mods.contains(&first)) {
        return mods.iter().copied().find(|m| *m == first);
    }
    ROOT_ITEMS
        .iter()
        .find(|(item, _)| *item == first)
        .map(|(_, owner)| *owner)
}

/// The source with comments, string literals and char literals replaced by
/// spaces (newlines kept, so line numbers hold).
fn strip_comments_and_literals(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |out: &mut String, ch: char| out.push(if ch == '\n' { '\n' } else { ' ' });
    let is_ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut i = 0;
    while i < c.len() {
        let prev_ident = i > 0 && is_ident(c[i - 1]);
        // Line comment (doc comments included).
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                blank(&mut out, c[i]);
                i += 1;
            }
            continue;
        }
        // Block comment, nested.
        if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
            continue;
        }
        // Raw string: r"..", r#".."#, br#".."#.
        if !prev_ident && (c[i] == 'r' || (c[i] == 'b' && c.get(i + 1) == Some(&'r'))) {
            let start = if c[i] == 'b' { i + 2 } else { i + 1 };
            let mut j = start;
            while c.get(j) == Some(&'#') {
                j += 1;
            }
            if c.get(j) == Some(&'"') {
                let hashes = j - start;
                let mut k = j + 1;
                let end = loop {
                    match c.get(k) {
                        None => break c.len(),
                        Some('"') if (1..=hashes).all(|h| c.get(k + h) == Some(&'#')) => {
                            break k + 1 + hashes;
                        }
                        _ => k += 1,
                    }
                };
                for &ch in &c[i..end] {
                    blank(&mut out, ch);
                }
                i = end;
                continue;
            }
        }
        // String (and byte string: the `b` before it is kept, harmlessly).
        if c[i] == '"' {
            blank(&mut out, c[i]);
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' && i + 1 < c.len() {
                    blank(&mut out, c[i]);
                    i += 1;
                }
                blank(&mut out, c[i]);
                i += 1;
            }
            if i < c.len() {
                blank(&mut out, c[i]);
                i += 1;
            }
            continue;
        }
        // Char literal ('x', '\n', '\u{..}', '"'); a lifetime ('a) is code.
        if c[i] == '\'' {
            let end = if c.get(i + 1) == Some(&'\\') {
                (i + 2..c.len()).find(|&k| c[k] == '\'').map(|k| k + 1)
            } else if c.get(i + 2) == Some(&'\'') {
                Some(i + 3)
            } else {
                None
            };
            if let Some(end) = end {
                for &ch in &c[i..end] {
                    blank(&mut out, ch);
                }
                i = end;
                continue;
            }
        }
        out.push(c[i]);
        i += 1;
    }
    out
}

/// Every `crate::` path in `src` (comments and literals skipped): one entry
/// per first segment, so `use crate::{a, b::{c}}` gives `a` and `b`.
/// `$crate`, `pub(crate)` and `other_crate::` are not paths into this crate.
fn crate_paths(src: &str) -> Vec<CratePath> {
    let code: Vec<char> = strip_comments_and_literals(src).chars().collect();
    let is_ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let line_at = |pos: usize| 1 + code[..pos].iter().filter(|&&ch| ch == '\n').count();
    let skip_ws = |mut k: usize| {
        while k < code.len() && code[k].is_whitespace() {
            k += 1;
        }
        k
    };
    // An identifier path from `k` (`a::b::C`), as written without spaces.
    let path_from = |mut k: usize| {
        let mut text = String::new();
        loop {
            let start = k;
            while k < code.len() && is_ident(code[k]) {
                k += 1;
            }
            text.extend(&code[start..k]);
            let next = skip_ws(k);
            if code.get(next) == Some(&':') && code.get(next + 1) == Some(&':') {
                let after = skip_ws(next + 2);
                if code.get(after).is_some_and(|&ch| is_ident(ch)) {
                    text.push_str("::");
                    k = after;
                    continue;
                }
            }
            return text;
        }
    };
    let mut found = Vec::new();
    let word: Vec<char> = "crate".chars().collect();
    let mut i = 0;
    while i + word.len() <= code.len() {
        let at_word = code[i..i + word.len()] == word[..]
            && (i == 0 || !(is_ident(code[i - 1]) || code[i - 1] == '$'))
            && !code.get(i + word.len()).is_some_and(|&ch| is_ident(ch));
        if !at_word {
            i += 1;
            continue;
        }
        let k = skip_ws(i + word.len());
        if !(code.get(k) == Some(&':') && code.get(k + 1) == Some(&':')) {
            i += word.len();
            continue;
        }
        let k = skip_ws(k + 2);
        if code.get(k) == Some(&'{') {
            // A group: the first segment of each item at depth 1.
            let mut depth = 1;
            let mut item_start = true;
            let mut j = k + 1;
            while j < code.len() && depth > 0 {
                match code[j] {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 1 => item_start = true,
                    ch if depth == 1 && item_start && is_ident(ch) => {
                        item_start = false;
                        let text = path_from(j);
                        let first: String =
                            code[j..].iter().take_while(|&&ch| is_ident(ch)).collect();
                        if first != "self" {
                            found.push(CratePath {
                                line: line_at(j),
                                first,
                                text: format!("crate::{{{text}}}"),
                            });
                        }
                        j += text.chars().take_while(|&ch| is_ident(ch)).count();
                        continue;
                    }
                    _ => {}
                }
                j += 1;
            }
            i = j;
        } else if code.get(k).is_some_and(|&ch| is_ident(ch)) {
            let text = path_from(k);
            let first: String = code[k..].iter().take_while(|&&ch| is_ident(ch)).collect();
            found.push(CratePath {
                line: line_at(k),
                first,
                text: format!("crate::{text}"),
            });
            i = k + 1;
        } else {
            i = k;
        }
    }
    found
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let entries = std::fs::read_dir(&d).expect("src/ is readable");
        for entry in entries {
            let path = entry.expect("src/ is readable").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The top-level module a file of `src/` belongs to (`None` for `lib.rs`,
/// the crate root, which only declares the modules).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).expect("a file found under src/");
    let first = rel.components().next()?.as_os_str().to_str()?;
    let module = first.strip_suffix(".rs").unwrap_or(first);
    (module != "lib").then(|| module.to_string())
}

#[test]
fn modules_import_only_from_earlier_stages() {
    let src = src_dir();
    let mut problems = Vec::new();
    let mut violations = Vec::new();
    let mut modules = BTreeSet::new();
    for file in rust_files(&src) {
        let Some(from) = module_of(&src, &file) else {
            continue;
        };
        let rel = format!("src/{}", file.strip_prefix(&src).unwrap().to_string_lossy());
        if modules.insert(from.clone()) && stage_of(&from).is_none() {
            problems.push(format!(
                "module `{from}` ({rel}) has no stage in STAGES (tests/it/layering.rs): add it to the stage it belongs to"
            ));
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for p in crate_paths(&text) {
            let Some(to) = target_module(&p.first) else {
                problems.push(format!(
                    "{rel}:{}: `{}` names `{}`, neither a module in STAGES nor an item in ROOT_ITEMS",
                    p.line, p.text, p.first
                ));
                continue;
            };
            if !is_allowed(&from, to).unwrap() {
                violations.push(Violation {
                    file: rel.clone(),
                    line: p.line,
                    from: from.clone(),
                    to: to.to_string(),
                    text: p.text,
                });
            }
        }
    }
    for v in &violations {
        problems.push(v.to_string());
    }
    assert!(
        problems.is_empty(),
        "the layering of src/ is broken (stages: {}):\n{}",
        STAGES
            .iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(" -> "),
        problems.join("\n")
    );
}

#[test]
fn every_stage_module_is_named_once() {
    let mut seen = BTreeSet::new();
    for (_, mods) in STAGES {
        for m in *mods {
            assert!(seen.insert(*m), "`{m}` is in two stages");
        }
    }
    for (item, owner) in ROOT_ITEMS {
        assert!(
            stage_of(owner).is_some(),
            "root item `{item}`: `{owner}` has no stage"
        );
        assert!(
            stage_of(item).is_none(),
            "`{item}` is a module, not a root item"
        );
    }
}

fn firsts(src: &str) -> Vec<(usize, String)> {
    crate_paths(src)
        .into_iter()
        .map(|p| (p.line, p.first))
        .collect()
}

#[test]
fn a_use_group_names_each_first_segment_once() {
    let src = "use crate::{a, b::{c, d::{e}}, f::G as H};\n";
    assert_eq!(
        firsts(src),
        [(1, "a".into()), (1, "b".into()), (1, "f".into())]
    );
    let paths = crate_paths(src);
    assert_eq!(paths[1].text, "crate::{b}");
    assert_eq!(paths[2].text, "crate::{f::G}");
}

#[test]
fn a_multi_line_group_gives_each_segment_its_own_line() {
    let src = "use crate::{\n    health,\n    release::{self, Installed},\n    role,\n};\n";
    assert_eq!(
        firsts(src),
        [
            (2, "health".into()),
            (3, "release".into()),
            (4, "role".into())
        ]
    );
}

#[test]
fn self_in_a_group_and_pub_use_are_read() {
    assert_eq!(firsts("use crate::{self, x};"), [(1, "x".into())]);
    let paths = crate_paths("pub use crate::vocab::{Product, RestartPolicy};");
    assert_eq!(paths.len(), 1);
    assert_eq!(paths[0].first, "vocab");
    assert_eq!(paths[0].text, "crate::vocab");
}

#[test]
fn paths_in_expressions_and_types_are_read() {
    let src = "fn f(p: &crate::plan::Plan) -> u8 {\n    let x = crate::error::EXIT_CONFIG;\n    crate :: role :: parse(x)\n}\n";
    assert_eq!(
        firsts(src),
        [(1, "plan".into()), (2, "error".into()), (3, "role".into())]
    );
    assert_eq!(crate_paths(src)[1].text, "crate::error::EXIT_CONFIG");
    assert_eq!(crate_paths(src)[2].text, "crate::role::parse");
}

#[test]
fn comments_and_strings_are_not_code() {
    let src = r####"
// use crate::a;
/// See [`crate::b::B`].
//! crate::c
/* crate::d /* nested crate::e */ crate::f */
let s = "crate::g::h \" crate::i";
let r = r#"crate::j "quoted" crate::k"#;
let b = br##"crate::l"##;
let q = '"'; let e = '\''; let u = '\u{1F600}';
fn f<'a>(x: &'a str) -> &'a str { x }
use crate::m::N;
"####;
    assert_eq!(firsts(src), [(11, "m".into())]);
}

#[test]
fn other_crates_and_visibilities_are_not_paths_into_this_crate() {
    let src = "pub(crate) fn a() {}\n$crate::b::c!();\nmy_crate::d::e();\nhashi_supervisor::f::g();\nlet crate_x = 1;\n";
    assert_eq!(firsts(src), []);
}

#[test]
fn the_rule_allows_earlier_stages_only() {
    // Earlier stage: allowed.
    assert!(is_allowed("plan", "role").unwrap());
    assert!(is_allowed("health", "release").unwrap());
    assert!(is_allowed("role", "vocab").unwrap());
    // Later stage: refused.
    assert!(!is_allowed("role", "plan").unwrap());
    assert!(!is_allowed("render", "error").unwrap());
    assert!(!is_allowed("supervise", "health").unwrap());
    // Siblings: refused, except in the application stage.
    assert!(!is_allowed("release", "render").unwrap());
    assert!(!is_allowed("health", "catalog").unwrap());
    assert!(!is_allowed("vocab", "exit").unwrap());
    assert!(is_allowed("commands", "cli").unwrap());
    // Itself: allowed.
    assert!(is_allowed("release", "release").unwrap());
    // A module without a stage is an error, not a pass.
    assert!(is_allowed("fleet", "role").is_err());
    // Root items resolve to their module.
    assert_eq!(target_module("Error"), Some("error"));
    assert_eq!(target_module("SUPERVISOR_VERSION"), Some("version"));
    assert_eq!(target_module("Nope"), None);
}

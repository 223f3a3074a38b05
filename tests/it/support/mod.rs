//! Shared test support: temp roots, the stand-in agent, the signed mirror,
//! network namespaces.
#![allow(dead_code)]

pub mod daemon;
pub mod fake_agent;
pub mod material;
pub mod mirror;
pub mod netns;
pub mod node;
pub mod preparer;
pub mod release;
pub mod role_file;
pub mod standin;

use std::path::{Path, PathBuf};

/// `text` with `[security] plaintext = true` added (unless it has a
/// `[security]` table): role files of tests that are not about security
/// (secure by default refuses a multi-node role without it).
pub fn plaintext(text: &str) -> String {
    if text.contains("[security]") {
        text.to_string()
    } else {
        format!("{text}\n[security]\nplaintext = true\n")
    }
}

/// Path of the `supervisor` binary under test. As root, first makes sure
/// the `consul` and `nomad` users exist, as on a node with the package
/// installed: `check`, `render` and `run` refuse a plan whose agent user is
/// missing.
pub fn supervisor_bin() -> PathBuf {
    agent_users();
    PathBuf::from(env!("CARGO_BIN_EXE_supervisor"))
}

/// Creates the agents' users when missing (root only; see
/// `hashi_testrig::users`).
pub fn agent_users() {
    if let Err(e) = hashi_testrig::users::ensure_agent_users() {
        panic!("{e}");
    }
}

/// The workspace's target directory for the current profile (where the
/// stand-in binary is built by `cargo build --workspace`).
pub fn target_profile_dir() -> PathBuf {
    let mut p = supervisor_bin();
    p.pop();
    p
}

/// `tests/data` of this checkout: public HashiCorp data the tests read
/// (agent API samples, the release key and signed vectors), kept in the
/// repository; see its README.md for where each file comes from.
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// The bytes of `tests/data/<rel>`; panics naming the full path it tried.
pub fn read_data(rel: &str) -> Vec<u8> {
    let p = data_dir().join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("failed to read test data {}: {e}", p.display()))
}

/// As [`read_data`], as text.
pub fn read_data_string(rel: &str) -> String {
    let p = data_dir().join(rel);
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("failed to read test data {}: {e}", p.display()))
}

/// Every path of the health endpoint that answers a GET: the ones checked
/// for leaked secrets.
pub const HEALTH_PATHS: &[&str] = &[
    "/",
    "/ready?verbose",
    "/health",
    "/v1/status",
    "/metrics",
    "/live",
];

// ------------------------------------------------------- external tools ---

/// The apt line that installs every external tool the tests run (also in
/// the README and `.ci/run`).
pub const APT_LINE: &str = "apt-get install iproute2 iputils-ping prometheus chromium dnsmasq-base";

/// Each external tool the tests run: the names it is found under in `PATH`
/// and its Debian package.
const TOOLS: &[(&str, &[&str], &str)] = &[
    ("ip", &["ip"], "iproute2"),
    ("ping", &["ping"], "iputils-ping"),
    ("unshare", &["unshare"], "util-linux"),
    ("dnsmasq", &["dnsmasq"], "dnsmasq-base"),
    ("promtool", &["promtool"], "prometheus"),
    ("prometheus", &["prometheus"], "prometheus"),
    (
        "chromium",
        &["chromium", "chromium-browser", "google-chrome"],
        "chromium",
    ),
];

/// Whether this run must have every tool (see `hashi_testrig::require`):
/// `HASHI_REQUIRE_TOOLS` decides when set, else `CI` does.
pub use hashi_testrig::require::{available, root, tools_required};

/// What a test does about its missing tools.
#[derive(Debug, PartialEq, Eq)]
pub enum ToolVerdict {
    /// Every tool is there: run.
    Run,
    /// Outside CI: skip, saying this.
    Skip(String),
    /// Under CI: fail, saying this.
    Fail(String),
}

/// The decision of [`require_tools`], from whether tools are required and
/// which are missing. Every message names each missing tool and its Debian
/// package.
pub fn tool_verdict(required: bool, missing: &[&str]) -> ToolVerdict {
    if missing.is_empty() {
        return ToolVerdict::Run;
    }
    let what = missing
        .iter()
        .map(|t| format!("{t} (Debian package {})", package_of(t)))
        .collect::<Vec<_>>()
        .join(", ");
    if required {
        ToolVerdict::Fail(format!(
            "missing test tool: {what} is not in PATH, and this run requires every tool \
             (HASHI_REQUIRE_TOOLS=1 or CI=true); install them with `{APT_LINE}`"
        ))
    } else {
        ToolVerdict::Skip(format!(
            "{what} not in PATH; `{APT_LINE}` installs every test tool \
             (under CI, HASHI_REQUIRE_TOOLS=1 or CI=true, this is a failure)"
        ))
    }
}

fn package_of(tool: &str) -> &'static str {
    TOOLS
        .iter()
        .find(|(name, _, _)| *name == tool)
        .map_or("unknown: add it to TOOLS in tests/it/support/mod.rs", |t| {
            t.2
        })
}

/// The path of `tool` (one of [`TOOLS`], by any of its names) in `PATH`.
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let names: &[&str] = TOOLS
        .iter()
        .find(|(name, _, _)| *name == tool)
        .map_or(&[], |t| t.1);
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether the calling test can run its external `tools`: `true` when all
/// are in `PATH`. A missing tool fails the test under CI (panic naming the
/// tool and its Debian package) and skips it elsewhere (a `SKIPPED` line on
/// stderr, then `false`: the test returns).
pub fn require_tools(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| find_tool(t).is_none())
        .collect();
    let required = hashi_testrig::require::required_here();
    let test = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_string();
    match tool_verdict(required, &missing) {
        ToolVerdict::Run => true,
        ToolVerdict::Skip(why) => {
            eprintln!("SKIPPED {test}: {why}");
            false
        }
        ToolVerdict::Fail(why) => panic!("{test}: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_are_required_under_ci_unless_the_variable_says_otherwise() {
        assert!(!tools_required(None, None));
        assert!(tools_required(None, Some("true")));
        assert!(tools_required(None, Some("1")));
        assert!(!tools_required(None, Some("false")));
        assert!(tools_required(Some("1"), None));
        assert!(tools_required(Some("true"), Some("false")));
        // An explicit 0 lets a CI without some tool skip.
        assert!(!tools_required(Some("0"), Some("true")));
    }

    #[test]
    fn a_missing_tool_fails_under_ci_and_skips_elsewhere_naming_tool_and_package() {
        assert_eq!(tool_verdict(true, &[]), ToolVerdict::Run);
        assert_eq!(tool_verdict(false, &[]), ToolVerdict::Run);
        let ToolVerdict::Fail(msg) = tool_verdict(true, &["promtool", "ping"]) else {
            panic!("a missing tool under CI must fail");
        };
        assert!(
            msg.contains("promtool (Debian package prometheus)"),
            "{msg}"
        );
        assert!(msg.contains("ping (Debian package iputils-ping)"), "{msg}");
        assert!(msg.contains(APT_LINE), "{msg}");
        let ToolVerdict::Skip(msg) = tool_verdict(false, &["chromium"]) else {
            panic!("a missing tool outside CI must skip");
        };
        assert!(msg.contains("chromium (Debian package chromium)"), "{msg}");
    }

    /// Runs one test of this binary in a child with `PATH` empty of tools.
    fn run_without_tools(test: &str, require: &str) -> std::process::Output {
        let empty = tempfile::tempdir().unwrap();
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env("PATH", empty.path())
            .env("HASHI_REQUIRE_TOOLS", require)
            .output()
            .unwrap()
    }

    #[test]
    fn a_test_whose_tool_is_missing_fails_under_ci_and_skips_locally() {
        let out = run_without_tools("health::promtool_accepts_the_metrics", "1");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        assert!(text.contains("1 failed"), "{text}");
        assert!(
            text.contains("missing test tool: promtool (Debian package prometheus)"),
            "{text}"
        );
        let out = run_without_tools("health::promtool_accepts_the_metrics", "0");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("1 passed"), "{text}");
        assert!(
            text.contains(
                "SKIPPED health::promtool_accepts_the_metrics: promtool (Debian package prometheus)"
            ),
            "{text}"
        );
    }
}

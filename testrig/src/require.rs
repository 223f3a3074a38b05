//! Whether a test may skip for want of something on this machine (a tool,
//! root, network namespaces), or must fail: under CI every test runs, so a
//! missing piece is a failure there and a skip, saying why, elsewhere.
//! `HASHI_REQUIRE_TOOLS` decides when set, else `CI` does; `.ci/run`
//! exports `HASHI_REQUIRE_TOOLS=1`.

/// Whether this run must have everything its tests need, from the values of
/// `HASHI_REQUIRE_TOOLS` and `CI`: `HASHI_REQUIRE_TOOLS` decides when set
/// (`1`/`true`/`yes` yes, anything else no), else `CI=true` (or `1`) does.
pub fn tools_required(require_tools: Option<&str>, ci: Option<&str>) -> bool {
    let yes = |v: &str| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes");
    match require_tools {
        Some(v) => yes(v),
        None => ci.is_some_and(yes),
    }
}

/// [`tools_required`] from this process's environment.
pub fn required_here() -> bool {
    tools_required(
        std::env::var("HASHI_REQUIRE_TOOLS").ok().as_deref(),
        std::env::var("CI").ok().as_deref(),
    )
}

/// Whether the calling test can run, given `check`: whether `what` (e.g.
/// "root", "network namespaces") is there, or why not. `true` when it is;
/// else a panic naming the test, `what` and why under CI, and elsewhere a
/// `SKIPPED` line on stderr and `false` (the test returns).
pub fn available(what: &str, check: Result<(), String>) -> bool {
    let test = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_string();
    match verdict(required_here(), &test, what, check) {
        Verdict::Run => true,
        Verdict::Skip(line) => {
            eprintln!("{line}");
            false
        }
        Verdict::Fail(msg) => panic!("{msg}"),
    }
}

/// What [`available`] does.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// `what` is there: run.
    Run,
    /// Outside CI: skip, printing this line.
    Skip(String),
    /// Under CI: fail with this message.
    Fail(String),
}

/// The decision of [`available`] for `test`, from whether everything is
/// `required` and the `check` of `what`.
pub fn verdict(required: bool, test: &str, what: &str, check: Result<(), String>) -> Verdict {
    match check {
        Ok(()) => Verdict::Run,
        Err(why) if required => Verdict::Fail(format!(
            "{test}: {what} unavailable, and this run requires every test to run \
             (HASHI_REQUIRE_TOOLS=1 or CI=true): {why}"
        )),
        Err(why) => Verdict::Skip(format!("SKIPPED {test}: {what} unavailable: {why}")),
    }
}

/// [`available`] for root: `Ok` when this process runs as root, else `why`
/// root is needed.
pub fn root(why: &str) -> Result<(), String> {
    if nix::unistd::Uid::effective().is_root() {
        Ok(())
    } else {
        Err(format!("not root; {why}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn something_missing_fails_under_ci_and_skips_elsewhere_saying_what_and_why() {
        let gone = || Err("not running as root".to_string());
        assert_eq!(verdict(true, "t", "root", Ok(())), Verdict::Run);
        assert_eq!(verdict(false, "t", "root", Ok(())), Verdict::Run);
        assert_eq!(
            verdict(true, "t", "root", gone()),
            Verdict::Fail(
                "t: root unavailable, and this run requires every test to run \
                 (HASHI_REQUIRE_TOOLS=1 or CI=true): not running as root"
                    .into()
            )
        );
        assert_eq!(
            verdict(false, "t", "root", gone()),
            Verdict::Skip("SKIPPED t: root unavailable: not running as root".into())
        );
    }

    #[test]
    fn the_variable_decides_when_set_else_ci_does() {
        assert!(!tools_required(None, None));
        assert!(tools_required(None, Some("true")));
        assert!(tools_required(Some("1"), Some("false")));
        assert!(!tools_required(Some("0"), Some("true")));
    }
}

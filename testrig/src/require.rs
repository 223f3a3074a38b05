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
    let Err(why) = check else {
        return true;
    };
    let test = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_string();
    if required_here() {
        panic!(
            "{test}: {what} unavailable, and this run requires every test to run \
             (HASHI_REQUIRE_TOOLS=1 or CI=true): {why}"
        );
    }
    eprintln!("SKIPPED {test}: {what} unavailable: {why}");
    false
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

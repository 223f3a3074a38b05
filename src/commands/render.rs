//! `supervisor render`: render the agents' config files into the plan's
//! config dirs (or `--out DIR`), or with `--check` write nothing and report
//! drift between disk and the role file.
//!
//! The plan is built with the peers (and learned identity) of the last
//! run's persisted discovery report (`<state_dir>/discovery.json`), so the
//! files match what the running daemon writes.

use std::io::Write;

use crate::cli::{GlobalArgs, RenderArgs};
use crate::error::Error;
use crate::peers::{DiscoveryReport, Peers};
use crate::plan::Plan;
use crate::render::{self, RenderError, diff, write};
use crate::supervise::daemon::discovery::load_cached;

/// Exit code of `render --check` when disk differs from the role file.
const EXIT_DRIFT: u8 = 1;

/// Runs `supervisor render`.
pub fn run(global: &GlobalArgs, args: &RenderArgs) -> Result<u8, Error> {
    let plan = with_cached_discovery(super::load(global)?).0;
    let mut files = render::render_plan(&plan)?;
    if let Some(out) = &args.out {
        files = render::relocate(&files, &plan.config_dir, out)?;
    }
    let mut report = String::new();
    let mut code = 0;
    if args.check {
        for f in &files {
            let on_disk = match std::fs::read_to_string(&f.path) {
                Ok(s) => s,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(source) => {
                    return Err(RenderError::Io {
                        what: "read",
                        path: f.path.clone(),
                        source,
                    }
                    .into());
                }
            };
            let d = diff::unified(
                &on_disk,
                &f.contents,
                &format!("{} (on disk)", f.path.display()),
                &format!("{} (rendered)", f.path.display()),
            );
            if d.is_empty() {
                report.push_str(&format!("up to date: {}\n", f.path.display()));
            } else {
                code = EXIT_DRIFT;
                report.push_str(&d);
            }
        }
    } else {
        let changed = write::write_files(&files)?;
        for f in &files {
            let verb = if changed.contains(&f.path) {
                "wrote"
            } else {
                "unchanged"
            };
            report.push_str(&format!("{verb}: {}\n", f.path.display()));
        }
    }
    std::io::stdout()
        .lock()
        .write_all(report.as_bytes())
        .map_err(|e| Error::io("write to stdout", e))?;
    Ok(code)
}

/// The plan of `loaded`'s role with the persisted discovery report of its
/// state dir applied: its learned identity, then its peers. A missing
/// report changes nothing; an unreadable one is logged and ignored (the
/// plan is the role's alone).
pub fn with_cached_discovery(loaded: super::Loaded) -> (Plan, Option<DiscoveryReport>) {
    let mut role = loaded.role;
    let cached = match load_cached(&role.state_dir) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %crate::supervise::daemon::error_chain(&e), "ignoring the persisted discovery report");
            None
        }
    };
    let Some(report) = cached else {
        return (loaded.plan, None);
    };
    role.learn(
        report.learned.region.as_deref(),
        report.learned.datacenter.as_deref(),
    );
    let peers: &Peers = &report.peers;
    (Plan::build(&role, peers), Some(report))
}

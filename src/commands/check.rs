//! `supervisor check`: validate the role file and print the resolved plan.
//! It runs exactly what `run` runs before starting anything
//! ([`super::load`], then rendering in memory).

use std::io::Write;

use crate::cli::{CheckArgs, GlobalArgs};
use crate::error::Error;
use crate::plan::Plan;
use crate::render::{self, RenderedFile};
use crate::role::NodeRole;

/// Runs `supervisor check`.
pub fn run(global: &GlobalArgs, args: &CheckArgs) -> Result<u8, Error> {
    let super::Loaded { role, plan, .. } = super::load(global)?;
    // Rendering can still refuse a pass-through block: part of the check.
    let files = render::render_plan(&plan)?;
    let mut out = std::io::stdout().lock();
    let text = if args.json {
        let doc = serde_json::json!({
            "role_file": role.source.as_ref().map(|p| p.display().to_string()),
            "plan": plan,
            "files": files.iter().map(|f| f.path.display().to_string()).collect::<Vec<_>>(),
        });
        let mut s = serde_json::to_string_pretty(&doc)
            .map_err(|e| Error::Internal(format!("failed to encode the plan: {e}")))?;
        s.push('\n');
        s
    } else {
        summary(&role, &plan, &files)
    };
    out.write_all(text.as_bytes())
        .map_err(|e| Error::io("write to stdout", e))?;
    Ok(0)
}

/// The human summary of a plan.
pub fn summary(role: &NodeRole, plan: &Plan, files: &[RenderedFile]) -> String {
    let mut s = String::new();
    let source = role.source.as_ref().map_or_else(
        || "none (defaults and --role)".to_string(),
        |p| p.display().to_string(),
    );
    s.push_str(&format!("role file:  {source}\n"));
    s.push_str(&format!(
        "node:       {} (region {}, datacenter {})\n",
        plan.node_name, plan.region, plan.datacenter
    ));
    s.push_str(&format!("roles:      {}\n", plan.roles.join(", ")));
    for a in &plan.agents {
        let mode = match (a.server, a.client) {
            (true, true) => "server+client",
            (true, false) => "server",
            _ => "client",
        };
        let leaves = match a.product {
            crate::vocab::Product::Consul => {
                plan.render.consul.as_ref().map(|c| c.leave_on_terminate)
            }
            crate::vocab::Product::Nomad => {
                plan.render.nomad.as_ref().map(|n| n.leave_on_terminate)
            }
        };
        let leave = if leaves == Some(true) {
            "leaves the cluster"
        } else {
            "keeps its cluster membership"
        };
        let then = match a.restart.mode {
            crate::vocab::RestartMode::Delay => "keep retrying",
            crate::vocab::RestartMode::Fail => "give up",
        };
        s.push_str(&format!(
            "{}:\n  version:  {}\n  mode:     {mode}\n  user:     {}\n  command:  {} {}\n  stop:     {} ({leave}), SIGKILL after {}s\n  restart:  {} attempts in {}s, delay {}s (max {}s), then {then}\n  http:     {}\n",
            a.product,
            a.version,
            a.user,
            a.binary.display(),
            a.args.join(" "),
            a.stop_signal.as_str(),
            a.stop_timeout.as_secs(),
            a.restart.attempts,
            a.restart.interval.as_secs(),
            a.restart.delay.as_secs(),
            a.restart.max_delay.as_secs(),
            a.http_addr,
        ));
    }
    if plan.agents.is_empty() {
        s.push_str("agents:     none\n");
    }
    s.push_str(&format!(
        "release:    {} (keep {}, max {} bytes)\n",
        plan.release.mirror, plan.release.keep_versions, plan.release.max_download_bytes
    ));
    s.push_str(&format!("health:     {}\n", plan.health_listen));
    for f in files {
        s.push_str(&format!("renders:    {}\n", f.path.display()));
    }
    s.push_str("role file is valid\n");
    s
}

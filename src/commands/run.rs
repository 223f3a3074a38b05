//! `supervisor run`: load the role file, install and render, then hand the
//! plan to [`supervise::run`] with real signals mapped onto its inputs.
//!
//! The preparation steps are the real modules behind [`RolePreparer`], the
//! [`Preparer`] the daemon also uses on SIGHUP.

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cli::GlobalArgs;
use crate::error::Error;
use crate::plan::{AgentPlan, Plan};
use crate::supervise::check::BoxFuture;
use crate::supervise::daemon::status_channel;
use crate::supervise::{self, Change, Installed, Preparer, RunOptions};
use crate::{health, release, render, role, shutdown};

/// Longest wait for the Consul deregistration before the agents stop.
const DEREGISTER_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Runs the daemon until SIGTERM/SIGINT; exit 0 after a clean stop.
pub async fn run(global: &GlobalArgs) -> Result<u8, Error> {
    let signals = shutdown::listen().map_err(|e| Error::io("install signal handlers", e))?;
    let metrics = Arc::new(health::Metrics::default());
    let preparer = Arc::new(RolePreparer {
        global: global.clone(),
        metrics: metrics.clone(),
    });
    let (plan, config_hash) = preparer.load().await?;
    // The state dir's lock before anything else: a second `run` beside a
    // live one must change nothing (not its Consul registration, not its
    // rendered files), only say why it stops. Held until the end of `run`.
    let state_lock = Arc::new(supervise::daemon::lock_state_dir(&plan.state_dir)?);
    // The health endpoint comes up next, so the node is observable while it
    // fetches and starts its agents.
    let status = status_channel(&plan);
    let tracker = tokio_util::task::TaskTracker::new();
    let health_cancel = CancellationToken::new();
    let consul_http = health::registration_target(&plan);
    let started = health::start(
        &plan,
        status.subscribe(),
        metrics,
        consul_http,
        &tracker,
        health_cancel.clone(),
    )
    .await?;
    // Signals count from here: a stop during a slow download ends the run
    // (the download's temp file is removed; nothing half-installed stays).
    let token = CancellationToken::new();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    // A stop request first takes the node out of the Consul catalog (while
    // Consul still runs), then stops the agents.
    let requested = CancellationToken::new();
    tokio::spawn(shutdown::forward(signals, requested.clone(), ev_tx));
    tokio::spawn({
        let token = token.clone();
        let registration = started.registration;
        async move {
            requested.cancelled().await;
            if let Some(r) = registration {
                r.deregister(DEREGISTER_GRACE).await;
            }
            token.cancel();
        }
    });
    let prepare = async {
        let mut installed = HashMap::new();
        for agent in &plan.agents {
            installed.insert(agent.product, preparer.install(agent).await?);
        }
        preparer.render(&plan, &plan).await?;
        Ok::<_, Error>(installed)
    };
    let prepared = tokio::select! {
        r = prepare => Some(r?),
        () = token.cancelled() => None,
    };
    let result = match prepared {
        Some(installed) => {
            let opts = RunOptions {
                installed,
                config_hash,
                // A diagnostic switch (and the "before" of BENCHMARKS.md):
                // keep every page touched at start-up mapped.
                trim_memory: std::env::var_os("SUPERVISOR_KEEP_STARTUP_PAGES").is_none(),
                state_lock: Some(state_lock.clone()),
                // Under journald each agent line is its own journal entry.
                agent_log: crate::telemetry::AgentLog::for_this_process(),
                // Written before a package upgrade's restart: that stop
                // keeps Nomad's workloads (no leave, no drain).
                restart_marker: Some(supervise::daemon::restart_marker_path()),
                ..RunOptions::default()
            };
            supervise::run(plan, preparer, opts, status, ev_rx, token).await
        }
        None => {
            tracing::info!("stopped before any agent was started");
            Ok(())
        }
    };
    // Health goes last, after the agents have stopped.
    health_cancel.cancel();
    tracker.close();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), tracker.wait()).await;
    drop(state_lock);
    result?;
    Ok(0)
}

/// The real preparation steps: role file → plan, release install, render.
#[derive(Debug, Clone)]
pub struct RolePreparer {
    global: GlobalArgs,
    /// Where release fetch and verify outcomes are counted (`/metrics`).
    metrics: Arc<health::Metrics>,
}

impl Preparer for RolePreparer {
    fn load(&self) -> BoxFuture<'_, Result<(Plan, String), Error>> {
        Box::pin(async move {
            let (path, must_exist) = self.global.role_file();
            let hash = match tokio::fs::read(&path).await {
                Ok(bytes) => hex::encode(Sha256::digest(&bytes)),
                Err(_) => String::new(),
            };
            let node = role::load(&path, must_exist, &self.global.role)?;
            Ok((Plan::from_role(&node), hash))
        })
    }

    fn install<'a>(&'a self, agent: &'a AgentPlan) -> BoxFuture<'a, Result<Installed, Error>> {
        Box::pin(async move {
            let (plan, _) = self.load().await?;
            let outcome =
                release::ensure_installed(&plan.release, agent.product, &agent.version).await;
            self.metrics.record_release(agent.product, &outcome);
            let done = outcome?;
            Ok(Installed {
                binary: None,
                version: done.version.to_string(),
            })
        })
    }

    fn rollback<'a>(
        &'a self,
        agent: &'a AgentPlan,
        previous: &'a Installed,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let (plan, _) = self.load().await?;
            let back = release::rollback(&plan.release.releases_dir, agent.product)?;
            tracing::warn!(agent = %agent.product, version = %back, expected = %previous.version, "rolled back");
            Ok(())
        })
    }

    fn render<'a>(
        &'a self,
        old: &'a Plan,
        new: &'a Plan,
    ) -> BoxFuture<'a, Result<Vec<(crate::plan::Product, Change)>, Error>> {
        Box::pin(async move {
            let _ = old;
            let files = render::render_plan(new)?;
            let mut changes: Vec<(crate::plan::Product, Change)> = Vec::new();
            for f in &files {
                // What is on disk is what the running agent loaded.
                let on_disk = std::fs::read_to_string(&f.path).unwrap_or_default();
                let kind = match render::classify_change(f.product, &on_disk, &f.contents) {
                    render::ChangeKind::Unchanged => Change::Unchanged,
                    render::ChangeKind::Reload => Change::Reload,
                    render::ChangeKind::Restart => Change::Restart,
                };
                match changes.iter_mut().find(|(p, _)| *p == f.product) {
                    Some((_, c)) => *c = stronger(*c, kind),
                    None => changes.push((f.product, kind)),
                }
            }
            render::write::write_files(&files)?;
            for agent in &new.agents {
                prepare_data_dir(agent)?;
            }
            Ok(changes)
        })
    }
}

/// Creates the agent's data dir (0750), owned by the agent's user when we
/// are root and the user exists, so a non-root agent can write its state.
fn prepare_data_dir(agent: &AgentPlan) -> Result<(), Error> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = &agent.data_dir;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .map_err(|e| Error::io(format!("create data dir {}", dir.display()), e))?;
    if nix::unistd::Uid::effective().is_root() {
        if let Ok(Some(user)) = nix::unistd::User::from_name(&agent.user) {
            nix::unistd::chown(dir, Some(user.uid), Some(user.gid)).map_err(|e| {
                Error::io(format!("change the owner of {}", dir.display()), e.into())
            })?;
        }
    }
    Ok(())
}

/// The change that asks for more of two (restart > reload > unchanged).
fn stronger(a: Change, b: Change) -> Change {
    match (a, b) {
        (Change::Restart, _) | (_, Change::Restart) => Change::Restart,
        (Change::Reload, _) | (_, Change::Reload) => Change::Reload,
        _ => Change::Unchanged,
    }
}

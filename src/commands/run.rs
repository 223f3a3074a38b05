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
use crate::{role, shutdown};

/// Runs the daemon until SIGTERM/SIGINT; exit 0 after a clean stop.
pub async fn run(global: &GlobalArgs) -> Result<u8, Error> {
    let signals = shutdown::listen().map_err(|e| Error::io("install signal handlers", e))?;
    let preparer = Arc::new(RolePreparer {
        global: global.clone(),
    });
    let (plan, config_hash) = preparer.load().await?;
    let mut installed = HashMap::new();
    for agent in &plan.agents {
        installed.insert(agent.product, preparer.install(agent).await?);
    }
    preparer.render(&plan, &plan).await?;
    let status = status_channel(&plan);
    // The health endpoint subscribes here: `status.subscribe()`.
    let token = CancellationToken::new();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    tokio::spawn(shutdown::forward(signals, token.clone(), ev_tx));
    let opts = RunOptions {
        installed,
        config_hash,
        ..RunOptions::default()
    };
    supervise::run(plan, preparer, opts, status, ev_rx, token).await?;
    Ok(0)
}

/// The real preparation steps: role file → plan, release install, render.
#[derive(Debug, Clone)]
pub struct RolePreparer {
    global: GlobalArgs,
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
            // WIRING (lead): `release::ensure_installed(&plan.release, agent.product,
            // &agent.version)` once the release branch is merged; map its
            // `Installed` to `supervise::Installed { binary: None, version }`.
            Err(Error::Internal(format!(
                "release install of {} is not wired into `run` yet",
                agent.product
            )))
        })
    }

    fn rollback<'a>(
        &'a self,
        agent: &'a AgentPlan,
        previous: &'a Installed,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            // WIRING (lead): `release::rollback(..)` to `previous.version`.
            Err(Error::Internal(format!(
                "release rollback of {} to {} is not wired into `run` yet",
                agent.product, previous.version
            )))
        })
    }

    fn render<'a>(
        &'a self,
        old: &'a Plan,
        new: &'a Plan,
    ) -> BoxFuture<'a, Result<Vec<(crate::plan::Product, Change)>, Error>> {
        Box::pin(async move {
            // WIRING (lead): `render::render_plan(new)`, compare each file with
            // `render::classify_change(product, old, new)` (Unchanged/Reload/
            // Restart map 1:1 to `Change`), then `render::write::write_files`.
            let _ = old;
            Err(Error::Internal(format!(
                "rendering for node {} is not wired into `run` yet",
                new.node_name
            )))
        })
    }
}

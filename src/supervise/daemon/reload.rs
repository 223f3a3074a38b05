//! SIGHUP: re-load the role file through the [`Preparer`], refuse what a
//! reload cannot change (the agent set, an agent's API address), render,
//! then per agent reload or restart (one at a time), then start a rollout
//! that brings each agent to the version its spec resolves to now
//! (`rollout`, on its own task: through the upgrade gate, with a rollback
//! when it does not become ready). A reload runs only while no rollout
//! does (`serve` ends it first), and READY=1 follows once the reload is
//! applied, whatever the rollout then waits for. The gate is rebuilt when
//! the new plan changes what it depends on (`gate`). Every
//! step applies the newly loaded plan; a refused or failed reload keeps the
//! running one and is reported in the status. After a certificate renewal
//! (`DaemonEvent::Renewed`) the agents get SIGHUP even when the reload is
//! refused: their TLS files changed on disk.

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use super::{Daemon, Preparer, error_chain, on_release};
use crate::peers::Peers;
use crate::plan::Plan;
use crate::render::ChangeKind;
use crate::role::NodeRole;
use crate::supervise::actor::Control;
use crate::supervise::notify::notify_systemd;
use crate::supervise::status::{AgentState, NodeIdentity};
use crate::vocab::Product;

impl<P: Preparer> Daemon<P> {
    fn set_reload_error(&self, err: Option<String>) {
        self.status.send_modify(|s| s.reload_error = err);
    }

    /// SIGHUP: re-read, re-render, then per agent reload, restart (one at a
    /// time), or upgrade with rollback. `tls_renewed`: every agent whose
    /// config is unchanged is reloaded too (it must re-read its TLS files).
    /// `serve` told systemd RELOADING=1 already; this tells READY=1 once
    /// applied, then starts the rollout of the plan in force.
    pub(super) async fn reload(&mut self, shutdown: &CancellationToken, tls_renewed: bool) {
        debug_assert!(self.rollout.is_none(), "the agents are the reload's");
        tracing::info!("reloading role file");
        let mut changed = Vec::new();
        let outcome = self.try_reload(shutdown, tls_renewed, &mut changed).await;
        if let Err(msg) = &outcome {
            tracing::error!(error = %msg, "reload refused, keeping the running configuration");
            if tls_renewed {
                // The TLS files changed on disk whatever the role file
                // says now: the agents re-read them only on SIGHUP, and
                // the old certificate may be about to expire.
                tracing::warn!("sending SIGHUP to the agents anyway: their TLS files were renewed");
                for h in &self.handles {
                    let _ = h.send(Control::Reload);
                }
            }
        }
        self.set_reload_error(outcome.err());
        notify_systemd(&[NotifyState::Ready]);
        if !shutdown.is_cancelled() {
            self.refresh_gate();
            // Every agent to the version its spec resolves to now (a
            // changed spec, `latest` moving), through the upgrade gate.
            self.start_rollout(changed, None);
        }
    }

    async fn try_reload(
        &mut self,
        shutdown: &CancellationToken,
        tls_renewed: bool,
        changed: &mut Vec<Product>,
    ) -> Result<(), String> {
        let (new, hash, role) = self.load_for_reload().await?;
        let old_set: Vec<Product> = self.plan.agents.iter().map(|a| a.product).collect();
        let new_set: Vec<Product> = new.agents.iter().map(|a| a.product).collect();
        if old_set != new_set {
            return Err(format!(
                "failed to apply reload: the agent set changed ({old_set:?} to {new_set:?}), restart the supervisor"
            ));
        }
        // The readiness checks and the health checker were built for the
        // agents' API addresses at start: a reload must not move them.
        for agent in &new.agents {
            let Some(old) = self.plan.agent(agent.product) else {
                continue;
            };
            // The supervisor's own ACL token is not where the API is: the
            // clients take a newer token from the renewal report, so a
            // token taken after start (secure mode) must not refuse every
            // later reload.
            let place = |tls: &Option<crate::plan::ApiTls>| {
                tls.as_ref().map(|t| {
                    (
                        t.ca_file.clone(),
                        t.server_name.clone(),
                        t.client_cert.clone(),
                    )
                })
            };
            if (old.http_addr, place(&old.api_tls)) != (agent.http_addr, place(&agent.api_tls)) {
                return Err(format!(
                    "failed to apply reload: the {} HTTP API moves (address, port or TLS), restart the supervisor",
                    agent.product
                ));
            }
        }
        let changes = self
            .preparer
            .render(&new)
            .await
            .map_err(|e| error_chain(&e))?;
        for agent in &new.agents {
            if shutdown.is_cancelled() {
                break;
            }
            let Some(h) = self.handle(agent.product).cloned() else {
                continue;
            };
            let Some(old) = self.plan.agent(agent.product).cloned() else {
                continue;
            };
            let change = changes
                .iter()
                .find(|(p, _)| *p == agent.product)
                .map_or(ChangeKind::Restart, |(_, c)| *c);
            if agent.version != old.version {
                changed.push(agent.product);
            }
            // A version change is applied after, through the gate
            // (`rollout`); until then the agent keeps its release.
            let a = on_release(agent, self.installed.get(&agent.product));
            let _ = h.send(Control::UpdatePlan(Box::new(a), None));
            if changed.contains(&agent.product) {
                // The upgrade's restart loads the new config too.
                continue;
            }
            match change {
                ChangeKind::Unchanged if !tls_renewed => {}
                ChangeKind::Unchanged | ChangeKind::Reload => {
                    let _ = h.send(Control::Reload);
                }
                ChangeKind::Restart => {
                    tracing::info!(agent = %agent.product, "config change needs a restart");
                    let r0 = h.status().restarts;
                    let _ = h.send(Control::Restart);
                    // One at a time: wait for this one before the next
                    // (a stop request ends the wait: the stop follows).
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        _ = tokio::time::timeout(
                            self.opts.rollback_window,
                            h.wait_for(|s| {
                                (s.restarts > r0 && s.ready)
                                    || matches!(s.state, AgentState::Failed | AgentState::Backoff)
                            }),
                        ) => {}
                    }
                }
            }
        }
        // The node info the health endpoint shows follows the plan now in
        // force (e.g. a new datacenter).
        let node = NodeIdentity::of(&new);
        if let (Some((role, peers)), Some(feed)) = (role, self.opts.discovery.as_mut()) {
            (feed.on_plan)(&role, &new);
            feed.role = role;
            feed.applied = peers;
        }
        self.plan = new;
        self.status.send_modify(|s| {
            s.config_hash = hash;
            s.node = Some(node);
        });
        Ok(())
    }

    /// The role file's new plan and hash; with discovery, built with the
    /// current peers and learned identity (and the new role, to keep).
    async fn load_for_reload(&self) -> Result<(Plan, String, Option<(NodeRole, Peers)>), String> {
        if let Some(feed) = &self.opts.discovery {
            if let Some((mut role, hash)) = self
                .preparer
                .load_role()
                .await
                .map_err(|e| error_chain(&e))?
            {
                let report = feed.reports.borrow().clone();
                role.learn(
                    report.learned.region.as_deref(),
                    report.learned.datacenter.as_deref(),
                );
                let plan = Plan::build(&role, &report.peers);
                return Ok((plan, hash, Some((role, report.peers))));
            }
        }
        let (plan, hash) = self.preparer.load().await.map_err(|e| error_chain(&e))?;
        Ok((plan, hash, None))
    }
}

//! `supervisor run`: load the role file, install and render, then hand the
//! plan to [`supervise::run`] with real signals mapped onto its inputs.
//!
//! The preparation steps are the real modules behind [`RolePreparer`], the
//! [`Preparer`] the daemon also uses on SIGHUP: the role file is loaded
//! through [`super::load`] (at start as on a reload), and each step applies
//! exactly the plan it is handed. Its errors are [`Error`]s, so a failed
//! first install or render ends `run` with that stage's exit code.
//!
//! Discovery (`catalog::discovery`) starts once the health endpoint is up
//! (it announces the endpoint's port), seeded with the last run's persisted
//! report. When the role cannot start without something discovery has not
//! found yet (`discovery::missing`), `run` waits for it (a stop request
//! ends the wait; `/ready` and `/v1/status` say what it waits for), then
//! learns the identity the role left unwritten and builds the plan with the
//! peers found. From there the daemon follows discovery
//! ([`RunOptions::discovery`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::catalog::discovery::{self, Discovery, DiscoveryConfig};
use crate::cli::GlobalArgs;
use crate::error::Error;
use crate::peers::DiscoveryReport;
use crate::plan::{AgentPlan, Plan, ReleasePlan};
use crate::release::Installed;
use crate::render::ChangeKind;
use crate::role::NodeRole;
use crate::supervise::daemon::discovery::{DEFAULT_DEBOUNCE, load_cached};
use crate::supervise::daemon::{DiscoveryFeed, error_chain, status_channel};
use crate::supervise::{self, NodeIdentity, Preparer, RunOptions};
use crate::vocab::Product;
use crate::{agent, catalog, health, release, render, security, shutdown};

/// Longest wait for the Consul deregistration before the agents stop.
const DEREGISTER_GRACE: std::time::Duration = std::time::Duration::from_secs(3);
/// How often a node waiting for discovery says what it waits for.
const WAITING_LOG_EVERY: Duration = Duration::from_secs(10);

/// Runs the daemon until SIGTERM/SIGINT; exit 0 after a clean stop.
pub async fn run(global: &GlobalArgs) -> Result<u8, Error> {
    let mut signals = shutdown::listen().map_err(|e| Error::io("install signal handlers", e))?;
    let metrics = Arc::new(health::Metrics::default());
    let metrics_replans = metrics.replans.clone();
    let preparer = Arc::new(RolePreparer {
        global: global.clone(),
        metrics: metrics.clone(),
    });
    let super::Loaded {
        plan,
        hash: config_hash,
        role,
    } = super::load(global)?;
    // The state dir's lock before anything else: a second `run` beside a
    // live one must change nothing (not its Consul registration, not its
    // rendered files), only say why it stops. Held until the end of `run`.
    let state_lock = Arc::new(supervise::daemon::lock_state_dir(&plan.state_dir)?);
    // A node with a join token and no material joins first, then loads its
    // role file again: the plan renders from the material the join wrote.
    let (plan, config_hash, mut role) = if needs_join(&role) {
        if !join_first(&role, &mut signals).await? {
            tracing::info!("stopped while joining, before anything was started");
            drop(state_lock);
            return Ok(0);
        }
        let again = super::load(global)?;
        (again.plan, again.hash, again.role)
    } else {
        (plan, config_hash, role)
    };
    // The health endpoint comes up next, so the node is observable while it
    // fetches and starts its agents.
    let status = status_channel(&plan);
    let tracker = tokio_util::task::TaskTracker::new();
    let health_cancel = CancellationToken::new();
    // The one client of the agents (a TLS API's CA loaded from the plan)
    // and one observer per agent: readiness, health and the registration
    // all go through them. They stop with health, last.
    let agents = agent::AgentClient::for_plan_and_role(&plan, &role)
        .map_err(|e| Error::Internal(e.one_line()))?;
    let observers = agent::Observers::start(
        &agents,
        &health::NodeInfo::from_plan(&plan).agents,
        agent::ObserverConfig::default(),
        &tracker,
        &health_cancel,
    );
    let started = health::start(
        &plan,
        status.subscribe(),
        metrics,
        observers.clone(),
        &tracker,
        health_cancel.clone(),
    )
    .await?;
    // What `/v1/status`, the page and `/metrics` show of the node's
    // security; the renewal task updates it through `started.security`.
    started
        .security
        .send_replace(Some(health::SecurityStatus::of_role(&role)));
    // Signals count from here: a stop while waiting for discovery or
    // during a slow download ends the run (the download's temp file is
    // removed; nothing half-installed stays).
    let token = CancellationToken::new();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let renewed_tx = ev_tx.clone();
    // A CA holder serves joins (and renewals) from now until health stops,
    // and pulls the other CA holders' join-token records.
    let sync_candidates = if role.security.ca_holder {
        let first = security::sync::candidates(&role, &crate::peers::Peers::default());
        let (protected_tx, protected_rx) = watch::channel(protected_ips(&role, &first));
        start_join_endpoint(&role, protected_rx, &tracker, &health_cancel).await?;
        start_token_sync(&role, first, &tracker, &health_cancel).map(|tx| (tx, protected_tx))
    } else {
        None
    };
    let requested = CancellationToken::new();
    // A SIGHUP also makes the renewal task look at `node.json` again (an
    // operator who restored or replaced it), besides the daemon's reload.
    let recheck = Arc::new(tokio::sync::Notify::new());
    let (sig_tx, sig_rx) = mpsc::unbounded_channel();
    tokio::spawn({
        let recheck = recheck.clone();
        let mut signals = signals;
        async move {
            while let Some(ev) = signals.recv().await {
                if matches!(ev, shutdown::SignalEvent::Reload) {
                    recheck.notify_one();
                }
                if sig_tx.send(ev).is_err() {
                    break;
                }
            }
        }
    });
    tokio::spawn(shutdown::forward(sig_rx, requested.clone(), ev_tx));
    // Discovery: seeded with the last run's peers, announcing the health
    // endpoint's real port.
    let cached = match load_cached(&plan.state_dir) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %error_chain(&e), "ignoring the persisted discovery report");
            None
        }
    };
    let disc = discovery::start(
        DiscoveryConfig::new(&role, &plan, started.addr, cached),
        &agents,
        &tracker,
        &health_cancel,
    );
    if let Some((to, protected)) = sync_candidates {
        tracker.spawn(follow_sync_candidates(
            role.clone(),
            disc.subscribe(),
            to,
            protected,
            health_cancel.clone(),
        ));
    }
    let (waiting_tx, waiting_rx) = watch::channel(Vec::new());
    tracker.spawn(publish_discovery(
        disc.subscribe(),
        waiting_rx,
        started.discovery,
        health_cancel.clone(),
    ));
    let Some(report) = wait_for_discovery(&role, &disc, &waiting_tx, &requested).await else {
        tracing::info!("stopped while waiting for discovery, before any agent was started");
        health_cancel.cancel();
        tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
        drop(state_lock);
        return Ok(0);
    };
    if role.learn(
        report.learned.region.as_deref(),
        report.learned.datacenter.as_deref(),
    ) {
        let from = report
            .learned
            .from_node
            .as_deref()
            .unwrap_or("an announcement");
        let how = report
            .records
            .iter()
            .find(|r| r.node.as_deref() == report.learned.from_node.as_deref())
            .map_or("discovery", |r| r.source.as_str());
        tracing::info!(
            "learned region {} and datacenter {} from {from} ({how})",
            role.region,
            role.datacenter
        );
    }
    let plan = Plan::build(&role, &report.peers);
    disc.set_role(&role, &plan);
    if role.security.material.is_some() {
        let renewal = security::renew::Renewal {
            role: role.clone(),
            candidates: security::join_client::candidates(&role, &report.peers),
            events: renewed_tx.clone(),
            recheck: recheck.clone(),
            report: {
                let status = started.security.clone();
                let agents = agents.clone();
                Arc::new(move |r: security::renew::RenewalReport| {
                    use security::renew::RenewalReport as R;
                    if let R::Renewed { acl, .. } = &r {
                        // The supervisor's own calls present the new
                        // certificate (and any token the node got) from
                        // their next connection.
                        for problem in agents.reload_tls_and_tokens(acl) {
                            tracing::warn!(%problem, "failed to reload the agent client's TLS files");
                        }
                    }
                    status.send_modify(|s| {
                        let Some(s) = s else { return };
                        match r {
                            R::Renewed {
                                at,
                                not_after,
                                names,
                                next,
                                acl: _,
                            } => {
                                s.record_renewal(at, not_after, names, Some(next));
                            }
                            R::Failed { error, next } => s.record_renewal_error(&error, Some(next)),
                            R::Next { next } => s.set_next_renewal(Some(next)),
                        }
                    });
                })
            },
        };
        tracker.spawn(renewal.run(health_cancel.clone()));
    }
    // The init node makes the ACL policies and tokens once leaders exist.
    if security::acl::AclBootstrap::applies(&role) {
        let bootstrap = security::acl::AclBootstrap {
            role: role.clone(),
            plan: plan.clone(),
            events: renewed_tx,
            on_renewed: {
                let agents = agents.clone();
                Arc::new(move |acl: &crate::role::security::AclTokens| {
                    for problem in agents.reload_tls_and_tokens(acl) {
                        tracing::warn!(%problem, "failed to reload the agent client's TLS files");
                    }
                })
            },
        };
        tracker.spawn(bootstrap.run(health_cancel.clone()));
    }
    status.send_modify(|s| s.node = Some(NodeIdentity::of(&plan)));
    let registration = catalog::start_registration(
        &plan,
        &agents,
        &status.subscribe(),
        started.addr,
        &tracker,
        &health_cancel,
    );
    // A stop request first takes the node out of the Consul catalog (while
    // Consul still runs), then stops the agents.
    tokio::spawn({
        let token = token.clone();
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
            installed.insert(agent.product, preparer.install(&plan.release, agent).await?);
        }
        preparer.render(&plan).await?;
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
                checks: Arc::new(move |a: &AgentPlan| {
                    supervise::check::ObservedCheck::for_agent(&observers, a)
                        .map(|c| Arc::new(c) as Arc<dyn supervise::check::ReadyCheck>)
                }),
                discovery: Some(DiscoveryFeed {
                    reports: disc.subscribe(),
                    role: role.clone(),
                    applied: report.peers.clone(),
                    on_plan: {
                        let disc = disc.clone();
                        Arc::new(move |r: &NodeRole, p: &Plan| disc.set_role(r, p))
                    },
                    debounce: DEFAULT_DEBOUNCE,
                    counts: metrics_replans,
                }),
                // Issue 20: every version change through the upgrade gate,
                // built (again) from each plan in force: a reload or
                // re-plan that moves the node, its roles, its agents'
                // APIs, Nomad's Consul or `[upgrade]` gets a new one.
                gate_factory: Some({
                    let agents = agents.clone();
                    Arc::new(move |p: &Plan, s: &crate::upgrade::UpgradeSettings| {
                        crate::upgrade::Gate::for_plan(p, &agents, s.clone())
                    })
                }),
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
    drop(waiting_tx);
    drop(state_lock);
    result?;
    Ok(0)
}

/// Whether `role` must join before it can plan: secured (not plaintext,
/// not `dev`), no material yet, and a join token to join with.
fn needs_join(role: &NodeRole) -> bool {
    // No material yet, or (SEC-STORE) an expired certificate on a node
    // that holds no CA and was given a join token.
    !role.roles.dev && role.security.must_join(crate::role::security::now_unix())
}

/// Longest time a join keeps trying endpoints that do not answer (the
/// CA holders may still be starting); a refusal ends it at once.
const JOIN_PATIENCE: Duration = Duration::from_secs(30);
/// How long each round of a join looks for endpoints over mDNS.
const JOIN_BROWSE: Duration = Duration::from_secs(2);
/// First pause between two rounds of join attempts (doubling, at most
/// [`JOIN_RETRY_MAX`]).
const JOIN_RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest pause between two rounds of join attempts.
const JOIN_RETRY_MAX: Duration = Duration::from_secs(8);

/// Joins the cluster with the role's token through the endpoints the role
/// file names (`security::join_client::candidates`; discovery has not
/// started yet). Returns false when a stop was requested first.
async fn join_first(
    role: &NodeRole,
    signals: &mut mpsc::UnboundedReceiver<shutdown::SignalEvent>,
) -> Result<bool, Error> {
    use security::join_client::{self, JoinError};
    let Some(secret) = &role.security.join_token else {
        return Ok(true);
    };
    let token = security::token::JoinToken::parse(secret.expose())
        .map_err(|e| JoinError::BadToken(e.to_string()))?;
    let give_up = tokio::time::Instant::now() + JOIN_PATIENCE;
    let mut pause = JOIN_RETRY_FIRST;
    loop {
        // The role file's endpoints and servers, then what one bounded
        // discovery pass finds (mDNS announcements of the servers on this
        // LAN, DNS names and SRV records), asked again each round: the CA
        // holders may still be starting.
        let found = tokio::select! {
            r = crate::catalog::discovery::probe(role, JOIN_BROWSE) => r,
            () = wait_for_stop(signals) => return Ok(false),
        };
        let candidates = join_client::candidates(role, &found.peers);
        tracing::info!(token = %token.id, candidates = %candidates.join(", "), "joining the cluster");
        let attempt = tokio::select! {
            r = join_client::join(role, &token, &candidates) => r,
            () = wait_for_stop(signals) => return Ok(false),
        };
        match attempt {
            Ok(out) => {
                tracing::info!(
                    endpoint = %out.endpoint,
                    not_after = out.not_after,
                    ca_holder = out.ca_holder,
                    "joined the cluster"
                );
                return Ok(true);
            }
            // A token no CA holder knows yet may be one made on a CA holder
            // this node cannot reach: the others learn it within a sync
            // round ([`security::sync::EVERY`]).
            Err(
                e @ (JoinError::Unreachable { .. }
                | JoinError::NoCandidates
                | JoinError::UnknownToken { .. }),
            ) if tokio::time::Instant::now() + pause < give_up => {
                tracing::warn!(why = %e, retry_in = ?pause, "no join endpoint answered yet");
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = wait_for_stop(signals) => return Ok(false),
                }
                pause = (pause * 2).min(JOIN_RETRY_MAX);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Resolves at the next stop signal (never if the signal channel ends);
/// a SIGHUP while joining is ignored.
async fn wait_for_stop(signals: &mut mpsc::UnboundedReceiver<shutdown::SignalEvent>) {
    loop {
        match signals.recv().await {
            Some(shutdown::SignalEvent::Shutdown | shutdown::SignalEvent::Quit) => return,
            Some(shutdown::SignalEvent::Reload) => {}
            None => {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Binds `[security] join_listen` and serves joins from the cluster dir
/// until `cancel`.
async fn start_join_endpoint(
    role: &NodeRole,
    protected: watch::Receiver<Vec<std::net::IpAddr>>,
    tracker: &tokio_util::task::TaskTracker,
    cancel: &CancellationToken,
) -> Result<(), Error> {
    use security::join_server::{self, JoinEndpoint};
    let listener = join_server::bind(role.security.join_listen).await?;
    let endpoint = JoinEndpoint::new(
        &role.config_dir.join(crate::paths::CLUSTER_SUBDIR),
        role.security.cert_lifetime,
    )
    .with_protected_ips(protected);
    let cancel = cancel.clone();
    tracker.spawn(async move {
        if let Err(e) = endpoint.serve(listener, cancel).await {
            tracing::error!(error = %error_chain(&e), "the join endpoint stopped");
        }
    });
    Ok(())
}

/// Starts the join-token sync of a CA holder
/// ([`security::sync::TokenSync`]) with the candidates the role file names;
/// returns where to send the ones discovery finds (`None` without
/// material: nothing to present to the others).
fn start_token_sync(
    role: &NodeRole,
    first: Vec<String>,
    tracker: &tokio_util::task::TaskTracker,
    cancel: &CancellationToken,
) -> Option<watch::Sender<Vec<String>>> {
    let material = role.security.material.as_ref()?;
    let (tx, rx) = watch::channel(first);
    let sync = security::sync::TokenSync {
        cluster_dir: role.config_dir.join(crate::paths::CLUSTER_SUBDIR),
        pin: material.secrets.ca_sha256.clone(),
        cert_file: material.cert_file.clone(),
        key_file: material.key_file.clone(),
        candidates: rx,
        every: security::sync::EVERY,
    };
    tracker.spawn(sync.run(cancel.clone()));
    Some(tx)
}

/// The addresses a joining node may not name in its certificate: this
/// node's (but loopback) and those of the servers and CA holders it knows
/// (the token sync's candidates that are IP addresses).
fn protected_ips(role: &NodeRole, candidates: &[String]) -> Vec<std::net::IpAddr> {
    let mut out: Vec<std::net::IpAddr> = security::names::ips(&role.addresses)
        .into_iter()
        .filter(|ip| !ip.is_loopback())
        .collect();
    for c in candidates {
        if let Some(ip) = security::join_client::host_of(c).and_then(|h| h.parse().ok()) {
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    out
}

/// Keeps the token sync's candidates, and the addresses the join endpoint
/// protects, in step with discovery.
async fn follow_sync_candidates(
    role: NodeRole,
    mut reports: watch::Receiver<DiscoveryReport>,
    to: watch::Sender<Vec<String>>,
    protected: watch::Sender<Vec<std::net::IpAddr>>,
    cancel: CancellationToken,
) {
    loop {
        let next = security::sync::candidates(&role, &reports.borrow_and_update().peers);
        let ips = protected_ips(&role, &next);
        protected.send_if_modified(|p| {
            let changed = *p != ips;
            if changed {
                p.clone_from(&ips);
            }
            changed
        });
        to.send_if_modified(|c| {
            let changed = *c != next;
            if changed {
                c.clone_from(&next);
            }
            changed
        });
        tokio::select! {
            () = cancel.cancelled() => return,
            r = reports.changed() => if r.is_err() { return },
        }
    }
}

/// Waits until discovery found everything `role` cannot start without
/// (`discovery::missing`), saying what is missing at once and every
/// [`WAITING_LOG_EVERY`], and publishing it on `waiting` for health.
/// Returns the report to plan with; `None` when a stop was requested first.
async fn wait_for_discovery(
    role: &NodeRole,
    disc: &Discovery,
    waiting: &watch::Sender<Vec<String>>,
    stop: &CancellationToken,
) -> Option<DiscoveryReport> {
    let mut rx = disc.subscribe();
    let mut next_log = tokio::time::Instant::now();
    loop {
        let report = rx.borrow_and_update().clone();
        let missing = discovery::missing(role, &report);
        if missing.is_empty() {
            waiting.send_replace(Vec::new());
            return Some(report);
        }
        let now = tokio::time::Instant::now();
        if now >= next_log {
            tracing::warn!("waiting for discovery: {}", missing.join("; "));
            next_log = now + WAITING_LOG_EVERY;
        }
        waiting.send_if_modified(|w| {
            let changed = *w != missing;
            *w = missing;
            changed
        });
        tokio::select! {
            () = stop.cancelled() => return None,
            r = rx.changed() => if r.is_err() {
                // Discovery ended (it stops only with health, at the end).
                return None;
            },
            () = tokio::time::sleep_until(next_log) => {}
        }
    }
}

/// Publishes discovery's view for health: each report, with what `run`
/// waits for. Ends with `cancel` or when discovery ends.
async fn publish_discovery(
    mut reports: watch::Receiver<DiscoveryReport>,
    mut waiting: watch::Receiver<Vec<String>>,
    to: watch::Sender<Option<health::DiscoveryView>>,
    cancel: CancellationToken,
) {
    let mut waiting_open = true;
    loop {
        let view = health::DiscoveryView {
            report: reports.borrow_and_update().clone(),
            waiting_for: waiting.borrow_and_update().clone(),
        };
        to.send_replace(Some(view));
        tokio::select! {
            () = cancel.cancelled() => return,
            r = reports.changed() => if r.is_err() { return },
            r = waiting.changed(), if waiting_open => if r.is_err() { waiting_open = false },
        }
    }
}

/// The real preparation steps: role file → plan ([`super::load`]), release
/// install, render. Each step applies the plan it is given; none re-reads
/// the role file.
#[derive(Debug, Clone)]
pub struct RolePreparer {
    global: GlobalArgs,
    /// Where release fetch and verify outcomes are counted (`/metrics`).
    metrics: Arc<health::Metrics>,
}

impl Preparer for RolePreparer {
    type Error = Error;

    async fn load(&self) -> Result<(Plan, String), Error> {
        let super::Loaded { plan, hash, .. } = super::load(&self.global)?;
        Ok((plan, hash))
    }

    async fn load_role(&self) -> Result<Option<(NodeRole, String)>, Error> {
        let super::Loaded { role, hash, .. } = super::load(&self.global)?;
        Ok(Some((role, hash)))
    }

    async fn install(&self, release: &ReleasePlan, agent: &AgentPlan) -> Result<Installed, Error> {
        // Pinned by default (issue 20): a verified installed release keeps
        // running; the daemon takes a different wanted version through the
        // upgrade gate. Only a node with nothing installed installs here.
        let (rd, product) = (release.releases_dir.clone(), agent.product);
        if let Ok(Some(pinned)) =
            tokio::task::spawn_blocking(move || release::pinned(&rd, product)).await
        {
            tracing::info!(agent = %product, version = %pinned.version, "running the installed release (pinned)");
            return Ok(pinned);
        }
        let outcome = release::ensure_installed(release, agent.product, &agent.version).await;
        self.metrics.record_release(agent.product, &outcome);
        Ok(outcome?)
    }

    async fn fetch(&self, release: &ReleasePlan, agent: &AgentPlan) -> Result<Installed, Error> {
        let outcome = release::download_with(
            release,
            agent.product,
            &agent.version,
            &release::FetchOptions::default(),
        )
        .await;
        self.metrics.record_release(agent.product, &outcome);
        Ok(outcome?)
    }

    async fn activate(&self, release: &ReleasePlan, installed: &Installed) -> Result<(), Error> {
        let (r, i) = (release.clone(), installed.clone());
        tokio::task::spawn_blocking(move || release::activate(&r, i.product, &i.version))
            .await
            .map_err(|e| Error::Internal(format!("activate task: {e}")))??;
        Ok(())
    }

    async fn rollback(&self, release: &ReleasePlan, previous: &Installed) -> Result<(), Error> {
        let back = release::rollback(&release.releases_dir, previous.product)?;
        tracing::warn!(agent = %previous.product, version = %back, expected = %previous.version, "rolled back");
        Ok(())
    }

    async fn render(&self, plan: &Plan) -> Result<Vec<(Product, ChangeKind)>, Error> {
        let files = render::render_plan(plan)?;
        let mut changes: Vec<(Product, ChangeKind)> = Vec::new();
        for f in &files {
            // What is on disk is what the running agent loaded.
            let on_disk = std::fs::read_to_string(&f.path).unwrap_or_default();
            let kind = render::classify_change(f.product, &on_disk, &f.contents);
            match changes.iter_mut().find(|(p, _)| *p == f.product) {
                Some((_, c)) => *c = c.stronger(kind),
                None => changes.push((f.product, kind)),
            }
        }
        render::write::write_files(&files)?;
        for agent in &plan.agents {
            prepare_data_dir(agent, &files)?;
        }
        Ok(changes)
    }
}

/// Creates the agent's data dir (see [`render::write::ensure_agent_dir`]):
/// owned by the agent's user when we are root, so an agent that runs as
/// `consul` or `nomad` can reach and write its state, and checks that it can
/// reach its rendered config files (`files`). A user that does not exist is
/// refused (validation refused it first; this covers a user deleted since).
fn prepare_data_dir(agent: &AgentPlan, files: &[render::RenderedFile]) -> Result<(), Error> {
    let owner = if nix::unistd::Uid::effective().is_root() {
        match render::write::Owner::lookup(&agent.user) {
            Ok(Some(o)) => Some(o),
            Ok(None) => {
                return Err(Error::io(
                    format!("prepare the data dir of {}", agent.product),
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("user `{}` does not exist", agent.user),
                    ),
                ));
            }
            Err(e) => {
                return Err(Error::io(format!("look up user `{}`", agent.user), e));
            }
        }
    } else {
        None
    };
    render::write::ensure_agent_dir(&agent.data_dir, owner.as_ref())?;
    if let Some(o) = &owner {
        for f in files.iter().filter(|f| f.product == agent.product) {
            render::write::check_agent_reaches(&f.path, o)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::os::unix::process::CommandExt;
    use std::path::Path;

    use super::*;
    use crate::role::{self, StaticHost};

    /// The user the agents run as in these tests: one every system has.
    const AGENT_USER: &str = "nobody";

    /// Whether the test runs as root, which switching to the agents' user
    /// needs: a skip elsewhere, a failure under CI (`hashi_testrig::require`).
    fn as_root() -> bool {
        use hashi_testrig::require::{available, root};
        available("root", root("switching to the agents' user needs it"))
    }

    /// ams2-server-01 with both agents as `nobody`, under `root`.
    fn plan(root: &Path) -> Plan {
        let text = format!(
            "schema = 1\nroles = [\"consul-server\", \"nomad-server\"]\nnode_name = \"ams2-server-01\"\n\
             datacenter = \"ams2\"\n[addresses]\nprivate = \"127.0.0.1\"\n\
             [consul]\nuser = \"{AGENT_USER}\"\n[nomad]\nuser = \"{AGENT_USER}\"\n\
             [paths]\nconfig_dir = \"{}\"\nstate_dir = \"{}\"\n[security]\nplaintext = true\n",
            root.join("etc").display(),
            root.join("state").display()
        );
        let host = StaticHost {
            hostname: Some("ams2-server-01".into()),
            root: true,
            users: vec![AGENT_USER.into()],
            ..StaticHost::default()
        };
        let role = role::parse(&root.join("node.toml"), &text, &[], &host).unwrap();
        Plan::from_role(&role)
    }

    /// What `RolePreparer::render` does on disk.
    fn prepare(plan: &Plan) -> Result<(), Error> {
        let files = render::render_plan(plan)?;
        render::write::write_files(&files)?;
        for a in &plan.agents {
            prepare_data_dir(a, &files)?;
        }
        Ok(())
    }

    /// Runs `script` as the agents' user; its exit status and stderr.
    fn as_agent_user(script: &str, args: &[&Path]) -> (bool, String) {
        let user = nix::unistd::User::from_name(AGENT_USER).unwrap().unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .args(args)
            .uid(user.uid.as_raw())
            .gid(user.gid.as_raw())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// A temp root the agents' user can search (tempdirs are 0700), as
    /// `/var/lib` and `/etc` are.
    fn root_dir() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        tmp
    }

    /// As root (see [`as_root`]), a fresh [`root_dir`] and the plan under it.
    fn root_plan() -> Option<(tempfile::TempDir, Plan)> {
        as_root().then(|| {
            let tmp = root_dir();
            let plan = plan(tmp.path());
            (tmp, plan)
        })
    }

    #[test]
    fn each_agent_as_its_user_writes_its_data_dir_and_reads_its_config() {
        let Some((tmp, plan)) = root_plan() else {
            return;
        };
        prepare(&plan).unwrap();
        let data = tmp.path().join("state/data");
        assert_eq!(std::fs::metadata(&data).unwrap().mode() & 0o7777, 0o755);
        let uid = nix::unistd::User::from_name(AGENT_USER)
            .unwrap()
            .unwrap()
            .uid
            .as_raw();
        for a in &plan.agents {
            let meta = std::fs::metadata(&a.data_dir).unwrap();
            assert_eq!(meta.mode() & 0o7777, 0o750, "{}", a.data_dir.display());
            assert_eq!(meta.uid(), uid, "{}", a.data_dir.display());
            let config = render::render_plan(&plan)
                .unwrap()
                .into_iter()
                .find(|f| f.product == a.product)
                .unwrap()
                .path;
            let (ok, err) = as_agent_user(
                "echo x > \"$1/probe\" && mkdir \"$1/server\" && cat \"$2\" > /dev/null",
                &[&a.data_dir, &config],
            );
            assert!(ok, "{}: {err}", a.product);
        }
    }

    #[test]
    fn a_data_parent_left_unreachable_by_an_older_version_is_opened_up() {
        let Some((tmp, plan)) = root_plan() else {
            return;
        };
        // What `DirBuilder::recursive(true).mode(0o750)` used to leave.
        let data = tmp.path().join("state/data/consul");
        std::fs::create_dir_all(&data).unwrap();
        for d in [tmp.path().join("state/data"), data.clone()] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o750)).unwrap();
        }
        prepare(&plan).unwrap();
        let (ok, err) = as_agent_user("touch \"$1/node-id\"", &[&data]);
        assert!(ok, "{err}");
    }

    #[test]
    fn an_ancestor_the_agent_cannot_search_is_an_error_naming_it() {
        if !as_root() {
            return;
        }
        let private = std::fs::Permissions::from_mode(0o700);
        // The whole tree private to root: the data dir is out of reach.
        let tmp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(tmp.path(), private.clone()).unwrap();
        assert_unreachable(tmp.path(), "state/data/consul", tmp.path());
        // Only the config dir private: the config file is out of reach.
        let tmp = root_dir();
        std::fs::create_dir(tmp.path().join("etc")).unwrap();
        std::fs::set_permissions(tmp.path().join("etc"), private).unwrap();
        assert_unreachable(
            tmp.path(),
            "etc/consul.d/consul.json",
            &tmp.path().join("etc"),
        );
    }

    /// Asserts that preparing the plan under `root` is a config error
    /// saying the agents' user cannot reach `rel` (under `root`) because of
    /// the 0700 dir `blocker`.
    fn assert_unreachable(root: &Path, rel: &str, blocker: &Path) {
        let err = prepare(&plan(root)).unwrap_err();
        assert_eq!(err.exit_code(), crate::error::EXIT_CONFIG);
        let text = err.to_string();
        assert!(
            text.contains(&format!(
                "user `{AGENT_USER}` cannot reach {}: {} (mode 0700",
                root.join(rel).display(),
                blocker.display()
            )),
            "{text}"
        );
    }
}

//! The daemon: takes over leftovers of a previous supervisor, starts the
//! agents in order (Consul, then Nomad once Consul is ready or a bounded wait
//! passed), applies SIGHUP reloads, and stops them in reverse order.
//!
//! Reading the role file, fetching releases and rendering are injected
//! through [`Preparer`]; this module never does them itself.
//!
//! # Orphans: replace, not adopt, and no `PR_SET_PDEATHSIG`
//!
//! Every spawned agent's pid and start time (from `/proc/<pid>/stat`) go to
//! `<state_dir>/run/<product>.pid`. If the supervisor is SIGKILLed, the agents
//! keep running (and keep serving): the next supervisor start finds each
//! recorded, still-live agent (same pid *and* start time, so a reused pid is
//! never signalled), stops it gracefully (Nomad first, without a leave or drain,
//! as on a restart), SIGKILLs it after its stop timeout, and only then starts
//! its own. A lock on `<state_dir>/run/supervisor.lock` (dropped by the
//! kernel when its holder dies, even by SIGKILL) keeps a second supervisor
//! from doing that to the agents of a live one. Adopting a running
//! agent was rejected: we could not collect its exit status nor read its
//! output. `PR_SET_PDEATHSIG` was rejected too: it fires when the *thread*
//! that forked exits (tokio threads come and go), and it would take the
//! agents down on a supervisor upgrade-restart, which must not cost a Consul
//! server its leadership.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sd_notify::NotifyState;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::actor::{ActorConfig, AgentHandle, Control, spawn_actor};
use super::check::{BoxFuture, HttpCheck, ReadyCheck};
use super::machine::deadline_after;
use super::notify::notify_systemd;
use super::spawn::{self, live_recorded_pid, pidfile_path};
use super::status::{AgentState, AgentStatus, NodeIdentity, SupervisorStatus};
use super::{SuperviseError, reap};
use crate::plan::{AgentPlan, Plan, Product};

/// Lock file under `<state_dir>/run`, held (`flock`) for the daemon's life.
pub const LOCK_FILE: &str = "supervisor.lock";

/// Default bound on waiting for Consul before starting Nomad anyway.
pub const DEFAULT_CONSUL_WAIT: Duration = Duration::from_secs(60);
/// Default window in which a new version must become ready, or be rolled back.
pub const DEFAULT_ROLLBACK_WINDOW: Duration = Duration::from_secs(60);
/// Default re-check period of a ready agent's API.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(30);
/// Poll period while waiting for a leftover agent (not our child) to exit.
const LEFTOVER_POLL: Duration = Duration::from_millis(20);
/// How long to wait for a process to vanish after SIGKILL.
const AFTER_KILL_WAIT: Duration = Duration::from_secs(5);

/// An installed release of an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// Binary to run, when it differs from the plan's `binary`
    /// (`None`: the plan's `current` link already points at it).
    pub binary: Option<PathBuf>,
    /// The version, e.g. `1.20.1`.
    pub version: String,
}

/// How an agent's rendered config changed on reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing to do.
    Unchanged,
    /// Only keys the agent reloads on SIGHUP changed.
    Reload,
    /// Something that needs a restart changed.
    Restart,
}

/// The steps of preparing a plan, injected so tests can fake them.
/// `commands::run` wires them to `role`, `release` and `render`.
pub trait Preparer: Send + Sync {
    /// Re-reads the role file and computes its plan; also returns the role
    /// file's SHA-256 (hex).
    fn load(&self) -> BoxFuture<'_, Result<(Plan, String), crate::Error>>;
    /// Fetches, verifies and installs the agent's release, making it current.
    fn install<'a>(
        &'a self,
        agent: &'a AgentPlan,
    ) -> BoxFuture<'a, Result<Installed, crate::Error>>;
    /// Makes `previous` the current release of the agent's product again.
    fn rollback<'a>(
        &'a self,
        agent: &'a AgentPlan,
        previous: &'a Installed,
    ) -> BoxFuture<'a, Result<(), crate::Error>>;
    /// Renders and writes `new`'s config files and says, per agent, how they
    /// changed from `old`'s.
    fn render<'a>(
        &'a self,
        old: &'a Plan,
        new: &'a Plan,
    ) -> BoxFuture<'a, Result<Vec<(Product, Change)>, crate::Error>>;
}

/// Builds the readiness check of an agent.
pub type CheckFactory = Arc<dyn Fn(&AgentPlan) -> Option<Arc<dyn ReadyCheck>> + Send + Sync>;

/// Knobs of [`run`].
#[derive(Clone)]
pub struct RunOptions {
    /// Bound on waiting for Consul to be ready before starting Nomad.
    pub consul_wait: Duration,
    /// Window in which a new version must be ready, else it is rolled back.
    pub rollback_window: Duration,
    /// Re-check period of a ready agent's API (`None`: only while starting).
    pub check_interval: Option<Duration>,
    /// Readiness check per agent (default: [`HttpCheck::for_agent`]).
    pub checks: CheckFactory,
    /// Extra environment per agent, on top of the clean one.
    pub extra_env: Vec<(Product, String, String)>,
    /// Become a child subreaper (PID 1 reaps anyway).
    pub become_subreaper: bool,
    /// The releases installed before start, per product.
    pub installed: HashMap<Product, Installed>,
    /// SHA-256 of the role file in force.
    pub config_hash: String,
    /// Give back the start-up working set each time all agents become
    /// ready and after each reload ([`super::trim`]).
    pub trim_memory: bool,
    /// The state dir's lock, when the caller took it first (with
    /// [`lock_state_dir`]) so that nothing before the daemon (health
    /// endpoint, Consul registration, install, render) runs beside a live
    /// supervisor. `None` (or a lock of another state dir): [`run`] takes
    /// it itself.
    pub state_lock: Option<Arc<StateLock>>,
    /// Where the agents' output lines go.
    pub agent_log: crate::telemetry::AgentLog,
    /// The restart marker ([`RESTART_MARKER`]): found fresh at stop time,
    /// the stop is a restart and Nomad stops without leaving or draining.
    pub restart_marker: Option<PathBuf>,
}

/// Written (by root) just before the supervisor is restarted, e.g. by the
/// package's maintainer scripts before `try-restart`: the coming stop is a
/// restart, so Nomad stops with [`crate::plan::NOMAD_KEEP_WORKLOADS_SIGNAL`]
/// (no leave, no drain) instead of its stop signal. Consumed by that stop;
/// one found at start is stale and removed.
pub const RESTART_MARKER: &str = "/run/hashi-supervisor/restart";
/// Environment variable naming another restart marker (tests).
pub const RESTART_MARKER_ENV: &str = "HASHI_SUPERVISOR_RESTART_MARKER";
/// A marker older than this is not the current restart's (a try-restart of
/// a service that was not running leaves one behind).
const RESTART_MARKER_MAX_AGE: Duration = Duration::from_secs(600);

/// The restart marker path: [`RESTART_MARKER_ENV`] when set, else
/// [`RESTART_MARKER`].
pub fn restart_marker_path() -> PathBuf {
    std::env::var_os(RESTART_MARKER_ENV)
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from(RESTART_MARKER), PathBuf::from)
}

/// Whether `marker` asks for a restart now: it exists, is a regular file
/// owned by our user, was written after `since` and not long ago. It is
/// removed either way.
fn take_restart_marker(marker: &Path, since: std::time::SystemTime) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(marker) else {
        return false;
    };
    let _ = std::fs::remove_file(marker);
    let Ok(written) = meta.modified() else {
        return false;
    };
    let fresh = written >= since
        && written
            .elapsed()
            .map_or(true, |age| age <= RESTART_MARKER_MAX_AGE);
    let ours = meta.uid() == nix::unistd::Uid::effective().as_raw();
    if !(meta.is_file() && ours && fresh) {
        tracing::warn!(path = %marker.display(), "ignoring a stale or foreign restart marker");
        return false;
    }
    true
}

/// The signal that stops `agent` and keeps its workloads: for a Nomad
/// whose rendered config does not leave on SIGTERM, SIGTERM; else the
/// agent's stop signal.
fn keep_workloads_signal(plan: &Plan, agent: &AgentPlan) -> Signal {
    match (&plan.render.nomad, agent.product) {
        (Some(n), Product::Nomad) if !n.leave_on_terminate => {
            crate::plan::NOMAD_KEEP_WORKLOADS_SIGNAL
        }
        _ => agent.stop_signal,
    }
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            consul_wait: DEFAULT_CONSUL_WAIT,
            rollback_window: DEFAULT_ROLLBACK_WINDOW,
            check_interval: Some(DEFAULT_CHECK_INTERVAL),
            checks: Arc::new(|a: &AgentPlan| {
                Some(Arc::new(HttpCheck::for_agent(a)) as Arc<dyn ReadyCheck>)
            }),
            extra_env: Vec::new(),
            become_subreaper: true,
            installed: HashMap::new(),
            config_hash: String::new(),
            trim_memory: true,
            state_lock: None,
            agent_log: crate::telemetry::AgentLog::default(),
            restart_marker: None,
        }
    }
}

/// What the signal layer asks of a running daemon (shutdown itself is the
/// `CancellationToken`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaemonEvent {
    /// SIGHUP: re-read the role file and apply what changed.
    Reload,
    /// A second SIGTERM/SIGINT (or SIGQUIT): skip the remaining grace.
    Hurry,
}

/// A status channel for `plan`, to share with the health endpoint.
pub fn status_channel(plan: &Plan) -> Arc<watch::Sender<SupervisorStatus>> {
    let (tx, _rx) = watch::channel(SupervisorStatus {
        agents: plan
            .agents
            .iter()
            .map(|a| AgentStatus::new(a.product))
            .collect(),
        config_hash: String::new(),
        reload_error: None,
        stopping: false,
        node: Some(NodeIdentity::of(plan)),
    });
    Arc::new(tx)
}

/// Runs the node's agents until `shutdown`, then stops them (Nomad first)
/// and returns `Ok` after a clean stop.
///
/// `plan` must be prepared (installed and rendered) already. `status` must
/// come from [`status_channel`] of the same plan.
pub async fn run(
    plan: Plan,
    preparer: Arc<dyn Preparer>,
    opts: RunOptions,
    status: Arc<watch::Sender<SupervisorStatus>>,
    mut events: mpsc::UnboundedReceiver<DaemonEvent>,
    shutdown: CancellationToken,
) -> Result<(), SuperviseError> {
    let run_dir = plan.state_dir.join("run");
    // One daemon per state dir: a second one must never "take over" the
    // agents of a live one. The kernel drops the lock when its holder dies,
    // even by SIGKILL, so a dead supervisor never blocks the next.
    let _lock = match &opts.state_lock {
        Some(lock) if lock.run_dir == run_dir => lock.clone(),
        _ => Arc::new(lock_state_dir(&plan.state_dir)?),
    };
    // Inherited by every agent (see `spawn`): set once, not per spawn.
    spawn::raise_own_limits();
    let tasks = TaskTracker::new();
    let agent_pids = Arc::new(Mutex::new(HashSet::new()));
    let reaper_cancel = CancellationToken::new();
    if reap::becomes_reaper(opts.become_subreaper) {
        tasks.spawn(reap::run(agent_pids.clone(), reaper_cancel.clone()));
    }

    // A restart marker from before this start is not for this run.
    let started_at = std::time::SystemTime::now();
    if let Some(m) = &opts.restart_marker {
        let _ = std::fs::remove_file(m);
    }
    // Leftovers go in stop order: Nomad before the Consul it may use.
    for agent in plan.agents.iter().rev() {
        // Replacing is a restart: a leftover Nomad keeps its workloads.
        stop_leftover(agent, keep_workloads_signal(&plan, agent), &run_dir).await;
    }

    status.send_modify(|s| {
        s.config_hash = opts.config_hash.clone();
        s.stopping = false;
    });
    let handles: Vec<AgentHandle> = plan
        .agents
        .iter()
        .enumerate()
        .map(|(index, a)| {
            let mut agent = a.clone();
            let installed = opts.installed.get(&a.product);
            if let Some(bin) = installed.and_then(|i| i.binary.clone()) {
                agent.binary = bin;
            }
            let cfg = ActorConfig {
                index,
                version: installed.map(|i| i.version.clone()),
                run_dir: run_dir.clone(),
                extra_env: opts
                    .extra_env
                    .iter()
                    .filter(|(p, _, _)| *p == a.product)
                    .map(|(_, k, v)| (k.clone(), v.clone()))
                    .collect(),
                check: (opts.checks)(a),
                check_interval: opts.check_interval,
                status: status.clone(),
                agent_pids: agent_pids.clone(),
                agent_log: opts.agent_log.clone(),
                restart_signal: keep_workloads_signal(&plan, a),
                plan: agent,
            };
            spawn_actor(cfg, &tasks)
        })
        .collect();

    let mut daemon = Daemon {
        started_at,
        plan,
        installed: opts.installed.clone(),
        preparer,
        opts,
        status,
        handles,
        hurry: false,
    };
    if daemon.start_in_order(&shutdown).await {
        daemon.serve(&mut events, &shutdown).await;
    }
    daemon.stop_all(&mut events).await;
    let Daemon { handles, .. } = daemon;
    drop(handles);
    reaper_cancel.cancel();
    tasks.close();
    tasks.wait().await;
    Ok(())
}

struct Daemon {
    /// When this daemon started (a restart marker must be younger).
    started_at: std::time::SystemTime,
    plan: Plan,
    installed: HashMap<Product, Installed>,
    preparer: Arc<dyn Preparer>,
    opts: RunOptions,
    status: Arc<watch::Sender<SupervisorStatus>>,
    handles: Vec<AgentHandle>,
    hurry: bool,
}

impl Daemon {
    fn handle(&self, product: Product) -> Option<&AgentHandle> {
        self.handles.iter().find(|h| h.product() == product)
    }

    /// Starts Consul, then Nomad once Consul is ready (bounded). `false` if
    /// shutdown came first.
    async fn start_in_order(&self, shutdown: &CancellationToken) -> bool {
        for h in &self.handles {
            if shutdown.is_cancelled() {
                return false;
            }
            if h.product() == Product::Nomad {
                if let Some(consul) = self.handle(Product::Consul) {
                    let ready = tokio::select! {
                        () = shutdown.cancelled() => return false,
                        r = tokio::time::timeout(
                            self.opts.consul_wait,
                            consul.wait_for(|s| s.ready || s.state == AgentState::Failed),
                        ) => r,
                    };
                    let why = match ready {
                        Ok(_) if consul.status().ready => None,
                        Ok(_) => Some("consul failed, nomad started anyway".to_string()),
                        Err(_) => Some(format!(
                            "consul not ready after {}s, nomad started anyway",
                            self.opts.consul_wait.as_secs()
                        )),
                    };
                    if let Some(why) = &why {
                        tracing::warn!(agent = "nomad", reason = %why, "starting without a ready consul");
                    }
                    let _ = h.send(Control::Note(why));
                }
            }
            if let Err(e) = h.send(Control::Start) {
                tracing::error!(error = %e, "failed to start agent");
            }
        }
        true
    }

    /// Until shutdown: reloads on request, keeps systemd informed.
    async fn serve(
        &mut self,
        events: &mut mpsc::UnboundedReceiver<DaemonEvent>,
        shutdown: &CancellationToken,
    ) {
        let mut rx = self.status.subscribe();
        let mut told_ready = false;
        let mut was_all_ready = false;
        let mut last_status_line = String::new();
        let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
        let mut next_watchdog = watchdog.map(|d| deadline_after(Instant::now(), d));
        loop {
            {
                let s = rx.borrow_and_update();
                let line = status_line(&s);
                let all_ready = !s.agents.is_empty() && s.agents.iter().all(|a| a.ready);
                drop(s);
                if line != last_status_line {
                    notify_systemd(&[NotifyState::Status(&line)]);
                    last_status_line = line;
                }
                if all_ready && !told_ready {
                    tracing::info!("all agents ready");
                    notify_systemd(&[NotifyState::Ready]);
                    told_ready = true;
                }
                // Start-up (or a restart) is over: what getting here touched
                // goes back; the steady state keeps only what it uses.
                if all_ready && !was_all_ready && self.opts.trim_memory {
                    super::trim::release_startup_memory();
                }
                was_all_ready = all_ready;
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                ev = events.recv() => match ev {
                    Some(DaemonEvent::Reload) => self.reload(shutdown).await,
                    Some(DaemonEvent::Hurry) => self.hurry = true,
                    None => {}
                },
                r = rx.changed() => if r.is_err() { return },
                () = sleep_until_some(next_watchdog) => {
                    notify_systemd(&[NotifyState::Watchdog]);
                    next_watchdog = watchdog.map(|d| deadline_after(Instant::now(), d));
                }
            }
        }
    }

    fn set_reload_error(&self, err: Option<String>) {
        self.status.send_modify(|s| s.reload_error = err);
    }

    /// SIGHUP: re-read, re-render, then per agent reload, restart (one at a
    /// time), or upgrade with rollback.
    async fn reload(&mut self, shutdown: &CancellationToken) {
        notify_systemd(&[NotifyState::Reloading]);
        tracing::info!("reloading role file");
        let outcome = self.try_reload(shutdown).await;
        if let Err(msg) = &outcome {
            tracing::error!(error = %msg, "reload refused, keeping the running configuration");
        }
        self.set_reload_error(outcome.err());
        notify_systemd(&[NotifyState::Ready]);
        // A reload may have downloaded and rendered: give that memory back.
        if self.opts.trim_memory {
            super::trim::release_startup_memory();
        }
    }

    async fn try_reload(&mut self, shutdown: &CancellationToken) -> Result<(), String> {
        let (new, hash) = self.preparer.load().await.map_err(|e| error_chain(&e))?;
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
            if (old.http_addr, &old.api_tls) != (agent.http_addr, &agent.api_tls) {
                return Err(format!(
                    "failed to apply reload: the {} HTTP API moves (address, port or TLS), restart the supervisor",
                    agent.product
                ));
            }
        }
        let changes = self
            .preparer
            .render(&self.plan, &new)
            .await
            .map_err(|e| error_chain(&e))?;
        let mut errors = Vec::new();
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
                .map_or(Change::Restart, |(_, c)| *c);
            if agent.version != old.version {
                if let Err(e) = self.upgrade(&h, &old, agent).await {
                    errors.push(e);
                }
                continue;
            }
            let mut a = agent.clone();
            if let Some(bin) = self
                .installed
                .get(&a.product)
                .and_then(|i| i.binary.clone())
            {
                a.binary = bin;
            }
            let _ = h.send(Control::UpdatePlan(Box::new(a), None));
            match change {
                Change::Unchanged => {}
                Change::Reload => {
                    let _ = h.send(Control::Reload);
                }
                Change::Restart => {
                    tracing::info!(agent = %agent.product, "config change needs a restart");
                    let r0 = h.status().restarts;
                    let _ = h.send(Control::Restart);
                    // One at a time: wait for this one before the next.
                    let _ = tokio::time::timeout(
                        self.opts.rollback_window,
                        h.wait_for(|s| {
                            (s.restarts > r0 && s.ready)
                                || matches!(s.state, AgentState::Failed | AgentState::Backoff)
                        }),
                    )
                    .await;
                }
            }
        }
        // The node info the health endpoint shows follows the plan now in
        // force (e.g. a new datacenter).
        let node = NodeIdentity::of(&new);
        self.plan = new;
        self.status.send_modify(|s| {
            s.config_hash = hash;
            s.node = Some(node);
        });
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// Installs `new`'s version, restarts on it, and rolls back to `old`'s if
    /// it does not become ready within the window.
    async fn upgrade(
        &mut self,
        h: &AgentHandle,
        old: &AgentPlan,
        new: &AgentPlan,
    ) -> Result<(), String> {
        let product = new.product;
        tracing::info!(agent = %product, from = %old.version, to = %new.version, "upgrading");
        let inst = self.preparer.install(new).await.map_err(|e| {
            format!(
                "failed to install {product} {}: {}",
                new.version,
                error_chain(&e)
            )
        })?;
        let previous = self.installed.get(&product).cloned();
        let before = h.status();
        let mut a = new.clone();
        if let Some(bin) = &inst.binary {
            a.binary = bin.clone();
        }
        let _ = h.send(Control::UpdatePlan(Box::new(a), Some(inst.version.clone())));
        let _ = h.send(Control::Restart);
        if started_ok(h, &before, self.opts.rollback_window).await {
            tracing::info!(agent = %product, version = %inst.version, "upgrade done");
            self.installed.insert(product, inst);
            return Ok(());
        }
        let Some(prev) = previous else {
            return Err(format!(
                "{product} {} failed to start and no previous release is known",
                inst.version
            ));
        };
        tracing::error!(agent = %product, version = %inst.version, previous = %prev.version, "new version failed to start, rolling back");
        if let Err(e) = self.preparer.rollback(old, &prev).await {
            return Err(format!(
                "{product} {} failed to start, and rollback failed: {}",
                inst.version,
                error_chain(&e)
            ));
        }
        let mut a = old.clone();
        if let Some(bin) = &prev.binary {
            a.binary = bin.clone();
        }
        let why = format!(
            "version {} failed to start, rolled back to {}",
            inst.version, prev.version
        );
        let _ = h.send(Control::UpdatePlan(Box::new(a), Some(prev.version.clone())));
        let _ = h.send(Control::Note(Some(why.clone())));
        let _ = h.send(Control::Restart);
        Err(why)
    }

    /// Stops agents in reverse start order, each with its signal and grace;
    /// a `Hurry` event cuts the grace of the current and later ones.
    async fn stop_all(&mut self, events: &mut mpsc::UnboundedReceiver<DaemonEvent>) {
        self.status.send_modify(|s| s.stopping = true);
        notify_systemd(&[NotifyState::Stopping]);
        let restart = self
            .opts
            .restart_marker
            .as_deref()
            .is_some_and(|m| take_restart_marker(m, self.started_at));
        if restart {
            tracing::info!(
                "stopping agents for a restart: nomad stops without leaving or draining, its workloads keep running"
            );
        } else {
            tracing::info!("stopping agents");
        }
        let plans: Vec<AgentPlan> = self.plan.agents.iter().rev().cloned().collect();
        for agent in plans {
            let Some(h) = self.handle(agent.product).cloned() else {
                continue;
            };
            let grace = if self.hurry {
                Duration::ZERO
            } else {
                agent.stop_timeout
            };
            let signal = if restart {
                keep_workloads_signal(&self.plan, &agent)
            } else {
                agent.stop_signal
            };
            let _ = h.send(Control::Stop { signal, grace });
            let bound = grace.saturating_add(AFTER_KILL_WAIT);
            let stopped =
                h.wait_for(|s| matches!(s.state, AgentState::Stopped | AgentState::Failed));
            tokio::pin!(stopped);
            let deadline = tokio::time::sleep(bound);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    () = &mut deadline => {
                        tracing::error!(agent = %agent.product, "agent did not stop, leaving it");
                        break;
                    }
                    ev = events.recv() => if let Some(DaemonEvent::Hurry) = ev {
                        if !self.hurry {
                            tracing::warn!("second stop request, skipping the remaining grace");
                        }
                        self.hurry = true;
                        let _ = h.send(Control::Stop { signal, grace: Duration::ZERO });
                    },
                }
            }
        }
    }
}

/// Whether the agent, restarted after `before`, became ready without a crash
/// within `window`. A still-starting process at the end of the window counts
/// as started (slow, not failed).
async fn started_ok(h: &AgentHandle, before: &AgentStatus, window: Duration) -> bool {
    let r0 = before.restarts;
    let was_live = matches!(before.state, AgentState::Starting | AgentState::Running);
    let failed = move |s: &AgentStatus| {
        s.state == AgentState::Failed
            || s.restarts > r0.saturating_add(1)
            || (s.state == AgentState::Backoff && (s.restarts > r0 || was_live))
    };
    let outcome = tokio::time::timeout(
        window,
        h.wait_for(|s| failed(s) || (s.restarts > r0 && s.ready)),
    )
    .await;
    let s = h.status();
    match outcome {
        Ok(_) => !failed(&s),
        Err(_) => !failed(&s) && s.pid.is_some(),
    }
}

/// Sleeps until `at`, or forever when there is no `at`.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// `STATUS=` line for systemd: `consul running ready, nomad starting`.
fn status_line(s: &SupervisorStatus) -> String {
    s.agents
        .iter()
        .map(|a| {
            let st = serde_json::to_value(a.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            format!(
                "{} {}{}",
                a.product,
                st,
                if a.ready { " ready" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// An error and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// The state dir's lock ([`LOCK_FILE`]), held while this value lives: only
/// [`lock_state_dir`] makes one.
#[derive(Debug)]
pub struct StateLock {
    run_dir: PathBuf,
    _file: Flock<std::fs::File>,
}

/// Creates `<state_dir>/run` and takes the state dir's lock, or fails at
/// once if another live supervisor holds it. The file is opened
/// close-on-exec: agents never inherit it.
pub fn lock_state_dir(state_dir: &Path) -> Result<StateLock, SuperviseError> {
    let run_dir = state_dir.join("run");
    std::fs::create_dir_all(&run_dir).map_err(|source| SuperviseError::RunDir {
        path: run_dir.clone(),
        source,
    })?;
    let file = lock_state(&run_dir)?;
    Ok(StateLock {
        run_dir,
        _file: file,
    })
}

fn lock_state(run_dir: &Path) -> Result<Flock<std::fs::File>, SuperviseError> {
    let path = run_dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| SuperviseError::Lock {
            path: path.clone(),
            source,
        })?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(lock),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(SuperviseError::AlreadyRunning { path }),
        Err((_, e)) => Err(SuperviseError::Lock {
            path,
            source: e.into(),
        }),
    }
}

/// Stops an agent a previous supervisor left running (see the module docs)
/// with `signal`.
pub async fn stop_leftover(agent: &AgentPlan, signal: Signal, run_dir: &Path) {
    let path = pidfile_path(run_dir, agent.product);
    let Some(pid) = live_recorded_pid(&path) else {
        let _ = std::fs::remove_file(&path);
        return;
    };
    let Ok(raw) = i32::try_from(pid) else { return };
    tracing::warn!(agent = %agent.product, pid, "agent left running by a previous supervisor, stopping it");
    let _ = kill(Pid::from_raw(raw), signal);
    if !wait_gone(&path, agent.stop_timeout).await {
        tracing::warn!(agent = %agent.product, pid, "leftover agent did not stop in time, sending SIGKILL");
        let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
        if !wait_gone(&path, AFTER_KILL_WAIT).await {
            tracing::error!(agent = %agent.product, pid, "leftover agent survived SIGKILL");
        }
    }
    let _ = std::fs::remove_file(&path);
}

async fn wait_gone(pidfile: &Path, within: Duration) -> bool {
    let deadline = deadline_after(Instant::now(), within);
    loop {
        if live_recorded_pid(pidfile).is_none() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(LEFTOVER_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(text: &str, roles: &[&str]) -> Plan {
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        let host = crate::role::StaticHost {
            hostname: Some("ams2-client-01".into()),
            interfaces: vec![("eth1".into(), std::net::Ipv4Addr::new(10, 0, 1, 21))],
            ..Default::default()
        };
        let role = crate::role::parse(Path::new("/r/node.toml"), text, &roles, &host).unwrap();
        Plan::from_role(&role)
    }

    #[test]
    fn nomad_restarts_and_restart_stops_keep_workloads_with_sigterm() {
        let text = "schema = 1\n[discovery]\nnomad_retry_join = [\"10.0.1.11\"]\n";
        let plan = plan_of(text, &["consul-client", "nomad-client"]);
        let nomad = plan.agent(Product::Nomad).unwrap();
        let consul = plan.agent(Product::Consul).unwrap();
        // A real stop: SIGINT, which leaves and drains; a restart: SIGTERM.
        assert_eq!(nomad.stop_signal, Signal::SIGINT);
        assert_eq!(keep_workloads_signal(&plan, nomad), Signal::SIGTERM);
        assert!(!plan.render.nomad.as_ref().unwrap().leave_on_terminate);
        // Consul keeps its stop signal.
        assert_eq!(keep_workloads_signal(&plan, consul), consul.stop_signal);
    }

    #[test]
    fn only_a_fresh_marker_of_ours_means_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("restart");
        let before = std::time::SystemTime::now() - Duration::from_secs(5);
        assert!(!take_restart_marker(&m, before), "no marker");
        std::fs::write(&m, "").unwrap();
        assert!(take_restart_marker(&m, before));
        assert!(!m.exists(), "consumed");
        std::fs::write(&m, "").unwrap();
        let later = std::time::SystemTime::now() + Duration::from_secs(60);
        assert!(!take_restart_marker(&m, later), "written before the run");
        assert!(!m.exists(), "a stale one is removed too");
        std::fs::create_dir(&m).unwrap();
        assert!(!take_restart_marker(&m, before), "not a file");
    }

    #[test]
    fn status_line_names_each_agent_and_readiness() {
        let mut a = AgentStatus::new(Product::Consul);
        a.state = AgentState::Running;
        a.ready = true;
        let b = AgentStatus::new(Product::Nomad);
        let s = SupervisorStatus {
            agents: vec![a, b],
            config_hash: String::new(),
            reload_error: None,
            stopping: false,
            node: None,
        };
        assert_eq!(status_line(&s), "consul running ready, nomad stopped");
    }
}

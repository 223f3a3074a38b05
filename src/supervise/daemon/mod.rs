//! The daemon: takes over leftovers of a previous supervisor, starts the
//! agents in order (Consul, then Nomad once Consul is ready or a bounded wait
//! passed), applies SIGHUP reloads, and stops them in reverse order.
//!
//! Reading the role file, fetching releases and rendering are injected
//! through [`Preparer`]; this module never does them itself.
//!
//! This file holds what ties the parts together: the [`Preparer`] seam,
//! [`RunOptions`], and [`run`] (lock, take over, spawn the actors, start,
//! serve, stop). Each part owns one thing:
//!
//! * `lock`: one daemon per state dir.
//! * `takeover`: stopping the agents a previous supervisor left running.
//! * `restart`: the restart marker and the signal that keeps workloads.
//! * `start`: Consul, then Nomad once Consul is ready (bounded).
//! * `serve`: the steady loop: systemd status, readiness and watchdog.
//! * `reload`: SIGHUP: re-load, render, reload/restart.
//! * `rollout`: each agent to its wanted version through the upgrade
//!   gate (pinned by default: at start and after each reload), rollback;
//!   on its own task, one at a time, the agents' only owner while it runs
//!   (see its module docs for the ordering with reloads and re-plans).
//! * `gate`: the upgrade gate rebuilt from each new plan that changes
//!   what it depends on.
//! * `discovery`: re-plan on a change of discovered peers, and the
//!   persisted discovery report.
//! * `stop`: reverse-order stop, hurried by a second request.

pub mod discovery;
mod gate;
mod lock;
mod reload;
mod restart;
mod rollout;
mod serve;
mod start;
mod stop;
mod takeover;

pub use discovery::{DiscoveryFeed, ReplanCounts};
pub use lock::{LOCK_FILE, StateLock, lock_state_dir};
pub use restart::{RESTART_MARKER, RESTART_MARKER_ENV, restart_marker_path};
pub use takeover::stop_leftover;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::restart::keep_workloads_signal;
use super::actor::{ActorConfig, AgentHandle, spawn_actor};
use super::check::ReadyCheck;
use super::spawn;
use super::status::{AgentStatus, NodeIdentity, SupervisorStatus};
use super::{SuperviseError, reap};
use crate::plan::{AgentPlan, Plan, ReleasePlan};
use crate::release::Installed;
use crate::render::ChangeKind;
use crate::role::NodeRole;
use crate::vocab::Product;

/// Default bound on waiting for Consul before starting Nomad anyway.
pub const DEFAULT_CONSUL_WAIT: Duration = Duration::from_secs(60);
/// Default window in which a new version must become ready, or be rolled back.
pub const DEFAULT_ROLLBACK_WINDOW: Duration = Duration::from_secs(60);
/// Default re-check period of a ready agent's API.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(30);
/// How long to wait for a process to vanish after SIGKILL.
const AFTER_KILL_WAIT: Duration = Duration::from_secs(5);
/// Bound on a rollout's end at shutdown (a step cut short, `current` put
/// back) before the agents are stopped anyway.
const ROLLOUT_STOP_BOUND: Duration = Duration::from_secs(15);

/// The steps of preparing a plan, injected so tests can fake them.
/// `commands::run` wires them to `role`, `release` and `render`.
///
/// Its errors are the implementor's own ([`Preparer::Error`]): the daemon
/// only reports them (a reload keeps running on the old plan), while the
/// caller that prepared the first plan keeps their exit codes.
pub trait Preparer: Send + Sync + 'static {
    /// Why a step failed.
    type Error: std::error::Error + Send + Sync + 'static;
    /// Re-reads the role file and computes its plan; also returns the role
    /// file's SHA-256 (hex).
    fn load(&self) -> impl Future<Output = Result<(Plan, String), Self::Error>> + Send;
    /// Fetches, verifies and installs the agent's release under `release`
    /// (the settings of the plan being applied), making it current.
    fn install(
        &self,
        release: &ReleasePlan,
        agent: &AgentPlan,
    ) -> impl Future<Output = Result<Installed, Self::Error>> + Send;
    /// Resolves, fetches and verifies the agent's wanted release under
    /// `release` without making it current (the upgrade gate decides
    /// when; [`Preparer::activate`] then). Default: [`Preparer::install`].
    fn fetch(
        &self,
        release: &ReleasePlan,
        agent: &AgentPlan,
    ) -> impl Future<Output = Result<Installed, Self::Error>> + Send {
        self.install(release, agent)
    }
    /// Makes `installed` (from [`Preparer::fetch`]) the current release of
    /// its product. Default: nothing to do.
    fn activate(
        &self,
        release: &ReleasePlan,
        installed: &Installed,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        let _ = (release, installed);
        async { Ok(()) }
    }
    /// Makes `previous` the current release of its product under `release`
    /// again.
    fn rollback(
        &self,
        release: &ReleasePlan,
        previous: &Installed,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// Renders and writes `plan`'s config files and says, per agent, how
    /// they changed from what is on disk (what the running agents loaded).
    fn render(
        &self,
        plan: &Plan,
    ) -> impl Future<Output = Result<Vec<(Product, ChangeKind)>, Self::Error>> + Send;
    /// Re-reads the role file and returns the validated role (not yet
    /// planned) and its SHA-256 (hex), for a daemon that builds its plan
    /// with discovered peers ([`RunOptions::discovery`]). `None` (the
    /// default): this preparer only gives plans ([`Preparer::load`]).
    fn load_role(
        &self,
    ) -> impl Future<Output = Result<Option<(NodeRole, String)>, Self::Error>> + Send {
        async { Ok(None) }
    }
}

/// Builds the upgrade gate of a plan under `[upgrade]` settings
/// (`supervisor run`: [`crate::upgrade::Gate::for_plan`] through the
/// node's agent client).
pub type GateFactory =
    Arc<dyn Fn(&Plan, &crate::upgrade::UpgradeSettings) -> crate::upgrade::Gate + Send + Sync>;

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
    /// Readiness check per agent (default: none, readiness by sd_notify
    /// only; `supervisor run` passes [`super::check::ObservedCheck`]s).
    pub checks: CheckFactory,
    /// Extra environment per agent, on top of the clean one.
    pub extra_env: Vec<(Product, String, String)>,
    /// Become a child subreaper (PID 1 reaps anyway).
    pub become_subreaper: bool,
    /// The releases installed before start, per product: each agent runs
    /// its release's binary (the plan's `binary` when none is given).
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
    /// Discovery's reports and the role in force: a change of peers
    /// re-plans ([`discovery`]), SIGHUP plans with the current peers and
    /// learned identity. `None`: the plan never follows discovery.
    pub discovery: Option<DiscoveryFeed>,
    /// The upgrade gate every version change goes through (quorum, lock,
    /// pause); `None`: versions change at once (tests, a node without
    /// Consul).
    pub gate: Option<Arc<crate::upgrade::Gate>>,
    /// Builds the gate again from each new plan (a reload, a re-plan) that
    /// changes what it depends on; also builds the first one when `gate`
    /// is `None`. Its `[upgrade]` settings come from the role in force
    /// ([`DiscoveryFeed::role`]), else from the gate in force. `None`: the
    /// gate stays as given.
    pub gate_factory: Option<GateFactory>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            consul_wait: DEFAULT_CONSUL_WAIT,
            rollback_window: DEFAULT_ROLLBACK_WINDOW,
            check_interval: Some(DEFAULT_CHECK_INTERVAL),
            checks: Arc::new(|_: &AgentPlan| None),
            extra_env: Vec::new(),
            become_subreaper: true,
            installed: HashMap::new(),
            config_hash: String::new(),
            trim_memory: true,
            state_lock: None,
            agent_log: crate::telemetry::AgentLog::default(),
            restart_marker: None,
            discovery: None,
            gate: None,
            gate_factory: None,
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
    /// The node's certificate (and `node.json`) were renewed on disk:
    /// reload as for SIGHUP, and reload every agent even where its
    /// rendered config did not change, since both agents re-read their TLS
    /// files only on SIGHUP.
    Renewed,
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
pub async fn run<P: Preparer>(
    plan: Plan,
    preparer: Arc<P>,
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
            let installed = opts.installed.get(&a.product);
            let agent = on_release(a, installed);
            let cfg = ActorConfig {
                index,
                version: installed.map(|i| i.version.to_string()),
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
        persisted: None,
        rollout: None,
        unfinished: None,
        pending: Pending::default(),
        gate_inputs: None,
        shutdown: shutdown.clone(),
    };
    daemon.refresh_gate();
    if daemon.start_in_order(&shutdown).await {
        // Pinned by default: the agents started on the installed release;
        // a different wanted version goes through the gate, on the
        // rollout's own task, once the agents are up (`serve` tells
        // systemd READY=1 meanwhile: a gate wait, or a paused rollout,
        // never holds start-up past `TimeoutStartSec`).
        let wait = daemon.opts.consul_wait;
        daemon.start_rollout(Vec::new(), Some(wait));
        daemon.serve(&mut events, &shutdown).await;
    }
    // A gate wait ends at once; a restart or settle is cut short.
    daemon.end_rollout(ROLLOUT_STOP_BOUND).await;
    daemon.stop_all(&mut events).await;
    // The last sightings go to disk: the next start's seeds.
    if let Some(report) = daemon
        .opts
        .discovery
        .as_ref()
        .map(|f| f.reports.borrow().clone())
    {
        daemon.persist_discovery(&report);
    }
    let Daemon { handles, .. } = daemon;
    drop(handles);
    reaper_cancel.cancel();
    tasks.close();
    tasks.wait().await;
    Ok(())
}

/// The running daemon's state, shared by its parts (each adds its own
/// methods in its file).
struct Daemon<P> {
    /// When this daemon started (a restart marker must be younger).
    started_at: std::time::SystemTime,
    plan: Plan,
    installed: HashMap<Product, Installed>,
    preparer: Arc<P>,
    opts: RunOptions,
    status: Arc<watch::Sender<SupervisorStatus>>,
    handles: Vec<AgentHandle>,
    hurry: bool,
    /// The discovery report last written to the state dir.
    persisted: Option<discovery::Cached>,
    /// The rollout running on its task (then it alone touches the agents).
    rollout: Option<rollout::Rollout>,
    /// The agents whose spec changed for a rollout that ended before it
    /// was done (a reload or re-plan came): its successor carries on.
    unfinished: Option<Vec<Product>>,
    /// Work that touches the agents, waiting for the rollout to end.
    pending: Pending,
    /// What the gate in force was built from.
    gate_inputs: Option<gate::GateInputs>,
    /// The daemon's shutdown (the rollout task's too).
    shutdown: CancellationToken,
}

/// Work that waits for the rollout task to end.
#[derive(Debug, Default)]
struct Pending {
    /// A reload (`Some(true)`: a renewal's, the agents reload anyway).
    reload: Option<bool>,
    /// A re-plan for discovery's current report.
    replan: bool,
}

impl<P: Preparer> Daemon<P> {
    fn handle(&self, product: Product) -> Option<&AgentHandle> {
        self.handles.iter().find(|h| h.product() == product)
    }

    /// Starts a rollout of the plan in force on its own task; `changed`:
    /// the agents whose spec a reload changed (a failed fetch is then an
    /// error). Any rollout that ended early is carried on.
    fn start_rollout(&mut self, changed: Vec<Product>, wait_ready: Option<Duration>) {
        self.carry_on(changed);
        if let Some(r) = &self.rollout {
            // Never two: this one starts once the running one has ended.
            r.wind_down();
            return;
        }
        let changed = self.unfinished.take().unwrap_or_default();
        let runner = rollout::Runner {
            plan: self.plan.clone(),
            changed,
            preparer: self.preparer.clone(),
            gate: self.opts.gate.clone(),
            handles: self.handles.clone(),
            installed: self.installed.clone(),
            status: self.status.clone(),
            rollback_window: self.opts.rollback_window,
            wait_ready,
            shutdown: self.shutdown.clone(),
        };
        self.rollout = Some(runner.spawn());
    }

    /// Adds `changed` to what the next rollout carries on.
    fn carry_on(&mut self, changed: Vec<Product>) {
        let all = self.unfinished.get_or_insert_with(Vec::new);
        for p in changed {
            if !all.contains(&p) {
                all.push(p);
            }
        }
    }

    /// Takes back what the ended rollout installed and reports its errors.
    fn rollout_ended(
        &mut self,
        changed: Vec<Product>,
        outcome: Result<rollout::Outcome, tokio::task::JoinError>,
    ) {
        match outcome {
            Ok(o) => {
                self.installed = o.installed;
                if !o.errors.is_empty() {
                    let errors = o.errors.join("; ");
                    self.status.send_modify(|s| s.reload_error = Some(errors));
                }
                if !o.finished {
                    self.carry_on(changed);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "the rollout task failed");
                self.carry_on(changed);
            }
        }
    }

    /// Whether the daemon may touch the agents now (no rollout runs);
    /// otherwise asks the rollout to end (see `rollout`'s module docs).
    fn agents_free(&self) -> bool {
        match &self.rollout {
            None => true,
            Some(r) => {
                r.wind_down();
                false
            }
        }
    }

    /// At shutdown: ends the rollout (bounded) and takes back what it
    /// installed.
    async fn end_rollout(&mut self, bound: Duration) {
        if let Some(r) = self.rollout.take() {
            let changed = r.changed().to_vec();
            if let Some(o) = r.finish(bound).await {
                self.rollout_ended(changed, Ok(o));
            }
        }
    }
}

/// `agent` running the binary of its installed release (the plan's
/// `binary` when none is known).
fn on_release(agent: &AgentPlan, installed: Option<&Installed>) -> AgentPlan {
    let mut a = agent.clone();
    if let Some(i) = installed {
        a.binary = i.binary.clone();
    }
    a
}

/// An error and its sources on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

//! One actor per agent: a task that owns the child process and its
//! [`State`], takes [`Control`]s from cloneable [`AgentHandle`]s, and
//! publishes its [`AgentStatus`] into the shared [`SupervisorStatus`].
//!
//! It never calls `waitpid(-1)`: the child is reaped by tokio through its own
//! `Child`. Signals go to the main pid only, never to the process group.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::net::UnixDatagram;
use tokio::process::Child;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::SuperviseError;
use super::check::{BoxFuture, CHECK_TIMEOUT, ReadyCheck};
use super::machine::{Effect, Event, State, deadline_after, transition};
use super::notify::{
    AgentNotice, MAX_NOTIFY_DATAGRAM, bind_agent_socket, parse_notify, socket_path,
};
use super::policy::RestartTracker;
use super::spawn::{SpawnSpec, pidfile_path, spawn_agent, write_pidfile};
use super::status::{AgentState, AgentStatus, ExitInfo, SupervisorStatus};
use crate::plan::AgentPlan;
use crate::telemetry::AgentLog;
use crate::vocab::Product;

/// How many of an agent's last log lines the status keeps.
pub const LAST_LINES: usize = 50;
/// How often the readiness check runs while an agent is starting.
pub const STARTING_CHECK_PERIOD: Duration = Duration::from_millis(250);
/// Check period of a running agent whose last check failed (at most the
/// configured interval): a recovery shows within seconds, not a full
/// interval later; a healthy idle agent keeps the long interval.
pub const NOT_READY_CHECK_PERIOD: Duration = Duration::from_secs(2);

/// A command to an agent's actor.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// Start it (no-op if running).
    Start,
    /// Stop it with `signal`; SIGKILL to the main pid after `grace`.
    Stop {
        /// Stop signal.
        signal: Signal,
        /// Grace before SIGKILL.
        grace: Duration,
    },
    /// Stop it with the plan's stop signal and timeout, then start it.
    Restart,
    /// Send a signal to the main pid.
    Signal(Signal),
    /// Ask it to reload its config (SIGHUP to the main pid).
    Reload,
    /// Set the status `reason` (e.g. why it was started without Consul).
    Note(Option<String>),
    /// Use a new plan (binary, args, policy) from the next spawn on, and the
    /// version it runs.
    UpdatePlan(Box<AgentPlan>, Option<String>),
}

/// Cloneable handle to one agent's actor.
#[derive(Debug, Clone)]
pub struct AgentHandle {
    product: Product,
    index: usize,
    tx: mpsc::UnboundedSender<Control>,
    status: watch::Receiver<SupervisorStatus>,
}

impl AgentHandle {
    /// Which agent.
    pub fn product(&self) -> Product {
        self.product
    }

    /// Sends a control to the actor.
    pub fn send(&self, control: Control) -> Result<(), SuperviseError> {
        self.tx
            .send(control)
            .map_err(|_| SuperviseError::ActorGone(self.product))
    }

    /// The agent's current status.
    pub fn status(&self) -> AgentStatus {
        self.status.borrow().agents[self.index].clone()
    }

    /// Waits until `pred` holds for the agent's status; `false` if the actor
    /// is gone.
    pub async fn wait_for(&self, pred: impl Fn(&AgentStatus) -> bool) -> bool {
        let mut rx = self.status.clone();
        rx.wait_for(|s| pred(&s.agents[self.index])).await.is_ok()
    }
}

/// Everything an actor needs.
pub struct ActorConfig {
    /// Index of this agent in `SupervisorStatus::agents`.
    pub index: usize,
    /// The agent's plan.
    pub plan: AgentPlan,
    /// Installed version, for the status.
    pub version: Option<String>,
    /// `<state_dir>/run`: pidfiles and notify sockets.
    pub run_dir: PathBuf,
    /// Extra environment variables for the agent (tests, operators).
    pub extra_env: Vec<(String, String)>,
    /// Readiness check besides sd_notify READY=1.
    pub check: Option<Arc<dyn ReadyCheck>>,
    /// How often to re-run the check once ready (`None`: never).
    pub check_interval: Option<Duration>,
    /// Shared status.
    pub status: Arc<watch::Sender<SupervisorStatus>>,
    /// Pids of live agent children: the reaper never touches them. Held
    /// across spawn so a child that dies at once is still known.
    pub agent_pids: Arc<Mutex<HashSet<u32>>>,
    /// Where the agent's output lines go.
    pub agent_log: AgentLog,
    /// Signal of a restart (a config change or upgrade): for Nomad the
    /// one that keeps its workloads (no leave, no drain), else the stop
    /// signal.
    pub restart_signal: Signal,
}

/// Starts the actor on `tasks` and returns its handle.
pub fn spawn_actor(cfg: ActorConfig, tasks: &TaskTracker) -> AgentHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = AgentHandle {
        product: cfg.plan.product,
        index: cfg.index,
        tx,
        status: cfg.status.subscribe(),
    };
    let notify_path = socket_path(&cfg.run_dir, cfg.plan.product);
    let spec = SpawnSpec::for_plan(&cfg.plan);
    let notify = match bind_agent_socket(&notify_path, spec.uid()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(agent = %cfg.plan.product, path = %notify_path.display(), error = %e, "failed to bind notify socket, readiness by check only");
            None
        }
    };
    let actor = Actor {
        tracker: RestartTracker::new(cfg.plan.restart.clone()),
        spec,
        state: State::Stopped,
        child: None,
        notify,
        notify_path,
        ready: false,
        since_wall: None,
        restarts: 0,
        last_exit: None,
        reason: None,
        next_check: None,
        check_fut: None,
        cfg,
    };
    tasks.spawn(actor.run(rx));
    handle
}

struct Actor {
    cfg: ActorConfig,
    tracker: RestartTracker,
    /// The plan's user and environment, resolved once per plan.
    spec: SpawnSpec,
    state: State,
    child: Option<Child>,
    notify: Option<UnixDatagram>,
    notify_path: PathBuf,
    ready: bool,
    since_wall: Option<SystemTime>,
    restarts: u64,
    last_exit: Option<ExitInfo>,
    reason: Option<String>,
    next_check: Option<Instant>,
    check_fut: Option<BoxFuture<'static, bool>>,
}

impl Actor {
    fn product(&self) -> Product {
        self.cfg.plan.product
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Control>) {
        let mut buf = vec![0u8; MAX_NOTIFY_DATAGRAM];
        let mut controls_open = true;
        loop {
            self.publish();
            if !controls_open && self.child.is_none() {
                break;
            }
            let timer = self.next_timer();
            tokio::select! {
                biased;
                ctl = rx.recv(), if controls_open => match ctl {
                    Some(c) => self.on_control(c),
                    None => {
                        controls_open = false;
                        let p = &self.cfg.plan;
                        let (signal, grace) = (p.stop_signal, p.stop_timeout);
                        self.on_control(Control::Stop { signal, grace });
                    }
                },
                res = wait_child(&mut self.child) => self.on_exit(res),
                n = recv_opt(self.notify.as_ref(), &mut buf) => {
                    if let Some(n) = n {
                        let notices = parse_notify(&buf[..n]);
                        for notice in notices {
                            self.on_notice(notice);
                        }
                    }
                }
                ok = poll_opt(&mut self.check_fut) => self.on_check(ok),
                () = sleep_opt(timer) => self.on_timer(),
            }
        }
        let _ = std::fs::remove_file(&self.notify_path);
    }

    fn next_timer(&self) -> Option<Instant> {
        let state_timer = match &self.state {
            State::Backoff { until, .. } => Some(*until),
            State::Stopping {
                deadline,
                killed: false,
                ..
            } => Some(*deadline),
            _ => None,
        };
        let check = if self.check_fut.is_none() {
            self.next_check
        } else {
            None
        };
        match (state_timer, check) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        match &self.state {
            State::Backoff { until, .. } if *until <= now => self.apply(Event::BackoffElapsed),
            State::Stopping {
                deadline,
                killed: false,
                ..
            } if *deadline <= now => self.apply(Event::GraceExpired),
            _ => {}
        }
        if self.check_fut.is_none() && self.next_check.is_some_and(|t| t <= now) {
            self.next_check = None;
            if let Some(check) = self.cfg.check.clone() {
                self.check_fut = Some(Box::pin(async move {
                    tokio::time::timeout(CHECK_TIMEOUT, check.check())
                        .await
                        .unwrap_or(false)
                }));
            }
        }
    }

    fn on_check(&mut self, ok: bool) {
        self.check_fut = None;
        match self.state {
            State::Starting { .. } => {
                if ok {
                    self.became_ready("check passed");
                } else {
                    self.next_check = Some(deadline_after(Instant::now(), STARTING_CHECK_PERIOD));
                }
            }
            State::Running { .. } => {
                if ok != self.ready {
                    tracing::info!(agent = %self.product(), ready = ok, "readiness check changed");
                }
                self.ready = ok;
                self.next_check = self.cfg.check_interval.map(|i| {
                    deadline_after(
                        Instant::now(),
                        if ok { i } else { i.min(NOT_READY_CHECK_PERIOD) },
                    )
                });
            }
            _ => {}
        }
    }

    fn became_ready(&mut self, how: &str) {
        if matches!(self.state, State::Starting { .. }) {
            tracing::info!(agent = %self.product(), how, "ready");
        }
        // A check still in flight was started before this news (e.g. before
        // the agent's HTTP listener was up while it then said READY=1): its
        // answer is stale and must not mark the agent unready.
        self.check_fut = None;
        self.ready = true;
        self.apply(Event::Ready);
        self.next_check = self
            .cfg
            .check_interval
            .map(|i| deadline_after(Instant::now(), i));
    }

    fn on_notice(&mut self, notice: AgentNotice) {
        let agent = self.product();
        match notice {
            AgentNotice::Ready => {
                if matches!(self.state, State::Starting { .. } | State::Running { .. }) {
                    self.became_ready("sd_notify");
                }
            }
            AgentNotice::Reloading => {
                tracing::info!(agent = %agent, "agent reloading");
                self.ready = false;
            }
            AgentNotice::Stopping => tracing::info!(agent = %agent, "agent stopping"),
            AgentNotice::Status(s) => tracing::debug!(agent = %agent, status = %s, "agent status"),
        }
    }

    fn on_control(&mut self, control: Control) {
        let now = Instant::now();
        match control {
            Control::Start => self.apply(Event::Start),
            Control::Stop { signal, grace } => self.apply(Event::Stop {
                signal,
                deadline: deadline_after(now, grace),
            }),
            Control::Restart => {
                let p = &self.cfg.plan;
                let ev = Event::Restart {
                    signal: self.cfg.restart_signal,
                    deadline: deadline_after(now, p.stop_timeout),
                };
                self.apply(ev);
            }
            Control::Signal(sig) => self.signal_main(sig),
            Control::Reload => {
                tracing::info!(agent = %self.product(), "reloading with SIGHUP");
                self.signal_main(Signal::SIGHUP);
            }
            Control::Note(reason) => self.reason = reason,
            Control::UpdatePlan(plan, version) => {
                self.tracker.set_policy(plan.restart.clone());
                self.spec = SpawnSpec::for_plan(&plan);
                self.cfg.plan = *plan;
                if version.is_some() {
                    self.cfg.version = version;
                }
            }
        }
    }

    fn main_pid(&self) -> Option<u32> {
        match self.state {
            State::Starting { pid, .. }
            | State::Running { pid, .. }
            | State::Stopping { pid, .. } => Some(pid),
            _ => None,
        }
    }

    fn signal_main(&self, sig: Signal) {
        if let Some(pid) = self.main_pid() {
            send_signal(self.product(), pid, sig);
        }
    }

    fn on_exit(&mut self, res: std::io::Result<std::process::ExitStatus>) {
        let pid = self.main_pid();
        self.child = None;
        if let (Some(pid), Ok(mut set)) = (pid, self.cfg.agent_pids.lock()) {
            set.remove(&pid);
        }
        let expected = matches!(self.state, State::Stopping { .. });
        let (code, signal) = match &res {
            Ok(st) => {
                use std::os::unix::process::ExitStatusExt;
                (
                    st.code(),
                    st.signal().map(|s| {
                        Signal::try_from(s).map_or(s.to_string(), |s| s.as_str().to_string())
                    }),
                )
            }
            Err(_) => (None, None),
        };
        let agent = self.product();
        if expected {
            tracing::info!(agent = %agent, pid, code, signal, "stopped");
            let _ = std::fs::remove_file(pidfile_path(&self.cfg.run_dir, agent));
        } else {
            tracing::warn!(agent = %agent, pid, code, signal, "exited unexpectedly");
        }
        self.last_exit = Some(ExitInfo {
            code,
            signal,
            at: SystemTime::now(),
            expected,
        });
        self.ready = false;
        self.next_check = None;
        self.check_fut = None;
        self.since_wall = None;
        self.apply(Event::Exited { at: Instant::now() });
    }

    /// Runs a transition and its effects (a spawn feeds back its result).
    fn apply(&mut self, event: Event) {
        let mut queue = VecDeque::from([event]);
        while let Some(ev) = queue.pop_front() {
            let old = std::mem::replace(&mut self.state, State::Stopped);
            let (new, effects) = transition(old, ev, &mut self.tracker, rand::random::<f64>());
            self.state = new;
            match &self.state {
                State::Failed { reason } => {
                    tracing::error!(agent = %self.product(), reason = %reason, "agent failed, not restarting");
                    self.reason = Some(reason.clone());
                }
                State::Backoff { until, failures } => {
                    let wait = until.saturating_duration_since(Instant::now());
                    tracing::info!(agent = %self.product(), failures, wait_ms = wait.as_millis() as u64, "restarting after backoff");
                }
                _ => {}
            }
            for fx in effects {
                match fx {
                    Effect::Spawn { restart } => queue.push_back(self.spawn(restart)),
                    Effect::Signal { pid, signal } => send_signal(self.product(), pid, signal),
                    Effect::Kill { pid } => {
                        tracing::warn!(agent = %self.product(), pid, "stop grace expired, sending SIGKILL");
                        send_signal(self.product(), pid, Signal::SIGKILL);
                    }
                }
            }
        }
    }

    fn spawn(&mut self, restart: bool) -> Event {
        // Drop sd_notify messages left over from a previous run.
        if let Some(sock) = &self.notify {
            let mut b = [0u8; MAX_NOTIFY_DATAGRAM];
            while sock.try_recv(&mut b).is_ok() {}
        }
        let now = Instant::now();
        let agent = self.product();
        let notify = self.notify.as_ref().map(|_| self.notify_path.as_path());
        let spawned = {
            let mut pids = self
                .cfg
                .agent_pids
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let r = spawn_agent(&self.cfg.plan, &self.spec, notify, &self.cfg.extra_env);
            if let Ok(child) = &r {
                if let Some(pid) = child.id() {
                    pids.insert(pid);
                }
            }
            r
        };
        match spawned {
            Ok(mut child) => {
                let pid = child.id().unwrap_or(0);
                if restart {
                    self.restarts = self.restarts.saturating_add(1);
                }
                tracing::info!(agent = %agent, pid, binary = %self.cfg.plan.binary.display(), restart, "started");
                if let Some(out) = child.stdout.take() {
                    pump_lines(
                        out,
                        Source {
                            agent,
                            pid,
                            stream: "stdout",
                            log: self.cfg.agent_log.clone(),
                        },
                        self.cfg.index,
                        self.cfg.status.clone(),
                    );
                }
                if let Some(err) = child.stderr.take() {
                    pump_lines(
                        err,
                        Source {
                            agent,
                            pid,
                            stream: "stderr",
                            log: self.cfg.agent_log.clone(),
                        },
                        self.cfg.index,
                        self.cfg.status.clone(),
                    );
                }
                if let Err(e) = write_pidfile(&pidfile_path(&self.cfg.run_dir, agent), pid) {
                    tracing::warn!(agent = %agent, error = %e, "failed to write pidfile");
                }
                if self
                    .reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with("failed to spawn"))
                {
                    self.reason = None;
                }
                self.child = Some(child);
                self.since_wall = Some(SystemTime::now());
                self.ready = false;
                self.next_check = self.cfg.check.as_ref().map(|_| now);
                self.check_fut = None;
                Event::Spawned { pid, at: now }
            }
            Err(e) => {
                tracing::error!(agent = %agent, binary = %self.cfg.plan.binary.display(), error = %e, "failed to spawn agent");
                let reason = format!("failed to spawn {}: {e}", self.cfg.plan.binary.display());
                self.reason = Some(reason.clone());
                Event::SpawnFailed { reason, at: now }
            }
        }
    }

    fn publish(&self) {
        let (state, pid) = match &self.state {
            State::Stopped => (AgentState::Stopped, None),
            State::Starting { pid, .. } => (AgentState::Starting, Some(*pid)),
            State::Running { pid, .. } => (AgentState::Running, Some(*pid)),
            State::Stopping { pid, .. } => (AgentState::Stopping, Some(*pid)),
            State::Backoff { .. } => (AgentState::Backoff, None),
            State::Failed { .. } => (AgentState::Failed, None),
        };
        let ready = self.ready && state == AgentState::Running;
        let i = self.cfg.index;
        self.cfg.status.send_if_modified(|s| {
            let a = &mut s.agents[i];
            let before = (
                a.state,
                a.pid,
                a.ready,
                a.restarts,
                a.reason.clone(),
                a.last_exit.clone(),
                a.version.clone(),
                a.since,
            );
            a.state = state;
            a.pid = pid;
            a.ready = ready;
            a.restarts = self.restarts;
            a.reason = self.reason.clone();
            a.last_exit = self.last_exit.clone();
            a.version = self.cfg.version.clone();
            a.since = self.since_wall;
            before
                != (
                    a.state,
                    a.pid,
                    a.ready,
                    a.restarts,
                    a.reason.clone(),
                    a.last_exit.clone(),
                    a.version.clone(),
                    a.since,
                )
        });
    }
}

/// Sends `sig` to the main pid only (never the group); a gone process is fine.
fn send_signal(agent: Product, pid: u32, sig: Signal) {
    let Ok(raw) = i32::try_from(pid) else { return };
    match kill(Pid::from_raw(raw), sig) {
        Ok(()) => tracing::debug!(agent = %agent, pid, signal = sig.as_str(), "signal sent"),
        Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => {
            tracing::warn!(agent = %agent, pid, signal = sig.as_str(), error = %e, "failed to send signal")
        }
    }
}

/// Read buffer per agent stream: agents write lines of a few hundred bytes.
const READ_BUFFER: usize = 1024;

/// Longest line logged as one event; a longer one (or output without
/// newlines) is split into several, never dropped, and never grows the
/// supervisor's memory without bound.
pub const MAX_LINE: usize = 16 * 1024;

/// Which agent process and stream lines come from, and where they go.
struct Source {
    agent: Product,
    pid: u32,
    stream: &'static str,
    log: AgentLog,
}

/// Reads an agent's output to EOF, one log entry per line ([`AgentLog`]),
/// keeping the last [`LAST_LINES`] in the status.
fn pump_lines<R: AsyncRead + Unpin + Send + 'static>(
    reader: R,
    src: Source,
    index: usize,
    status: Arc<watch::Sender<SupervisorStatus>>,
) {
    tokio::spawn(async move {
        let mut r = BufReader::with_capacity(READ_BUFFER, reader);
        let mut line = Vec::new();
        // The end of a split line that stops inside a UTF-8 character: it
        // starts the next piece, so the character is not mangled.
        let mut carry = Vec::new();
        loop {
            line.clear();
            if line.capacity() > 4 * READ_BUFFER {
                // One long line must not keep its buffer for the daemon's life.
                line.shrink_to(READ_BUFFER);
            }
            line.append(&mut carry);
            let limited = (&mut r).take((MAX_LINE - line.len()) as u64);
            tokio::pin!(limited);
            let n = limited.read_until(b'\n', &mut line).await.unwrap_or(0);
            if n == 0 && line.is_empty() {
                break;
            }
            if n > 0 && !line.ends_with(b"\n") {
                if let Err(e) = std::str::from_utf8(&line) {
                    if e.error_len().is_none() {
                        carry.extend_from_slice(&line[e.valid_up_to()..]);
                        line.truncate(e.valid_up_to());
                    }
                }
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\n', '\r']).to_string();
            src.log.line(src.agent, src.pid, src.stream, &text).await;
            status.send_modify(|s| {
                let lines = &mut s.agents[index].last_lines;
                if lines.len() >= LAST_LINES {
                    lines.remove(0);
                }
                lines.push(text);
            });
            if n == 0 {
                break; // end of output after a carried partial character
            }
        }
    });
}

async fn wait_child(child: &mut Option<Child>) -> std::io::Result<std::process::ExitStatus> {
    match child {
        Some(c) => c.wait().await,
        None => std::future::pending().await,
    }
}

async fn recv_opt(sock: Option<&UnixDatagram>, buf: &mut [u8]) -> Option<usize> {
    match sock {
        Some(s) => s.recv(buf).await.ok(),
        None => std::future::pending().await,
    }
}

async fn poll_opt(fut: &mut Option<BoxFuture<'static, bool>>) -> bool {
    match fut {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervise::status::AgentStatus;
    use tokio::io::AsyncWriteExt;

    /// Feeds `output` (ending with the line `last`) through [`pump_lines`]
    /// and returns the agent's kept lines once `last` is among them.
    async fn kept_lines(product: Product, stream: &'static str, output: &str) -> Vec<String> {
        let (tx, mut rx) = watch::channel(SupervisorStatus {
            agents: vec![AgentStatus::new(product)],
            config_hash: String::new(),
            reload_error: None,
            stopping: false,
            node: None,
        });
        let (mut w, r) = tokio::io::duplex(4096);
        let src = Source {
            agent: product,
            pid: 1,
            stream,
            log: AgentLog::Tracing,
        };
        pump_lines(r, src, 0, Arc::new(tx));
        w.write_all(output.as_bytes()).await.unwrap();
        drop(w);
        loop {
            rx.changed().await.unwrap();
            let lines = rx.borrow().agents[0].last_lines.clone();
            if lines.last().map(String::as_str) == Some("last") {
                return lines;
            }
        }
    }

    #[tokio::test]
    async fn long_output_is_split_into_bounded_lines_without_loss() {
        let long = "x".repeat(MAX_LINE * 2 + 100);
        let lines = kept_lines(Product::Nomad, "stdout", &format!("first\n{long}\nlast\n")).await;
        assert_eq!(lines.first().map(String::as_str), Some("first"));
        let middle = &lines[1..lines.len() - 1];
        assert_eq!(middle.len(), 3, "split into MAX_LINE pieces");
        assert!(middle.iter().all(|l| l.len() <= MAX_LINE));
        assert_eq!(middle.concat(), long, "nothing lost");
    }

    #[tokio::test]
    async fn a_split_never_cuts_a_utf8_character() {
        // One byte short of the cap, then 3-byte characters: the first
        // one straddles the split.
        let long = format!("{}{}", "a".repeat(MAX_LINE - 1), "€".repeat(10));
        let lines = kept_lines(Product::Consul, "stderr", &format!("{long}\nlast\n")).await;
        let pieces = &lines[..lines.len() - 1];
        assert_eq!(pieces.len(), 2);
        assert!(!pieces.concat().contains('\u{FFFD}'), "a character was cut");
        assert_eq!(pieces.concat(), long);
    }
}

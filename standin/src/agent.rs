//! `consul agent` / `nomad agent` of the stand-in: flags, config, start-up
//! faults, listeners, background joins, and the signal loop that decides
//! between a graceful leave (exit 0) and an immediate exit 1 exactly as
//! agent-facts.md §1 describes the real agents.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::config::{self, AgentConfig};
use crate::events::{event, log, notify};
use crate::gossip;
use crate::state::{LEFT, Pool, State};
use crate::{CHILD_ARG, Product, VersionInfo};

/// Default `STANDIN_LEAVE_DELAY_MS`: how long a graceful leave takes.
const DEFAULT_LEAVE_DELAY_MS: u64 = 200;
/// Default `STANDIN_ELECTION_MS`: delay before a server may report a leader.
const DEFAULT_ELECTION_MS: u64 = 200;
/// Graceful leave timeouts: Consul 15 s (command/agent/agent.go), Nomad 5 s
/// (`gracefulTimeout`); `STANDIN_GRACEFUL_TIMEOUT_MS` overrides for tests.
const CONSUL_GRACEFUL_TIMEOUT: Duration = Duration::from_secs(15);
const NOMAD_GRACEFUL_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on announcing a leave to peers.
const LEAVE_ANNOUNCE_TIMEOUT: Duration = Duration::from_millis(1000);

/// State shared by the HTTP handlers, gossip tasks and the signal loop.
pub struct Shared {
    pub product: Product,
    pub version: VersionInfo,
    pub sources: Vec<PathBuf>,
    cfg: Mutex<AgentConfig>,
    state: Mutex<State>,
    /// Set by `PUT /v1/agent/leave`.
    pub leave_requested: tokio::sync::Notify,
    /// A LAN member event: a Consul server floods at once (gossip::run_flood).
    pub lan_changed: tokio::sync::Notify,
    ready_sent: AtomicBool,
    /// The node's checked TLS material (None: no TLS configured); replaced
    /// when a reload (SIGHUP) reads new files.
    tls: std::sync::RwLock<Option<Arc<crate::tls::NodeTls>>>,
    /// ACL state (tokens, policies, bootstrap).
    pub acl: Mutex<crate::acl::AclState>,
    /// Consul servers: the KV store and sessions (`kv.rs`).
    pub kv: Mutex<crate::kv::KvStore>,
}

impl Shared {
    /// The TLS material when the agent's RPC links use TLS (Consul
    /// `verify_outgoing`, Nomad `tls.rpc`).
    pub fn rpc_tls(&self) -> Option<Arc<crate::tls::NodeTls>> {
        self.tls().filter(|t| t.settings.rpc)
    }

    /// The current TLS material.
    pub fn tls(&self) -> Option<Arc<crate::tls::NodeTls>> {
        self.tls.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Re-read the TLS files after a config reload (both agents reload
    /// their certificates on SIGHUP, agent-facts §2); a bad file is logged
    /// and the old material kept.
    fn reload_tls(&self, new: &AgentConfig) {
        let Some(old) = self.tls() else {
            return;
        };
        match crate::tls::load(new) {
            Ok(Some(mut t)) => {
                t.keep_peers_of(&old);
                *self.tls.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(t));
                log("    [INFO] agent: (stand-in) TLS certificates reloaded");
            }
            Ok(None) => log(
                "    [WARN] agent: (stand-in) TLS can not be switched off by a reload; keeping the old certificates",
            ),
            Err(e) => log(&format!(
                "    [ERROR] agent: (stand-in) Failed to reload TLS configuration, keeping the old one: {e}"
            )),
        }
    }

    /// Lock the ACL state (never held across an await).
    pub fn acl(&self) -> MutexGuard<'_, crate::acl::AclState> {
        self.acl.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lock the KV store (never held across an await).
    pub fn kv(&self) -> MutexGuard<'_, crate::kv::KvStore> {
        self.kv.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lock the cluster view (never held across an await).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the current config.
    pub fn cfg(&self) -> AgentConfig {
        self.cfg.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A LAN join succeeded: Consul sends READY=1 the first time
    /// (consul:agent/agent.go JoinLAN).
    pub fn lan_joined(&self) {
        self.lock().joined_lan = true;
        if self.product == Product::Consul {
            self.ready();
        }
    }

    /// Send READY=1 once (and log the `ready` event).
    pub fn ready(&self) {
        if !self.ready_sent.swap(true, Ordering::SeqCst) {
            event("ready");
            notify("READY=1");
        }
    }

    /// Re-read the config files (SIGHUP, `PUT /v1/agent/reload`).
    pub fn reload(&self) -> Result<(), String> {
        log("==> Reloading configuration...");
        if self.product == Product::Nomad {
            // sd_notify RELOADING=1 with MONOTONIC_USEC, as Nomad sends it.
            let usec = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
                .map(|t| t.tv_sec() as i128 * 1_000_000 + t.tv_nsec() as i128 / 1_000)
                .unwrap_or(0);
            notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
        }
        let res = match config::load(self.product, &self.sources) {
            Ok(new) => {
                let mut cfg = self.cfg.lock().unwrap_or_else(|p| p.into_inner());
                // Only reloadable settings change (agent-facts §2).
                cfg.log_level = new.log_level.clone();
                cfg.enable_script_checks = new.enable_script_checks;
                drop(cfg);
                self.reload_tls(&new);
                self.lock().enable_script_checks = new.enable_script_checks;
                event("reload ok");
                Ok(())
            }
            Err(e) => {
                match self.product {
                    Product::Consul => log(&format!(
                        "    [ERROR] agent: (stand-in) Error reloading config: error=\"{e}\""
                    )),
                    Product::Nomad => log(&format!("==> Failed to reload configs: {e}")),
                }
                event("reload failed");
                Err(e.to_string())
            }
        };
        if self.product == Product::Nomad {
            notify("READY=1");
        }
        res
    }
}

/// Exit the process after logging the `exit` event.
pub fn exit(code: i32) -> ! {
    crate::events::server_down();
    event(&format!("exit {code}"));
    std::process::exit(code)
}

fn env_u64(name: &str) -> Option<u64> {
    crate::knobs::var(name).and_then(|v| v.trim().parse().ok())
}

/// Count this start in `STANDIN_RUN_COUNTER` (a file holding the number of
/// starts so far); returns this start's number (1-based).
fn next_run() -> Option<u64> {
    let path = std::env::var("STANDIN_RUN_COUNTER")
        .ok()
        .filter(|p| !p.is_empty())?;
    let n = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .unwrap_or(0)
        + 1;
    if let Err(e) = std::fs::write(&path, format!("{n}\n")) {
        crate::events::log_err(&format!(
            "stand-in: failed to write run counter {path}: {e}"
        ));
    }
    Some(n)
}

/// Whether the crash knobs (`STANDIN_EXIT_AT_START`, `STANDIN_CRASH_AFTER_MS`)
/// apply to this start: always, or with `STANDIN_FAULT_RUNS=N` only for the
/// first N starts counted by `STANDIN_RUN_COUNTER`.
fn crash_faults_active(run: Option<u64>) -> bool {
    match (env_u64("STANDIN_FAULT_RUNS"), run) {
        (Some(limit), Some(n)) => n <= limit,
        _ => true,
    }
}

/// Whether `version` is listed in `STANDIN_BROKEN_VERSIONS` (comma-separated;
/// environment or knob file): such a release exits 1 at start, like an
/// agent that cannot start.
fn is_broken(version: &str) -> bool {
    crate::knobs::var("STANDIN_BROKEN_VERSIONS").is_some_and(|list| {
        list.split(',')
            .map(str::trim)
            .any(|v| !v.is_empty() && v.trim_start_matches('v') == version)
    })
}

/// Parse the agent flags into config sources.
fn parse_flags(product: Product, args: &[String]) -> Result<Vec<PathBuf>, String> {
    let names: &[&str] = match product {
        Product::Consul => &["config-dir", "config-file"],
        Product::Nomad => &["config"],
    };
    let ignored: &[&str] = match product {
        Product::Consul => &["config-format"],
        Product::Nomad => &[],
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        let flag = a.trim_start_matches('-');
        if !a.starts_with('-') || flag.is_empty() {
            return Err(format!("unexpected argument {a}"));
        }
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        let known = names.contains(&name);
        if !known && !ignored.contains(&name) {
            return Err(format!("flag provided but not defined: -{name}"));
        }
        let value = match value {
            Some(v) => v,
            None => {
                i += 1;
                args.get(i)
                    .cloned()
                    .ok_or_else(|| format!("flag needs an argument: -{name}"))?
            }
        };
        if known {
            out.push(PathBuf::from(value));
        }
        i += 1;
    }
    Ok(out)
}

/// Entry of `agent`: returns the exit code on early failures, else never returns.
pub fn main(product: Product, args: &[String]) -> u8 {
    // Like the real agents, which set their handlers before anything can be
    // observed of them: a stop signal that arrives before the runtime's
    // handlers exist stays pending until they do (not the default action).
    block_stop_signals(nix::sys::signal::SigmaskHow::SIG_BLOCK);
    let version = VersionInfo::for_product(product);
    let run_no = next_run();
    let start_line = format!(
        "start pid={} product={} version={}{}",
        std::process::id(),
        product.name(),
        version.full,
        run_no.map(|n| format!(" run={n}")).unwrap_or_default()
    );
    let log_in_env = std::env::var_os("STANDIN_EVENT_LOG").is_some_and(|v| !v.is_empty());
    event(&start_line);
    let faults = crash_faults_active(run_no);
    let sources = match parse_flags(product, args) {
        Ok(s) => s,
        Err(e) => {
            crate::events::log_err(&e);
            exit(1);
        }
    };
    let cfg = match config::load(product, &sources) {
        Ok(c) => c,
        Err(e) => {
            crate::events::log_err(&format!("==> {e}"));
            exit(1);
        }
    };
    if cfg.data_dir.is_empty() {
        // consul: "data_dir cannot be empty"; nomad: "Must specify data directory".
        match product {
            Product::Consul => crate::events::log_err("==> data_dir cannot be empty"),
            Product::Nomad => crate::events::log_err("==> Must specify data directory"),
        }
        exit(1);
    }
    if product == Product::Consul && cfg.server && cfg.bootstrap_expect == 1 {
        log("    [WARN] agent: BootstrapExpect is set to 1; this is the same as Bootstrap mode.");
    }
    crate::knobs::load(Path::new(&cfg.data_dir));
    if !log_in_env {
        // The event log named by the knob file starts here.
        event(&start_line);
    }
    if is_broken(&version.full) {
        crate::events::log_err(&format!(
            "==> Error starting agent: (stand-in) version {} is listed in STANDIN_BROKEN_VERSIONS",
            version.full
        ));
        exit(1);
    }
    // The real agents write their data dir before anything else can fail.
    if let Err(e) = crate::datadir::prepare(product, &cfg) {
        crate::events::log_err(&format!("==> Error starting agent: {e}"));
        exit(1);
    }
    // The real agents load their TLS files at start and stop on a bad one;
    // the stand-in also refuses a certificate without its role's name
    // (README "TLS": the real agents fail at handshake time instead).
    let node_tls = match crate::tls::load(&cfg) {
        Ok(t) => t.map(Arc::new),
        Err(e) => {
            crate::events::log_err(&format!(
                "==> Error starting agent: Failed to configure TLS: {e}"
            ));
            exit(1);
        }
    };
    if let Some(code) = env_u64("STANDIN_EXIT_AT_START").filter(|_| faults) {
        log(&format!(
            "==> stand-in: exiting with {code} at start (STANDIN_EXIT_AT_START)"
        ));
        exit(i32::try_from(code).unwrap_or(1));
    }
    if let Some(pidfile) = crate::knobs::var("STANDIN_SPAWN_CHILD") {
        if !pidfile.is_empty() {
            spawn_child(&pidfile);
        }
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            crate::events::log_err(&format!("stand-in: failed to build runtime: {e}"));
            exit(1);
        }
    };
    let code = rt.block_on(run(product, version, sources, cfg, faults, node_tls));
    exit(code)
}

/// Blocks or unblocks SIGINT, SIGTERM and SIGHUP for this thread (the
/// runtime's only thread).
fn block_stop_signals(how: nix::sys::signal::SigmaskHow) {
    use nix::sys::signal::{SigSet, Signal as S};
    let mut set = SigSet::empty();
    for s in [S::SIGINT, S::SIGTERM, S::SIGHUP] {
        set.add(s);
    }
    if let Err(e) = nix::sys::signal::pthread_sigmask(how, Some(&set), None) {
        crate::events::log_err(&format!("stand-in: failed to change the signal mask: {e}"));
    }
}

/// Start a long-running child in its own session (like a Nomad task
/// executor) and write its pid; it outlives the stand-in.
fn spawn_child(pidfile: &str) {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let res = std::process::Command::new(exe)
        .arg(CHILD_ARG)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    match res {
        Ok(child) => {
            let pid = child.id();
            if let Err(e) = std::fs::write(pidfile, format!("{pid}\n")) {
                log(&format!(
                    "stand-in: failed to write child pid file {pidfile}: {e}"
                ));
            }
            log(&format!(
                "    [INFO] stand-in: spawned executor-like child pid={pid}"
            ));
            // Not waited for: it must survive us (reaped by init/subreaper).
            std::mem::forget(child);
        }
        Err(e) => log(&format!("stand-in: failed to spawn child: {e}")),
    }
}

/// The hidden child: new session, then sleep until killed.
pub fn run_child() -> ! {
    let _ = nix::unistd::setsid();
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Which signal arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sig {
    Int,
    Term,
    Hup,
}

impl Sig {
    fn name(self) -> &'static str {
        match self {
            Sig::Int => "SIGINT",
            Sig::Term => "SIGTERM",
            Sig::Hup => "SIGHUP",
        }
    }

    /// Go's os.Signal String() as the agents log it.
    fn go_name(self) -> &'static str {
        match self {
            Sig::Int => "interrupt",
            Sig::Term => "terminated",
            Sig::Hup => "hangup",
        }
    }
}

struct Signals {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self) -> Sig {
        let s = tokio::select! {
            _ = self.int.recv() => Sig::Int,
            _ = self.term.recv() => Sig::Term,
            _ = self.hup.recv() => Sig::Hup,
        };
        event(&format!("signal {}", s.name()));
        log(&format!("==> Caught signal: {}", s.go_name()));
        s
    }
}

async fn run(
    product: Product,
    version: VersionInfo,
    sources: Vec<PathBuf>,
    cfg: AgentConfig,
    faults: bool,
    node_tls: Option<Arc<crate::tls::NodeTls>>,
) -> i32 {
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => {
            log(&format!("stand-in: failed to install signal handlers: {e}"));
            return 1;
        }
    };
    block_stop_signals(nix::sys::signal::SigmaskHow::SIG_UNBLOCK);
    let ignore_stop = crate::knobs::var("STANDIN_IGNORE_STOP").is_some_and(|v| v == "1");

    if let Some(ms) = env_u64("STANDIN_CRASH_AFTER_MS").filter(|_| faults) {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            log("==> stand-in: crashing (STANDIN_CRASH_AFTER_MS)");
            exit(2);
        });
    }
    log(&format!(
        "==> Starting {} agent... [STAND-IN for tests, not HashiCorp {}]",
        product.title(),
        product.title()
    ));
    if let Some(ms) = env_u64("STANDIN_SLOW_START_MS") {
        let sleep = tokio::time::sleep(Duration::from_millis(ms));
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                s = signals.next() => match s {
                    // consul:command/agent/agent.go handleStartupSignals.
                    Sig::Hup => log("    [WARN] agent: cannot reload before agent started"),
                    _ if ignore_stop => log("    [INFO] stand-in: ignoring stop signal (STANDIN_IGNORE_STOP)"),
                    _ => {
                        log("==> stand-in: start-up cancelled by signal");
                        return 1;
                    }
                }
            }
        }
    }
    // The API listeners: (address, over TLS).
    let mut api: Vec<(String, bool)> = Vec::new();
    if !cfg.api_disabled {
        let ips: Vec<&String> = std::iter::once(&cfg.http_ip)
            .chain(cfg.http_extra_ips.iter())
            .collect();
        for ip in &ips {
            api.push((crate::state::host_port(ip, cfg.http_port), cfg.http_tls));
        }
        if let Some(p) = cfg.https_extra_port {
            for ip in &ips {
                api.push((crate::state::host_port(ip, p), true));
            }
        }
    }
    let mut bound = Vec::new();
    for (addr, tls) in api {
        match TcpListener::bind(&addr).await {
            Ok(l) => bound.push((l, tls)),
            Err(e) => {
                let what = if tls { "HTTPS" } else { "HTTP" };
                log(&format!(
                    "==> Error starting agent: Failed to start {what} listener on {addr}: listen tcp {addr}: {e}"
                ));
                return 1;
            }
        }
    }
    let acl_state = crate::acl::AclState::load(&cfg);
    let shared = Arc::new(Shared {
        product,
        version: version.clone(),
        sources,
        state: Mutex::new(State::new(&cfg, &version.full)),
        cfg: Mutex::new(cfg.clone()),
        leave_requested: tokio::sync::Notify::new(),
        lan_changed: tokio::sync::Notify::new(),
        ready_sent: AtomicBool::new(false),
        tls: std::sync::RwLock::new(node_tls.clone()),
        acl: Mutex::new(acl_state),
        kv: Mutex::new(crate::kv::KvStore::load(
            &cfg.data_dir,
            product == Product::Consul && cfg.server,
        )),
    });
    // HTTPS (Nomad `tls.http`, Consul `ports.https`): the node certificate;
    // client certificates required with verify_incoming / verify_https_client.
    // Checked once here; each connection uses the material of the moment.
    if bound.iter().any(|(_, tls)| *tls) {
        let acceptor = node_tls
            .as_ref()
            .ok_or_else(|| "HTTPS needs cert_file and key_file".to_string())
            .and_then(|t| t.https_acceptor());
        if let Err(e) = acceptor {
            log(&format!(
                "==> Error starting agent: Failed to parse TLS configuration: {e}"
            ));
            return 1;
        }
    }
    for (l, tls) in bound {
        let side = tls.then_some(crate::http::TlsSide::Https);
        crate::http::serve(shared.clone(), l, side, crate::http::Kind::Api);
    }
    // With TLS links, the serf listeners only carry gossip (as the real
    // serf ports carry no API; the links use the RPC port); without, they
    // serve the whole API as before.
    let gossip_kind = if shared.rpc_tls().is_some() {
        crate::http::Kind::Gossip
    } else {
        crate::http::Kind::Api
    };
    // The RPC port over TLS: Consul servers' `ports.server`, Nomad servers'
    // `ports.rpc` with `tls.rpc`.
    let rpc_acceptor = match shared.rpc_tls() {
        Some(t) if cfg.server => match t.rpc_acceptor() {
            Ok(_) => Some(crate::http::TlsSide::Rpc),
            Err(e) => {
                log(&format!(
                    "==> Error starting agent: Failed to parse TLS configuration: {e}"
                ));
                return 1;
            }
        },
        _ => None,
    };
    // The gossip endpoint is also served on the serf/RPC ports so that
    // join addresses work as with the real agents; best effort.
    let mut extra = vec![cfg.serf_port];
    match product {
        Product::Consul if cfg.server => extra.push(cfg.serf_wan_port),
        Product::Nomad if cfg.server && rpc_acceptor.is_none() => extra.push(cfg.rpc_port),
        _ => {}
    }
    if let Some(side) = rpc_acceptor {
        let addr = crate::state::host_port(&cfg.bind_ip, cfg.rpc_port);
        match TcpListener::bind(&addr).await {
            Ok(l) => crate::http::serve(shared.clone(), l, Some(side), crate::http::Kind::Rpc),
            Err(e) => {
                log(&format!(
                    "==> Error starting agent: Failed to start RPC layer: listen tcp {addr}: {e}"
                ));
                return 1;
            }
        }
    }
    for port in extra {
        if port == 0 || (port == cfg.http_port && !cfg.api_disabled) {
            continue;
        }
        let addr = crate::state::host_port(&cfg.bind_ip, port);
        match TcpListener::bind(&addr).await {
            Ok(l) => {
                crate::http::serve(shared.clone(), l, None, gossip_kind);
                if port == cfg.serf_port {
                    // Peers push to the serf address, reachable like the real
                    // agent's serf port even when HTTP is on loopback.
                    let ip = if crate::state::is_wildcard(&cfg.bind_ip) {
                        &cfg.advertise_ip
                    } else {
                        &cfg.bind_ip
                    };
                    shared.lock().me.gossip = crate::state::host_port(ip, port);
                }
            }
            Err(e) => log(&format!(
                "    [WARN] stand-in: gossip listener {addr} not started: {e}"
            )),
        }
    }
    print_banner(&cfg, &version);
    if cfg.server {
        crate::events::server_up(product.name(), &cfg.node_name, &version.full);
    } else {
        crate::events::client_up(product.name(), &cfg.node_name, &version.full);
    }
    let election =
        Duration::from_millis(env_u64("STANDIN_ELECTION_MS").unwrap_or(DEFAULT_ELECTION_MS));
    {
        let shared = shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep(election).await;
            shared.lock().election_done = true;
        });
    }
    tokio::spawn(gossip::run_push_pull(shared.clone()));
    tokio::spawn(crate::acl_api::watch_agent_token(shared.clone()));
    tokio::spawn(crate::acl_api::run_replication(shared.clone()));
    match product {
        Product::Consul => {
            tokio::spawn(gossip::run_retry_join(
                shared.clone(),
                Pool::Lan,
                cfg.retry_join.clone(),
            ));
            if cfg.server {
                tokio::spawn(gossip::run_retry_join(
                    shared.clone(),
                    Pool::Wan,
                    cfg.retry_join_wan.clone(),
                ));
                tokio::spawn(gossip::run_flood(shared.clone()));
                tokio::spawn(crate::kv_api::run_reaper(shared.clone()));
            }
        }
        Product::Nomad => {
            let pool = if cfg.server { Pool::Lan } else { Pool::Client };
            tokio::spawn(gossip::run_retry_join(
                shared.clone(),
                pool,
                cfg.retry_join.clone(),
            ));
            tokio::spawn(crate::consul_link::run(shared.clone()));
            // Nomad: READY=1 once the signal handlers are set up.
            shared.ready();
        }
    }
    loop {
        tokio::select! {
            s = signals.next() => {
                if s == Sig::Hup {
                    let _ = shared.reload();
                    continue;
                }
                if ignore_stop {
                    log("    [INFO] stand-in: ignoring stop signal (STANDIN_IGNORE_STOP)");
                    continue;
                }
                let cfg = shared.cfg();
                // consul:command/agent/agent.go and nomad:command/agent/command.go.
                let graceful = match s {
                    Sig::Int => cfg.leave_on_interrupt,
                    _ => cfg.leave_on_terminate,
                };
                if !graceful {
                    log("    [INFO] agent: Graceful shutdown disabled. Exiting");
                    return 1;
                }
                return leave(&shared, &mut signals).await;
            }
            _ = shared.leave_requested.notified() => {
                return leave(&shared, &mut signals).await;
            }
        }
    }
}

fn print_banner(cfg: &AgentConfig, version: &VersionInfo) {
    log(&format!(
        "==> {} agent running! (stand-in)",
        cfg.product.title()
    ));
    log(&format!("           Version: '{}'", version.full));
    log(&format!("         Node name: '{}'", cfg.node_name));
    log(&format!("        Datacenter: '{}'", cfg.datacenter));
    if cfg.product == Product::Nomad {
        log(&format!("            Region: '{}'", cfg.region));
    }
    log(&format!(
        "            Server: {} (bootstrap_expect: {})",
        cfg.server, cfg.bootstrap_expect
    ));
    log(&format!(
        "              HTTP: {}:{}",
        cfg.http_ip, cfg.http_port
    ));
    log("==> Log data will now stream in as it occurs:");
}

/// Graceful leave: announce, wait the leave delay, exit 0; a second signal
/// exits 1 at once.
async fn leave(shared: &Arc<Shared>, signals: &mut Signals) -> i32 {
    log("==> Gracefully shutting down agent...");
    if shared.product == Product::Nomad {
        notify("STOPPING=1");
    }
    event("leave");
    crate::events::server_down();
    {
        let mut st = shared.lock();
        st.me.status = LEFT;
        st.me.incarnation += 1;
    }
    let delay =
        Duration::from_millis(env_u64("STANDIN_LEAVE_DELAY_MS").unwrap_or(DEFAULT_LEAVE_DELAY_MS));
    let work = async {
        let announce = tokio::time::timeout(LEAVE_ANNOUNCE_TIMEOUT, gossip::push_all(shared));
        let _ = tokio::join!(announce, tokio::time::sleep(delay));
    };
    let timeout = env_u64("STANDIN_GRACEFUL_TIMEOUT_MS")
        .map(Duration::from_millis)
        .unwrap_or(match shared.product {
            Product::Consul => CONSUL_GRACEFUL_TIMEOUT,
            Product::Nomad => NOMAD_GRACEFUL_TIMEOUT,
        });
    tokio::select! {
        _ = work => {
            log("    [INFO] agent: (stand-in) graceful leave complete");
            0
        }
        _ = tokio::time::sleep(timeout) => {
            log("    [WARN] agent: (stand-in) timeout leaving: exiting");
            1
        }
        _ = signals.next() => {
            log("    [WARN] agent: (stand-in) second signal during leave: exiting now");
            1
        }
    }
}

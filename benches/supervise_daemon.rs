//! Benchmark helper, not a benchmark by itself: runs the real supervision
//! daemon (`supervise::run`) over the benchmark child as both agents, so
//! `benches/supervise/bench.py` can measure it as a process beside
//! supervisord, runit, s6 and a fork/exec floor.
//!
//! Usage: `supervise_daemon <child binary> <state dir>`; SIGTERM stops it.
//!
//! It runs on [`runtime::build`], the runtime `main.rs` uses. Two env knobs
//! reproduce the earlier rows of BENCHMARKS.md's per-change history, and are
//! never what the binary runs: `BENCH_RT=multi2` (the former 2-worker
//! multi-thread runtime) and `BENCH_RT=current-noarena` (one thread, glibc's
//! default arenas). Like `supervisor run` it is a child subreaper (the orphan
//! reaper scans `/proc` after every SIGCHLD); `BENCH_SUBREAPER=0` turns that
//! off, as the helper had it before; `BENCH_TRIM=0` keeps the start-up pages
//! mapped (no [`trim`](hashi_supervisor::supervise::trim) once all agents
//! are ready). `BENCH_USER=<name>` runs the children
//! as that user (the `fork` spawn path of agents run as another user).
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use hashi_supervisor::plan::{AgentPlan, Plan, ReleasePlan};
use hashi_supervisor::release::Installed;
use hashi_supervisor::render::ChangeKind;
use hashi_supervisor::supervise::check::{BoxFuture, ReadyCheck};
use hashi_supervisor::supervise::daemon::status_channel;
use hashi_supervisor::supervise::runtime;
use hashi_supervisor::supervise::{Preparer, RunOptions, run};
use hashi_supervisor::vocab::{Product, RestartMode, RestartPolicy};
use nix::sys::signal::Signal;
use tokio_util::sync::CancellationToken;

struct NoPrep;

/// Readiness of a child without an API: ready once spawned.
struct ReadyAtSpawn;

impl ReadyCheck for ReadyAtSpawn {
    fn check(&self) -> BoxFuture<'_, bool> {
        Box::pin(async { true })
    }
}

/// Why the benchmark prepares nothing: it has no role file, no release.
#[derive(Debug, thiserror::Error)]
#[error("benchmark: no {0}")]
struct Nothing(&'static str);

impl Preparer for NoPrep {
    type Error = Nothing;
    async fn load(&self) -> Result<(Plan, String), Nothing> {
        Err(Nothing("role file"))
    }
    async fn install(&self, _: &ReleasePlan, _: &AgentPlan) -> Result<Installed, Nothing> {
        Err(Nothing("release"))
    }
    async fn rollback(&self, _: &ReleasePlan, _: &Installed) -> Result<(), Nothing> {
        Ok(())
    }
    async fn render(&self, _: &Plan) -> Result<Vec<(Product, ChangeKind)>, Nothing> {
        Ok(vec![])
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 || args.iter().any(|a| a == "--bench") {
        // `cargo bench` runs every bench target: nothing to do here.
        return;
    }
    // Logging as `supervisor run` sets it up by default (the harness sends
    // stderr to /dev/null): every start and exit is formatted and written.
    hashi_supervisor::telemetry::init("info", hashi_supervisor::cli::LogFormat::Human);
    let child = std::path::PathBuf::from(&args[1]);
    let state = std::path::PathBuf::from(&args[2]);
    let agent = |product| AgentPlan {
        product,
        version: "1.0.0".parse().unwrap(),
        server: false,
        client: false,
        // `BENCH_USER=nobody`: the agents run as another user, the path of
        // server agents (`consul`, `nomad`): fork + setgroups/setgid/setuid.
        user: std::env::var("BENCH_USER").unwrap_or_else(|_| "root".into()),
        binary: child.clone(),
        args: vec![],
        config_dir: state.clone(),
        data_dir: state.clone(),
        stop_signal: Signal::SIGTERM,
        stop_timeout: Duration::from_secs(10),
        restart: RestartPolicy {
            attempts: 1_000_000,
            interval: Duration::from_secs(1),
            delay: Duration::ZERO,
            mode: RestartMode::Delay,
            max_delay: Duration::ZERO,
            stable_after: Duration::from_secs(1),
        },
        http_addr: "127.0.0.1:1".parse().unwrap(),
        api_tls: None,
    };
    let plan = Plan {
        node_name: "bench".into(),
        region: "eu".into(),
        datacenter: "ams2".into(),
        roles: vec![],
        agents: vec![agent(Product::Consul), agent(Product::Nomad)],
        release: ReleasePlan {
            mirror: String::new(),
            trust_hashicorp_key: true,
            extra_trusted_keys: vec![],
            releases_dir: state.clone(),
            keep_versions: 1,
            max_download_bytes: 0,
        },
        health_listen: "127.0.0.1:0".parse().unwrap(),
        state_dir: state.clone(),
        config_dir: state,
        render: Default::default(),
    };
    let mut extra_env = Vec::new();
    for p in [Product::Consul, Product::Nomad] {
        extra_env.push((p, "BENCH_NAME".into(), p.to_string()));
        if let Ok(log) = std::env::var("BENCH_LOG") {
            extra_env.push((p, "BENCH_LOG".into(), log));
        }
    }
    let opts = RunOptions {
        // The children have no API: a check that passes at once stands for
        // the agents' readiness, so the daemon goes through "all agents
        // ready" (and what it does then) as `supervisor run` does.
        checks: Arc::new(|_: &AgentPlan| Some(Arc::new(ReadyAtSpawn) as Arc<dyn ReadyCheck>)),
        check_interval: None,
        consul_wait: Duration::ZERO,
        extra_env,
        // A child subreaper, as `supervisor run` is by default.
        become_subreaper: std::env::var("BENCH_SUBREAPER").as_deref() != Ok("0"),
        // `BENCH_TRIM=0`: keep the start-up pages (the rows before the trim).
        trim_memory: std::env::var("BENCH_TRIM").as_deref() != Ok("0"),
        ..RunOptions::default()
    };
    let rt = match std::env::var("BENCH_RT").as_deref() {
        Ok("multi2") => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
        Ok("current-noarena") => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_keep_alive(runtime::BLOCKING_KEEP_ALIVE)
            .build(),
        // What `main.rs` runs.
        _ => runtime::build(),
    }
    .unwrap();
    rt.block_on(async move {
        let token = CancellationToken::new();
        let signals = hashi_supervisor::shutdown::listen().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(hashi_supervisor::shutdown::forward(
            signals,
            token.clone(),
            tx,
        ));
        let status = status_channel(&plan);
        run(plan, Arc::new(NoPrep), opts, status, rx, token)
            .await
            .unwrap();
    });
}

//! Benchmark of the health endpoint against a minimal hyper hello-world,
//! side by side in one run, with `wrk` on loopback.
//!
//! `cargo bench --bench health_server` (release mode). The parent process
//! re-executes itself twice as a server (`serve-health`, `serve-hello`), each
//! on the `supervisor` binary's runtime (`supervise::runtime::build`: one
//! thread), runs `wrk`
//! against each, and reads the server's VmRSS/VmHWM from /proc under load.
//! Environment: `BENCH_DURATION` (seconds, default 10), `BENCH_CONNECTIONS`
//! (default 64), `BENCH_ROUNDS` (default 2; the best round is reported).
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::convert::Infallible;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hashi_supervisor::agent::NomadHealthItem;
use hashi_supervisor::health::snapshot::AgentTarget;
use hashi_supervisor::health::{
    self, AgentReport, ConsulReport, HealthSnapshot, Metrics, NodeInfo, NomadReport,
};
use hashi_supervisor::supervise::{AgentState, AgentStatus, SupervisorStatus};
use hashi_supervisor::vocab::Product;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The `supervisor` binary's runtime (one thread, one malloc arena), for
/// both servers.
fn runtime() -> tokio::runtime::Runtime {
    hashi_supervisor::supervise::runtime::build().unwrap()
}

fn snapshot() -> HealthSnapshot {
    let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let node = NodeInfo {
        node_name: "ams2-server-01".into(),
        region: "eu".into(),
        datacenter: "ams2".into(),
        roles: vec!["consul-server".into(), "nomad-server".into()],
        agents: vec![
            AgentTarget {
                product: Product::Consul,
                server: true,
                client: false,
                http_addr: addr(8500),
                api_tls: None,
            },
            AgentTarget {
                product: Product::Nomad,
                server: true,
                client: false,
                http_addr: addr(4646),
                api_tls: None,
            },
        ],
    };
    let mut s = HealthSnapshot::new(node, Arc::new(Metrics::default()));
    let run = |p, pid| AgentStatus {
        state: AgentState::Running,
        pid: Some(pid),
        version: Some("1.20.1".into()),
        since: Some(SystemTime::now()),
        ready: true,
        last_lines: (0..20)
            .map(|i| {
                format!("2026-01-01T00:00:{i:02}Z [INFO] agent: line {i} of the agent's output")
            })
            .collect(),
        ..AgentStatus::new(p)
    };
    s.set_supervisor(SupervisorStatus {
        agents: vec![run(Product::Consul, 100), run(Product::Nomad, 200)],
        config_hash: "ab".repeat(32),
        reload_error: None,
        stopping: false,
        node: None,
    });
    s.set_report(AgentReport {
        product: Product::Consul,
        checked_at: SystemTime::now(),
        consul: Some(ConsulReport {
            leader: Some("10.0.0.1:8300".into()),
            lan_members: Some(3),
            lan_members_alive: Some(3),
            wan_members: Some(2),
            failure_tolerance: Some(0),
            autopilot_healthy: Some(true),
            version: Some("1.20.1".into()),
            ..Default::default()
        }),
        nomad: None,
    });
    s.set_report(AgentReport {
        product: Product::Nomad,
        checked_at: SystemTime::now(),
        consul: None,
        nomad: Some(NomadReport {
            health_server: Some(NomadHealthItem {
                ok: true,
                message: "ok".into(),
            }),
            leader: Some("10.0.0.1:4647".into()),
            members: Some(3),
            members_alive: Some(3),
            version: Some("1.9.3".into()),
            ..Default::default()
        }),
    });
    s
}

fn announce(addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{addr}").unwrap();
    out.flush().unwrap();
}

fn serve_health() {
    runtime().block_on(async {
        let (_tx, rx) = tokio::sync::watch::channel(snapshot());
        let l = health::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        announce(l.local_addr().unwrap());
        health::serve(l, rx, CancellationToken::new())
            .await
            .unwrap();
    });
}

fn serve_hello() {
    runtime().block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        announce(l.local_addr().unwrap());
        loop {
            let (s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = service_fn(|_req: Request<hyper::body::Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello\n"))))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(mode: &str) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .arg(mode)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        Self {
            child,
            addr: line.trim().parse().unwrap(),
        }
    }

    /// (VmRSS, VmHWM) in KiB.
    fn memory(&self) -> (u64, u64) {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let get = |k: &str| {
            s.lines()
                .find(|l| l.starts_with(k))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (get("VmRSS:"), get("VmHWM:"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct WrkResult {
    rps: f64,
    p50: String,
    p99: String,
    non2xx: u64,
}

fn wrk(addr: SocketAddr, path: &str, secs: u64, conns: u32) -> WrkResult {
    let out = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{conns}"),
            &format!("-d{secs}s"),
            "--latency",
        ])
        .arg(format!("http://{addr}{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |prefix: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("?")
            .to_string()
    };
    let non2xx = text
        .lines()
        .find(|l| l.contains("Non-2xx or 3xx responses:"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    WrkResult {
        rps: field("Requests/sec:").parse().unwrap_or(0.0),
        p50: field("50%"),
        p99: field("99%"),
        non2xx,
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("serve-health") => return serve_health(),
        Some("serve-hello") => return serve_hello(),
        _ => {}
    }
    if Command::new("wrk").arg("-v").output().is_err() {
        println!("SKIPPED: wrk not installed (Debian package wrk)");
        return;
    }
    let secs = env_or("BENCH_DURATION", 10);
    let conns = env_or("BENCH_CONNECTIONS", 64) as u32;
    let rounds = env_or("BENCH_ROUNDS", 2);
    let hello = Server::start("serve-hello");
    let health = Server::start("serve-health");
    let targets: [(&str, &Server, &str); 4] = [
        ("hello-world", &hello, "/"),
        ("health", &health, "/health"),
        ("health", &health, "/v1/status"),
        ("health", &health, "/metrics"),
    ];
    let (rss0, _) = health.memory();
    // Warm up connections and allocators.
    for (_, s, p) in &targets {
        wrk(s.addr, p, 1, conns);
    }
    let mut best: Vec<Option<WrkResult>> = targets.iter().map(|_| None).collect();
    let mut mem_under_load = (0, 0);
    for _ in 0..rounds {
        // Interleaved so that noise from other work hits every target alike.
        for (i, (_, s, p)) in targets.iter().enumerate() {
            let addr = s.addr;
            let path = p.to_string();
            let h = std::thread::spawn(move || wrk(addr, &path, secs, conns));
            if s.child.id() == health.child.id() {
                #[allow(clippy::disallowed_methods, reason = "a plain thread, not async code")]
                std::thread::sleep(Duration::from_secs(secs / 2));
                let m = health.memory();
                mem_under_load = (mem_under_load.0.max(m.0), mem_under_load.1.max(m.1));
            }
            let r = h.join().unwrap();
            if best[i].as_ref().is_none_or(|b| r.rps > b.rps) {
                best[i] = Some(r);
            }
        }
    }
    let (_, hwm) = health.memory();
    let base = best[0].as_ref().map_or(1.0, |r| r.rps);
    println!(
        "wrk -t2 -c{conns} -d{secs}s --latency, best of {rounds} interleaved rounds, loopback"
    );
    println!(
        "{:<12} {:<12} {:>12} {:>8} {:>10} {:>10} {:>8}",
        "server", "path", "req/s", "% hello", "p50", "p99", "non-2xx"
    );
    for ((name, _, path), r) in targets.iter().zip(&best) {
        let r = r.as_ref().unwrap();
        println!(
            "{:<12} {:<12} {:>12.0} {:>7.0}% {:>10} {:>10} {:>8}",
            name,
            path,
            r.rps,
            100.0 * r.rps / base,
            r.p50,
            r.p99,
            r.non2xx
        );
    }
    println!(
        "health server memory: VmRSS idle {rss0} KiB, under load {} KiB; VmHWM {} KiB (peak {hwm} KiB at end)",
        mem_under_load.0, mem_under_load.1
    );
    let (hrss, hhwm) = hello.memory();
    println!("hello-world memory at end: VmRSS {hrss} KiB, VmHWM {hhwm} KiB");
}

//! Integration tests: health. The endpoint over real sockets on port 0,
//! fed by the real checker querying fake agents (`support::fake_agent`: small
//! HTTP servers that answer with the documented sample bodies of
//! `tests/data/agent-api/`; they are fakes of the agents' HTTP API, not the
//! stand-in agent, and can hang or lose their leader on demand).
//!
//! The end-to-end tests with the real `supervisor run` and stand-in agents
//! are in `health_e2e.rs`. The fakes stay here for what the stand-ins cannot
//! do or where the agents' processes do not matter: the exact sample bodies
//! with their quirks (including the real Nomad's `0.5.5-dev` sample), agent
//! error answers quoting a secret (`Mode::Leaky`), a Consul client's
//! `No known Consul servers` text answers, supervisor states set directly
//! (backoff after SIGKILL, failed) and the server-level tests (HEAD/405/404
//! over the wire, body limit, slowloris, connection flood, shutdown with
//! idle connections, promtool, a real Prometheus, headless Chromium), which
//! need an endpoint but no particular agent.

// Test helpers outside #[test] functions may unwrap too.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use hashi_supervisor::agent::{AgentClient, ObserverConfig, Observers};
use hashi_supervisor::catalog;
use hashi_supervisor::health::snapshot::AgentTarget;
use hashi_supervisor::health::{self, Checker, Metrics, NodeInfo, ServerLimits, StatusDoc};
use hashi_supervisor::supervise::{AgentState, AgentStatus, ExitInfo, SupervisorStatus};
use hashi_supervisor::vocab::Product;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::support;
use crate::support::fake_agent::{FakeAgent, GOSSIP_KEY, Mode};

const DEADLINE: Duration = Duration::from_secs(30);

// ------------------------------------------------------------------ node ---

struct Node {
    addr: SocketAddr,
    status: watch::Sender<SupervisorStatus>,
    cancel: CancellationToken,
    consul: FakeAgent,
    nomad: FakeAgent,
    server: tokio::task::JoinHandle<Result<(), health::HealthError>>,
}

fn running(product: Product, pid: u32) -> AgentStatus {
    AgentStatus {
        state: AgentState::Running,
        pid: Some(pid),
        version: Some(
            if product == Product::Consul {
                "1.20.1"
            } else {
                "1.9.3"
            }
            .into(),
        ),
        since: Some(SystemTime::now()),
        ready: true,
        ..AgentStatus::new(product)
    }
}

fn all_running() -> SupervisorStatus {
    SupervisorStatus {
        agents: vec![
            running(Product::Consul, 4242),
            running(Product::Nomad, 4343),
        ],
        config_hash: "c0ffee".repeat(10),
        reload_error: None,
        stopping: false,
        node: None,
    }
}

fn fast_checks() -> ObserverConfig {
    ObserverConfig {
        interval: Duration::from_millis(200),
        request_timeout: Duration::from_millis(500),
        settle_first: Duration::ZERO,
    }
}

async fn start_node(limits: ServerLimits) -> Node {
    start_node_with(limits, fast_checks(), all_running()).await
}

/// A node whose checker runs with `config`, the supervisor's status starting
/// at `status`.
async fn start_node_with(
    limits: ServerLimits,
    config: ObserverConfig,
    status: SupervisorStatus,
) -> Node {
    let consul = FakeAgent::start(Product::Consul).await;
    let nomad = FakeAgent::start(Product::Nomad).await;
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
                http_addr: consul.addr,
                api_tls: None,
            },
            AgentTarget {
                product: Product::Nomad,
                server: true,
                client: false,
                http_addr: nomad.addr,
                api_tls: None,
            },
        ],
    };
    let (status, status_rx) = watch::channel(status);
    let cancel = CancellationToken::new();
    let observers = Observers::start(
        &AgentClient::plain().unwrap(),
        &node.agents,
        config,
        &tokio_util::task::TaskTracker::new(),
        &cancel,
    );
    let (checker, snap) =
        Checker::for_node(node, status_rx, Arc::new(Metrics::default()), observers);
    tokio::spawn(checker.run(cancel.clone()));
    let listener = health::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(health::serve_with(listener, snap, cancel.clone(), limits));
    Node {
        addr,
        status,
        cancel,
        consul,
        nomad,
        server,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(DEADLINE)
        .build()
        .unwrap()
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let r = client()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Polls `path` until `pred(status, body)` holds; panics with the last answer
/// after the deadline.
async fn wait_for(addr: SocketAddr, path: &str, pred: impl Fn(u16, &str) -> bool) -> (u16, String) {
    let end = Instant::now() + DEADLINE;
    loop {
        let (code, body) = get(addr, path).await;
        if pred(code, &body) {
            return (code, body);
        }
        assert!(
            Instant::now() < end,
            "condition not met on {path}: last answer {code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `cond` until it holds; panics naming `what` after the deadline.
async fn until(what: &str, cond: impl Fn() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < end, "not seen within {DEADLINE:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ----------------------------------------------------------------- tests ---

#[tokio::test]
async fn healthy_node_is_ready_and_reports_what_agents_say() {
    let n = start_node(ServerLimits::default()).await;
    assert_eq!(get(n.addr, "/live").await.0, 200);
    let (_, body) = wait_for(n.addr, "/ready", |c, _| c == 200).await;
    assert_eq!(body, "ok\n");
    let (code, body) = get(n.addr, "/v1/status").await;
    assert_eq!(code, 200);
    let doc: StatusDoc = serde_json::from_str(&body).unwrap();
    assert!(doc.healthy);
    assert_eq!(doc.node, "ams2-server-01");
    let c = doc.agents[0].consul.as_ref().unwrap();
    assert_eq!(c.leader.as_deref(), Some("10.1.10.12:8300"));
    assert_eq!(
        (c.lan_members, c.wan_members, c.failure_tolerance),
        (Some(1), Some(1), Some(0))
    );
    assert_eq!(c.autopilot_healthy, Some(true));
    assert_eq!(doc.agents[0].pid, Some(4242));
    let nm = doc.agents[1].nomad.as_ref().unwrap();
    assert_eq!(nm.leader.as_deref(), Some("127.0.0.1:4647"));
    assert!(nm.health_server.as_ref().unwrap().ok);
    assert_eq!(nm.version.as_deref(), Some("0.5.5-dev"));
    assert_eq!(nm.known_servers, vec!["127.0.0.1:4647".to_string()]);
    assert_eq!(nm.members, Some(1));
    // The checker asked Consul's WAN pool with ?wan=1 and Nomad's leader with ?stale.
    assert!(
        n.consul
            .requests()
            .iter()
            .any(|r| r.starts_with("GET /v1/agent/members?wan=1 "))
    );
    assert!(
        n.nomad
            .requests()
            .iter()
            .any(|r| r.starts_with("GET /v1/status/leader?stale "))
    );
    n.cancel.cancel();
    n.server.await.unwrap().unwrap();
}

#[tokio::test]
async fn crashed_agent_makes_ready_503_with_its_state() {
    let n = start_node(ServerLimits::default()).await;
    wait_for(n.addr, "/ready", |c, _| c == 200).await;
    n.status.send_modify(|s| {
        s.agents[1] = AgentStatus {
            state: AgentState::Backoff,
            restarts: 1,
            last_exit: Some(ExitInfo {
                code: None,
                signal: Some("SIGKILL".into()),
                at: SystemTime::now(),
                expected: false,
            }),
            ..AgentStatus::new(Product::Nomad)
        }
    });
    let (_, body) = wait_for(n.addr, "/health", |c, _| c == 503).await;
    assert!(
        body.contains("nomad.process: backoff: last exit by SIGKILL"),
        "{body}"
    );
    let (_, m) = get(n.addr, "/metrics").await;
    assert!(
        m.contains("hashi_supervisor_agent_state{agent=\"nomad\",state=\"backoff\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("hashi_supervisor_agent_restarts_total{agent=\"nomad\"} 1"),
        "{m}"
    );
    n.cancel.cancel();
}

#[tokio::test]
async fn hung_agent_does_not_hang_the_endpoint() {
    let n = start_node(ServerLimits::default()).await;
    n.consul.set(Mode::Hung);
    // The endpoint keeps answering while every query to Consul hangs, and
    // the check turns to failing once the queries time out.
    let (_, body) = wait_for(n.addr, "/ready", |c, b| {
        c == 503
            && b.lines()
                .any(|l| l.contains("consul.api") && l.contains("timed out"))
    })
    .await;
    // Nomad's report is not held back by the hung Consul.
    assert!(!body.contains("nomad."), "{body}");
    assert_eq!(get(n.addr, "/live").await.0, 200);
    assert_eq!(get(n.addr, "/v1/status").await.0, 200);
    // And it recovers when the agent does.
    n.consul.set(Mode::Healthy);
    wait_for(n.addr, "/ready", |c, _| c == 200).await;
    n.cancel.cancel();
}

/// Consul spawned and not ready yet, Nomad up.
fn consul_starting() -> SupervisorStatus {
    let mut s = all_running();
    s.agents[0].state = AgentState::Starting;
    s.agents[0].ready = false;
    s
}

/// A checker whose interval no test waits out.
fn hour_interval(request_timeout: Duration) -> ObserverConfig {
    ObserverConfig {
        interval: Duration::from_secs(3600),
        request_timeout,
        settle_first: Duration::ZERO,
    }
}

#[tokio::test]
async fn agent_ready_after_the_first_round_is_reported_healthy_without_waiting_for_the_interval() {
    let n = start_node_with(
        ServerLimits::default(),
        hour_interval(Duration::from_millis(500)),
        consul_starting(),
    )
    .await;
    // The first round finds a Consul without a leader yet.
    n.consul.set(Mode::NoLeader);
    wait_for(n.addr, "/ready", |c, b| {
        c == 503 && b.contains("consul.api: no raft leader")
    })
    .await;
    // Consul elects its leader and the supervisor marks it ready: the
    // checker asks it again now, not an hour later.
    n.consul.set(Mode::Healthy);
    n.status.send_modify(|s| {
        s.agents[0].state = AgentState::Running;
        s.agents[0].ready = true;
    });
    let (_, body) = wait_for(n.addr, "/ready", |c, _| c == 200).await;
    assert_eq!(body, "ok\n");
    n.cancel.cancel();
}

#[tokio::test]
async fn round_started_before_a_state_change_is_dropped_and_does_not_hold_back_the_new_one() {
    // Requests time out long after the test's deadline: only the state
    // change can end the first round in time.
    let n = start_node_with(
        ServerLimits::default(),
        hour_interval(Duration::from_secs(60)),
        consul_starting(),
    )
    .await;
    n.consul.set(Mode::Hung);
    // The first round's leader query hangs at the starting Consul.
    until("the first round asks the leader", || {
        n.consul
            .requests()
            .iter()
            .any(|r| r.starts_with("GET /v1/status/leader "))
    })
    .await;
    n.consul.set(Mode::Healthy);
    n.status.send_modify(|s| {
        s.agents[0].state = AgentState::Running;
        s.agents[0].ready = true;
    });
    // The new round answers while the stale one would still hang ...
    wait_for(n.addr, "/ready", |c, _| c == 200).await;
    // ... which the checker abandoned: its requests are closed, not left
    // hanging until their timeout, and the node stays ready.
    until("the stale leader query is closed", || {
        n.consul
            .closed_by_client()
            .iter()
            .any(|r| r.starts_with("GET /v1/status/leader"))
    })
    .await;
    assert_eq!(get(n.addr, "/ready").await, (200, "ok\n".to_string()));
    n.cancel.cancel();
}

#[tokio::test]
async fn consul_without_leader_and_unhealthy_nomad_are_reported() {
    let n = start_node(ServerLimits::default()).await;
    wait_for(n.addr, "/ready", |c, _| c == 200).await;
    n.consul.set(Mode::NoLeader);
    n.nomad.set(Mode::NoLeader);
    let (_, body) = wait_for(n.addr, "/ready", |c, b| {
        c == 503 && b.contains("consul.api") && b.contains("nomad.api")
    })
    .await;
    assert!(body.contains("consul.api: no raft leader"), "{body}");
    // Nomad's unhealthy answer is a 500 with JSON in text/plain.
    assert!(
        body.contains("nomad.api: server: No cluster leader"),
        "{body}"
    );
    let doc: StatusDoc = serde_json::from_str(&get(n.addr, "/v1/status").await.1).unwrap();
    // 429 from autopilot is an answer, not an error.
    assert_eq!(
        doc.agents[0].consul.as_ref().unwrap().autopilot_healthy,
        Some(false)
    );
    n.cancel.cancel();
}

#[tokio::test]
async fn secrets_in_agent_output_never_reach_any_response() {
    let n = start_node(ServerLimits::default()).await;
    n.status.send_modify(|s| {
        s.agents[0].last_lines = vec![
            format!("==> config: encrypt = \"{GOSSIP_KEY}\""),
            format!("key {GOSSIP_KEY}"),
        ];
        s.reload_error = Some(format!("invalid: \"encrypt\": \"{GOSSIP_KEY}\""));
    });
    wait_for(n.addr, "/v1/status", |_, b| b.contains("[redacted]")).await;
    for path in crate::support::HEALTH_PATHS.iter().copied() {
        let (_, body) = get(n.addr, path).await;
        assert!(!body.contains(GOSSIP_KEY), "{path} leaks: {body}");
    }
    n.cancel.cancel();
}

#[tokio::test]
async fn head_and_other_methods_over_the_wire() {
    let n = start_node(ServerLimits::default()).await;
    let c = client();
    let r = c
        .head(format!("http://{}/v1/status", n.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let len: usize = r.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(len > 0);
    assert!(r.bytes().await.unwrap().is_empty());
    let r = c
        .post(format!("http://{}/ready", n.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD");
    assert_eq!(get(n.addr, "/etc/passwd").await.0, 404);
    // A body beyond the limit is refused without being read.
    let mut s = TcpStream::connect(n.addr).await.unwrap();
    s.write_all(b"GET /live HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 64];
    let k = s.read(&mut buf).await.unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..k]).starts_with("HTTP/1.1 413"),
        "{}",
        String::from_utf8_lossy(&buf[..k])
    );
    n.cancel.cancel();
}

#[tokio::test]
async fn slowloris_clients_do_not_stop_others_being_served() {
    let limits = ServerLimits {
        max_connections: 16,
        header_read_timeout: Duration::from_secs(1),
        ..ServerLimits::default()
    };
    let n = start_node(limits).await;
    let stop = CancellationToken::new();
    // Four times as many slow clients as connection slots, each trickling
    // a header line now and then and never finishing its request head.
    for _ in 0..64 {
        let addr = n.addr;
        let stop = stop.clone();
        tokio::spawn(async move {
            let Ok(mut s) = TcpStream::connect(addr).await else {
                return;
            };
            let _ = s.write_all(b"GET /live HTTP/1.1\r\nHost: x\r\n").await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                }
                if s.write_all(b"X-Slow: 1\r\n").await.is_err() {
                    return;
                }
            }
        });
    }
    let (code, _) = get(n.addr, "/live").await;
    assert_eq!(code, 200);
    let (code, _) = get(n.addr, "/v1/status").await;
    assert_eq!(code, 200);
    stop.cancel();
    n.cancel.cancel();
}

#[tokio::test]
async fn connection_flood_does_not_stop_others_being_served() {
    let limits = ServerLimits {
        max_connections: 32,
        header_read_timeout: Duration::from_secs(1),
        ..ServerLimits::default()
    };
    let n = start_node(limits).await;
    // Many more idle connections than slots, sending nothing at all.
    let mut idle = Vec::new();
    for _ in 0..400 {
        if let Ok(s) = TcpStream::connect(n.addr).await {
            idle.push(s);
        }
    }
    assert!(idle.len() > 32);
    let (code, _) = get(n.addr, "/live").await;
    assert_eq!(code, 200);
    let (code, _) = get(n.addr, "/ready?verbose").await;
    assert!(code == 200 || code == 503);
    drop(idle);
    n.cancel.cancel();
}

#[tokio::test]
async fn promtool_accepts_the_metrics() {
    if !support::require_tools(&["promtool"]) {
        return;
    }
    let out = Command::new("promtool").arg("--version").output().unwrap();
    assert!(out.status.success());
    let n = start_node(ServerLimits::default()).await;
    wait_for(n.addr, "/ready", |c, _| c == 200).await;
    let (code, body) = get(n.addr, "/metrics").await;
    assert_eq!(code, 200);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("metrics.txt");
    std::fs::write(&f, &body).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("promtool check metrics < {}", f.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).trim().is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    n.cancel.cancel();
}

/// The Chromium binary (after [`support::require_tools`] found one).
fn chromium() -> PathBuf {
    support::find_tool("chromium").expect("chromium is in PATH")
}

fn chromium_cmd(bin: &std::path::Path, profile: &std::path::Path) -> Command {
    let mut c = Command::new(bin);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

#[tokio::test]
async fn page_renders_in_headless_chromium_with_agent_states() {
    if !support::require_tools(&["chromium"]) {
        return;
    }
    let bin = chromium();
    let n = start_node(ServerLimits::default()).await;
    wait_for(n.addr, "/ready", |c, _| c == 200).await;
    n.status.send_modify(|s| {
        s.agents[1].state = AgentState::Failed;
        s.agents[1].reason = Some("restart mode fail: 3 failures".into());
    });
    wait_for(n.addr, "/ready", |c, _| c == 503).await;
    let url = format!("http://{}/", n.addr);
    let profile = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking({
        let url = url.clone();
        let p = profile.path().to_path_buf();
        let bin = bin.clone();
        move || {
            chromium_cmd(&bin, &p)
                .arg("--dump-dom")
                .arg(url)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains(r#"id="agent-consul" data-state="running""#),
        "{dom}"
    );
    assert!(
        dom.contains(r#"id="agent-nomad" data-state="failed""#),
        "{dom}"
    );
    assert!(dom.contains("ams2-server-01: unhealthy"), "{dom}");
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("health-page.png");
    let _ = std::fs::remove_file(&shot);
    let profile2 = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking({
        let shot = shot.clone();
        let p = profile2.path().to_path_buf();
        move || {
            chromium_cmd(&bin, &p)
                .arg("--window-size=1100,700")
                .arg(format!("--screenshot={}", shot.display()))
                .arg(url)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let png = std::fs::read(&shot).unwrap_or_else(|e| {
        panic!(
            "no screenshot at {}: {e}; {}",
            shot.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    eprintln!("screenshot: {}", shot.display());
    n.cancel.cancel();
}

#[tokio::test]
async fn registration_puts_an_http_check_on_ready_and_deregisters_on_stop() {
    let consul = FakeAgent::start(Product::Consul).await;
    let cancel = CancellationToken::new();
    let health_addr: SocketAddr = "10.0.0.7:4680".parse().unwrap();
    let task = tokio::spawn(catalog::run_registration(
        AgentClient::plain().unwrap(),
        consul.addr.to_string(),
        "ams2-client-01".into(),
        health_addr,
        cancel.clone(),
    ));
    let end = Instant::now() + DEADLINE;
    while !consul
        .requests()
        .iter()
        .any(|r| r.starts_with("PUT /v1/agent/service/register"))
    {
        assert!(
            Instant::now() < end,
            "no registration: {:?}",
            consul.requests()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reg = consul.requests()[0].clone();
    let body: serde_json::Value = serde_json::from_str(reg.splitn(3, ' ').nth(2).unwrap()).unwrap();
    assert_eq!(body["Name"], "hashi-supervisor");
    assert_eq!(body["ID"], "hashi-supervisor-ams2-client-01");
    assert_eq!(body["Port"], 4680);
    assert_eq!(body["Check"]["HTTP"], "http://10.0.0.7:4680/ready");
    assert!(body["Check"].get("Args").is_none(), "no script check");
    cancel.cancel();
    task.await.unwrap();
    assert!(
        consul
            .requests()
            .iter()
            .any(|r| r
                .starts_with("PUT /v1/agent/service/deregister/hashi-supervisor-ams2-client-01 ")),
        "{:?}",
        consul.requests()
    );
}

fn status_cmd(addr: SocketAddr, json: bool) -> std::process::Output {
    let mut c = Command::new(support::supervisor_bin());
    c.arg("status").arg("--addr").arg(addr.to_string());
    if json {
        c.arg("--json");
    }
    c.env("HASHI_SUPERVISOR_CONFIG", "/nonexistent/node.toml")
        .output()
        .unwrap()
}

#[tokio::test]
async fn status_command_exits_0_healthy_1_unhealthy_69_unreachable() {
    let n = start_node(ServerLimits::default()).await;
    wait_for(n.addr, "/ready", |c, _| c == 200).await;
    let addr = n.addr;
    let out = tokio::task::spawn_blocking(move || status_cmd(addr, false))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("ams2-server-01 (eu/ams2)") && text.contains("HEALTHY"),
        "{text}"
    );
    assert!(text.contains("leader 10.1.10.12:8300"), "{text}");
    n.consul.set(Mode::NoLeader);
    wait_for(n.addr, "/ready", |c, _| c == 503).await;
    let out = tokio::task::spawn_blocking(move || status_cmd(addr, true))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let doc: StatusDoc = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!doc.healthy);
    n.cancel.cancel();
    n.server.await.unwrap().unwrap();
    // Nothing listens there any more.
    let out = tokio::task::spawn_blocking(move || status_cmd(addr, false))
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(69),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn snapshot_channel_keeps_last_status_when_supervisor_is_gone() {
    let n = start_node(ServerLimits::default()).await;
    wait_for(n.addr, "/ready", |c, _| c == 200).await;
    drop(n.status);
    // The endpoint keeps answering from the last status.
    let (code, _) = get(n.addr, "/ready").await;
    assert_eq!(code, 200);
    n.cancel.cancel();
    n.server.await.unwrap().unwrap();
}

/// Kills the child on drop.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_real_prometheus_server_scrapes_the_metrics() {
    if !support::require_tools(&["prometheus"]) {
        return;
    }
    let n = start_node(ServerLimits::default()).await;
    wait_for(n.addr, "/ready", |c, _| c == 200).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: hashi-supervisor\n    static_configs:\n      - targets: ['{}']\n",
            n.addr
        ),
    )
    .unwrap();
    // A fixed port: Prometheus cannot report a port-0 listener's port.
    let port = support::standin::free_port();
    let _prom = Reap(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{port}/api/v1/query?query=hashi_supervisor_agent_up");
    let end = Instant::now() + Duration::from_secs(60);
    let result = loop {
        if let Ok(r) = client().get(&url).send().await {
            if let Ok(v) =
                serde_json::from_slice::<serde_json::Value>(&r.bytes().await.unwrap_or_default())
            {
                let res = v["data"]["result"].as_array().cloned().unwrap_or_default();
                if res.len() == 2 {
                    break res;
                }
            }
        }
        assert!(
            Instant::now() < end,
            "prometheus never scraped the endpoint"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for series in &result {
        assert_eq!(series["metric"]["job"], "hashi-supervisor");
        assert_eq!(series["value"][1], "1", "{series}");
    }
    let agents: Vec<&str> = result
        .iter()
        .filter_map(|s| s["metric"]["agent"].as_str())
        .collect();
    assert!(
        agents.contains(&"consul") && agents.contains(&"nomad"),
        "{agents:?}"
    );
    n.cancel.cancel();
}

#[tokio::test]
async fn consul_client_without_servers_is_reported_with_the_agents_words() {
    let n = start_node(ServerLimits::default()).await;
    n.consul.set(Mode::NoServers);
    let (_, body) = wait_for(n.addr, "/ready", |c, b| {
        c == 503 && b.contains("No known Consul servers")
    })
    .await;
    assert!(
        body.lines()
            .any(|l| l.starts_with("[FAIL] consul.api:") && l.contains("status 500")),
        "{body}"
    );
    n.cancel.cancel();
}

#[tokio::test]
async fn shutdown_ends_serve_despite_open_idle_connections() {
    let n = start_node(ServerLimits {
        shutdown_grace: Duration::from_millis(500),
        ..ServerLimits::default()
    })
    .await;
    // One keep-alive connection that has been served and now idles, one
    // that never sent anything.
    let mut served = TcpStream::connect(n.addr).await.unwrap();
    served
        .write_all(b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 256];
    let k = served.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..k]).starts_with("HTTP/1.1 200"));
    let _silent = TcpStream::connect(n.addr).await.unwrap();
    n.cancel.cancel();
    tokio::time::timeout(DEADLINE, n.server)
        .await
        .expect("serve returns after cancel")
        .unwrap()
        .unwrap();
    // The served connection was closed by the server.
    let k = tokio::time::timeout(DEADLINE, served.read(&mut buf))
        .await
        .expect("the server closes idle connections at shutdown")
        .unwrap_or(0);
    assert_eq!(k, 0);
}

fn plan(consul: SocketAddr, nomad: SocketAddr) -> hashi_supervisor::plan::Plan {
    use hashi_supervisor::plan::{AgentPlan, Plan, ReleasePlan};
    use hashi_supervisor::vocab::{RestartMode, RestartPolicy};
    let agent = |product, http_addr| AgentPlan {
        product,
        version: "latest".parse().unwrap(),
        server: true,
        client: false,
        user: "root".into(),
        binary: PathBuf::from("/nonexistent"),
        args: vec![],
        config_dir: PathBuf::from("/nonexistent"),
        data_dir: PathBuf::from("/nonexistent"),
        stop_signal: nix::sys::signal::Signal::SIGINT,
        stop_timeout: Duration::from_secs(1),
        restart: RestartPolicy {
            attempts: 1,
            interval: Duration::from_secs(1),
            delay: Duration::ZERO,
            mode: RestartMode::Delay,
            max_delay: Duration::from_secs(1),
            stable_after: Duration::from_secs(1),
        },
        http_addr,
        api_tls: None,
    };
    Plan {
        node_name: "lon1-server-01".into(),
        region: "eu".into(),
        datacenter: "lon1".into(),
        roles: vec!["consul-server".into(), "nomad-server".into()],
        agents: vec![agent(Product::Consul, consul), agent(Product::Nomad, nomad)],
        release: ReleasePlan {
            mirror: "file:///nonexistent".into(),
            trust_hashicorp_key: true,
            extra_trusted_keys: vec![],
            releases_dir: PathBuf::from("/nonexistent"),
            keep_versions: 2,
            max_download_bytes: 1,
        },
        health_listen: "127.0.0.1:0".parse().unwrap(),
        state_dir: PathBuf::from("/nonexistent"),
        config_dir: PathBuf::from("/nonexistent"),
        render: Default::default(),
    }
}

#[tokio::test]
async fn start_serves_the_plans_node_and_registers_then_deregisters() {
    let consul = FakeAgent::start(Product::Consul).await;
    let nomad = FakeAgent::start(Product::Nomad).await;
    let (status, rx) = watch::channel(all_running());
    let tracker = tokio_util::task::TaskTracker::new();
    let cancel = CancellationToken::new();
    let plan = plan(consul.addr, nomad.addr);
    let client = AgentClient::for_plan(&plan).unwrap();
    let observers = Observers::start(
        &client,
        &NodeInfo::from_plan(&plan).agents,
        ObserverConfig::default(),
        &tracker,
        &cancel,
    );
    let started = health::start(
        &plan,
        rx.clone(),
        Arc::new(Metrics::default()),
        observers,
        &tracker,
        cancel.clone(),
    )
    .await
    .unwrap();
    let registration =
        catalog::start_registration(&plan, &client, &rx, started.addr, &tracker, &cancel);
    assert!(
        registration.is_some(),
        "the plan's own consul is registered with"
    );
    let (_, body) = wait_for(started.addr, "/ready", |c, _| c == 200).await;
    assert_eq!(body, "ok\n");
    let doc: StatusDoc = serde_json::from_str(&get(started.addr, "/v1/status").await.1).unwrap();
    assert_eq!(
        (doc.node.as_str(), doc.datacenter.as_str()),
        ("lon1-server-01", "lon1")
    );
    let end = Instant::now() + DEADLINE;
    while !consul
        .requests()
        .iter()
        .any(|r| r.starts_with("PUT /v1/agent/service/register"))
    {
        assert!(Instant::now() < end, "not registered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cancel.cancel();
    tracker.close();
    tokio::time::timeout(DEADLINE, tracker.wait())
        .await
        .expect("every health task stops on cancel");
    assert!(consul.requests().iter().any(|r| {
        r.starts_with("PUT /v1/agent/service/deregister/hashi-supervisor-lon1-server-01 ")
    }));
    drop(status);
}

#[tokio::test]
async fn discoverys_view_published_after_start_reaches_ready_status_and_metrics() {
    use hashi_supervisor::health::DiscoveryView;
    use hashi_supervisor::peers::{DiscoveryReport, PeerKind, PeerRecord, Source};
    let consul = FakeAgent::start(Product::Consul).await;
    let nomad = FakeAgent::start(Product::Nomad).await;
    let (status, rx) = watch::channel(all_running());
    let tracker = tokio_util::task::TaskTracker::new();
    let cancel = CancellationToken::new();
    let plan = plan(consul.addr, nomad.addr);
    let client = AgentClient::for_plan(&plan).unwrap();
    let observers = Observers::start(
        &client,
        &NodeInfo::from_plan(&plan).agents,
        ObserverConfig::default(),
        &tracker,
        &cancel,
    );
    let started = health::start(
        &plan,
        rx.clone(),
        Arc::new(Metrics::default()),
        observers,
        &tracker,
        cancel.clone(),
    )
    .await
    .unwrap();
    wait_for(started.addr, "/ready", |c, _| c == 200).await;
    // What `run` publishes while it waits for discovery.
    let mut view = DiscoveryView {
        report: DiscoveryReport::default(),
        waiting_for: vec!["region and datacenter (no Consul server announced on eth1 yet)".into()],
    };
    started.discovery.send_replace(Some(view.clone()));
    let (_, body) = wait_for(started.addr, "/ready", |c, _| c == 503).await;
    assert!(
        body.contains("[FAIL] discovery: waiting for discovery: region and datacenter"),
        "{body}"
    );
    // Found, then degraded by a problem.
    view.waiting_for.clear();
    view.report.records.push(PeerRecord {
        address: "10.0.2.11".into(),
        kind: PeerKind::ConsulServer,
        source: Source::Mdns,
        node: Some("lon1-server-02".into()),
        datacenter: Some("lon1".into()),
        region: Some("eu".into()),
        last_seen: SystemTime::now(),
    });
    view.report.problems =
        vec!["no healthy Consul server of lon1: 10.0.2.11:8500: timed out".into()];
    view.report.joins = vec![("consul".into(), 1)];
    started.discovery.send_replace(Some(view.clone()));
    let (_, body) = wait_for(started.addr, "/ready", |_, b| b.contains("degraded")).await;
    assert!(
        body.contains("[FAIL] discovery: degraded: no healthy Consul server of lon1: 10.0.2.11:8500: timed out"),
        "{body}"
    );
    let doc: StatusDoc = serde_json::from_str(&get(started.addr, "/v1/status").await.1).unwrap();
    let d = doc.discovery.unwrap();
    assert_eq!(d.peers[0].address, "10.0.2.11");
    assert_eq!(
        (d.peers[0].kind.as_str(), d.peers[0].source.as_str()),
        ("consul-server", "mdns")
    );
    let metrics = get(started.addr, "/metrics").await.1;
    assert!(
        metrics.contains("hashi_supervisor_discovery_joins_total{agent=\"consul\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("hashi_supervisor_discovery_peers{source=\"mdns\",kind=\"consul-server\"} 1"),
        "{metrics}"
    );
    // The problem goes: ready again.
    view.report.problems.clear();
    started.discovery.send_replace(Some(view));
    wait_for(started.addr, "/ready", |c, _| c == 200).await;
    cancel.cancel();
    tracker.close();
    tokio::time::timeout(DEADLINE, tracker.wait())
        .await
        .expect("every health task stops on cancel");
    drop(status);
}

/// A `MakeWriter` collecting log output in memory.
#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuf {
    type Writer = LogBuf;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

// Current-thread runtime: every task runs on this thread, under the
// thread's default subscriber.
#[tokio::test(flavor = "current_thread")]
async fn secrets_in_agent_error_answers_reach_neither_responses_nor_logs() {
    let logs = LogBuf::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let n = start_node(ServerLimits::default()).await;
    n.consul.set(Mode::Leaky);
    n.nomad.set(Mode::Leaky);
    let (_, body) = wait_for(n.addr, "/ready", |c, b| {
        c == 503 && b.contains("consul.api") && b.contains("nomad.api") && b.contains("[redacted]")
    })
    .await;
    assert!(!body.contains(GOSSIP_KEY), "{body}");
    // Registration fails against the leaky agent and logs why.
    let reg_cancel = CancellationToken::new();
    let reg = tokio::spawn(catalog::run_registration(
        AgentClient::plain().unwrap(),
        n.consul.addr.to_string(),
        "ams2-server-01".into(),
        n.addr,
        reg_cancel.clone(),
    ));
    let end = Instant::now() + DEADLINE;
    while !String::from_utf8_lossy(&logs.0.lock().unwrap()).contains("registration failed") {
        assert!(Instant::now() < end, "no registration failure logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    reg_cancel.cancel();
    reg.await.unwrap();
    for path in ["/", "/ready?verbose", "/v1/status", "/metrics"] {
        let (_, body) = get(n.addr, path).await;
        assert!(!body.contains(GOSSIP_KEY), "{path} leaks: {body}");
    }
    n.cancel.cancel();
    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).to_string();
    assert!(
        text.contains("health endpoint listening"),
        "logs were captured: {text}"
    );
    assert!(!text.contains(GOSSIP_KEY), "a log line leaks: {text}");
}

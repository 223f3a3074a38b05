//! `supervisor fleet`: the real binary against simulated supervisors on
//! loopback (healthy, unhealthy, slow, hanging, refusing, resetting,
//! malformed, wrong content type, oversized), a fake Consul catalog, the
//! fleet page in headless Chromium and the file_sd document in a real
//! Prometheus. The simulated nodes serve the real `/v1/status` answers of
//! the demo topology (`tests/data/fleet/`), some altered here.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup step is a failed test

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashi_supervisor::catalog::fleet::report::FleetReport;
use hashi_supervisor::catalog::fleet::status::parse_status;
use hashi_supervisor::catalog::fleet::{NodeResult, NodeState, Target};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support;

const DEADLINE: Duration = Duration::from_secs(60);

/// What a simulated supervisor does with a request.
#[derive(Clone)]
enum Behaviour {
    /// Answers after `delay`.
    Answer {
        delay: Duration,
        status: u16,
        content_type: &'static str,
        body: Arc<Vec<u8>>,
    },
    /// Reads the request and never answers.
    Hang,
    /// Reads the request and resets the connection.
    Reset,
}

fn answer(body: Vec<u8>) -> Behaviour {
    Behaviour::Answer {
        delay: Duration::ZERO,
        status: 200,
        content_type: "application/json",
        body: Arc::new(body),
    }
}

/// A real node's answer with its node name, datacenter and region replaced
/// and `edit` applied to the JSON.
fn doc(file: &str, node: &str, dc: &str, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v: Value =
        serde_json::from_slice(&support::read_data(&format!("fleet/{file}"))).unwrap();
    v["node"] = node.into();
    v["datacenter"] = dc.into();
    edit(&mut v);
    serde_json::to_vec(&v).unwrap()
}

const SERVER: &str = "status-ams2-server-01.json";
const CLIENT: &str = "status-ams2-client-01.json";

/// Starts a simulated supervisor on 127.0.0.1; returns its address.
async fn sim(b: Behaviour) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(handle(s, b.clone()));
        }
    });
    addr
}

async fn handle(mut s: TcpStream, b: Behaviour) {
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    match b {
        Behaviour::Hang => tokio::time::sleep(Duration::from_secs(600)).await,
        Behaviour::Reset => {
            let _ = s.set_zero_linger();
            drop(s);
        }
        Behaviour::Answer {
            delay,
            status,
            content_type,
            body,
        } => {
            tokio::time::sleep(delay).await;
            let head = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(&body).await;
            let _ = s.shutdown().await;
        }
    }
}

/// A loopback port nothing listens on.
async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

fn targets_file(dir: &Path, addrs: &[SocketAddr]) -> PathBuf {
    let p = dir.join("targets.txt");
    let mut text = String::from("# simulated fleet\n");
    for a in addrs {
        text.push_str(&format!("{a}\n"));
    }
    std::fs::write(&p, text).unwrap();
    p
}

/// Runs `supervisor ARGS`; returns (exit code, stdout, stderr).
async fn fleet(args: &[&str]) -> (i32, String, String) {
    let out = tokio::time::timeout(
        DEADLINE,
        tokio::process::Command::new(support::supervisor_bin())
            .args(args)
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("supervisor fleet ends")
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn node_of(report: &Value, addr: SocketAddr) -> &Value {
    report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| {
            format!(
                "{}:{}",
                n["target"]["host"].as_str().unwrap(),
                n["target"]["port"]
            ) == addr.to_string()
        })
        .unwrap_or_else(|| panic!("{addr} not in the report: {report}"))
}

#[tokio::test]
async fn fleet_reports_every_kind_of_broken_node_and_exits_1() {
    let healthy = sim(answer(doc(SERVER, "n-healthy", "ams2", |_| {}))).await;
    // Slow but well inside the timeout (a loaded CI machine keeps it so).
    let slow = sim(Behaviour::Answer {
        delay: Duration::from_millis(50),
        status: 200,
        content_type: "application/json; charset=utf-8",
        body: Arc::new(doc(CLIENT, "n-slow", "ams2", |_| {})),
    })
    .await;
    let unhealthy = sim(answer(doc(CLIENT, "n-unhealthy", "ams2", |v| {
        v["healthy"] = false.into();
        v["checks"][1]["ok"] = false.into();
        v["checks"][1]["reason"] = "backoff, 3 failures\u{1b}[2J".into();
    })))
    .await;
    let hanging = sim(Behaviour::Hang).await;
    let reset = sim(Behaviour::Reset).await;
    let refused = closed_port().await;
    let malformed = sim(answer(b"{\"node\": \"x\", \"healthy\": tr".to_vec())).await;
    let not_status = sim(answer(b"{\"hello\": \"world\"}".to_vec())).await;
    let html = sim(Behaviour::Answer {
        delay: Duration::ZERO,
        status: 200,
        content_type: "text/html",
        body: Arc::new(doc(SERVER, "n-html", "ams2", |_| {})),
    })
    .await;
    let http_500 = sim(Behaviour::Answer {
        delay: Duration::ZERO,
        status: 500,
        content_type: "text/plain",
        body: Arc::new(b"boom".to_vec()),
    })
    .await;
    let huge = sim(answer(vec![b' '; 2 * 1024 * 1024])).await;

    let dir = tempfile::tempdir().unwrap();
    let all = [
        healthy, slow, unhealthy, hanging, reset, refused, malformed, not_status, html, http_500,
        huge,
    ];
    let file = targets_file(dir.path(), &all);
    let (code, out, err) = fleet(&[
        "fleet",
        "--targets",
        file.to_str().unwrap(),
        "--json",
        "--timeout",
        "3s",
    ])
    .await;
    assert_eq!(code, 1, "{out}\n{err}");
    let r: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let state = |a| node_of(&r, a)["state"].as_str().unwrap().to_string();
    let problem = |a| node_of(&r, a)["problem"].as_str().unwrap_or("").to_string();
    assert_eq!(state(healthy), "healthy");
    assert_eq!(
        state(slow),
        "healthy",
        "a slow node within the timeout is fine"
    );
    assert_eq!(state(unhealthy), "unhealthy");
    assert!(
        problem(unhealthy).contains("backoff, 3 failures"),
        "{}",
        problem(unhealthy)
    );
    assert!(
        !problem(unhealthy).contains('\u{1b}'),
        "terminal escapes are stripped"
    );
    assert_eq!(state(hanging), "unreachable");
    assert!(
        problem(hanging).contains("timed out"),
        "{}",
        problem(hanging)
    );
    assert_eq!(node_of(&r, hanging)["attempts"], 2, "one retry");
    assert_eq!(state(reset), "unreachable");
    assert!(
        problem(reset).contains("reset") || problem(reset).contains("closed"),
        "{}",
        problem(reset)
    );
    assert_eq!(state(refused), "unreachable");
    assert!(problem(refused).contains("refused"), "{}", problem(refused));
    for bad in [malformed, not_status] {
        assert_eq!(state(bad), "bad_answer");
        assert!(
            problem(bad).contains("not a status document"),
            "{}",
            problem(bad)
        );
    }
    assert_eq!(state(html), "bad_answer");
    assert!(problem(html).contains("text/html"), "{}", problem(html));
    assert_eq!(state(http_500), "bad_answer");
    assert!(
        problem(http_500).contains("HTTP 500"),
        "{}",
        problem(http_500)
    );
    assert_eq!(
        node_of(&r, http_500)["attempts"],
        2,
        "a 5xx is retried once"
    );
    assert_eq!(state(huge), "bad_answer");
    assert!(problem(huge).contains("larger than"), "{}", problem(huge));
    assert_eq!(r["counts"]["total"], 11);
    assert_eq!(r["counts"]["healthy"], 2);
    assert_eq!(r["counts"]["unhealthy"], 1);
    assert_eq!(r["counts"]["unreachable"], 3);
    assert_eq!(r["counts"]["bad_answer"], 5);
    // Problems first: the healthy nodes are last.
    let states: Vec<&str> = r["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["state"].as_str().unwrap())
        .collect();
    assert_eq!(&states[9..], ["healthy", "healthy"], "{states:?}");

    // The table: problems first, the summary line.
    let (code, table, _) = fleet(&[
        "fleet",
        "--targets",
        file.to_str().unwrap(),
        "--timeout",
        "700ms",
    ])
    .await;
    assert_eq!(code, 1);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NODE"), "{table}");
    assert!(lines[1].contains("UNREACHABLE"), "{table}");
    assert!(
        table.contains("11 nodes: 2 healthy, 1 unhealthy, 3 unreachable, 5 bad answer"),
        "{table}"
    );
    assert!(!table.contains('\u{1b}'), "{table}");
}

#[tokio::test]
async fn fleet_exits_0_when_all_are_healthy_and_64_on_usage_errors() {
    let a = sim(answer(doc(SERVER, "n1", "ams2", |_| {}))).await;
    let b = sim(answer(doc(CLIENT, "n2", "ams2", |_| {}))).await;
    let dir = tempfile::tempdir().unwrap();
    let file = targets_file(dir.path(), &[a, b]);
    let (code, out, err) = fleet(&["fleet", "--targets", file.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("2 nodes: 2 healthy, 0 unhealthy, 0 unreachable"),
        "{out}"
    );
    assert!(
        out.contains("n1") && out.contains("running 1.21.4"),
        "{out}"
    );

    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, "10.0.0.1\nnot a host\n10.0.0.2:99999\n").unwrap();
    let (code, _, err) = fleet(&["fleet", "--targets", bad.to_str().unwrap()]).await;
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("bad.txt:2:") && err.contains("bad.txt:3:"),
        "{err}"
    );
    let (code, _, err) = fleet(&["fleet"]).await;
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("no targets"), "{err}");
    let (code, _, err) = fleet(&["fleet", "--targets", "/nonexistent/targets"]).await;
    assert_eq!(code, 64, "{err}");
    let (code, _, _) = fleet(&[
        "fleet",
        "--targets",
        file.to_str().unwrap(),
        "--concurrency",
        "0",
    ])
    .await;
    assert_eq!(code, 64);
}

/// A node result from a real answer, altered.
fn result(file: &str, node: &str, dc: &str, edit: impl FnOnce(&mut Value)) -> NodeResult {
    let status = parse_status(&doc(file, node, dc, edit)).unwrap();
    NodeResult {
        target: Target {
            host: format!("{node}.example"),
            port: 4680,
            origin: "test".into(),
            datacenter: None,
        },
        state: if status.healthy {
            NodeState::Healthy
        } else {
            NodeState::Unhealthy
        },
        problem: None,
        attempts: 1,
        elapsed_ms: 1,
        status: Some(status),
    }
}

fn kinds(r: &FleetReport) -> Vec<(String, String)> {
    r.findings
        .iter()
        .map(|f| (f.kind.clone(), f.message.clone()))
        .collect()
}

#[test]
fn findings_version_skew_leader_disagreement_nomad_short_and_no_consul_server() {
    // The demo topology as it is: no finding.
    let demo: Vec<NodeResult> = [
        ("status-ams2-server-01.json", "ams2"),
        ("status-ams2-server-03.json", "ams2"),
        ("status-ams2-client-01.json", "ams2"),
        ("status-lon1-server-01.json", "lon1"),
        ("status-lon1-client-01.json", "lon1"),
    ]
    .iter()
    .map(|(f, dc)| {
        let name = f.trim_start_matches("status-").trim_end_matches(".json");
        result(f, name, dc, |_| {})
    })
    .collect();
    let r = FleetReport::new(demo.clone(), 0, 1);
    assert!(r.findings.is_empty(), "{:?}", kinds(&r));
    assert!(r.all_healthy());

    // A second Consul server in ams2 on another version, naming another
    // leader; lon1's Consul server failed; one Nomad server down.
    let mut nodes = demo;
    nodes.push(result(SERVER, "ams2-server-02", "ams2", |v| {
        v["agents"][0]["consul"]["leader"] = "10.0.1.12:8300".into();
        v["agents"][0]["consul"]["version"] = "1.20.0".into();
    }));
    let lon1 = nodes
        .iter()
        .position(|n| n.status.as_ref().unwrap().node == "lon1-server-01")
        .unwrap();
    nodes[lon1] = result(
        "status-lon1-server-01.json",
        "lon1-server-01",
        "lon1",
        |v| {
            v["healthy"] = false.into();
            v["agents"][0]["state"] = "failed".into();
            v["agents"][0]["ready"] = false.into();
        },
    );
    let s3 = nodes
        .iter()
        .position(|n| n.status.as_ref().unwrap().node == "ams2-server-03")
        .unwrap();
    nodes[s3] = result(
        "status-ams2-server-03.json",
        "ams2-server-03",
        "ams2",
        |v| {
            v["healthy"] = false.into();
            v["agents"][0]["state"] = "backoff".into();
            v["agents"][0]["ready"] = false.into();
        },
    );
    let r = FleetReport::new(nodes, 0, 1);
    let k = kinds(&r);
    let has = |kind: &str, text: &str| k.iter().any(|(a, m)| a == kind && m.contains(text));
    assert!(
        has(
            "version_skew",
            "consul versions differ: 1.21.4 on 2 nodes; 1.20.0 on 1 (ams2-server-02)"
        ),
        "{k:?}"
    );
    assert!(
        has(
            "leader_disagreement",
            "ams2: consul servers disagree on the leader"
        ),
        "{k:?}"
    );
    assert!(has("no_healthy_consul_server", "lon1"), "{k:?}");
    assert!(!has("no_healthy_consul_server", "ams2"), "{k:?}");
    // Four Nomad servers answered (ams2-server-02 is a copy of a
    // consul+nomad server), one of them in backoff: 3 of 4, quorum kept.
    assert!(
        has(
            "nomad_servers_short",
            "region eu: 3 of 4 nomad servers alive"
        ),
        "{k:?}"
    );
    assert!(!has("nomad_servers_short", "quorum"), "{k:?}");
    assert!(!r.all_healthy());
    // Problems first.
    assert_eq!(r.nodes[0].state, NodeState::Unhealthy);
    // Metrics: per-datacenter counts.
    let m = r.metrics();
    assert!(
        m.contains("hashi_fleet_nodes{datacenter=\"lon1\",state=\"unhealthy\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("hashi_fleet_nodes{datacenter=\"ams2\",state=\"healthy\"} 3"),
        "{m}"
    );
    assert!(
        m.contains("hashi_fleet_findings{kind=\"leader_disagreement\"} 1"),
        "{m}"
    );
}

/// A fake Consul catalog with two datacenters, requiring `token`.
async fn fake_consul(
    token: &'static str,
    dc1: Vec<SocketAddr>,
    dc2: Vec<SocketAddr>,
) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let entries = |nodes: &[SocketAddr], dc: &str| {
        let v: Vec<Value> = nodes
            .iter()
            .enumerate()
            .map(|(i, a)| {
                serde_json::json!({
                    "Node": format!("{dc}-n{i}"), "Address": "192.0.2.1", "Datacenter": dc,
                    "ServiceAddress": a.ip().to_string(), "ServicePort": a.port(),
                })
            })
            .collect();
        serde_json::to_vec(&v).unwrap()
    };
    let (b1, b2) = (
        Arc::new(entries(&dc1, "ams2")),
        Arc::new(entries(&dc2, "lon1")),
    );
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let (b1, b2) = (b1.clone(), b2.clone());
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 2048];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let req = String::from_utf8_lossy(&got).to_lowercase();
                let line = req.lines().next().unwrap_or("").to_string();
                let (status, body): (u16, Vec<u8>) = if !req
                    .contains(&format!("x-consul-token: {token}"))
                {
                    (403, b"Permission denied".to_vec())
                } else if line.starts_with("get /v1/catalog/datacenters ") {
                    (200, b"[\"ams2\",\"lon1\"]".to_vec())
                } else if line.starts_with("get /v1/catalog/service/hashi-supervisor?dc=ams2 ") {
                    (200, b1.to_vec())
                } else if line.starts_with("get /v1/catalog/service/hashi-supervisor?dc=lon1 ") {
                    (200, b2.to_vec())
                } else {
                    (404, Vec::new())
                };
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&body).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn fleet_lists_targets_from_every_consul_datacenter_with_the_token() {
    let a = sim(answer(doc(SERVER, "ams2-a", "ams2", |_| {}))).await;
    let b = sim(answer(doc(CLIENT, "ams2-b", "ams2", |_| {}))).await;
    let c = closed_port().await;
    let consul = fake_consul("s3cr3t-token", vec![a, b], vec![c]).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cr3t-token\n").unwrap();
    let url = format!("http://{consul}");
    let (code, out, err) = fleet(&[
        "fleet",
        "--consul",
        &url,
        "--token-file",
        token.to_str().unwrap(),
        "--json",
        "--timeout",
        "500ms",
    ])
    .await;
    assert_eq!(code, 1, "{out}\n{err}");
    let r: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    assert_eq!(r["counts"]["total"], 3, "{r}");
    assert_eq!(r["counts"]["healthy"], 2, "{r}");
    // The unreachable node keeps the datacenter the catalog gave it.
    assert_eq!(node_of(&r, c)["target"]["datacenter"], "lon1");
    assert_eq!(node_of(&r, c)["state"], "unreachable");

    // Without the token Consul refuses: a runtime error, exit 1, saying so.
    let (code, _, err) = fleet(&["fleet", "--consul", &url]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("403"), "{err}");
}

/// GETs `http://addr{path}`; (status, body).
async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .ok()?
        .get(format!("http://{addr}{path}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().await.ok()?))
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn chromium_cmd(profile: &Path) -> std::process::Command {
    let bin = support::find_tool("chromium").expect("chromium is in PATH");
    let mut c = std::process::Command::new(bin);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--no-first-run",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

#[tokio::test]
async fn fleet_serve_page_in_chromium_json_metrics_and_sd_file() {
    let healthy = sim(answer(doc(SERVER, "ams2-good", "ams2", |_| {}))).await;
    let sick = sim(answer(doc(CLIENT, "ams2-sick", "ams2", |v| {
        v["healthy"] = false.into();
        v["checks"][1]["ok"] = false.into();
        v["checks"][1]["reason"] = "failed: 3 exits in 60s".into();
    })))
    .await;
    let other = sim(answer(doc(
        "status-lon1-server-01.json",
        "lon1-good",
        "lon1",
        |_| {},
    )))
    .await;
    let gone = closed_port().await;
    let dir = tempfile::tempdir().unwrap();
    let file = targets_file(dir.path(), &[healthy, sick, other, gone]);
    let sd = dir.path().join("sd").join("fleet.json");
    std::fs::create_dir_all(sd.parent().unwrap()).unwrap();
    let listen = free_port();
    let mut child = tokio::process::Command::new(support::supervisor_bin())
        .args([
            "fleet",
            "serve",
            "--listen",
            &listen.to_string(),
            "--interval",
            "1",
        ])
        .args(["--targets", file.to_str().unwrap(), "--timeout", "500ms"])
        .arg("--prometheus-sd")
        .arg(&sd)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let end = Instant::now() + DEADLINE;
    let report: Value = loop {
        assert!(
            Instant::now() < end,
            "no completed poll on /v1/fleet within {DEADLINE:?}"
        );
        if let Some((200, body)) = get(listen, "/v1/fleet").await {
            let v: Value = serde_json::from_str(&body).unwrap();
            if v.get("counts").is_some() {
                break v;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(report["counts"]["total"], 4, "{report}");
    assert_eq!(report["counts"]["unhealthy"], 1, "{report}");
    let (code, metrics) = get(listen, "/metrics").await.unwrap();
    assert_eq!(code, 200);
    assert!(
        metrics.contains("hashi_fleet_nodes{datacenter=\"ams2\",state=\"unhealthy\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hashi_fleet_nodes{datacenter=\"lon1\",state=\"healthy\"} 1"),
        "{metrics}"
    );
    let (code, page) = get(listen, "/").await.unwrap();
    assert_eq!(code, 200);
    assert!(
        !page.contains("src=\"http") && !page.contains("href=\"http"),
        "no external asset"
    );

    // The SD file: written atomically, every target in it.
    let sd_text = std::fs::read_to_string(&sd).unwrap();
    let sd_doc: Value = serde_json::from_str(&sd_text).unwrap();
    let listed: Vec<String> = sd_doc
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| {
            g["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_string())
        })
        .collect();
    for a in [healthy, sick, other, gone] {
        assert!(listed.contains(&a.to_string()), "{a} not in {sd_text}");
    }

    if support::require_tools(&["chromium"]) {
        let url = format!("http://{listen}/");
        let profile = tempfile::tempdir().unwrap();
        let out = tokio::task::spawn_blocking({
            let (url, p) = (url.clone(), profile.path().to_path_buf());
            move || {
                chromium_cmd(&p)
                    .arg("--dump-dom")
                    .arg(url)
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        let dom = String::from_utf8_lossy(&out.stdout);
        let sick_row = dom
            .split("<tr")
            .find(|r| r.contains("ams2-sick"))
            .unwrap_or_else(|| panic!("no row of ams2-sick in the DOM: {dom}"));
        assert!(sick_row.contains("class=\"node unhealthy\""), "{sick_row}");
        assert!(sick_row.contains("failed: 3 exits in 60s"), "{sick_row}");
        assert!(
            dom.contains("data-dc=\"ams2\"") && dom.contains("data-dc=\"lon1\""),
            "{dom}"
        );
        assert!(dom.contains("id=\"filter\""), "{dom}");
        let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fleet-page.png");
        let _ = std::fs::remove_file(&shot);
        let profile2 = tempfile::tempdir().unwrap();
        let out = tokio::task::spawn_blocking({
            let (shot, p) = (shot.clone(), profile2.path().to_path_buf());
            move || {
                chromium_cmd(&p)
                    .arg("--window-size=1300,600")
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
    }

    if support::require_tools(&["prometheus"]) {
        prometheus_loads(&sd, &[healthy, sick, other, gone]).await;
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
}

/// Starts a real Prometheus on loopback whose file_sd reads `sd`; waits
/// until its targets API lists every address of `want`.
async fn prometheus_loads(sd: &Path, want: &[SocketAddr]) {
    let bin = support::find_tool("prometheus").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: hashi-supervisor\n    file_sd_configs:\n      - files: ['{}']\n        refresh_interval: 1s\n",
            sd.display()
        ),
    )
    .unwrap();
    let listen = free_port();
    let mut prom = tokio::process::Command::new(bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--web.listen-address={listen}"))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let end = Instant::now() + DEADLINE;
    let mut last = String::new();
    loop {
        if Instant::now() > end {
            let _ = prom.start_kill();
            panic!("prometheus did not list every target within {DEADLINE:?}: {last}");
        }
        if let Some((200, body)) = get(listen, "/api/v1/targets").await {
            let v: Value = serde_json::from_str(&body).unwrap();
            let instances: Vec<String> = v["data"]["activeTargets"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t["labels"]["instance"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            if want.iter().all(|a| instances.contains(&a.to_string())) {
                let dcs = body.contains("\"datacenter\":\"ams2\"")
                    && body.contains("\"datacenter\":\"lon1\"");
                assert!(dcs, "{body}");
                break;
            }
            last = body;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = prom.start_kill();
    let _ = prom.wait().await;
}

// ------------------------------------------------------------------ DNS ---

/// The name of a DNS question starting at `q` (12: after the header), and
/// the offset after its type and class.
fn question(packet: &[u8]) -> Option<(String, u16, usize)> {
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = *packet.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(packet.get(i..i + len)?).to_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*packet.get(i)?, *packet.get(i + 1)?]);
    Some((labels.join("."), qtype, i + 4))
}

fn encode_name(name: &str) -> Vec<u8> {
    let mut o = Vec::new();
    for l in name.split('.').filter(|l| !l.is_empty()) {
        o.push(l.len() as u8);
        o.extend_from_slice(l.as_bytes());
    }
    o.push(0);
    o
}

/// A DNS server on 127.0.0.1 (UDP) answering `a` (name -> IPv4 addresses)
/// and `srv` (name -> (target, port)); every other question gets an empty
/// NOERROR answer.
async fn fake_dns(
    a: Vec<(&'static str, Vec<std::net::Ipv4Addr>)>,
    srv: Vec<(&'static str, Vec<(&'static str, u16)>)>,
) -> SocketAddr {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let q = &buf[..n];
            let Some((name, qtype, end)) = question(q) else {
                continue;
            };
            let mut answers: Vec<(u16, Vec<u8>)> = Vec::new();
            if qtype == 1 {
                for (_, ips) in a.iter().filter(|(n, _)| *n == name) {
                    answers.extend(ips.iter().map(|ip| (1, ip.octets().to_vec())));
                }
            } else if qtype == 33 {
                for (_, recs) in srv.iter().filter(|(n, _)| *n == name) {
                    for (target, port) in recs {
                        let mut rd = vec![0, 10, 0, 10];
                        rd.extend_from_slice(&port.to_be_bytes());
                        rd.extend(encode_name(target));
                        answers.push((33, rd));
                    }
                }
            }
            let mut r = Vec::new();
            r.extend_from_slice(&q[0..2]);
            r.extend_from_slice(&[0x85, 0x80, 0, 1]);
            r.extend_from_slice(&(answers.len() as u16).to_be_bytes());
            r.extend_from_slice(&[0, 0, 0, 0]);
            r.extend_from_slice(&q[12..end]);
            for (t, rd) in answers {
                r.extend_from_slice(&[0xc0, 0x0c]);
                r.extend_from_slice(&t.to_be_bytes());
                r.extend_from_slice(&[0, 1, 0, 0, 0, 30]);
                r.extend_from_slice(&(rd.len() as u16).to_be_bytes());
                r.extend(rd);
            }
            let _ = sock.send_to(&r, from).await;
        }
    });
    addr
}

/// A simulated supervisor on `ip` at `port` (both loopback).
async fn sim_at(ip: &str, port: u16, b: Behaviour) -> SocketAddr {
    let l = TcpListener::bind((ip, port)).await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(handle(s, b.clone()));
        }
    });
    addr
}

#[tokio::test]
async fn fleet_finds_targets_in_dns_a_records_and_srv_records() {
    // A records: two nodes on 127.0.0.2 and 127.0.0.3 at one port (--port).
    let first = sim_at(
        "127.0.0.2",
        0,
        answer(doc(SERVER, "dns-a1", "ams2", |_| {})),
    )
    .await;
    let second = sim_at(
        "127.0.0.3",
        first.port(),
        answer(doc(CLIENT, "dns-a2", "ams2", |_| {})),
    )
    .await;
    // SRV: two nodes on their own ports, names resolved through the same server.
    let s1 = sim(answer(doc(SERVER, "dns-s1", "lon1", |_| {}))).await;
    let s2 = closed_port().await;
    let ns = fake_dns(
        vec![
            (
                "fleet.test",
                vec!["127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap()],
            ),
            ("n1.fleet.test", vec!["127.0.0.1".parse().unwrap()]),
            ("n2.fleet.test", vec!["127.0.0.1".parse().unwrap()]),
        ],
        vec![(
            "_hashi-sup._tcp.fleet.test",
            vec![("n1.fleet.test", s1.port()), ("n2.fleet.test", s2.port())],
        )],
    )
    .await;
    let ns = ns.to_string();
    let port = first.port().to_string();
    let (code, out, err) = fleet(&[
        "fleet",
        "--dns",
        "fleet.test.",
        "--nameserver",
        &ns,
        "--port",
        &port,
        "--json",
    ])
    .await;
    assert_eq!(code, 0, "{out}\n{err}");
    let r: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    assert_eq!(r["counts"]["healthy"], 2, "{r}");
    node_of(&r, first);
    node_of(&r, second);

    let (code, out, err) = fleet(&[
        "fleet",
        "--dns",
        "_hashi-sup._tcp.fleet.test.",
        "--nameserver",
        &ns,
        "--json",
        "--timeout",
        "500ms",
    ])
    .await;
    assert_eq!(code, 1, "{out}\n{err}");
    let r: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    assert_eq!(node_of(&r, s1)["state"], "healthy", "{r}");
    assert_eq!(node_of(&r, s2)["state"], "unreachable", "{r}");

    // A name with no record: a lookup error, exit 1.
    let (code, _, err) = fleet(&["fleet", "--dns", "nothing.test.", "--nameserver", &ns]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("nothing.test"), "{err}");
}

// ------------------------------------------------- the five-node topology ---

/// The reference topology's real supervisors (network namespaces, stand-in
/// agents): one node made unhealthy (its Nomad agent frozen with SIGSTOP,
/// so its API stops answering), one stopped; `supervisor fleet` over the
/// five forwarded health endpoints names both, and sees what no node can:
/// lon1 without a healthy Consul server, the region one Nomad server short.
#[test]
fn fleet_over_the_five_node_topology_names_the_unhealthy_and_the_stopped_node() {
    use hashi_testrig::demo::{Demo, DemoOptions};
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    if !support::require_tools(&["ip"])
        || !support::available("network namespaces", hashi_testrig::netns::is_available())
    {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let opts = DemoOptions {
        supervisor: support::supervisor_bin(),
        standin: support::standin::standin_bin(),
        examples_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/examples"),
        work_dir: work.path().join("demo"),
        forward_base_port: 0,
        nodes: hashi_testrig::demo::reference_demo_nodes(),
        dns: Vec::new(),
        silent_nameservers: Vec::new(),
    };
    let mut demo = Demo::start(&opts).expect("start the demo");
    demo.wait_ready(Duration::from_secs(300))
        .expect("the five nodes get ready");
    let addr_of = |name: &str| demo.node(name).unwrap().forward;
    let targets: Vec<SocketAddr> = demo.nodes().iter().map(|n| n.forward).collect();
    let file = targets_file(work.path(), &targets);

    let run = |file: &Path| {
        let out = std::process::Command::new(support::supervisor_bin())
            .args(["fleet", "--json", "--timeout", "1", "--targets"])
            .arg(file)
            .output()
            .unwrap();
        let r: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), r)
    };
    let (code, r) = run(&file);
    assert_eq!(code, Some(0), "the fresh topology is healthy: {r}");
    assert_eq!(r["counts"]["healthy"], 5, "{r}");
    assert_eq!(r["findings"], serde_json::json!([]), "{r}");

    // ams2-client-01's Nomad agent frozen; lon1-server-01's supervisor stopped.
    let (_, st) = demo
        .get("ams2-client-01", "/v1/status", "application/json")
        .unwrap();
    let st: Value = serde_json::from_str(&st).unwrap();
    let nomad_pid = st["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent"] == "nomad")
        .and_then(|a| a["pid"].as_i64())
        .expect("nomad pid");
    let nomad_pid = Pid::from_raw(i32::try_from(nomad_pid).unwrap());
    kill(nomad_pid, Signal::SIGSTOP).unwrap();
    let lon1 = demo
        .node("lon1-server-01")
        .unwrap()
        .pid()
        .expect("lon1-server-01 runs");
    kill(Pid::from_raw(i32::try_from(lon1).unwrap()), Signal::SIGTERM).unwrap();

    let end = Instant::now() + Duration::from_secs(180);
    let r = loop {
        let (code, r) = run(&file);
        let seen = |addr: SocketAddr| {
            r["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["target"]["port"] == addr.port())
                .map(|n| n["state"].as_str().unwrap_or("").to_string())
        };
        // lon1-client-01 loses the only Consul server of lon1 with it:
        // its discovery says so (degraded), which makes it unhealthy too.
        if seen(addr_of("ams2-client-01")).as_deref() == Some("unhealthy")
            && seen(addr_of("lon1-server-01")).as_deref() == Some("unreachable")
            && seen(addr_of("lon1-client-01")).as_deref() == Some("unhealthy")
            && r["findings"].to_string().contains("nomad servers alive")
        {
            assert_eq!(code, Some(1), "{r}");
            break r;
        }
        if Instant::now() > end {
            let _ = kill(nomad_pid, Signal::SIGCONT);
            panic!("the fleet did not show the unhealthy and the stopped node: {r}");
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let _ = kill(nomad_pid, Signal::SIGCONT);
    assert_eq!(r["counts"]["healthy"], 2, "{r}");
    let findings = r["findings"].to_string();
    assert!(
        findings.contains("lon1: no consul server among the nodes that answered"),
        "{findings}"
    );
    assert!(
        findings.contains("region eu: 2 of 3 nomad servers alive"),
        "{findings}"
    );
    let unhealthy = |node: &str| {
        r["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["state"] == "unhealthy" && n["status"]["node"] == node)
            .unwrap_or_else(|| panic!("{node} is not unhealthy: {r}"))
            .clone()
    };
    let frozen = unhealthy("ams2-client-01");
    assert!(
        frozen["problem"].as_str().unwrap().contains("nomad"),
        "{frozen}"
    );
    let orphan = unhealthy("lon1-client-01");
    assert!(
        orphan["problem"]
            .as_str()
            .unwrap()
            .contains("no healthy Consul server of lon1"),
        "{orphan}"
    );
    let stopped = demo.stop(Duration::from_secs(60));
    assert!(stopped.iter().all(|(_, s)| s.is_some()), "{stopped:?}");
}

// ----------------------------------------------------------------- mDNS ---

/// A supervisor announced over mDNS on one namespace node's `eth0` (the
/// discovery contract: `_hashi-sup._tcp.local.`, `v=1`, `dc`), found by
/// `supervisor fleet --mdns eth0` run on another node of the same LAN, and
/// polled at the announced address and port. Nothing leaves the test's own
/// namespaces.
#[test]
fn fleet_finds_supervisors_in_mdns_announcements_on_the_named_interface() {
    use hashi_testrig::netns::{NodeSpec, Topology};
    use nix::sched::{CloneFlags, setns};
    if !support::require_tools(&["ip"])
        || !support::available("network namespaces", hashi_testrig::netns::is_available())
    {
        return;
    }
    let spec = |name: &str, host: u8| NodeSpec {
        name: name.into(),
        datacenter: "ams2".into(),
        host,
        public_host: None,
    };
    let topo = Topology::build(&["ams2"], &[spec("mdns-a", 11), spec("mdns-b", 21)]).unwrap();
    let a = topo.node("mdns-a").unwrap().clone();
    let b = topo.node("mdns-b").unwrap().clone();
    let ns = std::fs::File::open(format!("/run/netns/{}", a.netns)).unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let ip = a.private_ip;
    let announcer = std::thread::spawn(move || {
        setns(&ns, CloneFlags::CLONE_NEWNET).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let addr = sim_at(
                &ip.to_string(),
                4680,
                answer(doc(SERVER, "mdns-a", "ams2", |_| {})),
            )
            .await;
            // The daemon's thread starts here, so it lives in this namespace.
            let daemon = mdns_sd::ServiceDaemon::new().unwrap();
            daemon.disable_interface(mdns_sd::IfKind::All).unwrap();
            daemon
                .enable_interface(mdns_sd::IfKind::Name("eth0".into()))
                .unwrap();
            let props = [
                ("v", "1"),
                ("node", "mdns-a"),
                ("region", "eu"),
                ("dc", "ams2"),
                ("roles", "consul-server,nomad-server"),
            ];
            let info = mdns_sd::ServiceInfo::new(
                "_hashi-sup._tcp.local.",
                "mdns-a",
                "mdns-a.local.",
                ip.to_string().as_str(),
                addr.port(),
                &props[..],
            )
            .unwrap();
            daemon.register(info).unwrap();
            ready_tx.send(addr).unwrap();
            let _ = tokio::task::spawn_blocking(move || stop_rx.recv_timeout(DEADLINE)).await;
            let _ = daemon.shutdown();
        });
    });
    let announced = ready_rx.recv_timeout(DEADLINE).unwrap();

    let end = Instant::now() + DEADLINE;
    let r = loop {
        let out = b
            .command(support::supervisor_bin().to_str().unwrap())
            .args(["fleet", "--mdns", "eth0", "--json"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.code() == Some(0) {
            break serde_json::from_str::<Value>(&stdout).unwrap();
        }
        assert!(
            Instant::now() < end,
            "no announcement found within {DEADLINE:?}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    assert_eq!(r["counts"]["healthy"], 1, "{r}");
    let n = node_of(&r, announced);
    assert_eq!(n["target"]["datacenter"], "ams2", "{n}");
    assert_eq!(n["target"]["origin"], "mdns eth0 mdns-a", "{n}");
    assert_eq!(n["status"]["node"], "mdns-a", "{n}");

    // An interface that does not exist is a usage error.
    let out = b
        .command(support::supervisor_bin().to_str().unwrap())
        .args(["fleet", "--mdns", "nosuch0"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = stop_tx.send(());
    announcer.join().unwrap();
    drop(topo);
}

// ------------------------------------------------------ watch and serve ---

/// `fleet serve` answers while its first poll still waits on a hanging node
/// (timeout 60 s, so that poll cannot end within the test's deadline).
#[tokio::test]
async fn fleet_serve_answers_while_a_poll_waits_on_a_hanging_node() {
    let hanging = sim(Behaviour::Hang).await;
    let dir = tempfile::tempdir().unwrap();
    let file = targets_file(dir.path(), &[hanging]);
    let listen = free_port();
    let mut child = tokio::process::Command::new(support::supervisor_bin())
        .args(["fleet", "serve", "--listen", &listen.to_string()])
        .args(["--targets", file.to_str().unwrap(), "--timeout", "60"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    let body = loop {
        assert!(Instant::now() < end, "fleet serve did not answer");
        if let Some((200, body)) = get(listen, "/v1/fleet").await {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(body, "{\"polling\":true}\n");
    let (code, page) = get(listen, "/").await.unwrap();
    assert_eq!(code, 200);
    assert!(page.contains("first poll running"), "{page}");
    // SIGTERM ends it at once, the hanging poll abandoned.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "no poll completed: nothing unhealthy seen"
    );
}

/// `--watch` polls again and again, one report per round, and on SIGINT
/// exits with the last round's code (1: a node is unreachable).
#[tokio::test]
async fn fleet_watch_repeats_and_exits_with_the_last_rounds_code_on_sigint() {
    use tokio::io::AsyncBufReadExt;
    let ok = sim(answer(doc(SERVER, "w-ok", "ams2", |_| {}))).await;
    let gone = closed_port().await;
    let dir = tempfile::tempdir().unwrap();
    let file = targets_file(dir.path(), &[ok, gone]);
    let mut child = tokio::process::Command::new(support::supervisor_bin())
        .args([
            "fleet",
            "--watch",
            "1",
            "--json",
            "--targets",
            file.to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut reports = 0;
    while reports < 2 {
        let line = tokio::time::timeout(DEADLINE, lines.next_line())
            .await
            .expect("a report within the deadline")
            .unwrap()
            .expect("stdout open");
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["counts"]["healthy"], 1, "{v}");
        assert_eq!(v["counts"]["unreachable"], 1, "{v}");
        reports += 1;
    }
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(1));
}

/// A keep-alive simulated node that counts the connections it accepts.
async fn counting_node(body: Vec<u8>) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    let mut answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 2048];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                    while let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        got.drain(..end + 4);
                        if s.write_all(&answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_polls_reuse_connections_when_asked_and_only_then() {
    use hashi_supervisor::catalog::fleet::{PollOptions, Poller};
    use std::sync::atomic::{AtomicUsize, Ordering};
    for (reuse, want) in [(true, 1), (false, 3)] {
        let (addr, accepted) = counting_node(doc(SERVER, "keep", "ams2", |_| {})).await;
        let poller = Arc::new(Poller::new(PollOptions {
            reuse_connections: reuse,
            ..PollOptions::default()
        }));
        let targets = Arc::new(vec![Target {
            host: addr.ip().to_string(),
            port: addr.port(),
            origin: "test".into(),
            datacenter: None,
        }]);
        for _ in 0..3 {
            let r = poller
                .poll_all(targets.clone(), Arc::new(AtomicUsize::new(0)))
                .await;
            assert_eq!(r[0].state, NodeState::Healthy, "{r:?}");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), want, "reuse {reuse}");
    }
}

//! Secure bootstrap end to end (issue 19): the real `supervisor` binary in
//! network-namespace nodes (`hashi_testrig::demo` with
//! [`Security::Secure`]), installing **stand-in** agents (test support, not
//! the real Consul or Nomad) from a signed mirror inside the test network.
//! `supervisor cluster init` runs on ams2-server-01, `supervisor cluster
//! token create` prints one join token, the other nodes start with it in
//! the file their example role names (`[security] join_token_file`).
//!
//! What the stand-ins check is what the real agents check (standin/README):
//! they refuse TLS files whose names do not fit their role, reject gossip
//! under another key and answer 403 without a token once ACLs are
//! bootstrapped; so a healthy node is a node whose agents and supervisor got
//! the right certificate, keys and tokens. Each test waits (polling with a
//! deadline) for exactly what it asserts. Needs root, `ip` and `curl`: a
//! missing one fails the test.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use hashi_testrig::demo::{
    Demo, DemoNodeSpec, DemoOptions, INIT_NODE, SecureOptions, Security, find_join_token,
    reference_demo_nodes,
};
use hashi_testrig::netns::NodeSpec;
use serde_json::Value;

use crate::support::{standin::standin_bin, supervisor_bin};

/// Debug builds of five supervisors fetching, verifying, joining and
/// starting on two shared cores: generous.
const READY_WITHIN: Duration = Duration::from_secs(420);
/// Time for a join token's record to reach the other CA holders (a sync
/// round is 10 s; a CA holder that failed early waits out a backoff).
const SYNC_WITHIN: Duration = Duration::from_secs(150);
/// Time for a change (a renewal, a refused join) to show.
const CHANGE_WITHIN: Duration = Duration::from_secs(120);
const STOP_WITHIN: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(250);

/// `tool` in `PATH`, executable.
fn find_tool(tool: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The test cannot run without these: it fails, never skips.
fn require_here() {
    for tool in ["ip", "curl"] {
        assert!(
            find_tool(tool).is_some(),
            "{tool} is needed by this test (Debian: iproute2, curl)"
        );
    }
    if let Err(why) = hashi_testrig::netns::is_available() {
        panic!("network namespaces are needed by this test: {why}");
    }
}

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/examples")
}

fn options(work: &Path, nodes: Vec<DemoNodeSpec>) -> DemoOptions {
    DemoOptions {
        supervisor: supervisor_bin(),
        standin: standin_bin(),
        examples_dir: examples(),
        work_dir: work.join("demo"),
        forward_base_port: 0,
        nodes,
        dns: Vec::new(),
        silent_nameservers: Vec::new(),
    }
}

/// The last lines of every supervised node's log.
fn logs(demo: &Demo) -> String {
    demo.nodes()
        .iter()
        .filter(|n| n.supervised)
        .map(|n| {
            let log = std::fs::read_to_string(&n.log_file).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            format!(
                "--- {}:\n{}",
                n.name,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn status(demo: &Demo, node: &str) -> Option<Value> {
    let (code, body) = demo.get(node, "/v1/status", "application/json").ok()?;
    if code != 200 {
        return None;
    }
    serde_json::from_str(&body).ok()
}

/// Polls `/v1/status` of `node` until `pred` holds; returns that status.
fn wait_status(
    demo: &Demo,
    node: &str,
    within: Duration,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    let mut last = Value::Null;
    while Instant::now() < deadline {
        if let Some(st) = status(demo, node) {
            if pred(&st) {
                return st;
            }
            last = st;
        }
        std::thread::sleep(POLL);
    }
    panic!(
        "{node}: {what} not seen within {within:?}; last status: {last}\n{}",
        logs(demo)
    );
}

fn agent<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["agents"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["agent"] == name))
        .unwrap_or(&Value::Null)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A node's `security/node.json` (root 0600, read as root).
fn node_json(demo: &Demo, node: &str) -> Value {
    let path = demo
        .node(node)
        .expect("node")
        .config_dir()
        .join("security/node.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is JSON: {e}", path.display()))
}

/// The names a node's certificate must carry (the design contract's
/// `security::names`): per role, `localhost` always.
fn expected_names(roles: &[&str], dc: &str) -> Vec<String> {
    let mut names: Vec<String> = roles
        .iter()
        .map(|r| match *r {
            "consul-server" => format!("server.{dc}.consul"),
            "consul-client" => format!("client.{dc}.consul"),
            "nomad-server" => "server.eu.nomad".to_string(),
            "nomad-client" => "client.eu.nomad".to_string(),
            other => panic!("no certificate name for role {other}"),
        })
        .collect();
    names.push("localhost".into());
    names.sort();
    names
}

/// Consul's HTTPS API port with the cluster's material.
const CONSUL_HTTPS: u16 = 8501;
/// Nomad's HTTPS API port in the demo.
const NOMAD_HTTPS: u16 = 4646;
/// Nomad's HTTP(S) API port.
const NOMAD_HTTP: u16 = 4646;

/// `GET https://127.0.0.1:<port><path>` on `node` (inside its namespace,
/// verified against the cluster CA, with the node's certificate as client
/// certificate, as Consul's `verify_incoming` wants), with `token` as
/// `X-Consul-Token`: `(status, body)`.
fn https_get(demo: &Demo, node: &str, port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    https_get_as(demo, node, port, path, token.map(|t| ("X-Consul-Token", t)))
}

/// [`https_get`] with the token in the header given (`X-Nomad-Token`).
fn https_get_as(
    demo: &Demo,
    node: &str,
    port: u16,
    path: &str,
    token: Option<(&str, &str)>,
) -> (u16, String) {
    let n = demo.node(node).expect("node");
    let sec = n.config_dir().join("security");
    let topo = demo.topology().node(node).expect("netns node");
    let mut cmd = topo.command("curl");
    cmd.args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
        .arg("--cacert")
        .arg(sec.join("ca.pem"))
        .arg("--cert")
        .arg(sec.join("node.pem"))
        .arg("--key")
        .arg(sec.join("node-key.pem"));
    if let Some((header, t)) = token {
        cmd.arg("-H").arg(format!("{header}: {t}"));
    }
    cmd.arg(format!("https://127.0.0.1:{port}{path}"));
    let out = cmd.output().expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let code = code.trim().parse().unwrap_or_else(|_| {
        panic!(
            "curl {path} on {node}: no status ({}): {text}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, body.to_string())
}

/// The peers the stand-in agents of `node` completed a verified TLS
/// handshake with, as they record them (`/_standin/tls-peers`, a stand-in
/// only endpoint: standin/README, "TLS"): `(product, peer node name)`.
fn verified_tls_peers(demo: &Demo, node: &str) -> Vec<(String, String)> {
    let st = status(demo, node).unwrap_or(Value::Null);
    let mut out = Vec::new();
    for (product, port) in [("consul", CONSUL_HTTPS), ("nomad", NOMAD_HTTP)] {
        if agent(&st, product).is_null() {
            continue;
        }
        let (code, body) = https_get(demo, node, port, "/_standin/tls-peers", None);
        assert_eq!(code, 200, "{product} tls peers on {node}: {body}");
        let peers: Value = serde_json::from_str(&body).expect("tls peers are JSON");
        for p in peers.as_array().cloned().unwrap_or_default() {
            if let Some(n) = p["Node"].as_str() {
                // Consul's WAN names are `<node>.<dc>`.
                let n = n.split('.').next().unwrap_or(n);
                out.push((product.to_string(), n.to_string()));
            }
        }
    }
    out
}

/// Starts `node` with `args` and waits for its supervisor to exit: its
/// status and what it logged in this attempt.
fn attempt(demo: &mut Demo, node: &str, args: &[&str]) -> (ExitStatus, String) {
    let log_file = demo.node(node).expect("node").log_file.clone();
    let before = std::fs::metadata(&log_file).map(|m| m.len()).unwrap_or(0);
    demo.start_node_with(node, args).expect("start the node");
    let deadline = Instant::now() + CHANGE_WITHIN;
    loop {
        if let Some((who, st)) = demo.exited() {
            assert_eq!(who, node, "another supervisor exited:\n{}", logs(demo));
            let text = std::fs::read(&log_file).unwrap_or_default();
            let start = usize::try_from(before).unwrap_or(0).min(text.len());
            return (st, String::from_utf8_lossy(&text[start..]).into_owned());
        }
        if Instant::now() > deadline {
            panic!(
                "{node} started with {args:?} still runs after {CHANGE_WITHIN:?}\n{}",
                logs(demo)
            );
        }
        std::thread::sleep(POLL);
    }
}

fn pin_of(token: &str) -> &str {
    token
        .split_once('@')
        .map(|(_, pin)| pin)
        .expect("a token holds @sha256:")
}

fn stop_all(demo: &mut Demo) {
    for (node, st) in demo.stop(STOP_WITHIN) {
        let st = st.unwrap_or_else(|| panic!("{node} did not stop within {STOP_WITHIN:?}"));
        assert!(
            st.success(),
            "{node} supervisor exited {st}\n{}",
            logs(demo)
        );
    }
}

#[test]
fn secure_reference_cluster_forms_from_cluster_init_and_one_token_and_survives_a_renewal() {
    require_here();
    let work = tempfile::tempdir().expect("temp dir");
    let mut demo = Demo::start_with(
        &options(work.path(), reference_demo_nodes()),
        &Security::Secure(SecureOptions::default()),
    )
    .expect("start the secure demo");
    if let Err(e) = demo.wait_ready(READY_WITHIN) {
        panic!("secure cluster not ready: {e}\n{}", logs(&demo));
    }

    let roles: [(&str, &[&str]); 5] = [
        ("ams2-server-01", &["consul-server", "nomad-server"]),
        ("ams2-server-03", &["nomad-server"]),
        ("ams2-client-01", &["nomad-client"]),
        ("lon1-server-01", &["consul-server", "nomad-server"]),
        ("lon1-client-01", &["nomad-client"]),
    ];
    let pin = pin_of(demo.join_token().expect("a join token")).to_string();
    // Every node: TLS, its certificate with exactly its roles' names,
    // signed by the one CA the token pins, and healthy.
    for (node, node_roles) in roles {
        let dc = &node[..4];
        let st = status(&demo, node).unwrap_or_else(|| panic!("{node} status"));
        assert_eq!(st["healthy"], true, "{node}: {st}");
        let sec = &st["security"];
        assert_eq!(sec["mode"], "tls", "{node}: {sec}");
        let file = node_json(&demo, node);
        assert_eq!(
            file["ca_sha256"],
            pin.as_str(),
            "{node} trusts the pinned CA"
        );
        let mut names = strings(&file["names"]);
        names.sort();
        assert_eq!(names, expected_names(node_roles, dc), "{node}");
        let ips = strings(&file["ips"]);
        assert!(ips.iter().any(|ip| ip == "127.0.0.1"), "{node}: {ips:?}");
        let private = demo.node(node).expect("node").private_ip.to_string();
        assert!(ips.contains(&private), "{node}: {ips:?}");
        // The status shows the expiry (polled: a node still missing a
        // token the cluster makes later renews meanwhile), never a secret.
        wait_status(
            &demo,
            node,
            CHANGE_WITHIN,
            "the expiry of node.json",
            |st| {
                st["security"]["not_after_unix"].as_u64()
                    == node_json(&demo, node)["not_after"].as_u64()
            },
        );
        let body = serde_json::to_string(&st).expect("json");
        for secret in [
            &file["consul_gossip_key"],
            &file["nomad_gossip_key"],
            &file["acl"]["consul_supervisor"],
            &file["acl"]["nomad_supervisor"],
        ] {
            // (A key the node's roles do not use is handed out empty.)
            if let Some(s) = secret.as_str().filter(|s| !s.is_empty()) {
                assert!(!body.contains(s), "{node}: a secret in /v1/status");
            }
        }
    }
    // Each node got only what its roles use: the Nomad gossip key on Nomad
    // servers, Consul's where Consul runs, the client supervisors' Consul
    // token on client-only nodes.
    let server_token = node_json(&demo, "ams2-server-01")["acl"]["consul_supervisor"].clone();
    for (node, nomad_key, consul_key, server) in [
        ("ams2-server-03", true, false, true),
        ("ams2-client-01", false, false, false),
        ("lon1-server-01", true, true, true),
        ("lon1-client-01", false, false, false),
    ] {
        let file = node_json(&demo, node);
        assert_eq!(file["nomad_gossip_key"] != "", nomad_key, "{node}");
        assert_eq!(file["consul_gossip_key"] != "", consul_key, "{node}");
        assert!(file["acl"]["consul_supervisor"].is_string(), "{node}");
        assert_eq!(
            file["acl"]["consul_supervisor"] == server_token,
            server,
            "{node}"
        );
    }
    // Only the init node and the servers that joined with a token allowing
    // servers hold the CA.
    for (node, holder) in [
        ("ams2-server-01", true),
        ("ams2-server-03", true),
        ("lon1-server-01", true),
        ("ams2-client-01", false),
        ("lon1-client-01", false),
    ] {
        let cluster = demo.node(node).expect("node").config_dir().join("cluster");
        assert_eq!(cluster.join("ca-key.pem").is_file(), holder, "{node}");
    }

    // The cluster formed as the plaintext one does (cluster.rs): one Consul
    // leader per datacenter joined over the WAN, three Nomad servers, the
    // clients on their datacenter's Consul.
    // ACLs are bootstrapped once the leaders exist and the Nomad token
    // reaches the other nodes by renewal: wait for each condition.
    for server in ["ams2-server-01", "lon1-server-01"] {
        let st = wait_status(
            &demo,
            server,
            CHANGE_WITHIN,
            "a Consul leader and 2 WAN members",
            |st| {
                let r = &agent(st, "consul")["consul"];
                !r["leader"].as_str().unwrap_or("").is_empty() && r["wan_members"] == 2
            },
        );
        let report = &agent(&st, "consul")["consul"];
        assert_eq!(report["wan_members"], 2, "{server}: {report}");
    }
    for server in ["ams2-server-01", "ams2-server-03", "lon1-server-01"] {
        let st = wait_status(
            &demo,
            server,
            CHANGE_WITHIN,
            "3 Nomad servers alive, read with a token",
            |st| {
                let n = &agent(st, "nomad")["nomad"];
                n["members_alive"] == 3 && n["health_server"]["ok"] == true
            },
        );
        let nomad = &agent(&st, "nomad")["nomad"];
        assert_eq!(nomad["members_alive"], 3, "{server}: {nomad}");
    }
    for client in ["ams2-client-01", "lon1-client-01"] {
        let st = wait_status(
            &demo,
            client,
            CHANGE_WITHIN,
            "a healthy Nomad client",
            |st| agent(st, "nomad")["nomad"]["health_client"]["ok"] == true,
        );
        let nomad = &agent(&st, "nomad")["nomad"];
        assert_eq!(nomad["health_client"]["ok"], true, "{client}: {nomad}");
    }
    // Client-only nodes hold the clients' Nomad token, derived one way from
    // the servers' (which reaches them by renewal): it reads autopilot
    // health through its own agent (operator read) and not the Raft
    // configuration (a management token's).
    let nomad_token = |node: &str| {
        node_json(&demo, node)["acl"]["nomad_supervisor"]
            .as_str()
            .map(str::to_string)
    };
    let deadline = Instant::now() + CHANGE_WITHIN;
    let server_nomad = loop {
        if let Some(t) = nomad_token("ams2-server-01") {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "no Nomad supervisor token\n{}",
            logs(&demo)
        );
        std::thread::sleep(POLL);
    };
    let derived = hashi_supervisor::security::acl::nomad_client_supervisor_secret(&server_nomad);
    for client in ["ams2-client-01", "lon1-client-01"] {
        let deadline = Instant::now() + CHANGE_WITHIN;
        let token = loop {
            if let Some(t) = nomad_token(client) {
                break t;
            }
            assert!(
                Instant::now() < deadline,
                "{client}: no Nomad token\n{}",
                logs(&demo)
            );
            std::thread::sleep(POLL);
        };
        assert_eq!(token, derived, "{client}");
        assert_ne!(token, server_nomad, "{client}");
        let with = Some(("X-Nomad-Token", token.as_str()));
        let (code, body) = https_get_as(
            &demo,
            client,
            NOMAD_HTTPS,
            "/v1/operator/autopilot/health",
            with,
        );
        assert!(matches!(code, 200 | 429), "{client}: {code} {body}");
        let (code, body) = https_get_as(
            &demo,
            client,
            NOMAD_HTTPS,
            "/v1/operator/raft/configuration",
            with,
        );
        assert_eq!(code, 403, "{client}: {body}");
    }

    // Every agent pair talks TLS: the stand-ins record each verified
    // handshake. Consul: the two servers over the WAN. Nomad: every server
    // with the two others, every client with a server.
    let has = |node: &str, product: &str, peer: &str| {
        verified_tls_peers(&demo, node)
            .iter()
            .any(|(p, n)| p == product && n == peer)
    };
    assert!(has("ams2-server-01", "consul", "lon1-server-01"));
    assert!(has("lon1-server-01", "consul", "ams2-server-01"));
    for (a, b) in [
        ("ams2-server-01", "ams2-server-03"),
        ("ams2-server-01", "lon1-server-01"),
        ("ams2-server-03", "lon1-server-01"),
    ] {
        assert!(
            has(a, "nomad", b) || has(b, "nomad", a),
            "nomad {a} <-> {b} over TLS: {:?} {:?}",
            verified_tls_peers(&demo, a),
            verified_tls_peers(&demo, b)
        );
    }
    for client in ["ams2-client-01", "lon1-client-01"] {
        let peers = verified_tls_peers(&demo, client);
        assert!(
            peers
                .iter()
                .any(|(p, n)| p == "nomad" && n.contains("server")),
            "{client} talks TLS to a Nomad server: {peers:?}"
        );
    }

    // ACLs are on: Consul answers 403 without a token; with the
    // supervisors' token its catalog holds every ams2 supervisor's
    // registration (made by calls that carried that token).
    let token = node_json(&demo, "ams2-server-01")["acl"]["consul_supervisor"]
        .as_str()
        .expect("the supervisor's Consul token")
        .to_string();
    let (code, body) = https_get(
        &demo,
        "ams2-server-01",
        CONSUL_HTTPS,
        "/v1/catalog/service/hashi-supervisor",
        None,
    );
    assert_eq!(code, 403, "no token, no answer: {body}");
    let deadline = Instant::now() + CHANGE_WITHIN;
    let registered = loop {
        let (code, body) = https_get(
            &demo,
            "ams2-server-01",
            CONSUL_HTTPS,
            "/v1/catalog/service/hashi-supervisor",
            Some(&token),
        );
        let ids: Vec<String> = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|s| s["ServiceID"].as_str().map(str::to_string))
            .collect();
        if code == 200 && ids.contains(&"hashi-supervisor-ams2-server-01".to_string()) {
            break ids;
        }
        assert!(
            Instant::now() < deadline,
            "registration not in the catalog: {code} {body}\n{}",
            logs(&demo)
        );
        std::thread::sleep(POLL);
    };
    assert!(
        registered
            .iter()
            .any(|id| id == "hashi-supervisor-ams2-client-01"),
        "{registered:?}"
    );

    // Renewal: lon1-client-01's node.json says its certificate expires in
    // an hour (as it would after 89 of its 90 days), and SIGHUP makes the
    // supervisor re-read it: fewer than renew_before_days (30) left, so it
    // renews through a CA holder (mutual TLS with the current certificate)
    // and reloads its agents, which stay in the cluster.
    let node_dir = demo.node("lon1-client-01").expect("node").config_dir();
    let json_path = node_dir.join("security/node.json");
    let cert_path = node_dir.join("security/node.pem");
    let old_cert = std::fs::read(&cert_path).expect("node.pem");
    let mut file = node_json(&demo, "lon1-client-01");
    let before = file["not_after"].as_u64().expect("not_after");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    // Issued 89 days ago (the renewal starts once less than a third of
    // the whole lifetime is left, too).
    file["not_before"] = (now + 3600 - 90 * 86_400).into();
    file["not_after"] = (now + 3600).into();
    std::fs::write(&json_path, serde_json::to_vec(&file).expect("json")).expect("node.json");
    let pid = demo
        .node("lon1-client-01")
        .and_then(|n| n.pid())
        .expect("pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid")),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP");
    let st = wait_status(
        &demo,
        "lon1-client-01",
        CHANGE_WITHIN,
        "a renewed certificate",
        |st| {
            st["security"]["not_after_unix"]
                .as_u64()
                .is_some_and(|t| t > before)
        },
    );
    assert_eq!(st["security"]["mode"], "tls");
    let after = node_json(&demo, "lon1-client-01")["not_after"]
        .as_u64()
        .expect("not_after");
    assert!(after > before, "not_after moved: {before} -> {after}");
    assert_ne!(
        std::fs::read(&cert_path).expect("node.pem"),
        old_cert,
        "a new certificate"
    );
    for node in ["lon1-client-01", "lon1-server-01", "ams2-server-01"] {
        wait_status(
            &demo,
            node,
            CHANGE_WITHIN,
            "healthy after the renewal",
            |st| st["healthy"] == true,
        );
    }
    let st = status(&demo, "lon1-client-01").expect("status");
    assert_eq!(
        agent(&st, "nomad")["nomad"]["health_client"]["ok"],
        true,
        "{st}"
    );
    let st = status(&demo, "lon1-server-01").expect("status");
    assert_eq!(agent(&st, "nomad")["nomad"]["members_alive"], 3, "{st}");

    // Join tokens made or revoked on the init node reach the other CA
    // holders (ams2-server-03 on the LAN, lon1-server-01 over the WAN) by
    // their token sync.
    let out = demo
        .run_supervisor(
            INIT_NODE,
            &[
                "cluster",
                "token",
                "create",
                "--ttl",
                "30m",
                "--clients-only",
            ],
        )
        .expect("token create");
    let made = find_join_token(&out).expect("a token");
    let id = made
        .split_once('.')
        .map(|(i, _)| i.to_string())
        .expect("id");
    let record = |node: &str| -> Option<Value> {
        let path = demo
            .node(node)
            .expect("node")
            .config_dir()
            .join("cluster/tokens.json");
        let file: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
        file["tokens"]
            .as_array()?
            .iter()
            .find(|r| r["id"] == id.as_str())
            .cloned()
    };
    let wait_record = |node: &str, what: &str, pred: &dyn Fn(&Value) -> bool| {
        let deadline = Instant::now() + SYNC_WITHIN;
        while Instant::now() < deadline {
            if record(node).is_some_and(|r| pred(&r)) {
                return;
            }
            std::thread::sleep(POLL);
        }
        panic!(
            "{node}: {what} not seen within {SYNC_WITHIN:?}\n{}",
            logs(&demo)
        );
    };
    for node in ["ams2-server-03", "lon1-server-01"] {
        wait_record(node, "the new join token", &|_| true);
    }
    demo.run_supervisor(INIT_NODE, &["cluster", "token", "revoke", &id])
        .expect("token revoke");
    for node in ["ams2-server-03", "lon1-server-01"] {
        wait_record(node, "the revocation", &|r| r["revoked"].is_u64());
    }
    stop_all(&mut demo);
}

fn spec(name: &str, dc: &str, host: u8) -> NodeSpec {
    NodeSpec {
        name: name.into(),
        datacenter: dc.into(),
        host,
        public_host: None,
    }
}

fn example(name: &str) -> toml::Table {
    let path = examples().join(format!("{name}.toml"));
    std::fs::read_to_string(&path)
        .expect("example")
        .parse()
        .expect("example is TOML")
}

/// `role` with `[security] join = [addr]` and mDNS off, so the node looks
/// for a join endpoint there only.
fn joining_at(mut role: toml::Table, addr: Ipv4Addr) -> toml::Table {
    let mut sec = toml::Table::new();
    sec.insert(
        "join".into(),
        toml::Value::Array(vec![addr.to_string().into()]),
    );
    role.insert("security".into(), sec.into());
    // mDNS off, so the only way in is the named endpoint; the Consul
    // server the client then uses is named too.
    let mut disc = toml::Table::new();
    disc.insert("mdns".into(), false.into());
    disc.insert("consul_address".into(), format!("{addr}:8501").into());
    role.insert("discovery".into(), disc.into());
    role
}

#[test]
fn wrong_token_other_cas_pin_man_in_the_middle_and_revoked_token_are_refused() {
    require_here();
    let work = tempfile::tempdir().expect("temp dir");
    // ams2-server-01: the cluster's CA holder. ams2-server-02: a CA holder of
    // ANOTHER cluster (its own `cluster init`), silent on mDNS, serving
    // joins at 10.0.1.12:4681. ams2-client-01 looks for the join endpoint at
    // ams2-server-01 only; ams2-client-02 at ams2-server-02 only (where a
    // man in the middle would answer). Both start with the tokens the test
    // hands them.
    let mut other = example(INIT_NODE);
    other.insert("node_name".into(), "ams2-server-02".into());
    other.insert(
        "roles".into(),
        toml::Value::Array(vec!["consul-server".into()]),
    );
    other.remove("nomad");
    if let Some(toml::Value::Table(addr)) = other.get_mut("addresses") {
        addr.insert("private".into(), "10.0.1.12".into());
        addr.remove("public");
    }
    let mut disc = toml::Table::new();
    disc.insert("mdns".into(), false.into());
    other.insert("discovery".into(), disc.into());
    let mut client2 = example("ams2-client-01");
    client2.insert("node_name".into(), "ams2-client-02".into());
    if let Some(toml::Value::Table(addr)) = client2.get_mut("addresses") {
        addr.insert("private".into(), "10.0.1.22".into());
    }
    let nodes = vec![
        DemoNodeSpec::example(NodeSpec {
            public_host: Some(11),
            ..spec(INIT_NODE, "ams2", 11)
        }),
        DemoNodeSpec::with_role(spec("ams2-server-02", "ams2", 12), other).deferred(),
        DemoNodeSpec::with_role(
            spec("ams2-client-01", "ams2", 21),
            joining_at(example("ams2-client-01"), Ipv4Addr::new(10, 0, 1, 11)),
        )
        .deferred(),
        DemoNodeSpec::with_role(
            spec("ams2-client-02", "ams2", 22),
            joining_at(client2, Ipv4Addr::new(10, 0, 1, 12)),
        )
        .deferred(),
    ];
    let secure = SecureOptions {
        no_token: vec![
            "ams2-server-02".into(),
            "ams2-client-01".into(),
            "ams2-client-02".into(),
        ],
        ..SecureOptions::default()
    };
    let mut demo = Demo::start_with(&options(work.path(), nodes), &Security::Secure(secure))
        .expect("start the secure demo");
    let token = demo.join_token().expect("join token").to_string();
    let pin = pin_of(&token).to_string();
    let (id, secret) = token
        .split_once('@')
        .and_then(|(s, _)| s.split_once('.'))
        .map(|(i, s)| (i.to_string(), s.to_string()))
        .expect("id.secret");

    // The other cluster: its own CA, so its own pin (no ACLs: this node
    // runs no Nomad server, and `cluster init` with ACLs refuses that).
    let out = demo
        .run_supervisor("ams2-server-02", &["cluster", "init", "--no-acl"])
        .expect("cluster init of the other cluster");
    let other_pin = pin_of(&find_join_token(&out).expect("the other cluster's token")).to_string();
    assert_ne!(other_pin, pin, "two inits, two CAs");
    demo.start_node("ams2-server-02")
        .expect("start the other CA holder");
    demo.wait_join_endpoint("ams2-server-02", CHANGE_WITHIN)
        .expect("the other cluster's join endpoint");

    // A wrong secret: 401 from the real endpoint, exit 77, the secret in no log line.
    let wrong = format!("{id}.{}@{pin}", "z".repeat(16));
    let (st, log) = attempt(&mut demo, "ams2-client-01", &["--join-token", &wrong]);
    assert_eq!(st.code(), Some(77), "wrong secret: {log}");
    assert!(log.contains("401") || log.contains("token"), "{log}");
    assert!(
        !log.contains(&"z".repeat(16)),
        "the secret is logged: {log}"
    );
    assert!(!log.contains(&secret), "the real secret is logged: {log}");

    // The right secret pinned to another CA: the cluster's endpoint is not
    // the one the token names, so nothing is sent.
    let other_ca_token = format!("{id}.{secret}@{other_pin}");
    let (st, log) = attempt(
        &mut demo,
        "ams2-client-01",
        &["--join-token", &other_ca_token],
    );
    assert_eq!(st.code(), Some(77), "another CA's pin: {log}");
    assert!(
        log.contains(&format!(
            "is not this cluster's: it presents CA {pin}, the token pins {other_pin}"
        )),
        "{log}"
    );

    // A man in the middle: a CA holder of another cluster where the joiner
    // looks, with the cluster's real token.
    let (st, log) = attempt(&mut demo, "ams2-client-02", &["--join-token", &token]);
    assert_eq!(st.code(), Some(77), "man in the middle: {log}");
    assert!(
        log.contains(&format!(
            "the join endpoint at 10.0.1.12:4681 is not this cluster's: it presents CA {other_pin}, the token pins {pin}"
        )),
        "{log}"
    );
    assert!(!log.contains(&secret), "the secret is logged: {log}");

    // A revoked token: 403.
    let out = demo
        .run_supervisor(
            INIT_NODE,
            &[
                "cluster",
                "token",
                "create",
                "--ttl",
                "30m",
                "--clients-only",
            ],
        )
        .expect("token create");
    let revoked = find_join_token(&out).expect("a second token");
    let revoked_id = revoked.split_once('.').map(|(i, _)| i).expect("id");
    demo.run_supervisor(INIT_NODE, &["cluster", "token", "revoke", revoked_id])
        .expect("token revoke");
    let list = demo
        .run_supervisor(INIT_NODE, &["cluster", "token", "list", "--json"])
        .expect("token list");
    assert!(!list.contains(&secret), "token list shows a secret: {list}");
    let (st, log) = attempt(&mut demo, "ams2-client-01", &["--join-token", &revoked]);
    assert_eq!(st.code(), Some(77), "revoked token: {log}");
    assert!(log.contains("403") || log.contains("revoked"), "{log}");

    // And the same node with the cluster's valid token joins: the refusals
    // above were the tokens', not the node's.
    demo.start_node_with("ams2-client-01", &["--join-token", &token])
        .expect("start the client");
    let st = wait_status(&demo, "ams2-client-01", READY_WITHIN, "joined", |st| {
        st["security"]["mode"] == "tls"
    });
    let file = node_json(&demo, "ams2-client-01");
    assert_eq!(file["ca_sha256"], pin.as_str());
    let mut names = strings(&file["names"]);
    names.sort();
    assert_eq!(names, expected_names(&["nomad-client"], "ams2"), "{st}");
    stop_all(&mut demo);
}

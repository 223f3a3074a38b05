//! The five-node reference scenario end to end: the offline demo
//! (`hashi_testrig::demo`) run by the real `supervisor` binary in network
//! namespaces, each node with its unchanged `config/examples/<node>.toml`
//! role (only `[release]` and `[paths]` differ), installing stand-in agents
//! from a signed mirror served over HTTP inside the test network. The roles
//! carry no peer address but lon1-server-01's WAN seed: the rest is found
//! by discovery (mDNS inside each datacenter's namespaces, never on this
//! machine's own interfaces). Asserts who sees whom through each node's
//! health endpoint, what discovery found and where from, a partition
//! between the datacenters and its healing, then a graceful stop that
//! leaves no process behind. Needs root (CI runs as root). More discovery
//! scenarios are in `discovery.rs`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use hashi_testrig::demo::{Demo, DemoOptions, reference_demo_nodes};
use serde_json::Value;

use crate::support::{standin::standin_bin, supervisor_bin};

/// Debug builds of five supervisors fetching, verifying and starting on two
/// cores: generous.
const READY_WITHIN: Duration = Duration::from_secs(300);
const STOP_WITHIN: Duration = Duration::from_secs(60);
/// Time for a partition (or its end) to reach the health answers: gossip
/// failure detection plus one health check interval, with room.
const PARTITION_WITHIN: Duration = Duration::from_secs(90);

/// Polls a node's `/ready` until `pred(code, body)`; returns the body.
fn wait_for(demo: &Demo, node: &str, within: Duration, pred: impl Fn(u16, &str) -> bool) -> String {
    let deadline = std::time::Instant::now() + within;
    let mut last = String::new();
    while std::time::Instant::now() < deadline {
        if let Ok((code, body)) = demo.get(node, "/ready", "text/plain") {
            if pred(code, &body) {
                return body;
            }
            last = format!("{code} {body}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("{node}: condition not met within {within:?}; last answer: {last}");
}

fn status(demo: &Demo, node: &str) -> Value {
    let (code, body) = demo
        .get(node, "/v1/status", "application/json")
        .unwrap_or_else(|e| panic!("status of {node}: {e}"));
    assert_eq!(code, 200, "{node} /v1/status: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{node} status is JSON: {e}: {body}"))
}

/// Polls `/v1/status` of `node` until `pred` holds; returns that status.
fn wait_status(
    demo: &Demo,
    node: &str,
    within: Duration,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + within;
    let mut last = Value::Null;
    while std::time::Instant::now() < deadline {
        if let Ok((200, body)) = demo.get(node, "/v1/status", "application/json")
            && let Ok(st) = serde_json::from_str::<Value>(&body)
        {
            if pred(&st) {
                return st;
            }
            last = st;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("{node}: {what} not seen within {within:?}; last status: {last}");
}

/// The discovery warnings of a status that are about the WAN.
fn wan_warnings(st: &Value) -> Vec<String> {
    st["discovery"]["warnings"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .filter(|w| w.starts_with("WAN"))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn agent<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["agents"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["agent"] == name))
        .unwrap_or_else(|| panic!("no {name} in {status}"))
}

/// Processes left in a namespace.
fn pids_in(netns: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "pids", netns])
        .output()
        .expect("ip netns pids");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[test]
fn reference_cluster_forms_from_the_example_roles_and_stops_cleanly() {
    if !crate::support::require_tools(&["ip"])
        || !crate::support::available("network namespaces", hashi_testrig::netns::is_available())
    {
        return;
    }
    let work = tempfile::tempdir().expect("temp dir");
    let opts = DemoOptions {
        supervisor: supervisor_bin(),
        standin: standin_bin(),
        examples_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/examples"),
        work_dir: work.path().join("demo"),
        forward_base_port: 0,
        nodes: reference_demo_nodes(),
        dns: Vec::new(),
        silent_nameservers: Vec::new(),
    };
    let mut demo = Demo::start(&opts).expect("start the demo");
    if let Err(e) = demo.wait_ready(READY_WITHIN) {
        let logs: Vec<String> = demo
            .nodes()
            .iter()
            .map(|n| {
                let log = std::fs::read_to_string(&n.log_file).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                format!(
                    "--- {}:\n{}",
                    n.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect();
        panic!("cluster not ready: {e}\n{}", logs.join("\n"));
    }

    // Every node installed the versions its example asks for, from the mirror.
    for n in demo.nodes() {
        let st = status(&demo, &n.name);
        assert_eq!(st["node"], n.name.as_str());
        assert_eq!(st["region"], "eu");
        assert_eq!(st["datacenter"], n.datacenter.as_str());
        assert_eq!(st["healthy"], true, "{}: {st}", n.name);
        assert_eq!(agent(&st, "nomad")["version"], "1.10.4", "{}", n.name);
    }

    // Consul: one server per datacenter, each its own leader, joined over
    // the WAN (the public addresses of config/examples).
    for server in ["ams2-server-01", "lon1-server-01"] {
        let st = status(&demo, server);
        let consul = agent(&st, "consul");
        assert_eq!(consul["version"], "1.21.4");
        let report = &consul["consul"];
        let leader = report["leader"].as_str().unwrap_or("");
        assert!(!leader.is_empty(), "{server} consul has a leader: {report}");
        assert_eq!(report["wan_members"], 2, "{server} sees both DCs: {report}");
    }
    let ams2_leader = status(&demo, "ams2-server-01");
    let lon1_leader = status(&demo, "lon1-server-01");
    assert_ne!(
        agent(&ams2_leader, "consul")["consul"]["leader"],
        agent(&lon1_leader, "consul")["consul"]["leader"],
        "each datacenter has its own Consul leader"
    );

    // Nomad: one three-server cluster across both datacenters, found through
    // Consul (ams2-server-03 uses ams2's Consul over the LAN).
    for server in ["ams2-server-01", "ams2-server-03", "lon1-server-01"] {
        let st = status(&demo, server);
        let nomad = &agent(&st, "nomad")["nomad"];
        assert_eq!(nomad["members_alive"], 3, "{server}: {nomad}");
        assert_eq!(nomad["health_server"]["ok"], true, "{server}: {nomad}");
    }
    // Clients found the servers through their datacenter's Consul server,
    // whose address mDNS gave them (the example roles name none).
    for (client, dc_server, consul) in [
        ("ams2-client-01", "ams2-server-01", "10.0.1.11:8500"),
        ("lon1-client-01", "lon1-server-01", "10.0.2.11:8500"),
    ] {
        let st = status(&demo, client);
        let disc = &st["discovery"];
        assert_eq!(
            disc["applied"]["consul_http"], consul,
            "{client} uses its datacenter's Consul: {disc}"
        );
        let peers = disc["peers"].as_array().cloned().unwrap_or_default();
        assert!(
            peers
                .iter()
                .any(|p| p["node"] == dc_server && p["source"] == "mdns"),
            "{client} found {dc_server} over mDNS: {disc}"
        );
        assert!(
            peers
                .iter()
                .all(|p| p["datacenter"] != "lon1" || client.starts_with("lon1"))
                && peers
                    .iter()
                    .all(|p| p["datacenter"] != "ams2" || client.starts_with("ams2")),
            "mDNS stays inside a datacenter: {disc}"
        );
        let nomad = &agent(&st, "nomad")["nomad"];
        assert_eq!(nomad["health_client"]["ok"], true, "{client}: {nomad}");
        assert!(
            st["agents"]
                .as_array()
                .is_some_and(|a| a.iter().all(|x| x["agent"] != "consul")),
            "{client} runs no Consul"
        );
    }

    // Cut the WAN link: the two ams2 Nomad servers keep a majority (their
    // nodes stay ready); lon1-server-01 is alone and its health says why.
    // Healed, every node is ready again.
    demo.topology()
        .cut("ams2", "lon1")
        .expect("cut the WAN link");
    let why = wait_for(&demo, "lon1-server-01", PARTITION_WITHIN, |code, body| {
        code == 503 && body.contains("nomad")
    });
    assert!(
        why.contains("leader"),
        "lon1-server-01 says it lost the Nomad leader: {why}"
    );
    for node in ["ams2-server-01", "ams2-server-03"] {
        let (code, body) = demo.get(node, "/ready", "text/plain").expect("ready");
        assert_eq!(code, 200, "{node} keeps the majority: {body}");
    }
    // Both Consul servers' status warns that the other datacenter's server
    // failed over the WAN; ams2's stays ready all the same.
    for (server, other) in [
        ("ams2-server-01", "lon1-server-01"),
        ("lon1-server-01", "ams2-server-01"),
    ] {
        wait_status(&demo, server, PARTITION_WITHIN, "a WAN warning", |st| {
            wan_warnings(st).iter().any(|w| w.contains(other))
        });
    }
    let (code, body) = demo
        .get("ams2-server-01", "/ready", "text/plain")
        .expect("ready");
    assert_eq!(code, 200, "a WAN warning does not fail /ready: {body}");
    demo.topology()
        .heal("ams2", "lon1")
        .expect("heal the WAN link");
    if let Err(e) = demo.wait_ready(PARTITION_WITHIN) {
        panic!("not ready again after the heal: {e}");
    }
    // Healed with no hand: the WAN warnings clear.
    for server in ["ams2-server-01", "lon1-server-01"] {
        let st = wait_status(
            &demo,
            server,
            PARTITION_WITHIN,
            "the WAN warning clears",
            |st| wan_warnings(st).is_empty(),
        );
        assert_eq!(agent(&st, "consul")["consul"]["wan_members"], 2, "{st}");
    }

    // Graceful stop: every supervisor exits 0 and nothing is left running
    // in any node's namespace.
    let namespaces: Vec<(String, String)> = demo
        .nodes()
        .iter()
        .map(|n| (n.name.clone(), n.netns.clone()))
        .collect();
    for (node, st) in demo.stop(STOP_WITHIN) {
        let st = st.unwrap_or_else(|| panic!("{node} did not stop within {STOP_WITHIN:?}"));
        assert!(st.success(), "{node} supervisor exited {st}");
    }
    for (node, ns) in &namespaces {
        assert_eq!(
            pids_in(ns),
            Vec::<String>::new(),
            "processes left on {node}"
        );
    }
}

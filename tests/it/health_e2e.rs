//! Integration tests: the health endpoint end to end. The real `supervisor
//! run` binary installs stand-in agents (the test-only `hashi-standin`,
//! never HashiCorp's agents) from a signed `file://` mirror trusting only a
//! test key, renders their configs, supervises them, and the tests poll its
//! endpoint over real HTTP on loopback: a healthy node, a crashed agent, a
//! hung agent, Consul without a leader, and the `hashi-supervisor` service
//! in a stand-in Consul's catalog.
//!
//! Every port comes from the role file (`[consul.extra.ports]`,
//! `[nomad.extra.ports]`, `health.listen`), so these tests run side by side.
//! Faults reach the stand-ins through the knob file `standin.env` in their
//! data dir (`standin/README.md`): the supervisor starts agents with a clean
//! environment.

// Test helpers outside #[test] functions may unwrap too.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use hashi_supervisor::health::StatusDoc;

use crate::support::node::{
    CONSUL_VERSION, DEADLINE, NOMAD_VERSION, Ports, RoleFile, Supervisor, node_root,
};
use crate::support::standin::{HttpReply, StandIn, http, wait_for};
use crate::support::supervisor_bin;
/// Gossip keys of the healthy node: they must appear in no answer and no
/// log line.
const CONSUL_GOSSIP_KEY: &str = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=";
const NOMAD_GOSSIP_KEY: &str = "Zm9vYmFyYmF6cXV4cXV1eHF1dXhmb29iYXJiYXoxMjM=";

/// What a test node looks like.
struct NodeSpec {
    name: &'static str,
    datacenter: &'static str,
    roles: &'static [&'static str],
    consul_bootstrap_expect: u32,
    nomad_bootstrap_expect: u32,
    /// `discovery.consul_address` (a node without a local Consul).
    consul_address: Option<String>,
    /// `[nomad.restart]` body.
    nomad_restart: &'static str,
    /// Knob files (`standin.env`) per agent.
    consul_knobs: String,
    nomad_knobs: String,
    /// Give both agents gossip key files.
    gossip_keys: bool,
    /// Nomad with `[nomad.tls]` and `http = true`: its API is HTTPS only,
    /// with a certificate for `server.eu.nomad` from a test CA.
    nomad_tls: bool,
}

impl NodeSpec {
    /// ams2-server-01 alone: Consul and Nomad servers, each a single-server
    /// cluster (bootstrap_expect 1) so that it elects itself.
    fn ams2_server_01() -> Self {
        NodeSpec {
            name: "ams2-server-01",
            datacenter: "ams2",
            roles: &["consul-server", "nomad-server"],
            consul_bootstrap_expect: 1,
            nomad_bootstrap_expect: 1,
            consul_address: None,
            nomad_restart: "",
            consul_knobs: String::new(),
            nomad_knobs: String::new(),
            gossip_keys: false,
            nomad_tls: false,
        }
    }
}

/// A running `supervisor run` of one node.
struct Node {
    sup: Supervisor,
    ports: Ports,
    name: &'static str,
}

impl Node {
    fn start(spec: NodeSpec) -> Node {
        let root = node_root();
        let ports = Ports::free();
        let state = root.path().join("state");
        for (agent, knobs) in [("consul", &spec.consul_knobs), ("nomad", &spec.nomad_knobs)] {
            if knobs.is_empty() {
                continue;
            }
            let data = state.join("data").join(agent);
            std::fs::create_dir_all(&data).unwrap();
            let f = data.join("standin.env");
            std::fs::write(&f, knobs).unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        // The test's dirs are private to root; the agents run as root.
        let mut role = RoleFile::new(spec.name, spec.datacenter, spec.roles, ports)
            .bootstrap_expect(spec.consul_bootstrap_expect, spec.nomad_bootstrap_expect)
            .consul_lines("user = \"root\"")
            .nomad_lines("stop_timeout_secs = 10\nuser = \"root\"")
            .tables(&format!("[nomad.restart]\n{}", spec.nomad_restart));
        if spec.gossip_keys {
            for (agent, key) in [("consul", CONSUL_GOSSIP_KEY), ("nomad", NOMAD_GOSSIP_KEY)] {
                let f = root.path().join(format!("{agent}-gossip.key"));
                std::fs::write(&f, format!("{key}\n")).unwrap();
                std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
                let line = format!("encrypt_key_file = \"{}\"", f.display());
                role = match agent {
                    "consul" => role.consul_lines(&line),
                    _ => role.nomad_lines(&line),
                };
            }
        }
        if spec.nomad_tls {
            role = role.tables(&test_pki(root.path(), "server.eu.nomad"));
        }
        if let Some(a) = &spec.consul_address {
            role = role.tables(&format!("[discovery]\nconsul_address = \"{a}\"\n"));
        }
        let role = role.render(root.path());
        // What the memory trim did (one debug line per trim).
        let env = [(
            "HASHI_SUPERVISOR_LOG",
            "info,hashi_supervisor::supervise::trim=debug",
        )];
        Node {
            sup: Supervisor::start(root, &role, &env),
            ports,
            name: spec.name,
        }
    }

    fn health(&self) -> String {
        format!("127.0.0.1:{}", self.ports.health)
    }

    fn get(&self, path: &str) -> Option<HttpReply> {
        http(&self.health(), "GET", path, "").ok()
    }

    /// The supervisor's log so far.
    fn log(&self) -> String {
        self.sup.log()
    }

    /// Polls `path` until `pred` holds; panics with the last answer and the
    /// supervisor's log after the deadline.
    fn wait(&mut self, path: &str, pred: impl Fn(&HttpReply) -> bool) -> HttpReply {
        let mut last = None;
        let got = wait_for(DEADLINE, || {
            self.sup.assert_running(path);
            let r = self.get(path)?;
            let ok = pred(&r);
            last = Some(r.clone());
            ok.then_some(r)
        });
        got.unwrap_or_else(|| {
            panic!(
                "{}: condition on {path} not met; last answer: {last:?}\nlog:\n{}",
                self.name,
                self.log()
            )
        })
    }

    fn status(&self) -> StatusDoc {
        let r = self.get("/v1/status").expect("status answers");
        serde_json::from_str(&r.body).unwrap()
    }

    /// SIGTERM, then wait for the supervisor's exit status.
    fn stop(&mut self) -> std::process::ExitStatus {
        self.sup.stop()
    }
}

fn agent<'a>(doc: &'a StatusDoc, name: &str) -> &'a hashi_supervisor::health::handlers::AgentDoc {
    doc.agents
        .iter()
        .find(|a| a.agent == name)
        .unwrap_or_else(|| panic!("no {name} in {doc:?}"))
}

fn status_cmd(node: &Node, extra: &[&str]) -> std::process::Output {
    Command::new(supervisor_bin())
        .arg("--config")
        .arg(&node.sup.role_file)
        .arg("status")
        .args(extra)
        .output()
        .unwrap()
}

/// Writes a test CA and a certificate for `name` (plus `localhost` and
/// 127.0.0.1, as `nomad tls cert create` makes them) under `dir`; returns
/// the `[nomad.tls]` table naming them, with `http = true`.
fn test_pki(dir: &std::path::Path, name: &str) -> String {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![name.to_string(), "localhost".into()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let cert = params
        .signed_by(&key, &Issuer::from_params(&ca_params, &ca_key))
        .unwrap();
    let mut table = String::from("[nomad.tls]\nhttp = true\n");
    for (file, pem) in [
        ("ca_file", ca.pem()),
        ("cert_file", cert.pem()),
        ("key_file", key.serialize_pem()),
    ] {
        let path = dir.join(format!("nomad-{file}.pem"));
        std::fs::write(&path, pem).unwrap();
        // The stand-in Nomad runs as `nomad` under a root test run.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        table.push_str(&format!("{file} = \"{}\"\n", path.display()));
    }
    table
}

// ----------------------------------------------------------------- tests ---

#[test]
fn healthy_node_is_ready_reports_its_agents_and_is_listed_in_consul() {
    let mut n = Node::start(NodeSpec {
        gossip_keys: true,
        ..NodeSpec::ams2_server_01()
    });
    let ready = n.wait("/ready", |r| r.status == 200);
    assert_eq!(ready.body, "ok\n");
    assert_eq!(n.get("/live").unwrap().status, 200);
    // Wait until the checker has seen both agents' own reports.
    n.wait("/v1/status", |r| {
        let d: StatusDoc = serde_json::from_str(&r.body).unwrap();
        d.healthy
            && agent(&d, "consul").consul.is_some()
            && agent(&d, "nomad")
                .nomad
                .as_ref()
                .is_some_and(|x| x.leader.is_some())
    });
    // Start-up is over: the daemon dropped the pages of its binary that
    // start-up touched (text and read-only data: two mappings).
    let log = n.log();
    let trim = log
        .lines()
        .find(|l| l.contains("released start-up pages"))
        .unwrap_or_else(|| panic!("no trim after all agents were ready; log:\n{log}"));
    assert!(trim.contains("mappings=2"), "{trim}");
    assert!(!trim.contains("resident_kib=0"), "{trim}");
    assert!(!log.contains('\x1b'), "colour codes in a log file");
    let doc = n.status();
    assert_eq!(
        (
            doc.node.as_str(),
            doc.region.as_str(),
            doc.datacenter.as_str()
        ),
        ("ams2-server-01", "eu", "ams2")
    );
    assert_eq!(doc.roles, ["consul-server", "nomad-server"]);
    assert!(!doc.config_hash.is_empty());
    let c = agent(&doc, "consul");
    assert_eq!(c.state, "running");
    assert!(c.pid.is_some() && c.ready);
    assert_eq!(c.version.as_deref(), Some(CONSUL_VERSION));
    assert_eq!(c.restarts, 0);
    let cr = c.consul.as_ref().unwrap();
    // What the stand-in Consul itself reports: it leads its one-server
    // cluster, at its server RPC port.
    assert_eq!(
        cr.leader.as_deref(),
        Some(format!("127.0.0.1:{}", n.ports.consul_server).as_str())
    );
    assert_eq!((cr.lan_members, cr.wan_members), (Some(1), Some(1)));
    assert_eq!(
        (cr.failure_tolerance, cr.autopilot_healthy),
        (Some(0), Some(true))
    );
    assert!(cr.errors.is_empty(), "{cr:?}");
    assert_eq!(cr.version.as_deref(), Some(CONSUL_VERSION));
    let nm = agent(&doc, "nomad");
    assert_eq!(nm.state, "running");
    assert_eq!(nm.version.as_deref(), Some(NOMAD_VERSION));
    let nr = nm.nomad.as_ref().unwrap();
    assert_eq!(
        nr.leader.as_deref(),
        Some(format!("127.0.0.1:{}", n.ports.nomad_rpc).as_str())
    );
    assert!(nr.health_server.as_ref().unwrap().ok);
    assert_eq!(nr.version.as_deref(), Some(NOMAD_VERSION));
    assert_eq!(nr.members, Some(1));
    assert!(nr.errors.is_empty(), "{nr:?}");

    // ?verbose lists the passing checks with what the agents answered.
    let verbose = n.get("/ready?verbose").unwrap().body;
    for line in [
        format!("consul.api: leader 127.0.0.1:{}", n.ports.consul_server),
        "nomad.api: agent health ok".to_string(),
        "consul.process: running, pid".to_string(),
    ] {
        assert!(verbose.contains(&line), "{line}\n{verbose}");
    }
    // The HTML page shows each agent's state.
    let page = n.get("/").unwrap().body;
    for agent in ["consul", "nomad"] {
        let el = format!(r#"id="agent-{agent}" data-state="running""#);
        assert!(page.contains(&el), "{el}\n{page}");
    }

    // `supervisor status` without --addr finds the endpoint in the role file.
    let out = status_cmd(&n, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("ams2-server-01 (eu/ams2)"), "{text}");

    // Prometheus exposition passes promtool when it is installed.
    let metrics = n.get("/metrics").unwrap();
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .body
            .contains("hashi_supervisor_agent_up{agent=\"consul\"} 1"),
        "{}",
        metrics.body
    );
    // One download and one verification per agent, both good.
    for agent in ["consul", "nomad"] {
        for total in ["fetch_total", "verify_total"] {
            let line = format!("hashi_supervisor_{total}{{agent=\"{agent}\",outcome=\"ok\"}} 1");
            assert!(metrics.body.contains(&line), "{line}\n{}", metrics.body);
        }
    }
    // (Only this check is left out where promtool is missing outside CI.)
    if crate::support::require_tools(&["promtool"]) {
        let f = n.sup.root.path().join("metrics.txt");
        std::fs::write(&f, &metrics.body).unwrap();
        let out = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::fs::File::open(&f).unwrap())
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "promtool: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The supervisor is in the stand-in Consul's catalog, and Consul's own
    // HTTP check of /ready passes.
    let consul = format!("127.0.0.1:{}", n.ports.consul_http);
    let entries = wait_for(DEADLINE, || {
        let r = http(&consul, "GET", "/v1/health/service/hashi-supervisor", "").ok()?;
        let v: serde_json::Value = serde_json::from_str(&r.body).ok()?;
        let passing = v.as_array()?.iter().any(|e| {
            e["Checks"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["ServiceID"] != "" && c["Status"] == "passing")
            })
        });
        passing.then_some(v)
    })
    .unwrap_or_else(|| panic!("not registered with a passing check; log:\n{}", n.log()));
    let svc = &entries[0]["Service"];
    assert_eq!(svc["ID"], "hashi-supervisor-ams2-server-01");
    assert_eq!(svc["Port"], n.ports.health);

    // The agents got their gossip keys; no answer shows them.
    let rendered =
        std::fs::read_to_string(n.sup.root.path().join("etc/consul.d/consul.json")).unwrap();
    assert!(rendered.contains(CONSUL_GOSSIP_KEY));
    for path in crate::support::HEALTH_PATHS.iter().copied() {
        let body = n.get(path).unwrap().body;
        for key in [CONSUL_GOSSIP_KEY, NOMAD_GOSSIP_KEY] {
            assert!(!body.contains(key), "{path} shows a gossip key: {body}");
        }
    }

    let st = n.stop();
    assert_eq!(st.code(), Some(0), "log:\n{}", n.log());
    let log = n.log();
    assert!(log.contains("deregistered from consul"), "{log}");
    for key in [CONSUL_GOSSIP_KEY, NOMAD_GOSSIP_KEY] {
        assert!(!log.contains(key), "the log shows a gossip key: {log}");
    }
    // Nothing answers any more: `supervisor status` exits 69.
    assert_eq!(status_cmd(&n, &[]).status.code(), Some(69));
}

#[test]
fn crashing_agent_makes_ready_503_with_the_reason_and_counts_restarts() {
    let mut spec = NodeSpec::ams2_server_01();
    // Nomad crashes (exit 2) a while after each start; two restarts, then
    // the policy gives up.
    spec.nomad_knobs = "STANDIN_CRASH_AFTER_MS=1500\n".into();
    spec.nomad_restart = "attempts = 2\ninterval_secs = 600\ndelay_secs = 0\nmode = \"fail\"";
    let mut n = Node::start(spec);
    // Nomad has failed for good, and Consul, fine, is not listed among the
    // failures (the checker asks an agent again when its state changes, so
    // this does not wait for a round of the 5 s interval; waiting for it
    // keeps the test independent of when the first round ran).
    n.wait("/ready", |r| {
        r.status == 503 && r.body.contains("nomad.process: failed") && !r.body.contains("consul.")
    });
    let doc = n.status();
    assert!(!doc.healthy);
    let nm = agent(&doc, "nomad");
    assert_eq!(nm.state, "failed");
    assert_eq!(nm.restarts, 2, "{nm:?}");
    let exit = nm.last_exit.as_ref().unwrap();
    assert_eq!((exit.code, exit.expected), (Some(2), false), "{exit:?}");
    let m = n.get("/metrics").unwrap().body;
    assert!(
        m.contains("hashi_supervisor_agent_restarts_total{agent=\"nomad\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("hashi_supervisor_agent_state{agent=\"nomad\",state=\"failed\"} 1"),
        "{m}"
    );
    // `supervisor status` says unhealthy with exit 1.
    assert_eq!(status_cmd(&n, &["--json"]).status.code(), Some(1));
    assert_eq!(n.stop().code(), Some(0), "log:\n{}", n.log());
}

#[test]
fn hung_agent_does_not_hang_the_endpoint_which_says_why() {
    let mut spec = NodeSpec::ams2_server_01();
    let hang_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(hang_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let hang_file = hang_dir.path().join("consul-hangs");
    spec.consul_knobs = format!("STANDIN_HANG_FILE={}\n", hang_file.display());
    let mut n = Node::start(spec);
    n.wait("/ready", |r| r.status == 200);
    // From now on the stand-in Consul accepts requests and never answers.
    std::fs::write(&hang_file, "").unwrap();
    let r = n.wait("/health", |r| {
        r.status == 503
            && r.body
                .lines()
                .any(|l| l.contains("consul.api") && l.contains("timed out"))
    });
    assert!(!r.body.contains("nomad."), "{}", r.body);
    // Every route keeps answering while Consul hangs.
    for path in ["/live", "/v1/status", "/metrics", "/"] {
        assert_eq!(n.get(path).map(|r| r.status), Some(200), "{path}");
    }
    // Consul answers again: the node is ready again.
    std::fs::remove_file(&hang_file).unwrap();
    n.wait("/ready", |r| r.status == 200);
    assert_eq!(n.stop().code(), Some(0), "log:\n{}", n.log());
}

#[test]
fn consul_server_without_a_leader_is_reported() {
    let mut spec = NodeSpec::ams2_server_01();
    // A Consul server expecting three servers, alone: it never elects a
    // leader and its /v1/status/leader answers "".
    spec.consul_bootstrap_expect = 3;
    let mut n = Node::start(spec);
    let r = n.wait("/ready", |r| {
        r.status == 503 && r.body.contains("consul.api: no raft leader")
    });
    assert!(
        r.body.contains("[FAIL] consul.api: no raft leader"),
        "{}",
        r.body
    );
    // The process runs, and the supervisor holds it as starting: it never
    // became ready (its readiness check needs a leader).
    let doc = n.status();
    let c = agent(&doc, "consul");
    assert_eq!((c.state.as_str(), c.ready), ("starting", false), "{c:?}");
    assert!(c.pid.is_some(), "{c:?}");
    let cr = c.consul.as_ref().unwrap();
    assert_eq!(cr.leader, None);
    // JSON with Accept: application/json lists the failing check.
    let mut s = std::net::TcpStream::connect(n.health()).unwrap();
    use std::io::{Read, Write};
    write!(
        s,
        "GET /ready HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let body = buf.split_once("\r\n\r\n").unwrap().1;
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert!(v.to_string().contains("no raft leader"), "{v}");
    assert_eq!(n.stop().code(), Some(0), "log:\n{}", n.log());
}

#[test]
fn node_without_local_consul_registers_with_its_servers_consul_and_deregisters_on_stop() {
    // ams2-server-01's agents, as stand-ins the test runs itself: the Consul
    // server of ams2 and a Nomad server advertising itself in it.
    let consul = StandIn::consul()
        .server(1)
        .node_name("ams2-server-01")
        .datacenter("ams2")
        .start();
    let _nomad = StandIn::nomad()
        .node_name("ams2-server-01")
        .region("eu")
        .datacenter("ams2")
        .consul(&consul.addr())
        .start();
    // ams2-client-01 runs only a Nomad client and uses ams2's Consul.
    let spec = NodeSpec {
        name: "ams2-client-01",
        datacenter: "ams2",
        roles: &["nomad-client"],
        consul_bootstrap_expect: 1,
        nomad_bootstrap_expect: 1,
        // Written as a host name, as operators often do (a DNS name of the
        // DC's Consul): registration resolves it like Nomad does.
        consul_address: Some(consul.addr().replace("127.0.0.1", "localhost")),
        nomad_restart: "",
        consul_knobs: String::new(),
        nomad_knobs: String::new(),
        gossip_keys: false,
        nomad_tls: false,
    };
    let mut n = Node::start(spec);
    let listed = |consul: &StandIn| -> Option<serde_json::Value> {
        let r = consul.get("/v1/catalog/service/hashi-supervisor");
        let v: serde_json::Value = serde_json::from_str(&r.body).ok()?;
        v.as_array()?
            .iter()
            .find(|e| e["ServiceID"] == "hashi-supervisor-ams2-client-01")
            .cloned()
    };
    let entry = wait_for(DEADLINE, || listed(&consul))
        .unwrap_or_else(|| panic!("never registered; log:\n{}", n.log()));
    assert_eq!(entry["ServiceAddress"], "127.0.0.1");
    assert_eq!(entry["ServicePort"], n.ports.health);
    // The Nomad client found the server through Consul and is healthy.
    n.wait("/ready", |r| r.status == 200);
    let doc = n.status();
    assert_eq!(doc.agents.len(), 1);
    assert!(
        agent(&doc, "nomad")
            .nomad
            .as_ref()
            .unwrap()
            .health_client
            .as_ref()
            .unwrap()
            .ok
    );
    assert_eq!(n.stop().code(), Some(0), "log:\n{}", n.log());
    assert!(
        listed(&consul).is_none(),
        "still in the catalog after stop: {}",
        consul.get("/v1/catalog/service/hashi-supervisor").body
    );
}

#[test]
fn nomads_https_api_is_checked_over_tls_with_the_cluster_ca() {
    let mut n = Node::start(NodeSpec {
        nomad_tls: true,
        ..NodeSpec::ams2_server_01()
    });
    n.wait("/ready", |r| r.status == 200);
    // The health checker reached Nomad over HTTPS: its leader and server
    // health are in the status, without an error.
    n.wait("/v1/status", |r| {
        let d: StatusDoc = serde_json::from_str(&r.body).unwrap();
        agent(&d, "nomad")
            .nomad
            .as_ref()
            .is_some_and(|x| x.leader.is_some() && x.errors.is_empty())
    });
    // The stand-in really serves TLS only: plain HTTP gets no answer.
    let nomad = format!("127.0.0.1:{}", n.ports.nomad_http);
    let plain = http(&nomad, "GET", "/v1/status/leader", "");
    assert!(
        !matches!(&plain, Ok(r) if r.status == 200),
        "plain HTTP answered on a TLS-only Nomad API: {plain:?}"
    );
    // The readiness check of the plan from this very role file passes over
    // TLS; the same check without the CA (plain HTTP) fails.
    let role = hashi_supervisor::role::load(
        &n.sup.role_file,
        true,
        &[],
        &hashi_supervisor::role::SystemHost,
    )
    .unwrap()
    .role;
    let plan = hashi_supervisor::plan::Plan::from_role(&role);
    let agent_plan = plan
        .agents
        .iter()
        .find(|a| a.product == hashi_supervisor::vocab::Product::Nomad)
        .unwrap()
        .clone();
    assert_eq!(
        agent_plan.api_tls.as_ref().map(|t| t.server_name.as_str()),
        Some("server.eu.nomad")
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    use hashi_supervisor::agent::{AgentClient, ObserverConfig, Observers};
    use hashi_supervisor::health::NodeInfo;
    use hashi_supervisor::supervise::check::{ObservedCheck, ReadyCheck};
    // What `supervisor run` builds: one client from the plan, one observer
    // per agent, the readiness check reading Nomad's.
    let ready_by_observer = |plan: &hashi_supervisor::plan::Plan| {
        rt.block_on(async {
            let cancel = tokio_util::sync::CancellationToken::new();
            let observers = Observers::start(
                &AgentClient::for_plan(plan).unwrap(),
                &NodeInfo::from_plan(plan).agents,
                ObserverConfig::default(),
                &tokio_util::task::TaskTracker::new(),
                &cancel,
            );
            let check = ObservedCheck::for_agent(&observers, &agent_plan).unwrap();
            let ready = check.check().await;
            cancel.cancel();
            ready
        })
    };
    assert!(ready_by_observer(&plan));
    let mut plain = plan.clone();
    for a in &mut plain.agents {
        a.api_tls = None;
    }
    assert!(!ready_by_observer(&plain));
    assert!(
        !n.log().contains("cannot be reached") && !n.log().contains("cannot load the CA"),
        "{}",
        n.log()
    );
    assert_eq!(n.stop().code(), Some(0), "log:\n{}", n.log());
}

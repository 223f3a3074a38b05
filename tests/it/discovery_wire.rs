//! Integration tests: discovery wired into the daemon, health, `check`,
//! `status` and `render`. The daemon tests run the library's daemon with
//! `sh` scripts standing in for the agents and a discovery feed the test
//! publishes on; the binary tests run the real `supervisor` with roles on
//! loopback (mDNS off: nothing leaves the machine).

#![allow(clippy::unwrap_used)] // test helpers: a failed setup step is a failed test

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hashi_supervisor::peers::{DiscoveryReport, PeerKind, PeerRecord, Peers, Source};
use hashi_supervisor::plan::{AgentPlan, Plan, ReleasePlan};
use hashi_supervisor::release::Installed;
use hashi_supervisor::render::ChangeKind;
use hashi_supervisor::role::{self, NodeRole};
use hashi_supervisor::supervise::Preparer;
use hashi_supervisor::supervise::daemon::discovery::{cache_path, load_cached};
use hashi_supervisor::supervise::daemon::{DiscoveryFeed, ReplanCounts, status_channel};
use hashi_supervisor::supervise::{RunOptions, SupervisorStatus, run};
use hashi_supervisor::vocab::Product;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::support::daemon::{AGENT_SCRIPT, Rig, WAIT, agent, all_ready, poll, whoami};
use crate::support::preparer::{FakeError, installed};

/// A preparer that renders nothing but records every plan it is asked to
/// render, and fails renders while told to.
#[derive(Default)]
struct Recorder {
    rendered: Mutex<Vec<Plan>>,
    fail: Mutex<bool>,
    /// What the next SIGHUP loads (a role: the daemon plans it).
    reload: Mutex<Option<NodeRole>>,
}

impl Recorder {
    fn rendered(&self) -> Vec<Plan> {
        self.rendered.lock().unwrap().clone()
    }
    fn fail(&self, on: bool) {
        *self.fail.lock().unwrap() = on;
    }
    fn reloads_to(&self, role: NodeRole) {
        *self.reload.lock().unwrap() = Some(role);
    }
}

impl Preparer for Recorder {
    type Error = FakeError;

    async fn load(&self) -> Result<(Plan, String), FakeError> {
        Err(FakeError("a daemon following discovery loads roles".into()))
    }

    async fn load_role(&self) -> Result<Option<(NodeRole, String)>, FakeError> {
        match self.reload.lock().unwrap().take() {
            Some(role) => Ok(Some((role, "hash2".into()))),
            None => Err(FakeError("no reload queued".into())),
        }
    }

    async fn install(&self, _: &ReleasePlan, _: &AgentPlan) -> Result<Installed, FakeError> {
        Err(FakeError("no install in this test".into()))
    }

    async fn rollback(&self, _: &ReleasePlan, _: &Installed) -> Result<(), FakeError> {
        Ok(())
    }

    async fn render(&self, plan: &Plan) -> Result<Vec<(Product, ChangeKind)>, FakeError> {
        if *self.fail.lock().unwrap() {
            return Err(FakeError(
                "failed to render nomad.hcl: disk full (test)".into(),
            ));
        }
        self.rendered.lock().unwrap().push(plan.clone());
        Ok(vec![(Product::Nomad, ChangeKind::Restart)])
    }
}

/// A nomad-client without a local Consul (Consul at a static address),
/// run by our own user, config and state in the rig, on loopback.
fn client_role(rig: &Rig) -> NodeRole {
    client_role_with(rig, "region = \"eu\"\ndatacenter = \"ams2\"\n")
}

/// The same with `identity` lines instead of the region and datacenter.
fn client_role_with(rig: &Rig, identity: &str) -> NodeRole {
    let me = whoami();
    let text = format!(
        "schema = 1\nroles = [\"nomad-client\"]\nnode_name = \"ams2-client-01\"\n{identity}\
         [addresses]\nprivate = \"127.0.0.1\"\n[nomad]\nuser = \"{me}\"\n\
         [discovery]\nconsul_address = \"10.0.1.11:8500\"\nnomad_retry_join = [\"10.0.1.11\"]\n\
         [paths]\nconfig_dir = \"{}\"\nstate_dir = \"{}\"\n[security]\nplaintext = true\n",
        rig.path("etc").display(),
        rig.path("state").display()
    );
    let host = role::StaticHost {
        hostname: Some("ams2-client-01".into()),
        users: vec![me],
        ..Default::default()
    };
    role::parse(&rig.path("node.toml"), &text, &[], &host).unwrap()
}

fn record(address: &str, kind: PeerKind) -> PeerRecord {
    PeerRecord {
        address: address.into(),
        kind,
        source: Source::Mdns,
        node: Some("ams2-server-02".into()),
        datacenter: Some("ams2".into()),
        region: Some("eu".into()),
        last_seen: SystemTime::now(),
    }
}

fn report(consul_http: Option<&str>, nomad_servers: &[&str]) -> DiscoveryReport {
    let mut records = Vec::new();
    if let Some(c) = consul_http {
        records.push(record(c, PeerKind::ConsulServer));
    }
    for n in nomad_servers {
        records.push(record(n, PeerKind::NomadServer));
    }
    DiscoveryReport {
        peers: Peers {
            consul_http: consul_http.map(str::to_string),
            nomad_servers: nomad_servers.iter().map(|s| s.to_string()).collect(),
            ..Peers::default()
        },
        records,
        ..DiscoveryReport::default()
    }
}

fn nomad_consul(plan: &Plan) -> Option<String> {
    plan.render.nomad.as_ref().unwrap().consul_address.clone()
}

fn nomad_starts(rig: &Rig) -> usize {
    rig.events().iter().filter(|l| *l == "nomad start").count()
}

struct Wired {
    rig: Rig,
    role: NodeRole,
    reports: watch::Sender<DiscoveryReport>,
    preparer: Arc<Recorder>,
    counts: Arc<ReplanCounts>,
    told: Arc<Mutex<Vec<Plan>>>,
    status: watch::Receiver<SupervisorStatus>,
    /// SIGHUP and the second stop request, as the signal layer sends them.
    events: mpsc::UnboundedSender<hashi_supervisor::supervise::DaemonEvent>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), hashi_supervisor::supervise::SuperviseError>>,
}

/// The daemon running the client role's plan (Nomad as a stand-in
/// script), following a discovery feed the test publishes on.
async fn wired() -> Wired {
    let rig = Rig::new();
    let role = client_role(&rig);
    let plan = Plan::build(&role, &Peers::default());
    let script = rig.script("nomad-agent", AGENT_SCRIPT);
    let (reports, rx) = watch::channel(DiscoveryReport::default());
    let preparer = Arc::new(Recorder::default());
    let counts = Arc::new(ReplanCounts::default());
    let told = Arc::new(Mutex::new(Vec::new()));
    let mut opts: RunOptions = rig.opts(&[]);
    opts.installed
        .insert(Product::Nomad, installed(Product::Nomad, "1.9.0", script));
    opts.discovery = Some(DiscoveryFeed {
        reports: rx,
        role: role.clone(),
        applied: Peers::default(),
        on_plan: {
            let told = told.clone();
            Arc::new(move |_: &NodeRole, p: &Plan| told.lock().unwrap().push(p.clone()))
        },
        debounce: Duration::from_millis(50),
        counts: counts.clone(),
    });
    let status = status_channel(&plan);
    let status_rx = status.subscribe();
    let (events, ev_rx) = mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run(
        plan,
        preparer.clone(),
        opts,
        status,
        ev_rx,
        shutdown.clone(),
    ));
    let w = Wired {
        rig,
        role,
        reports,
        preparer,
        counts,
        told,
        status: status_rx,
        events,
        shutdown,
        task,
    };
    w.wait_status("nomad ready", all_ready).await;
    w
}

impl Wired {
    async fn wait_status(&self, what: &str, pred: impl Fn(&SupervisorStatus) -> bool) {
        let mut rx = self.status.clone();
        if tokio::time::timeout(WAIT, rx.wait_for(|s| pred(s)))
            .await
            .is_err()
        {
            panic!("timed out waiting for {what}: {:#?}", self.status.borrow());
        }
    }

    async fn stop(self) -> Rig {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("daemon did not stop")
            .unwrap()
            .unwrap();
        self.rig
    }
}

#[tokio::test]
async fn the_daemon_replans_on_new_peers_and_restarts_nomad_only_when_its_consul_moves() {
    let w = wired().await;
    assert_eq!(nomad_starts(&w.rig), 1);

    // A discovered Consul server replaces the static address: re-rendered,
    // and Nomad restarted (the keep-workloads signal) on the new address.
    w.reports.send_replace(report(Some("10.0.1.12:8500"), &[]));
    poll("a re-plan with the discovered consul", || {
        w.counts.ok() == 1
    })
    .await;
    let rendered = w.preparer.rendered();
    assert_eq!(
        nomad_consul(rendered.last().unwrap()).as_deref(),
        Some("10.0.1.12:8500")
    );
    assert_eq!(w.counts.nomad_restarts(), 1);
    w.wait_status("nomad restarted and ready", |s| {
        agent(s, Product::Nomad).restarts == 1 && all_ready(s)
    })
    .await;
    assert_eq!(nomad_starts(&w.rig), 2);
    // Discovery is told the plan in force.
    assert_eq!(
        nomad_consul(w.told.lock().unwrap().last().unwrap()).as_deref(),
        Some("10.0.1.12:8500")
    );

    // A new Nomad server only: files rewritten, no restart.
    w.reports
        .send_replace(report(Some("10.0.1.12:8500"), &["10.0.1.13"]));
    poll("a re-plan with the new nomad server", || w.counts.ok() == 2).await;
    let last = w.preparer.rendered().last().unwrap().clone();
    assert_eq!(
        last.render.nomad.as_ref().unwrap().retry_join,
        vec!["10.0.1.11".to_string(), "10.0.1.13".to_string()],
        "static first, discovered after"
    );
    assert_eq!(w.counts.nomad_restarts(), 1);

    // The same peers again (a fresher sighting): nothing to re-plan.
    w.reports
        .send_replace(report(Some("10.0.1.12:8500"), &["10.0.1.13"]));
    // The report is persisted with the peers in force.
    let state = w.role.state_dir.clone();
    poll("the report persisted", || {
        load_cached(&state)
            .ok()
            .flatten()
            .is_some_and(|r| r.peers.nomad_servers == vec!["10.0.1.13".to_string()])
    })
    .await;
    assert_eq!(w.counts.ok(), 2);
    let status = w.status.borrow().clone();
    let rig = w.stop().await;
    assert_eq!(nomad_starts(&rig), 2, "{:?}", rig.events());
    assert_eq!(agent(&status, Product::Nomad).restarts, 1);
    // The restart kept the workloads (SIGTERM: no leave, no drain); the
    // stop left (SIGINT).
    let ev = rig.events();
    let signals: Vec<&String> = ev.iter().filter(|l| l.contains("signal")).collect();
    assert_eq!(signals, ["nomad signal TERM", "nomad signal INT"], "{ev:?}");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(cache_path(&state)).unwrap().permissions(),
    );
    assert_eq!(mode & 0o7777, 0o644);
}

#[tokio::test]
async fn a_render_failure_during_a_peer_change_keeps_the_agents_and_the_plan() {
    let w = wired().await;
    w.preparer.fail(true);
    w.reports.send_replace(report(Some("10.0.1.12:8500"), &[]));
    poll("the failed re-plan counted", || w.counts.failed() >= 1).await;
    assert_eq!(w.counts.ok(), 0);
    assert_eq!(w.counts.nomad_restarts(), 0);
    assert!(w.preparer.rendered().is_empty());
    assert!(w.told.lock().unwrap().is_empty(), "discovery not told");
    // Once rendering works again, the next change of peers applies.
    w.preparer.fail(false);
    w.reports
        .send_replace(report(Some("10.0.1.12:8500"), &["10.0.1.13"]));
    poll("a re-plan after the failure", || w.counts.ok() == 1).await;
    assert_eq!(
        nomad_consul(w.preparer.rendered().last().unwrap()).as_deref(),
        Some("10.0.1.12:8500")
    );
    w.wait_status("nomad restarted on the new address", |s| {
        agent(s, Product::Nomad).restarts == 1 && all_ready(s)
    })
    .await;
    let rig = w.stop().await;
    // Up the whole time but for that one restart.
    assert_eq!(nomad_starts(&rig), 2, "{:?}", rig.events());
}

#[tokio::test]
async fn a_sighup_plans_the_new_role_with_the_current_peers_and_learned_identity() {
    let w = wired().await;
    let mut r = report(Some("10.0.1.12:8500"), &["10.0.1.13"]);
    r.learned = hashi_supervisor::peers::Learned {
        region: Some("eu".into()),
        datacenter: Some("ams2".into()),
        from_node: Some("ams2-server-02".into()),
    };
    w.reports.send_replace(r);
    poll("the first re-plan", || w.counts.ok() == 1).await;
    // The role file now leaves region and datacenter to discovery.
    let role = client_role_with(&w.rig, "");
    assert!(role.learnable.region && role.learnable.datacenter);
    w.preparer.reloads_to(role);
    w.events
        .send(hashi_supervisor::supervise::DaemonEvent::Reload)
        .unwrap();
    w.wait_status("the reload applied", |s| s.config_hash == "hash2")
        .await;
    let plan = w.preparer.rendered().last().unwrap().clone();
    assert_eq!(
        (plan.region.as_str(), plan.datacenter.as_str()),
        ("eu", "ams2")
    );
    let nomad = plan.render.nomad.as_ref().unwrap();
    assert_eq!(nomad.consul_address.as_deref(), Some("10.0.1.12:8500"));
    assert!(nomad.retry_join.contains(&"10.0.1.13".to_string()));
    let status = w.status.borrow().clone();
    assert_eq!(status.reload_error, None);
    assert_eq!(status.node.unwrap().datacenter, "ams2");
    // Discovery is told the reloaded role's plan.
    assert_eq!(w.told.lock().unwrap().len(), 2);
    // The same peers after the reload: no further re-plan.
    assert_eq!(w.counts.ok(), 1);
    w.stop().await;
}

// ------------------------------------------------ the real binary ---

mod binary {
    use std::path::Path;
    use std::process::Output;

    use hashi_supervisor::peers::{DiscoveryReport, Peers};
    use hashi_supervisor::supervise::daemon::discovery::{load_cached, persist};
    use serde_json::{Value, json};

    use crate::support::node::{DEADLINE, Ports, RoleFile, Supervisor, node_root};
    use crate::support::standin::{StandIn, free_port, http, wait_for};
    use crate::support::supervisor_bin;

    /// A nomad-client of ams2 without a local Consul, on loopback (mDNS
    /// off: a loopback private address), its Consul at `consul` (static).
    fn client_role(root: &Path, ports: Ports, consul: &str) -> String {
        RoleFile::new("ams2-client-01", "ams2", &["nomad-client"], ports)
            .tables(&format!("[discovery]\nconsul_address = \"{consul}\"\n"))
            .render(root)
    }

    fn supervisor(role: &Path, args: &[&str]) -> Output {
        std::process::Command::new(supervisor_bin())
            .arg("--config")
            .arg(role)
            .args(args)
            .env_remove("HASHI_SUPERVISOR_ROLE")
            .output()
            .unwrap()
    }

    fn text(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    /// A stand-in Consul server of ams2 whose HTTP API is on `http_port`
    /// (the builder waits on a port of its own choosing: not here).
    fn consul_server(http_port: u16) -> StandIn {
        let s = StandIn::consul()
            .server(1)
            .datacenter("ams2")
            .set(
                "ports",
                json!({"http": http_port, "serf_lan": free_port(), "serf_wan": free_port(),
                       "server": free_port(), "dns": -1}),
            )
            .no_wait()
            .start();
        let addr = format!("127.0.0.1:{http_port}");
        wait_for(DEADLINE, || {
            http(&addr, "GET", "/v1/status/leader", "")
                .ok()
                .filter(|r| r.status == 200 && r.body.len() > 2)
        })
        .unwrap_or_else(|| panic!("the stand-in Consul at {addr} never had a leader"));
        s
    }

    /// A nomad-client of ams2 that finds its Consul server by DNS only,
    /// asking `nameserver` on loopback.
    fn dns_client_role(root: &Path, ports: Ports, nameserver: &str) -> String {
        RoleFile::new("ams2-client-01", "ams2", &["nomad-client"], ports)
            .tables(&format!(
                "[discovery.dns]\nnameserver = \"{nameserver}\"\nconsul_servers = [\"consul.ams2.test\"]\n"
            ))
            .render(root)
    }

    /// A nameserver on loopback that never answers (a bound UDP socket).
    fn silent_nameserver() -> (std::net::UdpSocket, String) {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = s.local_addr().unwrap().to_string();
        (s, addr)
    }

    #[test]
    fn check_prints_each_destination_with_its_source_and_exactly_what_is_missing() {
        let root = node_root();
        let port = free_port();
        let consul = format!("127.0.0.1:{port}");
        let role = root.path().join("node.toml");

        // Only DNS, and its nameserver silent: the node would wait.
        let (_ns, nameserver) = silent_nameserver();
        std::fs::write(
            &role,
            dns_client_role(root.path(), Ports::free(), &nameserver),
        )
        .unwrap();
        let out = supervisor(&role, &["check", "--discover-secs", "1"]);
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
        assert!(stdout.ends_with("role file is valid\n"), "{stdout}");
        for line in [
            "Discovery\n",
            "  mdns:     off (",
            &format!("  dns:      on via {nameserver} every 30s\n"),
            "            consul servers: consul.ams2.test\n",
            "  nomad consul.address:  none\n",
            "  MISSING: the Consul server of this datacenter (DNS consul.ams2.test",
            "  the node would wait for discovery\n",
        ] {
            assert!(stdout.contains(line), "{line:?} missing from:\n{stdout}");
        }
        let out = supervisor(&role, &["check", "--json", "--discover-secs", "1"]);
        assert_eq!(out.status.code(), Some(1));
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        let d = &doc["discovery"];
        assert_eq!(d["missing"].as_array().unwrap().len(), 1, "{d}");
        assert_eq!(d["providers"]["mdns_on"], false);
        assert_eq!(d["providers"]["dns"]["nameserver"], json!(nameserver));
        assert!(d["probe"]["warnings"].as_array().is_some(), "{d}");
        // Without --discover-secs (as the service's pre-start check runs
        // it): the same probe and findings, and no failure: `run` waits.
        let out = supervisor(&role, &["check"]);
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{stdout}");
        for line in [
            "  probe (3s): 0 peers found\n",
            "  MISSING: the Consul server of this datacenter (DNS consul.ams2.test",
            "  the node would wait for discovery (no failure: `--discover-secs N` makes it one)\n",
        ] {
            assert!(stdout.contains(line), "{line:?} missing from:\n{stdout}");
        }
        // No probe at all: what is left to discovery is shown.
        let out = supervisor(&role, &["check", "--discover-secs", "0"]);
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{stdout}");
        for line in [
            "  probe:    skipped (--discover-secs 0)\n",
            "  left to discovery: the Consul server of this datacenter (DNS consul.ams2.test",
        ] {
            assert!(stdout.contains(line), "{line:?} missing from:\n{stdout}");
        }

        // A written Consul address nobody answers at: used as written (the
        // node starts), the probe says it is unhealthy.
        std::fs::write(&role, client_role(root.path(), Ports::free(), &consul)).unwrap();
        let out = supervisor(&role, &["check", "--discover-secs", "1"]);
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
        for line in [
            "  dns:      off\n",
            &format!("  nomad consul.address:  {consul} (static)\n"),
            &format!("    problem: no healthy Consul server of ams2: {consul}: "),
            "  nothing missing: the node can start\n",
        ] {
            assert!(stdout.contains(line), "{line:?} missing from:\n{stdout}");
        }
        let out = supervisor(&role, &["check", "--json", "--discover-secs", "1"]);
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        let dest = doc["discovery"]["destinations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == "nomad consul.address")
            .unwrap()
            .clone();
        assert_eq!(
            dest["values"],
            json!([{"value": consul, "source": "static"}])
        );

        // A Consul server answers there: found, healthy.
        let _server = consul_server(port);
        let out = wait_for(DEADLINE, || {
            let out = supervisor(&role, &["check", "--discover-secs", "1"]);
            (out.status.code() == Some(0) && !text(&out.stdout).contains("problem:")).then_some(out)
        })
        .unwrap_or_else(|| panic!("check never found the live Consul server healthy"));
        let stdout = text(&out.stdout);
        for line in [
            "  probe (1s): 1 peer found\n",
            &format!("    {consul} consul-server from static\n"),
            "  nothing missing: the node can start\n",
        ] {
            assert!(stdout.contains(line), "{line:?} missing from:\n{stdout}");
        }
        // Out of range: a usage error.
        let out = supervisor(&role, &["check", "--discover-secs", "61"]);
        assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    }

    #[test]
    fn render_uses_the_persisted_reports_peers() {
        let root = node_root();
        let role = root.path().join("node.toml");
        std::fs::write(
            &role,
            client_role(root.path(), Ports::free(), "127.0.0.1:1"),
        )
        .unwrap();
        let state = root.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        persist(
            &state,
            &DiscoveryReport {
                peers: Peers {
                    consul_http: Some("10.0.1.12:8500".into()),
                    nomad_servers: vec!["10.0.1.13".into()],
                    ..Peers::default()
                },
                ..DiscoveryReport::default()
            },
        )
        .unwrap();
        let out_dir = root.path().join("out");
        let out = supervisor(&role, &["render", "--out", out_dir.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let hcl = std::fs::read_to_string(out_dir.join("nomad.d/nomad.hcl")).unwrap();
        assert!(hcl.contains("10.0.1.12:8500"), "{hcl}");
        assert!(hcl.contains("10.0.1.13"), "{hcl}");
        assert!(
            !hcl.contains("127.0.0.1:1\""),
            "discovered replaces static: {hcl}"
        );
    }

    #[test]
    fn a_node_waits_for_what_discovery_has_not_found_and_a_stop_ends_the_wait() {
        let root = node_root();
        let ports = Ports::free();
        let health = format!("127.0.0.1:{}", ports.health);
        let (_ns, nameserver) = silent_nameserver();
        let role = dns_client_role(root.path(), ports, &nameserver);
        let mut sup = Supervisor::start(root, &role, &[]);
        let body = wait_for(DEADLINE, || {
            sup.assert_running("waiting for discovery");
            http(&health, "GET", "/ready", "")
                .ok()
                .filter(|r| r.status == 503 && r.body.contains("waiting for discovery"))
                .map(|r| r.body)
        })
        .unwrap_or_else(|| panic!("never said it waits; log:\n{}", sup.log()));
        assert!(
            body.contains(
                "[FAIL] discovery: waiting for discovery: the Consul server of this datacenter (DNS consul.ams2.test"
            ),
            "{body}"
        );
        let doc = http(&health, "GET", "/v1/status", "").unwrap().json();
        assert_eq!(
            doc["discovery"]["waiting_for"].as_array().map(Vec::len),
            Some(1),
            "{doc}"
        );
        assert_eq!(doc["agents"][0]["state"], "stopped", "{doc}");
        assert!(
            sup.log()
                .contains("waiting for discovery: the Consul server"),
            "{}",
            sup.log()
        );
        // SIGTERM ends the wait: a clean exit, no agent ever started.
        assert!(sup.stop().success(), "{}", sup.log());
        let log = sup.log();
        assert!(log.contains("stopped while waiting for discovery"), "{log}");
        assert!(!log.contains("downloading"), "{log}");
    }

    #[test]
    fn a_node_degraded_by_an_unhealthy_consul_recovers_and_shows_what_it_found() {
        let root = node_root();
        let ports = Ports::free();
        let port = free_port();
        let consul = format!("127.0.0.1:{port}");
        let health = format!("127.0.0.1:{}", ports.health);
        let role = client_role(root.path(), ports, &consul);
        let mut sup = Supervisor::start(root, &role, &[]);

        // The written address answers nothing: degraded, naming it.
        let body = wait_for(DEADLINE, || {
            sup.assert_running("degraded");
            http(&health, "GET", "/ready", "")
                .ok()
                .filter(|r| r.status == 503 && r.body.contains("discovery: degraded"))
                .map(|r| r.body)
        })
        .unwrap_or_else(|| panic!("never degraded; log:\n{}", sup.log()));
        assert!(
            body.contains(&format!(
                "[FAIL] discovery: degraded: no healthy Consul server of ams2: {consul}: "
            )),
            "{body}"
        );

        // The Consul server comes up: the problem clears.
        let _server = consul_server(port);
        let doc = wait_for(DEADLINE, || {
            sup.assert_running("discovery ok");
            let doc = http(&health, "GET", "/v1/status", "").ok()?.json();
            let ok = doc["checks"]
                .as_array()?
                .iter()
                .any(|c| c["name"] == "discovery" && c["ok"] == true);
            (ok && doc["agents"][0]["state"] == "running").then_some(doc)
        })
        .unwrap_or_else(|| panic!("discovery never recovered; log:\n{}", sup.log()));
        let d = &doc["discovery"];
        assert_eq!(d["problems"], json!([]), "{d}");
        assert_eq!(d["applied"]["consul_http"], json!(consul), "{d}");
        let peer = d["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["address"] == json!(consul))
            .unwrap_or_else(|| panic!("{d}"))
            .clone();
        assert_eq!(
            (&peer["kind"], &peer["source"]),
            (&json!("consul-server"), &json!("static"))
        );
        assert!(peer["last_seen"].as_u64().unwrap() > 0 && peer["ago"].is_string());
        let metrics = http(&health, "GET", "/metrics", "").unwrap().body;
        assert!(
            metrics.contains(
                "hashi_supervisor_discovery_peers{source=\"static\",kind=\"consul-server\"} 1"
            ),
            "{metrics}"
        );
        assert!(metrics.contains("hashi_supervisor_discovery_joins_total{agent=\"nomad\"}"));
        let page = http(&health, "GET", "/", "").unwrap().body;
        assert!(page.contains(&format!("data-peer=\"{consul}\"")), "{page}");
        // `supervisor status` lists the peers.
        let out = std::process::Command::new(supervisor_bin())
            .args(["status", "--addr", &health])
            .output()
            .unwrap();
        let stdout = text(&out.stdout);
        assert!(stdout.contains("discovery: "), "{stdout}");
        assert!(
            stdout.contains(&consul) && stdout.contains("static"),
            "{stdout}"
        );

        // Stopped: the report is persisted, the next start's seeds.
        let state = sup.root.path().join("state");
        assert!(sup.stop().success(), "{}", sup.log());
        let cached = load_cached(&state).unwrap().unwrap();
        assert_eq!(cached.peers.consul_http.as_deref(), Some(consul.as_str()));
        assert!(cached.records.iter().any(|r| r.address == consul));
    }
}

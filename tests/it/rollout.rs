//! The rollout on its own task, through the real `supervisor run`, a
//! stand-in Consul server (a single-server cluster, ams2-server-01) and
//! signals: while the node waits at the upgrade gate (its lock held by
//! another node) `/v1/status` answers, watchdog pings keep coming, a SIGHUP
//! that changes the version and `[upgrade]` is applied (READY=1 after
//! RELOADING=1 while the wait goes on, the status shows the new wanted
//! version); a SIGTERM ends the wait and the agent gets its usual stop; a
//! SIGTERM while the new release starts ends the restart at once and puts
//! the previous release back as `current`.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup step is a failed test

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use hashi_supervisor::health::handlers::AgentDoc;
use hashi_testrig::mirror::BuiltMirror;
use nix::sys::signal::Signal;

use crate::support::node::{DEADLINE, Ports, Supervisor, node_root, standin_mirror};
use crate::support::standin::{Event, http, read_events, wait_for};
use crate::upgrade::status;

const V1: &str = "1.21.4";
const V2: &str = "1.21.5";
const V3: &str = "1.21.6";
const LOCK_KEY: &str = "hashi-supervisor/upgrade/consul/ams2/lock";
/// The node holding the lock in these tests (not the one under test).
const OTHER: &str = "ams2-server-02";

/// A signed mirror holding the stand-in as Consul [`V1`], [`V2`], [`V3`]
/// (built once).
fn mirror() -> &'static BuiltMirror {
    static MIRROR: OnceLock<(tempfile::TempDir, BuiltMirror)> = OnceLock::new();
    &MIRROR
        .get_or_init(|| standin_mirror(&[("consul", &[V1, V2, V3])]))
        .1
}

/// ams2-server-01 as a single Consul server asking for `version`, with
/// `[upgrade] health_deadline_secs = deadline`.
fn role(root: &Path, ports: Ports, version: &str, deadline: u64) -> String {
    crate::upgrade::consul_server_role(root, ports, version, deadline, mirror())
}

/// Polls `/v1/status` until `pred` holds on the consul agent's entry.
fn wait_consul(
    sup: &mut Supervisor,
    ports: Ports,
    what: &str,
    pred: impl Fn(&AgentDoc) -> bool,
) -> AgentDoc {
    let mut last = None;
    wait_for(DEADLINE, || {
        sup.assert_running(what);
        let doc = status(ports)?;
        let a = doc.agents.into_iter().find(|a| a.agent == "consul")?;
        last = Some(format!("{:?}", (&a.state, &a.version, &a.upgrade)));
        pred(&a).then_some(a)
    })
    .unwrap_or_else(|| panic!("{what}: last {last:?}\nlog:\n{}", sup.log()))
}

/// `waiting_for` of the agent's upgrade, if any.
fn waiting_for(a: &AgentDoc) -> Option<&str> {
    a.upgrade.as_ref().and_then(|u| u.waiting_for.as_deref())
}

/// Takes the Consul upgrade lock of ams2 for [`OTHER`] in the stand-in's
/// KV store, with a session without a TTL (it never expires).
fn hold_lock(ports: Ports) {
    let addr = format!("127.0.0.1:{}", ports.consul_http);
    let taken = wait_for(DEADLINE, || {
        let r = http(
            &addr,
            "PUT",
            "/v1/session/create",
            &format!(r#"{{"Name":"{OTHER} test","Behavior":"release"}}"#),
        )
        .ok()?;
        let v: serde_json::Value = serde_json::from_str(&r.body).ok()?;
        let id = v["ID"].as_str()?.to_string();
        let r = http(
            &addr,
            "PUT",
            &format!("/v1/kv/{LOCK_KEY}?acquire={id}"),
            OTHER,
        )
        .ok()?;
        (r.body.trim() == "true").then_some(())
    });
    assert!(taken.is_some(), "{OTHER} takes the lock");
}

/// The lock key's session and base64 value (`None`: no key).
fn lock_holder(ports: Ports) -> Option<(Option<String>, String)> {
    lock_holder_at(&format!("127.0.0.1:{}", ports.consul_http))
}

/// Where the stand-in's knob file sends the agent's event log.
fn knobs(root: &Path, extra: &str) -> PathBuf {
    let data = root.join("state/data/consul");
    std::fs::create_dir_all(&data).unwrap();
    let events = root.join("consul-events.log");
    if !events.exists() {
        // Written by the agent, which may run as the `consul` user.
        std::fs::write(&events, "").unwrap();
        std::fs::set_permissions(&events, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    std::fs::write(
        data.join("standin.env"),
        format!("STANDIN_EVENT_LOG={}\n{extra}", events.display()),
    )
    .unwrap();
    events
}

fn current(root: &Path) -> Option<PathBuf> {
    std::fs::read_link(root.join("state/releases/consul/current")).ok()
}

/// The supervisor's own sd_notify messages (a test-held `NOTIFY_SOCKET`).
struct Notify {
    sock: UnixDatagram,
    seen: Vec<String>,
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Notify {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Notify {
            sock,
            seen: Vec::new(),
            _dir: dir,
            path,
        }
    }

    /// Reads what arrived (one line per state).
    fn drain(&mut self) {
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.sock.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            self.seen.extend(text.lines().map(str::to_string));
        }
    }

    /// Polls until `pred` holds on the messages seen since `from`.
    fn wait(&mut self, from: usize, what: &str, pred: impl Fn(&[String]) -> bool) -> usize {
        let seen = wait_for(DEADLINE, || {
            self.drain();
            pred(&self.seen[from.min(self.seen.len())..]).then_some(self.seen.len())
        });
        seen.unwrap_or_else(|| panic!("{what}: sd_notify messages {:?}", &self.seen[from..]))
    }
}

fn count(msgs: &[String], m: &str) -> usize {
    msgs.iter().filter(|x| x.as_str() == m).count()
}

/// Where `m` first appears in `msgs`.
fn first(msgs: &[String], m: &str) -> Option<usize> {
    msgs.iter().position(|x| x.as_str() == m)
}

#[test]
fn while_waiting_at_the_gate_status_and_watchdog_flow_a_sighup_is_applied_and_a_sigterm_ends_the_wait()
 {
    let root = node_root();
    let rp = root.path().to_path_buf();
    let ports = Ports::free();
    let events = knobs(&rp, "");
    let mut notify = Notify::new();
    let sock = notify.path.display().to_string();
    // A watchdog of 2 s: a ping every second.
    let mut sup = Supervisor::start(
        root,
        &role(&rp, ports, V1, 20),
        &[("NOTIFY_SOCKET", &sock), ("WATCHDOG_USEC", "2000000")],
    );
    wait_consul(&mut sup, ports, "v1 ready", |a| {
        a.ready && a.version.as_deref() == Some(V1) && a.upgrade.is_none()
    });
    notify.wait(0, "READY=1 once consul is ready", |m| {
        count(m, "READY=1") >= 1
    });

    // Another server holds the lock: asked for V2, the node waits.
    hold_lock(ports);
    std::fs::write(&sup.role_file, role(&rp, ports, V2, 20)).unwrap();
    let mark = notify.seen.len();
    sup.signal(Signal::SIGHUP);
    let a = wait_consul(&mut sup, ports, "waiting for the lock", |a| {
        a.upgrade.as_ref().and_then(|u| u.wanted.as_deref()) == Some(V2)
            && waiting_for(a).is_some_and(|w| w.contains(OTHER))
    });
    let u = a.upgrade.clone().unwrap();
    assert_eq!(u.installed.as_deref(), Some(V1), "{u:?}");
    assert!(
        waiting_for(&a)
            .unwrap()
            .contains("the upgrade lock of consul/ams2"),
        "{u:?}"
    );
    // The reload was applied while the wait goes on: READY=1 after
    // RELOADING=1, and the watchdog keeps being fed.
    let mark = notify.wait(mark, "READY=1 after RELOADING=1 at the gate", |m| {
        first(m, "RELOADING=1").is_some_and(|r| m[r..].iter().any(|x| x == "READY=1"))
    });
    notify.wait(mark, "watchdog pings while waiting", |m| {
        count(m, "WATCHDOG=1") >= 3
    });
    wait_consul(&mut sup, ports, "still waiting", |a| {
        waiting_for(a).is_some_and(|w| w.contains(OTHER))
    });

    // A SIGHUP during the wait that changes the version and `[upgrade]`
    // ends that wait and starts again on the new plan.
    std::fs::write(&sup.role_file, role(&rp, ports, V3, 40)).unwrap();
    let mark = notify.seen.len();
    sup.signal(Signal::SIGHUP);
    wait_consul(&mut sup, ports, "waiting for V3", |a| {
        a.upgrade.as_ref().and_then(|u| u.wanted.as_deref()) == Some(V3)
            && a.version.as_deref() == Some(V1)
            && waiting_for(a).is_some_and(|w| w.contains(OTHER))
    });
    notify.wait(mark, "READY=1 after the second reload", |m| {
        first(m, "RELOADING=1").is_some_and(|r| m[r..].iter().any(|x| x == "READY=1"))
    });
    let log = sup.log();
    assert!(
        log.contains("the upgrade gate follows the new plan")
            && log.contains("health_deadline_secs=40"),
        "the gate is rebuilt with the new [upgrade]: {log}"
    );
    assert_eq!(current(&rp), Some(PathBuf::from(V1)), "nothing switched");
    // base64 of `ams2-server-02`.
    let held = lock_holder(ports);
    assert!(
        held.as_ref()
            .is_some_and(|(s, v)| s.is_some() && v == "YW1zMi1zZXJ2ZXItMDI="),
        "the other node still holds the lock: {held:?}"
    );

    // SIGTERM: the wait ends, the agent gets its usual stop, the
    // supervisor exits (the gate alone would wait forever).
    let t = std::time::Instant::now();
    let st = sup.stop();
    eprintln!(
        "SIGTERM while waiting at the gate to exit: {} ms",
        t.elapsed().as_millis()
    );
    assert!(st.success(), "{st}\n{}", sup.log());
    let ev: Vec<String> = read_events(&events).iter().map(Event::to_string).collect();
    let last_start = ev
        .iter()
        .rposition(|e| e.starts_with("start "))
        .expect("a start event");
    let run = &ev[last_start..];
    assert!(
        run[0].contains(&format!("version={V1}")),
        "the agent ran V1 to the end: {ev:?}"
    );
    assert_eq!(
        ev.iter().filter(|e| e.starts_with("start ")).count(),
        1,
        "never restarted: {ev:?}"
    );
    // Its usual stop: a Consul server's stop signal (a server does not
    // leave its cluster on a stop) and an exit of its own, not a SIGKILL
    // (which leaves no `exit` line).
    assert!(
        run.iter().any(|e| e == "signal SIGTERM")
            && run.last().is_some_and(|e| e.starts_with("exit ")),
        "the stop signal, then the agent's own exit: {ev:?}"
    );
}

#[test]
fn a_sigterm_while_the_new_release_starts_ends_the_restart_and_keeps_the_previous_release_current()
{
    let root = node_root();
    let rp = root.path().to_path_buf();
    let ports = Ports::free();
    let events = knobs(&rp, "");
    // The longest deadline: only the SIGTERM can end the restart early.
    let deadline = 3600;
    let mut sup = Supervisor::start(root, &role(&rp, ports, V1, deadline), &[]);
    wait_consul(&mut sup, ports, "v1 ready", |a| {
        a.ready && a.version.as_deref() == Some(V1) && a.upgrade.is_none()
    });
    // From its next start on, the agent takes an hour to start.
    knobs(&rp, "STANDIN_SLOW_START_MS=3600000\n");
    std::fs::write(&sup.role_file, role(&rp, ports, V2, deadline)).unwrap();
    sup.signal(Signal::SIGHUP);
    // The turn taken (a single server goes at once), restarted on V2,
    // which does not become ready.
    wait_consul(&mut sup, ports, "restarting on v2", |a| {
        a.version.as_deref() == Some(V2)
            && !a.ready
            && a.upgrade
                .as_ref()
                .is_some_and(|u| u.wanted.as_deref() == Some(V2) && u.waiting_for.is_none())
    });
    assert_eq!(current(&rp), Some(PathBuf::from(V2)));
    wait_for(DEADLINE, || {
        read_events(&events)
            .iter()
            .any(|e| e.kind == "start" && e.detail.contains(&format!("version={V2}")))
            .then_some(())
    })
    .expect("the V2 agent started");

    let t = std::time::Instant::now();
    let st = sup.stop();
    eprintln!(
        "SIGTERM while the new release starts (deadline {deadline} s) to exit: {} ms",
        t.elapsed().as_millis()
    );
    assert!(st.success(), "{st}\n{}", sup.log());
    let log = sup.log();
    assert!(log.contains("upgrade turn taken"), "{log}");
    assert!(log.contains("the previous release stays current"), "{log}");
    assert_eq!(
        current(&rp),
        Some(PathBuf::from(V1)),
        "V2 never became ready: the next start runs V1"
    );
    let ev: Vec<String> = read_events(&events).iter().map(Event::to_string).collect();
    // V1 stopped with its stop signal for the restart; the starting V2
    // got the stop signal at shutdown and exited on its own (a SIGKILL
    // leaves no `exit` line).
    let v2 = ev
        .iter()
        .position(|e| e.starts_with("start ") && e.contains(&format!("version={V2}")))
        .expect("a V2 start");
    assert!(ev[..v2].iter().any(|e| e == "signal SIGTERM"), "{ev:?}");
    let after: Vec<&String> = ev[v2..].iter().collect();
    assert!(
        after.iter().any(|e| *e == "signal SIGTERM")
            && after.last().is_some_and(|e| e.starts_with("exit ")),
        "{ev:?}"
    );
}

/// Three stand-in Consul servers joined to the first.
fn three_consul_servers() -> Vec<crate::support::standin::StandIn> {
    use crate::support::standin::StandIn;
    let first = StandIn::consul().server(3).node_name("s1").start();
    let join = first.join_addr();
    let mut v = vec![first];
    for n in ["s2", "s3"] {
        v.push(
            StandIn::consul()
                .server(3)
                .node_name(n)
                .set("retry_join", serde_json::json!([join]))
                .start(),
        );
    }
    v
}

/// `(healthy, failure tolerance, servers, leader)` of a stand-in's
/// autopilot health.
fn autopilot(addr: &str) -> Option<(bool, u64, usize, Option<String>)> {
    let r = http(addr, "GET", "/v1/operator/autopilot/health", "").ok()?;
    let h: serde_json::Value = serde_json::from_str(&r.body).ok()?;
    let servers = h["Servers"].as_array()?;
    let leader = servers
        .iter()
        .find(|s| s["Leader"] == true)
        .and_then(|s| s["Name"].as_str())
        .map(str::to_string);
    Some((
        h["Healthy"].as_bool()?,
        h["FailureTolerance"].as_u64()?,
        servers.len(),
        leader,
    ))
}

/// Shutdown while the cluster settles after the node's restart (its
/// tolerance cannot come back: another server is frozen): the daemon
/// stops at once instead of waiting out the settle deadline (an hour
/// here), the agent gets its usual stop, and the turn is dropped (its
/// lock is freed by the session's TTL, not released over the network).
/// The node's daemon runs on the supervision rig (a `sh` agent whose
/// readiness the test gives), its gate asking a real three-server
/// stand-in Consul cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_while_the_cluster_settles_ends_the_settle_at_once() {
    use std::sync::Arc;

    use hashi_supervisor::supervise::DaemonEvent;
    use hashi_supervisor::upgrade::{Gate, UpgradeSettings};
    use hashi_supervisor::vocab::Product;

    use crate::support::daemon::{Rig, agent, all_ready, poll, start};
    use crate::support::preparer::{FakePreparer, installed};

    let cs = three_consul_servers();
    let (leader, _) = wait_for(DEADLINE, || {
        let (healthy, ft, n, leader) = autopilot(&cs[0].addr())?;
        (healthy && ft == 1 && n == 3)
            .then_some(leader?)
            .map(|l| (l, ()))
    })
    .expect("a healthy three-server stand-in Consul cluster");
    // This node is a follower; another follower is frozen later.
    let mut followers = cs.iter().filter(|s| s.node_name() != leader);
    let me = followers.next().expect("a follower");
    let frozen = followers.next().expect("another follower");

    let rig = Rig::new();
    let mut consul = rig.agent(Product::Consul, Signal::SIGINT);
    consul.http_addr = me.addr().parse().unwrap();
    let mut plan = rig.plan(vec![consul]);
    plan.node_name = me.node_name().to_string();
    plan.roles = vec!["consul-server".into()];
    let v1 = plan.agents[0].binary.clone();
    let mut to_11 = plan.clone();
    to_11.agents[0].version = "1.1.0".parse().unwrap();
    // 1.1.0 becomes ready once the test says so.
    let s11 = rig.script(
        "consul-1.1.0",
        "#!/bin/sh\nrm -f \"$DIR/consul.ready\"\necho \"consul-1.1.0 start $$\" >> \"$LOG\"\n\
         trap 'echo \"consul-1.1.0 signal INT\" >> \"$LOG\"; exit 0' INT\n\
         while [ ! -f \"$DIR/go\" ]; do sleep 0.05; done\n\
         touch \"$DIR/consul.ready\"; echo \"consul-1.1.0 ready\" >> \"$LOG\"\n\
         while :; do sleep 0.1; done\n",
    );
    let preparer = FakePreparer::new()
        .reloads_to(to_11)
        .with_release(installed(Product::Consul, "1.1.0", s11))
        .build();
    let settings = UpgradeSettings {
        health_deadline: Duration::from_secs(3600),
        ..UpgradeSettings::default()
    };
    let client = hashi_supervisor::agent::AgentClient::plain().unwrap();
    let mut opts = rig.opts(&[]);
    opts.gate = Some(Arc::new(
        Gate::for_plan(&plan, &client, settings).with_poll(Duration::from_millis(200)),
    ));
    opts.installed
        .insert(Product::Consul, installed(Product::Consul, "1.0.0", v1));
    let d = start(plan, preparer, opts);
    d.wait("ready", all_ready).await;

    d.events.send(DaemonEvent::Reload).unwrap();
    poll("the turn taken, 1.1.0 started", || {
        rig.events().iter().any(|e| e == "consul-1.1.0 start")
    })
    .await;
    // Another server stops answering: the tolerance is gone.
    frozen.signal(Signal::SIGSTOP);
    let addr = me.addr();
    poll("the cluster lost its tolerance", || {
        autopilot(&addr).is_some_and(|(healthy, ft, _, _)| !healthy && ft == 0)
    })
    .await;
    std::fs::write(rig.path("go"), "").unwrap();
    d.wait("1.1.0 ready, settling", |s| {
        let a = agent(s, Product::Consul);
        a.version.as_deref() == Some("1.1.0")
            && a.ready
            && a.upgrade
                .as_ref()
                .is_some_and(|u| u.wanted.as_deref() == Some("1.1.0"))
    })
    .await;
    let held = lock_holder_at(&addr);
    assert!(
        held.as_ref().is_some_and(|(s, _)| s.is_some()),
        "the node holds the lock while it settles: {held:?}"
    );

    // Ends within the rig's wait (60 s), not the hour of the deadline.
    let t = std::time::Instant::now();
    let s = d.stop().await;
    eprintln!(
        "shutdown while settling (deadline 3600 s) to stopped: {} ms",
        t.elapsed().as_millis()
    );
    frozen.signal(Signal::SIGCONT);
    assert!(s.stopping);
    let ev = rig.events();
    assert!(
        ev.iter().any(|e| e == "consul-1.1.0 signal INT"),
        "the agent's usual stop: {ev:?}"
    );
}

/// The Consul lock key's session and value at `addr` (`None`: no key).
fn lock_holder_at(addr: &str) -> Option<(Option<String>, String)> {
    let r = http(addr, "GET", &format!("/v1/kv/{LOCK_KEY}"), "").ok()?;
    if r.status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&r.body).ok()?;
    let session = v[0]["Session"].as_str().map(str::to_string);
    Some((session, v[0]["Value"].as_str()?.to_string()))
}

/// A client whose first plan has no Consul (none configured, none found
/// yet) gets a gate that can hold locks once discovery finds one: the
/// re-plan rebuilds the gate for Nomad's new `consul.address`.
#[tokio::test]
async fn a_plan_that_gains_a_consul_gets_a_new_gate() {
    use std::sync::{Arc, Mutex};

    use hashi_supervisor::peers::{DiscoveryReport, Peers};
    use hashi_supervisor::plan::Plan;
    use hashi_supervisor::role::{self, NodeRole};
    use hashi_supervisor::supervise::daemon::{DiscoveryFeed, ReplanCounts, status_channel};
    use hashi_supervisor::supervise::run;
    use hashi_supervisor::upgrade::{Gate, UpgradeSettings};
    use hashi_supervisor::vocab::Product;
    use tokio::sync::{mpsc, watch};
    use tokio_util::sync::CancellationToken;

    use crate::support::daemon::{AGENT_SCRIPT, Rig, WAIT, all_ready, poll, whoami};
    use crate::support::preparer::{FakePreparer, installed};

    let rig = Rig::new();
    let text = format!(
        "schema = 1\nroles = [\"nomad-client\"]\nnode_name = \"ams2-client-01\"\n\
         region = \"eu\"\ndatacenter = \"ams2\"\n\
         [addresses]\nprivate = \"127.0.0.1\"\n[nomad]\nuser = \"{}\"\n\
         [discovery]\nnomad_retry_join = [\"10.0.1.11\"]\n\
         [paths]\nconfig_dir = \"{}\"\nstate_dir = \"{}\"\n[security]\nplaintext = true\n",
        whoami(),
        rig.path("etc").display(),
        rig.path("state").display()
    );
    let host = role::StaticHost {
        hostname: Some("ams2-client-01".into()),
        users: vec![whoami()],
        ..Default::default()
    };
    let node: NodeRole = role::parse(&rig.path("node.toml"), &text, &[], &host).unwrap();
    let plan = Plan::build(&node, &Peers::default());
    let first_consul = plan.render.nomad.as_ref().unwrap().consul_address.clone();
    let script = rig.script("nomad-agent", AGENT_SCRIPT);
    let (reports, rx) = watch::channel(DiscoveryReport::default());
    let built = Arc::new(Mutex::new(Vec::<Option<String>>::new()));
    let mut opts = rig.opts(&[]);
    opts.installed
        .insert(Product::Nomad, installed(Product::Nomad, "1.9.0", script));
    let client = hashi_supervisor::agent::AgentClient::plain().unwrap();
    let seen = built.clone();
    opts.gate_factory = Some(Arc::new(move |p: &Plan, s: &UpgradeSettings| {
        seen.lock().unwrap().push(
            p.render
                .nomad
                .as_ref()
                .and_then(|n| n.consul_address.clone()),
        );
        Gate::for_plan(p, &client, s.clone())
    }));
    opts.discovery = Some(DiscoveryFeed {
        reports: rx,
        role: node,
        applied: Peers::default(),
        on_plan: Arc::new(|_: &NodeRole, _: &Plan| {}),
        debounce: Duration::from_millis(50),
        counts: Arc::new(ReplanCounts::default()),
    });
    let status = status_channel(&plan);
    let mut status_rx = status.subscribe();
    let (_events, ev_rx) = mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run(
        plan,
        Arc::new(FakePreparer::new()),
        opts,
        status,
        ev_rx,
        shutdown.clone(),
    ));
    tokio::time::timeout(WAIT, status_rx.wait_for(all_ready))
        .await
        .expect("nomad ready")
        .unwrap();
    assert_eq!(
        built.lock().unwrap().as_slice(),
        std::slice::from_ref(&first_consul),
        "built at start"
    );

    reports.send_replace(DiscoveryReport {
        peers: Peers {
            consul_http: Some("127.0.0.1:18500".into()),
            ..Peers::default()
        },
        ..DiscoveryReport::default()
    });
    poll("the gate rebuilt for the discovered consul", || {
        built.lock().unwrap().len() == 2
    })
    .await;
    assert_eq!(
        built.lock().unwrap()[1].as_deref(),
        Some("127.0.0.1:18500"),
        "first {first_consul:?}"
    );
    shutdown.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .expect("daemon stopped")
        .unwrap()
        .unwrap();
}

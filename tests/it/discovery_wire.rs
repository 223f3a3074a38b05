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
}

impl Recorder {
    fn rendered(&self) -> Vec<Plan> {
        self.rendered.lock().unwrap().clone()
    }
    fn fail(&self, on: bool) {
        *self.fail.lock().unwrap() = on;
    }
}

impl Preparer for Recorder {
    type Error = FakeError;

    async fn load(&self) -> Result<(Plan, String), FakeError> {
        Err(FakeError("no reload in this test".into()))
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
    let me = whoami();
    let text = format!(
        "schema = 1\nroles = [\"nomad-client\"]\nnode_name = \"ams2-client-01\"\n\
         region = \"eu\"\ndatacenter = \"ams2\"\n\
         [addresses]\nprivate = \"127.0.0.1\"\n[nomad]\nuser = \"{me}\"\n\
         [discovery]\nconsul_address = \"10.0.1.11:8500\"\nnomad_retry_join = [\"10.0.1.11\"]\n\
         [paths]\nconfig_dir = \"{}\"\nstate_dir = \"{}\"\n",
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
    /// Kept open with the daemon (no event is sent).
    _events: mpsc::UnboundedSender<hashi_supervisor::supervise::DaemonEvent>,
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
        _events: events,
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

//! `catalog::discovery` against real sockets, inside network namespaces the
//! test creates (`hashi_testrig::netns`): DNS from a real dnsmasq on a
//! loopback address of a node (A and SRV records), a silent nameserver
//! (a warning, backoff, no hang), and mDNS between announcers in two nodes
//! of one datacenter with a rogue host announcing bad and foreign records.
//! Nothing is sent on the machine's own interfaces: every socket, and the
//! mDNS daemon's thread, is created on a thread that entered a node's
//! namespace first. The library runs here, not the supervisor binary (the
//! end-to-end tests are `discovery.rs`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use hashi_supervisor::agent::AgentClient;
use hashi_supervisor::catalog::discovery::{self, Discovery, DiscoveryConfig};
use hashi_supervisor::peers::{DiscoveryReport, PeerKind, Source};
use hashi_supervisor::plan::Plan;
use hashi_supervisor::role::{NodeRole, StaticHost};
use hashi_testrig::netns::{NodeSpec, Topology};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::support::standin::wait_for;

/// Time for a record, an announcement or a retry to show in a report.
const WITHIN: Duration = Duration::from_secs(60);

/// Whether namespaces (root, `ip`) and the `tools` are here: skips
/// locally with a line saying why, fails under CI.
fn can_run(tools: &[&str]) -> bool {
    let mut all = vec!["ip"];
    all.extend_from_slice(tools);
    crate::support::require_tools(&all)
        && crate::support::available("network namespaces", hashi_testrig::netns::is_available())
}

fn node(name: &str, host: u8) -> NodeSpec {
    NodeSpec {
        name: name.into(),
        datacenter: "ams2".into(),
        host,
        public_host: None,
    }
}

/// Spawns `f` on a thread that first enters namespace `ns`: the sockets
/// and threads it creates live there.
fn spawn_in<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let path = format!("/var/run/netns/{ns}");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns {path}: {e}"));
        f()
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn ip(topo: &Topology, name: &str) -> Ipv4Addr {
    topo.node(name).expect("node").private_ip
}

fn netns(topo: &Topology, name: &str) -> String {
    topo.node(name).expect("node").netns.clone()
}

/// A role parsed as the supervisor would on a host whose only interface
/// is `eth0` holding `addr`.
fn role(text: &str, roles: &[&str], name: &str, addr: Ipv4Addr) -> NodeRole {
    let host = StaticHost {
        hostname: Some(name.into()),
        interfaces: vec![("eth0".into(), addr)],
        ..StaticHost::default()
    };
    let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
    hashi_supervisor::role::parse(
        Path::new("/t/node.toml"),
        &crate::support::plaintext(text),
        &roles,
        &host,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Adds `addr/32` to the loopback of namespace `ns`.
fn add_lo(ns: &str, addr: Ipv4Addr) {
    let out = Command::new("ip")
        .args(["-n", ns, "addr", "add", &format!("{addr}/32"), "dev", "lo"])
        .output()
        .expect("ip addr add");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Serves `GET /v1/status/leader` (any request) with a leader, as a
/// Consul server's API does, on `addr` (in the current namespace).
async fn fake_leader(addr: SocketAddr) {
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .expect("bind fake consul");
    serve_leader(l).await
}

/// A fake Consul leader API on its own namespace thread; it stops (its
/// socket closed, its connections dropped) on drop.
struct FakeLeader {
    stop: CancellationToken,
    thread: Option<JoinHandle<()>>,
}

impl FakeLeader {
    fn start(ns: &str, addr: SocketAddr) -> Self {
        let (tx, rx) = mpsc::channel();
        let stop = CancellationToken::new();
        let stop2 = stop.clone();
        let thread = spawn_in(ns, move || {
            runtime().block_on(async move {
                let l = tokio::net::TcpListener::bind(addr)
                    .await
                    .expect("bind fake consul");
                let _ = tx.send(());
                tokio::select! {
                    _ = stop2.cancelled() => {}
                    _ = serve_leader(l) => {}
                }
            })
        });
        rx.recv_timeout(WITHIN).expect("fake consul listening");
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeLeader {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve_leader(l: tokio::net::TcpListener) {
    loop {
        let Ok((mut s, _)) = l.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut b = [0u8; 1024];
            loop {
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&b[..n]),
                    }
                }
                buf.clear();
                let body = "\"10.0.1.11:8300\"";
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                if s.write_all(resp.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// A running discovery on its own namespace thread: its reports, and a
/// stop that cancels it and waits until every task ended.
struct Running {
    handle: Discovery,
    reports: watch::Receiver<DiscoveryReport>,
    stop: CancellationToken,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    fn start(ns: &str, role: NodeRole, health_port: u16, consul: Option<SocketAddr>) -> Self {
        let (tx, rx) = mpsc::channel();
        let stop = CancellationToken::new();
        let stop2 = stop.clone();
        let thread = spawn_in(ns, move || {
            runtime().block_on(async move {
                if let Some(c) = consul {
                    tokio::spawn(fake_leader(c));
                }
                let plan = Plan::from_role(&role);
                let health = SocketAddr::new(role.addresses.private, health_port);
                let cfg = DiscoveryConfig::new(&role, &plan, health, None);
                let tracker = TaskTracker::new();
                let cancel = CancellationToken::new();
                let d = discovery::start(
                    cfg,
                    &AgentClient::plain().expect("client"),
                    &tracker,
                    &cancel,
                );
                tx.send(d.clone()).expect("send");
                stop2.cancelled().await;
                cancel.cancel();
                tracker.close();
                // Every task ends on cancel: a hang here fails the test.
                tokio::time::timeout(Duration::from_secs(20), tracker.wait())
                    .await
                    .expect("discovery tasks end on cancel");
            })
        });
        let handle: Discovery = rx.recv_timeout(WITHIN).expect("discovery started");
        Self {
            reports: handle.subscribe(),
            handle,
            stop,
            thread: Some(thread),
        }
    }

    fn report(&self) -> DiscoveryReport {
        self.reports.borrow().clone()
    }

    /// Polls the report until `pred` holds; panics with the last report.
    fn wait(&self, what: &str, pred: impl Fn(&DiscoveryReport) -> bool) -> DiscoveryReport {
        wait_for(WITHIN, || {
            let r = self.report();
            pred(&r).then_some(r)
        })
        .unwrap_or_else(|| panic!("no {what} within {WITHIN:?}: {:#?}", self.report()))
    }

    fn stop(mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            t.join().expect("discovery thread ended cleanly");
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// dnsmasq in namespace `ns` on `listen:53`, serving `records` only
/// (`--host-record`/`--srv-host` arguments); killed on drop.
struct Dnsmasq(Child);

impl Dnsmasq {
    fn start(ns: &str, listen: Ipv4Addr, records: &[String]) -> Self {
        let mut c = Command::new("ip");
        c.args([
            "netns",
            "exec",
            ns,
            "dnsmasq",
            "--keep-in-foreground",
            "--no-resolv",
        ])
        .args(["--no-hosts", "--conf-file=/dev/null", "--bind-interfaces"])
        .args(["--port=53", "--user=root", "--pid-file="])
        .arg(format!("--listen-address={listen}"))
        .args(records)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        Self(c.spawn().expect("start dnsmasq"))
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn peers_of(r: &DiscoveryReport, kind: PeerKind) -> Vec<(String, Source)> {
    r.records
        .iter()
        .filter(|p| p.kind == kind)
        .map(|p| (p.address.clone(), p.source))
        .collect()
}

/// A and SRV names from a real dnsmasq: Consul servers (LAN peers and
/// Consul choice candidates, the SRV port as their HTTP port), WAN peers
/// with the SRV port, Nomad servers; the first healthy Consul server is
/// chosen (the first candidate does not answer); `probe` gives the same.
#[test]
fn dns_a_and_srv_records_from_dnsmasq_become_peers_and_the_consul_choice() {
    if !can_run(&["dnsmasq"]) {
        return;
    }
    let topo = Topology::build(&["ams2"], &[node("ams2-client-01", 21)]).expect("topology");
    let ns = netns(&topo, "ams2-client-01");
    let me = ip(&topo, "ams2-client-01");
    let dns_ip = Ipv4Addr::new(127, 0, 0, 53);
    // Two "Consul servers" on this node's loopback: .31 answers nothing,
    // .32 answers as a Consul server with a leader.
    let (down, up) = (Ipv4Addr::new(10, 0, 1, 31), Ipv4Addr::new(10, 0, 1, 32));
    add_lo(&ns, down);
    add_lo(&ns, up);
    let records: Vec<String> = [
        "--host-record=consul.ams2.eu.hashi.test,10.0.1.31",
        "--host-record=consul.ams2.eu.hashi.test,10.0.1.32",
        "--srv-host=_consul-server._tcp.ams2.eu.hashi.test,srv1.ams2.eu.hashi.test,8501",
        "--host-record=srv1.ams2.eu.hashi.test,10.0.1.33",
        "--srv-host=_consul-wan._tcp.eu.hashi.test,lon1.eu.hashi.test,8302",
        "--host-record=lon1.eu.hashi.test,203.0.113.21",
        "--host-record=nomad.eu.hashi.test,10.0.1.41",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let _dns = Dnsmasq::start(&ns, dns_ip, &records);
    let text = format!(
        "schema = 1\nregion = \"eu\"\ndatacenter = \"ams2\"\n[discovery]\nmdns = false\n\
         [discovery.dns]\nnameserver = \"{dns_ip}\"\ninterval_secs = 5\n\
         consul_servers = [\"consul.ams2.eu.hashi.test\", \"_consul-server._tcp.ams2.eu.hashi.test\"]\n\
         consul_wan = [\"_consul-wan._tcp.eu.hashi.test\"]\n\
         nomad_servers = [\"nomad.eu.hashi.test\"]\n"
    );
    let r = role(
        &text,
        &["consul-server", "nomad-server"],
        "ams2-client-01",
        me,
    );
    let run = Running::start(&ns, r.clone(), 9110, Some(SocketAddr::new(up.into(), 8500)));
    let rep = run.wait("the DNS peers", |r| {
        r.peers.consul_lan.len() == 3
            && !r.peers.nomad_servers.is_empty()
            && !r.peers.consul_wan.is_empty()
    });
    assert_eq!(
        rep.peers.consul_lan,
        vec!["10.0.1.31", "10.0.1.32", "10.0.1.33"]
    );
    assert_eq!(rep.peers.consul_wan, vec!["203.0.113.21:8302"]);
    assert_eq!(rep.peers.nomad_servers, vec!["10.0.1.41"]);
    assert!(
        rep.records.iter().all(|p| p.source == Source::Dns),
        "{rep:#?}"
    );
    assert_eq!(peers_of(&rep, PeerKind::ConsulServer).len(), 3, "{rep:#?}");
    // This node runs Consul: no Consul choice.
    assert_eq!(rep.peers.consul_http, None);
    run.stop();

    // A Nomad client without Consul: the first healthy candidate in order
    // (10.0.1.31:8500 is down, 10.0.1.32:8500 answers).
    let client = role(
        &text.replace("consul_wan = [\"_consul-wan._tcp.eu.hashi.test\"]\n", ""),
        &["nomad-client"],
        "ams2-client-01",
        me,
    );
    let at_up = FakeLeader::start(&ns, SocketAddr::new(up.into(), 8500));
    let run = Running::start(&ns, client.clone(), 9110, None);
    let rep = run.wait("the Consul choice", |r| r.peers.consul_http.is_some());
    assert_eq!(
        rep.peers.consul_http.as_deref(),
        Some("10.0.1.32:8500"),
        "{rep:#?}"
    );
    assert!(rep.problems.is_empty(), "{rep:#?}");
    assert!(discovery::missing(&client, &rep).is_empty());
    // The chosen one dies and another answers: the choice moves.
    drop(at_up);
    let at_down = FakeLeader::start(&ns, SocketAddr::new(down.into(), 8500));
    run.wait("the choice moved to 10.0.1.31:8500", |r| {
        r.peers.consul_http.as_deref() == Some("10.0.1.31:8500")
    });
    // None left: a problem naming each and why; the last choice stays in
    // the plan (Nomad is not restarted into a config without Consul).
    drop(at_down);
    let rep = run.wait("no healthy Consul server", |r| {
        r.problems
            .iter()
            .any(|p| p.starts_with("no healthy Consul server of ams2"))
    });
    let p = rep.problems.join("\n");
    assert!(
        p.contains("no healthy Consul server of ams2")
            && p.contains("10.0.1.31:8500")
            && p.contains("10.0.1.32:8500"),
        "{rep:#?}"
    );
    assert_eq!(
        rep.peers.consul_http.as_deref(),
        Some("10.0.1.31:8500"),
        "{rep:#?}"
    );
    run.stop();
    let _at_up = FakeLeader::start(&ns, SocketAddr::new(up.into(), 8500));

    // `probe`: one bounded pass, the same peers.
    let probed = spawn_in(&ns, move || {
        runtime().block_on(discovery::probe(&client, Duration::from_secs(3)))
    })
    .join()
    .expect("probe thread");
    assert_eq!(
        probed.peers.consul_lan,
        vec!["10.0.1.31", "10.0.1.32", "10.0.1.33"]
    );
    assert_eq!(
        probed.peers.consul_http.as_deref(),
        Some("10.0.1.32:8500"),
        "{probed:#?}"
    );
}

/// A nameserver that never answers: a warning naming the name and the
/// server, errors counted again after the backoff, a bounded `probe`, and
/// every task ends on cancel.
#[test]
fn a_silent_nameserver_is_a_warning_with_backoff_and_never_a_hang() {
    if !can_run(&[]) {
        return;
    }
    let topo = Topology::build(&["ams2"], &[node("ams2-client-01", 21)]).expect("topology");
    let ns = netns(&topo, "ams2-client-01");
    let me = ip(&topo, "ams2-client-01");
    let silent = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 54)), 53);
    // Bound, never read: queries vanish.
    let _socket = spawn_in(&ns, move || {
        std::net::UdpSocket::bind(silent).expect("bind")
    })
    .join()
    .expect("bind thread");
    let text = format!(
        "schema = 1\nregion = \"eu\"\ndatacenter = \"ams2\"\n[discovery]\nmdns = false\n\
         [discovery.dns]\nnameserver = \"{}\"\ninterval_secs = 5\n\
         consul_servers = [\"consul.ams2.eu.hashi.test\"]\n",
        silent.ip()
    );
    let r = role(&text, &["nomad-client"], "ams2-client-01", me);
    let run = Running::start(&ns, r.clone(), 9110, None);
    let first = run.wait("a DNS error", |r| {
        r.errors.iter().any(|(s, n)| s == "dns" && *n >= 1)
    });
    let w = first.warnings.join("\n");
    assert!(
        w.contains("consul.ams2.eu.hashi.test") && w.contains("127.0.0.54:53"),
        "{first:#?}"
    );
    // Retried (after 1 s, then 2 s, ...): the count goes on.
    run.wait("a retried DNS pass", |r| {
        r.errors.iter().any(|(s, n)| s == "dns" && *n >= 3)
    });
    // The role waits for its Consul server and says where it looks.
    let m = discovery::missing(&r, &run.report());
    assert!(
        m.iter()
            .any(|m| m.contains("DNS consul.ams2.eu.hashi.test")),
        "{m:?}"
    );
    run.stop();

    let probed = spawn_in(&ns, move || {
        runtime().block_on(async move {
            tokio::time::timeout(
                Duration::from_secs(30),
                discovery::probe(&r, Duration::from_secs(1)),
            )
            .await
        })
    })
    .join()
    .expect("probe thread")
    .expect("probe is bounded");
    assert!(probed.peers.is_empty());
    assert!(!probed.warnings.is_empty(), "{probed:#?}");
}

/// The rogue's announcements: one with an unknown role, one whose
/// `consul_http` is not its own address, a node of another region.
fn rogue_announcements(ns: &str, addr: Ipv4Addr) -> (JoinHandle<()>, mpsc::Sender<()>) {
    let (tx, rx) = mpsc::channel::<()>();
    let h = spawn_in(ns, move || {
        let d = mdns_sd::ServiceDaemon::new().expect("rogue mdns");
        d.disable_interface(mdns_sd::IfKind::All).expect("disable");
        d.enable_interface(mdns_sd::IfKind::Addr(addr.into()))
            .expect("enable");
        let ty = "_hashi-sup._tcp.local.";
        let host = "ams2-rogue.local.";
        let bad_role: &[(&str, &str)] = &[
            ("v", "1"),
            ("node", "ams2-rogue"),
            ("region", "eu"),
            ("dc", "ams2"),
            ("roles", "consul-server,root"),
        ];
        let bad_http: &[(&str, &str)] = &[
            ("v", "1"),
            ("node", "ams2-rogue-2"),
            ("region", "eu"),
            ("dc", "ams2"),
            ("roles", "consul-server"),
            ("consul_http", "10.0.1.99:8500"),
        ];
        let foreign: &[(&str, &str)] = &[
            ("v", "1"),
            ("node", "us-server-01"),
            ("region", "us"),
            ("dc", "ams2"),
            ("roles", "nomad-server"),
        ];
        for (name, props) in [
            ("ams2-rogue", bad_role),
            ("ams2-rogue-2", bad_http),
            ("us-server-01", foreign),
        ] {
            let info = mdns_sd::ServiceInfo::new(ty, name, host, IpAddr::V4(addr), 9100, props)
                .expect("rogue record");
            d.register(info).expect("register");
        }
        let _ = rx.recv();
        let _ = d.shutdown();
    });
    (h, tx)
}

/// mDNS between two nodes of one datacenter: the client (role file with
/// no identity) learns region and datacenter from the Consul server's
/// announcement, chooses its Consul API, lists it with source mdns; the
/// server lists the client; a rogue's bad and foreign announcements are
/// warnings naming its address, never peers; when the server stops, the
/// client drops it.
#[test]
fn mdns_announcers_find_each_other_learn_identity_and_refuse_a_rogue() {
    if !can_run(&[]) {
        return;
    }
    let topo = Topology::build(
        &["ams2"],
        &[
            node("ams2-server-01", 11),
            node("ams2-client-01", 21),
            node("ams2-rogue", 66),
        ],
    )
    .expect("topology");
    let server_ip = ip(&topo, "ams2-server-01");
    let client_ip = ip(&topo, "ams2-client-01");
    let rogue_ip = ip(&topo, "ams2-rogue");
    let server_role = role(
        "schema = 1\nregion = \"eu\"\ndatacenter = \"ams2\"\nnode_name = \"ams2-server-01\"\n",
        &["consul-server", "nomad-server"],
        "ams2-server-01",
        server_ip,
    );
    assert!(
        server_role.discovery.mdns,
        "mDNS is on for a private address"
    );
    let client_role = role(
        "schema = 1\nnode_name = \"ams2-client-01\"\n",
        &["nomad-client"],
        "ams2-client-01",
        client_ip,
    );
    assert!(client_role.learnable.region && client_role.learnable.datacenter);

    let server = Running::start(
        &netns(&topo, "ams2-server-01"),
        server_role,
        9100,
        Some(SocketAddr::new(server_ip.into(), 8500)),
    );
    let client = Running::start(
        &netns(&topo, "ams2-client-01"),
        client_role.clone(),
        9100,
        None,
    );

    let rep = client.wait("identity and Consul from the server's announcement", |r| {
        r.learned.datacenter.is_some() && r.peers.consul_http.is_some()
    });
    assert_eq!(rep.learned.region.as_deref(), Some("eu"), "{rep:#?}");
    assert_eq!(rep.learned.datacenter.as_deref(), Some("ams2"));
    assert_eq!(rep.learned.from_node.as_deref(), Some("ams2-server-01"));
    assert_eq!(rep.peers.consul_http.as_deref(), Some("10.0.1.11:8500"));
    assert_eq!(rep.peers.nomad_servers, vec!["10.0.1.11"]);
    let s = rep
        .records
        .iter()
        .find(|p| p.kind == PeerKind::ConsulServer && p.source == Source::Mdns)
        .unwrap_or_else(|| panic!("{rep:#?}"));
    assert_eq!(s.address, "10.0.1.11");
    assert_eq!(s.node.as_deref(), Some("ams2-server-01"));
    assert!(
        discovery::missing(&client_role, &rep).is_empty(),
        "{rep:#?}"
    );
    // Not announced before its identity is settled: the server has not
    // seen it. The daemon takes what was learned (as `run` does).
    assert!(
        !server
            .report()
            .records
            .iter()
            .any(|p| p.address == "10.0.1.21"),
        "{:#?}",
        server.report()
    );
    let mut learned_role = client_role.clone();
    assert!(learned_role.learn(Some("eu"), Some("ams2")));
    client
        .handle
        .set_role(&learned_role, &Plan::from_role(&learned_role));

    let srep = server.wait("the client's announcement", |r| {
        r.records.iter().any(|p| p.address == "10.0.1.21")
    });
    let c = srep
        .records
        .iter()
        .find(|p| p.address == "10.0.1.21")
        .expect("client");
    assert_eq!(c.kind, PeerKind::Supervisor);
    assert!(
        srep.peers.consul_lan.is_empty(),
        "a Nomad client is no Consul peer: {srep:#?}"
    );

    // The rogue.
    let (rogue, stop_rogue) = rogue_announcements(&netns(&topo, "ams2-rogue"), rogue_ip);
    let rep = client.wait("warnings about the rogue", |r| {
        let w = r.warnings.join("\n");
        w.contains("root") && w.contains("10.0.1.99") && w.contains("us-server-01")
    });
    for w in rep
        .warnings
        .iter()
        .filter(|w| w.contains("ams2-rogue") || w.contains("us-server"))
    {
        assert!(w.contains("10.0.1.66"), "names the source address: {w}");
    }
    assert!(
        rep.warnings
            .iter()
            .any(|w| w.contains("us-server-01") && w.contains("region us")),
        "{rep:#?}"
    );
    assert!(
        !rep.records
            .iter()
            .any(|p| p.address.contains("10.0.1.66") || p.address.contains("10.0.1.99")),
        "no rogue peer: {rep:#?}"
    );
    assert_eq!(rep.peers.consul_http.as_deref(), Some("10.0.1.11:8500"));
    assert_eq!(rep.learned.datacenter.as_deref(), Some("ams2"));
    assert!(
        rep.errors.iter().any(|(s, n)| s == "mdns" && *n >= 2),
        "{rep:#?}"
    );
    let _ = stop_rogue.send(());
    rogue.join().expect("rogue thread");

    // The server leaves (its goodbye): the client drops it.
    server.stop();
    client.wait("the server gone", |r| {
        !r.records
            .iter()
            .any(|p| p.source == Source::Mdns && p.address == "10.0.1.11")
    });
    client.stop();
}

/// The join calls of `agent::consul` and `agent::nomad` against the
/// stand-in agents (which answer as the real ones do: the samples of
/// tests/data/agent-api, `nomad/agent_join.json` and the Consul notes).
#[tokio::test]
async fn agent_join_calls_work_against_the_stand_in_and_say_why_they_fail() {
    use hashi_supervisor::agent::consul::ConsulClient;
    use hashi_supervisor::agent::nomad::NomadClient;

    use crate::support::standin::{StandIn, free_port};

    let client = AgentClient::plain().expect("client");
    let api = |addr: String| client.endpoint_at(format!("http://{addr}"), Duration::from_secs(10));
    let a = StandIn::consul().server(1).node_name("consul-a").start();
    let b = StandIn::consul().node_name("consul-b").start();
    let w = StandIn::consul()
        .server(1)
        .datacenter("lon1")
        .node_name("consul-w")
        .start();
    let ca = ConsulClient::new(api(a.addr()));
    ca.join(&b.join_addr(), false).await.expect("LAN join");
    ca.join(&w.wan_join_addr(), true).await.expect("WAN join");
    let lan = tokio::task::spawn_blocking({
        let ca = ca.clone();
        move || {
            let rt = runtime();
            wait_for(WITHIN, || {
                let m = rt.block_on(ca.members(false)).ok()?;
                (m.iter().filter(|m| m.is_alive()).count() == 2).then_some(m)
            })
        }
    })
    .await
    .expect("poll");
    assert!(lan.is_some(), "consul-b joined consul-a's LAN");
    let wan = ca.members(true).await.expect("wan members");
    assert!(
        wan.iter().any(|m| m.name.starts_with("consul-w")),
        "{wan:?}"
    );
    // A client cannot join the WAN; a dead address is the agent's error.
    let e = ConsulClient::new(api(b.addr()))
        .join(&w.wan_join_addr(), true)
        .await
        .expect_err("a client joins no WAN");
    assert!(e.to_string().contains("500"), "{e}");
    let dead = format!("127.0.0.1:{}", free_port());
    let e = ca.join(&dead, false).await.expect_err("dead peer");
    assert!(
        e.one_line().contains(&dead) || e.to_string().contains("/v1/agent/join/"),
        "{e}"
    );

    let n1 = StandIn::nomad().node_name("nomad-1").start();
    let n2 = StandIn::nomad().server(0).node_name("nomad-2").start();
    let j = NomadClient::new(api(n1.addr()))
        .join(&[n2.join_addr()])
        .await
        .expect("nomad server join");
    assert_eq!(j.num_joined, 1);
    assert!(j.error.is_empty());
    // Nomad answers 200 with the error: an error here.
    let e = NomadClient::new(api(n1.addr()))
        .join(std::slice::from_ref(&dead))
        .await
        .expect_err("dead nomad peer");
    assert!(e.to_string().contains("200"), "{e}");
    let nc = StandIn::nomad().client().node_name("nomad-c").start();
    let ncc = NomadClient::new(api(nc.addr()));
    ncc.set_servers(&[n1.rpc_addr()])
        .await
        .expect("set servers");
    let e = NomadClient::new(api(nc.addr()))
        .join(&[n1.join_addr()])
        .await
        .expect_err("a client has no server join");
    assert!(e.to_string().contains("501"), "{e}");
}

/// Live joins: a Consul server's discovery asks its own agent (the
/// stand-in) to join the role file's LAN seed, counts the join, and warns
/// about a dead WAN seed, naming it, again after a backoff.
#[test]
fn live_joins_go_through_the_local_agent_and_a_dead_seed_is_warned() {
    use crate::support::standin::{StandIn, free_port};

    let local = StandIn::consul().server(1).node_name("local").start();
    let peer = StandIn::consul().node_name("peer").start();
    let http_port: u16 = local
        .addr()
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("port");
    let dead = format!("127.0.0.1:{}", free_port());
    let text = format!(
        "schema = 1\nregion = \"global\"\ndatacenter = \"dc1\"\n\
         [consul.extra]\nports = {{ http = {http_port} }}\n\
         [discovery]\nmdns = false\nconsul_retry_join = [\"{}\"]\n\
         consul_retry_join_wan = [\"{dead}\"]\n",
        peer.join_addr()
    );
    let r = role(
        &text,
        &["consul-server"],
        "local",
        Ipv4Addr::new(10, 213, 57, 11),
    );
    let plan = Plan::from_role(&r);
    assert_eq!(
        plan.agents[0].http_addr.port(),
        http_port,
        "the plan's Consul API is the stand-in's"
    );
    let rt = runtime();
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    let d = rt.block_on(async {
        discovery::start(
            DiscoveryConfig::new(&r, &plan, "127.0.0.1:9100".parse().expect("addr"), None),
            &AgentClient::plain().expect("client"),
            &tracker,
            &cancel,
        )
    });
    let poll = |what: &str, pred: &dyn Fn(&DiscoveryReport) -> bool| {
        rt.block_on(async {
            let deadline = tokio::time::Instant::now() + WITHIN;
            loop {
                let r = d.report();
                if pred(&r) {
                    return r;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no {what} within {WITHIN:?}: {r:#?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let rep = poll("a consul join", &|r| {
        r.joins.iter().any(|(a, n)| a == "consul" && *n >= 1)
    });
    assert!(
        !rep.warnings.iter().any(|w| w.contains(&peer.join_addr())),
        "{rep:#?}"
    );
    let rep = poll("a warning about the dead seed", &|r| {
        r.warnings.iter().any(|w| w.contains(&dead))
    });
    let first = rep
        .errors
        .iter()
        .find(|(s, _)| s == "join")
        .map(|e| e.1)
        .unwrap_or(0);
    assert!(first >= 1, "{rep:#?}");
    poll("the dead seed retried", &|r| {
        r.errors.iter().any(|(s, n)| s == "join" && *n > first)
    });
    // A new role (a SIGHUP) with one more seed: listed and joined live.
    let peer2 = StandIn::consul().node_name("peer2").start();
    let text2 = text.replace(
        &format!("consul_retry_join = [\"{}\"]", peer.join_addr()),
        &format!(
            "consul_retry_join = [\"{}\", \"{}\"]",
            peer.join_addr(),
            peer2.join_addr()
        ),
    );
    assert_ne!(text, text2);
    let r2 = role(
        &text2,
        &["consul-server"],
        "local",
        Ipv4Addr::new(10, 213, 57, 11),
    );
    d.set_role(&r2, &Plan::from_role(&r2));
    let rep = poll("the new seed joined", &|r| {
        r.joins.iter().any(|(a, n)| a == "consul" && *n >= 2)
    });
    assert!(
        rep.peers.consul_lan.contains(&peer2.join_addr()),
        "{rep:#?}"
    );
    cancel.cancel();
    tracker.close();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(20), tracker.wait())
            .await
            .expect("tasks end on cancel")
    });
}

/// Joins run each on its own: while the local agent holds one join open
/// (a seed that hangs), the next one is asked and counted.
#[test]
fn a_hanging_join_delays_no_other_join() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let rt = runtime();
    let hanging = Arc::new(AtomicBool::new(false));
    let second_while_hanging = Arc::new(AtomicBool::new(false));
    let (h, s2) = (hanging.clone(), second_while_hanging.clone());
    // The local "Consul": holds a join of 127.0.0.1:1 open forever,
    // answers a join of 127.0.0.1:2 at once.
    let port = rt.block_on(async move {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                let (h, s2) = (h.clone(), s2.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut b = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut b).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&b[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).to_string();
                    if head.contains("/v1/agent/join/127.0.0.1%3A1 ") {
                        h.store(true, Ordering::SeqCst);
                        // Never answers; the client gives up at its timeout.
                        let _ = s.read(&mut b).await;
                        h.store(false, Ordering::SeqCst);
                        return;
                    }
                    if head.contains("/v1/agent/join/127.0.0.1%3A2 ") {
                        s2.store(h.load(Ordering::SeqCst), Ordering::SeqCst);
                    }
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await;
                });
            }
        });
        port
    });
    let text = format!(
        "schema = 1\nregion = \"global\"\ndatacenter = \"dc1\"\n\
         [consul.extra]\nports = {{ http = {port} }}\n\
         [discovery]\nmdns = false\nconsul_retry_join = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n"
    );
    let r = role(
        &text,
        &["consul-client"],
        "local",
        Ipv4Addr::new(10, 213, 57, 21),
    );
    let plan = Plan::from_role(&r);
    let tracker = TaskTracker::new();
    let cancel = CancellationToken::new();
    let d = rt.block_on(async {
        discovery::start(
            DiscoveryConfig::new(&r, &plan, "127.0.0.1:9100".parse().expect("addr"), None),
            &AgentClient::plain().expect("client"),
            &tracker,
            &cancel,
        )
    });
    let joined = rt.block_on(async {
        let deadline = tokio::time::Instant::now() + WITHIN;
        while tokio::time::Instant::now() < deadline {
            if d.report()
                .joins
                .iter()
                .any(|(a, n)| a == "consul" && *n >= 1)
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    });
    assert!(joined, "{:#?}", d.report());
    assert!(
        second_while_hanging.load(Ordering::SeqCst),
        "the second join was asked while the first was held open"
    );
    cancel.cancel();
    tracker.close();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(20), tracker.wait())
            .await
            .expect("tasks end on cancel")
    });
}

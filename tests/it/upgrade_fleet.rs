//! Issue 20's "Done when", on the five reference nodes: real `supervisor`
//! binaries in network namespaces (`hashi_testrig::demo`), **stand-in**
//! agents (test support, never the real Consul or Nomad), the demo's mirror
//! served over HTTP from the ams2 router, releases signed with OpenPGP by a
//! key made for the run.
//!
//! - Every node is told at once (a new version published on the mirror,
//!   written into every role file, SIGHUP to all five): the Nomad servers
//!   of region `eu` restart one at a time, the leader last; each
//!   single-server Consul datacenter upgrades at once and says so; the
//!   Nomad clients restart only after the last Nomad server is back on the
//!   new version. Asserted from the stand-ins' membership log (every
//!   agent's up and down, with its version and the time in ms).
//! - A release that cannot start (`STANDIN_BROKEN_VERSIONS`) is rolled back
//!   by the first server to take its turn, the rollout pauses (the KV
//!   record), no other node starts it, `supervisor fleet` shows the pause,
//!   and deleting the record with the role files set back leaves the fleet
//!   healthy.
//!
//! Needs root and `ip` (network namespaces): a missing one fails the test.
//! Run with `cargo nextest run -E 'test(/upgrade_fleet::/)' --no-capture`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hashi_testrig::demo::{Demo, DemoOptions, SecureOptions, Security, reference_demo_nodes};
use hashi_testrig::soak::{EventLog, Membership, max_upgrade_down};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::support::standin::{HttpReply, http, standin_bin};
use crate::support::supervisor_bin;

/// The examples' versions (`config/examples/*.toml`): what the fleet runs
/// first.
const CONSUL_A: &str = "1.21.4";
const NOMAD_A: &str = "1.10.4";
/// Published during the test: the upgrade.
const CONSUL_B: &str = "1.21.5";
const NOMAD_B: &str = "1.10.5";
/// Published during the test and listed in `STANDIN_BROKEN_VERSIONS`: a
/// Nomad that exits 1 right after it starts.
const NOMAD_BROKEN: &str = "1.10.9";

/// The Nomad servers of region `eu` and the Consul servers (one per DC).
const NOMAD_SERVERS: [&str; 3] = ["ams2-server-01", "ams2-server-03", "lon1-server-01"];
const CONSUL_SERVERS: [&str; 2] = ["ams2-server-01", "lon1-server-01"];
const NOMAD_CLIENTS: [&str; 2] = ["ams2-client-01", "lon1-client-01"];
/// Where the Nomad rollout's lock and pause record live: the Consul server
/// of ams2 (the first DC of the WAN pool), seen from its own node.
const LOCK_NODE: &str = "ams2-server-01";
const LOCK_CONSUL: &str = "10.0.1.11:8500";
const NOMAD_PAUSE_KEY: &str = "hashi-supervisor/upgrade/paused/nomad/eu";

/// Debug supervisors on two shared cores: first readiness of all five.
const READY_WITHIN: Duration = Duration::from_secs(300);
/// The cluster formed after readiness (leaders, three Nomad servers).
const FORMED_WITHIN: Duration = Duration::from_secs(120);
/// The whole rollout: five nodes through the gate (2 s polls).
const ROLLOUT_WITHIN: Duration = Duration::from_secs(240);
/// Poll period of every wait (a poll, never a wait by itself).
const POLL: Duration = Duration::from_millis(250);

/// A running five-node demo and where its logs are.
struct Fleet {
    demo: Demo,
    work: PathBuf,
    _tmp: tempfile::TempDir,
}

fn membership_log(work: &Path) -> PathBuf {
    work.join("events/membership.log")
}

fn event_log(work: &Path, node: &str, product: &str) -> PathBuf {
    work.join("events").join(format!("{node}.{product}.log"))
}

/// Writes each agent's knob file (standin/README "Fault knobs": the
/// supervisor clears the agents' environment): its event log, the shared
/// membership log, and the versions that cannot start.
fn write_knobs(work: &Path, demo: &Demo, broken: &[&str]) {
    let events = work.join("events");
    std::fs::create_dir_all(&events).expect("create the event log dir");
    std::fs::set_permissions(&events, std::fs::Permissions::from_mode(0o755))
        .expect("chmod the event log dir");
    let open_file = |path: &Path| {
        std::fs::write(path, b"").expect("create a log file");
        // Written by the agents, which run as their own users.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
            .expect("chmod a log file");
    };
    open_file(&membership_log(work));
    for n in demo.nodes().iter().filter(|n| n.supervised) {
        let node_dir = n.role_file.parent().expect("role file in its node dir");
        for product in ["consul", "nomad"] {
            let log = event_log(work, &n.name, product);
            open_file(&log);
            let dir = node_dir.join("state/data").join(product);
            std::fs::create_dir_all(&dir).expect("create a data dir");
            let mut knobs = format!(
                "STANDIN_EVENT_LOG={}\nSTANDIN_MEMBERSHIP_LOG={}\n",
                log.display(),
                membership_log(work).display()
            );
            if !broken.is_empty() {
                let _ = writeln!(knobs, "STANDIN_BROKEN_VERSIONS={}", broken.join(","));
            }
            let file = dir.join("standin.env");
            std::fs::write(&file, knobs).expect("write a knob file");
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))
                .expect("chmod a knob file");
        }
    }
}

impl Fleet {
    /// The five reference nodes on the examples' versions, ready, the
    /// cluster formed.
    fn start(security: &Security, broken: &[&str]) -> Fleet {
        assert!(
            hashi_testrig::netns::is_available().is_ok(),
            "network namespaces are needed by this test (root, iproute2)"
        );
        let tmp = tempfile::Builder::new()
            .prefix("hashi-upgrade-fleet")
            .tempdir()
            .expect("temp dir");
        let work = tmp.path().to_path_buf();
        let opts = DemoOptions {
            supervisor: supervisor_bin(),
            standin: standin_bin(),
            examples_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/examples"),
            work_dir: work.join("demo"),
            forward_base_port: 0,
            nodes: reference_demo_nodes()
                .into_iter()
                .map(|n| n.deferred())
                .collect(),
            dns: Vec::new(),
            silent_nameservers: Vec::new(),
        };
        let mut demo = Demo::start_with(&opts, security).expect("start the demo");
        write_knobs(&work, &demo, broken);
        // Every node deferred: the knob files are in place before any agent
        // starts. A secure demo ran `cluster init` on its init node, which
        // starts first; the others join through its endpoint.
        let mut names = supervised(&demo);
        if let Security::Secure(secure) = security {
            demo.start_node(&secure.init_node)
                .expect("start the init node");
            if let Err(e) = demo.wait_join_endpoint(&secure.init_node, secure.init_within) {
                panic!("the init node's join endpoint: {e}");
            }
            names.retain(|n| *n != secure.init_node);
        }
        for n in &names {
            demo.start_node(n).expect("start a node");
        }
        let mut fleet = Fleet {
            demo,
            work,
            _tmp: tmp,
        };
        if let Err(e) = fleet.demo.wait_ready(READY_WITHIN) {
            fleet.fail(&format!("the five nodes never became ready: {e}"));
        }
        fleet.wait(
            "the cluster formed on the examples' versions",
            FORMED_WITHIN,
            |f| f.settled(CONSUL_A, NOMAD_A),
        );
        fleet
    }

    /// Why the fleet is not settled on these versions (`Err`): every node
    /// healthy, every agent running and ready on its version with no
    /// upgrade pending, the Consul servers with a leader and both WAN
    /// members, the Nomad servers with a leader and three alive.
    fn settled(&self, consul: &str, nomad: &str) -> Result<(), String> {
        let mut why = Vec::new();
        for node in supervised(&self.demo) {
            let st = match status(&self.demo, &node) {
                Ok(st) => st,
                Err(e) => {
                    why.push(format!("{node}: {e}"));
                    continue;
                }
            };
            if st["healthy"] != true {
                why.push(format!("{node}: not healthy"));
            }
            if !st["reload_error"].is_null() {
                why.push(format!("{node}: reload refused: {}", st["reload_error"]));
            }
            for a in st["agents"].as_array().into_iter().flatten() {
                let product = a["agent"].as_str().unwrap_or("?");
                let want = if product == "consul" { consul } else { nomad };
                if a["state"] != "running" || a["ready"] != true || a["version"] != want {
                    why.push(format!(
                        "{node}: {product} {} {} ready={} (want {want})",
                        a["state"], a["version"], a["ready"]
                    ));
                }
                if !a["upgrade"].is_null() {
                    why.push(format!("{node}: {product} upgrade {}", a["upgrade"]));
                }
                if a["server"] == true && product == "consul" {
                    let c = &a["consul"];
                    if c["leader"].as_str().unwrap_or("").is_empty() || c["wan_members"] != 2 {
                        why.push(format!(
                            "{node}: consul leader {} WAN members {}",
                            c["leader"], c["wan_members"]
                        ));
                    }
                }
                if a["server"] == true && product == "nomad" {
                    let m = &a["nomad"];
                    if m["leader"].as_str().unwrap_or("").is_empty() || m["members_alive"] != 3 {
                        why.push(format!(
                            "{node}: nomad leader {} servers alive {}",
                            m["leader"], m["members_alive"]
                        ));
                    }
                }
            }
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(why.join("\n  "))
        }
    }

    /// Polls `cond` until it gives `Ok`, failing the test after `within`
    /// with its last reason (and the logs), or as soon as a supervisor
    /// exits.
    fn wait<T>(
        &mut self,
        what: &str,
        within: Duration,
        mut cond: impl FnMut(&Fleet) -> Result<T, String>,
    ) -> T {
        let deadline = Instant::now() + within;
        loop {
            if let Some((node, st)) = self.demo.exited() {
                self.fail(&format!(
                    "waiting for {what}: the supervisor on {node} exited ({st})"
                ));
            }
            match cond(self) {
                Ok(v) => return v,
                Err(why) if Instant::now() >= deadline => {
                    self.fail(&format!("{what}: not within {within:?}:\n  {why}"));
                }
                Err(_) => std::thread::sleep(POLL),
            }
        }
    }

    /// Fails the test with what broke, the membership log and the tails of
    /// the supervisors' logs.
    fn fail(&self, what: &str) -> ! {
        let mut out = String::new();
        let members = std::fs::read_to_string(membership_log(&self.work)).unwrap_or_default();
        let _ = writeln!(out, "--- membership log\n{members}");
        for n in self.demo.nodes().iter().filter(|n| n.supervised) {
            let log = std::fs::read_to_string(&n.log_file).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let _ = writeln!(out, "--- {} ({})", n.name, n.log_file.display());
            for l in tail.into_iter().rev() {
                let _ = writeln!(out, "{l}");
            }
        }
        panic!("{what}\n{out}");
    }

    /// Sets `[product] version` in the role file of every node running
    /// `product` (each file replaced at once).
    fn set_version_everywhere(&self, product: &str, version: &str) {
        for n in self.demo.nodes().iter().filter(|n| n.supervised) {
            let text = std::fs::read_to_string(&n.role_file).expect("read a role file");
            let mut role: toml::Table = text.parse().expect("parse a role file");
            if let Some(toml::Value::Table(t)) = role.get_mut(product) {
                t.insert("version".into(), version.into());
                let tmp = n.role_file.with_extension("toml.tmp");
                let text = format!(
                    "# upgrade_fleet: {product} {version}\n{}",
                    toml::to_string(&role).expect("a role serialises")
                );
                std::fs::write(&tmp, text).expect("write a role file");
                std::fs::rename(&tmp, &n.role_file).expect("replace a role file");
            }
        }
    }

    /// SIGHUP to all five supervisors, one right after the other.
    fn sighup_all(&self) {
        for n in self.demo.nodes().iter().filter(|n| n.supervised) {
            let pid = n.pid().expect("the supervisor runs");
            kill(
                Pid::from_raw(i32::try_from(pid).expect("a pid fits")),
                Signal::SIGHUP,
            )
            .unwrap_or_else(|e| panic!("SIGHUP to the supervisor on {}: {e}", n.name));
        }
    }

    fn membership(&self) -> Vec<Membership> {
        Membership::parse_log(
            &std::fs::read_to_string(membership_log(&self.work)).unwrap_or_default(),
        )
    }

    /// An HTTP request from inside `node`'s namespace (where the agents'
    /// APIs listen).
    fn http_in(
        &self,
        node: &str,
        addr: &str,
        method: &str,
        path: &str,
    ) -> Result<HttpReply, String> {
        let ns = self
            .demo
            .node(node)
            .ok_or_else(|| format!("no node {node}"))?
            .netns
            .clone();
        let (addr, method, path) = (addr.to_string(), method.to_string(), path.to_string());
        hashi_testrig::netns::in_netns(&ns, move || {
            http(&addr, &method, &path, "")
                .map_err(|e| format!("{method} http://{addr}{path}: {e}"))
        })
        .map_err(|e| e.to_string())?
    }

    /// The Nomad leader's node name, as ams2-server-01's supervisor reports
    /// its Nomad's view (`/v1/status`: the leader's RPC address, mapped
    /// to the node holding that address).
    fn nomad_leader(&self) -> Result<String, String> {
        let st = status(&self.demo, LOCK_NODE)?;
        let leader = agent(&st, "nomad")
            .and_then(|a| a["nomad"]["leader"].as_str())
            .filter(|l| !l.is_empty())
            .ok_or("no Nomad leader in the status")?
            .to_string();
        let host = leader.rsplit_once(':').map_or(leader.as_str(), |(h, _)| h);
        self.demo
            .topology()
            .nodes()
            .iter()
            .find(|n| {
                n.private_ip.to_string() == host
                    || n.public_ip.is_some_and(|ip| ip.to_string() == host)
                    || host.split('.').next() == Some(n.name.as_str())
            })
            .map(|n| n.name.clone())
            .ok_or(format!("no node holds the Nomad leader's address {leader}"))
    }

    /// The Nomad rollout's pause record, if any (JSON).
    fn nomad_pause(&self) -> Result<Option<Value>, String> {
        let r = self.http_in(
            LOCK_NODE,
            LOCK_CONSUL,
            "GET",
            &format!("/v1/kv/{NOMAD_PAUSE_KEY}"),
        )?;
        match r.status {
            404 => Ok(None),
            200 => {
                let v: Value =
                    serde_json::from_str(&r.body).map_err(|e| format!("KV answer: {e}"))?;
                let b64 = v[0]["Value"].as_str().ok_or("KV entry without a value")?;
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| format!("KV value: {e}"))?;
                serde_json::from_slice(&raw)
                    .map(Some)
                    .map_err(|e| format!("pause record is not JSON: {e}"))
            }
            s => Err(format!("GET the pause record: {s} {}", r.body)),
        }
    }

    /// `supervisor fleet --targets <the five> <args>` run on `node`, as a
    /// user there would: (exit code, stdout).
    fn fleet_command(&self, node: &str, args: &[&str]) -> (i32, String) {
        let targets = self.work.join("fleet.txt");
        let mut list = String::from("# the five reference nodes\n");
        for n in self.demo.nodes().iter().filter(|n| n.supervised) {
            let _ = writeln!(list, "{}", n.private_ip);
        }
        std::fs::write(&targets, list).expect("write the targets file");
        let topo = self.demo.topology().node(node).expect("the node").clone();
        let out = topo
            .command(&supervisor_bin().display().to_string())
            .arg("fleet")
            .arg("--targets")
            .arg(&targets)
            .args(args)
            .output()
            .expect("run supervisor fleet");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
}

fn supervised(demo: &Demo) -> Vec<String> {
    demo.nodes()
        .iter()
        .filter(|n| n.supervised)
        .map(|n| n.name.clone())
        .collect()
}

fn status(demo: &Demo, node: &str) -> Result<Value, String> {
    let (code, body) = demo
        .get(node, "/v1/status", "application/json")
        .map_err(|e| e.to_string())?;
    if code != 200 {
        return Err(format!("/v1/status {code}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("/v1/status is not JSON: {e}"))
}

fn agent<'a>(st: &'a Value, product: &str) -> Option<&'a Value> {
    st["agents"]
        .as_array()?
        .iter()
        .find(|a| a["agent"] == product)
}

/// The times one agent was down to change version: `(down ms, up ms, from,
/// to)` per down/up pair of `(server?, product, node)` in `log`.
fn version_changes(
    log: &[Membership],
    product: &str,
    node: &str,
) -> Vec<(u64, u64, String, String)> {
    let mut out = Vec::new();
    let mut down: Option<&Membership> = None;
    for m in log
        .iter()
        .filter(|m| m.product == product && m.node == node)
    {
        match (m.up, down) {
            (false, None) => down = Some(m),
            (true, Some(d)) => {
                if d.version != m.version {
                    out.push((d.unix_ms, m.unix_ms, d.version.clone(), m.version.clone()));
                }
                down = None;
            }
            _ => {}
        }
    }
    out
}

#[test]
fn five_nodes_told_at_once_upgrade_servers_one_at_a_time_then_clients() {
    rolling_upgrade(&Security::Plaintext, "five nodes");
}

/// Issue 20's secure mode with the upgrade: TLS and ACLs everywhere
/// (`cluster init`, one join token). The supervisors take the locks and
/// read autopilot health with the tokens their nodes got; a refusal would
/// leave a node "waiting for" the gate until the rollout's deadline.
#[test]
fn the_same_rolling_upgrade_in_secure_mode_goes_through_with_the_supervisors_tokens() {
    rolling_upgrade(
        &Security::Secure(SecureOptions::default()),
        "five nodes, TLS + ACLs",
    );
}

/// The five nodes on version A, B published, every role file on B, SIGHUP
/// to all five: asserted from the membership log, then printed as a
/// BENCHMARKS.md line tagged `label`.
fn rolling_upgrade(security: &Security, label: &str) {
    let mut fleet = Fleet::start(security, &[]);
    if matches!(security, Security::Secure(_)) {
        for node in supervised(&fleet.demo) {
            let st = status(&fleet.demo, &node).unwrap_or_else(|e| fleet.fail(&e));
            if st["security"]["mode"] != "tls" {
                fleet.fail(&format!("{node} is not secured: {}", st["security"]));
            }
        }
    }
    let before = fleet.membership().len();
    let leader = fleet.wait("the Nomad leader", FORMED_WITHIN, Fleet::nomad_leader);

    // A new release of both agents on the site's mirror; every role file
    // asks for it; every supervisor told at once.
    fleet
        .demo
        .publish("consul", CONSUL_B)
        .expect("publish consul");
    fleet.demo.publish("nomad", NOMAD_B).expect("publish nomad");
    fleet.set_version_everywhere("consul", CONSUL_B);
    fleet.set_version_everywhere("nomad", NOMAD_B);
    let log_offsets: Vec<(String, PathBuf, u64)> = fleet
        .demo
        .nodes()
        .iter()
        .filter(|n| n.supervised)
        .map(|n| {
            let len = std::fs::metadata(&n.log_file).map_or(0, |m| m.len());
            (n.name.clone(), n.log_file.clone(), len)
        })
        .collect();
    let told = Instant::now();
    fleet.sighup_all();
    fleet.wait("every agent on the new version", ROLLOUT_WITHIN, |f| {
        f.settled(CONSUL_B, NOMAD_B)
    });
    let all_ready = told.elapsed();

    // The gate's requests (the lock's session and key, the slots, the
    // pause record, autopilot health) were never refused by the agents'
    // ACLs: the supervisors' tokens were enough (the stand-in logs each
    // refusal, and its log is in the supervisor's). Nomad's Raft
    // configuration and leadership transfer need a management token, which
    // no supervisor holds (SECURITY.md): the Nomad leader's hand-over may
    // be refused, and its restart elects a new leader instead.
    let mut refused = Vec::new();
    for (node, path, from) in &log_offsets {
        let text = std::fs::read(path).unwrap_or_default();
        let start = usize::try_from(*from).unwrap_or(0).min(text.len());
        for line in String::from_utf8_lossy(&text[start..]).lines() {
            let gate_path = ["/v1/kv/", "/v1/session/", "/v1/operator/autopilot/"]
                .iter()
                .any(|p| line.contains(&format!("path={p}")));
            if line.contains("refused by ACLs") && gate_path {
                refused.push(format!("{node}: {line}"));
            }
        }
    }
    if !refused.is_empty() {
        fleet.fail(&format!(
            "the gate's requests were refused by ACLs:\n  {}",
            refused.join("\n  ")
        ));
    }

    let log: Vec<Membership> = fleet.membership().split_off(before);
    let fail = |what: String| -> ! {
        let lines: Vec<String> = log
            .iter()
            .map(|m| {
                format!(
                    "{} {} {} {} {} {}",
                    if m.server { "server" } else { "client" },
                    if m.up { "up" } else { "down" },
                    m.product,
                    m.node,
                    m.version,
                    m.unix_ms
                )
            })
            .collect();
        fleet.fail(&format!(
            "{what}\nthe rollout's membership lines:\n  {}",
            lines.join("\n  ")
        ))
    };

    // Nomad: never two servers down at once; each server once, A to B;
    // the leader of the moment of the SIGHUP last.
    let servers: Vec<String> = NOMAD_SERVERS.map(String::from).to_vec();
    let (most, _) = max_upgrade_down(&log, "nomad", &servers);
    if most != 1 {
        fail(format!(
            "{most} Nomad servers were down at once for the upgrade (want 1)"
        ));
    }
    let mut nomad_order: Vec<(u64, u64, &str)> = Vec::new();
    for node in NOMAD_SERVERS {
        let changes = version_changes(&log, "nomad", node);
        match changes.as_slice() {
            [(down, up, from, to)] if from == NOMAD_A && to == NOMAD_B => {
                nomad_order.push((*down, *up, node));
            }
            other => fail(format!(
                "nomad on {node}: want one restart {NOMAD_A} -> {NOMAD_B}, got {other:?}"
            )),
        }
    }
    nomad_order.sort();
    let last_server = nomad_order.last().map(|x| x.2).unwrap_or_default();
    if last_server != leader {
        fail(format!(
            "the Nomad leader {leader} goes last; the order was {:?}",
            nomad_order.iter().map(|x| x.2).collect::<Vec<_>>()
        ));
    }
    let last_server_up = nomad_order.iter().map(|x| x.1).max().unwrap_or(0);

    // Consul: one server per DC, upgraded at once, saying so.
    for node in CONSUL_SERVERS {
        let changes = version_changes(&log, "consul", node);
        if !matches!(changes.as_slice(), [(_, _, from, to)] if from == CONSUL_A && to == CONSUL_B) {
            fail(format!(
                "consul on {node}: want one restart {CONSUL_A} -> {CONSUL_B}, got {changes:?}"
            ));
        }
        let sup_log = std::fs::read_to_string(&fleet.demo.node(node).expect("node").log_file)
            .unwrap_or_default();
        if !sup_log
            .lines()
            .any(|l| l.contains("single server") && l.contains("consul"))
        {
            fail(format!(
                "{node}'s log does not say its Consul DC has a single server"
            ));
        }
    }

    // Clients: each restarts once, and only after the last Nomad server
    // is back on the new version.
    for node in NOMAD_CLIENTS {
        let changes = version_changes(&log, "nomad", node);
        match changes.as_slice() {
            [(down, _, from, to)] if from == NOMAD_A && to == NOMAD_B => {
                if *down < last_server_up {
                    fail(format!(
                        "nomad client {node} went down at {down} ms, before the last server was back \
                         on {NOMAD_B} at {last_server_up} ms"
                    ));
                }
            }
            other => fail(format!(
                "nomad client {node}: want one restart {NOMAD_A} -> {NOMAD_B}, got {other:?}"
            )),
        }
    }

    // What a user sees: `supervisor fleet` from a client node.
    let (code, out) = fleet.fleet_command("ams2-client-01", &["--json"]);
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| {
        fleet.fail(&format!(
            "supervisor fleet --json (exit {code}): {e}\n{out}"
        ))
    });
    if code != 0 || report["counts"]["healthy"] != 5 {
        fleet.fail(&format!(
            "supervisor fleet: exit {code}, not five healthy nodes:\n{out}"
        ));
    }
    for n in report["nodes"].as_array().into_iter().flatten() {
        let st = &n["status"];
        for (product, want) in [("consul", CONSUL_B), ("nomad", NOMAD_B)] {
            let a = &st[product];
            if !a.is_null() && (a["version"] != want || !a["upgrade"].is_null()) {
                fleet.fail(&format!(
                    "supervisor fleet: {} {product} {} upgrade {} (want {want}, none pending)",
                    st["node"], a["version"], a["upgrade"]
                ));
            }
        }
    }

    // BENCHMARKS.md "Rolling upgrade": from the first agent down to the
    // last one up, and its floor (the agents' own down times, summed).
    let mut floor = 0;
    let mut per: BTreeMap<(String, String), u64> = BTreeMap::new();
    let nodes: Vec<String> = supervised(&fleet.demo);
    for node in &nodes {
        for product in ["consul", "nomad"] {
            for (down, up, _, _) in version_changes(&log, product, node) {
                floor += up - down;
                per.insert((node.clone(), product.into()), up - down);
            }
        }
    }
    let first_down = log
        .iter()
        .filter(|m| !m.up)
        .map(|m| m.unix_ms)
        .min()
        .unwrap_or(0);
    let last_up = log
        .iter()
        .filter(|m| m.up)
        .map(|m| m.unix_ms)
        .max()
        .unwrap_or(0);
    eprintln!("agents' own down times (ms): {per:?}");
    eprintln!(
        "rolling upgrade {label}: SIGHUP to all ready {:.1} s, first server down to last client up {:.1} s, floor {floor} ms",
        all_ready.as_secs_f64(),
        (last_up.saturating_sub(first_down)) as f64 / 1000.0
    );
    for (node, st) in fleet.demo.stop(Duration::from_secs(60)) {
        assert!(
            st.is_some_and(|s| s.success()),
            "the supervisor on {node} stopped badly: {st:?}"
        );
    }
}

#[test]
fn a_bad_release_is_rolled_back_and_the_rollout_pauses() {
    let mut fleet = Fleet::start(&Security::Plaintext, &[NOMAD_BROKEN]);
    let before = fleet.membership().len();

    // A Nomad release that exits at start, published and asked for by
    // every node at once.
    fleet
        .demo
        .publish("nomad", NOMAD_BROKEN)
        .expect("publish nomad");
    fleet.set_version_everywhere("nomad", NOMAD_BROKEN);
    fleet.sighup_all();

    // The first server to take its turn rolls back and pauses the rollout;
    // every node then waits on the pause.
    let record = fleet.wait("the rollout paused everywhere", ROLLOUT_WITHIN, |f| {
        let record = f.nomad_pause()?.ok_or("no pause record yet")?;
        let mut why = Vec::new();
        for node in supervised(&f.demo) {
            let st = status(&f.demo, &node)?;
            let nomad = agent(&st, "nomad").ok_or(format!("{node}: no nomad"))?;
            let waiting = nomad["upgrade"]["waiting_for"].as_str().unwrap_or("");
            if !waiting.starts_with("rollout paused: ") {
                why.push(format!("{node}: nomad upgrade {}", nomad["upgrade"]));
            }
            if nomad["ready"] != true || nomad["version"] != NOMAD_A {
                why.push(format!(
                    "{node}: nomad {} ready={}",
                    nomad["version"], nomad["ready"]
                ));
            }
        }
        if why.is_empty() {
            Ok(record)
        } else {
            Err(why.join("\n  "))
        }
    });
    let failed = record["node"].as_str().unwrap_or("").to_string();
    if !NOMAD_SERVERS.contains(&failed.as_str())
        || record["from"] != NOMAD_A
        || record["to"] != NOMAD_BROKEN
        || record["why"].as_str().unwrap_or("").is_empty()
    {
        fleet.fail(&format!("the pause record: {record}"));
    }

    // Only the node that took the turn ever started the broken release
    // (the stand-ins' event logs), and it runs the old one again.
    for node in supervised(&fleet.demo) {
        let runs = EventLog::read(&event_log(&fleet.work, &node, "nomad")).runs;
        let broken: Vec<_> = runs.iter().filter(|r| r.version == NOMAD_BROKEN).collect();
        if node == failed {
            if broken.is_empty() || broken.iter().any(|r| r.exit.is_none()) {
                fleet.fail(&format!("{node}: the broken release's runs {broken:?}"));
            }
            if runs
                .last()
                .is_none_or(|r| r.version != NOMAD_A || r.exit.is_some())
            {
                fleet.fail(&format!("{node}: not rolled back to {NOMAD_A}: {runs:?}"));
            }
        } else if !broken.is_empty() {
            fleet.fail(&format!(
                "{node} started the broken release too: {broken:?}"
            ));
        }
    }
    let st = status(&fleet.demo, &failed).unwrap_or_else(|e| fleet.fail(&e));
    let up = &agent(&st, "nomad").expect("nomad")["upgrade"];
    if up["installed"] != NOMAD_A
        || up["paused"]
            .as_str()
            .is_none_or(|p| !p.contains(&format!("failed on {failed}")))
    {
        fleet.fail(&format!("{failed}'s status: {up}"));
    }
    // The membership log: one server down and back on the old version, no
    // other Nomad server down, no client moved.
    let log: Vec<Membership> = fleet.membership().split_off(before);
    let nomad: Vec<&Membership> = log.iter().filter(|m| m.product == "nomad").collect();
    let downs: Vec<&&Membership> = nomad.iter().filter(|m| !m.up).collect();
    if downs.len() != 1
        || downs[0].node != failed
        || nomad.iter().any(|m| m.version != NOMAD_A)
        || nomad.iter().any(|m| !m.server)
    {
        fleet.fail(&format!(
            "nomad membership during the bad rollout: {nomad:?}"
        ));
    }

    // `supervisor fleet` on another node shows the pause, the node and why.
    let (_, out) = fleet.fleet_command("ams2-server-03", &[]);
    eprintln!("supervisor fleet on ams2-server-03 while the rollout is paused:\n{out}");
    if !out.contains("nomad rollout paused:")
        || !out.contains(&format!("failed on {failed}"))
        || !out.contains(&format!("rolled back to {NOMAD_A}"))
    {
        fleet.fail(&format!("supervisor fleet does not show the pause:\n{out}"));
    }

    // Resume as README "Upgrades" says: the role files back on the good
    // release, then the record deleted (the HTTP form of `consul kv delete`).
    fleet.set_version_everywhere("nomad", NOMAD_A);
    fleet.sighup_all();
    let r = fleet
        .http_in(
            LOCK_NODE,
            LOCK_CONSUL,
            "DELETE",
            &format!("/v1/kv/{NOMAD_PAUSE_KEY}"),
        )
        .unwrap_or_else(|e| fleet.fail(&e));
    if r.status != 200 {
        fleet.fail(&format!("DELETE the pause record: {} {}", r.status, r.body));
    }
    fleet.wait(
        "the fleet healthy after the pause is cleared",
        ROLLOUT_WITHIN,
        |f| {
            if f.nomad_pause()?.is_some() {
                return Err("the pause record is back".into());
            }
            f.settled(CONSUL_A, NOMAD_A)
        },
    );
    let (code, out) = fleet.fleet_command("ams2-client-01", &[]);
    if code != 0 || out.contains("rollout paused") {
        fleet.fail(&format!(
            "supervisor fleet after the resume: exit {code}\n{out}"
        ));
    }
    for (node, st) in fleet.demo.stop(Duration::from_secs(60)) {
        assert!(
            st.is_some_and(|s| s.success()),
            "the supervisor on {node} stopped badly: {st:?}"
        );
    }
}

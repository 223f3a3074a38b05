//! Rolling upgrades (issue 20) through the real `supervisor run` and the
//! stand-in Consul server: a single-server cluster upgrades at once
//! through the gate (its lock taken and given back in the stand-in's KV
//! store), a release that cannot start is rolled back and the rollout
//! pauses (the KV record, `/v1/status`), and a restarted supervisor stays
//! pinned on its installed release while the rollout is paused.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use hashi_supervisor::health::StatusDoc;
use hashi_testrig::mirror::BuiltMirror;
use nix::sys::signal::Signal;

use crate::support::node::{DEADLINE, Ports, Supervisor, node_root, standin_mirror};
use crate::support::standin::{http, wait_for};

const V1: &str = "1.21.4";
const V2: &str = "1.21.5";
/// Listed in `STANDIN_BROKEN_VERSIONS`: exits 1 right after start.
const BROKEN: &str = "1.21.9";
const PAUSED_KEY: &str = "hashi-supervisor/upgrade/paused/consul/ams2";
const LOCK_KEY: &str = "hashi-supervisor/upgrade/consul/ams2/lock";

/// A signed mirror holding the stand-in as Consul [`V1`], [`V2`] and
/// [`BROKEN`] (built once).
fn mirror() -> &'static BuiltMirror {
    static MIRROR: OnceLock<(tempfile::TempDir, BuiltMirror)> = OnceLock::new();
    &MIRROR
        .get_or_init(|| standin_mirror(&[("consul", &[V1, V2, BROKEN])]))
        .1
}

/// ams2-server-01 as a single Consul server asking for `version`.
fn role(root: &Path, ports: Ports, version: &str) -> String {
    consul_server_role(root, ports, version, 20, mirror())
}

/// ams2-server-01 as a single Consul server asking for `version` from
/// mirror `m`, with `[upgrade] health_deadline_secs = deadline` (also the
/// rollout tests').
pub(crate) fn consul_server_role(
    root: &Path,
    ports: Ports,
    version: &str,
    deadline: u64,
    m: &BuiltMirror,
) -> String {
    format!(
        r#"schema = 1
roles = ["consul-server"]
region = "eu"
datacenter = "ams2"
node_name = "ams2-server-01"

[addresses]
bind = "127.0.0.1"
private = "127.0.0.1"

[consul]
version = "{version}"
bootstrap_expect = 1
stop_timeout_secs = 10

[consul.extra.ports]
http = {ch}
serf_lan = {csl}
serf_wan = {csw}
server = {cs}

[release]
mirror = "file://{mirror}"
trust_hashicorp_key = false
trusted_key_files = ["{key}"]

[health]
listen = "127.0.0.1:{hp}"

[paths]
config_dir = "{etc}"
state_dir = "{state}"

[security]
plaintext = true

[upgrade]
health_deadline_secs = {deadline}
lock_ttl_secs = 10
"#,
        ch = ports.consul_http,
        csl = ports.consul_serf_lan,
        csw = ports.consul_serf_wan,
        cs = ports.consul_server,
        mirror = m.root.display(),
        key = m.public_key.display(),
        hp = ports.health,
        etc = root.join("etc").display(),
        state = root.join("state").display(),
    )
}

/// The supervisor's `/v1/status` on its health port (also the rollout
/// tests').
pub(crate) fn status(ports: Ports) -> Option<StatusDoc> {
    let r = http(
        &format!("127.0.0.1:{}", ports.health),
        "GET",
        "/v1/status",
        "",
    )
    .ok()?;
    serde_json::from_str(&r.body).ok()
}

/// Polls `/v1/status` until `pred` holds on the consul agent's entry.
fn wait_status(
    sup: &mut Supervisor,
    ports: Ports,
    what: &str,
    pred: impl Fn(&hashi_supervisor::health::handlers::AgentDoc) -> bool,
) -> StatusDoc {
    let mut last = None;
    wait_for(DEADLINE, || {
        sup.assert_running(what);
        let doc = status(ports)?;
        let ok = doc.agents.iter().any(|a| a.agent == "consul" && pred(a));
        last = Some(format!(
            "{:?}",
            doc.agents
                .first()
                .map(|a| (&a.state, &a.version, &a.upgrade))
        ));
        ok.then_some(doc)
    })
    .unwrap_or_else(|| panic!("{what}: last {last:?}\nlog:\n{}", sup.log()))
}

/// The stand-in Consul's KV entry `key` (`None`: absent), as (session
/// holding it, value).
fn kv(ports: Ports, key: &str) -> Option<(Option<String>, String)> {
    let r = http(
        &format!("127.0.0.1:{}", ports.consul_http),
        "GET",
        &format!("/v1/kv/{key}"),
        "",
    )
    .ok()?;
    if r.status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&r.body).ok()?;
    let e = v.get(0)?;
    let value = e
        .get("Value")
        .and_then(|x| x.as_str())
        .map(base64_decode)
        .unwrap_or_default();
    let session = e
        .get("Session")
        .and_then(|s| s.as_str())
        .map(str::to_string);
    Some((session, value))
}

/// Standard base64 (Consul's KV values), enough for a test.
fn base64_decode(s: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|c| *c != b'=') {
        let Some(i) = A.iter().position(|a| *a == c) else {
            continue;
        };
        acc = ((acc << 6) | u32::try_from(i).expect("an index below 64")) & 0xffff;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).expect("masked to a byte"));
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn current(root: &Path) -> Option<PathBuf> {
    std::fs::read_link(root.join("state/releases/consul/current")).ok()
}

#[test]
fn a_single_server_upgrades_through_the_gate_a_bad_release_pauses_the_rollout_and_a_restart_stays_pinned()
 {
    let root = node_root();
    let ports = Ports::free();
    let membership = root.path().join("membership.log");
    // The stand-in's knobs reach an agent started with a clean environment
    // through `standin.env` in its data dir.
    let data = root.path().join("state/data/consul");
    std::fs::create_dir_all(&data).unwrap();
    // Written by the agent, which may run as the `consul` user.
    std::fs::write(&membership, "").unwrap();
    std::fs::set_permissions(&membership, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::fs::write(
        data.join("standin.env"),
        format!(
            "STANDIN_BROKEN_VERSIONS={BROKEN}\nSTANDIN_MEMBERSHIP_LOG={}\n",
            membership.display()
        ),
    )
    .unwrap();
    let text = role(root.path(), ports, V1);
    let rp = root.path().to_path_buf();
    let mut sup = Supervisor::start(root, &text, &[]);
    wait_status(&mut sup, ports, "v1 ready", |a| {
        a.ready && a.version.as_deref() == Some(V1) && a.upgrade.is_none()
    });

    // SIGHUP onto V2: a single-server cluster goes at once, through the
    // lock, and gives it back.
    std::fs::write(&sup.role_file, role(&rp, ports, V2)).unwrap();
    sup.signal(Signal::SIGHUP);
    wait_status(&mut sup, ports, "v2 ready", |a| {
        a.ready && a.version.as_deref() == Some(V2) && a.upgrade.is_none()
    });
    assert_eq!(current(&rp), Some(PathBuf::from(V2)));
    let log = sup.log();
    assert!(log.contains("upgrade turn taken"), "{log}");
    assert!(log.contains("single server"), "{log}");
    let lock = wait_for(DEADLINE, || {
        kv(ports, LOCK_KEY).filter(|(s, _)| s.is_none())
    });
    assert!(
        lock.is_some(),
        "the lock was given back: {:?}",
        kv(ports, LOCK_KEY)
    );
    let members = std::fs::read_to_string(&membership).unwrap_or_default();
    let ups: Vec<&str> = members
        .lines()
        .filter(|l| l.starts_with("server-up consul"))
        .collect();
    assert!(
        ups.iter().any(|l| l.contains(V1)) && ups.iter().any(|l| l.contains(V2)),
        "{members}"
    );

    // A release that cannot start: rolled back to V2, the rollout paused
    // in KV and in the status, `current` back on V2.
    std::fs::write(&sup.role_file, role(&rp, ports, BROKEN)).unwrap();
    sup.signal(Signal::SIGHUP);
    let doc = wait_status(&mut sup, ports, "rolled back and paused", |a| {
        a.ready
            && a.version.as_deref() == Some(V2)
            && a.upgrade.as_ref().is_some_and(|u| u.paused.is_some())
    });
    let u = doc.agents[0].upgrade.clone().unwrap();
    assert_eq!(u.installed.as_deref(), Some(V2));
    assert_eq!(u.wanted.as_deref(), Some(BROKEN));
    assert!(
        u.paused
            .as_deref()
            .unwrap()
            .contains("rolled back to 1.21.5"),
        "{u:?}"
    );
    let (_, record) = kv(ports, PAUSED_KEY).expect("the pause record");
    let record: serde_json::Value = serde_json::from_str(&record).unwrap();
    assert_eq!(record["node"], "ams2-server-01");
    assert_eq!(record["to"], BROKEN);
    assert_eq!(record["from"], V2);
    assert_eq!(current(&rp), Some(PathBuf::from(V2)));
    // Paused: the node waits at the gate and says why.
    wait_status(&mut sup, ports, "waiting on the pause", |a| {
        a.upgrade
            .as_ref()
            .and_then(|u| u.waiting_for.as_deref())
            .is_some_and(|w| w.starts_with("rollout paused: "))
    });

    // A restart of the supervisor (a package upgrade, a reboot) keeps the
    // installed V2 although the role file asks for BROKEN: pinned.
    assert!(sup.stop().success());
    let mut sup = Supervisor::start(
        tempfile::TempDir::new_in(&rp).unwrap(),
        &role(&rp, ports, BROKEN),
        &[],
    );
    let doc = wait_status(&mut sup, ports, "pinned on v2, paused", |a| {
        a.ready
            && a.version.as_deref() == Some(V2)
            && a.upgrade
                .as_ref()
                .and_then(|u| u.waiting_for.as_deref())
                .is_some_and(|w| w.starts_with("rollout paused: "))
    });
    assert_eq!(doc.agents[0].restarts, 0, "started once, on V2");
    assert!(sup.log().contains("(pinned)"), "{}", sup.log());
    assert!(sup.stop().success());
}

/// Nomad versions of the three-server test.
const N1: &str = "1.10.4";
const N2: &str = "1.10.5";

/// A signed mirror with Consul [`V1`] and Nomad [`N1`], [`N2`].
fn nomad_mirror() -> &'static BuiltMirror {
    static MIRROR: OnceLock<(tempfile::TempDir, BuiltMirror)> = OnceLock::new();
    &MIRROR
        .get_or_init(|| {
            standin_mirror(&[
                ("consul", &[crate::support::node::CONSUL_VERSION]),
                ("nomad", &[N1, N2]),
            ])
        })
        .1
}

/// The role of one of three Nomad servers of region `eu` (the first also
/// the Consul server holding the lock), on [`nomad_mirror`], asking for
/// Nomad `version`.
fn nomad_role(i: usize, root: &Path, ports: &[Ports], version: &str) -> String {
    use crate::support::node::{NOMAD_VERSION, RoleFile};
    let roles: &[&str] = match i {
        0 => &["consul-server", "nomad-server"],
        1 | 2 => &["nomad-server"],
        _ => &["nomad-client"],
    };
    let joins: Vec<String> = ports[..3]
        .iter()
        .map(|p| format!("\"127.0.0.1:{}\"", p.nomad_serf))
        .collect();
    let name = if i < 3 {
        format!("ams2-server-0{}", i + 1)
    } else {
        "ams2-client-01".to_string()
    };
    let text = RoleFile::new(&name, "ams2", roles, ports[i])
        .bootstrap_expect(1, 3)
        .tables(&format!(
            "[discovery]\n{}nomad_retry_join = [{}]\n\n\
             [upgrade]\nhealth_deadline_secs = 30\nlock_ttl_secs = 10\n",
            if i == 0 {
                String::new()
            } else {
                format!("consul_address = \"127.0.0.1:{}\"\n", ports[0].consul_http)
            },
            joins.join(", ")
        ))
        .render(root);
    let shared = crate::support::node::mirror();
    let mine = nomad_mirror();
    text.replace(
        &shared.root.display().to_string(),
        &mine.root.display().to_string(),
    )
    .replace(
        &shared.public_key.display().to_string(),
        &mine.public_key.display().to_string(),
    )
    .replace(
        &format!("version = \"{NOMAD_VERSION}\""),
        &format!("version = \"{version}\""),
    )
}

/// `(event, node, version, unix_ms)` of the Nomad lines of the membership
/// log, in time order.
fn nomad_membership(log: &Path) -> Vec<(String, String, String, u64)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut v: Vec<(String, String, String, u64)> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 5 && f[1] == "nomad").then(|| {
                (
                    f[0].to_string(),
                    f[2].to_string(),
                    f[3].to_string(),
                    f[4].parse().unwrap_or(0),
                )
            })
        })
        .collect();
    v.sort_by_key(|e| e.3);
    v
}

#[test]
fn three_nomad_servers_and_a_client_told_at_once_upgrade_one_server_at_a_time_the_leader_last_the_client_after()
 {
    // Three servers, and a client that goes after them.
    let ports: [Ports; 4] = [Ports::free(), Ports::free(), Ports::free(), Ports::free()];
    let membership = tempfile::NamedTempFile::new().unwrap();
    std::fs::set_permissions(membership.path(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let mut sups = Vec::new();
    for i in 0..4 {
        let root = node_root();
        let data = root.path().join("state/data/nomad");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(
            data.join("standin.env"),
            format!("STANDIN_MEMBERSHIP_LOG={}\n", membership.path().display()),
        )
        .unwrap();
        let rp = root.path().to_path_buf();
        let text = nomad_role(i, &rp, &ports, N1);
        sups.push((Supervisor::start(root, &text, &[]), rp));
    }
    let nomad_ready = |sup: &mut Supervisor, p: Ports, v: &str, what: &str| {
        let mut last = None;
        wait_for(DEADLINE, || {
            sup.assert_running(what);
            let doc = status(p)?;
            let a = doc.agents.iter().find(|a| a.agent == "nomad")?;
            last = Some(format!("{:?}", (&a.state, &a.version, &a.upgrade)));
            (a.ready && a.version.as_deref() == Some(v) && a.upgrade.is_none()).then_some(())
        })
        .unwrap_or_else(|| panic!("{what}: last {last:?}\nlog:\n{}", sup.log()));
    };
    for (i, (sup, _)) in sups.iter_mut().enumerate() {
        nomad_ready(sup, ports[i], N1, "n1 ready");
    }
    // A formed cluster of three: tolerance 1, a leader.
    let leader = wait_for(DEADLINE, || {
        let r = http(
            &format!("127.0.0.1:{}", ports[0].nomad_http),
            "GET",
            "/v1/operator/autopilot/health",
            "",
        )
        .ok()?;
        let h: serde_json::Value = serde_json::from_str(&r.body).ok()?;
        (h["FailureTolerance"] == 1 && h["Servers"].as_array()?.len() == 3)
            .then(|| {
                h["Servers"].as_array().and_then(|s| {
                    s.iter()
                        .find(|x| x["Leader"] == true)
                        .and_then(|x| x["Name"].as_str())
                        .map(str::to_string)
                })
            })
            .flatten()
    })
    .expect("three Nomad servers with a leader and failure tolerance 1");
    let before = nomad_membership(membership.path()).len();

    // All three told at once.
    for (i, (sup, rp)) in sups.iter().enumerate() {
        std::fs::write(&sup.role_file, nomad_role(i, rp, &ports, N2)).unwrap();
    }
    let told = std::time::Instant::now();
    for (sup, _) in &sups {
        sup.signal(Signal::SIGHUP);
    }
    for (i, (sup, _)) in sups.iter_mut().enumerate() {
        nomad_ready(sup, ports[i], N2, "n2 ready");
    }
    let all_ready = told.elapsed();

    // Never more than one server down; one restart each; the leader last.
    let events = nomad_membership(membership.path());
    let rollout = &events[before..];
    let mut down = std::collections::BTreeSet::new();
    let mut most = 0;
    let mut order = Vec::new();
    for (ev, node, _, _) in rollout {
        match ev.as_str() {
            "server-down" => {
                down.insert(node.clone());
                order.push(node.clone());
            }
            "server-up" => {
                down.remove(node);
            }
            _ => {}
        }
        most = most.max(down.len());
    }
    // BENCHMARKS.md "Rolling upgrade": the rollout against its floor (the
    // sum of each server's own down time).
    let mut floor = 0;
    let mut since = std::collections::BTreeMap::new();
    for (ev, node, _, ms) in rollout {
        match ev.as_str() {
            "server-down" => {
                since.insert(node.clone(), *ms);
            }
            "server-up" => {
                if let Some(d) = since.remove(node) {
                    floor += ms.saturating_sub(d);
                }
            }
            _ => {}
        }
    }
    let span = rollout.last().map_or(0, |e| e.3) - rollout.first().map_or(0, |e| e.3);
    eprintln!(
        "rolling upgrade of 3 nomad servers and a client: sighup to all ready {} ms, first down to last up {span} ms, floor (sum of down times) {floor} ms",
        all_ready.as_millis()
    );
    assert_eq!(most, 1, "at most one server down at a time: {rollout:?}");
    assert_eq!(order.len(), 3, "each server restarted once: {rollout:?}");
    let leader_node = leader.split('.').next().unwrap_or(&leader).to_string();
    assert!(
        order.last().is_some_and(|n| n.starts_with(&leader_node)),
        "the leader {leader} goes last: {order:?}"
    );
    // The client after every server: its new run started after the last
    // server came back (seconds, as /v1/status gives it).
    let last_up_ms = rollout
        .iter()
        .filter(|e| e.0 == "server-up")
        .map(|e| e.3)
        .max()
        .unwrap_or(0);
    let client = status(ports[3]).expect("the client's status");
    let since = client
        .agents
        .iter()
        .find(|a| a.agent == "nomad")
        .and_then(|a| a.since_unix)
        .expect("the client's nomad runs");
    assert!(
        since >= last_up_ms / 1000,
        "client restarted at {since}, last server up at {last_up_ms} ms"
    );
    for (sup, _) in &mut sups {
        assert!(sup.stop().success());
    }
}

// ------------------------------------------------------------ the gate ---
//
// The gate itself (`hashi_supervisor::upgrade::Gate`) against stand-in
// Consul agents over real HTTP: clients waiting on a held slot, the
// region's lock datacenter seen through a client agent, a lost lock.

mod gate {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use hashi_supervisor::agent::AgentClient;
    use hashi_supervisor::agent::consul::ConsulClient;
    use hashi_supervisor::agent::kv::SessionRequest;
    use hashi_supervisor::role::UpgradeRole;
    use hashi_supervisor::upgrade::{Gate, GateNode};
    use hashi_supervisor::vocab::Product;

    use crate::support::standin::{StandIn, wait_for};

    /// The stand-in Consul's default version: the servers are "on" it.
    const ON: &str = "1.20.1";
    const WITHIN: Duration = Duration::from_secs(60);
    const CONSUL_SLOT: &str = "hashi-supervisor/upgrade/clients/consul/ams2/slot-0";
    const NOMAD_SLOT: &str = "hashi-supervisor/upgrade/clients/nomad/ams2/slot-0";
    const LOCK: &str = "hashi-supervisor/upgrade/consul/ams2/lock";
    /// Sessions the gate makes are named so.
    const GATE_SESSION: &str = "hashi-supervisor upgrade ";

    fn consul(addr: &str) -> ConsulClient {
        let c = AgentClient::plain().expect("client");
        ConsulClient::new(c.endpoint_at(format!("http://{addr}"), Duration::from_secs(5)))
    }

    fn settings() -> UpgradeRole {
        UpgradeRole {
            client_share: 0.1,
            health_deadline: Duration::from_secs(10),
            lock_ttl: Duration::from_secs(10),
        }
    }

    /// A gate of region `eu` for `node` of `datacenter`, `servers` =
    /// (Consul server, Nomad server), asking Consul (also for its KV)
    /// through `c`.
    fn eu_gate(
        node: &str,
        datacenter: &str,
        servers: (bool, bool),
        c: &ConsulClient,
        nomad: Option<hashi_supervisor::agent::nomad::NomadClient>,
    ) -> Gate {
        Gate::new(
            GateNode {
                node: node.into(),
                region: "eu".into(),
                datacenter: datacenter.into(),
                consul_server: servers.0,
                nomad_server: servers.1,
                consul: Some(c.clone()),
                nomad,
                kv: Some(c.clone()),
            },
            settings(),
        )
    }

    fn client_gate(name: &str, agent: &StandIn) -> Gate {
        let c = consul(&agent.addr());
        eu_gate(name, "ams2", (false, false), &c, None).with_poll(Duration::from_millis(200))
    }

    /// A session of the test's own (a long TTL: it never lapses here).
    async fn test_session(c: &ConsulClient, name: &str) -> String {
        c.session_create(
            None,
            &SessionRequest {
                name: name.into(),
                ttl: Duration::from_secs(3600),
                behavior_delete: false,
                lock_delay: Duration::ZERO,
                node: None,
                node_checks: Some(vec![]),
            },
        )
        .await
        .expect("a test session")
    }

    /// `(id, holder)` of every session the gates made (the holder is in
    /// the session's name).
    fn gate_sessions(rt: &tokio::runtime::Runtime, c: &ConsulClient) -> BTreeSet<(String, String)> {
        gate_session_fields(rt, c, "Name")
            .into_iter()
            .map(|(id, name)| (id, name.trim_start_matches(GATE_SESSION).to_string()))
            .collect()
    }

    /// `(id, field)` of every session the gates made.
    fn gate_session_fields(
        rt: &tokio::runtime::Runtime,
        c: &ConsulClient,
        field: &str,
    ) -> BTreeSet<(String, String)> {
        let r = rt
            .block_on(c.endpoint().get("/v1/session/list", &[200]))
            .expect("session list");
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("session list json");
        v.as_array()
            .expect("a list")
            .iter()
            .filter(|s| {
                s["Name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(GATE_SESSION))
            })
            .map(|s| {
                (
                    s["ID"].as_str().unwrap_or("").to_string(),
                    s[field].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    }

    /// What each waiting gate last reported, who is through, how many
    /// hold a turn at once.
    #[derive(Default)]
    struct Board {
        latest: Mutex<BTreeMap<usize, String>>,
        done: Mutex<BTreeSet<usize>>,
        keys: Mutex<Vec<String>>,
        holding: AtomicUsize,
        most: AtomicUsize,
    }

    impl Board {
        fn all_say(&self, who: &[usize], text: &str) -> bool {
            let l = self.latest.lock().expect("the board");
            who.iter()
                .all(|i| l.get(i).is_some_and(|w| w.contains(text)))
        }
    }

    /// Gate `i` waits for its turn, holds it until every other gate still
    /// waiting has looked and seen it held, then gives it back.
    fn run_gate(
        rt: &tokio::runtime::Runtime,
        gate: Arc<Gate>,
        i: usize,
        name: String,
        board: Arc<Board>,
    ) -> tokio::task::JoinHandle<()> {
        rt.spawn(async move {
            let wanted = semver::Version::parse(ON).expect("a version");
            let b = board.clone();
            let report = move |w: Option<String>| {
                if let Some(w) = w {
                    b.latest.lock().expect("the board").insert(i, w);
                }
            };
            let turn = gate.acquire(Product::Consul, &wanted, &report).await;
            let now = board.holding.fetch_add(1, Ordering::SeqCst) + 1;
            board.most.fetch_max(now, Ordering::SeqCst);
            board
                .keys
                .lock()
                .expect("the board")
                .push(turn.key().unwrap_or("").to_string());
            let deadline = tokio::time::Instant::now() + WITHIN;
            loop {
                let others: Vec<usize> = {
                    let done = board.done.lock().expect("the board");
                    let latest = board.latest.lock().expect("the board");
                    latest
                        .keys()
                        .copied()
                        .filter(|j| *j != i && !done.contains(j))
                        .collect()
                };
                if board.all_say(&others, &format!("held by {name}")) {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the others never saw {name} holding: {:?}",
                    board.latest.lock().expect("the board")
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            board.holding.fetch_sub(1, Ordering::SeqCst);
            board.done.lock().expect("the board").insert(i);
            gate.settle(turn, Duration::from_secs(10))
                .await
                .expect("a client settles at once");
        })
    }

    /// `gate` waiting for its turn on its own task; what it last said.
    fn spawn_acquire(
        rt: &tokio::runtime::Runtime,
        gate: &Arc<Gate>,
        product: Product,
        wanted: &semver::Version,
    ) -> (
        tokio::task::JoinHandle<hashi_supervisor::upgrade::Turn>,
        Arc<Mutex<Option<String>>>,
    ) {
        let said = Arc::new(Mutex::new(None::<String>));
        let (g, s, wanted) = (gate.clone(), said.clone(), wanted.clone());
        let task = rt.spawn(async move {
            g.acquire(product, &wanted, &move |w| {
                if let Some(w) = w {
                    *s.lock().expect("said") = Some(w);
                }
            })
            .await
        });
        (task, said)
    }

    /// A Consul server of ams2 and a client agent per name joined to it,
    /// a leader elected and every client agent answering autopilot through
    /// the server and seeing every member.
    fn ams2_with_clients(
        rt: &tokio::runtime::Runtime,
        names: &[impl AsRef<str>],
    ) -> (StandIn, Vec<StandIn>) {
        let server = StandIn::consul()
            .server(1)
            .node_name("ams2-server-01")
            .datacenter("ams2")
            .start();
        let join = server.join_addr();
        let clients: Vec<StandIn> = names
            .iter()
            .map(|n| {
                StandIn::consul()
                    .node_name(n.as_ref())
                    .datacenter("ams2")
                    .set("retry_join", serde_json::json!([join]))
                    .start()
            })
            .collect();
        let s = consul(&server.addr());
        wait_for(WITHIN, || rt.block_on(s.leader()).ok().flatten()).expect("a leader");
        for c in &clients {
            let c = consul(&c.addr());
            wait_for(WITHIN, || {
                rt.block_on(c.autopilot_health()).ok().map(|_| ())
            })
            .expect("the client agent answers autopilot through its server");
            wait_for(WITHIN, || {
                (rt.block_on(c.members(false)).ok()?.len() == names.len() + 1).then_some(())
            })
            .expect("the client agent sees the server and every client");
        }
        (server, clients)
    }

    #[test]
    fn waiting_clients_keep_one_session_each_and_go_one_at_a_time_through_their_products_slot() {
        let names: Vec<String> = (1..=3).map(|i| format!("ams2-client-0{i}")).collect();
        let rt = runtime();
        let (server, clients) = ams2_with_clients(&rt, &names);
        let s = consul(&server.addr());
        // The Consul slot held with a value that is long and has control
        // characters; the Nomad clients' slot held too (another product:
        // it must not hold the Consul clients up).
        let holder = rt.block_on(test_session(&s, "holder"));
        let long = format!("holder-1\n{}", "x".repeat(300));
        assert!(
            rt.block_on(s.kv_acquire(None, CONSUL_SLOT, &holder, long.as_bytes()))
                .unwrap()
        );
        let nomad_holder = rt.block_on(test_session(&s, "nomad holder"));
        assert!(
            rt.block_on(s.kv_acquire(None, NOMAD_SLOT, &nomad_holder, b"nomad-holder"))
                .unwrap()
        );

        let board = Arc::new(Board::default());
        let gates: Vec<Arc<Gate>> = names
            .iter()
            .zip(&clients)
            .map(|(n, c)| Arc::new(client_gate(n, c)))
            .collect();
        let mut tasks: Vec<_> = (0..3)
            .map(|i| run_gate(&rt, gates[i].clone(), i, names[i].clone(), board.clone()))
            .collect();
        let all = [0, 1, 2];
        // All three wait on the held slot, the holder's value cut and made
        // printable; at most one session each meanwhile.
        let mut most_sessions = 0;
        wait_for(WITHIN, || {
            most_sessions = most_sessions.max(gate_sessions(&rt, &s).len());
            board.all_say(&all, "held by holder-1?xxx").then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "the clients wait on the slot: {:?}",
                board.latest.lock().expect("the board")
            )
        });
        for w in board.latest.lock().expect("the board").values() {
            assert!(w.contains("1 of 3 consul clients"), "{w}");
            assert!(w.contains('…') && !w.contains('\n') && w.len() < 300, "{w}");
            assert!(!w.contains("nomad-holder"), "{w}");
        }
        let first = gate_sessions(&rt, &s);
        assert_eq!(first.len(), 3, "one session per waiting node: {first:?}");
        // Bound to the Consul server, never to the client's own node (a
        // client leaves when it stops, which would end its sessions).
        let holders: BTreeSet<&str> = first.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(holders.len(), 3, "one per client: {first:?}");
        let bound: BTreeSet<String> = gate_session_fields(&rt, &s, "Node")
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        assert_eq!(
            bound,
            BTreeSet::from(["ams2-server-01".to_string()]),
            "bound to the server: {first:?}"
        );
        // The holder's value changes: every gate looks again (and says so)
        // with the same session.
        assert!(
            rt.block_on(s.kv_acquire(None, CONSUL_SLOT, &holder, b"holder-2"))
                .unwrap()
        );
        wait_for(WITHIN, || {
            most_sessions = most_sessions.max(gate_sessions(&rt, &s).len());
            board.all_say(&all, "held by holder-2").then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "the clients look again: {:?}",
                board.latest.lock().expect("the board")
            )
        });
        assert_eq!(
            gate_sessions(&rt, &s),
            first,
            "the same sessions across looks"
        );
        assert!(
            most_sessions <= 3,
            "{most_sessions} sessions for 3 waiting nodes"
        );

        // A wait abandoned (shutdown, a reload): its session goes with it.
        tasks[2].abort();
        let gone = first
            .iter()
            .find(|(_, n)| n == "ams2-client-03")
            .expect("client 3's session")
            .0
            .clone();
        wait_for(WITHIN, || {
            (!gate_sessions(&rt, &s).iter().any(|(id, _)| *id == gone)).then_some(())
        })
        .expect("the abandoned wait's session is destroyed");
        board.latest.lock().expect("the board").remove(&2);
        tasks[2] = run_gate(&rt, gates[2].clone(), 2, names[2].clone(), board.clone());

        // The slot frees: all get through, one at a time, on the Consul
        // clients' slot; the Nomad clients' slot stays its holder's.
        assert!(
            rt.block_on(s.kv_release(None, CONSUL_SLOT, &holder, b""))
                .unwrap()
        );
        for t in tasks {
            rt.block_on(async {
                tokio::time::timeout(WITHIN * 3, t)
                    .await
                    .expect("every client gets its turn")
                    .expect("the gate task");
            });
        }
        assert_eq!(board.most.load(Ordering::SeqCst), 1, "one at a time");
        assert_eq!(
            *board.keys.lock().expect("the board"),
            vec![CONSUL_SLOT.to_string(); 3]
        );
        let nomad = rt.block_on(s.kv_get(None, NOMAD_SLOT)).unwrap().unwrap();
        assert_eq!(nomad.session.as_deref(), Some(nomad_holder.as_str()));
        // Every turn gave its session back.
        wait_for(WITHIN, || gate_sessions(&rt, &s).is_empty().then_some(()))
            .unwrap_or_else(|| panic!("sessions left: {:?}", gate_sessions(&rt, &s)));
        let slot = rt.block_on(s.kv_get(None, CONSUL_SLOT)).unwrap().unwrap();
        assert_eq!(slot.session, None);
    }

    #[test]
    fn the_regions_lock_datacenter_is_the_smallest_name_a_client_agent_lists() {
        let ams2 = StandIn::consul()
            .server(1)
            .node_name("ams2-server-01")
            .datacenter("ams2")
            .start();
        let lon1 = StandIn::consul()
            .server(1)
            .node_name("lon1-server-01")
            .datacenter("lon1")
            .set("retry_join_wan", serde_json::json!([ams2.wan_join_addr()]))
            .start();
        let client = StandIn::consul()
            .node_name("lon1-client-01")
            .datacenter("lon1")
            .set("retry_join", serde_json::json!([lon1.join_addr()]))
            .start();
        let c = consul(&client.addr());
        let gate = eu_gate("lon1-client-01", "lon1", (false, false), &c, None);
        let rt = runtime();
        // The client agent's own answer: its datacenter first.
        let listed = wait_for(WITHIN, || {
            rt.block_on(c.catalog_datacenters())
                .ok()
                .filter(|l| l.len() == 2)
        })
        .expect("the client lists both datacenters once the WAN is joined");
        assert_eq!(listed, ["lon1", "ams2"]);
        assert_eq!(
            rt.block_on(gate.lock_datacenter(Product::Nomad)).as_deref(),
            Ok("ams2")
        );
        assert_eq!(
            rt.block_on(gate.lock_datacenter(Product::Consul))
                .as_deref(),
            Ok("lon1")
        );
        // A Nomad server of lon1 (the region's only one) takes the region's
        // lock in ams2 through its lon1 client agent: a session bound to a
        // node ams2's catalog holds, the key in ams2's store.
        let nomad = StandIn::nomad()
            .node_name("lon1-server-01")
            .region("eu")
            .datacenter("lon1")
            .start();
        let n = hashi_supervisor::agent::nomad::NomadClient::new(
            AgentClient::plain()
                .expect("client")
                .endpoint_at(nomad.url(), Duration::from_secs(5)),
        );
        wait_for(WITHIN, || rt.block_on(n.leader()).ok().flatten()).expect("a Nomad leader");
        let version = rt
            .block_on(n.autopilot_health())
            .expect("Nomad autopilot")
            .servers
            .first()
            .expect("one Nomad server")
            .version
            .clone();
        let server = eu_gate("lon1-server-01", "lon1", (false, true), &c, Some(n))
            .with_poll(Duration::from_millis(200));
        let wanted = semver::Version::parse(&version).expect("the stand-in's version");
        let mut said = Vec::new();
        let turn = rt.block_on(async {
            let said = Mutex::new(&mut said);
            tokio::time::timeout(
                WITHIN,
                server.acquire(Product::Nomad, &wanted, &|w| {
                    if let Some(w) = w {
                        said.lock().expect("said").push(w);
                    }
                }),
            )
            .await
        });
        let turn =
            turn.unwrap_or_else(|_| panic!("the lon1 server gets the region's lock: {said:?}"));
        assert_eq!(turn.lock_datacenter(), Some("ams2"));
        assert_eq!(turn.key(), Some("hashi-supervisor/upgrade/nomad/eu/lock"));
        let a = consul(&ams2.addr());
        let held = rt
            .block_on(a.kv_get(None, "hashi-supervisor/upgrade/nomad/eu/lock"))
            .expect("kv get in ams2")
            .expect("the lock key in ams2");
        assert_eq!(held.value, b"lon1-server-01");
        let sid = held.session.expect("held by a session");
        let info = rt
            .block_on(a.session_info(None, &sid))
            .expect("session info")
            .expect("the session lives in ams2");
        assert_eq!(info.node, "ams2-server-01", "bound to a node of ams2");
        rt.block_on(server.settle(turn, Duration::from_secs(10)))
            .expect("settled");
        let free = rt
            .block_on(a.kv_get(None, "hashi-supervisor/upgrade/nomad/eu/lock"))
            .expect("kv get")
            .expect("key");
        assert_eq!(free.session, None, "released");

        // A Nomad client of lon1 lists its slots where it takes them (the
        // lock datacenter ams2): slot 0 held there, it counts its clients
        // (the slot count needs them) and waits on the holder.
        let slot = "hashi-supervisor/upgrade/clients/nomad/lon1/slot-0";
        let holder = rt.block_on(test_session(&a, "holder"));
        assert!(
            rt.block_on(a.kv_acquire(None, slot, &holder, b"lon1-client-02"))
                .unwrap()
        );
        let nc = hashi_supervisor::agent::nomad::NomadClient::new(
            AgentClient::plain()
                .expect("client")
                .endpoint_at(nomad.url(), Duration::from_secs(5)),
        );
        let client_gate = Arc::new(
            eu_gate("lon1-client-01", "lon1", (false, false), &c, Some(nc))
                .with_poll(Duration::from_millis(200)),
        );
        let (task, said) = spawn_acquire(&rt, &client_gate, Product::Nomad, &wanted);
        wait_for(WITHIN, || {
            said.lock()
                .expect("said")
                .as_deref()
                .filter(|w| {
                    w.contains("held by lon1-client-02") && w.contains("of 1 nomad clients")
                })
                .map(|_| ())
        })
        .unwrap_or_else(|| panic!("the lon1 client waits on the ams2 slot: {said:?}"));
        task.abort();

        // Not cached: the lon1 servers gone, the gate cannot tell and says
        // so (it waits rather than guess another datacenter).
        drop(lon1);
        let err = wait_for(WITHIN, || {
            rt.block_on(gate.lock_datacenter(Product::Nomad)).err()
        })
        .expect("no datacenter list without a server");
        assert!(err.contains("the Consul datacenters"), "{err}");
    }

    fn server_gate(agent: &StandIn) -> Gate {
        let c = consul(&agent.addr());
        eu_gate("ams2-server-01", "ams2", (true, false), &c, None)
            .with_poll(Duration::from_millis(200))
    }

    #[test]
    fn a_lost_lock_is_seen_taken_back_when_free_and_never_released_when_another_holds_it() {
        let server = StandIn::consul()
            .server(1)
            .node_name("ams2-server-01")
            .datacenter("ams2")
            .start();
        let s = consul(&server.addr());
        let gate = server_gate(&server);
        let rt = runtime();
        wait_for(WITHIN, || rt.block_on(s.leader()).ok().flatten()).expect("a leader");
        let wanted = semver::Version::parse(ON).expect("a version");
        let take = || {
            rt.block_on(async {
                tokio::time::timeout(WITHIN, gate.acquire(Product::Consul, &wanted, &|_| {}))
                    .await
                    .expect("a single server gets its turn")
            })
        };
        let holder_session = |rt: &tokio::runtime::Runtime| {
            rt.block_on(s.kv_get(None, LOCK))
                .unwrap()
                .and_then(|p| p.session)
        };

        // The session destroyed under the turn (as if it had lapsed): seen
        // lost, taken back while the key is free, released at the end.
        let mut turn = take();
        assert_eq!(turn.key(), Some(LOCK));
        assert!(!turn.is_lost());
        let id = holder_session(&rt).expect("the turn holds the lock");
        rt.block_on(s.session_destroy(None, &id)).unwrap();
        rt.block_on(async {
            tokio::time::timeout(WITHIN, turn.lost())
                .await
                .expect("the renewal sees the session gone");
        });
        assert!(turn.is_lost());
        // (Within the session's lock delay: the gate tries again.)
        let what = rt
            .block_on(gate.reclaim(&mut turn))
            .expect("a lost lock is reported");
        assert!(turn.key().is_some() && !turn.is_lost(), "{what}");
        assert!(
            what.contains("was lost") && what.contains("taken back"),
            "{what}"
        );
        let now = holder_session(&rt).expect("held again");
        assert_ne!(now, id);
        rt.block_on(gate.settle(turn, Duration::from_secs(10)))
            .expect("settled");
        assert_eq!(holder_session(&rt), None, "released after the settle");

        // Lost again, and another server took the key meanwhile: said so,
        // and its lock is left alone.
        let mut turn = take();
        let id = holder_session(&rt).expect("held");
        rt.block_on(s.session_destroy(None, &id)).unwrap();
        let other = rt.block_on(test_session(&s, "other"));
        wait_for(WITHIN, || {
            rt.block_on(s.kv_acquire(None, LOCK, &other, b"ams2-server-02"))
                .unwrap()
                .then_some(())
        })
        .expect("the other server takes the free key");
        let what = rt
            .block_on(gate.reclaim(&mut turn))
            .expect("a lost lock is reported");
        assert!(
            what.contains("was lost") && what.contains("ams2-server-02 holds it now"),
            "{what}"
        );
        assert!(turn.key().is_none(), "nothing held any more");
        rt.block_on(gate.settle(turn, Duration::from_secs(10)))
            .expect("settled");
        assert_eq!(holder_session(&rt).as_deref(), Some(other.as_str()));
        let v = rt.block_on(s.kv_get(None, LOCK)).unwrap().unwrap();
        assert_eq!(v.value, b"ams2-server-02");
    }

    /// A client's rollback pauses its peers under the clients' key (where
    /// its token may write), and never the servers; deleting the record
    /// resumes the clients.
    #[test]
    fn a_clients_rollback_pauses_the_other_clients_under_the_clients_key_not_the_servers() {
        const CLIENT_PAUSED: &str = "hashi-supervisor/upgrade/clients/paused/consul/ams2";
        const SERVER_PAUSED: &str = "hashi-supervisor/upgrade/paused/consul/ams2";
        let names = ["ams2-client-01", "ams2-client-02"];
        let rt = runtime();
        let (server, agents) = ams2_with_clients(&rt, &names);
        let s = consul(&server.addr());
        let wanted = semver::Version::parse(ON).expect("a version");
        let first = client_gate(names[0], &agents[0]);
        let turn = rt.block_on(async {
            tokio::time::timeout(WITHIN, first.acquire(Product::Consul, &wanted, &|_| {}))
                .await
                .expect("the first client gets its turn")
        });
        let why = "version 1.20.1 failed to start, rolled back to 1.20.0";
        let described = rt.block_on(first.pause(turn, "1.20.0", ON, why));
        assert!(
            described.contains(&format!("delete {CLIENT_PAUSED} to resume"))
                && described.contains("failed on ams2-client-01")
                && described.contains(why)
                && described.matches("rolled back").count() == 1,
            "{described}"
        );
        let record = rt
            .block_on(s.kv_get(None, CLIENT_PAUSED))
            .unwrap()
            .expect("the clients' pause record");
        let v: serde_json::Value = serde_json::from_slice(&record.value).expect("json");
        assert_eq!(v["node"], "ams2-client-01");
        assert_eq!(v["from"], "1.20.0");
        assert_eq!(v["to"], ON);
        assert!(
            rt.block_on(s.kv_get(None, SERVER_PAUSED))
                .unwrap()
                .is_none()
        );

        // The other client waits on it and names the key to delete.
        let second = Arc::new(client_gate(names[1], &agents[1]));
        let (task, said) = spawn_acquire(&rt, &second, Product::Consul, &wanted);
        wait_for(WITHIN, || {
            said.lock()
                .expect("said")
                .as_deref()
                .filter(|w| {
                    w.starts_with("rollout paused: ")
                        && w.contains("failed on ams2-client-01")
                        && w.contains(CLIENT_PAUSED)
                })
                .map(|_| ())
        })
        .unwrap_or_else(|| panic!("the second client waits on the pause: {said:?}"));
        assert!(!task.is_finished(), "no turn while paused");

        // A server of the cluster is not held up by a client's record.
        let srv = server_gate(&server);
        let turn = rt.block_on(async {
            tokio::time::timeout(WITHIN, srv.acquire(Product::Consul, &wanted, &|_| {}))
                .await
                .expect("the server gets its turn despite the clients' pause")
        });
        assert_eq!(turn.key(), Some(LOCK));
        rt.block_on(srv.settle(turn, Duration::from_secs(10)))
            .expect("settled");

        // Deleted as README "Upgrades" says: the second client goes.
        rt.block_on(s.kv_delete(None, CLIENT_PAUSED)).unwrap();
        let turn = rt.block_on(async {
            tokio::time::timeout(WITHIN, task)
                .await
                .expect("the second client gets its turn once the record is gone")
                .expect("the gate task")
        });
        assert_eq!(turn.key(), Some(CONSUL_SLOT));
        rt.block_on(second.settle(turn, Duration::from_secs(10)))
            .expect("settled");
    }

    /// A Consul client's slot outlives its own agent's leave (a client
    /// leaves at every stop, its upgrade's restart included): the gate's
    /// session is bound to a server, not to the client's node, whose
    /// sessions Consul ends when it leaves.
    #[test]
    fn a_clients_slot_outlives_its_own_agent_leaving() {
        let rt = runtime();
        let (server, mut clients) = ams2_with_clients(&rt, &["ams2-client-01"]);
        let s = consul(&server.addr());
        let gate = client_gate("ams2-client-01", &clients[0]);
        let wanted = semver::Version::parse(ON).expect("a version");
        let turn = rt.block_on(async {
            tokio::time::timeout(WITHIN, gate.acquire(Product::Consul, &wanted, &|_| {}))
                .await
                .expect("the client gets its turn")
        });
        assert_eq!(turn.key(), Some(CONSUL_SLOT));
        // A probe bound to the client's node: gone once the leave is
        // handled.
        let probe = rt
            .block_on(s.session_create(
                None,
                &SessionRequest {
                    name: "probe".into(),
                    ttl: Duration::from_secs(3600),
                    behavior_delete: false,
                    lock_delay: Duration::ZERO,
                    node: Some("ams2-client-01".into()),
                    node_checks: Some(vec![]),
                },
            ))
            .expect("a probe session on the client's node");
        clients[0].signal(nix::sys::signal::Signal::SIGTERM);
        assert!(clients[0].wait_exit(WITHIN).is_some_and(|st| st.success()));
        wait_for(WITHIN, || {
            rt.block_on(s.session_info(None, &probe))
                .ok()
                .filter(Option::is_none)
                .map(|_| ())
        })
        .expect("the server ends the left node's sessions");
        let slot = rt
            .block_on(s.kv_get(None, CONSUL_SLOT))
            .unwrap()
            .expect("the slot key");
        assert!(slot.session.is_some(), "the slot is still held: {slot:?}");
        assert_eq!(slot.value, b"ams2-client-01");
        drop(turn);
    }
}

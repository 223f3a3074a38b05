//! Consul's documented lock pattern through the supervisor's own API client
//! (`agent::kv`) against a real stand-in Consul server: two sessions race
//! for one key and exactly one wins; a holder in another process that is
//! SIGKILLed stops renewing, the stand-in invalidates its session after
//! twice its TTL, and the waiting session acquires the key.
//!
//! The holder is this test binary run again with [`HOLDER_ENV`] set, on
//! the test [`lock_holder_child`] (which does nothing without it).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hashi_supervisor::agent::AgentClient;
use hashi_supervisor::agent::consul::ConsulClient;
use hashi_supervisor::agent::kv::SessionRequest;

use crate::support::standin::{StandIn, wait_for};

/// Set on the child: `<consul http addr>,<key>,<session id file>`.
const HOLDER_ENV: &str = "HASHI_TEST_LOCK_HOLDER";
const KEY: &str = "hashi-supervisor/upgrade/consul/ams2/lock";
const TTL: Duration = Duration::from_secs(10);
/// The holder renews well within its TTL.
const RENEW_EVERY: Duration = Duration::from_secs(2);
/// Twice the TTL (Consul's grace), the lock delay and a margin for a
/// loaded machine.
const RELEASE_WITHIN: Duration = Duration::from_secs(45);
const LOCK_DELAY: Duration = Duration::from_secs(1);

fn consul(addr: &str) -> ConsulClient {
    let client = AgentClient::plain().expect("client");
    ConsulClient::new(client.endpoint_at(format!("http://{addr}"), Duration::from_secs(5)))
}

fn request(name: &str) -> SessionRequest {
    SessionRequest {
        name: name.into(),
        ttl: TTL,
        behavior_delete: false,
        lock_delay: LOCK_DELAY,
        node: None,
        node_checks: Some(vec![]),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn wait_leader(c: &ConsulClient) {
    let rt = runtime();
    wait_for(Duration::from_secs(15), || {
        rt.block_on(c.leader()).ok().flatten().map(|_| ())
    })
    .expect("the stand-in elects itself");
}

/// The child: takes the lock with a session of its own, writes the session
/// ID, then renews until killed. Without [`HOLDER_ENV`] it does nothing.
#[test]
#[ignore = "helper: the lock holder process a test starts (with HOLDER_ENV) and SIGKILLs"]
fn lock_holder_child() {
    let Ok(spec) = std::env::var(HOLDER_ENV) else {
        return;
    };
    let mut parts = spec.splitn(3, ',');
    let (addr, key, out) = (
        parts.next().expect("addr"),
        parts.next().expect("key"),
        parts.next().expect("file"),
    );
    let rt = runtime();
    let c = consul(addr);
    rt.block_on(async {
        let id = c
            .session_create(None, &request("holder"))
            .await
            .expect("holder session");
        assert!(
            c.kv_acquire(None, key, &id, b"holder")
                .await
                .expect("acquire"),
            "the holder takes the free lock"
        );
        std::fs::write(out, &id).expect("write session id");
        loop {
            tokio::time::sleep(RENEW_EVERY).await;
            let _ = c.session_renew(None, &id).await;
        }
    });
}

fn spawn_holder(addr: &str, out: &std::path::Path) -> Child {
    let exe = std::env::current_exe().expect("test binary");
    Command::new(exe)
        .args([
            "--exact",
            "kv_lock::lock_holder_child",
            "--ignored",
            "--nocapture",
        ])
        .env(HOLDER_ENV, format!("{addr},{KEY},{}", out.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the holder")
}

#[test]
fn two_sessions_race_for_one_key_and_exactly_one_wins() {
    let s = StandIn::consul()
        .server(1)
        .node_name("ams2-server-01")
        .datacenter("ams2")
        .start();
    let c = consul(&s.addr());
    wait_leader(&c);
    let rt = runtime();
    rt.block_on(async {
        let a = c.session_create(None, &request("a")).await.expect("a");
        let b = c.session_create(None, &request("b")).await.expect("b");
        let (ra, rb) = tokio::join!(
            c.kv_acquire(None, KEY, &a, b"a"),
            c.kv_acquire(None, KEY, &b, b"b")
        );
        let (ra, rb) = (ra.expect("a answered"), rb.expect("b answered"));
        assert!(ra ^ rb, "exactly one wins: a {ra}, b {rb}");
        let (winner, loser, value) = if ra { (&a, &b, b"a") } else { (&b, &a, b"b") };
        let held = c
            .kv_get(None, KEY)
            .await
            .expect("get")
            .expect("the key exists");
        assert_eq!(held.session.as_deref(), Some(winner.as_str()));
        assert_eq!(held.value, value);
        assert_eq!(held.lock_index, 1);
        // The loser cannot release what it does not hold; the winner can.
        assert!(!c.kv_release(None, KEY, loser, b"").await.expect("release"));
        assert!(
            c.kv_release(None, KEY, winner, b"done")
                .await
                .expect("release")
        );
        let free = c.kv_get(None, KEY).await.expect("get").expect("key");
        assert_eq!(free.session, None);
        assert_eq!(
            c.kv_list(None, "hashi-supervisor/")
                .await
                .expect("list")
                .len(),
            1
        );
        c.session_destroy(None, &a).await.expect("destroy");
        assert!(
            !c.session_renew(None, &a).await.expect("renew"),
            "a is gone"
        );
        assert!(c.session_renew(None, &b).await.expect("renew"), "b lives");
        assert_eq!(
            c.catalog_nodes(None).await.expect("nodes"),
            vec!["ams2-server-01".to_string()]
        );
        c.kv_delete(None, KEY).await.expect("delete");
        assert!(c.kv_get(None, KEY).await.expect("get").is_none());
    });
}

#[test]
fn a_sigkilled_holder_loses_the_lock_after_its_ttl_and_the_waiter_acquires() {
    let s = StandIn::consul()
        .server(1)
        .node_name("ams2-server-01")
        .datacenter("ams2")
        .start();
    let c = consul(&s.addr());
    wait_leader(&c);
    let dir = tempfile::tempdir().expect("tempdir");
    let out: PathBuf = dir.path().join("holder-session");
    let mut holder = spawn_holder(&s.addr(), &out);
    let holder_id = wait_for(Duration::from_secs(20), || {
        if let Ok(Some(st)) = holder.try_wait() {
            panic!("the holder exited: {st}");
        }
        std::fs::read_to_string(&out).ok().filter(|s| !s.is_empty())
    })
    .expect("the holder took the lock");
    let rt = runtime();
    let waiter = rt
        .block_on(c.session_create(None, &request("waiter")))
        .expect("waiter session");
    assert!(
        !rt.block_on(c.kv_acquire(None, KEY, &waiter, b"waiter"))
            .expect("acquire"),
        "the lock is held"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(holder.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("SIGKILL the holder");
    holder.wait().expect("reap the holder");
    let killed = std::time::Instant::now();
    // Not released by the process's death itself: only its TTL ends it.
    let held = rt.block_on(c.kv_get(None, KEY)).expect("get").expect("key");
    assert_eq!(held.session.as_deref(), Some(holder_id.as_str()));
    let won = wait_for(RELEASE_WITHIN, || {
        // The waiter keeps its own session alive while it waits.
        assert!(
            rt.block_on(c.session_renew(None, &waiter)).expect("renew"),
            "the waiter's session lives"
        );
        rt.block_on(c.kv_acquire(None, KEY, &waiter, b"waiter"))
            .expect("acquire")
            .then_some(())
    });
    assert!(won.is_some(), "the waiter never acquired the lock");
    // A measurement for the report, not an assertion.
    eprintln!(
        "lock released to the waiter {:?} after the holder's SIGKILL (TTL {TTL:?})",
        killed.elapsed()
    );
    let held = rt.block_on(c.kv_get(None, KEY)).expect("get").expect("key");
    assert_eq!(held.session.as_deref(), Some(waiter.as_str()));
    assert_eq!(held.value, b"waiter");
    assert!(
        !rt.block_on(c.session_renew(None, &holder_id))
            .expect("renew"),
        "the holder's session was invalidated"
    );
}

fn leader_name(h: &hashi_supervisor::agent::consul::AutopilotHealth) -> Option<String> {
    h.servers.iter().find(|s| s.leader).map(|s| s.name.clone())
}

/// Three servers of one product joined to the first.
fn three(nomad: bool) -> Vec<StandIn> {
    let first = if nomad {
        StandIn::nomad().server(3).node_name("s1").start()
    } else {
        StandIn::consul().server(3).node_name("s1").start()
    };
    let join = first.join_addr();
    let mut v = vec![first];
    for n in ["s2", "s3"] {
        v.push(if nomad {
            StandIn::nomad()
                .server(3)
                .node_name(n)
                .hcl(&format!(
                    "server {{\n  server_join {{\n    retry_join = [\"{join}\"]\n  }}\n}}\n"
                ))
                .start()
        } else {
            StandIn::consul()
                .server(3)
                .node_name(n)
                .set("retry_join", serde_json::json!([join]))
                .start()
        });
    }
    v
}

#[test]
fn the_supervisors_client_moves_leadership_on_consul_and_nomad() {
    use hashi_supervisor::agent::nomad::NomadClient;

    let rt = runtime();
    let api = |addr: String| {
        AgentClient::plain()
            .expect("client")
            .endpoint_at(format!("http://{addr}"), Duration::from_secs(5))
    };
    let within = Duration::from_secs(20);
    // Consul: the leader hands leadership to another server.
    let cs = three(false);
    let c = ConsulClient::new(api(cs[0].addr()));
    let before = wait_for(within, || {
        let h = rt.block_on(c.autopilot_health()).ok()?;
        (h.servers.len() == 3 && h.healthy)
            .then(|| leader_name(&h))
            .flatten()
    })
    .expect("a healthy three-server Consul cluster");
    rt.block_on(c.transfer_leader()).expect("transfer-leader");
    let after = wait_for(within, || {
        leader_name(&rt.block_on(c.autopilot_health()).ok()?).filter(|l| *l != before)
    });
    assert!(after.is_some(), "Consul leadership stayed on {before}");
    // Nomad: the client picks another voter from the raft configuration.
    let ns = three(true);
    let n = NomadClient::new(api(ns[1].addr()));
    let before = wait_for(within, || {
        let h = rt.block_on(n.autopilot_health()).ok()?;
        (h.servers.len() == 3 && h.failure_tolerance == 1)
            .then(|| leader_name(&h))
            .flatten()
    })
    .expect("a healthy three-server Nomad cluster");
    let conf = rt
        .block_on(n.raft_configuration())
        .expect("raft configuration");
    assert_eq!(conf.servers.len(), 3);
    rt.block_on(n.transfer_leadership())
        .expect("transfer-leadership");
    let after = wait_for(within, || {
        leader_name(&rt.block_on(n.autopilot_health()).ok()?).filter(|l| *l != before)
    });
    assert!(after.is_some(), "Nomad leadership stayed on {before}");
    // A lone server has nobody to hand it to: an error, not a silent no-op.
    let lone = StandIn::nomad().server(1).node_name("lone").start();
    let l = NomadClient::new(api(lone.addr()));
    wait_for(within, || rt.block_on(l.leader()).ok().flatten()).expect("lone leader");
    let e = rt
        .block_on(l.transfer_leadership())
        .expect_err("no other voter");
    assert!(e.to_string().contains("no other voting server"), "{e}");
}

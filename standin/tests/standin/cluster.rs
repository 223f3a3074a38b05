//! Membership between stand-ins: joins over HTTP, retry_join, leader rule,
//! leave and failure seen by peers.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Signal, StandIn, wait_for};

const DEADLINE: Duration = Duration::from_secs(15);

fn names(v: &Value) -> Vec<String> {
    let list = if v.is_object() { &v["Members"] } else { v };
    let mut n: Vec<String> = list
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| m["Name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default();
    n.sort();
    n
}

fn wait_members(s: &StandIn, path: &str, want: &[&str]) -> Value {
    let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    wait_for(DEADLINE, || {
        let v = s.get(path).json();
        (names(&v) == want).then_some(v)
    })
    .unwrap_or_else(|| {
        panic!(
            "members of {path} never became {want:?}: {}",
            s.get(path).body
        )
    })
}

#[test]
fn two_consul_agents_joined_over_http_see_each_other() {
    let a = StandIn::consul().server(1).node_name("a").start();
    let b = StandIn::consul().client().node_name("b").start();
    let r = b.put(&format!("/v1/agent/join/{}", a.join_addr()), "");
    assert_eq!(r.status, 200, "{}", r.body);
    wait_members(&a, "/v1/agent/members", &["a", "b"]);
    wait_members(&b, "/v1/agent/members", &["a", "b"]);
    // the client reports the leader of the server it joined
    let leader = wait_for(DEADLINE, || {
        let r = b.get("/v1/status/leader");
        (r.status == 200 && r.json() != json!("")).then(|| r.json())
    });
    assert_eq!(leader, Some(json!(a.rpc_addr())));
}

#[test]
fn membership_spreads_to_agents_that_did_not_join_each_other() {
    let a = StandIn::consul().server(1).node_name("a").start();
    let b = StandIn::consul()
        .client()
        .node_name("b")
        .set("retry_join", json!([a.join_addr()]))
        .start();
    let c = StandIn::consul()
        .client()
        .node_name("c")
        .set("retry_join", json!([a.join_addr()]))
        .start();
    wait_members(&b, "/v1/agent/members", &["a", "b", "c"]);
    wait_members(&c, "/v1/agent/members", &["a", "b", "c"]);
}

#[test]
fn consul_wan_join_links_datacenters() {
    let ams = StandIn::consul()
        .server(1)
        .node_name("ams2-server-01")
        .datacenter("ams2")
        .start();
    let lon = StandIn::consul()
        .server(1)
        .node_name("lon1-server-01")
        .datacenter("lon1")
        .set("retry_join_wan", json!([]))
        .start();
    let r = lon.put(&format!("/v1/agent/join/{}?wan=1", ams.wan_join_addr()), "");
    assert_eq!(r.status, 200, "{}", r.body);
    wait_members(
        &ams,
        "/v1/agent/members?wan=1",
        &["ams2-server-01.ams2", "lon1-server-01.lon1"],
    );
    // LAN pools stay separate
    assert_eq!(
        names(&ams.get("/v1/agent/members").json()),
        vec!["ams2-server-01"]
    );
    let dcs = wait_for(DEADLINE, || {
        let v = lon.get("/v1/catalog/datacenters").json();
        (v.as_array().map(Vec::len) == Some(2)).then_some(v)
    });
    assert_eq!(dcs, Some(json!(["lon1", "ams2"])));
}

/// Consul servers flood-join the servers of their own DC into the WAN
/// (consul:agent/consul/flood.go): a second ams2 server joined on the LAN
/// only reaches lon1 over the WAN without any WAN join aimed at it; the
/// ams2 client stays out of the WAN.
#[test]
fn consul_servers_flood_join_their_lan_servers_into_the_wan() {
    let ams1 = StandIn::consul()
        .server(2)
        .node_name("ams2-server-01")
        .datacenter("ams2")
        .start();
    let ams2 = StandIn::consul()
        .server(2)
        .node_name("ams2-server-02")
        .datacenter("ams2")
        .set("retry_join", json!([ams1.join_addr()]))
        .start();
    let client = StandIn::consul()
        .client()
        .node_name("ams2-client-01")
        .datacenter("ams2")
        .set("retry_join", json!([ams1.join_addr()]))
        .start();
    let lon = StandIn::consul()
        .server(1)
        .node_name("lon1-server-01")
        .datacenter("lon1")
        .start();
    wait_members(
        &ams2,
        "/v1/agent/members",
        &["ams2-client-01", "ams2-server-01", "ams2-server-02"],
    );
    let r = lon.put(
        &format!("/v1/agent/join/{}?wan=1", ams1.wan_join_addr()),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let wan = [
        "ams2-server-01.ams2",
        "ams2-server-02.ams2",
        "lon1-server-01.lon1",
    ];
    wait_members(&lon, "/v1/agent/members?wan=1", &wan);
    wait_members(&ams2, "/v1/agent/members?wan=1", &wan);
    wait_members(&ams1, "/v1/agent/members?wan=1", &wan);
    let dcs = wait_for(DEADLINE, || {
        let v = ams2.get("/v1/catalog/datacenters").json();
        let has_lon = v.as_array().is_some_and(|a| a.iter().any(|d| d == "lon1"));
        has_lon.then_some(v)
    });
    assert!(
        dcs.is_some(),
        "ams2-server-02 never listed lon1: {}",
        ams2.get("/v1/catalog/datacenters").body
    );
    // The client agent is in no WAN list (the waits above match exactly,
    // checked once more after the flood rounds ran), and has none of its own.
    assert_eq!(names(&lon.get("/v1/agent/members?wan=1").json()), wan);
    assert_eq!(names(&ams1.get("/v1/agent/members?wan=1").json()), wan);
    let r = client.get("/v1/agent/members?wan=1");
    assert!(names(&r.json()).is_empty(), "client WAN list: {}", r.body);
}

#[test]
fn consul_leave_is_seen_as_left_by_peers() {
    let a = StandIn::consul().server(1).node_name("a").start();
    let mut b = StandIn::consul()
        .client()
        .node_name("b")
        .set("retry_join", json!([a.join_addr()]))
        .start();
    wait_members(&a, "/v1/agent/members", &["a", "b"]);
    b.signal(Signal::SIGTERM);
    assert_eq!(b.wait_exit(DEADLINE).unwrap().code(), Some(0));
    let status = wait_for(DEADLINE, || {
        let v = a.get("/v1/agent/members").json();
        let st = v
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["Name"] == "b")
            .unwrap()["Status"]
            .clone();
        (st == json!(3)).then_some(st)
    });
    assert_eq!(status, Some(json!(3)), "b is left (3) on a");
}

#[test]
fn consul_killed_member_becomes_failed_on_peers() {
    let a = StandIn::consul().server(1).node_name("a").start();
    let b = StandIn::consul()
        .client()
        .node_name("b")
        .set("retry_join", json!([a.join_addr()]))
        .start();
    wait_members(&a, "/v1/agent/members", &["a", "b"]);
    b.signal(Signal::SIGKILL);
    let status = wait_for(DEADLINE, || {
        let v = a.get("/v1/agent/members").json();
        let st = v
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["Name"] == "b")
            .unwrap()["Status"]
            .clone();
        (st == json!(4)).then_some(st)
    });
    assert_eq!(status, Some(json!(4)), "b is failed (4) on a");
}

#[test]
fn three_nomad_servers_elect_the_lowest_name_once_bootstrap_expect_is_met() {
    let mk = |name: &str, dc: &str| {
        StandIn::nomad()
            .server(3)
            .region("eu")
            .datacenter(dc)
            .node_name(name)
            .start()
    };
    let s1 = mk("ams2-server-01", "ams2");
    let s3 = mk("ams2-server-03", "ams2");
    assert_eq!(
        s1.get("/v1/status/leader").status,
        500,
        "no leader with 1 of 3"
    );
    let r = s3.put(&format!("/v1/agent/join?address={}", s1.join_addr()), "");
    assert_eq!(r.json()["num_joined"], 1, "{}", r.body);
    assert_eq!(
        s1.get("/v1/status/leader").status,
        500,
        "no leader with 2 of 3"
    );
    let l1 = StandIn::nomad()
        .server(3)
        .region("eu")
        .datacenter("lon1")
        .node_name("lon1-server-01")
        .hcl(&format!(
            "server {{\n  server_join {{\n    retry_join = [\"{}\"]\n  }}\n}}",
            s3.join_addr()
        ))
        .start();
    let want = [
        "ams2-server-01.eu",
        "ams2-server-03.eu",
        "lon1-server-01.eu",
    ];
    for s in [&s1, &s3, &l1] {
        wait_members(s, "/v1/agent/members", &want);
        let leader = wait_for(DEADLINE, || {
            let r = s.get("/v1/status/leader");
            (r.status == 200).then(|| r.json())
        });
        assert_eq!(leader, Some(json!(s1.rpc_addr())));
        assert_eq!(
            s.get("/v1/status/peers").json().as_array().unwrap().len(),
            3
        );
    }
}

/// The reference scenario's shape: one Consul server per DC joined over the
/// WAN, three Nomad servers (two in ams2, one in lon1) and a client finding
/// each other only through Consul (no join addresses in their configs).
#[test]
fn nomad_agents_find_each_other_through_consul_across_datacenters() {
    let ams = StandIn::consul()
        .server(1)
        .node_name("ams2-server-01")
        .datacenter("ams2")
        .start();
    let lon = StandIn::consul()
        .server(1)
        .node_name("lon1-server-01")
        .datacenter("lon1")
        .set("retry_join_wan", json!([ams.wan_join_addr()]))
        .start();
    wait_members(
        &ams,
        "/v1/agent/members?wan=1",
        &["ams2-server-01.ams2", "lon1-server-01.lon1"],
    );
    let nomad = |name: &str, dc: &str, consul: &StandIn| {
        StandIn::nomad()
            .server(3)
            .region("eu")
            .datacenter(dc)
            .node_name(name)
            .consul(&consul.addr())
            .start()
    };
    let s1 = nomad("ams2-server-01", "ams2", &ams);
    let s3 = nomad("ams2-server-03", "ams2", &ams);
    let l1 = nomad("lon1-server-01", "lon1", &lon);
    let client = StandIn::nomad()
        .client()
        .region("eu")
        .datacenter("ams2")
        .node_name("ams2-client-01")
        .consul(&ams.addr())
        .start();
    let want = [
        "ams2-server-01.eu",
        "ams2-server-03.eu",
        "lon1-server-01.eu",
    ];
    for s in [&s1, &s3, &l1] {
        wait_members(s, "/v1/agent/members", &want);
    }
    let leader = wait_for(DEADLINE, || {
        let r = client.get("/v1/status/leader");
        (r.status == 200).then(|| r.json())
    });
    assert_eq!(leader, Some(json!(s1.rpc_addr())));
    // Nomad registered itself in Consul: 3 tags per server, http per client.
    let serf = ams.get("/v1/catalog/service/nomad?tag=serf").json();
    assert_eq!(serf.as_array().unwrap().len(), 2, "{serf}");
    let clients = wait_for(DEADLINE, || {
        let v = ams.get("/v1/catalog/service/nomad-client").json();
        (v.as_array().map(Vec::len) == Some(1)).then_some(v)
    });
    assert!(clients.is_some());
    let nodes = wait_for(DEADLINE, || {
        let v = l1.get("/v1/nodes").json();
        (v.as_array().map(Vec::len) == Some(1)).then_some(v)
    })
    .expect("the client's node reaches every server");
    assert_eq!(nodes[0]["Name"], "ams2-client-01");
}

//! Consul KV and sessions (the documented lock pattern), the node catalog,
//! leadership transfer, `STANDIN_BROKEN_VERSIONS` and the membership lines
//! of the event log, over HTTP against real stand-in processes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{Value, json};

use crate::shape::assert_shape;
use crate::support::{HttpReply, StandIn, wait_for};

const DEADLINE: Duration = Duration::from_secs(15);
const MGMT: &str = "8f1d7d1c-0000-4000-8000-00000000c0de";

fn wait_leader(s: &StandIn) -> String {
    wait_for(DEADLINE, || {
        let r = s.get("/v1/status/leader");
        (r.status == 200 && r.json() != json!("")).then(|| r.json().as_str().unwrap().to_string())
    })
    .expect("a leader")
}

/// A request with an optional Consul token and a raw body.
fn req(s: &StandIn, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> HttpReply {
    let h = token
        .map(|t| format!("X-Consul-Token: {t}\r\n"))
        .unwrap_or_default();
    let mut sock = TcpStream::connect(s.addr()).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        sock,
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{h}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    sock.write_all(body).unwrap();
    let mut buf = String::new();
    sock.read_to_string(&mut buf).unwrap();
    let (head, body) = buf.split_once("\r\n\r\n").unwrap();
    HttpReply {
        status: head.split_whitespace().nth(1).unwrap().parse().unwrap(),
        headers: Vec::new(),
        body: body.to_string(),
    }
}

fn session(s: &StandIn, body: &str) -> String {
    let r = s.put("/v1/session/create", body);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_shape("consul", "session_create", &r.json());
    r.json()["ID"].as_str().unwrap().to_string()
}

#[test]
fn consul_lock_pattern_one_session_wins_destroy_releases_after_the_lock_delay() {
    let s = StandIn::consul()
        .server(1)
        .node_name("ams2-server-01")
        .start();
    wait_leader(&s);
    let a = session(&s, r#"{"Name":"a","TTL":"10s","LockDelay":"1s"}"#);
    let b = session(&s, r#"{"Name":"b","TTL":"10s","LockDelay":"1s"}"#);
    let key = "/v1/kv/hashi-supervisor/upgrade/consul/ams2/lock";
    assert_eq!(s.put(&format!("{key}?acquire={a}"), "node-a").body, "true");
    assert_eq!(s.put(&format!("{key}?acquire={b}"), "node-b").body, "false");
    let got = s.get(key);
    assert_eq!(got.status, 200);
    assert_shape("consul", "kv_get", &got.json());
    assert_eq!(got.json()[0]["Session"], json!(a));
    assert_eq!(got.json()[0]["Value"], json!("bm9kZS1h"));
    assert_eq!(got.json()[0]["LockIndex"], json!(1));
    let info = s.get(&format!("/v1/session/info/{a}"));
    assert_shape("consul", "session_info", &info.json());
    assert_eq!(info.json()[0]["LockDelay"], json!(1_000_000_000u64));
    let renewed = s.put(&format!("/v1/session/renew/{a}"), "");
    assert_shape("consul", "session_renew", &renewed.json());
    // Destroy: released, but not acquirable by another within the delay.
    assert_eq!(s.put(&format!("/v1/session/destroy/{a}"), "").body, "true");
    assert_eq!(s.get(key).json()[0].get("Session"), None);
    assert_eq!(s.put(&format!("{key}?acquire={b}"), "node-b").body, "false");
    let won = wait_for(DEADLINE, || {
        (s.put(&format!("{key}?acquire={b}"), "node-b").body == "true").then_some(())
    });
    assert!(won.is_some(), "b never acquired after the lock delay");
    assert_eq!(s.get(key).json()[0]["LockIndex"], json!(2));
    // Gone sessions: renew 404, acquire with it 500.
    assert_eq!(s.put(&format!("/v1/session/renew/{a}"), "").status, 404);
    assert_eq!(s.put(&format!("{key}?acquire={a}"), "x").status, 500);
    // Release by a non-holder is false; by the holder true.
    assert_eq!(s.put(&format!("{key}?release={a}"), "").status, 500);
    assert_eq!(s.put(&format!("{key}?release={b}"), "free").body, "true");
    // cas=0 only when absent; list; delete.
    assert_eq!(s.put("/v1/kv/hashi-supervisor/x?cas=0", "1").body, "true");
    assert_eq!(s.put("/v1/kv/hashi-supervisor/x?cas=0", "2").body, "false");
    let list = s.get("/v1/kv/hashi-supervisor/?recurse");
    assert_shape("consul", "kv_list", &list.json());
    assert_eq!(list.json().as_array().unwrap().len(), 2);
    assert_eq!(
        s.request("DELETE", "/v1/kv/hashi-supervisor/x", "").body,
        "true"
    );
    assert_eq!(s.get("/v1/kv/hashi-supervisor/x").status, 404);
    // The documented range of TTL.
    assert_eq!(s.put("/v1/session/create", r#"{"TTL":"5s"}"#).status, 400);
}

#[test]
fn consul_behavior_delete_session_deletes_its_keys_on_destroy() {
    let s = StandIn::consul().server(1).start();
    wait_leader(&s);
    let a = session(&s, r#"{"Behavior":"delete","LockDelay":"0s"}"#);
    assert_eq!(s.put(&format!("/v1/kv/eph?acquire={a}"), "v").body, "true");
    s.put(&format!("/v1/session/destroy/{a}"), "");
    assert_eq!(s.get("/v1/kv/eph").status, 404);
}

#[test]
fn consul_kv_and_sessions_survive_a_server_restart() {
    let data = tempfile::tempdir().unwrap();
    let start = || {
        StandIn::consul()
            .server(1)
            .node_name("ams2-server-01")
            .set("data_dir", json!(data.path()))
            .start()
    };
    let s = start();
    wait_leader(&s);
    let a = session(&s, r#"{"TTL":"60s"}"#);
    assert_eq!(s.put(&format!("/v1/kv/k?acquire={a}"), "kept").body, "true");
    drop(s); // SIGKILL
    let s = start();
    wait_leader(&s);
    let got = s.get("/v1/kv/k").json();
    assert_eq!(got[0]["Value"], json!("a2VwdA=="));
    assert_eq!(got[0]["Session"], json!(a));
    assert_eq!(s.put(&format!("/v1/session/renew/{a}"), "").status, 200);
}

#[test]
fn consul_kv_is_forwarded_from_a_client_and_across_datacenters() {
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
    let client = StandIn::consul()
        .client()
        .node_name("ams2-client-01")
        .datacenter("ams2")
        .set("retry_join", json!([ams.join_addr()]))
        .start();
    wait_leader(&ams);
    wait_leader(&lon);
    wait_for(DEADLINE, || {
        (client.put("/v1/kv/from-client", "c").body == "true").then_some(())
    })
    .expect("the client forwards to its server");
    assert_eq!(ams.get("/v1/kv/from-client").status, 200);
    // The lock DC of a region is reached with ?dc= from the other DC.
    wait_for(DEADLINE, || {
        (lon.put("/v1/kv/from-lon?dc=ams2", "l").body == "true").then_some(())
    })
    .expect("lon1 forwards ?dc=ams2 over the WAN");
    assert_eq!(ams.get("/v1/kv/from-lon").status, 200);
    assert_eq!(lon.get("/v1/kv/from-lon").status, 404);
    let sid = wait_for(DEADLINE, || {
        let r = client.put(
            "/v1/session/create?dc=lon1",
            r#"{"TTL":"10s","Node":"lon1-server-01"}"#,
        );
        (r.status == 200).then(|| r.json()["ID"].as_str().unwrap().to_string())
    })
    .expect("a session in lon1 through the ams2 client");
    // A session's node must be in the catalog of its datacenter: the
    // client's own is not in lon1's (Consul: "Missing node registration").
    let r = client.put("/v1/session/create?dc=lon1", r#"{"TTL":"10s"}"#);
    assert_eq!(
        (r.status, r.body.as_str()),
        (500, "Missing node registration")
    );
    assert_eq!(
        lon.get(&format!("/v1/session/info/{sid}")).json()[0]["ID"],
        json!(sid)
    );
    assert_eq!(
        client.get("/v1/kv/from-lon?dc=nowhere").body,
        "No path to datacenter"
    );
    let nodes = ams.get("/v1/catalog/nodes");
    assert_shape("consul", "catalog_nodes", &nodes.json());
    let names: Vec<String> = nodes
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["Node"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["ams2-client-01", "ams2-server-01"]);
}

#[test]
fn consul_kv_rules_of_the_token_are_enforced_with_acls() {
    let acl = json!({"primary_datacenter": "dc1", "acl": {"enabled": true,
        "default_policy": "deny", "tokens": {"initial_management": MGMT}}});
    let s = StandIn::consul()
        .server(1)
        .node_name("ams2-server-01")
        .file("10-acl.json", &acl.to_string())
        .start();
    wait_leader(&s);
    let rules = "key_prefix \"hashi-supervisor/\" { policy = \"write\" }\nkey_prefix \"\" { policy = \"read\" }\nsession_prefix \"\" { policy = \"write\" }";
    let p = req(
        &s,
        "PUT",
        "/v1/acl/policy",
        Some(MGMT),
        json!({"Name": "upgrade", "Rules": rules})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(p.status, 200, "{}", p.body);
    let secret = "0b5f0000-0000-4000-8000-000000000001";
    let t = req(
        &s,
        "PUT",
        "/v1/acl/token",
        Some(MGMT),
        json!({"SecretID": secret, "Policies": [{"Name": "upgrade"}]})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(t.status, 200, "{}", t.body);
    let put = |path: &str, tok: Option<&str>| req(&s, "PUT", path, tok, b"v");
    assert_eq!(put("/v1/kv/hashi-supervisor/a", None).status, 403);
    assert_eq!(put("/v1/kv/hashi-supervisor/a", Some(secret)).body, "true");
    assert_eq!(put("/v1/kv/other", Some(secret)).status, 403);
    assert_eq!(put("/v1/kv/other", Some(MGMT)).body, "true");
    assert_eq!(
        req(&s, "GET", "/v1/kv/other", Some(secret), b"").status,
        200
    );
    let sess = req(
        &s,
        "PUT",
        "/v1/session/create",
        Some(secret),
        b"{\"TTL\":\"10s\"}",
    );
    assert_eq!(sess.status, 200, "{}", sess.body);
    // A token whose rules give no session write may not create one.
    let p2 = req(
        &s,
        "PUT",
        "/v1/acl/policy",
        Some(MGMT),
        json!({"Name": "ro", "Rules": "key_prefix \"\" { policy = \"read\" }"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(p2.status, 200);
    let ro = "0b5f0000-0000-4000-8000-000000000002";
    req(
        &s,
        "PUT",
        "/v1/acl/token",
        Some(MGMT),
        json!({"SecretID": ro, "Policies": [{"Name": "ro"}]})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(
        req(&s, "PUT", "/v1/session/create", Some(ro), b"{}").status,
        403
    );
    assert_eq!(put("/v1/kv/hashi-supervisor/a", Some(ro)).status, 403);
}

fn leader_node(s: &StandIn, autopilot: &str) -> Option<String> {
    let r = s.get(autopilot);
    if r.status != 200 && r.status != 429 {
        return None;
    }
    let v: Value = r.json();
    v["Servers"]
        .as_array()?
        .iter()
        .find(|x| x["Leader"] == json!(true))
        .map(|x| x["Name"].as_str().unwrap_or("").to_string())
}

fn three_servers(nomad: bool) -> Vec<StandIn> {
    let first = if nomad {
        StandIn::nomad().server(3).node_name("s1").start()
    } else {
        StandIn::consul().server(3).node_name("s1").start()
    };
    let join = first.join_addr();
    let mut v = vec![first];
    for n in ["s2", "s3"] {
        let s = if nomad {
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
                .set("retry_join", json!([join]))
                .start()
        };
        v.push(s);
    }
    v
}

#[test]
fn consul_transfer_leader_moves_leadership_to_another_server() {
    let s = three_servers(false);
    let ap = "/v1/operator/autopilot/health";
    for x in &s {
        wait_for(DEADLINE, || leader_node(x, ap).filter(|l| l == "s1")).expect("all see s1 lead");
    }
    // Asked of a follower: handed to the leader.
    let r = s[2].request("POST", "/v1/operator/raft/transfer-leader", "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({"Success": true}));
    let after = wait_for(DEADLINE, || leader_node(&s[2], ap).filter(|l| l != "s1"));
    assert_eq!(after.as_deref(), Some("s2"));
    assert_eq!(
        s[0].request("GET", "/v1/operator/raft/transfer-leader", "")
            .status,
        405
    );
}

#[test]
fn nomad_transfer_leadership_needs_a_peer_and_moves_leadership() {
    let s = three_servers(true);
    let ap = "/v1/operator/autopilot/health";
    wait_for(DEADLINE, || leader_node(&s[0], ap).filter(|l| l == "s1")).expect("s1 leads");
    let conf = s[0].get("/v1/operator/raft/configuration");
    assert_eq!(conf.status, 200, "{}", conf.body);
    assert_shape("nomad", "operator_raft_configuration", &conf.json());
    // The last server in name order: not the one that would lead anyway.
    let target = conf.json()["Servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["Node"].as_str().is_some_and(|n| n.starts_with("s3")))
        .map(|x| x["ID"].as_str().unwrap().to_string())
        .unwrap();
    let none = s[0].put("/v1/operator/raft/transfer-leadership", "");
    assert_eq!(none.status, 400, "{}", none.body);
    // Asked of a follower: handed to the leader, which hands off to s3.
    wait_for(DEADLINE, || leader_node(&s[1], ap).filter(|l| l == "s1")).expect("s2 sees s1 lead");
    let r = s[1].put(
        &format!("/v1/operator/raft/transfer-leadership?id={target}"),
        "",
    );
    assert_eq!((r.status, r.body.as_str()), (200, ""));
    let after = wait_for(DEADLINE, || leader_node(&s[1], ap).filter(|l| l == "s3"));
    assert!(after.is_some(), "leadership never went to s3");
}

#[test]
fn broken_version_exits_1_at_start_and_servers_log_up_and_down() {
    let mut bad = StandIn::consul()
        .server(1)
        .env("STANDIN_VERSION", "1.10.99")
        .env("STANDIN_BROKEN_VERSIONS", "1.9.0, 1.10.99")
        .no_wait()
        .start();
    let st = bad.wait_exit(DEADLINE).expect("a broken version exits");
    assert_eq!(st.code(), Some(1));
    assert!(
        bad.event_lines().iter().any(|l| l.starts_with("exit 1")),
        "{:?}",
        bad.event_lines()
    );
    let members = tempfile::tempdir().unwrap();
    let mlog = members.path().join("membership.log");
    let read = || std::fs::read_to_string(&mlog).unwrap_or_default();
    let mut good = StandIn::consul()
        .server(1)
        .node_name("ams2-server-01")
        .env("STANDIN_MEMBERSHIP_LOG", mlog.to_str().unwrap())
        .env("STANDIN_VERSION", "1.10.98")
        .env("STANDIN_BROKEN_VERSIONS", "1.10.99")
        .start();
    assert!(
        wait_for(DEADLINE, || read()
            .lines()
            .any(|l| l.starts_with("server-up consul ams2-server-01 1.10.98 "))
            .then_some(()))
        .is_some(),
        "{}",
        read()
    );
    good.signal(Signal::SIGTERM);
    good.wait_exit(DEADLINE).expect("exits on SIGTERM");
    let text = read();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let down: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with("server-down"))
        .collect();
    assert_eq!(down.len(), 1, "{lines:?}");
    let f: Vec<&str> = down[0].split(' ').collect();
    assert_eq!(
        &f[..4],
        ["server-down", "consul", "ams2-server-01", "1.10.98"]
    );
    assert!(f[4].parse::<u128>().is_ok());
}

#[test]
fn knob_file_names_the_event_and_membership_logs_and_broken_versions() {
    // A supervisor clears its agents' environment: the knob file in the
    // data dir is how tests reach supervised stand-ins.
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let events = root.path().join("events-from-file.log");
    let members = root.path().join("members.log");
    let knobs = format!(
        "STANDIN_EVENT_LOG={}\nSTANDIN_MEMBERSHIP_LOG={}\nSTANDIN_BROKEN_VERSIONS=1.10.99\n",
        events.display(),
        members.display()
    );
    std::fs::write(data.join("standin.env"), knobs).unwrap();
    let start = |version: &str| {
        StandIn::consul()
            .server(1)
            .node_name("ams2-server-01")
            .set("data_dir", json!(data))
            // The harness names an event log; empty counts as unset.
            .env("STANDIN_EVENT_LOG", "")
            .env("STANDIN_VERSION", version)
            .no_wait()
            .start()
    };
    let mut good = start("1.10.98");
    let up = wait_for(DEADLINE, || {
        std::fs::read_to_string(&members)
            .ok()
            .filter(|t| t.starts_with("server-up consul ams2-server-01 1.10.98 "))
    });
    assert!(up.is_some(), "no server-up line in the knob file's log");
    good.signal(Signal::SIGKILL);
    good.wait_exit(DEADLINE).expect("killed");
    let mut bad = start("1.10.99");
    assert_eq!(bad.wait_exit(DEADLINE).expect("exits").code(), Some(1));
    let ev = std::fs::read_to_string(&events).unwrap();
    let starts = ev.lines().filter(|l| l.starts_with("start pid=")).count();
    assert_eq!(starts, 2, "{ev}");
    assert!(ev.lines().any(|l| l == "exit 1"), "{ev}");
    // SIGKILL: no server-down; the broken start never came up.
    let m = std::fs::read_to_string(&members).unwrap();
    assert_eq!(m.lines().count(), 1, "{m}");
}

/// A client agent resolves tokens through its server and keeps what it
/// learnt (`acl.token_ttl`); with the server gone, a token it has seen
/// still works (`down_policy = "extend-cache"`), one it never saw does not.
#[test]
fn a_client_keeps_using_a_token_it_resolved_while_its_server_is_down() {
    let acl = json!({"primary_datacenter": "dc1", "acl": {"enabled": true,
        "default_policy": "deny", "tokens": {"initial_management": MGMT}}});
    let server = StandIn::consul()
        .server(1)
        .node_name("ams2-server-01")
        .file("10-acl.json", &acl.to_string())
        .start();
    wait_leader(&server);
    let rules = "agent_prefix \"\" { policy = \"read\" }\nnode_prefix \"\" { policy = \"read\" }";
    let p = req(
        &server,
        "PUT",
        "/v1/acl/policy",
        Some(MGMT),
        json!({"Name": "reader", "Rules": rules})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(p.status, 200, "{}", p.body);
    let seen = "0b5f0000-0000-4000-8000-0000000000a1";
    let unseen = "0b5f0000-0000-4000-8000-0000000000a2";
    for secret in [seen, unseen] {
        let t = req(
            &server,
            "PUT",
            "/v1/acl/token",
            Some(MGMT),
            json!({"SecretID": secret, "Policies": [{"Name": "reader"}]})
                .to_string()
                .as_bytes(),
        );
        assert_eq!(t.status, 200, "{}", t.body);
    }
    let client = StandIn::consul()
        .node_name("ams2-client-01")
        .file("10-acl.json", &acl.to_string())
        .set("retry_join", json!([server.join_addr()]))
        .start();
    let members = |tok: &str| req(&client, "GET", "/v1/agent/members", Some(tok), b"");
    wait_for(DEADLINE, || (members(seen).status == 200).then_some(()))
        .expect("the client resolves the token through its server");
    assert_eq!(
        req(
            &client,
            "GET",
            "/v1/agent/members",
            Some("0b5f0000-0000-4000-8000-0000000000ff"),
            b""
        )
        .status,
        403,
        "a token nobody has"
    );
    drop(server);
    wait_for(DEADLINE, || {
        let r = client.get("/v1/status/leader");
        (r.status != 200 || r.body.trim() == "\"\"").then_some(())
    })
    .expect("the client sees its server gone");
    let r = members(seen);
    assert_eq!(
        r.status, 200,
        "a resolved token while the server is down: {}",
        r.body
    );
    let r = members(unseen);
    assert_eq!(
        (r.status, r.body.trim()),
        (403, "ACL not found"),
        "a token the client never resolved"
    );
}

/// A server outside the primary datacenter with
/// `acl.enable_token_replication` copies the primary's policies and global
/// tokens: it resolves a token it was never asked about with the primary
/// gone (as Consul's replicated ACL state does).
#[test]
fn a_secondary_datacenter_with_token_replication_resolves_tokens_without_the_primary() {
    let primary = json!({"primary_datacenter": "ams2", "acl": {"enabled": true,
        "default_policy": "deny", "tokens": {"initial_management": MGMT}}});
    let ams2 = StandIn::consul()
        .server(1)
        .node_name("ams2-server-01")
        .datacenter("ams2")
        .file("10-acl.json", &primary.to_string())
        .start();
    wait_leader(&ams2);
    let put = |path: &str, body: Value| {
        let r = req(&ams2, "PUT", path, Some(MGMT), body.to_string().as_bytes());
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    };
    put(
        "/v1/acl/policy",
        json!({"Name": "replication", "Rules": "acl = \"write\"\noperator = \"write\""}),
    );
    put(
        "/v1/acl/policy",
        json!({"Name": "reader", "Rules": "agent_prefix \"\" { policy = \"read\" }"}),
    );
    let replication = "0b5f0000-0000-4000-8000-0000000000b1";
    let global = "0b5f0000-0000-4000-8000-0000000000b2";
    let local = "0b5f0000-0000-4000-8000-0000000000b3";
    put(
        "/v1/acl/token",
        json!({"SecretID": replication, "Policies": [{"Name": "replication"}]}),
    );
    put(
        "/v1/acl/token",
        json!({"SecretID": global, "Policies": [{"Name": "reader"}]}),
    );
    put(
        "/v1/acl/token",
        json!({"SecretID": local, "Local": true, "Policies": [{"Name": "reader"}]}),
    );
    let secondary = json!({"primary_datacenter": "ams2", "acl": {"enabled": true,
        "default_policy": "deny", "enable_token_replication": true,
        "tokens": {"replication": replication}}});
    let log = tempfile::NamedTempFile::new().expect("a log file");
    let lon1 = StandIn::consul()
        .server(1)
        .node_name("lon1-server-01")
        .datacenter("lon1")
        .file("10-acl.json", &secondary.to_string())
        .set("retry_join_wan", json!([ams2.wan_join_addr()]))
        .env("STANDIN_LOG_COPY", &log.path().display().to_string())
        .start();
    wait_leader(&lon1);
    let read_log = || std::fs::read_to_string(log.path()).unwrap_or_default();
    wait_for(DEADLINE, || {
        read_log()
            .contains("ACL token replication from ams2: in sync")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("lon1 replicates:\n{}", read_log()));
    drop(ams2);
    let members = |tok: &str| req(&lon1, "GET", "/v1/agent/members", Some(tok), b"");
    let r = members(global);
    assert_eq!(r.status, 200, "a global token, primary gone: {}", r.body);
    let r = members(local);
    assert_eq!(
        (r.status, r.body.trim()),
        (403, "ACL not found"),
        "a local token of the primary stays there"
    );
}

/// A node that leaves takes its sessions with it (Consul deregisters it
/// and invalidates the sessions bound to it, NodeChecks or not): its locks
/// are released; a session bound to a node that stays lives on.
#[test]
fn a_session_ends_when_its_node_leaves_and_one_bound_to_a_staying_node_lives() {
    let server = StandIn::consul()
        .server(1)
        .node_name("ams2-server-01")
        .start();
    wait_leader(&server);
    let mut client = StandIn::consul()
        .node_name("ams2-client-01")
        .set("retry_join", json!([server.join_addr()]))
        .start();
    wait_for(DEADLINE, || {
        let r = client.get("/v1/agent/members");
        (r.status == 200 && r.json().as_array().is_some_and(|a| a.len() == 2)).then_some(())
    })
    .expect("the client joins");
    let body = r#"{"TTL":"60s","NodeChecks":[],"LockDelay":"0s"}"#;
    let on_client = session(&client, body);
    let bound = r#"{"TTL":"60s","NodeChecks":[],"LockDelay":"0s","Node":"ams2-server-01"}"#;
    let on_server = session(&client, bound);
    let (k1, k2) = (
        "/v1/kv/hashi-supervisor/upgrade/clients/consul/ams2/slot-0",
        "/v1/kv/hashi-supervisor/upgrade/clients/consul/ams2/slot-1",
    );
    assert_eq!(
        client.put(&format!("{k1}?acquire={on_client}"), "a").body,
        "true"
    );
    assert_eq!(
        client.put(&format!("{k2}?acquire={on_server}"), "b").body,
        "true"
    );
    // A graceful stop: a Consul client leaves.
    client.signal(Signal::SIGTERM);
    assert!(client.wait_exit(DEADLINE).is_some_and(|s| s.success()));
    wait_for(DEADLINE, || {
        server
            .get(k1)
            .json()
            .get(0)
            .is_some_and(|e| e.get("Session").is_none())
            .then_some(())
    })
    .expect("the left node's lock is released");
    assert_eq!(
        server.get(&format!("/v1/session/info/{on_client}")).json(),
        json!([])
    );
    assert_eq!(server.get(k2).json()[0]["Session"], json!(on_server));
}

//! The supervisors' ACL policies against real stand-in agents with ACLs
//! (default deny): the policies and tokens `cluster init`'s ACL bootstrap
//! creates (the same bodies, `security::acl`), then what a client-only
//! supervisor's token may and may not do. The stand-in enforces the
//! `operator` rules and the Consul key/value and session rules as the
//! agents' API docs say (standin/README.md "ACLs").

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use hashi_supervisor::role::Secret;
use hashi_supervisor::security::acl;
use hashi_supervisor::upgrade;
use hashi_supervisor::vocab::Product;
use serde_json::{Value, json};

use crate::support::standin::{HttpReply, StandIn, wait_for};

const DEADLINE: Duration = Duration::from_secs(20);
const MGMT: &str = "8f1d7d1c-0000-4000-8000-00000000a11c";
const SERVER_SECRET: &str = "6a1f1f0e-8a44-4c1b-9d7e-2f4f5c1a9b3d";

/// A request with `header: token` when given.
fn req(
    s: &StandIn,
    method: &str,
    path: &str,
    token: Option<(&str, &str)>,
    body: &str,
) -> HttpReply {
    let h = token
        .map(|(name, t)| format!("{name}: {t}\r\n"))
        .unwrap_or_default();
    let addr = s.addr();
    let mut c = TcpStream::connect(&addr).expect("connect to the stand-in");
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a read timeout");
    write!(
        c,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{h}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send the request");
    let mut buf = Vec::new();
    c.read_to_end(&mut buf).expect("read the answer");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    HttpReply {
        status: head
            .split_whitespace()
            .nth(1)
            .and_then(|x| x.parse().ok())
            .unwrap_or(0),
        headers: Vec::new(),
        body: body.to_string(),
    }
}

fn wait_leader(s: &StandIn) {
    wait_for(DEADLINE, || {
        let r = s.get("/v1/status/leader");
        (r.status == 200 && r.body.trim().trim_matches('"').len() > 1).then_some(())
    })
    .expect("a leader");
}

#[test]
fn consul_client_supervisor_token_reads_autopilot_writes_only_client_slots_and_may_not_transfer() {
    let acl_cfg = json!({"primary_datacenter": "dc1", "acl": {"enabled": true,
        "default_policy": "deny", "tokens": {"initial_management": MGMT}}});
    let s = StandIn::consul()
        .server(1)
        .node_name("ams2-server-01")
        .file("10-acl.json", &acl_cfg.to_string())
        .start();
    wait_leader(&s);
    let mgmt = Some(("X-Consul-Token", MGMT));
    let client_secret = acl::consul_client_supervisor_secret(SERVER_SECRET);
    // As the ACL bootstrap creates them.
    for (policy, secret) in [
        (&acl::CONSUL_SUPERVISOR, SERVER_SECRET.to_string()),
        (&acl::CONSUL_SUPERVISOR_CLIENT, client_secret.clone()),
    ] {
        let r = req(
            &s,
            "PUT",
            "/v1/acl/policy",
            mgmt,
            &acl::consul_policy_body(policy).to_string(),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let body = acl::consul_token_body(&Secret::new(secret), policy, "test");
        let r = req(&s, "PUT", "/v1/acl/token", mgmt, &body.to_string());
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let client = Some(("X-Consul-Token", client_secret.as_str()));
    let server = Some(("X-Consul-Token", SERVER_SECRET));
    // Autopilot health (the upgrade gate): operator read is enough.
    let r = req(&s, "GET", "/v1/operator/autopilot/health", client, "");
    assert_eq!(r.status, 200, "{}", r.body);
    // Leadership transfer: operator write, servers only.
    let r = req(&s, "POST", "/v1/operator/raft/transfer-leader", client, "");
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.body.trim(), "Permission denied");
    // (The server's token may; with one server there is nobody to hand to.)
    let r = req(&s, "POST", "/v1/operator/raft/transfer-leader", server, "");
    assert_ne!(r.status, 403, "{}", r.body);
    // A token without an operator rule may not read autopilot health.
    let r = req(
        &s,
        "PUT",
        "/v1/acl/policy",
        mgmt,
        &json!({"Name": "no-operator", "Rules": "node_prefix \"\" { policy = \"read\" }"})
            .to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let bare = "0b5f0000-0000-4000-8000-0000000000b1";
    let r = req(
        &s,
        "PUT",
        "/v1/acl/token",
        mgmt,
        &json!({"SecretID": bare, "Policies": [{"Name": "no-operator"}]}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = req(
        &s,
        "GET",
        "/v1/operator/autopilot/health",
        Some(("X-Consul-Token", bare)),
        "",
    );
    assert_eq!(r.status, 403, "{}", r.body);
    // Key/value, at the keys the gate uses: the client slots and the
    // clients' pause record are writable; the servers' pause record and
    // lock only readable.
    for key in [
        upgrade::client_slot_key(Product::Nomad, "ams2", 0),
        upgrade::client_paused_key(Product::Nomad, "eu"),
    ] {
        let key = format!("/v1/kv/{key}");
        assert_eq!(
            req(&s, "PUT", &key, client, "ams2-client-01").body.trim(),
            "true",
            "{key}"
        );
        assert_eq!(req(&s, "DELETE", &key, client, "").status, 200, "{key}");
    }
    for key in [
        upgrade::paused_key(Product::Nomad, "eu"),
        upgrade::server_lock_key(Product::Nomad, "eu"),
    ] {
        let key = &format!("/v1/kv/{key}");
        assert_eq!(
            req(&s, "PUT", key, server, "x").body.trim(),
            "true",
            "{key}"
        );
        assert_eq!(req(&s, "PUT", key, client, "y").status, 403, "{key}");
        assert_eq!(req(&s, "DELETE", key, client, "").status, 403, "{key}");
        assert_eq!(req(&s, "GET", key, client, "").status, 200, "{key}");
    }
    // Sessions for its slots.
    let r = req(&s, "PUT", "/v1/session/create", client, "{\"TTL\":\"15s\"}");
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn nomad_client_supervisor_token_has_the_derived_secret_reads_autopilot_and_not_raft() {
    let s = StandIn::nomad().hcl("acl {\n  enabled = true\n}").start();
    wait_leader(&s);
    let r = req(
        &s,
        "POST",
        "/v1/acl/bootstrap",
        None,
        &json!({"BootstrapSecret": MGMT}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let mgmt = Some(("X-Nomad-Token", MGMT));
    for p in [&acl::NOMAD_SUPERVISOR, &acl::NOMAD_SUPERVISOR_CLIENT] {
        let body = json!({"Name": p.name, "Description": p.description, "Rules": p.rules});
        let r = req(
            &s,
            "POST",
            &format!("/v1/acl/policy/{}", p.name),
            mgmt,
            &body.to_string(),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // The servers' token: Nomad chooses its SecretID.
    let r = req(
        &s,
        "POST",
        "/v1/acl/token",
        mgmt,
        &json!({"Name": "hashi-supervisor", "Type": "client",
                "Policies": [acl::NOMAD_SUPERVISOR.name], "Global": true})
        .to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let server_secret = r.json()["SecretID"].as_str().expect("SecretID").to_string();
    // The clients' token: the SecretID derived from it, taken as chosen.
    let client_secret = acl::nomad_client_supervisor_secret(&server_secret);
    let body = acl::nomad_client_token_body(&Secret::new(client_secret.clone()));
    let r = req(&s, "POST", "/v1/acl/token", mgmt, &body.to_string());
    assert_eq!(r.status, 200, "{}", r.body);
    let made: Value = r.json();
    assert_eq!(made["SecretID"], client_secret.as_str());
    assert_eq!(made["Policies"], json!([acl::NOMAD_SUPERVISOR_CLIENT.name]));
    let client = Some(("X-Nomad-Token", client_secret.as_str()));
    let server = Some(("X-Nomad-Token", server_secret.as_str()));
    let me = req(&s, "GET", "/v1/acl/token/self", client, "");
    assert_eq!(me.status, 200, "{}", me.body);
    // What a client's supervisor calls.
    for path in [
        "/v1/operator/autopilot/health",
        "/v1/nodes",
        "/v1/agent/self",
    ] {
        let r = req(&s, "GET", path, client, "");
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
    // Nomad's Raft configuration and leadership transfer need a management
    // token (Nomad API docs "Operator Raft"): refused to both supervisors.
    for token in [client, server] {
        let r = req(&s, "GET", "/v1/operator/raft/configuration", token, "");
        assert_eq!(r.status, 403, "{}", r.body);
        let r = req(
            &s,
            "PUT",
            "/v1/operator/raft/transfer-leadership?id=x",
            token,
            "",
        );
        assert_eq!(r.status, 403, "{}", r.body);
        assert_eq!(r.body.trim(), "Permission denied");
    }
    let r = req(&s, "GET", "/v1/operator/raft/configuration", mgmt, "");
    assert_eq!(r.status, 200, "{}", r.body);
    // A token without operator read may not read autopilot health.
    let r = req(
        &s,
        "POST",
        "/v1/acl/policy/nodes-only",
        mgmt,
        &json!({"Name": "nodes-only", "Rules": "node { policy = \"read\" }"}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = req(
        &s,
        "POST",
        "/v1/acl/token",
        mgmt,
        &json!({"Name": "n", "Type": "client", "Policies": ["nodes-only"]}).to_string(),
    );
    let bare = r.json()["SecretID"].as_str().expect("SecretID").to_string();
    let r = req(
        &s,
        "GET",
        "/v1/operator/autopilot/health",
        Some(("X-Nomad-Token", bare.as_str())),
        "",
    );
    assert_eq!(r.status, 403, "{}", r.body);
}

//! Endpoint shapes against the `tests/data/agent-api` samples, and the
//! documented quirks (methods, status codes, content types).

use std::time::Duration;

use serde_json::json;

use crate::shape::assert_shape;
use crate::support::{StandIn, wait_for};

const DEADLINE: Duration = Duration::from_secs(10);

fn consul_server() -> StandIn {
    StandIn::consul()
        .server(1)
        .datacenter("ams2")
        .node_name("ams2-server-01")
        .start()
}

/// Wait until the leader endpoint reports a leader.
fn wait_leader(s: &StandIn) -> String {
    wait_for(DEADLINE, || {
        let r = s.get("/v1/status/leader");
        (r.status == 200 && r.json() != json!("")).then(|| r.json().as_str().unwrap().to_string())
    })
    .expect("leader elected")
}

#[test]
fn consul_lone_server_with_bootstrap_expect_1_elects_itself() {
    let s = consul_server();
    assert_eq!(wait_leader(&s), s.rpc_addr());
    let peers = s.get("/v1/status/peers");
    assert_eq!(peers.json(), json!([s.rpc_addr()]));
    assert_eq!(peers.header("content-type"), Some("application/json"));
}

#[test]
fn consul_server_without_quorum_reports_empty_leader_and_null_peers() {
    let s = StandIn::consul().server(3).start();
    let r = s.get("/v1/status/leader");
    assert_eq!((r.status, r.body.as_str()), (200, "\"\""));
    assert_eq!(s.get("/v1/status/peers").body, "null");
}

#[test]
fn consul_client_without_servers_fails_rpc_endpoints() {
    let c = StandIn::consul().client().start();
    let r = c.get("/v1/status/leader");
    assert_eq!(
        (r.status, r.body.as_str()),
        (500, "No known Consul servers")
    );
    assert_eq!(c.get("/v1/catalog/service/web").status, 500);
    // agent endpoints are local
    assert_eq!(c.get("/v1/agent/self").status, 200);
}

#[test]
fn consul_agent_self_matches_sample() {
    let s = consul_server();
    let v = s.get("/v1/agent/self").json();
    assert_shape("consul", "agent_self", &v);
    assert_eq!(v["Config"]["NodeName"], "ams2-server-01");
    assert_eq!(v["Config"]["Datacenter"], "ams2");
    assert_eq!(v["Config"]["Server"], true);
}

#[test]
fn consul_members_match_sample_lan_and_wan() {
    let s = consul_server();
    let lan = s.get("/v1/agent/members").json();
    assert_shape("consul", "agent_members", &lan);
    assert_eq!(lan[0]["Name"], "ams2-server-01");
    assert_eq!(lan[0]["Status"], 1);
    let wan = s.get("/v1/agent/members?wan=1").json();
    assert_shape("consul", "agent_members_wan", &wan);
    assert_eq!(wan[0]["Name"], "ams2-server-01.ams2");
    // ?wan=0 is WAN too (non-empty value); a bare ?wan is LAN.
    assert_eq!(
        s.get("/v1/agent/members?wan=0").json()[0]["Name"],
        "ams2-server-01.ams2"
    );
    assert_eq!(
        s.get("/v1/agent/members?wan").json()[0]["Name"],
        "ams2-server-01"
    );
}

#[test]
fn consul_client_wan_members_are_null_and_wan_join_refused() {
    let c = StandIn::consul().client().start();
    assert_eq!(c.get("/v1/agent/members?wan=1").body, "null");
    let r = c.put("/v1/agent/join/127.0.0.1?wan=1", "");
    assert_eq!(
        (r.status, r.body.as_str()),
        (500, "Must be a server to join WAN cluster")
    );
}

#[test]
fn consul_get_join_is_405_with_allow_header() {
    let s = consul_server();
    let r = s.get("/v1/agent/join/127.0.0.1");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("OPTIONS,PUT"));
    assert_eq!(r.body, "method GET not allowed");
}

#[test]
fn consul_join_failure_is_500_text() {
    let s = consul_server();
    let r = s.put(
        &format!("/v1/agent/join/127.0.0.1:{}", crate::support::free_port()),
        "",
    );
    assert_eq!(r.status, 500);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
}

#[test]
fn consul_register_refuses_script_check_of_the_doc_sample() {
    let s = consul_server();
    let payload = crate::agent_api_file("consul/agent_service_register.request.json");
    let r = s.put("/v1/agent/service/register", &payload);
    assert_eq!(r.status, 500);
    assert!(
        r.body.starts_with("Scripts are disabled on this agent"),
        "{}",
        r.body
    );
    let r = s.put("/v1/agent/service/register", r#"{"Port": 1}"#);
    assert_eq!((r.status, r.body.as_str()), (400, "Missing service name"));
}

#[test]
fn consul_registered_service_is_in_catalog_and_health_with_sample_shapes() {
    let s = consul_server();
    wait_leader(&s);
    let payload = format!(
        r#"{{"ID": "web1", "Name": "web", "Tags": ["prod"], "Address": "127.0.0.1", "Port": 5000,
            "Meta": {{"a": "b"}}, "Check": {{"HTTP": "{}/v1/agent/self", "Interval": "100ms"}}}}"#,
        s.url()
    );
    let r = s.put("/v1/agent/service/register", &payload);
    assert_eq!((r.status, r.body.as_str()), (200, ""));
    assert_eq!(r.header("content-type"), None);
    let cat = s.get("/v1/catalog/service/web");
    assert_eq!(cat.status, 200);
    let cat = cat.json();
    assert_shape("consul", "catalog_service", &cat);
    assert_eq!(cat[0]["ServiceID"], "web1");
    assert_eq!(cat[0]["Node"], "ams2-server-01");
    let health = wait_for(DEADLINE, || {
        let v = s.get("/v1/health/service/web?passing").json();
        (v.as_array().is_some_and(|a| !a.is_empty())).then_some(v)
    })
    .expect("service passes its check");
    assert_shape("consul", "health_service", &health);
    let checks: Vec<&str> = health[0]["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["CheckID"].as_str().unwrap())
        .collect();
    assert_eq!(checks, vec!["serfHealth", "service:web1"]);
    assert_eq!(s.get("/v1/catalog/service/nope").json(), json!([]));
    assert_eq!(s.put("/v1/agent/service/deregister/web1", "").status, 200);
    assert_eq!(s.get("/v1/catalog/service/web").json(), json!([]));
}

#[test]
fn consul_deregister_of_unknown_id_is_404() {
    let s = consul_server();
    let r = s.put("/v1/agent/service/deregister/nope", "");
    assert_eq!(r.status, 404);
    assert_eq!(
        r.body,
        "Unknown service ID \"nope\". Ensure that the service ID is passed, not the service name."
    );
}

#[test]
fn consul_autopilot_and_datacenters_match_samples() {
    let s = consul_server();
    wait_leader(&s);
    let r = s.get("/v1/operator/autopilot/health");
    assert_eq!(r.status, 200);
    assert_shape("consul", "operator_autopilot_health", &r.json());
    let dcs = s.get("/v1/catalog/datacenters").json();
    assert_shape("consul", "catalog_datacenters", &dcs);
    assert_eq!(dcs, json!(["ams2"]));
}

fn nomad_server() -> StandIn {
    StandIn::nomad()
        .region("eu")
        .datacenter("ams2")
        .node_name("ams2-server-01")
        .start()
}

fn wait_nomad_leader(s: &StandIn) -> String {
    wait_for(DEADLINE, || {
        let r = s.get("/v1/status/leader");
        (r.status == 200).then(|| r.json().as_str().unwrap().to_string())
    })
    .expect("nomad leader")
}

#[test]
fn nomad_server_endpoints_match_samples() {
    let s = nomad_server();
    assert_eq!(wait_nomad_leader(&s), s.rpc_addr());
    assert_shape("nomad", "status_leader", &s.get("/v1/status/leader").json());
    assert_shape("nomad", "status_peers", &s.get("/v1/status/peers").json());
    let h = s.get("/v1/agent/health");
    assert_eq!(h.status, 200);
    assert_eq!(h.json(), json!({"server": {"ok": true, "message": "ok"}}));
    let me = s.get("/v1/agent/self").json();
    assert_shape("nomad", "agent_self", &me);
    assert_eq!(me["config"]["Version"]["Version"], "1.9.3");
    assert_eq!(me["member"]["Name"], "ams2-server-01.eu");
    let members = s.get("/v1/agent/members").json();
    assert_shape("nomad", "agent_members", &members);
    assert_eq!(members["ServerRegion"], "eu");
    assert_eq!(members["Members"][0]["Status"], "alive");
    let ap = s.get("/v1/operator/autopilot/health").json();
    assert_shape("nomad", "operator_autopilot_health", &ap);
    assert!(ap["Servers"][0]["LastContact"].is_number());
}

#[test]
fn nomad_server_without_leader_answers_500_no_cluster_leader() {
    let s = StandIn::nomad().server(3).start();
    let r = s.get("/v1/status/leader");
    assert_eq!((r.status, r.body.as_str()), (500, "No cluster leader"));
    let h = s.get("/v1/agent/health");
    assert_eq!(h.status, 500);
    assert_eq!(h.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(h.json()["server"]["ok"], false);
    assert_eq!(s.get("/v1/status/peers").body, "[]");
}

#[test]
fn nomad_client_without_servers_is_unhealthy_and_cannot_join() {
    let c = StandIn::nomad().client().start();
    let h = c.get("/v1/agent/health");
    assert_eq!(h.status, 500);
    assert_eq!(
        h.json(),
        json!({"client": {"ok": false, "message": "no known servers"}})
    );
    let r = c.put("/v1/agent/join?address=127.0.0.1", "");
    assert_eq!((r.status, r.body.as_str()), (501, "Invalid method"));
    let me = c.get("/v1/agent/self").json();
    assert_eq!(me["member"]["Status"], "none");
    assert_eq!(me["member"]["Name"], "");
}

#[test]
fn nomad_join_quirks() {
    let s = nomad_server();
    let r = s.put("/v1/agent/join", "");
    assert_eq!(
        (r.status, r.body.as_str()),
        (400, "missing address to join")
    );
    assert_eq!(s.get("/v1/agent/join?address=x").status, 405);
    let r = s.request(
        "POST",
        &format!(
            "/v1/agent/join?address=127.0.0.1:{}",
            crate::support::free_port()
        ),
        "",
    );
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_shape("nomad", "agent_join", &v);
    assert_eq!(v["num_joined"], 0);
    assert_ne!(v["error"], "");
}

#[test]
fn nomad_client_registers_with_server_and_shows_in_nodes() {
    let s = nomad_server();
    let c = StandIn::nomad()
        .client()
        .region("eu")
        .datacenter("ams2")
        .node_name("ams2-client-01")
        .hcl(&format!(
            "client {{\n  servers = [\"{}\"]\n}}",
            s.rpc_addr()
        ))
        .start();
    let nodes = wait_for(DEADLINE, || {
        let v = s.get("/v1/nodes").json();
        (v.as_array().is_some_and(|a| !a.is_empty())).then_some(v)
    })
    .expect("client registered");
    assert_shape("nomad", "nodes", &nodes);
    assert_eq!(nodes[0]["Name"], "ams2-client-01");
    assert_eq!(nodes[0]["Status"], "ready");
    let healthy = wait_for(DEADLINE, || {
        (c.get("/v1/agent/health").status == 200).then_some(())
    });
    assert!(healthy.is_some(), "client healthy once it knows a server");
    assert_eq!(wait_nomad_leader(&c), s.rpc_addr());
}

#[test]
fn unknown_paths_are_404() {
    let s = consul_server();
    assert_eq!(s.get("/v1/nope").status, 404);
}

#[test]
fn consul_http_and_tcp_checks_are_run() {
    let s = consul_server();
    wait_leader(&s);
    let dead = crate::support::free_port();
    let body = format!(
        r#"{{"Name": "web", "Port": 1, "Checks": [
            {{"CheckID": "ok", "HTTP": "{}/v1/agent/self", "Interval": "100ms"}},
            {{"CheckID": "down", "HTTP": "http://127.0.0.1:{dead}/", "Interval": "100ms"}},
            {{"CheckID": "tcp", "TCP": "{}", "Interval": "100ms"}}]}}"#,
        s.url(),
        s.addr()
    );
    assert_eq!(s.put("/v1/agent/service/register", &body).status, 200);
    let checks = wait_for(DEADLINE, || {
        let v = s.get("/v1/agent/checks").json();
        (v["ok"]["Status"] == "passing" && v["tcp"]["Status"] == "passing").then_some(v)
    })
    .expect("checks pass");
    assert_eq!(checks["down"]["Status"], "critical");
    assert!(checks["ok"]["Output"].as_str().unwrap().contains("200"));
    // ?passing drops the instance because one check is critical
    assert_eq!(s.get("/v1/health/service/web?passing").json(), json!([]));
    assert_eq!(
        s.get("/v1/health/service/web")
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn consul_ttl_check_follows_pass_and_fail() {
    let s = consul_server();
    wait_leader(&s);
    let body = r#"{"Name": "job", "Check": {"CheckID": "job-ttl", "TTL": "30s"}}"#;
    assert_eq!(s.put("/v1/agent/service/register", body).status, 200);
    assert_eq!(
        s.get("/v1/agent/checks").json()["job-ttl"]["Status"],
        "critical"
    );
    assert_eq!(
        s.put("/v1/agent/check/pass/job-ttl?note=fine", "").status,
        200
    );
    let c = s.get("/v1/agent/checks").json();
    assert_eq!(
        (
            c["job-ttl"]["Status"].as_str(),
            c["job-ttl"]["Output"].as_str()
        ),
        (Some("passing"), Some("fine"))
    );
    assert_eq!(s.put("/v1/agent/check/fail/job-ttl", "").status, 200);
    assert_eq!(
        s.get("/v1/agent/checks").json()["job-ttl"]["Status"],
        "critical"
    );
    assert_eq!(s.put("/v1/agent/check/pass/nope", "").status, 404);
    assert_eq!(s.get("/v1/agent/check/pass/job-ttl").status, 405);
}

#[test]
fn consul_catalog_filters_by_tag() {
    let s = consul_server();
    wait_leader(&s);
    s.put(
        "/v1/agent/service/register",
        r#"{"ID": "a", "Name": "n", "Tags": ["rpc"], "Port": 1}"#,
    );
    s.put(
        "/v1/agent/service/register",
        r#"{"ID": "b", "Name": "n", "Tags": ["serf"], "Port": 2}"#,
    );
    let v = s.get("/v1/catalog/service/n?tag=serf").json();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["ServiceID"], "b");
}

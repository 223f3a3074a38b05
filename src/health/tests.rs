//! Pure tests of the handlers and checks: no sockets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper::header;
use hyper::{Method, Request, StatusCode};

use super::handlers::status_doc;
use super::snapshot::AgentTarget;
use super::*;
use crate::agent::NomadHealthItem;
use crate::supervise::{AgentState, AgentStatus, ExitInfo, SupervisorStatus};
use crate::vocab::Product;

const GOSSIP_KEY: &str = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=";
const TOKEN: &str = "b1gs3cr3t-t0ken-value";

fn node() -> NodeInfo {
    let addr = |p: u16| -> SocketAddr { SocketAddr::from(([127, 0, 0, 1], p)) };
    NodeInfo {
        node_name: "ams2-server-01".into(),
        region: "eu".into(),
        datacenter: "ams2".into(),
        roles: vec!["consul-server".into(), "nomad-server".into()],
        agents: vec![
            AgentTarget {
                product: Product::Consul,
                server: true,
                client: false,
                http_addr: addr(8500),
                api_tls: None,
            },
            AgentTarget {
                product: Product::Nomad,
                server: true,
                client: false,
                http_addr: addr(4646),
                api_tls: None,
            },
        ],
    }
}

fn running(product: Product, pid: u32) -> AgentStatus {
    AgentStatus {
        state: AgentState::Running,
        pid: Some(pid),
        version: Some("1.20.1".into()),
        since: Some(SystemTime::now() - Duration::from_secs(90)),
        ready: true,
        ..AgentStatus::new(product)
    }
}

fn healthy() -> HealthSnapshot {
    let mut s = HealthSnapshot::new(node(), Arc::new(Metrics::default()));
    s.set_supervisor(SupervisorStatus {
        agents: vec![running(Product::Consul, 100), running(Product::Nomad, 200)],
        config_hash: "ab".repeat(32),
        reload_error: None,
        stopping: false,
        node: None,
    });
    s.set_report(AgentReport {
        product: Product::Consul,
        checked_at: SystemTime::now(),
        consul: Some(ConsulReport {
            leader: Some("10.0.0.1:8300".into()),
            lan_members: Some(3),
            lan_members_alive: Some(3),
            wan_members: Some(2),
            failure_tolerance: Some(0),
            autopilot_healthy: Some(true),
            version: Some("1.20.1".into()),
            ..Default::default()
        }),
        nomad: None,
    });
    s.set_report(AgentReport {
        product: Product::Nomad,
        checked_at: SystemTime::now(),
        consul: None,
        nomad: Some(NomadReport {
            health_server: Some(NomadHealthItem {
                ok: true,
                message: "ok".into(),
            }),
            leader: Some("10.0.0.1:4647".into()),
            members: Some(3),
            members_alive: Some(3),
            ..Default::default()
        }),
    });
    s
}

fn req(method: Method, uri: &str, accept: Option<&str>) -> hyper::http::request::Parts {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(a) = accept {
        b = b.header(header::ACCEPT, a);
    }
    b.body(()).unwrap().into_parts().0
}

fn get(s: &HealthSnapshot, uri: &str) -> (StatusCode, String) {
    call(s, Method::GET, uri, None)
}

fn call(s: &HealthSnapshot, m: Method, uri: &str, accept: Option<&str>) -> (StatusCode, String) {
    let r = handle(&req(m, uri, accept), s);
    let status = r.status();
    let body = r.into_body();
    let bytes = futures_util::FutureExt::now_or_never(http_body_util::BodyExt::collect(body))
        .expect("a Full body is ready at once")
        .unwrap()
        .to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

#[test]
fn ready_is_200_when_every_agent_runs_is_ready_and_passes_its_check() {
    let s = healthy();
    for path in ["/ready", "/health"] {
        let (code, body) = get(&s, path);
        assert_eq!(code, StatusCode::OK, "{body}");
        assert_eq!(body, "ok\n");
    }
    assert_eq!(get(&s, "/live").0, StatusCode::OK);
}

#[test]
fn crashed_agent_makes_ready_503_with_its_state_and_exit() {
    let mut s = healthy();
    let mut st = s.supervisor().clone();
    st.agents[1] = AgentStatus {
        state: AgentState::Backoff,
        restarts: 2,
        last_exit: Some(ExitInfo {
            code: Some(1),
            signal: None,
            at: SystemTime::now(),
            expected: false,
        }),
        ..AgentStatus::new(Product::Nomad)
    };
    s.set_supervisor(st);
    let (code, body) = get(&s, "/ready");
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.starts_with("unhealthy: 2 failing checks\n"), "{body}");
    assert!(
        body.contains("nomad.process: backoff: last exit code 1"),
        "{body}"
    );
    assert!(body.contains("nomad.ready: not ready"), "{body}");
    assert!(
        !body.contains("consul."),
        "only failing checks without ?verbose: {body}"
    );
}

#[test]
fn consul_without_leader_fails_its_api_check() {
    let mut s = healthy();
    s.set_report(AgentReport {
        product: Product::Consul,
        checked_at: SystemTime::now(),
        consul: Some(ConsulReport::default()),
        nomad: None,
    });
    let (code, body) = get(&s, "/health");
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("consul.api: no raft leader"), "{body}");
}

#[test]
fn unhealthy_nomad_half_is_reported_with_its_message() {
    let mut s = healthy();
    s.set_report(AgentReport {
        product: Product::Nomad,
        checked_at: SystemTime::now(),
        consul: None,
        nomad: Some(NomadReport {
            health_client: Some(NomadHealthItem {
                ok: false,
                message: "no known servers".into(),
            }),
            ..Default::default()
        }),
    });
    let (code, body) = get(&s, "/ready");
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body.contains("nomad.api: client: no known servers"),
        "{body}"
    );
}

#[test]
fn agents_never_checked_or_started_are_not_ready() {
    let s = HealthSnapshot::new(node(), Arc::new(Metrics::default()));
    let (code, body) = get(&s, "/ready");
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("consul.process: not started yet"), "{body}");
    assert!(body.contains("nomad.api: not started yet"), "{body}");
}

#[test]
fn stopping_supervisor_is_not_ready_but_still_live() {
    let mut s = healthy();
    let mut st = s.supervisor().clone();
    st.stopping = true;
    s.set_supervisor(st);
    let (code, body) = get(&s, "/ready");
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("supervisor: shutting down"));
    assert_eq!(get(&s, "/live").0, StatusCode::OK);
}

#[test]
fn verbose_lists_every_check_and_accept_json_gives_json() {
    let s = healthy();
    let (_, body) = get(&s, "/ready?verbose");
    for name in [
        "supervisor",
        "consul.process",
        "consul.ready",
        "consul.api",
        "nomad.process",
        "nomad.ready",
        "nomad.api",
    ] {
        assert!(
            body.contains(&format!(" {name}: ")),
            "{name} missing: {body}"
        );
    }
    let (code, body) = call(
        &s,
        Method::GET,
        "/ready?verbose=1",
        Some("application/json"),
    );
    assert_eq!(code, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["healthy"], true);
    assert_eq!(v["checks"].as_array().unwrap().len(), 7);
    let (_, body) = call(&s, Method::GET, "/ready", Some("application/json"));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["checks"].as_array().unwrap().is_empty());
}

#[test]
fn head_answers_headers_with_length_and_no_body() {
    let s = healthy();
    let g = handle(&req(Method::GET, "/v1/status", None), &s);
    let (code, body) = call(&s, Method::HEAD, "/v1/status", None);
    assert_eq!(code, StatusCode::OK);
    assert!(body.is_empty());
    let h = handle(&req(Method::HEAD, "/v1/status", None), &s);
    let len: usize = h.headers()[header::CONTENT_LENGTH]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(len > 100);
    assert_eq!(
        h.headers()[header::CONTENT_TYPE],
        g.headers()[header::CONTENT_TYPE]
    );
}

#[test]
fn other_methods_get_405_with_allow_and_unknown_paths_404() {
    let s = healthy();
    for m in [Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS] {
        let r = handle(&req(m.clone(), "/health", None), &s);
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{m}");
        assert_eq!(r.headers()[header::ALLOW], "GET, HEAD");
    }
    assert_eq!(get(&s, "/nope").0, StatusCode::NOT_FOUND);
    assert_eq!(get(&s, "/v1/status/extra").0, StatusCode::NOT_FOUND);
}

#[test]
fn status_json_has_node_agents_and_agent_reports() {
    let s = healthy();
    let (code, body) = get(&s, "/v1/status");
    assert_eq!(code, StatusCode::OK);
    let doc: StatusDoc = serde_json::from_str(&body).unwrap();
    assert_eq!(doc.node, "ams2-server-01");
    assert_eq!(doc.region, "eu");
    assert_eq!(doc.datacenter, "ams2");
    assert_eq!(doc.roles, vec!["consul-server", "nomad-server"]);
    assert_eq!(doc.supervisor_version, crate::SUPERVISOR_VERSION);
    assert!(doc.healthy);
    assert_eq!(doc.agents.len(), 2);
    let c = &doc.agents[0];
    assert_eq!(
        (c.agent.as_str(), c.state.as_str(), c.pid),
        ("consul", "running", Some(100))
    );
    assert!(c.uptime_secs.unwrap() >= 90);
    let cr = c.consul.as_ref().unwrap();
    assert_eq!(cr.leader.as_deref(), Some("10.0.0.1:8300"));
    assert_eq!(
        (cr.lan_members, cr.wan_members, cr.failure_tolerance),
        (Some(3), Some(2), Some(0))
    );
    let n = doc.agents[1].nomad.as_ref().unwrap();
    assert!(n.health_server.as_ref().unwrap().ok);
}

#[test]
fn node_info_follows_the_applied_plan_after_a_reload() {
    let mut s = healthy();
    let mut st = s.supervisor().clone();
    st.node = Some(crate::supervise::NodeIdentity {
        node_name: "lon1-server-01".into(),
        region: "eu".into(),
        datacenter: "lon1".into(),
        roles: vec!["consul-server".into()],
    });
    s.set_supervisor(st);
    let doc: StatusDoc = serde_json::from_str(&get(&s, "/v1/status").1).unwrap();
    assert_eq!(
        (doc.node.as_str(), doc.datacenter.as_str()),
        ("lon1-server-01", "lon1")
    );
    let metrics = get(&s, "/metrics").1;
    assert!(
        metrics.contains(r#"node="lon1-server-01",datacenter="lon1",region="eu""#),
        "{metrics}"
    );
    assert!(!metrics.contains("ams2"), "{metrics}");
    let page = get(&s, "/").1;
    assert!(page.contains("datacenter <b>lon1</b>"), "{page}");
    assert!(!page.contains("ams2"), "{page}");
    // A status without a node keeps the last one.
    let mut st = s.supervisor().clone();
    st.node = None;
    s.set_supervisor(st);
    let doc: StatusDoc = serde_json::from_str(&get(&s, "/v1/status").1).unwrap();
    assert_eq!(doc.datacenter, "lon1");
}

#[test]
fn metrics_have_one_hot_state_and_counters() {
    let s = healthy();
    s.metrics.record_fetch(Product::Consul, true);
    s.metrics.record_verify(Product::Nomad, false);
    let (code, body) = get(&s, "/metrics");
    assert_eq!(code, StatusCode::OK);
    assert!(body.contains("hashi_supervisor_agent_up{agent=\"consul\"} 1\n"));
    assert!(body.contains("hashi_supervisor_agent_state{agent=\"nomad\",state=\"running\"} 1\n"));
    assert!(body.contains("hashi_supervisor_agent_state{agent=\"nomad\",state=\"backoff\"} 0\n"));
    assert_eq!(
        body.matches("hashi_supervisor_agent_state{agent=\"consul\"")
            .count(),
        6
    );
    assert!(body.contains("hashi_supervisor_fetch_total{agent=\"consul\",outcome=\"ok\"} 1\n"));
    assert!(body.contains("hashi_supervisor_verify_total{agent=\"nomad\",outcome=\"error\"} 1\n"));
    assert!(body.contains(&format!(
        "hashi_supervisor_build_info{{version=\"{}\"",
        crate::SUPERVISOR_VERSION
    )));
}

#[test]
fn page_shows_each_agent_state_escaped() {
    let mut s = healthy();
    let mut st = s.supervisor().clone();
    st.agents[0].state = AgentState::Failed;
    st.agents[0].reason = Some("<script>alert(1)</script>".into());
    s.set_supervisor(st);
    let (code, body) = get(&s, "/");
    assert_eq!(code, StatusCode::OK);
    assert!(body.contains("id=\"agent-consul\" data-state=\"failed\""));
    assert!(body.contains("id=\"agent-nomad\" data-state=\"running\""));
    assert!(!body.contains("<script>"));
    assert!(
        !body.contains("http://") && !body.contains("https://"),
        "no external assets"
    );
}

#[test]
fn secrets_never_appear_in_any_response() {
    let mut s = healthy();
    let mut st = s.supervisor().clone();
    st.agents[0].last_lines = vec![
        format!("==> loaded config: encrypt = \"{GOSSIP_KEY}\""),
        format!("acl token: {TOKEN}"),
        format!("gossip key {GOSSIP_KEY}"),
    ];
    st.agents[1].state = AgentState::Failed;
    st.agents[1].reason = Some(format!("config refused: \"encrypt\": \"{GOSSIP_KEY}\""));
    st.reload_error = Some(format!("line 12: token = \"{TOKEN}\""));
    s.set_supervisor(st);
    s.set_report(AgentReport {
        product: Product::Consul,
        checked_at: SystemTime::now(),
        consul: Some(ConsulReport {
            leader_error: Some(format!("status 403: ACL not found for token={TOKEN}")),
            errors: vec![format!("{GOSSIP_KEY}")],
            ..Default::default()
        }),
        nomad: None,
    });
    let mut seen = 0;
    for path in [
        "/",
        "/live",
        "/ready?verbose",
        "/health",
        "/v1/status",
        "/metrics",
    ] {
        for accept in [None, Some("application/json")] {
            let (_, body) = call(&s, Method::GET, path, accept);
            assert!(!body.contains(GOSSIP_KEY), "{path}: {body}");
            assert!(!body.contains(TOKEN), "{path}: {body}");
            seen += body.matches(redact::REDACTED).count();
        }
    }
    assert!(
        seen > 0,
        "the redacted lines are shown (redacted), not dropped"
    );
}

fn discovery_view() -> DiscoveryView {
    use crate::peers::{DiscoveryReport, Learned, PeerKind, PeerRecord, Peers, Source};
    DiscoveryView {
        report: DiscoveryReport {
            peers: Peers {
                consul_lan: vec!["10.0.1.12".into()],
                nomad_servers: vec!["10.0.1.12".into()],
                ..Peers::default()
            },
            records: vec![
                PeerRecord {
                    address: "10.0.1.12".into(),
                    kind: PeerKind::ConsulServer,
                    source: Source::Mdns,
                    node: Some("ams2-server-02".into()),
                    datacenter: Some("ams2".into()),
                    region: Some("eu".into()),
                    last_seen: SystemTime::now() - Duration::from_secs(12),
                },
                PeerRecord {
                    address: "10.0.1.13".into(),
                    kind: PeerKind::ConsulAgent,
                    source: Source::Static,
                    node: None,
                    datacenter: None,
                    region: None,
                    last_seen: SystemTime::now(),
                },
            ],
            learned: Learned {
                region: Some("eu".into()),
                datacenter: Some("ams2".into()),
                from_node: Some("ams2-server-02".into()),
            },
            problems: Vec::new(),
            warnings: vec![format!("rogue announcement from 10.0.1.99: token={TOKEN}")],
            joins: vec![("consul".into(), 2)],
            errors: vec![("dns".into(), 3)],
        },
        waiting_for: Vec::new(),
    }
}

#[test]
fn status_lists_discovered_peers_with_source_sighting_learned_and_counters() {
    let mut s = healthy();
    assert!(status_doc(&s, SystemTime::now()).discovery.is_none());
    s.set_discovery(discovery_view());
    let (code, body) = get(&s, "/v1/status");
    assert_eq!(code, StatusCode::OK);
    assert!(!body.contains(TOKEN), "redacted: {body}");
    let doc: StatusDoc = serde_json::from_str(&body).unwrap();
    let d = doc.discovery.unwrap();
    assert_eq!(d.peers.len(), 2);
    let p = &d.peers[0];
    assert_eq!(
        (p.address.as_str(), p.kind.as_str(), p.source.as_str()),
        ("10.0.1.12", "consul-server", "mdns")
    );
    assert_eq!(p.node.as_deref(), Some("ams2-server-02"));
    assert!(p.ago_secs >= 12 && p.ago.ends_with("s ago"), "{p:?}");
    assert_eq!(d.applied.consul_lan, vec!["10.0.1.12".to_string()]);
    assert_eq!(d.learned.from_node.as_deref(), Some("ams2-server-02"));
    assert_eq!(d.learned.from_source.as_deref(), Some("mdns"));
    assert_eq!(d.joins.get("consul"), Some(&2));
    assert_eq!(d.errors.get("dns"), Some(&3));
    assert_eq!(d.warnings.len(), 1);
    // Warnings alone keep the node ready.
    assert_eq!(get(&s, "/ready").0, StatusCode::OK);
    // The page lists the peers.
    let (_, page) = get(&s, "/");
    assert!(page.contains("<h2>Discovery</h2>"), "{page}");
    assert!(page.contains("data-peer=\"10.0.1.12\""), "{page}");
    assert!(page.contains("learned region <b>eu</b>"), "{page}");
    assert!(!page.contains(TOKEN));
}

#[test]
fn discovery_problems_make_ready_503_naming_them_and_waiting_says_for_what() {
    let mut s = healthy();
    let mut v = discovery_view();
    v.report.problems =
        vec!["no healthy Consul server of ams2: 10.0.1.12:8500: connection refused".into()];
    s.set_discovery(v.clone());
    let (code, body) = get(&s, "/ready");
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body.contains(
            "[FAIL] discovery: degraded: no healthy Consul server of ams2: 10.0.1.12:8500: connection refused"
        ),
        "{body}"
    );
    v.report.problems.clear();
    v.waiting_for = vec!["the Consul server of this datacenter (mDNS on eth0)".into()];
    s.set_discovery(v.clone());
    let (code, body) = get(&s, "/ready");
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body.contains(
            "discovery: waiting for discovery: the Consul server of this datacenter (mDNS on eth0)"
        ),
        "{body}"
    );
    let doc = status_doc(&s, SystemTime::now());
    assert!(!doc.healthy);
    assert_eq!(doc.discovery.unwrap().waiting_for, v.waiting_for);
    v.waiting_for.clear();
    s.set_discovery(v);
    assert_eq!(get(&s, "/ready").0, StatusCode::OK);
}

#[test]
fn metrics_count_discovery_joins_errors_peers_and_replans() {
    let mut s = healthy();
    let (_, before) = get(&s, "/metrics");
    assert!(before.contains("hashi_supervisor_discovery_joins_total{agent=\"consul\"} 0"));
    assert!(before.contains("hashi_supervisor_discovery_errors_total{source=\"mdns\"} 0"));
    s.set_discovery(discovery_view());
    let (_, m) = get(&s, "/metrics");
    for line in [
        "hashi_supervisor_discovery_joins_total{agent=\"consul\"} 2",
        "hashi_supervisor_discovery_joins_total{agent=\"nomad\"} 0",
        "hashi_supervisor_discovery_errors_total{source=\"dns\"} 3",
        "hashi_supervisor_discovery_errors_total{source=\"static\"} 0",
        "hashi_supervisor_discovery_peers{source=\"mdns\",kind=\"consul-server\"} 1",
        "hashi_supervisor_discovery_peers{source=\"static\",kind=\"consul-agent\"} 1",
        "hashi_supervisor_discovery_replans_total{outcome=\"ok\"} 0",
        "# TYPE hashi_supervisor_discovery_joins_total counter",
        "# TYPE hashi_supervisor_discovery_peers gauge",
    ] {
        assert!(m.contains(line), "{line} missing:\n{m}");
    }
}

#[test]
fn failed_wan_servers_warn_in_status_without_failing_ready() {
    let mut s = healthy();
    let mut r = s.report(Product::Consul).unwrap().clone();
    let c = r.consul.as_mut().unwrap();
    c.wan_datacenters = Some(2);
    c.wan_failed = vec!["lon1-server-01.lon1".into()];
    s.set_report(r);
    let (code, _) = get(&s, "/ready");
    assert_eq!(code, StatusCode::OK);
    let d = status_doc(&s, SystemTime::now()).discovery.unwrap();
    assert_eq!(
        d.warnings,
        vec!["WAN: 1 of 2 datacenters' servers failed: lon1-server-01.lon1".to_string()]
    );
}

// -------------------------------------------------------------- security ---

/// A consul-server + nomad-server role with the cluster's material in
/// place (every token and both gossip keys set), holding the CA.
fn secured_role(not_after: u64) -> crate::role::NodeRole {
    use crate::role::Secret;
    use crate::role::security::{AclTokens, NodeMaterial, NodeSecrets};
    let host = crate::role::StaticHost {
        hostname: Some("ams2-server-01".into()),
        interfaces: vec![("eth1".into(), std::net::Ipv4Addr::new(10, 0, 1, 11))],
        ..crate::role::StaticHost::default()
    };
    // `dev` parses with no `[security]` at all; the security fields are
    // then set as the loader sets them for a secured server.
    let mut role = crate::role::parse(
        std::path::Path::new("/r/node.toml"),
        "schema = 1\n",
        &["dev".to_string()],
        &host,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    role.security.join_listen = "10.0.1.11:4681".parse().unwrap();
    let t = || Some(Secret::new(TOKEN));
    role.security.plaintext = false;
    role.security.ca_holder = true;
    role.security.material = Some(NodeMaterial {
        dir: "/etc/hashi-supervisor/security".into(),
        ca_file: "/etc/hashi-supervisor/security/ca.pem".into(),
        cert_file: "/etc/hashi-supervisor/security/node.pem".into(),
        key_file: "/etc/hashi-supervisor/security/node-key.pem".into(),
        consul_key_file: "/etc/hashi-supervisor/security/consul-key.pem".into(),
        nomad_key_file: "/etc/hashi-supervisor/security/nomad-key.pem".into(),
        secrets: NodeSecrets {
            ca_sha256: format!("sha256:{}", "ab".repeat(32)),
            names: vec![
                "server.ams2.consul".into(),
                "server.eu.nomad".into(),
                "localhost".into(),
            ],
            ips: vec!["127.0.0.1".parse().unwrap(), "10.0.1.11".parse().unwrap()],
            not_before: 0,
            not_after,
            primary_datacenter: "ams2".into(),
            consul_gossip_key: Secret::new(GOSSIP_KEY),
            nomad_gossip_key: Secret::new(GOSSIP_KEY),
            acl_enabled: true,
            acl: AclTokens {
                consul_agent: t(),
                consul_supervisor: t(),
                consul_replication: t(),
                consul_initial_management: t(),
                nomad_consul: t(),
                nomad_supervisor: t(),
                nomad_bootstrap: t(),
            },
        },
    });
    role
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn status_shows_the_tls_security_with_expiry_and_no_token_or_key_anywhere() {
    let not_after = unix_now() + 60 * 86_400 + 3600;
    let mut sec = SecurityStatus::of_role(&secured_role(not_after));
    sec.record_renewal_error(
        &format!("renewal refused: token={TOKEN}"),
        Some(not_after - 30 * 86_400),
    );
    let mut s = healthy();
    s.set_security(sec);
    let (code, body) = get(&s, "/v1/status");
    assert_eq!(code, StatusCode::OK);
    let doc: StatusDoc = serde_json::from_str(&body).unwrap();
    let d = doc.security.unwrap();
    assert_eq!(d.mode, "tls");
    assert_eq!(d.ca_sha256, Some(format!("sha256:{}", "ab".repeat(32))));
    assert_eq!(
        d.names,
        ["server.ams2.consul", "server.eu.nomad", "localhost"]
    );
    assert_eq!(d.not_after, Some(security::rfc3339(not_after)));
    assert!(d.not_after.as_deref().unwrap().ends_with('Z'));
    assert_eq!(d.days_left, Some(60));
    assert!(d.acl_enabled && d.ca_holder);
    assert_eq!(d.join_listen.as_deref(), Some("10.0.1.11:4681"));
    assert_eq!(d.renewals.errors, 1);
    assert!(d.renewals.last_error.unwrap().contains(redact::REDACTED));
    // A certificate with 60 days left passes, and says so.
    let c = doc.checks.iter().find(|c| c.name == "certificate").unwrap();
    assert!(c.ok, "{c:?}");
    assert!(c.reason.contains("60 days left"), "{c:?}");
    assert_eq!(get(&s, "/ready").0, StatusCode::OK);
    // Every answer: no token, no gossip key.
    for path in ["/", "/v1/status", "/metrics", "/ready?verbose"] {
        let (_, body) = get(&s, path);
        assert!(!body.contains(TOKEN), "{path}: {body}");
        assert!(!body.contains(GOSSIP_KEY), "{path}: {body}");
    }
    let (_, page) = get(&s, "/");
    assert!(page.contains("data-mode=\"tls\""), "{page}");
    assert!(
        page.contains(&format!("valid until {}", security::rfc3339(not_after))),
        "{page}"
    );
    assert!(!page.contains("class=\"plaintext"), "{page}");
    let (_, metrics) = get(&s, "/metrics");
    assert!(
        metrics.contains(&format!(
            "\nhashi_supervisor_cert_expiry_seconds {not_after}\n"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nhashi_supervisor_security_plaintext 0\n"),
        "{metrics}"
    );
}

#[test]
fn plaintext_is_red_on_the_page_counted_in_metrics_and_ready_stays_200() {
    let mut role = secured_role(0);
    role.security.material = None;
    role.security.ca_holder = false;
    role.security.plaintext = true;
    let mut s = healthy();
    s.set_security(SecurityStatus::of_role(&role));
    let (_, body) = get(&s, "/v1/status");
    let doc: StatusDoc = serde_json::from_str(&body).unwrap();
    let d = doc.security.unwrap();
    assert_eq!(d.mode, "plaintext");
    assert_eq!(
        (d.not_after, d.days_left, d.join_listen),
        (None, None, None)
    );
    let (_, page) = get(&s, "/");
    let at = page.find("id=\"security\"").expect(&page);
    let line = &page[at..at + page[at..].find("</p>").unwrap()];
    assert!(line.contains("class=\"plaintext fail\""), "{line}");
    assert!(line.contains("style=\"color:#c00000"), "{line}");
    assert!(line.contains(">plaintext</b>"), "{line}");
    let (_, metrics) = get(&s, "/metrics");
    assert!(
        metrics.contains("\nhashi_supervisor_security_plaintext 1\n"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("hashi_supervisor_cert_expiry_seconds"),
        "{metrics}"
    );
    // Plaintext was chosen: shown, never a failed check.
    assert_eq!(get(&s, "/ready").0, StatusCode::OK);
    assert!(!doc.checks.iter().any(|c| c.name == "certificate"));
}

#[test]
fn a_certificate_expiring_within_a_day_or_expired_makes_ready_503() {
    let mut s = healthy();
    s.set_security(SecurityStatus::of_role(&secured_role(
        unix_now() + 5 * 3600 + 1800,
    )));
    let (code, body) = get(&s, "/ready?verbose");
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("certificate expires in 5h"), "{body}");
    let (_, page) = get(&s, "/");
    assert!(page.contains("expires "), "{page}");
    s.set_security(SecurityStatus::of_role(&secured_role(unix_now() - 60)));
    let (code, body) = get(&s, "/ready?verbose");
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("the node certificate expired at "), "{body}");
    let doc: StatusDoc = serde_json::from_str(&get(&s, "/v1/status").1).unwrap();
    assert_eq!(doc.security.unwrap().days_left, Some(-1));
}

#[test]
fn manual_tls_files_without_material_are_manual_tls() {
    let mut role = secured_role(0);
    role.security.material = None;
    role.security.plaintext = false;
    role.consul.tls = Some(crate::role::TlsFiles {
        ca_file: "/t/ca.pem".into(),
        cert_file: "/t/c.pem".into(),
        key_file: "/t/k.pem".into(),
    });
    assert_eq!(SecurityStatus::of_role(&role).mode, SecurityMode::ManualTls);
}

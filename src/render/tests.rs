use std::path::{Path, PathBuf};

use super::*;
use crate::role::{self, StaticHost};

const KEY: &str = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=";

fn host() -> StaticHost {
    let mut h = StaticHost {
        hostname: Some("box".into()),
        interfaces: vec![
            ("lo".into(), "127.0.0.1".parse().unwrap()),
            ("eth1".into(), "10.0.1.5".parse().unwrap()),
        ],
        ..StaticHost::default()
    };
    for f in ["/k/gossip.key", "/t/ca.pem", "/t/cert.pem", "/t/key.pem"] {
        h.files.insert(PathBuf::from(f), format!("{KEY}\n"));
    }
    h
}

fn plan(text: &str) -> Plan {
    let role = role::parse(
        Path::new("/r/node.toml"),
        &role::with_plaintext(text),
        &[],
        &host(),
    )
    .unwrap();
    Plan::from_role(&role)
}

const SERVER: &str = r#"
schema = 1
roles = ["consul-server", "nomad-server", "nomad-client"]
datacenter = "ams2"
[addresses]
private = "eth1"
[consul]
encrypt_key_file = "/k/gossip.key"
[consul.tls]
ca_file = "/t/ca.pem"
cert_file = "/t/cert.pem"
key_file = "/t/key.pem"
[consul.extra]
client_addr = "0.0.0.0"
ui_config = { dir = "/srv/ui" }
[nomad]
encrypt_key_file = "/k/gossip.key"
drain_deadline_secs = 30
[nomad.tls]
ca_file = "/t/ca.pem"
cert_file = "/t/cert.pem"
key_file = "/t/key.pem"
http = true
[nomad.extra.client]
node_class = "edge"
[nomad.extra.plugin.docker.config]
allow_privileged = false
"#;

#[test]
fn same_plan_renders_byte_identical_output() {
    let p = plan(SERVER);
    assert_eq!(render_plan(&p).unwrap(), render_plan(&p).unwrap());
}

#[test]
fn consul_json_has_todays_keys_and_extra_merged_last() {
    let files = render_plan(&plan(SERVER)).unwrap();
    let v: Value = serde_json::from_str(&files[0].contents).unwrap();
    assert_eq!(v["encrypt"], KEY);
    assert_eq!(v["client_addr"], "0.0.0.0", "extra replaces our value");
    assert_eq!(v["ui_config"]["enabled"], true, "tables merge key by key");
    assert_eq!(v["ui_config"]["dir"], "/srv/ui");
    assert_eq!(v["tls"]["defaults"]["cert_file"], "/t/cert.pem");
    assert_eq!(v["advertise_addr"], "10.0.1.5", "interface name resolved");
    assert_eq!(files[0].mode, 0o640);
    assert_eq!(files[0].owner.as_deref(), Some("consul"));
}

#[test]
fn nomad_hcl_has_server_client_tls_drain_and_extra_blocks() {
    let files = render_plan(&plan(SERVER)).unwrap();
    let hcl = &files[1].contents;
    let flat = hcl::flatten(hcl).unwrap();
    assert_eq!(flat["server.encrypt"], format!("\"{KEY}\""));
    assert_eq!(flat["client.node_class"], "\"edge\"");
    assert_eq!(flat["client.enabled"], "true");
    assert_eq!(flat["client.drain_on_shutdown.deadline"], "\"30s\"");
    assert_eq!(flat["tls.http"], "true");
    assert_eq!(flat["plugin.docker.config.allow_privileged"], "false");
    assert_eq!(
        files[1].owner.as_deref(),
        Some("root"),
        "a Nomad client runs as root"
    );
}

#[test]
fn nomad_without_consul_switches_consul_integration_off() {
    let p = plan(
        "schema = 1\nroles = [\"nomad-server\"]\n[addresses]\nprivate = \"10.0.1.5\"\n[discovery]\nnomad_retry_join = [\"10.0.1.6\"]\n",
    );
    let flat = hcl::flatten(&render_plan(&p).unwrap()[0].contents).unwrap();
    assert_eq!(flat["consul.server_auto_join"], "false");
    assert!(!flat.contains_key("consul.address"));
    assert_eq!(flat["server.server_join.retry_join"], "[\"10.0.1.6\"]");
}

#[test]
fn log_level_change_is_a_reload_and_address_change_a_restart() {
    let a = render_plan(&plan(SERVER)).unwrap();
    let b = render_plan(&plan(&SERVER.replace(
        "datacenter = \"ams2\"",
        "datacenter = \"ams2\"\nlog_level = \"debug\"",
    )))
    .unwrap();
    let c = render_plan(&plan(
        &SERVER.replace("private = \"eth1\"", "private = \"10.0.1.9\""),
    ))
    .unwrap();
    for i in 0..2 {
        let p = a[i].product;
        assert_eq!(
            classify_change(p, &a[i].contents, &a[i].contents),
            ChangeKind::Unchanged
        );
        assert_eq!(
            classify_change(p, &a[i].contents, &b[i].contents),
            ChangeKind::Reload,
            "{p}"
        );
        assert_eq!(
            classify_change(p, &a[i].contents, &c[i].contents),
            ChangeKind::Restart,
            "{p}"
        );
    }
}

#[test]
fn tls_path_change_is_a_reload_and_unreadable_text_a_restart() {
    let old = "{\"tls\":{\"defaults\":{\"cert_file\":\"/a\"}},\"server\":true}";
    let new = "{\"tls\":{\"defaults\":{\"cert_file\":\"/b\"}},\"server\":true}";
    assert_eq!(
        classify_change(Product::Consul, old, new),
        ChangeKind::Reload
    );
    assert_eq!(
        classify_change(Product::Consul, old, "garbage"),
        ChangeKind::Restart
    );
    assert_eq!(
        classify_change(Product::Nomad, "a = 1\n", "a = 1\n"),
        ChangeKind::Unchanged
    );
}

#[test]
fn relocate_keeps_the_layout_under_the_new_root() {
    let files = render_plan(&plan(SERVER)).unwrap();
    let moved = relocate(
        &files,
        Path::new("/etc/hashi-supervisor"),
        Path::new("/tmp/out"),
    )
    .unwrap();
    assert_eq!(moved[0].path, Path::new("/tmp/out/consul.d/consul.json"));
    assert_eq!(moved[1].path, Path::new("/tmp/out/nomad.d/nomad.hcl"));
}

#[test]
fn plan_secrets_never_appear_in_debug_or_json() {
    let p = plan(SERVER);
    assert!(!format!("{p:?}").contains(KEY));
    assert!(!serde_json::to_string(&p).unwrap().contains(KEY));
}

#[test]
fn the_stronger_of_two_changes_wins() {
    use ChangeKind::{Reload, Restart, Unchanged};
    for (a, b, want) in [
        (Unchanged, Unchanged, Unchanged),
        (Unchanged, Reload, Reload),
        (Reload, Unchanged, Reload),
        (Reload, Restart, Restart),
        (Restart, Unchanged, Restart),
        (Restart, Restart, Restart),
    ] {
        assert_eq!(a.stronger(b), want, "{a:?} and {b:?}");
    }
}

/// The node's material as `supervisor cluster init` or a join leaves it in
/// `/etc/hashi-supervisor/security/` (test values, never real ones).
mod secured {
    use super::*;
    use crate::peers::Peers;

    const SEC: &str = "/etc/hashi-supervisor/security";
    const CONSUL_KEY: &str = "AAAAAAAAAAAAAAAAAAAAAA==";
    const NOMAD_KEY: &str = "BBBBBBBBBBBBBBBBBBBBBB==";
    const AGENT: &str = "11111111-1111-4111-8111-111111111111";
    const SUPERVISOR: &str = "22222222-2222-4222-8222-222222222222";
    const REPLICATION: &str = "33333333-3333-4333-8333-333333333333";
    const MANAGEMENT: &str = "44444444-4444-4444-8444-444444444444";
    const NOMAD_CONSUL: &str = "55555555-5555-4555-8555-555555555555";
    const NOMAD_SUPERVISOR: &str = "66666666-6666-4666-8666-666666666666";

    fn secured_host(init_node: bool) -> StaticHost {
        let mut h = host();
        for f in [
            "ca.pem",
            "node.pem",
            "node-key.pem",
            "consul-key.pem",
            "nomad-key.pem",
        ] {
            h.files.insert(Path::new(SEC).join(f), "pem".into());
        }
        let mut acl = serde_json::json!({
            "consul_agent": AGENT,
            "consul_supervisor": SUPERVISOR,
            "consul_replication": REPLICATION,
            "nomad_consul": NOMAD_CONSUL,
            "nomad_supervisor": NOMAD_SUPERVISOR,
        });
        if init_node {
            acl["consul_initial_management"] = serde_json::json!(MANAGEMENT);
        }
        let json = serde_json::json!({
            "version": 1,
            "ca_sha256": format!("sha256:{}", "ab".repeat(32)),
            "names": ["server.ams2.consul", "server.eu.nomad", "localhost"],
            "ips": ["127.0.0.1", "10.0.1.5"],
            "not_before": 1_700_000_000u64,
            "not_after": 1_707_776_000u64,
            "primary_datacenter": "ams2",
            "consul_gossip_key": CONSUL_KEY,
            "nomad_gossip_key": NOMAD_KEY,
            "acl_enabled": true,
            "acl": acl,
        });
        h.files
            .insert(Path::new(SEC).join("node.json"), json.to_string());
        h
    }

    fn secured_plan(roles: &str, dc: &str, init_node: bool, peers: &Peers) -> Plan {
        let text = format!(
            "schema = 1\nroles = [{roles}]\nregion = \"eu\"\ndatacenter = \"{dc}\"\n[addresses]\nprivate = \"eth1\"\n"
        );
        let role = role::parse(
            Path::new("/r/node.toml"),
            &text,
            &[],
            &secured_host(init_node),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(role.security.material.is_some());
        Plan::build(&role, peers)
    }

    fn consul_json(plan: &Plan) -> serde_json::Value {
        serde_json::from_str(&render_consul(plan.render.consul.as_ref().unwrap()).unwrap()).unwrap()
    }

    #[test]
    fn a_secured_consul_server_verifies_everything_serves_https_only_and_denies_by_default() {
        let plan = secured_plan("\"consul-server\"", "ams2", true, &Peers::default());
        let c = consul_json(&plan);
        assert_eq!(c["encrypt"], CONSUL_KEY);
        let d = &c["tls"]["defaults"];
        assert_eq!(d["ca_file"], format!("{SEC}/ca.pem"));
        assert_eq!(d["cert_file"], format!("{SEC}/node.pem"));
        assert_eq!(d["key_file"], format!("{SEC}/consul-key.pem"));
        assert_eq!(d["verify_incoming"], true);
        assert_eq!(d["verify_outgoing"], true);
        assert_eq!(c["tls"]["internal_rpc"]["verify_server_hostname"], true);
        assert_eq!(c["ports"], serde_json::json!({"http": -1, "https": 8501}));
        assert_eq!(c["primary_datacenter"], "ams2");
        let acl = &c["acl"];
        assert_eq!(acl["enabled"], true);
        assert_eq!(acl["default_policy"], "deny");
        assert_eq!(acl["down_policy"], "extend-cache");
        assert_eq!(acl["enable_token_persistence"], true);
        assert_eq!(acl["tokens"]["agent"], AGENT);
        assert_eq!(
            acl["tokens"]["initial_management"], MANAGEMENT,
            "the init node bootstraps"
        );
        assert!(
            acl["tokens"].get("replication").is_none(),
            "in the primary dc"
        );
        assert!(acl.get("enable_token_replication").is_none());
        // The supervisor's own calls: HTTPS on 8501 with the node certificate
        // and its token.
        let a = plan.agent(Product::Consul).unwrap();
        assert_eq!(a.http_addr.to_string(), "127.0.0.1:8501");
        let t = a.api_tls.as_ref().unwrap();
        assert_eq!(t.server_name, "localhost");
        assert_eq!(t.ca_file, Path::new(SEC).join("ca.pem"));
        let cc = t.client_cert.as_ref().unwrap();
        assert_eq!(cc.cert_file, Path::new(SEC).join("node.pem"));
        assert_eq!(cc.key_file, Path::new(SEC).join("node-key.pem"));
        assert_eq!(t.token.as_ref().unwrap().expose(), SUPERVISOR);
        // No secret in the plan's Debug or JSON.
        let shown = format!("{plan:?}{}", serde_json::to_string(&plan).unwrap());
        for secret in [CONSUL_KEY, NOMAD_KEY, AGENT, SUPERVISOR, MANAGEMENT] {
            assert!(!shown.contains(secret), "{secret} shown");
        }
    }

    #[test]
    fn servers_outside_the_primary_datacenter_replicate_tokens_and_clients_do_not() {
        let plan = secured_plan("\"consul-server\"", "lon1", false, &Peers::default());
        let acl = &consul_json(&plan)["acl"];
        assert_eq!(acl["tokens"]["replication"], REPLICATION);
        assert_eq!(acl["enable_token_replication"], true);
        assert!(acl["tokens"].get("initial_management").is_none());
        assert_eq!(consul_json(&plan)["primary_datacenter"], "ams2");
        let plan = secured_plan("\"consul-client\"", "lon1", false, &Peers::default());
        let acl = &consul_json(&plan)["acl"];
        assert!(acl["tokens"].get("replication").is_none());
        assert_eq!(acl["tokens"]["agent"], AGENT);
    }

    #[test]
    fn a_secured_nomad_encrypts_uses_tls_acl_and_reaches_consul_over_https_with_its_token() {
        let plan = secured_plan(
            "\"consul-server\", \"nomad-server\"",
            "ams2",
            false,
            &Peers::default(),
        );
        let hcl = render_nomad(plan.render.nomad.as_ref().unwrap()).unwrap();
        let flat = hcl::flatten(&hcl).unwrap();
        let q = |v: &str| format!("\"{v}\"");
        for (k, v) in [
            ("server.encrypt", q(NOMAD_KEY)),
            ("tls.http", "true".into()),
            ("tls.rpc", "true".into()),
            ("tls.ca_file", q(&format!("{SEC}/ca.pem"))),
            ("tls.cert_file", q(&format!("{SEC}/node.pem"))),
            ("tls.key_file", q(&format!("{SEC}/nomad-key.pem"))),
            ("tls.verify_server_hostname", "true".into()),
            ("tls.verify_https_client", "false".into()),
            ("consul.address", q("127.0.0.1:8501")),
            ("consul.ssl", "true".into()),
            ("consul.ca_file", q(&format!("{SEC}/ca.pem"))),
            ("consul.cert_file", q(&format!("{SEC}/node.pem"))),
            ("consul.key_file", q(&format!("{SEC}/nomad-key.pem"))),
            ("consul.token", q(NOMAD_CONSUL)),
            ("acl.enabled", "true".into()),
        ] {
            assert_eq!(flat.get(k), Some(&v), "{k} in\n{hcl}");
        }
        let a = plan.agent(Product::Nomad).unwrap();
        let t = a.api_tls.as_ref().unwrap();
        assert_eq!(t.server_name, "server.eu.nomad");
        assert_eq!(t.token.as_ref().unwrap().expose(), NOMAD_SUPERVISOR);
        assert!(t.client_cert.is_some());
    }

    #[test]
    fn a_secured_nomad_client_without_consul_uses_the_chosen_servers_https_port() {
        let peers = Peers {
            consul_http: Some("10.0.1.11:8500".into()),
            ..Peers::default()
        };
        let plan = secured_plan("\"nomad-client\"", "ams2", false, &peers);
        let n = plan.render.nomad.as_ref().unwrap();
        assert_eq!(n.consul_address.as_deref(), Some("10.0.1.11:8501"));
        assert_eq!(n.encrypt, None, "clients do not gossip");
        let a = plan.agent(Product::Nomad).unwrap();
        assert_eq!(a.api_tls.as_ref().unwrap().server_name, "client.eu.nomad");
        for (written, https) in [
            ("consul.example", "consul.example:8501"),
            ("consul.example:8500", "consul.example:8501"),
            ("consul.example:9500", "consul.example:9500"),
            ("10.0.1.11", "10.0.1.11:8501"),
            ("[fd00::1]:8500", "[fd00::1]:8501"),
        ] {
            assert_eq!(crate::plan::with_https_port_for_tests(written), https);
        }
    }
}

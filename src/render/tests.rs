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

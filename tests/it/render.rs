//! Integration tests: render. Golden files (`tests/golden/`, refreshed with
//! `UPDATE_GOLDEN=1`) for the five reference examples (rendered with what
//! discovery finds in the reference topology) and every role combination;
//! `supervisor render` and `render --check` through the real binary.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use hashi_supervisor::peers::Peers;
use hashi_supervisor::plan::Plan;
use hashi_supervisor::render::{self, RenderedFile};
use hashi_supervisor::role;

use crate::support::material::{self, JOIN_TOKEN, MaterialHost};
use crate::support::supervisor_bin;

/// The five nodes of the reference scenario.
const EXAMPLES: [&str; 5] = [
    "ams2-server-01",
    "ams2-server-03",
    "ams2-client-01",
    "lon1-server-01",
    "lon1-client-01",
];

/// Every valid combination of roles (`dev` has its own fixture).
const COMBINATIONS: [&str; 11] = [
    "consul-server",
    "consul-client",
    "nomad-server",
    "nomad-client",
    "nomad-server,nomad-client",
    "consul-server,nomad-server",
    "consul-server,nomad-client",
    "consul-server,nomad-server,nomad-client",
    "consul-client,nomad-server",
    "consul-client,nomad-client",
    "consul-client,nomad-server,nomad-client",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn render_file(path: &Path, roles: &[String]) -> Vec<RenderedFile> {
    render_with(path, roles, &Peers::default())
}

/// Renders the reference example `node` with what discovery found, as a
/// node that has joined the secured cluster: its material (test values)
/// in `/etc/hashi-supervisor/security/`, ams2-server-01 the init node.
fn render_example(node: &str, peers: &Peers) -> Vec<RenderedFile> {
    crate::support::agent_users();
    let host = MaterialHost::new(&["localhost".to_string()], node == "ams2-server-01");
    let path = root().join(format!("config/examples/{node}.toml"));
    let role = role::load(&path, true, &[], &host)
        .unwrap_or_else(|e| panic!("{e}"))
        .role;
    assert!(role.security.material.is_some(), "{node}");
    render::render_plan(&Plan::build(&role, peers)).unwrap()
}

/// Renders the role file at `path` with what discovery found.
fn render_with(path: &Path, roles: &[String], peers: &Peers) -> Vec<RenderedFile> {
    crate::support::agent_users();
    let role = role::load(path, true, roles, &role::SystemHost)
        .unwrap_or_else(|e| panic!("{e}"))
        .role;
    render::render_plan(&Plan::build(&role, peers)).unwrap()
}

/// The Consul HTTP address discovery chooses for a node of the reference
/// topology without a local Consul: the Consul server of its datacenter
/// (ams2-server-01 at 10.0.1.11, lon1-server-01 at 10.0.2.11), announced
/// over mDNS. `None` for the nodes that run Consul themselves.
fn reference_consul_http(node: &str) -> Option<&'static str> {
    match node {
        "ams2-server-03" | "ams2-client-01" => Some("10.0.1.11:8500"),
        "lon1-client-01" => Some("10.0.2.11:8500"),
        _ => None,
    }
}

/// What discovery gives the plan of `node` in the reference topology, as
/// far as it changes the rendered files: the choice of Consul server.
/// (The Consul servers find each other over the WAN through lon1's seed;
/// the Nomad servers find each other through Consul; the Nomad servers an
/// announcement names only add `server_join` entries, which the plan's
/// own tests cover.)
fn reference_peers(node: &str) -> Peers {
    Peers {
        consul_http: reference_consul_http(node).map(str::to_string),
        ..Peers::default()
    }
}

/// The `consul.address` of a rendered nomad.hcl (`None`: no address).
fn nomad_consul_address(files: &[RenderedFile]) -> Option<String> {
    let hcl = files
        .iter()
        .find(|f| f.path.extension().is_some_and(|e| e == "hcl"))
        .unwrap();
    let body: hcl::Body = hcl::from_str(&hcl.contents).unwrap();
    let consul = body
        .blocks()
        .find(|b| b.identifier.as_str() == "consul")
        .unwrap();
    consul
        .body
        .attributes()
        .find(|a| a.key.as_str() == "address")
        .map(|a| match &a.expr {
            hcl::Expression::String(s) => s.clone(),
            other => panic!("consul.address is not a string: {other:?}"),
        })
}

/// Compares each file with `golden_dir/<file name>`, or rewrites the golden
/// files when `UPDATE_GOLDEN=1`. Returns mismatches.
fn check_golden(files: &[RenderedFile], golden_dir: &Path) -> Vec<String> {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let mut bad = Vec::new();
    let mut expected_names: Vec<String> = Vec::new();
    for f in files {
        let name = f.path.file_name().unwrap().to_str().unwrap().to_string();
        let golden = golden_dir.join(&name);
        expected_names.push(name);
        if update {
            std::fs::create_dir_all(golden_dir).unwrap();
            std::fs::write(&golden, &f.contents).unwrap();
            continue;
        }
        match std::fs::read_to_string(&golden) {
            Ok(g) if g == f.contents => {}
            Ok(g) => bad.push(format!(
                "{} differs from its golden file:\n{}",
                golden.display(),
                render::diff::unified(&g, &f.contents, "golden", "rendered")
            )),
            Err(e) => bad.push(format!("{}: {e}", golden.display())),
        }
    }
    // No stale golden file for an agent that no longer renders.
    if !update {
        if let Ok(dir) = std::fs::read_dir(golden_dir) {
            for e in dir {
                let n = e.unwrap().file_name().to_string_lossy().into_owned();
                if !expected_names.contains(&n) {
                    bad.push(format!(
                        "{}: golden file {n} is not rendered any more",
                        golden_dir.display()
                    ));
                }
            }
        }
    }
    bad
}

#[test]
fn reference_examples_render_byte_for_byte_to_their_golden_files() {
    let mut bad = Vec::new();
    for node in EXAMPLES {
        let files = render_example(node, &reference_peers(node));
        // A node with a local Consul uses it; the others the Consul server
        // discovery chose for them, on Consul's HTTPS port.
        let want = reference_consul_http(node)
            .map(|a| a.replace(":8500", ":8501"))
            .unwrap_or_else(|| "127.0.0.1:8501".to_string());
        assert_eq!(
            nomad_consul_address(&files).as_deref(),
            Some(want.as_str()),
            "{node}"
        );
        bad.extend(check_golden(
            &files,
            &root().join("tests/golden/examples").join(node),
        ));
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn a_client_with_nothing_discovered_yet_renders_no_consul_address() {
    let files = render_example("ams2-client-01", &Peers::default());
    assert_eq!(nomad_consul_address(&files), None);
    let flat = hcl_flat(&files[0].contents);
    for key in ["auto_advertise", "server_auto_join", "client_auto_join"] {
        assert_eq!(flat[&format!("consul.{key}")], "false", "consul.{key}");
    }
    // Once discovery has chosen ams2's Consul server, Nomad uses it.
    let found = render_example("ams2-client-01", &reference_peers("ams2-client-01"));
    assert_eq!(
        nomad_consul_address(&found).as_deref(),
        Some("10.0.1.11:8501"),
        "the chosen server's HTTPS port"
    );
    let flat = hcl_flat(&found[0].contents);
    assert_eq!(flat["consul.server_auto_join"], "true");
}

/// `block.key` → value text of a rendered nomad.hcl (top-level blocks).
fn hcl_flat(text: &str) -> std::collections::BTreeMap<String, String> {
    let body: hcl::Body = hcl::from_str(text).unwrap();
    let mut out = std::collections::BTreeMap::new();
    for b in body.blocks() {
        for a in b.body.attributes() {
            out.insert(
                format!("{}.{}", b.identifier.as_str(), a.key.as_str()),
                hcl::format::to_string(&a.expr).unwrap(),
            );
        }
    }
    out
}

#[test]
fn every_role_combination_renders_byte_for_byte_to_its_golden_files() {
    let mut bad = Vec::new();
    for combo in COMBINATIONS {
        let roles: Vec<String> = combo.split(',').map(String::from).collect();
        let files = render_file(&root().join("tests/fixtures/role/combo.toml"), &roles);
        let consul = combo.contains("consul");
        let nomad = combo.contains("nomad");
        assert_eq!(
            files.len(),
            usize::from(consul) + usize::from(nomad),
            "{combo}"
        );
        bad.extend(check_golden(
            &files,
            &root()
                .join("tests/golden/roles")
                .join(combo.replace(',', "+")),
        ));
    }
    let files = render_file(&root().join("tests/fixtures/role/dev.toml"), &[]);
    assert_eq!(files.len(), 2);
    bad.extend(check_golden(&files, &root().join("tests/golden/roles/dev")));
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn rendered_consul_files_are_valid_json() {
    for node in EXAMPLES {
        for f in render_example(node, &Peers::default()) {
            if f.path.extension().is_some_and(|e| e == "json") {
                serde_json::from_str::<serde_json::Value>(&f.contents)
                    .unwrap_or_else(|e| panic!("{node}: {e}"));
            }
        }
    }
}

#[test]
fn rendered_nomad_files_parse_as_hcl() {
    let mut files = Vec::new();
    for node in EXAMPLES {
        files.extend(render_example(node, &Peers::default()));
    }
    for combo in COMBINATIONS {
        let roles: Vec<String> = combo.split(',').map(String::from).collect();
        files.extend(render_file(
            &root().join("tests/fixtures/role/combo.toml"),
            &roles,
        ));
    }
    for f in files
        .iter()
        .filter(|f| f.path.extension().is_some_and(|e| e == "hcl"))
    {
        let body: hcl::Body = hcl::from_str(&f.contents)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", f.path.display(), f.contents));
        assert!(body.attributes().any(|a| a.key.as_str() == "region"));
        assert!(body.blocks().any(|b| b.identifier.as_str() == "consul"));
    }
}

/// Runs the binary in `config/examples` as a node about to join: with a
/// join token (of the right shape; `render` does not join), since the
/// examples have no material on the test machine.
fn supervisor(args: &[&str]) -> std::process::Output {
    Command::new(supervisor_bin())
        .current_dir(root().join("config/examples"))
        .env_remove("HASHI_SUPERVISOR_CONFIG")
        .env_remove("HASHI_SUPERVISOR_ROLE")
        .env_remove("HASHI_SUPERVISOR_JOIN_TOKEN")
        .args(["--join-token", JOIN_TOKEN])
        .args(args)
        .output()
        .expect("the supervisor binary runs")
}

#[test]
fn render_writes_mode_0640_files_and_check_then_finds_no_drift() {
    // ams2-server-01 after `cluster init`: its material in a config dir of
    // its own (the golden files name /etc/hashi-supervisor).
    let work = tempfile::tempdir().unwrap();
    let etc = work.path().join("etc");
    material::write(&etc, &["localhost".to_string()], true);
    let text = std::fs::read_to_string(root().join("config/examples/ams2-server-01.toml")).unwrap();
    let role_file = work.path().join("node.toml");
    std::fs::write(
        &role_file,
        format!("{text}\n[paths]\nconfig_dir = \"{}\"\n", etc.display()),
    )
    .unwrap();
    let role_arg = role_file.to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().to_str().unwrap();
    let out = supervisor(&["render", "--config", role_arg, "--out", out_dir]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for rel in ["consul.d/consul.json", "nomad.d/nomad.hcl"] {
        let p = tmp.path().join(rel);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640, "{rel}");
        let golden = root()
            .join("tests/golden/examples/ams2-server-01")
            .join(p.file_name().unwrap());
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            std::fs::read_to_string(golden)
                .unwrap()
                .replace("/etc/hashi-supervisor", etc.to_str().unwrap())
        );
    }
    let out = supervisor(&["render", "--check", "--config", role_arg, "--out", out_dir]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let again = supervisor(&["render", "--config", role_arg, "--out", out_dir]);
    assert_eq!(
        String::from_utf8_lossy(&again.stdout)
            .matches("unchanged: ")
            .count(),
        2,
        "a second render changes nothing"
    );
}

#[test]
fn render_check_reports_drift_with_a_diff_exit_1_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().to_str().unwrap();
    supervisor(&[
        "render",
        "--config",
        "lon1-server-01.toml",
        "--out",
        out_dir,
    ]);
    let hcl = tmp.path().join("nomad.d/nomad.hcl");
    let edited = std::fs::read_to_string(&hcl)
        .unwrap()
        .replace("bootstrap_expect = 3", "bootstrap_expect = 5");
    std::fs::write(&hcl, &edited).unwrap();
    let out = supervisor(&[
        "render",
        "--check",
        "--config",
        "lon1-server-01.toml",
        "--out",
        out_dir,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("-  bootstrap_expect = 5\n+  bootstrap_expect = 3\n"),
        "{stdout}"
    );
    assert!(stdout.contains("up to date: "), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(&hcl).unwrap(),
        edited,
        "--check wrote"
    );
}

#[test]
fn render_check_on_an_empty_dir_is_drift_and_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = supervisor(&[
        "render",
        "--check",
        "--config",
        "ams2-client-01.toml",
        "--out",
        tmp.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn render_check_diff_never_shows_a_gossip_key() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(supervisor_bin())
        .current_dir(root().join("tests/fixtures/role"))
        .env_remove("HASHI_SUPERVISOR_CONFIG")
        .args([
            "render",
            "--check",
            "--config",
            "combo.toml",
            "--role",
            "consul-server,nomad-server",
        ])
        .args(["--out", tmp.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for key in ["keys/consul-gossip.key", "keys/nomad-gossip.key"] {
        let k = std::fs::read_to_string(root().join("tests/fixtures/role").join(key)).unwrap();
        assert!(!stdout.contains(k.trim()), "{key} leaked");
    }
    assert!(stdout.contains("<redacted>"), "{stdout}");
}

#[test]
fn render_without_out_writes_into_the_role_files_config_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let etc = tmp.path().join("etc");
    let role = tmp.path().join("node.toml");
    // The example leaves its Consul server to discovery; `render` alone
    // (nothing discovered) renders a written one.
    let text = std::fs::read_to_string(root().join("config/examples/ams2-server-03.toml")).unwrap();
    std::fs::write(
        &role,
        format!(
            "{text}\n[discovery]\nconsul_address = \"10.0.1.11:8500\"\n[paths]\nconfig_dir = \"{}\"\nstate_dir = \"{}\"\n",
            etc.display(),
            tmp.path().join("var").display()
        ),
    )
    .unwrap();
    let out = supervisor(&["render", "--config", role.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hcl = std::fs::read_to_string(etc.join("nomad.d/nomad.hcl")).unwrap();
    assert!(hcl.contains("address = \"10.0.1.11:8500\""), "{hcl}");
    assert!(!etc.join("consul.d").exists(), "no Consul on this node");
    let out = supervisor(&["render", "--check", "--config", role.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
}

/// Certificate names of each reference node (the design contract's
/// `security::names`).
fn reference_names(node: &str) -> Vec<String> {
    let (roles, dc): (&[&str], &str) = match node {
        "ams2-server-01" => (&["consul-server", "nomad-server"], "ams2"),
        "ams2-server-03" => (&["nomad-server"], "ams2"),
        "ams2-client-01" => (&["nomad-client"], "ams2"),
        "lon1-server-01" => (&["consul-server", "nomad-server"], "lon1"),
        _ => (&["nomad-client"], "lon1"),
    };
    material::names_for(roles, "eu", dc)
}

#[test]
fn secured_renders_of_every_example_pass_the_stand_ins_config_validation() {
    // Each reference node with real material (rcgen CA and node
    // certificate) in a config dir of its own; the stand-in's loader is
    // the other judge of the keys (it accepts what the real agents accept).
    let standin = crate::support::standin::standin_bin();
    for node in EXAMPLES {
        let work = tempfile::tempdir().unwrap();
        let etc = work.path().join("etc");
        material::write(&etc, &reference_names(node), node == "ams2-server-01");
        let text =
            std::fs::read_to_string(root().join(format!("config/examples/{node}.toml"))).unwrap();
        let role_file = work.path().join("node.toml");
        std::fs::write(
            &role_file,
            format!(
                "{text}\n[paths]\nconfig_dir = \"{}\"\nstate_dir = \"{}\"\n",
                etc.display(),
                work.path().join("var").display()
            ),
        )
        .unwrap();
        crate::support::agent_users();
        let role = role::load(&role_file, true, &[], &role::SystemHost)
            .unwrap_or_else(|e| panic!("{node}: {e}"))
            .role;
        assert!(role.security.material.is_some(), "{node}");
        let files = render::render_plan(&Plan::build(&role, &reference_peers(node))).unwrap();
        for f in &files {
            std::fs::create_dir_all(f.path.parent().unwrap()).unwrap();
            std::fs::write(&f.path, &f.contents).unwrap();
            let args: &[&str] = if f.product == hashi_supervisor::vocab::Product::Consul {
                &["--product", "consul", "validate"]
            } else {
                &["--product", "nomad", "config", "validate"]
            };
            let out = Command::new(&standin)
                .args(args)
                .arg(&f.path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{node} {}: {}{}\n{}",
                f.path.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                f.contents
            );
        }
    }
}

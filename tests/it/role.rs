//! Integration tests: role. Every invalid role file under
//! `tests/fixtures/role/invalid/` is refused by the real binary with its
//! exact expected message (`NAME.expected`) and exit 78, and nothing is
//! written.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::supervisor_bin;

/// The issue asks for at least this many invalid role files.
const MIN_INVALID_FIXTURES: usize = 20;
const EXIT_CONFIG: i32 = 78;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/role")
}

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/examples")
}

fn supervisor(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(supervisor_bin())
        .current_dir(dir)
        .env_remove("HASHI_SUPERVISOR_CONFIG")
        .env_remove("HASHI_SUPERVISOR_ROLE")
        .args(args)
        .output()
        .expect("the supervisor binary runs")
}

#[test]
fn every_invalid_role_file_fails_with_its_exact_message_exit_78_and_writes_nothing() {
    let dir = fixtures().join("invalid");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    cases.sort();
    assert!(
        cases.len() >= MIN_INVALID_FIXTURES,
        "only {} invalid fixtures",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_str().unwrap();
        let expected = std::fs::read_to_string(case.with_extension("expected"))
            .unwrap_or_else(|_| panic!("{name} has no .expected file"));
        let out = supervisor(&dir, &["check", "--config", name]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(EXIT_CONFIG) || stderr != expected {
            failures.push(format!(
                "{name}: exit {:?}\n--- expected\n{expected}--- got\n{stderr}",
                out.status.code()
            ));
        }
        let tmp = tempfile::tempdir().unwrap();
        let out = supervisor(
            &dir,
            &[
                "render",
                "--config",
                name,
                "--out",
                tmp.path().to_str().unwrap(),
            ],
        );
        assert_eq!(out.status.code(), Some(EXIT_CONFIG), "render of {name}");
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            0,
            "render of {name} wrote files"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn missing_role_file_named_explicitly_is_exit_78() {
    let tmp = tempfile::tempdir().unwrap();
    let out = supervisor(tmp.path(), &["check", "--config", "nowhere.toml"]);
    assert_eq!(out.status.code(), Some(EXIT_CONFIG));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: failed to read role file nowhere.toml\n  caused by: "),
        "{stderr}"
    );
}

#[test]
fn role_flag_overrides_the_roles_of_the_file() {
    let out = supervisor(
        &examples(),
        &[
            "check",
            "--json",
            "--config",
            "ams2-server-01.toml",
            "--role",
            "consul-server",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["plan"]["roles"], serde_json::json!(["consul-server"]));
    assert_eq!(v["plan"]["agents"].as_array().unwrap().len(), 1);
}

#[test]
fn unknown_role_on_the_command_line_points_at_the_flag() {
    let out = supervisor(
        &examples(),
        &[
            "check",
            "--config",
            "ams2-server-01.toml",
            "--role",
            "nomad-clinet",
        ],
    );
    assert_eq!(out.status.code(), Some(EXIT_CONFIG));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--role: unknown role `nomad-clinet`, did you mean `nomad-client`?"),
        "{stderr}"
    );
}

#[test]
fn role_flag_alone_works_without_a_role_file() {
    if Path::new(hashi_supervisor::paths::DEFAULT_ROLE_FILE).exists() {
        eprintln!("skipped: this machine has a default role file");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = supervisor(tmp.path(), &["check", "--json", "--role", "dev"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["role_file"], serde_json::Value::Null);
    let agents = v["plan"]["agents"].as_array().unwrap();
    assert_eq!(agents[0]["product"], "consul");
    assert_eq!(agents[1]["product"], "nomad");
}

#[test]
fn check_json_shows_the_plan_of_the_seed_server_in_start_order() {
    let out = supervisor(
        &examples(),
        &["check", "--json", "--config", "ams2-server-01.toml"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let consul = &v["plan"]["agents"][0];
    let nomad = &v["plan"]["agents"][1];
    assert_eq!(consul["product"], "consul");
    assert_eq!(consul["user"], "consul");
    assert_eq!(consul["stop_signal"], "SIGTERM");
    assert_eq!(
        consul["args"],
        serde_json::json!(["agent", "-config-dir=/etc/hashi-supervisor/consul.d"])
    );
    assert_eq!(
        consul["binary"],
        "/var/lib/hashi-supervisor/releases/consul/current/consul"
    );
    assert_eq!(consul["http_addr"], "127.0.0.1:8500");
    assert_eq!(nomad["product"], "nomad");
    assert_eq!(nomad["user"], "nomad", "a server-only Nomad is not root");
    assert_eq!(
        nomad["args"],
        serde_json::json!(["agent", "-config=/etc/hashi-supervisor/nomad.d"])
    );
    assert_eq!(nomad["stop_signal"], "SIGINT");
}

#[test]
fn check_prints_a_human_summary() {
    let out = supervisor(&examples(), &["check", "--config", "ams2-client-01.toml"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("node:       ams2-client-01 (region eu, datacenter ams2)"),
        "{stdout}"
    );
    assert!(stdout.contains("  user:     root"), "{stdout}");
    assert!(stdout.ends_with("role file is valid\n"), "{stdout}");
}

#[test]
fn check_json_never_shows_a_gossip_key() {
    let out = supervisor(
        &fixtures(),
        &[
            "check",
            "--json",
            "--config",
            "combo.toml",
            "--role",
            "consul-server,nomad-server",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let key = std::fs::read_to_string(fixtures().join("keys/consul-gossip.key")).unwrap();
    assert!(!stdout.contains(key.trim()));
    assert!(stdout.contains("<redacted>"));
}

/// A role file for ams2-server-01 whose Consul runs as a user that does not
/// exist; state and config under `dir`.
fn role_with_missing_user(dir: &Path) -> PathBuf {
    let role = dir.join("node.toml");
    std::fs::write(
        &role,
        format!(
            "schema = 1\nroles = [\"consul-server\"]\nnode_name = \"ams2-server-01\"\ndatacenter = \"ams2\"\n\
             [addresses]\nprivate = \"127.0.0.1\"\n[consul]\nbootstrap_expect = 1\nuser = \"hashi-no-such-user\"\n\
             [health]\nlisten = \"127.0.0.1:0\"\n\
             [paths]\nconfig_dir = \"{}\"\nstate_dir = \"{}\"\n",
            dir.join("etc").display(),
            dir.join("state").display()
        ),
    )
    .unwrap();
    role
}

#[test]
fn check_and_run_as_root_refuse_an_agent_user_that_does_not_exist_with_exit_78() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: as another user the agents run as that user");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let role = role_with_missing_user(tmp.path());
    let want = format!(
        "{}:9:8: consul runs as user `hashi-no-such-user`, which does not exist on this host: \
         create it with `useradd --system --user-group --home-dir {} --shell /usr/sbin/nologin hashi-no-such-user`",
        role.display(),
        tmp.path().join("state").display()
    );
    for cmd in ["check", "run"] {
        let out = supervisor(tmp.path(), &[cmd, "--config", role.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(EXIT_CONFIG), "{cmd}: {stderr}");
        assert!(stderr.contains(&want), "{cmd}: {stderr}");
        // Refused before anything was fetched, rendered or started.
        assert!(
            !tmp.path().join("state").exists(),
            "{cmd} made the state dir"
        );
        assert!(
            !tmp.path().join("etc").exists(),
            "{cmd} made the config dir"
        );
    }
}

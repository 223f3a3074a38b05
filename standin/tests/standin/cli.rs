//! The stand-in's command line: `version` formats, `validate`, config refusal.

use std::process::Command;

use crate::support::install_as;

fn run(product: &str, args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let bin = install_as(dir.path(), product);
    let mut cmd = Command::new(bin);
    cmd.args(args).env_remove("STANDIN_VERSION");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn consul_version_prints_the_real_four_line_format() {
    let (code, out, _) = run("consul", &["version"], &[]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert_eq!(lines[0], "Consul v1.20.1");
    assert!(lines[1].starts_with("Revision "), "{out}");
    assert!(lines[2].starts_with("Build Date "), "{out}");
    assert_eq!(
        lines[3],
        "Protocol 2 spoken by default, understands 2 to 3 (agent will automatically use protocol >2 when speaking to compatible agents)"
    );
}

#[test]
fn nomad_version_prints_the_real_three_line_format() {
    let (code, out, _) = run("nomad", &["version"], &[]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[0], "Nomad v1.9.3");
    assert!(lines[1].starts_with("BuildDate "), "{out}");
    assert!(lines[2].starts_with("Revision "), "{out}");
}

#[test]
fn version_follows_standin_version_env() {
    let (_, out, _) = run("consul", &["version"], &[("STANDIN_VERSION", "1.19.2")]);
    assert_eq!(out.lines().next(), Some("Consul v1.19.2"));
    let (_, out, _) = run("nomad", &["version"], &[("STANDIN_VERSION", "1.8.4")]);
    assert_eq!(out.lines().next(), Some("Nomad v1.8.4"));
}

#[test]
fn fail_version_knob_prints_a_wrong_version() {
    let (code, out, _) = run(
        "consul",
        &["version"],
        &[("STANDIN_VERSION", "1.20.1"), ("STANDIN_FAIL_VERSION", "1")],
    );
    assert_eq!(code, 0);
    let first = out.lines().next().unwrap();
    assert!(first.starts_with("Consul v"), "{first}");
    assert_ne!(first, "Consul v1.20.1");
}

#[test]
fn consul_version_json_uses_three_space_indent() {
    let (_, out, _) = run("consul", &["version", "-format=json"], &[]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["Version"], "1.20.1");
    assert_eq!(v["RPC"]["Max"], 3);
    assert!(out.contains("\n   \""), "{out}");
}

#[test]
fn product_flag_selects_product_when_name_is_neutral() {
    let out = Command::new(env!("CARGO_BIN_EXE_hashi-standin"))
        .args(["--product", "nomad", "version"])
        .env_remove("STANDIN_VERSION")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().next(),
        Some("Nomad v1.9.3")
    );
    let out = Command::new(env!("CARGO_BIN_EXE_hashi-standin"))
        .arg("version")
        .env("STANDIN_PRODUCT", "consul")
        .env_remove("STANDIN_VERSION")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().next(),
        Some("Consul v1.20.1")
    );
}

#[test]
fn help_calls_itself_a_stand_in() {
    let (_, out, _) = run("consul", &["--help"], &[]);
    assert!(out.contains("STAND-IN"), "{out}");
    assert!(out.contains("NOT HashiCorp"), "{out}");
}

fn config_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for (n, c) in files {
        std::fs::write(d.path().join(n), c).unwrap();
    }
    d
}

#[test]
fn consul_validate_accepts_good_dir() {
    let d = config_dir(&[
        (
            "a.json",
            r#"{"server": true, "bootstrap_expect": 1, "datacenter": "ams2", "retry_join": ["10.0.0.1"], "ports": {"http": 8500}}"#,
        ),
        (
            "b.hcl",
            "ui_config { enabled = true }\nleave_on_terminate = true\n",
        ),
        ("notes.txt", "ignored"),
    ]);
    let (code, out, err) = run("consul", &["validate", d.path().to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "Configuration is valid!");
}

#[test]
fn consul_refuses_unknown_top_level_key_with_file_name() {
    let d = config_dir(&[
        ("a.json", r#"{"datacenter": "ams2"}"#),
        ("b.json", r#"{"bogus_key": 1}"#),
    ]);
    let (code, _, err) = run("consul", &["validate", d.path().to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    let file = d.path().join("b.json");
    assert!(
        err.contains(&format!(
            "failed to parse {}: invalid config key bogus_key",
            file.display()
        )),
        "{err}"
    );
}

#[test]
fn consul_refuses_wrong_type() {
    let d = config_dir(&[("a.json", r#"{"bootstrap_expect": "3"}"#)]);
    let (code, _, err) = run("consul", &["validate", d.path().to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("'bootstrap_expect' expected type 'int'"),
        "{err}"
    );
}

#[test]
fn consul_refuses_unknown_nested_port() {
    let d = config_dir(&[("a.json", r#"{"ports": {"rpc": 8400}}"#)]);
    let (code, _, err) = run("consul", &["validate", d.path().to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("invalid config key ports.rpc"), "{err}");
}

#[test]
fn consul_agent_with_bad_config_exits_1_and_logs_events() {
    let d = config_dir(&[("a.hcl", "server = \"yes\"\n")]);
    let ev = d.path().join("events.log");
    let (code, _, err) = run(
        "consul",
        &["agent", &format!("-config-dir={}", d.path().display())],
        &[("STANDIN_EVENT_LOG", ev.to_str().unwrap())],
    );
    assert_eq!(code, 1, "{err}");
    let log = std::fs::read_to_string(&ev).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines[0].starts_with("start pid="), "{log}");
    assert_eq!(lines.last(), Some(&"exit 1"));
}

#[test]
fn nomad_config_validate_accepts_seed_style_hcl() {
    let d = config_dir(&[(
        "nomad.hcl",
        "region = \"eu\"\ndatacenter = \"ams2\"\ndata_dir = \"/var/lib/nomad\"\nserver { enabled = true bootstrap_expect = 3 }\nconsul {\n  address = \"127.0.0.1:8500\"\n}\n",
    )]);
    let (code, out, err) = run(
        "nomad",
        &["config", "validate", d.path().to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "Configuration is valid!");
}

#[test]
fn nomad_refuses_unknown_key_and_wrong_type() {
    let d = config_dir(&[("a.hcl", "server { enabled = true }\nbogus = 1\n")]);
    let (code, _, err) = run(
        "nomad",
        &["config", "validate", d.path().to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("unexpected keys bogus"), "{err}");
    assert!(
        err.starts_with(&format!(
            "Error loading configuration from {}: ",
            d.path().display()
        )),
        "{err}"
    );
    let d = config_dir(&[("a.hcl", "server { enabled = \"yes\" }\n")]);
    let (code, _, err) = run(
        "nomad",
        &["config", "validate", d.path().to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("'server.enabled' expected type 'bool'"),
        "{err}"
    );
}

#[test]
fn nomad_hcl_syntax_error_names_file_and_line() {
    let d = config_dir(&[("a.hcl", "server {\n  enabled = \n}\n")]);
    let (code, _, err) = run(
        "nomad",
        &["config", "validate", d.path().to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("a.hcl: At 3:"), "{err}");
}

#[test]
fn unknown_agent_flag_is_refused() {
    let (code, _, err) = run("consul", &["agent", "-bogus"], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("flag provided but not defined: -bogus"),
        "{err}"
    );
}

#[test]
fn agent_without_data_dir_is_refused() {
    let d = config_dir(&[("a.json", r#"{"server": true}"#)]);
    let (code, _, err) = run(
        "consul",
        &["agent", &format!("-config-dir={}", d.path().display())],
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("data_dir cannot be empty"), "{err}");
    let d = config_dir(&[("a.hcl", "server { enabled = true }\n")]);
    let (code, _, err) = run(
        "nomad",
        &["agent", "-config", d.path().to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("Must specify data directory"), "{err}");
}

#[test]
fn consul_config_file_with_unknown_extension_is_refused() {
    let d = config_dir(&[("a.conf", "{}")]);
    let f = d.path().join("a.conf");
    let (code, _, err) = run("consul", &["validate", f.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("has unknown extension"), "{err}");
}

#[test]
fn consul_files_merge_in_name_order_with_lists_appended() {
    let s = crate::support::StandIn::consul()
        .client()
        .file(
            "20-b.json",
            r#"{"retry_join": ["127.0.0.1:1"], "log_level": "WARN"}"#,
        )
        .file(
            "10-a.json",
            r#"{"retry_join": ["127.0.0.1:2"], "log_level": "DEBUG"}"#,
        )
        .start();
    let dc = &s.get("/v1/agent/self").json()["DebugConfig"];
    assert_eq!(
        dc["RetryJoinLAN"],
        serde_json::json!(["127.0.0.1:2", "127.0.0.1:1"])
    );
    assert_eq!(dc["LogLevel"], "WARN");
}

#[test]
fn nomad_skips_editor_files_and_subdirectories() {
    let d = config_dir(&[
        ("a.hcl", "server { enabled = true }\n"),
        ("a.hcl~", "bogus = 1\n"),
        (".#a.hcl", "bogus = 1\n"),
    ]);
    std::fs::create_dir(d.path().join("sub.hcl")).unwrap();
    std::fs::write(d.path().join("sub.hcl/x.hcl"), "bogus = 1\n").unwrap();
    let (code, out, err) = run(
        "nomad",
        &["config", "validate", d.path().to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "Configuration is valid!");
}

#[test]
fn patched_copy_reports_the_stamped_version() {
    let d = tempfile::tempdir().unwrap();
    for (product, version, want) in [
        ("consul", "1.19.2", "Consul v1.19.2"),
        ("nomad", "1.8.4+ent", "Nomad v1.8.4+ent"),
    ] {
        let path = d.path().join(product);
        std::fs::write(&path, crate::support::standin_bytes_with_version(version)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = Command::new(&path)
            .arg("version")
            .env_remove("STANDIN_VERSION")
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).lines().next(),
            Some(want)
        );
    }
}

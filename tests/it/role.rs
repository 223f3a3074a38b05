//! Integration tests: role. Every invalid role file under
//! `tests/fixtures/role/invalid/` is refused by the real binary with its
//! exact expected message (`NAME.expected`) and exit 78, and nothing is
//! written.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hashi_supervisor::plan::Plan;
use hashi_supervisor::role::{RoleError, StaticHost};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};

use crate::support::role_file::RoleFile;
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

/// The role files (`*.toml`) of an examples directory, sorted.
fn example_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

fn supervisor(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(supervisor_bin())
        .current_dir(dir)
        .env_remove("HASHI_SUPERVISOR_CONFIG")
        .env_remove("HASHI_SUPERVISOR_ROLE")
        .env_remove("HASHI_SUPERVISOR_JOIN_TOKEN")
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
            "--join-token",
            JOIN_TOKEN,
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
        &[
            "check",
            "--json",
            "--join-token",
            JOIN_TOKEN,
            "--config",
            "ams2-server-01.toml",
        ],
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
    let out = supervisor(
        &examples(),
        &[
            "check",
            "--join-token",
            JOIN_TOKEN,
            "--config",
            "ams2-client-01.toml",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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

/// How long one `supervisor check` may take before it counts as hung.
const CHECK_BOUND: Duration = Duration::from_secs(30);

/// Runs `supervisor check --config <config>` in `dir` as a child, killed
/// (and the test failed) if it has not finished within [`CHECK_BOUND`].
/// Returns the exit code and stderr.
fn check_bounded(dir: &Path, config: &str) -> (Option<i32>, String) {
    command_bounded(dir, "check", config)
}

/// As [`check_bounded`], for the subcommand `cmd` (`check` or `run`).
fn command_bounded(dir: &Path, cmd: &str, config: &str) -> (Option<i32>, String) {
    let mut child = Command::new(supervisor_bin())
        .current_dir(dir)
        .env_remove("HASHI_SUPERVISOR_CONFIG")
        .env_remove("HASHI_SUPERVISOR_ROLE")
        .args([cmd, "--config", config])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).map(|_| s)
    });
    let deadline = Instant::now() + CHECK_BOUND;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("`supervisor {cmd} --config {config}` still ran after {CHECK_BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.code(), reader.join().unwrap().unwrap())
}

/// The 1-based `line:col` of the first `needle` in `text`.
fn line_col(text: &str, needle: &str) -> String {
    let at = text.find(needle).unwrap();
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    format!("{line}:{col}")
}

#[test]
fn named_files_that_block_or_never_end_or_are_too_large_are_refused_in_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("gossip.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let big_key = dir.path().join("big.key");
    std::fs::write(&big_key, "A".repeat(5000)).unwrap();
    let big_asc = dir.path().join("big.asc");
    std::fs::write(&big_asc, vec![b'x'; (1 << 20) + 1]).unwrap();
    let ca_fifo = dir.path().join("ca.fifo");
    nix::unistd::mkfifo(&ca_fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    for p in ["cert.pem", "key.pem"] {
        std::fs::write(dir.path().join(p), "pem").unwrap();
    }
    let text = "schema = 1\nroles = [\"consul-server\", \"nomad-server\"]\n\
        node_name = \"ams2-server-01\"\n[addresses]\nprivate = \"10.0.1.11\"\n\
        [consul]\nencrypt_key_file = \"gossip.fifo\"\n\
        [consul.tls]\nca_file = \"ca.fifo\"\ncert_file = \"cert.pem\"\nkey_file = \"key.pem\"\n\
        [nomad]\nencrypt_key_file = \"big.key\"\n\
        [release]\ntrusted_key_files = [\"big.asc\", \"/dev/zero\", \"/dev/urandom\"]\n";
    std::fs::write(dir.path().join("node.toml"), text).unwrap();
    let (code, stderr) = check_bounded(dir.path(), "node.toml");
    assert_eq!(code, Some(EXIT_CONFIG), "{stderr}");
    for (needle, message) in [
        (
            "\"gossip.fifo\"",
            "failed to read `consul.encrypt_key_file` gossip.fifo: is a FIFO, not a regular file",
        ),
        (
            "\"ca.fifo\"",
            "failed to read `consul.tls.ca_file` ca.fifo: is a FIFO, not a regular file",
        ),
        (
            "\"big.key\"",
            "failed to read `nomad.encrypt_key_file` big.key: is larger than the 4096 byte limit",
        ),
        (
            "\"big.asc\"",
            "failed to read `release.trusted_key_files` entry big.asc: is larger than the 1048576 byte limit",
        ),
        (
            "\"/dev/zero\"",
            "failed to read `release.trusted_key_files` entry /dev/zero: is a character device, not a regular file",
        ),
        (
            "\"/dev/urandom\"",
            "failed to read `release.trusted_key_files` entry /dev/urandom: is a character device, not a regular file",
        ),
    ] {
        let want = format!("node.toml:{}: {message}\n", line_col(text, needle));
        assert!(stderr.contains(&want), "missing {want:?} in\n{stderr}");
    }
}

#[test]
fn a_role_file_that_is_a_device_a_fifo_or_too_large_is_refused_in_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("node.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let big = dir.path().join("big.toml");
    std::fs::write(&big, format!("schema = 1\n#{}\n", "x".repeat(1 << 20))).unwrap();
    for (config, cause) in [
        ("/dev/zero", "is a character device, not a regular file"),
        ("node.fifo", "is a FIFO, not a regular file"),
        (".", "is a directory, not a regular file"),
        ("big.toml", "is larger than the 1048576 byte limit"),
    ] {
        // `run` loads the role file exactly as `check` does, before it
        // reads anything else of it (the hash of what it runs).
        for cmd in ["check", "run"] {
            let (code, stderr) = command_bounded(dir.path(), cmd, config);
            assert_eq!(code, Some(EXIT_CONFIG), "{cmd} {config}: {stderr}");
            assert_eq!(
                stderr,
                format!("error: failed to read role file {config}\n  caused by: {cause}\n"),
                "{cmd} {config}"
            );
        }
    }
}

#[test]
fn huge_names_are_refused_with_their_length_and_a_short_message() {
    let dir = tempfile::tempdir().unwrap();
    // A 1 MB node name and a 100 KB datacenter (each file under the 1 MiB
    // role file limit), and a region one byte over a DNS label.
    let cases = [
        ("region", "r".repeat(64), "node.toml:3:10"),
        ("datacenter", "d".repeat(100_000), "node.toml:3:14"),
        ("node_name", "n".repeat(1_000_000), "node.toml:3:13"),
    ];
    for (key, value, at) in cases {
        let text = format!(
            "schema = 1\nroles = [\"consul-server\"]\n{key} = \"{value}\"\n[addresses]\nprivate = \"10.0.1.11\"\n"
        );
        std::fs::write(dir.path().join("node.toml"), &text).unwrap();
        let (code, stderr) = check_bounded(dir.path(), "node.toml");
        assert_eq!(
            code,
            Some(EXIT_CONFIG),
            "{}",
            &stderr[..stderr.len().min(2000)]
        );
        assert!(stderr.len() < 1000, "{} bytes of errors", stderr.len());
        let want = format!(
            "{at}: `{key}` is {} bytes long, at most 63 are allowed\n",
            value.len()
        );
        assert!(stderr.contains(&want), "missing {want:?} in\n{stderr}");
    }
}

/// Every key of the role file, as `(table, key, kind)` (`i`nteger,
/// `s`tring, `b`oolean, `l`ist of strings, `t`able): what the property test
/// mutates (besides a key that does not exist).
const ROLE_KEYS: &[(&str, &str, char)] = &[
    ("", "schema", 'i'),
    ("", "roles", 'l'),
    ("", "region", 's'),
    ("", "datacenter", 's'),
    ("", "node_name", 's'),
    ("", "log_level", 's'),
    ("", "no_such_key", 's'),
    ("addresses", "bind", 's'),
    ("addresses", "private", 's'),
    ("addresses", "public", 's'),
    ("consul", "version", 's'),
    ("consul", "bootstrap_expect", 'i'),
    ("consul", "encrypt_key_file", 's'),
    ("consul", "ui", 'b'),
    ("consul", "stop_timeout_secs", 'i'),
    ("consul", "leave_on_stop", 'b'),
    ("consul", "extra", 't'),
    ("consul.tls", "ca_file", 's'),
    ("consul.tls", "cert_file", 's'),
    ("consul.tls", "key_file", 's'),
    ("consul.restart", "attempts", 'i'),
    ("consul.restart", "interval_secs", 'i'),
    ("consul.restart", "delay_secs", 'i'),
    ("consul.restart", "mode", 's'),
    ("consul.restart", "max_delay_secs", 'i'),
    ("consul.restart", "stable_after_secs", 'i'),
    ("nomad", "version", 's'),
    ("nomad", "bootstrap_expect", 'i'),
    ("nomad", "encrypt_key_file", 's'),
    ("nomad", "advertise", 's'),
    ("nomad", "stop_timeout_secs", 'i'),
    ("nomad", "leave_on_stop", 'b'),
    ("nomad", "drain_deadline_secs", 'i'),
    ("nomad", "extra", 't'),
    ("nomad.tls", "http", 'b'),
    ("nomad.restart", "attempts", 'i'),
    ("nomad.restart", "delay_secs", 'i'),
    ("nomad.restart", "max_delay_secs", 'i'),
    ("nomad.restart", "stable_after_secs", 'i'),
    ("release", "mirror", 's'),
    ("release", "trust_hashicorp_key", 'b'),
    ("release", "trusted_key_files", 'l'),
    ("release", "keep_versions", 'i'),
    ("release", "max_download_bytes", 'i'),
    ("discovery", "consul_retry_join", 'l'),
    ("discovery", "consul_retry_join_wan", 'l'),
    ("discovery", "nomad_retry_join", 'l'),
    ("discovery", "consul_address", 's'),
    ("discovery", "cloud_auto_join", 'l'),
    ("discovery", "mdns", 'b'),
    ("discovery.dns", "nameserver", 's'),
    ("discovery.dns", "consul_servers", 'l'),
    ("discovery.dns", "consul_wan", 'l'),
    ("discovery.dns", "nomad_servers", 'l'),
    ("discovery.dns", "interval_secs", 'i'),
    ("health", "listen", 's'),
    ("paths", "config_dir", 's'),
    ("paths", "state_dir", 's'),
    ("security", "plaintext", 'b'),
    ("security", "join_token_file", 's'),
    ("security", "join", 'l'),
    ("security", "join_listen", 's'),
    ("security", "cert_days", 'i'),
    ("security", "renew_before_days", 'i'),
];

/// One change to an example role file.
#[derive(Debug, Clone)]
enum Mutation {
    /// Set `ROLE_KEYS[i]` to a value.
    Set(usize, toml::Value),
    /// Remove `ROLE_KEYS[i]`.
    Remove(usize),
    /// Insert a raw line before line `n` of the text (syntax errors,
    /// duplicate tables).
    Line(usize, String),
}

fn any_string() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::collection::vec(any::<char>(), 0..24).prop_map(|v| v.into_iter().collect()),
        (0usize..200_000, any::<char>()).prop_map(|(n, c)| c.to_string().repeat(n)),
        proptest::sample::select(vec![
            "ams2",
            "lon1",
            "eu",
            "DC.One",
            "ams2-server-01",
            "10.0.1.11",
            "203.0.113.21",
            "eth0",
            "auto",
            "0.0.0.0:4680",
            "127.0.0.1:0",
            "1.21.4",
            "latest",
            "1.x",
            "consul-server",
            "nomad-client",
            "dev",
            "delay",
            "fail",
            "public",
            "private",
            "/k/gossip.key",
            "/dev/zero",
            "/etc/passwd",
            "relative/dir",
            "/var/lib/x",
            "https://releases.example",
            "file:///srv/mirror",
            "provider=aws tag_key=x",
            "consul.ams2.eu.hashi.test",
            "_consul-server._tcp.ams2.eu.hashi.test",
            "\u{202e}evil",
            "ümlaut",
            "a\u{0}b",
            "",
            " ",
            "\t",
            "☃",
        ])
        .prop_map(str::to_string),
    ]
}

fn any_value() -> impl Strategy<Value = toml::Value> {
    use toml::Value as V;
    let leaf = prop_oneof![
        any::<i64>().prop_map(V::Integer),
        proptest::sample::select(vec![
            i64::MAX,
            i64::MIN,
            -1,
            0,
            1,
            3,
            60,
            3600,
            3601,
            86_401
        ])
        .prop_map(V::Integer),
        any::<bool>().prop_map(V::Boolean),
        proptest::sample::select(vec![f64::NAN, f64::INFINITY, -0.5, 1e300]).prop_map(V::Float),
        any_string().prop_map(V::String),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(V::Array),
            proptest::collection::btree_map("[a-z]{1,6}", inner, 0..3)
                .prop_map(|m| V::Table(m.into_iter().collect())),
        ]
    })
}

/// A value of the key's own type, often a plausible one: the mutations that
/// get past the type check and reach the semantic checks and the plan.
fn typed_value(key: &str, kind: char) -> BoxedStrategy<toml::Value> {
    use toml::Value as V;
    let plausible: Vec<&'static str> = match key {
        "roles" => vec![
            "consul-server",
            "consul-client",
            "nomad-server",
            "nomad-client",
            "dev",
        ],
        "region" | "datacenter" | "node_name" => {
            vec![
                "eu",
                "ams2",
                "lon1",
                "ams2-server-03",
                "lon1-client-01",
                "a_b",
                "x.y",
            ]
        }
        "log_level" => vec!["info", "WARN", "debug", "trace", "error"],
        "version" => vec!["latest", "1.21.4", "1.10.4", "~1.21", "1.20.0-rc1"],
        "mode" => vec!["delay", "fail"],
        "advertise" => vec!["private", "public"],
        "mirror" => vec!["https://releases.example", "/srv/mirror", "file:///srv/m"],
        "listen" => vec!["0.0.0.0:4680", "127.0.0.1:0", "[::1]:4680"],
        "config_dir" | "state_dir" => vec!["/etc/hs", "/var/lib/hs"],
        "encrypt_key_file" => vec!["/k/gossip.key"],
        "cloud_auto_join" => vec![
            "provider=aws tag_key=consul tag_value=ams2",
            "provider=gce project_name=p zone_pattern=eu-*",
            "provider=awz tag_key=x",
            "provider=azure tag_value=\"a b\"",
            "provider=aws tag_key=\"a",
            "provider=aws Tag=x",
        ],
        "consul_servers" | "consul_wan" | "nomad_servers" => vec![
            "consul.ams2.eu.hashi.test",
            "_consul-server._tcp.ams2.eu.hashi.test",
            "consul-wan.eu.hashi.test",
            "_consul._tcp",
            "a..b",
            "10.0.1.11",
        ],
        "nameserver" => vec!["10.0.1.1", "10.0.2.1:53", "[fd00::1]:5353", "ns1.example"],
        _ => vec![
            "10.0.1.11",
            "203.0.113.21",
            "eth0",
            "eth1",
            "auto",
            "10.0.2.11:8500",
        ],
    };
    let text = prop_oneof![
        3 => proptest::sample::select(plausible).prop_map(str::to_string),
        1 => any_string(),
    ];
    match kind {
        'i' => prop_oneof![
            3 => (0i64..5000).prop_map(V::Integer),
            1 => proptest::sample::select(vec![
                0, 1, 2, 3, 5, 64, 65, 100, 101, 1000, 1001, 3600, 3601, 86_400, 86_401,
                1 << 20, (1 << 20) - 1, 1 << 32, (1 << 32) + 1, i64::MAX,
            ])
            .prop_map(V::Integer),
        ]
        .boxed(),
        'b' => any::<bool>().prop_map(V::Boolean).boxed(),
        'l' => proptest::collection::vec(text.prop_map(V::String), 0..4)
            .prop_map(V::Array)
            .boxed(),
        't' => any_value()
            .prop_filter("a table", toml::Value::is_table)
            .boxed(),
        _ => text.prop_map(V::String).boxed(),
    }
}

fn any_mutation() -> impl Strategy<Value = Mutation> {
    let key = 0..ROLE_KEYS.len();
    prop_oneof![
        6 => key
            .clone()
            .prop_flat_map(|k| typed_value(ROLE_KEYS[k].1, ROLE_KEYS[k].2).prop_map(move |v| Mutation::Set(k, v))),
        3 => (key.clone(), any_value()).prop_map(|(k, v)| Mutation::Set(k, v)),
        2 => key.prop_map(Mutation::Remove),
        1 => (0usize..40, prop_oneof![
            any_string(),
            Just("[consul]".to_string()),
            Just("schema = 1".to_string()),
            Just("= 3".to_string()),
            Just("[[nomad]]".to_string()),
        ]).prop_map(|(n, l)| Mutation::Line(n, l)),
    ]
}

/// Applies `m` to `t` (skipped when a table on the way is not a table).
fn apply(t: &mut toml::Table, m: &Mutation) {
    let (i, value) = match m {
        Mutation::Set(i, v) => (*i, Some(v.clone())),
        Mutation::Remove(i) => (*i, None),
        Mutation::Line(..) => return,
    };
    let (table, key, _) = ROLE_KEYS[i];
    let mut cur = t;
    for part in table.split('.').filter(|p| !p.is_empty()) {
        let next = cur
            .entry(part)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match next {
            toml::Value::Table(inner) => cur = inner,
            _ => return,
        }
    }
    match value {
        Some(v) => {
            cur.insert(key.to_string(), v);
        }
        None => {
            cur.remove(key);
        }
    }
}

/// Whether `position` is `path` or `path:line:col`.
fn is_location(position: &str, path: &str) -> bool {
    position == path
        || position
            .strip_prefix(path)
            .and_then(|r| r.strip_prefix(':'))
            .and_then(|r| r.split_once(':'))
            .is_some_and(|(l, c)| {
                !l.is_empty()
                    && !c.is_empty()
                    && l.bytes().all(|b| b.is_ascii_digit())
                    && c.bytes().all(|b| b.is_ascii_digit())
            })
}

/// Every duration, count, size and name of a plan is in the role file's
/// ranges (or derived from them: Nomad's default stop timeout adds its own
/// graceful timeout and a margin to the drain deadline).
fn assert_plan_in_range(plan: &Plan) {
    use hashi_supervisor::role::limits as l;
    let secs = |r: &std::ops::RangeInclusive<u64>| {
        Duration::from_secs(*r.start())..=Duration::from_secs(*r.end())
    };
    let longest_stop = Duration::from_secs(l::DRAIN_DEADLINE_SECS.end() + 60);
    for a in &plan.agents {
        assert!(
            a.stop_timeout >= Duration::from_secs(1) && a.stop_timeout <= longest_stop,
            "{:?} stop_timeout {:?}",
            a.product,
            a.stop_timeout
        );
        let r = &a.restart;
        assert!(
            l::RESTART_ATTEMPTS.contains(&u64::from(r.attempts)),
            "{r:?}"
        );
        assert!(
            secs(&l::RESTART_INTERVAL_SECS).contains(&r.interval),
            "{r:?}"
        );
        assert!(secs(&l::RESTART_DELAY_SECS).contains(&r.delay), "{r:?}");
        assert!(
            secs(&l::RESTART_MAX_DELAY_SECS).contains(&r.max_delay),
            "{r:?}"
        );
        assert!(r.max_delay >= r.delay, "{r:?}");
        assert!(
            secs(&l::RESTART_STABLE_AFTER_SECS).contains(&r.stable_after),
            "{r:?}"
        );
    }
    let keep = u64::try_from(plan.release.keep_versions).unwrap();
    assert!(l::KEEP_VERSIONS.contains(&keep), "{:?}", plan.release);
    assert!(l::MAX_DOWNLOAD_BYTES.contains(&plan.release.max_download_bytes));
    for name in [&plan.node_name, &plan.datacenter, &plan.region] {
        assert!(!name.is_empty() && name.len() <= l::NAME_CHARS, "{name:?}");
    }
}

/// The discovery settings of a valid role are in their ranges: the DNS
/// interval, the number and length of the names, each a DNS name.
fn assert_discovery_in_range(role: &hashi_supervisor::role::NodeRole) {
    use hashi_supervisor::role::{limits as l, names};
    let Some(dns) = &role.discovery.dns else {
        return;
    };
    let secs = dns.interval.as_secs();
    assert!(l::DNS_INTERVAL_SECS.contains(&secs), "{dns:?}");
    assert_eq!(dns.interval, Duration::from_secs(secs), "whole seconds");
    for list in [&dns.consul_servers, &dns.consul_wan, &dns.nomad_servers] {
        assert!(list.len() <= l::DNS_NAMES, "{} names", list.len());
        for name in list {
            assert!(name.len() <= l::DNS_NAME_CHARS, "{} chars", name.len());
            assert_eq!(names::dns_name_problem(name), None, "{name:?}");
        }
    }
    assert!(
        !dns.consul_servers.is_empty()
            || !dns.consul_wan.is_empty()
            || !dns.nomad_servers.is_empty()
    );
    if let Some(ns) = dns.nameserver {
        assert!(ns.port() != 0 && !ns.ip().is_unspecified(), "{ns}");
    }
}

/// Loads one mutated role file → plan → render, asserting the contract.
fn check_one(example: &str, mutations: &[Mutation]) {
    let mut table: toml::Table = toml::from_str(example).unwrap();
    // An example without `[security]` is a plaintext cluster (secure by
    // default would refuse every one of them); the mutations may change it.
    if !table.contains_key("security") {
        let mut plaintext = toml::Table::new();
        plaintext.insert("plaintext".into(), toml::Value::Boolean(true));
        table.insert("security".into(), toml::Value::Table(plaintext));
    }
    // The join token file an example names holds a token of the right shape.
    let token_file = table
        .get("security")
        .and_then(|s| s.get("join_token_file"))
        .and_then(|f| f.as_str())
        .map(|f| Path::new("/etc/hashi-supervisor").join(f));
    for m in mutations {
        apply(&mut table, m);
    }
    let Ok(mut text) = toml::to_string(&table) else {
        return; // not expressible as TOML: nothing to test
    };
    for m in mutations {
        if let Mutation::Line(n, line) = m {
            let mut lines: Vec<&str> = text.lines().collect();
            lines.insert((*n).min(lines.len()), line);
            text = lines.join("\n");
        }
    }
    let path = "/etc/hashi-supervisor/node.toml";
    let mut host = StaticHost {
        hostname: Some("ams2-server-01".into()),
        interfaces: vec![
            ("eth0".into(), "203.0.113.11".parse().unwrap()),
            ("eth1".into(), "10.0.1.11".parse().unwrap()),
        ],
        ..StaticHost::default()
    };
    host.files.insert(
        "/k/gossip.key".into(),
        "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=\n".into(),
    );
    if let Some(f) = token_file {
        host.files.insert(f, format!("{JOIN_TOKEN}\n"));
    }
    match hashi_supervisor::role::parse(Path::new(path), &text, &[], &host) {
        Err(e) => {
            let shown = e.to_string();
            assert!(shown.len() < 64 * 1024, "{} bytes of errors", shown.len());
            let RoleError::Invalid { problems, .. } = &e else {
                panic!("not a validation error: {e}");
            };
            assert!(!problems.is_empty());
            for p in problems {
                assert!(is_location(&p.position, path), "{}", p.position);
            }
            assert_eq!(hashi_supervisor::Error::from(e).exit_code(), 78);
        }
        Ok(role) => {
            assert_discovery_in_range(&role);
            let plan = Plan::from_role(&role);
            assert_plan_in_range(&plan);
            if let Err(e) = hashi_supervisor::render::render_plan(&plan) {
                panic!("a role file that passed check failed to render: {e}\n{text}");
            }
        }
    }
}

/// Cases of the property test: enough to hit every key several times, few
/// enough to run in seconds.
const PROPERTY_CASES: u32 = 256;

#[test]
fn arbitrary_role_files_are_refused_with_a_location_or_give_a_plan_in_range() {
    // The reference roles, with mDNS and with DNS discovery.
    let examples: Vec<String> = [examples(), examples().join("dns")]
        .iter()
        .flat_map(|dir| example_files(dir))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert_eq!(examples.len(), 10);
    // On its own thread, so that a hang fails the test instead of stalling it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut runner = TestRunner::new(ProptestConfig {
            cases: PROPERTY_CASES,
            failure_persistence: None,
            ..ProptestConfig::default()
        });
        let strategy = (
            proptest::sample::select(examples),
            proptest::collection::vec(any_mutation(), 1..4),
        );
        let result = runner.run(&strategy, |(example, mutations)| {
            check_one(&example, &mutations);
            Ok(())
        });
        let _ = tx.send(result.map_err(|e| e.to_string()));
    });
    match rx.recv_timeout(Duration::from_secs(240)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{e}"),
        Err(_) => panic!("the property test did not finish in 240 s (a hang?)"),
    }
}

/// A role file for ams2-server-01 whose Consul runs as a user that does not
/// exist (line 9, column 8); state and config under `dir`.
fn role_with_missing_user(dir: &Path) -> PathBuf {
    RoleFile::consul_server(dir)
        .consul("bootstrap_expect", "1")
        .consul("user", "\"hashi-no-such-user\"")
        .write()
}

#[test]
fn check_and_run_as_root_refuse_an_agent_user_that_does_not_exist_with_exit_78() {
    // As another user the agents run as that user: nothing to refuse.
    if !crate::support::available("root", crate::support::root("only root switches users")) {
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

/// A host with `eth1` holding `ip` (IPv4) and a hostname.
fn host_on(ip: &str) -> StaticHost {
    StaticHost {
        hostname: Some("n1".into()),
        interfaces: vec![("eth1".into(), ip.parse().unwrap())],
        ..StaticHost::default()
    }
}

/// A join token of the right shape (no cluster has it).
const JOIN_TOKEN: &str = "abc123.0123456789abcdef@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Validates `text` as `/etc/hashi-supervisor/node.toml` on `host` (a
/// plaintext cluster unless `text` has a `[security]` table).
fn parse_on(
    text: &str,
    roles: &[&str],
    host: &StaticHost,
) -> Result<hashi_supervisor::role::NodeRole, RoleError> {
    let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
    hashi_supervisor::role::parse(
        Path::new("/etc/hashi-supervisor/node.toml"),
        &crate::support::plaintext(text),
        &roles,
        host,
    )
}

/// The problems of an invalid `text`, each as `line:col: message`.
fn problems_of(text: &str, roles: &[&str]) -> Vec<String> {
    match parse_on(text, roles, &host_on("10.0.1.5")) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(RoleError::Invalid { problems, .. }) => problems
            .iter()
            .map(|p| {
                let at = p
                    .position
                    .strip_prefix("/etc/hashi-supervisor/node.toml:")
                    .unwrap_or(&p.position);
                format!("{at}: {}", p.message)
            })
            .collect(),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn mdns_is_on_by_default_on_a_private_network_only_and_never_for_dev() {
    for (private, on) in [
        ("10.0.1.5", true),
        ("172.16.0.1", true),
        ("172.31.255.254", true),
        ("192.168.1.1", true),
        ("100.64.0.1", true),
        ("100.127.255.254", true),
        ("fd00::5", true),
        ("fc00::5", true),
        ("172.32.0.1", false),
        ("100.128.0.1", false),
        ("203.0.113.5", false),
        ("8.8.8.8", false),
        ("127.0.0.1", false),
        ("169.254.1.1", false),
        ("::1", false),
        ("fe80::1", false),
        ("2001:db8::5", false),
    ] {
        let text = format!(
            "schema = 1\nroles = [\"consul-server\"]\n[addresses]\nprivate = \"{private}\"\n"
        );
        let role = parse_on(&text, &[], &host_on("10.0.1.5")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(role.discovery.mdns, on, "{private}");
    }
    // `auto` picks the host's first private IPv4 address: on.
    let auto = parse_on(
        "schema = 1\nroles = [\"consul-server\"]\n",
        &[],
        &host_on("10.0.1.5"),
    );
    assert!(auto.unwrap().discovery.mdns);
    // dev stays on its own machine, even on a private address.
    for text in [
        "schema = 1\nroles = [\"dev\"]\n",
        "schema = 1\nroles = [\"dev\"]\n[addresses]\nprivate = \"10.0.1.5\"\n",
    ] {
        let role = parse_on(text, &[], &host_on("10.0.1.5")).unwrap();
        assert!(!role.discovery.mdns, "{text}");
    }
    // Written, it wins: off on a private network, on on a public one.
    let off = "schema = 1\nroles = [\"consul-server\"]\n[addresses]\nprivate = \"10.0.1.5\"\n[discovery]\nmdns = false\n";
    assert!(
        !parse_on(off, &[], &host_on("10.0.1.5"))
            .unwrap()
            .discovery
            .mdns
    );
    let on = "schema = 1\nroles = [\"consul-server\"]\n[addresses]\nprivate = \"203.0.113.5\"\n[discovery]\nmdns = true\n";
    assert!(
        parse_on(on, &[], &host_on("10.0.1.5"))
            .unwrap()
            .discovery
            .mdns
    );
    let dev_on = "schema = 1\nroles = [\"dev\"]\n[addresses]\nprivate = \"10.0.1.5\"\n[discovery]\nmdns = true\n";
    assert!(
        parse_on(dev_on, &[], &host_on("10.0.1.5"))
            .unwrap()
            .discovery
            .mdns
    );
    // Not a boolean: refused at the value.
    let text = "schema = 1\nroles = [\"consul-server\"]\n[discovery]\nmdns = \"yes\"\n";
    let e = parse_on(text, &[], &host_on("10.0.1.5"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("node.toml:4:8: invalid type: string \"yes\", expected `true` or `false`"),
        "{e}"
    );
}

#[test]
fn the_dns_examples_keep_their_names_nameserver_and_default_interval() {
    crate::support::agent_users();
    let dir = examples().join("dns");
    let files = example_files(&dir);
    assert_eq!(files.len(), 5);
    for path in files {
        // A node of the secured cluster (test material).
        let host = crate::support::material::MaterialHost::new(&["localhost".into()], false);
        let role = hashi_supervisor::role::load(&path, true, &[], &host)
            .unwrap_or_else(|e| panic!("{e}"))
            .role;
        let d = &role.discovery;
        assert!(!d.mdns, "{}: mDNS is off", path.display());
        assert!(
            d.consul_retry_join.is_empty()
                && d.consul_retry_join_wan.is_empty()
                && d.nomad_retry_join.is_empty()
                && d.consul_address.is_none(),
            "{}: no static address",
            path.display()
        );
        let dns = d.dns.as_ref().unwrap();
        let dc_router = if role.datacenter == "ams2" {
            "10.0.1.1:53"
        } else {
            "10.0.2.1:53"
        };
        assert_eq!(dns.nameserver.unwrap().to_string(), dc_router);
        assert_eq!(dns.interval, Duration::from_secs(30), "the default");
        assert!(!dns.consul_servers.is_empty(), "{}", path.display());
        for name in dns.consul_servers.iter().chain(&dns.consul_wan) {
            assert!(name.ends_with(".eu.hashi.test"), "{name}");
        }
        assert_eq!(
            !dns.consul_wan.is_empty(),
            role.roles.consul_server,
            "{}: the Consul servers, and only they, have WAN names",
            path.display()
        );
    }
}

#[test]
fn dns_values_at_the_edges_of_their_ranges() {
    let base = "schema = 1\nroles = [\"consul-server\"]\n[addresses]\nprivate = \"10.0.1.5\"\n[discovery.dns]\nconsul_servers = [\"consul.ams2.eu.hashi.test\"]\n";
    let dns = |extra: &str| {
        parse_on(&format!("{base}{extra}"), &[], &host_on("10.0.1.5"))
            .unwrap_or_else(|e| panic!("{e}"))
            .discovery
            .dns
            .unwrap()
    };
    assert_eq!(dns("").interval, Duration::from_secs(30));
    assert_eq!(dns("interval_secs = 5\n").interval, Duration::from_secs(5));
    assert_eq!(
        dns("interval_secs = 86400\n").interval,
        Duration::from_secs(86_400)
    );
    assert_eq!(dns("").nameserver, None, "the system's resolver");
    assert_eq!(
        dns("nameserver = \"[fd00::53]:5353\"\n").nameserver,
        Some("[fd00::53]:5353".parse().unwrap())
    );
    // Trimmed as the static lists are; an SRV name and an FQDN kept as written.
    let d = dns("nomad_servers = [\" nomad.eu.hashi.test \", \"_nomad._tcp.eu.hashi.test.\"]\n");
    assert_eq!(
        d.nomad_servers,
        ["nomad.eu.hashi.test", "_nomad._tcp.eu.hashi.test."]
    );
    // The longest name and the most names allowed.
    let label = "a".repeat(63);
    let longest = format!("{label}.{label}.{label}.{}", "b".repeat(61));
    assert_eq!(longest.len(), 253);
    let names = vec![format!("\"{longest}\""); 64].join(", ");
    let d = dns(&format!("nomad_servers = [{names}]\n"));
    assert_eq!(d.nomad_servers.len(), 64);

    for (extra, want) in [
        (
            "interval_secs = 0\n",
            "7:17: interval_secs must be between 5 and 86400 (got 0)",
        ),
        (
            "interval_secs = -1\n",
            "7:17: invalid value: integer `-1`, expected a non-negative integer",
        ),
        (
            "nameserver = \"10.0.1.1:0\"\n",
            "7:14: `10.0.1.1:0` is not an address a query can be sent to",
        ),
        (
            "nameserver = [\"10.0.1.1\"]\n",
            "7:14: invalid type: sequence, expected a string",
        ),
        (
            "search = [\"eu.hashi.test\"]\n",
            "7:1: unknown key `search`, expected one of: nameserver, consul_servers, consul_wan, nomad_servers, interval_secs",
        ),
    ] {
        let got = problems_of(&format!("{base}{extra}"), &[]);
        assert_eq!(got, [want], "{extra}");
    }
    // A name one character too long, and one name too many.
    let too_long = format!("{longest}c");
    let got = problems_of(&format!("{base}nomad_servers = [\"{too_long}\"]\n"), &[]);
    assert_eq!(
        got,
        ["7:18: `discovery.dns.nomad_servers` is 254 characters long, at most 253 are allowed"]
    );
    let names = vec!["\"nomad.eu.hashi.test\""; 65].join(", ");
    let got = problems_of(&format!("{base}consul_wan = [{names}]\n"), &[]);
    assert_eq!(
        got,
        ["7:14: `discovery.dns.consul_wan` has 65 entries, at most 64 are allowed"]
    );
    // A million-character name: one short message.
    let huge = "a".repeat(1_000_000);
    let got = problems_of(&format!("{base}consul_wan = [\"{huge}\"]\n"), &[]);
    assert_eq!(got.len(), 1);
    assert!(got[0].len() < 200, "{}", got[0]);
}

#[test]
fn a_nomad_without_consul_finds_its_servers_any_of_four_ways() {
    let nomad = |private: &str, discovery: &str| {
        format!(
            "schema = 1\nroles = [\"nomad-client\"]\n[addresses]\nprivate = \"{private}\"\n[discovery]\n{discovery}"
        )
    };
    let host = host_on("10.0.1.5");
    for (private, discovery) in [
        // mDNS, on by default on a private network.
        ("10.0.1.5", ""),
        // Each of the others with mDNS off.
        ("203.0.113.5", "consul_address = \"10.0.1.11\"\n"),
        ("203.0.113.5", "nomad_retry_join = [\"10.0.1.11\"]\n"),
        (
            "203.0.113.5",
            "[discovery.dns]\nconsul_servers = [\"consul.ams2.eu.hashi.test\"]\n",
        ),
        (
            "203.0.113.5",
            "[discovery.dns]\nnomad_servers = [\"_nomad._tcp.eu.hashi.test\"]\n",
        ),
        ("10.0.1.5", "mdns = false\nconsul_address = \"10.0.1.11\"\n"),
        ("203.0.113.5", "mdns = true\n"),
    ] {
        let text = nomad(private, discovery);
        parse_on(&text, &[], &host).unwrap_or_else(|e| panic!("{text}\n{e}"));
    }
    let four = "a Nomad role without a local Consul needs a way to find its servers: \
        `discovery.consul_address`, `discovery.nomad_retry_join`, \
        `[discovery.dns] consul_servers` or `nomad_servers`, or mDNS (`discovery.mdns`); ";
    for (private, discovery, why) in [
        (
            "10.0.1.5",
            "mdns = false\n",
            "mDNS is off (`discovery.mdns = false`)".to_string(),
        ),
        (
            "203.0.113.5",
            "",
            "mDNS is off because the private address 203.0.113.5 is not on a private network \
             (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7)"
                .to_string(),
        ),
        (
            "2001:db8::5",
            "[discovery.dns]\nconsul_wan = [\"consul-wan.eu.hashi.test\"]\n",
            "mDNS is off because the private address 2001:db8::5 is not on a private network \
             (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7)"
                .to_string(),
        ),
    ] {
        let got = problems_of(&nomad(private, discovery), &[]);
        assert_eq!(got[0], format!("2:9: {four}{why}"), "{discovery}");
    }
    // A DNS table of WAN names only is no way for a client: still refused
    // (and the WAN names are a server's).
    let got = problems_of(
        &nomad(
            "10.0.1.5",
            "mdns = false\n[discovery.dns]\nconsul_wan = [\"consul-wan.eu.hashi.test\"]\n",
        ),
        &[],
    );
    assert_eq!(got.len(), 2, "{got:?}");
    // A private address that does not resolve is reported once, at its
    // line, with nothing made up about mDNS.
    let got = problems_of(&nomad("eth9", ""), &[]);
    assert_eq!(
        got,
        ["4:11: `eth9` is neither an IP address, `auto`, nor an interface of this host"]
    );
}

#[test]
fn role_nomad_client_alone_on_a_private_network_leaves_its_servers_to_mdns() {
    // No role file at all: `--role nomad-client` on a host whose first
    // private IPv4 is 10.0.1.21 (`auto`).
    // Secure by default: `--role` alone comes with its join token.
    let with_token = hashi_supervisor::role::Overrides {
        roles: vec!["nomad-client".to_string()],
        join_token: Some(hashi_supervisor::role::Secret::new(JOIN_TOKEN)),
        ..Default::default()
    };
    let role = hashi_supervisor::role::load_with(
        Path::new("/nonexistent/hashi-supervisor/node.toml"),
        false,
        &with_token,
        &host_on("10.0.1.21"),
    )
    .unwrap_or_else(|e| panic!("{e}"))
    .role;
    assert!(role.discovery.mdns);
    assert_eq!(role.addresses.private.to_string(), "10.0.1.21");
    assert!(role.learnable.region && role.learnable.datacenter);
    assert_eq!(role.discovery.consul_address, None);
    let plan = Plan::from_role(&role);
    assert_eq!(
        plan.render.nomad.unwrap().consul_address,
        None,
        "nothing found yet"
    );
    // On a host with only a public address there is no way: said so.
    let e = hashi_supervisor::role::load_with(
        Path::new("/nonexistent/hashi-supervisor/node.toml"),
        false,
        &with_token,
        &StaticHost {
            hostname: Some("n1".into()),
            interfaces: vec![("eth0".into(), "203.0.113.5".parse().unwrap())],
            ..StaticHost::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("`addresses.private` is not set and this host has no private IPv4 address"),
        "{e}"
    );
}

#[test]
fn cloud_auto_join_strings_of_every_provider_pass_and_a_near_miss_is_named() {
    let text = |s: &str| {
        format!(
            "schema = 1\nroles = [\"consul-server\"]\n[addresses]\nprivate = \"10.0.1.5\"\n[discovery]\ncloud_auto_join = [{s}]\n"
        )
    };
    for provider in [
        "aliyun",
        "aws",
        "azure",
        "digitalocean",
        "exoscale",
        "gce",
        "hcp",
        "k8s",
        "linode",
        "mdns",
        "os",
        "packet",
        "scaleway",
        "softlayer",
        "tencentcloud",
        "triton",
        "vsphere",
    ] {
        let t = text(&format!(
            "\"provider={provider} tag_key=consul tag_value=\\\"a b\\\"\""
        ));
        let role = parse_on(&t, &[], &host_on("10.0.1.5")).unwrap_or_else(|e| panic!("{e}"));
        // Passed to Consul as written.
        assert_eq!(
            role.discovery.cloud_auto_join,
            [format!(
                "provider={provider} tag_key=consul tag_value=\"a b\""
            )]
        );
    }
    for (s, want) in [
        (
            "'provider=amazon tag_key=x'",
            "6:30: unknown cloud auto-join provider `amazon`, expected one of: aliyun, aws, azure, digitalocean, exoscale, gce, hcp, k8s, linode, mdns, os, packet, scaleway, softlayer, tencentcloud, triton, vsphere",
        ),
        (
            "'provider=kubernetes'",
            "6:30: unknown cloud auto-join provider `kubernetes`, expected one of: aliyun, aws, azure, digitalocean, exoscale, gce, hcp, k8s, linode, mdns, os, packet, scaleway, softlayer, tencentcloud, triton, vsphere",
        ),
        (
            "'provider=tencent_cloud'",
            "6:30: unknown cloud auto-join provider `tencent_cloud`, did you mean `tencentcloud`?",
        ),
        (
            "'provider=aws tag-key=x'",
            "6:34: `tag-key` is not a cloud auto-join key: keys are lower-case letters, digits and `_`",
        ),
        (
            "'tag_key=x provider=aws'",
            "6:20: a cloud auto-join string starts with `provider=`",
        ),
    ] {
        assert_eq!(problems_of(&text(s), &[]), [want], "{s}");
    }
}

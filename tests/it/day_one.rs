//! Integration tests: what an operator meets on the first day with the
//! real `supervisor` binary (issue 15, section 4): exit codes of usage
//! errors, the next step an offline first run prints, a second `run` on a
//! live node, the Consul registration kept when Consul loses it.
//!
//! Nodes run stand-in agents (the test-only `hashi-standin`, never
//! HashiCorp's agents) installed from a signed `file://` mirror trusting
//! only a test key; every port comes from the role file.

// Test helpers outside #[test] functions may unwrap too.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::support::node::{DEADLINE, Ports, RoleFile, Supervisor, node_root, run_cmd};
use crate::support::standin::{HttpReply, free_port, http, wait_for};
use crate::support::supervisor_bin;

fn supervisor(args: &[&str]) -> Output {
    Command::new(supervisor_bin())
        .args(args)
        .env_remove("HASHI_SUPERVISOR_CONFIG")
        .env_remove("HASHI_SUPERVISOR_ROLE")
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn usage_errors_exit_64_with_claps_message() {
    for args in [
        &["--no-such-flag"][..],
        &["no-such-command"],
        &["versions"],
        &["status", "--addr", "not an address"],
        &["--log-format", "xml", "check"],
    ] {
        let out = supervisor(args);
        assert_eq!(
            out.status.code(),
            Some(64),
            "{args:?}: stderr: {}",
            text(&out.stderr)
        );
        let err = text(&out.stderr);
        assert!(err.starts_with("error:"), "{args:?}: {err}");
        assert!(err.contains("--help"), "{args:?}: {err}");
    }
}

#[test]
fn help_and_version_still_exit_0_on_stdout() {
    for args in [&["--help"][..], &["-h"], &["check", "--help"], &["help"]] {
        let out = supervisor(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(text(&out.stdout).contains("Usage:"), "{args:?}");
    }
    let out = supervisor(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).starts_with("supervisor "));
}

#[test]
fn offline_first_run_says_what_to_do_and_exits_69() {
    let root = tempfile::tempdir().unwrap();
    // A mirror on loopback whose port nothing listens on: no route to it.
    let closed = free_port();
    let role = root.path().join("node.toml");
    std::fs::write(
        &role,
        format!(
            "schema = 1\n\n[release]\nmirror = \"http://127.0.0.1:{closed}\"\n\n\
             [health]\nlisten = \"127.0.0.1:{}\"\n\n\
             [paths]\nconfig_dir = \"{}\"\nstate_dir = \"{}\"\n",
            free_port(),
            root.path().join("etc").display(),
            root.path().join("state").display(),
        ),
    )
    .unwrap();
    // `supervisor --role dev`: the main job (run) of a dev node.
    let out = Command::new(supervisor_bin())
        .arg("--config")
        .arg(&role)
        .args(["--role", "dev"])
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM")
        .env_remove("HASHI_SUPERVISOR_ROLE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert!(
        err.contains(&format!(
            "error: failed to fetch http://127.0.0.1:{closed}/"
        )),
        "{err}"
    );
    let hint = err
        .split_once("\nhint: ")
        .unwrap_or_else(|| panic!("no hint: {err}"))
        .1;
    assert!(hint.starts_with("127.0.0.1 cannot be reached"), "{hint}");
    for step in [
        "`[release] mirror`",
        "trusted_key_files",
        "`trust_hashicorp_key = false`",
        "scripts/demo-reference-cluster.sh",
    ] {
        assert!(hint.contains(step), "no {step} in: {hint}");
    }
}

// ------------------------------------------------------- a node harness ---

/// A role file of ams2-server-01 in `datacenter`: `roles`, on `ports`, and
/// `nomad_extra` lines in `[nomad]`. The agents run as their users.
fn role_file(
    root: &Path,
    roles: &[&str],
    datacenter: &str,
    ports: Ports,
    nomad_extra: &str,
) -> String {
    RoleFile::new("ams2-server-01", datacenter, roles, ports)
        .nomad_lines(nomad_extra)
        .render(root)
}

/// A running `supervisor run` of ams2-server-01 in ams2.
struct Node {
    sup: Supervisor,
    ports: Ports,
}

impl Node {
    fn start(roles: &[&str], nomad_extra: &str, env: &[(&str, &str)]) -> Node {
        let root = node_root();
        let ports = Ports::free();
        let role = role_file(root.path(), roles, "ams2", ports, nomad_extra);
        Node {
            sup: Supervisor::start(root, &role, env),
            ports,
        }
    }

    fn root(&self) -> &Path {
        self.sup.root.path()
    }

    fn log(&self) -> String {
        self.sup.log()
    }

    fn consul(&self) -> String {
        format!("127.0.0.1:{}", self.ports.consul_http)
    }

    /// Polls until `cond` gives a value; panics with the log after the
    /// deadline or when the supervisor exits.
    fn wait<T>(&mut self, what: &str, mut cond: impl FnMut(&Node) -> Option<T>) -> T {
        let got = wait_for(DEADLINE, || {
            self.sup.assert_running(what);
            cond(self)
        });
        got.unwrap_or_else(|| panic!("timed out waiting for {what}; log:\n{}", self.log()))
    }

    fn ready(&mut self) {
        let addr = format!("127.0.0.1:{}", self.ports.health);
        self.wait("/ready 200", |_| {
            http(&addr, "GET", "/ready", "")
                .ok()
                .filter(|r| r.status == 200)
        });
    }

    /// The pid of a running agent, from the node's `/v1/status`.
    fn try_agent_pid(&self, agent: &str) -> Option<u32> {
        let r = http(
            &format!("127.0.0.1:{}", self.ports.health),
            "GET",
            "/v1/status",
            "",
        )
        .ok()?;
        let doc = r.json();
        let a = doc["agents"]
            .as_array()?
            .iter()
            .find(|a| a["agent"] == agent)?
            .clone();
        (a["state"] == "running").then_some(())?;
        a["pid"].as_u64().map(|p| p as u32)
    }

    fn agent_pid(&mut self, agent: &str) -> u32 {
        self.wait(agent, |n| n.try_agent_pid(agent))
    }

    /// The `hashi-supervisor` service the node's stand-in Consul has.
    fn registration(&self) -> Option<Value> {
        let r: HttpReply = http(&self.consul(), "GET", "/v1/agent/services", "").ok()?;
        (r.status == 200).then_some(())?;
        r.json().get("hashi-supervisor-ams2-server-01").cloned()
    }

    /// SIGTERM, then the supervisor's exit status.
    fn stop(&mut self) -> std::process::ExitStatus {
        self.sup.stop()
    }
}
fn port_of(reg: &Value) -> u64 {
    reg["Port"].as_u64().unwrap_or_default()
}

// ------------------------------------------- lock and registration tests ---

#[test]
fn second_run_on_a_live_node_is_refused_and_changes_nothing() {
    let mut n = Node::start(&["consul-server", "nomad-server"], "", &[]);
    n.ready();
    let reg = n.wait("registration", Node::registration);
    assert_eq!(port_of(&reg), u64::from(n.ports.health));
    let consul_json = n.root().join("etc/consul.d/consul.json");
    let rendered = std::fs::read(&consul_json).unwrap();

    // The same node's state dir and Consul, another health port (so its
    // registration would carry another address) and another datacenter
    // (so its render would differ).
    let other_health = free_port();
    let second_role = n.root().join("second.toml");
    std::fs::write(
        &second_role,
        role_file(
            n.root(),
            &["consul-server", "nomad-server"],
            "lon1",
            Ports {
                health: other_health,
                ..n.ports
            },
            "",
        ),
    )
    .unwrap();
    let out = run_cmd(&second_role, &[]).output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("another supervisor runs on this state dir"),
        "{err}"
    );
    // Nothing of the live node was touched: its registration (never
    // overwritten, never removed), its rendered config, its endpoint.
    let reg = n.registration().expect("the live node is still registered");
    assert_eq!(port_of(&reg), u64::from(n.ports.health), "{reg}");
    assert_eq!(std::fs::read(&consul_json).unwrap(), rendered);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", other_health)).is_err(),
        "the refused run served a health endpoint"
    );
    assert!(!err.contains("registered in consul"), "{err}");
    assert!(n.stop().success(), "log:\n{}", n.log());
}

#[test]
fn registration_comes_back_when_consul_loses_it() {
    let mut n = Node::start(&["consul-server", "nomad-server"], "", &[]);
    n.ready();
    n.wait("registration", Node::registration);
    // Consul forgets it (an agent replaced, its state lost): removed
    // behind the supervisor's back.
    let r = http(
        &n.consul(),
        "PUT",
        "/v1/agent/service/deregister/hashi-supervisor-ams2-server-01",
        "",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert!(n.registration().is_none());
    let reg = n.wait("registration again", Node::registration);
    assert_eq!(port_of(&reg), u64::from(n.ports.health));
    assert!(
        n.log().contains("consul lost the registration"),
        "{}",
        n.log()
    );
    // Consul crashes; the supervisor restarts it, and the registration is
    // there again once it is back.
    let pid = n.agent_pid("consul");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    n.wait("consul restarted and registered", |n| {
        let again = n.try_agent_pid("consul").filter(|p| *p != pid)?;
        n.registration().map(|_| again)
    });
    assert!(n.stop().success(), "log:\n{}", n.log());
}

// ------------------------------------------------------- agent journal ---

/// Parses one datagram of journald's native protocol into its fields.
fn parse_native(mut d: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut fields = Vec::new();
    while !d.is_empty() {
        let nl = d
            .iter()
            .position(|b| *b == b'\n')
            .expect("a field ends with a newline");
        let line = &d[..nl];
        if let Some(eq) = line.iter().position(|b| *b == b'=') {
            let key = String::from_utf8(line[..eq].to_vec()).unwrap();
            fields.push((key, line[eq + 1..].to_vec()));
            d = &d[nl + 1..];
        } else {
            // KEY\n, u64 LE length, value, \n
            let key = String::from_utf8(line.to_vec()).unwrap();
            let rest = &d[nl + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            let value = rest[8..8 + len].to_vec();
            assert_eq!(
                rest[8 + len],
                b'\n',
                "binary field {key} ends with a newline"
            );
            fields.push((key, value));
            d = &rest[8 + len + 1..];
        }
    }
    for (k, _) in &fields {
        assert!(
            !k.is_empty()
                && !k.starts_with('_')
                && k.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'),
            "not a valid journal field name: {k:?}"
        );
    }
    fields
}

/// A journal entry as the test socket got it.
#[derive(Debug, Clone)]
struct Entry(Vec<(String, Vec<u8>)>);

impl Entry {
    fn get(&self, key: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// A Unix datagram socket standing in for journald's: collects entries.
struct FakeJournal {
    path: PathBuf,
    entries: std::sync::Arc<std::sync::Mutex<Vec<Entry>>>,
}

impl FakeJournal {
    fn bind(path: PathBuf) -> FakeJournal {
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let entries = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = entries.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 256 * 1024];
            while let Ok(n) = sock.recv(&mut buf) {
                sink.lock().unwrap().push(Entry(parse_native(&buf[..n])));
            }
        });
        FakeJournal { path, entries }
    }

    fn find(&self, pred: impl Fn(&Entry) -> bool) -> Option<Entry> {
        self.entries
            .lock()
            .unwrap()
            .iter()
            .find(|e| pred(e))
            .cloned()
    }
}

#[test]
fn agent_lines_reach_the_journal_under_their_own_identifier_and_level() {
    let dir = tempfile::tempdir().unwrap();
    let journal = FakeJournal::bind(dir.path().join("journal.socket"));
    let socket = journal.path.display().to_string();
    // Under systemd (JOURNAL_STREAM), the supervisor itself at warn.
    let mut n = Node::start(
        &["consul-server", "nomad-server"],
        "",
        &[
            ("JOURNAL_STREAM", "8:12345"),
            ("HASHI_SUPERVISOR_JOURNAL_SOCKET", &socket),
            ("HASHI_SUPERVISOR_LOG", "warn"),
        ],
    );
    n.ready();
    let consul_pid = n.agent_pid("consul");
    let nomad_pid = n.agent_pid("nomad");
    // The stand-in Consul server with bootstrap_expect 1 warns as Consul
    // does ("    [WARN] agent: BootstrapExpect is set to 1; ...").
    let warn = n.wait("consul's WARN line", |_| {
        journal.find(|e| {
            e.get("MESSAGE")
                .is_some_and(|m| m.contains("[WARN] agent: BootstrapExpect is set to 1"))
        })
    });
    assert_eq!(warn.get("SYSLOG_IDENTIFIER").as_deref(), Some("consul"));
    assert_eq!(warn.get("PRIORITY").as_deref(), Some("4"));
    assert_eq!(warn.get("SYSLOG_PID"), Some(consul_pid.to_string()));
    assert_eq!(
        warn.get("HASHI_SUPERVISOR_STREAM").as_deref(),
        Some("stdout")
    );
    // INFO-level lines arrive although the supervisor logs at warn.
    for (agent, pid) in [("consul", consul_pid), ("nomad", nomad_pid)] {
        let banner = n.wait("the agent's banner", |_| {
            journal.find(|e| {
                e.get("SYSLOG_IDENTIFIER").as_deref() == Some(agent)
                    && e.get("MESSAGE").is_some_and(|m| m.starts_with("==> "))
            })
        });
        assert_eq!(banner.get("PRIORITY").as_deref(), Some("6"), "{banner:?}");
        assert_eq!(banner.get("SYSLOG_PID"), Some(pid.to_string()));
    }
    // Not also in the supervisor's own output.
    assert!(!n.log().contains("BootstrapExpect"), "{}", n.log());
    assert!(n.stop().success(), "log:\n{}", n.log());
}

// ------------------------------------------------- drain on a real stop ---

/// A ready node whose Nomad is a server and a client that leaves when
/// stopped (`leave_on_stop`: it gets the client drain default), its
/// supervisor's restart marker at `marker`.
fn leaving_nomad_client(marker: &Path) -> Node {
    let marker_env = marker.display().to_string();
    let mut n = Node::start(
        &["consul-server", "nomad-server", "nomad-client"],
        "leave_on_stop = true",
        &[("HASHI_SUPERVISOR_RESTART_MARKER", &marker_env)],
    );
    n.ready();
    n
}

/// The supervisor's log lines of `agent`'s own output.
fn agent_lines(log: &str, agent: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(&format!("agent={agent}")) && l.contains("stream="))
        .map(str::to_string)
        .collect()
}

fn has_line(lines: &[String], part: &str) -> bool {
    lines.iter().any(|l| l.contains(part))
}

#[test]
fn stopping_a_nomad_client_drains_it_by_default_and_a_stale_marker_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("restart");
    // Left by a try-restart of a supervisor that was not running.
    std::fs::write(&marker, "").unwrap();
    let mut n = leaving_nomad_client(&marker);
    let hcl = std::fs::read_to_string(n.root().join("etc/nomad.d/nomad.hcl")).unwrap();
    assert!(
        hcl.contains("drain_on_shutdown {\n    deadline = \"60s\"\n  }"),
        "{hcl}"
    );
    assert!(hcl.contains("leave_on_interrupt = true"), "{hcl}");
    assert!(hcl.contains("leave_on_terminate = false"), "{hcl}");
    assert!(
        !marker.exists(),
        "a marker older than the run is removed at start"
    );
    assert!(n.stop().success(), "log:\n{}", n.log());
    let log = n.log();
    let nomad = agent_lines(&log, "nomad");
    // SIGINT with leave_on_interrupt: Nomad leaves, and so drains.
    assert!(has_line(&nomad, "Caught signal: interrupt"), "{log}");
    assert!(has_line(&nomad, "Gracefully shutting down agent"), "{log}");
    assert!(!has_line(&nomad, "Graceful shutdown disabled"), "{log}");
    assert!(!log.contains("stopping agents for a restart"), "{log}");
}

#[test]
fn a_restart_announced_by_the_marker_stops_nomad_without_leaving_or_draining() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("restart");
    let mut n = leaving_nomad_client(&marker);
    // What the maintainer scripts do before `try-restart`.
    std::fs::write(&marker, "").unwrap();
    assert!(n.stop().success(), "log:\n{}", n.log());
    let log = n.log();
    assert!(log.contains("stopping agents for a restart"), "{log}");
    let nomad = agent_lines(&log, "nomad");
    // SIGTERM with leave_on_terminate = false: no leave, no drain; the
    // task executors (and workloads) outlive the agent.
    assert!(has_line(&nomad, "Caught signal: terminated"), "{log}");
    assert!(has_line(&nomad, "Graceful shutdown disabled"), "{log}");
    assert!(!has_line(&nomad, "Gracefully shutting down agent"), "{log}");
    assert!(!marker.exists(), "the marker is consumed");
}

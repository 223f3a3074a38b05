//! Signal semantics of agent-facts.md §1, observed through exit codes and
//! the event log; SIGHUP reload; sd_notify READY/STOPPING/RELOADING.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use serde_json::json;

use crate::support::{Signal, StandIn, StandInBuilder};

const DEADLINE: Duration = Duration::from_secs(10);

/// Start, send `sig`, and return (exit code, event lines).
fn stop_with(b: StandInBuilder, sig: Signal) -> (i32, Vec<String>) {
    let mut s = b.start();
    s.signal(sig);
    let st = s.wait_exit(DEADLINE).expect("stand-in exits");
    (st.code().unwrap_or(-1), s.event_lines())
}

fn left(sig: &str) -> Vec<String> {
    ["start", &format!("signal {sig}"), "leave", "exit 0"]
        .map(String::from)
        .to_vec()
}

fn no_leave(sig: &str) -> Vec<String> {
    ["start", &format!("signal {sig}"), "exit 1"]
        .map(String::from)
        .to_vec()
}

/// Nomad is ready at start: its event log has `ready` after `start`.
fn nomad(mut lines: Vec<String>) -> Vec<String> {
    lines.insert(1, "ready".to_string());
    lines
}

#[test]
fn consul_client_leaves_on_sigint_and_sigterm_by_default() {
    assert_eq!(
        stop_with(StandIn::consul().client(), Signal::SIGINT),
        (0, left("SIGINT"))
    );
    assert_eq!(
        stop_with(StandIn::consul().client(), Signal::SIGTERM),
        (0, left("SIGTERM"))
    );
}

#[test]
fn consul_server_exits_1_without_leave_by_default() {
    assert_eq!(
        stop_with(StandIn::consul().server(0), Signal::SIGINT),
        (1, no_leave("SIGINT"))
    );
    assert_eq!(
        stop_with(StandIn::consul().server(0), Signal::SIGTERM),
        (1, no_leave("SIGTERM"))
    );
}

#[test]
fn consul_explicit_config_overrides_server_defaults() {
    let b = || {
        StandIn::consul()
            .server(0)
            .set("leave_on_terminate", json!(true))
            .set("skip_leave_on_interrupt", json!(false))
    };
    assert_eq!(stop_with(b(), Signal::SIGINT), (0, left("SIGINT")));
    assert_eq!(stop_with(b(), Signal::SIGTERM), (0, left("SIGTERM")));
}

#[test]
fn consul_explicit_config_overrides_client_defaults() {
    let b = || {
        StandIn::consul()
            .client()
            .set("leave_on_terminate", json!(false))
            .set("skip_leave_on_interrupt", json!(true))
    };
    assert_eq!(stop_with(b(), Signal::SIGINT), (1, no_leave("SIGINT")));
    assert_eq!(stop_with(b(), Signal::SIGTERM), (1, no_leave("SIGTERM")));
}

#[test]
fn nomad_exits_1_without_leave_by_default_for_servers_and_clients() {
    assert_eq!(
        stop_with(StandIn::nomad(), Signal::SIGINT),
        (1, nomad(no_leave("SIGINT")))
    );
    assert_eq!(
        stop_with(StandIn::nomad(), Signal::SIGTERM),
        (1, nomad(no_leave("SIGTERM")))
    );
    assert_eq!(
        stop_with(StandIn::nomad().client(), Signal::SIGTERM),
        (1, nomad(no_leave("SIGTERM")))
    );
}

#[test]
fn nomad_leave_flags_make_stop_graceful() {
    let b = || StandIn::nomad().hcl("leave_on_interrupt = true\nleave_on_terminate = true");
    assert_eq!(stop_with(b(), Signal::SIGINT), (0, nomad(left("SIGINT"))));
    assert_eq!(stop_with(b(), Signal::SIGTERM), (0, nomad(left("SIGTERM"))));
}

#[test]
fn nomad_later_file_cannot_switch_leave_on_terminate_off() {
    let b = StandIn::nomad()
        .file("10-a.hcl", "leave_on_terminate = true\n")
        .file("20-b.hcl", "leave_on_terminate = false\n");
    assert_eq!(stop_with(b, Signal::SIGTERM), (0, nomad(left("SIGTERM"))));
}

#[test]
fn consul_later_file_can_switch_leave_on_terminate_off() {
    let b = StandIn::consul()
        .client()
        .file("10-a.json", r#"{"leave_on_terminate": true}"#)
        .file("20-b.json", r#"{"leave_on_terminate": false}"#);
    assert_eq!(stop_with(b, Signal::SIGTERM), (1, no_leave("SIGTERM")));
}

#[test]
fn second_signal_during_leave_exits_1_at_once() {
    let mut s = StandIn::consul()
        .client()
        .env("STANDIN_LEAVE_DELAY_MS", "60000")
        .start();
    s.signal(Signal::SIGTERM);
    assert!(s.wait_event("leave", DEADLINE));
    s.signal(Signal::SIGINT);
    let st = s.wait_exit(DEADLINE).expect("exits on second signal");
    assert_eq!(st.code(), Some(1));
    assert_eq!(
        s.event_lines(),
        vec![
            "start",
            "signal SIGTERM",
            "leave",
            "signal SIGINT",
            "exit 1"
        ]
    );
}

#[test]
fn consul_http_leave_exits_0() {
    let mut s = StandIn::consul().server(1).start();
    let r = s.put("/v1/agent/leave", "");
    assert_eq!((r.status, r.body.as_str()), (200, ""));
    let st = s.wait_exit(DEADLINE).expect("exits after leave");
    assert_eq!(st.code(), Some(0));
    assert_eq!(s.event_lines(), vec!["start", "leave", "exit 0"]);
}

#[test]
fn sighup_reloads_and_refuses_invalid_config_but_keeps_running() {
    let s = StandIn::consul().server(1).start();
    s.signal(Signal::SIGHUP);
    assert!(s.wait_event("reload ok", DEADLINE));
    std::fs::write(s.config_dir().join("99-bad.json"), r#"{"nope": 1}"#).unwrap();
    s.signal(Signal::SIGHUP);
    assert!(s.wait_event("reload failed", DEADLINE));
    assert_eq!(s.get("/v1/agent/self").status, 200, "still serving");
    assert_eq!(
        s.event_lines(),
        vec![
            "start",
            "signal SIGHUP",
            "reload ok",
            "signal SIGHUP",
            "reload failed"
        ]
    );
}

#[test]
fn sighup_applies_reloadable_setting() {
    let s = StandIn::consul().server(1).start();
    let payload = r#"{"Name": "x", "Check": {"Args": ["/bin/true"], "Interval": "10s"}}"#;
    assert_eq!(s.put("/v1/agent/service/register", payload).status, 500);
    std::fs::write(
        s.config_dir().join("50-scripts.json"),
        r#"{"enable_script_checks": true}"#,
    )
    .unwrap();
    s.signal(Signal::SIGHUP);
    assert!(s.wait_event("reload ok", DEADLINE));
    assert_eq!(s.put("/v1/agent/service/register", payload).status, 200);
}

fn notify_socket() -> (tempfile::TempDir, UnixDatagram, String) {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    (d, sock, path.display().to_string())
}

fn recv(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("notify datagram");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn nomad_notifies_ready_at_start_then_reloading_and_stopping() {
    let (_d, sock, path) = notify_socket();
    let mut s = StandIn::nomad()
        .hcl("leave_on_terminate = true")
        .env("NOTIFY_SOCKET", &path)
        .start();
    assert_eq!(recv(&sock), "READY=1");
    s.signal(Signal::SIGHUP);
    let reloading = recv(&sock);
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    assert_eq!(recv(&sock), "READY=1");
    s.signal(Signal::SIGTERM);
    assert_eq!(recv(&sock), "STOPPING=1");
    assert_eq!(s.wait_exit(DEADLINE).unwrap().code(), Some(0));
}

#[test]
fn consul_notifies_ready_only_after_its_first_lan_join() {
    let (_d, sock, path) = notify_socket();
    let s = StandIn::consul()
        .server(1)
        .env("NOTIFY_SOCKET", &path)
        .start();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(sock.recv(&mut buf).is_err(), "no READY before a join");
    assert!(!s.event_lines().contains(&"ready".to_string()));
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    let r = s.put(&format!("/v1/agent/join/{}", s.join_addr()), "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(recv(&sock), "READY=1");
    assert!(s.wait_event("ready", DEADLINE));
}

#[test]
fn consul_retry_join_to_itself_makes_it_ready() {
    let (_d, sock, path) = notify_socket();
    let port = crate::support::free_port();
    let s = StandIn::consul()
        .server(1)
        .set("ports", json!({"http": port, "serf_lan": port, "dns": -1}))
        .set("retry_join", json!([format!("127.0.0.1:{port}")]))
        .env("NOTIFY_SOCKET", &path)
        .no_wait()
        .start();
    assert_eq!(recv(&sock), "READY=1");
    assert!(s.wait_event("ready", DEADLINE));
}

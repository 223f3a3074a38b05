//! Fault knobs of the stand-in (env vars read at start).

use std::time::Duration;

use crate::support::{Signal, StandIn, wait_for};

const DEADLINE: Duration = Duration::from_secs(10);

#[test]
fn crash_after_exits_2() {
    let mut s = StandIn::consul()
        .client()
        .env("STANDIN_CRASH_AFTER_MS", "300")
        .no_wait()
        .start();
    assert_eq!(s.wait_exit(DEADLINE).unwrap().code(), Some(2));
    assert_eq!(s.event_lines(), vec!["start", "exit 2"]);
}

#[test]
fn exit_at_start_exits_with_the_code() {
    let mut s = StandIn::nomad()
        .env("STANDIN_EXIT_AT_START", "7")
        .no_wait()
        .start();
    assert_eq!(s.wait_exit(DEADLINE).unwrap().code(), Some(7));
    assert_eq!(s.event_lines(), vec!["start", "exit 7"]);
}

#[test]
fn ignore_stop_keeps_running_after_sigterm_and_sigint() {
    let s = StandIn::consul()
        .client()
        .env("STANDIN_IGNORE_STOP", "1")
        .start();
    s.signal(Signal::SIGTERM);
    s.signal(Signal::SIGINT);
    assert!(s.wait_event("signal SIGINT", DEADLINE));
    assert_eq!(s.get("/v1/agent/self").status, 200, "still serving");
    assert!(!s.event_lines().iter().any(|l| l.starts_with("exit")));
}

#[test]
fn slow_start_delays_listening() {
    let s = StandIn::consul()
        .client()
        .env("STANDIN_SLOW_START_MS", "400")
        .no_wait()
        .start();
    // The start event comes at once, the listener only after the delay.
    assert!(wait_for(DEADLINE, || (!s.events().is_empty()).then_some(())).is_some());
    assert!(
        std::net::TcpStream::connect(s.addr()).is_err(),
        "not listening yet"
    );
    assert!(wait_for(DEADLINE, || std::net::TcpStream::connect(s.addr()).ok()).is_some());
}

#[test]
fn stop_signal_during_slow_start_cancels_start_up() {
    let mut s = StandIn::consul()
        .client()
        .env("STANDIN_SLOW_START_MS", "60000")
        .no_wait()
        .start();
    assert!(wait_for(DEADLINE, || (!s.events().is_empty()).then_some(())).is_some());
    s.signal(Signal::SIGTERM);
    assert_eq!(s.wait_exit(DEADLINE).unwrap().code(), Some(1));
}

#[test]
fn http_hang_accepts_but_never_answers() {
    let s = StandIn::consul()
        .client()
        .env("STANDIN_HTTP_HANG", "1")
        .start();
    let mut c = std::net::TcpStream::connect(s.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    use std::io::{Read, Write};
    c.write_all(b"GET /v1/agent/self HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 16];
    let err = c.read(&mut buf).unwrap_err();
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{err}"
    );
}

#[test]
fn spawned_child_is_in_its_own_session_and_survives_the_stand_in() {
    let d = tempfile::tempdir().unwrap();
    let pidfile = d.path().join("child.pid");
    let mut s = StandIn::consul()
        .client()
        .env("STANDIN_SPAWN_CHILD", pidfile.to_str().unwrap())
        .start();
    let pid: i32 = wait_for(DEADLINE, || {
        std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|t| t.trim().parse().ok())
    })
    .expect("child pid written");
    let child = nix::unistd::Pid::from_raw(pid);
    let sid = wait_for(DEADLINE, || {
        nix::unistd::getsid(Some(child))
            .ok()
            .filter(|sid| *sid == child)
    });
    assert_eq!(sid, Some(child), "child leads its own session");
    s.signal(Signal::SIGKILL);
    s.wait_exit(DEADLINE).unwrap();
    assert!(
        nix::sys::signal::kill(child, None).is_ok(),
        "child outlives the stand-in"
    );
    nix::sys::signal::kill(child, Signal::SIGKILL).unwrap();
}

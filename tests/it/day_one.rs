//! Integration tests: what an operator meets on the first day with the
//! real `supervisor` binary (issue 15, section 4): exit codes of usage
//! errors, the next step an offline first run prints.

// Test helpers outside #[test] functions may unwrap too.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

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

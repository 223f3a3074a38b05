//! The agents' Unix users on the test machine. As root, the supervisor runs
//! Consul as `consul` and a server-only Nomad as `nomad`, and refuses a
//! plan whose user does not exist (as `check` does); the package creates
//! them on a real node. Tests and the demo that run as root create them the
//! same way, once, when missing.

use std::process::Command;

/// The users the package creates.
pub const AGENT_USERS: [&str; 2] = ["consul", "nomad"];

/// Creates the `consul` and `nomad` system users (and their groups) when
/// missing and we are root; does nothing otherwise. Idempotent; safe to
/// call from concurrent test processes (a lost race with another
/// `useradd` counts as success once the user exists).
pub fn ensure_agent_users() -> Result<(), String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Ok(());
    }
    for name in AGENT_USERS {
        if user_exists(name) {
            continue;
        }
        let out = Command::new("useradd")
            .args([
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ])
            .output()
            .map_err(|e| format!("failed to run useradd for {name}: {e}"))?;
        if !out.status.success() && !user_exists(name) {
            return Err(format!(
                "useradd {name} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(())
}

fn user_exists(name: &str) -> bool {
    matches!(nix::unistd::User::from_name(name), Ok(Some(_)))
}

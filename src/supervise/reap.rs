//! Reaping adopted orphans when the supervisor is PID 1 or a child subreaper.
//!
//! Never `waitpid(-1)`: that would steal the agents' exit statuses from
//! tokio. After a SIGCHLD the reaper scans `/proc` for zombies whose parent is
//! us and which are not agent children, and reaps each by pid. The scan waits
//! [`REAP_DEBOUNCE`] first: it stays off an agent's restart path (the actor
//! handles its own child's exit before), and a burst of exits costs one scan.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use super::spawn::read_stat;

/// Delay between a SIGCHLD and the scan for adopted orphans.
pub const REAP_DEBOUNCE: Duration = Duration::from_millis(50);

/// Whether this process should reap adopted orphans: it is PID 1, or it just
/// became a child subreaper (`become_subreaper`).
pub fn becomes_reaper(become_subreaper: bool) -> bool {
    if std::process::id() == 1 {
        return true;
    }
    if !become_subreaper {
        return false;
    }
    match nix::sys::prctl::set_child_subreaper(true) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "failed to become a child subreaper");
            false
        }
    }
}

/// Pids of zombie children of `me` that are not in `exclude`.
pub fn stray_zombies(me: u32, exclude: &HashSet<u32>) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| !exclude.contains(pid))
        .filter(|pid| read_stat(*pid).is_some_and(|s| s.state == 'Z' && s.ppid == me))
        .collect()
}

/// Reaps stray zombies now; returns how many.
#[allow(
    clippy::disallowed_methods,
    reason = "the reaper: by pid, only zombies that are not an agent's"
)]
pub fn reap_strays(agent_pids: &Mutex<HashSet<u32>>) -> usize {
    let me = std::process::id();
    // Hold the lock: an agent spawned meanwhile is registered before we scan.
    let guard = agent_pids
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut n = 0;
    for pid in stray_zombies(me, &guard) {
        let Ok(raw) = i32::try_from(pid) else {
            continue;
        };
        if waitpid(Pid::from_raw(raw), Some(WaitPidFlag::WNOHANG)).is_ok() {
            tracing::debug!(pid, "reaped adopted orphan");
            n += 1;
        }
    }
    n
}

/// Reaps strays on every SIGCHLD until `cancel`.
pub async fn run(agent_pids: Arc<Mutex<HashSet<u32>>>, cancel: CancellationToken) {
    let mut sigchld = match signal(SignalKind::child()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "failed to listen for SIGCHLD, not reaping orphans");
            return;
        }
    };
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            got = sigchld.recv() => {
                if got.is_none() {
                    break;
                }
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(REAP_DEBOUNCE) => {}
                }
                let pids = agent_pids.clone();
                let _ = tokio::task::spawn_blocking(move || reap_strays(&pids)).await;
            }
        }
    }
}

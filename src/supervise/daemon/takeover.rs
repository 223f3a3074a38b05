//! Taking over from a previous supervisor: each agent it left running is
//! stopped before ours starts. It must only ever signal a recorded agent
//! whose pid *and* start time still match.
//!
//! # Orphans: replace, not adopt, and no `PR_SET_PDEATHSIG`
//!
//! Every spawned agent's pid and start time (from `/proc/<pid>/stat`) go to
//! `<state_dir>/run/<product>.pid`. If the supervisor is SIGKILLed, the agents
//! keep running (and keep serving): the next supervisor start finds each
//! recorded, still-live agent (same pid *and* start time, so a reused pid is
//! never signalled), stops it gracefully (Nomad first, without a leave or drain,
//! as on a restart), SIGKILLs it after its stop timeout, and only then starts
//! its own. A lock on `<state_dir>/run/supervisor.lock` (dropped by the
//! kernel when its holder dies, even by SIGKILL) keeps a second supervisor
//! from doing that to the agents of a live one. Adopting a running
//! agent was rejected: we could not collect its exit status nor read its
//! output. `PR_SET_PDEATHSIG` was rejected too: it fires when the *thread*
//! that forked exits (tokio threads come and go), and it would take the
//! agents down on a supervisor upgrade-restart, which must not cost a Consul
//! server its leadership.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::time::Instant;

use super::AFTER_KILL_WAIT;
use crate::plan::AgentPlan;
use crate::supervise::machine::deadline_after;
use crate::supervise::spawn::{live_recorded_pid, pidfile_path};

/// Poll period while waiting for a leftover agent (not our child) to exit.
const LEFTOVER_POLL: Duration = Duration::from_millis(20);

/// Stops an agent a previous supervisor left running (see the module docs)
/// with `signal`.
pub async fn stop_leftover(agent: &AgentPlan, signal: Signal, run_dir: &Path) {
    let path = pidfile_path(run_dir, agent.product);
    let Some(pid) = live_recorded_pid(&path) else {
        let _ = std::fs::remove_file(&path);
        return;
    };
    let Ok(raw) = i32::try_from(pid) else { return };
    tracing::warn!(agent = %agent.product, pid, "agent left running by a previous supervisor, stopping it");
    let _ = kill(Pid::from_raw(raw), signal);
    if !wait_gone(&path, agent.stop_timeout).await {
        tracing::warn!(agent = %agent.product, pid, "leftover agent did not stop in time, sending SIGKILL");
        let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
        if !wait_gone(&path, AFTER_KILL_WAIT).await {
            tracing::error!(agent = %agent.product, pid, "leftover agent survived SIGKILL");
        }
    }
    let _ = std::fs::remove_file(&path);
}

async fn wait_gone(pidfile: &Path, within: Duration) -> bool {
    let deadline = deadline_after(Instant::now(), within);
    loop {
        if live_recorded_pid(pidfile).is_none() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(LEFTOVER_POLL).await;
    }
}

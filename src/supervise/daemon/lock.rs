//! One daemon per state dir: the `flock` on `<state_dir>/run/supervisor.lock`
//! ([`LOCK_FILE`]), taken before anything else of `run` and held for the
//! daemon's life. The kernel drops it when its holder dies, even by
//! SIGKILL, so a dead supervisor never blocks the next, and a second live
//! one never takes over the agents of the first.
//!
//! This module only takes the lock; it must not touch the agents.

use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::supervise::SuperviseError;

/// Lock file under `<state_dir>/run`, held (`flock`) for the daemon's life.
pub const LOCK_FILE: &str = "supervisor.lock";

/// The state dir's lock ([`LOCK_FILE`]), held while this value lives: only
/// [`lock_state_dir`] makes one.
#[derive(Debug)]
pub struct StateLock {
    pub(super) run_dir: PathBuf,
    _file: Flock<std::fs::File>,
}

/// Creates `<state_dir>/run` and takes the state dir's lock, or fails at
/// once if another live supervisor holds it. The file is opened
/// close-on-exec: agents never inherit it.
pub fn lock_state_dir(state_dir: &Path) -> Result<StateLock, SuperviseError> {
    let run_dir = state_dir.join("run");
    std::fs::create_dir_all(&run_dir).map_err(|source| SuperviseError::RunDir {
        path: run_dir.clone(),
        source,
    })?;
    let file = lock_state(&run_dir)?;
    Ok(StateLock {
        run_dir,
        _file: file,
    })
}

fn lock_state(run_dir: &Path) -> Result<Flock<std::fs::File>, SuperviseError> {
    let path = run_dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| SuperviseError::Lock {
            path: path.clone(),
            source,
        })?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(lock),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(SuperviseError::AlreadyRunning { path }),
        Err((_, e)) => Err(SuperviseError::Lock {
            path,
            source: e.into(),
        }),
    }
}

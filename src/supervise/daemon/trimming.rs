//! When the daemon gives its start-up working set back ([`crate::supervise::trim`]):
//! each time all agents become ready, after each reload, and once more when
//! what followed has settled ([`crate::supervise::trim::SETTLE_AFTER`]).
//! This module only schedules; `supervise::trim` does the trimming.

use tokio::time::Instant;

use crate::supervise::trim;

/// The trims still to come; does nothing when trimming is off.
#[derive(Debug)]
pub(super) struct TrimSchedule {
    enabled: bool,
    /// A second trim once what follows readiness (or a reload) has settled.
    settle: Option<Instant>,
}

impl TrimSchedule {
    pub(super) fn new(enabled: bool) -> Self {
        Self {
            enabled,
            settle: None,
        }
    }

    /// Start-up (or a restart) is over: what getting here touched goes
    /// back; the steady state keeps only what it uses.
    pub(super) fn all_ready(&mut self) {
        self.trim_now_and_after_settling();
    }

    /// A reload ran: it may have downloaded and rendered.
    pub(super) fn reloaded(&mut self) {
        self.trim_now_and_after_settling();
    }

    fn trim_now_and_after_settling(&mut self) {
        if self.enabled {
            trim::release_startup_memory();
            self.settle = Some(Instant::now() + trim::SETTLE_AFTER);
        }
    }

    /// When the settled trim is due (`None`: none pending).
    pub(super) fn settle_at(&self) -> Option<Instant> {
        self.settle
    }

    /// The settled trim is due: trims.
    pub(super) fn settled(&mut self) {
        self.settle = None;
        trim::release_startup_memory();
    }
}

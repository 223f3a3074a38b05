//! `[<agent>.restart]`: the restart policy (the shape of Nomad's `restart`
//! block), every number within its range.

use std::time::Duration;

use super::{Findings, sizes};
use crate::role::limits;
use crate::role::raw::RawRestart;
use crate::vocab::{RestartMode, RestartPolicy};

/// Default restart policy.
const DEFAULT_RESTART_ATTEMPTS: u32 = 10;
const DEFAULT_RESTART_INTERVAL_SECS: u64 = 300;
const DEFAULT_RESTART_DELAY_SECS: u64 = 5;
const DEFAULT_RESTART_MAX_DELAY_SECS: u64 = 120;
const DEFAULT_RESTART_STABLE_AFTER_SECS: u64 = 60;

/// The policy of one agent; defaults for what is absent or refused.
pub(super) fn policy(found: &mut Findings, r: &RawRestart) -> RestartPolicy {
    let mode = match &r.mode {
        None => RestartMode::Delay,
        Some(s) => match s.get_ref().as_str() {
            "delay" => RestartMode::Delay,
            "fail" => RestartMode::Fail,
            other => {
                found.span(
                    s,
                    format!("unknown restart mode `{other}`, expected `delay` or `fail`"),
                );
                RestartMode::Delay
            }
        },
    };
    let attempts = sizes::number(
        found,
        &r.attempts,
        "attempts",
        &limits::RESTART_ATTEMPTS,
        DEFAULT_RESTART_ATTEMPTS.into(),
    );
    let interval = sizes::number(
        found,
        &r.interval_secs,
        "interval_secs",
        &limits::RESTART_INTERVAL_SECS,
        DEFAULT_RESTART_INTERVAL_SECS,
    );
    let delay = sizes::number(
        found,
        &r.delay_secs,
        "delay_secs",
        &limits::RESTART_DELAY_SECS,
        DEFAULT_RESTART_DELAY_SECS,
    );
    let max_delay = sizes::number(
        found,
        &r.max_delay_secs,
        "max_delay_secs",
        &limits::RESTART_MAX_DELAY_SECS,
        DEFAULT_RESTART_MAX_DELAY_SECS.max(delay),
    );
    let max_delay = match &r.max_delay_secs {
        Some(s) if max_delay < delay => {
            found.span(
                s,
                format!("max_delay_secs must not be less than delay_secs ({delay})"),
            );
            delay
        }
        _ => max_delay,
    };
    let stable_after = sizes::number(
        found,
        &r.stable_after_secs,
        "stable_after_secs",
        &limits::RESTART_STABLE_AFTER_SECS,
        DEFAULT_RESTART_STABLE_AFTER_SECS,
    );
    RestartPolicy {
        attempts: u32::try_from(attempts).unwrap_or(DEFAULT_RESTART_ATTEMPTS),
        interval: Duration::from_secs(interval),
        delay: Duration::from_secs(delay),
        mode,
        max_delay: Duration::from_secs(max_delay),
        stable_after: Duration::from_secs(stable_after),
    }
}

//! The restart policy as a pure bookkeeper: given the crashes so far, how long
//! to wait before the next start, or whether to give up.
//!
//! Shape of Nomad's `restart` block (attempts within an interval, delay, mode)
//! plus a capped exponential backoff with jitter and a reset after a stable
//! run. Owns no timer and no process: the actor asks, then waits.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::vocab::{RestartMode, RestartPolicy};

/// Largest fraction of a delay added as jitter (10 %), so that agents on many
/// nodes that crashed together do not come back in lock-step.
pub const MAX_JITTER_FRACTION: f64 = 0.1;

/// What to do after a crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start again after this delay (zero: at once).
    RestartAfter(Duration),
    /// Give up (mode `fail`, attempts used up); the text says why.
    GiveUp(String),
}

/// Remembers recent crashes of one agent and applies its [`RestartPolicy`].
#[derive(Debug, Clone)]
pub struct RestartTracker {
    policy: RestartPolicy,
    /// Crash instants within the policy's interval, oldest first.
    recent: VecDeque<Instant>,
    /// Crashes since the last stable run (drives the exponential backoff).
    consecutive: u32,
}

impl RestartTracker {
    /// A tracker with no crash recorded.
    pub fn new(policy: RestartPolicy) -> Self {
        Self {
            policy,
            recent: VecDeque::new(),
            consecutive: 0,
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &RestartPolicy {
        &self.policy
    }

    /// Replaces the policy (reload), keeping the crash history.
    pub fn set_policy(&mut self, policy: RestartPolicy) {
        self.policy = policy;
    }

    /// Crashes since the last stable run.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive
    }

    /// Forgets every crash (after a stop asked by the operator).
    pub fn reset(&mut self) {
        self.recent.clear();
        self.consecutive = 0;
    }

    /// Records a crash at `now` of a run that lasted `uptime`, and decides.
    /// `jitter` in `[0, 1)` scales the random part of the delay (pass a random
    /// value in production, a fixed one in tests).
    pub fn record_crash(&mut self, now: Instant, uptime: Duration, jitter: f64) -> Decision {
        if uptime >= self.policy.stable_after {
            self.reset();
        }
        while let Some(first) = self.recent.front() {
            if now.saturating_duration_since(*first) >= self.policy.interval {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        self.recent.push_back(now);
        self.consecutive = self.consecutive.saturating_add(1);
        let over_budget = self.recent.len() > self.policy.attempts as usize;
        if over_budget && self.policy.mode == RestartMode::Fail {
            return Decision::GiveUp(format!(
                "restart mode fail: {} failures within {:?}",
                self.recent.len(),
                self.policy.interval
            ));
        }
        let base = if over_budget {
            // Mode delay with the attempts used up: wait the longest the policy
            // allows, then try again. Never give up for good.
            self.policy.max_delay.max(self.policy.delay)
        } else {
            self.backoff()
        };
        Decision::RestartAfter(with_jitter(base, self.policy.max_delay, jitter))
    }

    /// `delay * 2^(consecutive-1)`, capped at `max_delay` (a zero delay stays zero).
    fn backoff(&self) -> Duration {
        let exp = self.consecutive.saturating_sub(1).min(30);
        let factor = 1u32 << exp;
        let d = self.policy.delay.saturating_mul(factor);
        if self.policy.delay > self.policy.max_delay {
            self.policy.delay
        } else {
            d.min(self.policy.max_delay)
        }
    }
}

/// Adds up to [`MAX_JITTER_FRACTION`] of `base`, without exceeding `cap`
/// (unless `base` already does).
fn with_jitter(base: Duration, cap: Duration, jitter: f64) -> Duration {
    // NaN passes `clamp` unchanged and `mul_f64` panics on it.
    let j = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0) * MAX_JITTER_FRACTION
    } else {
        0.0
    };
    let extra = Duration::try_from_secs_f64(base.as_secs_f64() * j).unwrap_or(Duration::ZERO);
    let d = base.saturating_add(extra);
    if base <= cap { d.min(cap) } else { base }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(mode: RestartMode, delay_ms: u64) -> RestartPolicy {
        RestartPolicy {
            attempts: 3,
            interval: Duration::from_secs(60),
            delay: Duration::from_millis(delay_ms),
            mode,
            max_delay: Duration::from_secs(5),
            stable_after: Duration::from_secs(30),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_up_to_the_cap() {
        let mut t = RestartTracker::new(RestartPolicy {
            attempts: 100,
            ..policy(RestartMode::Delay, 1000)
        });
        let mut delays = Vec::new();
        for _ in 0..5 {
            match t.record_crash(Instant::now(), Duration::ZERO, 0.0) {
                Decision::RestartAfter(d) => delays.push(d.as_millis()),
                Decision::GiveUp(r) => panic!("gave up: {r}"),
            }
        }
        assert_eq!(delays, vec![1000, 2000, 4000, 5000, 5000]);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_delay_restarts_at_once_every_time() {
        let mut t = RestartTracker::new(policy(RestartMode::Delay, 0));
        for _ in 0..3 {
            assert_eq!(
                t.record_crash(Instant::now(), Duration::ZERO, 0.9),
                Decision::RestartAfter(Duration::ZERO)
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn fail_mode_gives_up_after_attempts_within_interval() {
        let mut t = RestartTracker::new(policy(RestartMode::Fail, 10));
        for _ in 0..3 {
            assert!(matches!(
                t.record_crash(Instant::now(), Duration::ZERO, 0.0),
                Decision::RestartAfter(_)
            ));
        }
        assert!(matches!(
            t.record_crash(Instant::now(), Duration::ZERO, 0.0),
            Decision::GiveUp(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn delay_mode_never_gives_up_and_waits_the_cap_when_over_budget() {
        let mut t = RestartTracker::new(policy(RestartMode::Delay, 10));
        for _ in 0..3 {
            t.record_crash(Instant::now(), Duration::ZERO, 0.0);
        }
        for _ in 0..10 {
            assert_eq!(
                t.record_crash(Instant::now(), Duration::ZERO, 0.0),
                Decision::RestartAfter(Duration::from_secs(5))
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn crashes_outside_the_interval_are_forgotten() {
        let mut t = RestartTracker::new(policy(RestartMode::Fail, 10));
        for _ in 0..3 {
            t.record_crash(Instant::now(), Duration::ZERO, 0.0);
        }
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(matches!(
            t.record_crash(Instant::now(), Duration::ZERO, 0.0),
            Decision::RestartAfter(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stable_run_resets_the_backoff() {
        let mut t = RestartTracker::new(policy(RestartMode::Delay, 100));
        for _ in 0..3 {
            t.record_crash(Instant::now(), Duration::ZERO, 0.0);
        }
        assert_eq!(t.consecutive_failures(), 3);
        let d = t.record_crash(Instant::now(), Duration::from_secs(31), 0.0);
        assert_eq!(d, Decision::RestartAfter(Duration::from_millis(100)));
        assert_eq!(t.consecutive_failures(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_longest_durations_and_any_jitter_never_panic() {
        let mut t = RestartTracker::new(RestartPolicy {
            attempts: u32::MAX,
            interval: Duration::MAX,
            delay: Duration::MAX,
            mode: RestartMode::Delay,
            max_delay: Duration::MAX,
            stable_after: Duration::MAX,
        });
        for jitter in [0.0, 0.99, f64::NAN, f64::INFINITY, -1.0] {
            assert_eq!(
                t.record_crash(Instant::now(), Duration::MAX, jitter),
                Decision::RestartAfter(Duration::MAX)
            );
        }
        assert_eq!(
            with_jitter(Duration::from_secs(10), Duration::MAX, f64::NAN),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn jitter_adds_at_most_a_tenth_and_respects_the_cap() {
        let d = with_jitter(Duration::from_secs(1), Duration::from_secs(10), 0.99);
        assert!(d > Duration::from_secs(1) && d <= Duration::from_millis(1100));
        let capped = with_jitter(Duration::from_secs(10), Duration::from_secs(10), 0.99);
        assert_eq!(capped, Duration::from_secs(10));
    }
}

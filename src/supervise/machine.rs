//! The per-agent state machine: every transition in one `match (state, event)`.
//!
//! Pure: no process, no clock, no I/O. The actor feeds it events (controls,
//! spawn results, exits, readiness, timers) and carries out the returned
//! [`Effect`]s. Timers are not effects: the actor derives them from the state
//! (`Backoff::until`, `Stopping::deadline`).

use nix::sys::signal::Signal;
use tokio::time::Instant;

use super::policy::{Decision, RestartTracker};

/// Least wait before retrying a spawn that failed (exec error, not a crash).
pub const SPAWN_FAILURE_MIN_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// The longest wait a deadline is ever set to (30 years, as tokio's own
/// "far future"): a later one is the same for a supervisor, and adding more
/// to an `Instant` can overflow.
pub const FAR_FUTURE: std::time::Duration = std::time::Duration::from_secs(30 * 365 * 86_400);

/// `now + d`, never panicking: waits beyond [`FAR_FUTURE`] are cut to it.
/// A plan built by code (not only a checked role file) may hold any
/// duration, and `Instant + Duration` panics on overflow.
pub fn deadline_after(now: Instant, d: std::time::Duration) -> Instant {
    // `now + FAR_FUTURE` cannot overflow a monotonic clock that started
    // at boot; `now` is the fallback only to avoid a panic path.
    now.checked_add(d.min(FAR_FUTURE)).unwrap_or(now)
}

/// What happens once a stopping agent has exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterStop {
    /// Stay stopped.
    Stay,
    /// Start it again (a restart).
    Start,
}

/// Lifecycle state of one agent, as the actor sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    /// No process, none wanted.
    Stopped,
    /// Spawned, not ready yet.
    Starting {
        /// Main pid.
        pid: u32,
        /// Spawn instant.
        since: Instant,
    },
    /// Ready (sd_notify READY=1 or its check passed).
    Running {
        /// Main pid.
        pid: u32,
        /// Spawn instant.
        since: Instant,
    },
    /// Stop signal sent; SIGKILL at `deadline`.
    Stopping {
        /// Main pid.
        pid: u32,
        /// When the grace ends.
        deadline: Instant,
        /// Whether SIGKILL was already sent.
        killed: bool,
        /// What to do once it exited.
        then: AfterStop,
    },
    /// Crashed; the next start is at `until`.
    Backoff {
        /// When to start again.
        until: Instant,
        /// Crashes since the last stable run.
        failures: u32,
    },
    /// Gave up, or cannot be started.
    Failed {
        /// Why.
        reason: String,
    },
}

/// Something that happened to an agent.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Control: it should run.
    Start,
    /// Control: stop it with `signal`, SIGKILL at `deadline`.
    Stop {
        /// Stop signal.
        signal: Signal,
        /// End of the grace.
        deadline: Instant,
    },
    /// Control: stop it (as for `Stop`) and start it again.
    Restart {
        /// Stop signal.
        signal: Signal,
        /// End of the grace.
        deadline: Instant,
    },
    /// The actor spawned a process.
    Spawned {
        /// Its pid.
        pid: u32,
        /// When.
        at: Instant,
    },
    /// The actor could not spawn it.
    SpawnFailed {
        /// Why.
        reason: String,
        /// When.
        at: Instant,
    },
    /// READY=1 or the readiness check passed.
    Ready,
    /// The main process exited (reaped).
    Exited {
        /// When.
        at: Instant,
    },
    /// `Stopping::deadline` passed.
    GraceExpired,
    /// `Backoff::until` passed.
    BackoffElapsed,
}

/// What the actor must do after a transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Spawn the agent; `restart` counts it as a restart.
    Spawn {
        /// Whether it is a restart (not the first start).
        restart: bool,
    },
    /// Send `signal` to the main pid.
    Signal {
        /// Main pid.
        pid: u32,
        /// The signal.
        signal: Signal,
    },
    /// SIGKILL the main pid (never its group: Nomad's tasks must survive).
    Kill {
        /// Main pid.
        pid: u32,
    },
}

/// Applies `event` to `state`. `tracker` holds the restart policy's memory;
/// `jitter` in `[0, 1)` is passed on to it.
pub fn transition(
    state: State,
    event: Event,
    tracker: &mut RestartTracker,
    jitter: f64,
) -> (State, Vec<Effect>) {
    use Event as E;
    use State as S;
    match (state, event) {
        // Start.
        (S::Stopped | S::Failed { .. }, E::Start) => {
            tracker.reset();
            (S::Stopped, vec![Effect::Spawn { restart: false }])
        }
        (
            S::Stopping {
                pid,
                deadline,
                killed,
                ..
            },
            E::Start,
        ) => (
            S::Stopping {
                pid,
                deadline,
                killed,
                then: AfterStop::Start,
            },
            vec![],
        ),
        (s @ (S::Starting { .. } | S::Running { .. } | S::Backoff { .. }), E::Start) => (s, vec![]),

        // Stop and restart of a live process.
        (S::Starting { pid, .. } | S::Running { pid, .. }, E::Stop { signal, deadline }) => (
            S::Stopping {
                pid,
                deadline,
                killed: false,
                then: AfterStop::Stay,
            },
            vec![Effect::Signal { pid, signal }],
        ),
        (S::Starting { pid, .. } | S::Running { pid, .. }, E::Restart { signal, deadline }) => (
            S::Stopping {
                pid,
                deadline,
                killed: false,
                then: AfterStop::Start,
            },
            vec![Effect::Signal { pid, signal }],
        ),
        // A second stop can only shorten the grace (second SIGTERM: now).
        (
            S::Stopping {
                pid,
                deadline: old,
                killed,
                then,
            },
            E::Stop { deadline, .. },
        ) => (
            S::Stopping {
                pid,
                deadline: old.min(deadline),
                killed,
                then: if then == AfterStop::Start {
                    AfterStop::Stay
                } else {
                    then
                },
            },
            vec![],
        ),
        (
            S::Stopping {
                pid,
                deadline,
                killed,
                ..
            },
            E::Restart { .. },
        ) => (
            S::Stopping {
                pid,
                deadline,
                killed,
                then: AfterStop::Start,
            },
            vec![],
        ),
        (S::Stopped | S::Backoff { .. } | S::Failed { .. }, E::Stop { .. }) => (S::Stopped, vec![]),
        (S::Stopped | S::Backoff { .. } | S::Failed { .. }, E::Restart { .. }) => {
            tracker.reset();
            (S::Stopped, vec![Effect::Spawn { restart: true }])
        }

        // Spawn results.
        (_, E::Spawned { pid, at }) => (S::Starting { pid, since: at }, vec![]),
        (_, E::SpawnFailed { reason, at }) => crashed(tracker, at, at, jitter, Some(reason)),

        // Readiness.
        (S::Starting { pid, since }, E::Ready) => (S::Running { pid, since }, vec![]),
        (s, E::Ready) => (s, vec![]),

        // Exits.
        (S::Starting { since, .. } | S::Running { since, .. }, E::Exited { at }) => {
            crashed(tracker, since, at, jitter, None)
        }
        (
            S::Stopping {
                then: AfterStop::Stay,
                ..
            },
            E::Exited { .. },
        ) => (S::Stopped, vec![]),
        (
            S::Stopping {
                then: AfterStop::Start,
                ..
            },
            E::Exited { .. },
        ) => (S::Stopped, vec![Effect::Spawn { restart: true }]),
        (s, E::Exited { .. }) => (s, vec![]),

        // Timers.
        (
            S::Stopping {
                pid,
                deadline,
                killed: false,
                then,
            },
            E::GraceExpired,
        ) => (
            S::Stopping {
                pid,
                deadline,
                killed: true,
                then,
            },
            vec![Effect::Kill { pid }],
        ),
        (s, E::GraceExpired) => (s, vec![]),
        (S::Backoff { .. }, E::BackoffElapsed) => {
            (S::Stopped, vec![Effect::Spawn { restart: true }])
        }
        (s, E::BackoffElapsed) => (s, vec![]),
    }
}

/// A run that began at `since` ended unasked at `at`: ask the policy.
fn crashed(
    tracker: &mut RestartTracker,
    since: Instant,
    at: Instant,
    jitter: f64,
    spawn_error: Option<String>,
) -> (State, Vec<Effect>) {
    let mut decision = tracker.record_crash(at, at.saturating_duration_since(since), jitter);
    if let (Some(_), Decision::RestartAfter(d)) = (&spawn_error, &decision) {
        // A binary that cannot be executed would otherwise spin at delay 0.
        if *d < SPAWN_FAILURE_MIN_DELAY {
            decision = Decision::RestartAfter(SPAWN_FAILURE_MIN_DELAY);
        }
    }
    match decision {
        Decision::RestartAfter(d) if d.is_zero() => {
            (State::Stopped, vec![Effect::Spawn { restart: true }])
        }
        Decision::RestartAfter(d) => (
            State::Backoff {
                until: deadline_after(at, d),
                failures: tracker.consecutive_failures(),
            },
            vec![],
        ),
        Decision::GiveUp(reason) => (
            State::Failed {
                reason: match spawn_error {
                    Some(e) => format!("{reason}; last spawn error: {e}"),
                    None => reason,
                },
            },
            vec![],
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::vocab::{RestartMode, RestartPolicy};

    fn tracker(mode: RestartMode, delay_ms: u64) -> RestartTracker {
        RestartTracker::new(RestartPolicy {
            attempts: 2,
            interval: Duration::from_secs(60),
            delay: Duration::from_millis(delay_ms),
            mode,
            max_delay: Duration::from_secs(10),
            stable_after: Duration::from_secs(30),
        })
    }

    fn step(s: State, e: Event, t: &mut RestartTracker) -> (State, Vec<Effect>) {
        transition(s, e, t, 0.0)
    }

    #[tokio::test(start_paused = true)]
    async fn start_from_stopped_spawns() {
        let mut t = tracker(RestartMode::Delay, 0);
        let (s, fx) = step(State::Stopped, Event::Start, &mut t);
        assert_eq!(s, State::Stopped);
        assert_eq!(fx, vec![Effect::Spawn { restart: false }]);
        let now = Instant::now();
        let (s, _) = step(s, Event::Spawned { pid: 7, at: now }, &mut t);
        assert_eq!(s, State::Starting { pid: 7, since: now });
        let (s, _) = step(s, Event::Ready, &mut t);
        assert_eq!(s, State::Running { pid: 7, since: now });
    }

    #[tokio::test(start_paused = true)]
    async fn start_while_running_does_nothing() {
        let mut t = tracker(RestartMode::Delay, 0);
        let s = State::Running {
            pid: 1,
            since: Instant::now(),
        };
        assert_eq!(step(s.clone(), Event::Start, &mut t), (s, vec![]));
    }

    #[tokio::test(start_paused = true)]
    async fn stop_signals_the_main_pid_and_waits() {
        let mut t = tracker(RestartMode::Delay, 0);
        let deadline = Instant::now() + Duration::from_secs(5);
        let (s, fx) = step(
            State::Running {
                pid: 9,
                since: Instant::now(),
            },
            Event::Stop {
                signal: Signal::SIGINT,
                deadline,
            },
            &mut t,
        );
        assert_eq!(
            fx,
            vec![Effect::Signal {
                pid: 9,
                signal: Signal::SIGINT
            }]
        );
        assert_eq!(
            s,
            State::Stopping {
                pid: 9,
                deadline,
                killed: false,
                then: AfterStop::Stay
            }
        );
        let (s2, fx) = step(s, Event::Exited { at: Instant::now() }, &mut t);
        assert_eq!((s2, fx), (State::Stopped, vec![]));
    }

    #[tokio::test(start_paused = true)]
    async fn grace_expiry_kills_once() {
        let mut t = tracker(RestartMode::Delay, 0);
        let s = State::Stopping {
            pid: 3,
            deadline: Instant::now(),
            killed: false,
            then: AfterStop::Stay,
        };
        let (s, fx) = step(s, Event::GraceExpired, &mut t);
        assert_eq!(fx, vec![Effect::Kill { pid: 3 }]);
        let (_, fx) = step(s, Event::GraceExpired, &mut t);
        assert!(fx.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn second_stop_shortens_the_grace_and_cancels_a_restart() {
        let mut t = tracker(RestartMode::Delay, 0);
        let late = Instant::now() + Duration::from_secs(60);
        let now = Instant::now();
        let s = State::Stopping {
            pid: 3,
            deadline: late,
            killed: false,
            then: AfterStop::Start,
        };
        let (s, fx) = step(
            s,
            Event::Stop {
                signal: Signal::SIGTERM,
                deadline: now,
            },
            &mut t,
        );
        assert!(fx.is_empty());
        assert_eq!(
            s,
            State::Stopping {
                pid: 3,
                deadline: now,
                killed: false,
                then: AfterStop::Stay
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn restart_stops_then_spawns() {
        let mut t = tracker(RestartMode::Delay, 0);
        let d = Instant::now();
        let (s, fx) = step(
            State::Running { pid: 4, since: d },
            Event::Restart {
                signal: Signal::SIGTERM,
                deadline: d,
            },
            &mut t,
        );
        assert_eq!(
            fx,
            vec![Effect::Signal {
                pid: 4,
                signal: Signal::SIGTERM
            }]
        );
        let (s, fx) = step(s, Event::Exited { at: d }, &mut t);
        assert_eq!(s, State::Stopped);
        assert_eq!(fx, vec![Effect::Spawn { restart: true }]);
    }

    #[tokio::test(start_paused = true)]
    async fn crash_with_zero_delay_respawns_at_once() {
        let mut t = tracker(RestartMode::Delay, 0);
        let now = Instant::now();
        let (s, fx) = step(
            State::Running { pid: 5, since: now },
            Event::Exited { at: now },
            &mut t,
        );
        assert_eq!(s, State::Stopped);
        assert_eq!(fx, vec![Effect::Spawn { restart: true }]);
    }

    #[tokio::test(start_paused = true)]
    async fn crash_with_delay_backs_off_then_spawns() {
        let mut t = tracker(RestartMode::Delay, 100);
        let now = Instant::now();
        let (s, fx) = step(
            State::Starting { pid: 5, since: now },
            Event::Exited { at: now },
            &mut t,
        );
        assert!(fx.is_empty());
        assert_eq!(
            s,
            State::Backoff {
                until: now + Duration::from_millis(100),
                failures: 1
            }
        );
        let (s, fx) = step(s, Event::BackoffElapsed, &mut t);
        assert_eq!(s, State::Stopped);
        assert_eq!(fx, vec![Effect::Spawn { restart: true }]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_crash_with_the_longest_delay_backs_off_to_the_far_future() {
        let mut t = RestartTracker::new(RestartPolicy {
            attempts: 2,
            interval: Duration::MAX,
            delay: Duration::MAX,
            mode: RestartMode::Delay,
            max_delay: Duration::MAX,
            stable_after: Duration::MAX,
        });
        let now = Instant::now();
        let (s, fx) = step(
            State::Running { pid: 5, since: now },
            Event::Exited { at: now },
            &mut t,
        );
        assert!(fx.is_empty());
        assert_eq!(
            s,
            State::Backoff {
                until: now + FAR_FUTURE,
                failures: 1
            }
        );
        assert_eq!(deadline_after(now, Duration::MAX), now + FAR_FUTURE);
        assert_eq!(
            deadline_after(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn crash_loop_in_fail_mode_ends_failed() {
        let mut t = tracker(RestartMode::Fail, 0);
        let mut s = State::Stopped;
        for _ in 0..3 {
            let now = Instant::now();
            (s, _) = step(s, Event::Spawned { pid: 1, at: now }, &mut t);
            (s, _) = step(s, Event::Exited { at: now }, &mut t);
        }
        assert!(matches!(s, State::Failed { .. }), "{s:?}");
        // An operator start clears the failure.
        let (s, fx) = step(s, Event::Start, &mut t);
        assert_eq!(s, State::Stopped);
        assert_eq!(fx, vec![Effect::Spawn { restart: false }]);
    }

    #[tokio::test(start_paused = true)]
    async fn spawn_failure_counts_as_a_crash() {
        let mut t = tracker(RestartMode::Fail, 0);
        let mut s = State::Stopped;
        for _ in 0..3 {
            (s, _) = step(
                s,
                Event::SpawnFailed {
                    reason: "no such file".into(),
                    at: Instant::now(),
                },
                &mut t,
            );
        }
        match s {
            State::Failed { reason } => assert!(reason.contains("no such file"), "{reason}"),
            other => panic!("not failed: {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stop_during_backoff_cancels_the_restart() {
        let mut t = tracker(RestartMode::Delay, 100);
        let s = State::Backoff {
            until: Instant::now(),
            failures: 1,
        };
        let (s, fx) = step(
            s,
            Event::Stop {
                signal: Signal::SIGTERM,
                deadline: Instant::now(),
            },
            &mut t,
        );
        assert_eq!((s.clone(), fx), (State::Stopped, vec![]));
        assert_eq!(step(s, Event::BackoffElapsed, &mut t).1, vec![]);
    }

    #[tokio::test(start_paused = true)]
    async fn late_ready_or_exit_events_are_ignored_when_stopped() {
        let mut t = tracker(RestartMode::Delay, 0);
        assert_eq!(
            step(State::Stopped, Event::Ready, &mut t),
            (State::Stopped, vec![])
        );
        assert_eq!(
            step(State::Stopped, Event::Exited { at: Instant::now() }, &mut t),
            (State::Stopped, vec![])
        );
    }
}

//! One observer task per agent: the only poller of the agents' APIs. It
//! publishes an [`Observation`] on a `watch` that supervision (readiness)
//! and the health snapshot both read.
//!
//! An observer polls its agent fully ([`report::poll`]: leader, members,
//! health, version...) on its interval, and at once when a reader asks:
//!
//! * [`ObserverHandle::refresh`]: a new full poll now; one in flight is
//!   abandoned (its connections closed), since it started before what the
//!   reader learnt (an agent started, became ready, exited). The health
//!   snapshot asks this on every state change of an agent, so `/ready`
//!   never keeps a failure of an agent that is up now.
//! * [`ObserverHandle::probe`]: one readiness request now
//!   ([`report::probe`]), awaited by the caller; supervision asks this on
//!   its own schedule while an agent starts (every 250 ms, so readiness is
//!   seen as fast as the agent gets there) and while it runs.
//!
//! Each request is bounded by [`ObserverConfig::request_timeout`] and a
//! whole poll by [`POLL_TIMEOUT_FACTOR`] of it, so a hung agent delays only
//! its own observation, never a reader. A reader tells a fresh result from
//! an older one by the kick counters stamped on it ([`Stamp`]).
//!
//! The observer knows nothing of the supervisor: it is told of changes
//! only through those kicks (the stage order puts `agent` before
//! `supervise`). It must not retry beyond the transport's resend nor keep
//! anything but the latest observation.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::DEFAULT_REQUEST_TIMEOUT;
use super::report::{self, AgentReport, AgentTarget};
use super::transport::{AgentClient, Endpoint};
use crate::vocab::Product;

/// Default interval between two full polls of an agent.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// Default delay of the first poll after an agent started or changed state
/// (a refresh): the polls that follow double from it up to the interval,
/// so a forming cluster (members joining, a leader elected) shows in the
/// node's status within a second or two instead of a whole interval.
pub const DEFAULT_SETTLE_FIRST: Duration = Duration::from_millis(500);
/// A full poll is bounded by this many request timeouts (its requests run
/// concurrently, so one timeout is the normal worst case).
pub const POLL_TIMEOUT_FACTOR: u32 = 3;

/// Observer settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObserverConfig {
    /// Interval between full polls.
    pub interval: Duration,
    /// Timeout of each request to the agent.
    pub request_timeout: Duration,
    /// Delay of the first poll after a refresh, doubling up to `interval`
    /// for the polls that follow; `Duration::ZERO`: every poll waits the
    /// interval.
    pub settle_first: Duration,
}

impl Default for ObserverConfig {
    fn default() -> Self {
        Self {
            interval: DEFAULT_POLL_INTERVAL,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            settle_first: DEFAULT_SETTLE_FIRST,
        }
    }
}

/// The delay before the next full poll: the settling step (then doubled,
/// at most the interval) or, once settled or with settling off, the
/// interval.
fn next_delay(settle: &mut Duration, interval: Duration) -> Duration {
    if settle.is_zero() || *settle >= interval {
        return interval;
    }
    let d = *settle;
    *settle = settle.saturating_mul(2).min(interval);
    d
}

/// How many probes and refreshes readers had asked for when a poll
/// started: a result answers every request numbered up to its stamp.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp {
    /// Probes asked so far.
    pub probes: u64,
    /// Refreshes asked so far.
    pub refreshes: u64,
}

/// A readiness verdict and the probe count it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// The `probes` stamp of the poll or probe that found it.
    pub probes: u64,
    /// Whether the agent is ready.
    pub ready: bool,
}

/// What an observer last found of its agent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    /// The latest readiness verdict (of a probe or a full poll).
    pub verdict: Option<Verdict>,
    /// The latest full report, with the stamp of the poll that made it.
    pub report: Option<(Stamp, AgentReport)>,
}

/// A reader's handle on one agent's observer; cheap to clone.
#[derive(Debug, Clone)]
pub struct ObserverHandle {
    product: Product,
    kicks: Arc<watch::Sender<Stamp>>,
    observations: watch::Receiver<Observation>,
}

impl ObserverHandle {
    /// Which agent.
    pub fn product(&self) -> Product {
        self.product
    }

    /// The observations, latest first.
    pub fn subscribe(&self) -> watch::Receiver<Observation> {
        self.observations.clone()
    }

    /// Asks for a full poll now, abandoning one in flight; returns the
    /// refresh number a report must carry to answer it.
    pub fn refresh(&self) -> u64 {
        let mut n = 0;
        self.kicks.send_modify(|k| {
            k.refreshes += 1;
            n = k.refreshes;
        });
        n
    }

    /// Asks for a readiness probe now and waits for its verdict (or that
    /// of a full poll started after this call); `false` once the observer
    /// is gone. Callers bound the wait.
    pub async fn probe(&self) -> bool {
        let mut n = 0;
        self.kicks.send_modify(|k| {
            k.probes += 1;
            n = k.probes;
        });
        let mut rx = self.observations.clone();
        let fresh = rx
            .wait_for(|o| o.verdict.is_some_and(|v| v.probes >= n))
            .await;
        fresh.is_ok_and(|o| o.verdict.is_some_and(|v| v.ready))
    }
}

/// The observers of a node's agents, in the node's order.
#[derive(Debug, Clone, Default)]
pub struct Observers {
    handles: Vec<ObserverHandle>,
}

impl Observers {
    /// Spawns one observer per target on `tracker`, each polling through
    /// `client` until `cancel`.
    pub fn start(
        client: &AgentClient,
        targets: &[AgentTarget],
        config: ObserverConfig,
        tracker: &TaskTracker,
        cancel: &CancellationToken,
    ) -> Self {
        let handles = targets
            .iter()
            .map(|t| {
                let (observer, handle) = Observer::new(client, t.clone(), config);
                tracker.spawn(observer.run(cancel.clone()));
                handle
            })
            .collect();
        Self { handles }
    }

    /// The observer of `product`, if the node runs it.
    pub fn get(&self, product: Product) -> Option<&ObserverHandle> {
        self.handles.iter().find(|h| h.product == product)
    }

    /// Every observer, in the node's order.
    pub fn iter(&self) -> impl Iterator<Item = &ObserverHandle> {
        self.handles.iter()
    }
}

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One agent's observer task. Build with [`Observer::new`] (or
/// [`Observers::start`]), spawn [`Observer::run`].
pub struct Observer {
    target: AgentTarget,
    /// The agent's API, or why it has none (reported by every poll).
    api: Result<Endpoint, String>,
    config: ObserverConfig,
    kicks: watch::Receiver<Stamp>,
    tx: Arc<watch::Sender<Observation>>,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer")
            .field("agent", &self.target.product)
            .finish_non_exhaustive()
    }
}

impl Observer {
    /// The observer of `target` and its readers' handle.
    pub fn new(
        client: &AgentClient,
        target: AgentTarget,
        config: ObserverConfig,
    ) -> (Self, ObserverHandle) {
        let api = client
            .endpoint(
                target.http_addr,
                target.api_tls.as_ref(),
                config.request_timeout,
            )
            .map_err(|e| {
                tracing::warn!(agent = %target.product, error = %e.one_line(), "the agent's API cannot be reached");
                e.one_line()
            });
        let (kick_tx, kicks) = watch::channel(Stamp::default());
        let (tx, observations) = watch::channel(Observation::default());
        let handle = ObserverHandle {
            product: target.product,
            kicks: Arc::new(kick_tx),
            observations,
        };
        let observer = Self {
            target,
            api,
            config,
            kicks,
            tx: Arc::new(tx),
        };
        (observer, handle)
    }

    /// Polls until `cancel` (or until every handle is dropped); a poll in
    /// flight is abandoned then.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut seen = *self.kicks.borrow_and_update();
        let mut full: Option<Task> = Some(self.full_poll(seen));
        let mut probe: Option<Task> = None;
        let mut settle = self.config.settle_first;
        let mut next_full = Instant::now() + self.config.interval;
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                changed = self.kicks.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let now = *self.kicks.borrow_and_update();
                    if now.refreshes != seen.refreshes {
                        // Dropping the poll in flight closes its requests.
                        full = Some(self.full_poll(now));
                        next_full = Instant::now() + self.config.interval;
                        settle = self.config.settle_first;
                    }
                    if now.probes != seen.probes {
                        probe = Some(self.probe(now));
                    }
                    seen = now;
                }
                () = run_opt(&mut full) => {
                    full = None;
                    next_full = Instant::now() + next_delay(&mut settle, self.config.interval);
                }
                () = run_opt(&mut probe) => probe = None,
                () = tokio::time::sleep_until(next_full), if full.is_none() => {
                    full = Some(self.full_poll(seen));
                }
            }
        }
    }

    fn full_poll(&self, stamp: Stamp) -> Task {
        let (api, target, tx) = (self.api.clone(), self.target.clone(), self.tx.clone());
        let bound = self.config.request_timeout * POLL_TIMEOUT_FACTOR;
        Box::pin(async move {
            let (report, ready) = match tokio::time::timeout(bound, report::poll(api, &target))
                .await
            {
                Ok(r) => r,
                Err(_) => {
                    let msg = format!("agent queries did not finish within {}s", bound.as_secs());
                    (report::unreachable_api(&target, msg), false)
                }
            };
            tx.send_modify(|o| {
                if o.verdict.is_none_or(|v| v.probes <= stamp.probes) {
                    o.verdict = Some(Verdict {
                        probes: stamp.probes,
                        ready,
                    });
                }
                o.report = Some((stamp, report));
            });
        })
    }

    fn probe(&self, stamp: Stamp) -> Task {
        let (api, product, tx) = (self.api.clone(), self.target.product, self.tx.clone());
        let bound = self.config.request_timeout;
        Box::pin(async move {
            let ready = tokio::time::timeout(bound, report::probe(api, product))
                .await
                .unwrap_or(false);
            tx.send_modify(|o| {
                o.verdict = Some(Verdict {
                    probes: stamp.probes,
                    ready,
                });
            });
        })
    }
}

/// Runs the task in `slot` to its end; pends forever without one.
async fn run_opt(slot: &mut Option<Task>) {
    match slot {
        Some(t) => t.await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn polls_settle_from_the_first_delay_doubling_up_to_the_interval() {
        let interval = Duration::from_secs(5);
        let mut settle = Duration::from_millis(500);
        let steps: Vec<u128> = (0..6)
            .map(|_| next_delay(&mut settle, interval).as_millis())
            .collect();
        assert_eq!(steps, [500, 1000, 2000, 4000, 5000, 5000]);
        let mut off = Duration::ZERO;
        assert_eq!(next_delay(&mut off, interval), interval);
        // A settle delay above the interval is the interval.
        let mut long = Duration::from_secs(9);
        assert_eq!(next_delay(&mut long, interval), interval);
    }
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A Consul stand-in on loopback answering every path; the leader is
    /// `""` (none) until `leader` is set.
    async fn consul(leader: Arc<AtomicBool>) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let leader = leader.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut byte = [0u8; 1];
                    loop {
                        buf.clear();
                        while !buf.ends_with(b"\r\n\r\n") {
                            if s.read(&mut byte).await.unwrap_or(0) == 0 {
                                return;
                            }
                            buf.push(byte[0]);
                        }
                        let head = String::from_utf8_lossy(&buf);
                        let body = if head.starts_with("GET /v1/status/leader ") {
                            if leader.load(Ordering::SeqCst) {
                                "\"10.0.0.1:8300\""
                            } else {
                                "\"\""
                            }
                        } else if head.starts_with("GET /v1/agent/self ") {
                            r#"{"Config":{"Datacenter":"dc1","NodeName":"n","Server":true,"Version":"1.20.1"},"Member":null}"#
                        } else if head.starts_with("GET /v1/operator/autopilot/health ") {
                            r#"{"Healthy":true,"FailureTolerance":0,"Servers":[]}"#
                        } else {
                            "[]"
                        };
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    fn observe(addr: SocketAddr, cancel: &CancellationToken) -> ObserverHandle {
        let target = AgentTarget {
            product: Product::Consul,
            server: true,
            client: false,
            http_addr: addr,
            api_tls: None,
        };
        let config = ObserverConfig {
            // No test waits out the interval: only kicks poll again.
            interval: Duration::from_secs(3600),
            request_timeout: Duration::from_secs(5),
            settle_first: Duration::ZERO,
        };
        let observers = Observers::start(
            &AgentClient::plain().unwrap(),
            &[target],
            config,
            &TaskTracker::new(),
            cancel,
        );
        observers.get(Product::Consul).unwrap().clone()
    }

    #[tokio::test]
    async fn a_probe_answers_with_a_reading_taken_after_it_was_asked() {
        let leader = Arc::new(AtomicBool::new(false));
        let cancel = CancellationToken::new();
        let h = observe(consul(leader.clone()).await, &cancel);
        assert!(!h.probe().await, "no leader yet");
        leader.store(true, Ordering::SeqCst);
        // The verdict of the earlier reading ("not ready") never answers
        // a later probe.
        assert!(h.probe().await);
        cancel.cancel();
    }

    #[tokio::test]
    async fn a_refresh_is_answered_by_a_report_stamped_with_it() {
        let leader = Arc::new(AtomicBool::new(true));
        let cancel = CancellationToken::new();
        let h = observe(consul(leader).await, &cancel);
        let n = h.refresh();
        let mut rx = h.subscribe();
        let o = rx
            .wait_for(|o| o.report.as_ref().is_some_and(|(s, _)| s.refreshes >= n))
            .await
            .unwrap()
            .clone();
        let (stamp, report) = o.report.unwrap();
        assert_eq!(stamp.refreshes, n);
        let c = report.consul.unwrap();
        assert_eq!(c.leader.as_deref(), Some("10.0.0.1:8300"));
        assert_eq!(c.version.as_deref(), Some("1.20.1"));
        assert_eq!(c.failure_tolerance, Some(0));
        // A full poll's verdict is a readiness reading too.
        assert!(o.verdict.is_some_and(|v| v.ready));
        cancel.cancel();
    }

    #[tokio::test]
    async fn every_handle_dropped_ends_the_observer() {
        let target = AgentTarget {
            product: Product::Nomad,
            server: false,
            client: true,
            http_addr: "127.0.0.1:9".parse().unwrap(),
            api_tls: None,
        };
        let (observer, handle) = Observer::new(
            &AgentClient::plain().unwrap(),
            target,
            ObserverConfig::default(),
        );
        let task = tokio::spawn(observer.run(CancellationToken::new()));
        drop(handle);
        task.await.unwrap();
    }
}

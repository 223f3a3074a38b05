//! Pluggable readiness checks of an agent.
//!
//! Readiness of an agent is sd_notify `READY=1` from it or a passing check.
//! The default check, [`ObservedCheck`], asks the agent's observer
//! (`agent::observe`) for a readiness probe and reads its verdict: this
//! module sends no request of its own.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::agent::{ObserverHandle, Observers};
use crate::plan::AgentPlan;

/// Timeout of one check: a hung agent must never hang the actor.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// A boxed future, for object-safe async traits.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A readiness check; `true` means ready.
pub trait ReadyCheck: Send + Sync {
    /// Runs the check once (the caller bounds it with [`CHECK_TIMEOUT`]).
    fn check(&self) -> BoxFuture<'_, bool>;
}

/// The readiness the agent's observer finds: Consul has a raft leader
/// (`/v1/status/leader`), Nomad's own health passes (`/v1/agent/health`).
/// Each check asks for a probe that starts after the call, so a verdict
/// from before (an earlier run of the agent) never counts.
#[derive(Debug, Clone)]
pub struct ObservedCheck {
    observer: ObserverHandle,
}

impl ObservedCheck {
    /// The check of the agent `observer` watches.
    pub fn new(observer: ObserverHandle) -> Self {
        Self { observer }
    }

    /// The check of `agent` among `observers`; `None` (readiness by
    /// sd_notify only) when no observer watches it.
    pub fn for_agent(observers: &Observers, agent: &AgentPlan) -> Option<Self> {
        observers.get(agent.product).cloned().map(Self::new)
    }
}

impl ReadyCheck for ObservedCheck {
    fn check(&self) -> BoxFuture<'_, bool> {
        Box::pin(self.observer.probe())
    }
}

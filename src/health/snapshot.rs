//! The [`HealthSnapshot`]: everything the endpoint answers from. Built by the
//! [`super::Checker`] from the agents' observations (whose report types
//! come from `agent`); its free text is redacted on the way in, so no
//! handler can show a secret.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::checks::{self, Check};
use super::handlers;
use super::metrics::Metrics;
use super::redact::redact;
pub use crate::agent::{AgentReport, AgentTarget, ConsulReport, NomadReport};
use crate::plan::{Plan, Product};
use crate::supervise::SupervisorStatus;

/// The node, from the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeInfo {
    /// Node name.
    pub node_name: String,
    /// Region.
    pub region: String,
    /// Datacenter.
    pub datacenter: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Agents the plan requires, in start order.
    pub agents: Vec<AgentTarget>,
}

impl NodeInfo {
    /// The node info of a plan.
    pub fn from_plan(plan: &Plan) -> Self {
        Self {
            node_name: plan.node_name.clone(),
            region: plan.region.clone(),
            datacenter: plan.datacenter.clone(),
            roles: plan.roles.clone(),
            agents: plan
                .agents
                .iter()
                .map(|a| AgentTarget {
                    product: a.product,
                    server: a.server,
                    client: a.client,
                    http_addr: a.http_addr,
                    api_tls: a.api_tls.clone(),
                })
                .collect(),
        }
    }
}

/// What depends only on the snapshot's content: computed once per change
/// instead of once per request.
#[derive(Debug, Clone)]
pub(crate) struct Derived {
    /// Every check.
    pub checks: Vec<Check>,
    /// Whether every check passes.
    pub healthy: bool,
    /// `/ready` bodies: `[text, text verbose, json, json verbose]`.
    pub ready: [Bytes; 4],
}

/// Answers that also depend on the clock (uptimes), by kind.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Timed {
    /// `/v1/status`.
    Status = 0,
    /// `/metrics`.
    Metrics = 1,
    /// `/`.
    Page = 2,
}

/// Rendered clock-dependent answers, each with the second it was made in.
type TimedCache = [Option<(u64, Bytes)>; 3];

/// Everything the endpoint answers from.
#[derive(Debug, Clone)]
pub struct HealthSnapshot {
    /// The node, from the plan.
    node: NodeInfo,
    /// The supervisor's status, redacted.
    supervisor: SupervisorStatus,
    /// Last reports, one per agent queried so far.
    pub reports: Vec<AgentReport>,
    /// Live outcome counters.
    pub metrics: Arc<Metrics>,
    /// Checks and `/ready` bodies of this content.
    derived: Arc<Derived>,
    /// Clock-dependent answers of this content, re-rendered at most once a
    /// second (so counters and uptimes may lag by up to a second).
    timed: Arc<Mutex<TimedCache>>,
}

impl HealthSnapshot {
    /// A snapshot with no agent status or report yet.
    pub fn new(node: NodeInfo, metrics: Arc<Metrics>) -> Self {
        let mut s = Self {
            node,
            supervisor: SupervisorStatus {
                agents: Vec::new(),
                config_hash: String::new(),
                reload_error: None,
                stopping: false,
                node: None,
            },
            reports: Vec::new(),
            metrics,
            derived: Arc::new(Derived {
                checks: Vec::new(),
                healthy: false,
                ready: Default::default(),
            }),
            timed: Arc::default(),
        };
        s.refresh();
        s
    }

    /// The node, from the plan.
    pub fn node(&self) -> &NodeInfo {
        &self.node
    }

    /// Recomputes what derives from the content; called by every mutator.
    fn refresh(&mut self) {
        let checks = checks::evaluate(self);
        let healthy = checks::is_healthy(&checks);
        let ready = [
            handlers::render_ready(&checks, false, false),
            handlers::render_ready(&checks, true, false),
            handlers::render_ready(&checks, false, true),
            handlers::render_ready(&checks, true, true),
        ];
        self.derived = Arc::new(Derived {
            checks,
            healthy,
            ready,
        });
        self.timed = Arc::default();
    }

    pub(crate) fn derived(&self) -> &Derived {
        &self.derived
    }

    /// The answer of `kind` rendered in the current second, or `render`'s.
    pub(crate) fn timed(
        &self,
        kind: Timed,
        now: SystemTime,
        render: impl FnOnce() -> Bytes,
    ) -> Bytes {
        let sec = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut cache = self.timed.lock().unwrap_or_else(|p| p.into_inner());
        let slot = &mut cache[kind as usize];
        if let Some((at, body)) = slot {
            if *at == sec {
                return body.clone();
            }
        }
        let body = render();
        *slot = Some((sec, body.clone()));
        body
    }

    /// The supervisor's status (already redacted).
    pub fn supervisor(&self) -> &SupervisorStatus {
        &self.supervisor
    }

    /// Replaces the supervisor status, redacting every free-text field.
    pub fn set_supervisor(&mut self, mut status: SupervisorStatus) {
        status.reload_error = status.reload_error.map(|s| redact(&s));
        for a in &mut status.agents {
            a.reason = a.reason.as_deref().map(redact);
            for l in &mut a.last_lines {
                *l = redact(l);
            }
        }
        // A reload may have renamed the node or moved it (datacenter):
        // what the endpoint shows follows the plan in force.
        if let Some(id) = &status.node {
            self.node.node_name.clone_from(&id.node_name);
            self.node.region.clone_from(&id.region);
            self.node.datacenter.clone_from(&id.datacenter);
            self.node.roles.clone_from(&id.roles);
        }
        self.supervisor = status;
        self.refresh();
    }

    /// Replaces the report of one agent, redacting its error texts.
    pub fn set_report(&mut self, mut report: AgentReport) {
        if let Some(c) = &mut report.consul {
            c.leader_error = c.leader_error.as_deref().map(redact);
            c.errors.iter_mut().for_each(|e| *e = redact(e));
        }
        if let Some(n) = &mut report.nomad {
            n.health_error = n.health_error.as_deref().map(redact);
            n.errors.iter_mut().for_each(|e| *e = redact(e));
        }
        match self
            .reports
            .iter_mut()
            .find(|r| r.product == report.product)
        {
            Some(r) => *r = report,
            None => self.reports.push(report),
        }
        self.refresh();
    }

    /// The last report of an agent.
    pub fn report(&self, product: Product) -> Option<&AgentReport> {
        self.reports.iter().find(|r| r.product == product)
    }
}

//! The [`HealthSnapshot`]: everything the endpoint answers from. Built by the
//! [`super::Checker`] from the agents' observations (whose report types
//! come from `agent`); its free text is redacted on the way in, so no
//! handler can show a secret.
//!
//! It is data: it keeps its readiness checks up to date with its content,
//! and renders nothing. Answers are the handlers' work, and their cache is
//! the server's ([`super::handlers::cache`]).

use std::sync::Arc;

use super::checks::{self, Check};
use super::metrics::Metrics;
use super::redact::redact;
use super::security::SecurityStatus;
pub use crate::agent::{AgentReport, AgentTarget, ConsulReport, NomadReport};
use crate::peers::DiscoveryReport;
use crate::plan::Plan;
use crate::supervise::SupervisorStatus;
use crate::vocab::Product;

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

/// Discovery as health shows it: the latest report and, while `run` waits
/// for it before starting the agents, what it waits for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DiscoveryView {
    /// The latest report (`catalog::discovery` publishes it).
    pub report: DiscoveryReport,
    /// What the role cannot start without and discovery has not found yet
    /// (`catalog::discovery::missing`); empty once the agents may start.
    pub waiting_for: Vec<String>,
}

/// What depends only on the snapshot's content, computed once per change.
#[derive(Debug, Clone)]
struct Derived {
    /// Every check.
    checks: Vec<Check>,
    /// Whether every check passes.
    healthy: bool,
}

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
    /// Discovery, once `run` started it (redacted).
    discovery: Option<DiscoveryView>,
    /// The node's security, once `run` published it.
    security: Option<SecurityStatus>,
    /// The checks of this content.
    derived: Arc<Derived>,
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
            discovery: None,
            security: None,
            derived: Arc::new(Derived {
                checks: Vec::new(),
                healthy: false,
            }),
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
        self.derived = Arc::new(Derived { checks, healthy });
    }

    /// Every readiness check of this content, in a stable order.
    pub fn checks(&self) -> &[Check] {
        &self.derived.checks
    }

    /// Whether every check passes (what `/ready` answers).
    pub fn is_healthy(&self) -> bool {
        self.derived.healthy
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

    /// Replaces discovery's view, redacting its free text (warnings and
    /// problems quote what peers and resolvers sent).
    pub fn set_discovery(&mut self, mut view: DiscoveryView) {
        let r = &mut view.report;
        for t in r
            .problems
            .iter_mut()
            .chain(r.warnings.iter_mut())
            .chain(view.waiting_for.iter_mut())
        {
            *t = redact(t);
        }
        self.discovery = Some(view);
        self.refresh();
    }

    /// Replaces the node's security, redacting the renewal error.
    pub fn set_security(&mut self, mut security: SecurityStatus) {
        let e = &mut security.renewals.last_error;
        *e = e.as_deref().map(redact);
        self.security = Some(security);
        self.refresh();
    }

    /// The node's security, once set.
    pub fn security(&self) -> Option<&SecurityStatus> {
        self.security.as_ref()
    }

    /// Discovery's view, once set.
    pub fn discovery(&self) -> Option<&DiscoveryView> {
        self.discovery.as_ref()
    }

    /// The last report of an agent.
    pub fn report(&self, product: Product) -> Option<&AgentReport> {
        self.reports.iter().find(|r| r.product == product)
    }
}

//! Readiness checks: a pure function of a [`HealthSnapshot`]. The node is
//! ready when the supervisor is not stopping and every agent the plan
//! requires is running, ready, and passing its own check:
//!
//! * Consul: `/v1/status/leader` names a leader (a Consul agent without a
//!   leader cannot serve catalog reads or writes).
//! * Nomad: `/v1/agent/health` is ok for each half (server, client) present,
//!   the check the Nomad docs give for load balancers.
//!
//! With discovery running, a `discovery` check fails while the node waits
//! for what its role needs and while discovery reports problems.

use serde::{Deserialize, Serialize};

use super::snapshot::{AgentTarget, DiscoveryView, HealthSnapshot};
use crate::supervise::{AgentState, AgentStatus};
use crate::vocab::Product;

/// One check and its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// `supervisor`, `consul.process`, `consul.ready`, `consul.api`, ...
    pub name: String,
    /// Whether it passes.
    pub ok: bool,
    /// One line saying why.
    pub reason: String,
}

impl Check {
    fn new(name: String, ok: bool, reason: impl Into<String>) -> Self {
        Self {
            name,
            ok,
            reason: reason.into(),
        }
    }
}

/// Whether every check passes.
pub fn is_healthy(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.ok)
}

/// A state as a lowercase word.
pub fn state_name(s: AgentState) -> &'static str {
    match s {
        AgentState::Stopped => "stopped",
        AgentState::Starting => "starting",
        AgentState::Running => "running",
        AgentState::Stopping => "stopping",
        AgentState::Backoff => "backoff",
        AgentState::Failed => "failed",
    }
}

/// All checks of a snapshot, in a stable order.
pub fn evaluate(s: &HealthSnapshot) -> Vec<Check> {
    let mut out = Vec::with_capacity(1 + 3 * s.node().agents.len());
    let sup = s.supervisor();
    out.push(if sup.stopping {
        Check::new("supervisor".into(), false, "shutting down")
    } else {
        Check::new("supervisor".into(), true, "running")
    });
    if let Some(d) = s.discovery() {
        out.push(discovery_check(d));
    }
    if let Some(c) = s
        .security()
        .and_then(|sec| certificate_check(sec, std::time::SystemTime::now()))
    {
        out.push(c);
    }
    for target in &s.node().agents {
        let status = sup.agents.iter().find(|a| a.product == target.product);
        agent_checks(s, target, status, &mut out);
    }
    out
}

/// `certificate`: the node certificate, when the node has one; fails when
/// it expired or expires within a day (plaintext never fails a check: it
/// is shown, the operator chose it).
pub fn certificate_check(
    sec: &super::security::SecurityStatus,
    now: std::time::SystemTime,
) -> Option<Check> {
    let not_after = sec.not_after?;
    let name = "certificate".to_string();
    Some(match sec.expiry_problem(now) {
        Some(p) => Check::new(name, false, p),
        None => Check::new(
            name,
            true,
            format!(
                "valid until {} ({} days left)",
                super::security::rfc3339(not_after),
                sec.days_left(now).unwrap_or(0)
            ),
        ),
    })
}

/// `discovery`: fails while `run` waits for what the role needs, and while
/// discovery has problems (no healthy Consul server, disagreeing
/// announcements). Warnings never fail it.
fn discovery_check(d: &DiscoveryView) -> Check {
    let name = "discovery".to_string();
    if !d.waiting_for.is_empty() {
        return Check::new(
            name,
            false,
            format!("waiting for discovery: {}", d.waiting_for.join("; ")),
        );
    }
    if !d.report.problems.is_empty() {
        return Check::new(
            name,
            false,
            format!("degraded: {}", d.report.problems.join("; ")),
        );
    }
    let n = d.report.records.len();
    Check::new(
        name,
        true,
        format!("{n} peer{} known", if n == 1 { "" } else { "s" }),
    )
}

fn agent_checks(
    s: &HealthSnapshot,
    target: &AgentTarget,
    status: Option<&AgentStatus>,
    out: &mut Vec<Check>,
) {
    let p = target.product;
    let name = |what: &str| format!("{p}.{what}");
    let Some(st) = status else {
        out.push(Check::new(name("process"), false, "not started yet"));
        out.push(Check::new(name("ready"), false, "not started yet"));
        out.push(Check::new(name("api"), false, "not started yet"));
        return;
    };
    let running = st.state == AgentState::Running;
    let mut reason = match (st.state, st.pid) {
        (AgentState::Running, Some(pid)) => format!("running, pid {pid}"),
        (state, _) => state_name(state).to_string(),
    };
    if !running {
        if let Some(r) = &st.reason {
            reason = format!("{reason}: {r}");
        } else if let Some(e) = &st.last_exit {
            match (&e.signal, e.code) {
                (Some(sig), _) => reason = format!("{reason}: last exit by {sig}"),
                (None, Some(code)) => reason = format!("{reason}: last exit code {code}"),
                _ => {}
            }
        }
    }
    out.push(Check::new(name("process"), running, reason));
    out.push(if st.ready {
        Check::new(name("ready"), true, "ready")
    } else {
        Check::new(name("ready"), false, "not ready")
    });
    out.push(api_check(s, p, name("api")));
}

fn api_check(s: &HealthSnapshot, p: Product, name: String) -> Check {
    let Some(report) = s.report(p) else {
        return Check::new(name, false, "not checked yet");
    };
    match p {
        Product::Consul => match &report.consul {
            None => Check::new(name, false, "no answer recorded"),
            Some(c) => match (&c.leader, &c.leader_error) {
                (_, Some(e)) => Check::new(name, false, e.clone()),
                (None, None) => Check::new(name, false, "no raft leader"),
                (Some(l), None) => Check::new(name, true, format!("leader {l}")),
            },
        },
        Product::Nomad => match &report.nomad {
            None => Check::new(name, false, "no answer recorded"),
            Some(n) => {
                if let Some(e) = &n.health_error {
                    return Check::new(name, false, e.clone());
                }
                let halves = [("server", &n.health_server), ("client", &n.health_client)];
                if halves.iter().all(|(_, h)| h.is_none()) {
                    return Check::new(
                        name,
                        false,
                        "agent health reported neither server nor client",
                    );
                }
                let bad: Vec<String> = halves
                    .iter()
                    .filter_map(|(k, h)| {
                        h.as_ref()
                            .filter(|h| !h.ok)
                            .map(|h| format!("{k}: {}", h.message))
                    })
                    .collect();
                if bad.is_empty() {
                    Check::new(name, true, "agent health ok")
                } else {
                    Check::new(name, false, bad.join("; "))
                }
            }
        },
    }
}

//! The Consul choice for a Nomad without a local Consul: which Consul
//! server's HTTP API its `consul` block names. Candidates are the role
//! file's `consul_address`, the DNS `consul_servers` and the `consul_http`
//! of announcing Consul servers of this datacenter (then last run's
//! choice). Each is asked `GET /v1/status/leader` (2 s) every
//! [`INTERVAL`] and at once when the candidates change; the current one
//! is kept while it answers, else the first healthy one is taken (static,
//! DNS, mDNS order, then by address). With none healthy the report's
//! problems say why for each, and the last choice stays in the plan. Sends only that request; joins nothing.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::agent::AgentClient;
use crate::agent::consul::ConsulClient;
use crate::peers::{PeerKind, Source};

use super::merge::Identity;
use super::{Shared, State};

/// How often the candidates are asked once one is chosen.
pub const INTERVAL: Duration = Duration::from_secs(5);
/// How often they are asked while none is chosen or the chosen one is
/// down: a node waits for this choice before it starts Nomad, and a server
/// that was not up at the first probe is usually up a moment later.
pub const INTERVAL_UNCHOSEN: Duration = Duration::from_millis(500);
/// The timeout of one probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Most candidates probed (the first ones in order).
pub const MAX_CANDIDATES: usize = 16;

/// What one candidate answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// It answered and its cluster has a leader.
    Leader,
    /// It answered; its cluster has no leader (yet).
    NoLeader,
    /// It did not answer (why).
    Down(String),
}

/// The candidates of `state`, in the order of preference: source (static,
/// DNS, mDNS, seeds), then address; without repeats. mDNS ones only of
/// this node's datacenter and region.
pub(crate) fn candidates(state: &State) -> Vec<String> {
    let learned = state.report_learned();
    let ident = Identity::of(&state.node, &learned);
    let mut by_source: Vec<(u8, String)> = Vec::new();
    let mut add = |rank: u8, f: &super::Found| {
        let Some(c) = &f.consul_http else { return };
        let r = &f.record;
        if r.kind != PeerKind::ConsulServer {
            return;
        }
        if r.datacenter
            .as_deref()
            .is_some_and(|d| d != ident.datacenter)
            || r.region.as_deref().is_some_and(|g| g != ident.region)
        {
            return;
        }
        by_source.push((rank, c.clone()));
    };
    for f in &state.statics {
        add(0, f);
    }
    for f in state.dns.values().flatten() {
        add(1, f);
    }
    for f in &state.mdns_found() {
        add(2, f);
    }
    for f in &state.cached {
        let rank = match f.record.source {
            Source::Static => 0,
            Source::Dns => 1,
            _ => 2,
        };
        add(rank + 3, f);
    }
    by_source.sort();
    let mut out: Vec<String> = Vec::new();
    for (_, c) in by_source {
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out.truncate(MAX_CANDIDATES);
    out
}

/// Asks every candidate at once, each within `timeout`; results in the
/// candidates' order.
pub async fn probe_all(
    client: &AgentClient,
    cands: &[String],
    timeout: Duration,
) -> Vec<(String, Health)> {
    let probes = cands.iter().map(|c| async move {
        // A secured node asks Consul servers over HTTPS with its client
        // certificate and token (Consul's `ports.https`, `verify_incoming`).
        let base = if c.starts_with("http://") || c.starts_with("https://") {
            c.clone()
        } else if client.has_remote_consul_tls() {
            format!("https://{c}")
        } else {
            format!("http://{c}")
        };
        let consul = ConsulClient::new(client.endpoint_at(base, timeout));
        let h = match consul.leader().await {
            Ok(Some(_)) => Health::Leader,
            Ok(None) => Health::NoLeader,
            Err(e) => Health::Down(e.one_line()),
        };
        (c.clone(), h)
    });
    futures_util::future::join_all(probes).await
}

/// The choice: `current` while it answers, else the first candidate whose
/// cluster has a leader, else the first that answers; none answering (of
/// some candidates): no choice and the problem naming each and why.
pub fn choose(
    current: Option<&str>,
    results: &[(String, Health)],
    datacenter: &str,
) -> (Option<String>, Option<String>) {
    let answers = |h: &Health| !matches!(h, Health::Down(_));
    if let Some(cur) = current {
        if results.iter().any(|(c, h)| c == cur && answers(h)) {
            return (Some(cur.to_string()), None);
        }
    }
    if let Some((c, _)) = results.iter().find(|(_, h)| *h == Health::Leader) {
        return (Some(c.clone()), None);
    }
    if let Some((c, _)) = results.iter().find(|(_, h)| answers(h)) {
        return (Some(c.clone()), None);
    }
    if results.is_empty() {
        // Nothing to ask. Before anything was found this is the wait the
        // start-up reports as missing; after a choice it means the chosen
        // server left (its goodbye removed it) and nobody else is known.
        return (
            None,
            current.map(|cur| {
                format!(
                    "no healthy Consul server of {datacenter}: {cur} left and no other is known"
                )
            }),
        );
    }
    let why: Vec<String> = results
        .iter()
        .map(|(c, h)| match h {
            Health::Down(w) => format!("{c}: {w}"),
            _ => format!("{c}: answers"),
        })
        .collect();
    (
        None,
        Some(format!(
            "no healthy Consul server of {datacenter}: {}",
            why.join("; ")
        )),
    )
}

/// Keeps the choice while the node needs one: probes every [`INTERVAL`]
/// and at once when the candidates change. Ends on `cancel`.
pub(crate) async fn run(shared: Arc<Shared>, agents: AgentClient, cancel: CancellationToken) {
    let mut reports = shared.tx.subscribe();
    let mut nodes = shared.node_tx.subscribe();
    // The last server chosen, kept after it goes, so that its loss stays
    // a problem until another one is chosen.
    let mut remembered: Option<String> = None;
    loop {
        let (needed, cands, current, dc) = {
            let s = shared.lock();
            let learned = s.report_learned();
            let dc = Identity::of(&s.node, &learned).datacenter;
            (
                s.node.needs_consul_choice(),
                candidates(&s),
                s.choice.clone(),
                dc,
            )
        };
        if !needed {
            remembered = None;
            shared.update(|s| {
                s.choice = None;
                s.choice_problem = None;
            });
            // Nothing to do until the role changes.
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = nodes.changed() => if r.is_err() { return },
            }
            continue;
        }
        let last = {
            let results = tokio::select! {
                _ = cancel.cancelled() => return,
                r = probe_all(&agents, &cands, PROBE_TIMEOUT) => r,
            };
            let (pick, problem) = choose(current.or(remembered.clone()).as_deref(), &results, &dc);
            if pick.is_some() {
                remembered.clone_from(&pick);
            }
            // With none healthy the last choice stays in the plan (the
            // problem says it is down): rendering Nomad without a Consul
            // address would restart it for nothing, and that server is the
            // likeliest to come back.
            let pick = pick.or_else(|| remembered.clone());
            let down = results
                .iter()
                .filter(|(_, h)| matches!(h, Health::Down(_)))
                .count();
            shared.update(|s| {
                if pick != s.choice {
                    tracing::info!(
                        target: "hashi_supervisor::discovery",
                        from = s.choice.as_deref().unwrap_or("none"),
                        to = pick.as_deref().unwrap_or("none"),
                        "consul server for nomad changed"
                    );
                }
                for _ in 0..down {
                    s.count_error("consul");
                }
                s.choice = pick;
                s.choice_problem = problem;
            });
            cands
        };
        // Wait for the interval, or a change of candidates, or the role.
        let every = {
            let s = shared.lock();
            if s.choice.is_some() && s.choice_problem.is_none() {
                INTERVAL
            } else {
                INTERVAL_UNCHOSEN
            }
        };
        let deadline = tokio::time::Instant::now() + every;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep_until(deadline) => break,
                r = nodes.changed() => {
                    if r.is_err() { return; }
                    break;
                }
                r = reports.changed() => {
                    if r.is_err() { return; }
                    let now = candidates(&shared.lock());
                    if last != now {
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(c: &str, h: Health) -> (String, Health) {
        (c.to_string(), h)
    }

    #[test]
    fn the_current_one_is_kept_while_it_answers() {
        let res = [
            r("10.0.1.11:8500", Health::Leader),
            r("10.0.1.12:8500", Health::NoLeader),
        ];
        assert_eq!(
            choose(Some("10.0.1.12:8500"), &res, "ams2"),
            (Some("10.0.1.12:8500".into()), None)
        );
    }

    #[test]
    fn else_the_first_with_a_leader_then_the_first_that_answers() {
        let res = [
            r("10.0.1.11:8500", Health::Down("refused".into())),
            r("10.0.1.12:8500", Health::NoLeader),
            r("10.0.1.13:8500", Health::Leader),
        ];
        assert_eq!(
            choose(Some("10.0.1.11:8500"), &res, "ams2").0.as_deref(),
            Some("10.0.1.13:8500")
        );
        let forming = [
            r("10.0.1.11:8500", Health::Down("refused".into())),
            r("10.0.1.12:8500", Health::NoLeader),
        ];
        assert_eq!(
            choose(None, &forming, "ams2").0.as_deref(),
            Some("10.0.1.12:8500")
        );
    }

    #[test]
    fn none_healthy_names_each_and_why() {
        let res = [
            r("10.0.1.11:8500", Health::Down("connection refused".into())),
            r("10.0.1.12:8500", Health::Down("timed out after 2s".into())),
        ];
        let (pick, problem) = choose(Some("10.0.1.11:8500"), &res, "ams2");
        assert_eq!(pick, None);
        assert_eq!(
            problem.as_deref(),
            Some(
                "no healthy Consul server of ams2: 10.0.1.11:8500: connection refused; \
                 10.0.1.12:8500: timed out after 2s"
            )
        );
        assert_eq!(choose(None, &[], "ams2"), (None, None));
    }

    #[test]
    fn a_chosen_server_that_left_with_no_other_known_is_a_problem() {
        assert_eq!(
            choose(Some("10.0.1.11:8500"), &[], "ams2"),
            (
                None,
                Some(
                    "no healthy Consul server of ams2: 10.0.1.11:8500 left and no other is known"
                        .into()
                )
            )
        );
    }
}

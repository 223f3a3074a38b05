//! A stop that is a restart: the restart marker ([`RESTART_MARKER`]) the
//! package writes before restarting the supervisor, and the signal that
//! stops an agent while keeping its workloads ([`keep_workloads_signal`]),
//! used for that stop, for a config restart and for replacing a leftover.
//!
//! This module decides; it must not signal anything itself.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::plan::{AgentPlan, Plan};
use crate::vocab::Product;

/// Written (by root) just before the supervisor is restarted, e.g. by the
/// package's maintainer scripts before `try-restart`: the coming stop is a
/// restart, so Nomad stops with [`crate::plan::NOMAD_KEEP_WORKLOADS_SIGNAL`]
/// (no leave, no drain) instead of its stop signal. Consumed by that stop;
/// one found at start is stale and removed.
pub const RESTART_MARKER: &str = "/run/hashi-supervisor/restart";
/// Environment variable naming another restart marker (tests).
pub const RESTART_MARKER_ENV: &str = "HASHI_SUPERVISOR_RESTART_MARKER";
/// A marker older than this is not the current restart's (a try-restart of
/// a service that was not running leaves one behind).
const RESTART_MARKER_MAX_AGE: Duration = Duration::from_secs(600);

/// The restart marker path: [`RESTART_MARKER_ENV`] when set, else
/// [`RESTART_MARKER`].
pub fn restart_marker_path() -> PathBuf {
    std::env::var_os(RESTART_MARKER_ENV)
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from(RESTART_MARKER), PathBuf::from)
}

/// Whether `marker` asks for a restart now: it exists, is a regular file
/// owned by our user, was written after `since` and not long ago. It is
/// removed either way.
pub(super) fn take_restart_marker(marker: &Path, since: std::time::SystemTime) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(marker) else {
        return false;
    };
    let _ = std::fs::remove_file(marker);
    let Ok(written) = meta.modified() else {
        return false;
    };
    let fresh = written >= since
        && written
            .elapsed()
            .map_or(true, |age| age <= RESTART_MARKER_MAX_AGE);
    let ours = meta.uid() == nix::unistd::Uid::effective().as_raw();
    if !(meta.is_file() && ours && fresh) {
        tracing::warn!(path = %marker.display(), "ignoring a stale or foreign restart marker");
        return false;
    }
    true
}

/// The signal that stops `agent` and keeps its workloads: for a Nomad
/// whose rendered config does not leave on SIGTERM, SIGTERM; else the
/// agent's stop signal.
pub(super) fn keep_workloads_signal(plan: &Plan, agent: &AgentPlan) -> Signal {
    match (&plan.render.nomad, agent.product) {
        (Some(n), Product::Nomad) if !n.leave_on_terminate => {
            crate::plan::NOMAD_KEEP_WORKLOADS_SIGNAL
        }
        _ => agent.stop_signal,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;

    fn plan_of(text: &str, roles: &[&str]) -> Plan {
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        let host = crate::role::StaticHost {
            hostname: Some("ams2-client-01".into()),
            interfaces: vec![("eth1".into(), std::net::Ipv4Addr::new(10, 0, 1, 21))],
            ..Default::default()
        };
        let role = crate::role::parse(
            Path::new("/r/node.toml"),
            &crate::role::with_plaintext(text),
            &roles,
            &host,
        )
        .unwrap();
        Plan::from_role(&role)
    }

    #[test]
    fn nomad_restarts_and_restart_stops_keep_workloads_with_sigterm() {
        let text = "schema = 1\n[discovery]\nnomad_retry_join = [\"10.0.1.11\"]\n";
        let plan = plan_of(text, &["consul-client", "nomad-client"]);
        let nomad = plan.agent(Product::Nomad).unwrap();
        let consul = plan.agent(Product::Consul).unwrap();
        // A real stop: SIGINT, which leaves and drains; a restart: SIGTERM.
        assert_eq!(nomad.stop_signal, Signal::SIGINT);
        assert_eq!(keep_workloads_signal(&plan, nomad), Signal::SIGTERM);
        assert!(!plan.render.nomad.as_ref().unwrap().leave_on_terminate);
        // Consul keeps its stop signal.
        assert_eq!(keep_workloads_signal(&plan, consul), consul.stop_signal);
    }

    #[test]
    fn only_a_fresh_marker_of_ours_means_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("restart");
        let before = std::time::SystemTime::now() - Duration::from_secs(5);
        assert!(!take_restart_marker(&m, before), "no marker");
        std::fs::write(&m, "").unwrap();
        assert!(take_restart_marker(&m, before));
        assert!(!m.exists(), "consumed");
        std::fs::write(&m, "").unwrap();
        let later = std::time::SystemTime::now() + Duration::from_secs(60);
        assert!(!take_restart_marker(&m, later), "written before the run");
        assert!(!m.exists(), "a stale one is removed too");
        std::fs::create_dir(&m).unwrap();
        assert!(!take_restart_marker(&m, before), "not a file");
    }
}

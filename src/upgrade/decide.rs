//! The gate's verdicts, pure: what autopilot's health answer, the wanted
//! version and the node's name say about restarting now. No I/O; the
//! [`super::gate`] fetches, these decide.

use crate::agent::consul::{AutopilotHealth, AutopilotServer};

/// What the gate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Restart now.
    Go {
        /// The cluster has this one server only: it goes at once, and is
        /// unavailable while it restarts.
        single: bool,
        /// This server leads: it hands leadership over first.
        leader: bool,
        /// The cluster's failure tolerance now (what must come back).
        tolerance: u32,
    },
    /// Not now, because of this (in words for the status).
    Wait(String),
}

/// A server's version as a semver (build metadata such as `+ent` and a
/// leading `v` ignored); `None` when it is not one.
pub fn server_version(s: &AutopilotServer) -> Option<semver::Version> {
    let t = s.version.trim().trim_start_matches('v');
    let mut v = semver::Version::parse(t).ok()?;
    v.build = semver::BuildMetadata::EMPTY;
    Some(v)
}

/// Whether `s` is the server named `names` (Consul: the node name; Nomad:
/// `<node>.<region>`).
fn is_me(s: &AutopilotServer, names: &[String]) -> bool {
    names.contains(&s.name)
}

/// Servers of `h` (other than `names`) not yet on `wanted` or newer.
fn behind<'a>(h: &'a AutopilotHealth, names: &[String], wanted: &semver::Version) -> Vec<&'a str> {
    h.servers
        .iter()
        .filter(|s| !is_me(s, names))
        .filter(|s| server_version(s).is_none_or(|v| v < *wanted))
        .map(|s| s.name.as_str())
        .collect()
}

/// May the server `names` of `cluster` restart onto `wanted` now?
///
/// HashiCorp's upgrade guides: one server at a time, checking autopilot
/// health between, the leader last. A cluster of one server cannot keep
/// quorum through any restart: it goes at once.
pub fn server_verdict(
    names: &[String],
    wanted: &semver::Version,
    h: &AutopilotHealth,
    cluster: &str,
) -> Verdict {
    let Some(me) = h.servers.iter().find(|s| is_me(s, names)) else {
        return Verdict::Wait(format!(
            "this server ({}) in the autopilot health of {cluster}",
            names.join(" or ")
        ));
    };
    if h.servers.len() == 1 {
        return Verdict::Go {
            single: true,
            leader: me.leader,
            tolerance: h.failure_tolerance,
        };
    }
    if me.leader {
        let late = behind(h, names, wanted);
        if !late.is_empty() {
            return Verdict::Wait(format!(
                "servers of {cluster} not yet on {wanted}: {} (the leader goes last)",
                late.join(", ")
            ));
        }
    }
    if h.failure_tolerance < 1 {
        return Verdict::Wait(format!(
            "autopilot failure tolerance of {cluster} {} < 1",
            h.failure_tolerance
        ));
    }
    Verdict::Go {
        single: false,
        leader: me.leader,
        tolerance: h.failure_tolerance,
    }
}

/// May a client of `cluster` restart onto `wanted` now: every server of
/// its cluster runs `wanted` or newer (servers first, as HashiCorp's
/// guides ask).
pub fn client_verdict(wanted: &semver::Version, h: &AutopilotHealth, cluster: &str) -> Verdict {
    if h.servers.is_empty() {
        return Verdict::Wait(format!("the servers of {cluster} (none listed)"));
    }
    let late = behind(h, &[], wanted);
    if late.is_empty() {
        Verdict::Go {
            single: false,
            leader: false,
            tolerance: h.failure_tolerance,
        }
    } else {
        Verdict::Wait(format!(
            "servers of {cluster} not yet on {wanted}: {}",
            late.join(", ")
        ))
    }
}

/// Client slots of a datacenter with `clients` clients: `max(1,
/// floor(share * clients))`.
pub fn client_slots(share: f64, clients: usize) -> usize {
    // Both bounded: share in (0, 1], clients a count of nodes.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let n = (share * clients as f64).floor() as usize;
    n.clamp(1, clients.max(1))
}

/// Whether the cluster's tolerance is back to `before` (or more) and
/// autopilot finds it healthy, after a restart. A single server: healthy.
pub fn is_settled(h: &AutopilotHealth, before: u32) -> bool {
    h.healthy && h.failure_tolerance >= before
}

/// The lock datacenter of a region: the lexicographically first of `dcs`,
/// else `own`.
pub fn lock_datacenter<'a>(dcs: impl IntoIterator<Item = &'a str>, own: &str) -> String {
    dcs.into_iter()
        .filter(|d| !d.is_empty())
        .min()
        .unwrap_or(own)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(name: &str, version: &str, leader: bool) -> AutopilotServer {
        AutopilotServer {
            id: name.into(),
            name: name.into(),
            address: "10.0.0.1:8300".into(),
            serf_status: "alive".into(),
            version: version.into(),
            leader,
            last_contact: None,
            healthy: true,
            voter: true,
        }
    }

    fn health(tolerance: u32, servers: Vec<AutopilotServer>) -> AutopilotHealth {
        AutopilotHealth {
            healthy: true,
            failure_tolerance: tolerance,
            servers,
        }
    }

    fn v(s: &str) -> semver::Version {
        s.parse().unwrap()
    }

    fn names(n: &str) -> Vec<String> {
        vec![n.to_string()]
    }

    fn three(leader: usize, versions: [&str; 3], tolerance: u32) -> AutopilotHealth {
        let n = ["a.eu", "b.eu", "c.eu"];
        health(
            tolerance,
            (0..3)
                .map(|i| server(n[i], versions[i], i == leader))
                .collect(),
        )
    }

    #[test]
    fn a_follower_goes_when_the_cluster_can_lose_one() {
        let h = three(0, ["1.0.0"; 3], 1);
        assert_eq!(
            server_verdict(&names("b.eu"), &v("1.1.0"), &h, "nomad/eu"),
            Verdict::Go {
                single: false,
                leader: false,
                tolerance: 1
            }
        );
    }

    #[test]
    fn no_failure_tolerance_means_wait_and_says_why() {
        let h = three(0, ["1.0.0"; 3], 0);
        assert_eq!(
            server_verdict(&names("b.eu"), &v("1.1.0"), &h, "nomad/eu"),
            Verdict::Wait("autopilot failure tolerance of nomad/eu 0 < 1".into())
        );
    }

    #[test]
    fn the_leader_waits_for_every_other_server_then_goes_last() {
        let h = three(0, ["1.0.0", "1.1.0", "1.0.0"], 1);
        assert_eq!(
            server_verdict(&names("a.eu"), &v("1.1.0"), &h, "nomad/eu"),
            Verdict::Wait(
                "servers of nomad/eu not yet on 1.1.0: c.eu (the leader goes last)".into()
            )
        );
        let h = three(0, ["1.0.0", "1.1.0", "1.1.0+ent"], 1);
        assert_eq!(
            server_verdict(&names("a.eu"), &v("1.1.0"), &h, "nomad/eu"),
            Verdict::Go {
                single: false,
                leader: true,
                tolerance: 1
            }
        );
    }

    #[test]
    fn a_single_server_goes_at_once_even_without_tolerance() {
        let h = health(0, vec![server("ams2-server-01", "1.0.0", true)]);
        assert_eq!(
            server_verdict(&names("ams2-server-01"), &v("1.1.0"), &h, "consul/ams2"),
            Verdict::Go {
                single: true,
                leader: true,
                tolerance: 0
            }
        );
    }

    #[test]
    fn a_server_missing_from_autopilot_waits() {
        let h = three(0, ["1.0.0"; 3], 1);
        assert!(matches!(
            server_verdict(&names("z.eu"), &v("1.1.0"), &h, "nomad/eu"),
            Verdict::Wait(w) if w.contains("z.eu")
        ));
    }

    #[test]
    fn clients_wait_for_every_server_and_unparsable_versions_count_as_behind() {
        let h = three(0, ["1.1.0", "1.2.0", "garbage"], 1);
        assert_eq!(
            client_verdict(&v("1.1.0"), &h, "nomad/eu"),
            Verdict::Wait("servers of nomad/eu not yet on 1.1.0: c.eu".into())
        );
        let h = three(0, ["1.1.0", "1.2.0", "1.1.0"], 1);
        assert!(matches!(
            client_verdict(&v("1.1.0"), &h, "nomad/eu"),
            Verdict::Go { .. }
        ));
        assert!(matches!(
            client_verdict(&v("1.1.0"), &health(0, vec![]), "nomad/eu"),
            Verdict::Wait(_)
        ));
    }

    #[test]
    fn client_slots_are_a_share_of_the_clients_at_least_one() {
        assert_eq!(client_slots(0.25, 0), 1);
        assert_eq!(client_slots(0.25, 1), 1);
        assert_eq!(client_slots(0.25, 7), 1);
        assert_eq!(client_slots(0.25, 8), 2);
        assert_eq!(client_slots(1.0, 5), 5);
        assert_eq!(client_slots(f64::MIN_POSITIVE, 1000), 1);
    }

    #[test]
    fn settled_means_healthy_with_the_tolerance_back() {
        let mut h = three(1, ["1.1.0"; 3], 1);
        assert!(is_settled(&h, 1));
        h.failure_tolerance = 0;
        assert!(!is_settled(&h, 1));
        h.failure_tolerance = 1;
        h.healthy = false;
        assert!(!is_settled(&h, 1));
    }

    #[test]
    fn the_lock_datacenter_is_the_first_by_name() {
        assert_eq!(lock_datacenter(["lon1", "ams2", ""], "x"), "ams2");
        assert_eq!(lock_datacenter([], "lon1"), "lon1");
    }
}

//! The node's identity: region, datacenter and node name (each by the
//! agents' own rules, the node name from the hostname when not set), and
//! the agents' log level.

use super::{Checked, Findings};
use crate::role::diag::Location;
use crate::role::host::Host;
use crate::role::names::{
    datacenter_problem as check_datacenter_name, node_name_problem as check_node_name,
    region_problem as check_region_name,
};
use crate::role::raw::{RawRole, SpStr};

/// Nomad's and Consul's default region / datacenter.
const DEFAULT_REGION: &str = "global";
const DEFAULT_DATACENTER: &str = "dc1";
/// Agents' default log level.
const DEFAULT_LOG_LEVEL: &str = "info";
/// Accepted log levels (both agents accept these, case-insensitively).
const LOG_LEVELS: [&str; 5] = ["trace", "debug", "info", "warn", "error"];

/// Who the node is.
pub(super) struct Identity {
    pub region: String,
    pub datacenter: String,
    pub node_name: String,
    pub log_level: String,
}

/// Region, datacenter, node name and log level, in that order.
pub(super) fn check(raw: &RawRole, host: &dyn Host) -> Checked<Identity> {
    let mut found = Findings::default();
    let region = name(&mut found, &raw.region, DEFAULT_REGION, check_region_name);
    let datacenter = name(
        &mut found,
        &raw.datacenter,
        DEFAULT_DATACENTER,
        check_datacenter_name,
    );
    let node_name = match &raw.node_name {
        Some(_) => name(&mut found, &raw.node_name, "", check_node_name),
        None => match host.hostname() {
            Some(h) => {
                if let Some(why) = check_node_name(&h) {
                    found.at(
                        Location::File,
                        format!(
                            "`node_name` is not set and the hostname is not a node name: {why}"
                        ),
                    );
                }
                h
            }
            None => {
                found.at(
                    Location::File,
                    "`node_name` is not set and the hostname cannot be read",
                );
                String::new()
            }
        },
    };
    let log_level = log_level(&mut found, &raw.log_level);
    let identity = Identity {
        region,
        datacenter,
        node_name,
        log_level,
    };
    (identity, found)
}

/// A region, datacenter or node name, checked by `check` (one of the
/// `check_*_name` functions).
fn name(
    found: &mut Findings,
    v: &Option<SpStr>,
    default: &str,
    check: fn(&str) -> Option<String>,
) -> String {
    let Some(s) = v else {
        return default.to_string();
    };
    if let Some(why) = check(s.get_ref()) {
        found.span(s, why);
    }
    s.get_ref().clone()
}

/// The log level, lower-cased.
fn log_level(found: &mut Findings, v: &Option<SpStr>) -> String {
    match v {
        None => DEFAULT_LOG_LEVEL.to_string(),
        Some(s) => {
            let l = s.get_ref().to_ascii_lowercase();
            if !LOG_LEVELS.contains(&l.as_str()) {
                found.span(
                    s,
                    format!(
                        "unknown log level `{}`, expected one of: {}",
                        s.get_ref(),
                        LOG_LEVELS.join(", ")
                    ),
                );
            }
            l
        }
    }
}

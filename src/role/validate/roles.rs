//! `roles` (or `--role`, which replaces the file's list) → [`RoleSet`]:
//! unknown, duplicate and conflicting roles.

use super::{Checked, Findings};
use crate::role::diag::{Location, did_you_mean};
use crate::role::raw::RawRole;
use crate::role::{ROLE_NAMES, RoleSet};

/// The role names asked for, each with where it was written, and where the
/// list as a whole is.
pub(super) struct Asked {
    pub names: Vec<(String, Location)>,
    pub list: Location,
}

/// The roles of the node.
pub(super) struct Roles {
    pub set: RoleSet,
    /// The names as given, known ones only, sorted.
    pub names: Vec<String>,
    /// Whether every name was known (checks of the combination are skipped
    /// otherwise, to avoid follow-on noise).
    pub all_known: bool,
}

/// The names asked for: `--role` when given, else the file's `roles`.
pub(super) fn asked(raw: &RawRole, roles_override: &[String], from_file: bool) -> Asked {
    if !roles_override.is_empty() {
        Asked {
            names: roles_override
                .iter()
                .map(|r| (r.clone(), Location::Flag("--role")))
                .collect(),
            list: Location::Flag("--role"),
        }
    } else if let Some(r) = &raw.roles {
        Asked {
            names: r
                .get_ref()
                .iter()
                .map(|s| (s.get_ref().clone(), Location::Span(s.span())))
                .collect(),
            list: Location::Span(r.span()),
        }
    } else if from_file {
        Asked {
            names: Vec::new(),
            list: Location::File,
        }
    } else {
        Asked {
            names: Vec::new(),
            list: Location::Flag("--role"),
        }
    }
}

/// Parses the names into a [`RoleSet`], reporting unknown, duplicate and
/// conflicting roles.
pub(super) fn check(asked: &Asked) -> Checked<Roles> {
    let mut found = Findings::default();
    let mut all_known = true;
    let mut set = RoleSet::default();
    let mut seen: Vec<String> = Vec::new();
    for (name, loc) in &asked.names {
        let n = name.trim();
        if seen.iter().any(|s| s == n) {
            found.at(loc.clone(), format!("role `{n}` is listed twice"));
            continue;
        }
        match n {
            "consul-server" => set.consul_server = true,
            "consul-client" => set.consul_client = true,
            "nomad-server" => set.nomad_server = true,
            "nomad-client" => set.nomad_client = true,
            "dev" => set.dev = true,
            _ => {
                let msg = match did_you_mean(n, ROLE_NAMES) {
                    Some(s) => format!("unknown role `{n}`, did you mean `{s}`?"),
                    None => format!(
                        "unknown role `{n}`, expected one of: {}",
                        ROLE_NAMES.join(", ")
                    ),
                };
                found.at(loc.clone(), msg);
                all_known = false;
                continue;
            }
        }
        seen.push(n.to_string());
    }
    if asked.names.is_empty() {
        found.at(
            asked.list.clone(),
            format!(
                "no roles: set `roles` to some of {} or pass --role",
                ROLE_NAMES.join(", ")
            ),
        );
    }
    if set.dev && seen.len() > 1 {
        found.at(
            asked.list.clone(),
            "`dev` runs every agent on its own and cannot be combined with other roles",
        );
    }
    if set.consul_server && set.consul_client {
        found.at(
            asked.list.clone(),
            "`consul-server` and `consul-client` cannot run on one node (a Consul server already serves local clients)",
        );
    }
    if set.dev {
        set.consul_server = true;
        set.consul_client = false;
        set.nomad_server = true;
        set.nomad_client = true;
    }
    seen.sort();
    let roles = Roles {
        set,
        names: seen,
        all_known,
    };
    (roles, found)
}

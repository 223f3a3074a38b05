//! Semantic checks: [`RawRole`] → [`NodeRole`]. Every problem is collected
//! (not just the first), each pointing at the text it is about.
//!
//! A family of small checks, one file per area of the role file. Each takes
//! what it reads and returns its value together with the problems it found
//! ([`Findings`]); [`validate`] runs them in a fixed order, then sorts the
//! problems by their place in the file. The sort is stable: problems about
//! one place, or about the file as a whole, keep the order the checks found
//! them in, so the order of the calls in [`validate`] is part of the output.
//!
//! * [`roles`]: `roles` or `--role` → [`super::RoleSet`];
//! * [`sizes`]: lengths of strings, sizes of lists, ranges of numbers;
//! * [`node`]: region, datacenter, node name, log level;
//! * [`addresses`]: `[addresses]` and `health.listen`;
//! * [`agents`]: `[consul]` and `[nomad]`, with [`tls`] (certificates and
//!   gossip keys), [`restart`] (the restart policy), [`users`] (the agents'
//!   Unix users) and [`extra`] (pass-through tables);
//! * [`release`]: `[release]`, trusted key files parsed as the verifier will;
//! * [`discovery`]: the `[discovery]` table, with [`cloud`] (the shape of
//!   cloud auto-join strings) and [`dns`] (`[discovery.dns]`);
//! * [`paths`]: the `[paths]` table;
//! * [`upgrade`]: the `[upgrade]` table;
//! * [`security`]: `[security]`, the join token, the node's material in
//!   `<config>/security/`, and secure by default.
//!
//! Checks read the machine only through [`Host`] and never write.

mod addresses;
mod agents;
mod cloud;
mod discovery;
mod dns;
mod extra;
mod node;
mod paths;
mod release;
mod restart;
mod roles;
mod security;
mod sizes;
mod tls;
mod upgrade;
mod users;

use std::path::{Path, PathBuf};

pub(crate) use cloud::redact as redact_cloud_auto_join;

use toml::Spanned;

use super::diag::{Location, Problem, did_you_mean};
use super::host::Host;
use super::raw::RawRole;
use super::{NodeRole, Overrides, RoleError, SCHEMA_VERSION};

/// What one check found: each problem with where it is, in the order found.
#[derive(Debug, Default)]
#[must_use = "a check's findings are problems to report"]
struct Findings(Vec<(Location, String)>);

impl Findings {
    /// A problem at `loc`.
    fn at(&mut self, loc: Location, message: impl Into<String>) {
        self.0.push((loc, message.into()));
    }

    /// A problem about the value `v`.
    fn span<T>(&mut self, v: &Spanned<T>, message: impl Into<String>) {
        self.at(Location::Span(v.span()), message);
    }

    /// Adds the problems of another check, after these.
    fn append(&mut self, other: Findings) {
        self.0.extend(other.0);
    }

    /// Adds the problems of a check that also computed a value, and returns
    /// the value.
    fn keep<T>(&mut self, (value, other): (T, Findings)) -> T {
        self.append(other);
        value
    }

    /// The problems rendered against `source`, sorted by place in the file
    /// (whole-file and flag problems first), ties in the order found.
    fn into_problems(self, path: &str, source: &str) -> Vec<Problem> {
        let mut problems: Vec<(usize, Problem)> = self
            .0
            .into_iter()
            .map(|(loc, message)| {
                let order = match &loc {
                    Location::Span(s) => s.start + 1,
                    Location::File | Location::Flag(_) => 0,
                };
                (order, Problem::new(path, source, &loc, message))
            })
            .collect();
        problems.sort_by_key(|(order, _)| *order);
        problems.into_iter().map(|(_, p)| p).collect()
    }
}

/// A check's value and its findings.
type Checked<T> = (T, Findings);

/// What a check may read besides the role file: where relative paths start,
/// and the machine.
#[derive(Clone, Copy)]
struct Context<'a> {
    base_dir: &'a Path,
    host: &'a dyn Host,
}

impl Context<'_> {
    /// A path of the role file, relative ones taken from its directory.
    fn resolve_path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }
}

/// Turns toml/serde's message into ours (adds "did you mean").
pub fn describe_toml_error(message: &str) -> String {
    let message = message.trim();
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some((key, tail)) = rest.split_once('`') {
            let expected: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
            return match did_you_mean(key, expected.iter().copied()) {
                Some(s) => format!("unknown key `{key}`, did you mean `{s}`?"),
                None if expected.is_empty() => format!("unknown key `{key}`"),
                None => format!(
                    "unknown key `{key}`, expected one of: {}",
                    expected.join(", ")
                ),
            };
        }
    }
    // serde names Rust types; the role file speaks TOML.
    let mut m = message.to_string();
    for (rust, toml_name) in [
        ("expected i64", "expected an integer"),
        ("expected u64", "expected a non-negative integer"),
        ("expected u32", "expected a non-negative integer"),
        ("expected a sequence", "expected an array"),
        ("expected a boolean", "expected `true` or `false`"),
    ] {
        m = m.replace(rust, toml_name);
    }
    m
}

/// `schema`: present and the one this supervisor reads.
fn check_schema(raw: &RawRole) -> Findings {
    let mut found = Findings::default();
    match &raw.schema {
        None => found.at(
            Location::File,
            format!("missing `schema = {SCHEMA_VERSION}` (the role file format version)"),
        ),
        Some(s) if *s.get_ref() != SCHEMA_VERSION => found.span(
            s,
            format!(
                "unsupported schema {}, this supervisor reads schema {SCHEMA_VERSION}",
                s.get_ref()
            ),
        ),
        Some(_) => {}
    }
    found
}

/// Validates a parsed role file. `path` is `None` when no file was read.
pub fn validate(
    path: Option<&Path>,
    source: &str,
    raw: RawRole,
    overrides: &Overrides,
    host: &dyn Host,
) -> Result<NodeRole, RoleError> {
    let roles_override = overrides.roles.as_slice();
    let base_dir = path
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let cx = Context {
        base_dir: &base_dir,
        host,
    };
    let mut found = Findings::default();
    if path.is_some() {
        found.append(check_schema(&raw));
    }
    let asked = roles::asked(&raw, roles_override, path.is_some());
    let roles = found.keep(roles::check(&asked));
    found.append(sizes::check_lengths(&raw));
    found.append(sizes::check_list_sizes(&raw));
    let node = found.keep(node::check(&raw, host));
    let (addresses, addresses_found) = addresses::check(&raw.addresses, roles.set, host);
    // Whether the private address is the node's own (else its problem is
    // reported, and discovery judges nothing by it).
    let private = addresses_found.0.is_empty().then_some(addresses.private);
    found.append(addresses_found);
    let consul = found.keep(agents::consul(cx, &raw.consul, roles.set));
    let has_public = raw.addresses.public.is_some();
    let nomad = found.keep(agents::nomad(cx, &raw.nomad, roles.set, has_public));
    let release = found.keep(release::check(cx, &raw.release));
    let discovery = found.keep(discovery::check(
        &raw.discovery,
        &roles,
        &asked.list,
        private,
        source,
    ));
    let health_listen = found.keep(addresses::health_listen(&raw.health, addresses.private));
    let paths = found.keep(paths::check(&raw.paths));
    let upgrade = found.keep(upgrade::check(&raw.upgrade));
    let security = found.keep(security::check(
        cx,
        &security::Inputs {
            raw: &raw.security,
            raw_consul: &raw.consul,
            raw_nomad: &raw.nomad,
            set: roles.set,
            roles_at: &asked.list,
            overrides,
            consul: &consul,
            nomad: &nomad,
            private: addresses.private,
            public: addresses.public,
            config_dir: &paths.config_dir,
        },
    ));
    found.append(users::check_exist(
        host,
        roles.set.is_consul(),
        (&consul.user, &raw.consul.user),
        "consul",
        &paths.state_dir,
    ));
    found.append(users::check_exist(
        host,
        roles.set.is_nomad(),
        (&nomad.user, &raw.nomad.user),
        "nomad",
        &paths.state_dir,
    ));

    if !found.0.is_empty() {
        let shown_path = path.map_or_else(|| "--role".to_string(), |p| p.display().to_string());
        return Err(RoleError::Invalid {
            path: path.map_or_else(|| PathBuf::from("--role"), Path::to_path_buf),
            problems: found.into_problems(&shown_path, source),
        });
    }
    Ok(NodeRole {
        source: path.map(Path::to_path_buf),
        role_names: roles.names,
        roles: roles.set,
        region: node.region,
        datacenter: node.datacenter,
        learnable: crate::role::Learnable {
            region: raw.region.is_none(),
            datacenter: raw.datacenter.is_none(),
        },
        node_name: node.node_name,
        log_level: node.log_level,
        addresses,
        consul,
        nomad,
        release,
        discovery,
        health_listen,
        security,
        config_dir: paths.config_dir,
        state_dir: paths.state_dir,
        upgrade,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_message_suggests_near_miss() {
        let m = describe_toml_error(
            "unknown field `datacentre`, expected one of `region`, `datacenter`",
        );
        assert_eq!(m, "unknown key `datacentre`, did you mean `datacenter`?");
        let m = describe_toml_error("unknown field `zzz`, expected `listen`");
        assert_eq!(m, "unknown key `zzz`, expected one of: listen");
    }
}

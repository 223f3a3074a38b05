//! Semantic checks: [`RawRole`] → [`NodeRole`]. Every problem is collected
//! (not just the first), each pointing at the text it is about.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::diag::{Location, Problem, did_you_mean};
use super::host::{Host, first_private_ipv4};
use super::raw::{RawRestart, RawRole, SpStr};
use super::{
    Addresses, AdvertiseScope, ConsulRole, Discovery, GossipKey, NodeRole, NomadRole, ROLE_NAMES,
    ReleaseRole, RoleError, RoleSet, SCHEMA_VERSION, TlsFiles,
};
use crate::paths::{DEFAULT_CONFIG_DIR, DEFAULT_HEALTH_PORT, DEFAULT_MIRROR, DEFAULT_STATE_DIR};
use crate::plan::{CONSUL_USER, NOMAD_USER, ROOT_USER, RestartMode, RestartPolicy};
use crate::version::VersionSpec;

/// Nomad's and Consul's default region / datacenter.
const DEFAULT_REGION: &str = "global";
const DEFAULT_DATACENTER: &str = "dc1";
/// Agents' default log level.
const DEFAULT_LOG_LEVEL: &str = "info";
/// Accepted log levels (both agents accept these, case-insensitively).
const LOG_LEVELS: [&str; 5] = ["trace", "debug", "info", "warn", "error"];
/// Consul's HTTP port, appended to a `consul_address` without one.
const CONSUL_HTTP_PORT: u16 = 8500;
/// Default `bootstrap_expect` for servers: HashiCorp's recommended three.
const DEFAULT_BOOTSTRAP_EXPECT: u32 = 3;
/// Default installed versions kept per product (current + previous).
const DEFAULT_KEEP_VERSIONS: usize = 2;
/// Default download cap: 1 GiB (Consul and Nomad zips are ~50-150 MB).
const DEFAULT_MAX_DOWNLOAD_BYTES: u64 = 1 << 30;
/// Default restart policy (the shape of Nomad's `restart` block).
const DEFAULT_RESTART_ATTEMPTS: u32 = 10;
const DEFAULT_RESTART_INTERVAL_SECS: u64 = 300;
const DEFAULT_RESTART_DELAY_SECS: u64 = 5;
const DEFAULT_RESTART_MAX_DELAY_SECS: u64 = 120;
const DEFAULT_RESTART_STABLE_AFTER_SECS: u64 = 60;
/// Address spec meaning "the first private IPv4 of the host".
const AUTO: &str = "auto";
/// Longest Unix user name `useradd` accepts everywhere.
const MAX_USER_NAME_LEN: usize = 32;
/// Decoded lengths Consul and Nomad accept for a gossip key (AES-128/192/256).
const GOSSIP_KEY_LENGTHS: [usize; 3] = [16, 24, 32];

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

struct Checker<'a> {
    path: String,
    source: &'a str,
    base_dir: PathBuf,
    host: &'a dyn Host,
    problems: Vec<(usize, Problem)>,
}

impl Checker<'_> {
    fn at(&mut self, loc: Location, message: impl Into<String>) {
        let order = match &loc {
            Location::Span(s) => s.start + 1,
            Location::File | Location::Flag(_) => 0,
        };
        let p = Problem::new(&self.path, self.source, &loc, message.into());
        self.problems.push((order, p));
    }

    fn span<T>(&mut self, v: &Spanned<T>, message: impl Into<String>) {
        self.at(Location::Span(v.span()), message);
    }

    fn resolve_path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    fn absolute_dir(&mut self, v: &Option<SpStr>, default: &str, key: &str) -> PathBuf {
        match v {
            Some(s) if Path::new(s.get_ref()).is_absolute() => PathBuf::from(s.get_ref()),
            Some(s) => {
                self.span(s, format!("`{key}` must be an absolute path"));
                PathBuf::from(default)
            }
            None => PathBuf::from(default),
        }
    }

    fn name(&mut self, v: &Option<SpStr>, default: &str, key: &str) -> String {
        let Some(s) = v else {
            return default.to_string();
        };
        let ok = !s.get_ref().is_empty()
            && s.get_ref()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
        if !ok {
            self.span(
                s,
                format!("`{key}` may only hold letters, digits, `-`, `_` and `.`"),
            );
        }
        s.get_ref().clone()
    }

    fn version(&mut self, v: &Option<SpStr>) -> VersionSpec {
        match v {
            None => VersionSpec::Latest,
            Some(s) => match s.get_ref().parse::<VersionSpec>() {
                Ok(v) => v,
                Err(e) => {
                    self.span(s, e.to_string());
                    VersionSpec::Latest
                }
            },
        }
    }

    fn bootstrap_expect(&mut self, v: &Option<Spanned<i64>>, dev: bool, product: &str) -> u32 {
        let default = if dev { 1 } else { DEFAULT_BOOTSTRAP_EXPECT };
        let Some(s) = v else {
            return default;
        };
        let n = *s.get_ref();
        if n < 1 {
            self.span(s, "bootstrap_expect must be at least 1");
            return default;
        }
        if dev && n != 1 {
            self.span(
                s,
                format!(
                    "the dev role runs a single-node {product} cluster: bootstrap_expect must be 1"
                ),
            );
        }
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// An IP literal, an interface name (its first IPv4), or `auto`.
    fn address(&mut self, s: &SpStr, key: &str) -> Option<IpAddr> {
        let text = s.get_ref().trim();
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Some(ip);
        }
        if text == AUTO {
            let found = first_private_ipv4(self.host);
            if found.is_none() {
                self.span(
                    s,
                    format!("`{key}` is `auto` but this host has no private IPv4 address"),
                );
            }
            return found;
        }
        match self.host.interface_ipv4(text) {
            Some(ips) => match ips.first() {
                Some(ip) => Some(IpAddr::V4(*ip)),
                None => {
                    self.span(s, format!("interface `{text}` has no IPv4 address"));
                    None
                }
            },
            None => {
                self.span(
                    s,
                    format!(
                        "`{text}` is neither an IP address, `auto`, nor an interface of this host"
                    ),
                );
                None
            }
        }
    }

    fn gossip_key(&mut self, v: &Option<SpStr>) -> Option<GossipKey> {
        let s = v.as_ref()?;
        let file = self.resolve_path(s.get_ref());
        match self.host.read_to_string(&file) {
            Ok(text) => {
                let key = text.trim().to_string();
                if !is_gossip_key(&key) {
                    self.span(
                        s,
                        format!(
                            "gossip key file {} does not hold a base64 key of 16, 24 or 32 bytes (make one with `supervisor keygen`)",
                            file.display()
                        ),
                    );
                    return None;
                }
                Some(GossipKey {
                    file,
                    key: super::Secret::new(key),
                })
            }
            Err(e) => {
                self.span(
                    s,
                    format!("failed to read gossip key file {}: {e}", file.display()),
                );
                None
            }
        }
    }

    fn tls(
        &mut self,
        ca: &Option<SpStr>,
        cert: &Option<SpStr>,
        key: &Option<SpStr>,
        table: &str,
    ) -> Option<TlsFiles> {
        let given: Vec<&SpStr> = [ca, cert, key].into_iter().flatten().collect();
        if given.is_empty() {
            return None;
        }
        if given.len() != 3 {
            self.span(
                given[0],
                format!("`[{table}]` needs `ca_file`, `cert_file` and `key_file` together"),
            );
            return None;
        }
        let mut files = Vec::new();
        for s in given {
            let p = self.resolve_path(s.get_ref());
            if let Err(e) = self.host.check_readable(&p) {
                self.span(s, format!("failed to read TLS file {}: {e}", p.display()));
            }
            files.push(p);
        }
        let key_file = files.pop()?;
        let cert_file = files.pop()?;
        let ca_file = files.pop()?;
        Some(TlsFiles {
            ca_file,
            cert_file,
            key_file,
        })
    }

    fn restart(&mut self, r: &RawRestart) -> RestartPolicy {
        let mode = match &r.mode {
            None => RestartMode::Delay,
            Some(s) => match s.get_ref().as_str() {
                "delay" => RestartMode::Delay,
                "fail" => RestartMode::Fail,
                other => {
                    self.span(
                        s,
                        format!("unknown restart mode `{other}`, expected `delay` or `fail`"),
                    );
                    RestartMode::Delay
                }
            },
        };
        let interval = match &r.interval_secs {
            Some(s) if *s.get_ref() == 0 => {
                self.span(s, "interval_secs must be at least 1");
                DEFAULT_RESTART_INTERVAL_SECS
            }
            Some(s) => *s.get_ref(),
            None => DEFAULT_RESTART_INTERVAL_SECS,
        };
        let delay = r.delay_secs.unwrap_or(DEFAULT_RESTART_DELAY_SECS);
        let max_delay = match &r.max_delay_secs {
            Some(s) if *s.get_ref() < delay => {
                self.span(
                    s,
                    format!("max_delay_secs must not be less than delay_secs ({delay})"),
                );
                delay
            }
            Some(s) => *s.get_ref(),
            None => DEFAULT_RESTART_MAX_DELAY_SECS.max(delay),
        };
        RestartPolicy {
            attempts: r.attempts.unwrap_or(DEFAULT_RESTART_ATTEMPTS),
            interval: Duration::from_secs(interval),
            delay: Duration::from_secs(delay),
            mode,
            max_delay: Duration::from_secs(max_delay),
            stable_after: Duration::from_secs(
                r.stable_after_secs
                    .unwrap_or(DEFAULT_RESTART_STABLE_AFTER_SECS),
            ),
        }
    }

    fn positive_secs(&mut self, v: &Option<Spanned<u64>>, key: &str) -> Option<Duration> {
        let s = v.as_ref()?;
        if *s.get_ref() == 0 {
            self.span(s, format!("{key} must be at least 1"));
            return None;
        }
        Some(Duration::from_secs(*s.get_ref()))
    }

    /// The agent's Unix user: `[<product>] user` when set, else `default`.
    fn agent_user(&mut self, v: &Option<SpStr>, default: &str, product: &str) -> String {
        let Some(s) = v else {
            return default.to_string();
        };
        let name = s.get_ref();
        // useradd's portable names: no leading `-`, at most 32 bytes.
        let ok = !name.is_empty()
            && name.len() <= MAX_USER_NAME_LEN
            && !name.starts_with('-')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
        if !ok {
            self.span(
                s,
                format!(
                    "`{product}.user` must be a Unix user name (at most {MAX_USER_NAME_LEN} letters, digits, `-`, `_` or `.`, not starting with `-`)"
                ),
            );
        }
        name.clone()
    }

    /// A supervisor running as root switches each agent to its user; a
    /// user that does not exist is refused here, so `check` and `run` refuse
    /// alike before anything starts (the agent never runs as root instead).
    fn user_exists(
        &mut self,
        runs: bool,
        user: &str,
        explicit: &Option<SpStr>,
        product: &str,
        state_dir: &Path,
    ) {
        if !runs || !self.host.switches_users() || self.host.user_exists(user) {
            return;
        }
        let how = format!(
            "create it with `useradd --system --user-group --home-dir {} --shell /usr/sbin/nologin {user}` \
             (the hashi-supervisor package creates `consul` and `nomad`), or name an existing user with `[{product}] user = \"...\"`",
            state_dir.display()
        );
        match explicit {
            Some(s) => self.span(
                s,
                format!(
                    "{product} runs as user `{user}`, which does not exist on this host: {how}"
                ),
            ),
            None => self.at(
                Location::File,
                format!(
                    "{product} runs as user `{user}`, which does not exist on this host: {how}"
                ),
            ),
        }
    }

    fn leave_on_stop(&mut self, v: &Option<Spanned<bool>>, server: bool, product: &str) -> bool {
        match v {
            Some(s) if !server => {
                self.span(
                    s,
                    format!("`{product}.leave_on_stop` applies to {product} servers only (clients always leave)"),
                );
                true
            }
            Some(s) => *s.get_ref(),
            None => !server,
        }
    }

    /// Pass-through values must be expressible in the agent's format:
    /// HCL has no list mixing blocks and plain values, JSON no NaN or
    /// infinity.
    fn extra(&mut self, v: &Option<Spanned<toml::Table>>, product: &str) {
        let Some(t) = v else {
            return;
        };
        if let Some((path, why)) = bad_extra_value(t.get_ref(), "") {
            self.span(t, format!("`{product}.extra.{path}` {why}"));
        }
    }

    fn list(&mut self, v: &Option<Vec<SpStr>>, key: &str) -> Vec<String> {
        let mut out = Vec::new();
        for s in v.iter().flatten() {
            if s.get_ref().trim().is_empty() {
                self.span(s, format!("`{key}` holds an empty address"));
            } else {
                out.push(s.get_ref().trim().to_string());
            }
        }
        out
    }
}

/// The first value of a pass-through table that neither JSON nor HCL can
/// hold, and why.
fn bad_extra_value(t: &toml::Table, prefix: &str) -> Option<(String, &'static str)> {
    let mut keys: Vec<&String> = t.keys().collect();
    keys.sort();
    for k in keys {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match &t[k.as_str()] {
            toml::Value::Float(f) if !f.is_finite() => {
                return Some((path, "is not a finite number"));
            }
            toml::Value::Table(inner) => {
                if let Some(found) = bad_extra_value(inner, &path) {
                    return Some(found);
                }
            }
            toml::Value::Array(a) => {
                let tables = a.iter().filter(|x| x.is_table()).count();
                if tables > 0 && tables < a.len() {
                    return Some((path, "mixes tables and plain values in one list"));
                }
                for x in a {
                    if let toml::Value::Table(inner) = x {
                        if let Some(found) = bad_extra_value(inner, &path) {
                            return Some(found);
                        }
                    } else if let toml::Value::Float(f) = x {
                        if !f.is_finite() {
                            return Some((path, "is not a finite number"));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    None
}

/// Whether `key` is base64 (standard alphabet, padded) of 16, 24 or 32 bytes.
fn is_gossip_key(key: &str) -> bool {
    let body = key.trim_end_matches('=');
    let pad = key.len() - body.len();
    let ok_chars = body
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    ok_chars
        && pad <= 2
        && key.len() % 4 == 0
        && GOSSIP_KEY_LENGTHS.contains(&(key.len() / 4 * 3 - pad))
}

/// Parses `--role` / `roles` entries into a [`RoleSet`], reporting unknown,
/// duplicate and conflicting roles.
/// Also returns whether every name was known (later checks about the
/// combination are skipped otherwise, to avoid follow-on noise).
fn roles(
    c: &mut Checker<'_>,
    names: &[(String, Location)],
    list_loc: Location,
) -> (RoleSet, Vec<String>, bool) {
    let mut all_known = true;
    let mut set = RoleSet::default();
    let mut seen: Vec<String> = Vec::new();
    for (name, loc) in names {
        let n = name.trim();
        if seen.iter().any(|s| s == n) {
            c.at(loc.clone(), format!("role `{n}` is listed twice"));
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
                c.at(loc.clone(), msg);
                all_known = false;
                continue;
            }
        }
        seen.push(n.to_string());
    }
    if names.is_empty() {
        c.at(
            list_loc.clone(),
            format!(
                "no roles: set `roles` to some of {} or pass --role",
                ROLE_NAMES.join(", ")
            ),
        );
    }
    if set.dev && seen.len() > 1 {
        c.at(
            list_loc.clone(),
            "`dev` runs every agent on its own and cannot be combined with other roles",
        );
    }
    if set.consul_server && set.consul_client {
        c.at(
            list_loc,
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
    (set, seen, all_known)
}

/// Validates a parsed role file. `path` is `None` when no file was read.
pub fn validate(
    path: Option<&Path>,
    source: &str,
    raw: RawRole,
    roles_override: &[String],
    host: &dyn Host,
) -> Result<NodeRole, RoleError> {
    let shown_path = path.map_or_else(|| "--role".to_string(), |p| p.display().to_string());
    let base_dir = path
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut c = Checker {
        path: shown_path,
        source,
        base_dir,
        host,
        problems: Vec::new(),
    };

    if path.is_some() {
        match &raw.schema {
            None => c.at(
                Location::File,
                format!("missing `schema = {SCHEMA_VERSION}` (the role file format version)"),
            ),
            Some(s) if *s.get_ref() != SCHEMA_VERSION => c.span(
                s,
                format!(
                    "unsupported schema {}, this supervisor reads schema {SCHEMA_VERSION}",
                    s.get_ref()
                ),
            ),
            Some(_) => {}
        }
    }

    // Roles: `--role` replaces the file's list.
    let (names, list_loc): (Vec<(String, Location)>, Location) = if !roles_override.is_empty() {
        (
            roles_override
                .iter()
                .map(|r| (r.clone(), Location::Flag("--role")))
                .collect(),
            Location::Flag("--role"),
        )
    } else if let Some(r) = &raw.roles {
        (
            r.get_ref()
                .iter()
                .map(|s| (s.get_ref().clone(), Location::Span(s.span())))
                .collect(),
            Location::Span(r.span()),
        )
    } else if path.is_some() {
        (Vec::new(), Location::File)
    } else {
        (Vec::new(), Location::Flag("--role"))
    };
    let (set, role_names, roles_known) = roles(&mut c, &names, list_loc.clone());

    let region = c.name(&raw.region, DEFAULT_REGION, "region");
    let datacenter = c.name(&raw.datacenter, DEFAULT_DATACENTER, "datacenter");
    let node_name = match &raw.node_name {
        Some(_) => c.name(&raw.node_name, "", "node_name"),
        None => match host.hostname() {
            Some(h) => h,
            None => {
                c.at(
                    Location::File,
                    "`node_name` is not set and the hostname cannot be read",
                );
                String::new()
            }
        },
    };
    let log_level = match &raw.log_level {
        None => DEFAULT_LOG_LEVEL.to_string(),
        Some(s) => {
            let l = s.get_ref().to_ascii_lowercase();
            if !LOG_LEVELS.contains(&l.as_str()) {
                c.span(
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
    };

    // Addresses. `dev` stays on loopback unless told otherwise.
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let unspecified = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let a = &raw.addresses;
    let private = match &a.private {
        Some(s) => c.address(s, "addresses.private").unwrap_or(loopback),
        None if set.dev => loopback,
        None => match first_private_ipv4(host) {
            Some(ip) => ip,
            None => {
                if set.is_consul() || set.is_nomad() {
                    c.at(
                        Location::File,
                        "`addresses.private` is not set and this host has no private IPv4 address",
                    );
                }
                loopback
            }
        },
    };
    let bind = match &a.bind {
        Some(s) => c.address(s, "addresses.bind").unwrap_or(unspecified),
        None if set.dev => private,
        None => unspecified,
    };
    let public = a
        .public
        .as_ref()
        .and_then(|s| c.address(s, "addresses.public"));

    // Consul.
    let rc = &raw.consul;
    let consul_server = set.consul_server;
    let consul = ConsulRole {
        version: c.version(&rc.version),
        bootstrap_expect: c.bootstrap_expect(&rc.bootstrap_expect, set.dev, "consul"),
        encrypt: c.gossip_key(&rc.encrypt_key_file),
        ui: rc.ui.unwrap_or(consul_server),
        tls: c.tls(
            &rc.tls.ca_file,
            &rc.tls.cert_file,
            &rc.tls.key_file,
            "consul.tls",
        ),
        restart: c.restart(&rc.restart),
        stop_timeout: c.positive_secs(&rc.stop_timeout_secs, "stop_timeout_secs"),
        leave_on_stop: c.leave_on_stop(&rc.leave_on_stop, consul_server, "consul"),
        user: c.agent_user(&rc.user, CONSUL_USER, "consul"),
        extra: {
            c.extra(&rc.extra, "consul");
            rc.extra
                .as_ref()
                .map(|e| e.get_ref().clone())
                .unwrap_or_default()
        },
    };

    // Nomad.
    let rn = &raw.nomad;
    let advertise = match &rn.advertise {
        None => AdvertiseScope::Private,
        Some(s) => match s.get_ref().as_str() {
            "private" => AdvertiseScope::Private,
            "public" => {
                if public.is_none() && a.public.is_none() {
                    c.span(s, "`nomad.advertise = \"public\"` needs `addresses.public`");
                }
                AdvertiseScope::Public
            }
            other => {
                c.span(
                    s,
                    format!("unknown advertise scope `{other}`, expected `private` or `public`"),
                );
                AdvertiseScope::Private
            }
        },
    };
    let nomad = NomadRole {
        version: c.version(&rn.version),
        bootstrap_expect: c.bootstrap_expect(&rn.bootstrap_expect, set.dev, "nomad"),
        encrypt: c.gossip_key(&rn.encrypt_key_file),
        advertise,
        tls: c.tls(
            &rn.tls.ca_file,
            &rn.tls.cert_file,
            &rn.tls.key_file,
            "nomad.tls",
        ),
        tls_http: rn.tls.http.unwrap_or(false),
        restart: c.restart(&rn.restart),
        stop_timeout: c.positive_secs(&rn.stop_timeout_secs, "stop_timeout_secs"),
        leave_on_stop: c.leave_on_stop(&rn.leave_on_stop, set.nomad_server, "nomad"),
        drain_deadline: c.positive_secs(&rn.drain_deadline_secs, "drain_deadline_secs"),
        user: c.agent_user(
            &rn.user,
            if set.nomad_client {
                ROOT_USER
            } else {
                NOMAD_USER
            },
            "nomad",
        ),
        extra: {
            c.extra(&rn.extra, "nomad");
            rn.extra
                .as_ref()
                .map(|e| e.get_ref().clone())
                .unwrap_or_default()
        },
    };

    // Release.
    let rr = &raw.release;
    let mirror = match &rr.mirror {
        None => DEFAULT_MIRROR.to_string(),
        Some(s) => {
            let m = s.get_ref().trim_end_matches('/').to_string();
            let ok = ["https://", "http://", "file://"]
                .iter()
                .any(|p| m.len() > p.len() && m.starts_with(p))
                || Path::new(&m).is_absolute();
            if !ok {
                c.span(
                    s,
                    "`mirror` must be an https://, http:// or file:// URL, or an absolute directory",
                );
            }
            m
        }
    };
    let trusted_key_files = rr
        .trusted_key_files
        .iter()
        .flatten()
        .map(|s| {
            let p = c.resolve_path(s.get_ref());
            if let Err(e) = host.check_readable(&p) {
                c.span(
                    s,
                    format!("failed to read trusted key file {}: {e}", p.display()),
                );
            }
            p
        })
        .collect();
    let keep_versions = match &rr.keep_versions {
        Some(s) if *s.get_ref() == 0 => {
            c.span(s, "keep_versions must be at least 1");
            DEFAULT_KEEP_VERSIONS
        }
        Some(s) => usize::try_from(*s.get_ref()).unwrap_or(usize::MAX),
        None => DEFAULT_KEEP_VERSIONS,
    };
    let max_download_bytes = match &rr.max_download_bytes {
        Some(s) if *s.get_ref() == 0 => {
            c.span(s, "max_download_bytes must be at least 1");
            DEFAULT_MAX_DOWNLOAD_BYTES
        }
        Some(s) => *s.get_ref(),
        None => DEFAULT_MAX_DOWNLOAD_BYTES,
    };
    let release = ReleaseRole {
        mirror,
        trust_hashicorp_key: rr.trust_hashicorp_key.unwrap_or(true),
        trusted_key_files,
        keep_versions,
        max_download_bytes,
    };

    // Discovery.
    let rd = &raw.discovery;
    let consul_address = rd.consul_address.as_ref().and_then(|s| {
        let text = s.get_ref().trim();
        match normalise_host_port(text, CONSUL_HTTP_PORT) {
            Some(a) => Some(a),
            None => {
                c.span(s, format!("`{text}` is not a host or host:port"));
                None
            }
        }
    });
    for s in rd.cloud_auto_join.iter().flatten() {
        if !s.get_ref().trim_start().starts_with("provider=") {
            c.span(s, "a cloud auto-join string starts with `provider=`");
        }
    }
    let discovery = Discovery {
        consul_retry_join: c.list(&rd.consul_retry_join, "consul_retry_join"),
        consul_retry_join_wan: c.list(&rd.consul_retry_join_wan, "consul_retry_join_wan"),
        nomad_retry_join: c.list(&rd.nomad_retry_join, "nomad_retry_join"),
        consul_address,
        cloud_auto_join: c.list(&rd.cloud_auto_join, "cloud_auto_join"),
    };
    if let Some(first) = rd.consul_retry_join_wan.as_ref().and_then(|l| l.first()) {
        if !set.consul_server && !set.dev {
            c.span(first, "only Consul servers join the WAN: `consul_retry_join_wan` needs the consul-server role");
        }
    }
    if roles_known
        && set.is_nomad()
        && !set.is_consul()
        && rd.consul_address.is_none()
        && discovery.nomad_retry_join.is_empty()
    {
        c.at(
            list_loc,
            "a Nomad role without a local Consul needs `discovery.consul_address` or `discovery.nomad_retry_join` to find its servers",
        );
    }
    if rd.consul_address.is_some() && set.is_consul() {
        if let Some(s) = &rd.consul_address {
            c.span(
                s,
                "`consul_address` is for nodes without a local Consul; this node runs one",
            );
        }
    }

    // Default: the private address only (not the public one), port 4680.
    let health_listen = match &raw.health.listen {
        None => SocketAddr::new(private, DEFAULT_HEALTH_PORT),
        Some(s) => match s.get_ref().parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                c.span(s, format!("`{}` is not an ip:port address", s.get_ref()));
                SocketAddr::new(private, DEFAULT_HEALTH_PORT)
            }
        },
    };
    let config_dir = c.absolute_dir(
        &raw.paths.config_dir,
        DEFAULT_CONFIG_DIR,
        "paths.config_dir",
    );
    let state_dir = c.absolute_dir(&raw.paths.state_dir, DEFAULT_STATE_DIR, "paths.state_dir");
    c.user_exists(
        set.is_consul(),
        &consul.user,
        &rc.user,
        "consul",
        &state_dir,
    );
    c.user_exists(set.is_nomad(), &nomad.user, &rn.user, "nomad", &state_dir);

    if !c.problems.is_empty() {
        let mut problems = c.problems;
        problems.sort_by_key(|(order, _)| *order);
        return Err(RoleError::Invalid {
            path: path.map_or_else(|| PathBuf::from("--role"), Path::to_path_buf),
            problems: problems.into_iter().map(|(_, p)| p).collect(),
        });
    }
    Ok(NodeRole {
        source: path.map(Path::to_path_buf),
        role_names,
        roles: set,
        region,
        datacenter,
        node_name,
        log_level,
        addresses: Addresses {
            bind,
            private,
            public,
        },
        consul,
        nomad,
        release,
        discovery,
        health_listen,
        config_dir,
        state_dir,
    })
}

/// `host` or `host:port` (IPv6 in brackets) → `host:port`.
fn normalise_host_port(text: &str, default_port: u16) -> Option<String> {
    if text.is_empty() || text.contains(char::is_whitespace) || text.contains("://") {
        return None;
    }
    if let Ok(sa) = text.parse::<SocketAddr>() {
        return Some(sa.to_string());
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, default_port).to_string());
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().ok()?),
        None => (text, default_port),
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '.');
    host_ok.then(|| format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gossip_keys_of_accepted_lengths_pass() {
        assert!(is_gossip_key(
            "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s="
        ));
        assert!(is_gossip_key("AAAAAAAAAAAAAAAAAAAAAA=="));
        assert!(!is_gossip_key("not a key"));
        assert!(!is_gossip_key("AAAA"));
    }

    #[test]
    fn consul_address_gets_default_port() {
        assert_eq!(
            normalise_host_port("10.0.1.11", 8500).as_deref(),
            Some("10.0.1.11:8500")
        );
        assert_eq!(
            normalise_host_port("consul.lan:8501", 8500).as_deref(),
            Some("consul.lan:8501")
        );
        assert_eq!(normalise_host_port("http://x", 8500), None);
        assert_eq!(normalise_host_port("a b", 8500), None);
    }

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

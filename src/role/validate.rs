//! Semantic checks: [`RawRole`] → [`NodeRole`]. Every problem is collected
//! (not just the first), each pointing at the text it is about.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::diag::{Location, Problem, did_you_mean};
use super::host::{Host, first_private_ipv4};
use super::limits;
use super::raw::{RawRelease, RawRestart, RawRole, SpStr};
use super::{
    Addresses, AdvertiseScope, ConsulRole, Discovery, GossipKey, NodeRole, NomadRole, ROLE_NAMES,
    ReleaseRole, RoleError, RoleSet, SCHEMA_VERSION, TlsFiles,
};
use crate::paths::{DEFAULT_CONFIG_DIR, DEFAULT_HEALTH_PORT, DEFAULT_MIRROR, DEFAULT_STATE_DIR};
use crate::version::VersionSpec;
use crate::vocab::{CONSUL_USER, NOMAD_USER, ROOT_USER, RestartMode, RestartPolicy};

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
const DEFAULT_KEEP_VERSIONS: u64 = 2;
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

    /// A region, datacenter or node name, checked by `check` (one of the
    /// `check_*_name` functions).
    fn name(
        &mut self,
        v: &Option<SpStr>,
        default: &str,
        check: fn(&str) -> Option<String>,
    ) -> String {
        let Some(s) = v else {
            return default.to_string();
        };
        if let Some(why) = check(s.get_ref()) {
            self.span(s, why);
        }
        s.get_ref().clone()
    }

    /// A number of `key` within `range`; `default` when absent or out of
    /// range (then reported).
    fn number(
        &mut self,
        v: &Option<Spanned<u64>>,
        key: &str,
        range: &RangeInclusive<u64>,
        default: u64,
    ) -> u64 {
        let Some(s) = v else {
            return default;
        };
        match check_range(key, *s.get_ref(), range) {
            Some(why) => {
                self.span(s, why);
                default
            }
            None => *s.get_ref(),
        }
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
        let in_range = u64::try_from(n)
            .ok()
            .filter(|n| limits::BOOTSTRAP_EXPECT.contains(n));
        if in_range.is_none() {
            self.span(
                s,
                format!(
                    "bootstrap_expect must be between {} and {} (got {n})",
                    limits::BOOTSTRAP_EXPECT.start(),
                    limits::BOOTSTRAP_EXPECT.end()
                ),
            );
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
        u32::try_from(n).unwrap_or(default)
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

    fn gossip_key(&mut self, v: &Option<SpStr>, product: &str) -> Option<GossipKey> {
        let s = v.as_ref()?;
        let file = self.resolve_path(s.get_ref());
        let text = self
            .host
            .read_file(&file, limits::GOSSIP_KEY_FILE_BYTES)
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        match text {
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
                    format!(
                        "failed to read `{product}.encrypt_key_file` {}: {e}",
                        file.display()
                    ),
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
        for (s, key) in given.into_iter().zip(["ca_file", "cert_file", "key_file"]) {
            let p = self.resolve_path(s.get_ref());
            if let Err(e) = self.host.check_file(&p, limits::TLS_FILE_BYTES) {
                self.span(
                    s,
                    format!("failed to read `{table}.{key}` {}: {e}", p.display()),
                );
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
        let attempts = self.number(
            &r.attempts,
            "attempts",
            &limits::RESTART_ATTEMPTS,
            DEFAULT_RESTART_ATTEMPTS.into(),
        );
        let interval = self.number(
            &r.interval_secs,
            "interval_secs",
            &limits::RESTART_INTERVAL_SECS,
            DEFAULT_RESTART_INTERVAL_SECS,
        );
        let delay = self.number(
            &r.delay_secs,
            "delay_secs",
            &limits::RESTART_DELAY_SECS,
            DEFAULT_RESTART_DELAY_SECS,
        );
        let max_delay = self.number(
            &r.max_delay_secs,
            "max_delay_secs",
            &limits::RESTART_MAX_DELAY_SECS,
            DEFAULT_RESTART_MAX_DELAY_SECS.max(delay),
        );
        let max_delay = match &r.max_delay_secs {
            Some(s) if max_delay < delay => {
                self.span(
                    s,
                    format!("max_delay_secs must not be less than delay_secs ({delay})"),
                );
                delay
            }
            _ => max_delay,
        };
        let stable_after = self.number(
            &r.stable_after_secs,
            "stable_after_secs",
            &limits::RESTART_STABLE_AFTER_SECS,
            DEFAULT_RESTART_STABLE_AFTER_SECS,
        );
        RestartPolicy {
            attempts: u32::try_from(attempts).unwrap_or(DEFAULT_RESTART_ATTEMPTS),
            interval: Duration::from_secs(interval),
            delay: Duration::from_secs(delay),
            mode,
            max_delay: Duration::from_secs(max_delay),
            stable_after: Duration::from_secs(stable_after),
        }
    }

    /// An optional duration in seconds within `range` (`None` when absent
    /// or out of range, then reported).
    fn secs(
        &mut self,
        v: &Option<Spanned<u64>>,
        key: &str,
        range: &RangeInclusive<u64>,
    ) -> Option<Duration> {
        let s = v.as_ref()?;
        if let Some(why) = check_range(key, *s.get_ref(), range) {
            self.span(s, why);
            return None;
        }
        Some(Duration::from_secs(*s.get_ref()))
    }

    /// Reports every `(span, problem)` of a `check_*` function.
    fn report(&mut self, found: Vec<(Range<usize>, String)>) {
        for (span, why) in found {
            self.at(Location::Span(span), why);
        }
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

    /// `[release]`: the mirror, trusted keys (parsed as OpenPGP keys here,
    /// as the verifier will), versions kept and the download limit.
    fn release(&mut self, rr: &RawRelease) -> ReleaseRole {
        let mirror = match &rr.mirror {
            None => DEFAULT_MIRROR.to_string(),
            Some(s) => {
                let m = s.get_ref().trim_end_matches('/').to_string();
                let ok = ["https://", "http://", "file://"]
                    .iter()
                    .any(|p| m.len() > p.len() && m.starts_with(p))
                    || Path::new(&m).is_absolute();
                if !ok {
                    self.span(
                        s,
                        "`mirror` must be an https://, http:// or file:// URL, or an absolute directory",
                    );
                }
                m
            }
        };
        let mut trusted_key_files = Vec::new();
        for s in rr.trusted_key_files.iter().flat_map(|l| l.get_ref()) {
            let p = self.resolve_path(s.get_ref());
            if let Some(why) = check_trusted_key_file(self.host, &p) {
                self.span(s, why);
            }
            trusted_key_files.push(p);
        }
        let keep_versions = self.number(
            &rr.keep_versions,
            "keep_versions",
            &limits::KEEP_VERSIONS,
            DEFAULT_KEEP_VERSIONS,
        );
        let max_download_bytes = self.number(
            &rr.max_download_bytes,
            "max_download_bytes",
            &limits::MAX_DOWNLOAD_BYTES,
            DEFAULT_MAX_DOWNLOAD_BYTES,
        );
        ReleaseRole {
            mirror,
            trust_hashicorp_key: rr.trust_hashicorp_key.unwrap_or(true),
            trusted_key_files,
            // In range (at most 100): the conversion cannot fail.
            keep_versions: usize::try_from(keep_versions).unwrap_or(usize::MAX),
            max_download_bytes,
        }
    }

    fn list(&mut self, v: &Option<Spanned<Vec<SpStr>>>, key: &str) -> Vec<String> {
        let mut out = Vec::new();
        for s in v.iter().flat_map(|l| l.get_ref()) {
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

    c.report(check_lengths(&raw));
    c.report(check_list_sizes(&raw));
    let region = c.name(&raw.region, DEFAULT_REGION, check_region_name);
    let datacenter = c.name(&raw.datacenter, DEFAULT_DATACENTER, check_datacenter_name);
    let node_name = match &raw.node_name {
        Some(_) => c.name(&raw.node_name, "", check_node_name),
        None => match host.hostname() {
            Some(h) => {
                if let Some(why) = check_node_name(&h) {
                    c.at(
                        Location::File,
                        format!(
                            "`node_name` is not set and the hostname is not a node name: {why}"
                        ),
                    );
                }
                h
            }
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
        encrypt: c.gossip_key(&rc.encrypt_key_file, "consul"),
        ui: rc.ui.unwrap_or(consul_server),
        tls: c.tls(
            &rc.tls.ca_file,
            &rc.tls.cert_file,
            &rc.tls.key_file,
            "consul.tls",
        ),
        restart: c.restart(&rc.restart),
        stop_timeout: c.secs(
            &rc.stop_timeout_secs,
            "stop_timeout_secs",
            &limits::STOP_TIMEOUT_SECS,
        ),
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
        encrypt: c.gossip_key(&rn.encrypt_key_file, "nomad"),
        advertise,
        tls: c.tls(
            &rn.tls.ca_file,
            &rn.tls.cert_file,
            &rn.tls.key_file,
            "nomad.tls",
        ),
        tls_http: rn.tls.http.unwrap_or(false),
        restart: c.restart(&rn.restart),
        stop_timeout: c.secs(
            &rn.stop_timeout_secs,
            "stop_timeout_secs",
            &limits::STOP_TIMEOUT_SECS,
        ),
        leave_on_stop: c.leave_on_stop(&rn.leave_on_stop, set.nomad_server, "nomad"),
        drain_deadline: c.secs(
            &rn.drain_deadline_secs,
            "drain_deadline_secs",
            &limits::DRAIN_DEADLINE_SECS,
        ),
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

    let release = c.release(&raw.release);

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
    for s in rd.cloud_auto_join.iter().flat_map(|l| l.get_ref()) {
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
    if let Some(first) = rd
        .consul_retry_join_wan
        .as_ref()
        .and_then(|l| l.get_ref().first())
    {
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

/// A number outside its range, in the role file's words.
fn check_range(key: &str, n: u64, range: &RangeInclusive<u64>) -> Option<String> {
    (!range.contains(&n)).then(|| {
        format!(
            "{key} must be between {} and {} (got {n})",
            range.start(),
            range.end()
        )
    })
}

/// A name longer than a DNS label, or empty.
fn check_name_length(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".to_string());
    }
    (name.len() > limits::NAME_CHARS).then(|| {
        format!(
            "is {} bytes long, at most {} are allowed",
            name.len(),
            limits::NAME_CHARS
        )
    })
}

/// Consul's own rule for a datacenter: `^[a-z0-9_-]+$` (consul
/// `agent/config/builder.go`, `Builder.Validate`: "Datacenter must be
/// alpha-numeric with underscores and hyphens only"; Consul lower-cases the
/// value first, Nomad does not, so upper case would name two different
/// datacenters). Nomad's rule (no NUL, no `*`: nomad
/// `command/agent/command.go`, `isValidConfig`) is weaker.
fn check_datacenter_name(name: &str) -> Option<String> {
    if let Some(why) = check_name_length(name) {
        return Some(format!("`datacenter` {why}"));
    }
    let ok = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    (!ok).then(|| {
        "`datacenter` may only hold lower-case letters, digits, `-` and `_` (Consul's rule)"
            .to_string()
    })
}

/// Nomad's region: no NUL (nomad `command/agent/command.go`,
/// `isValidConfig`); it is also one label of the name Nomad's TLS checks
/// (`server.<region>.nomad`), so no `.` and nothing outside a DNS label.
fn check_region_name(name: &str) -> Option<String> {
    if let Some(why) = check_name_length(name) {
        return Some(format!("`region` {why}"));
    }
    let ok = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (!ok).then(|| "`region` may only hold letters, digits, `-` and `_`".to_string())
}

/// Consul refuses an empty node name and warns when it is not a DNS label
/// of at most 63 bytes (consul `agent/config/builder.go`: "will not be
/// discoverable via DNS"). We refuse what is longer, and keep the
/// characters we always allowed (a dotted hostname is common).
fn check_node_name(name: &str) -> Option<String> {
    if let Some(why) = check_name_length(name) {
        return Some(format!("`node_name` {why}"));
    }
    let ok = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    (!ok).then(|| "`node_name` may only hold letters, digits, `-`, `_` and `.`".to_string())
}

/// A trusted key file that cannot be read or holds no OpenPGP public key,
/// parsed exactly as the release verifier will.
fn check_trusted_key_file(host: &dyn Host, path: &Path) -> Option<String> {
    let what = "`release.trusted_key_files` entry";
    let bytes = match host.read_file(path, limits::KEY_FILE_BYTES) {
        Ok(b) => b,
        Err(e) => return Some(format!("failed to read {what} {}: {e}", path.display())),
    };
    let origin = path.display().to_string();
    // rPGP's own message quotes raw bytes: not for an operator.
    crate::release::verify::check_public_key_bytes(&bytes, &origin)
        .err()
        .map(|_| {
            format!(
                "{what} {} is not an OpenPGP public key (armored or binary)",
                path.display()
            )
        })
}

/// A list of strings with its position.
type SpList = Spanned<Vec<SpStr>>;

/// Every string of the role file longer than anything it could mean.
fn check_lengths(raw: &RawRole) -> Vec<(Range<usize>, String)> {
    use limits::{ADDRESS_CHARS, PATH_CHARS, VERSION_CHARS};
    let (rc, rn, rr, rd) = (&raw.consul, &raw.nomad, &raw.release, &raw.discovery);
    let single: [(&Option<SpStr>, &str, usize); 20] = [
        (&raw.log_level, "log_level", VERSION_CHARS),
        (&raw.addresses.bind, "addresses.bind", ADDRESS_CHARS),
        (&raw.addresses.private, "addresses.private", ADDRESS_CHARS),
        (&raw.addresses.public, "addresses.public", ADDRESS_CHARS),
        (&rc.version, "consul.version", VERSION_CHARS),
        (&rc.encrypt_key_file, "consul.encrypt_key_file", PATH_CHARS),
        (&rc.tls.ca_file, "consul.tls.ca_file", PATH_CHARS),
        (&rc.tls.cert_file, "consul.tls.cert_file", PATH_CHARS),
        (&rc.tls.key_file, "consul.tls.key_file", PATH_CHARS),
        (&rn.version, "nomad.version", VERSION_CHARS),
        (&rn.encrypt_key_file, "nomad.encrypt_key_file", PATH_CHARS),
        (&rn.tls.ca_file, "nomad.tls.ca_file", PATH_CHARS),
        (&rn.tls.cert_file, "nomad.tls.cert_file", PATH_CHARS),
        (&rn.tls.key_file, "nomad.tls.key_file", PATH_CHARS),
        (&rr.mirror, "release.mirror", ADDRESS_CHARS),
        (
            &rd.consul_address,
            "discovery.consul_address",
            ADDRESS_CHARS,
        ),
        (&raw.health.listen, "health.listen", ADDRESS_CHARS),
        (&raw.paths.config_dir, "paths.config_dir", PATH_CHARS),
        (&raw.paths.state_dir, "paths.state_dir", PATH_CHARS),
        (&rn.advertise, "nomad.advertise", VERSION_CHARS),
    ];
    let lists: [(&Option<SpList>, &str, usize); 5] = [
        (
            &rr.trusted_key_files,
            "release.trusted_key_files",
            PATH_CHARS,
        ),
        (
            &rd.consul_retry_join,
            "discovery.consul_retry_join",
            ADDRESS_CHARS,
        ),
        (
            &rd.consul_retry_join_wan,
            "discovery.consul_retry_join_wan",
            ADDRESS_CHARS,
        ),
        (
            &rd.nomad_retry_join,
            "discovery.nomad_retry_join",
            ADDRESS_CHARS,
        ),
        (
            &rd.cloud_auto_join,
            "discovery.cloud_auto_join",
            ADDRESS_CHARS,
        ),
    ];
    let entries = single
        .into_iter()
        .filter_map(|(v, key, max)| v.as_ref().map(|s| (s, key, max)))
        .chain(lists.into_iter().flat_map(|(v, key, max)| {
            v.iter()
                .flat_map(|l| l.get_ref())
                .map(move |s| (s, key, max))
        }));
    entries
        .filter(|(s, _, max)| s.get_ref().chars().count() > *max)
        .map(|(s, key, max)| {
            (
                s.span(),
                format!(
                    "`{key}` is {} characters long, at most {max} are allowed",
                    s.get_ref().chars().count()
                ),
            )
        })
        .collect()
}

/// Every list with more entries than anything it could mean.
fn check_list_sizes(raw: &RawRole) -> Vec<(Range<usize>, String)> {
    let rd = &raw.discovery;
    [
        (&raw.roles, "roles"),
        (&raw.release.trusted_key_files, "release.trusted_key_files"),
        (&rd.consul_retry_join, "discovery.consul_retry_join"),
        (&rd.consul_retry_join_wan, "discovery.consul_retry_join_wan"),
        (&rd.nomad_retry_join, "discovery.nomad_retry_join"),
        (&rd.cloud_auto_join, "discovery.cloud_auto_join"),
    ]
    .into_iter()
    .filter_map(|(v, key)| v.as_ref().map(|l| (l, key)))
    .filter(|(l, _)| l.get_ref().len() > limits::LIST_ENTRIES)
    .map(|(l, key)| {
        (
            l.span(),
            format!(
                "`{key}` has {} entries, at most {} are allowed",
                l.get_ref().len(),
                limits::LIST_ENTRIES
            ),
        )
    })
    .collect()
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
    fn names_follow_the_agents_own_rules() {
        for ok in ["ams2", "lon1", "dc_1-a", &"d".repeat(63)] {
            assert_eq!(check_datacenter_name(ok), None, "{ok}");
        }
        for bad in [
            "DC1",
            "dc.1",
            "ams 2",
            "",
            "dc*",
            "dc\0",
            "dé",
            &"d".repeat(64),
        ] {
            assert!(check_datacenter_name(bad).is_some(), "{bad:?}");
        }
        for ok in ["eu", "global", "EU-West_1"] {
            assert_eq!(check_region_name(ok), None, "{ok}");
        }
        for bad in ["eu.west", "", "e u", &"r".repeat(64)] {
            assert!(check_region_name(bad).is_some(), "{bad:?}");
        }
        for ok in ["ams2-server-01", "ams2-server-01.eu.example", "n_1"] {
            assert_eq!(check_node_name(ok), None, "{ok}");
        }
        for bad in ["", "a b", "n\u{202e}", &"n".repeat(1_000_000)] {
            assert!(
                check_node_name(bad).is_some(),
                "{:?}",
                &bad[..bad.len().min(8)]
            );
        }
    }

    #[test]
    fn a_number_outside_its_range_says_the_range() {
        assert_eq!(
            check_range("delay_secs", 5, &limits::RESTART_DELAY_SECS),
            None
        );
        assert_eq!(
            check_range("delay_secs", u64::MAX, &limits::RESTART_DELAY_SECS).as_deref(),
            Some("delay_secs must be between 0 and 3600 (got 18446744073709551615)")
        );
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

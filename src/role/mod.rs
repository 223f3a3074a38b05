//! The role file: TOML → `RawRole` (a serde mirror that denies
//! unknown keys) → validated [`NodeRole`].
//!
//! This module owns reading and checking the role file, including the few
//! facts it needs from the machine (hostname, interface addresses, key
//! files), all behind [`Host`]. It must not write anything, and it never
//! prints a secret: gossip keys are held in [`Secret`].

mod diag;
pub mod file;
mod host;
pub mod limits;
pub mod names;
mod raw;
pub mod security;
mod validate;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use diag::Problem;
pub use host::{Host, StaticHost, SystemHost, is_private_network};

use crate::version::VersionSpec;
use crate::vocab::RestartPolicy;

/// The only role file format version this supervisor reads.
pub const SCHEMA_VERSION: i64 = 1;

/// Role names as written in the role file and on `--role`.
pub const ROLE_NAMES: [&str; 5] = [
    "consul-server",
    "consul-client",
    "nomad-server",
    "nomad-client",
    "dev",
];

/// Which agents run on this node, and in which mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RoleSet {
    /// Consul in server mode.
    pub consul_server: bool,
    /// Consul in client mode.
    pub consul_client: bool,
    /// Nomad with `server.enabled`.
    pub nomad_server: bool,
    /// Nomad with `client.enabled`.
    pub nomad_client: bool,
    /// `dev`: all of the above on one node, single-node clusters.
    pub dev: bool,
}

impl RoleSet {
    /// Whether a Consul agent runs here.
    pub fn is_consul(&self) -> bool {
        self.consul_server || self.consul_client
    }

    /// Whether a Nomad agent runs here.
    pub fn is_nomad(&self) -> bool {
        self.nomad_server || self.nomad_client
    }
}

/// A secret read from a file (a gossip key). Its `Debug`, `Display` and
/// `Serialize` never show the value; only the renderer reads it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// What a [`Secret`] shows instead of its value.
pub const REDACTED: &str = "<redacted>";

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value. Call only to put it into a rendered file.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

/// A cloud auto-join string as it may be shown (`check`, `/v1/status`,
/// logs): the values of credential arguments (`secret_access_key`,
/// `client_secret`, `key`, ...) replaced by [`REDACTED`]. The rendered
/// Consul config keeps the real string.
pub fn redact_cloud_auto_join(s: &str) -> String {
    validate::redact_cloud_auto_join(s)
}

/// Serializes a list of `retry_join` or cloud auto-join strings with
/// [`redact_cloud_auto_join`] applied to each `provider=` entry.
pub fn ser_redacted_joins<S: serde::Serializer>(v: &[String], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|j| shown_join(j)))
}

/// A `retry_join` entry as it may be shown: cloud auto-join strings
/// redacted, addresses as they are.
pub fn shown_join(j: &str) -> String {
    if j.trim_start().starts_with("provider=") {
        redact_cloud_auto_join(j)
    } else {
        j.to_string()
    }
}

/// A gossip encryption key and the file it came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GossipKey {
    /// Where the key was read from.
    pub file: PathBuf,
    /// The base64 key.
    pub key: Secret,
}

/// TLS files of one agent (all three or none).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TlsFiles {
    /// CA certificate.
    pub ca_file: PathBuf,
    /// This agent's certificate.
    pub cert_file: PathBuf,
    /// This agent's private key.
    pub key_file: PathBuf,
}

/// Which of the node's addresses Nomad advertises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AdvertiseScope {
    /// The private (LAN) address.
    Private,
    /// The public (WAN) address: for Nomad servers that span datacenters.
    Public,
}

/// The node's addresses, resolved.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Addresses {
    /// Address the agents bind to (`0.0.0.0` = all).
    pub bind: IpAddr,
    /// Private (LAN) address: advertised to the datacenter.
    pub private: IpAddr,
    /// Public (WAN) address, if the node has one.
    pub public: Option<IpAddr>,
}

/// Consul settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ConsulRole {
    /// Version to run.
    #[serde(serialize_with = "ser_display")]
    pub version: VersionSpec,
    /// Servers expected before bootstrapping (servers only).
    pub bootstrap_expect: u32,
    /// Gossip key.
    pub encrypt: Option<GossipKey>,
    /// Whether the web UI is served.
    pub ui: bool,
    /// TLS files.
    pub tls: Option<TlsFiles>,
    /// Restart policy.
    pub restart: RestartPolicy,
    /// Grace before SIGKILL, if overridden.
    pub stop_timeout: Option<Duration>,
    /// Whether a server leaves the cluster on stop (clients always leave).
    pub leave_on_stop: bool,
    /// Unix user Consul runs as: `[consul] user`, else `consul`.
    pub user: String,
    /// `[consul.extra]`, merged last into the rendered config.
    pub extra: toml::Table,
}

/// Nomad settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NomadRole {
    /// Version to run.
    #[serde(serialize_with = "ser_display")]
    pub version: VersionSpec,
    /// Servers expected before bootstrapping (servers only).
    pub bootstrap_expect: u32,
    /// Gossip key (servers).
    pub encrypt: Option<GossipKey>,
    /// Which address is advertised.
    pub advertise: AdvertiseScope,
    /// TLS files.
    pub tls: Option<TlsFiles>,
    /// Whether Nomad's HTTP API uses TLS too.
    pub tls_http: bool,
    /// Restart policy.
    pub restart: RestartPolicy,
    /// Grace before SIGKILL, if overridden.
    pub stop_timeout: Option<Duration>,
    /// Whether a server leaves the cluster on stop (clients always leave).
    pub leave_on_stop: bool,
    /// Client drain deadline on stop (`client.drain_on_shutdown`).
    pub drain_deadline: Option<Duration>,
    /// Unix user Nomad runs as: `[nomad] user`, else `nomad` for a
    /// server-only Nomad and `root` for a client (its task drivers need root).
    pub user: String,
    /// `[nomad.extra]`, merged last into the rendered config.
    pub extra: toml::Table,
}

/// Release settings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReleaseRole {
    /// Mirror URL or absolute directory.
    pub mirror: String,
    /// Whether HashiCorp's embedded key is trusted.
    pub trust_hashicorp_key: bool,
    /// Extra trusted OpenPGP key files.
    pub trusted_key_files: Vec<PathBuf>,
    /// Installed versions kept per product.
    pub keep_versions: usize,
    /// Upper bound on one download.
    pub max_download_bytes: u64,
}

/// Discovery settings: static lists plus the providers that find peers
/// at run time (`catalog::discovery`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Discovery {
    /// Consul LAN peers (`retry_join`).
    pub consul_retry_join: Vec<String>,
    /// Consul WAN peers (`retry_join_wan`, servers only).
    pub consul_retry_join_wan: Vec<String>,
    /// Nomad servers to join (`server_join.retry_join`).
    pub nomad_retry_join: Vec<String>,
    /// Consul HTTP address for a node without a local Consul (`host:port`).
    pub consul_address: Option<String>,
    /// Cloud auto-join strings, passed to Consul's `retry_join` as written
    /// (serialised with their credentials redacted).
    #[serde(serialize_with = "ser_redacted_joins")]
    pub cloud_auto_join: Vec<String>,
    /// Announce this node and browse for the others over mDNS/DNS-SD
    /// (`mdns`; default: on when the private address is a private,
    /// non-loopback address).
    pub mdns: bool,
    /// The DNS provider (`[discovery.dns]`), when configured.
    pub dns: Option<DnsDiscovery>,
}

/// `[discovery.dns]`: names re-resolved on an interval. A name starting
/// with `_` is an SRV name (`_consul-server._tcp.ams2.example`), any other
/// an A/AAAA name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DnsDiscovery {
    /// Nameserver to ask (`ip` or `ip:port`); `None`: the system's
    /// resolver configuration (`/etc/resolv.conf`).
    pub nameserver: Option<SocketAddr>,
    /// Consul servers of this node's datacenter (LAN `retry_join`, and the
    /// Consul address of a Nomad without a local Consul).
    pub consul_servers: Vec<String>,
    /// Consul servers of other datacenters (`retry_join_wan`).
    pub consul_wan: Vec<String>,
    /// Nomad servers (`server_join`).
    pub nomad_servers: Vec<String>,
    /// How often the names are resolved again (also after a failure, with
    /// backoff up to this interval).
    pub interval: Duration,
}

/// Which identity values the role file left to their defaults, and so may
/// be learned from discovery (a client started with `--role nomad-client`
/// alone learns its region and datacenter from the announcements of the
/// Consul servers on its LAN).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Learnable {
    /// `region` was not written.
    pub region: bool,
    /// `datacenter` was not written.
    pub datacenter: bool,
}

/// A validated role file with everything it names resolved.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NodeRole {
    /// The file it came from (`None`: defaults and `--role` only).
    pub source: Option<PathBuf>,
    /// Role names, sorted and deduplicated.
    pub role_names: Vec<String>,
    /// The roles.
    pub roles: RoleSet,
    /// Nomad region.
    pub region: String,
    /// Datacenter.
    pub datacenter: String,
    /// Which of region and datacenter are defaults that discovery may
    /// replace ([`NodeRole::learn`]).
    pub learnable: Learnable,
    /// Node name.
    pub node_name: String,
    /// Agents' log level (`INFO`, ...).
    pub log_level: String,
    /// Addresses.
    pub addresses: Addresses,
    /// Consul settings.
    pub consul: ConsulRole,
    /// Nomad settings.
    pub nomad: NomadRole,
    /// Release settings.
    pub release: ReleaseRole,
    /// Discovery settings.
    pub discovery: Discovery,
    /// Health endpoint listen address.
    pub health_listen: SocketAddr,
    /// `[security]` and the node's security material.
    pub security: security::SecurityRole,
    /// Where rendered configs go.
    pub config_dir: PathBuf,
    /// Where releases and data go.
    pub state_dir: PathBuf,
    /// `[upgrade]`: how rolling upgrades go.
    pub upgrade: UpgradeRole,
}

/// `[upgrade]`: how the node takes part in rolling upgrades
/// (`crate::upgrade`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct UpgradeRole {
    /// Share of a datacenter's clients upgraded at once (0 < x <= 1; at
    /// least one client).
    pub client_share: f64,
    /// Time a new release has to become ready and healthy before it is
    /// rolled back.
    pub health_deadline: Duration,
    /// TTL of the upgrade lock's Consul session.
    pub lock_ttl: Duration,
}

impl Default for UpgradeRole {
    fn default() -> Self {
        Self {
            client_share: limits::DEFAULT_UPGRADE_CLIENT_SHARE,
            health_deadline: Duration::from_secs(limits::DEFAULT_UPGRADE_HEALTH_DEADLINE_SECS),
            lock_ttl: Duration::from_secs(limits::DEFAULT_UPGRADE_LOCK_TTL_SECS),
        }
    }
}

impl NodeRole {
    /// Takes a region and datacenter found by discovery for the values the
    /// role file left to their defaults; a written value always wins.
    /// Returns whether anything changed. The caller passes names discovery
    /// has already checked by the agents' rules.
    pub fn learn(&mut self, region: Option<&str>, datacenter: Option<&str>) -> bool {
        let mut changed = false;
        if let Some(r) = region.filter(|r| self.learnable.region && *r != self.region) {
            self.region = r.to_string();
            changed = true;
        }
        if let Some(d) = datacenter.filter(|d| self.learnable.datacenter && *d != self.datacenter) {
            self.datacenter = d.to_string();
            changed = true;
        }
        changed
    }
}

/// Why a role file was refused.
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    /// The role file could not be read.
    #[error("failed to read role file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: file::FileError,
    },
    /// The role file has problems (syntax, keys, types or meaning).
    #[error("{}", format_invalid(path, problems))]
    Invalid {
        /// The file (or `--role` when no file was read).
        path: PathBuf,
        /// Every problem found, in file order.
        problems: Vec<Problem>,
    },
}

fn format_invalid(path: &Path, problems: &[Problem]) -> String {
    let n = problems.len();
    let mut s = format!(
        "invalid role file {} ({n} problem{})",
        path.display(),
        if n == 1 { "" } else { "s" }
    );
    for p in problems {
        s.push('\n');
        s.push_str(&p.to_string());
    }
    s
}

/// A validated role file and the SHA-256 (lowercase hex) of exactly the
/// bytes that were validated (empty when no file was read: defaults and
/// `--role` only).
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedRole {
    /// The validated role.
    pub role: NodeRole,
    /// SHA-256 of the bytes read, hex; empty without a file.
    pub hash: String,
}

/// What the command line adds to the role file: `--role` (replaces
/// `roles`), `--join-token` and `--join-token-file` (replace
/// `[security] join_token_file`).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--role`.
    pub roles: Vec<String>,
    /// `--join-token`.
    pub join_token: Option<Secret>,
    /// `--join-token-file`.
    pub join_token_file: Option<PathBuf>,
    /// `supervisor cluster ...`: the command makes (`init`) or manages
    /// (`token`) the cluster's material itself, so the secure-by-default
    /// refusal (no material, no token) does not apply.
    pub cluster_command: bool,
}

impl Overrides {
    /// Only `--role`.
    pub fn roles(roles: &[String]) -> Self {
        Self {
            roles: roles.to_vec(),
            ..Self::default()
        }
    }
}

/// [`load_with`] with only `--role` from the command line.
pub fn load(
    path: &Path,
    must_exist: bool,
    roles_override: &[String],
    host: &dyn Host,
) -> Result<LoadedRole, RoleError> {
    load_with(path, must_exist, &Overrides::roles(roles_override), host)
}

/// Reads (once, through [`file::read_regular`]) and validates the role
/// file at `path` (a missing file is allowed when `must_exist` is false),
/// with the command line's `overrides`, against `host`; hashes the bytes
/// it validated. The only reader of the role file.
pub fn load_with(
    path: &Path,
    must_exist: bool,
    overrides: &Overrides,
    host: &dyn Host,
) -> Result<LoadedRole, RoleError> {
    let bytes = match file::read_regular(path, limits::ROLE_FILE_BYTES) {
        Ok(b) => Some(b),
        Err(file::FileError::Open(e))
            if e.kind() == std::io::ErrorKind::NotFound && !must_exist =>
        {
            None
        }
        Err(source) => {
            return Err(RoleError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let Some(bytes) = bytes else {
        let role = validate::validate(None, "", raw::RawRole::default(), overrides, host)?;
        return Ok(LoadedRole {
            role,
            hash: String::new(),
        });
    };
    let hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    let text = file::into_text(bytes).map_err(|source| RoleError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let role = parse_with(path, &text, overrides, host)?;
    Ok(LoadedRole { role, hash })
}

/// [`parse_with`] with only `--role` from the command line.
pub fn parse(
    path: &Path,
    text: &str,
    roles_override: &[String],
    host: &dyn Host,
) -> Result<NodeRole, RoleError> {
    parse_with(path, text, &Overrides::roles(roles_override), host)
}

/// Validates role file text as if read from `path` (relative key file paths
/// resolve against `path`'s directory), with the command line's
/// `overrides`.
pub fn parse_with(
    path: &Path,
    text: &str,
    overrides: &Overrides,
    host: &dyn Host,
) -> Result<NodeRole, RoleError> {
    let raw: raw::RawRole = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            return Err(RoleError::Invalid {
                path: path.to_path_buf(),
                problems: shape_problems(path, text, &e),
            });
        }
    };
    validate::validate(Some(path), text, raw, overrides, host)
}

/// At most this many key/type problems are collected from one file.
const MAX_SHAPE_PROBLEMS: usize = 20;

/// Every key or type problem of `text`, starting with `first` (the parser
/// stops at one): the offending line is blanked (offsets kept) and the text
/// parsed again, as long as each problem sits on a plain `key = value` line
/// and blanking it leaves valid TOML. Syntax errors, table headers and
/// problems without a position end the collection, so nothing reported is a
/// consequence of the blanking.
fn shape_problems(path: &Path, text: &str, first: &toml::de::Error) -> Vec<Problem> {
    let file = path.display().to_string();
    let problem = |e: &toml::de::Error| {
        let location = e.span().map_or(diag::Location::File, diag::Location::Span);
        Problem::new(
            &file,
            text,
            &location,
            validate::describe_toml_error(e.message()),
        )
    };
    let at = |e: &toml::de::Error| e.span().map_or(0, |s| s.start);
    let mut problems = vec![(at(first), problem(first))];
    let mut work = text.to_string();
    let mut span = first.span();
    while let Some(sp) = span.take() {
        if problems.len() >= MAX_SHAPE_PROBLEMS || !blank_key_line(&mut work, sp.start) {
            break;
        }
        // Only a key or type error is worth going on for: a syntax error now
        // would be of our own making.
        if toml::from_str::<toml::Table>(&work).is_err() {
            break;
        }
        match toml::from_str::<raw::RawRole>(&work) {
            Ok(_) => break,
            Err(e) => {
                problems.push((at(&e), problem(&e)));
                span = e.span();
            }
        }
    }
    // In file order, as the semantic problems are.
    problems.sort_by_key(|(at, _)| *at);
    problems.into_iter().map(|(_, p)| p).collect()
}

/// Replaces with spaces (byte offsets kept) the line holding byte `at` when
/// it is a plain `key = value` line, or the whole table when it is a table
/// header (up to the next header: an unknown table's keys cannot be checked
/// anyway). False, and nothing changed, for anything else (a multi-line
/// value's first line).
fn blank_key_line(text: &mut String, at: usize) -> bool {
    let Some(head) = text.get(..at) else {
        return false;
    };
    let start = head.rfind('\n').map_or(0, |i| i + 1);
    let line_end = |from: usize| text[from..].find('\n').map_or(text.len(), |i| from + i);
    let end = line_end(start);
    let line = text[start..end].trim();
    let end = if line.starts_with('[') {
        // Through the line before the next header.
        let mut cur = end;
        while cur < text.len() {
            let next = cur + 1;
            if text[next..]
                .trim_start_matches([' ', '\t'])
                .starts_with('[')
            {
                break;
            }
            cur = line_end(next);
        }
        cur
    } else {
        let opens = |c: char| line.matches(c).count();
        let plain = line.contains('=')
            && opens('[') == opens(']')
            && opens('{') == opens('}')
            && !line.contains("\"\"\"")
            && !line.contains("\'\'\'");
        if !plain {
            return false;
        }
        end
    };
    // Byte for byte, so every later span keeps its offset.
    let blank: String = text[start..end]
        .bytes()
        .map(|b| if b == b'\n' { '\n' } else { ' ' })
        .collect();
    text.replace_range(start..end, &blank);
    true
}

/// Test support: `text` with `[security] plaintext = true` added (unless it
/// has a `[security]` table), for role texts of tests that are not about
/// security: secure by default refuses a multi-node role without it.
#[cfg(test)]
pub(crate) fn with_plaintext(text: &str) -> String {
    if text.contains("[security]") {
        text.to_string()
    } else {
        format!("{text}\n[security]\nplaintext = true\n")
    }
}

fn ser_display<T: fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> StaticHost {
        StaticHost {
            hostname: Some("node-7".into()),
            interfaces: vec![
                ("lo".into(), "127.0.0.1".parse().unwrap()),
                ("eth0".into(), "203.0.113.7".parse().unwrap()),
                ("eth1".into(), "10.0.2.7".parse().unwrap()),
            ],
            ..StaticHost::default()
        }
    }

    fn load_text(text: &str, roles: &[&str]) -> Result<NodeRole, RoleError> {
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        parse(
            Path::new("/etc/hashi-supervisor/node.toml"),
            &with_plaintext(text),
            &roles,
            &host(),
        )
    }

    /// A join token of the right shape (never a real one).
    const TOKEN: &str = "abc123.0123456789abcdef@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn with_token(roles: &[&str]) -> Overrides {
        Overrides {
            roles: roles.iter().map(|r| r.to_string()).collect(),
            join_token: Some(Secret::new(TOKEN)),
            ..Overrides::default()
        }
    }

    #[test]
    fn role_flag_without_a_file_uses_defaults_hostname_and_auto_address() {
        let dir = std::env::temp_dir().join("hashi-supervisor-no-such-dir");
        // Secure by default: `--role` alone needs a join token.
        let loaded = load_with(
            &dir.join("node.toml"),
            false,
            &with_token(&["consul-client"]),
            &host(),
        )
        .unwrap();
        assert_eq!(loaded.hash, "", "no file, nothing hashed");
        let r = loaded.role;
        assert_eq!(r.source, None);
        assert_eq!(r.node_name, "node-7");
        assert_eq!(r.datacenter, "dc1");
        assert_eq!(r.region, "global");
        assert_eq!(
            r.addresses.private.to_string(),
            "10.0.2.7",
            "first private IPv4"
        );
        assert_eq!(r.consul.version, VersionSpec::Latest);
    }

    #[test]
    fn upgrade_settings_default_and_every_value_out_of_range_is_located() {
        let base = "schema = 1\nroles = [\"dev\"]\n";
        let r = load_text(base, &[]).unwrap();
        assert_eq!(r.upgrade, UpgradeRole::default());
        assert_eq!(r.upgrade.client_share, 0.25);
        assert_eq!(r.upgrade.health_deadline, Duration::from_secs(120));
        let r = load_text(
            &format!("{base}[upgrade]\nclient_share = 0.5\nhealth_deadline_secs = 30\nlock_ttl_secs = 20\n"),
            &[],
        )
        .unwrap();
        assert_eq!(
            (
                r.upgrade.client_share,
                r.upgrade.health_deadline,
                r.upgrade.lock_ttl
            ),
            (0.5, Duration::from_secs(30), Duration::from_secs(20))
        );
        let bad = format!(
            "{base}[upgrade]\nclient_share = 0.0\nhealth_deadline_secs = 5\nlock_ttl_secs = 7200\n"
        );
        let Err(RoleError::Invalid { problems, .. }) = load_text(&bad, &[]) else {
            panic!("out-of-range [upgrade] values accepted");
        };
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        let all = text.join("\n");
        assert_eq!(problems.len(), 3, "{all}");
        for want in [
            "node.toml:4:16",
            "client_share must be more than 0 and at most 1 (got 0)",
            "node.toml:5:24",
            "health_deadline_secs must be between 10 and 3600 (got 5)",
            "node.toml:6:17",
            "lock_ttl_secs must be between 10 and 3600 (got 7200)",
        ] {
            assert!(all.contains(want), "{want} in:\n{all}");
        }
        for nan in ["nan", "inf", "-0.1", "1.5"] {
            let t = format!("{base}[upgrade]\nclient_share = {nan}\n");
            assert_eq!(problem_count(&t), 1, "{nan}");
        }
    }

    #[test]
    fn health_listens_on_the_private_address_by_default() {
        let r = load_text(
            "schema = 1\nroles = [\"consul-server\"]\n[addresses]\nprivate = \"eth1\"\npublic = \"eth0\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(r.health_listen.to_string(), "10.0.2.7:4680");
        let dev = load_text("schema = 1\nroles = [\"dev\"]\n", &[]).unwrap();
        assert_eq!(dev.health_listen.to_string(), "127.0.0.1:4680");
        let every = load_text(
            "schema = 1\nroles = [\"dev\"]\n[health]\nlisten = \"0.0.0.0:9999\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(every.health_listen.to_string(), "0.0.0.0:9999");
    }

    fn problem_count(text: &str) -> usize {
        match load_text(text, &[]) {
            Err(RoleError::Invalid { problems, .. }) => problems.len(),
            other => panic!("expected an invalid role, got {other:?}"),
        }
    }

    #[test]
    fn key_and_type_problems_are_all_reported_but_never_made_up() {
        let base = "schema = 1\nroles = [\"consul-server\"]\n";
        // Three plain lines: all three.
        assert_eq!(
            problem_count(&format!(
                "{base}node_nmae = \"a\"\nlog_levle = \"info\"\n[consul]\nbootstrap_expect = \"one\"\n"
            )),
            3
        );
        // An unknown table goes whole (its keys cannot be checked, and
        // must not land in another table).
        assert_eq!(
            problem_count(&format!(
                "{base}node_nmae = \"a\"\n[consull]\nversion = \"1.0.0\"\nbootstrap = 1\n[consul]\nbootstrap_expect = \"x\"\n"
            )),
            3
        );
        // A multi-line value cannot be blanked line-wise: collection stops
        // at it (keys are visited in name order: `zz_key` is not reached).
        assert_eq!(
            problem_count(&format!(
                "{base}retry_jion = [\n  \"a\",\n]\nnode_nmae = \"a\"\nzz_key = 1\n"
            )),
            2
        );
    }

    #[test]
    fn the_hash_is_of_exactly_the_bytes_validated() {
        use sha2::Digest;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        let text = "schema = 1\nroles = [\"dev\"]\n";
        std::fs::write(&path, text).unwrap();
        let loaded = load(&path, true, &[], &host()).unwrap();
        assert_eq!(loaded.hash, hex::encode(sha2::Sha256::digest(text)));
        assert_eq!(loaded.role.source.as_deref(), Some(path.as_path()));
        assert!(loaded.role.roles.consul_server);
        std::fs::write(&path, format!("{text}# a comment\n")).unwrap();
        assert_ne!(load(&path, true, &[], &host()).unwrap().hash, loaded.hash);
    }

    #[test]
    fn missing_file_named_explicitly_is_an_error() {
        let dir = std::env::temp_dir().join("hashi-supervisor-no-such-dir");
        let e = load(&dir.join("node.toml"), true, &["dev".into()], &host()).unwrap_err();
        assert!(matches!(e, RoleError::Read { .. }));
    }

    #[test]
    fn dev_runs_everything_on_loopback_with_single_node_clusters() {
        let r = load_text("schema = 1\nroles = [\"dev\"]\n", &[]).unwrap();
        assert!(r.roles.consul_server && r.roles.nomad_server && r.roles.nomad_client);
        assert!(!r.roles.consul_client);
        assert_eq!(r.consul.bootstrap_expect, 1);
        assert_eq!(r.nomad.bootstrap_expect, 1);
        assert_eq!(r.addresses.private.to_string(), "127.0.0.1");
        assert_eq!(r.addresses.bind.to_string(), "127.0.0.1");
    }

    #[test]
    fn interface_names_resolve_to_their_first_ipv4() {
        let r = load_text(
            "schema = 1\nroles = [\"consul-server\"]\n[addresses]\nprivate = \"eth1\"\npublic = \"eth0\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(r.addresses.private.to_string(), "10.0.2.7");
        assert_eq!(
            r.addresses.public.map(|a| a.to_string()).as_deref(),
            Some("203.0.113.7")
        );
    }

    #[test]
    fn every_problem_is_reported_not_just_the_first() {
        let e = load_text(
            "schema = 1\nroles = [\"nomad-server\"]\n[consul]\nversion = \"newest\"\n[nomad]\nbootstrap_expect = 0\n[discovery]\nmdns = false\n",
            &[],
        )
        .unwrap_err();
        let RoleError::Invalid { problems, .. } = &e else {
            panic!("{e}")
        };
        assert_eq!(problems.len(), 3, "{e}");
        let text = e.to_string();
        assert!(
            text.starts_with("invalid role file /etc/hashi-supervisor/node.toml (3 problems)\n")
        );
        assert!(text.contains("/etc/hashi-supervisor/node.toml:4:11: `newest` is neither"));
    }

    #[test]
    fn relative_key_files_resolve_beside_the_role_file() {
        let mut h = host();
        h.files.insert(
            PathBuf::from("/etc/hashi-supervisor/k.key"),
            "AAAAAAAAAAAAAAAAAAAAAA==\n".into(),
        );
        let r = parse(
            Path::new("/etc/hashi-supervisor/node.toml"),
            "schema = 1\nroles = [\"consul-client\"]\n[consul]\nencrypt_key_file = \"k.key\"\n[security]\nplaintext = true\n",
            &[],
            &h,
        )
        .unwrap();
        let k = r.consul.encrypt.unwrap();
        assert_eq!(k.file, Path::new("/etc/hashi-supervisor/k.key"));
        assert_eq!(k.key.expose(), "AAAAAAAAAAAAAAAAAAAAAA==");
        assert_eq!(format!("{:?}", k.key), REDACTED);
    }

    #[test]
    fn default_role_file_documents_the_ranges_in_force() {
        let text = include_str!("../../config/node.toml").replace("\n# ", " ");
        let range = |r: &std::ops::RangeInclusive<u64>| format!("{} to {}", r.start(), r.end());
        for want in [
            format!("Range: {}.", range(&limits::STOP_TIMEOUT_SECS)),
            format!("Range: {}.", range(&limits::DRAIN_DEADLINE_SECS)),
            format!("Range: {}.", range(&limits::BOOTSTRAP_EXPECT)),
            format!("Range: {}.", range(&limits::KEEP_VERSIONS)),
            format!("attempts {}", range(&limits::RESTART_ATTEMPTS)),
            format!("interval_secs {}", range(&limits::RESTART_INTERVAL_SECS)),
            format!("max_delay_secs {}", range(&limits::RESTART_MAX_DELAY_SECS)),
            format!(
                "stable_after_secs {}",
                range(&limits::RESTART_STABLE_AFTER_SECS)
            ),
            format!("Range: {} (1 MiB)", limits::MAX_DOWNLOAD_BYTES.start()),
            format!("to {} (4 GiB)", limits::MAX_DOWNLOAD_BYTES.end()),
            format!("At most {} characters", limits::NAME_CHARS),
            format!("Range: {}.", range(&limits::DNS_INTERVAL_SECS)),
            format!("at most {} characters", limits::DNS_NAME_CHARS),
            format!("labels of at most {}", limits::DNS_LABEL_CHARS),
            format!("at most {} names", limits::DNS_NAMES),
            format!("Range: {}.", range(&limits::CERT_DAYS)),
            format!("At most {} entries", limits::JOIN_ADDRESSES),
            format!("at most {} bytes", limits::JOIN_TOKEN_FILE_BYTES),
        ] {
            assert!(
                text.contains(&want),
                "config/node.toml does not say {want:?}"
            );
        }
    }

    #[test]
    fn the_shipped_role_file_with_role_nomad_client_alone_is_valid_on_a_lan() {
        // The package's promise: its default role file,
        // `HASHI_SUPERVISOR_ROLE=nomad-client` and a join token
        // (`HASHI_SUPERVISOR_JOIN_TOKEN`) on a fresh LAN node.
        let r = parse_with(
            Path::new("/etc/hashi-supervisor/node.toml"),
            include_str!("../../config/node.toml"),
            &with_token(&["nomad-client"]),
            &host(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(r.discovery.mdns, "mDNS finds its Consul server");
        assert_eq!(r.discovery.dns, None);
        assert!(r.learnable.region && r.learnable.datacenter);
        assert!(r.security.join_token.is_some());
        // Without the token, secure by default refuses it, at `--role`.
        let e = parse(
            Path::new("/etc/hashi-supervisor/node.toml"),
            include_str!("../../config/node.toml"),
            &["nomad-client".into()],
            &host(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("--role: these roles span more than one node"),
            "{e}"
        );
    }

    #[test]
    fn default_role_file_documents_only_real_keys() {
        let text = include_str!("../../config/node.toml");
        let uncommented: String = text
            .lines()
            .map(|l| {
                let t = l.strip_prefix("# ").unwrap_or(l);
                let is_setting = t.split_once(" = ").is_some_and(|(k, _)| {
                    !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                }) || (t.starts_with('[') && t.ends_with(']') && !t.contains(' '));
                if is_setting {
                    t.to_string()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            uncommented.contains("\nroles = ["),
            "settings were uncommented"
        );
        if let Err(e) = toml::from_str::<raw::RawRole>(&uncommented) {
            panic!("config/node.toml documents a key the role file does not have: {e}");
        }
    }
}

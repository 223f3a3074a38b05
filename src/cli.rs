//! Command-line definitions (clap). Parsing only: no behaviour here.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::paths::DEFAULT_ROLE_FILE;

/// Installs, configures and supervises Consul and Nomad on this node.
#[derive(Debug, Parser)]
#[command(name = "supervisor", version, about, long_about = None)]
pub struct Cli {
    /// Options shared by every command.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do (default: `run`).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Options shared by every command. Its `Debug` never shows the join
/// token.
#[derive(Clone, Args)]
pub struct GlobalArgs {
    /// Role file. A missing file at the default path is allowed when
    /// `--role` is given; a missing file named explicitly is an error.
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "HASHI_SUPERVISOR_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,
    /// Roles for this node, overriding the role file's `roles`
    /// (comma-separated: consul-server, consul-client, nomad-server,
    /// nomad-client, dev).
    #[arg(
        long,
        global = true,
        env = "HASHI_SUPERVISOR_ROLE",
        value_delimiter = ',',
        value_name = "ROLES"
    )]
    pub role: Vec<String>,
    /// Log level of the supervisor itself (error, warn, info, debug, trace).
    #[arg(
        long,
        global = true,
        env = "HASHI_SUPERVISOR_LOG",
        default_value = "info"
    )]
    pub log_level: String,
    /// Log format on stderr (journald is used by itself under systemd).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// Join token from `supervisor cluster token create` (`<id>.<secret>@sha256:<hex>`),
    /// used when this node has no certificate yet. Visible in `ps` to local
    /// users: prefer `--join-token-file` or the role file's
    /// `[security] join_token_file`.
    #[arg(
        long,
        global = true,
        env = "HASHI_SUPERVISOR_JOIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub join_token: Option<String>,
    /// File holding the join token (read as a regular file, at most 1 KiB).
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        conflicts_with = "join_token"
    )]
    pub join_token_file: Option<PathBuf>,
}

impl std::fmt::Debug for GlobalArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlobalArgs")
            .field("config", &self.config)
            .field("role", &self.role)
            .field("log_level", &self.log_level)
            .field("log_format", &self.log_format)
            .field(
                "join_token",
                &self.join_token.as_ref().map(|_| crate::role::REDACTED),
            )
            .field("join_token_file", &self.join_token_file)
            .finish()
    }
}

impl GlobalArgs {
    /// The role file to read and whether the operator named it explicitly.
    pub fn role_file(&self) -> (PathBuf, bool) {
        match &self.config {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from(DEFAULT_ROLE_FILE), false),
        }
    }
}

/// Format of log lines on stderr: `telemetry` owns it, so that it imports
/// nothing from the command line (stage 1 of the layering in `lib.rs`).
pub use crate::telemetry::LogFormat;

/// The supervisor's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node: fetch, render, start and supervise the agents (default).
    Run,
    /// Validate the role file and print the resolved plan.
    Check(CheckArgs),
    /// Render the agents' config files.
    Render(RenderArgs),
    /// Resolve, download, verify and install the releases the plan needs;
    /// start nothing.
    Fetch,
    /// List the versions a release mirror has for a product.
    Versions(VersionsArgs),
    /// Show a node's status from its health endpoint.
    Status(StatusArgs),
    /// Poll every supervisor of a fleet: which nodes are unhealthy, and why.
    /// Exit 0 all healthy, 1 any unhealthy or unreachable, 64 usage.
    Fleet(Box<FleetArgs>),
    /// Print a new gossip encryption key (32 random bytes, base64).
    Keygen,
    /// The cluster's CA, gossip keys and join tokens (secure bootstrap).
    Cluster(ClusterArgs),
    /// Print shell completions.
    #[command(hide = true)]
    Completions {
        /// Shell to generate completions for.
        shell: String,
    },
}

/// `supervisor cluster`.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ClusterCommand,
}

/// `supervisor cluster ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum ClusterCommand {
    /// On the first server: create the cluster CA, the gossip keys and this
    /// node's certificate, and print a join token for the other nodes.
    Init(ClusterInitArgs),
    /// Create, list or revoke join tokens (on a node holding the CA).
    #[command(subcommand)]
    Token(TokenCommand),
}

/// `supervisor cluster init`.
#[derive(Debug, Clone, Args)]
pub struct ClusterInitArgs {
    /// Lifetime of the printed join token (`30m`, `24h`, `7d`; 1m to 365d).
    #[arg(long, value_name = "DURATION", default_value = "24h")]
    pub token_ttl: String,
    /// Leave ACLs off (TLS and gossip encryption still on).
    #[arg(long)]
    pub no_acl: bool,
}

/// `supervisor cluster token ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum TokenCommand {
    /// Print a new join token.
    Create(TokenCreateArgs),
    /// List join tokens (ids, lifetimes, uses; never the secrets).
    List(TokenListArgs),
    /// Revoke a join token by its id.
    Revoke(TokenRevokeArgs),
}

/// `supervisor cluster token create`.
#[derive(Debug, Clone, Args)]
pub struct TokenCreateArgs {
    /// Lifetime (`30m`, `24h`, `7d`; 1m to 365d).
    #[arg(long, value_name = "DURATION", default_value = "24h")]
    pub ttl: String,
    /// A note shown by `token list` (at most 200 characters).
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
    /// The token joins clients only: no server certificate, no CA key.
    #[arg(long)]
    pub clients_only: bool,
}

/// `supervisor cluster token list`.
#[derive(Debug, Clone, Args)]
pub struct TokenListArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `supervisor cluster token revoke`.
#[derive(Debug, Clone, Args)]
pub struct TokenRevokeArgs {
    /// The token's id (the part before the dot).
    pub id: String,
}

/// `supervisor check`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
    /// Look for peers (mDNS browse, DNS, the Consul choice) for N seconds
    /// (0 to 60; 3 when not given) when the role leaves something to
    /// discovery, and exit 1 when the node would wait for what is missing.
    /// Without it, what is missing is printed but is no failure (the
    /// service's pre-start check: `run` does the waiting).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(0..=60))]
    pub discover_secs: Option<u64>,
}

/// `supervisor render`.
#[derive(Debug, Clone, Args)]
pub struct RenderArgs {
    /// Write into this directory instead of the plan's config dirs.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Write nothing; exit 1 and show a diff when the files on disk differ.
    #[arg(long)]
    pub check: bool,
}

/// `supervisor versions`.
#[derive(Debug, Clone, Args)]
pub struct VersionsArgs {
    /// `consul` or `nomad`.
    pub product: String,
    /// Mirror to ask instead of the role file's.
    #[arg(long, value_name = "URL")]
    pub mirror: Option<String>,
}

/// `supervisor status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Health endpoint to ask (default: the role file's `health.listen`).
    #[arg(long, value_name = "ADDR")]
    pub addr: Option<SocketAddr>,
    /// Print the raw JSON.
    #[arg(long)]
    pub json: bool,
}

/// `supervisor fleet`: targets from `--targets`, `--dns` and `--consul`
/// together (repeats dropped). The options also apply to `fleet serve`.
#[derive(Debug, Clone, Args)]
pub struct FleetArgs {
    /// `serve`: the live fleet page instead of one table.
    #[command(subcommand)]
    pub action: Option<FleetAction>,
    /// File of targets: one `host[:port]` a line, `#` comments.
    #[arg(long, value_name = "FILE", global = true)]
    pub targets: Vec<PathBuf>,
    /// DNS name of the fleet: A/AAAA records (default port), or SRV when
    /// the name starts with `_` (its ports).
    #[arg(long, value_name = "NAME", global = true)]
    pub dns: Vec<String>,
    /// DNS server for `--dns` (default: the system's resolv.conf).
    #[arg(long, value_name = "ADDR", global = true)]
    pub nameserver: Option<SocketAddr>,
    /// Consul HTTP address whose catalog lists the `hashi-supervisor`
    /// service, asked in every datacenter it knows.
    #[arg(long, value_name = "URL", global = true)]
    pub consul: Option<String>,
    /// Browse the supervisors' mDNS announcements (`_hashi-sup._tcp.local.`)
    /// on this interface for 3 seconds.
    #[arg(long, value_name = "IFACE", global = true)]
    pub mdns: Option<String>,
    /// File holding the Consul ACL token for `--consul`.
    #[arg(long, value_name = "FILE", global = true, requires = "consul")]
    pub token_file: Option<PathBuf>,
    /// Port of targets that name none.
    #[arg(long, value_name = "PORT", default_value_t = crate::paths::DEFAULT_HEALTH_PORT,
          value_parser = clap::value_parser!(u16).range(1..), global = true)]
    pub port: u16,
    /// Requests in flight at most.
    #[arg(long, value_name = "N", default_value_t = 256,
          value_parser = clap::value_parser!(u16).range(1..=4096), global = true)]
    pub concurrency: u16,
    /// Timeout of one request (`2`, `1.5`, `500ms`; 10ms to 60s).
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = parse_timeout, global = true)]
    pub timeout: std::time::Duration,
    /// Print the report as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// Poll again every SECS seconds, redrawing in place on a terminal.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub watch: Option<u64>,
    /// Also write the targets as a Prometheus file_sd JSON document.
    #[arg(long, value_name = "FILE", global = true)]
    pub prometheus_sd: Option<PathBuf>,
}

/// `supervisor fleet` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum FleetAction {
    /// Serve the live fleet page, `/v1/fleet` and `/metrics`, polling every
    /// `--interval` seconds.
    Serve(FleetServeArgs),
}

/// `supervisor fleet serve`.
#[derive(Debug, Clone, Args)]
pub struct FleetServeArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Seconds between polls (and the page's refresh).
    #[arg(long, value_name = "SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub interval: u64,
}

/// `--timeout`: seconds (`2`, `1.5`) or milliseconds (`500ms`), 10 ms to 60 s.
fn parse_timeout(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let d = if let Some(ms) = s.strip_suffix("ms") {
        ms.trim()
            .parse::<u64>()
            .map(std::time::Duration::from_millis)
            .map_err(|_| format!("`{s}` is not a number of milliseconds"))?
    } else {
        let secs: f64 = s
            .strip_suffix('s')
            .unwrap_or(s)
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not a number of seconds"))?;
        if !secs.is_finite() || !(0.0..=60.0).contains(&secs) {
            return Err(format!("`{s}` is out of range (10ms to 60s)"));
        }
        std::time::Duration::from_secs_f64(secs)
    };
    if d < std::time::Duration::from_millis(10) || d > std::time::Duration::from_secs(60) {
        return Err(format!("`{s}` is out of range (10ms to 60s)"));
    }
    Ok(d)
}

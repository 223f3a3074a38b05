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

/// Options shared by every command.
#[derive(Debug, Clone, Args)]
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
    /// Print a new gossip encryption key (32 random bytes, base64).
    Keygen,
    /// Print shell completions.
    #[command(hide = true)]
    Completions {
        /// Shell to generate completions for.
        shell: String,
    },
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

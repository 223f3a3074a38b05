//! STAND-IN for the `consul` and `nomad` agents, for tests only. It is not
//! HashiCorp's software and must never be presented as such: it follows the
//! real agents' contract as far as hashi-supervisor relies on it
//! (the agents' behaviour read from their source, and the API samples in
//! `tests/data/agent-api/` of this repository): `version` output,
//! `agent` config loading and refusal, the HTTP endpoints, membership between
//! stand-ins, signals and sd_notify, plus fault knobs for tests.
//!
//! The product is chosen by the file name (`consul`, `nomad`), or
//! `--product consul|nomad` as the first argument, or `STANDIN_PRODUCT`.
//! See `README.md` beside this crate for the whole env/CLI contract.

// clippy.toml's disallowed methods guard the supervisor's code. The stand-in
// imitates an agent: it exits with the agent's status, writes its own data
// dir and pidfile, and its fault knobs stall on purpose.
#![allow(
    clippy::disallowed_methods,
    reason = "a test-only imitation of consul/nomad"
)]

mod acl;
mod acl_api;
mod agent;
mod checks;
mod config;
mod consul_link;
mod datadir;
mod events;
mod gossip;
mod hcl;
mod http;
mod knobs;
mod kv;
mod kv_api;
mod link;
mod state;
mod tls;

use std::process::ExitCode;

/// Which agent the stand-in plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Product {
    Consul,
    Nomad,
}

impl Product {
    fn parse(s: &str) -> Option<Product> {
        match s {
            "consul" => Some(Product::Consul),
            "nomad" => Some(Product::Nomad),
            _ => None,
        }
    }

    /// Lower-case name as in the event log.
    pub fn name(self) -> &'static str {
        match self {
            Product::Consul => "consul",
            Product::Nomad => "nomad",
        }
    }

    /// Capitalised name as in the agents' output.
    pub fn title(self) -> &'static str {
        match self {
            Product::Consul => "Consul",
            Product::Nomad => "Nomad",
        }
    }
}

/// Default versions when no version is set (run-time `STANDIN_VERSION`, then
/// the patched version slot, then `STANDIN_VERSION` at build time).
const DEFAULT_CONSUL_VERSION: &str = "1.20.1";
const DEFAULT_NOMAD_VERSION: &str = "1.9.3";
/// Revision and build date printed by `version` (the stand-in has no real ones).
const DEFAULT_REVISION: &str = "0000000000000000000000000000000000000000";
const DEFAULT_BUILD_DATE: &str = "2024-11-20T00:00:00Z";
/// Version printed with `STANDIN_FAIL_VERSION=1`.
const WRONG_VERSION: &str = "0.0.0";

/// Version information the stand-in reports.
#[derive(Debug, Clone)]
pub struct VersionInfo {
    /// e.g. `1.20.1` or `1.9.3-beta1+ent`.
    pub full: String,
    pub revision: String,
    pub build_date: String,
}

/// Marker of the patchable version slot. A release mirror can stamp a version
/// into a copy of the binary by writing it (NUL-padded) right after this
/// marker, without rebuilding: see `patch_version` in
/// `tests/it/support/standin.rs`.
pub const VERSION_SLOT_MARKER: &[u8; 21] = b"STANDIN_VERSION_SLOT:";
/// Total size of the slot, marker included.
const VERSION_SLOT_LEN: usize = 64;

const fn version_slot() -> [u8; VERSION_SLOT_LEN] {
    let mut slot = [0u8; VERSION_SLOT_LEN];
    let mut i = 0;
    while i < VERSION_SLOT_MARKER.len() {
        slot[i] = VERSION_SLOT_MARKER[i];
        i += 1;
    }
    slot
}

/// The slot itself; kept in the binary and read through `black_box` so the
/// compiler cannot fold the (unpatched) contents.
#[used]
static VERSION_SLOT: [u8; VERSION_SLOT_LEN] = version_slot();

/// Version stamped into the slot, if any.
fn slot_version() -> Option<String> {
    let slot: &[u8; VERSION_SLOT_LEN] = std::hint::black_box(&VERSION_SLOT);
    let rest = &slot[VERSION_SLOT_MARKER.len()..];
    let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    let v = std::str::from_utf8(&rest[..end]).ok()?.trim();
    (!v.is_empty()).then(|| v.to_string())
}

impl VersionInfo {
    fn for_product(p: Product) -> VersionInfo {
        let baked = option_env!("STANDIN_VERSION");
        let full = std::env::var("STANDIN_VERSION")
            .ok()
            .filter(|v| !v.is_empty())
            .or_else(slot_version)
            .or_else(|| baked.filter(|v| !v.is_empty()).map(str::to_string))
            .unwrap_or_else(|| {
                match p {
                    Product::Consul => DEFAULT_CONSUL_VERSION,
                    Product::Nomad => DEFAULT_NOMAD_VERSION,
                }
                .to_string()
            });
        let full = full.trim_start_matches('v').to_string();
        VersionInfo {
            full,
            revision: std::env::var("STANDIN_REVISION")
                .unwrap_or_else(|_| DEFAULT_REVISION.to_string()),
            build_date: std::env::var("STANDIN_BUILD_DATE")
                .unwrap_or_else(|_| DEFAULT_BUILD_DATE.to_string()),
        }
    }

    /// (version, prerelease, metadata) split as HashiCorp's version package does.
    pub fn parts(&self) -> (String, String, String) {
        let (rest, meta) = match self.full.split_once('+') {
            Some((a, b)) => (a, b.to_string()),
            None => (self.full.as_str(), String::new()),
        };
        let (ver, pre) = match rest.split_once('-') {
            Some((a, b)) => (a.to_string(), b.to_string()),
            None => (rest.to_string(), String::new()),
        };
        (ver, pre, meta)
    }
}

const HELP: &str = "\
hashi-standin: a test-only STAND-IN for the consul and nomad agents.
It is NOT HashiCorp's Consul or Nomad; it imitates their CLI, config loading,
HTTP API shapes and signal handling for hashi-supervisor's tests.

Usage (product from the file name, --product, or STANDIN_PRODUCT):
  consul version [-format=json]
  consul agent -config-dir=DIR [-config-file=FILE ...]
  consul validate DIR|FILE ...
  nomad version
  nomad agent -config=DIR|FILE [...]
  nomad config validate DIR|FILE ...

Environment: STANDIN_PRODUCT, STANDIN_VERSION, STANDIN_EVENT_LOG,
STANDIN_LEAVE_DELAY_MS, STANDIN_GRACEFUL_TIMEOUT_MS, STANDIN_CRASH_AFTER_MS, STANDIN_EXIT_AT_START,
STANDIN_IGNORE_STOP, STANDIN_SLOW_START_MS, STANDIN_HTTP_HANG, STANDIN_HANG_FILE,
STANDIN_SPAWN_CHILD, STANDIN_FAIL_VERSION, STANDIN_RUN_COUNTER, STANDIN_FAULT_RUNS,
STANDIN_GOSSIP_INTERVAL_MS,
STANDIN_RETRY_INTERVAL_MS, STANDIN_ELECTION_MS, NOTIFY_SOCKET.
";

/// Hidden sub-command: the long-running child of `STANDIN_SPAWN_CHILD`.
pub const CHILD_ARG: &str = "__standin-child";

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(CHILD_ARG) {
        agent::run_child();
    }
    let argv0 = args.first().cloned().unwrap_or_default();
    let file_name = std::path::Path::new(&argv0)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut product = if file_name.starts_with("consul") {
        Some(Product::Consul)
    } else if file_name.starts_with("nomad") {
        Some(Product::Nomad)
    } else {
        None
    };
    if product.is_none() {
        if let Some(first) = args.get(1).cloned() {
            if first == "--product" {
                product = args.get(2).and_then(|p| Product::parse(p));
                args.drain(1..3.min(args.len()));
            } else if let Some(p) = first.strip_prefix("--product=") {
                product = Product::parse(p);
                args.remove(1);
            }
        }
    }
    if product.is_none() {
        product = std::env::var("STANDIN_PRODUCT")
            .ok()
            .and_then(|p| Product::parse(&p));
    }
    let rest: Vec<String> = args.iter().skip(1).cloned().collect();
    let Some(product) = product else {
        eprint!("{HELP}");
        eprintln!("error: no product chosen (name the file consul or nomad, or pass --product)");
        return ExitCode::from(1);
    };
    ExitCode::from(run(product, &rest))
}

// The agent CLI's stdout (help, `version`, `validate`) is the contract
// the supervisor reads, as the real agents print it.
#[allow(clippy::print_stdout)]
fn run(product: Product, args: &[String]) -> u8 {
    let cmd = args.first().map(String::as_str).unwrap_or("");
    match (product, cmd) {
        (_, "version" | "-v" | "-version" | "--version") => {
            print_version(product, args.iter().skip(1).any(|a| a == "-format=json"));
            0
        }
        (_, "" | "-h" | "-help" | "--help" | "help") => {
            print!("{HELP}");
            if cmd.is_empty() { 1 } else { 0 }
        }
        (_, "agent") => agent::main(product, &args[1..]),
        (Product::Consul, "validate") => validate(product, &args[1..]),
        (Product::Nomad, "config") if args.get(1).map(String::as_str) == Some("validate") => {
            validate(product, &args[2..])
        }
        _ => {
            eprintln!("stand-in {}: unsupported command {cmd:?}", product.name());
            print!("{HELP}");
            1
        }
    }
}

// The agent CLI's stdout (help, `version`, `validate`) is the contract
// the supervisor reads, as the real agents print it.
#[allow(clippy::print_stdout)]
fn print_version(product: Product, json: bool) {
    let mut v = VersionInfo::for_product(product);
    if std::env::var("STANDIN_FAIL_VERSION").is_ok_and(|x| x == "1") {
        v.full = WRONG_VERSION.to_string();
    }
    match product {
        // consul:command/version/formatter.go prettyFormatter.
        Product::Consul if json => {
            let (ver, pre, _) = v.parts();
            let doc = serde_json::json!({
                "Version": ver, "Revision": v.revision, "Prerelease": pre,
                "BuildDate": v.build_date,
                "RPC": {"Default": 2, "Min": 2, "Max": 3},
            });
            let mut buf = Vec::new();
            let fmt = serde_json::ser::PrettyFormatter::with_indent(b"   ");
            let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
            if serde::Serialize::serialize(&doc, &mut ser).is_ok() {
                println!("{}", String::from_utf8_lossy(&buf));
            }
        }
        Product::Consul => {
            println!("Consul v{}", v.full);
            println!("Revision {}", v.revision);
            println!("Build Date {}", v.build_date);
            println!(
                "Protocol 2 spoken by default, understands 2 to 3 (agent will automatically use protocol >2 when speaking to compatible agents)"
            );
        }
        // nomad:version/version.go FullVersionNumber(true).
        Product::Nomad => {
            println!("Nomad v{}", v.full);
            println!("BuildDate {}", v.build_date);
            println!("Revision {}", v.revision);
        }
    }
}

// The agent CLI's stdout (help, `version`, `validate`) is the contract
// the supervisor reads, as the real agents print it.
#[allow(clippy::print_stdout)]
fn validate(product: Product, paths: &[String]) -> u8 {
    let paths: Vec<std::path::PathBuf> = paths
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(std::path::PathBuf::from)
        .collect();
    if paths.is_empty() {
        eprintln!("Must specify at least one config file or directory");
        return 1;
    }
    match config::load(product, &paths) {
        Ok(_) => {
            println!("Configuration is valid!");
            0
        }
        Err(e) => {
            match product {
                Product::Consul => eprintln!("Config validation failed: {e}"),
                Product::Nomad if e.0.starts_with("Error loading") => eprintln!("{e}"),
                // nomad:command/config_validate.go after IsValidConfig fails.
                Product::Nomad => eprintln!("{e}\nConfiguration is invalid"),
            }
            1
        }
    }
}

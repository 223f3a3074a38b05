//! `hashi-rogue-mdns`: a rogue host for discovery tests. Run inside a node
//! namespace of the test rig (`ip netns exec <ns> hashi-rogue-mdns ...`), it
//! announces `_hashi-sup._tcp.local.` instances over mDNS on one interface
//! that a supervisor must not trust:
//!
//! * `malformed`: a node name the agents refuse, an unknown role, a
//!   `consul_http` that is no address, a `dc` far too long, a `public` that
//!   is not UTF-8, and an unsupported `v`;
//! * `other-region`: a well-formed Consul and Nomad server of region `us`
//!   with the datacenter of the LAN it sits on (never to be joined);
//! * `foreign-http`: a well-formed Consul server of the right region and
//!   datacenter whose `consul_http` points at an address that is not its
//!   own (a host trying to redirect the Nomad nodes).
//!
//! It never leaves the namespace it runs in: mDNS only on `--iface`.
//! Stops on SIGTERM/SIGINT or after `--for` seconds, unregistering first.
//!
//! ```text
//! hashi-rogue-mdns --ip 10.0.1.66 [--iface eth0] [--dc ams2] [--kind malformed ...] [--for SECS]
//! ```

#![allow(clippy::disallowed_methods, reason = "a test tool: plain threads")]
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use mdns_sd::{IfKind, ServiceDaemon, ServiceInfo, TxtProperty};

/// The service type of the supervisors' announcements (common contract).
const SERVICE_TYPE: &str = "_hashi-sup._tcp.local.";

/// What to announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    /// Every field wrong.
    Malformed,
    /// A well-formed server of another region.
    OtherRegion,
    /// A Consul server whose `consul_http` is not one of its addresses.
    ForeignHttp,
}

/// Announces untrusted `_hashi-sup._tcp` instances for discovery tests.
#[derive(Debug, Parser)]
#[command(name = "hashi-rogue-mdns", about)]
struct Cli {
    /// This host's address on `--iface` (announced as its address).
    #[arg(long)]
    ip: Ipv4Addr,
    /// The only interface mDNS runs on.
    #[arg(long, default_value = "eth0")]
    iface: String,
    /// Datacenter named in the announcements.
    #[arg(long, default_value = "ams2")]
    dc: String,
    /// Port announced (a health port that nobody serves).
    #[arg(long, default_value_t = 4680)]
    port: u16,
    /// The `consul_http` of `foreign-http` (not this host's address).
    #[arg(long, default_value = "10.0.1.99:8500")]
    foreign: String,
    /// What to announce (repeatable; default: all three).
    #[arg(long, value_enum)]
    kind: Vec<Kind>,
    /// Stop after this many seconds (default: until SIGTERM).
    #[arg(long = "for")]
    run_for: Option<u64>,
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Instance name and TXT properties of one rogue announcement.
fn announcement(kind: Kind, cli: &Cli) -> (String, Vec<TxtProperty>) {
    let p = |k: &str, v: &str| TxtProperty::from((k, v.as_bytes()));
    match kind {
        Kind::Malformed => (
            "rogue bad!".to_string(),
            vec![
                p("v", "99"),
                p("node", "Rogue Node!!"),
                p("region", "eu"),
                p("dc", &"x".repeat(200)),
                p("roles", "consul-server,bogus-role"),
                p("consul_http", "not-an-address"),
                TxtProperty::from(("public", &[0xffu8, 0xfe, 0x00][..])),
            ],
        ),
        Kind::OtherRegion => (
            "rogue-us-east".to_string(),
            vec![
                p("v", "1"),
                p("node", "rogue-us-east"),
                p("region", "us"),
                p("dc", &cli.dc),
                p("roles", "consul-server,nomad-server"),
                p("consul_http", &format!("{}:8500", cli.ip)),
            ],
        ),
        Kind::ForeignHttp => (
            "rogue-http".to_string(),
            vec![
                p("v", "1"),
                p("node", "rogue-http"),
                p("region", "eu"),
                p("dc", &cli.dc),
                p("roles", "consul-server"),
                p("consul_http", &cli.foreign),
            ],
        ),
    }
}

fn run(cli: &Cli, stop: &AtomicBool) -> Result<(), String> {
    let daemon = ServiceDaemon::new().map_err(|e| format!("failed to start mDNS: {e}"))?;
    daemon
        .disable_interface(IfKind::All)
        .and_then(|()| daemon.enable_interface(IfKind::Name(cli.iface.clone())))
        .and_then(|()| daemon.disable_interface(IfKind::IPv6))
        .map_err(|e| format!("failed to limit mDNS to {}: {e}", cli.iface))?;
    let kinds = if cli.kind.is_empty() {
        vec![Kind::Malformed, Kind::OtherRegion, Kind::ForeignHttp]
    } else {
        cli.kind.clone()
    };
    let mut names = Vec::new();
    for kind in kinds {
        let (instance, txt) = announcement(kind, cli);
        let info = ServiceInfo::new(
            SERVICE_TYPE,
            &instance,
            "rogue.local.",
            std::net::IpAddr::V4(cli.ip),
            cli.port,
            txt,
        )
        .map_err(|e| format!("bad announcement {instance:?}: {e}"))?;
        let fullname = info.get_fullname().to_string();
        daemon
            .register(info)
            .map_err(|e| format!("failed to announce {instance:?}: {e}"))?;
        say(&format!("announcing {fullname} ({kind:?}) from {}", cli.ip));
        names.push(fullname);
    }
    let start = Instant::now();
    let limit = cli.run_for.map(Duration::from_secs);
    while !stop.load(Ordering::Relaxed) && limit.is_none_or(|l| start.elapsed() < l) {
        std::thread::sleep(Duration::from_millis(100));
    }
    for name in names {
        if let Ok(rx) = daemon.unregister(&name) {
            let _ = rx.recv_timeout(Duration::from_secs(1));
        }
    }
    if let Ok(rx) = daemon.shutdown() {
        let _ = rx.recv_timeout(Duration::from_secs(1));
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            say(&format!("error: failed to catch signal {sig}: {e}"));
            return ExitCode::FAILURE;
        }
    }
    match run(&cli, &stop) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say(&format!("error: {e}"));
            ExitCode::FAILURE
        }
    }
}

//! `hashi-demo`: the offline five-node reference scenario (DESIGN.md) in
//! network namespaces, each node run by the real `supervisor` binary with
//! its `config/examples/<node>.toml`, installing stand-in agents (test
//! support, not HashiCorp's binaries) from a signed mirror served inside the
//! test network. Needs root. Ctrl-C stops every node gracefully and removes
//! the namespaces.
//!
//! Without `--secure` every node's role says `[security] plaintext = true`.
//! With it the demo bootstraps the cluster as the README's "Secure
//! bootstrap" says: `supervisor cluster init` and `supervisor cluster token
//! create` on ams2-server-01, the token in the other four nodes' token files,
//! ams2-server-01 started first, the others once its join endpoint listens.
//!
//! ```text
//! hashi-demo [--work /tmp/hashi-demo] [--base-port 4681] [--for SECS] [--secure]
//!            [--examples config/examples/dns --dns] [--variant] [--role-less-client]
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use hashi_testrig::demo::{
    Demo, DemoNodeSpec, DemoOptions, HEALTH_PORT, JOIN_TOKEN_FILE, SecureOptions, Security,
    reference_demo_nodes, reference_dns, variant_demo_nodes,
};
use hashi_testrig::netns::NodeSpec;

/// Runs the five-node reference scenario offline, with stand-in agents.
#[derive(Debug, Parser)]
#[command(name = "hashi-demo", about)]
struct Cli {
    /// The supervisor binary (default: `supervisor` next to this program).
    #[arg(long)]
    supervisor: Option<PathBuf>,
    /// The stand-in agent binary (default: `hashi-standin` next to this program).
    #[arg(long)]
    standin: Option<PathBuf>,
    /// Directory of the example role files.
    #[arg(long, default_value = "config/examples")]
    examples: PathBuf,
    /// Work directory (cleared first): mirror, role files, state, logs.
    #[arg(long, default_value = "/tmp/hashi-demo")]
    work: PathBuf,
    /// Host port forwarded to the first node's health endpoint; the others
    /// follow (0: any free ports).
    #[arg(long, default_value_t = 4681)]
    base_port: u16,
    /// Seconds to wait for every node to be ready.
    #[arg(long, default_value_t = 120)]
    ready_timeout: u64,
    /// Stop after this many seconds once ready, instead of waiting for Ctrl-C.
    #[arg(long = "for")]
    run_for: Option<u64>,
    /// Serve the DNS records of `config/examples/dns/` from each
    /// datacenter's router (dnsmasq; use with `--examples config/examples/dns`).
    #[arg(long)]
    dns: bool,
    /// The variant topology: a second Consul server in ams2
    /// (ams2-server-02, 10.0.1.12).
    #[arg(long)]
    variant: bool,
    /// Also start ams2-client-02 (10.0.1.22) with a role file of nothing but
    /// `[release]` and `[paths]`, run as `--role nomad-client`: it learns its
    /// region, datacenter and Consul server from the announcements.
    #[arg(long)]
    role_less_client: bool,
    /// Secure bootstrap: `supervisor cluster init` on ams2-server-01 and one
    /// join token for the others (TLS, gossip encryption, ACLs), instead of
    /// `[security] plaintext = true` on every node.
    #[arg(long)]
    secure: bool,
}

fn sibling(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut nodes = if cli.variant {
        match variant_demo_nodes(&cli.examples) {
            Ok(n) => n,
            Err(e) => {
                say(&format!("error: {e}"));
                return ExitCode::FAILURE;
            }
        }
    } else {
        reference_demo_nodes()
    };
    if cli.role_less_client {
        nodes.push(DemoNodeSpec::role_less(
            NodeSpec {
                name: "ams2-client-02".into(),
                datacenter: "ams2".into(),
                host: 22,
                public_host: None,
            },
            "nomad-client",
        ));
    }
    let opts = DemoOptions {
        supervisor: cli.supervisor.unwrap_or_else(|| sibling("supervisor")),
        standin: cli.standin.unwrap_or_else(|| sibling("hashi-standin")),
        examples_dir: cli.examples,
        work_dir: cli.work,
        forward_base_port: cli.base_port,
        nodes,
        dns: if cli.dns { reference_dns() } else { Vec::new() },
        silent_nameservers: Vec::new(),
    };
    // Signals are caught before anything starts, so Ctrl-C during start-up
    // still tears down.
    let signals = match signal_hook_flag() {
        Ok(s) => s,
        Err(e) => {
            say(&format!("error: {e}"));
            return ExitCode::FAILURE;
        }
    };
    say(&format!(
        "hashi-demo: five-node reference scenario with STAND-IN agents (not the real Consul/Nomad), work dir {}",
        opts.work_dir.display()
    ));
    let security = if cli.secure {
        say(
            "secure bootstrap: supervisor cluster init on ams2-server-01, one join token for the others",
        );
        Security::Secure(SecureOptions::default())
    } else {
        say(
            "plaintext: every role says [security] plaintext = true (--secure bootstraps TLS, gossip keys and ACLs)",
        );
        Security::Plaintext
    };
    let mut demo = match Demo::start_with(&opts, &security) {
        Ok(d) => d,
        Err(e) => {
            say(&format!("error: {e}"));
            return ExitCode::FAILURE;
        }
    };
    say(&format!(
        "mirror: {} (signed by the test key {}, trusted through release.trusted_key_files)",
        demo.mirror_url(),
        demo.key_file().display()
    ));
    say("");
    say(&format!(
        "{:<16} {:<10} {:<24} {:<26} role file / log",
        "node", "private", "health (from this host)", "health (in the network)"
    ));
    for n in demo.nodes() {
        say(&format!(
            "{:<16} {:<10} {:<24} {:<26} {}",
            n.name,
            n.private_ip.to_string(),
            n.host_url(),
            n.health_url(),
            n.role_file.display()
        ));
        say(&format!("{:<79} {}", "", n.log_file.display()));
    }
    if cli.secure {
        say("");
        say(&format!(
            "join token: in each joining node's {JOIN_TOKEN_FILE} (config dir etc/, 0600); \
             the cluster CA and tokens: {} (cluster/, security/)",
            demo.nodes()
                .first()
                .map(|n| n.config_dir().display().to_string())
                .unwrap_or_default()
        ));
    }
    say("");
    say(&format!(
        "inside a node: ip netns exec {} curl -s http://{}:{HEALTH_PORT}/v1/status",
        demo.nodes().first().map(|n| n.netns.as_str()).unwrap_or(""),
        demo.nodes()
            .first()
            .map(|n| n.private_ip.to_string())
            .unwrap_or_default()
    ));
    say("waiting for every node's /ready ...");
    let interrupted = || signals.load(std::sync::atomic::Ordering::Relaxed);
    let waited = demo.wait_ready_unless(Duration::from_secs(cli.ready_timeout), interrupted);
    let code = match waited {
        Ok(took) => {
            say(&format!(
                "all {} nodes ready after {:.1} s:",
                demo.nodes().iter().filter(|n| n.supervised).count(),
                took.as_secs_f64()
            ));
            for n in demo.nodes() {
                let line = demo
                    .get(&n.name, "/health?verbose", "text/plain")
                    .map(|(_, body)| body.lines().collect::<Vec<_>>().join(" | "))
                    .unwrap_or_else(|e| e.to_string());
                say(&format!("  {:<16} {line}", n.name));
            }
            match cli.run_for {
                Some(secs) => say(&format!("running for {secs} s, then stopping")),
                None => say("Ctrl-C stops every node gracefully and removes the namespaces"),
            }
            wait_for_stop(&signals, cli.run_for.map(Duration::from_secs), &mut demo)
        }
        Err(e) => {
            say(&format!("error: {e}"));
            ExitCode::FAILURE
        }
    };
    say("stopping: SIGTERM to every supervisor (clients first) ...");
    let mut clean = true;
    for (node, status) in demo.stop(Duration::from_secs(60)) {
        match status {
            Some(st) if st.success() => say(&format!("  {node:<16} stopped cleanly")),
            Some(st) => {
                clean = false;
                say(&format!("  {node:<16} exited: {st}"));
            }
            None => {
                clean = false;
                say(&format!("  {node:<16} did not stop in time, killed"));
            }
        }
    }
    drop(demo);
    say("namespaces removed");
    if clean { code } else { ExitCode::FAILURE }
}

/// Flag set by SIGINT or SIGTERM.
fn signal_hook_flag() -> Result<std::sync::Arc<std::sync::atomic::AtomicBool>, String> {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGTERM,
    ] {
        signal_hook::flag::register(sig as i32, flag.clone())
            .map_err(|e| format!("failed to catch {sig}: {e}"))?;
    }
    Ok(flag)
}

fn wait_for_stop(
    flag: &std::sync::atomic::AtomicBool,
    run_for: Option<Duration>,
    demo: &mut Demo,
) -> ExitCode {
    let start = std::time::Instant::now();
    loop {
        if flag.load(std::sync::atomic::Ordering::Relaxed) {
            return ExitCode::SUCCESS;
        }
        if run_for.is_some_and(|d| start.elapsed() >= d) {
            return ExitCode::SUCCESS;
        }
        if let Some((node, st)) = demo.exited() {
            say(&format!("error: supervisor on {node} exited ({st})"));
            return ExitCode::FAILURE;
        }
        #[allow(
            clippy::disallowed_methods,
            reason = "the demo's main thread, not async code"
        )]
        std::thread::sleep(Duration::from_millis(200));
    }
}

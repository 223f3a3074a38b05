//! `hashi-discovery-bench`: how fast discovery forms and heals the
//! reference cluster, and what it costs at idle (issue 17, BENCHMARKS.md
//! "Discovery"). Runs the real `supervisor` binary in network-namespace
//! nodes over STAND-IN agents (test support, not the real Consul or Nomad),
//! like the demo. Needs root. Phases:
//!
//! 1. `standin`: one stand-in Consul server and one stand-in Nomad server,
//!    each started alone in a namespace until its API answers with a leader
//!    (their own start time, subtracted below);
//! 2. `form`: the five reference nodes started once (installing releases),
//!    stopped, then started again `--runs` times: time from spawning the
//!    five supervisors to a formed cluster (every `/ready` 200, both Consul
//!    servers see 2 WAN members, 3 Nomad servers alive, both clients' Nomad
//!    has servers and their Consul address);
//! 3. `partition`: the WAN link cut until both Consul servers warn, then
//!    healed: time from the heal until the warnings clear and every node is
//!    ready;
//! 4. `idle`: per node over `--idle-secs`, the supervisor's context switches
//!    (all threads, `/proc/<pid>/task/*/status`) and its `eth0` bytes, plus
//!    the bytes a silent host on ams2's LAN receives (the multicast and
//!    broadcast every node hears: mDNS announcements and ARP);
//! 5. `loss`: the variant topology (second Consul server in ams2); stop
//!    ams2-server-01's supervisor: time until ams2-server-03 and
//!    ams2-client-01 use 10.0.1.12:8500 (status and rendered nomad.hcl) and
//!    are ready again.
//!
//! ```text
//! hashi-discovery-bench [--runs 3] [--idle-secs 60] [--work /tmp/hashi-discovery-bench] [--only form,idle]
//! ```

#![allow(
    clippy::disallowed_methods,
    reason = "a benchmark driver: plain threads, its own work files"
)]
use std::fmt::Write as _;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use hashi_testrig::demo::{
    Demo, DemoNodeSpec, DemoOptions, http_get, reference_demo_nodes, variant_demo_nodes,
};
use hashi_testrig::netns::{NodeSpec, Topology, in_netns, link_bytes};
use serde_json::Value;

const POLL: Duration = Duration::from_millis(50);
const READY_WITHIN: Duration = Duration::from_secs(300);
const CHANGE_WITHIN: Duration = Duration::from_secs(120);
const STOP_WITHIN: Duration = Duration::from_secs(60);
const FIVE: [&str; 5] = [
    "ams2-server-01",
    "ams2-server-03",
    "ams2-client-01",
    "lon1-server-01",
    "lon1-client-01",
];

/// Times discovery on the reference cluster (stand-in agents).
#[derive(Debug, Parser)]
#[command(name = "hashi-discovery-bench", about)]
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
    /// Work directory (cleared first).
    #[arg(long, default_value = "/tmp/hashi-discovery-bench")]
    work: PathBuf,
    /// Formation runs after the installing one.
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// Seconds of idle measurement.
    #[arg(long, default_value_t = 60)]
    idle_secs: u64,
    /// Phases to run (default all): standin, form, partition, idle, loss.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn sibling(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn status(demo: &Demo, node: &str) -> Option<Value> {
    match demo.get(node, "/v1/status", "application/json") {
        Ok((200, body)) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

fn ready(demo: &Demo, node: &str) -> bool {
    matches!(demo.get(node, "/ready", "text/plain"), Ok((200, _)))
}

fn agent<'a>(st: &'a Value, name: &str) -> &'a Value {
    static NULL: Value = Value::Null;
    st["agents"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["agent"] == name))
        .unwrap_or(&NULL)
}

fn wan_warned(st: &Value) -> bool {
    st["discovery"]["warnings"].as_array().is_some_and(|a| {
        a.iter()
            .any(|w| w.as_str().is_some_and(|w| w.starts_with("WAN")))
    })
}

/// Every node ready and every membership of the reference scenario complete.
fn formed(demo: &Demo) -> bool {
    if !FIVE.iter().all(|n| ready(demo, n)) {
        return false;
    }
    let ok = |node: &str, f: &dyn Fn(&Value) -> bool| status(demo, node).is_some_and(|s| f(&s));
    ["ams2-server-01", "lon1-server-01"]
        .iter()
        .all(|n| ok(n, &|s| agent(s, "consul")["consul"]["wan_members"] == 2))
        && ["ams2-server-01", "ams2-server-03", "lon1-server-01"]
            .iter()
            .all(|n| ok(n, &|s| agent(s, "nomad")["nomad"]["members_alive"] == 3))
        && ["ams2-client-01", "lon1-client-01"].iter().all(|n| {
            ok(n, &|s| {
                agent(s, "nomad")["nomad"]["health_client"]["ok"] == true
                    && s["discovery"]["applied"]["consul_http"].is_string()
            })
        })
}

/// Discovery done on every node: nothing waited for, the three Nomad nodes
/// without a local Consul have their Consul address, and both Consul
/// servers are WAN-joined (the agents may still be converging).
fn discovered(demo: &Demo) -> bool {
    FIVE.iter().all(|n| {
        status(demo, n).is_some_and(|s| {
            let d = &s["discovery"];
            d["waiting_for"].as_array().is_none_or(Vec::is_empty)
                && (n.contains("server-01") || d["applied"]["consul_http"].is_string())
                && (!n.contains("server-01") || agent(&s, "consul")["consul"]["wan_members"] == 2)
        })
    })
}

fn wait(what: &str, within: Duration, mut cond: impl FnMut() -> bool) -> Result<Duration, String> {
    let start = Instant::now();
    while start.elapsed() < within {
        if cond() {
            return Ok(start.elapsed());
        }
        std::thread::sleep(POLL);
    }
    Err(format!("{what}: not within {within:?}"))
}

fn options(
    cli: &Cli,
    sup: &Path,
    standin: &Path,
    sub: &str,
    nodes: Vec<DemoNodeSpec>,
) -> DemoOptions {
    DemoOptions {
        supervisor: sup.to_path_buf(),
        standin: standin.to_path_buf(),
        examples_dir: cli.examples.clone(),
        work_dir: cli.work.join(sub),
        forward_base_port: 0,
        nodes,
        dns: Vec::new(),
        silent_nameservers: Vec::new(),
    }
}

/// Phase 1: a stand-in started alone until its API answers with a leader.
fn standin_start(standin: &Path, work: &Path, product: &str) -> Result<Duration, String> {
    let topo = Topology::build(
        &["ams2"],
        &[NodeSpec {
            name: "standin".into(),
            datacenter: "ams2".into(),
            host: 11,
            public_host: None,
        }],
    )
    .map_err(|e| e.to_string())?;
    let node = topo.node("standin").ok_or("no node")?.clone();
    let dir = work.join(format!("standin-{product}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("data")).map_err(|e| e.to_string())?;
    let (file, text, arg, api) = if product == "consul" {
        let f = dir.join("consul.json");
        let cfg = serde_json::json!({
            "datacenter": "ams2", "node_name": "standin", "server": true,
            "bootstrap_expect": 1, "data_dir": dir.join("data"),
            "bind_addr": "10.0.1.11", "client_addr": "10.0.1.11",
        });
        let arg = format!("-config-file={}", f.display());
        (f, cfg.to_string(), arg, 8500)
    } else {
        let f = dir.join("nomad.hcl");
        let cfg = format!(
            "region = \"eu\"\ndatacenter = \"ams2\"\nname = \"standin\"\ndata_dir = \"{}\"\nbind_addr = \"10.0.1.11\"\nserver {{\n  enabled = true\n  bootstrap_expect = 1\n}}\n",
            dir.join("data").display()
        );
        let arg = format!("-config={}", f.display());
        (f, cfg, arg, 4646)
    };
    std::fs::write(&file, text).map_err(|e| format!("write {}: {e}", file.display()))?;
    let log = std::fs::File::create(dir.join("log")).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut child: Child = node
        .command(&standin.display().to_string())
        .args(["--product", product, "agent", &arg])
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("start the stand-in {product}: {e}"))?;
    let addr = SocketAddr::from((Ipv4Addr::new(10, 0, 1, 11), api));
    let ns = node.netns.clone();
    let took = wait(
        &format!("stand-in {product} leader"),
        Duration::from_secs(30),
        || {
            let ns = ns.clone();
            in_netns(&ns, move || {
                http_get(addr, "/v1/status/leader", "application/json")
            })
            .ok()
            .and_then(Result::ok)
            .is_some_and(|(code, body)| code == 200 && body.trim().len() > 2)
        },
    );
    let _ = child.kill();
    let _ = child.wait();
    took.map(|_| start.elapsed())
}

fn stop_all(demo: &mut Demo) {
    for (node, st) in demo.stop(STOP_WITHIN) {
        if !st.is_some_and(|s| s.success()) {
            say(&format!("  warning: {node} stopped with {st:?}"));
        }
    }
}

fn start_five(demo: &mut Demo) -> Result<(), String> {
    for n in FIVE {
        demo.start_node(n).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Context switches of every thread of `pid`.
fn ctxt_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .map(|s| {
            s.lines()
                .filter(|l| l.contains("ctxt_switches"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

fn run(cli: &Cli) -> Result<String, String> {
    let sup = cli
        .supervisor
        .clone()
        .unwrap_or_else(|| sibling("supervisor"));
    let standin = cli
        .standin
        .clone()
        .unwrap_or_else(|| sibling("hashi-standin"));
    let phase = |p: &str| cli.only.is_empty() || cli.only.iter().any(|o| o == p);
    let _ = std::fs::remove_dir_all(&cli.work);
    std::fs::create_dir_all(&cli.work).map_err(|e| e.to_string())?;
    let mut out = String::new();

    let mut standin_cost = Duration::ZERO;
    if phase("standin") || phase("form") {
        let consul = standin_start(&standin, &cli.work, "consul")?;
        let nomad = standin_start(&standin, &cli.work, "nomad")?;
        standin_cost = consul + nomad;
        let _ = writeln!(
            out,
            "stand-in start alone (spawn to a leader): consul {}, nomad {}; a server node starts both: {}",
            secs(consul),
            secs(nomad),
            secs(standin_cost)
        );
        say(out.lines().last().unwrap_or(""));
    }

    if phase("form") || phase("partition") || phase("idle") {
        let mut nodes = reference_demo_nodes();
        nodes.push(DemoNodeSpec::host(NodeSpec {
            name: "ams2-observer".into(),
            datacenter: "ams2".into(),
            host: 99,
            public_host: None,
        }));
        let mut demo = Demo::start(&options(cli, &sup, &standin, "reference", nodes))
            .map_err(|e| e.to_string())?;
        let first = wait("first formation (installing)", READY_WITHIN, || {
            formed(&demo)
        })?;
        let _ = writeln!(
            out,
            "first run (installs the releases): formed after {}",
            secs(first)
        );
        say(out.lines().last().unwrap_or(""));
        if phase("form") {
            // Warm: each node keeps the discovery report it persisted
            // (<state>/discovery.json); cold: removed before the start, as
            // on a node's very first start (releases installed all the same).
            for cold in [false, true] {
                let mut runs = Vec::new();
                let mut found_runs = Vec::new();
                for i in 0..cli.runs {
                    stop_all(&mut demo);
                    if cold {
                        for n in demo.nodes().iter().filter(|n| n.supervised) {
                            if let Some(dir) = n.role_file.parent() {
                                let _ = std::fs::remove_file(dir.join("state/discovery.json"));
                            }
                        }
                    }
                    let t0 = Instant::now();
                    start_five(&mut demo)?;
                    let mut found = None;
                    wait("formation", READY_WITHIN, || {
                        if found.is_none() && discovered(&demo) {
                            found = Some(t0.elapsed());
                        }
                        found.is_some() && formed(&demo)
                    })?;
                    let took = t0.elapsed();
                    let found = found.unwrap_or(took);
                    say(&format!(
                        "  {} run {}: discovery done after {}, formed after {}",
                        if cold { "cold" } else { "warm" },
                        i + 1,
                        secs(found),
                        secs(took)
                    ));
                    runs.push(took);
                    found_runs.push(found);
                }
                let m = median(runs.clone());
                let _ = writeln!(
                    out,
                    "discovery done on every node, {}: median {} (runs: {})",
                    if cold { "cold" } else { "warm" },
                    secs(median(found_runs.clone())),
                    found_runs
                        .iter()
                        .map(|d| secs(*d))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                let _ = writeln!(
                    out,
                    "formation, releases installed, {} (runs: {}): median {}, minus the stand-ins' own {} = {}",
                    if cold {
                        "no discovery.json (cold)"
                    } else {
                        "discovery.json kept (warm)"
                    },
                    runs.iter().map(|d| secs(*d)).collect::<Vec<_>>().join(", "),
                    secs(m),
                    secs(standin_cost),
                    secs(m.saturating_sub(standin_cost))
                );
                say(out.lines().last().unwrap_or(""));
            }
        }
        if phase("partition") {
            demo.topology()
                .cut("ams2", "lon1")
                .map_err(|e| e.to_string())?;
            let noticed = wait("WAN warnings", CHANGE_WITHIN, || {
                ["ams2-server-01", "lon1-server-01"]
                    .iter()
                    .all(|n| status(&demo, n).is_some_and(|s| wan_warned(&s)))
            })?;
            demo.topology()
                .heal("ams2", "lon1")
                .map_err(|e| e.to_string())?;
            let healed = wait("re-convergence", CHANGE_WITHIN, || {
                ["ams2-server-01", "lon1-server-01"]
                    .iter()
                    .all(|n| status(&demo, n).is_some_and(|s| !wan_warned(&s)))
                    && formed(&demo)
            })?;
            let _ = writeln!(
                out,
                "partition ams2/lon1: both Consul servers warned after {}; healed, re-converged (warnings gone, all formed) after {}",
                secs(noticed),
                secs(healed)
            );
            say(out.lines().last().unwrap_or(""));
        }
        if phase("idle") {
            std::thread::sleep(Duration::from_secs(15));
            let sample = |demo: &Demo| -> Vec<(String, u64, u64)> {
                demo.nodes()
                    .iter()
                    .map(|n| {
                        let cs = n.pid().map_or(0, ctxt_switches);
                        let (rx, tx) = link_bytes(&n.netns, "eth0").unwrap_or((0, 0));
                        let bytes = if n.supervised { tx } else { rx };
                        (n.name.clone(), cs, bytes)
                    })
                    .collect()
            };
            let a = sample(&demo);
            std::thread::sleep(Duration::from_secs(cli.idle_secs));
            let b = sample(&demo);
            let per_min = |d: u64| d as f64 * 60.0 / cli.idle_secs as f64;
            let _ = writeln!(out, "idle over {} s (per minute):", cli.idle_secs);
            for (x, y) in a.iter().zip(&b) {
                if x.0 == "ams2-observer" {
                    let _ = writeln!(
                        out,
                        "  {:<16} (silent host) received {:.0} B/min on the LAN",
                        x.0,
                        per_min(y.2.saturating_sub(x.2))
                    );
                } else {
                    let _ = writeln!(
                        out,
                        "  {:<16} supervisor context switches {:.0}/min; eth0 sent {:.0} B/min (agents included)",
                        x.0,
                        per_min(y.1.saturating_sub(x.1)),
                        per_min(y.2.saturating_sub(x.2))
                    );
                }
            }
            say(&out);
        }
        stop_all(&mut demo);
    }

    if phase("loss") {
        // ams2-server-02 starts once the rest is ready, so the Nomad nodes
        // have settled on ams2-server-01 (as the loss test does).
        let nodes: Vec<DemoNodeSpec> = variant_demo_nodes(&cli.examples)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|n| {
                if n.node.name == "ams2-server-02" {
                    n.deferred()
                } else {
                    n
                }
            })
            .collect();
        let mut demo = Demo::start(&options(cli, &sup, &standin, "variant", nodes))
            .map_err(|e| e.to_string())?;
        demo.wait_ready(READY_WITHIN).map_err(|e| e.to_string())?;
        demo.start_node("ams2-server-02")
            .map_err(|e| e.to_string())?;
        demo.wait_ready(READY_WITHIN).map_err(|e| e.to_string())?;
        let movers = ["ams2-server-03", "ams2-client-01"];
        wait(
            "ams2-server-02 seen, ams2-server-01 kept",
            CHANGE_WITHIN,
            || {
                movers.iter().all(|n| {
                    status(&demo, n).is_some_and(|s| {
                        s["discovery"]["applied"]["consul_http"] == "10.0.1.11:8500"
                            && s["discovery"]["peers"]
                                .as_array()
                                .is_some_and(|p| p.iter().any(|p| p["node"] == "ams2-server-02"))
                    })
                })
            },
        )?;
        let rendered = |demo: &Demo, n: &str| {
            demo.node(n)
                .and_then(|d| {
                    d.role_file
                        .parent()
                        .map(|p| p.join("etc/nomad.d/nomad.hcl"))
                })
                .and_then(|p| std::fs::read_to_string(p).ok())
                .is_some_and(|t| t.contains("10.0.1.12:8500"))
        };
        // From SIGTERM to ams2-server-01's supervisor (its agents leave
        // and stop with it) until each step; stop_node waits for its exit.
        let t0 = Instant::now();
        demo.stop_node("ams2-server-01", STOP_WITHIN)
            .ok_or("ams2-server-01 did not stop")?;
        let exited = t0.elapsed();
        wait("the move", CHANGE_WITHIN, || {
            movers.iter().all(|n| {
                status(&demo, n)
                    .is_some_and(|s| s["discovery"]["applied"]["consul_http"] == "10.0.1.12:8500")
            })
        })?;
        let moved = t0.elapsed();
        wait("nomad.hcl", CHANGE_WITHIN, || {
            movers.iter().all(|n| rendered(&demo, n))
        })?;
        let rewritten = t0.elapsed();
        // The client's /ready (ams2-server-03's also needs its Nomad server
        // to rejoin the other two, which it finds through Consul: that is
        // the agents' business, reported separately).
        wait("ready", CHANGE_WITHIN, || ready(&demo, "ams2-client-01"))?;
        let ready_again = t0.elapsed();
        let server_ready = wait("ready", Duration::from_secs(30), || {
            ready(&demo, "ams2-server-03")
        })
        .map(|_| secs(t0.elapsed()))
        .unwrap_or_else(|_| {
            let body = demo
                .get("ams2-server-03", "/ready", "text/plain")
                .map(|(c, b)| format!("{c} {}", b.lines().collect::<Vec<_>>().join("; ")))
                .unwrap_or_default();
            format!("not within 30 s more: {body}")
        });
        let _ = writeln!(
            out,
            "lost Consul server, from SIGTERM to ams2-server-01's supervisor: it exited after {}; both ams2 Nomad nodes on 10.0.1.12:8500 after {}, nomad.hcl rewritten after {}, ams2-client-01 ready after {}; ams2-server-03 ready: {}",
            secs(exited),
            secs(moved),
            secs(rewritten),
            secs(ready_again),
            server_ready
        );
        say(out.lines().last().unwrap_or(""));
        stop_all(&mut demo);
    }
    Ok(out)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    say("hashi-discovery-bench: STAND-IN agents (not the real Consul/Nomad), network namespaces");
    match run(&cli) {
        Ok(out) => {
            say("\n== summary");
            say(&out);
            ExitCode::SUCCESS
        }
        Err(e) => {
            say(&format!("error: {e}"));
            ExitCode::FAILURE
        }
    }
}

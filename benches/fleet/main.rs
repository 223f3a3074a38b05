//! Benchmark of `supervisor fleet` over 10,000 simulated supervisors on
//! loopback, beside `xargs -P 64 curl` over the same targets.
//!
//! `cargo bench --bench fleet` (release build). One server thread (its own
//! single-threaded runtime, so it takes at most one core of the two) binds
//! one listener on each of `BENCH_NODES` loopback addresses 127.1.x.y at the
//! default health port 4680, and answers `GET /v1/status` with a real
//! node's answer (`tests/data/fleet/`, 1.5-2.8 KiB, captured from the demo
//! topology), its node name made unique per address, rendered once into
//! the whole HTTP answer (no HTTP library on the server side: the simulated
//! nodes should cost the two shared cores as little as possible, a real
//! fleet answers on its own CPUs). The targets file lists the bare
//! addresses (the default port applies).
//!
//! Then (the best and the median reported):
//! * `BENCH_ROUNDS` times, `supervisor fleet --targets FILE --json` (the release binary), run
//!   through this binary's small `measure` mode: wall time, user and system
//!   CPU and peak RSS (`getrusage(RUSAGE_CHILDREN)` of that small process),
//!   and its counts checked: every node must be healthy;
//! * `BENCH_CURL_ROUNDS` times, `xargs -P 64 curl` fetching the same URLs to /dev/null (no parsing, no
//!   report), its wall time and the number of 200s.
//!
//! Environment: `BENCH_NODES` (default 10000), `BENCH_ROUNDS` (default 3),
//! `BENCH_CURL_ROUNDS` (default 1: 10,000 curl processes take minutes; 0
//! leaves curl out), `BENCH_SERVE_ONLY` (1: only serve the
//! simulated fleet, until killed, for measuring by hand).
#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::expect_used)]
#![allow(
    clippy::disallowed_methods,
    reason = "the bench writes its scratch files directly"
)]

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nix::sys::resource::{Resource, UsageWho, getrlimit, getrusage, setrlimit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PORT: u16 = 4680;
const BODIES: [&str; 5] = [
    "status-ams2-server-01.json",
    "status-ams2-server-03.json",
    "status-ams2-client-01.json",
    "status-lon1-server-01.json",
    "status-lon1-client-01.json",
];

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The i-th simulated node's address: 127.1.0.1, 127.1.0.2, ...
fn addr(i: usize) -> Ipv4Addr {
    let n = u32::try_from(i + 1).unwrap();
    Ipv4Addr::new(127, 1, (n >> 8) as u8, (n & 0xff) as u8)
}

/// The i-th node's body: a real answer, renamed.
fn bodies(n: usize) -> Vec<Bytes> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fleet");
    let templates: Vec<(String, String)> = BODIES
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(dir.join(f))
                .unwrap_or_else(|e| panic!("{}: {e}", dir.join(f).display()));
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            (text, v["node"].as_str().unwrap().to_string())
        })
        .collect();
    (0..n)
        .map(|i| {
            let (text, node) = &templates[i % templates.len()];
            Bytes::from(text.replace(node.as_str(), &format!("bench-node-{i:05}")))
        })
        .collect()
}

/// Serves every body on its own address, on one thread.
fn start_server(bodies: Vec<Bytes>) -> std::thread::JoinHandle<()> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut tasks = Vec::new();
            for (i, body) in bodies.into_iter().enumerate() {
                let listener = TcpListener::bind(SocketAddr::from((addr(i), PORT)))
                    .await
                    .unwrap_or_else(|e| panic!("bind {}:{PORT}: {e}", addr(i)));
                tasks.push(tokio::spawn(accept_loop(listener, body)));
            }
            ready_tx.send(()).unwrap();
            for t in tasks {
                let _ = t.await;
            }
        });
    });
    ready_rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the bench server binds within 2 minutes");
    handle
}

async fn accept_loop(listener: TcpListener, body: Bytes) {
    // The whole answer, rendered once: the simulated node costs the shared
    // cores as little as possible (a real fleet answers on its own CPUs).
    let mut answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    let answer = Bytes::from(answer);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(serve_connection(stream, answer.clone()));
    }
}

/// Answers every request of one connection (keep-alive) with `answer`.
async fn serve_connection(mut stream: TcpStream, answer: Bytes) {
    let mut buf = vec![0u8; 4096];
    let mut have = 0;
    loop {
        match stream.read(&mut buf[have..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => have += n,
        }
        while let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
            if stream.write_all(&answer).await.is_err() {
                return;
            }
            buf.copy_within(end + 4..have, 0);
            have -= end + 4;
        }
        if have == buf.len() {
            return;
        }
    }
}

fn raise_nofile() {
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
}

/// CPU time of this process's threads (the simulated fleet's server),
/// seconds.
fn server_cpu() -> f64 {
    let u = getrusage(UsageWho::RUSAGE_SELF).unwrap();
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    secs(u.user_time()) + secs(u.system_time())
}

fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2])
}

/// `measure PROGRAM ARGS...`: runs the program, copies its stdout, and
/// prints `measure: wall_s user_s sys_s maxrss_kib` on stderr. A small
/// process of its own, so the child's peak RSS is its own: a child forked
/// straight from the (large) bench process would carry the bench's RSS as
/// its high-water mark across exec.
fn measure(args: &[String]) -> ! {
    let start = Instant::now();
    let out = Command::new(&args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let wall = start.elapsed().as_secs_f64();
    let u = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap();
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    std::io::stdout().write_all(&out.stdout).unwrap();
    eprintln!(
        "measure: {wall:.3} {:.3} {:.3} {}",
        secs(u.user_time()),
        secs(u.system_time()),
        u.max_rss()
    );
    std::process::exit(out.status.code().unwrap_or(70));
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("measure") {
        measure(&argv[2..]);
    }
    // `cargo bench` passes `--bench`; nothing else is taken.
    let n = env_usize("BENCH_NODES", 10_000);
    let rounds = env_usize("BENCH_ROUNDS", 3).max(1);
    let curl_rounds = env_usize("BENCH_CURL_ROUNDS", 1);
    raise_nofile();
    let supervisor = PathBuf::from(env!("CARGO_BIN_EXE_supervisor"));
    let work = std::env::temp_dir().join(format!("fleet-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let targets = work.join("targets.txt");
    let urls = work.join("urls.txt");
    let mut t = String::new();
    let mut u = String::new();
    for i in 0..n {
        t.push_str(&format!("{}\n", addr(i)));
        u.push_str(&format!("http://{}:{PORT}/v1/status\n", addr(i)));
    }
    std::fs::write(&targets, t).unwrap();
    std::fs::write(&urls, u).unwrap();

    let bodies = bodies(n);
    let sizes: Vec<usize> = bodies.iter().map(Bytes::len).collect();
    println!(
        "fleet bench: {n} simulated supervisors on 127.1.x.y:{PORT}, bodies {}-{} bytes, {} cores",
        sizes.iter().min().unwrap(),
        sizes.iter().max().unwrap(),
        std::thread::available_parallelism().map_or(0, |p| p.get())
    );
    let _server = start_server(bodies);
    if env_usize("BENCH_SERVE_ONLY", 0) != 0 {
        // For poking at the simulated fleet by hand: serve until killed.
        println!("serving; targets in {}", targets.display());
        let _ = std::io::stdout().flush();
        loop {
            std::thread::park();
        }
    }

    let me = std::env::current_exe().unwrap();
    let mut ours = Vec::new();
    let mut cpu = Vec::new();
    let mut peak_kib = 0;
    for round in 1..=rounds {
        let out = Command::new(&me)
            .arg("measure")
            .arg(&supervisor)
            .args(["fleet", "--json", "--targets"])
            .arg(&targets)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let m: Vec<f64> = err
            .lines()
            .find_map(|l| l.strip_prefix("measure: "))
            .unwrap_or_else(|| panic!("no measure line: {err}"))
            .split(' ')
            .map(|x| x.parse().unwrap())
            .collect();
        let (secs, user, sys, kib) = (m[0], m[1], m[2], m[3]);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let healthy = report["counts"]["healthy"].as_u64().unwrap();
        println!(
            "  round {round}: supervisor fleet {secs:.3} s wall ({user:.2} s user + {sys:.2} s sys), exit {:?}, {healthy}/{n} healthy, poll {} ms, peak RSS {:.1} MiB",
            out.status.code(),
            report["duration_ms"],
            kib / 1024.0
        );
        assert_eq!(healthy as usize, n, "every simulated node is healthy");
        ours.push(secs);
        cpu.push(user + sys);
        peak_kib = peak_kib.max(kib as i64);
    }
    let (best, median) = stats(ours);
    let (cpu_best, _) = stats(cpu);
    println!(
        "supervisor fleet: best {best:.3} s, median {median:.3} s, CPU best {cpu_best:.2} s, peak RSS {:.1} MiB",
        peak_kib as f64 / 1024.0
    );
    println!("server CPU so far: {:.2} s", server_cpu());

    if curl_rounds > 0 {
        let mut theirs = Vec::new();
        for round in 1..=curl_rounds {
            let start = Instant::now();
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "xargs -P 64 -n 1 curl -s -o /dev/null -m 2 --retry 1 -w '%{{http_code}}\\n' < {}",
                    urls.display()
                ))
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let secs = start.elapsed().as_secs_f64();
            let ok = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| *l == "200")
                .count();
            println!("  round {round}: xargs -P 64 curl {secs:.3} s, {ok}/{n} answered 200");
            theirs.push(secs);
        }
        let (cbest, cmedian) = stats(theirs);
        println!(
            "xargs -P 64 curl: best {cbest:.3} s, median {cmedian:.3} s; ratio (curl/ours, median) {:.1}x",
            cmedian / median
        );
    }
    let _ = std::io::stdout().flush();
    let _ = std::fs::remove_dir_all(&work);
    // The server thread never ends by itself: the process exit ends it.
}

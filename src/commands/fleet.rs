//! `supervisor fleet` and `supervisor fleet serve`: gathers the targets,
//! polls them with [`catalog::fleet`], prints the report (table or JSON,
//! once or every `--watch` seconds) or serves the fleet page, and writes
//! the Prometheus file_sd document (atomically: a temporary file renamed).
//! Exit 0 every node healthy, 1 any not, 64 usage.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::catalog::fleet::serve::{self, Published};
use crate::catalog::fleet::{self, FleetError, FleetReport, PollOptions, Poller, Target, targets};
use crate::cli::{FleetAction, FleetArgs};
use crate::error::{EXIT_FAILURE, Error};

/// Targets from which a progress line is shown on a terminal.
const PROGRESS_FROM: usize = 500;
/// Descriptors kept free beside one kept connection per target.
const SPARE_FDS: u64 = 512;

/// Runs `supervisor fleet`.
pub async fn run(args: &FleetArgs) -> Result<u8, Error> {
    if args.targets.is_empty()
        && args.dns.is_empty()
        && args.consul.is_none()
        && args.mdns.is_none()
    {
        return Err(Error::Usage(
            "no targets: give --targets FILE, --dns NAME, --consul URL or --mdns IFACE".into(),
        ));
    }
    if let Some(iface) = &args.mdns {
        if nix::net::if_::if_nametoindex(iface.as_str()).is_err() {
            return Err(
                FleetError::Usage(format!("--mdns: no network interface `{iface}`")).into(),
            );
        }
    }
    let token = match &args.token_file {
        Some(p) => Some(read_token(p)?),
        None => None,
    };
    let repeat = args.watch.is_some() || args.action.is_some();
    let first = gather(args, token.as_deref()).await?;
    let nofile = raise_nofile();
    let opts = PollOptions {
        concurrency: usize::from(args.concurrency),
        timeout: args.timeout,
        reuse_connections: repeat
            && (first.len() as u64 + u64::from(args.concurrency) + SPARE_FDS) < nofile,
        ..PollOptions::default()
    };
    let rt = PollRuntime::new()?;
    let poller = Arc::new(rt.enter(|| Poller::new(opts)));
    match &args.action {
        Some(FleetAction::Serve(s)) => {
            serve_loop(
                args,
                token.as_deref(),
                &rt,
                &poller,
                first,
                s.listen,
                s.interval,
            )
            .await
        }
        None => match args.watch {
            Some(secs) => watch_loop(args, token.as_deref(), &rt, &poller, first, secs).await,
            None => {
                let (report, _) = poll(&rt, &poller, first, std::io::stderr().is_terminal()).await;
                write_sd(args, &report)?;
                print_report(args, &report, false)?;
                Ok(exit_code(&report))
            }
        },
    }
}

fn exit_code(r: &FleetReport) -> u8 {
    if r.all_healthy() { 0 } else { EXIT_FAILURE }
}

fn read_token(p: &Path) -> Result<String, Error> {
    let t = std::fs::read_to_string(p).map_err(|source| FleetError::TargetFile {
        path: p.to_path_buf(),
        source,
    })?;
    let t = t.trim().to_string();
    if t.is_empty() || t.len() > 4096 || t.chars().any(|c| c.is_control()) {
        return Err(FleetError::Usage(format!(
            "{}: not an ACL token (one line, at most 4096 characters)",
            p.display()
        ))
        .into());
    }
    Ok(t)
}

/// Every target of every source the command line names, repeats dropped.
async fn gather(args: &FleetArgs, token: Option<&str>) -> Result<Vec<Target>, FleetError> {
    let mut all = Vec::new();
    for p in &args.targets {
        all.extend(targets::read_targets_file(p, args.port)?);
    }
    if !args.dns.is_empty() {
        let resolver = targets::resolver(args.nameserver).map_err(|source| FleetError::Dns {
            name: args.dns.join(", "),
            source,
        })?;
        for name in &args.dns {
            all.extend(targets::dns_targets(&resolver, name, args.port).await?);
        }
    }
    if let Some(url) = &args.consul {
        let url = if url.contains("://") {
            url.clone()
        } else {
            format!("http://{url}")
        };
        all.extend(targets::consul_targets(&url, token).await?);
    }
    if let Some(iface) = &args.mdns {
        all.extend(targets::mdns_targets(iface, targets::MDNS_BROWSE).await?);
    }
    let all = targets::dedup(all);
    if all.is_empty() {
        return Err(FleetError::NoTargets(
            "the sources named gave no endpoint".into(),
        ));
    }
    Ok(all)
}

/// Raises the soft descriptor limit to the hard one; returns the limit
/// in force.
fn raise_nofile() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => 1024,
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The runtime polls run on: a worker per core (at most 4), so that a large
/// poll uses every core, while the command's own runtime (one thread) keeps
/// the page server, the progress line and signals responsive.
struct PollRuntime(Option<tokio::runtime::Runtime>);

impl PollRuntime {
    fn new() -> Result<Self, Error> {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4));
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("fleet-poll")
            .enable_all()
            .build()
            .map(|rt| Self(Some(rt)))
            .map_err(|e| Error::io("start the fleet poll runtime", e))
    }

    /// Runs `f` inside the runtime's context (the client binds to it).
    fn enter<T>(&self, f: impl FnOnce() -> T) -> T {
        match &self.0 {
            Some(rt) => {
                let _guard = rt.enter();
                f()
            }
            None => f(),
        }
    }

    fn handle(&self) -> Option<tokio::runtime::Handle> {
        self.0.as_ref().map(|rt| rt.handle().clone())
    }
}

impl Drop for PollRuntime {
    fn drop(&mut self) {
        // Dropped from async code: blocking on its workers is not allowed.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// One poll of `targets`; a progress line on stderr when it is a terminal
/// and the poll is large.
async fn poll(
    rt: &PollRuntime,
    poller: &Arc<Poller>,
    targets: Vec<Target>,
    progress: bool,
) -> (FleetReport, Vec<Target>) {
    let start = Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let ticker = (progress && targets.len() >= PROGRESS_FROM).then(|| {
        let (done, finished, total) = (done.clone(), finished.clone(), targets.len());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while !finished.load(Ordering::Relaxed) {
                tick.tick().await;
                let mut err = std::io::stderr().lock();
                let _ = write!(
                    err,
                    "\r\x1b[Kpolling: {}/{total}",
                    done.load(Ordering::Relaxed)
                );
                let _ = err.flush();
            }
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
        })
    });
    let targets = Arc::new(targets);
    let work = poller.clone().poll_owned(targets.clone(), done.clone());
    let nodes = match rt.handle() {
        Some(h) => match h.spawn(work).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "fleet poll task failed");
                Vec::new()
            }
        },
        None => work.await,
    };
    let targets = Arc::unwrap_or_clone(targets);
    finished.store(true, Ordering::Relaxed);
    if let Some(t) = ticker {
        let _ = t.await;
    }
    let ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    (FleetReport::new(nodes, now_unix(), ms), targets)
}

fn print_report(args: &FleetArgs, report: &FleetReport, redraw: bool) -> Result<(), Error> {
    let mut text = if args.json {
        let mut s = serde_json::to_string(report)
            .map_err(|e| Error::Internal(format!("a fleet report serialises: {e}")))?;
        s.push('\n');
        s
    } else {
        report.table()
    };
    if redraw {
        text.insert_str(0, "\x1b[H\x1b[2J");
    }
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("write the fleet report to stdout", e))
}

/// Writes the file_sd document, atomically, when `--prometheus-sd` asks.
fn write_sd(args: &FleetArgs, report: &FleetReport) -> Result<(), Error> {
    let Some(path) = &args.prometheus_sd else {
        return Ok(());
    };
    write_atomic(path, report.prometheus_sd().as_bytes()).map_err(|e| {
        Error::io(
            format!("write the Prometheus SD file {}", path.display()),
            e,
        )
    })
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "fleet-sd.json".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Targets that no source knows the datacenter of get the one they said
/// at the last poll (so an unreachable node stays in its group).
fn remember_dcs(targets: &mut [Target], last: Option<&FleetReport>) {
    let Some(last) = last else { return };
    let known: HashMap<String, String> = last
        .nodes
        .iter()
        .filter_map(|n| fleet::report::dc_of(n).map(|dc| (n.target.authority(), dc.to_string())))
        .collect();
    for t in targets.iter_mut().filter(|t| t.datacenter.is_none()) {
        t.datacenter = known.get(&t.authority()).cloned();
    }
}

/// The targets for the next round: gathered again (DNS and Consul change),
/// the previous ones when that fails.
async fn regather(args: &FleetArgs, token: Option<&str>, previous: Vec<Target>) -> Vec<Target> {
    match gather(args, token).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "fleet: gathering the targets failed; polling the previous ones");
            previous
        }
    }
}

/// SIGINT and SIGTERM streams, made once per command.
fn stop_signals() -> Result<(tokio::signal::unix::Signal, tokio::signal::unix::Signal), Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let int = signal(SignalKind::interrupt()).map_err(|e| Error::io("watch SIGINT", e))?;
    let term = signal(SignalKind::terminate()).map_err(|e| Error::io("watch SIGTERM", e))?;
    Ok((int, term))
}

async fn watch_loop(
    args: &FleetArgs,
    token: Option<&str>,
    rt: &PollRuntime,
    poller: &Arc<Poller>,
    mut targets: Vec<Target>,
    secs: u64,
) -> Result<u8, Error> {
    let terminal = std::io::stdout().is_terminal();
    // Made once, so that a signal arriving during a poll is not lost.
    let (mut sigint, mut sigterm) = stop_signals()?;
    let mut last: Option<FleetReport> = None;
    loop {
        remember_dcs(&mut targets, last.as_ref());
        let (report, polled) = poll(rt, poller, targets, std::io::stderr().is_terminal()).await;
        // One failed write of the SD file (disk full, permissions) is a
        // warning in a loop that goes on, as in `fleet serve`.
        if let Err(e) = write_sd(args, &report) {
            tracing::warn!(error = %e, "fleet: writing the Prometheus SD file failed");
        }
        print_report(args, &report, terminal && !args.json)?;
        let code = exit_code(&report);
        last = Some(report);
        tokio::select! {
            _ = sigint.recv() => return Ok(code),
            _ = sigterm.recv() => return Ok(code),
            () = tokio::time::sleep(Duration::from_secs(secs)) => {}
        }
        targets = regather(args, token, polled).await;
    }
}

async fn serve_loop(
    args: &FleetArgs,
    token: Option<&str>,
    rt: &PollRuntime,
    poller: &Arc<Poller>,
    mut targets: Vec<Target>,
    listen: std::net::SocketAddr,
    interval: u64,
) -> Result<u8, Error> {
    let refresh = Duration::from_secs(interval);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| FleetError::Bind {
            addr: listen,
            source,
        })?;
    let local = listener.local_addr().unwrap_or(listen);
    tracing::info!(addr = %local, targets = targets.len(), "fleet page listening");
    let (tx, rx) = watch::channel(Arc::new(Published::waiting(refresh)));
    let cancel = CancellationToken::new();
    let server = tokio::spawn(serve::serve(listener, rx, cancel.clone()));
    let (mut sigint, mut sigterm) = stop_signals()?;
    let mut last: Option<FleetReport> = None;
    let code = loop {
        remember_dcs(&mut targets, last.as_ref());
        let round = poll(rt, poller, std::mem::take(&mut targets), false);
        let (report, polled) = tokio::select! {
            r = round => r,
            _ = sigint.recv() => break last.as_ref().map_or(0, exit_code),
            _ = sigterm.recv() => break last.as_ref().map_or(0, exit_code),
        };
        tx.send_replace(Arc::new(Published::from_report(&report, refresh)));
        if let Err(e) = write_sd(args, &report) {
            tracing::warn!(error = %e, "fleet: writing the Prometheus SD file failed");
        }
        tracing::info!(summary = %report.summary_line(), "fleet poll done");
        let code = exit_code(&report);
        last = Some(report);
        tokio::select! {
            _ = sigint.recv() => break code,
            _ = sigterm.recv() => break code,
            () = tokio::time::sleep(refresh) => {}
        }
        targets = regather(args, token, polled).await;
    };
    cancel.cancel();
    let _ = server.await;
    Ok(code)
}

//! `hashi-join-bench`: throughput of one CA holder's join endpoint
//! (`security::join_server::JoinEndpoint`, the code `supervisor run` serves
//! on port 4681) on loopback: a cluster made as `supervisor cluster init`
//! makes it (a new CA, `cluster.json`, `tokens.json`) in a temp dir, one
//! join token, then `--joins` certificate requests of Nomad clients sent
//! with `--concurrency` in flight through the supervisor's own join client
//! (`join_client::exchange`: TLS pinned to the CA, bearer token, CSR
//! signing, token record update). The requests (P-256 key + CSR each) are
//! made before the clock starts and timed separately.
//!
//! ```text
//! hashi-join-bench [--joins 2000] [--concurrency 64] [--workers 2]
//! ```
//!
//! Prints the CSR generation rate, the joins per second and the time a
//! 10,000-node rollout would spend in joins against one CA holder.

// The disallowed methods (clippy.toml) guard the supervisor's own code: the
// bench writes its fixture role file directly.
#![allow(
    clippy::disallowed_methods,
    reason = "test infrastructure, not the supervisor's code"
)]

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use hashi_supervisor::role::{self, Secret, SystemHost};
use hashi_supervisor::security::ca::{self, ClusterCa};
use hashi_supervisor::security::join_client::{self, Credential};
use hashi_supervisor::security::join_server::JoinEndpoint;
use hashi_supervisor::security::store::{self, ClusterFile};
use hashi_supervisor::security::token::TokenStore;
use tokio_util::sync::CancellationToken;

/// Join endpoint throughput on loopback.
#[derive(Debug, Parser)]
#[command(name = "hashi-join-bench", about)]
struct Cli {
    /// Joins to send.
    #[arg(long, default_value_t = 2000)]
    joins: usize,
    /// Joins in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Tokio worker threads (the endpoint and the clients share them).
    #[arg(long, default_value_t = 2)]
    workers: usize,
}

/// A gossip key for the bench's cluster (any 32 bytes, base64).
const GOSSIP: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.workers.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say(&format!("error: failed to start a runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(bench(&cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say(&format!("error: {e}"));
            ExitCode::FAILURE
        }
    }
}

async fn bench(cli: &Cli) -> Result<(), String> {
    let tmp = tempfile::tempdir().map_err(|e| format!("failed to make a temp dir: {e}"))?;
    let cluster_dir = tmp.path().join("holder/cluster");
    let ca = ClusterCa::create().map_err(|e| format!("failed to create a CA: {e}"))?;
    let cluster = ClusterFile::new(
        &ca,
        &Secret::new(GOSSIP),
        &Secret::new(GOSSIP),
        "ams2",
        true,
    );
    store::write_cluster_dir(&cluster_dir, &ca, &cluster, &[])
        .map_err(|e| format!("failed to write the cluster dir: {e}"))?;
    let pin = ca.pin();
    let token = TokenStore::modify(&cluster_dir, &pin, |s| {
        s.create(
            Duration::from_secs(3600),
            Some("hashi-join-bench"),
            true,
            ca::now_unix(),
        )
    })
    .map_err(|e| format!("failed to create a join token: {e}"))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("failed to listen on loopback: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("failed to read the listener's address: {e}"))?;
    let cancel = CancellationToken::new();
    let endpoint = JoinEndpoint::new(&cluster_dir, Duration::from_secs(90 * 86_400));
    tokio::spawn(endpoint.serve(listener, cancel.clone()));

    // The joining node's role (a Nomad client of ams2), as the supervisor
    // loads it; every request is made from it with a fresh key.
    let node_dir = tmp.path().join("node");
    std::fs::create_dir_all(&node_dir).map_err(|e| format!("failed to make the node dir: {e}"))?;
    let role_path = node_dir.join("node.toml");
    let text = format!(
        "schema = 1\nroles = [\"nomad-client\"]\nregion = \"eu\"\nnode_name = \"ams2-client-99\"\n\
         datacenter = \"ams2\"\n[addresses]\nprivate = \"127.0.0.1\"\n[nomad]\nuser = \"nobody\"\n\
         [discovery]\nnomad_retry_join = [\"127.0.0.1\"]\n[paths]\nconfig_dir = \"{}\"\n\
         state_dir = \"{}\"\n",
        node_dir.join("etc").display(),
        node_dir.join("state").display()
    );
    std::fs::write(&role_path, text).map_err(|e| format!("failed to write the role: {e}"))?;
    let overrides = role::Overrides {
        join_token: Some(Secret::new(token.expose())),
        ..role::Overrides::default()
    };
    let role = role::load_with(&role_path, true, &overrides, &SystemHost)
        .map_err(|e| format!("failed to load the bench role: {e}"))?
        .role;

    let started = Instant::now();
    let mut requests = Vec::with_capacity(cli.joins);
    for _ in 0..cli.joins {
        let key = ca::new_key_pair().map_err(|e| format!("failed to make a key: {e}"))?;
        let req = join_client::request_for(&role, &key)
            .map_err(|e| format!("failed to make a request: {e}"))?;
        requests.push(req);
    }
    let csr_time = started.elapsed();

    let token = Arc::new(token);
    let candidates = Arc::new(vec![addr.to_string()]);
    let pin = Arc::new(pin);
    let sem = Arc::new(tokio::sync::Semaphore::new(cli.concurrency.max(1)));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for req in requests {
        let (token, candidates, pin, sem) =
            (token.clone(), candidates.clone(), pin.clone(), sem.clone());
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await.map_err(|e| e.to_string())?;
            join_client::exchange(&candidates, &pin, Credential::Token(&token), &req)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
    }
    let mut failed = 0usize;
    let mut first_error = None;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    let join_time = started.elapsed();
    cancel.cancel();
    let ok = cli.joins - failed;
    let uses = TokenStore::load(&cluster_dir, &pin)
        .map_err(|e| format!("failed to read the token store: {e}"))?
        .list()
        .iter()
        .map(|r| r.uses)
        .sum::<u64>();
    let rate = ok as f64 / join_time.as_secs_f64();
    say(&format!(
        "hashi-join-bench: {} joins, {} in flight, {} worker threads, one CA holder on loopback",
        cli.joins, cli.concurrency, cli.workers
    ));
    say(&format!(
        "CSR generation (client side, excluded below): {:.0} per second ({:.2} s for {})",
        cli.joins as f64 / csr_time.as_secs_f64(),
        csr_time.as_secs_f64(),
        cli.joins
    ));
    say(&format!(
        "joins: {ok} ok, {failed} failed in {:.2} s: {rate:.0} joins per second (token uses recorded: {uses})",
        join_time.as_secs_f64()
    ));
    if rate > 0.0 {
        say(&format!(
            "10,000-node rollout against one CA holder: {:.0} s of joins",
            10_000.0 / rate
        ));
    }
    if let Some(e) = first_error {
        return Err(format!("{failed} joins failed; the first: {e}"));
    }
    Ok(())
}

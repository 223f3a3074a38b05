//! The supervision rig: small `sh` scripts standing in for the agents
//! ([`AGENT_SCRIPT`]), plans and run options built around them ([`Rig`]), a
//! file-based readiness check ([`FileCheck`]), and the daemon running on a
//! task ([`start`], [`Running`]) with a [`FakePreparer`].

#![allow(clippy::unwrap_used)] // test helpers: a failed setup step is a failed test

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hashi_supervisor::plan::{AgentPlan, Plan, ReleasePlan};
use hashi_supervisor::supervise::check::{BoxFuture, ReadyCheck};
use hashi_supervisor::supervise::daemon::status_channel;
use hashi_supervisor::supervise::{DaemonEvent, RunOptions, SupervisorStatus, run};
use hashi_supervisor::version::VersionSpec;
use hashi_supervisor::vocab::{Product, RestartMode, RestartPolicy};
use nix::sys::signal::Signal;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::preparer::{FakePreparer, installed};

/// Upper bound of any wait in these tests (a hang fails, slowness does not).
pub const WAIT: Duration = Duration::from_secs(60);

/// The body every fake agent runs: log start and signals to `$LOG`, then
/// idle until stopped. `$PRE` runs first (crash, spawn a child...).
pub const AGENT_SCRIPT: &str = r#"#!/bin/sh
rm -f "$DIR/$NAME.ready"
echo "$NAME start $$" >> "$LOG"
SLEEP=
trap 'echo "$NAME signal TERM" >> "$LOG"; [ -n "$SLEEP" ] && kill $SLEEP; exit 1' TERM
trap 'echo "$NAME signal INT" >> "$LOG"; [ -n "$SLEEP" ] && kill $SLEEP; exit 0' INT
trap 'echo "$NAME signal HUP" >> "$LOG"; [ -n "$SLEEP" ] && kill $SLEEP' HUP
eval "$PRE"
while :; do sleep 1000 & SLEEP=$!; wait $SLEEP; done
"#;

pub struct Rig {
    /// The temp dir holding the scripts, the log and the state.
    pub dir: tempfile::TempDir,
}

impl Rig {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn log(&self) -> PathBuf {
        self.path("events.log")
    }

    pub fn events(&self) -> Vec<String> {
        std::fs::read_to_string(self.log())
            .unwrap_or_default()
            .lines()
            .map(|l| {
                // Drop the pid of "start" lines.
                let mut w: Vec<&str> = l.split_whitespace().collect();
                if w.get(1) == Some(&"start") {
                    w.truncate(2);
                }
                w.join(" ")
            })
            .collect()
    }

    /// Writes an executable script at `name`.
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    pub fn agent(&self, product: Product, stop_signal: Signal) -> AgentPlan {
        let binary = self.script(&format!("{product}-agent"), AGENT_SCRIPT);
        AgentPlan {
            product,
            version: "1.0.0".parse::<VersionSpec>().unwrap(),
            server: true,
            client: false,
            user: whoami(),
            binary,
            args: vec![],
            config_dir: self.path("etc"),
            data_dir: self.path("data"),
            stop_signal,
            stop_timeout: Duration::from_secs(30),
            restart: RestartPolicy {
                attempts: 3,
                interval: Duration::from_secs(600),
                delay: Duration::ZERO,
                mode: RestartMode::Delay,
                max_delay: Duration::from_millis(50),
                stable_after: Duration::from_secs(600),
            },
            http_addr: "127.0.0.1:1".parse::<SocketAddr>().unwrap(),
            api_tls: None,
        }
    }

    pub fn plan(&self, agents: Vec<AgentPlan>) -> Plan {
        Plan {
            node_name: "ams2-server-01".into(),
            region: "eu".into(),
            datacenter: "ams2".into(),
            roles: vec!["consul-server".into(), "nomad-server".into()],
            agents,
            release: ReleasePlan {
                mirror: "file:///nonexistent".into(),
                trust_hashicorp_key: true,
                extra_trusted_keys: vec![],
                releases_dir: self.path("releases"),
                keep_versions: 2,
                max_download_bytes: 1,
            },
            health_listen: "127.0.0.1:0".parse().unwrap(),
            state_dir: self.path("state"),
            config_dir: self.path("etc"),
            render: Default::default(),
        }
    }

    /// Options: ready when `<product>.ready` exists in the rig, env for the
    /// script, `pre` per product.
    pub fn opts(&self, pre: &[(Product, &str)]) -> RunOptions {
        let dir = self.dir.path().to_path_buf();
        let mut extra_env = Vec::new();
        for p in [Product::Consul, Product::Nomad] {
            extra_env.push((p, "NAME".into(), p.to_string()));
            extra_env.push((p, "LOG".into(), self.log().display().to_string()));
            extra_env.push((p, "DIR".into(), dir.display().to_string()));
            let body = pre
                .iter()
                .find(|(q, _)| *q == p)
                .map(|(_, s)| s.to_string())
                .unwrap_or_else(|| {
                    format!("touch \"$DIR/{p}.ready\"; echo \"{p} ready\" >> \"$LOG\"")
                });
            extra_env.push((p, "PRE".into(), body));
        }
        let checks_dir = dir.clone();
        RunOptions {
            checks: Arc::new(move |a: &AgentPlan| {
                Some(
                    Arc::new(FileCheck(checks_dir.join(format!("{}.ready", a.product))))
                        as Arc<dyn ReadyCheck>,
                )
            }),
            extra_env,
            check_interval: None,
            become_subreaper: false,
            ..RunOptions::default()
        }
    }
}

pub fn whoami() -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::effective())
        .unwrap()
        .map(|u| u.name)
        .unwrap_or_else(|| "root".into())
}

/// Ready once a file exists (the script creates it when it means to be
/// ready); a pass consumes the file so a later process cannot pass on a
/// predecessor's file.
pub struct FileCheck(pub PathBuf);

impl ReadyCheck for FileCheck {
    fn check(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move { std::fs::remove_file(&self.0).is_ok() })
    }
}

pub struct Running {
    pub status: watch::Receiver<SupervisorStatus>,
    pub events: mpsc::UnboundedSender<DaemonEvent>,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), hashi_supervisor::supervise::SuperviseError>>,
}

pub fn start(plan: Plan, preparer: Arc<FakePreparer>, opts: RunOptions) -> Running {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("hashi_supervisor=debug")
        .try_init();
    let status = status_channel(&plan);
    let rx = status.subscribe();
    let (tx, ev_rx) = mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run(plan, preparer, opts, status, ev_rx, shutdown.clone()));
    Running {
        status: rx,
        events: tx,
        shutdown,
        task,
    }
}

impl Running {
    pub async fn wait(
        &self,
        what: &str,
        pred: impl Fn(&SupervisorStatus) -> bool,
    ) -> SupervisorStatus {
        let mut rx = self.status.clone();
        match tokio::time::timeout(WAIT, rx.wait_for(|s| pred(s))).await {
            Ok(Ok(s)) => s.clone(),
            _ => panic!("timed out waiting for {what}: {:#?}", self.status.borrow()),
        }
    }

    pub async fn stop(self) -> SupervisorStatus {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("daemon did not stop")
            .unwrap()
            .unwrap();
        self.status.borrow().clone()
    }
}

pub fn agent(s: &SupervisorStatus, p: Product) -> &hashi_supervisor::supervise::AgentStatus {
    s.agents.iter().find(|a| a.product == p).unwrap()
}

pub fn all_ready(s: &SupervisorStatus) -> bool {
    s.agents.iter().all(|a| a.ready)
}

/// Polls `cond` until true or [`WAIT`] passes.
pub async fn poll(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|r| !r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// A ready daemon running `plan` (one Consul, its binary installed as
/// 1.0.0) whose next reload upgrades to `new` (Consul 1.1.0 run from
/// `binary`). `tweak` adjusts the options before the start.
pub async fn start_upgradable(
    rig: &Rig,
    plan: Plan,
    new: Plan,
    binary: PathBuf,
    tweak: impl FnOnce(&mut RunOptions),
) -> (Running, Arc<FakePreparer>) {
    let v1 = plan.agents[0].binary.clone();
    let preparer = FakePreparer::new()
        .reloads_to(new)
        .with_release(installed(Product::Consul, "1.1.0", binary))
        .build();
    let mut opts = rig.opts(&[]);
    tweak(&mut opts);
    opts.installed
        .insert(Product::Consul, installed(Product::Consul, "1.0.0", v1));
    let d = start(plan, preparer.clone(), opts);
    d.wait("ready", all_ready).await;
    (d, preparer)
}

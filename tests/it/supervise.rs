//! Integration tests: supervise. Real processes (small `sh` scripts standing
//! in for the agents), real signals, real pidfiles and notify sockets; the
//! preparation steps (role file, release, render) are fakes.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup step is a failed test

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hashi_supervisor::plan::{AgentPlan, Plan};
use hashi_supervisor::render::ChangeKind;
use hashi_supervisor::supervise::daemon::status_channel;
use hashi_supervisor::supervise::{AgentState, DaemonEvent, RunOptions, run};
use hashi_supervisor::vocab::{Product, RestartMode};
use nix::sys::signal::Signal;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::support::daemon::{
    AGENT_SCRIPT, Rig, WAIT, agent, alive, all_ready, poll, start, start_upgradable,
};
use crate::support::preparer::{FakePreparer, RELOADED_HASH};

#[tokio::test]
async fn consul_is_ready_before_nomad_starts() {
    let rig = Rig::new();
    let plan = rig.plan(vec![
        rig.agent(Product::Consul, Signal::SIGINT),
        rig.agent(Product::Nomad, Signal::SIGTERM),
    ]);
    let d = start(plan, Arc::default(), rig.opts(&[]));
    d.wait("both ready", all_ready).await;
    let ev = rig.events();
    assert_eq!(
        &ev[..3],
        ["consul start", "consul ready", "nomad start"],
        "{ev:?}"
    );
    let s = d.stop().await;
    assert!(agent(&s, Product::Nomad).reason.is_none());
}

/// `(soft, hard)` of a `/proc/<pid>/limits` row (`None` = unlimited).
fn proc_limit(pid: u32, row: &str) -> (Option<u64>, Option<u64>) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = text.lines().find(|l| l.starts_with(row)).unwrap();
    let mut nums = line[row.len()..].split_whitespace();
    let mut next = || match nums.next().unwrap() {
        "unlimited" => None,
        n => Some(n.parse::<u64>().unwrap()),
    };
    (next(), next())
}

#[tokio::test]
async fn agents_get_65536_open_files_and_unlimited_processes_as_far_as_allowed() {
    let rig = Rig::new();
    let plan = rig.plan(vec![
        rig.agent(Product::Consul, Signal::SIGINT),
        rig.agent(Product::Nomad, Signal::SIGTERM),
    ]);
    let d = start(plan, Arc::default(), rig.opts(&[]));
    let s = d.wait("both ready", all_ready).await;
    for a in &s.agents {
        let pid = a.pid.unwrap();
        // Raised to the target, or (without CAP_SYS_RESOURCE over the hard
        // limit, as in some containers) the soft limit lifted to the hard.
        let (soft, hard) = proc_limit(pid, "Max open files");
        assert!(
            soft == Some(65536) || (soft == hard && hard < Some(65536)),
            "{}: open files {soft:?}/{hard:?}",
            a.product
        );
        let (soft, hard) = proc_limit(pid, "Max processes");
        assert!(
            soft.is_none() || soft == hard,
            "{}: processes {soft:?}/{hard:?}",
            a.product
        );
    }
    d.stop().await;
}

#[tokio::test]
async fn nomad_starts_anyway_when_consul_is_not_ready_in_time() {
    let rig = Rig::new();
    let plan = rig.plan(vec![
        rig.agent(Product::Consul, Signal::SIGINT),
        rig.agent(Product::Nomad, Signal::SIGTERM),
    ]);
    let mut opts = rig.opts(&[(Product::Consul, ":")]);
    opts.consul_wait = Duration::from_millis(200);
    let d = start(plan, Arc::default(), opts);
    let s = d
        .wait("nomad ready", |s| agent(s, Product::Nomad).ready)
        .await;
    assert!(!agent(&s, Product::Consul).ready);
    let reason = agent(&s, Product::Nomad).reason.clone().unwrap();
    assert!(reason.contains("consul not ready"), "{reason}");
    d.stop().await;
}

#[tokio::test]
async fn agent_ready_by_sd_notify_on_the_supervisors_socket() {
    let rig = Rig::new();
    let plan = rig.plan(vec![rig.agent(Product::Nomad, Signal::SIGTERM)]);
    let mut opts = rig.opts(&[(Product::Nomad, "/usr/bin/systemd-notify --ready --no-block")]);
    opts.checks = Arc::new(|_: &AgentPlan| None);
    let d = start(plan, Arc::default(), opts);
    let s = d.wait("nomad ready", all_ready).await;
    assert_eq!(agent(&s, Product::Nomad).state, AgentState::Running);
    d.stop().await;
}

#[tokio::test]
async fn sigterm_stops_nomad_before_consul_with_their_own_signals() {
    let rig = Rig::new();
    let plan = rig.plan(vec![
        rig.agent(Product::Consul, Signal::SIGINT),
        rig.agent(Product::Nomad, Signal::SIGTERM),
    ]);
    let d = start(plan, Arc::default(), rig.opts(&[]));
    d.wait("both ready", all_ready).await;
    let s = d.stop().await;
    let ev = rig.events();
    let stops: Vec<&String> = ev.iter().filter(|l| l.contains("signal")).collect();
    assert_eq!(stops, ["nomad signal TERM", "consul signal INT"], "{ev:?}");
    for a in &s.agents {
        assert_eq!(a.state, AgentState::Stopped);
        let exit = a.last_exit.as_ref().unwrap();
        assert!(exit.expected, "{exit:?}");
        assert_eq!(a.restarts, 0);
    }
    // Nomad's script exits 1 after SIGTERM: still a clean stop.
    assert_eq!(
        agent(&s, Product::Nomad).last_exit.as_ref().unwrap().code,
        Some(1)
    );
    assert!(s.stopping);
}

#[tokio::test]
async fn crashed_agent_is_restarted_and_counted() {
    let rig = Rig::new();
    let plan = rig.plan(vec![rig.agent(Product::Consul, Signal::SIGINT)]);
    // Crash on the first two runs, then stay up and be ready.
    let pre = r#"n=$(cat "$DIR/count" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$DIR/count"
if [ $n -le 2 ]; then echo "consul crash" >> "$LOG"; exit 3; fi
touch "$DIR/consul.ready""#;
    let d = start(plan, Arc::default(), rig.opts(&[(Product::Consul, pre)]));
    let s = d.wait("consul ready", all_ready).await;
    let a = agent(&s, Product::Consul);
    assert_eq!(a.restarts, 2);
    assert_eq!(
        rig.events().iter().filter(|l| *l == "consul start").count(),
        3
    );
    let exit = a.last_exit.as_ref().unwrap();
    assert_eq!((exit.code, exit.expected), (Some(3), false));
    d.stop().await;
}

#[tokio::test]
async fn crash_loop_in_fail_mode_ends_failed_after_the_attempts() {
    let rig = Rig::new();
    let mut a = rig.agent(Product::Consul, Signal::SIGINT);
    a.restart.mode = RestartMode::Fail;
    a.restart.attempts = 2;
    let plan = rig.plan(vec![a]);
    let d = start(
        plan,
        Arc::default(),
        rig.opts(&[(Product::Consul, "exit 2")]),
    );
    let s = d
        .wait("failed", |s| {
            agent(s, Product::Consul).state == AgentState::Failed
        })
        .await;
    let a = agent(&s, Product::Consul);
    assert_eq!(a.restarts, 2);
    assert!(a.reason.as_deref().unwrap().contains("restart mode fail"));
    assert_eq!(rig.events().len(), 3);
    d.stop().await;
}

#[tokio::test]
async fn crash_loop_in_delay_mode_keeps_restarting_past_the_attempts() {
    let rig = Rig::new();
    let mut a = rig.agent(Product::Consul, Signal::SIGINT);
    a.restart.attempts = 2;
    a.restart.delay = Duration::from_millis(5);
    let plan = rig.plan(vec![a]);
    let d = start(
        plan,
        Arc::default(),
        rig.opts(&[(Product::Consul, "exit 2")]),
    );
    let s = d
        .wait("8 restarts", |s| {
            let a = agent(s, Product::Consul);
            a.restarts >= 8 || a.state == AgentState::Failed
        })
        .await;
    assert_ne!(agent(&s, Product::Consul).state, AgentState::Failed);
    d.stop().await;
}

#[tokio::test]
async fn hung_agent_is_sigkilled_after_its_stop_timeout() {
    let rig = Rig::new();
    let mut a = rig.agent(Product::Consul, Signal::SIGINT);
    a.stop_timeout = Duration::from_millis(300);
    let plan = rig.plan(vec![a]);
    let pre = r#"trap 'echo "consul ignored INT" >> "$LOG"' INT; touch "$DIR/consul.ready""#;
    let d = start(plan, Arc::default(), rig.opts(&[(Product::Consul, pre)]));
    d.wait("ready", all_ready).await;
    let s = d.stop().await;
    let exit = agent(&s, Product::Consul).last_exit.clone().unwrap();
    assert_eq!(exit.signal.as_deref(), Some("SIGKILL"));
    assert!(exit.expected);
    assert!(rig.events().contains(&"consul ignored INT".to_string()));
}

#[tokio::test]
async fn a_plan_built_with_the_longest_durations_still_stops_gracefully() {
    // A plan built by code, not a checked role file: no arithmetic on its
    // durations may panic (it did: `Instant + Duration::MAX` on SIGTERM).
    let rig = Rig::new();
    let mut consul = rig.agent(Product::Consul, Signal::SIGINT);
    let mut nomad = rig.agent(Product::Nomad, Signal::SIGTERM);
    for a in [&mut consul, &mut nomad] {
        a.stop_timeout = Duration::MAX;
        a.restart.interval = Duration::MAX;
        a.restart.stable_after = Duration::MAX;
    }
    let d = start(rig.plan(vec![consul, nomad]), Arc::default(), rig.opts(&[]));
    d.wait("both ready", all_ready).await;
    let s = d.stop().await;
    for a in &s.agents {
        assert_eq!(a.state, AgentState::Stopped, "{a:?}");
        assert!(a.last_exit.as_ref().unwrap().expected, "{a:?}");
    }
    let ev = rig.events();
    assert!(ev.contains(&"consul signal INT".to_string()), "{ev:?}");
}

#[tokio::test]
async fn a_crash_with_the_longest_restart_delay_waits_in_backoff_and_still_stops() {
    // It killed the actor: Nomad never restarted, its status kept a dead pid.
    let rig = Rig::new();
    let mut a = rig.agent(Product::Nomad, Signal::SIGTERM);
    a.restart.delay = Duration::MAX;
    a.restart.max_delay = Duration::MAX;
    let d = start(
        rig.plan(vec![a]),
        Arc::default(),
        rig.opts(&[(Product::Nomad, "exit 2")]),
    );
    let s = d
        .wait("backoff", |s| {
            agent(s, Product::Nomad).state == AgentState::Backoff
        })
        .await;
    assert_eq!(agent(&s, Product::Nomad).pid, None);
    let s = d.stop().await;
    assert_eq!(agent(&s, Product::Nomad).state, AgentState::Stopped);
}

#[tokio::test]
async fn second_stop_request_skips_the_remaining_grace() {
    let rig = Rig::new();
    let mut a = rig.agent(Product::Consul, Signal::SIGINT);
    // Far longer than the test's own bound: only the hurry can end it.
    a.stop_timeout = Duration::from_secs(3600);
    let plan = rig.plan(vec![a]);
    let pre = r#"trap 'echo "consul ignored INT" >> "$LOG"' INT; touch "$DIR/consul.ready""#;
    let d = start(plan, Arc::default(), rig.opts(&[(Product::Consul, pre)]));
    d.wait("ready", all_ready).await;
    d.shutdown.cancel();
    poll("stop signal delivered", || {
        rig.events().contains(&"consul ignored INT".to_string())
    })
    .await;
    d.events.send(DaemonEvent::Hurry).unwrap();
    let s = d.stop().await;
    let exit = agent(&s, Product::Consul).last_exit.clone().unwrap();
    assert_eq!(exit.signal.as_deref(), Some("SIGKILL"));
}

#[tokio::test]
async fn nomads_child_processes_survive_a_nomad_restart() {
    let rig = Rig::new();
    let plan = rig.plan(vec![rig.agent(Product::Nomad, Signal::SIGTERM)]);
    // Like an executor: its own session, outliving the agent.
    let pre = r#"if [ ! -f "$DIR/task.pid" ]; then setsid sleep 1000 >/dev/null 2>&1 < /dev/null & echo $! > "$DIR/task.pid"; fi
touch "$DIR/nomad.ready""#;
    let preparer = FakePreparer::new()
        .reloads_to(rig.plan(vec![rig.agent(Product::Nomad, Signal::SIGTERM)]))
        .with_change(Product::Nomad, ChangeKind::Restart)
        .build();
    let d = start(plan, preparer, rig.opts(&[(Product::Nomad, pre)]));
    let s = d.wait("ready", all_ready).await;
    let first_pid = agent(&s, Product::Nomad).pid.unwrap();
    let task: i32 = std::fs::read_to_string(rig.path("task.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    d.events.send(DaemonEvent::Reload).unwrap();
    let s = d
        .wait("restarted and ready", |s| {
            let a = agent(s, Product::Nomad);
            a.restarts == 1 && a.ready
        })
        .await;
    assert_ne!(agent(&s, Product::Nomad).pid, Some(first_pid));
    assert!(alive(task), "the task process died with the agent restart");
    d.stop().await;
    assert!(alive(task), "the task process died with the agent stop");
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(task), Signal::SIGKILL);
}

#[tokio::test]
async fn reload_with_a_reloadable_change_sends_sighup() {
    let rig = Rig::new();
    let plan = rig.plan(vec![rig.agent(Product::Consul, Signal::SIGINT)]);
    let preparer = FakePreparer::new()
        .reloads_to(plan.clone())
        .with_change(Product::Consul, ChangeKind::Reload)
        .build();
    let d = start(plan, preparer, rig.opts(&[]));
    let s = d.wait("ready", all_ready).await;
    let pid = agent(&s, Product::Consul).pid;
    d.events.send(DaemonEvent::Reload).unwrap();
    poll("SIGHUP", || {
        rig.events().contains(&"consul signal HUP".to_string())
    })
    .await;
    let s = d
        .wait("hash updated", |s| s.config_hash == RELOADED_HASH)
        .await;
    assert_eq!(agent(&s, Product::Consul).pid, pid);
    assert_eq!(s.reload_error, None);
    d.stop().await;
}

#[tokio::test]
async fn reload_that_moves_the_node_to_another_datacenter_publishes_the_new_node() {
    let rig = Rig::new();
    let plan = rig.plan(vec![rig.agent(Product::Consul, Signal::SIGINT)]);
    let mut moved = plan.clone();
    moved.datacenter = "lon1".into();
    moved.node_name = "lon1-server-01".into();
    let preparer = FakePreparer::new()
        .reloads_to(moved)
        .with_change(Product::Consul, ChangeKind::Reload)
        .build();
    let d = start(plan, preparer, rig.opts(&[]));
    let s = d.wait("ready", all_ready).await;
    let node = s.node.clone().expect("the status names the node");
    assert_eq!(
        (node.node_name.as_str(), node.datacenter.as_str()),
        ("ams2-server-01", "ams2")
    );
    d.events.send(DaemonEvent::Reload).unwrap();
    let s = d
        .wait("hash updated", |s| s.config_hash == RELOADED_HASH)
        .await;
    let node = s.node.clone().expect("the status names the node");
    assert_eq!(
        (node.node_name.as_str(), node.datacenter.as_str()),
        ("lon1-server-01", "lon1")
    );
    assert_eq!(node.region, "eu");
    assert_eq!(s.reload_error, None);
    d.stop().await;
}

/// The rendered Nomad settings of a real client plan (Nomad stops without
/// a leave on SIGTERM there).
fn real_nomad_client_render() -> hashi_supervisor::plan::RenderPlan {
    let host = hashi_supervisor::role::StaticHost {
        hostname: Some("ams2-client-01".into()),
        interfaces: vec![("eth1".into(), std::net::Ipv4Addr::new(10, 0, 1, 21))],
        ..Default::default()
    };
    let text = "schema = 1\n[discovery]\nnomad_retry_join = [\"10.0.1.11\"]\n[security]\nplaintext = true\n";
    let role = hashi_supervisor::role::parse(
        std::path::Path::new("/r/node.toml"),
        text,
        &["nomad-client".to_string()],
        &host,
    )
    .unwrap();
    Plan::from_role(&role).render
}

#[tokio::test]
async fn a_config_restart_of_a_nomad_client_keeps_workloads_and_a_stop_leaves() {
    let rig = Rig::new();
    let mut plan = rig.plan(vec![rig.agent(Product::Nomad, Signal::SIGINT)]);
    plan.render = real_nomad_client_render();
    let preparer = FakePreparer::new()
        .reloads_to(plan.clone())
        .with_change(Product::Nomad, ChangeKind::Restart)
        .build();
    let d = start(plan, preparer, rig.opts(&[]));
    d.wait("ready", all_ready).await;
    d.events.send(DaemonEvent::Reload).unwrap();
    d.wait("restarted and ready", |s| {
        agent(s, Product::Nomad).restarts == 1 && all_ready(s)
    })
    .await;
    d.stop().await;
    let ev = rig.events();
    let signals: Vec<&String> = ev.iter().filter(|l| l.contains("signal")).collect();
    // The restart: SIGTERM (no leave, no drain); the stop: SIGINT (leave).
    assert_eq!(signals, ["nomad signal TERM", "nomad signal INT"], "{ev:?}");
}

#[tokio::test]
async fn reload_with_an_invalid_role_file_keeps_everything_and_reports() {
    let rig = Rig::new();
    let plan = rig.plan(vec![rig.agent(Product::Consul, Signal::SIGINT)]);
    let preparer = FakePreparer::new()
        .reload_fails("node.toml:3:1: unknown key")
        .build();
    let d = start(plan, preparer, rig.opts(&[]));
    let s = d.wait("ready", all_ready).await;
    let pid = agent(&s, Product::Consul).pid;
    d.events.send(DaemonEvent::Reload).unwrap();
    let s = d.wait("reload error", |s| s.reload_error.is_some()).await;
    assert!(s.reload_error.as_deref().unwrap().contains("unknown key"));
    assert_eq!(agent(&s, Product::Consul).pid, pid);
    assert!(!rig.events().iter().any(|l| l.contains("signal")));
    d.stop().await;
}

#[tokio::test]
async fn reload_that_moves_an_agents_api_is_refused_and_changes_nothing() {
    let rig = Rig::new();
    let plan = rig.plan(vec![rig.agent(Product::Consul, Signal::SIGINT)]);
    let mut moved = plan.clone();
    moved.agents[0].http_addr = "127.0.0.1:18500".parse::<SocketAddr>().unwrap();
    let preparer = FakePreparer::new()
        .reloads_to(moved)
        .with_change(Product::Consul, ChangeKind::Restart)
        .build();
    let d = start(plan, preparer, rig.opts(&[]));
    let s = d.wait("ready", all_ready).await;
    let pid = agent(&s, Product::Consul).pid;
    d.events.send(DaemonEvent::Reload).unwrap();
    let s = d.wait("reload error", |s| s.reload_error.is_some()).await;
    let err = s.reload_error.as_deref().unwrap();
    assert!(err.contains("consul HTTP API moves"), "{err}");
    assert!(err.contains("restart the supervisor"), "{err}");
    // Not restarted although the (fake) render said the change needs it.
    assert_eq!(agent(&s, Product::Consul).pid, pid);
    assert_eq!(agent(&s, Product::Consul).restarts, 0);
    d.stop().await;
}

#[tokio::test]
async fn version_change_restarts_on_the_new_release() {
    let rig = Rig::new();
    let plan = rig.plan(vec![rig.agent(Product::Consul, Signal::SIGINT)]);
    let mut new = plan.clone();
    new.agents[0].version = "1.1.0".parse().unwrap();
    let v2 = rig.script("consul-1.1.0", AGENT_SCRIPT);
    let (d, preparer) = start_upgradable(&rig, plan, new, v2, |_| {}).await;
    d.events.send(DaemonEvent::Reload).unwrap();
    // The reload is applied first; the rollout (its own task) then
    // restarts the agent on the new release.
    let s = d
        .wait("hash updated, upgraded", |s| {
            s.config_hash == RELOADED_HASH
                && agent(s, Product::Consul).version.as_deref() == Some("1.1.0")
                && agent(s, Product::Consul).restarts >= 1
                && agent(s, Product::Consul).ready
        })
        .await;
    let a = agent(&s, Product::Consul);
    assert_eq!((a.restarts, a.ready), (1, true));
    assert_eq!(s.reload_error, None);
    assert!(preparer.rollbacks().is_empty());
    d.stop().await;
}

#[tokio::test]
async fn new_version_that_fails_to_start_is_rolled_back() {
    let rig = Rig::new();
    let plan = rig.plan(vec![rig.agent(Product::Consul, Signal::SIGINT)]);
    let mut new = plan.clone();
    new.agents[0].version = "1.1.0".parse().unwrap();
    let broken = rig.script(
        "consul-1.1.0",
        "#!/bin/sh\nrm -f \"$DIR/$NAME.ready\"\necho \"consul-1.1.0 start $$\" >> \"$LOG\"\nexit 1\n",
    );
    let (d, preparer) = start_upgradable(&rig, plan, new, broken, |o| {
        o.rollback_window = Duration::from_secs(30)
    })
    .await;
    d.events.send(DaemonEvent::Reload).unwrap();
    let s = d
        .wait("rolled back and ready", |s| {
            s.reload_error.is_some() && all_ready(s)
        })
        .await;
    assert!(
        s.reload_error
            .as_deref()
            .unwrap()
            .contains("rolled back to 1.0.0")
    );
    let a = agent(&s, Product::Consul);
    assert_eq!(a.version.as_deref(), Some("1.0.0"));
    assert_eq!(preparer.rollbacks(), ["1.0.0"]);
    assert!(rig.events().contains(&"consul-1.1.0 start".to_string()));
    let ev = rig.events();
    assert_eq!(
        ev.last().map(String::as_str),
        Some("consul ready"),
        "{ev:?}"
    );
    d.stop().await;
}

/// The seam of issue 16: a reload's upgrade installs, and its rollback
/// switches back, under the release settings of the plan being applied
/// (the one the reload loaded), not of a role file read again meanwhile.
#[tokio::test]
async fn an_upgrade_installs_and_rolls_back_under_the_release_settings_it_applies() {
    let rig = Rig::new();
    let plan = rig.plan(vec![rig.agent(Product::Consul, Signal::SIGINT)]);
    let mut new = plan.clone();
    new.agents[0].version = "1.1.0".parse().unwrap();
    new.release.mirror = "file:///new-mirror".into();
    new.release.releases_dir = rig.path("new-releases");
    let broken = rig.script(
        "consul-1.1.0",
        "#!/bin/sh\nrm -f \"$DIR/$NAME.ready\"\nexit 1\n",
    );
    let (d, preparer) = start_upgradable(&rig, plan, new, broken, |_| {}).await;
    d.events.send(DaemonEvent::Reload).unwrap();
    d.wait("rolled back and ready", |s| {
        s.reload_error.is_some() && all_ready(s)
    })
    .await;
    assert_eq!(
        preparer.install_calls(),
        [(
            "file:///new-mirror".to_string(),
            rig.path("new-releases"),
            "1.1.0".to_string()
        )]
    );
    assert_eq!(
        preparer.rollback_calls(),
        [(rig.path("new-releases"), "1.0.0".to_string())]
    );
    d.stop().await;
}

#[tokio::test]
async fn agent_left_by_a_killed_supervisor_is_replaced_on_next_start() {
    let rig = Rig::new();
    let a = rig.agent(Product::Consul, Signal::SIGINT);
    let plan = rig.plan(vec![a.clone()]);
    // What a SIGKILLed supervisor leaves: a running agent and its pidfile.
    let run_dir = plan.state_dir.join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    let mut old = std::process::Command::new(&a.binary)
        .env("NAME", "old-consul")
        .env("LOG", rig.log())
        .env("PRE", ":")
        .process_group(0)
        .spawn()
        .unwrap();
    let old_pid = old.id();
    poll("old agent up", || {
        rig.events().contains(&"old-consul start".to_string())
    })
    .await;
    hashi_supervisor::supervise::spawn::write_pidfile(&run_dir.join("consul.pid"), old_pid)
        .unwrap();
    let d = start(plan, Arc::default(), rig.opts(&[]));
    let s = d.wait("ready", all_ready).await;
    // The old one got its stop signal and is gone before ours started.
    let ev = rig.events();
    assert_eq!(
        &ev[..3],
        ["old-consul start", "old-consul signal INT", "consul start"],
        "{ev:?}"
    );
    let status = old.wait().unwrap();
    assert!(status.success());
    assert_ne!(agent(&s, Product::Consul).pid, Some(old_pid));
    d.stop().await;
}

#[tokio::test]
async fn second_supervisor_on_the_same_state_dir_refuses_and_leaves_the_agents_alone() {
    let rig = Rig::new();
    let plan = rig.plan(vec![rig.agent(Product::Consul, Signal::SIGINT)]);
    let d = start(plan.clone(), Arc::default(), rig.opts(&[]));
    let s = d.wait("ready", all_ready).await;
    let pid = agent(&s, Product::Consul).pid.unwrap();

    let status = status_channel(&plan);
    let (_tx, ev_rx) = mpsc::unbounded_channel();
    let second = tokio::time::timeout(
        WAIT,
        run(
            plan,
            Arc::<FakePreparer>::default(),
            rig.opts(&[]),
            status,
            ev_rx,
            CancellationToken::new(),
        ),
    )
    .await
    .expect("the second supervisor returns at once");
    assert!(
        matches!(
            second,
            Err(hashi_supervisor::supervise::SuperviseError::AlreadyRunning { .. })
        ),
        "{second:?}"
    );
    // The first one's agent was neither signalled nor replaced.
    assert!(alive(pid as i32));
    assert_eq!(rig.events(), ["consul start", "consul ready"]);
    let s = d.stop().await;
    assert_eq!(agent(&s, Product::Consul).restarts, 0);
}

/// Run as PID 1 of a new pid namespace by
/// `zombies_are_reaped_as_pid_1_without_stealing_agent_exits`.
#[tokio::test]
#[ignore = "helper: runs only inside unshare, started by another test"]
async fn pid1_reaper_helper() {
    if std::env::var_os("HASHI_PID1_HELPER").is_none() {
        return;
    }
    assert_eq!(std::process::id(), 1);
    let rig = Rig::new();
    let plan = rig.plan(vec![rig.agent(Product::Consul, Signal::SIGINT)]);
    // The agent leaves orphans that exit at once: they become our zombies.
    let pre = r#"for i in 1 2 3 4 5; do sh -c 'sleep 0.01 & echo $! >> "$DIR/orphans"'; done; touch "$DIR/consul.ready""#;
    let mut opts = rig.opts(&[(Product::Consul, pre)]);
    opts.become_subreaper = true;
    let d = start(plan, Arc::default(), opts);
    let s = d.wait("ready", all_ready).await;
    assert!(agent(&s, Product::Consul).pid.is_some());
    let orphans: Vec<u32> = std::fs::read_to_string(rig.path("orphans"))
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(orphans.len(), 5);
    // Adopted by us (PID 1); a zombie stays in /proc until someone reaps it.
    poll("orphans reaped", || {
        orphans
            .iter()
            .all(|p| !Path::new(&format!("/proc/{p}")).exists())
    })
    .await;
    let s = d.stop().await;
    // The agent's own exit status still reached its actor.
    let exit = agent(&s, Product::Consul).last_exit.clone().unwrap();
    assert_eq!((exit.code, exit.expected), (Some(0), true));
}

#[test]
fn zombies_are_reaped_as_pid_1_without_stealing_agent_exits() {
    if !crate::support::available("root", crate::support::root("unshare --pid needs it"))
        || !crate::support::require_tools(&["unshare"])
    {
        return;
    }
    let unshare = crate::support::find_tool("unshare").unwrap();
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(unshare)
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(exe)
        .args([
            "supervise::pid1_reaper_helper",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env("HASHI_PID1_HELPER", "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success()
        && text.contains("unshare failed")
        && !crate::support::available("PID namespaces", Err(text.clone()))
    {
        return;
    }
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "{text}");
}

/// The stand-in agents (test-only `hashi-standin`) under the real daemon,
/// with the default HTTP readiness checks and sd_notify.
mod with_standin {
    use super::*;
    use crate::support::standin::{free_port, install_as, read_events};

    /// An agent plan running the stand-in as `product`, its config written
    /// into the rig; returns the plan and its event log.
    fn standin_agent(rig: &Rig, product: Product, stop_signal: Signal) -> (AgentPlan, PathBuf) {
        let base = rig.path(product.as_str());
        let cfg = base.join("config");
        std::fs::create_dir_all(&cfg).unwrap();
        let data = base.join("data");
        let (http, serf, wan, rpc) = (free_port(), free_port(), free_port(), free_port());
        let args = match product {
            Product::Consul => {
                let c = serde_json::json!({
                    "node_name": "ams2-server-01", "datacenter": "ams2",
                    "data_dir": data, "server": true, "bootstrap_expect": 1,
                    "bind_addr": "127.0.0.1", "client_addr": "127.0.0.1",
                    "ports": {"http": http, "serf_lan": serf, "serf_wan": wan, "server": rpc, "dns": -1},
                });
                std::fs::write(cfg.join("consul.json"), c.to_string()).unwrap();
                vec![
                    "agent".to_string(),
                    format!("-config-dir={}", cfg.display()),
                ]
            }
            Product::Nomad => {
                let hcl = format!(
                    "name = \"ams2-server-01\"\nregion = \"eu\"\ndatacenter = \"ams2\"\ndata_dir = \"{}\"\nbind_addr = \"127.0.0.1\"\nports {{\n  http = {http}\n  rpc = {rpc}\n  serf = {serf}\n}}\nserver {{\n  enabled = true\n  bootstrap_expect = 1\n}}\nconsul {{\n  auto_advertise = false\n  server_auto_join = false\n  client_auto_join = false\n}}\n",
                    data.display()
                );
                std::fs::write(cfg.join("nomad.hcl"), hcl).unwrap();
                vec!["agent".to_string(), format!("-config={}", cfg.display())]
            }
        };
        let mut a = rig.agent(product, stop_signal);
        a.binary = install_as(&base.join("bin"), product.as_str());
        a.args = args;
        a.config_dir = cfg;
        a.data_dir = data;
        a.http_addr = format!("127.0.0.1:{http}").parse().unwrap();
        (a, base.join("events.log"))
    }

    /// The daemon's options for `plan`, its readiness read from one
    /// observer per agent as `supervisor run` builds them (the stand-ins
    /// send no READY=1 here).
    fn opts(
        plan: &Plan,
        logs: &[(Product, &Path)],
        extra: &[(Product, &str, String)],
    ) -> RunOptions {
        let mut extra_env: Vec<(Product, String, String)> = logs
            .iter()
            .map(|(p, l)| (*p, "STANDIN_EVENT_LOG".to_string(), l.display().to_string()))
            .collect();
        extra_env.extend(extra.iter().map(|(p, k, v)| (*p, k.to_string(), v.clone())));
        let observers = hashi_supervisor::agent::Observers::start(
            &hashi_supervisor::agent::AgentClient::for_plan(plan).unwrap(),
            &hashi_supervisor::health::NodeInfo::from_plan(plan).agents,
            hashi_supervisor::agent::ObserverConfig::default(),
            &tokio_util::task::TaskTracker::new(),
            // They end with the daemon, which holds the last handles.
            &tokio_util::sync::CancellationToken::new(),
        );
        RunOptions {
            extra_env,
            check_interval: None,
            become_subreaper: false,
            checks: Arc::new(move |a: &AgentPlan| {
                hashi_supervisor::supervise::check::ObservedCheck::for_agent(&observers, a)
                    .map(|c| Arc::new(c) as Arc<dyn hashi_supervisor::supervise::check::ReadyCheck>)
            }),
            ..RunOptions::default()
        }
    }

    fn lines(log: &Path) -> Vec<String> {
        read_events(log).iter().map(ToString::to_string).collect()
    }

    #[tokio::test]
    async fn standins_start_in_order_and_stop_nomad_first_with_their_signals() {
        let rig = Rig::new();
        let (consul, clog) = standin_agent(&rig, Product::Consul, Signal::SIGTERM);
        let (nomad, nlog) = standin_agent(&rig, Product::Nomad, Signal::SIGINT);
        let plan = rig.plan(vec![consul, nomad]);
        let opts = opts(
            &plan,
            &[(Product::Consul, &clog), (Product::Nomad, &nlog)],
            &[],
        );
        let d = start(plan, Arc::default(), opts);
        d.wait("both ready", all_ready).await;
        let s = d.stop().await;
        let (c, n) = (lines(&clog), lines(&nlog));
        // Consul server on SIGTERM: no leave, exit 1 (agent-facts §1), a clean stop.
        assert!(c.contains(&"signal SIGTERM".to_string()), "{c:?}");
        assert!(!c.contains(&"leave".to_string()), "{c:?}");
        assert!(n.contains(&"signal SIGINT".to_string()), "{n:?}");
        for a in &s.agents {
            assert!(a.last_exit.as_ref().unwrap().expected);
            assert_eq!(a.restarts, 0);
        }
        // Nomad had exited (its last event written) before Consul's exit was recorded.
        let nomad_exit = std::fs::metadata(&nlog).unwrap().modified().unwrap();
        let consul_sig = s.agents[0].last_exit.as_ref().unwrap().at;
        assert!(nomad_exit <= consul_sig);
        assert!(n.last().unwrap().starts_with("exit"), "{n:?}");
    }

    #[tokio::test]
    async fn standin_nomads_child_survives_a_crash_and_restart() {
        let rig = Rig::new();
        let (nomad, nlog) = standin_agent(&rig, Product::Nomad, Signal::SIGINT);
        let child_pidfile = rig.path("task.pid");
        let plan = rig.plan(vec![nomad]);
        let opts = opts(
            &plan,
            &[(Product::Nomad, &nlog)],
            &[(
                Product::Nomad,
                "STANDIN_SPAWN_CHILD",
                child_pidfile.display().to_string(),
            )],
        );
        let d = start(plan, Arc::default(), opts);
        let s = d.wait("ready", all_ready).await;
        let pid = agent(&s, Product::Nomad).pid.unwrap();
        poll("child pidfile", || {
            std::fs::read_to_string(&child_pidfile).is_ok_and(|s| !s.trim().is_empty())
        })
        .await;
        let task: i32 = std::fs::read_to_string(&child_pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // A crash (SIGKILL of the main pid only) and the restart.
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
        d.wait("restarted and ready", |s| {
            let a = agent(s, Product::Nomad);
            a.restarts == 1 && a.ready
        })
        .await;
        assert!(alive(task), "the stand-in's child died with the agent");
        d.stop().await;
        assert!(alive(task), "the stand-in's child died with the agent stop");
        // The restarted stand-in started a child of its own (the pidfile
        // names it now): end both, or every run leaves one behind.
        let second = std::fs::read_to_string(&child_pidfile)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        for p in std::iter::once(task).chain(second) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), Signal::SIGKILL);
        }
    }
}

/// The real `supervisor` binary (`supervisor run -c <role file>`), a signed
/// `file://` mirror of stand-in agents built by the test rig, and a named
/// network namespace so the dev role's fixed agent ports (8500, 4646, ...)
/// never meet another test's. Needs root (`ip netns`); skipped otherwise.
mod real_binary {
    use std::fs::File;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    use hashi_testrig::mirror::MirrorBuilder;
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    use serde_json::Value;

    use crate::support::standin::{standin_bin, wait_for};
    use crate::support::supervisor_bin;

    /// Bound on a supervisor start: the debug build verifies two large
    /// stand-in releases before it starts anything.
    const START_DEADLINE: Duration = Duration::from_secs(180);
    /// Bound on a supervisor stop (stand-ins stop in well under a second).
    const STOP_DEADLINE: Duration = Duration::from_secs(60);

    /// A named network namespace with loopback up; deleted on drop.
    struct Netns(String);

    impl Netns {
        fn new(tag: &str) -> Result<Netns, String> {
            if !nix::unistd::Uid::effective().is_root() {
                return Err("not root".into());
            }
            let name = format!("hs-{tag}-{}", std::process::id());
            let _ = Command::new("ip").args(["netns", "delete", &name]).output();
            let ok = |mut c: Command| c.output().map(|o| o.status.success()).unwrap_or(false);
            let mut add = Command::new("ip");
            add.args(["netns", "add", &name]);
            if !ok(add) {
                return Err("`ip netns add` failed".into());
            }
            let ns = Netns(name);
            let mut lo = ns.command("ip");
            lo.args(["link", "set", "lo", "up"]);
            if !ok(lo) {
                return Err("failed to bring up lo in the namespace".into());
            }
            Ok(ns)
        }

        /// `program` run inside the namespace (`ip netns exec` execs it, so
        /// the child's pid is the program's).
        fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &self.0]).arg(program);
            c
        }
    }

    impl Drop for Netns {
        fn drop(&mut self) {
            let _ = Command::new("ip")
                .args(["netns", "delete", &self.0])
                .output();
        }
    }

    /// Everything one node needs: mirror, role file, state and config dirs.
    struct Node {
        tmp: tempfile::TempDir,
        ns: Netns,
        role: PathBuf,
        supervisors: Vec<Child>,
    }

    impl Node {
        fn new(ns: Netns) -> Node {
            let tmp = tempfile::tempdir().unwrap();
            let arch = match std::env::consts::ARCH {
                "aarch64" => "arm64",
                _ => "amd64",
            };
            let built = MirrorBuilder::product("consul")
                .version("1.20.1")
                .binary(standin_bin())
                .and_product("nomad")
                .version("1.9.3")
                .binary(standin_bin())
                .arches(&[arch])
                .build(&tmp.path().join("mirror"))
                .expect("build the stand-in mirror");
            let role = tmp.path().join("node.toml");
            let d = tmp.path();
            std::fs::write(
                &role,
                format!(
                    r#"schema = 1
roles = ["dev"]
node_name = "orphan-test"

[consul]
version = "1.20.1"
# The test's dirs are private to root; the agents run as root.
user = "root"

[nomad]
version = "1.9.3"

[release]
mirror = "file://{mirror}"
trust_hashicorp_key = false
trusted_key_files = ["{key}"]

[health]
listen = "127.0.0.1:4680"

[paths]
config_dir = "{etc}"
state_dir = "{state}"
"#,
                    mirror = built.root.display(),
                    key = built.public_key.display(),
                    etc = d.join("etc").display(),
                    state = d.join("state").display(),
                ),
            )
            .unwrap();
            Node {
                tmp,
                ns,
                role,
                supervisors: Vec::new(),
            }
        }

        fn log(&self, n: usize) -> PathBuf {
            self.tmp.path().join(format!("supervisor-{n}.log"))
        }

        /// Starts `supervisor run` (the n-th) in the namespace; returns its pid.
        fn start_supervisor(&mut self) -> u32 {
            let n = self.supervisors.len();
            let log = File::create(self.log(n)).unwrap();
            let child = self
                .ns
                .command(supervisor_bin())
                .arg("--config")
                .arg(&self.role)
                .args(["--log-format", "logfmt", "run"])
                .env_remove("NOTIFY_SOCKET")
                .env_remove("JOURNAL_STREAM")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("spawn supervisor run");
            let pid = child.id();
            self.supervisors.push(child);
            pid
        }

        fn supervisor(&mut self, n: usize) -> &mut Child {
            &mut self.supervisors[n]
        }

        /// `supervisor status --json` from inside the namespace.
        fn status(&self) -> Option<Value> {
            let out = self
                .ns
                .command(supervisor_bin())
                .arg("--config")
                .arg(&self.role)
                .args(["status", "--json"])
                .output()
                .ok()?;
            serde_json::from_slice(&out.stdout).ok()
        }

        /// The `(consul, nomad)` pids once the status shows both running and
        /// ready with pids not in `old`.
        fn wait_running(&self, old: &[u32], n: usize) -> (u32, u32) {
            let got = wait_for(START_DEADLINE, || {
                let s = self.status()?;
                let pid = |name: &str| -> Option<u32> {
                    let a = s["agents"]
                        .as_array()?
                        .iter()
                        .find(|a| a["agent"] == name)?;
                    let ok = a["state"] == "running" && a["ready"] == true;
                    let pid = u32::try_from(a["pid"].as_u64()?).ok()?;
                    (ok && !old.contains(&pid)).then_some(pid)
                };
                Some((pid("consul")?, pid("nomad")?))
            });
            got.unwrap_or_else(|| {
                panic!(
                    "agents not running and ready in time; status: {:?}\nlog:\n{}",
                    self.status(),
                    self.log_text(n)
                )
            })
        }

        fn log_text(&self, n: usize) -> String {
            std::fs::read_to_string(self.log(n)).unwrap_or_default()
        }

        /// Live (non-zombie) processes running this node's installed `product`.
        fn agent_processes(&self, product: &str) -> Vec<u32> {
            let releases = self.tmp.path().join("state").join("releases").join(product);
            let Ok(dir) = std::fs::read_dir("/proc") else {
                return Vec::new();
            };
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter(|pid| {
                    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                        let argv0 = c.split(|b| *b == 0).next().unwrap_or_default();
                        Path::new(std::str::from_utf8(argv0).unwrap_or_default())
                            .starts_with(&releases)
                    }) && live(*pid)
                })
                .collect()
        }
    }

    impl Drop for Node {
        fn drop(&mut self) {
            // Never leave a supervisor or an agent behind, even on failure.
            for c in &mut self.supervisors {
                let _ = c.kill();
                let _ = c.wait();
            }
            for product in ["consul", "nomad"] {
                for pid in self.agent_processes(product) {
                    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                }
            }
        }
    }

    /// `(state, ppid)` of a process from `/proc/<pid>/stat`.
    fn stat(pid: u32) -> Option<(char, u32)> {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = &s[s.rfind(')')? + 2..];
        let mut it = rest.split_whitespace();
        Some((it.next()?.chars().next()?, it.next()?.parse().ok()?))
    }

    fn live(pid: u32) -> bool {
        stat(pid).is_some_and(|(state, _)| state != 'Z')
    }

    fn parent(pid: u32) -> Option<u32> {
        stat(pid).map(|(_, ppid)| ppid)
    }

    /// Index of the first log line holding every one of `parts`.
    fn line_with(log: &str, parts: &[&str]) -> Option<usize> {
        log.lines()
            .position(|l| parts.iter().all(|p| l.contains(p)))
    }

    #[test]
    fn sigkilled_supervisors_agents_are_replaced_once_by_the_next_supervisor() {
        if !crate::support::require_tools(&["ip"]) {
            return;
        }
        let ns = match Netns::new("orphan") {
            Ok(ns) => ns,
            Err(why) => {
                crate::support::available("network namespaces", Err(why));
                return;
            }
        };
        let mut node = Node::new(ns);

        let first = node.start_supervisor();
        let (consul1, nomad1) = node.wait_running(&[], 0);
        assert_eq!(
            parent(consul1),
            Some(first),
            "consul is the first supervisor's child"
        );
        assert_eq!(
            parent(nomad1),
            Some(first),
            "nomad is the first supervisor's child"
        );

        // The supervisor dies without any chance to clean up.
        kill(Pid::from_raw(first as i32), Signal::SIGKILL).unwrap();
        let st = node.supervisor(0).wait().unwrap();
        assert_eq!(
            st.code(),
            None,
            "the first supervisor was killed, not stopped"
        );
        // Documented choice: the agents keep running (and serving) meanwhile.
        assert!(
            live(consul1) && live(nomad1),
            "agents died with the supervisor"
        );

        let second = node.start_supervisor();
        let (consul2, nomad2) = node.wait_running(&[consul1, nomad1], 1);

        // The leftovers are gone, and only the new supervisor's agents run:
        // one process per product, its children.
        assert!(!live(consul1), "old consul {consul1} still runs");
        assert!(!live(nomad1), "old nomad {nomad1} still runs");
        assert_eq!(node.agent_processes("consul"), [consul2]);
        assert_eq!(node.agent_processes("nomad"), [nomad2]);
        assert_eq!(parent(consul2), Some(second));
        assert_eq!(parent(nomad2), Some(second));

        // No start of a new agent collided with a leftover (a port conflict
        // would have crashed it): no restart, no previous exit.
        let s = node.status().expect("status of the second supervisor");
        for a in s["agents"].as_array().unwrap() {
            assert_eq!(a["restarts"], 0, "{a}");
            assert_eq!(a["last_exit"], Value::Null, "{a}");
        }

        // Taken down the way a stop does: Nomad first, with its stop signal,
        // never needing SIGKILL.
        let log = node.log_text(1);
        let left = "agent left running by a previous supervisor";
        let n = line_with(&log, &[left, "agent=nomad", &format!("pid={nomad1}")])
            .unwrap_or_else(|| panic!("no takeover of nomad {nomad1} logged:\n{log}"));
        let c = line_with(&log, &[left, "agent=consul", &format!("pid={consul1}")])
            .unwrap_or_else(|| panic!("no takeover of consul {consul1} logged:\n{log}"));
        assert!(n < c, "nomad must be stopped before consul:\n{log}");
        assert!(
            line_with(&log, &["did not stop in time"]).is_none(),
            "a leftover needed SIGKILL:\n{log}"
        );

        // A clean stop of the second supervisor leaves nothing behind.
        kill(Pid::from_raw(second as i32), Signal::SIGTERM).unwrap();
        let child = node.supervisor(1);
        let st = wait_for(STOP_DEADLINE, || child.try_wait().ok().flatten())
            .expect("second supervisor stops");
        assert_eq!(st.code(), Some(0), "{}", node.log_text(1));
        assert!(node.agent_processes("consul").is_empty());
        assert!(node.agent_processes("nomad").is_empty());
    }
}

/// The rollout runs on its own task, and the agents have one owner at a
/// time: a reload that comes while the rollout restarts an agent waits
/// for that step to finish (no second restart meanwhile, no rollback),
/// then applies, and the next rollout converges on the new plan.
#[tokio::test]
async fn a_reload_during_an_upgrade_restart_waits_for_the_step_then_converges_on_the_new_plan() {
    let rig = Rig::new();
    let plan = rig.plan(vec![rig.agent(Product::Consul, Signal::SIGINT)]);
    let v1 = plan.agents[0].binary.clone();
    let mut to_11 = plan.clone();
    to_11.agents[0].version = "1.1.0".parse().unwrap();
    let mut to_12 = plan.clone();
    to_12.agents[0].version = "1.2.0".parse().unwrap();
    // 1.1.0 becomes ready only once the test says so.
    let s11 = rig.script(
        "consul-1.1.0",
        "#!/bin/sh\nrm -f \"$DIR/consul.ready\"\necho \"consul-1.1.0 start $$\" >> \"$LOG\"\n\
         trap 'echo \"consul-1.1.0 signal INT\" >> \"$LOG\"; exit 0' INT\n\
         while [ ! -f \"$DIR/go\" ]; do sleep 0.05; done\n\
         touch \"$DIR/consul.ready\"; echo \"consul-1.1.0 ready\" >> \"$LOG\"\n\
         while :; do sleep 0.1; done\n",
    );
    let s12 = rig.script(
        "consul-1.2.0",
        "#!/bin/sh\nrm -f \"$DIR/consul.ready\"\necho \"consul-1.2.0 start $$\" >> \"$LOG\"\n\
         trap 'exit 0' INT\n\
         touch \"$DIR/consul.ready\"; echo \"consul-1.2.0 ready\" >> \"$LOG\"\n\
         while :; do sleep 0.1; done\n",
    );
    let preparer = FakePreparer::new()
        .reloads_to(to_11)
        .reloads_to(to_12)
        .with_release(crate::support::preparer::installed(
            Product::Consul,
            "1.1.0",
            s11,
        ))
        .with_release(crate::support::preparer::installed(
            Product::Consul,
            "1.2.0",
            s12,
        ))
        .build();
    let mut opts = rig.opts(&[]);
    opts.rollback_window = WAIT;
    opts.installed.insert(
        Product::Consul,
        crate::support::preparer::installed(Product::Consul, "1.0.0", v1),
    );
    let d = start(plan, preparer.clone(), opts);
    d.wait("ready", all_ready).await;

    d.events.send(DaemonEvent::Reload).unwrap();
    poll("1.1.0 started", || {
        rig.events().iter().any(|e| e == "consul-1.1.0 start")
    })
    .await;
    // Mid-restart: the second reload waits for the step.
    d.events.send(DaemonEvent::Reload).unwrap();
    std::fs::write(rig.path("go"), "").unwrap();
    let s = d
        .wait("upgraded to 1.2.0", |s| {
            let a = agent(s, Product::Consul);
            a.version.as_deref() == Some("1.2.0") && a.ready && a.restarts >= 2
        })
        .await;
    assert_eq!(
        agent(&s, Product::Consul).restarts,
        2,
        "one restart per step"
    );
    assert!(preparer.rollbacks().is_empty(), "the 1.1.0 step finished");
    assert_eq!(s.reload_error, None);
    let ev = rig.events();
    let starts: Vec<&String> = ev.iter().filter(|e| e.contains("start")).collect();
    assert_eq!(
        starts,
        ["consul start", "consul-1.1.0 start", "consul-1.2.0 start"],
        "{ev:?}"
    );
    let ready_11 = ev.iter().position(|e| e == "consul-1.1.0 ready");
    let start_12 = ev.iter().position(|e| e == "consul-1.2.0 start");
    assert!(
        ready_11.is_some() && ready_11 < start_12,
        "1.1.0 became ready before the reload's rollout moved on: {ev:?}"
    );
    d.stop().await;
}

/// Issue 20: the upgrade gate follows the plan. A reload that moves the
/// node to another datacenter rebuilds it; one that changes nothing the
/// gate depends on keeps it.
#[tokio::test]
async fn a_reload_that_moves_the_node_rebuilds_the_upgrade_gate_and_one_that_does_not_keeps_it() {
    use hashi_supervisor::upgrade::{Gate, UpgradeSettings};
    let rig = Rig::new();
    let plan = rig.plan(vec![rig.agent(Product::Consul, Signal::SIGINT)]);
    let mut moved = plan.clone();
    moved.datacenter = "lon1".into();
    let mut moved_again = moved.clone();
    moved_again.agents[0].stop_timeout = Duration::from_secs(7);
    let preparer = FakePreparer::new()
        .reloads_to(moved)
        .reloads_to(moved_again)
        .reload_fails("the last reload")
        .build();
    let built = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut opts = rig.opts(&[]);
    let client = hashi_supervisor::agent::AgentClient::plain().unwrap();
    let seen = built.clone();
    opts.gate_factory = Some(Arc::new(move |p: &Plan, s: &UpgradeSettings| {
        seen.lock().unwrap().push(p.datacenter.clone());
        Gate::for_plan(p, &client, s.clone())
    }));
    let d = start(plan, preparer, opts);
    d.wait("ready", all_ready).await;
    assert_eq!(*built.lock().unwrap(), ["ams2"], "built at start");
    d.events.send(DaemonEvent::Reload).unwrap();
    poll("rebuilt for lon1", || built.lock().unwrap().len() == 2).await;
    d.events.send(DaemonEvent::Reload).unwrap();
    d.events.send(DaemonEvent::Reload).unwrap();
    d.wait("the third reload refused", |s| {
        s.reload_error
            .as_deref()
            .is_some_and(|e| e.contains("the last reload"))
    })
    .await;
    assert_eq!(
        *built.lock().unwrap(),
        ["ams2", "lon1"],
        "a stop timeout is nothing the gate depends on"
    );
    d.stop().await;
}

//! Spawning one agent process, its pidfile, and reading `/proc` for process
//! identity.
//!
//! The child gets its own process group, a clean environment, the plan's user
//! (when we are root; a user that does not exist is refused, never replaced
//! by root), `RLIMIT_NOFILE` 65536 and an
//! unlimited `RLIMIT_NPROC`. Servers get a lower OOM score written after
//! spawn, so that a Nomad client's tasks never inherit it.
//!
//! # The restart path is kept short
//!
//! * The limits are raised once on the supervisor itself
//!   ([`raise_own_limits`]) and inherited, as a unit's `LimitNOFILE=` and
//!   `LimitNPROC=` would be for the whole service: both agents get them (the
//!   unlimited task count is what Nomad needs; Consul never comes near it).
//! * The user is resolved once per plan ([`SpawnSpec::for_plan`]), not read
//!   from `/etc/passwd` and `/etc/group` on every restart.
//! * With no user to switch to (the agent runs as the supervisor's own user,
//!   e.g. a Nomad client as root), there is no `pre_exec` hook, so the
//!   standard library spawns with `posix_spawn` (a `vfork`-like clone that
//!   copies no page tables) instead of `fork`. Switching user needs the hook
//!   (`setgroups` to the user's supplementary groups, `setgid`, `setuid`),
//!   hence `fork`.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit, setrlimit};
use nix::unistd::{Gid, Uid, User, getgrouplist, setgid, setgroups, setuid};
use tokio::process::{Child, Command};

use crate::plan::AgentPlan;
use crate::vocab::Product;

/// `LimitNOFILE` of HashiCorp's packaged units.
pub const NOFILE_LIMIT: u64 = 65536;
/// OOM score adjustment of server agents (never of a Nomad client, whose
/// tasks would inherit it).
pub const SERVER_OOM_SCORE_ADJ: i32 = -500;
/// `PATH` of the agents' clean environment.
pub const AGENT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// `LANG` when the supervisor has none.
pub const DEFAULT_LANG: &str = "C.UTF-8";

/// The identity an agent switches to.
#[derive(Debug, Clone)]
struct Identity {
    uid: Uid,
    gid: Gid,
    groups: Vec<Gid>,
}

/// What spawning an agent needs besides its plan, resolved once per plan:
/// the user to switch to (if any) and the environment's `HOME` and `LANG`.
#[derive(Debug, Clone)]
pub struct SpawnSpec {
    switch_to: Option<Identity>,
    /// Set when we are root and the plan's user does not exist: the agent
    /// is not started (role validation refuses such a plan first).
    missing_user: Option<String>,
    /// The agent's uid when it differs from ours (for chowning its socket).
    uid: Option<Uid>,
    home: PathBuf,
    lang: String,
}

impl SpawnSpec {
    /// Resolves the plan's user: switched to when we are root and it is
    /// another user; refused when we are root and it does not exist; run as
    /// ourselves (with a warning) when not root.
    pub fn for_plan(plan: &AgentPlan) -> SpawnSpec {
        let lang = std::env::var("LANG").unwrap_or_else(|_| DEFAULT_LANG.to_string());
        let own_home = || {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/"))
        };
        let user = match User::from_name(&plan.user) {
            Ok(Some(u)) => u,
            Ok(None) | Err(_) if Uid::effective().is_root() => {
                tracing::error!(agent = %plan.product, user = %plan.user, "user not found, the agent will not be started");
                return SpawnSpec {
                    switch_to: None,
                    missing_user: Some(plan.user.clone()),
                    uid: None,
                    home: own_home(),
                    lang,
                };
            }
            Ok(None) | Err(_) => {
                tracing::warn!(agent = %plan.product, user = %plan.user, "user not found, not root: running as the supervisor's user");
                return SpawnSpec {
                    switch_to: None,
                    missing_user: None,
                    uid: None,
                    home: own_home(),
                    lang,
                };
            }
        };
        let (euid, egid) = (Uid::effective(), Gid::effective());
        if !euid.is_root() {
            if user.uid != euid {
                tracing::warn!(agent = %plan.product, user = %plan.user, "not root, running as the supervisor's user");
            }
            return SpawnSpec {
                switch_to: None,
                missing_user: None,
                uid: None,
                home: user.dir,
                lang,
            };
        }
        let switch_to = if user.uid == euid && user.gid == egid {
            // Already that user: nothing to switch, no pre-exec hook.
            None
        } else {
            let groups = CString::new(plan.user.as_bytes())
                .ok()
                .and_then(|name| getgrouplist(&name, user.gid).ok())
                .unwrap_or_else(|| vec![user.gid]);
            Some(Identity {
                uid: user.uid,
                gid: user.gid,
                groups,
            })
        };
        SpawnSpec {
            uid: switch_to.as_ref().map(|i| i.uid),
            switch_to,
            missing_user: None,
            home: user.dir,
            lang,
        }
    }

    /// The uid the agent runs as when it is not ours.
    pub fn uid(&self) -> Option<Uid> {
        self.uid
    }
}

/// Raises this process's `RLIMIT_NOFILE` to [`NOFILE_LIMIT`] and
/// `RLIMIT_NPROC` to unlimited (best effort), for the agents to inherit.
pub fn raise_own_limits() {
    raise_limit(Resource::RLIMIT_NOFILE, NOFILE_LIMIT);
    raise_limit(Resource::RLIMIT_NPROC, RLIM_INFINITY);
}

/// Spawns the agent: own process group, clean env plus `extra_env`, piped
/// stdout/stderr, the spec's user. Limits come from [`raise_own_limits`].
/// Fails (`NotFound`) without starting anything when the spec's user does
/// not exist.
pub fn spawn_agent(
    plan: &AgentPlan,
    spec: &SpawnSpec,
    notify_socket: Option<&Path>,
    extra_env: &[(String, String)],
) -> std::io::Result<Child> {
    if let Some(user) = &spec.missing_user {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "user `{user}` does not exist (create it, or set `[{}] user` in the role file)",
                plan.product
            ),
        ));
    }
    let mut cmd = Command::new(&plan.binary);
    cmd.args(&plan.args)
        .env_clear()
        .env("PATH", AGENT_PATH)
        .env("HOME", &spec.home)
        .env("LANG", &spec.lang)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    if let Some(sock) = notify_socket {
        cmd.env("NOTIFY_SOCKET", sock);
    }
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    if let Some(id) = spec.switch_to.clone() {
        #[allow(unsafe_code)]
        // SAFETY: the closure runs in the forked child before exec and only
        // makes raw syscalls through nix (setgroups, setgid, setuid), which
        // are async-signal-safe; it allocates nothing (the group list was
        // built before fork and is only borrowed).
        unsafe {
            cmd.pre_exec(move || {
                setgroups(&id.groups)?;
                setgid(id.gid)?;
                setuid(id.uid)?;
                Ok(())
            });
        }
    }
    let child = cmd.spawn()?;
    if let Some(pid) = child.id() {
        if plan.server && !plan.client {
            set_oom_score_adj(plan.product, pid, SERVER_OOM_SCORE_ADJ);
        }
    }
    Ok(child)
}

/// Sets `resource` to `target` (soft and hard), or failing that lifts the
/// soft limit to the hard one. Async-signal-safe: raw syscalls only.
fn raise_limit(resource: Resource, target: u64) {
    if setrlimit(resource, target, target).is_ok() {
        return;
    }
    if let Ok((soft, hard)) = getrlimit(resource) {
        let want = target.min(hard);
        if want > soft {
            let _ = setrlimit(resource, want, hard);
        }
    }
}

/// Writes `/proc/<pid>/oom_score_adj`; a failure is only a warning.
#[allow(
    clippy::disallowed_methods,
    reason = "a /proc knob of the child, not a file: nothing to write atomically"
)]
fn set_oom_score_adj(product: Product, pid: u32, value: i32) {
    let path = format!("/proc/{pid}/oom_score_adj");
    if let Err(e) = std::fs::write(&path, value.to_string()) {
        // Lowering it needs CAP_SYS_RESOURCE, which containers often drop.
        tracing::warn!(agent = %product, pid, error = %e, "failed to set oom_score_adj (needs CAP_SYS_RESOURCE)");
    }
}

/// What `/proc/<pid>/stat` tells about a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    /// State letter (`R`, `S`, `Z`, ...).
    pub state: char,
    /// Parent pid.
    pub ppid: u32,
    /// Start time in clock ticks since boot (identity against pid reuse).
    pub start_time: u64,
}

/// Parses the content of `/proc/<pid>/stat`.
pub fn parse_stat(content: &str) -> Option<ProcStat> {
    // The command name may hold spaces and parentheses: split after the last ')'.
    let rest = &content[content.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); field 4 is ppid; field 22 is starttime.
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// Reads `/proc/<pid>/stat`, `None` when the process is gone.
pub fn read_stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Path of an agent's pidfile under `run_dir`.
pub fn pidfile_path(run_dir: &Path, product: Product) -> PathBuf {
    run_dir.join(format!("{product}.pid"))
}

/// Records `pid` and its start time (`"<pid> <starttime>\n"`).
#[allow(
    clippy::disallowed_methods,
    reason = "written beside the pidfile and renamed over it (atomic), where the pid is known"
)]
pub fn write_pidfile(path: &Path, pid: u32) -> std::io::Result<()> {
    let start = read_stat(pid).map(|s| s.start_time).unwrap_or(0);
    let tmp = path.with_extension("pid.tmp");
    std::fs::write(&tmp, format!("{pid} {start}\n"))?;
    std::fs::rename(&tmp, path)
}

/// Reads a pidfile: `(pid, start_time)`.
pub fn read_pidfile(path: &Path) -> Option<(u32, u64)> {
    let content = std::fs::read_to_string(path).ok()?;
    let mut it = content.split_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// The pid recorded in `path` if that very process (same start time) still
/// runs (a zombie does not count).
pub fn live_recorded_pid(path: &Path) -> Option<u32> {
    let (pid, start) = read_pidfile(path)?;
    let stat = read_stat(pid)?;
    (stat.start_time == start && stat.state != 'Z').then_some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_and_parens_in_the_name_parses() {
        let line = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                state: 'S',
                ppid: 1,
                start_time: 987654
            })
        );
    }

    fn plan_as(user: &str, dir: &Path) -> AgentPlan {
        use crate::vocab::{RestartMode, RestartPolicy};
        use std::time::Duration;
        AgentPlan {
            product: Product::Consul,
            version: "1.21.4".parse().unwrap(),
            server: true,
            client: false,
            user: user.to_string(),
            binary: PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), format!("touch {}/ran", dir.display())],
            config_dir: dir.to_path_buf(),
            data_dir: dir.to_path_buf(),
            stop_signal: nix::sys::signal::Signal::SIGTERM,
            stop_timeout: Duration::from_secs(1),
            restart: RestartPolicy {
                attempts: 1,
                interval: Duration::from_secs(1),
                delay: Duration::ZERO,
                mode: RestartMode::Fail,
                max_delay: Duration::from_secs(1),
                stable_after: Duration::from_secs(1),
            },
            http_addr: "127.0.0.1:1".parse().unwrap(),
            api_tls: None,
        }
    }

    #[tokio::test]
    async fn as_root_an_agent_whose_user_is_missing_is_not_started_as_root() {
        // Not root, the agent would run as ourselves: a skip, a failure
        // under CI.
        use hashi_testrig::require::{available, root};
        if !available("root", root("else the agent runs as ourselves")) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let plan = plan_as("hashi-no-such-user", dir.path());
        let spec = SpawnSpec::for_plan(&plan);
        let err = spawn_agent(&plan, &spec, None, &[]).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
        assert!(
            err.to_string()
                .contains("user `hashi-no-such-user` does not exist"),
            "{err}"
        );
        assert!(!dir.path().join("ran").exists(), "the agent ran");
        // The same plan as an existing user runs.
        let plan = plan_as("root", dir.path());
        let spec = SpawnSpec::for_plan(&plan);
        let status = spawn_agent(&plan, &spec, None, &[])
            .unwrap()
            .wait()
            .await
            .unwrap();
        assert!(status.success());
        assert!(dir.path().join("ran").exists());
    }

    #[test]
    fn own_process_is_live_in_its_pidfile_and_not_with_another_start_time() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pid");
        write_pidfile(&p, std::process::id()).unwrap();
        assert_eq!(live_recorded_pid(&p), Some(std::process::id()));
        let (pid, start) = read_pidfile(&p).unwrap();
        std::fs::write(&p, format!("{pid} {}\n", start + 1)).unwrap();
        assert_eq!(live_recorded_pid(&p), None);
    }
}

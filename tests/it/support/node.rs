//! Test support: a node under the real `supervisor run`. Owns the signed
//! `file://` mirror of stand-in agents (the test-only `hashi-standin`, never
//! HashiCorp's agents) built once for the whole test binary, trusting only a
//! test key; the agents' free ports; a builder of the node's role file; and
//! the running supervisor process, stopped with SIGTERM on drop.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use hashi_testrig::mirror::{BuiltMirror, MirrorBuilder};

use super::standin::{free_port, standin_bin, wait_for};
use super::supervisor_bin;

/// Long enough for a debug build to fetch, verify, install and start both
/// stand-ins on a loaded machine.
pub const DEADLINE: Duration = Duration::from_secs(90);
/// Versions of the reference scenario, stamped into the stand-ins.
pub const CONSUL_VERSION: &str = "1.21.4";
pub const NOMAD_VERSION: &str = "1.10.4";

/// One signed mirror of stand-ins for every test of this binary (built
/// once).
pub fn mirror() -> &'static BuiltMirror {
    static MIRROR: OnceLock<(tempfile::TempDir, BuiltMirror)> = OnceLock::new();
    &MIRROR
        .get_or_init(|| {
            standin_mirror(&[("consul", &[CONSUL_VERSION]), ("nomad", &[NOMAD_VERSION])])
        })
        .1
}

/// A signed mirror in a new temp dir holding the stand-in as each
/// `(product, versions)`; keep the dir as long as the mirror.
pub fn standin_mirror(products: &[(&str, &[&str])]) -> (tempfile::TempDir, BuiltMirror) {
    let tmp = tempfile::tempdir().expect("create a temp dir");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
        .expect("open up the mirror's temp dir");
    // A stripped copy when `strip` is there (a tenth of the size: quicker
    // to zip, hash and unzip); the version slot survives.
    let standin = tmp.path().join("hashi-standin");
    std::fs::copy(standin_bin(), &standin).expect("copy the stand-in");
    let _ = Command::new("strip").arg(&standin).status();
    // Only this machine's architecture: zipping a debug stand-in takes a
    // while.
    let arch = match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    };
    let mut b: Option<MirrorBuilder> = None;
    for (product, versions) in products {
        let mut next = match b {
            None => MirrorBuilder::product(product),
            Some(b) => b.and_product(product),
        };
        for v in *versions {
            next = next.version(v).binary(&standin);
        }
        b = Some(next);
    }
    let built = b
        .expect("at least one product")
        .arches(&[arch])
        .build(&tmp.path().join("mirror"))
        .expect("build the stand-ins' mirror");
    (tmp, built)
}

/// The ports of one node: its agents' and its health endpoint's.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub consul_http: u16,
    pub consul_serf_lan: u16,
    pub consul_serf_wan: u16,
    pub consul_server: u16,
    pub nomad_http: u16,
    pub nomad_rpc: u16,
    pub nomad_serf: u16,
    pub health: u16,
}

impl Ports {
    /// Free ports on loopback.
    pub fn free() -> Self {
        Ports {
            consul_http: free_port(),
            consul_serf_lan: free_port(),
            consul_serf_wan: free_port(),
            consul_server: free_port(),
            nomad_http: free_port(),
            nomad_rpc: free_port(),
            nomad_serf: free_port(),
            health: free_port(),
        }
    }
}

/// The role file of a node on loopback in region `eu`: its agents on
/// [`Ports`], installed from [`mirror`], its dirs under a root.
pub struct RoleFile {
    node_name: String,
    datacenter: String,
    roles: Vec<String>,
    ports: Ports,
    consul_bootstrap_expect: u32,
    nomad_bootstrap_expect: u32,
    consul_lines: String,
    nomad_lines: String,
    tables: String,
}

impl RoleFile {
    /// `node_name` in `datacenter` with `roles`, each server a
    /// single-server cluster (bootstrap_expect 1).
    pub fn new(node_name: &str, datacenter: &str, roles: &[&str], ports: Ports) -> Self {
        RoleFile {
            node_name: node_name.to_string(),
            datacenter: datacenter.to_string(),
            roles: roles.iter().map(|r| format!("\"{r}\"")).collect(),
            ports,
            consul_bootstrap_expect: 1,
            nomad_bootstrap_expect: 1,
            consul_lines: String::new(),
            nomad_lines: String::new(),
            tables: String::new(),
        }
    }

    /// `bootstrap_expect` of Consul and of Nomad.
    pub fn bootstrap_expect(mut self, consul: u32, nomad: u32) -> Self {
        self.consul_bootstrap_expect = consul;
        self.nomad_bootstrap_expect = nomad;
        self
    }

    /// More lines in `[consul]`.
    pub fn consul_lines(mut self, lines: &str) -> Self {
        self.consul_lines.push_str(lines);
        self.consul_lines.push('\n');
        self
    }

    /// More lines in `[nomad]`.
    pub fn nomad_lines(mut self, lines: &str) -> Self {
        self.nomad_lines.push_str(lines);
        self.nomad_lines.push('\n');
        self
    }

    /// More tables, after all others.
    pub fn tables(mut self, toml: &str) -> Self {
        self.tables.push_str(toml);
        self.tables.push('\n');
        self
    }

    /// The file's text, with `config_dir` and `state_dir` under `root`.
    pub fn render(&self, root: &Path) -> String {
        let m = mirror();
        let p = self.ports;
        format!(
            r#"schema = 1
roles = [{roles}]
region = "eu"
datacenter = "{dc}"
node_name = "{name}"

[addresses]
bind = "127.0.0.1"
private = "127.0.0.1"

[consul]
version = "{cv}"
bootstrap_expect = {cbe}
stop_timeout_secs = 10
{consul_lines}
[consul.extra.ports]
http = {ch}
serf_lan = {csl}
serf_wan = {csw}
server = {cs}

[nomad]
version = "{nv}"
bootstrap_expect = {nbe}
{nomad_lines}
[nomad.extra.ports]
http = {nh}
rpc = {nr}
serf = {ns}

[release]
mirror = "file://{mirror}"
trust_hashicorp_key = false
trusted_key_files = ["{key}"]

[health]
listen = "127.0.0.1:{hp}"

[paths]
config_dir = "{etc}"
state_dir = "{state}"

{security}{tables}"#,
            roles = self.roles.join(", "),
            dc = self.datacenter,
            name = self.node_name,
            cv = CONSUL_VERSION,
            cbe = self.consul_bootstrap_expect,
            consul_lines = self.consul_lines,
            ch = p.consul_http,
            csl = p.consul_serf_lan,
            csw = p.consul_serf_wan,
            cs = p.consul_server,
            nv = NOMAD_VERSION,
            nbe = self.nomad_bootstrap_expect,
            nomad_lines = self.nomad_lines,
            nh = p.nomad_http,
            nr = p.nomad_rpc,
            ns = p.nomad_serf,
            mirror = m.root.display(),
            key = m.public_key.display(),
            hp = p.health,
            etc = root.join("etc").display(),
            state = root.join("state").display(),
            // Not about security unless a test adds its own `[security]`.
            security = if self.tables.contains("[security]") {
                ""
            } else {
                "[security]\nplaintext = true\n\n"
            },
            tables = self.tables,
        )
    }
}

/// A temp root for a node. The agents may run as the consul and nomad
/// users: they must reach their dirs under it.
pub fn node_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("create a temp dir");
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755))
        .expect("open up the node's temp root");
    root
}

/// `supervisor --config ROLE run` with a clean environment for the test
/// (no systemd variables, no role from the environment, logs at info),
/// then `env` on top.
pub fn run_cmd(role: &Path, env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(supervisor_bin());
    c.arg("--config")
        .arg(role)
        .arg("run")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM")
        .env_remove("HASHI_SUPERVISOR_ROLE")
        .env("HASHI_SUPERVISOR_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// A running `supervisor run` and the node's temp root: SIGTERM on drop
/// (the agents stop gracefully), SIGKILL only when that does not end in
/// time; the root goes after the supervisor.
pub struct Supervisor {
    child: Child,
    log: PathBuf,
    /// The role file, `node.toml` under the root.
    pub role_file: PathBuf,
    pub root: tempfile::TempDir,
}

impl Supervisor {
    /// Writes `role` to `node.toml` under `root` and starts
    /// [`run_cmd`] on it, its stderr in `supervisor.log` under `root`.
    pub fn start(root: tempfile::TempDir, role: &str, env: &[(&str, &str)]) -> Supervisor {
        let role_file = root.path().join("node.toml");
        std::fs::write(&role_file, role).expect("write the role file");
        let log = root.path().join("supervisor.log");
        let child = run_cmd(&role_file, env)
            .stderr(std::fs::File::create(&log).expect("create the supervisor's log"))
            .spawn()
            .expect("start the supervisor");
        Supervisor {
            child,
            log,
            role_file,
            root,
        }
    }

    /// The supervisor's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the log when the supervisor has exited (while the test
    /// waits for `what`).
    pub fn assert_running(&mut self, what: &str) {
        if let Ok(Some(st)) = self.child.try_wait() {
            panic!(
                "supervisor exited with {st} waiting for {what}; log:\n{}",
                self.log()
            );
        }
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig);
    }

    /// SIGTERM, then the supervisor's exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let child = &mut self.child;
        wait_for(DEADLINE, || child.try_wait().ok().flatten())
            .unwrap_or_else(|| panic!("supervisor did not stop; log:\n{}", self.log()))
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // Agents live in their own process groups: a clean stop takes
            // them down.
            self.signal(nix::sys::signal::Signal::SIGTERM);
            let child = &mut self.child;
            if wait_for(DEADLINE, || child.try_wait().ok().flatten()).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

//! Test support: the stand-in agent (`standin/`, a test-only imitation of
//! `consul`/`nomad`, never the real HashiCorp agents). Finds the built
//! binary, installs it under a product name, and starts configured instances
//! on 127.0.0.1 with free ports, waiting (with a deadline, no sleeps to
//! synchronise) until their HTTP API answers. Instances are killed on drop.
//!
//! The same file is compiled into the stand-in's own tests
//! (`standin/tests/`), so it only uses std, `nix`, `serde_json`, `tempfile`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub use nix::sys::signal::Signal;
use serde_json::{Value, json};

/// Default time to wait for a stand-in to answer HTTP.
pub const START_DEADLINE: Duration = Duration::from_secs(20);
/// Poll period while waiting for a condition.
const POLL: Duration = Duration::from_millis(20);

/// Path of the stand-in binary built by `cargo build --workspace`.
pub fn standin_bin() -> PathBuf {
    let p = super::target_profile_dir().join("hashi-standin");
    assert!(
        p.exists(),
        "stand-in binary not found at {}: run `cargo build --workspace` (or `cargo build -p hashi-standin`) first",
        p.display()
    );
    p
}

/// Install the stand-in into `dir` under the product name (`consul` or
/// `nomad`, a symlink so argv[0] selects the product); returns its path.
pub fn install_as(dir: &Path, product: &str) -> PathBuf {
    assert!(
        product == "consul" || product == "nomad",
        "the stand-in plays consul or nomad, not {product}"
    );
    std::fs::create_dir_all(dir).expect("create install dir");
    let dest = dir.join(product);
    let _ = std::fs::remove_file(&dest);
    std::os::unix::fs::symlink(standin_bin(), &dest).expect("symlink stand-in");
    dest
}

/// Stamp `version` into a copy of the stand-in binary's bytes, so that the
/// copy reports it (`consul version`, `/v1/agent/self`) without a rebuild and
/// without env vars. Run-time `STANDIN_VERSION` still wins over the stamp.
/// Same slot contract as the mirror builder (`stamp_standin_version`).
pub fn patch_version(bin: &mut [u8], version: &str) {
    assert!(
        hashi_testrig::mirror::stamp_standin_version(bin, version),
        "version {version:?} does not fit, or the stand-in binary does not hold exactly one version slot"
    );
}

/// The stand-in's bytes with `version` stamped in (for release mirrors).
pub fn standin_bytes_with_version(version: &str) -> Vec<u8> {
    let mut bytes = std::fs::read(standin_bin()).expect("read stand-in binary");
    patch_version(&mut bytes, version);
    bytes
}

/// Install a real copy (mode 0755) of the stand-in into `dir` as `product`,
/// with `version` stamped in when given (see [`patch_version`]).
pub fn install_copy_as(dir: &Path, product: &str, version: Option<&str>) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    assert!(
        product == "consul" || product == "nomad",
        "the stand-in plays consul or nomad, not {product}"
    );
    std::fs::create_dir_all(dir).expect("create install dir");
    let mut bytes = std::fs::read(standin_bin()).expect("read stand-in binary");
    if let Some(v) = version {
        patch_version(&mut bytes, v);
    }
    let dest = dir.join(product);
    let _ = std::fs::remove_file(&dest);
    std::fs::write(&dest, bytes).expect("write stand-in copy");
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))
        .expect("chmod stand-in copy");
    dest
}

/// A free TCP port on 127.0.0.1 (bound then released), never one this test
/// process was given before: the kernel can hand a just-released port to the
/// next bind, which once gave Nomad's HTTP port and the health endpoint of a
/// node the same number.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind 127.0.0.1:0");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Poll `cond` until it returns `Some` or the deadline passes.
pub fn wait_for<T>(deadline: Duration, mut cond: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = cond() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// A minimal blocking HTTP/1.1 request; returns (status, content type, body).
pub fn http(addr: &str, method: &str, path: &str, body: &str) -> std::io::Result<HttpReply> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(HttpReply {
        status,
        headers,
        body: body.to_string(),
    })
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: u16,
    /// Lower-cased names.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpReply {
    /// First value of a header (name in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON (panics with the body when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }
}

/// One line of the stand-in's event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// First word: `start`, `signal`, `leave`, `reload`, `ready`, `exit`.
    pub kind: String,
    /// The rest of the line (`SIGTERM`, `ok`, `0`, `pid=.. product=..`).
    pub detail: String,
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.detail.is_empty() {
            f.write_str(&self.kind)
        } else {
            write!(f, "{} {}", self.kind, self.detail)
        }
    }
}

/// Parse an event log file (missing file: no events).
pub fn read_events(path: &Path) -> Vec<Event> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let (k, d) = l.split_once(' ').unwrap_or((l, ""));
            Event {
                kind: k.to_string(),
                detail: d.to_string(),
            }
        })
        .collect()
}

/// Which agent the stand-in plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Product {
    Consul,
    Nomad,
}

impl Product {
    pub fn name(self) -> &'static str {
        match self {
            Product::Consul => "consul",
            Product::Nomad => "nomad",
        }
    }
}

/// Builder of a stand-in instance.
#[derive(Debug, Clone)]
pub struct StandInBuilder {
    product: Product,
    node_name: String,
    datacenter: String,
    region: String,
    server: bool,
    client: bool,
    bootstrap_expect: u64,
    /// Consul: extra top-level JSON keys overlaid on the generated config.
    extra_json: serde_json::Map<String, Value>,
    /// Nomad: extra HCL appended to the generated file.
    extra_hcl: String,
    /// Extra files in the config dir, written verbatim.
    files: Vec<(String, String)>,
    env: Vec<(String, String)>,
    wait_http: bool,
    bin: Option<PathBuf>,
    /// Nomad: Consul HTTP address (None: Consul integration switched off).
    consul: Option<String>,
}

/// A running stand-in; killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct StandIn {
    pub product: Product,
    child: Child,
    dir: tempfile::TempDir,
    http_port: u16,
    serf_port: u16,
    serf_wan_port: u16,
    rpc_port: u16,
    node_name: String,
    status: Option<ExitStatus>,
}

impl StandIn {
    /// A Consul stand-in (client by default).
    pub fn consul() -> StandInBuilder {
        StandInBuilder::new(Product::Consul)
    }

    /// A Nomad stand-in (server by default, bootstrap_expect 1).
    pub fn nomad() -> StandInBuilder {
        let mut b = StandInBuilder::new(Product::Nomad);
        b.server = true;
        b.bootstrap_expect = 1;
        b
    }
}

impl StandInBuilder {
    fn new(product: Product) -> StandInBuilder {
        StandInBuilder {
            product,
            node_name: format!("standin-{}", free_port()),
            datacenter: "dc1".into(),
            region: "global".into(),
            server: false,
            client: false,
            bootstrap_expect: 0,
            extra_json: serde_json::Map::new(),
            extra_hcl: String::new(),
            files: Vec::new(),
            env: Vec::new(),
            wait_http: true,
            bin: None,
            consul: None,
        }
    }

    /// Server mode with a bootstrap_expect (0: none).
    pub fn server(mut self, bootstrap_expect: u64) -> Self {
        self.server = true;
        self.bootstrap_expect = bootstrap_expect;
        self
    }

    /// Client mode (Consul: not a server; Nomad: client only).
    pub fn client(mut self) -> Self {
        self.server = false;
        self.client = true;
        self.bootstrap_expect = 0;
        self
    }

    /// Nomad: also enable the client next to the server.
    pub fn with_client(mut self) -> Self {
        self.client = true;
        self
    }

    pub fn node_name(mut self, n: &str) -> Self {
        self.node_name = n.into();
        self
    }

    pub fn datacenter(mut self, dc: &str) -> Self {
        self.datacenter = dc.into();
        self
    }

    pub fn region(mut self, r: &str) -> Self {
        self.region = r.into();
        self
    }

    /// Consul: set a top-level config key (JSON value).
    pub fn set(mut self, key: &str, v: Value) -> Self {
        self.extra_json.insert(key.into(), v);
        self
    }

    /// Nomad: append HCL to the generated config file.
    pub fn hcl(mut self, text: &str) -> Self {
        self.extra_hcl.push_str(text);
        self.extra_hcl.push('\n');
        self
    }

    /// An extra file in the config dir (merged after `00-standin.*` by name).
    pub fn file(mut self, name: &str, contents: &str) -> Self {
        self.files.push((name.into(), contents.into()));
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Nomad: use the Consul agent at `addr` (auto_advertise, server and
    /// client auto-join on). Without it the builder switches them off, so
    /// that a test's Nomad stand-in never talks to a stray `localhost:8500`.
    pub fn consul(mut self, addr: &str) -> Self {
        self.consul = Some(addr.into());
        self
    }

    /// Do not wait for HTTP (for instances expected to fail at start).
    pub fn no_wait(mut self) -> Self {
        self.wait_http = false;
        self
    }

    /// Use another binary path (default: [`standin_bin`]).
    pub fn bin(mut self, p: PathBuf) -> Self {
        self.bin = Some(p);
        self
    }

    /// Write the config dir, start the stand-in, and wait until HTTP answers.
    pub fn start(self) -> StandIn {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg_dir = dir.path().join("config");
        std::fs::create_dir_all(&cfg_dir).expect("config dir");
        let data_dir = dir.path().join("data");
        let (http_port, serf_port, serf_wan_port, rpc_port) =
            (free_port(), free_port(), free_port(), free_port());
        match self.product {
            Product::Consul => {
                let mut cfg = json!({
                    "node_name": self.node_name, "datacenter": self.datacenter,
                    "data_dir": data_dir, "server": self.server,
                    "bind_addr": "127.0.0.1", "client_addr": "127.0.0.1",
                    "ports": {"http": http_port, "serf_lan": serf_port,
                              "serf_wan": serf_wan_port, "server": rpc_port, "dns": -1},
                });
                if self.server && self.bootstrap_expect > 0 {
                    cfg["bootstrap_expect"] = json!(self.bootstrap_expect);
                }
                if let Some(o) = cfg.as_object_mut() {
                    o.extend(self.extra_json.clone());
                }
                std::fs::write(cfg_dir.join("00-standin.json"), cfg.to_string())
                    .expect("write config");
            }
            Product::Nomad => {
                let mut hcl = format!(
                    "name = \"{}\"\nregion = \"{}\"\ndatacenter = \"{}\"\ndata_dir = \"{}\"\nbind_addr = \"127.0.0.1\"\nports {{\n  http = {http_port}\n  rpc = {rpc_port}\n  serf = {serf_port}\n}}\n",
                    self.node_name,
                    self.region,
                    self.datacenter,
                    data_dir.display()
                );
                if self.server {
                    hcl.push_str(&format!(
                        "server {{\n  enabled = true\n  bootstrap_expect = {}\n}}\n",
                        self.bootstrap_expect
                    ));
                }
                if self.client {
                    hcl.push_str("client {\n  enabled = true\n}\n");
                }
                match &self.consul {
                    Some(addr) => hcl.push_str(&format!("consul {{\n  address = \"{addr}\"\n}}\n")),
                    None => hcl.push_str(
                        "consul {\n  auto_advertise = false\n  server_auto_join = false\n  client_auto_join = false\n}\n",
                    ),
                }
                hcl.push_str(&self.extra_hcl);
                std::fs::write(cfg_dir.join("00-standin.hcl"), hcl).expect("write config");
            }
        }
        for (name, contents) in &self.files {
            std::fs::write(cfg_dir.join(name), contents).expect("write extra config file");
        }
        let bin = match &self.bin {
            Some(b) => {
                let bin_dir = dir.path().join("bin");
                std::fs::create_dir_all(&bin_dir).expect("create bin dir");
                let dest = bin_dir.join(self.product.name());
                std::os::unix::fs::symlink(b, &dest).expect("symlink stand-in");
                dest
            }
            None => install_as(&dir.path().join("bin"), self.product.name()),
        };
        let mut cmd = Command::new(&bin);
        match self.product {
            Product::Consul => cmd
                .arg("agent")
                .arg(format!("-config-dir={}", cfg_dir.display())),
            Product::Nomad => cmd
                .arg("agent")
                .arg(format!("-config={}", cfg_dir.display())),
        };
        cmd.env("STANDIN_EVENT_LOG", dir.path().join("events.log"))
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn stand-in");
        let mut s = StandIn {
            product: self.product,
            child,
            dir,
            http_port,
            serf_port,
            serf_wan_port,
            rpc_port,
            node_name: self.node_name.clone(),
            status: None,
        };
        if self.wait_http {
            let addr = s.addr();
            let up = wait_for(START_DEADLINE, || {
                if let Ok(Some(st)) = s.child.try_wait() {
                    panic!(
                        "stand-in exited before answering HTTP: {st}; events: {:?}",
                        s.events()
                    );
                }
                TcpStream::connect(&addr).ok().map(|_| ())
            });
            assert!(up.is_some(), "stand-in did not answer on {addr} in time");
        }
        s
    }
}

impl StandIn {
    /// `127.0.0.1:<http port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    /// `http://127.0.0.1:<http port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Address to give to another agent's join (Consul serf LAN, Nomad serf).
    pub fn join_addr(&self) -> String {
        format!("127.0.0.1:{}", self.serf_port)
    }

    /// Consul serf WAN address.
    pub fn wan_join_addr(&self) -> String {
        format!("127.0.0.1:{}", self.serf_wan_port)
    }

    /// Consul server RPC / Nomad RPC address (what leader/peers report).
    pub fn rpc_addr(&self) -> String {
        format!("127.0.0.1:{}", self.rpc_port)
    }

    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The instance's temp dir (config in `config/`, events in `events.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    /// Send a signal to the stand-in's pid.
    pub fn signal(&self, sig: Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, sig).expect("send signal");
    }

    /// The events logged so far.
    pub fn events(&self) -> Vec<Event> {
        read_events(&self.dir.path().join("events.log"))
    }

    /// The events as plain lines, without the `start` line's details.
    pub fn event_lines(&self) -> Vec<String> {
        self.events()
            .iter()
            .map(|e| {
                if e.kind == "start" {
                    "start".to_string()
                } else {
                    e.to_string()
                }
            })
            .collect()
    }

    /// Wait until an event with this text (e.g. `reload ok`) is logged.
    pub fn wait_event(&self, line: &str, deadline: Duration) -> bool {
        wait_for(deadline, || {
            self.events()
                .iter()
                .any(|e| e.to_string() == line)
                .then_some(())
        })
        .is_some()
    }

    /// Wait for the process to exit; returns its status.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.status {
            return Some(s);
        }
        let child = &mut self.child;
        let st = wait_for(deadline, || child.try_wait().ok().flatten());
        self.status = st;
        st
    }

    /// Plain HTTP request to the instance.
    pub fn request(&self, method: &str, path: &str, body: &str) -> HttpReply {
        http(&self.addr(), method, path, body).expect("HTTP request to stand-in")
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> HttpReply {
        self.request("GET", path, "")
    }

    /// `PUT path`.
    pub fn put(&self, path: &str, body: &str) -> HttpReply {
        self.request("PUT", path, body)
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

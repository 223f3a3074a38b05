//! The offline five-node demo: the reference scenario of DESIGN.md, run by
//! the real `supervisor` binary in network-namespace nodes, installing
//! stand-in agents from a signed mirror served inside the test network.
//!
//! [`Demo::start`] does what an operator of an air-gapped site does, once per
//! node:
//!
//! 1. builds the namespace nodes of [`crate::netns::reference_nodes`] (the
//!    addresses of `config/examples/`);
//! 2. builds a signed mirror holding the stand-in agent under every version
//!    the example role files ask for, signed by a test key made now, and
//!    serves it over HTTP from the `ams2` router (`http://10.0.1.1:8880`,
//!    reachable from every node, like a site's internal mirror);
//! 3. writes each node's role file: its `config/examples/<node>.toml`
//!    unchanged except `[release]` (the mirror, `trust_hashicorp_key =
//!    false`, the test key in `trusted_key_files`: the options an operator
//!    uses for a private mirror's key) and `[paths]` (per node under the work
//!    dir, since all nodes share this machine's filesystem);
//! 4. starts `supervisor run -c <role file>` inside each node's namespace;
//! 5. forwards a port on this host's `127.0.0.1` to each node's health
//!    endpoint (default `<private address>:4680`) so a browser or `curl` on
//!    the host can look.
//!
//! [`Demo::stop`] sends SIGTERM to every supervisor (clients first) and waits
//! for their graceful stop; dropping a [`Demo`] stops it and removes the
//! namespaces. Everything here is test support: the agents are stand-ins,
//! never the real Consul or Nomad.

use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::sync::oneshot;

use crate::mirror::{MirrorBuilder, serve_on};
use crate::netns::{NetnsError, Topology, reference_nodes};

/// Port of the mirror served from the `ams2` router.
pub const MIRROR_PORT: u16 = 8880;
/// Datacenter whose router serves the mirror.
const MIRROR_DC: &str = "ams2";
/// The supervisor's default health port (`health.listen` is left unset in
/// the examples, so each node listens on `<private address>:4680`).
pub const HEALTH_PORT: u16 = 4680;
/// The datacenters of the reference scenario, in index order.
pub const DATACENTERS: [&str; 2] = ["ams2", "lon1"];
/// How long to wait for one HTTP answer through a forwarder.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// Poll interval while waiting for nodes.
const POLL: Duration = Duration::from_millis(200);

/// An error setting up or talking to the demo.
#[derive(Debug)]
pub struct DemoError(pub String);

impl fmt::Display for DemoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DemoError {}

impl From<NetnsError> for DemoError {
    fn from(e: NetnsError) -> Self {
        DemoError(e.to_string())
    }
}

fn io_err(what: &str, path: &Path, e: impl fmt::Display) -> DemoError {
    DemoError(format!("failed to {what} {}: {e}", path.display()))
}

/// What the demo runs and where.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The `supervisor` binary (run unchanged).
    pub supervisor: PathBuf,
    /// The stand-in agent binary zipped into the mirror.
    pub standin: PathBuf,
    /// Directory holding `<node>.toml` for the five reference nodes.
    pub examples_dir: PathBuf,
    /// Work directory: mirror, key, per-node role files, state and logs.
    pub work_dir: PathBuf,
    /// First host port of the health forwarders (node `i` gets `base + i`);
    /// 0 picks free ports.
    pub forward_base_port: u16,
}

/// One running node of the demo.
#[derive(Debug)]
pub struct DemoNode {
    /// Node name (`ams2-server-01`, ...).
    pub name: String,
    /// Datacenter.
    pub datacenter: String,
    /// The node's namespace.
    pub netns: String,
    /// Private address (its health endpoint listens there).
    pub private_ip: Ipv4Addr,
    /// The role file the supervisor runs with.
    pub role_file: PathBuf,
    /// The supervisor's log (stdout and stderr).
    pub log_file: PathBuf,
    /// Host address forwarding to the node's health endpoint.
    pub forward: SocketAddr,
    child: Option<Child>,
}

impl DemoNode {
    /// The health endpoint as seen inside the node's network.
    pub fn health_url(&self) -> String {
        format!("http://{}:{HEALTH_PORT}/", self.private_ip)
    }

    /// The health endpoint as seen from this host (through the forwarder).
    pub fn host_url(&self) -> String {
        format!("http://{}/", self.forward)
    }

    /// The supervisor's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// A thread living in a network namespace, running a current-thread tokio
/// runtime until told to stop.
struct NsThread {
    stop: Option<oneshot::Sender<()>>,
    join: Option<JoinHandle<()>>,
}

impl NsThread {
    fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

impl Drop for NsThread {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `body` on a new thread that first enters namespace `ns`; sockets it
/// creates live in that namespace. `body` gets a stop signal and reports
/// start-up through `ready`.
fn spawn_in_netns<F, Fut>(ns: &str, body: F) -> Result<NsThread, DemoError>
where
    F: FnOnce(oneshot::Receiver<()>, std::sync::mpsc::Sender<Result<(), String>>) -> Fut
        + Send
        + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let path = PathBuf::from(format!("/var/run/netns/{ns}"));
    let file = File::open(&path).map_err(|e| io_err("open namespace", &path, e))?;
    let (stop_tx, stop_rx) = oneshot::channel();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let join = std::thread::spawn(move || {
        if let Err(e) = setns(&file, CloneFlags::CLONE_NEWNET) {
            let _ = ready_tx.send(Err(format!("failed to enter the namespace: {e}")));
            return;
        }
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready_tx.send(Err(format!("failed to start a runtime: {e}")));
                return;
            }
        };
        rt.block_on(body(stop_rx, ready_tx));
    });
    let started = ready_rx
        .recv_timeout(HTTP_TIMEOUT)
        .map_err(|e| DemoError(format!("thread in namespace {ns} did not start: {e}")))?;
    started.map_err(|e| DemoError(format!("in namespace {ns}: {e}")))?;
    Ok(NsThread {
        stop: Some(stop_tx),
        join: Some(join),
    })
}

/// Serves the mirror at `listen` from inside namespace `ns`.
fn serve_mirror_in(ns: &str, root: PathBuf, listen: String) -> Result<NsThread, DemoError> {
    spawn_in_netns(ns, move |stop, ready| async move {
        match serve_on(root, &listen).await {
            Ok(server) => {
                let _ = ready.send(Ok(()));
                let _ = stop.await;
                drop(server);
            }
            Err(e) => {
                let _ = ready.send(Err(format!("failed to serve the mirror on {listen}: {e}")));
            }
        }
    })
}

/// Forwards connections accepted on `listener` (in this host's namespace) to
/// `target` inside namespace `ns`.
fn forward_into(
    ns: &str,
    listener: std::net::TcpListener,
    target: SocketAddr,
) -> Result<NsThread, DemoError> {
    listener
        .set_nonblocking(true)
        .map_err(|e| DemoError(format!("failed to set up the forwarder: {e}")))?;
    spawn_in_netns(ns, move |mut stop, ready| async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(format!("failed to register the forwarder: {e}")));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        loop {
            tokio::select! {
                _ = &mut stop => return,
                accepted = listener.accept() => {
                    let Ok((mut down, _)) = accepted else { continue };
                    tokio::spawn(async move {
                        // Connected from this thread: inside the node's namespace.
                        if let Ok(mut up) = tokio::net::TcpStream::connect(target).await {
                            let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                        }
                    });
                }
            }
        }
    })
}

/// The reference scenario running under real `supervisor` processes.
pub struct Demo {
    nodes: Vec<DemoNode>,
    mirror_url: String,
    key_file: PathBuf,
    threads: Vec<NsThread>,
    topology: Option<Topology>,
}

impl fmt::Debug for Demo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Demo")
            .field("nodes", &self.nodes)
            .field("mirror_url", &self.mirror_url)
            .finish_non_exhaustive()
    }
}

/// Versions the role files under `examples` ask for, per product.
fn requested_versions(roles: &[toml::Table]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for product in ["consul", "nomad"] {
        let mut versions: Vec<String> = roles
            .iter()
            .filter_map(|t| t.get(product)?.get("version")?.as_str())
            .map(str::to_string)
            .collect();
        versions.sort();
        versions.dedup();
        if !versions.is_empty() {
            out.push((product.to_string(), versions));
        }
    }
    out
}

/// The example role file with the demo's `[release]` and `[paths]`.
fn demo_role(
    example: &toml::Table,
    mirror_url: &str,
    key_file: &Path,
    node_dir: &Path,
) -> toml::Table {
    let mut role = example.clone();
    let mut release = toml::Table::new();
    release.insert("mirror".into(), mirror_url.into());
    release.insert("trust_hashicorp_key".into(), false.into());
    release.insert(
        "trusted_key_files".into(),
        toml::Value::Array(vec![key_file.display().to_string().into()]),
    );
    role.insert("release".into(), release.into());
    let mut paths = toml::Table::new();
    paths.insert(
        "config_dir".into(),
        node_dir.join("etc").display().to_string().into(),
    );
    paths.insert(
        "state_dir".into(),
        node_dir.join("state").display().to_string().into(),
    );
    role.insert("paths".into(), paths.into());
    role
}

fn read_example(dir: &Path, node: &str) -> Result<toml::Table, DemoError> {
    let path = dir.join(format!("{node}.toml"));
    let text = std::fs::read_to_string(&path).map_err(|e| io_err("read", &path, e))?;
    text.parse::<toml::Table>()
        .map_err(|e| io_err("parse", &path, e))
}

/// Makes `path` and its ancestors traversable by the agents' users (the
/// supervisor tightens what it owns itself).
fn make_traversable(path: &Path) -> Result<(), DemoError> {
    use std::os::unix::fs::PermissionsExt;
    let mut cur = Some(path);
    while let Some(p) = cur {
        if p == Path::new("/") || p.as_os_str().is_empty() {
            break;
        }
        let meta = std::fs::metadata(p).map_err(|e| io_err("stat", p, e))?;
        let mode = meta.permissions().mode();
        if mode & 0o011 != 0o011 {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode | 0o011))
                .map_err(|e| io_err("set permissions on", p, e))?;
        }
        cur = p.parent();
    }
    Ok(())
}

impl Demo {
    /// Builds the nodes, the mirror and the role files, and starts one
    /// `supervisor run` per node. Does not wait for readiness: see
    /// [`Demo::wait_ready`].
    pub fn start(opts: &DemoOptions) -> Result<Demo, DemoError> {
        crate::netns::is_available()
            .map_err(|why| DemoError(format!("network namespaces unavailable: {why}")))?;
        for (what, p) in [
            ("supervisor binary", &opts.supervisor),
            ("stand-in binary", &opts.standin),
        ] {
            if !p.is_file() {
                return Err(DemoError(format!(
                    "{what} {} not found (build it first: cargo build --workspace --bins)",
                    p.display()
                )));
            }
        }
        let specs = reference_nodes();
        let mut examples = Vec::new();
        for spec in &specs {
            examples.push(read_example(&opts.examples_dir, &spec.name)?);
        }

        let work = &opts.work_dir;
        if work.exists() {
            std::fs::remove_dir_all(work).map_err(|e| io_err("clear", work, e))?;
        }
        std::fs::create_dir_all(work).map_err(|e| io_err("create", work, e))?;
        make_traversable(work)?;
        // The agents run as their own users, as on a real node.
        crate::users::ensure_agent_users().map_err(DemoError)?;

        // The mirror: every requested version of each product holds the
        // stand-in, stamped with that version.
        let mut builder = MirrorBuilder::new();
        for (product, versions) in requested_versions(&examples) {
            builder = builder.and_product(&product);
            for v in versions {
                builder = builder.version(&v).binary(opts.standin.clone());
            }
        }
        let built = builder
            .build(&work.join("mirror"))
            .map_err(|e| DemoError(format!("failed to build the mirror: {e}")))?;
        let key_file = work.join("mirror-test-key.asc");
        std::fs::copy(&built.public_key, &key_file).map_err(|e| io_err("write", &key_file, e))?;

        let topology = Topology::build(&DATACENTERS, &specs)?;
        let mut demo = Demo {
            nodes: Vec::new(),
            mirror_url: String::new(),
            key_file: key_file.clone(),
            threads: Vec::new(),
            topology: Some(topology),
        };
        let (router_ns, gateway) = demo
            .topology()
            .router(MIRROR_DC)
            .map(|(ns, gw)| (ns.to_string(), gw))
            .ok_or_else(|| DemoError(format!("no datacenter {MIRROR_DC}")))?;
        let listen = format!("{gateway}:{MIRROR_PORT}");
        demo.threads
            .push(serve_mirror_in(&router_ns, built.root.clone(), listen)?);
        demo.mirror_url = format!("http://{gateway}:{MIRROR_PORT}");

        let topo_nodes = demo.topology().nodes().to_vec();
        for (i, (node, example)) in topo_nodes.iter().zip(&examples).enumerate() {
            let node_dir = work.join("nodes").join(&node.name);
            std::fs::create_dir_all(&node_dir).map_err(|e| io_err("create", &node_dir, e))?;
            let role = demo_role(example, &demo.mirror_url, &key_file, &node_dir);
            let role_file = node_dir.join("node.toml");
            let text = format!(
                "# Generated by the demo from config/examples/{}.toml: only\n\
                 # [release] (the demo's signed mirror and its test key) and [paths]\n\
                 # differ.\n{}",
                node.name,
                toml::to_string(&role)
                    .map_err(|e| DemoError(format!("failed to write a role file: {e}")))?
            );
            std::fs::write(&role_file, text).map_err(|e| io_err("write", &role_file, e))?;

            let port = if opts.forward_base_port == 0 {
                0
            } else {
                opts.forward_base_port
                    .saturating_add(u16::try_from(i).unwrap_or(u16::MAX))
            };
            let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port))
                .map_err(|e| DemoError(format!("failed to listen on 127.0.0.1:{port}: {e}")))?;
            let forward = listener
                .local_addr()
                .map_err(|e| DemoError(format!("failed to read a bound address: {e}")))?;
            let target = SocketAddr::from((node.private_ip, HEALTH_PORT));
            demo.threads
                .push(forward_into(&node.netns, listener, target)?);

            let log_file = node_dir.join("supervisor.log");
            let log = File::create(&log_file).map_err(|e| io_err("create", &log_file, e))?;
            let log2 = log.try_clone().map_err(|e| io_err("open", &log_file, e))?;
            let child = {
                use std::os::unix::process::CommandExt;
                node.command(&opts.supervisor.display().to_string())
                    .args(["run", "-c"])
                    .arg(&role_file)
                    .stdin(Stdio::null())
                    .stdout(log)
                    .stderr(log2)
                    // Own process group: Ctrl-C at the terminal reaches the
                    // demo, which then stops the nodes in order.
                    .process_group(0)
                    .spawn()
                    .map_err(|e| {
                        DemoError(format!("failed to start supervisor on {}: {e}", node.name))
                    })?
            };
            demo.nodes.push(DemoNode {
                name: node.name.clone(),
                datacenter: node.datacenter.clone(),
                netns: node.netns.clone(),
                private_ip: node.private_ip,
                role_file,
                log_file,
                forward,
                child: Some(child),
            });
        }
        Ok(demo)
    }

    /// The running nodes, in reference order.
    pub fn nodes(&self) -> &[DemoNode] {
        &self.nodes
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&DemoNode> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The mirror every node installs from.
    pub fn mirror_url(&self) -> &str {
        &self.mirror_url
    }

    /// The armored test key the nodes trust.
    pub fn key_file(&self) -> &Path {
        &self.key_file
    }

    /// The namespace topology.
    ///
    /// # Panics
    /// Never while the demo is alive (the topology is only taken on drop).
    pub fn topology(&self) -> &Topology {
        self.topology
            .as_ref()
            .expect("topology lives as long as the demo")
    }

    /// `GET path` on a node's health endpoint through its forwarder:
    /// `(status, body)`. `accept` sets the `Accept` header.
    pub fn get(&self, node: &str, path: &str, accept: &str) -> Result<(u16, String), DemoError> {
        let n = self
            .node(node)
            .ok_or_else(|| DemoError(format!("no node {node}")))?;
        http_get(n.forward, path, accept)
    }

    /// A supervisor that has exited, with its status: the demo cannot go on.
    pub fn exited(&mut self) -> Option<(String, ExitStatus)> {
        for n in &mut self.nodes {
            if let Some(c) = n.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                n.child = None;
                return Some((n.name.clone(), st));
            }
        }
        None
    }

    /// Waits until every node's `/ready` answers 200, or `within` passes.
    /// `Ok` holds the time it took; `Err` the nodes not ready and why.
    pub fn wait_ready(&mut self, within: Duration) -> Result<Duration, DemoError> {
        self.wait_ready_unless(within, || false)
    }

    /// [`Demo::wait_ready`], giving up early when `give_up()` turns true
    /// (e.g. Ctrl-C).
    pub fn wait_ready_unless(
        &mut self,
        within: Duration,
        give_up: impl Fn() -> bool,
    ) -> Result<Duration, DemoError> {
        let start = Instant::now();
        loop {
            if give_up() {
                return Err(DemoError("interrupted while waiting for the nodes".into()));
            }
            if let Some((node, st)) = self.exited() {
                return Err(DemoError(format!(
                    "supervisor on {node} exited ({st}); see {}",
                    self.node(&node)
                        .map(|n| n.log_file.display().to_string())
                        .unwrap_or_default()
                )));
            }
            let mut waiting = Vec::new();
            for n in &self.nodes {
                match http_get(n.forward, "/ready", "text/plain") {
                    Ok((200, _)) => {}
                    Ok((code, body)) => waiting.push(format!(
                        "{}: {code} {}",
                        n.name,
                        body.lines().take(3).collect::<Vec<_>>().join("; ")
                    )),
                    Err(e) => waiting.push(format!("{}: {e}", n.name)),
                }
            }
            if waiting.is_empty() {
                return Ok(start.elapsed());
            }
            if start.elapsed() > within {
                return Err(DemoError(format!(
                    "not ready after {within:?}:\n  {}",
                    waiting.join("\n  ")
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    /// SIGTERM to every supervisor (clients first, then servers), then waits
    /// up to `within` for all of them. Returns each node's exit status
    /// (`None`: still running after `within`, then SIGKILLed).
    pub fn stop(&mut self, within: Duration) -> Vec<(String, Option<ExitStatus>)> {
        let mut order: Vec<usize> = (0..self.nodes.len()).collect();
        order.sort_by_key(|&i| !self.nodes[i].name.contains("client"));
        for &i in &order {
            if let Some(c) = &self.nodes[i].child
                && let Ok(pid) = i32::try_from(c.id())
            {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
        }
        let deadline = Instant::now() + within;
        let mut out = Vec::new();
        for &i in &order {
            let n = &mut self.nodes[i];
            let Some(mut child) = n.child.take() else {
                continue;
            };
            let status = loop {
                match child.try_wait() {
                    Ok(Some(st)) => break Some(st),
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL / 4),
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break None;
                    }
                }
            };
            out.push((n.name.clone(), status));
        }
        out
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if self.nodes.iter().any(|n| n.child.is_some()) {
            let _ = self.stop(Duration::from_secs(30));
        }
        for t in &mut self.threads {
            t.stop();
        }
        // Dropping the topology kills what is left in the namespaces and
        // deletes them.
        self.topology.take();
    }
}

/// A minimal HTTP/1.1 GET over a fresh connection (`Connection: close`).
pub fn http_get(addr: SocketAddr, path: &str, accept: &str) -> Result<(u16, String), DemoError> {
    let fail = |e: std::io::Error| DemoError(format!("GET http://{addr}{path}: {e}"));
    let mut s = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT).map_err(fail)?;
    s.set_read_timeout(Some(HTTP_TIMEOUT)).map_err(fail)?;
    s.set_write_timeout(Some(HTTP_TIMEOUT)).map_err(fail)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    )
    .map_err(fail)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(fail)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| DemoError(format!("GET http://{addr}{path}: no answer")))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| DemoError(format!("GET http://{addr}{path}: bad status line")))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((code, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(s: &str) -> toml::Table {
        s.parse().expect("valid toml")
    }

    #[test]
    fn versions_are_collected_per_product_without_duplicates() {
        let roles = vec![
            table("[consul]\nversion = \"1.21.4\"\n[nomad]\nversion = \"1.10.4\""),
            table("[nomad]\nversion = \"1.10.4\""),
            table("[nomad]\nversion = \"1.9.3\""),
        ];
        assert_eq!(
            requested_versions(&roles),
            vec![
                ("consul".to_string(), vec!["1.21.4".to_string()]),
                (
                    "nomad".to_string(),
                    vec!["1.10.4".to_string(), "1.9.3".to_string()]
                ),
            ]
        );
    }

    #[test]
    fn demo_role_changes_only_release_and_paths() {
        let example = table(
            "schema = 1\nroles = [\"nomad-client\"]\n[release]\nmirror = \"https://releases.hashicorp.com\"\n[nomad]\nversion = \"1.10.4\"",
        );
        let role = demo_role(
            &example,
            "http://10.0.1.1:8880",
            Path::new("/w/key.asc"),
            Path::new("/w/nodes/n"),
        );
        assert_eq!(role["roles"], example["roles"]);
        assert_eq!(role["nomad"], example["nomad"]);
        assert_eq!(
            role["release"]["mirror"].as_str(),
            Some("http://10.0.1.1:8880")
        );
        assert_eq!(
            role["release"]["trust_hashicorp_key"].as_bool(),
            Some(false)
        );
        assert_eq!(
            role["release"]["trusted_key_files"][0].as_str(),
            Some("/w/key.asc")
        );
        assert_eq!(
            role["paths"]["state_dir"].as_str(),
            Some("/w/nodes/n/state")
        );
        assert_eq!(role["paths"]["config_dir"].as_str(), Some("/w/nodes/n/etc"));
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(
            dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            "hello world"
        );
    }
}

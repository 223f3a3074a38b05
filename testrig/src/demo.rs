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
//! Security ([`Security`]): by default every node's role says `[security]
//! plaintext = true` (the cluster of before secure bootstrap, which the
//! plaintext tests keep testing). [`Security::Secure`] does what the README's
//! "Secure bootstrap" tells an operator: `supervisor cluster init` on the init
//! node (ams2-server-01), `supervisor cluster token create`, the token in a
//! file named by `[security] join_token_file` on every other node; the init
//! node starts first and the others once its join endpoint listens.
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

use crate::dns::{Dnsmasq, Records, SilentNameserver};
use crate::mirror::{MirrorBuilder, MirrorControl, TestKey, serve_on};
use crate::netns::{NetnsError, NodeSpec, Topology, reference_nodes, variant_nodes};

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
    /// The nodes and how each gets its role ([`reference_demo_nodes`]:
    /// the five of the reference scenario from `examples_dir`).
    pub nodes: Vec<DemoNodeSpec>,
    /// DNS servers to start before the supervisors: per datacenter, a
    /// dnsmasq on its router's LAN address (`10.0.<n>.1:53`) serving these
    /// records ([`reference_dns_records`] for `config/examples/dns`).
    pub dns: Vec<(String, Records)>,
    /// Nameservers that never answer, each on a datacenter's router at this
    /// address (added to the router's LAN bridge when it is not the
    /// gateway), started before the supervisors.
    pub silent_nameservers: Vec<(String, SocketAddr)>,
}

/// What a demo adds to [`DemoOptions`] ([`Demo::start_extended`]).
#[derive(Debug, Clone, Default)]
pub struct DemoExtras {
    /// `(product, version)` put on the mirror besides the versions the
    /// role files ask for (each the stand-in stamped with that version).
    pub extra_versions: Vec<(String, String)>,
}

/// How the demo secures its cluster.
#[derive(Debug, Clone, Default)]
pub enum Security {
    /// Every supervised node's role says `[security] plaintext = true`
    /// (any `[security]` of its example replaced): no TLS, no gossip
    /// encryption, no ACLs.
    #[default]
    Plaintext,
    /// `supervisor cluster init` and one join token (see [`SecureOptions`]).
    Secure(SecureOptions),
}

/// The secure demo: which node runs `cluster init`, and what every role's
/// `[security]` adds.
#[derive(Debug, Clone)]
pub struct SecureOptions {
    /// The node that runs `supervisor cluster init` (its role keeps its
    /// example's `[security]`, if any, without `join_token_file`).
    pub init_node: String,
    /// Lifetime of the join token (`supervisor cluster token create --ttl`).
    pub token_ttl: String,
    /// Keys added to every supervised node's `[security]` (e.g. `cert_days`).
    pub extra: toml::Table,
    /// Nodes that get no token file and no `join_token_file` (a test gives
    /// them a token of its own, or runs `cluster init` on them itself).
    pub no_token: Vec<String>,
    /// How long to wait for the init node's join endpoint to listen.
    pub init_within: Duration,
}

impl Default for SecureOptions {
    fn default() -> Self {
        SecureOptions {
            init_node: INIT_NODE.into(),
            token_ttl: "30m".into(),
            extra: toml::Table::new(),
            no_token: Vec::new(),
            init_within: Duration::from_secs(120),
        }
    }
}

/// The node of the reference scenario that runs `supervisor cluster init`.
pub const INIT_NODE: &str = "ams2-server-01";
/// Default port of a CA holder's join endpoint (the supervisor's
/// `paths::DEFAULT_JOIN_PORT`).
pub const JOIN_PORT: u16 = 4681;
/// File name of a node's join token, in its config dir (as
/// `/etc/hashi-supervisor/join-token` in `config/examples/`).
pub const JOIN_TOKEN_FILE: &str = "join-token";

/// The `[security]` a demo node's role gets.
#[derive(Debug, Clone)]
enum RoleSecurity {
    /// `plaintext = true`.
    Plaintext,
    /// The init node, or a node the test gives a token of its own (or
    /// none): its example's `[security]` without `join_token_file`, plus
    /// `extra`.
    Own(toml::Table),
    /// A joining node: `join_token_file` at this path, plus `extra`.
    Join(PathBuf, toml::Table),
}

impl RoleSecurity {
    fn describe(&self) -> &'static str {
        match self {
            RoleSecurity::Plaintext => "plaintext = true",
            RoleSecurity::Own(_) => "its own, without a token file",
            RoleSecurity::Join(..) => "join_token_file",
        }
    }
}

/// Writes `text` to `path` with mode 0600 (its directory made 0755 first).
fn write_secret(path: &Path, text: &str) -> Result<(), DemoError> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io_err("create", dir, e))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_err("create", path, e))?;
    f.write_all(text.as_bytes())
        .map_err(|e| io_err("write", path, e))
}

/// Sets `role`'s `[security]` as `how` says.
fn set_security(role: &mut toml::Table, how: &RoleSecurity) {
    let mut sec = match role.remove("security") {
        Some(toml::Value::Table(t)) => t,
        _ => toml::Table::new(),
    };
    match how {
        RoleSecurity::Plaintext => {
            sec = toml::Table::new();
            sec.insert("plaintext".into(), true.into());
        }
        RoleSecurity::Own(extra) => {
            sec.remove("join_token_file");
            sec.extend(extra.clone());
        }
        RoleSecurity::Join(path, extra) => {
            sec.insert("join_token_file".into(), path.display().to_string().into());
            sec.extend(extra.clone());
        }
    }
    if !sec.is_empty() {
        role.insert("security".into(), sec.into());
    }
}

/// The join token in `supervisor cluster init` or `token create` output:
/// the first word shaped `<id>.<secret>@sha256:<64 hex>`.
pub fn find_join_token(output: &str) -> Option<String> {
    output
        .split(|c: char| c.is_whitespace() || c == '"' || c == '\'')
        .find(|w| is_join_token(w))
        .map(str::to_string)
}

fn is_join_token(w: &str) -> bool {
    let Some((secret, pin)) = w.split_once("@sha256:") else {
        return false;
    };
    let Some((id, secret)) = secret.split_once('.') else {
        return false;
    };
    let alnum = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    alnum(id, 6)
        && alnum(secret, 16)
        && pin.len() == 64
        && pin
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The records `config/examples/dns/` asks for, served by datacenter
/// `dc`'s router in the reference topology (each datacenter's server
/// serves the whole `eu.hashi.test` zone, so a node asks its own router):
/// per datacenter `consul.<dc>.eu.hashi.test` (A, the Consul server) and
/// `_consul-server._tcp.<dc>.eu.hashi.test` (SRV, port 8500);
/// `consul-wan.eu.hashi.test` (A, the Consul servers' public addresses);
/// `nomad.eu.hashi.test` (A) and `_nomad-server._tcp.eu.hashi.test` (SRV,
/// RPC port 4647) for the three Nomad servers.
pub fn reference_dns_records() -> Records {
    let ip = |a, b, c, d| Ipv4Addr::new(a, b, c, d);
    Records::default()
        .a("consul.ams2.eu.hashi.test", ip(10, 0, 1, 11))
        .a("consul.lon1.eu.hashi.test", ip(10, 0, 2, 11))
        .srv(
            "_consul-server._tcp.ams2.eu.hashi.test",
            "consul.ams2.eu.hashi.test",
            8500,
        )
        .srv(
            "_consul-server._tcp.lon1.eu.hashi.test",
            "consul.lon1.eu.hashi.test",
            8500,
        )
        .a("consul-wan.eu.hashi.test", ip(203, 0, 113, 11))
        .a("consul-wan.eu.hashi.test", ip(203, 0, 113, 21))
        .a("ams2-server-01.eu.hashi.test", ip(203, 0, 113, 11))
        .a("ams2-server-03.eu.hashi.test", ip(203, 0, 113, 13))
        .a("lon1-server-01.eu.hashi.test", ip(203, 0, 113, 21))
        .a("nomad.eu.hashi.test", ip(203, 0, 113, 11))
        .a("nomad.eu.hashi.test", ip(203, 0, 113, 13))
        .a("nomad.eu.hashi.test", ip(203, 0, 113, 21))
        .srv(
            "_nomad-server._tcp.eu.hashi.test",
            "ams2-server-01.eu.hashi.test",
            4647,
        )
        .srv(
            "_nomad-server._tcp.eu.hashi.test",
            "ams2-server-03.eu.hashi.test",
            4647,
        )
        .srv(
            "_nomad-server._tcp.eu.hashi.test",
            "lon1-server-01.eu.hashi.test",
            4647,
        )
        .local("hashi.test")
}

/// [`reference_dns_records`] on both reference routers.
pub fn reference_dns() -> Vec<(String, Records)> {
    DATACENTERS
        .iter()
        .map(|dc| ((*dc).to_string(), reference_dns_records()))
        .collect()
}

/// Where a demo node's role comes from.
#[derive(Debug, Clone)]
pub enum RoleSource {
    /// `<examples_dir>/<node>.toml`, only `[release]` and `[paths]` changed.
    Example,
    /// This role, only `[release]` and `[paths]` changed.
    Table(toml::Table),
    /// A role file holding nothing but `schema = 1`, `[release]` and
    /// `[paths]` (no roles, region, datacenter, addresses or discovery): the node runs with the
    /// node's `args` (e.g. `--role nomad-client`) and learns the rest. The
    /// mirror and its key still come from that file: a fresh node has no
    /// other way to know which mirror and key to trust.
    Bare,
    /// No supervisor: a bare host on the LAN (e.g. for a rogue announcer).
    Host,
}

/// One node of the demo.
#[derive(Debug, Clone)]
pub struct DemoNodeSpec {
    /// Name, datacenter and addresses.
    pub node: NodeSpec,
    /// Where its role comes from.
    pub role: RoleSource,
    /// Extra arguments after `supervisor run -c <role file>`.
    pub args: Vec<String>,
    /// Not started by [`Demo::start`]: the test starts it with
    /// [`Demo::start_node`] when it wants to.
    pub deferred: bool,
}

impl DemoNodeSpec {
    /// The same node, left for the test to start ([`Demo::start_node`]).
    pub fn deferred(mut self) -> Self {
        self.deferred = true;
        self
    }

    /// A node run with its example role file.
    pub fn example(node: NodeSpec) -> Self {
        DemoNodeSpec {
            node,
            role: RoleSource::Example,
            args: Vec::new(),
            deferred: false,
        }
    }

    /// A node run with `role` (plus the demo's `[release]` and `[paths]`).
    pub fn with_role(node: NodeSpec, role: toml::Table) -> Self {
        DemoNodeSpec {
            node,
            role: RoleSource::Table(role),
            args: Vec::new(),
            deferred: false,
        }
    }

    /// A node whose role file holds only `[release]` and `[paths]`, run as
    /// `supervisor run -c <file> --role <roles>`.
    pub fn role_less(node: NodeSpec, roles: &str) -> Self {
        DemoNodeSpec {
            node,
            role: RoleSource::Bare,
            args: vec!["--role".into(), roles.into()],
            deferred: false,
        }
    }

    /// A host with no supervisor.
    pub fn host(node: NodeSpec) -> Self {
        DemoNodeSpec {
            node,
            role: RoleSource::Host,
            args: Vec::new(),
            deferred: false,
        }
    }
}

/// The five nodes of the reference scenario, each with its example role.
pub fn reference_demo_nodes() -> Vec<DemoNodeSpec> {
    reference_nodes()
        .into_iter()
        .map(DemoNodeSpec::example)
        .collect()
}

/// The variant topology: the reference nodes plus `ams2-server-02`
/// (`10.0.1.12`, public `203.0.113.12`), a second Consul server of ams2
/// whose role is ams2-server-01's example with its name and addresses,
/// `roles = ["consul-server"]` and no `[nomad]` (so no fourth Nomad
/// server). Every other node runs its example unchanged. Start it deferred
/// ([`DemoNodeSpec::deferred`]) to have ams2's Nomad nodes settle on
/// ams2-server-01 first: it joins the running ams2 Consul cluster (through
/// discovery's live join) as a server added later does.
pub fn variant_demo_nodes(examples_dir: &Path) -> Result<Vec<DemoNodeSpec>, DemoError> {
    let mut out = Vec::new();
    for node in variant_nodes() {
        let spec = match node.name.as_str() {
            "ams2-server-02" => {
                let mut role = read_example(examples_dir, "ams2-server-01")?;
                role.insert("node_name".into(), "ams2-server-02".into());
                role.insert(
                    "roles".into(),
                    toml::Value::Array(vec!["consul-server".into()]),
                );
                role.remove("nomad");
                if let Some(toml::Value::Table(addr)) = role.get_mut("addresses") {
                    if addr.contains_key("private") {
                        addr.insert("private".into(), "10.0.1.12".into());
                    }
                    if addr.contains_key("public") {
                        addr.insert("public".into(), "203.0.113.12".into());
                    }
                }
                DemoNodeSpec::with_role(node, role)
            }
            _ => DemoNodeSpec::example(node),
        };
        out.push(spec);
    }
    Ok(out)
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
    /// Whether a supervisor runs here (false for a [`RoleSource::Host`]).
    pub supervised: bool,
    args: Vec<String>,
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

    /// The node's config dir (`[paths] config_dir` of its role): its
    /// rendered configs, `security/` and, on a CA holder, `cluster/`.
    pub fn config_dir(&self) -> PathBuf {
        self.role_file
            .parent()
            .map(|d| d.join("etc"))
            .unwrap_or_else(|| PathBuf::from("etc"))
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

/// Serves the mirror at `listen` from inside namespace `ns`; the handle
/// sets its faults.
fn serve_mirror_in(
    ns: &str,
    root: PathBuf,
    listen: String,
) -> Result<(NsThread, MirrorControl), DemoError> {
    let (control_tx, control_rx) = std::sync::mpsc::channel();
    let thread = spawn_in_netns(ns, move |stop, ready| async move {
        match serve_on(root, &listen).await {
            Ok(server) => {
                let _ = control_tx.send(server.control());
                let _ = ready.send(Ok(()));
                let _ = stop.await;
                drop(server);
            }
            Err(e) => {
                let _ = ready.send(Err(format!("failed to serve the mirror on {listen}: {e}")));
            }
        }
    })?;
    let control = control_rx
        .recv_timeout(HTTP_TIMEOUT)
        .map_err(|e| DemoError(format!("the mirror in namespace {ns} gave no handle: {e}")))?;
    Ok((thread, control))
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
    supervisor: PathBuf,
    nodes: Vec<DemoNode>,
    mirror_url: String,
    mirror: Option<MirrorControl>,
    mirror_root: PathBuf,
    key_file: PathBuf,
    /// The mirror's signing key (a later [`Demo::publish`] signs with it).
    mirror_key: TestKey,
    /// The stand-in zipped into every published version.
    standin: PathBuf,
    threads: Vec<NsThread>,
    dns: Vec<Dnsmasq>,
    silent: Vec<SilentNameserver>,
    topology: Option<Topology>,
    /// The secure demo's join token (a secret: not in `Debug`).
    join_token: Option<String>,
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
    security: &RoleSecurity,
) -> toml::Table {
    let mut role = example.clone();
    set_security(&mut role, security);
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

/// A role file of nothing but `schema = 1` (the file format version every
/// role file carries, as the package's default one does) and the demo's
/// `[release]`, `[paths]` and `[security]`.
fn bare_role(
    mirror_url: &str,
    key_file: &Path,
    node_dir: &Path,
    security: &RoleSecurity,
) -> toml::Table {
    let mut role = toml::Table::new();
    role.insert("schema".into(), 1.into());
    demo_role(&role, mirror_url, key_file, node_dir, security)
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
    /// `supervisor run` per node, every role with `[security] plaintext =
    /// true`. Does not wait for readiness: see [`Demo::wait_ready`].
    pub fn start(opts: &DemoOptions) -> Result<Demo, DemoError> {
        Demo::start_with(opts, &Security::Plaintext)
    }

    /// [`Demo::start`] secured as `security` says. With
    /// [`Security::Secure`] it runs `supervisor cluster init` and `cluster
    /// token create` on the init node before any supervisor starts, writes
    /// the token file of every other supervised node (but those in
    /// `no_token`), starts the init node, waits until its join endpoint
    /// accepts connections, then starts the others.
    pub fn start_with(opts: &DemoOptions, security: &Security) -> Result<Demo, DemoError> {
        Demo::start_extended(opts, security, &DemoExtras::default())
    }

    /// [`Demo::start_with`] with `extras` (e.g. more versions on the
    /// mirror, for version changes during the run).
    pub fn start_extended(
        opts: &DemoOptions,
        security: &Security,
        extras: &DemoExtras,
    ) -> Result<Demo, DemoError> {
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
        let specs: Vec<NodeSpec> = opts.nodes.iter().map(|n| n.node.clone()).collect();
        // The role of each node (None: a bare role file, or no supervisor).
        let mut examples: Vec<Option<toml::Table>> = Vec::new();
        for n in &opts.nodes {
            examples.push(match &n.role {
                RoleSource::Example => Some(read_example(&opts.examples_dir, &n.node.name)?),
                RoleSource::Table(t) => Some(t.clone()),
                RoleSource::Bare | RoleSource::Host => None,
            });
        }
        let roles: Vec<toml::Table> = examples.iter().flatten().cloned().collect();

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
        let mut wanted = requested_versions(&roles);
        for (product, version) in &extras.extra_versions {
            match wanted.iter_mut().find(|(p, _)| p == product) {
                Some((_, versions)) => versions.push(version.clone()),
                None => wanted.push((product.clone(), vec![version.clone()])),
            }
        }
        for (_, versions) in &mut wanted {
            versions.sort();
            versions.dedup();
        }
        for (product, versions) in wanted {
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

        let topology = Topology::build(&datacenters(&specs), &specs)?;
        let mut demo = Demo {
            supervisor: opts.supervisor.clone(),
            nodes: Vec::new(),
            mirror_url: String::new(),
            mirror: None,
            mirror_root: built.root.clone(),
            key_file: key_file.clone(),
            mirror_key: built.key.clone(),
            standin: opts.standin.clone(),
            threads: Vec::new(),
            dns: Vec::new(),
            silent: Vec::new(),
            topology: Some(topology),
            join_token: None,
        };
        for (dc, addr) in &opts.silent_nameservers {
            let (ns, gw) = demo
                .topology()
                .router(dc)
                .map(|(ns, gw)| (ns.to_string(), gw))
                .ok_or_else(|| DemoError(format!("no datacenter {dc} for its nameserver")))?;
            if addr.ip() != std::net::IpAddr::V4(gw) {
                demo.topology()
                    .add_router_address(dc, &format!("{}/32", addr.ip()))?;
            }
            let server =
                SilentNameserver::start(&ns, *addr).map_err(|e| DemoError(e.to_string()))?;
            demo.silent.push(server);
        }
        for (dc, records) in &opts.dns {
            let (ns, gw) = demo
                .topology()
                .router(dc)
                .map(|(ns, gw)| (ns.to_string(), gw))
                .ok_or_else(|| DemoError(format!("no datacenter {dc} for its DNS server")))?;
            let log = work.join(format!("dnsmasq-{dc}.log"));
            let server =
                Dnsmasq::start(&ns, gw, records, &log).map_err(|e| DemoError(e.to_string()))?;
            demo.dns.push(server);
        }
        let (router_ns, gateway) = demo
            .topology()
            .router(MIRROR_DC)
            .map(|(ns, gw)| (ns.to_string(), gw))
            .ok_or_else(|| DemoError(format!("no datacenter {MIRROR_DC}")))?;
        let listen = format!("{gateway}:{MIRROR_PORT}");
        let (thread, control) = serve_mirror_in(&router_ns, built.root.clone(), listen)?;
        demo.threads.push(thread);
        demo.mirror = Some(control);
        demo.mirror_url = format!("http://{gateway}:{MIRROR_PORT}");

        let topo_nodes = demo.topology().nodes().to_vec();
        for (i, ((node, example), spec)) in topo_nodes
            .iter()
            .zip(&examples)
            .zip(&opts.nodes)
            .enumerate()
        {
            let node_dir = work.join("nodes").join(&node.name);
            std::fs::create_dir_all(&node_dir).map_err(|e| io_err("create", &node_dir, e))?;
            let role_security = match security {
                Security::Plaintext => RoleSecurity::Plaintext,
                Security::Secure(s)
                    if s.init_node == node.name || s.no_token.contains(&node.name) =>
                {
                    RoleSecurity::Own(s.extra.clone())
                }
                Security::Secure(s) => {
                    RoleSecurity::Join(node_dir.join("etc").join(JOIN_TOKEN_FILE), s.extra.clone())
                }
            };
            let (role, origin) = match (example, &spec.role) {
                (Some(example), RoleSource::Example) => (
                    demo_role(
                        example,
                        &demo.mirror_url,
                        &key_file,
                        &node_dir,
                        &role_security,
                    ),
                    format!(
                        "from config/examples/{}.toml: only [release] (the demo's signed\n\
                         # mirror and its test key), [paths] and [security] ({}) differ.",
                        node.name,
                        role_security.describe()
                    ),
                ),
                (Some(example), _) => (
                    demo_role(
                        example,
                        &demo.mirror_url,
                        &key_file,
                        &node_dir,
                        &role_security,
                    ),
                    format!(
                        "by the test: its own role with the demo's [release], [paths]\n\
                         # and [security] ({}).",
                        role_security.describe()
                    ),
                ),
                (None, _) => (
                    bare_role(&demo.mirror_url, &key_file, &node_dir, &role_security),
                    format!(
                        "with nothing but [release] (the demo's mirror and key),\n\
                         # [paths] and [security] ({}): roles from the command line ({}),\n\
                         # the rest learned.",
                        role_security.describe(),
                        spec.args.join(" ")
                    ),
                ),
            };
            let role_file = node_dir.join("node.toml");
            let text = format!(
                "# Generated by the demo {origin}\n{}",
                toml::to_string(&role)
                    .map_err(|e| DemoError(format!("failed to write a role file: {e}")))?
            );
            std::fs::write(&role_file, text).map_err(|e| io_err("write", &role_file, e))?;
            let supervised = !matches!(spec.role, RoleSource::Host);

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
            demo.nodes.push(DemoNode {
                name: node.name.clone(),
                datacenter: node.datacenter.clone(),
                netns: node.netns.clone(),
                private_ip: node.private_ip,
                role_file,
                log_file,
                forward,
                supervised,
                args: spec.args.clone(),
                child: None,
            });
        }
        let mut names: Vec<String> = demo
            .nodes
            .iter()
            .zip(&opts.nodes)
            .filter(|(n, spec)| n.supervised && !spec.deferred)
            .map(|(n, _)| n.name.clone())
            .collect();
        if let Security::Secure(secure) = security {
            demo.bootstrap(secure)?;
            if let Some(i) = names.iter().position(|n| *n == secure.init_node) {
                let init = names.remove(i);
                demo.start_node(&init)?;
                demo.wait_join_endpoint(&init, secure.init_within)?;
            }
        }
        for name in names {
            demo.start_node(&name)?;
        }
        Ok(demo)
    }

    /// `supervisor cluster init` and `supervisor cluster token create` on
    /// the init node (its role file, inside its namespace), then the token
    /// file (0600) of every other supervised node not in `no_token`.
    fn bootstrap(&mut self, secure: &SecureOptions) -> Result<(), DemoError> {
        let init = &secure.init_node;
        self.run_supervisor(init, &["cluster", "init", "--token-ttl", &secure.token_ttl])?;
        let out = self.run_supervisor(
            init,
            &[
                "cluster",
                "token",
                "create",
                "--ttl",
                &secure.token_ttl,
                "--description",
                "hashi-demo",
            ],
        )?;
        let token = find_join_token(&out).ok_or_else(|| {
            DemoError(format!(
                "`supervisor cluster token create` on {init} printed no join token"
            ))
        })?;
        for n in &self.nodes {
            if !n.supervised || n.name == *init || secure.no_token.contains(&n.name) {
                continue;
            }
            let file = n.config_dir().join(JOIN_TOKEN_FILE);
            write_secret(&file, &format!("{token}\n"))?;
        }
        self.join_token = Some(token);
        Ok(())
    }

    /// Runs `supervisor <args> -c <role file>` on node `name` (inside its
    /// namespace) to the end; its stdout when it exits 0, else an error
    /// with its exit status and stderr.
    pub fn run_supervisor(&self, name: &str, args: &[&str]) -> Result<String, DemoError> {
        let out = self.supervisor_command(name, args)?.output().map_err(|e| {
            DemoError(format!(
                "failed to run supervisor {} on {name}: {e}",
                args.join(" ")
            ))
        })?;
        if !out.status.success() {
            return Err(DemoError(format!(
                "`supervisor {}` on {name} exited {}: {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The command `supervisor <args> -c <role file>` on node `name`,
    /// inside its namespace, not started.
    pub fn supervisor_command(
        &self,
        name: &str,
        args: &[&str],
    ) -> Result<std::process::Command, DemoError> {
        let n = self
            .node(name)
            .ok_or_else(|| DemoError(format!("no node {name}")))?;
        let topo = self
            .topology()
            .node(name)
            .ok_or_else(|| DemoError(format!("no node {name}")))?;
        let mut cmd = topo.command(&self.supervisor.display().to_string());
        cmd.args(args).arg("-c").arg(&n.role_file);
        Ok(cmd)
    }

    /// The join token of a secure demo (what `cluster token create`
    /// printed on the init node). A secret: never print it.
    pub fn join_token(&self) -> Option<&str> {
        self.join_token.as_deref()
    }

    /// Waits until node `name`'s join endpoint (its private address, port
    /// [`JOIN_PORT`]) accepts a TCP connection, or `within` passes, or its
    /// supervisor exits.
    pub fn wait_join_endpoint(&mut self, name: &str, within: Duration) -> Result<(), DemoError> {
        let (ns, addr) = {
            let n = self
                .node(name)
                .ok_or_else(|| DemoError(format!("no node {name}")))?;
            (n.netns.clone(), SocketAddr::from((n.private_ip, JOIN_PORT)))
        };
        let deadline = Instant::now() + within;
        loop {
            if let Some((node, st)) = self.exited() {
                return Err(DemoError(format!(
                    "supervisor on {node} exited ({st}) before {name}'s join endpoint listened"
                )));
            }
            let connected = crate::netns::in_netns(&ns, move || {
                TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
            })?;
            if connected {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(DemoError(format!(
                    "{name}'s join endpoint {addr} not listening after {within:?}"
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Starts `supervisor run -c <role file> <args>` on node `name` (again,
    /// after [`Demo::stop_node`] or [`Demo::kill_node`]: its state dir, and
    /// so its installed releases and cached peers, are kept). Its log is
    /// appended to.
    pub fn start_node(&mut self, name: &str) -> Result<(), DemoError> {
        self.start_node_with(name, &[])
    }

    /// [`Demo::start_node`] with `extra` arguments after the node's own
    /// (e.g. `--join-token <token>`).
    pub fn start_node_with(&mut self, name: &str, extra: &[&str]) -> Result<(), DemoError> {
        let supervisor = self.supervisor.clone();
        let netns_node = self
            .topology()
            .node(name)
            .cloned()
            .ok_or_else(|| DemoError(format!("no node {name}")))?;
        let n = self
            .nodes
            .iter_mut()
            .find(|n| n.name == name)
            .ok_or_else(|| DemoError(format!("no node {name}")))?;
        if !n.supervised {
            return Err(DemoError(format!("{name} is a host without a supervisor")));
        }
        if n.child.is_some() {
            return Err(DemoError(format!("the supervisor on {name} already runs")));
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log_file)
            .map_err(|e| io_err("open", &n.log_file, e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| io_err("open", &n.log_file, e))?;
        let child = {
            use std::os::unix::process::CommandExt;
            netns_node
                .command(&supervisor.display().to_string())
                .args(["run", "-c"])
                .arg(&n.role_file)
                .args(&n.args)
                .args(extra)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2)
                // Own process group: Ctrl-C at the terminal reaches the
                // demo, which then stops the nodes in order.
                .process_group(0)
                .spawn()
                .map_err(|e| DemoError(format!("failed to start supervisor on {name}: {e}")))?
        };
        n.child = Some(child);
        Ok(())
    }

    /// SIGTERM to the supervisor of node `name` (a graceful stop: its
    /// agents stop, and leave, with it), then waits up to `within`.
    /// `None`: still running after `within`, then SIGKILLed.
    pub fn stop_node(&mut self, name: &str, within: Duration) -> Option<ExitStatus> {
        let n = self.nodes.iter_mut().find(|n| n.name == name)?;
        let mut child = n.child.take()?;
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        wait_child(&mut child, Instant::now() + within)
    }

    /// SIGKILL to the supervisor of node `name` (a crash: its agents keep
    /// running, orphaned, until the topology is torn down).
    pub fn kill_node(&mut self, name: &str) -> Option<ExitStatus> {
        let n = self.nodes.iter_mut().find(|n| n.name == name)?;
        let mut child = n.child.take()?;
        let _ = child.kill();
        child.wait().ok()
    }

    /// The running nodes, in reference order.
    pub fn nodes(&self) -> &[DemoNode] {
        &self.nodes
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&DemoNode> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Queries the silent nameserver at `addr` received (never answered).
    pub fn silent_queries(&self, addr: SocketAddr) -> Option<u64> {
        self.silent
            .iter()
            .find(|s| s.addr() == addr)
            .map(SilentNameserver::queries)
    }

    /// The mirror every node installs from.
    pub fn mirror_url(&self) -> &str {
        &self.mirror_url
    }

    /// The running mirror's fault knobs ([`crate::mirror::Fault`] per
    /// path, e.g. [`crate::mirror::zip_path`]).
    ///
    /// # Panics
    /// Never once [`Demo::start_extended`] returned: the mirror is served
    /// before any node starts.
    pub fn mirror(&self) -> &MirrorControl {
        self.mirror
            .as_ref()
            .expect("the mirror is served before the demo is returned")
    }

    /// Directory the mirror serves (`<product>/<version>/...`).
    pub fn mirror_root(&self) -> &Path {
        &self.mirror_root
    }

    /// Publishes `version` of `product` on the running mirror, as a
    /// release manager adds a release to a site's mirror: the stand-in
    /// stamped with that version, zipped, its SHA256SUMS signed with the
    /// mirror's key. The new version's directory appears whole (built
    /// beside the mirror, then renamed in), and only then the product's
    /// `index.json` lists it (replaced by a rename), so a node never sees a
    /// listed version it cannot fetch. Publishing a listed version again is
    /// refused.
    pub fn publish(&self, product: &str, version: &str) -> Result<(), DemoError> {
        let live = self.mirror_root.join(product);
        let vdir = live.join(version);
        if vdir.exists() {
            return Err(DemoError(format!(
                "{product} {version} is already on the mirror ({})",
                vdir.display()
            )));
        }
        let work = self
            .mirror_root
            .parent()
            .ok_or_else(|| DemoError("the mirror root has no parent dir".into()))?;
        let staging = work.join(format!("mirror-staging-{product}-{version}"));
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(|e| io_err("clear", &staging, e))?;
        }
        MirrorBuilder::product(product)
            .version(version)
            .binary(self.standin.clone())
            .key(self.mirror_key.clone())
            .build(&staging)
            .map_err(|e| DemoError(format!("failed to build {product} {version}: {e}")))?;
        let read_index = |path: &Path| -> Result<serde_json::Value, DemoError> {
            let text = std::fs::read(path).map_err(|e| io_err("read", path, e))?;
            serde_json::from_slice(&text).map_err(|e| io_err("parse", path, e))
        };
        let new_index = read_index(&staging.join(product).join("index.json"))?;
        let entry = new_index["versions"][version].clone();
        if entry.is_null() {
            return Err(DemoError(format!(
                "the staged index of {product} does not list {version}"
            )));
        }
        let index_path = live.join("index.json");
        let mut index = if index_path.exists() {
            read_index(&index_path)?
        } else {
            serde_json::json!({ "name": product, "versions": {} })
        };
        let versions = index["versions"]
            .as_object_mut()
            .ok_or_else(|| io_err("read", &index_path, "no versions object"))?;
        versions.insert(version.to_string(), entry);
        std::fs::create_dir_all(&live).map_err(|e| io_err("create", &live, e))?;
        let from = staging.join(product).join(version);
        std::fs::rename(&from, &vdir).map_err(|e| io_err("move in", &from, e))?;
        let tmp = live.join(".index.json.tmp");
        let text = serde_json::to_vec_pretty(&index)
            .map_err(|e| DemoError(format!("failed to encode {}: {e}", index_path.display())))?;
        std::fs::write(&tmp, text).map_err(|e| io_err("write", &tmp, e))?;
        std::fs::rename(&tmp, &index_path).map_err(|e| io_err("replace", &index_path, e))?;
        std::fs::remove_dir_all(&staging).map_err(|e| io_err("remove", &staging, e))
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
        let all: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.name.clone())
            .collect();
        self.wait_nodes_ready(&all, within, give_up)
    }

    /// [`Demo::wait_ready_unless`] for the nodes named in `nodes` only.
    pub fn wait_nodes_ready(
        &mut self,
        nodes: &[String],
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
            for n in self.nodes.iter().filter(|n| nodes.contains(&n.name)) {
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
            let status = wait_child(&mut child, deadline);
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
        self.dns.clear();
        self.silent.clear();
        // Dropping the topology kills what is left in the namespaces and
        // deletes them.
        self.topology.take();
    }
}

/// Waits for `child` until `deadline`; past it, SIGKILL (`None`).
fn wait_child(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL / 4),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// The datacenters of `nodes` in order of first appearance, the reference
/// ones first (so ams2 is always DC 1, `10.0.1.0/24`, and lon1 DC 2).
fn datacenters(nodes: &[NodeSpec]) -> Vec<&str> {
    let mut out: Vec<&str> = DATACENTERS.to_vec();
    for n in nodes {
        if !out.contains(&n.datacenter.as_str()) {
            out.push(&n.datacenter);
        }
    }
    out
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
            &RoleSecurity::Plaintext,
        );
        assert_eq!(role["roles"], example["roles"]);
        assert_eq!(role["security"]["plaintext"].as_bool(), Some(true));
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
    fn plaintext_replaces_the_examples_security_and_secure_roles_join_with_the_token_file() {
        let example = table(
            "schema = 1\nroles = [\"nomad-client\"]\n[security]\njoin_token_file = \"/etc/hashi-supervisor/join-token\"\njoin = [\"10.0.1.11\"]",
        );
        let role = |how: &RoleSecurity| {
            demo_role(&example, "http://m", Path::new("/k"), Path::new("/n"), how)
        };
        let plain = role(&RoleSecurity::Plaintext);
        assert_eq!(
            plain["security"]
                .as_table()
                .map(|t| t.keys().collect::<Vec<_>>()),
            Some(vec![&"plaintext".to_string()])
        );
        let mut extra = toml::Table::new();
        extra.insert("cert_days".into(), 2.into());
        let join = role(&RoleSecurity::Join(
            "/n/etc/join-token".into(),
            extra.clone(),
        ));
        assert_eq!(
            join["security"]["join_token_file"].as_str(),
            Some("/n/etc/join-token")
        );
        assert_eq!(join["security"]["join"], example["security"]["join"]);
        assert_eq!(join["security"]["cert_days"].as_integer(), Some(2));
        assert!(join["security"].get("plaintext").is_none());
        let init = role(&RoleSecurity::Own(extra));
        assert!(init["security"].get("join_token_file").is_none());
        assert_eq!(init["security"]["cert_days"].as_integer(), Some(2));
        let bare_init = demo_role(
            &table("schema = 1"),
            "http://m",
            Path::new("/k"),
            Path::new("/n"),
            &RoleSecurity::Own(toml::Table::new()),
        );
        assert!(bare_init.get("security").is_none(), "{bare_init:?}");
    }

    #[test]
    fn the_join_token_is_found_in_command_output() {
        let pin = "ab".repeat(32);
        let out = format!("join token (expires in 30m):\n  abc123.0123456789abcdef@sha256:{pin}\n");
        assert_eq!(
            find_join_token(&out),
            Some(format!("abc123.0123456789abcdef@sha256:{pin}"))
        );
        for bad in [
            format!("ABC123.0123456789abcdef@sha256:{pin}"),
            format!("abc12.0123456789abcdef@sha256:{pin}"),
            format!("abc123.0123456789abcde@sha256:{pin}"),
            "abc123.0123456789abcdef@sha256:abcd".to_string(),
            format!("abc123.0123456789abcdef@sha1:{pin}"),
        ] {
            assert_eq!(find_join_token(&bad), None, "{bad}");
        }
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(
            dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            "hello world"
        );
    }
}

//! The plan: a pure value computed from a validated [`NodeRole`]. Which agents
//! run, which versions, their argv, config dirs, users, start order, stop
//! signals and timeouts, restart policies. Every side effect reads the plan;
//! building one touches nothing on the system.
//!
//! Stop behaviour (agent-facts.md §1): servers keep their Raft membership on
//! a stop unless the role file says `leave_on_stop = true`; clients leave.
//! The choice is written into the rendered config (Consul
//! `leave_on_terminate` / `skip_leave_on_interrupt`, Nomad
//! `leave_on_terminate` / `leave_on_interrupt`) for both signals, so the stop
//! signal alone never decides it. An agent told not to leave exits at once
//! with status 1 ("graceful shutdown disabled"); that exit is expected.
//!
//! Nomad is the exception: its stop signal SIGINT leaves as above
//! (`leave_on_interrupt`), and a client that leaves first drains its
//! allocations (`client.drain_on_shutdown`, [`DEFAULT_DRAIN_DEADLINE`]);
//! SIGTERM ([`NOMAD_KEEP_WORKLOADS_SIGNAL`], `leave_on_terminate = false`)
//! never leaves nor drains. The supervisor sends it when Nomad only
//! restarts (a config change, an upgrade, a restart of the supervisor):
//! Nomad's task executors survive an agent stop, and the client picks its
//! workloads up again when it is back.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::paths::RELEASES_SUBDIR;
use crate::peers::Peers;
use crate::role::{NodeRole, Secret, TlsFiles};
use crate::version::VersionSpec;
use crate::vocab::{Product, RestartPolicy};

/// Consul's HTTP API port (agent-facts.md §6).
pub const CONSUL_HTTP_PORT: u16 = 8500;
/// Nomad's HTTP API port (agent-facts.md §6).
pub const NOMAD_HTTP_PORT: u16 = 4646;
/// Nomad's RPC port (agent-facts.md §6).
pub const NOMAD_RPC_PORT: u16 = 4647;
/// Nomad's Serf port (agent-facts.md §6).
pub const NOMAD_SERF_PORT: u16 = 4648;
/// Consul gives a graceful leave this long before giving up
/// (consul `command/agent/agent.go`, agent-facts.md §1).
pub const CONSUL_LEAVE_TIMEOUT: Duration = Duration::from_secs(15);
/// Nomad's `gracefulTimeout` (nomad `command/agent/command.go`,
/// agent-facts.md §1); the client drain deadline comes on top.
pub const NOMAD_GRACEFUL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a leaving Nomad client drains its allocations when the role
/// file does not say (`[nomad] drain_deadline_secs`, config/node.toml).
pub const DEFAULT_DRAIN_DEADLINE: Duration = Duration::from_secs(60);
/// Stops Nomad without a leave and so without a drain (rendered
/// `leave_on_terminate = false`; nomad `command/agent/command.go`
/// `handleSignals`, agent-facts.md §1).
pub const NOMAD_KEEP_WORKLOADS_SIGNAL: Signal = Signal::SIGTERM;
/// Slack on top of an agent's own leave timeout before we send SIGKILL, so
/// the agent's own timer fires first.
pub const STOP_MARGIN: Duration = Duration::from_secs(5);
/// Consul's stop signal. SIGTERM, as in HashiCorp's packaged unit
/// (`KillSignal=SIGTERM`); whether it leaves is set in the config.
pub const CONSUL_STOP_SIGNAL: Signal = Signal::SIGTERM;
/// Nomad's stop signal. SIGINT, as in HashiCorp's packaged unit
/// (`KillSignal=SIGINT`); whether it leaves is set in the config.
pub const NOMAD_STOP_SIGNAL: Signal = Signal::SIGINT;
/// Sub-directory of the state dir holding the agents' data dirs.
pub const DATA_SUBDIR: &str = "data";
/// Name of Consul's rendered config file inside its config dir.
pub const CONSUL_CONFIG_FILE: &str = "consul.json";
/// Name of Nomad's rendered config file inside its config dir.
pub const NOMAD_CONFIG_FILE: &str = "nomad.hcl";

/// Everything needed to run one agent.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AgentPlan {
    /// Which product.
    pub product: Product,
    /// Version the operator asked for.
    #[serde(serialize_with = "ser_display")]
    pub version: VersionSpec,
    /// Whether this agent runs in server mode.
    pub server: bool,
    /// Whether this agent runs in client mode (Nomad `client.enabled`).
    pub client: bool,
    /// Unix user the agent runs as (`consul`, `nomad`, or `root`).
    pub user: String,
    /// Path of the binary (`<state>/releases/<product>/current/<product>`).
    pub binary: PathBuf,
    /// Arguments after the binary (`agent -config-dir=DIR`).
    pub args: Vec<String>,
    /// Directory holding the rendered config files.
    pub config_dir: PathBuf,
    /// The agent's data dir.
    pub data_dir: PathBuf,
    /// Signal that stops the agent the way its role needs.
    #[serde(serialize_with = "ser_signal")]
    pub stop_signal: Signal,
    /// Grace before SIGKILL.
    pub stop_timeout: Duration,
    /// Restart policy.
    pub restart: RestartPolicy,
    /// Address of the agent's local HTTP API (for checks and joins).
    pub http_addr: SocketAddr,
    /// How that API is secured: `None` for plain HTTP.
    pub api_tls: Option<ApiTls>,
}

/// An agent HTTP API served over TLS (Nomad with `tls.http = true`).
///
/// The certificate is checked against the cluster's CA under the name that
/// Nomad's own certificates carry for the agent's role
/// (`server.<region>.nomad` or `client.<region>.nomad`; `nomad tls cert
/// create` writes it, and the rendered `verify_server_hostname = true`
/// requires it). That name is resolved to `http_addr`, so the check holds
/// whatever address the API listens on. No client certificate is sent: the
/// rendered `verify_https_client = false` lets local tools in without one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApiTls {
    /// The cluster CA (PEM).
    pub ca_file: PathBuf,
    /// The name the agent's certificate must carry.
    pub server_name: String,
    /// The certificate the supervisor presents (the node's own), for an API
    /// that verifies clients (Consul's HTTPS with `verify_incoming`).
    pub client_cert: Option<ClientCert>,
    /// The supervisor's ACL token for this agent (`X-Consul-Token` /
    /// `X-Nomad-Token`).
    pub token: Option<crate::role::Secret>,
}

/// A client certificate and its key (PEM files).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClientCert {
    /// Certificate chain.
    pub cert_file: PathBuf,
    /// Private key.
    pub key_file: PathBuf,
}

/// Release settings shared by both agents.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ReleasePlan {
    /// Mirror base URL (`https://`, `http://`, `file://`) or a local directory.
    pub mirror: String,
    /// Whether HashiCorp's embedded release key is trusted.
    pub trust_hashicorp_key: bool,
    /// Extra trusted OpenPGP public key files (armored or binary).
    pub extra_trusted_keys: Vec<PathBuf>,
    /// Where releases are installed (`<state>/releases`).
    pub releases_dir: PathBuf,
    /// How many installed versions to keep per product (current + previous).
    pub keep_versions: usize,
    /// Upper bound on a download's size.
    pub max_download_bytes: u64,
}

/// The whole plan for one node.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Plan {
    /// Node name.
    pub node_name: String,
    /// Nomad region.
    pub region: String,
    /// Datacenter.
    pub datacenter: String,
    /// Roles, normalised and sorted.
    pub roles: Vec<String>,
    /// Agents in start order (Consul before Nomad); stop order is the reverse.
    pub agents: Vec<AgentPlan>,
    /// Release settings.
    pub release: ReleasePlan,
    /// Health endpoint listen address.
    pub health_listen: SocketAddr,
    /// State dir (`/var/lib/hashi-supervisor`).
    pub state_dir: PathBuf,
    /// Config dir (`/etc/hashi-supervisor`).
    pub config_dir: PathBuf,
    /// What the renderer turns into the agents' config files.
    pub render: RenderPlan,
}

/// Inputs of the config renderer: every decision already made.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RenderPlan {
    /// Consul's config, when Consul runs here.
    pub consul: Option<ConsulConfig>,
    /// Nomad's config, when Nomad runs here.
    pub nomad: Option<NomadConfig>,
}

/// What goes into Consul's config file.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ConsulConfig {
    /// The rendered file.
    pub file: PathBuf,
    /// Unix user that owns the file.
    pub owner: String,
    /// `datacenter`.
    pub datacenter: String,
    /// `node_name`.
    pub node_name: String,
    /// `data_dir`.
    pub data_dir: PathBuf,
    /// `log_level` (upper case, as Consul prints it).
    pub log_level: String,
    /// `server`.
    pub server: bool,
    /// `bootstrap_expect` (servers only).
    pub bootstrap_expect: Option<u32>,
    /// `bind_addr`.
    pub bind_addr: IpAddr,
    /// `advertise_addr`.
    pub advertise_addr: IpAddr,
    /// `advertise_addr_wan` (servers with a public address).
    pub advertise_addr_wan: Option<IpAddr>,
    /// `client_addr` (space-separated list).
    pub client_addrs: Vec<IpAddr>,
    /// `retry_join` (static peers, then cloud auto-join strings; shown
    /// with their credentials redacted).
    #[serde(serialize_with = "crate::role::ser_redacted_joins")]
    pub retry_join: Vec<String>,
    /// `retry_join_wan` (servers only; shown as `retry_join`).
    #[serde(serialize_with = "crate::role::ser_redacted_joins")]
    pub retry_join_wan: Vec<String>,
    /// `ui_config.enabled`.
    pub ui: bool,
    /// `encrypt`.
    pub encrypt: Option<Secret>,
    /// `tls.defaults.*`.
    pub tls: Option<TlsFiles>,
    /// `ports.https` with `ports.http = -1`: the HTTP API over TLS only,
    /// clients verified (`tls.defaults.verify_incoming`). Set when the node
    /// has the cluster's material.
    pub https_port: Option<u16>,
    /// `primary_datacenter` and `acl {}`, when the cluster runs ACLs.
    pub acl: Option<ConsulAcl>,
    /// `leave_on_terminate`.
    pub leave_on_terminate: bool,
    /// `skip_leave_on_interrupt`.
    pub skip_leave_on_interrupt: bool,
    /// `[consul.extra]`, merged last.
    pub extra: toml::Table,
}

/// Consul's ACL settings (default deny) and this agent's tokens.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ConsulAcl {
    /// `primary_datacenter`: the init node's datacenter.
    pub primary_datacenter: String,
    /// `acl.tokens.agent`.
    pub agent: Option<Secret>,
    /// `acl.tokens.initial_management` (the init node only: Consul
    /// bootstraps its ACL system with it).
    pub initial_management: Option<Secret>,
    /// `acl.tokens.replication` with `acl.enable_token_replication` (servers
    /// outside the primary datacenter).
    pub replication: Option<Secret>,
}

/// What goes into Nomad's config file.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NomadConfig {
    /// The rendered file.
    pub file: PathBuf,
    /// Unix user that owns the file.
    pub owner: String,
    /// `region`.
    pub region: String,
    /// `datacenter`.
    pub datacenter: String,
    /// `name`.
    pub name: String,
    /// `data_dir`.
    pub data_dir: PathBuf,
    /// `log_level` (upper case).
    pub log_level: String,
    /// `bind_addr`.
    pub bind_addr: IpAddr,
    /// Address in `advertise { rpc serf }` (public for servers spanning
    /// datacenters).
    pub advertise: IpAddr,
    /// Address in `advertise { http }`: always the private one, so the
    /// datacenter's Consul checks Nomad over the LAN.
    pub advertise_http: IpAddr,
    /// `server.enabled`.
    pub server: bool,
    /// `server.bootstrap_expect` (servers only).
    pub bootstrap_expect: Option<u32>,
    /// `server.encrypt` (servers only).
    pub encrypt: Option<Secret>,
    /// `client.enabled`.
    pub client: bool,
    /// `server_join.retry_join` (in `server {}` and/or `client {}`).
    pub retry_join: Vec<String>,
    /// `consul.address`; `None` when no Consul is reachable, and then the
    /// Consul integration (auto-advertise, auto-join) is switched off.
    pub consul_address: Option<String>,
    /// `consul { ssl = true, ca_file, cert_file, key_file }`: Consul's API
    /// over TLS with this node's certificate (the cluster's material).
    pub consul_tls: Option<TlsFiles>,
    /// `consul.token`: Nomad's token for Consul.
    pub consul_token: Option<Secret>,
    /// `acl.enabled`.
    pub acl: bool,
    /// `tls.*`.
    pub tls: Option<TlsFiles>,
    /// `tls.http`.
    pub tls_http: bool,
    /// `leave_on_terminate`.
    pub leave_on_terminate: bool,
    /// `leave_on_interrupt`.
    pub leave_on_interrupt: bool,
    /// `client.drain_on_shutdown.deadline`.
    pub drain_deadline: Option<Duration>,
    /// `[nomad.extra]`, merged last.
    pub extra: toml::Table,
}

/// `first` then the entries of `more` not already in it.
fn merged(first: &[String], more: &[String]) -> Vec<String> {
    let mut out = first.to_vec();
    for m in more {
        if !out.contains(m) {
            out.push(m.clone());
        }
    }
    out
}

impl Plan {
    /// Computes the plan of a validated role with nothing discovered.
    /// Pure: reads nothing, writes nothing.
    pub fn from_role(role: &NodeRole) -> Plan {
        Plan::build(role, &Peers::default())
    }

    /// Computes the plan of a validated role and what discovery found.
    /// Pure: reads nothing, writes nothing.
    pub fn build(role: &NodeRole, peers: &Peers) -> Plan {
        let roles = role.roles;
        // `[consul.extra] ports.http` moves Consul's API; the checks and a
        // local Nomad's `consul.address` follow it.
        let material = role.security.material.as_ref();
        let consul_http_port = match material {
            // The HTTP API only over TLS (`ports.https`, `[consul.extra]`
            // may move it).
            Some(_) => {
                extra_port(&role.consul.extra, "https").unwrap_or(crate::paths::CONSUL_HTTPS_PORT)
            }
            None => extra_http_port(&role.consul.extra).unwrap_or(CONSUL_HTTP_PORT),
        };
        let releases_dir = role.state_dir.join(RELEASES_SUBDIR);
        let data_root = role.state_dir.join(DATA_SUBDIR);
        let log_level = role.log_level.to_ascii_uppercase();
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let addrs = &role.addresses;
        let mut agents = Vec::new();
        let mut render = RenderPlan {
            consul: None,
            nomad: None,
        };

        if roles.is_consul() {
            let server = roles.consul_server;
            let config_dir = role.config_dir.join("consul.d");
            let data_dir = data_root.join("consul");
            // Servers keep Raft membership unless told to leave; clients leave.
            let leave = if server {
                role.consul.leave_on_stop
            } else {
                true
            };
            let mut client_addrs = vec![loopback];
            // A server also serves the HTTP API of nodes without a local
            // Consul (the seed's ams2-server-03 and clients).
            if server && !client_addrs.contains(&addrs.private) {
                client_addrs.push(addrs.private);
            }
            let mut retry_join = role.discovery.consul_retry_join.clone();
            retry_join.extend(role.discovery.cloud_auto_join.iter().cloned());
            let retry_join = merged(&retry_join, &peers.consul_lan);
            render.consul = Some(ConsulConfig {
                file: config_dir.join(CONSUL_CONFIG_FILE),
                owner: role.consul.user.clone(),
                datacenter: role.datacenter.clone(),
                node_name: role.node_name.clone(),
                data_dir: data_dir.clone(),
                log_level: log_level.clone(),
                server,
                bootstrap_expect: server.then_some(role.consul.bootstrap_expect),
                bind_addr: addrs.bind,
                advertise_addr: addrs.private,
                advertise_addr_wan: if server { addrs.public } else { None },
                client_addrs,
                retry_join,
                retry_join_wan: if server {
                    merged(&role.discovery.consul_retry_join_wan, &peers.consul_wan)
                } else {
                    Vec::new()
                },
                ui: role.consul.ui,
                encrypt: match material {
                    Some(m) => Some(m.secrets.consul_gossip_key.clone()),
                    None => role.consul.encrypt.as_ref().map(|k| k.key.clone()),
                },
                tls: match material {
                    Some(m) => Some(TlsFiles {
                        ca_file: m.ca_file.clone(),
                        cert_file: m.cert_file.clone(),
                        key_file: m.consul_key_file.clone(),
                    }),
                    None => role.consul.tls.clone(),
                },
                https_port: material.map(|_| consul_http_port),
                acl: material
                    .filter(|m| m.secrets.acl_enabled)
                    .map(|m| consul_acl(m, server, &role.datacenter)),
                leave_on_terminate: leave,
                skip_leave_on_interrupt: !leave,
                extra: role.consul.extra.clone(),
            });
            agents.push(AgentPlan {
                product: Product::Consul,
                version: role.consul.version.clone(),
                server,
                client: !server,
                user: role.consul.user.clone(),
                binary: binary_path(&releases_dir, Product::Consul),
                args: vec![
                    "agent".to_string(),
                    format!("-config-dir={}", config_dir.display()),
                ],
                config_dir,
                data_dir,
                stop_signal: CONSUL_STOP_SIGNAL,
                // A leave may take Consul's full leave timeout.
                stop_timeout: role
                    .consul
                    .stop_timeout
                    .unwrap_or(CONSUL_LEAVE_TIMEOUT + STOP_MARGIN),
                restart: role.consul.restart.clone(),
                http_addr: SocketAddr::new(loopback, consul_http_port),
                // Without the cluster's material Consul's HTTP port stays
                // plain (hand-written TLS covers its RPC). With it, the API
                // is HTTPS with client certificates: the node certificate
                // carries `localhost`, which the client resolves to
                // `http_addr`.
                api_tls: material.map(|m| ApiTls {
                    ca_file: m.ca_file.clone(),
                    server_name: CONSUL_API_SERVER_NAME.to_string(),
                    client_cert: Some(ClientCert {
                        cert_file: m.cert_file.clone(),
                        key_file: m.key_file.clone(),
                    }),
                    token: m.secrets.acl.consul_supervisor.clone(),
                }),
            });
        }

        if roles.is_nomad() {
            let server = roles.nomad_server;
            let client = roles.nomad_client;
            let config_dir = role.config_dir.join("nomad.d");
            let data_dir = data_root.join("nomad");
            let leave = if server {
                role.nomad.leave_on_stop
            } else {
                true
            };
            let user = role.nomad.user.as_str();
            let advertise = match role.nomad.advertise {
                crate::role::AdvertiseScope::Public => addrs.public.unwrap_or(addrs.private),
                crate::role::AdvertiseScope::Private => addrs.private,
            };
            let consul_address = if roles.is_consul() {
                Some(SocketAddr::new(loopback, consul_http_port).to_string())
            } else {
                let chosen = peers
                    .consul_http
                    .clone()
                    .or_else(|| role.discovery.consul_address.clone());
                // A secured Consul serves its API on the HTTPS port only.
                match material {
                    Some(_) => chosen.map(|a| with_https_port(&a)),
                    None => chosen,
                }
            };
            // A drain only happens on a leave: the default applies to a
            // client that leaves when stopped.
            let drain_deadline = match (client, role.nomad.drain_deadline) {
                (false, _) => None,
                (true, Some(d)) => Some(d),
                (true, None) => leave.then_some(DEFAULT_DRAIN_DEADLINE),
            };
            render.nomad = Some(NomadConfig {
                file: config_dir.join(NOMAD_CONFIG_FILE),
                owner: user.to_string(),
                region: role.region.clone(),
                datacenter: role.datacenter.clone(),
                name: role.node_name.clone(),
                data_dir: data_dir.clone(),
                log_level,
                bind_addr: addrs.bind,
                advertise,
                advertise_http: addrs.private,
                server,
                bootstrap_expect: server.then_some(role.nomad.bootstrap_expect),
                encrypt: match (server, material) {
                    (false, _) => None,
                    (true, Some(m)) => Some(m.secrets.nomad_gossip_key.clone()),
                    (true, None) => role.nomad.encrypt.as_ref().map(|k| k.key.clone()),
                },
                client,
                retry_join: merged(&role.discovery.nomad_retry_join, &peers.nomad_servers),
                consul_address,
                consul_tls: material.map(|m| TlsFiles {
                    ca_file: m.ca_file.clone(),
                    cert_file: m.cert_file.clone(),
                    key_file: m.nomad_key_file.clone(),
                }),
                consul_token: material.and_then(|m| m.secrets.acl.nomad_consul.clone()),
                acl: material.is_some_and(|m| m.secrets.acl_enabled),
                tls: match material {
                    Some(m) => Some(TlsFiles {
                        ca_file: m.ca_file.clone(),
                        cert_file: m.cert_file.clone(),
                        key_file: m.nomad_key_file.clone(),
                    }),
                    None => role.nomad.tls.clone(),
                },
                tls_http: material.is_some() || role.nomad.tls_http,
                // SIGTERM: a restart, which must keep the workloads.
                leave_on_terminate: false,
                leave_on_interrupt: leave,
                drain_deadline,
                extra: role.nomad.extra.clone(),
            });
            // Nomad's own graceful timeout plus the drain deadline it adds.
            let own = NOMAD_GRACEFUL_TIMEOUT.saturating_add(drain_deadline.unwrap_or_default());
            let http_ip = if addrs.bind.is_unspecified() {
                loopback
            } else {
                addrs.bind
            };
            agents.push(AgentPlan {
                product: Product::Nomad,
                version: role.nomad.version.clone(),
                server,
                client,
                user: user.to_string(),
                binary: binary_path(&releases_dir, Product::Nomad),
                args: vec![
                    "agent".to_string(),
                    format!("-config={}", config_dir.display()),
                ],
                config_dir,
                data_dir,
                stop_signal: NOMAD_STOP_SIGNAL,
                stop_timeout: role
                    .nomad
                    .stop_timeout
                    .unwrap_or(own.saturating_add(STOP_MARGIN)),
                restart: role.nomad.restart.clone(),
                http_addr: SocketAddr::new(
                    http_ip,
                    extra_http_port(&role.nomad.extra).unwrap_or(NOMAD_HTTP_PORT),
                ),
                api_tls: match &role.nomad.tls {
                    _ if material.is_some() => material.map(|m| ApiTls {
                        ca_file: m.ca_file.clone(),
                        server_name: nomad_server_name(server, &role.region),
                        client_cert: Some(ClientCert {
                            cert_file: m.cert_file.clone(),
                            key_file: m.key_file.clone(),
                        }),
                        token: m.secrets.acl.nomad_supervisor.clone(),
                    }),
                    Some(t) if role.nomad.tls_http => Some(ApiTls {
                        ca_file: t.ca_file.clone(),
                        server_name: nomad_server_name(server, &role.region),
                        client_cert: None,
                        token: None,
                    }),
                    _ => None,
                },
            });
        }

        Plan {
            node_name: role.node_name.clone(),
            region: role.region.clone(),
            datacenter: role.datacenter.clone(),
            roles: role.role_names.clone(),
            agents,
            release: ReleasePlan {
                mirror: role.release.mirror.clone(),
                trust_hashicorp_key: role.release.trust_hashicorp_key,
                extra_trusted_keys: role.release.trusted_key_files.clone(),
                releases_dir,
                keep_versions: role.release.keep_versions,
                max_download_bytes: role.release.max_download_bytes,
            },
            health_listen: role.health_listen,
            state_dir: role.state_dir.clone(),
            config_dir: role.config_dir.clone(),
            render,
        }
    }

    /// The agent of a product, if the plan runs it.
    pub fn agent(&self, product: Product) -> Option<&AgentPlan> {
        self.agents.iter().find(|a| a.product == product)
    }
}

/// The name the supervisor checks Consul's HTTPS API certificate for: the
/// node certificate carries `localhost` (and 127.0.0.1) whatever the node's
/// Consul role, so the check survives a datacenter learned after the join.
pub const CONSUL_API_SERVER_NAME: &str = "localhost";

/// The name Nomad's certificates carry for its role (`nomad tls cert
/// create`; `security::names` gives a node the same).
fn nomad_server_name(server: bool, region: &str) -> String {
    format!(
        "{}.{region}.nomad",
        if server { "server" } else { "client" }
    )
}

/// Consul's ACL settings for a node with the cluster's material: the agent
/// token everywhere, the initial management token where it was made (the
/// init node), the replication token on servers outside the primary
/// datacenter (Consul's ACL replication).
fn consul_acl(m: &crate::role::security::NodeMaterial, server: bool, dc: &str) -> ConsulAcl {
    let t = &m.secrets.acl;
    let primary = &m.secrets.primary_datacenter;
    ConsulAcl {
        primary_datacenter: primary.clone(),
        agent: t.consul_agent.clone(),
        initial_management: t.consul_initial_management.clone(),
        replication: if server && dc != primary {
            t.consul_replication.clone()
        } else {
            None
        },
    }
}

/// `addr` (`host` or `host:port`, the Consul server discovery or the role
/// file chose) on Consul's HTTPS port when it named the HTTP port or none.
fn with_https_port(addr: &str) -> String {
    let https = crate::paths::CONSUL_HTTPS_PORT;
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return if sa.port() == CONSUL_HTTP_PORT {
            SocketAddr::new(sa.ip(), https).to_string()
        } else {
            addr.to_string()
        };
    }
    if let Ok(ip) = addr.parse::<IpAddr>() {
        return SocketAddr::new(ip, https).to_string();
    }
    match addr.rsplit_once(':') {
        Some((host, port)) if port == CONSUL_HTTP_PORT.to_string() => format!("{host}:{https}"),
        Some(_) => addr.to_string(),
        None => format!("{addr}:{https}"),
    }
}

/// [`with_https_port`], for the render tests.
#[cfg(test)]
pub(crate) fn with_https_port_for_tests(addr: &str) -> String {
    with_https_port(addr)
}

/// `<releases>/<product>/current/<product>`.
/// The HTTP port an `[<product>.extra]` table sets (`ports.http`), if any:
/// the agent listens there, so its checks must go there too.
fn extra_http_port(extra: &toml::Table) -> Option<u16> {
    extra_port(extra, "http")
}

/// `ports.<name>` of an `[<product>.extra]` table, if a port.
fn extra_port(extra: &toml::Table, name: &str) -> Option<u16> {
    extra
        .get("ports")?
        .as_table()?
        .get(name)?
        .as_integer()
        .and_then(|p| u16::try_from(p).ok())
}

fn binary_path(releases_dir: &Path, product: Product) -> PathBuf {
    releases_dir
        .join(product.as_str())
        .join("current")
        .join(product.as_str())
}

fn ser_display<T: std::fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn ser_signal<S: serde::Serializer>(v: &Signal, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::role::{self, StaticHost};

    fn plan(text: &str, roles: &[&str]) -> Plan {
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        let mut host = StaticHost {
            hostname: Some("h".into()),
            interfaces: vec![("eth1".into(), Ipv4Addr::new(10, 0, 1, 5))],
            ..StaticHost::default()
        };
        for f in ["/t/ca.pem", "/t/c.pem", "/t/k.pem"] {
            host.files.insert(f.into(), "pem".into());
        }
        let role = role::parse(
            Path::new("/r/node.toml"),
            &role::with_plaintext(text),
            &roles,
            &host,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        Plan::from_role(&role)
    }

    const BASE: &str = "schema = 1\n[discovery]\nnomad_retry_join = [\"10.0.1.6\"]\n";

    fn role_of(text: &str, roles: &[&str]) -> NodeRole {
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        let host = StaticHost {
            hostname: Some("h".into()),
            interfaces: vec![("eth1".into(), Ipv4Addr::new(10, 0, 1, 5))],
            ..StaticHost::default()
        };
        role::parse(
            Path::new("/r/node.toml"),
            &role::with_plaintext(text),
            &roles,
            &host,
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn discovered_peers_follow_the_static_lists_without_repeats() {
        let text = "schema = 1\n[discovery]\nconsul_retry_join = [\"10.0.1.6\"]\nconsul_retry_join_wan = [\"203.0.113.21\"]\nnomad_retry_join = [\"10.0.1.7\"]\n";
        let role = role_of(text, &["consul-server", "nomad-server"]);
        let peers = Peers {
            consul_lan: vec!["10.0.1.6".into(), "10.0.1.8".into()],
            consul_wan: vec!["203.0.113.22".into()],
            consul_http: Some("10.0.1.9:8500".into()),
            nomad_servers: vec!["10.0.1.7".into(), "10.0.1.10".into()],
        };
        let p = Plan::build(&role, &peers);
        let c = p.render.consul.as_ref().unwrap();
        assert_eq!(c.retry_join, ["10.0.1.6", "10.0.1.8"]);
        assert_eq!(c.retry_join_wan, ["203.0.113.21", "203.0.113.22"]);
        let n = p.render.nomad.as_ref().unwrap();
        assert_eq!(n.retry_join, ["10.0.1.7", "10.0.1.10"]);
        // A local Consul always wins over a discovered one.
        assert_eq!(n.consul_address.as_deref(), Some("127.0.0.1:8500"));
        assert_eq!(
            Plan::from_role(&role),
            Plan::build(&role, &Peers::default())
        );
    }

    #[test]
    fn a_discovered_consul_replaces_the_written_address_of_a_nomad_without_consul() {
        let text = "schema = 1\n[discovery]\nconsul_address = \"10.0.1.11\"\n";
        let role = role_of(text, &["nomad-client"]);
        let n = |peers: &Peers| {
            Plan::build(&role, peers)
                .render
                .nomad
                .unwrap()
                .consul_address
        };
        assert_eq!(n(&Peers::default()).as_deref(), Some("10.0.1.11:8500"));
        let found = Peers {
            consul_http: Some("10.0.1.12:8500".into()),
            ..Peers::default()
        };
        assert_eq!(n(&found).as_deref(), Some("10.0.1.12:8500"));
        assert!(Peers::default().is_empty() && !found.is_empty());
    }

    #[test]
    fn only_unwritten_identity_is_learned() {
        let mut role = role_of(
            "schema = 1\nregion = \"eu\"\n[discovery]\nconsul_address = \"x\"\n",
            &["nomad-client"],
        );
        assert!(!role.learnable.region && role.learnable.datacenter);
        assert!(role.learn(Some("us"), Some("ams2")));
        assert_eq!(
            (role.region.as_str(), role.datacenter.as_str()),
            ("eu", "ams2")
        );
        assert!(
            !role.learn(Some("us"), Some("ams2")),
            "nothing new the second time"
        );
    }

    #[test]
    fn providers_alone_put_nothing_in_the_plan_only_what_they_find_does() {
        // DNS names and mDNS are for discovery to resolve: never rendered
        // as they are (a name in retry_join would be resolved by Consul
        // once, at its start, and never again).
        let plain = "schema = 1\n[discovery]\nmdns = false\nconsul_retry_join = [\"10.0.1.6\"]\n";
        let with_providers = "schema = 1\n[discovery]\nconsul_retry_join = [\"10.0.1.6\"]\n\
            [discovery.dns]\nnameserver = \"10.0.1.1\"\n\
            consul_servers = [\"_consul-server._tcp.ams2.eu.hashi.test\"]\n\
            consul_wan = [\"consul-wan.eu.hashi.test\"]\nnomad_servers = [\"nomad.eu.hashi.test\"]\n";
        let roles = ["consul-server", "nomad-server"];
        let a = role_of(plain, &roles);
        let b = role_of(with_providers, &roles);
        assert!(!a.discovery.mdns && b.discovery.mdns && b.discovery.dns.is_some());
        assert_eq!(Plan::from_role(&a), Plan::from_role(&b));
        let found = Peers {
            consul_lan: vec!["10.0.1.12".into()],
            consul_wan: vec!["203.0.113.21".into()],
            consul_http: None,
            nomad_servers: vec!["10.0.1.13".into()],
        };
        let p = Plan::build(&b, &found);
        let c = p.render.consul.as_ref().unwrap();
        assert_eq!(c.retry_join, ["10.0.1.6", "10.0.1.12"]);
        assert_eq!(c.retry_join_wan, ["203.0.113.21"]);
        assert_eq!(p.render.nomad.as_ref().unwrap().retry_join, ["10.0.1.13"]);
    }

    #[test]
    fn consul_starts_before_nomad() {
        let p = plan(BASE, &["nomad-client", "consul-client"]);
        let order: Vec<Product> = p.agents.iter().map(|a| a.product).collect();
        assert_eq!(order, vec![Product::Consul, Product::Nomad]);
    }

    #[test]
    fn users_follow_the_roles() {
        let p = plan(BASE, &["consul-server", "nomad-server"]);
        assert_eq!(p.agent(Product::Consul).unwrap().user, "consul");
        assert_eq!(p.agent(Product::Nomad).unwrap().user, "nomad");
        let p = plan(BASE, &["nomad-server", "nomad-client"]);
        assert_eq!(p.agent(Product::Nomad).unwrap().user, "root");
    }

    #[test]
    fn servers_keep_membership_and_clients_leave_by_default() {
        let p = plan(BASE, &["consul-server", "nomad-server"]);
        let c = p.render.consul.as_ref().unwrap();
        let n = p.render.nomad.as_ref().unwrap();
        assert!(!c.leave_on_terminate && c.skip_leave_on_interrupt);
        assert!(!n.leave_on_terminate && !n.leave_on_interrupt);
        let p = plan(BASE, &["consul-client", "nomad-client"]);
        let c = p.render.consul.as_ref().unwrap();
        let n = p.render.nomad.as_ref().unwrap();
        assert!(c.leave_on_terminate && !c.skip_leave_on_interrupt);
        // Nomad leaves on its stop signal only: SIGTERM keeps workloads.
        assert!(!n.leave_on_terminate && n.leave_on_interrupt);
        assert_eq!(NOMAD_STOP_SIGNAL, Signal::SIGINT);
        assert_eq!(NOMAD_KEEP_WORKLOADS_SIGNAL, Signal::SIGTERM);
    }

    #[test]
    fn a_leaving_nomad_client_drains_60s_by_default() {
        let p = plan(BASE, &["consul-client", "nomad-client"]);
        let n = p.render.nomad.as_ref().unwrap();
        assert_eq!(n.drain_deadline, Some(DEFAULT_DRAIN_DEADLINE));
        assert_eq!(DEFAULT_DRAIN_DEADLINE, Duration::from_secs(60));
        let nomad = p.agent(Product::Nomad).unwrap();
        assert!(nomad.stop_timeout > NOMAD_GRACEFUL_TIMEOUT + DEFAULT_DRAIN_DEADLINE);
        let text = format!("{BASE}[nomad]\ndrain_deadline_secs = 15\n");
        let p = plan(&text, &["nomad-client"]);
        let n = p.render.nomad.as_ref().unwrap();
        assert_eq!(n.drain_deadline, Some(Duration::from_secs(15)));
        // A server that keeps its membership never leaves, so never drains.
        let p = plan(BASE, &["nomad-server", "nomad-client"]);
        assert_eq!(p.render.nomad.as_ref().unwrap().drain_deadline, None);
        let p = plan(BASE, &["nomad-server"]);
        assert_eq!(p.render.nomad.as_ref().unwrap().drain_deadline, None);
    }

    #[test]
    fn servers_told_to_leave_do_leave() {
        let text = "schema = 1\n[consul]\nleave_on_stop = true\n[nomad]\nleave_on_stop = true\n";
        let p = plan(text, &["consul-server", "nomad-server"]);
        assert!(p.render.consul.as_ref().unwrap().leave_on_terminate);
        assert!(p.render.nomad.as_ref().unwrap().leave_on_interrupt);
    }

    #[test]
    fn default_stop_timeouts_outlast_the_agents_own_leave_timeouts() {
        let text = "schema = 1\n[nomad]\ndrain_deadline_secs = 60\n";
        let p = plan(text, &["consul-client", "nomad-client"]);
        let consul = p.agent(Product::Consul).unwrap();
        let nomad = p.agent(Product::Nomad).unwrap();
        assert!(consul.stop_timeout > CONSUL_LEAVE_TIMEOUT);
        assert_eq!(consul.stop_signal, Signal::SIGTERM);
        assert!(nomad.stop_timeout > NOMAD_GRACEFUL_TIMEOUT + Duration::from_secs(60));
        assert_eq!(nomad.stop_signal, Signal::SIGINT);
        let text = "schema = 1\n[consul]\nstop_timeout_secs = 7\n";
        let p = plan(text, &["consul-client"]);
        assert_eq!(p.agents[0].stop_timeout, Duration::from_secs(7));
    }

    #[test]
    fn paths_follow_config_and_state_dirs() {
        let text = "schema = 1\n[paths]\nconfig_dir = \"/c\"\nstate_dir = \"/s\"\n";
        let p = plan(text, &["consul-client", "nomad-client"]);
        let c = &p.agents[0];
        assert_eq!(c.binary, Path::new("/s/releases/consul/current/consul"));
        assert_eq!(c.args, vec!["agent", "-config-dir=/c/consul.d"]);
        assert_eq!(c.data_dir, Path::new("/s/data/consul"));
        assert_eq!(p.agents[1].args, vec!["agent", "-config=/c/nomad.d"]);
        assert_eq!(p.release.releases_dir, Path::new("/s/releases"));
        assert_eq!(
            p.render.nomad.as_ref().unwrap().file,
            Path::new("/c/nomad.d/nomad.hcl")
        );
    }

    #[test]
    fn nomad_http_is_reached_on_loopback_when_bound_to_all_addresses() {
        let p = plan(BASE, &["nomad-server"]);
        assert_eq!(p.agents[0].http_addr.to_string(), "127.0.0.1:4646");
        let text = "schema = 1\n[addresses]\nbind = \"10.0.1.5\"\n[discovery]\nnomad_retry_join = [\"x\"]\n";
        let p = plan(text, &["nomad-server"]);
        assert_eq!(p.agents[0].http_addr.to_string(), "10.0.1.5:4646");
    }

    #[test]
    fn http_ports_moved_by_extra_are_where_checks_and_nomad_go() {
        let text =
            "schema = 1\n[consul.extra.ports]\nhttp = 18500\n[nomad.extra.ports]\nhttp = 14646\n";
        let p = plan(text, &["consul-server", "nomad-server"]);
        assert_eq!(p.agents[0].http_addr.to_string(), "127.0.0.1:18500");
        assert_eq!(p.agents[1].http_addr.to_string(), "127.0.0.1:14646");
        assert_eq!(
            p.render.nomad.as_ref().unwrap().consul_address.as_deref(),
            Some("127.0.0.1:18500")
        );
    }

    #[test]
    fn nomads_https_api_is_checked_with_the_cluster_ca_under_the_role_name() {
        let tls = "[nomad.tls]\nca_file = \"/t/ca.pem\"\ncert_file = \"/t/c.pem\"\nkey_file = \"/t/k.pem\"\n";
        let text = format!(
            "schema = 1\nregion = \"eu\"\n[discovery]\nnomad_retry_join = [\"x\"]\n{tls}http = true\n"
        );
        let p = plan(&text, &["consul-server", "nomad-server"]);
        assert_eq!(p.agents[0].api_tls, None, "Consul's HTTP port stays plain");
        assert_eq!(
            p.agents[1].api_tls,
            Some(ApiTls {
                ca_file: "/t/ca.pem".into(),
                server_name: "server.eu.nomad".into(),
                client_cert: None,
                token: None,
            })
        );
        let p = plan(&text, &["nomad-client"]);
        assert_eq!(
            p.agents[0].api_tls.as_ref().map(|t| t.server_name.as_str()),
            Some("client.eu.nomad")
        );
        // TLS for RPC only: the HTTP API stays plain.
        let text = format!("schema = 1\n[discovery]\nnomad_retry_join = [\"x\"]\n{tls}");
        assert_eq!(plan(&text, &["nomad-server"]).agents[0].api_tls, None);
    }

    /// The agents' users as the host has them (moved from `role::host`'s
    /// tests: they check the plan a role gives, so they live with the plan
    /// and `role` needs no import of a later stage).
    mod users {
        use std::net::Ipv4Addr;
        use std::path::Path;

        use crate::plan::Plan;
        use crate::role::{RoleError, StaticHost, parse};
        use crate::vocab::Product;

        const SERVER: &str = "schema = 1\nroles = [\"consul-server\", \"nomad-server\"]\nnode_name = \"ams2-server-01\"\ndatacenter = \"ams2\"\n[addresses]\nprivate = \"10.0.1.11\"\n";

        fn host(root: bool, users: &[&str]) -> StaticHost {
            StaticHost {
                hostname: Some("ams2-server-01".into()),
                interfaces: vec![("eth1".into(), Ipv4Addr::new(10, 0, 1, 11))],
                root,
                users: users.iter().map(|u| u.to_string()).collect(),
                ..StaticHost::default()
            }
        }

        fn load(text: &str, host: &StaticHost) -> Result<Plan, String> {
            parse(
                Path::new("/etc/hashi-supervisor/node.toml"),
                &crate::role::with_plaintext(text),
                &[],
                host,
            )
            .map(|r| Plan::from_role(&r))
            .map_err(|e: RoleError| e.to_string())
        }

        #[test]
        fn as_root_a_missing_default_user_is_refused_with_how_to_create_it() {
            let err = load(SERVER, &host(true, &["nomad"])).unwrap_err();
            assert!(
                err.contains(
                    "/etc/hashi-supervisor/node.toml: consul runs as user `consul`, which does not exist on this host: \
                     create it with `useradd --system --user-group --home-dir /var/lib/hashi-supervisor --shell /usr/sbin/nologin consul`"
                ),
                "{err}"
            );
            assert!(!err.contains("nomad runs as"), "{err}");
        }

        #[test]
        fn as_root_a_missing_explicit_user_is_refused_at_its_line() {
            let text = format!("{SERVER}[nomad]\nuser = \"hashi-nobody\"\n");
            let err = load(&text, &host(true, &["consul", "nomad"])).unwrap_err();
            assert!(
                err.contains(
                    "node.toml:8:8: nomad runs as user `hashi-nobody`, which does not exist"
                ),
                "{err}"
            );
        }

        #[test]
        fn an_explicit_user_replaces_the_default_and_owns_the_config() {
            let text = format!("{SERVER}[consul]\nuser = \"root\"\n[nomad]\nuser = \"root\"\n");
            let plan = load(&text, &host(true, &["root"])).unwrap();
            for p in [Product::Consul, Product::Nomad] {
                assert_eq!(plan.agent(p).unwrap().user, "root");
            }
            assert_eq!(plan.render.consul.unwrap().owner, "root");
            assert_eq!(plan.render.nomad.unwrap().owner, "root");
        }

        #[test]
        fn not_root_the_users_are_not_required() {
            let plan = load(SERVER, &host(false, &[])).unwrap();
            assert_eq!(plan.agent(Product::Consul).unwrap().user, "consul");
            assert_eq!(plan.agent(Product::Nomad).unwrap().user, "nomad");
        }

        #[test]
        fn a_user_name_that_is_not_one_is_refused() {
            let text = format!("{SERVER}[consul]\nuser = \"-rf /\"\n");
            let err = load(&text, &host(false, &[])).unwrap_err();
            assert!(
                err.contains("`consul.user` must be a Unix user name"),
                "{err}"
            );
        }
    }
}

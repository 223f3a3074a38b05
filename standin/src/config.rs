//! Config loading of the stand-in, following agent-facts.md §3: the files of
//! a directory (not recursive, `.json`/`.hcl`, sorted by name) or single
//! files, merged the way the real agent merges them, checked against a table
//! of known keys and types (unknown top-level keys and wrong types refused),
//! then reduced to the few settings the stand-in acts on.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::Product;

/// Config error; the text follows the real agents' wording where known.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Consul default ports (agent-facts §6).
pub const DEFAULT_CONSUL_HTTP_PORT: u16 = 8500;
pub const DEFAULT_CONSUL_SERVER_PORT: u16 = 8300;
pub const DEFAULT_CONSUL_SERF_LAN_PORT: u16 = 8301;
pub const DEFAULT_CONSUL_SERF_WAN_PORT: u16 = 8302;
/// Nomad default ports (agent-facts §6).
pub const DEFAULT_NOMAD_HTTP_PORT: u16 = 4646;
pub const DEFAULT_NOMAD_RPC_PORT: u16 = 4647;
pub const DEFAULT_NOMAD_SERF_PORT: u16 = 4648;

/// What the stand-in acts on, reduced from the merged config.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub product: Product,
    pub node_name: String,
    /// Consul datacenter / Nomad datacenter.
    pub datacenter: String,
    /// Nomad region (Consul: unused, "global").
    pub region: String,
    pub server: bool,
    /// Nomad `client.enabled`; Consul: `!server`.
    pub client: bool,
    pub bootstrap_expect: u64,
    pub http_ip: String,
    /// Further HTTP addresses (Consul's `client_addr` may list several,
    /// space-separated; the agent listens on each).
    pub http_extra_ips: Vec<String>,
    pub http_port: u16,
    /// Address advertised to peers (member Addr).
    pub advertise_ip: String,
    /// Bind address of the gossip listeners.
    pub bind_ip: String,
    /// Consul serf_lan / Nomad serf (servers).
    pub serf_port: u16,
    /// Consul serf_wan (servers only).
    pub serf_wan_port: u16,
    /// Consul server RPC / Nomad RPC.
    pub rpc_port: u16,
    pub retry_join: Vec<String>,
    pub retry_join_wan: Vec<String>,
    /// Consul `leave_on_terminate` / Nomad `leave_on_terminate`.
    pub leave_on_terminate: bool,
    /// Whether SIGINT leaves (Consul `!skip_leave_on_interrupt`, Nomad `leave_on_interrupt`).
    pub leave_on_interrupt: bool,
    pub enable_script_checks: bool,
    pub log_level: String,
    /// `data_dir` ("" when unset; `agent` refuses that like the real ones).
    pub data_dir: String,
    /// Nomad `consul {}` block (agent-facts §5 defaults).
    pub consul: NomadConsul,
    /// Files read, in merge order.
    pub files: Vec<PathBuf>,
    /// Whether the main API listener (`http_port`) speaks TLS: Nomad
    /// `tls.http`, or Consul with `ports.http = -1` and `ports.https` set.
    pub http_tls: bool,
    /// Consul: `ports.https` served beside a plain `ports.http`.
    pub https_extra_port: Option<u16>,
    /// Consul `ports.http <= 0` and `ports.https <= 0`: no API listener.
    pub api_disabled: bool,
    /// TLS files and verification settings, when TLS files are configured.
    pub tls: Option<TlsSettings>,
    /// Decoded gossip key (Consul `encrypt`, Nomad `server.encrypt`).
    pub gossip_key: Option<GossipKey>,
    /// ACL settings (Consul `acl {}`, `primary_datacenter`; Nomad `acl {}`).
    pub acl: AclSettings,
}

/// A decoded gossip key; Debug never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct GossipKey(pub Vec<u8>);

impl std::fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GossipKey(<redacted>)")
    }
}

/// A token from the config; Debug never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretText(pub String);

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// TLS settings of an agent (Consul `tls.defaults` / `tls.https` /
/// `tls.internal_rpc` and the legacy top-level keys; Nomad `tls {}`).
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Client certificates required on the HTTPS API (Consul
    /// `verify_incoming` for https, Nomad `verify_https_client`).
    pub verify_incoming_https: bool,
    /// Client certificates required on the RPC port (Consul
    /// `verify_incoming` for internal_rpc; Nomad: always with `tls.rpc`).
    pub verify_incoming_rpc: bool,
    /// Outgoing RPC over TLS (Consul `verify_outgoing`, Nomad `tls.rpc`).
    pub rpc: bool,
    /// Peers' certificates must carry the role name (`server.<dc>.consul`,
    /// `server.<region>.nomad`).
    pub verify_server_hostname: bool,
}

/// ACL settings the stand-in acts on.
#[derive(Debug, Clone, Default)]
pub struct AclSettings {
    pub enabled: bool,
    /// `default_policy = "deny"` (Consul; Nomad always denies).
    pub default_deny: bool,
    /// Consul `acl.tokens.initial_management` (or legacy `master`).
    pub initial_management: Option<SecretText>,
    /// Consul `acl.tokens.agent`: the token of the agent's own calls.
    pub agent_token: Option<SecretText>,
    /// Consul `primary_datacenter` (default: own datacenter).
    pub primary_datacenter: String,
    /// Consul `acl.enable_token_replication` (a server outside the primary
    /// datacenter keeps a copy of the global tokens and the policies).
    pub token_replication: bool,
    /// Consul `acl.tokens.replication`: the token it replicates with.
    pub replication_token: Option<SecretText>,
}

/// Nomad's `consul {}` TLS and token settings.
#[derive(Debug, Clone, Default)]
pub struct ConsulClientTls {
    pub ssl: bool,
    pub verify_ssl: bool,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// Nomad's default Consul address (consul/api DefaultConfig, agent-facts §5).
pub const DEFAULT_NOMAD_CONSUL_ADDRESS: &str = "localhost:8500";

/// Nomad's `consul {}` settings the stand-in acts on.
#[derive(Debug, Clone)]
pub struct NomadConsul {
    pub address: String,
    pub auto_advertise: bool,
    pub server_auto_join: bool,
    pub client_auto_join: bool,
    pub server_service_name: String,
    pub client_service_name: String,
    /// `consul.token` (sent as `X-Consul-Token`).
    pub token: Option<SecretText>,
    pub tls: ConsulClientTls,
}

impl Default for NomadConsul {
    fn default() -> Self {
        NomadConsul {
            address: DEFAULT_NOMAD_CONSUL_ADDRESS.to_string(),
            auto_advertise: true,
            server_auto_join: true,
            client_auto_join: true,
            server_service_name: "nomad".to_string(),
            client_service_name: "nomad-client".to_string(),
            token: None,
            tls: ConsulClientTls {
                verify_ssl: true,
                ..ConsulClientTls::default()
            },
        }
    }
}

/// Load and check every config source, then reduce it.
pub fn load(product: Product, sources: &[PathBuf]) -> Result<AgentConfig, ConfigError> {
    let mut merged = Value::Object(Map::new());
    let mut files = Vec::new();
    for src in sources {
        // Nomad names the -config argument that failed (LoadConfig caller).
        let wrap = |e: ConfigError| match product {
            Product::Consul => e,
            Product::Nomad => ConfigError(format!(
                "Error loading configuration from {}: {}",
                src.display(),
                e.0
            )),
        };
        for file in expand(product, src).map_err(wrap)? {
            let v = read_file(product, &file).map_err(wrap)?;
            check_keys(product, &file, &v).map_err(wrap)?;
            merge(product, &mut merged, v, "");
            files.push(file);
        }
    }
    reduce(product, &merged, files)
}

/// Files of one `-config-dir`/`-config` argument, in merge order.
fn expand(product: Product, src: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let meta = std::fs::metadata(src)
        .map_err(|e| ConfigError(format!("Error loading {}: {e}", src.display())))?;
    if !meta.is_dir() {
        if product == Product::Consul && !has_config_ext(src) {
            return Err(ConfigError(format!(
                "file {:?} has unknown extension; must be .hcl or .json, or config format must be set",
                src.display().to_string()
            )));
        }
        return Ok(vec![src.to_path_buf()]);
    }
    let rd = std::fs::read_dir(src)
        .map_err(|e| ConfigError(format!("Error loading {}: {e}", src.display())))?;
    let mut out = Vec::new();
    for ent in rd.flatten() {
        let p = ent.path();
        let name = ent.file_name().to_string_lossy().into_owned();
        // Nomad skips editor temp files (config.go LoadConfigDir).
        if product == Product::Nomad
            && (name.ends_with('~') || name.starts_with(".#") || name.starts_with('#'))
        {
            continue;
        }
        // Directories (also through symlinks) are skipped: not recursive.
        if std::fs::metadata(&p).map(|m| m.is_dir()).unwrap_or(true) {
            continue;
        }
        if !has_config_ext(&p) {
            if product == Product::Consul {
                crate::events::log_err(&format!(
                    "    [WARN] agent: skipping file {}, extension must be .hcl or .json, or config format must be set",
                    p.display()
                ));
            }
            continue;
        }
        out.push(p);
    }
    out.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(out)
}

fn has_config_ext(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("json") | Some("hcl")
    )
}

fn read_file(product: Product, file: &Path) -> Result<Value, ConfigError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| ConfigError(format!("failed to parse {}: {e}", file.display())))?;
    let is_json = match product {
        // Consul picks the parser by extension.
        Product::Consul => file.extension().and_then(|e| e.to_str()) == Some("json"),
        // Nomad's HCL1 detects JSON by itself.
        Product::Nomad => text.trim_start().starts_with('{'),
    };
    let v = if is_json {
        serde_json::from_str::<Value>(&text)
            .map_err(|e| ConfigError(format!("failed to parse {}: {e}", file.display())))?
    } else {
        crate::hcl::parse(&text)
            .map_err(|e| ConfigError(format!("failed to parse {}: {e}", file.display())))?
    };
    if !v.is_object() {
        return Err(ConfigError(format!(
            "failed to parse {}: config must be an object",
            file.display()
        )));
    }
    Ok(v)
}

/// Types of the keys the stand-in checks.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Ty {
    Str,
    Int,
    Bool,
    StrList,
    /// An object whose inner keys are not checked.
    Obj,
    /// An object whose inner keys are checked with the given table.
    Table(&'static [(&'static str, Ty)]),
    /// Anything (lists of objects, objects, ...).
    Any,
}

use Ty::*;

const CONSUL_PORTS: &[(&str, Ty)] = &[
    ("dns", Int),
    ("http", Int),
    ("https", Int),
    ("grpc", Int),
    ("grpc_tls", Int),
    ("serf_lan", Int),
    ("serf_wan", Int),
    ("server", Int),
    ("sidecar_min_port", Int),
    ("sidecar_max_port", Int),
    ("expose_min_port", Int),
    ("expose_max_port", Int),
    ("proxy_min_port", Int),
    ("proxy_max_port", Int),
];

const CONSUL_ADDRESSES: &[(&str, Ty)] = &[
    ("dns", Str),
    ("http", Str),
    ("https", Str),
    ("grpc", Str),
    ("grpc_tls", Str),
];

/// Consul `tls.defaults`, `tls.https`, `tls.grpc` (agent config reference,
/// "TLS Configuration Reference").
const CONSUL_TLS_PROTOCOL: &[(&str, Ty)] = &[
    ("ca_file", Str),
    ("ca_path", Str),
    ("cert_file", Str),
    ("key_file", Str),
    ("tls_min_version", Str),
    ("tls_cipher_suites", Str),
    ("verify_incoming", Bool),
    ("verify_outgoing", Bool),
    ("use_auto_cert", Bool),
];

/// Consul `tls.internal_rpc`: the protocol keys plus `verify_server_hostname`.
const CONSUL_TLS_INTERNAL_RPC: &[(&str, Ty)] = &[
    ("ca_file", Str),
    ("ca_path", Str),
    ("cert_file", Str),
    ("key_file", Str),
    ("tls_min_version", Str),
    ("tls_cipher_suites", Str),
    ("verify_incoming", Bool),
    ("verify_outgoing", Bool),
    ("verify_server_hostname", Bool),
];

const CONSUL_TLS: &[(&str, Ty)] = &[
    ("defaults", Table(CONSUL_TLS_PROTOCOL)),
    ("https", Table(CONSUL_TLS_PROTOCOL)),
    ("grpc", Table(CONSUL_TLS_PROTOCOL)),
    ("internal_rpc", Table(CONSUL_TLS_INTERNAL_RPC)),
];

const CONSUL_ACL_TOKENS: &[(&str, Ty)] = &[
    ("initial_management", Str),
    ("agent", Str),
    ("agent_recovery", Str),
    ("default", Str),
    ("replication", Str),
    ("config_file_service_registration", Str),
    ("dns", Str),
    ("master", Str),
    ("agent_master", Str),
];

const CONSUL_ACL: &[(&str, Ty)] = &[
    ("enabled", Bool),
    ("default_policy", Str),
    ("down_policy", Str),
    ("policy_ttl", Str),
    ("role_ttl", Str),
    ("token_ttl", Str),
    ("enable_key_list_policy", Bool),
    ("enable_token_persistence", Bool),
    ("enable_token_replication", Bool),
    ("msp_disable_bootstrap", Bool),
    ("tokens", Table(CONSUL_ACL_TOKENS)),
];

/// Consul top-level keys (agent config reference; legacy keys that still load
/// with a warning are accepted).
const CONSUL_KEYS: &[(&str, Ty)] = &[
    ("acl", Table(CONSUL_ACL)),
    ("acl_agent_master_token", Str),
    ("acl_agent_token", Str),
    ("acl_datacenter", Str),
    ("acl_default_policy", Str),
    ("acl_down_policy", Str),
    ("acl_enforce_version_8", Bool),
    ("acl_master_token", Str),
    ("acl_replication_token", Str),
    ("acl_token", Str),
    ("acl_ttl", Str),
    ("addresses", Table(CONSUL_ADDRESSES)),
    ("advertise_addr", Str),
    ("advertise_addr_ipv4", Str),
    ("advertise_addr_ipv6", Str),
    ("advertise_addr_wan", Str),
    ("advertise_addr_wan_ipv4", Str),
    ("advertise_addr_wan_ipv6", Str),
    ("advertise_reconnect_timeout", Str),
    ("alt_domain", Str),
    ("audit", Obj),
    ("auto_config", Obj),
    ("auto_encrypt", Obj),
    ("auto_reload_config", Bool),
    ("autopilot", Obj),
    ("bind_addr", Str),
    ("bootstrap", Bool),
    ("bootstrap_expect", Int),
    ("ca_file", Str),
    ("ca_path", Str),
    ("cache", Obj),
    ("cert_file", Str),
    ("check", Obj),
    ("check_output_max_size", Int),
    ("check_update_interval", Str),
    ("checks", Any),
    ("client_addr", Str),
    ("cloud", Obj),
    ("config_entries", Obj),
    ("connect", Obj),
    ("data_dir", Str),
    ("datacenter", Str),
    ("default_query_time", Str),
    ("disable_anonymous_signature", Bool),
    ("disable_coordinates", Bool),
    ("disable_host_node_id", Bool),
    ("disable_http_unprintable_char_filter", Bool),
    ("disable_keyring_file", Bool),
    ("disable_remote_exec", Bool),
    ("disable_update_check", Bool),
    ("discard_check_output", Bool),
    ("discovery_max_stale", Str),
    ("dns_config", Obj),
    ("domain", Str),
    ("enable_acl_replication", Bool),
    ("enable_agent_tls_for_checks", Bool),
    ("enable_central_service_config", Bool),
    ("enable_debug", Bool),
    ("enable_local_script_checks", Bool),
    ("enable_script_checks", Bool),
    ("enable_syslog", Bool),
    ("encrypt", Str),
    ("encrypt_verify_incoming", Bool),
    ("encrypt_verify_outgoing", Bool),
    ("experiments", StrList),
    ("http_config", Obj),
    ("key_file", Str),
    ("leave_on_terminate", Bool),
    ("license_path", Str),
    ("limits", Obj),
    ("locality", Obj),
    ("log_file", Str),
    ("log_json", Bool),
    ("log_level", Str),
    ("log_rotate_bytes", Int),
    ("log_rotate_duration", Str),
    ("log_rotate_max_files", Int),
    ("max_query_time", Str),
    ("node_id", Str),
    ("node_meta", Obj),
    ("node_name", Str),
    ("peering", Obj),
    ("performance", Obj),
    ("pid_file", Str),
    ("ports", Table(CONSUL_PORTS)),
    ("primary_datacenter", Str),
    ("primary_gateways", StrList),
    ("primary_gateways_interval", Str),
    ("raft_boltdb", Obj),
    ("raft_logstore", Obj),
    ("raft_protocol", Int),
    ("raft_snapshot_interval", Str),
    ("raft_snapshot_threshold", Int),
    ("raft_trailing_logs", Int),
    ("read_replica", Bool),
    ("reconnect_timeout", Str),
    ("reconnect_timeout_wan", Str),
    ("recursors", StrList),
    ("rejoin_after_leave", Bool),
    ("reporting", Obj),
    ("retry_interval", Str),
    ("retry_interval_wan", Str),
    ("retry_join", StrList),
    ("retry_join_wan", StrList),
    ("retry_max", Int),
    ("retry_max_wan", Int),
    ("rpc", Obj),
    ("segment", Str),
    ("segments", Any),
    ("serf_lan", Str),
    ("serf_lan_allowed_cidrs", StrList),
    ("serf_wan", Str),
    ("serf_wan_allowed_cidrs", StrList),
    ("server", Bool),
    ("server_name", Str),
    ("server_rejoin_age_max", Str),
    ("service", Obj),
    ("services", Any),
    ("session_ttl_min", Str),
    ("skip_leave_on_interrupt", Bool),
    ("syslog_facility", Str),
    ("telemetry", Obj),
    ("tls", Table(CONSUL_TLS)),
    ("tls_cipher_suites", Str),
    ("tls_min_version", Str),
    ("tls_prefer_server_cipher_suites", Bool),
    ("translate_wan_addrs", Bool),
    ("ui", Bool),
    ("ui_config", Obj),
    ("ui_content_path", Str),
    ("ui_dir", Str),
    ("unix_sockets", Obj),
    ("verify_incoming", Bool),
    ("verify_incoming_https", Bool),
    ("verify_incoming_rpc", Bool),
    ("verify_outgoing", Bool),
    ("verify_server_hostname", Bool),
    ("watches", Any),
    ("xds", Obj),
];

const NOMAD_PORTS: &[(&str, Ty)] = &[("http", Int), ("rpc", Int), ("serf", Int)];
const NOMAD_ADDRESSES: &[(&str, Ty)] = &[("http", Str), ("rpc", Str), ("serf", Str)];

const NOMAD_SERVER_JOIN: &[(&str, Ty)] = &[
    ("retry_join", StrList),
    ("start_join", StrList),
    ("retry_interval", Str),
    ("retry_max", Int),
];

/// `server {}` keys whose types are checked (other keys pass).
const NOMAD_SERVER: &[(&str, Ty)] = &[
    ("enabled", Bool),
    ("bootstrap_expect", Int),
    ("data_dir", Str),
    ("encrypt", Str),
    ("rejoin_after_leave", Bool),
    ("retry_join", StrList),
    ("start_join", StrList),
    ("retry_interval", Str),
    ("retry_max", Int),
    ("num_schedulers", Int),
    ("raft_protocol", Int),
    ("raft_multiplier", Int),
    ("authoritative_region", Str),
    ("redundancy_zone", Str),
    ("non_voting_server", Bool),
    ("server_join", Table(NOMAD_SERVER_JOIN)),
];

const NOMAD_CLIENT: &[(&str, Ty)] = &[
    ("enabled", Bool),
    ("servers", StrList),
    ("state_dir", Str),
    ("alloc_dir", Str),
    ("node_class", Str),
    ("node_pool", Str),
    ("network_interface", Str),
    ("meta", Obj),
    ("options", Obj),
    ("cpu_total_compute", Int),
    ("memory_total_mb", Int),
    ("max_kill_timeout", Str),
    ("server_join", Table(NOMAD_SERVER_JOIN)),
];

const NOMAD_CONSUL: &[(&str, Ty)] = &[
    ("address", Str),
    ("auto_advertise", Bool),
    ("server_auto_join", Bool),
    ("client_auto_join", Bool),
    ("server_service_name", Str),
    ("client_service_name", Str),
    ("token", Str),
    ("ssl", Bool),
    ("verify_ssl", Bool),
    ("ca_file", Str),
    ("cert_file", Str),
    ("key_file", Str),
    ("share_ssl", Bool),
    ("timeout", Str),
    ("namespace", Str),
    ("grpc_address", Str),
    ("grpc_ca_file", Str),
];

/// Nomad `tls {}` (agent config reference, "tls Block").
const NOMAD_TLS: &[(&str, Ty)] = &[
    ("http", Bool),
    ("rpc", Bool),
    ("ca_file", Str),
    ("cert_file", Str),
    ("key_file", Str),
    ("rpc_upgrade_mode", Bool),
    ("verify_server_hostname", Bool),
    ("verify_https_client", Bool),
    ("tls_min_version", Str),
    ("tls_cipher_suites", Str),
    ("tls_prefer_server_cipher_suites", Bool),
];

/// Nomad `acl {}` (agent config reference, "acl Block").
const NOMAD_ACL: &[(&str, Ty)] = &[
    ("enabled", Bool),
    ("token_ttl", Str),
    ("policy_ttl", Str),
    ("role_ttl", Str),
    ("replication_token", Str),
    ("token_min_expiration_ttl", Str),
    ("token_max_expiration_ttl", Str),
];

/// Nomad top-level keys (agent config reference).
const NOMAD_KEYS: &[(&str, Ty)] = &[
    ("acl", Table(NOMAD_ACL)),
    ("addresses", Table(NOMAD_ADDRESSES)),
    ("advertise", Table(NOMAD_ADDRESSES)),
    ("audit", Obj),
    ("autopilot", Obj),
    ("bind_addr", Str),
    ("client", Table(NOMAD_CLIENT)),
    ("consul", Table(NOMAD_CONSUL)),
    ("data_dir", Str),
    ("datacenter", Str),
    ("disable_anonymous_signature", Bool),
    ("disable_update_check", Bool),
    ("enable_debug", Bool),
    ("enable_syslog", Bool),
    ("http_api_response_headers", Obj),
    ("keyring", Any),
    ("leave_on_interrupt", Bool),
    ("leave_on_terminate", Bool),
    ("limits", Obj),
    ("log_file", Str),
    ("log_include_location", Bool),
    ("log_json", Bool),
    ("log_level", Str),
    ("log_rotate_bytes", Int),
    ("log_rotate_duration", Str),
    ("log_rotate_max_files", Int),
    ("name", Str),
    ("plugin", Any),
    ("plugin_dir", Str),
    ("ports", Table(NOMAD_PORTS)),
    ("region", Str),
    ("reporting", Obj),
    ("sentinel", Obj),
    ("server", Table(NOMAD_SERVER)),
    ("syslog_facility", Str),
    ("telemetry", Obj),
    ("tls", Table(NOMAD_TLS)),
    ("ui", Obj),
    ("vault", Any),
];

fn check_keys(product: Product, file: &Path, v: &Value) -> Result<(), ConfigError> {
    let Value::Object(map) = v else {
        return Ok(());
    };
    let table = match product {
        Product::Consul => CONSUL_KEYS,
        Product::Nomad => NOMAD_KEYS,
    };
    check_table(product, file, map, table, "")
}

fn check_table(
    product: Product,
    file: &Path,
    map: &Map<String, Value>,
    table: &[(&str, Ty)],
    prefix: &str,
) -> Result<(), ConfigError> {
    // Nomad checks the inner keys of server{}/client{}/consul{} by type only.
    let strict = product == Product::Consul
        || prefix.is_empty()
        || matches!(
            prefix,
            "ports." | "addresses." | "advertise." | "tls." | "acl."
        )
        || prefix.ends_with("server_join.");
    for (k, val) in map {
        let full = format!("{prefix}{k}");
        let Some((_, ty)) = table.iter().find(|(name, _)| name == k) else {
            if !strict {
                continue;
            }
            return Err(ConfigError(match product {
                Product::Consul => {
                    format!(
                        "failed to parse {}: invalid config key {full}",
                        file.display()
                    )
                }
                Product::Nomad => {
                    format!("failed to parse {}: unexpected keys {full}", file.display())
                }
            }));
        };
        let ok = match ty {
            Str => val.is_string(),
            // HCL1 decodes an int from a numeric string too.
            Int => {
                val.is_i64()
                    || val.is_u64()
                    || (product == Product::Nomad
                        && val.as_str().is_some_and(|s| s.parse::<i64>().is_ok()))
            }
            Bool => val.is_boolean(),
            StrList => val
                .as_array()
                .is_some_and(|a| a.iter().all(Value::is_string)),
            Obj => val.is_object() || is_object_list(val),
            Table(_) => val.is_object() || is_object_list(val),
            Any => true,
        };
        if !ok {
            return Err(ConfigError(format!(
                "failed to parse {}: 1 error(s) decoding:\n\n* '{full}' expected type '{}', got unconvertible type '{}'",
                file.display(),
                ty_name(*ty),
                json_type_name(val)
            )));
        }
        if let Table(inner) = ty {
            if let Value::Object(m) = val {
                check_table(product, file, m, inner, &format!("{full}."))?;
            }
        }
        if product == Product::Consul && prefix == "ports." {
            if let Some(p) = val.as_i64() {
                if p > 65535 {
                    return Err(ConfigError(format!(
                        "failed to parse {}: {full}: invalid port: {p}",
                        file.display()
                    )));
                }
            }
        }
    }
    Ok(())
}

fn is_object_list(v: &Value) -> bool {
    v.as_array().is_some_and(|a| a.iter().all(Value::is_object))
}

fn ty_name(t: Ty) -> &'static str {
    match t {
        Str => "string",
        Int => "int",
        Bool => "bool",
        StrList => "[]string",
        Obj | Table(_) => "struct",
        Any => "interface {}",
    }
}

fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float64",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

/// Merge `new` into `acc` following the product's rules (agent-facts §3).
fn merge(product: Product, acc: &mut Value, new: Value, path: &str) {
    match (acc, new) {
        (Value::Object(a), Value::Object(n)) => {
            for (k, nv) in n {
                let p = format!("{path}{k}");
                match a.get_mut(&k) {
                    Some(old) => merge(product, old, nv, &format!("{p}.")),
                    None => {
                        a.insert(k, nv);
                    }
                }
            }
        }
        (slot @ Value::Array(_), Value::Array(n)) => {
            let key = path.trim_end_matches('.');
            let append = match product {
                // Consul: slices are appended (merge.go).
                Product::Consul => true,
                // Nomad: only these accumulate; server_join lists replace.
                Product::Nomad => matches!(
                    key,
                    "client.servers" | "server.retry_join" | "server.start_join"
                ),
            };
            if append {
                if let Value::Array(a) = slot {
                    a.extend(n);
                }
            } else if !n.is_empty() || product == Product::Consul {
                *slot = Value::Array(n);
            }
        }
        (slot @ Value::Bool(true), Value::Bool(false)) if product == Product::Nomad => {
            // Nomad Config.Merge only switches these bools on.
            let key = path.trim_end_matches('.');
            if !matches!(
                key,
                "leave_on_interrupt"
                    | "leave_on_terminate"
                    | "enable_syslog"
                    | "log_json"
                    | "acl.enabled"
                    | "server.enabled"
                    | "client.enabled"
            ) {
                *slot = Value::Bool(false);
            }
        }
        (slot, n) => *slot = n,
    }
}

fn get<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    for part in path.split('.') {
        cur = cur.get(part)?;
    }
    Some(cur)
}

fn get_str(v: &Value, path: &str) -> Option<String> {
    get(v, path).and_then(Value::as_str).map(str::to_string)
}

fn get_bool(v: &Value, path: &str) -> Option<bool> {
    get(v, path).and_then(Value::as_bool)
}

fn get_int(v: &Value, path: &str) -> Option<i64> {
    get(v, path).and_then(|x| {
        x.as_i64()
            .or_else(|| x.as_str().and_then(|s| s.parse().ok()))
    })
}

fn get_list(v: &Value, path: &str) -> Vec<String> {
    get(v, path)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn port(v: &Value, path: &str, default: u16) -> u16 {
    get_int(v, path)
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(default)
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The first address of a space-separated list (Consul allows several).
fn first_addr(s: &str) -> String {
    s.split_whitespace().next().unwrap_or("").to_string()
}

fn reduce(product: Product, v: &Value, files: Vec<PathBuf>) -> Result<AgentConfig, ConfigError> {
    let cfg = match product {
        Product::Consul => {
            let server = get_bool(v, "server").unwrap_or(false);
            let bind_ip = get_str(v, "bind_addr").unwrap_or_else(|| "0.0.0.0".to_string());
            let client_addr = get_str(v, "client_addr").unwrap_or_else(|| "127.0.0.1".to_string());
            // `addresses.http` overrides `client_addr` for the HTTP API.
            let http_list = get_str(v, "addresses.http").unwrap_or(client_addr);
            let http_ip = first_addr(&http_list);
            let http_extra_ips: Vec<String> = http_list
                .split_whitespace()
                .skip(1)
                .map(str::to_string)
                .collect();
            let advertise_ip =
                get_str(v, "advertise_addr").unwrap_or_else(|| default_advertise(&bind_ip));
            // A port <= 0 disables that listener (agent-facts §6).
            let http = get_int(v, "ports.http").unwrap_or(i64::from(DEFAULT_CONSUL_HTTP_PORT));
            let https = get_int(v, "ports.https").unwrap_or(-1);
            let as_port = |p: i64| u16::try_from(p).ok().filter(|p| *p > 0);
            let (http_port, http_tls, https_extra_port, api_disabled) =
                match (as_port(http), as_port(https)) {
                    (Some(h), s) => (h, false, s, false),
                    (None, Some(s)) => (s, true, None, false),
                    (None, None) => (0, false, None, true),
                };
            let bootstrap_expect = if get_bool(v, "bootstrap").unwrap_or(false) {
                1
            } else {
                get_int(v, "bootstrap_expect").unwrap_or(0).max(0) as u64
            };
            AgentConfig {
                product,
                node_name: get_str(v, "node_name").unwrap_or_else(hostname),
                datacenter: get_str(v, "datacenter").unwrap_or_else(|| "dc1".to_string()),
                region: "global".to_string(),
                server,
                client: !server,
                bootstrap_expect,
                http_ip,
                http_extra_ips,
                http_tls,
                https_extra_port,
                api_disabled,
                tls: consul_tls(v),
                gossip_key: gossip_key(v, "encrypt")?,
                acl: consul_acl(v),
                http_port,
                advertise_ip,
                bind_ip,
                serf_port: port(v, "ports.serf_lan", DEFAULT_CONSUL_SERF_LAN_PORT),
                serf_wan_port: port(v, "ports.serf_wan", DEFAULT_CONSUL_SERF_WAN_PORT),
                rpc_port: port(v, "ports.server", DEFAULT_CONSUL_SERVER_PORT),
                retry_join: get_list(v, "retry_join"),
                retry_join_wan: get_list(v, "retry_join_wan"),
                // builder.go: leaveOnTerm := !server; skipLeaveOnInt := server.
                leave_on_terminate: get_bool(v, "leave_on_terminate").unwrap_or(!server),
                leave_on_interrupt: !get_bool(v, "skip_leave_on_interrupt").unwrap_or(server),
                enable_script_checks: get_bool(v, "enable_script_checks").unwrap_or(false),
                log_level: get_str(v, "log_level").unwrap_or_else(|| "INFO".to_string()),
                data_dir: get_str(v, "data_dir").unwrap_or_default(),
                consul: NomadConsul::default(),
                files,
            }
        }
        Product::Nomad => {
            let server = get_bool(v, "server.enabled").unwrap_or(false);
            let client = get_bool(v, "client.enabled").unwrap_or(false);
            let bind_ip = get_str(v, "bind_addr").unwrap_or_else(|| "0.0.0.0".to_string());
            let http_ip = get_str(v, "addresses.http").unwrap_or_else(|| bind_ip.clone());
            let serf_ip = get_str(v, "addresses.serf").unwrap_or_else(|| bind_ip.clone());
            let advertise_ip = get_str(v, "advertise.serf")
                .or_else(|| get_str(v, "advertise.rpc"))
                .map(|a| a.split(':').next().unwrap_or("").to_string())
                .unwrap_or_else(|| default_advertise(&serf_ip));
            let mut client_servers = get_list(v, "client.servers");
            client_servers.extend(get_list(v, "client.server_join.retry_join"));
            let mut join = Vec::new();
            if server {
                join.extend(get_list(v, "server.server_join.retry_join"));
                join.extend(get_list(v, "server.retry_join"));
                join.extend(get_list(v, "server.start_join"));
            }
            if client {
                join.extend(client_servers);
            }
            AgentConfig {
                product,
                node_name: get_str(v, "name").unwrap_or_else(hostname),
                datacenter: get_str(v, "datacenter").unwrap_or_else(|| "dc1".to_string()),
                region: get_str(v, "region").unwrap_or_else(|| "global".to_string()),
                server,
                client,
                bootstrap_expect: get_int(v, "server.bootstrap_expect").unwrap_or(0).max(0) as u64,
                http_ip,
                http_extra_ips: Vec::new(),
                http_tls: get_bool(v, "tls.http").unwrap_or(false),
                https_extra_port: None,
                api_disabled: false,
                tls: nomad_tls(v),
                gossip_key: if server {
                    gossip_key(v, "server.encrypt")?
                } else {
                    None
                },
                acl: AclSettings {
                    enabled: get_bool(v, "acl.enabled").unwrap_or(false),
                    default_deny: true,
                    ..AclSettings::default()
                },
                http_port: port(v, "ports.http", DEFAULT_NOMAD_HTTP_PORT),
                advertise_ip,
                bind_ip: serf_ip,
                serf_port: port(v, "ports.serf", DEFAULT_NOMAD_SERF_PORT),
                serf_wan_port: 0,
                rpc_port: port(v, "ports.rpc", DEFAULT_NOMAD_RPC_PORT),
                retry_join: join,
                retry_join_wan: Vec::new(),
                // Nomad: both default to false (config.go DefaultConfig).
                leave_on_terminate: get_bool(v, "leave_on_terminate").unwrap_or(false),
                leave_on_interrupt: get_bool(v, "leave_on_interrupt").unwrap_or(false),
                enable_script_checks: false,
                log_level: get_str(v, "log_level").unwrap_or_else(|| "INFO".to_string()),
                data_dir: get_str(v, "data_dir").unwrap_or_default(),
                consul: NomadConsul {
                    address: get_str(v, "consul.address")
                        .unwrap_or_else(|| DEFAULT_NOMAD_CONSUL_ADDRESS.to_string()),
                    auto_advertise: get_bool(v, "consul.auto_advertise").unwrap_or(true),
                    server_auto_join: get_bool(v, "consul.server_auto_join").unwrap_or(true),
                    client_auto_join: get_bool(v, "consul.client_auto_join").unwrap_or(true),
                    server_service_name: get_str(v, "consul.server_service_name")
                        .unwrap_or_else(|| "nomad".to_string()),
                    client_service_name: get_str(v, "consul.client_service_name")
                        .unwrap_or_else(|| "nomad-client".to_string()),
                    token: get_str(v, "consul.token")
                        .filter(|t| !t.is_empty())
                        .map(SecretText),
                    tls: ConsulClientTls {
                        ssl: get_bool(v, "consul.ssl").unwrap_or(false),
                        verify_ssl: get_bool(v, "consul.verify_ssl").unwrap_or(true),
                        ca_file: get_str(v, "consul.ca_file").map(PathBuf::from),
                        cert_file: get_str(v, "consul.cert_file").map(PathBuf::from),
                        key_file: get_str(v, "consul.key_file").map(PathBuf::from),
                    },
                },
                files,
            }
        }
    };
    if product == Product::Nomad && !cfg.server && !cfg.client {
        return Err(ConfigError(
            "Must specify either server, client or dev mode for the agent.".to_string(),
        ));
    }
    Ok(cfg)
}

/// The first non-empty string among these config paths.
fn first_str(v: &Value, paths: &[&str]) -> Option<String> {
    paths
        .iter()
        .find_map(|p| get_str(v, p))
        .filter(|s| !s.is_empty())
}

/// The first bool set among these config paths.
fn first_bool(v: &Value, paths: &[&str]) -> Option<bool> {
    paths.iter().find_map(|p| get_bool(v, p))
}

/// Consul's TLS settings: `tls.<section>` wins over `tls.defaults`, which
/// wins over the legacy top-level keys (Consul 1.12+ config layout).
fn consul_tls(v: &Value) -> Option<TlsSettings> {
    let file = |key: &str| {
        first_str(
            v,
            &[
                &format!("tls.internal_rpc.{key}"),
                &format!("tls.https.{key}"),
                &format!("tls.defaults.{key}"),
                key,
            ],
        )
        .map(PathBuf::from)
    };
    let t = TlsSettings {
        ca_file: file("ca_file"),
        cert_file: file("cert_file"),
        key_file: file("key_file"),
        verify_incoming_https: first_bool(
            v,
            &[
                "tls.https.verify_incoming",
                "tls.defaults.verify_incoming",
                "verify_incoming_https",
                "verify_incoming",
            ],
        )
        .unwrap_or(false),
        verify_incoming_rpc: first_bool(
            v,
            &[
                "tls.internal_rpc.verify_incoming",
                "tls.defaults.verify_incoming",
                "verify_incoming_rpc",
                "verify_incoming",
            ],
        )
        .unwrap_or(false),
        rpc: first_bool(
            v,
            &[
                "tls.internal_rpc.verify_outgoing",
                "tls.defaults.verify_outgoing",
                "verify_outgoing",
            ],
        )
        .unwrap_or(false),
        verify_server_hostname: first_bool(
            v,
            &[
                "tls.internal_rpc.verify_server_hostname",
                "verify_server_hostname",
            ],
        )
        .unwrap_or(false),
    };
    (t.ca_file.is_some() || t.cert_file.is_some() || t.key_file.is_some()).then_some(t)
}

/// Nomad's `tls {}`; RPC over TLS always asks for client certificates.
fn nomad_tls(v: &Value) -> Option<TlsSettings> {
    let rpc = get_bool(v, "tls.rpc").unwrap_or(false);
    let t = TlsSettings {
        ca_file: first_str(v, &["tls.ca_file"]).map(PathBuf::from),
        cert_file: first_str(v, &["tls.cert_file"]).map(PathBuf::from),
        key_file: first_str(v, &["tls.key_file"]).map(PathBuf::from),
        verify_incoming_https: get_bool(v, "tls.verify_https_client").unwrap_or(false),
        verify_incoming_rpc: rpc,
        rpc,
        verify_server_hostname: get_bool(v, "tls.verify_server_hostname").unwrap_or(false),
    };
    (t.ca_file.is_some() || t.cert_file.is_some() || t.key_file.is_some()).then_some(t)
}

fn consul_acl(v: &Value) -> AclSettings {
    AclSettings {
        enabled: first_bool(v, &["acl.enabled"]).unwrap_or(false),
        default_deny: first_str(v, &["acl.default_policy", "acl_default_policy"])
            .is_some_and(|p| p == "deny"),
        initial_management: first_str(
            v,
            &[
                "acl.tokens.initial_management",
                "acl.tokens.master",
                "acl_master_token",
            ],
        )
        .map(SecretText),
        agent_token: first_str(v, &["acl.tokens.agent", "acl_agent_token"]).map(SecretText),
        primary_datacenter: first_str(v, &["primary_datacenter", "acl_datacenter"])
            .or_else(|| get_str(v, "datacenter"))
            .unwrap_or_else(|| "dc1".to_string()),
        token_replication: first_bool(v, &["acl.enable_token_replication"]).unwrap_or(false),
        replication_token: first_str(v, &["acl.tokens.replication", "acl_replication_token"])
            .map(SecretText),
    }
}

/// The gossip key at `path`: base64 of 16, 24 or 32 bytes (memberlist's
/// AES key sizes), else the agent refuses to start.
fn gossip_key(v: &Value, path: &str) -> Result<Option<GossipKey>, ConfigError> {
    use base64::Engine;
    let Some(text) = get_str(v, path).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let key = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| ConfigError(format!("{path} has invalid key: {e}")))?;
    if !matches!(key.len(), 16 | 24 | 32) {
        return Err(ConfigError(format!(
            "{path} has invalid key: key size must be 16, 24 or 32 bytes"
        )));
    }
    Ok(Some(GossipKey(key)))
}

/// The advertised address when none is configured: the bind address, or
/// for a wildcard bind the host's private IPv4 address (Consul's and Nomad's
/// `GetPrivateIP` default), else loopback.
fn default_advertise(bind: &str) -> String {
    if !crate::state::is_wildcard(bind) {
        return bind.to_string();
    }
    private_ipv4().unwrap_or_else(|| "127.0.0.1".to_string())
}

/// First private (RFC 1918 or shared 100.64/10) IPv4 address of an interface.
fn private_ipv4() -> Option<String> {
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    for ifa in addrs {
        let Some(sin) = ifa.address.as_ref().and_then(|a| a.as_sockaddr_in()) else {
            continue;
        };
        let ip = sin.ip();
        let o = ip.octets();
        let shared = o[0] == 100 && (64..128).contains(&o[1]);
        if !ip.is_loopback() && (ip.is_private() || shared) {
            return Some(ip.to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn consul_merge_appends_lists_and_overlays_maps() {
        let mut acc = json!({"retry_join": ["a"], "ports": {"http": 1, "dns": 2}, "server": true});
        merge(
            Product::Consul,
            &mut acc,
            json!({"retry_join": ["b"], "ports": {"http": 3}, "server": false}),
            "",
        );
        assert_eq!(
            acc,
            json!({"retry_join": ["a", "b"], "ports": {"http": 3, "dns": 2}, "server": false})
        );
    }

    #[test]
    fn nomad_merge_only_switches_leave_bools_on() {
        let mut acc = json!({"leave_on_terminate": true, "enable_debug": true, "server": {"server_join": {"retry_join": ["a"]}}});
        merge(
            Product::Nomad,
            &mut acc,
            json!({"leave_on_terminate": false, "enable_debug": false, "server": {"server_join": {"retry_join": ["b"]}}}),
            "",
        );
        assert_eq!(acc["leave_on_terminate"], json!(true));
        assert_eq!(acc["enable_debug"], json!(false));
        assert_eq!(acc["server"]["server_join"]["retry_join"], json!(["b"]));
    }

    #[test]
    fn consul_unknown_key_is_refused() {
        let e = check_keys(Product::Consul, Path::new("x.json"), &json!({"bogus": 1})).unwrap_err();
        assert_eq!(e.0, "failed to parse x.json: invalid config key bogus");
    }

    #[test]
    fn consul_wrong_type_is_refused() {
        let e = check_keys(
            Product::Consul,
            Path::new("x.json"),
            &json!({"server": "true"}),
        )
        .unwrap_err();
        assert!(e.0.contains("'server' expected type 'bool'"), "{}", e.0);
    }

    #[test]
    fn consul_leave_defaults_depend_on_server_mode() {
        let s = reduce(Product::Consul, &json!({"server": true}), vec![]).unwrap();
        assert!(!s.leave_on_terminate && !s.leave_on_interrupt);
        let c = reduce(Product::Consul, &json!({}), vec![]).unwrap();
        assert!(c.leave_on_terminate && c.leave_on_interrupt);
        let o = reduce(
            Product::Consul,
            &json!({"server": true, "leave_on_terminate": true, "skip_leave_on_interrupt": false}),
            vec![],
        )
        .unwrap();
        assert!(o.leave_on_terminate && o.leave_on_interrupt);
    }
}

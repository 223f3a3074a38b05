//! `RawRole`: a serde mirror of the role file, exactly as written. Every
//! table denies unknown keys (no `flatten`, which would defeat that), and
//! values checked later carry their span so problems point at the text.

use serde::Deserialize;
use toml::Spanned;

/// A string with its position in the file.
pub type SpStr = Spanned<String>;

/// The whole role file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRole {
    pub schema: Option<Spanned<i64>>,
    pub roles: Option<Spanned<Vec<SpStr>>>,
    pub region: Option<SpStr>,
    pub datacenter: Option<SpStr>,
    pub node_name: Option<SpStr>,
    pub log_level: Option<SpStr>,
    #[serde(default)]
    pub addresses: RawAddresses,
    #[serde(default)]
    pub consul: RawConsul,
    #[serde(default)]
    pub nomad: RawNomad,
    #[serde(default)]
    pub release: RawRelease,
    #[serde(default)]
    pub discovery: RawDiscovery,
    #[serde(default)]
    pub health: RawHealth,
    #[serde(default)]
    pub paths: RawPaths,
    #[serde(default)]
    pub security: RawSecurity,
    #[serde(default)]
    pub upgrade: RawUpgrade,
}

/// `[addresses]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAddresses {
    pub bind: Option<SpStr>,
    pub private: Option<SpStr>,
    pub public: Option<SpStr>,
}

/// `[consul.restart]` / `[nomad.restart]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRestart {
    pub attempts: Option<Spanned<u64>>,
    pub interval_secs: Option<Spanned<u64>>,
    pub delay_secs: Option<Spanned<u64>>,
    pub mode: Option<SpStr>,
    pub max_delay_secs: Option<Spanned<u64>>,
    pub stable_after_secs: Option<Spanned<u64>>,
}

/// `[consul.tls]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsulTls {
    pub ca_file: Option<SpStr>,
    pub cert_file: Option<SpStr>,
    pub key_file: Option<SpStr>,
}

/// `[nomad.tls]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNomadTls {
    pub ca_file: Option<SpStr>,
    pub cert_file: Option<SpStr>,
    pub key_file: Option<SpStr>,
    pub http: Option<bool>,
}

/// `[consul]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsul {
    pub version: Option<SpStr>,
    pub bootstrap_expect: Option<Spanned<i64>>,
    pub encrypt_key_file: Option<SpStr>,
    pub ui: Option<bool>,
    pub stop_timeout_secs: Option<Spanned<u64>>,
    pub leave_on_stop: Option<Spanned<bool>>,
    pub user: Option<SpStr>,
    #[serde(default)]
    pub tls: RawConsulTls,
    #[serde(default)]
    pub restart: RawRestart,
    pub extra: Option<Spanned<toml::Table>>,
}

/// `[nomad]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNomad {
    pub version: Option<SpStr>,
    pub bootstrap_expect: Option<Spanned<i64>>,
    pub encrypt_key_file: Option<SpStr>,
    pub advertise: Option<SpStr>,
    pub stop_timeout_secs: Option<Spanned<u64>>,
    pub leave_on_stop: Option<Spanned<bool>>,
    pub drain_deadline_secs: Option<Spanned<u64>>,
    pub user: Option<SpStr>,
    #[serde(default)]
    pub tls: RawNomadTls,
    #[serde(default)]
    pub restart: RawRestart,
    pub extra: Option<Spanned<toml::Table>>,
}

/// `[release]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRelease {
    pub mirror: Option<SpStr>,
    pub trust_hashicorp_key: Option<bool>,
    pub trusted_key_files: Option<Spanned<Vec<SpStr>>>,
    pub keep_versions: Option<Spanned<u64>>,
    pub max_download_bytes: Option<Spanned<u64>>,
}

/// `[discovery]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiscovery {
    pub consul_retry_join: Option<Spanned<Vec<SpStr>>>,
    pub consul_retry_join_wan: Option<Spanned<Vec<SpStr>>>,
    pub nomad_retry_join: Option<Spanned<Vec<SpStr>>>,
    pub consul_address: Option<SpStr>,
    pub cloud_auto_join: Option<Spanned<Vec<SpStr>>>,
    pub mdns: Option<Spanned<bool>>,
    pub dns: Option<Spanned<RawDns>>,
}

/// `[discovery.dns]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    pub nameserver: Option<SpStr>,
    pub consul_servers: Option<Spanned<Vec<SpStr>>>,
    pub consul_wan: Option<Spanned<Vec<SpStr>>>,
    pub nomad_servers: Option<Spanned<Vec<SpStr>>>,
    pub interval_secs: Option<Spanned<u64>>,
}

/// `[health]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub listen: Option<SpStr>,
}

/// `[paths]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPaths {
    pub config_dir: Option<SpStr>,
    pub state_dir: Option<SpStr>,
}

/// `[security]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecurity {
    pub plaintext: Option<Spanned<bool>>,
    pub join_token_file: Option<SpStr>,
    pub join: Option<Spanned<Vec<SpStr>>>,
    pub join_listen: Option<SpStr>,
    pub cert_days: Option<Spanned<u64>>,
    pub renew_before_days: Option<Spanned<u64>>,
}

/// `[upgrade]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpgrade {
    pub client_share: Option<Spanned<f64>>,
    pub health_deadline_secs: Option<Spanned<u64>>,
    pub lock_ttl_secs: Option<Spanned<u64>>,
}

//! Test support: a node's security material as `supervisor cluster init`
//! or a join leaves it in `<config>/security/` (test values, never real
//! ones), either written to a directory (real rcgen certificates, for
//! tests that run the binary or the stand-in) or served by [`MaterialHost`]
//! at the default config dir (for golden renders, whose paths must not
//! depend on a temp dir).
#![allow(clippy::unwrap_used)] // test support: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use hashi_supervisor::role::file::FileError;
use hashi_supervisor::role::{Host, SystemHost};

/// A join token of the right shape that no cluster has.
pub const JOIN_TOKEN: &str = "abc123.0123456789abcdef@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// Test gossip keys and ACL tokens (fixed, so golden files are stable).
pub const CONSUL_GOSSIP: &str = "Q29uc3VsR29zc2lwVGVzdA==";
/// See [`CONSUL_GOSSIP`].
pub const NOMAD_GOSSIP: &str = "Tm9tYWRHb3NzaXBUZXN0IQ==";
/// ACL tokens of the test cluster, by `node.json` name.
pub const ACL_TOKENS: [(&str, &str); 7] = [
    ("consul_agent", "0a9e7a41-0000-4000-8000-000000000001"),
    ("consul_supervisor", "0a9e7a41-0000-4000-8000-000000000002"),
    ("consul_replication", "0a9e7a41-0000-4000-8000-000000000003"),
    (
        "consul_initial_management",
        "0a9e7a41-0000-4000-8000-000000000004",
    ),
    ("nomad_consul", "0a9e7a41-0000-4000-8000-000000000005"),
    ("nomad_supervisor", "0a9e7a41-0000-4000-8000-000000000006"),
    ("nomad_bootstrap", "0a9e7a41-0000-4000-8000-000000000007"),
];
/// The primary datacenter of the test cluster (its init node's).
pub const PRIMARY_DC: &str = "ams2";

/// `node.json` of a node with certificate `names`; the init node also
/// holds the bootstrap tokens.
pub fn node_json(names: &[String], ips: &[IpAddr], init_node: bool) -> String {
    let mut acl = serde_json::Map::new();
    for (k, v) in ACL_TOKENS {
        let bootstrap = k == "consul_initial_management" || k == "nomad_bootstrap";
        if init_node || !bootstrap {
            acl.insert(k.into(), v.into());
        }
    }
    serde_json::json!({
        "version": 1,
        "ca_sha256": format!("sha256:{}", "5a".repeat(32)),
        "names": names,
        "ips": ips,
        "not_before": 1_790_000_000u64,
        "not_after": 1_797_776_000u64,
        "primary_datacenter": PRIMARY_DC,
        "consul_gossip_key": CONSUL_GOSSIP,
        "nomad_gossip_key": NOMAD_GOSSIP,
        "acl_enabled": true,
        "acl": acl,
    })
    .to_string()
}

/// The machine, with a node's material at
/// `/etc/hashi-supervisor/security/` (and, for a CA holder, a cluster dir)
/// served from memory.
#[derive(Debug, Clone)]
pub struct MaterialHost {
    files: BTreeMap<PathBuf, String>,
}

impl MaterialHost {
    /// The material of a node with certificate `names` (the init node
    /// also holds the CA).
    pub fn new(names: &[String], init_node: bool) -> Self {
        let sec = Path::new(hashi_supervisor::paths::DEFAULT_CONFIG_DIR).join("security");
        let mut files = BTreeMap::new();
        for f in [
            "ca.pem",
            "node.pem",
            "node-key.pem",
            "consul-key.pem",
            "nomad-key.pem",
        ] {
            files.insert(sec.join(f), "pem".to_string());
        }
        let ips = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
        files.insert(sec.join("node.json"), node_json(names, &ips, init_node));
        if init_node {
            let cluster = Path::new(hashi_supervisor::paths::DEFAULT_CONFIG_DIR).join("cluster");
            files.insert(cluster.join("ca.pem"), "pem".to_string());
        }
        Self { files }
    }

    fn is_ours(&self, path: &Path) -> bool {
        let etc = Path::new(hashi_supervisor::paths::DEFAULT_CONFIG_DIR);
        path.starts_with(etc.join("security")) || path.starts_with(etc.join("cluster"))
    }
}

impl Host for MaterialHost {
    fn hostname(&self) -> Option<String> {
        SystemHost.hostname()
    }

    fn interface_ipv4(&self, name: &str) -> Option<Vec<Ipv4Addr>> {
        SystemHost.interface_ipv4(name)
    }

    fn all_ipv4(&self) -> Vec<Ipv4Addr> {
        SystemHost.all_ipv4()
    }

    fn read_file(&self, path: &Path, limit: u64) -> Result<Vec<u8>, FileError> {
        if !self.is_ours(path) {
            return SystemHost.read_file(path, limit);
        }
        self.files
            .get(path)
            .map(|t| t.as_bytes().to_vec())
            .ok_or_else(|| FileError::Open(io::Error::from(io::ErrorKind::NotFound)))
    }

    fn check_file(&self, path: &Path, limit: u64) -> Result<(), FileError> {
        self.read_file(path, limit).map(drop)
    }

    fn is_dir(&self, path: &Path) -> bool {
        if !self.is_ours(path) {
            return SystemHost.is_dir(path);
        }
        self.files.keys().any(|f| f != path && f.starts_with(path))
    }

    fn switches_users(&self) -> bool {
        SystemHost.switches_users()
    }

    fn user_exists(&self, name: &str) -> bool {
        SystemHost.user_exists(name)
    }
}

/// The certificate names `security::names` gives a node of `roles` in
/// `region` / `datacenter` (the design contract), with `localhost`.
pub fn names_for(roles: &[&str], region: &str, dc: &str) -> Vec<String> {
    let mut names = Vec::new();
    for r in roles {
        match *r {
            "consul-server" => names.push(format!("server.{dc}.consul")),
            "consul-client" => names.push(format!("client.{dc}.consul")),
            "nomad-server" => names.push(format!("server.{region}.nomad")),
            "nomad-client" => names.push(format!("client.{region}.nomad")),
            _ => {}
        }
    }
    names.push("localhost".into());
    names
}

/// Writes a node's material under `config_dir/security/` with a real test
/// CA and a node certificate for `names` (+ 127.0.0.1), files readable by
/// the agents' users (a test run as root starts stand-ins as them).
pub fn write(config_dir: &Path, names: &[String], init_node: bool) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
    let sec = config_dir.join("security");
    std::fs::create_dir_all(&sec).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(names.to_vec()).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let cert = params
        .signed_by(&key, &Issuer::from_params(&ca_params, &ca_key))
        .unwrap();
    let ips = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
    for (file, text) in [
        ("ca.pem", ca.pem()),
        ("node.pem", cert.pem()),
        ("node-key.pem", key.serialize_pem()),
        ("consul-key.pem", key.serialize_pem()),
        ("nomad-key.pem", key.serialize_pem()),
        ("node.json", node_json(names, &ips, init_node)),
    ] {
        let p = sec.join(file);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
}

//! Default paths and well-known names. Every default the operator can
//! override lives in the role file; these are only the fallbacks.

/// Default role file.
pub const DEFAULT_ROLE_FILE: &str = "/etc/hashi-supervisor/node.toml";
/// Default directory for the rendered agent configs (`consul.d/`, `nomad.d/`).
pub const DEFAULT_CONFIG_DIR: &str = "/etc/hashi-supervisor";
/// Default state directory: releases, agent data dirs, pidfiles.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/hashi-supervisor";
/// Sub-directory of the state dir holding installed releases.
pub const RELEASES_SUBDIR: &str = "releases";
/// Sub-directory of the state dir holding runtime files (pidfiles, sockets).
pub const RUN_SUBDIR: &str = "run";
/// Default release mirror (HashiCorp's own).
pub const DEFAULT_MIRROR: &str = "https://releases.hashicorp.com";
/// Default port of the supervisor's health endpoint. Chosen to collide with
/// nothing Consul (8300-8302, 8500-8503, 8600, 20000-21755), Nomad
/// (4646-4648, 20000-32000) or Prometheus (9090, 9093, 9100-9110) use.
pub const DEFAULT_HEALTH_PORT: u16 = 4680;

/// Sub-directory of the config dir held only by nodes that hold the cluster
/// CA (`supervisor cluster init`, and servers that joined with a token that
/// allows servers): `ca.pem`, `ca-key.pem`, `cluster.json`, `tokens.json`.
/// Mode 0700, owned by root.
pub const CLUSTER_SUBDIR: &str = "cluster";
/// Sub-directory of the config dir holding this node's own security
/// material: `ca.pem`, `node.pem`, `node-key.pem`, one key copy per agent
/// user (`consul-key.pem`, `nomad-key.pem`) and `node.json` (gossip keys,
/// ACL tokens, names, expiry). Mode 0755; secrets 0600.
pub const SECURITY_SUBDIR: &str = "security";
/// The cluster CA certificate (PEM), in both dirs.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The cluster CA's private key (PEM), in the cluster dir only (0600).
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// The cluster's secrets and settings held by CA holders (0600).
pub const CLUSTER_FILE: &str = "cluster.json";
/// Join tokens (0600): id, SHA-256 of the secret, lifetime, revocation.
pub const TOKENS_FILE: &str = "tokens.json";
/// This node's certificate (PEM, 0644).
pub const NODE_CERT_FILE: &str = "node.pem";
/// This node's private key, for the supervisor itself (root, 0600).
pub const NODE_KEY_FILE: &str = "node-key.pem";
/// Copy of the node key owned by the Consul user (0600).
pub const CONSUL_KEY_FILE: &str = "consul-key.pem";
/// Copy of the node key owned by the Nomad user (0600).
pub const NOMAD_KEY_FILE: &str = "nomad-key.pem";
/// This node's secrets and certificate facts (root, 0600).
pub const NODE_SECRETS_FILE: &str = "node.json";
/// Default port of the join endpoint (HTTPS) of a node holding the CA.
/// Next to the health port; nothing of Consul's or Nomad's uses it.
pub const DEFAULT_JOIN_PORT: u16 = 4681;
/// The DNS name in the join endpoint's certificate; a joining node checks
/// it against the CA pinned by its join token.
pub const JOIN_SERVER_NAME: &str = "join.hashi-supervisor";
/// Consul's HTTPS API port (`ports.https`) when the node has TLS material.
pub const CONSUL_HTTPS_PORT: u16 = 8501;

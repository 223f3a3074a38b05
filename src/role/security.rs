//! `[security]` of the role file, and the node's security material as the
//! role sees it: the files `supervisor cluster init` or a join left in
//! `<config>/security/` (paths::SECURITY_SUBDIR), read when the role file is
//! loaded, as the gossip key files are. The plan renders from these values;
//! `security` (stage 8) writes the files.
//!
//! Secrets stay in [`Secret`]: no `Debug`, `Display` or `Serialize` of
//! anything here shows a key or a token.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::Secret;

/// `[security]` and the material found on disk.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SecurityRole {
    /// `plaintext = true`: the operator chose a cluster without TLS, gossip
    /// encryption and ACLs. Shown as "plaintext" in status and on the page.
    pub plaintext: bool,
    /// The join token (`--join-token`, `--join-token-file`, or
    /// `join_token_file`), used only while the node has no material.
    pub join_token: Option<Secret>,
    /// The file the join token was read from (`--join-token-file` or
    /// `join_token_file`; none for `--join-token`): its mode and owner are
    /// checked before it is used (`security::token::token_file_problem`).
    pub join_token_file: Option<PathBuf>,
    /// Join endpoints written in the role file (`host` or `host:port`,
    /// port default paths::DEFAULT_JOIN_PORT), tried before the servers
    /// discovery finds.
    pub join: Vec<String>,
    /// Where this node serves joins when it holds the CA (`join_listen`;
    /// default: the private address, port 4681).
    pub join_listen: SocketAddr,
    /// Renew the node certificate when less than this is left
    /// (`renew_before_days`).
    pub renew_before: Duration,
    /// Lifetime of the node certificates this node signs when it holds the
    /// CA (`cert_days`).
    pub cert_lifetime: Duration,
    /// The node's material in `<config>/security/`, when present.
    pub material: Option<NodeMaterial>,
    /// Whether `<config>/cluster/` is present: this node holds the CA and
    /// serves joins.
    pub ca_holder: bool,
}

impl SecurityRole {
    /// Whether the node must join (again) with its join token before it
    /// can plan: secured, with a token, and no material yet, or material
    /// whose certificate expired on a node that holds no CA (it cannot
    /// renew over mutual TLS; a CA holder signs its own renewal). The old
    /// material stays as the previous generation until the new set is
    /// written (`security::store`).
    pub fn must_join(&self, now: u64) -> bool {
        if self.plaintext || self.join_token.is_none() {
            return false;
        }
        match &self.material {
            None => true,
            Some(m) => !self.ca_holder && m.is_expired(now),
        }
    }
}

/// Now, Unix seconds (0 before 1970).
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl NodeMaterial {
    /// Whether the node certificate (as `node.json` records it) has
    /// expired at `now`.
    pub fn is_expired(&self, now: u64) -> bool {
        now >= self.secrets.not_after
    }
}

/// The node's own TLS files and secrets.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NodeMaterial {
    /// `<config>/security`.
    pub dir: PathBuf,
    /// The cluster CA certificate.
    pub ca_file: PathBuf,
    /// The node certificate (every name the node's roles need).
    pub cert_file: PathBuf,
    /// The node key, for the supervisor (root, 0600).
    pub key_file: PathBuf,
    /// The node key copy owned by the Consul user.
    pub consul_key_file: PathBuf,
    /// The node key copy owned by the Nomad user.
    pub nomad_key_file: PathBuf,
    /// `node.json`.
    pub secrets: NodeSecrets,
}

/// `node.json` as the role holds it: values in [`Secret`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NodeSecrets {
    /// `sha256:<hex>` of the cluster CA's public key (its pin).
    pub ca_sha256: String,
    /// DNS names in the node certificate.
    pub names: Vec<String>,
    /// IP addresses in the node certificate.
    pub ips: Vec<IpAddr>,
    /// Certificate validity, Unix seconds.
    pub not_before: u64,
    /// Certificate expiry, Unix seconds.
    pub not_after: u64,
    /// Consul's primary datacenter (the init node's), for ACLs.
    pub primary_datacenter: String,
    /// Consul gossip key.
    pub consul_gossip_key: Secret,
    /// Nomad gossip key.
    pub nomad_gossip_key: Secret,
    /// Whether the cluster runs with ACLs (default deny).
    pub acl_enabled: bool,
    /// ACL tokens this node holds.
    pub acl: AclTokens,
}

/// ACL tokens of one node; each present only where the node's roles use it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct AclTokens {
    /// Consul `acl.tokens.agent` (every Consul agent).
    pub consul_agent: Option<Secret>,
    /// The supervisor's token for Consul (health reads, registration,
    /// joins).
    pub consul_supervisor: Option<Secret>,
    /// Consul `acl.tokens.replication` (servers outside the primary DC).
    pub consul_replication: Option<Secret>,
    /// Consul `acl.tokens.initial_management` (the init node only).
    pub consul_initial_management: Option<Secret>,
    /// Nomad's token for Consul (`consul.token`).
    pub nomad_consul: Option<Secret>,
    /// The supervisor's token for Nomad.
    pub nomad_supervisor: Option<Secret>,
    /// Nomad's bootstrap secret (the init node only).
    pub nomad_bootstrap: Option<Secret>,
}

/// `node.json` on disk: the same facts with plain strings. Written by
/// `security` (init, join, renewal) with mode 0600, read by the role
/// loader, which turns it into [`NodeSecrets`].
#[derive(Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSecretsFile {
    /// Format version: 1.
    pub version: u32,
    /// See [`NodeSecrets::ca_sha256`].
    pub ca_sha256: String,
    /// See [`NodeSecrets::names`].
    pub names: Vec<String>,
    /// See [`NodeSecrets::ips`].
    pub ips: Vec<IpAddr>,
    /// See [`NodeSecrets::not_before`].
    pub not_before: u64,
    /// See [`NodeSecrets::not_after`].
    pub not_after: u64,
    /// See [`NodeSecrets::primary_datacenter`].
    pub primary_datacenter: String,
    /// See [`NodeSecrets::consul_gossip_key`].
    pub consul_gossip_key: String,
    /// See [`NodeSecrets::nomad_gossip_key`].
    pub nomad_gossip_key: String,
    /// See [`NodeSecrets::acl_enabled`].
    pub acl_enabled: bool,
    /// See [`NodeSecrets::acl`].
    #[serde(default)]
    pub acl: AclTokensFile,
}

/// [`AclTokens`] on disk.
#[derive(Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclTokensFile {
    /// See [`AclTokens::consul_agent`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consul_agent: Option<String>,
    /// See [`AclTokens::consul_supervisor`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consul_supervisor: Option<String>,
    /// See [`AclTokens::consul_replication`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consul_replication: Option<String>,
    /// See [`AclTokens::consul_initial_management`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consul_initial_management: Option<String>,
    /// See [`AclTokens::nomad_consul`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nomad_consul: Option<String>,
    /// See [`AclTokens::nomad_supervisor`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nomad_supervisor: Option<String>,
    /// See [`AclTokens::nomad_bootstrap`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nomad_bootstrap: Option<String>,
}

impl NodeSecretsFile {
    /// The role's view: every secret wrapped.
    pub fn into_secrets(self) -> NodeSecrets {
        let w = |o: Option<String>| o.map(Secret::new);
        NodeSecrets {
            ca_sha256: self.ca_sha256,
            names: self.names,
            ips: self.ips,
            not_before: self.not_before,
            not_after: self.not_after,
            primary_datacenter: self.primary_datacenter,
            consul_gossip_key: Secret::new(self.consul_gossip_key),
            nomad_gossip_key: Secret::new(self.nomad_gossip_key),
            acl_enabled: self.acl_enabled,
            acl: AclTokens {
                consul_agent: w(self.acl.consul_agent),
                consul_supervisor: w(self.acl.consul_supervisor),
                consul_replication: w(self.acl.consul_replication),
                consul_initial_management: w(self.acl.consul_initial_management),
                nomad_consul: w(self.acl.nomad_consul),
                nomad_supervisor: w(self.acl.nomad_supervisor),
                nomad_bootstrap: w(self.acl.nomad_bootstrap),
            },
        }
    }
}

/// Shows the facts, never a key: the gossip keys as `<redacted>`.
impl std::fmt::Debug for NodeSecretsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSecretsFile")
            .field("version", &self.version)
            .field("ca_sha256", &self.ca_sha256)
            .field("names", &self.names)
            .field("ips", &self.ips)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("primary_datacenter", &self.primary_datacenter)
            .field("consul_gossip_key", &super::REDACTED)
            .field("nomad_gossip_key", &super::REDACTED)
            .field("acl_enabled", &self.acl_enabled)
            .field("acl", &self.acl)
            .finish()
    }
}

/// Shows which tokens are present, never their values.
impl std::fmt::Debug for AclTokensFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |o: &Option<String>| o.as_ref().map(|_| super::REDACTED);
        f.debug_struct("AclTokensFile")
            .field("consul_agent", &shown(&self.consul_agent))
            .field("consul_supervisor", &shown(&self.consul_supervisor))
            .field("consul_replication", &shown(&self.consul_replication))
            .field(
                "consul_initial_management",
                &shown(&self.consul_initial_management),
            )
            .field("nomad_consul", &shown(&self.nomad_consul))
            .field("nomad_supervisor", &shown(&self.nomad_supervisor))
            .field("nomad_bootstrap", &shown(&self.nomad_bootstrap))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_the_file_forms_shows_no_key_or_token() {
        let f = NodeSecretsFile {
            version: 1,
            consul_gossip_key: "c29tZS1nb3NzaXAta2V5".into(),
            nomad_gossip_key: "b3RoZXItZ29zc2lwLWtleQ==".into(),
            acl: AclTokensFile {
                consul_agent: Some("9d1c3a52-0000-4000-8000-000000000001".into()),
                nomad_bootstrap: Some("9d1c3a52-0000-4000-8000-000000000002".into()),
                ..AclTokensFile::default()
            },
            ..NodeSecretsFile::default()
        };
        let shown = format!("{f:?}");
        for secret in [
            "c29tZS1nb3NzaXAta2V5",
            "b3RoZXItZ29zc2lwLWtleQ==",
            "9d1c3a52-0000-4000-8000-000000000001",
            "9d1c3a52-0000-4000-8000-000000000002",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(
            shown.contains("consul_agent: Some(\"<redacted>\")"),
            "{shown}"
        );
        assert!(shown.contains("consul_supervisor: None"), "{shown}");
    }
}

//! The join endpoint's messages (JSON over HTTPS). `POST /v1/join` carries
//! the join token as `Authorization: Bearer <id>.<secret>`; `POST
//! /v1/renew` is authenticated by the node's current certificate (mutual
//! TLS). Errors are `{"error": "..."}` with 400 (bad request or CSR), 401
//! (unknown token or wrong secret), 403 (expired, revoked, or roles the
//! token does not allow), 413 (body over the limit).

use std::net::IpAddr;

use crate::role::security::NodeSecretsFile;

/// Largest request body the endpoint reads.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Largest response body the client reads.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// `POST /v1/join` and `POST /v1/renew`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// Node name (the role file's rules).
    pub node: String,
    /// Role names as in the role file.
    pub roles: Vec<String>,
    /// Nomad region.
    pub region: String,
    /// Datacenter.
    pub datacenter: String,
    /// The node's addresses, to be IP SANs.
    pub ips: Vec<IpAddr>,
    /// PKCS#10 certificate request (PEM) for exactly the names the roles
    /// need; its key never leaves the node.
    pub csr: String,
}

/// The answer to a join or renewal. Its `Debug` leaves out the handover
/// (it holds the CA key); the secrets' own `Debug` redacts them.
#[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinResponse {
    /// The signed node certificate (PEM).
    pub certificate: String,
    /// The cluster CA certificate (PEM).
    pub ca: String,
    /// What the node writes as its `node.json`.
    pub secrets: NodeSecretsFile,
    /// For a server joining with a token that allows servers: what makes
    /// it a CA holder too (CA key, cluster file, token records), as JSON
    /// owned by the security module.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<serde_json::Value>,
}

impl std::fmt::Debug for JoinResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinResponse")
            .field("certificate", &self.certificate)
            .field("ca", &self.ca)
            .field("secrets", &self.secrets)
            .field(
                "cluster",
                &self.cluster.as_ref().map(|_| crate::role::REDACTED),
            )
            .finish()
    }
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorBody {
    /// What was refused and why; never holds a secret.
    pub error: String,
}

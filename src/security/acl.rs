//! ACL bootstrap on the init node. Consul bootstraps itself from
//! `acl.tokens.initial_management` (rendered on the init node only); once
//! the local Consul has a leader, this task creates the policies and the
//! tokens whose SecretIDs `cluster init` chose (`PUT /v1/acl/policy`, `PUT
//! /v1/acl/token` with `SecretID`, Consul API docs "ACL Policies" and "ACL
//! Tokens"), so the tokens joining nodes already hold start to work. Nomad:
//! once its server has a leader, `POST /v1/acl/bootstrap` with the
//! pre-chosen `BootstrapSecret` (Nomad API docs "ACL Tokens", "Bootstrap
//! Token"), the supervisors' policies, a token for the server supervisors,
//! whose SecretID goes into `cluster.json` (`nomad_supervisor`) so later
//! joins and renewals hand it out, and one for the client-only
//! supervisors whose SecretID is derived from it
//! ([`nomad_client_supervisor_secret`], created with that SecretID: Nomad's
//! operator-chosen tokens, Nomad 2.0); this node's own `node.json` is then
//! renewed locally and the daemon told ([`DaemonEvent::Renewed`]).
//!
//! Idempotent: a policy or token that exists already, or a bootstrap done
//! already, counts as done, so a restarted init node runs it again safely.
//! Owns the policies' rules and the order of the calls; it uses its own
//! small HTTPS client because these calls carry the management token, not
//! the supervisor's (which the agent client sends on every request).
//!
//! ## Endpoints and rights
//!
//! Every agent endpoint a supervisor calls with its own token, and the
//! right each needs by the Consul and Nomad API docs ("ACL Required"
//! column of each endpoint; Consul "ACL Rules" reference):
//!
//! | product | endpoint | needs | server policy | client policy |
//! | --- | --- | --- | --- | --- |
//! | consul | `GET /v1/status/leader`, `/v1/status/peers` | none | | |
//! | consul | `GET /v1/agent/self` | agent:read | agent_prefix write | agent_prefix write |
//! | consul | `GET /v1/agent/members` (`?wan=1`) | node:read (filtered) | node_prefix read | node_prefix read |
//! | consul | `PUT /v1/agent/join/:addr` | agent:write | agent_prefix write | agent_prefix write |
//! | consul | `GET /v1/agent/services` | service:read | service_prefix write | service_prefix read |
//! | consul | `PUT /v1/agent/service/register`, `/deregister/:id` | service:write | service_prefix write | service `hashi-supervisor` write |
//! | consul | `GET /v1/catalog/datacenters` | none | | |
//! | consul | `GET /v1/catalog/nodes` | node:read | node_prefix read | node_prefix read |
//! | consul | `GET /v1/catalog/service/:name` | node:read, service:read | both | both |
//! | consul | `GET /v1/operator/autopilot/health` | operator:read | operator write | operator read |
//! | consul | `POST /v1/operator/raft/transfer-leader` | operator:write | operator write | (servers only) |
//! | consul | `GET`/`PUT`/`DELETE /v1/kv/hashi-supervisor/...` | key:read / key:write | key_prefix write | read; write under [`CLIENT_SLOTS_PREFIX`] |
//! | consul | `PUT /v1/session/create`, `renew`, `destroy` | session:write | session_prefix write | session_prefix write |
//! | consul | `GET /v1/session/info/:id` | session:read | session_prefix write | session_prefix write |
//! | nomad | `GET /v1/agent/health`, `/v1/status/leader` | none | | |
//! | nomad | `GET /v1/agent/self` | agent:read | agent write | agent write |
//! | nomad | `GET /v1/agent/members` | node:read | node read | node read |
//! | nomad | `PUT /v1/agent/join` | agent:write | agent write | agent write |
//! | nomad | `GET`/`PUT /v1/agent/servers` | agent:read / agent:write | agent write | agent write |
//! | nomad | `GET /v1/nodes` | node:read | node read | node read |
//! | nomad | `GET /v1/operator/autopilot/health` | operator:read | operator write | operator read |
//! | nomad | `GET /v1/operator/raft/configuration`, `PUT /v1/operator/raft/transfer-leadership` | management | refused: the restart's election moves leadership | (servers only) |

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Method;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{renew, store};
use crate::paths;
use crate::plan::{ApiTls, Plan};
use crate::role::{NodeRole, Secret};
use crate::supervise::daemon::DaemonEvent;
use crate::vocab::Product;

/// Time one ACL request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between two looks for a leader, or after a failed step.
const RETRY_EVERY: Duration = Duration::from_secs(5);
/// Largest answer read.
const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// One Consul policy: name, description, rules (HCL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The policy's name.
    pub name: &'static str,
    /// What it is for.
    pub description: &'static str,
    /// Its rules.
    pub rules: &'static str,
}

/// Consul agents (`acl.tokens.agent`): register their node, read services
/// (Consul docs, "Create an agent token").
pub const CONSUL_AGENT: Policy = Policy {
    name: "hashi-supervisor-agent",
    description: "Consul agents of hashi-supervisor nodes",
    rules: "node_prefix \"\" { policy = \"write\" }\nservice_prefix \"\" { policy = \"read\" }\n",
};

/// The supervisors of server nodes: health reads, their own
/// registration, joins (`PUT /v1/agent/join` needs agent:write, Consul
/// docs "consul join"), the key/value prefix and sessions of the rollout
/// gate, and operator:write for the upgrade (autopilot health, Raft
/// leadership transfer: Consul docs "ACL Rules", operator).
pub const CONSUL_SUPERVISOR: Policy = Policy {
    name: "hashi-supervisor",
    description: "hashi-supervisor's own calls",
    rules: "agent_prefix \"\" { policy = \"write\" }\nnode_prefix \"\" { policy = \"read\" }\n\
            service_prefix \"\" { policy = \"write\" }\noperator = \"write\"\n\
            key_prefix \"hashi-supervisor/\" { policy = \"write\" }\nsession_prefix \"\" { policy = \"write\" }\n",
};

/// The supervisors of client-only nodes (no Consul or Nomad server): their
/// own node's `hashi-supervisor` service, reads, joins of the local agent
/// (one token for every client, so `agent_prefix ""`: a rule per node name
/// would need a token per node), autopilot health for the upgrade gate
/// (`operator = "read"`), read on the `hashi-supervisor/` key/value prefix
/// (pause records, server locks) and write only on the client upgrade
/// slots under [`CLIENT_SLOTS_PREFIX`], and sessions for those slots. No
/// other service, no operator write, no ACL rights. See the module doc
/// ("Endpoints and rights").
pub const CONSUL_SUPERVISOR_CLIENT: Policy = Policy {
    name: "hashi-supervisor-client",
    description: "hashi-supervisor's own calls on client-only nodes",
    rules: "agent_prefix \"\" { policy = \"write\" }\nnode_prefix \"\" { policy = \"read\" }\n\
            service \"hashi-supervisor\" { policy = \"write\" }\nservice_prefix \"\" { policy = \"read\" }\n\
            operator = \"read\"\n\
            key_prefix \"hashi-supervisor/\" { policy = \"read\" }\n\
            key_prefix \"hashi-supervisor/upgrade/clients/\" { policy = \"write\" }\n\
            session_prefix \"\" { policy = \"write\" }\n",
};

/// The key/value prefix of the client upgrade slots
/// (`<prefix><product>/<dc>/slot-<i>`), the only keys a client-only
/// supervisor may write.
pub const CLIENT_SLOTS_PREFIX: &str = "hashi-supervisor/upgrade/clients/";

/// A SecretID derived one way from `secret` for `purpose` (SHA-256 of
/// both, shaped as a UUID v4).
fn derived_uuid(purpose: &str, secret: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(format!("{purpose}\n{secret}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The SecretID of the client-only supervisors' Consul token, derived from
/// the server supervisors' one (one way: SHA-256, shaped as a UUID v4), so
/// every CA holder can hand it out without a new `cluster.json` field and a
/// client's token reveals nothing of the servers'.
pub fn consul_client_supervisor_secret(server_secret: &str) -> String {
    derived_uuid("hashi-supervisor client token", server_secret)
}

/// The SecretID of the client-only supervisors' Nomad token, derived one
/// way from the server supervisors' Nomad token as the Consul one is
/// ([`consul_client_supervisor_secret`], another purpose string, so the
/// two never coincide).
pub fn nomad_client_supervisor_secret(server_secret: &str) -> String {
    derived_uuid("hashi-supervisor nomad client token", server_secret)
}

/// The AccessorID the client-only supervisors' Nomad token is created
/// with (derived from its SecretID; an accessor is public).
pub fn nomad_client_supervisor_accessor(client_secret: &str) -> String {
    derived_uuid("hashi-supervisor nomad client accessor", client_secret)
}

/// Servers outside the primary datacenter (`acl.tokens.replication`):
/// acl:write, operator:write, service:read and intention:read (Consul
/// docs, "Create a replication token").
pub const CONSUL_REPLICATION: Policy = Policy {
    name: "hashi-supervisor-replication",
    description: "ACL replication of secondary datacenters",
    rules: "acl = \"write\"\noperator = \"write\"\n\
            service_prefix \"\" {\n  policy = \"read\"\n  intentions = \"read\"\n}\n",
};

/// Nomad's token for Consul (`consul.token`): register its services and
/// checks, read agents and nodes.
pub const CONSUL_NOMAD: Policy = Policy {
    name: "hashi-supervisor-nomad",
    description: "Nomad agents' Consul integration",
    rules: "agent_prefix \"\" { policy = \"read\" }\nnode_prefix \"\" { policy = \"write\" }\n\
            service_prefix \"\" { policy = \"write\" }\n",
};

/// The server supervisors' Nomad policy: health and membership reads,
/// `agent` write for joins (`PUT /v1/agent/join`), and `operator` write
/// for the upgrade. Nomad's leadership transfer and Raft configuration
/// need a management token (Nomad API docs "Operator Raft"), which no
/// supervisor holds: there the restart's election picks the new leader.
/// See the module doc
/// ("Endpoints and rights").
pub const NOMAD_SUPERVISOR: Policy = Policy {
    name: "hashi-supervisor",
    description: "hashi-supervisor's own calls",
    rules: "agent { policy = \"write\" }\nnode { policy = \"read\" }\noperator { policy = \"write\" }\n",
};

/// The client-only supervisors' Nomad policy: `agent` write (its own
/// agent's servers list, `PUT /v1/agent/servers`), `node` read (`GET
/// /v1/nodes`, `/v1/agent/members`) and `operator` read (autopilot health
/// for the upgrade gate). Its token's SecretID is
/// [`nomad_client_supervisor_secret`] of the servers' one.
pub const NOMAD_SUPERVISOR_CLIENT: Policy = Policy {
    name: "hashi-supervisor-client",
    description: "hashi-supervisor's own calls on client-only nodes",
    rules: "agent { policy = \"write\" }\nnode { policy = \"read\" }\noperator { policy = \"read\" }\n",
};

/// Why a step failed (retried by the task).
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    /// The request did not complete.
    #[error("failed to {method} {url}")]
    Request {
        /// The method.
        method: String,
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// An unexpected answer.
    #[error("{method} {url} answered {status}: {body}")]
    Status {
        /// The method.
        method: String,
        /// The URL.
        url: String,
        /// The status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The client could not be set up, or a file not read or written.
    #[error("{0}")]
    Setup(String),
}

/// Whether an answer means "exists already": Consul's "already exists" /
/// "already in use" (400), Nomad's "ACL bootstrap already done" (400).
pub fn is_already_done(status: u16, body: &str) -> bool {
    (400..500).contains(&status)
        && [
            "already exists",
            "already in use",
            "already done",
            "no longer allowed",
        ]
        .iter()
        .any(|m| body.contains(m))
}

/// The body of `PUT /v1/acl/policy` (Consul).
pub fn consul_policy_body(p: &Policy) -> serde_json::Value {
    serde_json::json!({ "Name": p.name, "Description": p.description, "Rules": p.rules })
}

/// The body of `PUT /v1/acl/token` (Consul) with a chosen SecretID.
pub fn consul_token_body(secret: &Secret, policy: &Policy, description: &str) -> serde_json::Value {
    serde_json::json!({
        "SecretID": secret.expose(),
        "Description": description,
        "Policies": [{ "Name": policy.name }],
        "Local": false,
    })
}

/// The `SecretID` of a token answer.
fn secret_of(answer: &str) -> Result<String, AclError> {
    let v: serde_json::Value = serde_json::from_str(answer)
        .map_err(|e| AclError::Setup(format!("nomad's token answer: {e}")))?;
    v.get("SecretID")
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| AclError::Setup("nomad's token answer has no SecretID".into()))
}

/// The body of `POST /v1/acl/token` (Nomad) for the client-only
/// supervisors' token: its chosen AccessorID and SecretID (Nomad 2.0's
/// operator-generated tokens), [`NOMAD_SUPERVISOR_CLIENT`], global.
pub fn nomad_client_token_body(secret: &Secret) -> serde_json::Value {
    serde_json::json!({
        "AccessorID": nomad_client_supervisor_accessor(secret.expose()),
        "SecretID": secret.expose(),
        "Name": "hashi-supervisor-client",
        "Type": "client",
        "Policies": [NOMAD_SUPERVISOR_CLIENT.name],
        "Global": true,
    })
}

/// An agent API reached over HTTPS with the node's certificate.
struct Api {
    http: reqwest::Client,
    base: String,
    header: &'static str,
}

impl Api {
    fn new(product: Product, addr: SocketAddr, tls: &ApiTls) -> Result<Self, AclError> {
        let setup = |what: &str, e: &dyn std::fmt::Display| AclError::Setup(format!("{what}: {e}"));
        let read = |p: &PathBuf| {
            crate::role::file::read_regular(p, 64 * 1024)
                .map_err(|e| setup(&format!("failed to read {}", p.display()), &e))
        };
        let ca = reqwest::Certificate::from_pem(&read(&tls.ca_file)?)
            .map_err(|e| setup("the CA", &e))?;
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .resolve(&tls.server_name, addr)
            .timeout(REQUEST_TIMEOUT);
        if let Some(c) = &tls.client_cert {
            let mut pem = read(&c.cert_file)?;
            pem.extend_from_slice(&read(&c.key_file)?);
            let id = reqwest::Identity::from_pem(&pem)
                .map_err(|_| AclError::Setup("the node certificate or key is not usable".into()))?;
            b = b.identity(id);
        }
        Ok(Self {
            http: b.build().map_err(|e| setup("the ACL client", &e))?,
            base: format!("https://{}:{}", tls.server_name, addr.port()),
            header: match product {
                Product::Consul => "x-consul-token",
                Product::Nomad => "x-nomad-token",
            },
        })
    }

    /// Sends `method path` with `token` and a JSON body; status and body.
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&Secret>,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, String), AclError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(t) = token {
            let mut v = reqwest::header::HeaderValue::from_str(t.expose())
                .map_err(|_| AclError::Setup("an ACL token is not a header value".into()))?;
            v.set_sensitive(true);
            req = req.header(self.header, v);
        }
        if let Some(b) = body {
            let bytes = serde_json::to_vec(b)
                .map_err(|e| AclError::Setup(format!("failed to encode a request: {e}")))?;
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(bytes);
        }
        let err = |source| AclError::Request {
            method: method.to_string(),
            url: url.clone(),
            source,
        };
        let resp = req.send().await.map_err(err)?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(err)?;
        let text =
            String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_ANSWER_BYTES)]).into_owned();
        Ok((status, text))
    }

    /// Sends and requires 200, or an "exists already" answer.
    async fn ensure(
        &self,
        method: Method,
        path: &str,
        token: &Secret,
        body: &serde_json::Value,
    ) -> Result<String, AclError> {
        let (status, text) = self
            .call(method.clone(), path, Some(token), Some(body))
            .await?;
        if status == 200 || is_already_done(status, &text) {
            return Ok(text);
        }
        Err(AclError::Status {
            method: method.to_string(),
            url: format!("{}{path}", self.base),
            status,
            body: text.chars().take(200).collect(),
        })
    }

    async fn has_leader(&self, token: Option<&Secret>) -> bool {
        matches!(
            self.call(Method::GET, "/v1/status/leader", token, None).await,
            Ok((200, body)) if body.trim().trim_matches('"').len() > 1
        )
    }
}

/// The init node's ACL bootstrap task.
pub struct AclBootstrap {
    /// The role in force (the init node's).
    pub role: NodeRole,
    /// Its plan (the agents' API addresses and TLS settings).
    pub plan: Plan,
    /// Where the daemon learns that `node.json` changed.
    pub events: mpsc::UnboundedSender<DaemonEvent>,
    /// Called with the node's tokens after the local renewal that handed it
    /// the Nomad token (the supervisor's own client takes it).
    pub on_renewed: std::sync::Arc<dyn Fn(&crate::role::security::AclTokens) + Send + Sync>,
}

impl std::fmt::Debug for AclBootstrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AclBootstrap")
            .field("node", &self.role.node_name)
            .finish_non_exhaustive()
    }
}

impl AclBootstrap {
    /// Whether `role` is the init node of an ACL cluster (it holds a
    /// bootstrap token).
    pub fn applies(role: &NodeRole) -> bool {
        role.security.ca_holder
            && role.security.material.as_ref().is_some_and(|m| {
                m.secrets.acl_enabled
                    && (m.secrets.acl.consul_initial_management.is_some()
                        || m.secrets.acl.nomad_bootstrap.is_some())
            })
    }

    /// Runs until both products are done or `cancel`.
    pub async fn run(self, cancel: CancellationToken) {
        let mut consul_done = false;
        let mut nomad_done = false;
        loop {
            if !consul_done {
                match self.consul().await {
                    Ok(done) => consul_done = done,
                    Err(e) => {
                        tracing::warn!(error = %super::join_server::error_chain(&e), "consul ACL bootstrap step failed; retrying")
                    }
                }
            }
            if !nomad_done {
                match self.nomad().await {
                    Ok(done) => nomad_done = done,
                    Err(e) => {
                        tracing::warn!(error = %super::join_server::error_chain(&e), "nomad ACL bootstrap step failed; retrying")
                    }
                }
            }
            if consul_done && nomad_done {
                tracing::info!("ACL bootstrap complete");
                return;
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(RETRY_EVERY) => {}
            }
        }
    }

    fn api(&self, product: Product) -> Result<Option<Api>, AclError> {
        let Some(a) = self.plan.agent(product) else {
            return Ok(None);
        };
        let Some(tls) = &a.api_tls else {
            return Ok(None);
        };
        Api::new(product, a.http_addr, tls).map(Some)
    }

    /// Consul: true when done (or nothing to do here).
    async fn consul(&self) -> Result<bool, AclError> {
        let Some(m) = &self.role.security.material else {
            return Ok(true);
        };
        let Some(mgmt) = &m.secrets.acl.consul_initial_management else {
            return Ok(true);
        };
        let Some(api) = self.api(Product::Consul)? else {
            return Ok(true);
        };
        if !api.has_leader(Some(mgmt)).await {
            return Ok(false);
        }
        let cluster = self.cluster_file()?;
        let a = &cluster.acl;
        let client = a
            .consul_supervisor
            .as_deref()
            .map(consul_client_supervisor_secret);
        let tokens = [
            (&CONSUL_AGENT, &a.consul_agent, "Consul agents"),
            (&CONSUL_SUPERVISOR, &a.consul_supervisor, "hashi-supervisor"),
            (
                &CONSUL_SUPERVISOR_CLIENT,
                &client,
                "hashi-supervisor on client-only nodes",
            ),
            (
                &CONSUL_REPLICATION,
                &a.consul_replication,
                "ACL replication",
            ),
            (&CONSUL_NOMAD, &a.nomad_consul, "Nomad's Consul integration"),
        ];
        for (policy, secret, description) in tokens {
            let Some(secret) = secret else { continue };
            api.ensure(
                Method::PUT,
                "/v1/acl/policy",
                mgmt,
                &consul_policy_body(policy),
            )
            .await?;
            api.ensure(
                Method::PUT,
                "/v1/acl/token",
                mgmt,
                &consul_token_body(&Secret::new(secret.clone()), policy, description),
            )
            .await?;
        }
        tracing::info!("consul ACL policies and tokens are in place");
        Ok(true)
    }

    /// Nomad: true when done (or nothing to do here).
    async fn nomad(&self) -> Result<bool, AclError> {
        let Some(m) = &self.role.security.material else {
            return Ok(true);
        };
        let Some(bootstrap) = &m.secrets.acl.nomad_bootstrap else {
            return Ok(true);
        };
        let Some(api) = self.api(Product::Nomad)? else {
            return Ok(true);
        };
        if !api.has_leader(None).await {
            return Ok(false);
        }
        api.ensure(
            Method::POST,
            "/v1/acl/bootstrap",
            bootstrap,
            &serde_json::json!({ "BootstrapSecret": bootstrap.expose() }),
        )
        .await?;
        for p in [&NOMAD_SUPERVISOR, &NOMAD_SUPERVISOR_CLIENT] {
            api.ensure(
                Method::POST,
                &format!("/v1/acl/policy/{}", p.name),
                bootstrap,
                &serde_json::json!({ "Name": p.name, "Description": p.description, "Rules": p.rules }),
            )
            .await?;
        }
        let mut cluster = self.cluster_file()?;
        let server_secret = match &cluster.acl.nomad_supervisor {
            Some(s) => s.clone(),
            None => {
                // Nomad chooses this SecretID itself.
                let answer = api
                    .ensure(
                        Method::POST,
                        "/v1/acl/token",
                        bootstrap,
                        &serde_json::json!({
                            "Name": "hashi-supervisor",
                            "Type": "client",
                            "Policies": [NOMAD_SUPERVISOR.name],
                            "Global": true,
                        }),
                    )
                    .await?;
                secret_of(&answer)?
            }
        };
        if cluster.acl.nomad_supervisor.is_none() {
            cluster.acl.nomad_supervisor = Some(server_secret.clone());
            let dir = self.cluster_dir();
            let c = cluster.clone();
            tokio::task::spawn_blocking(move || store::save_cluster_file(&dir, &c))
                .await
                .map_err(|e| AclError::Setup(format!("the writer failed: {e}")))?
                .map_err(|e| AclError::Setup(super::join_server::error_chain(&e)))?;
        }
        // Saved first, so a retry never makes a second server token; a
        // client that gets its derived token before it exists is refused
        // until this step is done.
        match self
            .ensure_nomad_client_token(&api, bootstrap, &server_secret)
            .await
        {
            Ok(true) => {}
            Ok(false) => tracing::error!(
                "nomad chose its own SecretID for the client supervisors' token (operator-chosen SecretIDs need Nomad 2.0 or later): the supervisors of client-only nodes get no working Nomad token"
            ),
            Err(AclError::Status { status, body, .. }) if (400..500).contains(&status) => {
                tracing::error!(
                    status,
                    answer = %body,
                    "nomad refused the client supervisors' token with a chosen SecretID (operator-chosen SecretIDs need Nomad 2.0 or later): the supervisors of client-only nodes get no working Nomad token"
                );
            }
            Err(e) => return Err(e),
        }
        // This node's own node.json gets the token: a local renewal.
        let renewed = renew::renew(&self.role, &[])
            .await
            .map_err(|e| AclError::Setup(super::join_server::error_chain(&e)))?;
        (self.on_renewed)(&renewed.into_secrets().acl);
        let _ = self.events.send(DaemonEvent::Renewed);
        tracing::info!("nomad ACLs bootstrapped; the supervisors' token is handed out from now");
        Ok(true)
    }

    /// Creates the client-only supervisors' Nomad token with the SecretID
    /// derived from `server_secret` unless it exists already (`GET
    /// /v1/acl/token/self` with it answers 200). A Nomad that does not take
    /// an operator-chosen SecretID (before 2.0) answers with another one:
    /// that token is deleted again and the answer is false.
    async fn ensure_nomad_client_token(
        &self,
        api: &Api,
        bootstrap: &Secret,
        server_secret: &str,
    ) -> Result<bool, AclError> {
        let secret = Secret::new(nomad_client_supervisor_secret(server_secret));
        let (status, _) = api
            .call(Method::GET, "/v1/acl/token/self", Some(&secret), None)
            .await?;
        if status == 200 {
            return Ok(true);
        }
        let answer = api
            .ensure(
                Method::POST,
                "/v1/acl/token",
                bootstrap,
                &nomad_client_token_body(&secret),
            )
            .await?;
        if secret_of(&answer)? == secret.expose() {
            return Ok(true);
        }
        let v: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
        if let Some(a) = v.get("AccessorID").and_then(serde_json::Value::as_str) {
            let _ = api
                .call(
                    Method::DELETE,
                    &format!("/v1/acl/token/{a}"),
                    Some(bootstrap),
                    None,
                )
                .await;
        }
        Ok(false)
    }

    fn cluster_dir(&self) -> PathBuf {
        self.role.config_dir.join(paths::CLUSTER_SUBDIR)
    }

    fn cluster_file(&self) -> Result<store::ClusterFile, AclError> {
        store::load_cluster_dir(&self.cluster_dir())
            .map(|m| m.cluster)
            .map_err(|e| AclError::Setup(super::join_server::error_chain(&e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn existing_policies_tokens_and_bootstraps_count_as_done() {
        assert!(is_already_done(
            400,
            "Invalid Policy: A Policy with Name \"x\" already exists"
        ));
        assert!(is_already_done(
            400,
            "Invalid Token: SecretID is already in use"
        ));
        assert!(is_already_done(
            400,
            "ACL bootstrap already done (reset index: 7)"
        ));
        assert!(is_already_done(
            403,
            "Permission denied: ACL bootstrap no longer allowed (reset index: 3)"
        ));
        assert!(!is_already_done(403, "Permission denied"));
        assert!(!is_already_done(500, "already exists"));
    }

    #[test]
    fn a_consul_token_body_carries_the_chosen_secret_and_the_policy_by_name() {
        let b = consul_token_body(
            &Secret::new("11111111-1111-4111-8111-111111111111"),
            &CONSUL_AGENT,
            "Consul agents",
        );
        assert_eq!(b["SecretID"], "11111111-1111-4111-8111-111111111111");
        assert_eq!(b["Policies"][0]["Name"], "hashi-supervisor-agent");
        assert_eq!(b["Local"], false);
    }

    #[test]
    fn policies_parse_as_hcl_and_grant_what_the_callers_need() {
        for p in [
            CONSUL_AGENT,
            CONSUL_SUPERVISOR,
            CONSUL_SUPERVISOR_CLIENT,
            CONSUL_REPLICATION,
            CONSUL_NOMAD,
            NOMAD_SUPERVISOR,
            NOMAD_SUPERVISOR_CLIENT,
        ] {
            let v: hcl::Value =
                hcl::from_str(p.rules).unwrap_or_else(|e| panic!("{}: {e}", p.name));
            assert!(v.as_object().is_some_and(|o| !o.is_empty()), "{}", p.name);
        }
        assert!(
            CONSUL_SUPERVISOR
                .rules
                .contains("agent_prefix \"\" { policy = \"write\" }")
        );
        assert!(CONSUL_REPLICATION.rules.contains("acl = \"write\""));
    }

    fn rules(p: &Policy) -> serde_json::Value {
        let v: hcl::Value = hcl::from_str(p.rules).unwrap();
        serde_json::to_value(v).unwrap()
    }

    #[test]
    fn the_upgrade_gets_the_rules_it_needs_and_clients_only_their_own_service() {
        let s = rules(&CONSUL_SUPERVISOR);
        assert_eq!(s["operator"], "write");
        assert_eq!(s["key_prefix"]["hashi-supervisor/"]["policy"], "write");
        assert_eq!(s["session_prefix"][""]["policy"], "write");
        assert_eq!(s["service_prefix"][""]["policy"], "write");
        let c = rules(&CONSUL_SUPERVISOR_CLIENT);
        assert_eq!(c["service"]["hashi-supervisor"]["policy"], "write");
        assert_eq!(c["service_prefix"][""]["policy"], "read");
        assert_eq!(c["node_prefix"][""]["policy"], "read");
        // Autopilot health for the upgrade gate, nothing more.
        assert_eq!(c["operator"], "read");
        // Pause records and server locks: read only; the client slots:
        // write.
        assert_eq!(c["key_prefix"]["hashi-supervisor/"]["policy"], "read");
        assert_eq!(c["key_prefix"][CLIENT_SLOTS_PREFIX]["policy"], "write");
        assert_eq!(c["key_prefix"].as_object().map(|o| o.len()), Some(2), "{c}");
        assert_eq!(c["session_prefix"][""]["policy"], "write");
        assert!(c.get("acl").is_none(), "{c}");
        assert!(c.get("key").is_none(), "{c}");
        let n = rules(&NOMAD_SUPERVISOR);
        assert_eq!(n["operator"]["policy"], "write");
        assert_eq!(n["agent"]["policy"], "write");
        let nc = rules(&NOMAD_SUPERVISOR_CLIENT);
        assert_eq!(nc["agent"]["policy"], "write");
        assert_eq!(nc["node"]["policy"], "read");
        assert_eq!(nc["operator"]["policy"], "read");
        assert_eq!(nc.as_object().map(|o| o.len()), Some(3), "{nc}");
        assert_ne!(NOMAD_SUPERVISOR_CLIENT.name, NOMAD_SUPERVISOR.name);
    }

    #[test]
    fn the_client_slots_prefix_is_the_agreed_one_under_the_supervisors_prefix() {
        assert_eq!(CLIENT_SLOTS_PREFIX, "hashi-supervisor/upgrade/clients/");
        assert!(CONSUL_SUPERVISOR_CLIENT.rules.contains(CLIENT_SLOTS_PREFIX));
    }

    #[test]
    fn the_nomad_client_token_is_derived_one_way_and_differs_from_the_consul_one() {
        let server = "6a1f1f0e-8a44-4c1b-9d7e-2f4f5c1a9b3d";
        let n = nomad_client_supervisor_secret(server);
        assert_eq!(n, nomad_client_supervisor_secret(server));
        assert_ne!(n, consul_client_supervisor_secret(server));
        assert_ne!(n, server);
        assert!(!n.contains(&server[..8]));
        assert_eq!(n.len(), 36);
        assert_eq!(&n[14..15], "4");
        let a = nomad_client_supervisor_accessor(&n);
        assert_ne!(a, n);
        assert_eq!(a, nomad_client_supervisor_accessor(&n));
    }

    #[test]
    fn narrowing_gives_client_only_nodes_the_derived_tokens_and_servers_their_own() {
        use crate::role::RoleSet;
        use crate::role::security::{AclTokensFile, NodeSecretsFile};
        let secrets = NodeSecretsFile {
            acl: AclTokensFile {
                consul_supervisor: Some("c-server".into()),
                nomad_supervisor: Some("n-server".into()),
                ..AclTokensFile::default()
            },
            ..NodeSecretsFile::default()
        };
        let client = RoleSet {
            nomad_client: true,
            ..RoleSet::default()
        };
        let c = super::super::join_server::narrow(secrets.clone(), client);
        assert_eq!(
            c.acl.consul_supervisor.as_deref(),
            Some(consul_client_supervisor_secret("c-server").as_str())
        );
        assert_eq!(
            c.acl.nomad_supervisor.as_deref(),
            Some(nomad_client_supervisor_secret("n-server").as_str())
        );
        let server = RoleSet {
            nomad_server: true,
            ..RoleSet::default()
        };
        let s = super::super::join_server::narrow(secrets, server);
        assert_eq!(s.acl.consul_supervisor.as_deref(), Some("c-server"));
        assert_eq!(s.acl.nomad_supervisor.as_deref(), Some("n-server"));
    }

    #[test]
    fn the_client_token_is_derived_one_way_as_a_uuid_v4() {
        let server = "6a1f1f0e-8a44-4c1b-9d7e-2f4f5c1a9b3d";
        let a = consul_client_supervisor_secret(server);
        assert_eq!(a, consul_client_supervisor_secret(server));
        assert_ne!(a, consul_client_supervisor_secret("another"));
        assert!(!a.contains(&server[..8]));
        let parts: Vec<&str> = a.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'));
        assert!(matches!(
            parts[3].chars().next(),
            Some('8' | '9' | 'a' | 'b')
        ));
    }
}

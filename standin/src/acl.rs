//! ACL state of the stand-in (Consul `acl {}` with `default_policy =
//! "deny"`, Nomad `acl { enabled = true }`): tokens and policies, the
//! one-time bootstrap, token resolution, and the JSON shapes of the
//! documented ACL API (samples in `tests/data/agent-api/{consul,nomad}/acl_*`).
//!
//! Rules are evaluated for KV and sessions (`kv.rs`) and for the operator
//! endpoints ([`need_of`]: autopilot health needs `operator` read, a
//! leadership transfer `operator` write in Consul and, as the Raft
//! configuration, a management token in Nomad); elsewhere any token that
//! exists may read and write everything (README "ACLs"). Servers keep the state in
//! `<data_dir>/standin-acl.json` (0600) and spread it to the servers of
//! their DC / region with the gossip exchange; clients hold none and ask a
//! server. Not Consul's or Nomad's ACL system, and not meant to be.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::Product;
use crate::config::AgentConfig;
use crate::state::now_ms;

/// Consul's built-in management policy (ID and name as Consul reports them).
pub const GLOBAL_MANAGEMENT_ID: &str = "00000000-0000-0000-0000-000000000001";
pub const GLOBAL_MANAGEMENT: &str = "global-management";
/// Name of the state file in a server's data dir.
pub const STATE_FILE: &str = "standin-acl.json";

/// A token (its Debug never shows the secret).
#[derive(Clone, PartialEq)]
pub struct Token {
    pub accessor: String,
    pub secret: String,
    /// Consul `Description` / Nomad `Name`.
    pub description: String,
    /// Policy names.
    pub policies: Vec<String>,
    pub management: bool,
    /// Nomad `Global` (Consul tokens are global unless `Local`).
    pub global: bool,
    pub created_ms: u64,
    pub index: u64,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("accessor", &self.accessor)
            .field("secret", &"<redacted>")
            .field("description", &self.description)
            .field("policies", &self.policies)
            .field("management", &self.management)
            .finish_non_exhaustive()
    }
}

/// A policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub id: String,
    pub name: String,
    pub description: String,
    pub rules: String,
    pub index: u64,
}

/// An API error: (status, text).
pub type ApiError = (u16, String);

/// Tokens, policies and the bootstrap flag of one DC / region.
#[derive(Default)]
pub struct AclState {
    pub product: Option<Product>,
    pub enabled: bool,
    /// Whether requests without a valid token are refused.
    pub deny: bool,
    initial_management: Option<String>,
    pub tokens: BTreeMap<String, Token>,
    pub policies: BTreeMap<String, Policy>,
    pub bootstrapped: bool,
    /// Raft-like index, bumped on every write.
    pub index: u64,
    file: Option<PathBuf>,
    /// Requests refused for want of a valid token (`/_standin/acl-denied`),
    /// the newest [`DENIED_KEEP`].
    pub denied: Vec<Value>,
    /// Answers of remote token lookups, by (lookup path, secret): the
    /// body and when it came (`crate::acl_api::remote_lookup`).
    pub remote: BTreeMap<(&'static str, String), (String, std::time::Instant)>,
}

impl std::fmt::Debug for AclState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Counts only: no secret in Debug output.
        f.debug_struct("AclState")
            .field("enabled", &self.enabled)
            .field("deny", &self.deny)
            .field("bootstrapped", &self.bootstrapped)
            .field("tokens", &self.tokens.len())
            .field("policies", &self.policies.len())
            .finish_non_exhaustive()
    }
}

/// How many refused requests are kept.
pub const DENIED_KEEP: usize = 1000;

/// A random UUID (v4 layout) from the system RNG.
pub fn uuid() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        // No RNG: fall back to the clock (test-only program).
        let t = now_ms().to_le_bytes();
        b[..8].copy_from_slice(&t);
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// RFC 3339 UTC time of a unix-ms timestamp (no chrono here).
fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        ms % 1000
    )
}

impl AclState {
    /// The state of an agent: the server's file when it exists.
    pub fn load(cfg: &AgentConfig) -> AclState {
        let mut st = AclState {
            product: Some(cfg.product),
            enabled: cfg.acl.enabled,
            deny: cfg.acl.enabled && cfg.acl.default_deny,
            initial_management: cfg
                .acl
                .initial_management
                .clone()
                .map(|t| t.0)
                .filter(|_| cfg.server && cfg.product == Product::Consul),
            file: (cfg.server && !cfg.data_dir.is_empty())
                .then(|| PathBuf::from(&cfg.data_dir).join(STATE_FILE)),
            ..AclState::default()
        };
        if let Some(f) = &st.file {
            if let Ok(text) = std::fs::read_to_string(f) {
                match serde_json::from_str::<Value>(&text) {
                    Ok(v) => {
                        st.merge(&v);
                    }
                    Err(e) => crate::events::log(&format!(
                        "    [WARN] stand-in: ignoring unreadable ACL state {}: {e}",
                        f.display()
                    )),
                }
            }
        }
        // Consul: `initial_management` bootstraps the ACL system once a
        // leader exists (consul:agent/consul/leader.go initializeACLs).
        if st.initial_management.is_some() {
            st.bootstrapped = true;
        }
        st
    }

    fn save(&self) {
        let Some(f) = &self.file else {
            return;
        };
        let tmp = f.with_extension("json.tmp");
        let res = (|| -> std::io::Result<()> {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(self.to_json().to_string().as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&tmp, f)
        })();
        if let Err(e) = res {
            crate::events::log(&format!(
                "    [WARN] stand-in: failed to save ACL state {}: {e}",
                f.display()
            ));
        }
    }

    fn bump(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    /// The token with this secret (the configured `initial_management`
    /// counts as a management token).
    pub fn resolve(&self, secret: &str) -> Option<Token> {
        if secret.is_empty() {
            return None;
        }
        if self.initial_management.as_deref() == Some(secret) {
            return Some(Token {
                accessor: crate::state::node_id_for(&format!("initial-management:{secret}")),
                secret: secret.to_string(),
                description: "Initial Management Token".to_string(),
                policies: vec![GLOBAL_MANAGEMENT.to_string()],
                management: true,
                global: true,
                created_ms: 0,
                index: 1,
            });
        }
        self.tokens.values().find(|t| t.secret == secret).cloned()
    }

    /// `PUT /v1/acl/bootstrap` / `POST /v1/acl/bootstrap`, once.
    pub fn bootstrap(&mut self, secret: Option<String>) -> Result<Token, ApiError> {
        let product = self.product.unwrap_or(Product::Consul);
        if !self.enabled {
            return Err(match product {
                Product::Consul => (401, "ACL support disabled".to_string()),
                Product::Nomad => (400, "ACL support disabled".to_string()),
            });
        }
        if self.bootstrapped {
            let reset = self.index.max(1);
            return Err(match product {
                // consul: structs.ACLBootstrapNotAllowedErr as a permission error.
                Product::Consul => (
                    403,
                    format!(
                        "Permission denied: ACL bootstrap no longer allowed (reset index: {reset})"
                    ),
                ),
                // nomad:nomad/acl_endpoint.go Bootstrap.
                Product::Nomad => (
                    400,
                    format!("ACL bootstrap already done (reset index: {reset})"),
                ),
            });
        }
        let index = self.bump();
        let token = Token {
            accessor: uuid(),
            secret: secret.filter(|s| !s.is_empty()).unwrap_or_else(uuid),
            description: match product {
                Product::Consul => "Bootstrap Token (Global Management)".to_string(),
                Product::Nomad => "Bootstrap Token".to_string(),
            },
            policies: match product {
                Product::Consul => vec![GLOBAL_MANAGEMENT.to_string()],
                Product::Nomad => Vec::new(),
            },
            management: true,
            global: true,
            created_ms: now_ms(),
            index,
        };
        self.bootstrapped = true;
        self.tokens.insert(token.accessor.clone(), token.clone());
        self.save();
        Ok(token)
    }

    /// Create or update a policy by name; returns it.
    pub fn upsert_policy(
        &mut self,
        name: &str,
        description: &str,
        rules: &str,
    ) -> Result<Policy, ApiError> {
        if name.is_empty() {
            return Err((400, "Invalid Policy: no Name is set".to_string()));
        }
        let index = self.bump();
        let id = self
            .policies
            .values()
            .find(|p| p.name == name)
            .map(|p| p.id.clone())
            .unwrap_or_else(uuid);
        let p = Policy {
            id: id.clone(),
            name: name.to_string(),
            description: description.to_string(),
            rules: rules.to_string(),
            index,
        };
        self.policies.insert(id, p.clone());
        self.save();
        Ok(p)
    }

    /// Create a token (`SecretID` and `AccessorID` may be chosen: Consul,
    /// and Nomad 2.0's operator-generated tokens).
    pub fn create_token(
        &mut self,
        secret: Option<String>,
        accessor: Option<String>,
        description: &str,
        policies: Vec<String>,
        management: bool,
        global: bool,
    ) -> Result<Token, ApiError> {
        for p in &policies {
            if p != GLOBAL_MANAGEMENT && !self.policies.values().any(|x| &x.name == p) {
                return Err(match self.product {
                    Some(Product::Nomad) => (400, format!("policy not found: {p}")),
                    _ => (
                        400,
                        format!("Invalid Policy: A Policy with Name {p:?} does not exist"),
                    ),
                });
            }
        }
        if let Some(s) = &secret {
            if self.tokens.values().any(|t| &t.secret == s)
                || self.initial_management.as_deref() == Some(s.as_str())
            {
                return Err((400, "Invalid Token: SecretID is already in use".to_string()));
            }
        }
        let accessor = accessor.filter(|a| !a.is_empty());
        if let Some(a) = &accessor {
            if self.tokens.contains_key(a) {
                return Err((
                    400,
                    "Invalid Token: AccessorID is already in use".to_string(),
                ));
            }
        }
        let index = self.bump();
        let token = Token {
            accessor: accessor.unwrap_or_else(uuid),
            secret: secret.filter(|s| !s.is_empty()).unwrap_or_else(uuid),
            description: description.to_string(),
            policies,
            management,
            global,
            created_ms: now_ms(),
            index,
        };
        self.tokens.insert(token.accessor.clone(), token.clone());
        self.save();
        Ok(token)
    }

    /// Token JSON as the product's API answers it.
    pub fn token_json(&self, t: &Token) -> Value {
        match self.product.unwrap_or(Product::Consul) {
            Product::Consul => {
                let policies: Vec<Value> = t
                    .policies
                    .iter()
                    .map(|name| {
                        let id = if name == GLOBAL_MANAGEMENT {
                            GLOBAL_MANAGEMENT_ID.to_string()
                        } else {
                            self.policies
                                .values()
                                .find(|p| &p.name == name)
                                .map(|p| p.id.clone())
                                .unwrap_or_default()
                        };
                        json!({"ID": id, "Name": name})
                    })
                    .collect();
                json!({
                    "AccessorID": t.accessor, "SecretID": t.secret,
                    "Description": t.description, "Policies": policies,
                    "Local": !t.global, "CreateTime": rfc3339(t.created_ms),
                    "Hash": "", "CreateIndex": t.index, "ModifyIndex": t.index,
                })
            }
            Product::Nomad => json!({
                "AccessorID": t.accessor, "SecretID": t.secret, "Name": t.description,
                "Type": if t.management { "management" } else { "client" },
                "Policies": if t.policies.is_empty() { Value::Null } else { json!(t.policies) },
                "Global": t.global, "CreateTime": rfc3339(t.created_ms),
                "CreateIndex": t.index, "ModifyIndex": t.index,
            }),
        }
    }

    /// Policy JSON as Consul answers it.
    pub fn policy_json(p: &Policy) -> Value {
        json!({
            "ID": p.id, "Name": p.name, "Description": p.description, "Rules": p.rules,
            "Datacenters": Value::Null, "Hash": "", "CreateIndex": p.index, "ModifyIndex": p.index,
        })
    }

    /// The replicated state (gossip between servers of a DC / region).
    pub fn to_json(&self) -> Value {
        let tokens: Vec<Value> = self
            .tokens
            .values()
            .map(|t| {
                json!({"accessor": t.accessor, "secret": t.secret, "description": t.description,
                       "policies": t.policies, "management": t.management, "global": t.global,
                       "created_ms": t.created_ms, "index": t.index})
            })
            .collect();
        let policies: Vec<Value> = self
            .policies
            .values()
            .map(|p| {
                json!({"id": p.id, "name": p.name, "description": p.description,
                       "rules": p.rules, "index": p.index})
            })
            .collect();
        json!({"bootstrapped": self.bootstrapped, "index": self.index,
               "tokens": tokens, "policies": policies})
    }

    /// What a secondary datacenter replicates (Consul
    /// `enable_token_replication`): the policies and the global tokens;
    /// local tokens stay in their datacenter.
    pub fn replication_json(&self) -> Value {
        let mut v = self.to_json();
        if let Some(tokens) = v["tokens"].as_array_mut() {
            tokens.retain(|t| t["global"].as_bool() == Some(true));
        }
        v
    }

    /// Merge a peer's replicated state; returns whether anything changed.
    pub fn merge(&mut self, v: &Value) -> bool {
        let mut changed = false;
        let s = |x: &Value, k: &str| x[k].as_str().unwrap_or_default().to_string();
        let n = |x: &Value, k: &str| x[k].as_u64().unwrap_or(0);
        if v["bootstrapped"].as_bool() == Some(true) && !self.bootstrapped {
            self.bootstrapped = true;
            changed = true;
        }
        for t in v["tokens"].as_array().into_iter().flatten() {
            let tok = Token {
                accessor: s(t, "accessor"),
                secret: s(t, "secret"),
                description: s(t, "description"),
                policies: t["policies"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
                management: t["management"].as_bool().unwrap_or(false),
                global: t["global"].as_bool().unwrap_or(false),
                created_ms: n(t, "created_ms"),
                index: n(t, "index"),
            };
            if tok.accessor.is_empty() || tok.secret.is_empty() {
                continue;
            }
            let take = self
                .tokens
                .get(&tok.accessor)
                .is_none_or(|old| old.index < tok.index);
            if take {
                self.tokens.insert(tok.accessor.clone(), tok);
                changed = true;
            }
        }
        for p in v["policies"].as_array().into_iter().flatten() {
            let pol = Policy {
                id: s(p, "id"),
                name: s(p, "name"),
                description: s(p, "description"),
                rules: s(p, "rules"),
                index: n(p, "index"),
            };
            if pol.id.is_empty() {
                continue;
            }
            let take = self
                .policies
                .get(&pol.id)
                .is_none_or(|old| old.index < pol.index);
            if take {
                // One policy per name: the newer wins.
                self.policies
                    .retain(|id, old| old.name != pol.name || *id == pol.id);
                self.policies.insert(pol.id.clone(), pol);
                changed = true;
            }
        }
        let idx = n(v, "index");
        if idx > self.index {
            self.index = idx;
        }
        if changed {
            self.save();
        }
        changed
    }
}

/// What an endpoint needs beyond a token that exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// `operator = "read"` (Consul) / `operator { policy = "read" }` (Nomad).
    OperatorRead,
    /// `operator` write.
    OperatorWrite,
    /// A management token.
    Management,
}

impl Need {
    /// As the agents name the permission.
    pub fn name(self) -> &'static str {
        match self {
            Need::OperatorRead => "operator:read",
            Need::OperatorWrite => "operator:write",
            Need::Management => "management",
        }
    }
}

/// The right `path` of `product` needs by the API docs' "ACL Required"
/// (Consul operator/autopilot.mdx, operator/raft.mdx; Nomad
/// operator/autopilot.mdx, operator/raft.mdx), None: a token that exists.
pub fn need_of(product: Product, path: &str) -> Option<Need> {
    match (product, path) {
        (_, "/v1/operator/autopilot/health") => Some(Need::OperatorRead),
        (Product::Consul, "/v1/operator/raft/configuration") => Some(Need::OperatorRead),
        (Product::Consul, "/v1/operator/raft/transfer-leader") => Some(Need::OperatorWrite),
        (Product::Nomad, "/v1/operator/raft/configuration")
        | (Product::Nomad, "/v1/operator/raft/transfer-leadership") => Some(Need::Management),
        _ => None,
    }
}

/// The `operator` access `rules` grant (Consul `operator = "<policy>"`,
/// Nomad `operator { policy = "<policy>" }`, HCL or JSON); several
/// policies: `deny` wins, else the widest. None: no `operator` rule.
pub fn operator_access(rules: &[String]) -> Option<crate::kv::Access> {
    rule_access(rules, "operator")
}

/// The access of the top-level rule `key` (`operator`, `acl`): as
/// [`operator_access`].
pub fn rule_access(rules: &[String], key: &str) -> Option<crate::kv::Access> {
    use crate::kv::Access;
    let mut best: Option<Access> = None;
    for text in rules {
        let Ok(doc) = crate::hcl::parse(text)
            .map_err(|_| ())
            .or_else(|()| serde_json::from_str::<Value>(text).map_err(|_| ()))
        else {
            continue;
        };
        let policy = match doc.get(key) {
            Some(Value::String(p)) => p.as_str(),
            Some(v) => v.get("policy").and_then(Value::as_str).unwrap_or(""),
            None => continue,
        };
        let acc = match policy {
            "write" => Access::Write,
            "read" | "list" => Access::Read,
            _ => Access::Deny,
        };
        best = Some(match best {
            Some(Access::Deny) => Access::Deny,
            _ if acc == Access::Deny => Access::Deny,
            Some(b) => b.max(acc),
            None => acc,
        });
    }
    best
}

/// Whether a token (`management`, its policies' `rules`) has `need`.
pub fn allows(management: bool, rules: &[String], need: Need) -> bool {
    use crate::kv::Access;
    if management {
        return true;
    }
    match need {
        Need::Management => false,
        Need::OperatorRead => matches!(operator_access(rules), Some(Access::Read | Access::Write)),
        Need::OperatorWrite => operator_access(rules) == Some(Access::Write),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(product: Product) -> AclState {
        AclState {
            product: Some(product),
            enabled: true,
            deny: true,
            ..AclState::default()
        }
    }

    #[test]
    fn bootstrap_happens_once_with_the_products_error() {
        let mut c = state(Product::Consul);
        let t = c.bootstrap(None).unwrap();
        assert_eq!(c.resolve(&t.secret), Some(t));
        let (code, msg) = c.bootstrap(None).unwrap_err();
        assert_eq!(code, 403);
        assert!(msg.starts_with("Permission denied: ACL bootstrap no longer allowed"));
        let mut n = state(Product::Nomad);
        let t = n.bootstrap(Some("s3cret".into())).unwrap();
        assert_eq!(t.secret, "s3cret");
        let (code, msg) = n.bootstrap(None).unwrap_err();
        assert_eq!(code, 400);
        assert!(msg.starts_with("ACL bootstrap already done"));
    }

    #[test]
    fn replicated_state_merges_newer_records() {
        let mut a = state(Product::Consul);
        a.upsert_policy("agent", "", "node_prefix \"\" { policy = \"write\" }")
            .unwrap();
        let t = a
            .create_token(
                Some("chosen".into()),
                None,
                "agent",
                vec!["agent".into()],
                false,
                true,
            )
            .unwrap();
        let mut b = state(Product::Consul);
        assert!(b.merge(&a.to_json()));
        assert_eq!(b.resolve("chosen").map(|x| x.accessor), Some(t.accessor));
        assert!(
            !b.merge(&a.to_json()),
            "merging the same state changes nothing"
        );
    }

    #[test]
    fn unknown_policy_is_refused() {
        let mut a = state(Product::Consul);
        assert_eq!(
            a.create_token(None, None, "", vec!["nope".into()], false, true)
                .unwrap_err()
                .0,
            400
        );
    }

    #[test]
    fn rfc3339_of_a_known_instant() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn operator_rights_follow_the_docs_for_both_products() {
        let consul_client =
            vec!["operator = \"read\"\nkey_prefix \"x/\" { policy = \"write\" }".to_string()];
        let consul_server = vec!["operator = \"write\"".to_string()];
        let nomad_client = vec!["operator { policy = \"read\" }".to_string()];
        let nomad_server = vec!["operator { policy = \"write\" }".to_string()];
        let none = vec!["node_prefix \"\" { policy = \"read\" }".to_string()];
        let c = |p| need_of(Product::Consul, p).unwrap();
        let n = |p| need_of(Product::Nomad, p).unwrap();
        assert!(allows(
            false,
            &consul_client,
            c("/v1/operator/autopilot/health")
        ));
        assert!(!allows(
            false,
            &consul_client,
            c("/v1/operator/raft/transfer-leader")
        ));
        assert!(allows(
            false,
            &consul_server,
            c("/v1/operator/raft/transfer-leader")
        ));
        assert!(!allows(false, &none, c("/v1/operator/autopilot/health")));
        assert!(allows(
            false,
            &nomad_client,
            n("/v1/operator/autopilot/health")
        ));
        // Nomad's Raft configuration and leadership transfer: management.
        for p in [
            "/v1/operator/raft/configuration",
            "/v1/operator/raft/transfer-leadership",
        ] {
            assert!(!allows(false, &nomad_server, n(p)), "{p}");
            assert!(allows(true, &[], n(p)), "{p}");
        }
        assert_eq!(need_of(Product::Nomad, "/v1/nodes"), None);
        // deny in one policy wins over write in another.
        let mixed = vec![
            "operator = \"write\"".to_string(),
            "operator = \"deny\"".to_string(),
        ];
        assert!(!allows(false, &mixed, Need::OperatorRead));
        // JSON rules too.
        let json_rules = vec![r#"{"operator":"read"}"#.to_string()];
        assert!(allows(false, &json_rules, Need::OperatorRead));
    }

    #[test]
    fn a_nomad_token_may_carry_a_chosen_secret_and_accessor() {
        let mut n = state(Product::Nomad);
        n.upsert_policy("p", "", "agent { policy = \"read\" }")
            .unwrap();
        let t = n
            .create_token(
                Some("s-1".into()),
                Some("a-1".into()),
                "c",
                vec!["p".into()],
                false,
                true,
            )
            .unwrap();
        assert_eq!((t.secret.as_str(), t.accessor.as_str()), ("s-1", "a-1"));
        let again = n.create_token(None, Some("a-1".into()), "c", vec!["p".into()], false, true);
        assert_eq!(again.unwrap_err().0, 400);
    }
}

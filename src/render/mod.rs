//! Rendering of the agents' config files from a plan: Consul JSON and Nomad
//! HCL, with the key names of the current agent documentation.
//!
//! [`render_plan`] is pure (the plan already holds every decision and the
//! gossip keys); [`write::write_files`] is the only writer. Output is
//! deterministic: keys are sorted, so the same plan gives the same bytes.
//! `[consul.extra]` / `[nomad.extra]` are deep-merged last (tables merge key
//! by key, any other value replaces ours).

pub mod diff;
pub mod hcl;
pub mod write;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::plan::{ConsulConfig, NomadConfig, Plan};
use crate::vocab::Product;

/// Mode of every rendered file: the agent's user reads it, nobody else
/// (it may hold the gossip key).
pub const CONFIG_FILE_MODE: u32 = 0o640;

/// First line of the Nomad file (JSON has no comments).
const HCL_HEADER: &str =
    "# Rendered by hashi-supervisor from the role file; edits are overwritten.\n";

/// Nomad's Consul service names (agent-facts.md §5; today's defaults, set
/// explicitly so the meaning never depends on the version).
const NOMAD_SERVER_SERVICE: &str = "nomad";
const NOMAD_CLIENT_SERVICE: &str = "nomad-client";

/// One rendered config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    /// Which agent reads it.
    pub product: Product,
    /// Where it goes.
    pub path: PathBuf,
    /// Its contents.
    pub contents: String,
    /// File mode ([`CONFIG_FILE_MODE`]).
    pub mode: u32,
    /// Owner, when it should be chowned (the agent's user).
    pub owner: Option<String>,
}

/// Whether a changed config needs the agent restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// Same settings.
    Unchanged,
    /// Only settings the agent re-reads on SIGHUP changed.
    Reload,
    /// Something the agent reads only at start changed.
    Restart,
}

impl ChangeKind {
    /// The change that asks for more of two (restart > reload > unchanged):
    /// what one agent needs when several of its files changed.
    #[must_use]
    pub fn stronger(self, other: Self) -> Self {
        match (self, other) {
            (Self::Restart, _) | (_, Self::Restart) => Self::Restart,
            (Self::Reload, _) | (_, Self::Reload) => Self::Reload,
            _ => Self::Unchanged,
        }
    }
}

/// Why rendering or writing failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A pass-through value cannot be expressed in the agent's format.
    #[error("failed to render [{product}.extra]")]
    Extra {
        /// Which agent.
        product: Product,
        /// The cause.
        #[source]
        source: hcl::HclError,
    },
    /// A pass-through value is not representable in JSON.
    #[error("failed to render [{product}.extra]: `{path}` is not a finite number")]
    ExtraNumber {
        /// Which agent.
        product: Product,
        /// The key.
        path: String,
    },
    /// Encoding JSON failed.
    #[error("failed to encode the {product} config")]
    Encode {
        /// Which agent.
        product: Product,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A file operation failed.
    #[error("failed to {what} {}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The agent's user cannot reach a directory it needs.
    #[error(
        "user `{user}` cannot reach {}: {} (mode {mode:04o}, uid {uid}, gid {gid}) is not searchable by it; \
         make it so (e.g. `chmod o+x {}`) or move `[paths]` elsewhere",
        dir.display(),
        blocked.display(),
        blocked.display()
    )]
    Unreachable {
        /// The agent's user.
        user: String,
        /// The directory the agent needs.
        dir: PathBuf,
        /// The ancestor that blocks it.
        blocked: PathBuf,
        /// Its mode.
        mode: u32,
        /// Its owner.
        uid: u32,
        /// Its group.
        gid: u32,
    },
    /// A rendered file is not under the config dir it should be under.
    #[error("failed to place {} under {}", path.display(), dir.display())]
    Relocate {
        /// The file.
        path: PathBuf,
        /// The directory.
        dir: PathBuf,
    },
}

/// Renders every config file of the plan, Consul's first.
pub fn render_plan(plan: &Plan) -> Result<Vec<RenderedFile>, RenderError> {
    let mut files = Vec::new();
    if let Some(c) = &plan.render.consul {
        files.push(RenderedFile {
            product: Product::Consul,
            path: c.file.clone(),
            contents: render_consul(c)?,
            mode: CONFIG_FILE_MODE,
            owner: Some(c.owner.clone()),
        });
    }
    if let Some(n) = &plan.render.nomad {
        files.push(RenderedFile {
            product: Product::Nomad,
            path: n.file.clone(),
            contents: render_nomad(n)?,
            mode: CONFIG_FILE_MODE,
            owner: Some(n.owner.clone()),
        });
    }
    Ok(files)
}

/// Moves files from under `from` to the same place under `to` (for
/// `render --out DIR`). Files elsewhere are an error.
pub fn relocate(
    files: &[RenderedFile],
    from: &Path,
    to: &Path,
) -> Result<Vec<RenderedFile>, RenderError> {
    files
        .iter()
        .map(|f| {
            let rel = f
                .path
                .strip_prefix(from)
                .map_err(|_| RenderError::Relocate {
                    path: f.path.clone(),
                    dir: from.to_path_buf(),
                })?;
            Ok(RenderedFile {
                path: to.join(rel),
                ..f.clone()
            })
        })
        .collect()
}

fn strings(v: &[String]) -> Value {
    Value::Array(v.iter().map(|s| Value::String(s.clone())).collect())
}

/// Consul's config as JSON (Consul agent configuration reference).
pub fn render_consul(c: &ConsulConfig) -> Result<String, RenderError> {
    let mut m = Map::new();
    m.insert("datacenter".into(), json!(c.datacenter));
    m.insert("node_name".into(), json!(c.node_name));
    m.insert("data_dir".into(), json!(c.data_dir.display().to_string()));
    m.insert("log_level".into(), json!(c.log_level));
    m.insert("server".into(), json!(c.server));
    if let Some(n) = c.bootstrap_expect {
        m.insert("bootstrap_expect".into(), json!(n));
    }
    m.insert("bind_addr".into(), json!(c.bind_addr.to_string()));
    m.insert("advertise_addr".into(), json!(c.advertise_addr.to_string()));
    if let Some(w) = c.advertise_addr_wan {
        m.insert("advertise_addr_wan".into(), json!(w.to_string()));
    }
    let client: Vec<String> = c.client_addrs.iter().map(ToString::to_string).collect();
    m.insert("client_addr".into(), json!(client.join(" ")));
    if !c.retry_join.is_empty() {
        m.insert("retry_join".into(), strings(&c.retry_join));
    }
    if !c.retry_join_wan.is_empty() {
        m.insert("retry_join_wan".into(), strings(&c.retry_join_wan));
    }
    m.insert("ui_config".into(), json!({ "enabled": c.ui }));
    if let Some(k) = &c.encrypt {
        m.insert("encrypt".into(), json!(k.expose()));
    }
    match (&c.tls, c.https_port) {
        // The cluster's material: every connection verified both ways,
        // the HTTP API over TLS only (Consul agent configuration
        // reference, `tls` and `ports`).
        (Some(t), Some(port)) => {
            m.insert(
                "tls".into(),
                json!({
                    "defaults": {
                        "ca_file": t.ca_file.display().to_string(),
                        "cert_file": t.cert_file.display().to_string(),
                        "key_file": t.key_file.display().to_string(),
                        "verify_incoming": true,
                        "verify_outgoing": true,
                    },
                    "internal_rpc": {
                        "verify_server_hostname": true,
                    },
                }),
            );
            m.insert("ports".into(), json!({ "http": -1, "https": port }));
        }
        (Some(t), None) => {
            m.insert(
                "tls".into(),
                json!({
                    "defaults": {
                        "ca_file": t.ca_file.display().to_string(),
                        "cert_file": t.cert_file.display().to_string(),
                        "key_file": t.key_file.display().to_string(),
                        "verify_outgoing": true,
                    },
                    "internal_rpc": {
                        "verify_incoming": true,
                        "verify_server_hostname": true,
                    },
                }),
            );
        }
        (None, _) => {}
    }
    if let Some(a) = &c.acl {
        m.insert("primary_datacenter".into(), json!(a.primary_datacenter));
        let mut tokens = Map::new();
        for (k, v) in [
            ("agent", &a.agent),
            ("initial_management", &a.initial_management),
            ("replication", &a.replication),
        ] {
            if let Some(t) = v {
                tokens.insert(k.into(), json!(t.expose()));
            }
        }
        let mut acl = json!({
            "enabled": true,
            "default_policy": "deny",
            "down_policy": "extend-cache",
            "enable_token_persistence": true,
            "tokens": tokens,
        });
        if a.replication.is_some() {
            acl["enable_token_replication"] = json!(true);
        }
        m.insert("acl".into(), acl);
    }
    m.insert("leave_on_terminate".into(), json!(c.leave_on_terminate));
    m.insert(
        "skip_leave_on_interrupt".into(),
        json!(c.skip_leave_on_interrupt),
    );
    let mut root = Value::Object(m);
    let extra = toml_to_json(&toml::Value::Table(c.extra.clone()), "")?;
    merge_json(&mut root, extra);
    let mut s =
        serde_json::to_string_pretty(&sorted(root)).map_err(|source| RenderError::Encode {
            product: Product::Consul,
            source,
        })?;
    s.push('\n');
    Ok(s)
}

fn toml_to_json(v: &toml::Value, path: &str) -> Result<Value, RenderError> {
    Ok(match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => json!(i),
        toml::Value::Float(f) => {
            Value::Number(serde_json::Number::from_f64(*f).ok_or_else(|| {
                RenderError::ExtraNumber {
                    product: Product::Consul,
                    path: path.to_string(),
                }
            })?)
        }
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| toml_to_json(x, path))
                .collect::<Result<_, _>>()?,
        ),
        toml::Value::Table(t) => {
            let mut m = Map::new();
            for (k, x) in t {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                m.insert(k.clone(), toml_to_json(x, &p)?);
            }
            Value::Object(m)
        }
    })
}

fn merge_json(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                match b.get_mut(&k) {
                    Some(slot @ Value::Object(_)) if v.is_object() => merge_json(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, e) => *b = e,
    }
}

/// Rebuilds objects with their keys in sorted order, whatever map type
/// serde_json was built with.
fn sorted(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let b: BTreeMap<String, Value> = m.into_iter().map(|(k, v)| (k, sorted(v))).collect();
            Value::Object(b.into_iter().collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        other => other,
    }
}

fn table(pairs: Vec<(&str, toml::Value)>) -> toml::Table {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn s(v: impl ToString) -> toml::Value {
    toml::Value::String(v.to_string())
}

fn list(v: &[String]) -> toml::Value {
    toml::Value::Array(v.iter().map(s).collect())
}

/// Nomad's config as HCL (Nomad agent configuration reference).
pub fn render_nomad(n: &NomadConfig) -> Result<String, RenderError> {
    let b = toml::Value::Boolean;
    let mut root = table(vec![
        ("region", s(&n.region)),
        ("datacenter", s(&n.datacenter)),
        ("name", s(&n.name)),
        ("data_dir", s(n.data_dir.display())),
        ("log_level", s(&n.log_level)),
        ("bind_addr", s(n.bind_addr)),
        ("leave_on_terminate", b(n.leave_on_terminate)),
        ("leave_on_interrupt", b(n.leave_on_interrupt)),
    ]);
    // Bare addresses: Nomad adds the port of each listener itself.
    let adv = s(n.advertise);
    root.insert(
        "advertise".into(),
        toml::Value::Table(table(vec![
            ("http", s(n.advertise_http)),
            ("rpc", adv.clone()),
            ("serf", adv),
        ])),
    );
    let join = |v: &[String]| toml::Value::Table(table(vec![("retry_join", list(v))]));
    if n.server {
        let mut server = table(vec![("enabled", b(true))]);
        if let Some(e) = n.bootstrap_expect {
            server.insert(
                "bootstrap_expect".into(),
                toml::Value::Integer(i64::from(e)),
            );
        }
        if let Some(k) = &n.encrypt {
            server.insert("encrypt".into(), s(k.expose()));
        }
        if !n.retry_join.is_empty() {
            server.insert("server_join".into(), join(&n.retry_join));
        }
        root.insert("server".into(), toml::Value::Table(server));
    }
    if n.client {
        let mut client = table(vec![("enabled", b(true))]);
        if !n.retry_join.is_empty() {
            client.insert("server_join".into(), join(&n.retry_join));
        }
        if let Some(d) = n.drain_deadline {
            client.insert(
                "drain_on_shutdown".into(),
                toml::Value::Table(table(vec![("deadline", s(format!("{}s", d.as_secs())))])),
            );
        }
        root.insert("client".into(), toml::Value::Table(client));
    }
    // Service names and auto-join equal today's defaults (agent-facts.md
    // §5) but are set so the meaning never depends on the Nomad version;
    // the address is always explicit because its default changed.
    let consul = match &n.consul_address {
        Some(addr) => {
            let mut c = table(vec![
                ("address", s(addr)),
                ("server_service_name", s(NOMAD_SERVER_SERVICE)),
                ("client_service_name", s(NOMAD_CLIENT_SERVICE)),
                ("auto_advertise", b(true)),
                ("server_auto_join", b(true)),
                ("client_auto_join", b(true)),
            ]);
            // Consul's HTTPS API with this node's certificate (Nomad's
            // `consul` block: `ssl`, `ca_file`, `cert_file`, `key_file`).
            if let Some(t) = &n.consul_tls {
                c.insert("ssl".into(), b(true));
                c.insert("verify_ssl".into(), b(true));
                c.insert("ca_file".into(), s(t.ca_file.display()));
                c.insert("cert_file".into(), s(t.cert_file.display()));
                c.insert("key_file".into(), s(t.key_file.display()));
            }
            if let Some(t) = &n.consul_token {
                c.insert("token".into(), s(t.expose()));
            }
            c
        }
        None => table(vec![
            ("auto_advertise", b(false)),
            ("server_auto_join", b(false)),
            ("client_auto_join", b(false)),
        ]),
    };
    root.insert("consul".into(), toml::Value::Table(consul));
    if let Some(t) = &n.tls {
        root.insert(
            "tls".into(),
            toml::Value::Table(table(vec![
                ("http", b(n.tls_http)),
                ("rpc", b(true)),
                ("ca_file", s(t.ca_file.display())),
                ("cert_file", s(t.cert_file.display())),
                ("key_file", s(t.key_file.display())),
                ("verify_server_hostname", b(true)),
                ("verify_https_client", b(false)),
            ])),
        );
    }
    if n.acl {
        root.insert(
            "acl".into(),
            toml::Value::Table(table(vec![("enabled", b(true))])),
        );
    }
    merge_toml(&mut root, &n.extra);
    let body = hcl::write_body(&root).map_err(|source| RenderError::Extra {
        product: Product::Nomad,
        source,
    })?;
    Ok(format!("{HCL_HEADER}\n{body}"))
}

fn merge_toml(base: &mut toml::Table, extra: &toml::Table) {
    for (k, v) in extra {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(e)) => merge_toml(b, e),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Keys (or key prefixes) Consul re-reads on SIGHUP (agent-facts.md §2).
const CONSUL_RELOADABLE: &[&str] = &[
    "log_level",
    "tls",
    "services",
    "service",
    "checks",
    "check",
    "node_meta",
    "acl.tokens",
    "watches",
    "limits.http_max_conns_per_client",
    "limits.request_limits",
    "limits.rpc_client_timeout",
    "limits.rpc_rate",
    "limits.rpc_max_burst",
    "limits.rpc_max_conns_per_client",
    "config_entries.bootstrap",
    "raft_snapshot_threshold",
    "raft_snapshot_interval",
    "raft_trailing_logs",
    "dns_config",
    "cache",
    "telemetry.prefix_filter",
    "discard_check_output",
    "xds.update_max_per_second",
    "enable_debug",
];

/// Keys (or key prefixes) Nomad re-reads on SIGHUP (agent-facts.md §2).
const NOMAD_RELOADABLE: &[&str] = &[
    "log_level",
    "tls",
    "server.num_schedulers",
    "server.enabled_schedulers",
    "server.raft_trailing_logs",
    "server.raft_snapshot_interval",
    "server.raft_snapshot_threshold",
];

/// Compares two renderings of one agent's config key by key: `Reload` when
/// only keys the agent re-reads on SIGHUP differ, `Restart` otherwise (and
/// whenever either text cannot be read back).
pub fn classify_change(product: Product, old: &str, new: &str) -> ChangeKind {
    let (flat_old, flat_new, reloadable) = match product {
        Product::Consul => (flatten_json(old), flatten_json(new), CONSUL_RELOADABLE),
        Product::Nomad => (hcl::flatten(old), hcl::flatten(new), NOMAD_RELOADABLE),
    };
    let (Some(a), Some(b)) = (flat_old, flat_new) else {
        return if old == new {
            ChangeKind::Unchanged
        } else {
            ChangeKind::Restart
        };
    };
    let changed: Vec<&String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .collect();
    if changed.is_empty() {
        return ChangeKind::Unchanged;
    }
    let is_reloadable = |k: &str| {
        let k = k.split('#').next().unwrap_or(k);
        reloadable
            .iter()
            .any(|r| k == *r || k.strip_prefix(r).is_some_and(|rest| rest.starts_with('.')))
    };
    if changed.iter().all(|k| is_reloadable(k)) {
        ChangeKind::Reload
    } else {
        ChangeKind::Restart
    }
}

fn flatten_json(text: &str) -> Option<BTreeMap<String, String>> {
    fn walk(v: &Value, path: &str, out: &mut BTreeMap<String, String>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, x) in m {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(x, &p, out);
                }
            }
            other => {
                out.insert(path.to_string(), other.to_string());
            }
        }
    }
    let v: Value = serde_json::from_str(text).ok()?;
    let mut out = BTreeMap::new();
    walk(&v, "", &mut out);
    Some(out)
}

#[cfg(test)]
mod tests;

//! `supervisor cluster init|token`: the cluster CA, gossip keys and join
//! tokens (`security`).
//!
//! `init` runs once, on the first server: it makes the CA, both gossip
//! keys, the pre-chosen ACL tokens and a first join token, writes
//! `<config>/cluster/` (the CA holder's files) and `<config>/security/`
//! (this node's own certificate, made from a key made here), and prints the
//! token. `token create|list|revoke` work on `<config>/cluster/tokens.json`
//! of a CA holder. The config dir is the role file's `[paths] config_dir`.
//! Only `init` and `token create` print a secret (the token), on stdout.

use std::io::Write;
use std::path::Path;

use crate::cli::{ClusterArgs, ClusterCommand, ClusterInitArgs, GlobalArgs, TokenCommand};
use crate::cli::{TokenCreateArgs, TokenListArgs, TokenRevokeArgs};
use crate::error::Error;
use crate::paths;
use crate::role::{NodeRole, Secret};
use crate::security::ca::{self, ClusterCa};
use crate::security::names;
use crate::security::store::{self, ClusterFile, StoreError};
use crate::security::token::{self, TokenRecord, TokenStore, format_utc};

/// Description of the token `init` prints.
const INIT_TOKEN_DESCRIPTION: &str = "made by cluster init";

/// Runs `supervisor cluster ...`.
pub async fn run(global: &GlobalArgs, args: &ClusterArgs) -> Result<u8, Error> {
    // Key generation, signing and fsyncs are blocking work.
    let global = global.clone();
    let args = args.clone();
    tokio::task::spawn_blocking(move || run_blocking(&global, &args))
        .await
        .map_err(|e| Error::Internal(format!("the cluster command's task failed: {e}")))?
}

fn run_blocking(global: &GlobalArgs, args: &ClusterArgs) -> Result<u8, Error> {
    match &args.command {
        ClusterCommand::Init(a) => init(global, a),
        ClusterCommand::Token(TokenCommand::Create(a)) => token_create(global, a),
        ClusterCommand::Token(TokenCommand::List(a)) => token_list(global, a),
        ClusterCommand::Token(TokenCommand::Revoke(a)) => token_revoke(global, a),
    }
}

fn ttl(text: &str, flag: &str) -> Result<std::time::Duration, Error> {
    token::parse_ttl(text).map_err(|e| Error::Usage(format!("{flag}: {e}")))
}

fn print(text: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("write to stdout", e))
}

/// The agents' users that get a copy of the node key: the ones that run
/// here.
fn agent_users(role: &NodeRole) -> (Option<&str>, Option<&str>) {
    (
        role.roles.is_consul().then_some(role.consul.user.as_str()),
        role.roles.is_nomad().then_some(role.nomad.user.as_str()),
    )
}

/// Refuses a role `init` cannot secure: `dev` (one loopback node, never
/// secured) and `[security] plaintext = true` (the operator chose no TLS).
fn check_securable(role: &NodeRole) -> Result<(), Error> {
    let file = role
        .source
        .as_ref()
        .map_or_else(|| "--role".to_string(), |p| p.display().to_string());
    if role.roles.dev {
        return Err(Error::Unsecurable(format!(
            "{file}: role `dev` runs a single node on loopback and is never secured: `cluster init` is for clusters (consul-server, nomad-server, ...)"
        )));
    }
    let own: Vec<&str> = [
        (role.consul.tls.is_some(), "[consul.tls]"),
        (role.consul.encrypt.is_some(), "consul.encrypt_key_file"),
        (role.nomad.tls.is_some(), "[nomad.tls]"),
        (role.nomad.encrypt.is_some(), "nomad.encrypt_key_file"),
    ]
    .into_iter()
    .filter_map(|(set, key)| set.then_some(key))
    .collect();
    if !own.is_empty() {
        return Err(Error::Unsecurable(format!(
            "{file}: {} name the operator's own TLS or gossip keys: remove them to use the cluster's material from `cluster init`, or keep them and don't run it",
            own.join(", ")
        )));
    }
    if role.security.plaintext {
        return Err(Error::Unsecurable(format!(
            "{file}: `[security] plaintext = true` asks for a cluster without TLS, gossip encryption and ACLs: remove it to initialise a secure cluster"
        )));
    }
    Ok(())
}

/// When running as root, the agents' users must exist before anything is
/// written (their key copies are chowned to them).
fn check_users(role: &NodeRole, security_dir: &Path) -> Result<(), Error> {
    if !nix::unistd::Uid::effective().is_root() {
        return Ok(());
    }
    let (consul, nomad) = agent_users(role);
    for (user, file) in [
        (consul, paths::CONSUL_KEY_FILE),
        (nomad, paths::NOMAD_KEY_FILE),
    ] {
        let Some(name) = user else { continue };
        match nix::unistd::User::from_name(name) {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(StoreError::NoUser {
                    name: name.to_string(),
                    path: security_dir.join(file),
                }
                .into());
            }
            Err(e) => {
                return Err(Error::io(
                    format!("look up user `{name}`"),
                    std::io::Error::from(e),
                ));
            }
        }
    }
    Ok(())
}

/// With ACLs, the init node bootstraps both ACL systems (Consul's through
/// its `initial_management` token, Nomad's through its bootstrap secret):
/// it must run both servers, or Nomad's ACLs would be on and never
/// bootstrapped (anyone reaching port 4646 could bootstrap them).
fn check_acl_roles(role: &NodeRole, acl: bool) -> Result<(), Error> {
    if !acl || (role.roles.consul_server && role.roles.nomad_server) {
        return Ok(());
    }
    let file = role
        .source
        .as_ref()
        .map_or_else(|| "--role".to_string(), |p| p.display().to_string());
    let missing: Vec<&str> = [
        (!role.roles.consul_server, "consul-server"),
        (!role.roles.nomad_server, "nomad-server"),
    ]
    .into_iter()
    .filter_map(|(m, name)| m.then_some(name))
    .collect();
    Err(Error::Unsecurable(format!(
        "{file}: this node does not run {}: with ACLs, `cluster init` bootstraps Consul's and Nomad's ACL systems and must run on a node with both consul-server and nomad-server (else Nomad's ACLs stay open to whoever bootstraps them first on port 4646): run it on such a server, or pass --no-acl to leave ACLs off",
        missing.join(" and ")
    )))
}

/// What `init` finds in the config dir.
enum Found {
    /// Nothing: a new cluster.
    Nothing,
    /// A cluster dir this node's `init` wrote, but no node material: an
    /// init that failed after the cluster dir was renamed into place.
    HalfDone(Box<store::ClusterMaterial>),
}

/// What is there already, and whether `init` may (finish and) go on.
fn found(role: &NodeRole, cluster_dir: &Path, security_dir: &Path) -> Result<Found, Error> {
    let node_json = security_dir.join(paths::NODE_SECRETS_FILE);
    let has_material = std::fs::symlink_metadata(&node_json).is_ok();
    if std::fs::symlink_metadata(cluster_dir).is_err() {
        // A node that joined a cluster has material but no cluster dir: a
        // new cluster would silently replace its certificate and keys.
        if has_material {
            return Err(StoreError::Exists { path: node_json }.into());
        }
        return Ok(Found::Nothing);
    }
    if has_material {
        return Err(StoreError::Exists {
            path: cluster_dir.to_path_buf(),
        }
        .into());
    }
    let start_over = format!(
        "{} exists but {} does not: if `cluster init` failed here half-way, remove {} and run it again; if this node joined a cluster as a server, remove {} and join again with a join token",
        cluster_dir.display(),
        node_json.display(),
        cluster_dir.display(),
        cluster_dir.display(),
    );
    // Only what an init alone leaves is finished: its own datacenter as
    // the primary, and no join token used yet (a server that joined holds
    // the cluster's records, some used).
    let m = store::load_cluster_dir(cluster_dir)
        .map_err(|e| Error::Unsecurable(format!("{start_over} ({})", error_text(&e))))?;
    let untouched = m
        .tokens
        .list()
        .iter()
        .all(|r| r.uses == 0 && r.description == INIT_TOKEN_DESCRIPTION);
    if m.cluster.primary_datacenter != role.datacenter || !untouched {
        return Err(Error::Unsecurable(start_over));
    }
    Ok(Found::HalfDone(Box::new(m)))
}

fn error_text(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// `supervisor cluster init`.
fn init(global: &GlobalArgs, args: &ClusterInitArgs) -> Result<u8, Error> {
    let ttl = ttl(&args.token_ttl, "--token-ttl")?;
    // The role as `check` reads it, but for the secure-by-default refusal:
    // this command makes what that refusal asks for.
    let super::Loaded { role, .. } = super::load_for_cluster_command(global)?;
    check_securable(&role)?;
    check_acl_roles(&role, !args.no_acl)?;
    let cluster_dir = role.config_dir.join(paths::CLUSTER_SUBDIR);
    let security_dir = role.config_dir.join(paths::SECURITY_SUBDIR);
    let found = found(&role, &cluster_dir, &security_dir)?;
    check_users(&role, &security_dir)?;

    let now = ca::now_unix();
    let (ca, cluster, join_token, finishing) = match found {
        Found::Nothing => {
            let ca = ClusterCa::create().map_err(StoreError::from)?;
            let consul_key = Secret::new(super::keygen::new_gossip_key());
            let nomad_key = Secret::new(super::keygen::new_gossip_key());
            let cluster =
                ClusterFile::new(&ca, &consul_key, &nomad_key, &role.datacenter, !args.no_acl);
            let mut tokens = TokenStore::new(&cluster_dir, &ca.pin());
            let join_token = tokens.create(ttl, Some(INIT_TOKEN_DESCRIPTION), false, now)?;
            // The cluster dir appears whole (it is renamed into place); the
            // node's material follows. A failure in between is finished by
            // the next `init` (Found::HalfDone).
            store::write_cluster_dir(&cluster_dir, &ca, &cluster, tokens.list())?;
            (ca, cluster, join_token, false)
        }
        Found::HalfDone(m) => {
            if m.cluster.acl_enabled == args.no_acl {
                return Err(Error::Unsecurable(format!(
                    "{} was made with ACLs {}: run `cluster init` again {} to finish it, or remove {} to start over",
                    cluster_dir.display(),
                    if m.cluster.acl_enabled { "on" } else { "off" },
                    if m.cluster.acl_enabled {
                        "without --no-acl"
                    } else {
                        "with --no-acl"
                    },
                    cluster_dir.display(),
                )));
            }
            // The first token's secret was never printed: a new one.
            let join_token = TokenStore::modify(&cluster_dir, &m.ca.pin(), |s| {
                s.create(ttl, Some(INIT_TOKEN_DESCRIPTION), false, now)
            })?;
            let m = *m;
            (m.ca, m.cluster, join_token, true)
        }
    };

    // This node's certificate, from a key made here, for every name its
    // roles need.
    let dns = names::dns_names(role.roles, &role.region, &role.datacenter);
    let ips = names::ips(&role.addresses);
    let key = ca::new_key_pair().map_err(StoreError::from)?;
    let cert = ca
        .issue(&key, &dns, &ips, role.security.cert_lifetime)
        .map_err(StoreError::from)?;
    let secrets = store::with_init_tokens(
        store::secrets_for(&cluster, role.roles, &role.datacenter, &dns, &ips, &cert),
        &cluster,
    );
    let (consul_user, nomad_user) = agent_users(&role);
    let _lock = store::lock_material(&security_dir)?;
    store::write_node_material(
        &security_dir,
        ca.cert_pem(),
        &cert.pem,
        &ca::key_pem_of(&key),
        &secrets,
        consul_user,
        nomad_user,
    )?;

    let expires = format_utc(now.saturating_add(ttl.as_secs()));
    let token = join_token.expose();
    print(&format!(
        "{token}\n\
         cluster {done}: CA {pin}, ACLs {acl}, files in {cdir} and {sdir}\n\
         the join token above expires {expires}; make more with `supervisor cluster token create`\n\
         on every other node: `supervisor run --join-token-file FILE` (FILE holding the token, mode 0600), or `join_token_file = \"FILE\"` under [security] in its role file\n",
        done = if finishing {
            "initialisation finished (it had stopped after writing the cluster dir)"
        } else {
            "initialised"
        },
        pin = ca.pin(),
        acl = if cluster.acl_enabled { "on" } else { "off" },
        cdir = cluster_dir.display(),
        sdir = security_dir.display(),
    ))?;
    Ok(0)
}

/// The cluster dir of the role's config dir, read (this node must hold the
/// CA).
fn cluster_dir(global: &GlobalArgs) -> Result<std::path::PathBuf, Error> {
    // A CA holder has material, but the message for a node without the CA
    // should say that, not that the node is not secured.
    let super::Loaded { role, .. } = super::load_for_cluster_command(global)?;
    Ok(role.config_dir.join(paths::CLUSTER_SUBDIR))
}

/// `supervisor cluster token create`.
fn token_create(global: &GlobalArgs, args: &TokenCreateArgs) -> Result<u8, Error> {
    let ttl = ttl(&args.ttl, "--ttl")?;
    let dir = cluster_dir(global)?;
    let material = store::load_cluster_dir(&dir)?;
    let now = ca::now_unix();
    let t = TokenStore::modify(&dir, &material.ca.pin(), |s| {
        s.create(ttl, args.description.as_deref(), args.clients_only, now)
    })?;
    print(&format!("{}\n", t.expose()))?;
    Ok(0)
}

/// One row of `token list --json`: the record without the secret's hash.
#[derive(serde::Serialize)]
struct ListedToken<'a> {
    id: &'a str,
    state: token::TokenState,
    created: u64,
    expires: u64,
    revoked: Option<u64>,
    uses: u64,
    clients_only: bool,
    description: &'a str,
}

fn listed(r: &TokenRecord, now: u64) -> ListedToken<'_> {
    ListedToken {
        id: &r.id,
        state: r.state(now),
        created: r.created,
        expires: r.expires,
        revoked: r.revoked,
        uses: r.uses,
        clients_only: r.clients_only,
        description: &r.description,
    }
}

/// The table `token list` prints (no secret, no hash).
fn list_table(records: &[TokenRecord], now: u64) -> String {
    let header = [
        "ID",
        "CREATED",
        "EXPIRES",
        "STATE",
        "USES",
        "CLIENTS-ONLY",
        "DESCRIPTION",
    ];
    let mut rows: Vec<[String; 7]> = vec![header.map(String::from)];
    for r in records {
        rows.push([
            r.id.clone(),
            format_utc(r.created),
            format_utc(r.expires),
            r.state(now).to_string(),
            r.uses.to_string(),
            if r.clients_only { "yes" } else { "no" }.to_string(),
            r.description.clone(),
        ]);
    }
    let mut widths = [0usize; 7];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `supervisor cluster token list`.
fn token_list(global: &GlobalArgs, args: &TokenListArgs) -> Result<u8, Error> {
    let dir = cluster_dir(global)?;
    let material = store::load_cluster_dir(&dir)?;
    let now = ca::now_unix();
    let records = material.tokens.list();
    let text = if args.json {
        let rows: Vec<ListedToken<'_>> = records.iter().map(|r| listed(r, now)).collect();
        let mut s = serde_json::to_string_pretty(&rows)
            .map_err(|e| Error::Internal(format!("failed to encode the token list: {e}")))?;
        s.push('\n');
        s
    } else {
        list_table(records, now)
    };
    print(&text)?;
    Ok(0)
}

/// `supervisor cluster token revoke`.
fn token_revoke(global: &GlobalArgs, args: &TokenRevokeArgs) -> Result<u8, Error> {
    let dir = cluster_dir(global)?;
    let material = store::load_cluster_dir(&dir)?;
    let now = ca::now_unix();
    let at = TokenStore::modify(&dir, &material.ca.pin(), |s| {
        s.revoke(&args.id, now).map(|r| r.revoked.unwrap_or(now))
    })?;
    print(&format!(
        "revoked join token {} (at {})\n",
        args.id,
        format_utc(at)
    ))?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, expires: u64, revoked: Option<u64>) -> TokenRecord {
        TokenRecord {
            id: id.into(),
            secret_sha256: "ab".repeat(32),
            created: 0,
            expires,
            revoked,
            description: "d".into(),
            clients_only: id == "cccccc",
            uses: 3,
        }
    }

    #[test]
    fn the_list_table_shows_states_and_never_the_hash() {
        let records = vec![
            record("aaaaaa", 100, None),
            record("bbbbbb", 10, None),
            record("cccccc", 100, Some(5)),
        ];
        let t = list_table(&records, 50);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("ID "), "{t}");
        assert!(
            lines[1].starts_with("aaaaaa") && lines[1].contains(" active "),
            "{t}"
        );
        assert!(lines[2].contains(" expired "), "{t}");
        assert!(
            lines[3].contains(" revoked ") && lines[3].contains(" yes "),
            "{t}"
        );
        assert!(!t.contains(&"ab".repeat(32)));
    }
}

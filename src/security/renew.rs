//! Certificate renewal: before the node certificate expires (fewer than
//! `[security] renew_before_days` left), make a new key and ask a CA holder
//! to sign it (`POST /v1/renew`, mutual TLS with the current certificate;
//! a CA holder signs its own), write the new material atomically, and tell
//! the daemon ([`DaemonEvent::Renewed`]): it re-loads the role (so the
//! status shows the new expiry) and sends SIGHUP to both agents, which
//! re-read their TLS files on it. The same exchange hands out ACL tokens
//! made after the node joined: while `node.json` lacks a token the node's
//! roles use, the node asks again every [`MISSING_TOKENS_EVERY`].
//!
//! Owns the timing ([`next_check`], pure) and the task; the exchange is
//! `join_client`'s.

use std::path::Path;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ca;
use super::join_client::{self, Credential, JoinError};
use super::store;
use crate::paths;
use crate::role::NodeRole;
use crate::role::file::read_regular;
use crate::role::security::{NodeSecrets, NodeSecretsFile};
use crate::supervise::daemon::DaemonEvent;

/// How often a node whose `node.json` lacks ACL tokens asks for them (a
/// renewal each time: the Nomad token exists seconds after the first Nomad
/// leader, so this is short and ends soon).
pub const MISSING_TOKENS_EVERY: Duration = Duration::from_secs(10);
/// Longest sleep between two looks at the expiry.
pub const LONGEST_SLEEP: Duration = Duration::from_secs(3600);
/// Wait after a failed renewal before the next attempt.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(300);
/// Largest PEM read from the security dir.
const MAX_PEM_BYTES: u64 = 64 * 1024;

/// What the node should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Renew now.
    Now,
    /// Look again after this long.
    After(Duration),
}

/// Whether `secrets` lacks an ACL token a node of `role` gets at join or
/// renewal (the cluster made it after this node joined).
pub fn lacks_acl_tokens(role: &NodeRole, secrets: &NodeSecrets) -> bool {
    if !secrets.acl_enabled {
        return false;
    }
    let a = &secrets.acl;
    (role.roles.is_consul() && a.consul_agent.is_none())
        || a.consul_supervisor.is_none()
        || (role.roles.is_nomad() && (a.nomad_consul.is_none() || a.nomad_supervisor.is_none()))
}

/// When to renew a certificate expiring at `not_after` (Unix seconds), at
/// `now`, renewing `renew_before` ahead; `lacks_tokens`: ask every
/// [`MISSING_TOKENS_EVERY`] as well.
pub fn next_check(not_after: u64, now: u64, renew_before: Duration, lacks_tokens: bool) -> Due {
    let renew_at = not_after.saturating_sub(renew_before.as_secs());
    if now >= renew_at {
        return Due::Now;
    }
    let mut wait = Duration::from_secs(renew_at - now).min(LONGEST_SLEEP);
    if lacks_tokens {
        wait = wait.min(MISSING_TOKENS_EVERY);
    }
    Due::After(wait)
}

/// Renews the certificate of the node of `role` (which must have
/// material): locally when it holds the CA, else through the first of
/// `candidates` that answers. Writes the new material and returns the new
/// `node.json`.
pub async fn renew(role: &NodeRole, candidates: &[String]) -> Result<NodeSecretsFile, JoinError> {
    let dir = role.config_dir.join(paths::SECURITY_SUBDIR);
    let material_error = |reason: String| JoinError::Material {
        dir: dir.clone(),
        reason,
    };
    let Some(material) = &role.security.material else {
        return Err(material_error("the node has no material to renew".into()));
    };
    let read = |p: &Path| {
        read_regular(p, MAX_PEM_BYTES)
            .map_err(|e| material_error(format!("{}: {e}", p.display())))
            .and_then(|b| {
                String::from_utf8(b)
                    .map_err(|_| material_error(format!("{}: not UTF-8", p.display())))
            })
    };
    let old_cert = read(&material.cert_file)?;
    let old_key = crate::role::Secret::new(read(&material.key_file)?);
    let old_json: NodeSecretsFile =
        serde_json::from_str(&read(&dir.join(paths::NODE_SECRETS_FILE))?)
            .map_err(|e| material_error(format!("{}: {e}", paths::NODE_SECRETS_FILE)))?;
    let pinned = material.secrets.ca_sha256.clone();
    let key = ca::new_key_pair().map_err(JoinError::Key)?;
    let request = join_client::request_for(role, &key)?;
    // A CA holder signs its own renewal, unless it lacks a token the
    // cluster made after it joined (the Nomad supervisors' token, made by
    // the init node once Nomad has a leader): then another CA holder is
    // asked, and what it hands out is kept in this node's cluster file too,
    // so the joins and renewals this node serves hand it out from then on.
    let own: Vec<String> = super::names::ips(&role.addresses)
        .iter()
        .map(ToString::to_string)
        .collect();
    let others: Vec<String> = candidates
        .iter()
        .filter(|c| !own.iter().any(|ip| join_client::host_is(c, ip)))
        .cloned()
        .collect();
    let ask_others =
        role.security.ca_holder && lacks_acl_tokens(role, &material.secrets) && !others.is_empty();
    let (endpoint, answer) = if role.security.ca_holder && !ask_others {
        ("this node's CA".to_string(), sign_locally(role, &request)?)
    } else {
        join_client::exchange(
            if ask_others { &others } else { candidates },
            &pinned,
            Credential::Certificate {
                cert_pem: &old_cert,
                key_pem: &old_key,
            },
            &request,
        )
        .await?
    };
    let mut answer = join_client::check_answer(&endpoint, &pinned, &key, &request, answer)?;
    // The bootstrap tokens only the init node holds are never handed out
    // again: keep them.
    let keep = |new: &mut Option<String>, old: &Option<String>| {
        if new.is_none() {
            new.clone_from(old);
        }
    };
    keep(
        &mut answer.secrets.acl.consul_initial_management,
        &old_json.acl.consul_initial_management,
    );
    keep(
        &mut answer.secrets.acl.nomad_bootstrap,
        &old_json.acl.nomad_bootstrap,
    );
    if ask_others {
        learn_tokens(role, &answer.secrets.acl)?;
    }
    let config_dir = role.config_dir.clone();
    let consul_user = role.roles.is_consul().then(|| role.consul.user.clone());
    let nomad_user = role.roles.is_nomad().then(|| role.nomad.user.clone());
    let key_pem = ca::key_pem_of(&key);
    let secrets = answer.secrets.clone();
    tokio::task::spawn_blocking(move || {
        join_client::write_material(
            &config_dir,
            &answer,
            &key_pem,
            consul_user.as_deref(),
            nomad_user.as_deref(),
        )
    })
    .await
    .map_err(|e| material_error(format!("the writer failed: {e}")))??;
    tracing::info!(%endpoint, not_after = secrets.not_after, "renewed the node certificate");
    Ok(secrets)
}

/// Fills the tokens this CA holder's cluster file lacks from `acl` (an
/// answer of another CA holder); never replaces one it has.
fn learn_tokens(
    role: &NodeRole,
    acl: &crate::role::security::AclTokensFile,
) -> Result<(), JoinError> {
    let dir = role.config_dir.join(paths::CLUSTER_SUBDIR);
    let broken = |e: &dyn std::error::Error| JoinError::Material {
        dir: dir.clone(),
        reason: e.to_string(),
    };
    let m = store::load_cluster_dir(&dir).map_err(|e| broken(&e))?;
    let mut cluster = m.cluster;
    let mut learned = false;
    for (mine, theirs) in [
        (&mut cluster.acl.nomad_supervisor, &acl.nomad_supervisor),
        (&mut cluster.acl.consul_supervisor, &acl.consul_supervisor),
        (&mut cluster.acl.consul_agent, &acl.consul_agent),
        (&mut cluster.acl.nomad_consul, &acl.nomad_consul),
    ] {
        if mine.is_none() && theirs.is_some() {
            mine.clone_from(theirs);
            learned = true;
        }
    }
    if learned {
        store::save_cluster_file(&dir, &cluster).map_err(|e| broken(&e))?;
        tracing::info!("learned the cluster's newer ACL tokens from another CA holder");
    }
    Ok(())
}

/// A CA holder signs its own renewal with the CA in its cluster dir.
fn sign_locally(
    role: &NodeRole,
    request: &super::wire::JoinRequest,
) -> Result<super::wire::JoinResponse, JoinError> {
    let dir = role.config_dir.join(paths::CLUSTER_SUBDIR);
    let m = store::load_cluster_dir(&dir).map_err(|e| JoinError::Material {
        dir: dir.clone(),
        reason: super::join_server::error_chain(&e),
    })?;
    let dns = super::names::dns_names(role.roles, &request.region, &request.datacenter);
    let signed =
        m.ca.sign_csr(
            &request.csr,
            &dns,
            &request.ips,
            role.security.cert_lifetime,
        )
        .map_err(JoinError::Key)?;
    let secrets = store::secrets_for(
        &m.cluster,
        role.roles,
        &request.datacenter,
        &dns,
        &request.ips,
        &signed,
    );
    Ok(super::wire::JoinResponse {
        certificate: signed.pem,
        ca: m.ca.cert_pem().to_string(),
        secrets,
        cluster: None,
    })
}

/// What the renewal task tells the rest of the node (status, the
/// supervisor's own TLS client).
#[derive(Debug, Clone, PartialEq)]
pub enum RenewalReport {
    /// A renewal succeeded at `at` (Unix seconds).
    Renewed {
        /// When.
        at: u64,
        /// The new certificate's expiry.
        not_after: u64,
        /// Its DNS names.
        names: Vec<String>,
        /// When the task looks again.
        next: u64,
        /// The ACL tokens the node now holds (the supervisor's client
        /// takes its own from them).
        acl: crate::role::security::AclTokens,
    },
    /// An attempt failed (one line, no secret); the next is at `next`.
    Failed {
        /// Why.
        error: String,
        /// When the task tries again.
        next: u64,
    },
    /// Nothing to do until `next`.
    Next {
        /// When the task looks again (Unix seconds).
        next: u64,
    },
}

/// Where the task reports.
pub type OnRenewal = std::sync::Arc<dyn Fn(RenewalReport) + Send + Sync>;

/// The renewal task of a running node.
pub struct Renewal {
    /// The role in force (its material is updated after each renewal).
    pub role: NodeRole,
    /// Join endpoints to ask (a CA holder signs its own).
    pub candidates: Vec<String>,
    /// Where the daemon learns of a renewal.
    pub events: mpsc::UnboundedSender<DaemonEvent>,
    /// Called with each outcome (status, TLS client reload).
    pub report: OnRenewal,
    /// Poked on SIGHUP: read `node.json` again and look at the expiry now.
    pub recheck: std::sync::Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for Renewal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renewal")
            .field("node", &self.role.node_name)
            .field("candidates", &self.candidates)
            .finish_non_exhaustive()
    }
}

impl Renewal {
    /// Takes `node.json` from disk as the material in force (kept as it
    /// was when it cannot be read, with a warning).
    fn reread(&mut self) {
        let Some(m) = self.role.security.material.as_mut() else {
            return;
        };
        let path = m.dir.join(paths::NODE_SECRETS_FILE);
        let read = read_regular(&path, MAX_PEM_BYTES)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<NodeSecretsFile>(&b).map_err(|e| e.to_string()));
        match read {
            Ok(f) => m.secrets = f.into_secrets(),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read the node's secrets again; keeping the ones in force");
            }
        }
    }

    /// Renews when due until `cancel`.
    pub async fn run(mut self, cancel: CancellationToken) {
        loop {
            let Some(material) = &self.role.security.material else {
                return;
            };
            let lacks = lacks_acl_tokens(&self.role, &material.secrets);
            let due = next_check(
                material.secrets.not_after,
                ca::now_unix(),
                self.role.security.renew_before,
                lacks,
            );
            let now = ca::now_unix();
            if let Due::After(d) = due {
                (self.report)(RenewalReport::Next {
                    next: now + d.as_secs(),
                });
            }
            let wait = match due {
                Due::After(d) if !lacks => d,
                Due::After(d) => {
                    // Ask for the missing tokens now and then as well.
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(d) => {}
                    }
                    Duration::ZERO
                }
                Due::Now => Duration::ZERO,
            };
            if !wait.is_zero() {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(wait) => continue,
                    () = self.recheck.notified() => {
                        self.reread();
                        continue;
                    }
                }
            }
            let outcome = tokio::select! {
                () = cancel.cancelled() => return,
                r = renew(&self.role, &self.candidates) => r,
            };
            match outcome {
                Ok(secrets) => {
                    let now = ca::now_unix();
                    let next = match next_check(
                        secrets.not_after,
                        now,
                        self.role.security.renew_before,
                        false,
                    ) {
                        Due::Now => now,
                        Due::After(d) => now + d.as_secs(),
                    };
                    let held = secrets.into_secrets();
                    (self.report)(RenewalReport::Renewed {
                        at: now,
                        not_after: held.not_after,
                        names: held.names.clone(),
                        next,
                        acl: held.acl.clone(),
                    });
                    if let Some(m) = self.role.security.material.as_mut() {
                        m.secrets = held;
                    }
                    let _ = self.events.send(DaemonEvent::Renewed);
                }
                Err(e) => {
                    let error = super::join_server::error_chain(&e);
                    (self.report)(RenewalReport::Failed {
                        error: error.clone(),
                        next: ca::now_unix() + RETRY_AFTER_FAILURE.as_secs(),
                    });
                    tracing::warn!(%error, retry_in = ?RETRY_AFTER_FAILURE, "failed to renew the node certificate");
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(RETRY_AFTER_FAILURE) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    #[test]
    fn renewal_is_due_once_fewer_than_renew_before_remain() {
        let before = Duration::from_secs(30 * DAY);
        let not_after = 1_000 * DAY;
        assert_eq!(
            next_check(not_after, not_after - 30 * DAY, before, false),
            Due::Now
        );
        assert_eq!(
            next_check(not_after, not_after + 1, before, false),
            Due::Now
        );
        assert_eq!(
            next_check(not_after, not_after - 30 * DAY - 10, before, false),
            Due::After(Duration::from_secs(10))
        );
    }

    #[test]
    fn a_far_expiry_is_looked_at_again_within_the_hour() {
        let before = Duration::from_secs(30 * DAY);
        assert_eq!(
            next_check(1_000 * DAY, 10 * DAY, before, false),
            Due::After(LONGEST_SLEEP)
        );
        assert_eq!(
            next_check(1_000 * DAY, 10 * DAY, before, true),
            Due::After(MISSING_TOKENS_EVERY)
        );
    }
}

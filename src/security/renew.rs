//! Certificate renewal: before the node certificate expires (fewer than
//! `[security] renew_before_days` left, or a third of the certificate's
//! whole lifetime when that is less: [`renew_ahead`]; never sooner than
//! [`MIN_RENEW_INTERVAL`] after the last renewal), make a new key and ask a CA holder
//! to sign it (`POST /v1/renew`, mutual TLS with the current certificate;
//! a CA holder signs its own), write the new material as one generation
//! (`store::write_node_material`, under the security dir's lock, so the
//! ACL bootstrap's local renewal never interleaves with this task's), and
//! tell the daemon ([`DaemonEvent::Renewed`]): it re-loads the role (so the
//! status shows the new expiry) and sends SIGHUP to both agents, which
//! re-read their TLS files on it.
//!
//! The same exchange hands out ACL tokens made after the node joined:
//! while `node.json` lacks a token the node's roles use, the task fetches
//! the secrets alone ([`refresh_secrets`]: a CSR for the CURRENT key, the
//! certificate and key in force kept), first after
//! [`MISSING_TOKENS_EVERY`], doubling to [`MISSING_TOKENS_LONGEST`] while
//! nothing new comes. Nothing is written when nothing changed; the daemon
//! hears of it ([`DaemonEvent::Reload`]) only when a token an agent's
//! config carries changed.
//!
//! Owns the timing ([`next_check`], [`next_token_wait`], pure) and the
//! task; the exchange is `join_client`'s.

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
use crate::role::security::{AclTokensFile, NodeSecrets, NodeSecretsFile};
use crate::supervise::daemon::DaemonEvent;

/// First pause before a node whose `node.json` lacks ACL tokens asks for
/// them (the secrets only, for its current key: the Nomad token exists
/// seconds after the first Nomad leader, so this starts short).
pub const MISSING_TOKENS_EVERY: Duration = Duration::from_secs(10);
/// Longest pause between two asks while nothing new comes (the pause
/// doubles from [`MISSING_TOKENS_EVERY`]).
pub const MISSING_TOKENS_LONGEST: Duration = Duration::from_secs(300);
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

/// The shortest time between two renewals of a node, whatever the
/// lifetimes: the guard against renewing (and sending the agents SIGHUP)
/// over and over.
pub const MIN_RENEW_INTERVAL: Duration = Duration::from_secs(15 * 60);
/// A renewal starts once less than this share (1/n) of the certificate's
/// whole lifetime is left, when that comes later than `renew_before`.
pub const LIFETIME_SHARE: u64 = 3;

/// How long before the expiry a certificate valid from `not_before` to
/// `not_after` (Unix seconds) is renewed: `renew_before`, or a third of
/// the lifetime when that is shorter (a signer with a `cert_days` at or
/// below this node's `renew_before_days` would otherwise hand out
/// certificates that are due at once); true when it was cut so.
pub fn renew_ahead(not_before: u64, not_after: u64, renew_before: Duration) -> (Duration, bool) {
    let share = Duration::from_secs(not_after.saturating_sub(not_before) / LIFETIME_SHARE);
    if share < renew_before {
        (share, true)
    } else {
        (renew_before, false)
    }
}

/// A certificate's validity (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// Valid from.
    pub not_before: u64,
    /// Valid until.
    pub not_after: u64,
}

/// When to renew a certificate of `validity` at `now`, renewing
/// [`renew_ahead`] of its expiry, never sooner than
/// [`MIN_RENEW_INTERVAL`] after the last renewal (`last_renewal`, when this
/// process made one; the certificate's `not_before` stands for it
/// otherwise); `lacks_tokens`: ask every [`MISSING_TOKENS_EVERY`] as well.
pub fn next_check(
    validity: Validity,
    now: u64,
    renew_before: Duration,
    last_renewal: Option<u64>,
    lacks_tokens: bool,
) -> Due {
    let (ahead, _) = renew_ahead(validity.not_before, validity.not_after, renew_before);
    let last = last_renewal.unwrap_or(0).max(validity.not_before);
    let renew_at = validity
        .not_after
        .saturating_sub(ahead.as_secs())
        .max(last.saturating_add(MIN_RENEW_INTERVAL.as_secs()));
    if now >= renew_at {
        return Due::Now;
    }
    let mut wait = Duration::from_secs(renew_at - now).min(LONGEST_SLEEP);
    if lacks_tokens {
        wait = wait.min(MISSING_TOKENS_EVERY);
    }
    Due::After(wait)
}

/// The node's files as they are now.
struct Current {
    cert_pem: String,
    key_pem: crate::role::Secret,
    json: NodeSecretsFile,
}

fn read_current(role: &NodeRole) -> Result<Current, JoinError> {
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
    let cert_pem = read(&material.cert_file)?;
    let key_pem = crate::role::Secret::new(read(&material.key_file)?);
    // serde's text may quote a value of the file (a key): never shown.
    let json: NodeSecretsFile = serde_json::from_str(&read(&dir.join(paths::NODE_SECRETS_FILE))?)
        .map_err(|e| {
        material_error(format!(
            "{}: {}",
            paths::NODE_SECRETS_FILE,
            store::json_problem(&e)
        ))
    })?;
    Ok(Current {
        cert_pem,
        key_pem,
        json,
    })
}

/// Holds the security dir's lock (taken off the runtime's threads) so the
/// renewal task and the ACL bootstrap's local renewal never interleave.
async fn lock(role: &NodeRole) -> Result<store::MaterialLock, JoinError> {
    let dir = role.config_dir.join(paths::SECURITY_SUBDIR);
    tokio::task::spawn_blocking(move || store::lock_material(&dir))
        .await
        .map_err(|e| JoinError::Material {
            dir: role.config_dir.join(paths::SECURITY_SUBDIR),
            reason: format!("the lock task failed: {e}"),
        })?
        .map_err(JoinError::Write)
}

/// Asks for a certificate of `key` (locally when this node holds the CA,
/// else through the first of `candidates` that answers) and checks the
/// answer; returns it and whether another CA holder answered for this
/// one (it then lacked a token).
async fn exchange_for(
    role: &NodeRole,
    candidates: &[String],
    current: &Current,
    key: &rcgen::KeyPair,
) -> Result<(String, super::wire::JoinResponse, bool), JoinError> {
    let Some(material) = &role.security.material else {
        return Err(JoinError::Material {
            dir: role.config_dir.join(paths::SECURITY_SUBDIR),
            reason: "the node has no material to renew".into(),
        });
    };
    let pinned = material.secrets.ca_sha256.clone();
    let request = join_client::request_for(role, key)?;
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
                cert_pem: &current.cert_pem,
                key_pem: &current.key_pem,
            },
            &request,
        )
        .await?
    };
    let mut answer = join_client::check_answer(&endpoint, &pinned, key, &request, answer)?;
    // The bootstrap tokens only the init node holds are never handed out
    // again: keep them.
    let keep = |new: &mut Option<String>, old: &Option<String>| {
        if new.is_none() {
            new.clone_from(old);
        }
    };
    keep(
        &mut answer.secrets.acl.consul_initial_management,
        &current.json.acl.consul_initial_management,
    );
    keep(
        &mut answer.secrets.acl.nomad_bootstrap,
        &current.json.acl.nomad_bootstrap,
    );
    if ask_others {
        learn_tokens(role, &answer.secrets.acl)?;
    }
    Ok((endpoint, answer, ask_others))
}

/// Writes `answer` with `key_pem` as the node's new generation (off the
/// runtime's threads); the caller holds the security dir's lock.
async fn write(
    role: &NodeRole,
    answer: super::wire::JoinResponse,
    key_pem: crate::role::Secret,
) -> Result<(), JoinError> {
    let config_dir = role.config_dir.clone();
    let consul_user = role.roles.is_consul().then(|| role.consul.user.clone());
    let nomad_user = role.roles.is_nomad().then(|| role.nomad.user.clone());
    tokio::task::spawn_blocking(move || {
        join_client::write_material_locked(
            &config_dir,
            &answer,
            &key_pem,
            consul_user.as_deref(),
            nomad_user.as_deref(),
        )
    })
    .await
    .map_err(|e| JoinError::Material {
        dir: role.config_dir.join(paths::SECURITY_SUBDIR),
        reason: format!("the writer failed: {e}"),
    })?
}

/// Renews the certificate of the node of `role` (which must have
/// material) with a new key: locally when it holds the CA, else through
/// the first of `candidates` that answers. Writes the new material (one
/// generation, under the security dir's lock) and returns the new
/// `node.json`.
pub async fn renew(role: &NodeRole, candidates: &[String]) -> Result<NodeSecretsFile, JoinError> {
    let _lock = lock(role).await?;
    let current = read_current(role)?;
    let key = ca::new_key_pair().map_err(JoinError::Key)?;
    let (endpoint, answer, _) = exchange_for(role, candidates, &current, &key).await?;
    let secrets = answer.secrets.clone();
    write(role, answer, ca::key_pem_of(&key)).await?;
    tracing::info!(%endpoint, not_after = secrets.not_after, "renewed the node certificate");
    Ok(secrets)
}

/// What a [`refresh_secrets`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing new: no file was written.
    Nothing,
    /// Only the supervisor's own tokens: `node.json` rewritten, the agents
    /// need not hear of it.
    SupervisorOnly,
    /// A token an agent's config carries: `node.json` rewritten, the
    /// agents' configs must be rendered again.
    Agents,
}

/// What changed from `old` to `new` (the tokens; the rest of `node.json`
/// describes the certificate, which a refresh keeps).
pub fn change_of(old: &AclTokensFile, new: &AclTokensFile) -> Change {
    if old == new {
        return Change::Nothing;
    }
    // What the agents' configs carry (render): every token but the
    // supervisor's own two.
    let agents = |a: &AclTokensFile| {
        (
            a.consul_agent.clone(),
            a.consul_replication.clone(),
            a.consul_initial_management.clone(),
            a.nomad_consul.clone(),
            a.nomad_bootstrap.clone(),
        )
    };
    if agents(old) == agents(new) {
        Change::SupervisorOnly
    } else {
        Change::Agents
    }
}

/// The outcome of [`refresh_secrets`].
#[derive(Debug, Clone)]
pub struct Refreshed {
    /// `node.json` now in force.
    pub secrets: NodeSecretsFile,
    /// What changed.
    pub change: Change,
}

/// Fetches the secrets only (the ACL tokens made after this node joined):
/// the same exchange as a renewal, for a CSR of the node's CURRENT key; the
/// certificate and key in force are kept, and `node.json` is rewritten
/// (a new generation) only when a token changed.
pub async fn refresh_secrets(
    role: &NodeRole,
    candidates: &[String],
) -> Result<Refreshed, JoinError> {
    let _lock = lock(role).await?;
    let current = read_current(role)?;
    let key =
        rcgen::KeyPair::from_pem(current.key_pem.expose()).map_err(|_| JoinError::Material {
            dir: role.config_dir.join(paths::SECURITY_SUBDIR),
            reason: format!(
                "{} is not a key this supervisor can use",
                paths::NODE_KEY_FILE
            ),
        })?;
    let (endpoint, answer, _) = exchange_for(role, candidates, &current, &key).await?;
    let change = change_of(&current.json.acl, &answer.secrets.acl);
    let mut secrets = current.json.clone();
    if change == Change::Nothing {
        return Ok(Refreshed { secrets, change });
    }
    secrets.acl = answer.secrets.acl.clone();
    let kept = super::wire::JoinResponse {
        certificate: current.cert_pem.clone(),
        ca: answer.ca.clone(),
        secrets: secrets.clone(),
        cluster: None,
    };
    write(role, kept, current.key_pem.clone()).await?;
    tracing::info!(%endpoint, ?change, "took the cluster's newer ACL tokens");
    Ok(Refreshed { secrets, change })
}

/// The pause before the next look for missing tokens: the first after a
/// change, doubled while nothing new comes, at most
/// [`MISSING_TOKENS_LONGEST`].
pub fn next_token_wait(previous: Duration, found_something: bool) -> Duration {
    if found_something {
        MISSING_TOKENS_EVERY
    } else {
        (previous * 2).clamp(MISSING_TOKENS_EVERY, MISSING_TOKENS_LONGEST)
    }
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
            .and_then(|b| {
                serde_json::from_slice::<NodeSecretsFile>(&b).map_err(|e| store::json_problem(&e))
            });
        match read {
            Ok(f) => m.secrets = f.into_secrets(),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read the node's secrets again; keeping the ones in force");
            }
        }
    }

    /// Renews when due until `cancel`; while `node.json` lacks a token,
    /// fetches the secrets alone now and then (10 s, doubling to 5 min
    /// while nothing new comes), and tells the daemon only when something
    /// the agents read changed.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut token_wait = MISSING_TOKENS_EVERY;
        // When this task last renewed (Unix seconds), and the lifetime a
        // shortened renewal was last logged for.
        let mut last_renewal: Option<u64> = None;
        let mut clamp_said: Option<u64> = None;
        loop {
            let Some(material) = &self.role.security.material else {
                return;
            };
            let lacks = lacks_acl_tokens(&self.role, &material.secrets);
            let now = ca::now_unix();
            let validity = Validity {
                not_before: material.secrets.not_before,
                not_after: material.secrets.not_after,
            };
            say_if_clamped(validity, self.role.security.renew_before, &mut clamp_said);
            let due = next_check(
                validity,
                now,
                self.role.security.renew_before,
                last_renewal,
                false,
            );
            let (wait, action) = match due {
                Due::Now => (Duration::ZERO, Action::Renew),
                Due::After(d) if lacks && token_wait < d => (token_wait, Action::Refresh),
                Due::After(d) => (d, Action::Look),
            };
            if !wait.is_zero() {
                (self.report)(RenewalReport::Next {
                    next: now + wait.as_secs(),
                });
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                    () = self.recheck.notified() => {
                        self.reread();
                        token_wait = MISSING_TOKENS_EVERY;
                        continue;
                    }
                }
            }
            match action {
                Action::Look => {}
                Action::Renew => {
                    let outcome = tokio::select! {
                        () = cancel.cancelled() => return,
                        r = renew(&self.role, &self.candidates) => r,
                    };
                    match outcome {
                        Ok(secrets) => {
                            token_wait = MISSING_TOKENS_EVERY;
                            last_renewal = Some(ca::now_unix());
                            self.took(secrets, Some(DaemonEvent::Renewed), last_renewal);
                        }
                        Err(e) => {
                            self.failed(&e, RETRY_AFTER_FAILURE);
                            tokio::select! {
                                () = cancel.cancelled() => return,
                                () = tokio::time::sleep(RETRY_AFTER_FAILURE) => {}
                            }
                        }
                    }
                }
                Action::Refresh => {
                    let outcome = tokio::select! {
                        () = cancel.cancelled() => return,
                        r = refresh_secrets(&self.role, &self.candidates) => r,
                    };
                    match outcome {
                        Ok(Refreshed { secrets, change }) => {
                            // Another writer (the init node's ACL
                            // bootstrap renews locally, and tells the
                            // daemon itself) may have changed the files
                            // since this task last looked: take them.
                            let elsewhere = change == Change::Nothing
                                && self.role.security.material.as_ref().is_some_and(|m| {
                                    let disk = secrets.clone().into_secrets();
                                    (disk.not_after, &disk.acl)
                                        != (m.secrets.not_after, &m.secrets.acl)
                                });
                            token_wait =
                                next_token_wait(token_wait, change != Change::Nothing || elsewhere);
                            match change {
                                Change::Nothing if elsewhere => {
                                    self.took(secrets, None, last_renewal)
                                }
                                Change::Nothing => {}
                                // The supervisor's client takes its tokens
                                // from the report; the agents' configs
                                // are rendered again only when theirs
                                // changed (no TLS file did: a plain reload).
                                Change::SupervisorOnly => self.took(secrets, None, last_renewal),
                                Change::Agents => {
                                    self.took(secrets, Some(DaemonEvent::Reload), last_renewal)
                                }
                            }
                        }
                        Err(e) => {
                            token_wait = next_token_wait(token_wait, false);
                            self.failed(&e, token_wait);
                        }
                    }
                }
            }
        }
    }

    /// A renewal or refresh wrote `secrets`: report it, hold it, and tell
    /// the daemon with `event`.
    fn took(
        &mut self,
        secrets: NodeSecretsFile,
        event: Option<DaemonEvent>,
        last_renewal: Option<u64>,
    ) {
        let now = ca::now_unix();
        let validity = Validity {
            not_before: secrets.not_before,
            not_after: secrets.not_after,
        };
        let next = match next_check(
            validity,
            now,
            self.role.security.renew_before,
            last_renewal,
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
        if let Some(ev) = event {
            let _ = self.events.send(ev);
        }
    }

    fn failed(&self, e: &JoinError, retry_in: Duration) {
        let error = super::join_server::error_chain(e);
        (self.report)(RenewalReport::Failed {
            error: error.clone(),
            next: ca::now_unix() + retry_in.as_secs(),
        });
        tracing::warn!(%error, ?retry_in, "failed to renew the node certificate or fetch its secrets");
    }
}

/// Logs once per certificate lifetime (`said` holds the last one) that
/// `renew_before` was cut to a share of it.
fn say_if_clamped(v: Validity, renew_before: Duration, said: &mut Option<u64>) {
    let (ahead, clamped) = renew_ahead(v.not_before, v.not_after, renew_before);
    let lifetime = v.not_after.saturating_sub(v.not_before);
    if !clamped || *said == Some(lifetime) {
        return;
    }
    *said = Some(lifetime);
    tracing::warn!(
        renew_before_days = renew_before.as_secs() / 86_400,
        certificate_lifetime_hours = lifetime / 3600,
        renew_ahead_hours = ahead.as_secs() / 3600,
        min_interval_minutes = MIN_RENEW_INTERVAL.as_secs() / 60,
        "the certificate lives too short for renew_before_days: renewing once a third of its lifetime is left instead"
    );
}

/// What the task does once its wait is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Look at the expiry again.
    Look,
    /// Renew the certificate (a new key).
    Renew,
    /// Fetch the missing tokens (same key, same certificate).
    Refresh,
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    /// A certificate of `days` days issued at `issued`.
    fn cert(issued: u64, days: u64) -> Validity {
        Validity {
            not_before: issued,
            not_after: issued + days * DAY,
        }
    }

    #[test]
    fn renewal_is_due_once_fewer_than_renew_before_remain() {
        let before = Duration::from_secs(30 * DAY);
        let v = cert(910 * DAY, 90);
        let not_after = v.not_after;
        assert_eq!(
            next_check(v, not_after - 30 * DAY, before, None, false),
            Due::Now
        );
        assert_eq!(next_check(v, not_after + 1, before, None, false), Due::Now);
        assert_eq!(
            next_check(v, not_after - 30 * DAY - 10, before, None, false),
            Due::After(Duration::from_secs(10))
        );
    }

    #[test]
    fn a_lifetime_at_or_below_renew_before_renews_at_a_third_of_it_not_at_once() {
        let before = Duration::from_secs(30 * DAY);
        // The signer's cert_days (2, 30) at or below the node's 30.
        for days in [2, 30] {
            let issued = 1_000 * DAY;
            let v = cert(issued, days);
            assert_eq!(
                renew_ahead(v.not_before, v.not_after, before),
                (Duration::from_secs(days * DAY / 3), true)
            );
            // Just received: not due; due once a third is left.
            assert!(
                matches!(
                    next_check(v, issued + 60, before, Some(issued), false),
                    Due::After(_)
                ),
                "{days} days"
            );
            let third_left = v.not_after - days * DAY / 3;
            assert_eq!(
                next_check(v, third_left - 10, before, Some(issued), false),
                Due::After(Duration::from_secs(10))
            );
            assert_eq!(
                next_check(v, third_left, before, Some(issued), false),
                Due::Now
            );
        }
        // A lifetime longer than three times renew_before is not cut.
        assert_eq!(renew_ahead(0, 90 * DAY, before), (before, false));
    }

    #[test]
    fn never_sooner_than_the_minimum_interval_after_the_last_renewal() {
        let before = Duration::from_secs(30 * DAY);
        let min = MIN_RENEW_INTERVAL.as_secs();
        // A certificate of 10 minutes (already past its third): the last
        // renewal holds the next one off.
        let now = 5_000 * DAY;
        let v = Validity {
            not_before: now,
            not_after: now + 600,
        };
        assert_eq!(
            next_check(v, now + 1, before, Some(now), false),
            Due::After(Duration::from_secs(min - 1))
        );
        assert_eq!(next_check(v, now + min, before, Some(now), false), Due::Now);
        // Without a renewal of this process, not_before stands for it.
        assert_eq!(
            next_check(v, now + 1, before, None, false),
            Due::After(Duration::from_secs(min - 1))
        );
        // Broken validity (not_after before not_before): no panic, and
        // still not sooner than the interval.
        let broken = Validity {
            not_before: now,
            not_after: now - 1,
        };
        assert!(matches!(
            next_check(broken, now, before, Some(now), false),
            Due::After(_)
        ));
        assert_eq!(
            next_check(
                Validity {
                    not_before: u64::MAX,
                    not_after: 0
                },
                0,
                before,
                Some(u64::MAX),
                true
            ),
            Due::After(MISSING_TOKENS_EVERY)
        );
    }

    #[test]
    fn the_token_wait_doubles_to_five_minutes_and_resets_on_news() {
        let mut w = MISSING_TOKENS_EVERY;
        let mut seen = vec![w];
        for _ in 0..8 {
            w = next_token_wait(w, false);
            seen.push(w);
        }
        let secs: Vec<u64> = seen.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, vec![10, 20, 40, 80, 160, 300, 300, 300, 300]);
        assert_eq!(next_token_wait(w, true), MISSING_TOKENS_EVERY);
    }

    #[test]
    fn only_tokens_the_agents_carry_make_an_agent_change() {
        let t = |s: &str| Some(s.to_string());
        let old = AclTokensFile {
            consul_agent: t("a"),
            nomad_consul: t("n"),
            ..AclTokensFile::default()
        };
        assert_eq!(change_of(&old, &old.clone()), Change::Nothing);
        let sup = AclTokensFile {
            nomad_supervisor: t("s"),
            consul_supervisor: t("c"),
            ..old.clone()
        };
        assert_eq!(change_of(&old, &sup), Change::SupervisorOnly);
        for new in [
            AclTokensFile {
                consul_agent: t("other"),
                ..old.clone()
            },
            AclTokensFile {
                consul_replication: t("r"),
                ..old.clone()
            },
            AclTokensFile {
                nomad_consul: None,
                ..old.clone()
            },
        ] {
            assert_eq!(change_of(&old, &new), Change::Agents);
        }
    }

    #[test]
    fn a_far_expiry_is_looked_at_again_within_the_hour() {
        let before = Duration::from_secs(30 * DAY);
        let v = cert(0, 1_000);
        assert_eq!(
            next_check(v, 10 * DAY, before, None, false),
            Due::After(LONGEST_SLEEP)
        );
        assert_eq!(
            next_check(v, 10 * DAY, before, None, true),
            Due::After(MISSING_TOKENS_EVERY)
        );
    }
}

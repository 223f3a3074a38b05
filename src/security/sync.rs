//! Join-token sync between CA holders: every CA holder pulls `GET
//! /v1/cluster/tokens` from the other CA holders it knows every
//! [`EVERY`] (with jitter) and merges the records into its own
//! `tokens.json` (`TokenStore::merge`: the union by id, a revocation wins,
//! the larger use count is kept). A token created or revoked on any CA
//! holder is known, or refused, on all of them within about a round.
//!
//! Endpoint identity both ways: the pull presents this node's certificate
//! (mutual TLS; the endpoint hands the records only to a certificate with
//! a server name of the cluster CA) and trusts only the cluster CA it
//! holds, by its pin, for [`crate::paths::JOIN_SERVER_NAME`] (`pin`).
//!
//! Candidates are the ones a joining node uses (`join_client::candidates`)
//! plus the Consul servers of other datacenters discovery found, minus
//! this node's own addresses. A candidate that is no CA holder (no join
//! endpoint, or one refusing the records) is tried again after a backoff
//! that doubles up to [`BACKOFF_MAX`]; each pull is bounded (connect and
//! TLS handshake 5 s each, the answer [`REQUEST_TIMEOUT`], at most
//! [`MAX_ANSWER_BYTES`]). Writes `tokens.json` only when the merge
//! changes it, under the store's lock (`TokenStore::modify`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::{Method, StatusCode};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::join_client::{self, Sent};
use super::pin::{self, PinnedCaVerifier};
use super::token::{TokenError, TokenRecord, TokenStore};
use super::{ca, names};
use crate::peers::Peers;
use crate::role::{NodeRole, Secret};

/// Time between two sync rounds (before jitter).
pub const EVERY: Duration = Duration::from_secs(10);
/// Longest pause before a failing candidate is asked again.
pub const BACKOFF_MAX: Duration = Duration::from_secs(120);
/// Time for one pull once the TLS handshake is done.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read: [`super::token`] keeps at most 10,000 records of
/// a few hundred bytes each.
pub const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;
/// The path pulled.
pub const TOKENS_PATH: &str = "/v1/cluster/tokens";

/// Why a pull or a merge failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// This node's certificate or key could not be read.
    #[error("failed to read this node's certificate for the token sync: {0}")]
    Identity(String),
    /// The candidate did not answer.
    #[error("{endpoint} did not answer: {reason}")]
    Unreachable {
        /// `host:port`.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// The candidate presents another CA.
    #[error("{endpoint} is not this cluster's join endpoint")]
    OtherCa {
        /// `host:port`.
        endpoint: String,
    },
    /// The candidate refused or failed.
    #[error("{endpoint} answered {status}: {message}")]
    Status {
        /// `host:port`.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// Its reason (bounded).
        message: String,
    },
    /// The answer is not a list of token records.
    #[error("{endpoint} answered something that is not a list of token records: {reason}")]
    BadAnswer {
        /// `host:port`.
        endpoint: String,
        /// What was wrong (never a record's content).
        reason: String,
    },
    /// The local store could not be read or written.
    #[error("failed to merge the pulled token records")]
    Store(#[source] TokenError),
}

/// The candidates a CA holder of `role` pulls from, given what discovery
/// found: a joining node's candidates and the Consul servers of other
/// datacenters, without this node's own addresses (never itself).
pub fn candidates(role: &NodeRole, peers: &Peers) -> Vec<String> {
    let own: Vec<String> = names::ips(&role.addresses)
        .iter()
        .map(ToString::to_string)
        .chain(["localhost".to_string(), role.node_name.clone()])
        .chain(std::iter::once(role.security.join_listen.ip().to_string()))
        .collect();
    let mut all = join_client::candidates(role, peers);
    for wan in &peers.consul_wan {
        let c = join_client::host_of(wan);
        if let Some(h) = c {
            if !all.contains(&h) {
                all.push(h);
            }
        }
    }
    all.retain(|c| !own.iter().any(|o| join_client::host_is(c, o)));
    all
}

/// Pulls the token records of the CA holder at `candidate` (`host` or
/// `host:port`), presenting `cert_pem`/`key_pem`, trusting only the CA
/// `pinned`.
pub async fn pull(
    candidate: &str,
    pinned: &str,
    cert_pem: &str,
    key_pem: &Secret,
) -> Result<Vec<TokenRecord>, SyncError> {
    let endpoint = join_client::endpoint_of(candidate);
    let auth = join_client::client_auth(cert_pem, key_pem)
        .map_err(|e| SyncError::Identity(e.to_string()))?;
    let verifier = Arc::new(PinnedCaVerifier::new(pinned, pin::provider()));
    let sent = join_client::send(
        &endpoint,
        verifier,
        Some(auth),
        Method::GET,
        TOKENS_PATH,
        None,
        Vec::new(),
        REQUEST_TIMEOUT,
        MAX_ANSWER_BYTES,
    )
    .await;
    let (status, body) = match sent {
        Sent::Answer { status, body, .. } => (status, body),
        Sent::Next(reason) => return Err(SyncError::Unreachable { endpoint, reason }),
        Sent::Mismatch(_) => return Err(SyncError::OtherCa { endpoint }),
        Sent::Failed(e) => {
            return Err(SyncError::Unreachable {
                endpoint,
                reason: e.to_string(),
            });
        }
    };
    if status != StatusCode::OK {
        let message = serde_json::from_slice::<super::wire::ErrorBody>(&body)
            .map(|b| b.error)
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect();
        return Err(SyncError::Status {
            endpoint,
            status: status.as_u16(),
            message,
        });
    }
    let records: Vec<TokenRecord> =
        serde_json::from_slice(&body).map_err(|e| SyncError::BadAnswer {
            endpoint: endpoint.clone(),
            // serde's position and category only: a value could be a hash.
            reason: format!(
                "{:?} error at line {} column {}",
                e.classify(),
                e.line(),
                e.column()
            ),
        })?;
    if let Some(bad) = records.iter().position(|r| !well_formed(r)) {
        return Err(SyncError::BadAnswer {
            endpoint,
            reason: format!("record {bad} has a malformed id or secret hash"),
        });
    }
    Ok(records)
}

/// A record's id is `[a-z0-9]{6}` and its hash 64 lowercase hex digits.
fn well_formed(r: &TokenRecord) -> bool {
    let lower_alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let lower_hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
    r.id.len() == 6
        && r.id.chars().all(lower_alnum)
        && r.secret_sha256.len() == 64
        && r.secret_sha256.chars().all(lower_hex)
}

/// Merges `records` into the store in `cluster_dir` (CA `pin`) at `now`
/// and prunes it; writes (under the store's lock) only when that changes
/// something. Returns whether it did.
pub fn merge_into(
    cluster_dir: &std::path::Path,
    pin: &str,
    records: &[TokenRecord],
    now: u64,
) -> Result<bool, TokenError> {
    let merged = |s: &TokenStore| {
        let mut m = s.clone();
        m.merge(records);
        m.prune(now);
        m
    };
    let current = TokenStore::load(cluster_dir, pin)?;
    if merged(&current).list() == current.list() {
        return Ok(false);
    }
    TokenStore::modify(cluster_dir, pin, |s| {
        let m = merged(s);
        let changed = m.list() != s.list();
        *s = m;
        Ok(changed)
    })
}

/// The sync task of one CA holder.
#[derive(Debug)]
pub struct TokenSync {
    /// `<config>/cluster/`.
    pub cluster_dir: PathBuf,
    /// The cluster CA's pin.
    pub pin: String,
    /// This node's certificate (PEM), presented to the others.
    pub cert_file: PathBuf,
    /// Its key.
    pub key_file: PathBuf,
    /// The candidates to pull from (updated as discovery finds servers).
    pub candidates: watch::Receiver<Vec<String>>,
    /// Time between rounds before jitter ([`EVERY`]; tests use less).
    pub every: Duration,
}

/// What one round did with one candidate.
#[derive(Debug)]
pub struct Pulled {
    /// The candidate.
    pub candidate: String,
    /// Whether the merge changed this node's store, or why it failed.
    pub outcome: Result<bool, SyncError>,
}

/// When a failing candidate is asked again.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    failures: u32,
    until: Instant,
}

impl TokenSync {
    /// Reads this node's certificate and key (again each round: a renewal
    /// replaces them).
    fn identity(&self) -> Result<(String, Secret), SyncError> {
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p)
                .map_err(|e| SyncError::Identity(format!("{}: {e}", p.display())))
        };
        Ok((read(&self.cert_file)?, Secret::new(read(&self.key_file)?)))
    }

    /// Pulls from each of `candidates` (all at once) and merges what each
    /// answers.
    pub async fn round(&self, candidates: &[String]) -> Vec<Pulled> {
        let (cert, key) = match self.identity() {
            Ok(x) => x,
            Err(e) => {
                return vec![Pulled {
                    candidate: "-".into(),
                    outcome: Err(e),
                }];
            }
        };
        let pulls = candidates.iter().map(|c| {
            let (cert, key) = (&cert, &key);
            async move { (c.clone(), pull(c, &self.pin, cert, key).await) }
        });
        let mut out = Vec::with_capacity(candidates.len());
        for (candidate, got) in futures_util::future::join_all(pulls).await {
            let outcome = match got {
                Ok(records) => {
                    let dir = self.cluster_dir.clone();
                    let pin = self.pin.clone();
                    tokio::task::spawn_blocking(move || {
                        merge_into(&dir, &pin, &records, ca::now_unix())
                    })
                    .await
                    .unwrap_or_else(|e| {
                        Err(TokenError::Parse {
                            path: self.cluster_dir.clone(),
                            reason: format!("the merge failed: {e}"),
                        })
                    })
                    .map_err(SyncError::Store)
                }
                Err(e) => Err(e),
            };
            out.push(Pulled { candidate, outcome });
        }
        out
    }

    /// Pulls and merges every round until `cancel`.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut backoff: HashMap<String, Backoff> = HashMap::new();
        loop {
            let now = Instant::now();
            let due: Vec<String> = self
                .candidates
                .borrow_and_update()
                .iter()
                .filter(|c| backoff.get(*c).is_none_or(|b| b.until <= now))
                .cloned()
                .collect();
            if !due.is_empty() {
                let pulled = tokio::select! {
                    () = cancel.cancelled() => return,
                    p = self.round(&due) => p,
                };
                for p in pulled {
                    match p.outcome {
                        Ok(changed) => {
                            backoff.remove(&p.candidate);
                            if changed {
                                tracing::info!(from = %p.candidate, "merged join-token records from another CA holder");
                            }
                        }
                        Err(e) => {
                            let b = backoff.entry(p.candidate.clone()).or_insert(Backoff {
                                failures: 0,
                                until: now,
                            });
                            b.failures = b.failures.saturating_add(1);
                            let pause = self
                                .every
                                .saturating_mul(1u32 << b.failures.min(8))
                                .min(BACKOFF_MAX.max(self.every));
                            b.until = Instant::now() + pause;
                            // Said once per candidate while it keeps failing.
                            if b.failures == 1 {
                                tracing::warn!(from = %p.candidate, error = %super::join_server::error_chain(&e), retry_in = ?pause, "failed to sync join tokens");
                            } else {
                                tracing::debug!(from = %p.candidate, error = %super::join_server::error_chain(&e), retry_in = ?pause, "failed to sync join tokens");
                            }
                        }
                    }
                }
            }
            let wait = jittered(self.every);
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// `every` ± 20 %, so CA holders started together do not pull in step.
fn jittered(every: Duration) -> Duration {
    let spread = every.as_millis() as u64 / 5;
    if spread == 0 {
        return every;
    }
    let off = rand::random_range(0..=2 * spread);
    (every + Duration::from_millis(off)).saturating_sub(Duration::from_millis(spread))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, hash: &str) -> TokenRecord {
        TokenRecord {
            id: id.into(),
            secret_sha256: hash.into(),
            created: 1,
            expires: 2,
            revoked: None,
            description: String::new(),
            clients_only: false,
            uses: 0,
        }
    }

    #[test]
    fn records_with_malformed_ids_or_hashes_are_refused() {
        let h = "a".repeat(64);
        assert!(well_formed(&record("abc123", &h)));
        assert!(!well_formed(&record("ABC123", &h)));
        assert!(!well_formed(&record("abc12", &h)));
        assert!(!well_formed(&record("abc123", &"A".repeat(64))));
        assert!(!well_formed(&record("abc123", "ab")));
    }

    #[test]
    fn jitter_stays_within_a_fifth() {
        for _ in 0..200 {
            let d = jittered(Duration::from_secs(10));
            assert!(
                d >= Duration::from_secs(8) && d <= Duration::from_secs(12),
                "{d:?}"
            );
        }
        assert_eq!(jittered(Duration::ZERO), Duration::ZERO);
    }
}

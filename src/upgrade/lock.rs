//! Consul's documented lock pattern (consul.io "Application leader
//! election with sessions"): a session with a TTL, renewed every third of
//! it, and `PUT /v1/kv/<key>?acquire=<session>`. The key's value names the
//! holder. A holder that dies stops renewing; Consul invalidates its
//! session (after up to twice the TTL) and, with `Behavior = release`, the
//! key is free again.
//!
//! The session has no node checks (`NodeChecks = []`): the TTL alone
//! decides, so the holder's own Consul agent restarting for the upgrade
//! (which fails `serfHealth` for a moment) does not drop the lock.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::agent::ConsulClient;
use crate::agent::kv::SessionRequest;

/// Lock-delay of the session: after an invalidation (a dead holder) the
/// key cannot be taken for this long (Consul's guard against a holder
/// that is only slow).
const LOCK_DELAY: Duration = Duration::from_secs(5);
/// How many times a release is tried (the holder's own Consul may still
/// be coming back from its restart).
const RELEASE_TRIES: u32 = 10;
/// Pause between two release attempts.
const RELEASE_PAUSE: Duration = Duration::from_secs(1);

/// A lock held: released with [`HeldLock::release`]; dropped without it,
/// the renewal stops and Consul frees the key once the session expires.
#[derive(Debug)]
pub struct HeldLock {
    consul: ConsulClient,
    dc: Option<String>,
    key: String,
    session: String,
    renew: CancellationToken,
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        self.renew.cancel();
    }
}

/// Whether the lock was taken, or who holds it.
#[derive(Debug)]
pub enum Acquired {
    /// Ours now.
    Held(HeldLock),
    /// Held by another (the holder's value, as written).
    Busy(String),
}

/// Tries once to take `key` (in `dc`, `None`: the agent's) for `holder`.
pub async fn try_acquire(
    consul: &ConsulClient,
    dc: Option<&str>,
    key: &str,
    holder: &str,
    ttl: Duration,
) -> Result<Acquired, crate::agent::AgentError> {
    let req = SessionRequest {
        name: format!("hashi-supervisor upgrade {holder}"),
        ttl,
        behavior_delete: false,
        lock_delay: LOCK_DELAY,
        node: None,
        node_checks: Some(Vec::new()),
    };
    let session = consul.session_create(dc, &req).await?;
    let got = match consul
        .kv_acquire(dc, key, &session, holder.as_bytes())
        .await
    {
        Ok(g) => g,
        Err(e) => {
            let _ = consul.session_destroy(dc, &session).await;
            return Err(e);
        }
    };
    if !got {
        let _ = consul.session_destroy(dc, &session).await;
        let who = match consul.kv_get(dc, key).await {
            Ok(Some(p)) if p.session.is_some() => String::from_utf8_lossy(&p.value).into_owned(),
            Ok(_) => "another node (just released)".to_string(),
            Err(e) => format!("another node ({})", e.one_line()),
        };
        return Ok(Acquired::Busy(who));
    }
    let renew = CancellationToken::new();
    tokio::spawn(renew_until(
        consul.clone(),
        dc.map(str::to_string),
        session.clone(),
        ttl,
        renew.clone(),
    ));
    Ok(Acquired::Held(HeldLock {
        consul: consul.clone(),
        dc: dc.map(str::to_string),
        key: key.to_string(),
        session,
        renew,
    }))
}

/// Renews `session` every `ttl / 3` until `stop` (or until Consul says it
/// is gone: the lock is lost then, which only the next holder notices).
async fn renew_until(
    consul: ConsulClient,
    dc: Option<String>,
    session: String,
    ttl: Duration,
    stop: CancellationToken,
) {
    let every = (ttl / 3).max(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        match consul.session_renew(dc.as_deref(), &session).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!("the upgrade lock's session expired");
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e.one_line(), "failed to renew the upgrade lock's session");
            }
        }
    }
}

impl HeldLock {
    /// The key held.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The datacenter it lives in (`None`: the agent's).
    pub fn datacenter(&self) -> Option<&str> {
        self.dc.as_deref()
    }

    /// The Consul agent it was taken through.
    pub fn consul(&self) -> &ConsulClient {
        &self.consul
    }

    /// Releases the key and destroys the session, retrying for a while (a
    /// failure is logged: the session's TTL frees the key anyway).
    pub async fn release(self) {
        self.renew.cancel();
        let dc = self.dc.as_deref();
        for attempt in 1..=RELEASE_TRIES {
            let released = self
                .consul
                .kv_release(dc, &self.key, &self.session, b"")
                .await;
            match released {
                Ok(_) => {
                    let _ = self.consul.session_destroy(dc, &self.session).await;
                    return;
                }
                Err(e) if attempt == RELEASE_TRIES => {
                    tracing::warn!(key = %self.key, error = %e.one_line(),
                        "failed to release the upgrade lock; its session expires on its own");
                }
                Err(_) => tokio::time::sleep(RELEASE_PAUSE).await,
            }
        }
    }
}

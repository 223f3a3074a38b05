//! Consul's documented lock pattern (consul.io "Application leader
//! election with sessions"): a session with a TTL, renewed every third of
//! it, and `PUT /v1/kv/<key>?acquire=<session>`. The key's value names the
//! holder. A holder that dies stops renewing; Consul invalidates its
//! session (after up to twice the TTL) and, with `Behavior = release`, the
//! key is free again.
//!
//! The session has no node checks (`NodeChecks = []`): the TTL alone
//! decides, so the holder's own Consul agent restarting for the upgrade
//! (which fails `serfHealth` for a moment) does not drop the lock. It is
//! bound to a Consul server node other than the holder (the gate picks
//! it): Consul invalidates every session of a node that LEAVES, and a
//! Consul client leaves at every stop, its own upgrade's restart
//! included. A server with `leave_on_stop = true` bound to would take the
//! sessions with it when it stops (the default is not to leave).
//!
//! A [`Session`] is made once per wait at the gate and kept across its
//! looks (a waiting node holds one session, whatever the number of keys it
//! tries); the key it wins moves it into a [`HeldLock`].
//!
//! The TTL and a lapse: renewals go through the node's own Consul agent.
//! While that agent restarts (the Consul upgrade itself, in a datacenter
//! with several servers) they fail; if no renewal reaches the servers for
//! the TTL (Consul waits up to twice that), the servers invalidate the
//! session and the key is free for the next node: the lock is lost. The
//! renewal task then sees the session gone and says so
//! ([`Session::is_lost`], [`HeldLock::is_lost`]); the gate takes the key
//! back after the restart if it is still free (`Gate::settle`). A
//! `lock_ttl_secs` longer than the agent's restart keeps it from lapsing.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::agent::kv::SessionRequest;
use crate::agent::{AgentError, ConsulClient};

/// Lock-delay of the session: after an invalidation (a dead holder) the
/// key cannot be taken for this long (Consul's guard against a holder
/// that is only slow).
pub const LOCK_DELAY: Duration = Duration::from_secs(5);
/// How many times a release is tried (the holder's own Consul may still
/// be coming back from its restart).
const RELEASE_TRIES: u32 = 10;
/// Pause between two release attempts.
const RELEASE_PAUSE: Duration = Duration::from_secs(1);
/// Longest holder text shown (status, logs), in characters.
pub const HOLDER_MAX_CHARS: usize = 120;

/// A KV value naming a lock's holder, as shown in statuses and logs: at
/// most [`HOLDER_MAX_CHARS`] characters (`…` marks a cut), control
/// characters replaced by `?` (the value is whatever a writer stored).
pub fn holder_text(raw: &[u8]) -> String {
    shown(raw, HOLDER_MAX_CHARS)
}

/// `raw` as text for a status or a log: at most `max` characters (`…`
/// marks a cut), control characters replaced by `?`.
pub fn shown(raw: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out: String = text
        .chars()
        .take(max)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

/// A Consul session of this node for the upgrade gate, renewed in the
/// background every third of its TTL until it is destroyed. Dropped
/// without [`Session::destroy`] while it holds no key (an abandoned
/// wait), the renewal stops and a destroy is sent from a spawned task
/// (failing that, the TTL ends it); see [`HeldLock`] for one holding a key.
#[derive(Debug)]
pub struct Session {
    consul: ConsulClient,
    dc: Option<String>,
    id: String,
    stop: CancellationToken,
    lost: CancellationToken,
    destroyed: bool,
    /// Destroyed when dropped (not while it holds a key).
    destroy_on_drop: bool,
}

impl Session {
    /// Creates a session (in `dc`, `None`: the agent's) named after
    /// `holder`, bound to catalog node `node` (`None`: the agent's own; in
    /// another datacenter it must be a node registered there), and starts
    /// renewing it.
    pub async fn create(
        consul: &ConsulClient,
        dc: Option<&str>,
        node: Option<&str>,
        holder: &str,
        ttl: Duration,
    ) -> Result<Self, AgentError> {
        let req = SessionRequest {
            name: format!("hashi-supervisor upgrade {holder}"),
            ttl,
            behavior_delete: false,
            lock_delay: LOCK_DELAY,
            node: node.map(str::to_string),
            node_checks: Some(Vec::new()),
        };
        let id = consul.session_create(dc, &req).await?;
        let stop = CancellationToken::new();
        let lost = CancellationToken::new();
        tokio::spawn(renew_until(
            consul.clone(),
            dc.map(str::to_string),
            id.clone(),
            ttl,
            stop.clone(),
            lost.clone(),
        ));
        Ok(Self {
            consul: consul.clone(),
            dc: dc.map(str::to_string),
            id,
            stop,
            lost,
            destroyed: false,
            destroy_on_drop: true,
        })
    }

    /// The session's ID.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The datacenter it lives in (`None`: the agent's).
    pub fn datacenter(&self) -> Option<&str> {
        self.dc.as_deref()
    }

    /// Whether Consul answered that the session is gone (expired or
    /// destroyed): every key it held is free or someone else's.
    pub fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// Resolves once the session is seen lost.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        self.lost.clone().cancelled_owned()
    }

    /// Renews now: `Some(true)` alive, `Some(false)` lost (and marked so),
    /// `None` when Consul did not answer.
    pub async fn renew_now(&self) -> Option<bool> {
        if self.is_lost() {
            return Some(false);
        }
        match self
            .consul
            .session_renew(self.dc.as_deref(), &self.id)
            .await
        {
            Ok(true) => Some(true),
            Ok(false) => {
                self.lost.cancel();
                Some(false)
            }
            Err(e) => {
                tracing::debug!(error = %e.one_line(), "failed to renew the upgrade session");
                None
            }
        }
    }

    /// Tries once to take `key` with this session, writing `holder` as
    /// its value: the lock, or who holds it (as [`holder_text`]).
    pub async fn try_lock(
        mut self,
        key: &str,
        holder: &str,
    ) -> Result<Acquired, (Self, AgentError)> {
        let dc = self.dc.clone();
        match self
            .consul
            .kv_acquire(dc.as_deref(), key, &self.id, holder.as_bytes())
            .await
        {
            Ok(true) => Ok(Acquired::Held(HeldLock {
                session: {
                    self.destroy_on_drop = false;
                    self
                },
                key: key.to_string(),
            })),
            Ok(false) => {
                let who = holder_of(&self.consul, dc.as_deref(), key).await;
                Ok(Acquired::Busy(self, who))
            }
            Err(e) => Err((self, e)),
        }
    }

    /// Stops renewing and destroys the session (the keys it held are
    /// released); a failure is left to the TTL.
    pub async fn destroy(mut self) {
        self.destroyed = true;
        self.stop.cancel();
        if let Err(e) = self
            .consul
            .session_destroy(self.dc.as_deref(), &self.id)
            .await
        {
            tracing::debug!(error = %e.one_line(), "failed to destroy the upgrade session; its TTL ends it");
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stop.cancel();
        if self.destroyed || !self.destroy_on_drop {
            return;
        }
        // An abandoned wait (shutdown, a reload): destroy it now if a
        // runtime is there to send it; the TTL ends it anyway.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (consul, dc, id) = (self.consul.clone(), self.dc.take(), self.id.clone());
            rt.spawn(async move {
                let _ = consul.session_destroy(dc.as_deref(), &id).await;
            });
        }
    }
}

/// Who holds `key`: its value as [`holder_text`], or why that is unknown.
pub async fn holder_of(consul: &ConsulClient, dc: Option<&str>, key: &str) -> String {
    match consul.kv_get(dc, key).await {
        Ok(Some(p)) if p.session.is_some() => holder_text(&p.value),
        Ok(_) => "another node (just released)".to_string(),
        Err(e) => format!("another node ({})", e.one_line()),
    }
}

/// A lock held: released with [`HeldLock::release`] (or given back with
/// [`HeldLock::unlock`], keeping the session). Dropped without either (the
/// daemon stopping mid-restart), the renewal stops and Consul frees the
/// key once the session's TTL passes: a node gone mid-restart keeps the
/// next one off for that long.
#[derive(Debug)]
pub struct HeldLock {
    session: Session,
    key: String,
}

/// Whether the lock was taken, or who holds it.
#[derive(Debug)]
pub enum Acquired {
    /// Ours now.
    Held(HeldLock),
    /// Held by another (the holder's value, as [`holder_text`]); the
    /// session comes back for the next try.
    Busy(Session, String),
}

/// Renews `session` every `ttl / 3` until `stop`, or until Consul says it
/// is gone: `lost` is cancelled then.
async fn renew_until(
    consul: ConsulClient,
    dc: Option<String>,
    session: String,
    ttl: Duration,
    stop: CancellationToken,
    lost: CancellationToken,
) {
    let every = (ttl / 3).max(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = lost.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let renewed = tokio::select! {
            () = stop.cancelled() => return,
            r = consul.session_renew(dc.as_deref(), &session) => r,
        };
        match renewed {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(
                    "the upgrade session expired (its TTL passed without a renewal reaching Consul): a lock it held is lost"
                );
                lost.cancel();
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e.one_line(), "failed to renew the upgrade session");
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
        self.session.datacenter()
    }

    /// The Consul agent it was taken through.
    pub fn consul(&self) -> &ConsulClient {
        &self.session.consul
    }

    /// The session holding it.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Whether the session was seen lost: the key may be free or
    /// another node's now.
    pub fn is_lost(&self) -> bool {
        self.session.is_lost()
    }

    /// Resolves once the lock is seen lost.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        self.session.lost()
    }

    /// Gives the key back and keeps the session (for the next look).
    pub async fn unlock(mut self) -> Session {
        self.session.destroy_on_drop = true;
        let dc = self.session.datacenter().map(str::to_string);
        if !self.session.is_lost() {
            if let Err(e) = self
                .session
                .consul
                .kv_release(dc.as_deref(), &self.key, &self.session.id, b"")
                .await
            {
                tracing::debug!(key = %self.key, error = %e.one_line(), "failed to release the upgrade lock");
            }
        }
        self.session
    }

    /// Releases the key and destroys the session, retrying for a while (a
    /// failure is logged: the session's TTL frees the key anyway). A lost
    /// lock is not released (another node may hold the key now).
    pub async fn release(self) {
        let Self { session, key } = self;
        let dc = session.datacenter().map(str::to_string);
        for attempt in 1..=RELEASE_TRIES {
            if session.is_lost() {
                break;
            }
            // `?release=` only frees a key this session holds.
            let released = session
                .consul
                .kv_release(dc.as_deref(), &key, &session.id, b"")
                .await;
            match released {
                Ok(_) => break,
                Err(e) if attempt == RELEASE_TRIES => {
                    tracing::warn!(key = %key, error = %e.one_line(),
                        "failed to release the upgrade lock; its session expires on its own");
                }
                Err(_) => tokio::time::sleep(RELEASE_PAUSE).await,
            }
        }
        session.destroy().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_text_is_bounded_and_printable() {
        assert_eq!(holder_text(b"ams2-client-01"), "ams2-client-01");
        assert_eq!(holder_text(b"a\nb\x1b[31mc\td"), "a?b?[31mc?d");
        let long = "x".repeat(5000);
        let t = holder_text(long.as_bytes());
        assert_eq!(t.chars().count(), HOLDER_MAX_CHARS + 1);
        assert!(t.ends_with('…'), "{t}");
        let exact = "y".repeat(HOLDER_MAX_CHARS);
        assert_eq!(holder_text(exact.as_bytes()), exact);
        // Not UTF-8, and multi-byte characters counted as characters.
        assert_eq!(holder_text(&[0xff, b'a']), "\u{fffd}a");
        let wide = "é".repeat(200);
        assert_eq!(
            holder_text(wide.as_bytes()).chars().count(),
            HOLDER_MAX_CHARS + 1
        );
        assert!(holder_text(b"\x07\x00\x7f").chars().all(|c| c == '?'));
    }
}

//! The one client of the Consul and Nomad HTTP APIs, and one observer per
//! agent whose reports supervision and health both read.
//!
//! * [`transport`]: [`AgentClient`], the node's only HTTP client of its
//!   agents: built once by `supervisor run` from the plan (a TLS API needs
//!   its CA and server name), cheap to clone, passed down to every user
//!   (readiness, the health snapshot, the Consul registration). It bounds
//!   every exchange by a per-request timeout and every answer by
//!   [`MAX_BODY_BYTES`].
//! * [`consul`], [`nomad`]: one typed request per endpoint we use and the
//!   response shapes as the real agents produce them, quirks included
//!   (`tests/data/agent-api/README.md`). Parsing is split from fetching
//!   (`parse_*` functions) so the samples are fed to the parsers without
//!   sockets.
//! * [`kv`]: Consul's KV store and sessions (the documented lock
//!   pattern) and its node catalog, on [`ConsulClient`].
//! * [`duration`]: Go `time.Duration` as the agents encode it.
//! * [`report`]: what one poll of an agent found ([`AgentReport`]), and the
//!   queries that build it.
//! * [`observe`]: one [`observe::Observer`] task per agent that polls its API on an
//!   interval, and at once when a reader kicks it (an agent spawned,
//!   became ready, exited), and publishes its [`Observation`] on a `watch`.
//!
//! Stage: after role, plan, release and render; before supervise, health and
//! catalog. This module must not import any of those later stages: it
//! learns of an agent's state changes only through a kick (a generation
//! number), never from a `SupervisorStatus`. It never retries beyond the
//! one resend of [`transport`], never caches an answer, and never writes a
//! file.

pub mod consul;
pub mod duration;
pub mod kv;
pub mod nomad;
pub mod observe;
pub mod report;
pub mod transport;

#[cfg(test)]
pub(crate) mod testtls;

pub use consul::{ConsulClient, ServiceCheck, ServiceRegistration};
pub use kv::{CatalogNode, KvPair, SessionInfo, SessionRequest};
pub use nomad::{
    NomadAutopilotHealth, NomadClient, NomadHealthItem, RaftConfiguration, RaftServer,
};
pub use observe::{Observation, ObserverConfig, ObserverHandle, Observers, Verdict};
pub use report::{AgentReport, AgentTarget, ConsulReport, NomadReport};
pub use transport::{AgentClient, Endpoint, MAX_BODY_BYTES, TransportError};

use std::time::Duration;

/// Default timeout of one request to a local agent.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Upper bound of an error body kept in an error message.
const MAX_ERROR_BODY_CHARS: usize = 200;

/// Why a request to an agent failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The HTTP client could not be built.
    #[error("failed to build the agent http client")]
    Client(#[source] reqwest::Error),
    /// The request did not complete (connect, timeout, reset).
    #[error("failed to request {url}")]
    Request {
        /// The URL asked.
        url: String,
        /// The cause.
        #[source]
        source: TransportError,
    },
    /// The agent answered with an unexpected status.
    #[error("failed to get a successful answer from {url}: status {status}: {body}")]
    Status {
        /// The URL asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of the body (agents answer errors as text).
        body: String,
    },
    /// The agent refused the token the supervisor sent (403): the token
    /// is unknown to it or lacks a permission.
    #[error("the agent refused the supervisor's token: {url} answered 403: {body}")]
    TokenRefused {
        /// The URL asked.
        url: String,
        /// The start of the body (the agent's reason; never the token).
        body: String,
    },
    /// The agent wants an ACL token (403) and the supervisor has none for it.
    #[error(
        "the agent requires an ACL token and the supervisor has none for it: {url} answered 403: {body}"
    )]
    TokenMissing {
        /// The URL asked.
        url: String,
        /// The start of the body.
        body: String,
    },
    /// The TLS files of an agent's HTTPS API (CA, client certificate or
    /// key) could not be read or parsed.
    #[error("failed to load the TLS files ({path}) of the agent's https API")]
    Ca {
        /// The CA file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The client was built without the TLS settings of this agent's API.
    #[error("no CA loaded for the https API of {server_name}")]
    NoTls {
        /// The name the agent's certificate carries.
        server_name: String,
    },
    /// The body was not the expected JSON.
    #[error("failed to decode the answer of {url}")]
    Decode {
        /// The URL asked.
        url: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

impl AgentError {
    /// Whether the request timed out (a hung agent).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Request { source, .. } if source.is_timeout())
    }

    /// A one-line description, with the innermost cause, for health reasons.
    pub fn one_line(&self) -> String {
        let mut s = self.to_string();
        let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(self);
        let mut last = None;
        while let Some(e) = cur {
            last = Some(e.to_string());
            cur = e.source();
        }
        if self.is_timeout() {
            s.push_str(": timed out");
        } else if let Some(l) = last {
            s.push_str(": ");
            s.push_str(&l);
            if let Some(hint) = tls_hint(&l) {
                s.push_str(" (");
                s.push_str(hint);
                s.push(')');
            }
        }
        s
    }
}

/// What a TLS alert from an agent means for the operator.
fn tls_hint(cause: &str) -> Option<&'static str> {
    if cause.contains("CertificateRequired") {
        Some("the agent requires a client certificate and the supervisor presented none")
    } else if cause.contains("fatal alert: BadCertificate")
        || cause.contains("fatal alert: UnknownCA")
    {
        Some("the agent does not trust the supervisor's client certificate")
    } else {
        None
    }
}

fn truncate(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let s = s.trim();
    match s.char_indices().nth(MAX_ERROR_BODY_CHARS) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn decode<T: serde::de::DeserializeOwned>(url: &str, body: &[u8]) -> Result<T, AgentError> {
    serde_json::from_slice(body).map_err(|source| AgentError::Decode {
        url: url.to_string(),
        source,
    })
}

/// A whole answer of an agent: the URL asked, status and body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The URL asked.
    pub url: String,
    /// The HTTP status.
    pub status: u16,
    /// The body (at most [`MAX_BODY_BYTES`]).
    pub body: bytes::Bytes,
    /// Whether the request carried the supervisor's ACL token.
    pub token: bool,
}

impl Answer {
    /// The answer when its status is one of `ok`, else a status error.
    pub fn require(self, ok: &[u16]) -> Result<Self, AgentError> {
        if ok.contains(&self.status) {
            Ok(self)
        } else if self.status == 403 && self.token {
            Err(AgentError::TokenRefused {
                url: self.url,
                body: truncate(&self.body),
            })
        } else if self.status == 403 {
            Err(AgentError::TokenMissing {
                url: self.url,
                body: truncate(&self.body),
            })
        } else {
            Err(AgentError::Status {
                url: self.url,
                status: self.status,
                body: truncate(&self.body),
            })
        }
    }
}

fn de_null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + serde::Deserialize<'de>,
{
    Ok(<Option<T> as serde::Deserialize>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
fn sample(rel: &str) -> Vec<u8> {
    let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/agent-api")
        .join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("failed to read test data {}: {e}", p.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::sample;

    #[test]
    fn every_manifest_body_is_valid_json() {
        // Guards against a sample the parsers silently skip.
        let manifest: serde_json::Value = serde_json::from_slice(&sample("manifest.json")).unwrap();
        let mut n = 0;
        for product in ["consul", "nomad"] {
            for e in manifest[product].as_array().unwrap() {
                if let Some(b) = e["body"].as_str() {
                    let body = sample(&format!("{product}/{b}"));
                    serde_json::from_slice::<serde_json::Value>(&body)
                        .unwrap_or_else(|err| panic!("{product}/{b}: {err}"));
                    n += 1;
                }
            }
        }
        assert!(n >= 15, "only {n} bodies");
    }
}

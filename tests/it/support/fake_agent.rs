//! Fakes of the agents' HTTP API for the health tests (`tests/it/health.rs`):
//! small HTTP servers that answer with the documented sample bodies of
//! `tests/data/agent-api/` and can hang, lose their leader, know no server or
//! leak a secret on demand ([`Mode`]). They are not the stand-in agent (that
//! is a process: `support::standin`); they stand where the agents'
//! processes do not matter.

// Test helpers: a fake that cannot bind or lock fails its test at once.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hashi_supervisor::vocab::Product;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The gossip key a [`Mode::Leaky`] agent quotes in its errors.
pub const GOSSIP_KEY: &str = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Healthy,
    /// Consul: `""` leader; Nomad: unhealthy 500 text/plain health.
    NoLeader,
    /// Accept, read, never answer.
    Hung,
    /// Consul client that knows no server: every RPC-backed endpoint is
    /// `500 No known Consul servers` in text (self and members are local).
    NoServers,
    /// Every answer is a 500 whose text quotes a secret.
    Leaky,
}

#[derive(Clone)]
pub struct FakeAgent {
    /// Where it listens.
    pub addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    /// `METHOD path body` of every request.
    log: Arc<Mutex<Vec<String>>>,
    /// `METHOD path` of every hung request whose client closed it.
    closed: Arc<Mutex<Vec<String>>>,
}

impl FakeAgent {
    pub async fn start(product: Product) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let me = Self {
            addr: l.local_addr().unwrap(),
            mode: Arc::new(Mutex::new(Mode::Healthy)),
            log: Arc::default(),
            closed: Arc::default(),
        };
        let m = me.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let m = m.clone();
                tokio::spawn(async move { m.serve(product, s).await });
            }
        });
        me
    }

    pub fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub fn closed_by_client(&self) -> Vec<String> {
        self.closed.lock().unwrap().clone()
    }

    async fn serve(&self, product: Product, mut s: TcpStream) {
        let Some((method, target, body)) = read_request(&mut s).await else {
            return;
        };
        self.log
            .lock()
            .unwrap()
            .push(format!("{method} {target} {body}"));
        let mode = *self.mode.lock().unwrap();
        if mode == Mode::Hung {
            // Hold the connection open without answering, until the client
            // closes it (noted).
            let mut buf = [0u8; 1];
            if let Ok(0) | Err(_) = s.read(&mut buf).await {
                self.closed
                    .lock()
                    .unwrap()
                    .push(format!("{method} {target}"));
                return;
            }
            std::future::pending::<()>().await;
        }
        let sample = |p: &str| super::read_data_string(&format!("agent-api/{p}"));
        let path = target.split('?').next().unwrap_or("");
        let (code, ctype, body) = match (product, path) {
            _ if mode == Mode::Leaky => (
                500,
                "text/plain; charset=utf-8",
                format!("rpc error: config has encrypt = \"{GOSSIP_KEY}\" and key {GOSSIP_KEY}"),
            ),
            (Product::Consul, p)
                if mode == Mode::NoServers
                    && !matches!(p, "/v1/agent/self" | "/v1/agent/members") =>
            {
                (
                    500,
                    "text/plain; charset=utf-8",
                    "No known Consul servers".to_string(),
                )
            }
            (Product::Consul, "/v1/status/leader") if mode == Mode::NoLeader => {
                (200, "application/json", "\"\"".to_string())
            }
            (Product::Consul, "/v1/status/leader") => {
                (200, "application/json", sample("consul/status_leader.json"))
            }
            (Product::Consul, "/v1/agent/members") => {
                (200, "application/json", sample("consul/agent_members.json"))
            }
            (Product::Consul, "/v1/agent/self") => {
                (200, "application/json", sample("consul/agent_self.json"))
            }
            (Product::Consul, "/v1/operator/autopilot/health") if mode == Mode::NoLeader => (
                429,
                "application/json",
                sample("consul/operator_autopilot_health.json").replacen(
                    "\"Healthy\": true",
                    "\"Healthy\": false",
                    1,
                ),
            ),
            (Product::Consul, "/v1/operator/autopilot/health") => (
                200,
                "application/json",
                sample("consul/operator_autopilot_health.json"),
            ),
            (Product::Consul, "/v1/agent/service/register") => (200, "", String::new()),
            (Product::Consul, p) if p.starts_with("/v1/agent/service/deregister/") => {
                (200, "", String::new())
            }
            (Product::Nomad, "/v1/agent/health") if mode == Mode::NoLeader => (
                500,
                "text/plain; charset=utf-8",
                r#"{"server":{"ok":false,"message":"No cluster leader"}}"#.to_string(),
            ),
            (Product::Nomad, "/v1/agent/health") => {
                (200, "application/json", sample("nomad/agent_health.json"))
            }
            (Product::Nomad, "/v1/status/leader") => {
                (200, "application/json", sample("nomad/status_leader.json"))
            }
            (Product::Nomad, "/v1/agent/self") => {
                (200, "application/json", sample("nomad/agent_self.json"))
            }
            (Product::Nomad, "/v1/agent/members") => {
                (200, "application/json", sample("nomad/agent_members.json"))
            }
            _ => (
                404,
                "text/plain; charset=utf-8",
                "404 page not found".to_string(),
            ),
        };
        let ct = if ctype.is_empty() {
            String::new()
        } else {
            format!("Content-Type: {ctype}\r\n")
        };
        let head = format!(
            "HTTP/1.1 {code} X\r\n{ct}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = s.write_all(head.as_bytes()).await;
        let _ = s.write_all(body.as_bytes()).await;
        let _ = s.shutdown().await;
    }
}

/// Reads one request: method, target, body (by Content-Length).
async fn read_request(s: &mut TcpStream) -> Option<(String, String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut first = head.lines().next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?.to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some((
        method,
        target,
        String::from_utf8_lossy(&buf[head_end..]).to_string(),
    ))
}

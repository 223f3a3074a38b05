//! DNS servers for discovery tests, inside network namespaces the test
//! built: a real one ([`Dnsmasq`], Debian's `dnsmasq` serving A and SRV
//! records and nothing else) and a [`SilentNameserver`] (a UDP socket that
//! reads queries and never answers, for the timeout path).
//!
//! Neither ever talks to the machine's own interfaces: dnsmasq runs with
//! `--no-resolv --no-hosts --bind-interfaces --listen-address=<ip>` inside a
//! namespace (it forwards nowhere and reads no host file), and the silent
//! server binds inside a namespace too. Both stop on drop. A tiny query
//! helper ([`query`]) lets the rig check what dnsmasq serves without `dig`.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::netns::in_netns;

/// How long [`Dnsmasq::start`] waits for the server to answer.
const START_WITHIN: Duration = Duration::from_secs(10);

/// An error starting or asking a DNS server of the rig.
#[derive(Debug)]
pub struct DnsError(pub String);

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DnsError {}

/// One SRV record: `name` → `target:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    /// `_service._proto.domain`.
    pub name: String,
    /// Host name the record points at (give it an A record too).
    pub target: String,
    /// Port.
    pub port: u16,
    /// Priority (lower first).
    pub priority: u16,
    /// Weight among equal priorities.
    pub weight: u16,
}

/// What a [`Dnsmasq`] serves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Records {
    /// A records: name → address (a name may appear several times).
    pub a: Vec<(String, Ipv4Addr)>,
    /// SRV records.
    pub srv: Vec<Srv>,
    /// Domains answered locally: an unknown name under them gets NXDOMAIN
    /// (instead of REFUSED, dnsmasq having nowhere to forward).
    pub local_domains: Vec<String>,
}

impl Records {
    /// Adds an A record.
    pub fn a(mut self, name: &str, ip: Ipv4Addr) -> Self {
        self.a.push((name.to_string(), ip));
        self
    }

    /// Adds an SRV record (priority 10, weight 10).
    pub fn srv(mut self, name: &str, target: &str, port: u16) -> Self {
        self.srv.push(Srv {
            name: name.to_string(),
            target: target.to_string(),
            port,
            priority: 10,
            weight: 10,
        });
        self
    }

    /// Answers every name under `domain` locally.
    pub fn local(mut self, domain: &str) -> Self {
        self.local_domains.push(domain.to_string());
        self
    }

    /// The dnsmasq options serving these records.
    fn args(&self) -> Vec<String> {
        // One --host-record per address: dnsmasq takes one IPv4 address
        // per option and answers every record of a name.
        let mut out: Vec<String> = self
            .a
            .iter()
            .map(|(name, ip)| format!("--host-record={name},{ip}"))
            .collect();
        out.extend(self.srv.iter().map(|s| {
            format!(
                "--srv-host={},{},{},{},{}",
                s.name, s.target, s.port, s.priority, s.weight
            )
        }));
        out.extend(self.local_domains.iter().map(|d| format!("--local=/{d}/")));
        out
    }
}

/// A `dnsmasq` serving [`Records`] on `<ip>:53` inside a namespace; killed
/// on drop.
#[derive(Debug)]
pub struct Dnsmasq {
    child: Option<Child>,
    listen: SocketAddr,
    netns: String,
    log_file: PathBuf,
}

impl Dnsmasq {
    /// Starts dnsmasq in namespace `ns`, listening on `listen:53` (an
    /// address of that namespace), logging queries to `log_file`. Returns
    /// once it answers a query.
    pub fn start(
        ns: &str,
        listen: Ipv4Addr,
        records: &Records,
        log_file: &Path,
    ) -> Result<Dnsmasq, DnsError> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, "dnsmasq"])
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--no-poll",
                "--bind-interfaces",
                "--conf-file=/dev/null",
                // No pid file: several servers run at once.
                "--pid-file=",
                "--port=53",
                "--log-queries",
            ])
            .arg(format!("--listen-address={listen}"))
            .arg(format!("--log-facility={}", log_file.display()))
            .args(records.args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = cmd
            .spawn()
            .map_err(|e| DnsError(format!("failed to run dnsmasq in {ns}: {e}")))?;
        let mut server = Dnsmasq {
            child: Some(child),
            listen: SocketAddr::from((listen, 53)),
            netns: ns.to_string(),
            log_file: log_file.to_path_buf(),
        };
        server.wait_answering()?;
        Ok(server)
    }

    fn wait_answering(&mut self) -> Result<(), DnsError> {
        let deadline = Instant::now() + START_WITHIN;
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(st)) = child.try_wait()
            {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                self.child = None;
                return Err(DnsError(format!(
                    "dnsmasq in {} exited ({st}): {}",
                    self.netns,
                    err.trim()
                )));
            }
            // Any answer at all (NXDOMAIN for a name it does not know) says
            // it is up.
            match query(&self.netns, self.listen, "ready.invalid", QTYPE_A) {
                Ok(_) => return Ok(()),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(DnsError(format!(
            "dnsmasq on {} in {} did not answer within {START_WITHIN:?}: {last}",
            self.listen, self.netns
        )))
    }

    /// Where it listens.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// Its query log.
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // `ip netns exec` execs dnsmasq: the child's pid is dnsmasq's.
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A nameserver that never answers: a UDP socket bound inside a namespace,
/// read by a thread that counts the queries and drops them.
#[derive(Debug)]
pub struct SilentNameserver {
    addr: SocketAddr,
    queries: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    join: Option<JoinHandle<()>>,
}

impl SilentNameserver {
    /// Binds `addr` (UDP) inside namespace `ns`.
    pub fn start(ns: &str, addr: SocketAddr) -> Result<SilentNameserver, DnsError> {
        let socket = in_netns(ns, move || UdpSocket::bind(addr))
            .map_err(|e| DnsError(e.to_string()))?
            .map_err(|e| DnsError(format!("failed to bind {addr} in {ns}: {e}")))?;
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .map_err(|e| DnsError(format!("failed to set a read timeout: {e}")))?;
        let queries = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (q, s) = (queries.clone(), stop.clone());
        let join = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::Relaxed) {
                if socket.recv_from(&mut buf).is_ok() {
                    q.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Ok(SilentNameserver {
            addr,
            queries,
            stop,
            join: Some(join),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queries received so far (none answered).
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }
}

impl Drop for SilentNameserver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

/// Query type A.
pub const QTYPE_A: u16 = 1;
/// Query type SRV.
pub const QTYPE_SRV: u16 = 33;

/// The header of a DNS answer: response code and record counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// RCODE (0 no error, 3 NXDOMAIN, 5 REFUSED).
    pub rcode: u8,
    /// Answer records.
    pub answers: u16,
    /// Additional records (an SRV answer's A records).
    pub additional: u16,
}

/// Asks `server` (from inside namespace `ns`) for `name`/`qtype` over UDP
/// with a 1 s timeout; returns the answer's header.
pub fn query(ns: &str, server: SocketAddr, name: &str, qtype: u16) -> Result<Answer, DnsError> {
    let packet = encode_query(0x4853, name, qtype)?;
    let reply = in_netns(ns, move || -> Result<Vec<u8>, std::io::Error> {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.set_read_timeout(Some(Duration::from_secs(1)))?;
        s.send_to(&packet, server)?;
        let mut buf = vec![0u8; 4096];
        let (n, _) = s.recv_from(&mut buf)?;
        buf.truncate(n);
        Ok(buf)
    })
    .map_err(|e| DnsError(e.to_string()))?
    .map_err(|e| DnsError(format!("query {name} at {server}: {e}")))?;
    decode_header(0x4853, &reply).map_err(|e| DnsError(format!("answer from {server}: {e}")))
}

fn encode_query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, DnsError> {
    let mut p = Vec::with_capacity(32 + name.len());
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0x01, 0x00]); // recursion desired
    p.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // one question
    for label in name.trim_end_matches('.').split('.') {
        let len = u8::try_from(label.len())
            .ok()
            .filter(|l| (1..=63).contains(l))
            .ok_or_else(|| DnsError(format!("bad label {label:?} in {name}")))?;
        p.push(len);
        p.extend_from_slice(label.as_bytes());
    }
    p.push(0);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&[0, 1]); // class IN
    Ok(p)
}

fn decode_header(id: u16, reply: &[u8]) -> Result<Answer, String> {
    if reply.len() < 12 {
        return Err(format!("{} bytes, shorter than a header", reply.len()));
    }
    if reply[0..2] != id.to_be_bytes() {
        return Err("answer to another query".into());
    }
    if reply[2] & 0x80 == 0 {
        return Err("not a response".into());
    }
    Ok(Answer {
        rcode: reply[3] & 0x0f,
        answers: u16::from_be_bytes([reply[6], reply[7]]),
        additional: u16::from_be_bytes([reply[10], reply[11]]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_become_dnsmasq_options_with_one_host_record_per_address() {
        let r = Records::default()
            .a("consul.ams2.eu.hashi.test", Ipv4Addr::new(10, 0, 1, 11))
            .a("consul.ams2.eu.hashi.test", Ipv4Addr::new(10, 0, 1, 12))
            .srv(
                "_consul-server._tcp.ams2.eu.hashi.test",
                "consul.ams2.eu.hashi.test",
                8500,
            )
            .local("eu.hashi.test");
        assert_eq!(
            r.args(),
            vec![
                "--host-record=consul.ams2.eu.hashi.test,10.0.1.11".to_string(),
                "--host-record=consul.ams2.eu.hashi.test,10.0.1.12".to_string(),
                "--srv-host=_consul-server._tcp.ams2.eu.hashi.test,consul.ams2.eu.hashi.test,8500,10,10"
                    .to_string(),
                "--local=/eu.hashi.test/".to_string(),
            ]
        );
    }

    #[test]
    fn a_query_is_encoded_label_by_label() {
        let q = encode_query(7, "a.bc", QTYPE_SRV).expect("encodes");
        assert_eq!(
            q,
            vec![
                0, 7, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 2, b'b', b'c', 0, 0, 33, 0, 1
            ]
        );
        assert!(encode_query(7, "a..b", QTYPE_A).is_err());
        assert!(encode_query(7, &"x".repeat(64), QTYPE_A).is_err());
    }

    #[test]
    fn headers_are_checked_before_reading() {
        assert!(decode_header(7, &[0; 5]).is_err());
        let mut h = vec![0, 7, 0x81, 0x83, 0, 1, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            decode_header(7, &h),
            Ok(Answer {
                rcode: 3,
                answers: 0,
                additional: 0
            })
        );
        h[2] = 0x01;
        assert!(decode_header(7, &h).is_err(), "a query is not an answer");
        assert!(decode_header(8, &h).is_err());
    }
}

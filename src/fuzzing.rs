//! Entry points for the cargo-fuzz targets of `fuzz/` (not a public API).
//!
//! Each function takes the fuzzer's bytes and runs them through one parser
//! of untrusted input the way the supervisor does, then through what reads
//! the parsed value (a diagnostic rendered, a version resolved, a member's
//! datacenter read). An `Err` is a correct answer to bad input; only a
//! panic, an abort, a hang or runaway memory is a finding. Private parts
//! are reached from here (`crate::`), never by making them public.
//!
//! It sits in the application stage (`tests/it/layering.rs`): it wires
//! parsers of every stage together, like `commands`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::role::{Host, Overrides, StaticHost};
use crate::vocab::Product;

/// Where the role text is said to come from: relative key files resolve
/// against its directory.
const ROLE_PATH: &str = "/etc/hashi-supervisor/node.toml";

/// The machine a fuzzed role file is loaded on: one private and one public
/// interface, the agents' users, and the key files the fixtures name.
fn role_host() -> &'static StaticHost {
    static HOST: OnceLock<StaticHost> = OnceLock::new();
    HOST.get_or_init(|| {
        let gossip = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=\n";
        let key = include_str!("release/keys/hashicorp-release-key.asc");
        let files = [
            ("keys/consul-gossip.key", gossip),
            ("keys/nomad-gossip.key", gossip),
            ("keys/extra.asc", key),
            (
                "tls/ca.pem",
                "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
            ),
            ("tls/agent.pem", "not a certificate\n"),
            ("tls/agent-key.pem", "not a key\n"),
            ("join-token", "hsj1.not-a-real-token\n"),
        ];
        StaticHost {
            hostname: Some("ams2-server-01".into()),
            interfaces: vec![
                ("lo".into(), Ipv4Addr::LOCALHOST),
                ("eth0".into(), Ipv4Addr::new(10, 0, 1, 11)),
                ("eth1".into(), Ipv4Addr::new(203, 0, 113, 11)),
            ],
            files: files
                .iter()
                .map(|(p, t)| (Path::new("/etc/hashi-supervisor").join(p), (*t).to_string()))
                .collect(),
            root: true,
            users: vec!["consul".into(), "nomad".into(), "root".into()],
        }
    })
}

/// The role file loader: bytes read from the file → text → validated role
/// or every problem with its `file:line:col`, rendered as `check` shows
/// them. The bytes take the loader's path after the read
/// (`role::load_with`): its size limit, UTF-8, then the parse.
pub fn role_file(data: &[u8]) {
    if data.len() as u64 > crate::role::limits::ROLE_FILE_BYTES {
        return;
    }
    let Ok(text) = crate::role::file::into_text(data.to_vec()) else {
        return;
    };
    let host: &dyn Host = role_host();
    match crate::role::parse_with(Path::new(ROLE_PATH), &text, &Overrides::default(), host) {
        Ok(role) => {
            // What `render` prints and the plan reads next.
            let _ = format!("{role:?}");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// A `SHA256SUMS` file from a mirror: parsed, then asked for a release's
/// zip and for each name it lists.
pub fn sha256sums(data: &[u8]) {
    if let Ok(sums) = crate::release::Sha256Sums::parse(data) {
        let _ = sums.get("consul_1.21.4_linux_amd64.zip");
        if let Ok(text) = std::str::from_utf8(data)
            && let Some(name) = text
                .lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
        {
            let _ = sums.get(name);
        }
    }
}

/// A product's `index.json` from a mirror: parsed, its releases sorted,
/// `latest`, a requirement and an exact version resolved, and the build of
/// this machine looked up. The first line, when it is not JSON, is the
/// version the role asks for.
pub fn release_index(data: &[u8]) {
    let (spec, json) = match data.iter().position(|b| *b == b'\n') {
        Some(i) if data.first() != Some(&b'{') => (&data[..i], &data[i + 1..]),
        _ => (&b"latest"[..], data),
    };
    let Ok(index) = serde_json::from_slice::<crate::release::ProductIndex>(json) else {
        return;
    };
    let mut specs = vec![crate::version::VersionSpec::Latest];
    if let Ok(s) = std::str::from_utf8(spec)
        && let Ok(spec) = s.parse()
    {
        specs.push(spec);
    }
    for r in index.releases() {
        let _ = crate::release::is_stable(&r.version);
        let _ = crate::release::is_enterprise(&r.version);
    }
    for spec in &specs {
        if let Some(r) = index.resolve(spec) {
            let _ = r.entry.build_file("linux", "amd64");
            let _ = r.entry.build_file("linux", "arm64");
        }
    }
}

/// The embedded HashiCorp key, parsed once.
fn hashicorp_keyring() -> &'static crate::release::Keyring {
    static RING: OnceLock<crate::release::Keyring> = OnceLock::new();
    RING.get_or_init(|| match crate::release::Keyring::hashicorp() {
        Ok(r) => r,
        Err(e) => panic!("the embedded HashiCorp key does not load: {e}"),
    })
}

/// The separator of [`openpgp`]'s input: signed data, then the signature.
pub const OPENPGP_SPLIT: &[u8] = b"\n--SIG--\n";

/// OpenPGP on untrusted input. The input is `data SPLIT signature` (no
/// separator: all of it is the signature over empty data): the detached
/// signature is checked over the data against the embedded HashiCorp key,
/// as a mirror's `SHA256SUMS.sig` is, and the signature bytes are also read
/// as a public key file (a role's `trusted_keys`).
pub fn openpgp(data: &[u8]) {
    let (signed, sig) = match data
        .windows(OPENPGP_SPLIT.len())
        .position(|w| w == OPENPGP_SPLIT)
    {
        Some(i) => (&data[..i], &data[i + OPENPGP_SPLIT.len()..]),
        None => (&b""[..], data),
    };
    match hashicorp_keyring().verify_detached(signed, sig) {
        Ok(fpr) => {
            // Only the real SHA256SUMS files of the corpus verify: anything
            // else verifying is a forgery, and the verifier's fault.
            assert!(
                crate::release::Sha256Sums::parse(signed).is_ok(),
                "a signature by {fpr} verified over data that is not a SHA256SUMS file"
            );
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    if let Ok(keys) = crate::openpgp::parse_public_keys(sig) {
        let _ = keys.len();
    }
}

/// The largest binary [`release_zip`] inflates: small, so a bomb is found
/// by the limit, not by the fuzzer's memory or disk.
const ZIP_BINARY_CAP: u64 = 1 << 20;

/// A release zip (after its hash matched: the mirror made it): the
/// installer's extraction of the `consul` binary, with its limits on
/// entries, names, symlinks and inflated size, into a fresh directory.
/// Whatever the zip holds, nothing may be written outside that directory.
pub fn release_zip(data: &[u8]) {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    let base = BASE.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let root = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        root.join(format!("hashi-fuzz-zip-{}", std::process::id()))
    });
    let _ = std::fs::remove_dir_all(base);
    if let Err(e) = std::fs::create_dir_all(base) {
        panic!("failed to create {}: {e}", base.display());
    }
    let dest = base.join("stage").join(Product::Consul.as_str());
    if let Err(e) = std::fs::create_dir_all(base.join("stage")) {
        panic!(
            "failed to create the staging dir under {}: {e}",
            base.display()
        );
    }
    let limits = crate::release::install::Limits {
        max_binary_bytes: ZIP_BINARY_CAP,
    };
    let zip_path = base.join("consul_1.21.4_linux_amd64.zip");
    let r = crate::release::install::extract_from(
        std::io::Cursor::new(data),
        &zip_path,
        Product::Consul,
        &dest,
        limits,
    );
    // Only the staging dir, and in it only the binary.
    let listed = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(listed(base), ["stage"], "written beside the staging dir");
    let staged = listed(&base.join("stage"));
    assert!(
        staged.is_empty() || staged == [Product::Consul.as_str()],
        "unexpected files staged: {staged:?}"
    );
    match r {
        Ok(hash) => {
            let len = std::fs::metadata(&dest).map(|m| m.len()).unwrap_or(0);
            assert!(len <= ZIP_BINARY_CAP, "extracted {len} bytes past the cap");
            assert_eq!(hash.len(), 64);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    let _ = std::fs::remove_dir_all(base);
}

/// The agent API answer parsers: the first byte picks the endpoint, the
/// rest is its body (parsed as the client does: `serde_json` into the
/// answer's shape), then what the observers and reports read of it.
pub fn agent_api(data: &[u8]) {
    use crate::agent::consul::{
        AutopilotHealth, ConsulSelf, parse_consul_leader, parse_consul_members, parse_peers,
    };
    use crate::agent::nomad::{NomadJoin, NomadMembers, NomadNode, NomadSelf, parse_nomad_leader};
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let url = "http://127.0.0.1:8500/fuzz";
    match which % 12 {
        0 => {
            let _ = parse_consul_leader(url, body).map_err(|e| e.one_line());
        }
        1 => {
            let _ = parse_peers(url, body).map_err(|e| e.one_line());
        }
        2 => {
            if let Ok(members) = parse_consul_members(url, body) {
                for m in &members {
                    let _ = (m.is_alive(), m.datacenter());
                }
            }
        }
        3 => {
            if let Ok(s) = serde_json::from_slice::<ConsulSelf>(body)
                && let Some(m) = &s.member
            {
                let _ = m.datacenter();
            }
        }
        4 => {
            let _ = serde_json::from_slice::<AutopilotHealth>(body);
        }
        5 => {
            if let Ok(h) = serde_json::from_slice::<crate::agent::nomad::NomadHealth>(body) {
                let _ = h.is_ok();
            }
        }
        6 => {
            if let Ok(s) = serde_json::from_slice::<NomadSelf>(body) {
                let _ = (s.version(), s.known_servers());
            }
        }
        7 => {
            if let Ok(m) = serde_json::from_slice::<NomadMembers>(body) {
                let _ = m.members.iter().filter(|m| m.is_alive()).count();
            }
        }
        8 => {
            let _ = serde_json::from_slice::<Option<Vec<NomadNode>>>(body);
        }
        9 => {
            let _ = serde_json::from_slice::<NomadJoin>(body);
        }
        10 => {
            let _ = parse_nomad_leader(url, body).map_err(|e| e.one_line());
        }
        _ => {
            if let Ok(s) = std::str::from_utf8(body) {
                let _ = crate::agent::duration::parse_go_duration(s);
            }
        }
    }
}

/// A health endpoint served by the real server (default limits) on a
/// loopback port, on its own runtime, for the whole fuzzing process.
struct HealthServer {
    runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
}

/// Longest a request may take to be answered and its connection closed
/// (the server's own header timeout is 5 s).
const HEALTH_ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

fn health_server() -> &'static HealthServer {
    static SERVER: OnceLock<HealthServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => panic!("failed to build the health server's runtime: {e}"),
        };
        let addr = runtime.block_on(async {
            let listener =
                match crate::health::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await {
                    Ok(l) => l,
                    Err(e) => panic!("failed to bind the health endpoint: {e}"),
                };
            let addr = match listener.local_addr() {
                Ok(a) => a,
                Err(e) => panic!("failed to read the health endpoint's address: {e}"),
            };
            let node = crate::health::NodeInfo {
                node_name: "ams2-server-01".into(),
                region: "eu".into(),
                datacenter: "ams2".into(),
                roles: vec!["consul-server".into(), "nomad-server".into()],
                agents: Vec::new(),
            };
            let snapshot = crate::health::HealthSnapshot::new(
                node,
                Arc::new(crate::health::Metrics::default()),
            );
            let (tx, rx) = tokio::sync::watch::channel(snapshot);
            // The sender lives as long as the process: the snapshot stays.
            std::mem::forget(tx);
            tokio::spawn(crate::health::serve(
                listener,
                rx,
                tokio_util::sync::CancellationToken::new(),
            ));
            addr
        });
        HealthServer { runtime, addr }
    })
}

/// The health server's request handling: the bytes are sent as they are
/// over a fresh loopback connection, the client's side is then shut for
/// writing, and the whole answer is read. The server must answer (or close)
/// within `HEALTH_ANSWER_TIMEOUT` (15 s), and every answer must be HTTP/1.1.
pub fn health_http(data: &[u8]) {
    let server = health_server();
    let addr = server.addr;
    let data = data.to_vec();
    let answer = server.runtime.block_on(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let exchange = async {
            let mut s = tokio::net::TcpStream::connect(addr).await?;
            s.write_all(&data).await?;
            s.shutdown().await?;
            let mut out = Vec::new();
            s.read_to_end(&mut out).await?;
            Ok::<_, std::io::Error>(out)
        };
        tokio::time::timeout(HEALTH_ANSWER_TIMEOUT, exchange).await
    });
    match answer {
        Err(_) => {
            panic!("the health server neither answered nor closed within {HEALTH_ANSWER_TIMEOUT:?}")
        }
        // A reset is an answer (the server closed with unread input).
        Ok(Err(_)) => {}
        Ok(Ok(out)) => {
            assert!(
                out.is_empty() || out.starts_with(b"HTTP/1."),
                "not an HTTP answer: {:?}",
                String::from_utf8_lossy(&out[..out.len().min(200)])
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every input of the committed corpus of `target`
    /// (`fuzz/corpus/<target>/`, which holds the inputs of past findings).
    fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let mut out: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("failed to list {}: {e}", dir.display()))
            .map(|e| {
                let p = e.unwrap().path();
                let b = std::fs::read(&p).unwrap();
                (p, b)
            })
            .collect();
        out.sort();
        assert!(!out.is_empty(), "no corpus in {}", dir.display());
        out
    }

    /// Runs `f` over the corpus of `target`, naming the input that panics.
    fn replay(target: &str, f: fn(&[u8])) {
        for (path, data) in corpus(target) {
            let r = std::panic::catch_unwind(|| f(&data));
            assert!(r.is_ok(), "{target}: {} panicked", path.display());
        }
    }

    #[test]
    fn role_file_corpus_replays_clean() {
        replay("role_file", role_file);
    }

    #[test]
    fn sha256sums_corpus_replays_clean() {
        replay("sha256sums", sha256sums);
    }

    #[test]
    fn release_index_corpus_replays_clean() {
        replay("release_index", release_index);
    }

    #[test]
    fn openpgp_corpus_replays_clean() {
        replay("openpgp_verify", openpgp);
    }

    #[test]
    fn release_zip_corpus_replays_clean() {
        replay("release_zip", release_zip);
    }

    #[test]
    fn agent_api_corpus_replays_clean() {
        replay("agent_api", agent_api);
    }

    #[test]
    fn health_http_corpus_replays_clean() {
        replay("health_http", health_http);
    }

    /// The facade's own checks hold on what it is given: a real signed
    /// SHA256SUMS verifies (so the "verified" branch is reached) and a
    /// request is answered over the socket.
    #[test]
    fn the_facade_reaches_the_success_paths() {
        let rel = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/hashicorp-release");
        let sums = std::fs::read(rel.join("terraform_1.15.8_SHA256SUMS")).unwrap();
        let sig = std::fs::read(rel.join("terraform_1.15.8_SHA256SUMS.sig")).unwrap();
        assert!(hashicorp_keyring().verify_detached(&sums, &sig).is_ok());
        let mut input = sums.clone();
        input.extend_from_slice(OPENPGP_SPLIT);
        input.extend_from_slice(&sig);
        openpgp(&input);
        health_http(b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n");
    }
}

//! A signed local release mirror laid out like releases.hashicorp.com, and a
//! small HTTP server for it with fault injection.
//!
//! Layout: `<root>/<product>/index.json`, `<root>/<product>/<ver>/<product>_<ver>_SHA256SUMS`,
//! `..._SHA256SUMS.sig` (detached binary OpenPGP signature by a test key made
//! at build time; optionally also `..._SHA256SUMS.72D7468F.sig`), and
//! `<product>_<ver>_linux_<arch>.zip` holding the binary (in tests, the
//! stand-in agent or a script: never the real Consul or Nomad).
//!
//! The server is a deliberately tiny HTTP/1.1 implementation (one request per
//! connection) so faults can be exact: slow bodies, dropped connections after
//! N bytes, N× 500, wrong Content-Length, tampered bytes.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgp::composed::{
    ArmorOptions, DetachedSignature, KeyType, SecretKeyParamsBuilder, SignedPublicKey,
    SignedSecretKey,
};
use pgp::crypto::hash::HashAlgorithm;
use pgp::ser::Serialize;
use pgp::types::{KeyDetails, Password};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// Why building or serving a mirror failed.
#[derive(Debug)]
pub struct MirrorError(pub String);

impl std::fmt::Display for MirrorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MirrorError {}

fn err(what: &str, e: impl std::fmt::Display) -> MirrorError {
    MirrorError(format!("failed to {what}: {e}"))
}

/// Name of the public test key written into a built mirror's root.
pub const KEY_FILE: &str = "hashi-testrig-key.asc";
/// HashiCorp's short key id, used in the preferred signature file name.
pub const HASHICORP_SHORT_KEY_ID: &str = "72D7468F";

/// An OpenPGP test key generated at test time (ed25519; never HashiCorp's).
#[derive(Debug, Clone)]
pub struct TestKey {
    secret: SignedSecretKey,
}

impl TestKey {
    /// Generates a new signing key.
    pub fn generate() -> Result<TestKey, MirrorError> {
        let params = SecretKeyParamsBuilder::default()
            .key_type(KeyType::Ed25519Legacy)
            .can_certify(true)
            .can_sign(true)
            .primary_user_id("hashi-testrig test mirror key <test@invalid>".into())
            .build()
            .map_err(|e| err("build key params", e))?;
        let secret = params
            .generate(rand08::thread_rng())
            .map_err(|e| err("generate the test key", e))?;
        Ok(TestKey { secret })
    }

    /// The public key, armored.
    pub fn public_armored(&self) -> Result<String, MirrorError> {
        SignedPublicKey::from(self.secret.clone())
            .to_armored_string(ArmorOptions::default())
            .map_err(|e| err("armor the public key", e))
    }

    /// The primary fingerprint, lowercase hex.
    pub fn fingerprint(&self) -> String {
        hex::encode(self.secret.primary_key.fingerprint().as_bytes())
    }

    /// A detached binary signature (v4, SHA-256, type 0x00) over `data`.
    pub fn sign(&self, data: &[u8]) -> Result<Vec<u8>, MirrorError> {
        let sig = DetachedSignature::sign_binary_data(
            rand08::thread_rng(),
            &self.secret.primary_key,
            &Password::empty(),
            HashAlgorithm::Sha256,
            data,
        )
        .map_err(|e| err("sign", e))?;
        sig.to_bytes()
            .map_err(|e| err("serialize the signature", e))
    }
}

/// A `/bin/sh` script that answers `version` like the real agent's first
/// line (`Consul v1.20.1`): a minimal executable for release tests.
pub fn version_script(product: &str, version: &str) -> Vec<u8> {
    let name = display_name(product);
    format!(
        "#!/bin/sh\n# hashi-testrig stand-in script, not the real {name}\nif [ \"$1\" = version ]; then\n  echo \"{name} v{version}\"\n  echo \"Revision 0000000 (test mirror)\"\nfi\n"
    )
    .into_bytes()
}

fn display_name(product: &str) -> String {
    let mut c = product.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// What a release zip holds.
#[derive(Debug, Clone)]
pub enum ZipEntry {
    /// A regular file.
    File {
        /// Entry name.
        name: String,
        /// Contents.
        data: Vec<u8>,
        /// Unix mode.
        mode: u32,
    },
    /// A symlink.
    Symlink {
        /// Entry name.
        name: String,
        /// Target.
        target: String,
    },
}

#[derive(Debug, Clone)]
enum BinarySource {
    Path(PathBuf),
    Bytes(Vec<u8>),
    Script,
}

#[derive(Debug, Clone)]
struct VersionSpec {
    version: String,
    binary: BinarySource,
    extra: Vec<ZipEntry>,
}

#[derive(Debug, Clone)]
struct ProductSpec {
    name: String,
    versions: Vec<VersionSpec>,
}

/// Builds a signed mirror directory.
#[derive(Debug, Clone)]
pub struct MirrorBuilder {
    products: Vec<ProductSpec>,
    key: Option<TestKey>,
    key_id_sig: bool,
    plain_sig: bool,
    arch: Vec<String>,
    index_host: String,
}

impl Default for MirrorBuilder {
    fn default() -> Self {
        MirrorBuilder {
            products: Vec::new(),
            key: None,
            key_id_sig: false,
            plain_sig: true,
            arch: vec!["amd64".into(), "arm64".into()],
            index_host: "https://releases.hashicorp.com".into(),
        }
    }
}

/// A built mirror.
#[derive(Debug, Clone)]
pub struct BuiltMirror {
    /// Root directory (use as a directory or `file://` mirror).
    pub root: PathBuf,
    /// The signing key.
    pub key: TestKey,
    /// The armored public key file (to trust as an extra key).
    pub public_key: PathBuf,
}

impl MirrorBuilder {
    /// An empty builder.
    pub fn new() -> MirrorBuilder {
        MirrorBuilder::default()
    }

    /// A builder starting with `product`.
    pub fn product(name: &str) -> MirrorBuilder {
        MirrorBuilder::new().and_product(name)
    }

    /// Starts another product; following `version` calls add to it.
    pub fn and_product(mut self, name: &str) -> MirrorBuilder {
        self.products.push(ProductSpec {
            name: name.to_string(),
            versions: Vec::new(),
        });
        self
    }

    /// Adds a version of the current product (binary: the last `binary`
    /// given, else a version script).
    pub fn version(mut self, version: &str) -> MirrorBuilder {
        if self.products.is_empty() {
            self = self.and_product("consul");
        }
        let p = self
            .products
            .last_mut()
            .expect("a product was just ensured");
        let binary = p
            .versions
            .last()
            .map(|v| v.binary.clone())
            .unwrap_or(BinarySource::Script);
        p.versions.push(VersionSpec {
            version: version.to_string(),
            binary,
            extra: Vec::new(),
        });
        self
    }

    fn last_version(&mut self) -> &mut VersionSpec {
        if self.products.last().is_none_or(|p| p.versions.is_empty()) {
            panic!("MirrorBuilder: call version() before setting its binary");
        }
        let p = self.products.last_mut().expect("checked above");
        p.versions.last_mut().expect("checked above")
    }

    /// The binary file zipped for the last added version (and later ones). A
    /// stand-in binary gets each version stamped into its version slot.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> MirrorBuilder {
        self.last_version().binary = BinarySource::Path(path.into());
        self
    }

    /// Binary contents for the last added version.
    pub fn binary_bytes(mut self, data: Vec<u8>) -> MirrorBuilder {
        self.last_version().binary = BinarySource::Bytes(data);
        self
    }

    /// An extra zip entry in the last added version's zip.
    pub fn extra_entry(mut self, entry: ZipEntry) -> MirrorBuilder {
        self.last_version().extra.push(entry);
        self
    }

    /// Signs with this key instead of a fresh one.
    pub fn key(mut self, key: TestKey) -> MirrorBuilder {
        self.key = Some(key);
        self
    }

    /// Also write `..._SHA256SUMS.72D7468F.sig` (the name hc-install prefers).
    pub fn key_id_signature(mut self, yes: bool) -> MirrorBuilder {
        self.key_id_sig = yes;
        self
    }

    /// Write the plain `..._SHA256SUMS.sig` (default true).
    pub fn plain_signature(mut self, yes: bool) -> MirrorBuilder {
        self.plain_sig = yes;
        self
    }

    /// Architectures to build zips for (default amd64, arm64).
    pub fn arches(mut self, arches: &[&str]) -> MirrorBuilder {
        self.arch = arches.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Writes the mirror under `root` (created if missing).
    pub fn build(self, root: &Path) -> Result<BuiltMirror, MirrorError> {
        let key = match self.key.clone() {
            Some(k) => k,
            None => TestKey::generate()?,
        };
        std::fs::create_dir_all(root).map_err(|e| err("create the mirror root", e))?;
        for p in &self.products {
            self.build_product(root, p, &key)?;
        }
        let public_key = root.join(KEY_FILE);
        std::fs::write(&public_key, key.public_armored()?)
            .map_err(|e| err("write the public key", e))?;
        Ok(BuiltMirror {
            root: root.to_path_buf(),
            key,
            public_key,
        })
    }

    fn build_product(
        &self,
        root: &Path,
        p: &ProductSpec,
        key: &TestKey,
    ) -> Result<(), MirrorError> {
        let pdir = root.join(&p.name);
        std::fs::create_dir_all(&pdir).map_err(|e| err("create the product dir", e))?;
        let mut versions = serde_json::Map::new();
        for v in &p.versions {
            let vdir = pdir.join(&v.version);
            std::fs::create_dir_all(&vdir).map_err(|e| err("create the version dir", e))?;
            let binary = match &v.binary {
                BinarySource::Path(path) => std::fs::read(path)
                    .map_err(|e| err(&format!("read binary {}", path.display()), e))?,
                BinarySource::Bytes(b) => b.clone(),
                BinarySource::Script => version_script(&p.name, &v.version),
            };
            let mut binary = binary;
            stamp_standin_version(&mut binary, &v.version);
            let zip_bytes = make_zip(&p.name, &binary, &v.extra)?;
            let mut sums = String::new();
            let mut builds = Vec::new();
            let mut names: Vec<String> = self
                .arch
                .iter()
                .map(|a| format!("{}_{}_linux_{a}.zip", p.name, v.version))
                .collect();
            names.sort();
            for (a, name) in self.arch.iter().zip(
                self.arch
                    .iter()
                    .map(|a| format!("{}_{}_linux_{a}.zip", p.name, v.version)),
            ) {
                std::fs::write(vdir.join(&name), &zip_bytes)
                    .map_err(|e| err("write the zip", e))?;
                builds.push(serde_json::json!({
                    "name": p.name, "version": v.version, "os": "linux", "arch": a,
                    "filename": name,
                    "url": format!("{}/{}/{}/{}", self.index_host, p.name, v.version, name),
                }));
            }
            let hash = hex::encode(Sha256::digest(&zip_bytes));
            for name in &names {
                sums.push_str(&format!("{hash}  {name}\n"));
            }
            let sums_name = format!("{}_{}_SHA256SUMS", p.name, v.version);
            std::fs::write(vdir.join(&sums_name), &sums).map_err(|e| err("write SHA256SUMS", e))?;
            let sig = key.sign(sums.as_bytes())?;
            let mut sig_names = Vec::new();
            if self.plain_sig {
                sig_names.push(format!("{sums_name}.sig"));
            }
            if self.key_id_sig {
                sig_names.push(format!("{sums_name}.{HASHICORP_SHORT_KEY_ID}.sig"));
            }
            for n in &sig_names {
                std::fs::write(vdir.join(n), &sig).map_err(|e| err("write the signature", e))?;
            }
            versions.insert(
                v.version.clone(),
                serde_json::json!({
                    "name": p.name, "version": v.version, "shasums": sums_name,
                    "shasums_signature": format!("{sums_name}.sig"),
                    "shasums_signatures": sig_names,
                    "builds": builds,
                }),
            );
        }
        let index = serde_json::json!({ "name": p.name, "versions": versions });
        let text = serde_json::to_vec_pretty(&index).map_err(|e| err("encode index.json", e))?;
        std::fs::write(pdir.join("index.json"), text).map_err(|e| err("write index.json", e))
    }
}

/// Marker of the stand-in agent's patchable version slot (the stand-in's
/// own contract, `standin/src/main.rs`): the version, NUL-padded, follows it.
pub const STANDIN_VERSION_SLOT_MARKER: &[u8] = b"STANDIN_VERSION_SLOT:";
/// Size of the stand-in's version slot, marker included.
pub const STANDIN_VERSION_SLOT_LEN: usize = 64;

/// Stamps `version` into a stand-in binary's version slot so one stand-in
/// build can serve every version of a mirror. Binaries without exactly one
/// slot (scripts, anything else) are left alone; returns whether it stamped.
pub fn stamp_standin_version(bin: &mut [u8], version: &str) -> bool {
    let room = STANDIN_VERSION_SLOT_LEN - STANDIN_VERSION_SLOT_MARKER.len();
    if version.is_empty() || version.len() >= room {
        return false;
    }
    let mut hits = memchr::memmem::find_iter(bin, STANDIN_VERSION_SLOT_MARKER);
    let (Some(at), None) = (hits.next(), hits.next()) else {
        return false;
    };
    let start = at + STANDIN_VERSION_SLOT_MARKER.len();
    let Some(slot) = bin.get_mut(start..start + room) else {
        return false;
    };
    slot.fill(0);
    slot[..version.len()].copy_from_slice(version.as_bytes());
    true
}

/// A zip with `<product>` (mode 0755) and `extra` entries.
pub fn make_zip(product: &str, binary: &[u8], extra: &[ZipEntry]) -> Result<Vec<u8>, MirrorError> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = || {
        // Deflate like HashiCorp's zips; level 1 because test mirrors are
        // built often and the level does not change the format.
        zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .compression_level(Some(1))
    };
    w.start_file(product, opts().unix_permissions(0o755))
        .map_err(|e| err("start a zip entry", e))?;
    w.write_all(binary)
        .map_err(|e| err("write a zip entry", e))?;
    for e in extra {
        match e {
            ZipEntry::File { name, data, mode } => {
                w.start_file(name.as_str(), opts().unix_permissions(*mode))
                    .map_err(|e| err("start a zip entry", e))?;
                w.write_all(data).map_err(|e| err("write a zip entry", e))?;
            }
            ZipEntry::Symlink { name, target } => {
                w.add_symlink(name.as_str(), target.as_str(), opts())
                    .map_err(|e| err("add a zip symlink", e))?;
            }
        }
    }
    let c = w.finish().map_err(|e| err("finish the zip", e))?;
    Ok(c.into_inner())
}

/// A fault the server injects on one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Send the body in `chunk`-byte pieces with `delay` between them.
    SlowBody {
        /// Bytes per piece.
        chunk: usize,
        /// Pause between pieces.
        delay: Duration,
    },
    /// Close the connection after `bytes` body bytes, for the next `times`
    /// requests (`u32::MAX`: always).
    DropAfter {
        /// Body bytes sent before the drop.
        bytes: u64,
        /// How many requests get it.
        times: u32,
    },
    /// Answer `code` for the next `times` requests (`u32::MAX`: always).
    Status {
        /// HTTP status.
        code: u16,
        /// How many requests get it.
        times: u32,
    },
    /// Announce `declared` bytes of Content-Length whatever the body is.
    WrongLength {
        /// The Content-Length sent.
        declared: u64,
    },
    /// Flip the byte at `offset` of the file.
    Tamper {
        /// Byte offset.
        offset: u64,
    },
    /// Ignore Range headers (always answer 200 with the whole file).
    IgnoreRange,
}

#[derive(Debug, Default)]
struct State {
    faults: HashMap<String, Vec<Fault>>,
    requests: HashMap<String, u64>,
    ranges: HashMap<String, Vec<String>>,
}

/// A running mirror server on 127.0.0.1.
#[derive(Debug)]
pub struct MirrorServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl MirrorServer {
    /// Bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds a fault for a path (e.g. `/consul/1.20.1/consul_1.20.1_linux_amd64.zip`).
    pub fn set_fault(&self, path: &str, fault: Fault) {
        let mut s = self
            .state
            .lock()
            .expect("mirror state lock is never poisoned");
        s.faults.entry(path.to_string()).or_default().push(fault);
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.state
            .lock()
            .expect("mirror state lock is never poisoned")
            .faults
            .clear();
    }

    /// Requests served for `path` so far.
    pub fn requests(&self, path: &str) -> u64 {
        self.state
            .lock()
            .expect("mirror state lock is never poisoned")
            .requests
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Range headers received for `path`.
    pub fn ranges(&self, path: &str) -> Vec<String> {
        self.state
            .lock()
            .expect("mirror state lock is never poisoned")
            .ranges
            .get(path)
            .cloned()
            .unwrap_or_default()
    }

    /// Requests served in total.
    pub fn total_requests(&self) -> u64 {
        self.state
            .lock()
            .expect("mirror state lock is never poisoned")
            .requests
            .values()
            .sum()
    }
}

impl MirrorServer {
    /// A handle on this server's faults and request counts that outlives
    /// borrows of the server (e.g. held by a test while the server runs on
    /// another thread).
    pub fn control(&self) -> MirrorControl {
        MirrorControl {
            state: self.state.clone(),
        }
    }
}

/// Sets and clears a running [`MirrorServer`]'s faults from anywhere
/// (cloneable, `Send`): what [`MirrorServer::set_fault`] and
/// [`MirrorServer::clear_faults`] do, without the server itself.
#[derive(Debug, Clone)]
pub struct MirrorControl {
    state: Arc<Mutex<State>>,
}

impl MirrorControl {
    /// Adds a fault for a path (see [`MirrorServer::set_fault`]).
    pub fn set_fault(&self, path: &str, fault: Fault) {
        self.state
            .lock()
            .expect("mirror state lock is never poisoned")
            .faults
            .entry(path.to_string())
            .or_default()
            .push(fault);
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.state
            .lock()
            .expect("mirror state lock is never poisoned")
            .faults
            .clear();
    }

    /// Requests served for `path` so far.
    pub fn requests(&self, path: &str) -> u64 {
        self.state
            .lock()
            .expect("mirror state lock is never poisoned")
            .requests
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Requests served in total.
    pub fn total_requests(&self) -> u64 {
        self.state
            .lock()
            .expect("mirror state lock is never poisoned")
            .requests
            .values()
            .sum()
    }
}

/// Path of a release zip on a mirror laid out by [`MirrorBuilder`]
/// (`/<product>/<version>/<product>_<version>_linux_<arch>.zip`).
pub fn zip_path(product: &str, version: &str, arch: &str) -> String {
    format!("/{product}/{version}/{product}_{version}_linux_{arch}.zip")
}

impl Drop for MirrorServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `root` over HTTP on 127.0.0.1, port 0. Needs a tokio runtime.
pub async fn serve(root: impl Into<PathBuf>) -> Result<MirrorServer, MirrorError> {
    serve_on(root, "127.0.0.1:0").await
}

/// Serves `root` over HTTP on `listen`.
pub async fn serve_on(root: impl Into<PathBuf>, listen: &str) -> Result<MirrorServer, MirrorError> {
    let root: PathBuf = root.into();
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| err("bind the mirror server", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| err("read the bound address", e))?;
    let state = Arc::new(Mutex::new(State::default()));
    let st = state.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                continue;
            };
            let (root, st) = (root.clone(), st.clone());
            tokio::spawn(async move {
                let _ = handle(sock, &root, &st).await;
            });
        }
    });
    Ok(MirrorServer { addr, state, task })
}

/// What one request gets, decided under the lock.
struct Plan {
    status: Option<u16>,
    drop_after: Option<u64>,
    slow: Option<(usize, Duration)>,
    wrong_length: Option<u64>,
    tamper: Vec<u64>,
    ignore_range: bool,
}

fn plan_for(state: &Mutex<State>, path: &str, range: Option<&str>) -> Plan {
    let mut s = state.lock().expect("mirror state lock is never poisoned");
    *s.requests.entry(path.to_string()).or_default() += 1;
    if let Some(r) = range {
        s.ranges
            .entry(path.to_string())
            .or_default()
            .push(r.to_string());
    }
    let mut plan = Plan {
        status: None,
        drop_after: None,
        slow: None,
        wrong_length: None,
        tamper: Vec::new(),
        ignore_range: false,
    };
    if let Some(faults) = s.faults.get_mut(path) {
        for f in faults.iter_mut() {
            match f {
                Fault::Status { code, times } if *times > 0 && plan.status.is_none() => {
                    plan.status = Some(*code);
                    if *times != u32::MAX {
                        *times -= 1;
                    }
                }
                Fault::DropAfter { bytes, times } if *times > 0 && plan.drop_after.is_none() => {
                    plan.drop_after = Some(*bytes);
                    if *times != u32::MAX {
                        *times -= 1;
                    }
                }
                Fault::SlowBody { chunk, delay } => plan.slow = Some((*chunk, *delay)),
                Fault::WrongLength { declared } => plan.wrong_length = Some(*declared),
                Fault::Tamper { offset } => plan.tamper.push(*offset),
                Fault::IgnoreRange => plan.ignore_range = true,
                _ => {}
            }
        }
    }
    plan
}

async fn handle(
    sock: tokio::net::TcpStream,
    root: &Path,
    state: &Mutex<State>,
) -> std::io::Result<()> {
    let (rd, mut wr) = sock.into_split();
    let mut rd = BufReader::new(rd);
    let mut line = String::new();
    rd.read_line(&mut line).await?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        if rd.read_line(&mut h).await? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.trim().eq_ignore_ascii_case("range")
        {
            range = Some(v.trim().to_string());
        }
    }
    // Absolute-form targets arrive when a client uses us as its HTTP proxy.
    let target = match target.strip_prefix("http://") {
        Some(rest) => rest
            .find('/')
            .map_or("/".to_string(), |i| rest[i..].to_string()),
        None => target,
    };
    let path = target.split('?').next().unwrap_or("/").to_string();
    let plan = plan_for(state, &path, range.as_deref());
    if let Some(code) = plan.status {
        let body = format!("injected status {code}\n");
        let head = format!(
            "HTTP/1.1 {code} Injected\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        wr.write_all(head.as_bytes()).await?;
        wr.write_all(body.as_bytes()).await?;
        return wr.shutdown().await;
    }
    let rel = path.trim_start_matches('/');
    let safe = !rel
        .split('/')
        .any(|c| c == ".." || c.is_empty() && !rel.is_empty());
    let file = if safe {
        root.join(rel)
    } else {
        root.join("\0")
    };
    let data = match tokio::fs::read(&file).await {
        Ok(d) if file.is_file() => d,
        _ => {
            let head = "HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\nConnection: close\r\n\r\nnot found\n";
            wr.write_all(head.as_bytes()).await?;
            return wr.shutdown().await;
        }
    };
    let mut data = data;
    for off in &plan.tamper {
        if let Some(b) = data.get_mut(*off as usize) {
            *b ^= 0xff;
        }
    }
    let total = data.len() as u64;
    let (status, start, end) = match range.as_deref().and_then(parse_range) {
        Some((s, e)) if !plan.ignore_range && s < total => {
            (206, s, e.map_or(total, |e| (e + 1).min(total)))
        }
        Some(_) if !plan.ignore_range => {
            let head = format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{total}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            wr.write_all(head.as_bytes()).await?;
            return wr.shutdown().await;
        }
        _ => (200, 0, total),
    };
    let body = &data[start as usize..end as usize];
    let len = plan.wrong_length.unwrap_or(body.len() as u64);
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Length: {len}\r\nAccept-Ranges: bytes\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n",
        if status == 206 {
            "Partial Content"
        } else {
            "OK"
        }
    );
    if status == 206 {
        head.push_str(&format!(
            "Content-Range: bytes {start}-{}/{total}\r\n",
            end - 1
        ));
    }
    head.push_str("\r\n");
    wr.write_all(head.as_bytes()).await?;
    if method.eq_ignore_ascii_case("HEAD") {
        return wr.shutdown().await;
    }
    let limit = plan
        .drop_after
        .map_or(body.len(), |n| (n as usize).min(body.len()));
    let body = &body[..limit];
    match plan.slow {
        Some((chunk, delay)) => {
            for piece in body.chunks(chunk.max(1)) {
                wr.write_all(piece).await?;
                wr.flush().await?;
                tokio::time::sleep(delay).await;
            }
        }
        None => wr.write_all(body).await?,
    }
    wr.flush().await?;
    if plan.drop_after.is_some() {
        // Reset rather than a clean close, like a dropped connection.
        let sock = wr.reunite(rd.into_inner()).map_err(std::io::Error::other)?;
        sock.set_zero_linger()?;
        drop(sock);
        return Ok(());
    }
    wr.shutdown().await
}

fn parse_range(v: &str) -> Option<(u64, Option<u64>)> {
    let r = v.strip_prefix("bytes=")?;
    let (s, e) = r.split_once('-')?;
    let s = s.trim().parse().ok()?;
    let e = if e.trim().is_empty() {
        None
    } else {
        Some(e.trim().parse().ok()?)
    };
    Some((s, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn get(addr: SocketAddr, path: &str, extra: &str) -> (String, Vec<u8>) {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
        s.write_all(req.as_bytes()).await.expect("send");
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        let split = buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a header block");
        let head = String::from_utf8_lossy(&buf[..split]).into_owned();
        (head, buf[split + 4..].to_vec())
    }

    fn root_with_file() -> (tempfile::TempDir, Vec<u8>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        std::fs::create_dir_all(dir.path().join("consul")).expect("mkdir");
        std::fs::write(dir.path().join("consul/f.bin"), &data).expect("write");
        (dir, data)
    }

    #[tokio::test]
    async fn serves_files_ranges_and_404() {
        let (dir, data) = root_with_file();
        let srv = serve(dir.path()).await.expect("serve");
        let (head, body) = get(srv.addr(), "/consul/f.bin", "").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, data);
        let (head, body) = get(srv.addr(), "/consul/f.bin", "Range: bytes=9000-\r\n").await;
        assert!(head.starts_with("HTTP/1.1 206"), "{head}");
        assert!(
            head.contains("Content-Range: bytes 9000-9999/10000"),
            "{head}"
        );
        assert_eq!(body, data[9000..]);
        let (head, _) = get(srv.addr(), "/consul/../consul/f.bin", "").await;
        assert!(head.starts_with("HTTP/1.1 404"), "traversal served: {head}");
        let (head, _) = get(srv.addr(), "/nope", "").await;
        assert!(head.starts_with("HTTP/1.1 404"), "{head}");
        assert_eq!(srv.requests("/consul/f.bin"), 2);
        assert_eq!(srv.ranges("/consul/f.bin"), vec!["bytes=9000-".to_string()]);
    }

    #[tokio::test]
    async fn injects_status_drop_tamper_and_wrong_length() {
        let (dir, data) = root_with_file();
        let srv = serve(dir.path()).await.expect("serve");
        let p = "/consul/f.bin";
        srv.set_fault(
            p,
            Fault::Status {
                code: 500,
                times: 1,
            },
        );
        assert!(get(srv.addr(), p, "").await.0.starts_with("HTTP/1.1 500"));
        assert!(get(srv.addr(), p, "").await.0.starts_with("HTTP/1.1 200"));
        srv.clear_faults();
        srv.set_fault(
            p,
            Fault::DropAfter {
                bytes: 100,
                times: 1,
            },
        );
        let (head, body) = get(srv.addr(), p, "").await;
        assert!(head.contains("Content-Length: 10000"), "{head}");
        assert_eq!(body.len(), 100);
        assert_eq!(get(srv.addr(), p, "").await.1.len(), 10_000, "only once");
        srv.clear_faults();
        srv.set_fault(p, Fault::Tamper { offset: 5 });
        let body = get(srv.addr(), p, "").await.1;
        assert_eq!(body[5], data[5] ^ 0xff);
        assert_eq!(body[6..], data[6..]);
        srv.clear_faults();
        srv.set_fault(p, Fault::WrongLength { declared: 20_000 });
        let (head, body) = get(srv.addr(), p, "").await;
        assert!(head.contains("Content-Length: 20000"), "{head}");
        assert_eq!(body.len(), 10_000);
    }

    #[tokio::test]
    async fn a_control_handle_sets_and_clears_the_servers_faults() {
        let (dir, data) = root_with_file();
        let srv = serve(dir.path()).await.expect("serve");
        let ctl = srv.control();
        let p = "/consul/f.bin";
        ctl.set_fault(
            p,
            Fault::DropAfter {
                bytes: 10,
                times: u32::MAX,
            },
        );
        assert_eq!(get(srv.addr(), p, "").await.1.len(), 10);
        assert_eq!(get(srv.addr(), p, "").await.1.len(), 10, "always");
        ctl.clear_faults();
        assert_eq!(get(srv.addr(), p, "").await.1, data);
        assert_eq!(ctl.requests(p), 3);
        assert_eq!(ctl.total_requests(), 3);
        assert_eq!(
            zip_path("nomad", "1.10.4", "amd64"),
            "/nomad/1.10.4/nomad_1.10.4_linux_amd64.zip"
        );
    }

    #[test]
    fn stamps_each_version_into_a_standin_binary() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut fake = b"ELF...".to_vec();
        fake.extend_from_slice(STANDIN_VERSION_SLOT_MARKER);
        fake.resize(
            fake.len() + STANDIN_VERSION_SLOT_LEN - STANDIN_VERSION_SLOT_MARKER.len(),
            0,
        );
        fake.extend_from_slice(b"...tail");
        let bin = dir.path().join("standin");
        std::fs::write(&bin, &fake).expect("write");
        MirrorBuilder::product("consul")
            .version("1.19.2")
            .binary(&bin)
            .version("1.20.1")
            .build(&dir.path().join("m"))
            .expect("build");
        for v in ["1.19.2", "1.20.1"] {
            let zip = std::fs::read(
                dir.path()
                    .join(format!("m/consul/{v}/consul_{v}_linux_amd64.zip")),
            )
            .expect("zip");
            let mut z = zip::ZipArchive::new(std::io::Cursor::new(zip)).expect("zip opens");
            let mut e = z.by_name("consul").expect("entry");
            let mut got = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut got).expect("read");
            let mut want = fake.clone();
            assert!(stamp_standin_version(&mut want, v));
            assert_eq!(got, want, "{v}");
            assert!(got.windows(v.len()).any(|w| w == v.as_bytes()));
        }
    }

    #[test]
    fn builds_a_signed_mirror_with_a_version_script() {
        let dir = tempfile::tempdir().expect("temp dir");
        let built = MirrorBuilder::product("consul")
            .version("1.20.1")
            .build(dir.path())
            .expect("build");
        let zip = std::fs::read(
            dir.path()
                .join("consul/1.20.1/consul_1.20.1_linux_amd64.zip"),
        )
        .expect("zip");
        let sums =
            std::fs::read_to_string(dir.path().join("consul/1.20.1/consul_1.20.1_SHA256SUMS"))
                .expect("sums");
        let hash = hex::encode(Sha256::digest(&zip));
        assert!(sums.contains(&format!("{hash}  consul_1.20.1_linux_amd64.zip\n")));
        assert!(built.public_key.is_file());
        let mut z = zip::ZipArchive::new(std::io::Cursor::new(zip)).expect("zip opens");
        let mut e = z.by_name("consul").expect("consul entry");
        assert_eq!(e.unix_mode().map(|m| m & 0o777), Some(0o755));
        let mut text = String::new();
        std::io::Read::read_to_string(&mut e, &mut text).expect("read");
        assert!(text.contains("echo \"Consul v1.20.1\""), "{text}");
    }
}

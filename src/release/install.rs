//! Installation of a [`VerifiedArtifact`]: extract the single binary, record
//! its hash, check `<binary> version`, switch `current` atomically, keep the
//! previous version, prune older ones. Also the cache check and rollback.
//!
//! Layout under `<releases_dir>/<product>/`: `<ver>/<product>`,
//! `<ver>/<product>.sha256`, `current -> <ver>`, `previous -> <ver>`.
//! It must never leave a partial binary where one is expected: everything
//! is staged under a temp name and renamed into place.

use std::io::{BufRead, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::ReleaseError;
use super::fsutil::{TempPath, fsync_dir, remove_stale_temps, switch_symlink, temp_name};
use super::verify::VerifiedArtifact;
use crate::vocab::Product;

/// Name of the pointer to the active version.
pub const CURRENT_LINK: &str = "current";
/// Name of the pointer to the version before it (for rollback).
pub const PREVIOUS_LINK: &str = "previous";
/// Suffix of the record of hashes beside the binary.
const RECORD_SUFFIX: &str = ".sha256";
/// Entries a HashiCorp zip may hold beside the binary, skipped on extract.
const ALLOWED_EXTRA_ENTRIES: &[&str] = &["LICENSE.txt"];
/// How long `<binary> version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(20);
/// Unix file-type bits of a symlink in a zip entry's mode.
const S_IFLNK: u32 = 0o120000;
/// Mask of the file-type bits.
const S_IFMT: u32 = 0o170000;
/// The most a binary may inflate to, whatever the limits ask: Consul and
/// Nomad binaries are 100-200 MB; a zip bomb (6 MB that inflate to 6 GiB)
/// must stop here, while inflating, and leave nothing on disk.
pub const MAX_BINARY_BYTES: u64 = 1 << 30;
/// The most entries a release zip may hold (HashiCorp's hold the binary and
/// at most a licence).
pub const MAX_ZIP_ENTRIES: usize = 16;

/// Held while a binary is open for writing and while a binary is spawned:
/// a fork that happens while another thread holds a write descriptor makes
/// the child inherit it until exec, and exec of that binary then fails with
/// ETXTBSY ("text file busy"). Consul and Nomad install concurrently.
static EXEC_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
/// Attempts of `<binary> version` when a fork elsewhere in the process still
/// holds the binary open (ETXTBSY), and the pause between them.
const TEXT_BUSY_ATTEMPTS: u32 = 5;
const TEXT_BUSY_PAUSE: Duration = Duration::from_millis(50);

/// The record written beside an installed binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// SHA-256 of the binary.
    pub binary_sha256: String,
    /// SHA-256 of the zip it came from, as signed.
    pub zip_sha256: String,
    /// The zip's file name.
    pub zip_name: String,
}

impl Record {
    fn render(&self, product: Product) -> String {
        format!(
            "{}  {}\n{}  {}\n",
            self.binary_sha256,
            product.as_str(),
            self.zip_sha256,
            self.zip_name
        )
    }

    fn parse(text: &str, product: Product) -> Option<Record> {
        let mut binary = None;
        let mut zip = None;
        for line in text.lines() {
            let (h, name) = line.split_once("  ")?;
            if name == product.as_str() {
                binary = Some(h.to_string());
            } else {
                zip = Some((h.to_string(), name.to_string()));
            }
        }
        let (zip_sha256, zip_name) = zip?;
        Some(Record {
            binary_sha256: binary?,
            zip_sha256,
            zip_name,
        })
    }
}

/// Directory of a product's releases.
pub fn product_dir(releases_dir: &Path, product: Product) -> PathBuf {
    releases_dir.join(product.as_str())
}

/// Directory of one installed version.
pub fn version_dir(releases_dir: &Path, product: Product, version: &semver::Version) -> PathBuf {
    product_dir(releases_dir, product).join(version.to_string())
}

/// Hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Whether `<ver>/` holds a binary whose hash matches its record and whose
/// recorded zip hash is `zip_sha256` (the signed line). Returns the binary's
/// hash when it does.
pub fn cached(
    releases_dir: &Path,
    product: Product,
    version: &semver::Version,
    zip_sha256: &str,
) -> Option<String> {
    let (rec, actual) = recorded_binary(releases_dir, product, version)?;
    (rec.zip_sha256 == zip_sha256).then_some(actual)
}

/// The record of `<ver>/` and its binary's hash, when the binary is a
/// regular file whose hash matches the record (written at install time,
/// after the zip's hash matched a signed `SHA256SUMS`).
pub fn recorded_binary(
    releases_dir: &Path,
    product: Product,
    version: &semver::Version,
) -> Option<(Record, String)> {
    let dir = version_dir(releases_dir, product, version);
    let binary = dir.join(product.as_str());
    let text =
        std::fs::read_to_string(dir.join(format!("{}{RECORD_SUFFIX}", product.as_str()))).ok()?;
    let rec = Record::parse(&text, product)?;
    let meta = std::fs::symlink_metadata(&binary).ok()?;
    if !meta.is_file() {
        return None;
    }
    let actual = sha256_file(&binary).ok()?;
    (actual == rec.binary_sha256).then_some((rec, actual))
}

/// Install limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest binary we extract (never more than [`MAX_BINARY_BYTES`]).
    pub max_binary_bytes: u64,
}

impl Limits {
    /// The cap in force: the asked one, never above [`MAX_BINARY_BYTES`].
    fn binary_cap(&self) -> u64 {
        self.max_binary_bytes.min(MAX_BINARY_BYTES)
    }
}

/// Extracts, checks and moves a verified artifact into
/// `<releases_dir>/<product>/<ver>/`; returns the binary path and hash.
/// Does not switch `current`.
pub fn place(
    artifact: &VerifiedArtifact,
    releases_dir: &Path,
    limits: Limits,
) -> Result<(PathBuf, String), ReleaseError> {
    let product = artifact.product;
    let pdir = product_dir(releases_dir, product);
    let stage = TempPath::new(temp_name(&pdir, &artifact.version.to_string()));
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| ReleaseError::Io { what, path, source }
    };
    std::fs::create_dir(stage.path()).map_err(io("create the staging dir", stage.path()))?;
    let staged_bin = stage.path().join(product.as_str());
    let binary_sha256 = extract(artifact, &staged_bin, limits)?;
    check_version(&staged_bin, product, &artifact.version)?;
    let rec = Record {
        binary_sha256: binary_sha256.clone(),
        zip_sha256: artifact.zip_sha256.clone(),
        zip_name: artifact.zip_name.clone(),
    };
    let rec_path = stage
        .path()
        .join(format!("{}{RECORD_SUFFIX}", product.as_str()));
    write_synced(&rec_path, rec.render(product).as_bytes())
        .map_err(io("write the hash record", &rec_path))?;
    fsync_dir(stage.path()).map_err(io("sync the staging dir", stage.path()))?;

    let vdir = version_dir(releases_dir, product, &artifact.version);
    // A stale or damaged version dir is moved aside, never deleted before
    // its replacement is in place.
    let aside = if std::fs::symlink_metadata(&vdir).is_ok() {
        let aside = TempPath::new(temp_name(&pdir, "old"));
        std::fs::rename(&vdir, aside.path())
            .map_err(io("move aside the old version dir", &vdir))?;
        Some(aside)
    } else {
        None
    };
    std::fs::rename(stage.path(), &vdir).map_err(io("move the new version into place", &vdir))?;
    stage.keep();
    drop(aside);
    fsync_dir(&pdir).map_err(io("sync the releases dir", &pdir))?;
    Ok((vdir.join(product.as_str()), binary_sha256))
}

#[allow(
    clippy::disallowed_methods,
    reason = "release's installer: writes into its staging dir, renamed into place whole"
)]
fn write_synced(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Extracts the single binary of the zip to `dest` (mode 0755), refusing
/// traversal, symlinks, unexpected entries and oversized entries.
fn extract(
    artifact: &VerifiedArtifact,
    dest: &Path,
    limits: Limits,
) -> Result<String, ReleaseError> {
    let zip_path = artifact.zip.path();
    let file = std::fs::File::open(zip_path).map_err(|source| ReleaseError::Io {
        what: "open the release zip",
        path: zip_path.to_path_buf(),
        source,
    })?;
    extract_from(
        std::io::BufReader::new(file),
        zip_path,
        artifact.product,
        dest,
        limits,
    )
}

/// [`extract`] of the zip read from `reader` (named `zip_path` in errors):
/// the binary `product` to `dest`, which must not exist. Reached by the
/// fuzzer through `crate::fuzzing`.
pub(crate) fn extract_from<R: std::io::Read + std::io::Seek>(
    reader: R,
    zip_path: &Path,
    product: Product,
    dest: &Path,
    limits: Limits,
) -> Result<String, ReleaseError> {
    let bad = |reason: String| ReleaseError::BadArchive {
        path: zip_path.to_path_buf(),
        reason,
    };
    let mut zip =
        zip::ZipArchive::new(reader).map_err(|e| bad(format!("not a zip archive ({e})")))?;
    if zip.len() > MAX_ZIP_ENTRIES {
        return Err(bad(format!(
            "{} entries, more than the {MAX_ZIP_ENTRIES} a release holds",
            zip.len()
        )));
    }
    let cap = limits.binary_cap();
    let want = product.as_str();
    let mut binary_index = None;
    for i in 0..zip.len() {
        let entry = zip
            .by_index_raw(i)
            .map_err(|e| bad(format!("unreadable entry {i} ({e})")))?;
        let name = entry
            .name()
            .map_err(|e| bad(format!("entry {i} has an unreadable name ({e})")))?
            .to_string();
        if name.contains('/') || name.contains('\\') || name == ".." || name.is_empty() {
            return Err(bad(format!("entry `{name}` is not a plain file name")));
        }
        if entry.unix_mode().is_some_and(|m| m & S_IFMT == S_IFLNK) {
            return Err(bad(format!("entry `{name}` is a symlink")));
        }
        if entry.is_dir() {
            return Err(bad(format!("entry `{name}` is a directory")));
        }
        if name == want {
            if binary_index.is_some() {
                return Err(bad(format!("entry `{name}` appears twice")));
            }
            if entry.size() > cap {
                return Err(bad(format!(
                    "entry `{name}` is {} bytes, over the {cap} byte limit",
                    entry.size(),
                )));
            }
            binary_index = Some(i);
        } else if !ALLOWED_EXTRA_ENTRIES.contains(&name.as_str()) {
            return Err(bad(format!("unexpected entry `{name}`")));
        }
    }
    let index = binary_index.ok_or_else(|| bad(format!("no `{want}` entry")))?;
    let mut entry = zip
        .by_index(index)
        .map_err(|e| bad(format!("unreadable entry `{want}` ({e})")))?;
    let io = |what: &'static str| {
        let path = dest.to_path_buf();
        move |source| ReleaseError::Io { what, path, source }
    };
    let _exec_guard = EXEC_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode_0755()
        .open(dest)
        .map_err(io("create the binary"))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = entry
            .read(&mut buf)
            .map_err(|e| bad(format!("failed to decompress `{want}` ({e})")))?;
        if n == 0 {
            break;
        }
        total = total.saturating_add(n as u64);
        // The header's size may lie: count what actually comes out.
        if total > cap {
            return Err(bad(format!(
                "entry `{want}` inflates past the {cap} byte limit"
            )));
        }
        h.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(io("write the binary"))?;
    }
    out.set_permissions(std::fs::Permissions::from_mode(0o755))
        .map_err(io("set the binary's mode"))?;
    out.sync_all().map_err(io("sync the binary"))?;
    Ok(hex::encode(h.finalize()))
}

trait Mode0755 {
    fn mode_0755(&mut self) -> &mut Self;
}

impl Mode0755 for std::fs::OpenOptions {
    fn mode_0755(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o755)
    }
}

/// Runs `<binary> version` and checks its first line reads
/// `<Product> v<expected>` (the format of `consul version`/`nomad version`).
pub fn check_version(
    binary: &Path,
    product: Product,
    expected: &semver::Version,
) -> Result<(), ReleaseError> {
    let run_err = |source| ReleaseError::RunBinary {
        binary: binary.to_path_buf(),
        source,
    };
    let mut attempt = 1;
    let mut child = loop {
        let spawned = {
            let _exec_guard = EXEC_LOCK.lock().unwrap_or_else(|p| p.into_inner());
            std::process::Command::new(binary)
                .arg("version")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
        };
        match spawned {
            Ok(c) => break c,
            Err(e)
                if e.kind() == std::io::ErrorKind::ExecutableFileBusy
                    && attempt < TEXT_BUSY_ATTEMPTS =>
            {
                attempt += 1;
                #[allow(
                    clippy::disallowed_methods,
                    reason = "on a blocking thread (installs run in spawn_blocking): a short pause before the next exec"
                )]
                std::thread::sleep(TEXT_BUSY_PAUSE);
            }
            Err(e) => return Err(run_err(e)),
        }
    };
    let stdout = child.stdout.take();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut first = String::new();
        if let Some(s) = stdout {
            let mut r = std::io::BufReader::new(s);
            let _ = r.read_line(&mut first);
            // Drain so the child never blocks on a full pipe.
            let _ = std::io::copy(&mut r, &mut std::io::sink());
        }
        let _ = tx.send(first);
    });
    let first = match rx.recv_timeout(VERSION_TIMEOUT) {
        Ok(l) => l,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ReleaseError::VersionMismatch {
                binary: binary.to_path_buf(),
                expected: expected.to_string(),
                got: format!("no answer within {VERSION_TIMEOUT:?}"),
            });
        }
    };
    let _ = child.wait();
    let name = match product {
        Product::Consul => "Consul",
        Product::Nomad => "Nomad",
    };
    let got = first
        .trim_end()
        .strip_prefix(name)
        .and_then(|r| r.strip_prefix(" v"))
        .and_then(|r| r.split_whitespace().next())
        .map(str::to_string);
    match got {
        Some(v) if v == expected.to_string() => Ok(()),
        _ => Err(ReleaseError::VersionMismatch {
            binary: binary.to_path_buf(),
            expected: expected.to_string(),
            got: first.trim_end().to_string(),
        }),
    }
}

fn read_link_version(link: &Path) -> Option<String> {
    let t = std::fs::read_link(link).ok()?;
    Some(t.file_name()?.to_string_lossy().into_owned())
}

/// Points `current` at `version` (and `previous` at the old current, when
/// it differs). Idempotent.
pub fn activate(
    releases_dir: &Path,
    product: Product,
    version: &semver::Version,
) -> Result<(), ReleaseError> {
    let pdir = product_dir(releases_dir, product);
    let current = pdir.join(CURRENT_LINK);
    let ver = version.to_string();
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| ReleaseError::Io { what, path, source }
    };
    let old = read_link_version(&current);
    if old.as_deref() == Some(ver.as_str()) {
        return Ok(());
    }
    if let Some(old) = old
        && pdir.join(&old).is_dir()
    {
        let prev = pdir.join(PREVIOUS_LINK);
        switch_symlink(&prev, Path::new(&old)).map_err(io("switch the previous pointer", &prev))?;
    }
    switch_symlink(&current, Path::new(&ver)).map_err(io("switch the current pointer", &current))
}

/// Removes versions beyond `keep` (never `current` or `previous`; newest
/// first otherwise) and stale temp entries.
pub fn prune(
    releases_dir: &Path,
    product: Product,
    keep: usize,
) -> Result<Vec<String>, ReleaseError> {
    let pdir = product_dir(releases_dir, product);
    remove_stale_temps(&pdir);
    let protected: Vec<String> = [CURRENT_LINK, PREVIOUS_LINK]
        .iter()
        .filter_map(|l| read_link_version(&pdir.join(l)))
        .collect();
    let mut others: Vec<(semver::Version, PathBuf)> = Vec::new();
    let rd = std::fs::read_dir(&pdir).map_err(|source| ReleaseError::Io {
        what: "list the releases dir",
        path: pdir.clone(),
        source,
    })?;
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if protected.contains(&name) || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if let Ok(v) = semver::Version::parse(&name) {
            others.push((v, e.path()));
        }
    }
    others.sort_by(|a, b| b.0.cmp(&a.0));
    let room = keep.max(1).saturating_sub(protected.len());
    let mut removed = Vec::new();
    for (v, path) in others.into_iter().skip(room) {
        std::fs::remove_dir_all(&path).map_err(|source| ReleaseError::Io {
            what: "remove an old version",
            path: path.clone(),
            source,
        })?;
        removed.push(v.to_string());
    }
    Ok(removed)
}

/// Switches `current` back to `previous` (and `previous` to the old
/// current). Returns the version now current.
pub fn rollback(releases_dir: &Path, product: Product) -> Result<semver::Version, ReleaseError> {
    let pdir = product_dir(releases_dir, product);
    let prev = read_link_version(&pdir.join(PREVIOUS_LINK))
        .filter(|v| pdir.join(v).join(product.as_str()).is_file())
        .ok_or(ReleaseError::NoPrevious { product })?;
    let version =
        semver::Version::parse(&prev).map_err(|_| ReleaseError::NoPrevious { product })?;
    activate(releases_dir, product, &version)?;
    Ok(version)
}

/// The version `current` points at, if any.
pub fn current_version(releases_dir: &Path, product: Product) -> Option<semver::Version> {
    let v = read_link_version(&product_dir(releases_dir, product).join(CURRENT_LINK))?;
    semver::Version::parse(&v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips() {
        let r = Record {
            binary_sha256: "a".repeat(64),
            zip_sha256: "b".repeat(64),
            zip_name: "consul_1.2.3_linux_amd64.zip".into(),
        };
        let text = r.render(Product::Consul);
        assert_eq!(Record::parse(&text, Product::Consul), Some(r));
    }

    /// A zip holding `consul`: `size` zero bytes, deflated (a few KB per
    /// MB), and `extra` more licence-like entries. With `lie`, the sizes in
    /// its headers claim the entry inflates to 1 KiB.
    fn zip_bomb(dir: &Path, size: u64, extra: usize, lie: bool) -> PathBuf {
        let path = dir.join("consul_1.2.3_linux_amd64.zip");
        let f = std::fs::File::create(&path).unwrap();
        let mut w = zip::ZipWriter::new(f);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        w.start_file("consul", opts).unwrap();
        let chunk = vec![0u8; 1 << 20];
        let mut left = size;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            w.write_all(&chunk[..n]).unwrap();
            left -= n as u64;
        }
        for i in 0..extra {
            w.start_file(format!("LICENSE-{i}.txt"), opts).unwrap();
        }
        w.finish().unwrap();
        if lie {
            let mut bytes = std::fs::read(&path).unwrap();
            let size32 = u32::try_from(size).unwrap().to_le_bytes();
            let small = 1024u32.to_le_bytes();
            // Local header (offset 22) and central directory entry (offset
            // 24): the uncompressed size, little-endian.
            for (sig, off) in [(b"PK\x03\x04", 22), (b"PK\x01\x02", 24)] {
                let at = bytes.windows(4).position(|x| x == sig).unwrap() + off;
                assert_eq!(bytes[at..at + 4], size32, "size field found");
                bytes[at..at + 4].copy_from_slice(&small);
            }
            std::fs::write(&path, bytes).unwrap();
        }
        path
    }

    fn artifact(zip: PathBuf) -> VerifiedArtifact {
        VerifiedArtifact::new(
            Product::Consul,
            semver::Version::new(1, 2, 3),
            TempPath::new(zip),
            "consul_1.2.3_linux_amd64.zip".into(),
            "0".repeat(64),
            "test".into(),
        )
    }

    /// Places `zip` with a binary cap of `cap` bytes; the error and what is
    /// left in the product's dir.
    fn place_refused(zip: PathBuf, releases: &Path, cap: u64) -> (ReleaseError, Vec<String>) {
        let pdir = product_dir(releases, Product::Consul);
        std::fs::create_dir_all(&pdir).unwrap();
        let limits = Limits {
            max_binary_bytes: cap,
        };
        let err = place(&artifact(zip), releases, limits).unwrap_err();
        let left = std::fs::read_dir(&pdir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        (err, left)
    }

    #[test]
    fn a_zip_bomb_is_refused_while_inflating_exit_69_and_nothing_left() {
        let dir = tempfile::tempdir().unwrap();
        // 64 MiB that deflate to ~64 KiB, headers claiming 1 KiB: the
        // declared size passes, so only inflating can tell (the zip reader
        // stops past the declared size; our count of inflated bytes stops
        // at the cap otherwise).
        let zip = zip_bomb(dir.path(), 64 << 20, 0, true);
        assert!(std::fs::metadata(&zip).unwrap().len() < 1 << 20);
        let releases = dir.path().join("releases");
        let (err, left) = place_refused(zip, &releases, 4 << 20);
        assert!(
            matches!(&err, ReleaseError::BadArchive { reason, .. }
                if reason.starts_with("failed to decompress `consul`")
                    || reason.contains("inflates past the 4194304 byte limit")),
            "{err}"
        );
        // A refused archive exits 69 (`error::tests::a_refused_archive_exits_69`).
        assert!(matches!(err, ReleaseError::BadArchive { .. }), "{err}");
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    #[test]
    fn an_entry_declared_over_the_cap_is_refused_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let zip = zip_bomb(dir.path(), 8 << 20, 0, false);
        let releases = dir.path().join("releases");
        let (err, left) = place_refused(zip, &releases, 4 << 20);
        assert!(
            err.to_string()
                .contains("is 8388608 bytes, over the 4194304 byte limit"),
            "{err}"
        );
        // A refused archive exits 69 (`error::tests::a_refused_archive_exits_69`).
        assert!(matches!(err, ReleaseError::BadArchive { .. }), "{err}");
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    #[test]
    fn a_zip_of_too_many_entries_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let zip = zip_bomb(dir.path(), 1, MAX_ZIP_ENTRIES, false);
        let releases = dir.path().join("releases");
        let (err, left) = place_refused(zip, &releases, 4 << 20);
        assert!(
            err.to_string().contains("17 entries, more than the 16"),
            "{err}"
        );
        // A refused archive exits 69 (`error::tests::a_refused_archive_exits_69`).
        assert!(matches!(err, ReleaseError::BadArchive { .. }), "{err}");
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    #[test]
    fn no_limit_asks_for_more_than_the_hard_cap() {
        let l = Limits {
            max_binary_bytes: u64::MAX,
        };
        assert_eq!(l.binary_cap(), MAX_BINARY_BYTES);
    }
}

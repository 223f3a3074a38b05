//! Releases: resolve a version against a mirror laid out like
//! releases.hashicorp.com, download, verify (OpenPGP signature of
//! `SHA256SUMS`, then the zip's SHA-256 while it streams), install under
//! `<releases_dir>/<product>/<ver>/` and switch `current` atomically.
//!
//! Order is fixed and every step refuses on failure: index → SHA256SUMS +
//! signature → signature check → zip streamed into a temp file in the target
//! dir while hashed → hash compared with the signed line → [`VerifiedArtifact`]
//! → extract, record, `version` check → switch. A failure leaves the node as
//! it was: no partial binary, no temp file, the old version untouched.
//!
//! This module never starts an agent; it only puts binaries on disk.

mod fsutil;
pub mod index;
pub(crate) mod install;
pub mod mirror;
pub mod verify;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::info;

pub use index::{ProductIndex, is_enterprise, is_stable, machine_arch};
pub use install::{CURRENT_LINK, PREVIOUS_LINK, current_version, sha256_file};
pub use mirror::{FetchCause, Mirror};
pub use verify::{HASHICORP_FINGERPRINT, Keyring, Sha256Sums, VerifiedArtifact, VerifyError};

use crate::plan::{Plan, ReleasePlan};
use crate::version::VersionSpec;
use crate::vocab::Product;
use crate::vocab::ReleaseOutcome;

/// Largest `index.json` we read (HashiCorp's own are a few MiB).
const MAX_INDEX_BYTES: u64 = 64 * 1024 * 1024;
/// Largest `SHA256SUMS` or signature file we read.
const MAX_SMALL_BYTES: u64 = 1024 * 1024;
/// Operating system of the builds we fetch.
const OS: &str = "linux";
/// Default connect timeout.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default read timeout (no byte for this long = dropped).
const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default number of retries after the first attempt.
const DEFAULT_RETRIES: u32 = 5;
/// Default first backoff delay.
const DEFAULT_BASE_DELAY: Duration = Duration::from_millis(500);
/// Default cap of the backoff delay.
const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(15);

/// Why a release could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// The mirror string is neither a URL we support nor a directory.
    #[error("failed to use mirror `{mirror}`: expected https://, http://, file:// or a directory")]
    InvalidMirror {
        /// As configured.
        mirror: String,
    },
    /// A request failed for good (after retries).
    #[error("failed to fetch {url}")]
    Fetch {
        /// What was fetched.
        url: String,
        /// The last cause.
        #[source]
        source: FetchCause,
    },
    /// The mirror does not have a file.
    #[error("failed to fetch {url}: not found on the mirror")]
    NotFound {
        /// What was fetched.
        url: String,
    },
    /// A file exceeds its size bound.
    #[error("failed to fetch {url}: larger than the {limit} byte limit")]
    TooLarge {
        /// What was fetched.
        url: String,
        /// The bound.
        limit: u64,
    },
    /// `index.json` is not in the expected format.
    #[error("failed to parse {url}")]
    Index {
        /// The index URL.
        url: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// No release matches the request.
    #[error("failed to resolve {product} version `{spec}`: no matching release on {mirror}")]
    NoMatchingVersion {
        /// Product.
        product: Product,
        /// What was asked.
        spec: String,
        /// The mirror.
        mirror: String,
    },
    /// The release has no build for this machine.
    #[error("failed to find a linux_{arch} build of {product} {version}")]
    NoBuild {
        /// Product.
        product: Product,
        /// Version.
        version: String,
        /// Architecture.
        arch: String,
    },
    /// This machine's architecture has no HashiCorp build.
    #[error("failed to map machine architecture `{0}` to a release architecture")]
    UnsupportedArch(String),
    /// Neither signature file exists.
    #[error("failed to find a signature for {sums}: tried {tried}")]
    MissingSignature {
        /// The SHA256SUMS URL.
        sums: String,
        /// Signature URLs tried.
        tried: String,
    },
    /// The signature (or a key) was refused.
    #[error("failed to verify the signature of {url}")]
    Verify {
        /// The SHA256SUMS URL.
        url: String,
        /// The reason.
        #[source]
        source: VerifyError,
    },
    /// A trusted key file could not be loaded.
    #[error("failed to load the trusted keys")]
    Keys(#[source] VerifyError),
    /// The signed SHA256SUMS does not list the zip.
    #[error("failed to find {file} in the signed {sums}")]
    NotInSums {
        /// Zip file name.
        file: String,
        /// The SHA256SUMS URL.
        sums: String,
    },
    /// The downloaded zip does not match the signed hash.
    #[error("failed to verify {url}: SHA-256 {actual} differs from the signed {expected}")]
    HashMismatch {
        /// The zip URL.
        url: String,
        /// The signed hash.
        expected: String,
        /// What arrived.
        actual: String,
    },
    /// The zip's content is refused.
    #[error("failed to extract {path}: {reason}")]
    BadArchive {
        /// The zip.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// `<binary> version` does not report the expected version.
    #[error("failed to check {binary}: expected version {expected}, `version` printed `{got}`")]
    VersionMismatch {
        /// The binary.
        binary: PathBuf,
        /// Expected version.
        expected: String,
        /// First line printed.
        got: String,
    },
    /// `<binary> version` could not be run.
    #[error("failed to run {binary} version")]
    RunBinary {
        /// The binary.
        binary: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Rollback found no previous version.
    #[error("failed to roll back {product}: no previous version is installed")]
    NoPrevious {
        /// Product.
        product: Product,
    },
    /// A local file operation failed (disk full included).
    #[error("failed to {what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A bug or a runtime failure (task join).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ReleaseError {
    /// The next step for an operator, when the error has an obvious one:
    /// a mirror that cannot be reached at all (no route, DNS, firewall) is
    /// what a first run on an offline machine meets.
    pub fn hint(&self) -> Option<String> {
        let Self::Fetch { url, source } = self else {
            return None;
        };
        let unreachable = match source {
            FetchCause::Http(e) => e.is_connect() || e.is_timeout(),
            FetchCause::ReadTimeout(_) => true,
            _ => false,
        };
        if !unreachable {
            return None;
        }
        let host = reqwest::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_else(|| url.clone());
        Some(format!(
            "{host} cannot be reached from this machine (no network route, DNS or a firewall). Either:
  - set `[release] mirror` in the role file to a mirror this node reaches (https://, http://,
    file:// or a local directory laid out like releases.hashicorp.com);
  - air-gapped: copy the signed releases into a directory and set `mirror` to it; a mirror
    signed with your own key also needs `trusted_key_files = [\"<key>.asc\"]` and
    `trust_hashicorp_key = false`;
  - or try it offline first: `sudo scripts/demo-reference-cluster.sh` (in the source tree)
    runs the five-node reference cluster on stand-in agents."
        ))
    }
}

/// Which counter an install's error belongs to (`/metrics`): reaching the
/// mirror and getting what is needed from it, or checking what was got.
/// Failures of neither (the local trust set, I/O, a bug) are not counted.
impl From<&ReleaseError> for ReleaseOutcome {
    fn from(e: &ReleaseError) -> Self {
        match e {
            ReleaseError::InvalidMirror { .. }
            | ReleaseError::Fetch { .. }
            | ReleaseError::NotFound { .. }
            | ReleaseError::TooLarge { .. }
            | ReleaseError::Index { .. }
            | ReleaseError::NoMatchingVersion { .. }
            | ReleaseError::NoBuild { .. } => ReleaseOutcome::FetchFailed,
            ReleaseError::MissingSignature { .. }
            | ReleaseError::Verify { .. }
            | ReleaseError::NotInSums { .. }
            | ReleaseError::HashMismatch { .. }
            | ReleaseError::BadArchive { .. }
            | ReleaseError::VersionMismatch { .. }
            | ReleaseError::RunBinary { .. } => ReleaseOutcome::VerifyFailed,
            ReleaseError::Keys(_)
            | ReleaseError::UnsupportedArch(_)
            | ReleaseError::NoPrevious { .. }
            | ReleaseError::Io { .. }
            | ReleaseError::Internal(_) => ReleaseOutcome::LocalFailure,
        }
    }
}

/// The outcome of one install ([`ensure_installed`]) as `/metrics` counts it.
impl From<&Result<Installed, ReleaseError>> for ReleaseOutcome {
    fn from(r: &Result<Installed, ReleaseError>) -> Self {
        match r {
            Ok(done) => ReleaseOutcome::Installed {
                downloaded: done.downloaded,
            },
            Err(e) => e.into(),
        }
    }
}

/// Retry budget and backoff of network requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub retries: u32,
    /// First backoff delay (doubled per retry, with jitter).
    pub base_delay: Duration,
    /// Cap of the backoff delay.
    pub max_delay: Duration,
}

/// Network and install knobs (the plan holds what the operator sets; these
/// are the mechanics, overridable by tests and benchmarks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOptions {
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Longest wait for the next bytes of a body.
    pub read_timeout: Duration,
    /// Retry budget.
    pub retry: RetryPolicy,
    /// Release architecture (`amd64`, `arm64`); the machine's when `None`.
    pub arch: Option<String>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            retry: RetryPolicy {
                retries: DEFAULT_RETRIES,
                base_delay: DEFAULT_BASE_DELAY,
                max_delay: DEFAULT_MAX_DELAY,
            },
            arch: None,
        }
    }
}

/// An installed, verified release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// Product.
    pub product: Product,
    /// Version installed (and now `current`).
    pub version: semver::Version,
    /// Path of the binary (`<releases_dir>/<product>/<ver>/<product>`).
    pub binary: PathBuf,
    /// SHA-256 of the binary (lowercase hex).
    pub sha256: String,
    /// Whether the zip was downloaded (false: already installed).
    pub downloaded: bool,
}

/// One version a mirror lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedVersion {
    /// The version.
    pub version: semver::Version,
    /// A pre-release (`-rc1`, `-beta`, ...).
    pub prerelease: bool,
    /// An enterprise build (`+ent`, `+ent.*`).
    pub enterprise: bool,
}

/// Fetches and parses `<product>/index.json`.
pub async fn fetch_index(mirror: &Mirror, product: Product) -> Result<ProductIndex, ReleaseError> {
    let rel = format!("{product}/index.json");
    let url = mirror.url_of(&rel);
    let body = mirror
        .get_small(&rel, MAX_INDEX_BYTES)
        .await?
        .ok_or_else(|| ReleaseError::NotFound { url: url.clone() })?;
    serde_json::from_slice(&body).map_err(|source| ReleaseError::Index { url, source })
}

/// Lists the versions a mirror has for a product, newest first.
pub async fn list_versions(
    mirror: &str,
    product: Product,
    opts: &FetchOptions,
) -> Result<Vec<ListedVersion>, ReleaseError> {
    let m = Mirror::new(mirror, opts)?;
    let idx = fetch_index(&m, product).await?;
    Ok(idx
        .releases()
        .into_iter()
        .map(|r| ListedVersion {
            prerelease: !r.version.pre.is_empty(),
            enterprise: is_enterprise(&r.version),
            version: r.version,
        })
        .collect())
}

/// The version `spec` resolves to on the plan's mirror now (its
/// `index.json` only: nothing is downloaded or verified).
pub async fn resolve(
    plan: &ReleasePlan,
    product: Product,
    spec: &VersionSpec,
    opts: &FetchOptions,
) -> Result<semver::Version, ReleaseError> {
    let mirror = Mirror::new(&plan.mirror, opts)?;
    let idx = fetch_index(&mirror, product).await?;
    idx.resolve(spec)
        .map(|r| r.version)
        .ok_or_else(|| ReleaseError::NoMatchingVersion {
            product,
            spec: spec.to_string(),
            mirror: plan.mirror.clone(),
        })
}

/// Makes sure the release `spec` selects is installed and current, with the
/// default network options. See [`ensure_installed_with`].
pub async fn ensure_installed(
    plan: &ReleasePlan,
    product: Product,
    spec: &VersionSpec,
) -> Result<Installed, ReleaseError> {
    ensure_installed_with(plan, product, spec, &FetchOptions::default()).await
}

/// Resolves `spec` on the plan's mirror, verifies the signed `SHA256SUMS`,
/// and installs the release unless a verified install of it is already
/// present; then points `current` at it and prunes old versions.
pub async fn ensure_installed_with(
    plan: &ReleasePlan,
    product: Product,
    spec: &VersionSpec,
    opts: &FetchOptions,
) -> Result<Installed, ReleaseError> {
    obtain(plan, product, spec, opts, Switch::Now).await
}

/// As [`ensure_installed_with`], but leaves `current` (and `previous`)
/// where they are: the release is resolved, verified and placed beside
/// the running one, ready for [`activate`] once the upgrade gate lets the
/// node restart. A mirror that cannot be reached is an error here (what
/// the node wants is then unknown), never the installed release.
pub async fn download_with(
    plan: &ReleasePlan,
    product: Product,
    spec: &VersionSpec,
    opts: &FetchOptions,
) -> Result<Installed, ReleaseError> {
    obtain(plan, product, spec, opts, Switch::Later).await
}

/// Makes the placed and verified `version` current (the old current
/// becomes `previous`, what [`rollback`] returns to), then prunes beyond
/// the plan's `keep_versions`.
pub fn activate(
    plan: &ReleasePlan,
    product: Product,
    version: &semver::Version,
) -> Result<(), ReleaseError> {
    if install::recorded_binary(&plan.releases_dir, product, version).is_none() {
        return Err(ReleaseError::Io {
            what: "activate",
            path: install::version_dir(&plan.releases_dir, product, version),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no verified install of this version",
            ),
        });
    }
    install::activate(&plan.releases_dir, product, version)?;
    let removed = install::prune(&plan.releases_dir, product, plan.keep_versions)?;
    if !removed.is_empty() {
        info!(product = %product, removed = ?removed, "pruned old versions");
    }
    Ok(())
}

/// The release a node keeps running across supervisor restarts (pinned
/// by default): the one `current` points at, when its binary still matches
/// the hash recorded when it was verified, whatever the role file asks for
/// now. A different wanted version is an upgrade for the gate
/// (`crate::upgrade`), never a switch at start.
pub fn pinned(releases_dir: &Path, product: Product) -> Option<Installed> {
    installed_offline(releases_dir, product, &VersionSpec::Latest)
}

/// Whether [`obtain`] switches `current` to what it installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Switch {
    /// Switch and prune (a first install, `supervisor fetch`).
    Now,
    /// Leave `current`; no offline fallback, no prune.
    Later,
}

/// Resolves, verifies and places a release; see [`ensure_installed_with`]
/// and [`download_with`].
async fn obtain(
    plan: &ReleasePlan,
    product: Product,
    spec: &VersionSpec,
    opts: &FetchOptions,
    switch: Switch,
) -> Result<Installed, ReleaseError> {
    let keyring = {
        let trust = plan.trust_hashicorp_key;
        let extra = plan.extra_trusted_keys.clone();
        tokio::task::spawn_blocking(move || Keyring::for_plan(trust, &extra))
            .await
            .map_err(|e| ReleaseError::Internal(format!("key loading task: {e}")))?
            .map_err(ReleaseError::Keys)?
    };
    let mirror = Mirror::new(&plan.mirror, opts)?;
    let arch = match &opts.arch {
        Some(a) => a.clone(),
        None => machine_arch()
            .ok_or_else(|| ReleaseError::UnsupportedArch(std::env::consts::ARCH.to_string()))?
            .to_string(),
    };

    // 1. Resolve. A mirror that cannot be reached at all (after retries)
    //    must not keep a node's agents down when a verified release that
    //    satisfies the spec is already installed (a reboot during a mirror
    //    outage): that one is used, with a warning. Answers from the mirror
    //    (not found, bad signature, no such version) are never bypassed.
    let idx = match fetch_index(&mirror, product).await {
        Ok(idx) => idx,
        Err(e @ ReleaseError::Fetch { .. }) if switch == Switch::Now => {
            let (rd, s) = (plan.releases_dir.clone(), spec.clone());
            let offline = tokio::task::spawn_blocking(move || installed_offline(&rd, product, &s))
                .await
                .map_err(|e| ReleaseError::Internal(format!("offline check task: {e}")))?;
            return match offline {
                Some(found) => {
                    tracing::warn!(product = %product, version = %found.version, mirror = %plan.mirror, error = %e,
                        "mirror unreachable; using the installed, verified release");
                    Ok(found)
                }
                None => Err(e),
            };
        }
        Err(e) => return Err(e),
    };
    let release = idx
        .resolve(spec)
        .ok_or_else(|| ReleaseError::NoMatchingVersion {
            product,
            spec: spec.to_string(),
            mirror: plan.mirror.clone(),
        })?;
    let version = release.version.clone();
    let ver_key = version.to_string();
    let zip_name = release
        .entry
        .build_file(OS, &arch)
        .ok_or_else(|| ReleaseError::NoBuild {
            product,
            version: ver_key.clone(),
            arch: arch.clone(),
        })?
        .to_string();
    if zip_name.contains('/') || zip_name.contains("..") {
        return Err(ReleaseError::NoBuild {
            product,
            version: ver_key,
            arch,
        });
    }

    // 2. SHA256SUMS and its signature, verified.
    let sums_name = format!("{product}_{ver_key}_SHA256SUMS");
    let sums_rel = format!("{product}/{ver_key}/{sums_name}");
    let sums_url = mirror.url_of(&sums_rel);
    let sums_bytes = mirror
        .get_small(&sums_rel, MAX_SMALL_BYTES)
        .await?
        .ok_or_else(|| ReleaseError::NotFound {
            url: sums_url.clone(),
        })?;
    let sig_candidates = [
        format!("{sums_rel}.{}.sig", verify::HASHICORP_SHORT_KEY_ID),
        format!("{sums_rel}.sig"),
    ];
    let mut sig = None;
    for rel in &sig_candidates {
        if let Some(b) = mirror.get_small(rel, MAX_SMALL_BYTES).await? {
            sig = Some(b);
            break;
        }
    }
    let sig = sig.ok_or_else(|| ReleaseError::MissingSignature {
        sums: sums_url.clone(),
        tried: sig_candidates
            .iter()
            .map(|r| mirror.url_of(r))
            .collect::<Vec<_>>()
            .join(", "),
    })?;
    let signer = keyring
        .verify_detached(&sums_bytes, &sig)
        .map_err(|source| ReleaseError::Verify {
            url: sums_url.clone(),
            source,
        })?;
    let sums = Sha256Sums::parse(&sums_bytes).map_err(|source| ReleaseError::Verify {
        url: sums_url.clone(),
        source,
    })?;
    let expected = sums
        .get(&zip_name)
        .ok_or_else(|| ReleaseError::NotInSums {
            file: zip_name.clone(),
            sums: sums_url.clone(),
        })?
        .to_string();
    info!(product = %product, version = %version, signer = %signer, "SHA256SUMS signature verified");

    let releases_dir = plan.releases_dir.clone();
    let pdir = install::product_dir(&releases_dir, product);
    std::fs::create_dir_all(&pdir).map_err(|source| ReleaseError::Io {
        what: "create the releases dir",
        path: pdir.clone(),
        source,
    })?;

    // 3. Cache: an install whose binary matches its record, recorded from
    //    this signed zip hash.
    let cache = {
        let (rd, v, e) = (releases_dir.clone(), version.clone(), expected.clone());
        tokio::task::spawn_blocking(move || install::cached(&rd, product, &v, &e))
            .await
            .map_err(|e| ReleaseError::Internal(format!("cache check task: {e}")))?
    };
    if let Some(sha256) = cache {
        if switch == Switch::Now {
            install::activate(&releases_dir, product, &version)?;
        }
        info!(product = %product, version = %version, "already installed and verified; no download");
        return Ok(Installed {
            product,
            binary: install::version_dir(&releases_dir, product, &version).join(product.as_str()),
            version,
            sha256,
            downloaded: false,
        });
    }

    // 4. Stream the zip into a temp file beside its destination, hashing.
    let artifact = verify_download(
        &mirror,
        product,
        &version,
        &format!("{product}/{ver_key}/{zip_name}"),
        &zip_name,
        &expected,
        signer,
        &pdir,
        plan.max_download_bytes,
    )
    .await?;

    // 5. Install, switch, prune.
    let limits = install::Limits {
        max_binary_bytes: plan.max_download_bytes.saturating_mul(8),
    };
    let keep = plan.keep_versions;
    let rd = releases_dir.clone();
    let (binary, sha256) = tokio::task::spawn_blocking(move || {
        let placed = install::place(&artifact, &rd, limits)?;
        if switch == Switch::Now {
            install::activate(&rd, product, &artifact.version)?;
            let removed = install::prune(&rd, product, keep)?;
            if !removed.is_empty() {
                info!(product = %product, removed = ?removed, "pruned old versions");
            }
        }
        Ok::<_, ReleaseError>(placed)
    })
    .await
    .map_err(|e| ReleaseError::Internal(format!("install task: {e}")))??;
    info!(product = %product, version = %version, binary = %binary.display(), switched = (switch == Switch::Now), "installed");
    Ok(Installed {
        product,
        version,
        binary,
        sha256,
        downloaded: true,
    })
}

/// The release `current` points at, when it satisfies `spec` (`latest`:
/// any, since the newest cannot be known offline) and its binary still
/// matches the hash recorded when it was verified and installed.
pub fn installed_offline(
    releases_dir: &Path,
    product: Product,
    spec: &VersionSpec,
) -> Option<Installed> {
    let version = install::current_version(releases_dir, product)?;
    let fits = match spec {
        VersionSpec::Latest => true,
        VersionSpec::Exact(v) => *v == version,
        VersionSpec::Req(r) => r.matches(&version),
    };
    if !fits {
        return None;
    }
    let (_, sha256) = install::recorded_binary(releases_dir, product, &version)?;
    Some(Installed {
        product,
        binary: install::version_dir(releases_dir, product, &version).join(product.as_str()),
        version,
        sha256,
        downloaded: false,
    })
}

/// Downloads the zip and builds the [`VerifiedArtifact`] when its SHA-256
/// equals the signed one. The only constructor call of that type.
#[allow(clippy::too_many_arguments)]
async fn verify_download(
    mirror: &Mirror,
    product: Product,
    version: &semver::Version,
    rel: &str,
    zip_name: &str,
    expected: &str,
    signer: String,
    dir: &Path,
    limit: u64,
) -> Result<VerifiedArtifact, ReleaseError> {
    let tmp = fsutil::TempPath::new(fsutil::temp_name(dir, zip_name));
    let got = mirror.download(rel, tmp.path(), limit).await?;
    if got.sha256 != expected {
        return Err(ReleaseError::HashMismatch {
            url: mirror.url_of(rel),
            expected: expected.to_string(),
            actual: got.sha256,
        });
    }
    Ok(VerifiedArtifact::new(
        product,
        version.clone(),
        tmp,
        zip_name.to_string(),
        got.sha256,
        signer,
    ))
}

/// Fetches every agent of the plan, concurrently, with default options.
pub async fn fetch_plan(plan: &Plan) -> Result<Vec<Installed>, ReleaseError> {
    fetch_plan_with(plan, &FetchOptions::default()).await
}

/// Fetches every agent of the plan concurrently; the first error wins.
pub async fn fetch_plan_with(
    plan: &Plan,
    opts: &FetchOptions,
) -> Result<Vec<Installed>, ReleaseError> {
    let futs = plan
        .agents
        .iter()
        .map(|a| ensure_installed_with(&plan.release, a.product, &a.version, opts));
    futures_util::future::try_join_all(futs).await
}

/// Switches `<releases_dir>/<product>/current` back to the previous version.
pub fn rollback(releases_dir: &Path, product: Product) -> Result<semver::Version, ReleaseError> {
    install::rollback(releases_dir, product)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn installed(downloaded: bool) -> Installed {
        Installed {
            product: Product::Consul,
            version: semver::Version::new(1, 21, 4),
            binary: "/s/releases/consul/1.21.4/consul".into(),
            sha256: "0".repeat(64),
            downloaded,
        }
    }

    #[test]
    fn install_outcomes_are_counted_by_stage() {
        let ok = |downloaded| ReleaseOutcome::from(&Ok(installed(downloaded)));
        assert_eq!(ok(true), ReleaseOutcome::Installed { downloaded: true });
        assert_eq!(ok(false), ReleaseOutcome::Installed { downloaded: false });
        let err = |e: ReleaseError| ReleaseOutcome::from(&Err::<Installed, _>(e));
        let no_version = ReleaseError::NoMatchingVersion {
            product: Product::Nomad,
            spec: "~9.9".into(),
            mirror: "file:///m".into(),
        };
        assert_eq!(err(no_version), ReleaseOutcome::FetchFailed);
        let mismatch = ReleaseError::HashMismatch {
            url: "file:///m/nomad.zip".into(),
            expected: "a".repeat(64),
            actual: "b".repeat(64),
        };
        assert_eq!(err(mismatch), ReleaseOutcome::VerifyFailed);
        let bug = ReleaseError::Internal("x".into());
        assert_eq!(err(bug), ReleaseOutcome::LocalFailure);
    }
}

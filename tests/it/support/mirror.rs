//! Test support: a signed local release mirror (built by `hashi-testrig` with
//! a test key made at test time) served over real HTTP on 127.0.0.1:0, and
//! release plans pointing at it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hashi_supervisor::plan::ReleasePlan;
use hashi_supervisor::release::{FetchOptions, RetryPolicy};
use hashi_testrig::mirror::{BuiltMirror, MirrorBuilder, MirrorServer, serve};

/// A built mirror, its HTTP server, and a releases dir to install into.
pub struct TestMirror {
    /// Keeps the temp dir alive.
    pub tmp: tempfile::TempDir,
    /// The built mirror.
    pub built: BuiltMirror,
    /// The HTTP server.
    pub server: MirrorServer,
}

impl TestMirror {
    /// Builds `builder` under a fresh temp dir and serves it.
    pub async fn start(builder: MirrorBuilder) -> TestMirror {
        let tmp = tempfile::tempdir().expect("create a temp dir");
        let built = builder
            .build(&tmp.path().join("mirror"))
            .expect("build the test mirror");
        let server = serve(built.root.clone()).await.expect("serve the mirror");
        TestMirror { tmp, built, server }
    }

    /// The releases dir used by [`TestMirror::plan`].
    pub fn releases_dir(&self) -> PathBuf {
        self.tmp.path().join("releases")
    }

    /// A release plan on the HTTP mirror trusting only the test key.
    pub fn plan(&self) -> ReleasePlan {
        self.plan_for(self.server.url(), self.releases_dir())
    }

    /// A release plan on `mirror` installing into `releases_dir`, trusting
    /// only the test key.
    pub fn plan_for(&self, mirror: String, releases_dir: PathBuf) -> ReleasePlan {
        ReleasePlan {
            mirror,
            trust_hashicorp_key: false,
            extra_trusted_keys: vec![self.built.public_key.clone()],
            releases_dir,
            keep_versions: 2,
            max_download_bytes: 64 * 1024 * 1024,
        }
    }

    /// Path of a file of the mirror, as the server sees it.
    pub fn url_path(product: &str, version: &str, file: &str) -> String {
        format!("/{product}/{version}/{file}")
    }

    /// Path of the linux/amd64 zip of a release, as the server sees it.
    pub fn zip_path(product: &str, version: &str) -> String {
        Self::url_path(
            product,
            version,
            &format!("{product}_{version}_linux_amd64.zip"),
        )
    }

    /// On-disk path of a mirror file.
    pub fn file(&self, product: &str, version: &str, file: &str) -> PathBuf {
        self.built.root.join(product).join(version).join(file)
    }
}

/// Fetch options for tests: amd64 builds, a small retry budget, short
/// backoff and timeouts, so failure paths end quickly.
pub fn quick_opts() -> FetchOptions {
    FetchOptions {
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(5),
        retry: RetryPolicy {
            retries: 3,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
        },
        arch: Some("amd64".into()),
    }
}

/// Every temp entry (`.tmp-*`) left anywhere under `dir`.
pub fn temp_leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with(".tmp-") {
                out.push(p.clone());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            }
        }
    }
    out
}

//! A fake [`Preparer`] for the daemon tests, built step by step: the plans
//! its reloads load, the config changes its render reports, the releases
//! its installs return; it records the installs and rollbacks asked of it,
//! with the release settings they were given.
//!
//! ```ignore
//! let preparer = FakePreparer::new()
//!     .reloads_to(new_plan)
//!     .with_change(Product::Consul, ChangeKind::Reload)
//!     .with_release(installed(Product::Consul, "1.1.0", v2_binary))
//!     .build();
//! ```

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use hashi_supervisor::plan::{AgentPlan, Plan, ReleasePlan};
use hashi_supervisor::release::Installed;
use hashi_supervisor::render::ChangeKind;
use hashi_supervisor::supervise::Preparer;
use hashi_supervisor::vocab::Product;

/// The role file hash every successful fake load reports.
pub const RELOADED_HASH: &str = "hash2";

/// A fake step's failure.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FakeError(pub String);

/// An installed release of `product` at `version` whose binary is `binary`.
pub fn installed(product: Product, version: &str, binary: PathBuf) -> Installed {
    Installed {
        product,
        version: version
            .parse()
            .unwrap_or_else(|e| panic!("bad test version {version}: {e}")),
        binary,
        sha256: String::new(),
        downloaded: false,
    }
}

/// See the module docs. `Default`: loads fail (nothing queued), renders
/// report no change, installs fail.
#[derive(Default)]
pub struct FakePreparer {
    loads: Mutex<VecDeque<Result<Plan, String>>>,
    changes: Vec<(Product, ChangeKind)>,
    releases: HashMap<String, Installed>,
    installs: Mutex<Vec<(String, PathBuf, String)>>,
    rollbacks: Mutex<Vec<(PathBuf, String)>>,
}

impl FakePreparer {
    /// A preparer with nothing queued.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next load returns `plan` (and [`RELOADED_HASH`]).
    pub fn reloads_to(self, plan: Plan) -> Self {
        self.queue(Ok(plan))
    }

    /// The next load fails with `message`.
    pub fn reload_fails(self, message: &str) -> Self {
        self.queue(Err(message.to_string()))
    }

    fn queue(self, load: Result<Plan, String>) -> Self {
        self.loads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push_back(load);
        self
    }

    /// Every render reports `kind` for `product`.
    pub fn with_change(mut self, product: Product, kind: ChangeKind) -> Self {
        self.changes.push((product, kind));
        self
    }

    /// Installing `release`'s version (of any product) returns it.
    pub fn with_release(mut self, release: Installed) -> Self {
        self.releases.insert(release.version.to_string(), release);
        self
    }

    /// Shares the preparer with the daemon.
    pub fn build(self) -> Arc<Self> {
        Arc::new(self)
    }

    /// The versions rolled back to, in order.
    pub fn rollbacks(&self) -> Vec<String> {
        self.rollback_calls().into_iter().map(|(_, v)| v).collect()
    }

    /// Each rollback asked: the releases dir it was given and the version.
    pub fn rollback_calls(&self) -> Vec<(PathBuf, String)> {
        self.rollbacks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Each install asked: the mirror and releases dir it was given, and
    /// the version spec.
    pub fn install_calls(&self) -> Vec<(String, PathBuf, String)> {
        self.installs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Preparer for FakePreparer {
    type Error = FakeError;

    async fn load(&self) -> Result<(Plan, String), FakeError> {
        let next = self
            .loads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop_front();
        match next {
            Some(Ok(plan)) => Ok((plan, RELOADED_HASH.to_string())),
            Some(Err(e)) => Err(FakeError(e)),
            None => Err(FakeError("no load queued".into())),
        }
    }

    async fn install(
        &self,
        release: &ReleasePlan,
        agent: &AgentPlan,
    ) -> Result<Installed, FakeError> {
        self.installs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((
                release.mirror.clone(),
                release.releases_dir.clone(),
                agent.version.to_string(),
            ));
        self.releases
            .get(&agent.version.to_string())
            .cloned()
            .ok_or_else(|| FakeError("no such version".into()))
    }

    async fn rollback(&self, release: &ReleasePlan, previous: &Installed) -> Result<(), FakeError> {
        self.rollbacks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((release.releases_dir.clone(), previous.version.to_string()));
        Ok(())
    }

    async fn render(&self, _plan: &Plan) -> Result<Vec<(Product, ChangeKind)>, FakeError> {
        Ok(self.changes.clone())
    }
}

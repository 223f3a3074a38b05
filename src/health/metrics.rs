//! Counters other components bump (release fetch and verify outcomes) and
//! the endpoint renders in `/metrics`. Lock-free: atomics only.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::plan::Product;
use crate::release::{Installed, ReleaseError};

/// Which stage of a release install failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Fetch,
    Verify,
}

/// The stage a release error belongs to: reaching the mirror and getting
/// what is needed from it, or checking what was got.
fn release_failure(e: &ReleaseError) -> Option<Stage> {
    match e {
        ReleaseError::InvalidMirror { .. }
        | ReleaseError::Fetch { .. }
        | ReleaseError::NotFound { .. }
        | ReleaseError::TooLarge { .. }
        | ReleaseError::Index { .. }
        | ReleaseError::NoMatchingVersion { .. }
        | ReleaseError::NoBuild { .. } => Some(Stage::Fetch),
        ReleaseError::MissingSignature { .. }
        | ReleaseError::Verify { .. }
        | ReleaseError::NotInSums { .. }
        | ReleaseError::HashMismatch { .. }
        | ReleaseError::BadArchive { .. }
        | ReleaseError::VersionMismatch { .. }
        | ReleaseError::RunBinary { .. } => Some(Stage::Verify),
        // The local trust set, not what was fetched.
        ReleaseError::Keys(_)
        | ReleaseError::UnsupportedArch(_)
        | ReleaseError::NoPrevious { .. }
        | ReleaseError::Io { .. }
        | ReleaseError::Internal(_) => None,
    }
}

/// Outcome counters, shared as `Arc<Metrics>`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// `[product][ok=0 | error=1]`.
    fetch: [[AtomicU64; 2]; 2],
    /// `[product][ok=0 | error=1]`.
    verify: [[AtomicU64; 2]; 2],
}

fn idx(product: Product) -> usize {
    match product {
        Product::Consul => 0,
        Product::Nomad => 1,
    }
}

fn oidx(ok: bool) -> usize {
    if ok { 0 } else { 1 }
}

impl Metrics {
    /// Counts a release download of `product` that succeeded or failed.
    pub fn record_fetch(&self, product: Product, ok: bool) {
        self.fetch[idx(product)][oidx(ok)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a release verification of `product` that succeeded or failed.
    pub fn record_verify(&self, product: Product, ok: bool) {
        self.verify[idx(product)][oidx(ok)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts the outcome of one release install (`release::ensure_installed`):
    /// a success counts a verification, and a download when one was made; a
    /// failure counts as a fetch or a verification failure by its kind
    /// (failures of neither, e.g. local I/O, are not counted).
    pub fn record_release(&self, product: Product, outcome: &Result<Installed, ReleaseError>) {
        match outcome {
            Ok(done) => {
                if done.downloaded {
                    self.record_fetch(product, true);
                }
                self.record_verify(product, true);
            }
            Err(e) => match release_failure(e) {
                Some(Stage::Fetch) => self.record_fetch(product, false),
                Some(Stage::Verify) => self.record_verify(product, false),
                None => {}
            },
        }
    }

    /// Downloads of `product` with that outcome so far.
    pub fn fetch_count(&self, product: Product, ok: bool) -> u64 {
        self.fetch[idx(product)][oidx(ok)].load(Ordering::Relaxed)
    }

    /// Verifications of `product` with that outcome so far.
    pub fn verify_count(&self, product: Product, ok: bool) -> u64 {
        self.verify[idx(product)][oidx(ok)].load(Ordering::Relaxed)
    }
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
    fn release_outcomes_count_by_stage() {
        let m = Metrics::default();
        m.record_release(Product::Consul, &Ok(installed(true)));
        m.record_release(Product::Consul, &Ok(installed(false)));
        assert_eq!(m.fetch_count(Product::Consul, true), 1);
        assert_eq!(m.verify_count(Product::Consul, true), 2);
        m.record_release(
            Product::Nomad,
            &Err(ReleaseError::NoMatchingVersion {
                product: Product::Nomad,
                spec: "~9.9".into(),
                mirror: "file:///m".into(),
            }),
        );
        assert_eq!(m.fetch_count(Product::Nomad, false), 1);
        assert_eq!(m.verify_count(Product::Nomad, false), 0);
        m.record_release(
            Product::Nomad,
            &Err(ReleaseError::HashMismatch {
                url: "file:///m/nomad.zip".into(),
                expected: "a".repeat(64),
                actual: "b".repeat(64),
            }),
        );
        assert_eq!(m.verify_count(Product::Nomad, false), 1);
        m.record_release(Product::Nomad, &Err(ReleaseError::Internal("x".into())));
        assert_eq!(m.fetch_count(Product::Nomad, false), 1);
        assert_eq!(m.verify_count(Product::Nomad, false), 1);
    }
}

//! Counters other components bump (release fetch and verify outcomes, the
//! daemon's re-plans on discovered peers) and
//! the endpoint renders in `/metrics`. Lock-free: atomics only.
//!
//! Counts what it is given ([`ReleaseOutcome`], stage-0 vocabulary) and
//! must not need `release`'s types: health only reads what others publish,
//! and which release error is a fetch or a verification failure is
//! release's call (`From<&ReleaseError> for ReleaseOutcome`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::supervise::daemon::ReplanCounts;

use crate::vocab::{Product, ReleaseOutcome};

/// Outcome counters, shared as `Arc<Metrics>`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// `[product][ok=0 | error=1]`.
    fetch: [[AtomicU64; 2]; 2],
    /// `[product][ok=0 | error=1]`.
    verify: [[AtomicU64; 2]; 2],
    /// Re-plans on discovered peers (the daemon counts them).
    pub replans: Arc<ReplanCounts>,
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

    /// Counts the outcome of one release install (`release::ensure_installed`;
    /// `&Result<Installed, ReleaseError>` converts into it): a success counts
    /// a verification, and a download when one was made; a failure counts as
    /// a fetch or a verification failure by its kind (local failures, e.g.
    /// I/O, are not counted).
    pub fn record_release(&self, product: Product, outcome: impl Into<ReleaseOutcome>) {
        match outcome.into() {
            ReleaseOutcome::Installed { downloaded } => {
                if downloaded {
                    self.record_fetch(product, true);
                }
                self.record_verify(product, true);
            }
            ReleaseOutcome::FetchFailed => self.record_fetch(product, false),
            ReleaseOutcome::VerifyFailed => self.record_verify(product, false),
            ReleaseOutcome::LocalFailure => {}
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

    #[test]
    fn release_outcomes_count_by_stage() {
        let m = Metrics::default();
        m.record_release(
            Product::Consul,
            ReleaseOutcome::Installed { downloaded: true },
        );
        m.record_release(
            Product::Consul,
            ReleaseOutcome::Installed { downloaded: false },
        );
        assert_eq!(m.fetch_count(Product::Consul, true), 1);
        assert_eq!(m.verify_count(Product::Consul, true), 2);
        m.record_release(Product::Nomad, ReleaseOutcome::FetchFailed);
        assert_eq!(m.fetch_count(Product::Nomad, false), 1);
        assert_eq!(m.verify_count(Product::Nomad, false), 0);
        m.record_release(Product::Nomad, ReleaseOutcome::VerifyFailed);
        assert_eq!(m.verify_count(Product::Nomad, false), 1);
        m.record_release(Product::Nomad, ReleaseOutcome::LocalFailure);
        assert_eq!(m.fetch_count(Product::Nomad, false), 1);
        assert_eq!(m.verify_count(Product::Nomad, false), 1);
    }
}

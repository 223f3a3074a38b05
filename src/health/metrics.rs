//! Counters other components bump (release fetch and verify outcomes) and
//! the endpoint renders in `/metrics`. Lock-free: atomics only.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::plan::Product;

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

    /// Downloads of `product` with that outcome so far.
    pub fn fetch_count(&self, product: Product, ok: bool) -> u64 {
        self.fetch[idx(product)][oidx(ok)].load(Ordering::Relaxed)
    }

    /// Verifications of `product` with that outcome so far.
    pub fn verify_count(&self, product: Product, ok: bool) -> u64 {
        self.verify[idx(product)][oidx(ok)].load(Ordering::Relaxed)
    }
}

//! `[upgrade]`: the share of a datacenter's clients upgraded at once, the
//! deadline of a new release, the lock's session TTL; each in its range.

use super::{Checked, Findings, sizes};
use crate::role::UpgradeRole;
use crate::role::limits;
use crate::role::raw::RawUpgrade;

/// The `[upgrade]` settings, defaults where not written.
pub(super) fn check(ru: &RawUpgrade) -> Checked<UpgradeRole> {
    let mut found = Findings::default();
    let defaults = UpgradeRole::default();
    let client_share = match &ru.client_share {
        None => defaults.client_share,
        Some(s) => {
            let v = *s.get_ref();
            // NaN fails both comparisons.
            if v > 0.0 && v <= 1.0 {
                v
            } else {
                found.span(
                    s,
                    format!("client_share must be more than 0 and at most 1 (got {v})"),
                );
                defaults.client_share
            }
        }
    };
    let health_deadline = sizes::secs(
        &mut found,
        &ru.health_deadline_secs,
        "health_deadline_secs",
        &limits::UPGRADE_HEALTH_DEADLINE_SECS,
    )
    .unwrap_or(defaults.health_deadline);
    let lock_ttl = sizes::secs(
        &mut found,
        &ru.lock_ttl_secs,
        "lock_ttl_secs",
        &limits::UPGRADE_LOCK_TTL_SECS,
    )
    .unwrap_or(defaults.lock_ttl);
    (
        UpgradeRole {
            client_share,
            health_deadline,
            lock_ttl,
        },
        found,
    )
}

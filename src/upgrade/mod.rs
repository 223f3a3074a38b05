//! Rolling upgrades: the gate every version change of a running agent goes
//! through, so that a fleet told to upgrade at once never takes a
//! cluster's quorum down.
//!
//! * [`decide`]: pure verdicts: may this server restart now (autopilot
//!   failure tolerance, the leader last, a single-server cluster at once),
//!   may this client (its servers upgraded), how many client slots.
//! * [`lock`]: Consul's documented lock pattern (a session with a TTL,
//!   renewed, and a KV `acquire`), one holder per key.
//! * [`gate`]: [`Gate`], what the daemon asks before it restarts an agent
//!   on a new release ([`Gate::acquire`]), after it ([`Gate::settle`]) and
//!   when the new release failed ([`Gate::pause`]).
//!
//! KV layout (all under [`KV_PREFIX`]):
//! * `consul/<dc>/lock` (in Consul DC `<dc>`): one Consul server of `<dc>`
//!   at a time.
//! * `nomad/<region>/lock` (in the region's lock DC: the lexicographically
//!   first datacenter of the Consul WAN pool): one Nomad server of the
//!   region at a time.
//! * `clients/<dc>/slot-<i>` (in `<dc>`), `i < max(1, floor(client_share *
//!   clients of <dc>))`: client agents of `<dc>`, a batch at a time.
//! * `paused/<product>/<cluster>` (beside the cluster's lock): a rollback's
//!   [`PauseRecord`]; nobody continues that rollout until an operator
//!   deletes the key (`consul kv delete [-datacenter=<dc>]
//!   hashi-supervisor/upgrade/paused/<product>/<cluster>`).
//!
//! This module restarts nothing itself and never touches releases; the
//! daemon (`supervise::daemon`) does, between `acquire` and `settle`.

pub mod decide;
pub mod gate;
pub mod lock;

use std::time::Duration;

pub use decide::Verdict;
pub use gate::{Gate, Turn};

use crate::vocab::Product;

/// Prefix of every key the rollout keeps in Consul's KV store.
pub const KV_PREFIX: &str = "hashi-supervisor/upgrade";
/// How often a waiting node looks at the gate again.
pub const DEFAULT_POLL: Duration = Duration::from_secs(2);

/// The `[upgrade]` settings of the role file (defaults and ranges in
/// [`crate::role::limits`]).
pub use crate::role::UpgradeRole as UpgradeSettings;

/// `consul/<dc>/lock` or `nomad/<region>/lock`.
pub fn server_lock_key(product: Product, cluster: &str) -> String {
    format!("{KV_PREFIX}/{product}/{cluster}/lock")
}

/// `clients/<dc>/slot-<i>`.
pub fn client_slot_key(datacenter: &str, slot: usize) -> String {
    format!("{KV_PREFIX}/clients/{datacenter}/slot-{slot}")
}

/// `paused/<product>/<cluster>`.
pub fn paused_key(product: Product, cluster: &str) -> String {
    format!("{KV_PREFIX}/paused/{product}/{cluster}")
}

/// Why a rollout is paused: written by the node whose new release failed,
/// read by every node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PauseRecord {
    /// The node that rolled back.
    pub node: String,
    /// The version it went back to.
    pub from: String,
    /// The version that failed.
    pub to: String,
    /// What failed.
    pub why: String,
    /// When (Unix seconds).
    pub at: u64,
}

impl PauseRecord {
    /// One line for statuses and logs.
    pub fn describe(&self, product: Product, cluster: &str) -> String {
        format!(
            "{product} {} failed on {} ({}), rolled back to {}; delete {} to resume",
            self.to,
            self.node,
            self.why,
            self.from,
            paused_key(product, cluster)
        )
    }
}

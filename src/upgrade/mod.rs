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
//! * `nomad/<region>/lock` (in the region's lock DC: the smallest name of
//!   `GET /v1/catalog/datacenters`, which client agents answer too; looked
//!   up at each look at the gate and kept for the life of one turn): one
//!   Nomad server of the region at a time.
//! * `clients/<product>/<dc>/slot-<i>` (in `<dc>` for Consul clients, in
//!   the region's lock DC for Nomad clients), `i < max(1,
//!   floor(client_share * <product> clients of <dc>))`: client agents of
//!   `<dc>`, a batch at a time (Consul and Nomad clients apart).
//! * `paused/<product>/<cluster>` (beside the cluster's lock): a server's
//!   rollback's [`PauseRecord`]; no server or client of that cluster
//!   continues the rollout until an operator deletes the key (`consul kv
//!   delete [-datacenter=<dc>]
//!   hashi-supervisor/upgrade/paused/<product>/<cluster>`).
//! * `clients/paused/<product>/<cluster>` (beside it): a client's
//!   rollback's record; the clients of the cluster wait on it, its servers
//!   do not. Apart because a client's Consul token may write only under
//!   `clients/` (SECURITY.md): a client can pause its peers, never the
//!   servers' rollout, and cannot clear a server's record.
//!
//! A waiting node keeps ONE Consul session for its whole wait (created at
//! its first try for a key, renewed every third of `lock_ttl`, reused at
//! every look, moved into the turn it wins, destroyed when the turn ends
//! or the wait is abandoned). A waiting client lists its slot prefix once
//! per look, tries only slots that look free, counts the clients only when
//! slot 0 is taken, and looks again after `poll` doubled while it waits
//! for the same kind of thing (new holders are no change) up to
//! [`BACKOFF_FACTOR`] × `poll`, ±20 % jitter: the load on the servers grows
//! with the number of waiting clients, not its square. The session is
//! bound to a Consul server of the datacenter, never to a client's own
//! node (Consul ends a node's sessions when it leaves; a client leaves at
//! every stop).
//!
//! The lock's TTL (see [`lock`]): renewals go through the node's own
//! Consul; if they stop reaching the servers for the TTL (that Consul
//! restarting for its upgrade), the session lapses and the lock is lost.
//! [`Turn::is_lost`] says so; [`Gate::settle`] warns, takes the key back
//! when it is still free and never releases another node's.
//!
//! This module restarts nothing itself and never touches releases; the
//! daemon (`supervise::daemon`) does, between `acquire` and `settle`.

pub mod decide;
pub mod gate;
pub mod lock;

use std::time::Duration;

pub use decide::Verdict;
pub use gate::{Gate, GateNode, Turn};

use crate::vocab::Product;

/// Prefix of every key the rollout keeps in Consul's KV store.
pub const KV_PREFIX: &str = "hashi-supervisor/upgrade";
/// How often a waiting node looks at the gate again (at first: a client
/// backs off from it while nothing changes).
pub const DEFAULT_POLL: Duration = Duration::from_secs(2);
/// A waiting client's longest pause between looks, in multiples of the
/// poll (2 s: 30 s).
pub const BACKOFF_FACTOR: u32 = 15;

/// The `[upgrade]` settings of the role file (defaults and ranges in
/// [`crate::role::limits`]).
pub use crate::role::UpgradeRole as UpgradeSettings;

/// `consul/<dc>/lock` or `nomad/<region>/lock`.
pub fn server_lock_key(product: Product, cluster: &str) -> String {
    format!("{KV_PREFIX}/{product}/{cluster}/lock")
}

/// `clients/<product>/<dc>/slot-<i>`.
pub fn client_slot_key(product: Product, datacenter: &str, slot: usize) -> String {
    format!("{}slot-{slot}", client_slot_prefix(product, datacenter))
}

/// `clients/<product>/<dc>/`: the prefix of a datacenter's client slots.
pub fn client_slot_prefix(product: Product, datacenter: &str) -> String {
    format!("{KV_PREFIX}/clients/{product}/{datacenter}/")
}

/// The slot number of `key` under `prefix` (`slot-<i>`), if it is one.
pub fn client_slot_index(prefix: &str, key: &str) -> Option<usize> {
    key.strip_prefix(prefix)?
        .strip_prefix("slot-")?
        .parse()
        .ok()
}

/// `paused/<product>/<cluster>`: a server's rollback.
pub fn paused_key(product: Product, cluster: &str) -> String {
    format!("{KV_PREFIX}/paused/{product}/{cluster}")
}

/// `clients/paused/<product>/<cluster>`: a client's rollback (apart from
/// the slots `clients/<product>/...`: the product comes first there).
pub fn client_paused_key(product: Product, cluster: &str) -> String {
    format!("{KV_PREFIX}/clients/paused/{product}/{cluster}")
}

/// The pause records a node of `cluster` waits on: a server on the
/// servers' record, a client on both (the servers' first).
pub fn pause_keys(product: Product, cluster: &str, server: bool) -> Vec<String> {
    let mut keys = vec![paused_key(product, cluster)];
    if !server {
        keys.push(client_paused_key(product, cluster));
    }
    keys
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
    /// One line for statuses and logs; `key` is where the record is. What
    /// the node runs now is in `why` (rolled back, or the new release kept
    /// when the cluster did not recover around it).
    pub fn describe(&self, product: Product, key: &str) -> String {
        format!(
            "{product} {} failed on {}: {}; delete {key} to resume",
            self.to, self.node, self.why,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_slot_keys_carry_the_product() {
        assert_eq!(
            client_slot_key(Product::Nomad, "ams2", 3),
            "hashi-supervisor/upgrade/clients/nomad/ams2/slot-3"
        );
        assert_eq!(
            client_slot_key(Product::Consul, "ams2", 0),
            "hashi-supervisor/upgrade/clients/consul/ams2/slot-0"
        );
        let p = client_slot_prefix(Product::Nomad, "ams2");
        assert_eq!(
            client_slot_index(&p, &client_slot_key(Product::Nomad, "ams2", 7)),
            Some(7)
        );
        assert_eq!(
            client_slot_index(&p, &client_slot_key(Product::Consul, "ams2", 7)),
            None
        );
        assert_eq!(client_slot_index(&p, &format!("{p}slot-x")), None);
        assert_eq!(client_slot_index(&p, &format!("{p}other")), None);
    }

    #[test]
    fn a_clients_pause_record_is_under_the_clients_prefix_and_never_a_slot() {
        let k = client_paused_key(Product::Nomad, "eu");
        assert_eq!(k, "hashi-supervisor/upgrade/clients/paused/nomad/eu");
        for product in [Product::Consul, Product::Nomad] {
            let p = client_slot_prefix(product, "paused");
            assert_eq!(client_slot_index(&p, &k), None);
        }
        assert_eq!(
            pause_keys(Product::Consul, "ams2", true),
            ["hashi-supervisor/upgrade/paused/consul/ams2"]
        );
        assert_eq!(
            pause_keys(Product::Consul, "ams2", false),
            [
                "hashi-supervisor/upgrade/paused/consul/ams2",
                "hashi-supervisor/upgrade/clients/paused/consul/ams2"
            ]
        );
    }
}

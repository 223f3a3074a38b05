//! [`Gate`]: what a node asks before it restarts an agent on a new release,
//! and tells after. It reads autopilot health from the node's own agents
//! (a client agent forwards the question to its servers), keeps the locks
//! and the pause record in Consul's KV store, and decides with
//! [`super::decide`].

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::decide::{self, Verdict};
use super::lock::{self, Acquired, HeldLock};
use super::{PauseRecord, UpgradeSettings, client_slot_key, paused_key, server_lock_key};
use crate::agent::consul::AutopilotHealth;
use crate::agent::{AgentClient, AgentError, ConsulClient, NomadClient};
use crate::plan::Plan;
use crate::vocab::Product;

/// Timeout of one request the gate makes.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest pause record value read (a few hundred bytes are written).
const MAX_RECORD_CHARS: usize = 400;

/// The gate of one node; see the module docs.
#[derive(Debug)]
pub struct Gate {
    /// The Consul agent holding locks and records (the node's own, or the
    /// one its Nomad uses); `None`: no Consul reachable by configuration.
    kv: Option<ConsulClient>,
    consul: Option<ConsulClient>,
    nomad: Option<NomadClient>,
    node: String,
    region: String,
    datacenter: String,
    consul_server: bool,
    nomad_server: bool,
    settings: UpgradeSettings,
    poll: Duration,
    /// The region's lock datacenter, once known.
    lock_dc: Mutex<Option<String>>,
}

/// A node's turn to restart an agent: the lock (or client slot) it holds
/// and what the cluster looked like when it was granted.
#[derive(Debug)]
pub struct Turn {
    product: Product,
    server: bool,
    cluster: String,
    lock_dc: Option<String>,
    lock: Option<HeldLock>,
    /// A single-server cluster (upgraded at once).
    pub single: bool,
    /// This server led its cluster when granted.
    pub leader: bool,
    tolerance: u32,
}

impl Turn {
    /// `consul/ams2`, `nomad/eu`.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }
}

impl Gate {
    /// The gate of `plan`'s node, through `agents` (the node's one client).
    pub fn for_plan(plan: &Plan, agents: &AgentClient, settings: UpgradeSettings) -> Self {
        let endpoint = |product: Product| {
            let a = plan.agent(product)?;
            agents
                .endpoint(a.http_addr, a.api_tls.as_ref(), REQUEST_TIMEOUT)
                .ok()
        };
        let consul = endpoint(Product::Consul).map(ConsulClient::new);
        let nomad = endpoint(Product::Nomad).map(NomadClient::new);
        let kv = consul.clone().or_else(|| {
            let addr = plan.render.nomad.as_ref()?.consul_address.clone()?;
            Some(remote_consul(agents, &addr))
        });
        let is = |r: &str| plan.roles.iter().any(|x| x == r);
        Self {
            kv,
            consul,
            nomad,
            node: plan.node_name.clone(),
            region: plan.region.clone(),
            datacenter: plan.datacenter.clone(),
            consul_server: is("consul-server"),
            nomad_server: is("nomad-server"),
            settings,
            poll: super::DEFAULT_POLL,
            lock_dc: Mutex::new(None),
        }
    }

    /// The same gate, looking again every `poll` while it waits.
    pub fn with_poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// The settings in force.
    pub fn settings(&self) -> &UpgradeSettings {
        &self.settings
    }

    fn is_server(&self, product: Product) -> bool {
        match product {
            Product::Consul => self.consul_server,
            Product::Nomad => self.nomad_server,
        }
    }

    /// `(cluster label, KV datacenter)` of `product` on this node.
    async fn cluster(&self, product: Product) -> (String, Option<String>) {
        match product {
            Product::Consul => (format!("consul/{}", self.datacenter), None),
            Product::Nomad => {
                let dc = self.nomad_lock_dc().await;
                let at = (dc != self.datacenter).then_some(dc);
                (format!("nomad/{}", self.region), at)
            }
        }
    }

    /// The region's lock datacenter: the first by name of the Consul WAN
    /// pool's datacenters (every node of the region sees the same pool),
    /// else this node's own.
    async fn nomad_lock_dc(&self) -> String {
        if let Some(dc) = self
            .lock_dc
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
        {
            return dc;
        }
        let Some(kv) = &self.kv else {
            return self.datacenter.clone();
        };
        match kv.members(true).await {
            Ok(members) => {
                let dc = decide::lock_datacenter(
                    members
                        .iter()
                        .map(crate::agent::consul::ConsulMember::datacenter),
                    &self.datacenter,
                );
                *self
                    .lock_dc
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(dc.clone());
                dc
            }
            Err(e) => {
                tracing::debug!(error = %e.one_line(), "no WAN members for the lock datacenter yet");
                self.datacenter.clone()
            }
        }
    }

    async fn health(&self, product: Product) -> Result<AutopilotHealth, String> {
        let r = match product {
            Product::Consul => match &self.consul {
                Some(c) => c.autopilot_health().await,
                None => return Err("a local consul agent to ask autopilot".into()),
            },
            Product::Nomad => match &self.nomad {
                Some(n) => n.autopilot_health().await,
                None => return Err("a local nomad agent to ask autopilot".into()),
            },
        };
        r.map_err(|e| format!("the autopilot health of {product}: {}", e.one_line()))
    }

    /// Waits until this node may restart `product` onto `wanted`, saying
    /// what it waits for through `report` each time that changes. Never
    /// gives up: the caller ends the wait (shutdown, a reload).
    pub async fn acquire(
        &self,
        product: Product,
        wanted: &semver::Version,
        report: &(dyn Fn(Option<String>) + Send + Sync),
    ) -> Turn {
        let mut last: Option<String> = None;
        loop {
            match self.try_turn(product, wanted).await {
                Ok(turn) => {
                    report(None);
                    return turn;
                }
                Err(why) => {
                    if last.as_deref() != Some(why.as_str()) {
                        tracing::info!(agent = %product, to = %wanted, waiting_for = %why, "upgrade waits");
                        report(Some(why.clone()));
                        last = Some(why);
                    }
                    tokio::time::sleep(self.poll).await;
                }
            }
        }
    }

    /// One look at the gate: the turn, or what it waits for.
    async fn try_turn(&self, product: Product, wanted: &semver::Version) -> Result<Turn, String> {
        let kv = self
            .kv
            .as_ref()
            .ok_or("a Consul agent to hold the upgrade lock (none configured)")?;
        let (cluster, lock_dc) = self.cluster(product).await;
        let at = lock_dc.as_deref();
        if let Some(p) = read_pause(kv, at, product, &cluster).await? {
            return Err(format!("rollout paused: {p}"));
        }
        let server = self.is_server(product);
        let verdict = |h: &AutopilotHealth| {
            if server {
                let names = [self.node.clone(), format!("{}.{}", self.node, self.region)];
                decide::server_verdict(&names, wanted, h, &cluster)
            } else {
                decide::client_verdict(wanted, h, &cluster)
            }
        };
        if let Verdict::Wait(w) = verdict(&self.health(product).await?) {
            return Err(w);
        }
        let lock = if server {
            let key = server_lock_key(product, cluster_name(&cluster));
            match lock::try_acquire(kv, at, &key, &self.node, self.settings.lock_ttl).await {
                Ok(Acquired::Held(l)) => l,
                Ok(Acquired::Busy(who)) => {
                    return Err(format!("the upgrade lock of {cluster} held by {who}"));
                }
                Err(e) => return Err(format!("the upgrade lock of {cluster}: {}", e.one_line())),
            }
        } else {
            self.client_slot(kv, product).await?
        };
        // The pause again under the lock: the holder before us may have
        // rolled back, written the pause and released just after our look.
        match read_pause(kv, at, product, &cluster).await {
            Ok(None) => {}
            Ok(Some(p)) => {
                lock.release().await;
                return Err(format!("rollout paused: {p}"));
            }
            Err(e) => {
                lock.release().await;
                return Err(e);
            }
        }
        // Again under the lock: another node may have finished (or
        // started) meanwhile.
        let h = match self.health(product).await {
            Ok(h) => h,
            Err(e) => {
                lock.release().await;
                return Err(e);
            }
        };
        match verdict(&h) {
            Verdict::Wait(w) => {
                lock.release().await;
                Err(w)
            }
            Verdict::Go {
                single,
                leader,
                tolerance,
            } => {
                if single {
                    tracing::warn!(agent = %product, cluster = %cluster,
                        "the cluster has a single server: upgrading it at once, the cluster is unavailable while it restarts");
                }
                Ok(Turn {
                    product,
                    server,
                    cluster,
                    lock_dc,
                    lock: Some(lock),
                    single,
                    leader,
                    tolerance,
                })
            }
        }
    }

    /// One free client slot of this node's datacenter, or why none is.
    async fn client_slot(&self, kv: &ConsulClient, product: Product) -> Result<HeldLock, String> {
        let clients = self.count_clients(product).await;
        let slots = decide::client_slots(self.settings.client_share, clients);
        let mut holders = Vec::new();
        for i in 0..slots {
            let key = client_slot_key(&self.datacenter, i);
            match lock::try_acquire(kv, None, &key, &self.node, self.settings.lock_ttl).await {
                Ok(Acquired::Held(l)) => return Ok(l),
                Ok(Acquired::Busy(who)) => holders.push(who),
                Err(e) => {
                    return Err(format!(
                        "a client upgrade slot of {}: {}",
                        self.datacenter,
                        e.one_line()
                    ));
                }
            }
        }
        Err(format!(
            "a client upgrade slot of {} ({slots} of {clients} clients at a time, held by {})",
            self.datacenter,
            holders.join(", ")
        ))
    }

    /// Clients of this node's datacenter (at least this one).
    async fn count_clients(&self, product: Product) -> usize {
        let n = match (product, &self.nomad, &self.consul) {
            (Product::Nomad, Some(n), _) => n
                .nodes()
                .await
                .map(|l| l.iter().filter(|x| x.datacenter == self.datacenter).count())
                .unwrap_or(1),
            (Product::Consul, _, Some(c)) => c
                .members(false)
                .await
                .map(|l| {
                    l.iter()
                        .filter(|m| m.tags.get("role").map(String::as_str) != Some("consul"))
                        .count()
                })
                .unwrap_or(1),
            _ => 1,
        };
        n.max(1)
    }

    /// Before the restart: a leader hands leadership to another server
    /// (where the agent offers it; failing that, the restart's election
    /// does it).
    pub async fn before_restart(&self, turn: &Turn) {
        if !turn.server || !turn.leader || turn.single {
            return;
        }
        let r: Result<(), AgentError> = match (turn.product, &self.consul, &self.nomad) {
            (Product::Consul, Some(c), _) => c.transfer_leader().await,
            (Product::Nomad, _, Some(n)) => n.transfer_leadership().await,
            _ => return,
        };
        match r {
            Ok(()) => {
                tracing::info!(agent = %turn.product, cluster = %turn.cluster, "leadership transferred before the restart")
            }
            Err(e) => {
                tracing::warn!(agent = %turn.product, error = %e.one_line(), "failed to transfer leadership; the restart elects a new leader")
            }
        }
    }

    /// After a restart that came up ready: waits (until `deadline`) for
    /// the cluster to be healthy with its failure tolerance back, then
    /// gives the turn back. `Err`: the tolerance did not come back.
    pub async fn settle(&self, turn: Turn, deadline: Duration) -> Result<(), (Turn, String)> {
        let outcome = if turn.server {
            let wait = async {
                loop {
                    if let Ok(h) = self.health(turn.product).await {
                        if decide::is_settled(&h, turn.tolerance) {
                            return;
                        }
                    }
                    tokio::time::sleep(self.poll).await;
                }
            };
            tokio::time::timeout(deadline, wait).await.map_err(|_| {
                format!(
                    "the failure tolerance of {} did not come back to {} within {}s",
                    turn.cluster,
                    turn.tolerance,
                    deadline.as_secs()
                )
            })
        } else {
            Ok(())
        };
        if let Err(why) = outcome {
            return Err((turn, why));
        }
        if let Some(l) = turn.lock {
            l.release().await;
        }
        Ok(())
    }

    /// The new release failed: records why (the rollout of the cluster
    /// pauses for every node), then gives the turn back.
    pub async fn pause(&self, turn: Turn, from: &str, to: &str, why: &str) -> String {
        let record = PauseRecord {
            node: self.node.clone(),
            from: from.to_string(),
            to: to.to_string(),
            why: why.to_string(),
            at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        let described = record.describe(turn.product, cluster_name(&turn.cluster));
        let key = paused_key(turn.product, cluster_name(&turn.cluster));
        let body = serde_json::to_vec(&record).unwrap_or_default();
        if let Some(kv) = &self.kv {
            let mut written = false;
            for _ in 0..10 {
                if kv
                    .kv_put(turn.lock_dc.as_deref(), &key, &body)
                    .await
                    .is_ok()
                {
                    written = true;
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            if !written {
                tracing::error!(key = %key, "failed to record the paused rollout in Consul");
            }
        }
        tracing::error!(agent = %turn.product, cluster = %turn.cluster, why = %described, "rollout paused");
        if let Some(l) = turn.lock {
            l.release().await;
        }
        described
    }
}

/// `ams2` of `consul/ams2`.
fn cluster_name(label: &str) -> &str {
    label.split_once('/').map_or(label, |(_, n)| n)
}

/// The pause record of `product`/`cluster`, described; `Err` when it
/// cannot be read (then nobody goes: an unknown state is not a green light).
async fn read_pause(
    kv: &ConsulClient,
    dc: Option<&str>,
    product: Product,
    cluster: &str,
) -> Result<Option<String>, String> {
    let name = cluster_name(cluster);
    match kv.kv_get(dc, &paused_key(product, name)).await {
        Ok(None) => Ok(None),
        Ok(Some(p)) => Ok(Some(
            match serde_json::from_slice::<PauseRecord>(&p.value) {
                Ok(r) => r.describe(product, name),
                Err(_) => String::from_utf8_lossy(&p.value)
                    .chars()
                    .take(MAX_RECORD_CHARS)
                    .collect(),
            },
        )),
        Err(e) => Err(format!("the pause record of {cluster}: {}", e.one_line())),
    }
}

/// The Consul agent at `addr` (`host:port`), over HTTPS with the cluster's
/// material when the node has it, else plain HTTP (as the registration).
fn remote_consul(agents: &AgentClient, addr: &str) -> ConsulClient {
    if let Ok(a) = addr.parse::<SocketAddr>() {
        if let Some(api) = agents.tls_endpoint(a, REQUEST_TIMEOUT) {
            return ConsulClient::new(api);
        }
    }
    let scheme = if agents.has_remote_consul_tls() {
        "https"
    } else {
        "http"
    };
    ConsulClient::new(agents.endpoint_at(format!("{scheme}://{addr}"), REQUEST_TIMEOUT))
}

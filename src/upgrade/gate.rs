//! [`Gate`]: what a node asks before it restarts an agent on a new release,
//! and tells after. It reads autopilot health from the node's own agents
//! (a client agent forwards the question to its servers), keeps the locks
//! and the pause record in Consul's KV store, and decides with
//! [`super::decide`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::decide::{self, Verdict};
use super::lock::{self, Acquired, HeldLock, Session, holder_text};
use super::{
    PauseRecord, UpgradeSettings, client_paused_key, client_slot_index, client_slot_key,
    client_slot_prefix, pause_keys, paused_key, server_lock_key,
};
use crate::agent::consul::AutopilotHealth;
use crate::agent::{AgentClient, AgentError, ConsulClient, NomadClient};
use crate::plan::Plan;
use crate::vocab::Product;

/// Timeout of one request the gate makes.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest pause record text shown (a few hundred bytes are written).
const MAX_RECORD_CHARS: usize = 400;
/// Most slot holders named in a waiting client's status.
const MAX_HOLDERS_SHOWN: usize = 5;
/// How many times `settle` asks whether the lock survived the restart.
const RECHECK_TRIES: u32 = 5;

/// Who a gate's node is and the agents it asks (what [`Gate::for_plan`]
/// reads from a plan).
#[derive(Debug, Clone)]
pub struct GateNode {
    /// The node's name (written as the holder of what it takes).
    pub node: String,
    /// Its Nomad region.
    pub region: String,
    /// Its datacenter.
    pub datacenter: String,
    /// It runs a Consul server.
    pub consul_server: bool,
    /// It runs a Nomad server.
    pub nomad_server: bool,
    /// Its own Consul agent (autopilot, members).
    pub consul: Option<ConsulClient>,
    /// Its own Nomad agent.
    pub nomad: Option<NomadClient>,
    /// The Consul agent holding locks and records (`None`: none).
    pub kv: Option<ConsulClient>,
}

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

    /// The key held (a server lock or a client slot).
    pub fn key(&self) -> Option<&str> {
        self.lock.as_ref().map(HeldLock::key)
    }

    /// The datacenter the key lives in (`None`: the node's own).
    pub fn lock_datacenter(&self) -> Option<&str> {
        self.lock_dc.as_deref()
    }

    /// Whether the lock's session was seen lost (it lapsed while the
    /// node's Consul did not answer, or was destroyed): the key may be
    /// free or another node's.
    pub fn is_lost(&self) -> bool {
        self.lock.as_ref().is_some_and(HeldLock::is_lost)
    }

    /// Resolves once the lock is seen lost (never without a lock).
    pub fn lost(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let lost = self.lock.as_ref().map(HeldLock::lost);
        async move {
            match lost {
                Some(f) => f.await,
                None => std::future::pending().await,
            }
        }
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
        Self::new(
            GateNode {
                node: plan.node_name.clone(),
                region: plan.region.clone(),
                datacenter: plan.datacenter.clone(),
                consul_server: is("consul-server"),
                nomad_server: is("nomad-server"),
                consul,
                nomad,
                kv,
            },
            settings,
        )
    }

    /// The gate of `node`.
    pub fn new(node: GateNode, settings: UpgradeSettings) -> Self {
        Self {
            kv: node.kv,
            consul: node.consul,
            nomad: node.nomad,
            node: node.node,
            region: node.region,
            datacenter: node.datacenter,
            consul_server: node.consul_server,
            nomad_server: node.nomad_server,
            settings,
            poll: super::DEFAULT_POLL,
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
    async fn cluster(
        &self,
        kv: &ConsulClient,
        product: Product,
    ) -> Result<(String, Option<String>), String> {
        match product {
            Product::Consul => Ok((format!("consul/{}", self.datacenter), None)),
            Product::Nomad => {
                let dc = self.nomad_lock_dc(kv).await?;
                let at = (dc != self.datacenter).then_some(dc);
                Ok((format!("nomad/{}", self.region), at))
            }
        }
    }

    /// The datacenter whose KV store holds `product`'s lock: the node's
    /// own for Consul; for Nomad the region's lock datacenter, the
    /// smallest name of `GET /v1/catalog/datacenters` (every agent of the
    /// federation, a client too, answers the same list). `Err`: why it is
    /// not known now.
    pub async fn lock_datacenter(&self, product: Product) -> Result<String, String> {
        let kv = self
            .kv
            .as_ref()
            .ok_or("a Consul agent to hold the upgrade lock (none configured)")?;
        let (_, at) = self.cluster(kv, product).await?;
        Ok(at.unwrap_or_else(|| self.datacenter.clone()))
    }

    /// Asked at each look (a federation can grow), never cached: an
    /// unknown list is a reason to wait, not to guess (two servers of one
    /// region must agree on the lock).
    async fn nomad_lock_dc(&self, kv: &ConsulClient) -> Result<String, String> {
        match kv.catalog_datacenters().await {
            Ok(dcs) => Ok(decide::lock_datacenter(
                dcs.iter().map(String::as_str),
                &self.datacenter,
            )),
            Err(e) => Err(format!(
                "the Consul datacenters (to find the lock of nomad/{}): {}",
                self.region,
                e.one_line()
            )),
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
    /// gives up: the caller ends the wait (shutdown, a reload) by dropping
    /// it, which destroys the wait's session.
    ///
    /// A server looks every `poll` (±20 %); a client doubles its pause at
    /// each unchanged answer, up to [`super::BACKOFF_FACTOR`] × `poll`, and
    /// starts again from `poll` when the answer changes.
    pub async fn acquire(
        &self,
        product: Product,
        wanted: &semver::Version,
        report: &(dyn Fn(Option<String>) + Send + Sync),
    ) -> Turn {
        let mut last: Option<String> = None;
        let mut session: Option<Session> = None;
        let mut pause = self.poll;
        let server = self.is_server(product);
        loop {
            match self.try_turn(product, wanted, &mut session).await {
                Ok(turn) => {
                    report(None);
                    return turn;
                }
                Err(why) => {
                    // The backoff starts again only when the kind of wait
                    // changes: slot holders come and go at every look in
                    // a large fleet, and would keep it at `poll`.
                    let changed = last.as_deref().map(wait_kind) != Some(wait_kind(&why));
                    if last.as_deref() != Some(why.as_str()) {
                        tracing::info!(agent = %product, to = %wanted, waiting_for = %why, "upgrade waits");
                        report(Some(why.clone()));
                        last = Some(why);
                    }
                    pause = next_pause(pause, self.poll, changed, server);
                    tokio::time::sleep(jittered(pause)).await;
                }
            }
        }
    }

    /// The wait's session in `dc`: the one kept from the looks before
    /// (unless lost or elsewhere), else a new one.
    async fn session(
        &self,
        kv: &ConsulClient,
        dc: Option<&str>,
        kept: &mut Option<Session>,
    ) -> Result<Session, String> {
        if let Some(s) = kept.take() {
            if s.datacenter() == dc && !s.is_lost() {
                return Ok(s);
            }
            s.destroy().await;
        }
        self.new_session(kv, dc).await
    }

    /// A new session in `dc` (None: the agent's own), bound to a Consul
    /// server node of that datacenter other than this node (the smallest
    /// name; this node only when it is the datacenter's one server), the
    /// TTL alone deciding as everywhere. Never to the node's own agent
    /// when it is a client: Consul invalidates a node's sessions when the
    /// node leaves, and a Consul client leaves at every stop, its own
    /// upgrade's restart included; a session in another datacenter must
    /// name a node of that datacenter's catalog anyway ("Missing node
    /// registration").
    async fn new_session(&self, kv: &ConsulClient, dc: Option<&str>) -> Result<Session, String> {
        let servers = kv.consul_servers(dc).await.map_err(|e| {
            format!(
                "the Consul servers of {} (to hold a session there): {}",
                dc.unwrap_or(&self.datacenter),
                e.one_line()
            )
        })?;
        let node = session_node(&servers, &self.node).ok_or_else(|| {
            format!(
                "a Consul server registered in {} to hold a session",
                dc.unwrap_or(&self.datacenter)
            )
        })?;
        Session::create(kv, dc, Some(node), &self.node, self.settings.lock_ttl)
            .await
            .map_err(|e| format!("a Consul session for the upgrade lock: {}", e.one_line()))
    }

    /// One look at the gate: the turn, or what it waits for. The session
    /// of the wait is kept in `kept` between looks.
    async fn try_turn(
        &self,
        product: Product,
        wanted: &semver::Version,
        kept: &mut Option<Session>,
    ) -> Result<Turn, String> {
        let kv = self
            .kv
            .as_ref()
            .ok_or("a Consul agent to hold the upgrade lock (none configured)")?;
        let (cluster, lock_dc) = self.cluster(kv, product).await?;
        let at = lock_dc.as_deref();
        let server = self.is_server(product);
        if let Some(p) = read_pause(kv, at, product, &cluster, server).await? {
            return Err(format!("rollout paused: {p}"));
        }
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
        let session = self.session(kv, at, kept).await?;
        let lock = if server {
            let key = server_lock_key(product, cluster_name(&cluster));
            match session.try_lock(&key, &self.node).await {
                Ok(Acquired::Held(l)) => l,
                Ok(Acquired::Busy(s, who)) => {
                    *kept = Some(s);
                    return Err(format!("the upgrade lock of {cluster} held by {who}"));
                }
                Err((s, e)) => {
                    *kept = Some(s);
                    return Err(format!("the upgrade lock of {cluster}: {}", e.one_line()));
                }
            }
        } else {
            self.client_slot(kv, product, session, kept).await?
        };
        // The pause again under the lock: the holder before us may have
        // rolled back, written the pause and released just after our look.
        let again = match read_pause(kv, at, product, &cluster, server).await {
            Ok(None) => None,
            Ok(Some(p)) => Some(format!("rollout paused: {p}")),
            Err(e) => Some(e),
        };
        if let Some(why) = again {
            *kept = Some(lock.unlock().await);
            return Err(why);
        }
        // Again under the lock: another node may have finished (or
        // started) meanwhile.
        let h = match self.health(product).await {
            Ok(h) => h,
            Err(e) => {
                *kept = Some(lock.unlock().await);
                return Err(e);
            }
        };
        match verdict(&h) {
            Verdict::Wait(w) => {
                *kept = Some(lock.unlock().await);
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
    /// One listing of the slots per look; only slots that look free are
    /// tried; the clients are counted (at most once) only when slot 0 is
    /// taken.
    async fn client_slot(
        &self,
        kv: &ConsulClient,
        product: Product,
        session: Session,
        kept: &mut Option<Session>,
    ) -> Result<HeldLock, String> {
        let dc = &self.datacenter;
        let prefix = client_slot_prefix(product, dc);
        // Where the session takes the slots (the Nomad lock datacenter for
        // Nomad clients): listed there too.
        let at = session.datacenter().map(str::to_string);
        let listed = match kv.kv_list(at.as_deref(), &prefix).await {
            Ok(l) => l,
            Err(e) => {
                *kept = Some(session);
                return Err(format!(
                    "the client upgrade slots of {dc}: {}",
                    e.one_line()
                ));
            }
        };
        let mut held: BTreeMap<usize, String> = listed
            .iter()
            .filter(|p| p.session.is_some())
            .filter_map(|p| Some((client_slot_index(&prefix, &p.key)?, holder_text(&p.value))))
            .collect();
        let (slots, clients) = if held.contains_key(&0) {
            let n = self.count_clients(product).await;
            (decide::client_slots(self.settings.client_share, n), Some(n))
        } else {
            (1, None)
        };
        let mut session = session;
        for i in 0..slots {
            if held.contains_key(&i) {
                continue;
            }
            match session
                .try_lock(&client_slot_key(product, dc, i), &self.node)
                .await
            {
                Ok(Acquired::Held(l)) => return Ok(l),
                Ok(Acquired::Busy(s, who)) => {
                    session = s;
                    held.insert(i, who);
                }
                Err((s, e)) => {
                    *kept = Some(s);
                    return Err(format!("a client upgrade slot of {dc}: {}", e.one_line()));
                }
            }
        }
        *kept = Some(session);
        let mut holders: Vec<&str> = held
            .iter()
            .filter(|(i, _)| **i < slots)
            .map(|(_, w)| w.as_str())
            .take(MAX_HOLDERS_SHOWN)
            .collect();
        let more = held.range(..slots).count().saturating_sub(holders.len());
        let tail = format!("{more} more");
        if more > 0 {
            holders.push(&tail);
        }
        let of = clients.map_or_else(String::new, |n| format!(" of {n} {product} clients"));
        Err(format!(
            "a client upgrade slot of {dc} ({slots}{of} at a time, held by {})",
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

    /// After the restart: whether the turn's lock survived it. A lost one
    /// is taken back when still free (a server's, which the settle wait
    /// needs), never released when another node holds it now. `None`: the
    /// lock is held (or there is none); else what happened, for the log.
    pub async fn reclaim(&self, turn: &mut Turn) -> Option<String> {
        let lock = turn.lock.as_ref()?;
        let mut alive = None;
        for attempt in 1..=RECHECK_TRIES {
            alive = lock.session().renew_now().await;
            if alive.is_some() {
                break;
            }
            if attempt < RECHECK_TRIES {
                tokio::time::sleep(self.poll).await;
            }
        }
        let key = lock.key().to_string();
        match alive {
            Some(true) => return None,
            None => {
                return Some(format!(
                    "could not tell whether the upgrade lock {key} survived the restart of {} (Consul did not answer)",
                    turn.product
                ));
            }
            Some(false) => {}
        }
        let dc = lock.datacenter().map(str::to_string);
        let lapsed = format!(
            "the upgrade lock {key} was lost while {} restarted (its session lapsed)",
            turn.product
        );
        if let Some(old) = turn.lock.take() {
            old.release().await;
        }
        if !turn.server {
            return Some(lapsed);
        }
        let Some(kv) = &self.kv else {
            return Some(lapsed);
        };
        Some(self.retake(kv, dc.as_deref(), &key, turn, &lapsed).await)
    }

    /// Takes `key` back for `turn` while it is free: within the lock delay
    /// after the lapse it cannot be taken yet, so it tries again for a
    /// while; held by another node, it is left alone.
    async fn retake(
        &self,
        kv: &ConsulClient,
        dc: Option<&str>,
        key: &str,
        turn: &mut Turn,
        lapsed: &str,
    ) -> String {
        let mut session = match self.new_session(kv, dc).await {
            Ok(s) => s,
            Err(e) => return format!("{lapsed}; failed to take it back: {e}"),
        };
        let until = tokio::time::Instant::now() + lock::LOCK_DELAY * 2;
        loop {
            match session.try_lock(key, &self.node).await {
                Ok(Acquired::Held(l)) => {
                    turn.lock = Some(l);
                    return format!("{lapsed}; taken back");
                }
                Ok(Acquired::Busy(s, who)) => {
                    session = s;
                    let held = kv
                        .kv_get(dc, key)
                        .await
                        .map(|p| p.is_some_and(|p| p.session.is_some()));
                    if held.unwrap_or(true) || tokio::time::Instant::now() >= until {
                        session.destroy().await;
                        return format!(
                            "{lapsed}; {who} holds it now (not taken back, not released)"
                        );
                    }
                }
                Err((s, e)) => {
                    s.destroy().await;
                    return format!("{lapsed}; failed to take it back: {}", e.one_line());
                }
            }
            tokio::time::sleep(self.poll.min(lock::LOCK_DELAY)).await;
        }
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
    ///
    /// First it checks the lock survived the restart ([`Gate::reclaim`]):
    /// a lost one is logged as a warning, taken back if still free.
    pub async fn settle(&self, mut turn: Turn, deadline: Duration) -> Result<(), (Turn, String)> {
        if let Some(what) = self.reclaim(&mut turn).await {
            tracing::warn!(agent = %turn.product, cluster = %turn.cluster, "{what}");
        }
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
        let name = cluster_name(&turn.cluster);
        // A client's record apart (its token writes only under clients/):
        // it pauses its peers, not the servers.
        let key = if turn.server {
            paused_key(turn.product, name)
        } else {
            client_paused_key(turn.product, name)
        };
        let described = record.describe(turn.product, &key);
        let body = serde_json::to_vec(&record).unwrap_or_default();
        // The node's own Consul may be the agent rolling back right now:
        // tried each second for as long as an agent gets to become ready.
        let written = match &self.kv {
            Some(kv) => {
                let until = tokio::time::Instant::now()
                    + self.settings.health_deadline.max(Duration::from_secs(10));
                loop {
                    if kv
                        .kv_put(turn.lock_dc.as_deref(), &key, &body)
                        .await
                        .is_ok()
                    {
                        break true;
                    }
                    if tokio::time::Instant::now() >= until {
                        break false;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            None => false,
        };
        tracing::error!(agent = %turn.product, cluster = %turn.cluster, why = %described, "rollout paused");
        match turn.lock {
            Some(l) if written => l.release().await,
            Some(l) => {
                // Not released early: the next node would take the turn
                // at once onto the release that just failed. Dropped, the
                // lock frees itself after its TTL.
                tracing::error!(key = %key, "failed to record the paused rollout in Consul; the lock is left to its TTL");
                drop(l);
            }
            None => {}
        }
        described
    }
}

/// The pause before the next look: `poll` after an answer that changed;
/// a client's doubles at each unchanged one, up to
/// [`super::BACKOFF_FACTOR`] × `poll`; a server's stays `poll` (a few
/// servers, and the rollout waits on them).
fn next_pause(pause: Duration, poll: Duration, changed: bool, server: bool) -> Duration {
    if changed || server {
        poll
    } else {
        pause
            .saturating_mul(2)
            .min(poll.saturating_mul(super::BACKOFF_FACTOR))
    }
}

/// What a wait is, without its details (holders, counts, record): the
/// text before the first `(` or `:`.
fn wait_kind(why: &str) -> &str {
    why.split(['(', ':']).next().unwrap_or(why).trim_end()
}

/// The node a gate session is bound to: the smallest-named Consul server
/// other than `me`, else `me` when it is the only one (`servers` sorted).
fn session_node<'a>(servers: &'a [String], me: &str) -> Option<&'a str> {
    servers
        .iter()
        .find(|s| *s != me)
        .or_else(|| servers.iter().find(|s| *s == me))
        .map(String::as_str)
}

/// `d` ±20 %.
fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.8 + 0.4 * rand::random::<f64>())
}

/// `ams2` of `consul/ams2`.
fn cluster_name(label: &str) -> &str {
    label.split_once('/').map_or(label, |(_, n)| n)
}

/// The first pause record a node of `product`/`cluster` waits on
/// ([`super::pause_keys`]: a client also on its peers'), described; `Err`
/// when one cannot be read (then nobody goes: an unknown state is not a
/// green light).
async fn read_pause(
    kv: &ConsulClient,
    dc: Option<&str>,
    product: Product,
    cluster: &str,
    server: bool,
) -> Result<Option<String>, String> {
    for key in pause_keys(product, cluster_name(cluster), server) {
        match kv.kv_get(dc, &key).await {
            Ok(None) => {}
            Ok(Some(p)) => {
                return Ok(Some(
                    match serde_json::from_slice::<PauseRecord>(&p.value) {
                        Ok(r) => {
                            lock::shown(r.describe(product, &key).as_bytes(), MAX_RECORD_CHARS)
                        }
                        Err(_) => lock::shown(&p.value, MAX_RECORD_CHARS),
                    },
                ));
            }
            Err(e) => return Err(format!("the pause record {key}: {}", e.one_line())),
        }
    }
    Ok(None)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_keeps_its_kind_when_only_the_holders_change() {
        let a = "a client upgrade slot of ams2 (2 of 9 nomad clients at a time, held by c1, c2)";
        let b = "a client upgrade slot of ams2 (2 of 9 nomad clients at a time, held by c3, c4)";
        assert_eq!(wait_kind(a), wait_kind(b));
        assert_eq!(wait_kind(a), "a client upgrade slot of ams2");
        assert_eq!(
            wait_kind("rollout paused: nomad 1.10.9 failed on ams2-server-01: x"),
            "rollout paused"
        );
        assert_ne!(wait_kind(a), wait_kind("rollout paused: x"));
        assert_eq!(wait_kind(""), "");
    }

    #[test]
    fn a_session_is_bound_to_another_server_and_to_itself_only_when_alone() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let servers = v(&["ams2-server-01", "ams2-server-03"]);
        assert_eq!(
            session_node(&servers, "ams2-server-01"),
            Some("ams2-server-03")
        );
        assert_eq!(
            session_node(&servers, "ams2-server-03"),
            Some("ams2-server-01")
        );
        assert_eq!(
            session_node(&servers, "ams2-client-01"),
            Some("ams2-server-01")
        );
        let alone = v(&["lon1-server-01"]);
        assert_eq!(
            session_node(&alone, "lon1-server-01"),
            Some("lon1-server-01")
        );
        assert_eq!(session_node(&[], "lon1-client-01"), None);
    }

    #[test]
    fn a_waiting_client_backs_off_to_fifteen_polls_and_a_change_resets_it() {
        let poll = Duration::from_secs(2);
        let mut p = poll;
        let mut seen = Vec::new();
        for _ in 0..6 {
            p = next_pause(p, poll, false, false);
            seen.push(p.as_secs());
        }
        assert_eq!(seen, [4, 8, 16, 30, 30, 30]);
        assert_eq!(next_pause(p, poll, true, false), poll);
        assert_eq!(
            next_pause(poll, poll, false, true),
            poll,
            "a server does not back off"
        );
        for _ in 0..200 {
            let j = jittered(Duration::from_secs(10));
            assert!(
                j >= Duration::from_secs(8) && j <= Duration::from_secs(12),
                "{j:?}"
            );
        }
    }
}

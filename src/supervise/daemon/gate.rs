//! The upgrade gate follows the plan: rebuilt (through
//! [`super::RunOptions::gate_factory`]) whenever a new plan changes what it
//! depends on: the node's name, region, datacenter and roles, the agents'
//! HTTP addresses and TLS, Nomad's `consul.address` (where a node without
//! a local Consul keeps its locks: a plan that gains one gets a working
//! gate), and the `[upgrade]` settings. Only called while no rollout runs
//! (a rollout keeps the gate it started with).

use std::net::SocketAddr;
use std::sync::Arc;

use super::{Daemon, Preparer};
use crate::plan::{ApiTls, Plan};
use crate::upgrade::UpgradeSettings;
use crate::vocab::Product;

/// What a gate is built from.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct GateInputs {
    node: String,
    region: String,
    datacenter: String,
    roles: Vec<String>,
    agents: Vec<(Product, SocketAddr, Option<ApiTls>)>,
    consul_address: Option<String>,
    settings: UpgradeSettings,
}

impl GateInputs {
    fn of(plan: &Plan, settings: &UpgradeSettings) -> Self {
        Self {
            node: plan.node_name.clone(),
            region: plan.region.clone(),
            datacenter: plan.datacenter.clone(),
            roles: plan.roles.clone(),
            agents: plan
                .agents
                .iter()
                .map(|a| (a.product, a.http_addr, a.api_tls.clone()))
                .collect(),
            consul_address: plan
                .render
                .nomad
                .as_ref()
                .and_then(|n| n.consul_address.clone()),
            settings: settings.clone(),
        }
    }
}

impl<P: Preparer> Daemon<P> {
    /// Rebuilds the gate when the plan in force (and the role's
    /// `[upgrade]`) changed what it depends on. `true`: rebuilt.
    pub(super) fn refresh_gate(&mut self) -> bool {
        let Some(factory) = self.opts.gate_factory.clone() else {
            return false;
        };
        let settings = match (&self.opts.discovery, &self.opts.gate) {
            (Some(feed), _) => feed.role.upgrade.clone(),
            (None, Some(gate)) => gate.settings().clone(),
            (None, None) => UpgradeSettings::default(),
        };
        let inputs = GateInputs::of(&self.plan, &settings);
        if self.gate_inputs.as_ref() == Some(&inputs) && self.opts.gate.is_some() {
            return false;
        }
        if self.gate_inputs.is_some() {
            tracing::info!(
                health_deadline_secs = settings.health_deadline.as_secs(),
                "the upgrade gate follows the new plan"
            );
        }
        self.opts.gate = Some(Arc::new(factory(&self.plan, &settings)));
        self.gate_inputs = Some(inputs);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        let host = crate::role::StaticHost {
            hostname: Some("ams2-client-01".into()),
            interfaces: vec![("eth1".into(), std::net::Ipv4Addr::new(10, 0, 1, 21))],
            ..Default::default()
        };
        let role = crate::role::parse(
            std::path::Path::new("/r/node.toml"),
            &crate::role::with_plaintext("schema = 1\n"),
            &["nomad-client".to_string()],
            &host,
        )
        .unwrap();
        Plan::from_role(&role)
    }

    #[test]
    fn a_new_consul_address_a_datacenter_or_settings_change_the_gate_inputs() {
        let p = plan();
        let s = UpgradeSettings::default();
        let same = GateInputs::of(&p, &s);
        assert_eq!(same, GateInputs::of(&p.clone(), &s));
        let mut moved = p.clone();
        if let Some(n) = moved.render.nomad.as_mut() {
            n.consul_address = Some("10.0.1.11:8500".into());
        }
        assert_ne!(same, GateInputs::of(&moved, &s), "a Consul to hold locks");
        let mut dc = p.clone();
        dc.datacenter = "lon1".into();
        assert_ne!(same, GateInputs::of(&dc, &s));
        let mut longer = s.clone();
        longer.health_deadline *= 2;
        assert_ne!(same, GateInputs::of(&p, &longer));
    }
}

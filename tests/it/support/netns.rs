//! Test support: network-namespace nodes (see `hashi_testrig::netns`).

pub use hashi_testrig::netns::{Topology, is_available, reference_nodes};

/// Builds the reference scenario's five nodes, after checking up front for
/// `ip` (iproute2) and the `tools` the test runs in them (e.g. `ping`), or
/// returns `None` where the test cannot run: a missing tool or namespaces
/// unavailable (not root) skip it locally with a line saying why, and fail
/// it under CI (see [`super::require_tools`]), which runs as root.
pub fn reference_topology(tools: &[&str]) -> Option<Topology> {
    let mut all = vec!["ip"];
    all.extend_from_slice(tools);
    if !super::require_tools(&all) {
        return None;
    }
    if !super::available("network namespaces", is_available()) {
        return None;
    }
    Some(
        Topology::build(&["ams2", "lon1"], &reference_nodes())
            .expect("build the reference topology"),
    )
}

//! Test support: network-namespace nodes (see `hashi_testrig::netns`).

pub use hashi_testrig::netns::{Topology, is_available, reference_nodes};

/// Builds the reference scenario's five nodes, or returns `None` after
/// printing why namespaces are unavailable (not root, no `ip netns`).
/// CI runs as root, so there the tests run.
pub fn reference_topology(test: &str) -> Option<Topology> {
    if let Err(why) = is_available() {
        eprintln!("SKIP {test}: network namespaces unavailable: {why}");
        return None;
    }
    Some(
        Topology::build(&["ams2", "lon1"], &reference_nodes())
            .expect("build the reference topology"),
    )
}

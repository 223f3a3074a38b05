//! Integration tests: the network-namespace test rig itself.

use std::process::Command;

use crate::support::netns::reference_topology;

/// Whether one ping from node `from` to `to` is answered. Panics when ping
/// could not run at all (so that "no answer" is never a missing tool).
fn ping(topo: &hashi_testrig::netns::Topology, from: &str, to: std::net::Ipv4Addr) -> bool {
    let node = topo.node(from).expect("node exists");
    let out = node
        .command("ping")
        .args(["-c", "1", "-W", "2", &to.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("failed to run `ip netns exec .. ping` in {from}: {e}"));
    // `ip netns exec` says so on stderr when it cannot run the program
    // (its exit code, 1 or 255, depends on the iproute2 version and is
    // also ping's "no reply").
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("exec of \"ping\" failed"),
        "ping could not run in {from} (Debian package iputils-ping): {stderr}"
    );
    out.status.success()
}

fn namespace_exists(name: &str) -> bool {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

#[test]
fn reference_nodes_reach_each_other_within_and_across_datacenters() {
    let Some(topo) = reference_topology(&["ping"]) else {
        return;
    };
    let ams2 = topo.node("ams2-server-01").expect("ams2 server").clone();
    let lon1 = topo.node("lon1-server-01").expect("lon1 server").clone();
    assert_eq!(ams2.private_ip.to_string(), "10.0.1.11");
    assert_eq!(lon1.private_ip.to_string(), "10.0.2.11");
    // LAN, routed LAN across DCs, and public (WAN) addresses.
    assert!(
        ping(&topo, "ams2-client-01", ams2.private_ip),
        "LAN ping failed"
    );
    assert!(
        ping(&topo, "ams2-server-01", lon1.private_ip),
        "cross-DC ping failed"
    );
    assert!(
        ping(
            &topo,
            "ams2-server-01",
            lon1.public_ip.expect("lon1 server has a public address")
        ),
        "public ping failed"
    );
    assert!(
        ping(
            &topo,
            "lon1-client-01",
            ams2.public_ip.expect("ams2 server has a public address")
        ),
        "public ping back failed"
    );
}

#[test]
fn cutting_the_wan_link_isolates_datacenters_until_healed() {
    let Some(topo) = reference_topology(&["ping"]) else {
        return;
    };
    let lon1 = topo
        .node("lon1-server-01")
        .and_then(|n| n.public_ip)
        .expect("lon1 server public address");
    let ams2_peer = topo.node("ams2-server-03").expect("ams2 peer").private_ip;
    topo.cut("ams2", "lon1").expect("cut");
    assert!(
        !ping(&topo, "ams2-server-01", lon1),
        "ping crossed a cut link"
    );
    assert!(
        ping(&topo, "ams2-server-01", ams2_peer),
        "cut broke the LAN"
    );
    topo.heal("ams2", "lon1").expect("heal");
    assert!(
        ping(&topo, "ams2-server-01", lon1),
        "ping failed after heal"
    );
}

#[test]
fn a_node_taken_down_is_unreachable_and_comes_back() {
    let Some(topo) = reference_topology(&["ping"]) else {
        return;
    };
    let client = topo.node("ams2-client-01").expect("client").private_ip;
    topo.take_down("ams2-client-01").expect("take down");
    assert!(!ping(&topo, "ams2-server-01", client));
    topo.bring_up("ams2-client-01").expect("bring up");
    assert!(ping(&topo, "ams2-server-01", client));
}

#[test]
fn namespaces_are_removed_on_drop() {
    let Some(topo) = reference_topology(&[]) else {
        return;
    };
    let names: Vec<String> = topo.namespaces().to_vec();
    assert_eq!(names.len(), 7, "two routers and five nodes");
    assert!(names.iter().all(|n| namespace_exists(n)));
    drop(topo);
    assert!(
        names.iter().all(|n| !namespace_exists(n)),
        "namespaces left behind"
    );
}

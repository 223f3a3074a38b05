//! Stand-in for the `consul` and `nomad` agents, for tests only.
//! SKELETON: replaced by the test-rig work.
fn main() {}

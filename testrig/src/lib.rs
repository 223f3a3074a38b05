//! Test rig: a signed local release mirror and network-namespace nodes.
//! SKELETON: replaced by the test-rig work.

pub mod netns;

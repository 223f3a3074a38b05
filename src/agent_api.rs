//! Typed client of the Consul and Nomad HTTP endpoints the supervisor uses.
//!
//! SKELETON: replaced by the health work.

//! Integration tests of hashi-supervisor, one file per component. They drive
//! the real `supervisor` binary and the library against real files, real
//! HTTP on loopback, real processes (the test-only stand-in agent) and real
//! network namespaces.

mod support;

mod cluster;
mod day_one;
mod health;
mod health_e2e;
mod layering;
mod netns;
mod release;
mod render;
mod role;
mod supervise;

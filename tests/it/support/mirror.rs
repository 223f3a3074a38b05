//! Test support: mirror.

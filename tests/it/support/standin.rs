//! Test support: standin.

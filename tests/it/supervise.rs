//! Integration tests: supervise.

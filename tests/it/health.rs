//! Integration tests: health.

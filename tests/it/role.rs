//! Integration tests: role.

//! Process exit codes (stage 0 of the layering in `lib.rs`), after BSD's
//! `sysexits.h` as STYLE.md and the README promise: 0 ok, 64 usage, 69 a
//! release or mirror unavailable or failing verification, 70 internal,
//! 77 a join refused or untrusted, 78 invalid role file or config, 1 any other runtime failure.
//!
//! Owns the numbers only. Which error ends with which code is decided in one
//! place, `error::Error::exit_code`; no other module maps its errors to exit
//! codes, and nothing here imports another module of this crate.

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: any other runtime failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code: command-line usage error (`EX_USAGE`).
pub const EXIT_USAGE: u8 = 64;
/// Exit code: a release or mirror is unavailable or failed verification
/// (`EX_UNAVAILABLE`).
pub const EXIT_UNAVAILABLE: u8 = 69;
/// Exit code: a join refused or not trusted: a wrong, expired or revoked
/// join token, or a join endpoint whose CA does not match the token's pin
/// (`EX_NOPERM`).
pub const EXIT_NOPERM: u8 = 77;
/// Exit code: internal error, a bug (`EX_SOFTWARE`).
pub const EXIT_INTERNAL: u8 = 70;
/// Exit code: invalid role file or config (`EX_CONFIG`).
pub const EXIT_CONFIG: u8 = 78;

//! The range of every number, length and file size a role file may hold:
//! what an operator could mean, and no more. A value outside is refused at
//! `check` with its location and the range, so nothing later (timers,
//! backoff, downloads) ever meets a value it cannot handle.
//!
//! The same ranges are documented in `config/node.toml`; the property test
//! (`tests/it/role.rs`) asserts every plan built from a role file keeps
//! inside them.

use std::ops::RangeInclusive;

/// One hour.
const HOUR: u64 = 3600;
/// One day.
const DAY: u64 = 24 * HOUR;
/// One MiB.
const MIB: u64 = 1 << 20;
/// One GiB.
const GIB: u64 = 1 << 30;

/// `[consul] / [nomad] stop_timeout_secs`: grace before SIGKILL.
pub const STOP_TIMEOUT_SECS: RangeInclusive<u64> = 1..=HOUR;
/// `[nomad] drain_deadline_secs`: Nomad's own default deadline is 1 h;
/// a day is the most a drain on stop could be meant to take.
pub const DRAIN_DEADLINE_SECS: RangeInclusive<u64> = 1..=DAY;
/// `restart.attempts` (0: no restart within the interval, as in Nomad).
pub const RESTART_ATTEMPTS: RangeInclusive<u64> = 0..=1000;
/// `restart.interval_secs`.
pub const RESTART_INTERVAL_SECS: RangeInclusive<u64> = 1..=DAY;
/// `restart.delay_secs` (0: respawn at once).
pub const RESTART_DELAY_SECS: RangeInclusive<u64> = 0..=HOUR;
/// `restart.max_delay_secs` (and never below `delay_secs`).
pub const RESTART_MAX_DELAY_SECS: RangeInclusive<u64> = 0..=HOUR;
/// `restart.stable_after_secs` (0: every run counts as stable).
pub const RESTART_STABLE_AFTER_SECS: RangeInclusive<u64> = 0..=DAY;
/// `bootstrap_expect`: servers of one cluster (HashiCorp recommends 3 or
/// 5; Raft with more than a few dozen voters is not a thing to mean).
pub const BOOTSTRAP_EXPECT: RangeInclusive<u64> = 1..=64;
/// `[release] keep_versions`.
pub const KEEP_VERSIONS: RangeInclusive<u64> = 1..=100;
/// `[release] max_download_bytes`: Consul and Nomad zips are 50-150 MB.
pub const MAX_DOWNLOAD_BYTES: RangeInclusive<u64> = MIB..=4 * GIB;

/// `[upgrade] health_deadline_secs`: time a new release has to become
/// ready and healthy (and its cluster's failure tolerance to come back)
/// before it is rolled back. Under 10 s is less than an agent takes to
/// start and join; an hour is the most an upgrade could be meant to take.
pub const UPGRADE_HEALTH_DEADLINE_SECS: RangeInclusive<u64> = 10..=HOUR;
/// `[upgrade] health_deadline_secs` when not written.
pub const DEFAULT_UPGRADE_HEALTH_DEADLINE_SECS: u64 = 120;
/// `[upgrade] lock_ttl_secs`: the TTL of the upgrade lock's Consul session
/// (Consul accepts 10 s to 24 h; a dead holder frees the lock after at
/// most twice the TTL, so an hour is the most worth meaning).
pub const UPGRADE_LOCK_TTL_SECS: RangeInclusive<u64> = 10..=HOUR;
/// `[upgrade] lock_ttl_secs` when not written.
pub const DEFAULT_UPGRADE_LOCK_TTL_SECS: u64 = 15;
/// `[upgrade] client_share` when not written: a quarter of a
/// datacenter's clients upgrade at once (at least one).
pub const DEFAULT_UPGRADE_CLIENT_SHARE: f64 = 0.25;

/// `[security] cert_days`: lifetime of the node certificates a CA holder
/// signs. 825 days is the most browsers ever accepted for a TLS leaf (CA/B
/// Forum, 2018-2020); short lifetimes are renewed by the supervisor.
pub const CERT_DAYS: RangeInclusive<u64> = 1..=825;
/// `[security] cert_days` when not written.
pub const DEFAULT_CERT_DAYS: u64 = 90;
/// `[security] renew_before_days` when not written (and less than
/// `cert_days`).
pub const DEFAULT_RENEW_BEFORE_DAYS: u64 = 30;
/// Most entries of `[security] join`: a handful of CA holders is what a
/// cluster has (every server may hold the CA).
pub const JOIN_ADDRESSES: usize = 16;
/// A join token file (`<id>.<secret>@sha256:<hex>` is 95 characters).
pub const JOIN_TOKEN_FILE_BYTES: u64 = 1024;
/// `<config>/security/node.json` (a few hundred bytes of names and tokens).
pub const NODE_SECRETS_FILE_BYTES: u64 = 64 * 1024;

/// The role file itself.
pub const ROLE_FILE_BYTES: u64 = MIB;
/// A gossip key file (a 44-character base64 line, with room for comments
/// or whitespace).
pub const GOSSIP_KEY_FILE_BYTES: u64 = 4096;
/// A TLS certificate, CA bundle or key file.
pub const TLS_FILE_BYTES: u64 = 4 * MIB;
/// A trusted OpenPGP key file (HashiCorp's key with every signature is
/// ~20 KB).
pub const KEY_FILE_BYTES: u64 = MIB;

/// Longest path (Linux `PATH_MAX`).
pub const PATH_CHARS: usize = 4096;
/// Longest URL or address string (mirror, retry_join entry, listen).
pub const ADDRESS_CHARS: usize = 2048;
/// Longest version string (`1.20.1+ent`, with room).
pub const VERSION_CHARS: usize = 64;
/// Most entries of one list (`roles`, `retry_join`, `trusted_key_files`).
pub const LIST_ENTRIES: usize = 256;
/// Longest region, datacenter or node name: a DNS label (RFC 1035), which
/// both agents use the names as (`<node>.node.<dc>.consul`,
/// `server.<region>.nomad`).
pub const NAME_CHARS: usize = 63;

/// `[discovery.dns] interval_secs`: how often the names are resolved
/// again. Under 5 s is a query storm for nothing (peers change by
/// operator action, not by the second); a day is the most a DNS-published
/// server list could be meant to stay unread.
pub const DNS_INTERVAL_SECS: RangeInclusive<u64> = 5..=DAY;
/// Longest DNS name (RFC 1035: 255 octets on the wire, 253 characters
/// written without the trailing dot).
pub const DNS_NAME_CHARS: usize = 253;
/// Longest label of a DNS name (RFC 1035).
pub const DNS_LABEL_CHARS: usize = 63;
/// Most names in one `[discovery.dns]` list: each is resolved on every
/// interval, and a handful per role is what a cluster needs.
pub const DNS_NAMES: usize = 64;

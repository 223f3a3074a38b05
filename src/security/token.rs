//! Join tokens: `<id>.<secret>@sha256:<hex>`. The id names the token in
//! lists and logs; the secret proves the bearer may join; the pin is the
//! cluster CA's (kubeadm's `--discovery-token-ca-cert-hash`), so the joining
//! node checks the endpoint before it sends anything.
//!
//! The store (`<cluster>/tokens.json`, 0600) keeps only SHA-256 of each
//! secret, compared in constant time. It is bounded
//! ([`MAX_RECORDS`]); expired and revoked records are pruned a week after
//! they stopped counting. A secret is held in [`Secret`] only and is never
//! in a `Debug`, a log line or an error.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::paths;
use crate::role::Secret;
use crate::role::file::{FileError, read_regular};

use super::ca::PIN_PREFIX;

/// Length of a token id.
pub const ID_LEN: usize = 6;
/// Length of a token secret.
pub const SECRET_LEN: usize = 16;
/// Most records a store holds.
pub const MAX_RECORDS: usize = 10_000;
/// Expired and revoked records are kept this long after they stopped
/// counting (so `token list` still shows them), then pruned.
pub const PRUNE_AFTER: Duration = Duration::from_secs(7 * 86_400);
/// Shortest token lifetime.
pub const MIN_TTL: Duration = Duration::from_secs(60);
/// Longest token lifetime.
pub const MAX_TTL: Duration = Duration::from_secs(365 * 86_400);
/// Longest description.
pub const MAX_DESCRIPTION_CHARS: usize = 200;
/// Largest `tokens.json` read (10,000 records of ~250 bytes, with room).
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// Format version of `tokens.json`.
pub const FILE_VERSION: u32 = 1;

const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Why a token string is not a join token. Never holds the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenFormatError {
    /// Not `<id>.<secret>@sha256:<hex>`.
    #[error("a join token looks like <id>.<secret>@sha256:<64 hex digits>")]
    Shape,
    /// The id is not 6 of `[a-z0-9]`.
    #[error("the join token's id must be {ID_LEN} characters of a-z and 0-9")]
    Id,
    /// The secret is not 16 of `[a-z0-9]`.
    #[error("the join token's secret must be {SECRET_LEN} characters of a-z and 0-9")]
    Secret,
    /// The pin is not `sha256:` and 64 lowercase hex digits.
    #[error("the join token's CA hash must be sha256: followed by 64 lowercase hex digits")]
    Pin,
}

/// A parsed join token.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// The id (`[a-z0-9]{6}`): shown in lists and logs.
    pub id: String,
    /// The secret (`[a-z0-9]{16}`).
    pub secret: Secret,
    /// The CA pin, `sha256:<hex>`.
    pub pin: String,
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("id", &self.id)
            .field("secret", &self.secret)
            .field("pin", &self.pin)
            .finish()
    }
}

fn is_token_chars(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| ALPHABET.contains(&b))
}

/// Whether `pin` is `sha256:` and 64 lowercase hex digits.
pub fn is_pin(pin: &str) -> bool {
    pin.strip_prefix(PIN_PREFIX).is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

impl JoinToken {
    /// Parses `<id>.<secret>@sha256:<hex>` (surrounding whitespace, as in a
    /// file, is ignored).
    pub fn parse(text: &str) -> Result<JoinToken, TokenFormatError> {
        let t = text.trim();
        let (cred, pin) = t.split_once('@').ok_or(TokenFormatError::Shape)?;
        let (id, secret) = cred.split_once('.').ok_or(TokenFormatError::Shape)?;
        if !is_token_chars(id, ID_LEN) {
            return Err(TokenFormatError::Id);
        }
        if !is_token_chars(secret, SECRET_LEN) {
            return Err(TokenFormatError::Secret);
        }
        if !is_pin(pin) {
            return Err(TokenFormatError::Pin);
        }
        Ok(JoinToken {
            id: id.to_string(),
            secret: Secret::new(secret),
            pin: pin.to_string(),
        })
    }

    /// The whole token, secret included: only to print it for the operator
    /// (`cluster init`, `cluster token create`).
    pub fn expose(&self) -> String {
        format!("{}.{}@{}", self.id, self.secret.expose(), self.pin)
    }

    /// `<id>.<secret>`, the `Authorization: Bearer` value of a join.
    pub fn bearer(&self) -> Secret {
        Secret::new(format!("{}.{}", self.id, self.secret.expose()))
    }
}

/// Splits a bearer credential `<id>.<secret>` into id and secret; `None`
/// when it is not of that shape.
pub fn parse_bearer(value: &str) -> Option<(String, Secret)> {
    let (id, secret) = value.trim().split_once('.')?;
    (is_token_chars(id, ID_LEN) && is_token_chars(secret, SECRET_LEN))
        .then(|| (id.to_string(), Secret::new(secret)))
}

fn random_chars(n: usize) -> String {
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 32];
    while out.len() < n {
        rand::fill(&mut buf);
        // 252 = 7 * 36: rejecting the rest keeps every character equally
        // likely.
        for b in buf.iter().filter(|b| **b < 252) {
            if out.len() == n {
                break;
            }
            out.push(ALPHABET[usize::from(*b % 36)] as char);
        }
    }
    out
}

fn sha256_hex(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Parses a lifetime: `<n>m`, `<n>h` or `<n>d`, from 1 minute to 365 days.
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let unit = t.chars().last().ok_or("empty duration")?;
    let mult: u64 = match unit {
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => {
            return Err(format!(
                "`{t}` is not a duration: write a number and m, h or d (30m, 24h, 7d)"
            ));
        }
    };
    let n: u64 = t[..t.len() - 1].parse().map_err(|_| {
        format!("`{t}` is not a duration: write a number and m, h or d (30m, 24h, 7d)")
    })?;
    let d = Duration::from_secs(n.saturating_mul(mult));
    if d < MIN_TTL || d > MAX_TTL {
        return Err(format!(
            "`{t}` is out of range: a token lives from 1m to 365d"
        ));
    }
    Ok(d)
}

/// `YYYY-MM-DD HH:MM UTC` of a Unix time, for lists and messages.
pub fn format_utc(unix: u64) -> String {
    let t = i64::try_from(unix)
        .ok()
        .and_then(|u| time::OffsetDateTime::from_unix_timestamp(u).ok());
    match t {
        Some(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute()
        ),
        None => format!("{unix} (unix)"),
    }
}

/// One join token as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    /// The id.
    pub id: String,
    /// SHA-256 of the secret, lowercase hex.
    pub secret_sha256: String,
    /// Made at (Unix seconds).
    pub created: u64,
    /// Expires at (Unix seconds).
    pub expires: u64,
    /// Revoked at (Unix seconds), if revoked.
    pub revoked: Option<u64>,
    /// The operator's note.
    #[serde(default)]
    pub description: String,
    /// Joins clients only: no server role, no CA handover.
    #[serde(default)]
    pub clients_only: bool,
    /// Successful joins with it.
    #[serde(default)]
    pub uses: u64,
}

/// A token's state at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenState {
    /// Usable.
    Active,
    /// Past its expiry.
    Expired,
    /// Revoked.
    Revoked,
}

impl fmt::Display for TokenState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Active => "active",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        })
    }
}

impl TokenRecord {
    /// Its state at `now`: revoked wins over expired.
    pub fn state(&self, now: u64) -> TokenState {
        if self.revoked.is_some() {
            TokenState::Revoked
        } else if now >= self.expires {
            TokenState::Expired
        } else {
            TokenState::Active
        }
    }

    /// When it stopped counting (revoked or expired), if it did by `now`.
    fn ended(&self, now: u64) -> Option<u64> {
        match (self.revoked, now >= self.expires) {
            (Some(r), true) => Some(r.min(self.expires)),
            (Some(r), false) => Some(r),
            (None, true) => Some(self.expires),
            (None, false) => None,
        }
    }
}

/// Why a join token was refused. Never holds the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    /// No token with this id.
    #[error("unknown join token {id}")]
    Unknown {
        /// The id presented.
        id: String,
    },
    /// The secret does not match.
    #[error("wrong secret for join token {id}")]
    WrongSecret {
        /// The id presented.
        id: String,
    },
    /// Past its expiry.
    #[error("join token {id} expired at {at} (unix seconds)")]
    Expired {
        /// The id.
        id: String,
        /// Its expiry.
        at: u64,
    },
    /// Revoked.
    #[error("join token {id} was revoked at {at} (unix seconds)")]
    Revoked {
        /// The id.
        id: String,
        /// When.
        at: u64,
    },
}

impl TokenRefusal {
    /// The HTTP status the join endpoint answers with: 401 for a token it
    /// does not know or a wrong secret, 403 for one that no longer counts.
    pub fn status(&self) -> u16 {
        match self {
            Self::Unknown { .. } | Self::WrongSecret { .. } => 401,
            Self::Expired { .. } | Self::Revoked { .. } => 403,
        }
    }
}

/// What went wrong with the token store.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// `tokens.json` could not be read.
    #[error("failed to read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: FileError,
    },
    /// `tokens.json` is not a token file.
    #[error("failed to parse {}: {reason}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// serde's reason (never a secret: the file holds hashes).
        reason: String,
    },
    /// No token with this id.
    #[error("no join token with id `{0}`")]
    UnknownId(String),
    /// The store is full.
    #[error(
        "there are {MAX_RECORDS} join tokens already: revoke some (`supervisor cluster token revoke`)"
    )]
    Full,
    /// A description that is too long or not one line.
    #[error("the description must be one line of at most {MAX_DESCRIPTION_CHARS} characters")]
    Description,
    /// A lifetime out of range.
    #[error("a token lives from 1m to 365d")]
    Ttl,
    /// Writing `tokens.json` failed.
    #[error("failed to {what} {}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// `tokens.json` on disk.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    version: u32,
    tokens: Vec<TokenRecord>,
}

/// The join tokens of the cluster (`<cluster>/tokens.json`). Changes are
/// made in memory; [`TokenStore::save`] writes them (atomically, 0600).
/// Processes that change the file concurrently (the CLI and a running join
/// endpoint) go through [`TokenStore::modify`], which holds a lock across
/// read, change and write.
#[derive(Debug, Clone)]
pub struct TokenStore {
    path: PathBuf,
    pin: String,
    records: Vec<TokenRecord>,
}

impl TokenStore {
    /// An empty store that will be saved in `cluster_dir`, for the CA
    /// with `pin` (tokens it creates carry the pin).
    pub fn new(cluster_dir: &Path, pin: &str) -> TokenStore {
        TokenStore {
            path: cluster_dir.join(paths::TOKENS_FILE),
            pin: pin.to_string(),
            records: Vec::new(),
        }
    }

    /// Reads `<cluster_dir>/tokens.json` (a missing file is an empty
    /// store); `pin` is the cluster CA's.
    pub fn load(cluster_dir: &Path, pin: &str) -> Result<TokenStore, TokenError> {
        let path = cluster_dir.join(paths::TOKENS_FILE);
        let bytes = match read_regular(&path, MAX_FILE_BYTES) {
            Ok(b) => b,
            Err(FileError::Open(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(TokenStore::new(cluster_dir, pin));
            }
            Err(source) => return Err(TokenError::Read { path, source }),
        };
        // serde's text may quote a value (a secret's hash): never shown.
        let file: TokensFile = serde_json::from_slice(&bytes).map_err(|e| TokenError::Parse {
            path: path.clone(),
            reason: super::store::json_problem(&e),
        })?;
        if file.version != FILE_VERSION {
            return Err(TokenError::Parse {
                path,
                reason: format!(
                    "version {} (this supervisor reads {FILE_VERSION})",
                    file.version
                ),
            });
        }
        let mut records = file.tokens;
        records.truncate(MAX_RECORDS);
        Ok(TokenStore {
            path,
            pin: pin.to_string(),
            records,
        })
    }

    /// Loads the store under an exclusive lock (`tokens.json.lock` beside
    /// it), lets `change` modify it, saves it and releases the lock: two
    /// processes never lose each other's changes.
    pub fn modify<T>(
        cluster_dir: &Path,
        pin: &str,
        change: impl FnOnce(&mut TokenStore) -> Result<T, TokenError>,
    ) -> Result<T, TokenError> {
        let lock_path = cluster_dir.join(format!("{}.lock", paths::TOKENS_FILE));
        let _lock = super::store::lock_file(&lock_path).map_err(|source| TokenError::Io {
            what: "lock",
            path: lock_path.clone(),
            source,
        })?;
        let mut store = TokenStore::load(cluster_dir, pin)?;
        let out = change(&mut store)?;
        store.save()?;
        Ok(out)
    }

    /// Writes the store (atomically, mode 0600).
    pub fn save(&self) -> Result<(), TokenError> {
        let text = self.to_json();
        super::store::write_file_atomic(&self.path, text.as_bytes(), 0o600, None).map_err(
            |(what, source)| TokenError::Io {
                what,
                path: self.path.clone(),
                source,
            },
        )
    }

    /// The file's text.
    pub fn to_json(&self) -> String {
        let file = TokensFile {
            version: FILE_VERSION,
            tokens: self.records.clone(),
        };
        let mut s = serde_json::to_string_pretty(&file).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Where the store is saved.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes a token living `ttl` from `now` and returns it (the only time
    /// its secret is known). Prunes first; refuses when the store is full.
    pub fn create(
        &mut self,
        ttl: Duration,
        description: Option<&str>,
        clients_only: bool,
        now: u64,
    ) -> Result<JoinToken, TokenError> {
        if ttl < MIN_TTL || ttl > MAX_TTL {
            return Err(TokenError::Ttl);
        }
        let description = description.unwrap_or_default();
        if description.chars().count() > MAX_DESCRIPTION_CHARS
            || description.chars().any(char::is_control)
        {
            return Err(TokenError::Description);
        }
        self.prune(now);
        if self.records.len() >= MAX_RECORDS {
            return Err(TokenError::Full);
        }
        let id = loop {
            let id = random_chars(ID_LEN);
            if !self.records.iter().any(|r| r.id == id) {
                break id;
            }
        };
        let secret = random_chars(SECRET_LEN);
        self.records.push(TokenRecord {
            id: id.clone(),
            secret_sha256: sha256_hex(&secret),
            created: now,
            expires: now.saturating_add(ttl.as_secs()),
            revoked: None,
            description: description.to_string(),
            clients_only,
            uses: 0,
        });
        Ok(JoinToken {
            id,
            secret: Secret::new(secret),
            pin: self.pin.clone(),
        })
    }

    /// Every record, oldest first.
    pub fn list(&self) -> &[TokenRecord] {
        &self.records
    }

    /// Revokes the token `id` at `now` (revoking twice keeps the first
    /// time).
    pub fn revoke(&mut self, id: &str, now: u64) -> Result<&TokenRecord, TokenError> {
        let r = self
            .records
            .iter_mut()
            .find(|r| r.id == id)
            .ok_or_else(|| TokenError::UnknownId(id.chars().take(40).collect()))?;
        r.revoked.get_or_insert(now);
        Ok(r)
    }

    /// Checks a presented id and secret at `now`. The secret's SHA-256 is
    /// compared with the stored one in constant time; a wrong secret is
    /// reported before the token's state, so only a holder of the secret
    /// learns that a token expired or was revoked.
    pub fn check(&self, id: &str, secret: &Secret, now: u64) -> Result<&TokenRecord, TokenRefusal> {
        let shown: String = id.chars().take(ID_LEN + 2).collect();
        let presented = Sha256::digest(secret.expose().as_bytes());
        let Some(r) = self.records.iter().find(|r| r.id == id) else {
            return Err(TokenRefusal::Unknown { id: shown });
        };
        let stored = hex::decode(&r.secret_sha256).unwrap_or_default();
        if stored.len() != presented.len()
            || !bool::from(stored.as_slice().ct_eq(presented.as_slice()))
        {
            return Err(TokenRefusal::WrongSecret { id: shown });
        }
        if let Some(at) = r.revoked {
            return Err(TokenRefusal::Revoked { id: shown, at });
        }
        if now >= r.expires {
            return Err(TokenRefusal::Expired {
                id: shown,
                at: r.expires,
            });
        }
        Ok(r)
    }

    /// Counts one successful join with `id`; false when there is no such
    /// token.
    pub fn record_use(&mut self, id: &str) -> bool {
        match self.records.iter_mut().find(|r| r.id == id) {
            Some(r) => {
                r.uses = r.uses.saturating_add(1);
                true
            }
            None => false,
        }
    }

    /// Takes in another CA holder's records: the union by id; for an id
    /// both know, a revocation wins (the earlier time), and the larger use
    /// count is kept. Records past [`MAX_RECORDS`] are dropped.
    pub fn merge(&mut self, records: &[TokenRecord]) {
        for other in records {
            if let Some(mine) = self.records.iter_mut().find(|r| r.id == other.id) {
                mine.revoked = match (mine.revoked, other.revoked) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                mine.uses = mine.uses.max(other.uses);
            } else if self.records.len() < MAX_RECORDS {
                self.records.push(other.clone());
            }
        }
    }

    /// Drops records that expired more than [`PRUNE_AFTER`] before `now`.
    /// A revoked record stays until then too: dropped earlier, a CA holder
    /// that missed the revocation (offline, partitioned) would bring the
    /// still-valid token back through the sync's union by id.
    pub fn prune(&mut self, now: u64) {
        let horizon = now.saturating_sub(PRUNE_AFTER.as_secs());
        self.records.retain(|r| {
            r.ended(now)
                .is_none_or(|at| at.max(r.expires.min(now)) >= horizon)
        });
    }
}

/// What is wrong with the mode or owner of a join token file (as ssh asks
/// of a private key): group or other may read or write it, or it is not
/// owned by root (running as root) or by this user or root (otherwise).
/// `None` when it is fine or cannot be looked at (the read reports that).
pub fn token_file_problem(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Some(format!(
            "the join token file {} is open to group or others (mode {mode:04o}): a join token admits a node to the cluster; `chmod 600 {}`",
            path.display(),
            path.display()
        ));
    }
    let me = nix::unistd::Uid::effective().as_raw();
    let ok = if me == 0 {
        meta.uid() == 0
    } else {
        meta.uid() == me || meta.uid() == 0
    };
    if !ok {
        return Some(format!(
            "the join token file {} is owned by uid {}, not by {}: whoever owns it can change the token; `chown {} {}`",
            path.display(),
            meta.uid(),
            if me == 0 {
                "root".to_string()
            } else {
                format!("root or uid {me}")
            },
            if me == 0 {
                "root".to_string()
            } else {
                me.to_string()
            },
            path.display()
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const H: u64 = 3_600;

    fn store() -> TokenStore {
        TokenStore::new(Path::new("/nonexistent"), PIN)
    }

    #[test]
    fn a_token_file_open_to_others_or_owned_by_another_user_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("join-token");
        std::fs::write(&p, "t").unwrap();
        for mode in [0o644, 0o640, 0o604, 0o620, 0o602] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let why = token_file_problem(&p).unwrap();
            assert!(why.contains(&format!("(mode {mode:04o})")), "{why}");
            assert!(why.contains(&p.display().to_string()), "{why}");
        }
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(token_file_problem(&p), None);
        }
        if nix::unistd::Uid::effective().is_root() {
            nix::unistd::chown(&p, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
            let why = token_file_problem(&p).unwrap();
            assert!(why.contains("owned by uid 65534, not by root"), "{why}");
        }
    }

    #[test]
    fn a_corrupt_tokens_file_is_refused_without_quoting_its_values() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = TokenStore::new(tmp.path(), PIN);
        s.create(Duration::from_secs(H), Some("web"), false, 1000)
            .unwrap();
        s.save().unwrap();
        let path = tmp.path().join(paths::TOKENS_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        let hash = s.list()[0].secret_sha256.clone();
        // The hash where a number belongs: serde's text would quote it.
        let bad = text.replacen("\"created\": 1000", &format!("\"created\": \"{hash}\""), 1);
        assert_ne!(bad, text);
        std::fs::write(&path, bad).unwrap();
        let e = TokenStore::load(tmp.path(), PIN).unwrap_err().to_string();
        assert!(e.contains("of the wrong type at line"), "{e}");
        assert!(!e.contains(&hash), "{e}");
    }

    #[test]
    fn a_created_token_round_trips_through_parse_and_hides_its_secret() {
        let mut s = store();
        let t = s
            .create(Duration::from_secs(H), Some("web"), false, 1000)
            .unwrap();
        let text = t.expose();
        assert_eq!(JoinToken::parse(&text).unwrap(), t);
        assert_eq!(JoinToken::parse(&format!("  {text}\n")).unwrap(), t);
        assert!(text.ends_with(&format!("@{PIN}")));
        let secret = t.secret.expose().to_string();
        assert_eq!(secret.len(), SECRET_LEN);
        assert!(!format!("{t:?}").contains(&secret));
        // The store keeps only the hash.
        assert!(!s.to_json().contains(&secret));
        assert_eq!(s.list()[0].secret_sha256, sha256_hex(&secret));
        assert_eq!(s.list()[0].expires, 1000 + H);
        let (id, sec) = parse_bearer(t.bearer().expose()).unwrap();
        assert_eq!(
            (id.as_str(), sec.expose()),
            (t.id.as_str(), secret.as_str())
        );
    }

    #[test]
    fn malformed_tokens_are_refused_with_the_part_that_is_wrong() {
        let hex64 = &PIN[7..];
        let p = |s: &str| JoinToken::parse(s).unwrap_err();
        assert_eq!(p("abcdef"), TokenFormatError::Shape);
        assert_eq!(
            p(&format!("abcdef0123456789abcdef@{PIN}")),
            TokenFormatError::Shape
        );
        assert_eq!(
            p(&format!("abcde.0123456789abcdef@{PIN}")),
            TokenFormatError::Id
        );
        assert_eq!(
            p(&format!("ABCDEF.0123456789abcdef@{PIN}")),
            TokenFormatError::Id
        );
        assert_eq!(
            p(&format!("abcdef.0123456789abcde@{PIN}")),
            TokenFormatError::Secret
        );
        assert_eq!(
            p(&format!("abcdef.0123456789abcde_@{PIN}")),
            TokenFormatError::Secret
        );
        assert_eq!(
            p("abcdef.0123456789abcdef@sha256:abc"),
            TokenFormatError::Pin
        );
        assert_eq!(
            p(&format!("abcdef.0123456789abcdef@md5:{hex64}")),
            TokenFormatError::Pin
        );
        assert_eq!(
            p(&format!(
                "abcdef.0123456789abcdef@sha256:{}",
                hex64.to_uppercase()
            )),
            TokenFormatError::Pin
        );
        // No error message repeats the input (it may hold a secret).
        let e = p(&format!("abcdef.0123456789abcdeX@{PIN}")).to_string();
        assert!(!e.contains("0123456789abcde"), "{e}");
    }

    #[test]
    fn check_accepts_the_secret_and_refuses_wrong_unknown_expired_and_revoked() {
        let mut s = store();
        let t = s.create(Duration::from_secs(H), None, false, 1000).unwrap();
        assert_eq!(s.check(&t.id, &t.secret, 1000).unwrap().id, t.id);
        let wrong = Secret::new("aaaaaaaaaaaaaaaa");
        let e = s.check(&t.id, &wrong, 1000).unwrap_err();
        assert_eq!(e, TokenRefusal::WrongSecret { id: t.id.clone() });
        assert_eq!(e.status(), 401);
        let e = s.check("zzzzzz", &t.secret, 1000).unwrap_err();
        assert_eq!(e.status(), 401);
        assert!(matches!(e, TokenRefusal::Unknown { .. }));
        // Expiry is exclusive: valid up to the second before.
        assert!(s.check(&t.id, &t.secret, 1000 + H - 1).is_ok());
        let e = s.check(&t.id, &t.secret, 1000 + H).unwrap_err();
        assert_eq!(
            e,
            TokenRefusal::Expired {
                id: t.id.clone(),
                at: 1000 + H
            }
        );
        assert_eq!(e.status(), 403);
        s.revoke(&t.id, 1500).unwrap();
        let e = s.check(&t.id, &t.secret, 1600).unwrap_err();
        assert_eq!(
            e,
            TokenRefusal::Revoked {
                id: t.id.clone(),
                at: 1500
            }
        );
        assert_eq!(e.status(), 403);
        // Without the secret nobody learns that it was revoked.
        assert!(matches!(
            s.check(&t.id, &wrong, 1600).unwrap_err(),
            TokenRefusal::WrongSecret { .. }
        ));
        assert!(!e.to_string().contains(t.secret.expose()));
    }

    #[test]
    fn a_corrupt_stored_hash_is_a_wrong_secret_not_a_panic() {
        let mut s = store();
        let t = s.create(Duration::from_secs(H), None, false, 0).unwrap();
        s.records[0].secret_sha256 = "zz".into();
        assert!(matches!(
            s.check(&t.id, &t.secret, 1).unwrap_err(),
            TokenRefusal::WrongSecret { .. }
        ));
    }

    #[test]
    fn revoking_an_unknown_id_names_it_and_revoking_twice_keeps_the_first_time() {
        let mut s = store();
        let e = s.revoke("nope12", 5).unwrap_err();
        assert_eq!(e.to_string(), "no join token with id `nope12`");
        let t = s.create(Duration::from_secs(H), None, false, 0).unwrap();
        s.revoke(&t.id, 5).unwrap();
        assert_eq!(s.revoke(&t.id, 9).unwrap().revoked, Some(5));
        assert_eq!(s.list()[0].state(6), TokenState::Revoked);
    }

    #[test]
    fn ttl_parses_minutes_hours_days_within_1m_to_365d() {
        assert_eq!(parse_ttl("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_ttl("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_ttl("1m"), Ok(MIN_TTL));
        assert_eq!(parse_ttl("365d"), Ok(MAX_TTL));
        for bad in [
            "",
            "0m",
            "366d",
            "10",
            "5s",
            "xh",
            "-1h",
            "99999999999999999999d",
        ] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
        let mut s = store();
        assert!(matches!(
            s.create(Duration::from_secs(59), None, false, 0),
            Err(TokenError::Ttl)
        ));
    }

    #[test]
    fn expired_records_are_pruned_after_a_week_and_revoked_ones_a_week_after_they_expire() {
        let mut s = store();
        let week = PRUNE_AFTER.as_secs();
        let a = s.create(Duration::from_secs(H), None, false, 0).unwrap();
        let b = s
            .create(Duration::from_secs(400 * H), None, false, 0)
            .unwrap();
        let c = s
            .create(Duration::from_secs(400 * H), None, false, 0)
            .unwrap();
        s.revoke(&b.id, H).unwrap();
        s.prune(H + week - 1);
        assert_eq!(s.list().len(), 3);
        s.prune(H + week + 1);
        let ids: Vec<&str> = s.list().iter().map(|r| r.id.as_str()).collect();
        // The revoked record outlives the week: a CA holder that missed the
        // revocation must not bring the unexpired token back in a merge.
        assert_eq!(ids, vec![b.id.as_str(), c.id.as_str()]);
        assert!(!ids.contains(&a.id.as_str()));
        s.prune(400 * H + week + 1);
        assert!(s.list().is_empty());
    }

    #[test]
    fn a_full_store_refuses_new_tokens() {
        let mut s = store();
        for i in 0..MAX_RECORDS {
            s.records.push(TokenRecord {
                id: format!("{i:06}"),
                secret_sha256: String::new(),
                created: 0,
                expires: u64::MAX,
                revoked: None,
                description: String::new(),
                clients_only: false,
                uses: 0,
            });
        }
        assert!(matches!(
            s.create(Duration::from_secs(H), None, false, 0),
            Err(TokenError::Full)
        ));
    }

    #[test]
    fn merge_is_a_union_by_id_where_revocation_wins() {
        let mut a = store();
        let t1 = a.create(Duration::from_secs(H), None, false, 0).unwrap();
        let mut b = a.clone();
        let t2 = b
            .create(Duration::from_secs(H), Some("b's"), true, 0)
            .unwrap();
        b.revoke(&t1.id, 7).unwrap();
        a.record_use(&t1.id);
        a.record_use(&t1.id);
        a.merge(b.list());
        assert_eq!(a.list().len(), 2);
        let r1 = a.list().iter().find(|r| r.id == t1.id).unwrap();
        assert_eq!((r1.revoked, r1.uses), (Some(7), 2));
        let r2 = a.list().iter().find(|r| r.id == t2.id).unwrap();
        assert!(r2.clients_only);
        // Merging back the other way gives the same revocation.
        b.merge(a.list());
        assert_eq!(
            b.list().iter().find(|r| r.id == t1.id).unwrap().revoked,
            Some(7)
        );
    }

    #[test]
    fn times_are_shown_as_utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(format_utc(1_796_342_400), "2026-12-04 00:00 UTC");
        assert_eq!(format_utc(u64::MAX), format!("{} (unix)", u64::MAX));
    }

    #[test]
    fn descriptions_are_one_bounded_line() {
        let mut s = store();
        let long = "x".repeat(MAX_DESCRIPTION_CHARS + 1);
        assert!(matches!(
            s.create(Duration::from_secs(H), Some(&long), false, 0),
            Err(TokenError::Description)
        ));
        assert!(matches!(
            s.create(Duration::from_secs(H), Some("a\nb"), false, 0),
            Err(TokenError::Description)
        ));
    }

    #[test]
    fn the_store_saves_0600_and_loads_back_under_the_lock() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let t = TokenStore::modify(dir.path(), PIN, |s| {
            s.create(Duration::from_secs(H), Some("first"), false, 0)
        })
        .unwrap();
        let path = dir.path().join(paths::TOKENS_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let s = TokenStore::load(dir.path(), PIN).unwrap();
        assert_eq!(s.list().len(), 1);
        assert!(s.check(&t.id, &t.secret, 1).is_ok());
        std::fs::write(&path, "{\"version\":1,\"tokens\":[],\"extra\":1}").unwrap();
        let e = TokenStore::load(dir.path(), PIN).unwrap_err();
        assert!(e.to_string().starts_with("failed to parse"), "{e}");
    }
}

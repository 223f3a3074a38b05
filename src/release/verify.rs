//! OpenPGP verification of `SHA256SUMS` files and the [`VerifiedArtifact`]
//! type.
//!
//! Owns the trusted keyring (HashiCorp's embedded release key plus any extra
//! key files) and this acceptance policy (tested against the real signed
//! vectors in `tests/data/hashicorp-release/`):
//!
//! * the issuer must be a trusted primary key or one of its signing subkeys;
//! * the signature's creation time must lie between the signing key's
//!   creation and its expiry as given by its newest valid self-signature,
//!   whatever the time now (a signature made while the key was valid stays
//!   valid, one made after the key's expiry is refused);
//! * the self-signature is not required to predate the signature (HashiCorp
//!   renews bindings and re-signs old releases);
//! * hash algorithms SHA-256 or SHA-512 only.
//!
//! It must not touch the network or the disk beyond reading key files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{PublicKey, PublicSubkey, Signature, SignatureType};
use pgp::types::{KeyDetails, KeyId, Tag};

use crate::plan::Product;

// Provenance (as tests/data/hashicorp-release/README.md records): both files are
// byte-for-byte copies of `internal/pubkey/pubkey.go` in `hashicorp/hc-install`.
// The renewed copy is the `DefaultPublicKey` constant at commit
// e1c44a506777b7bc9b11a15ec82f06f1964e9be5 (2026-02-18 self-signatures, plus
// the 2021 binding of subkey B0B441097685B676); the legacy copy is the same
// file at commit aad5cfb75930667b43b1d8ef39060f3ccfcc853f (2021
// self-signatures, expired 2026-04-18). Loading both, legacy then renewed,
// gives the full binding history.
/// HashiCorp's release key, legacy copy (2021 self-signatures).
const HASHICORP_KEY_LEGACY: &str =
    include_str!("keys/hashicorp-release-key-legacy-expired-2026-04-18.asc");
/// HashiCorp's release key, renewed copy (2026-02-18 self-signatures).
const HASHICORP_KEY_RENEWED: &str = include_str!("keys/hashicorp-release-key.asc");

/// Pinned primary fingerprint of HashiCorp's release key
/// (C874 011F 0AB4 0511 0D02 1055 3436 5D94 72D7 468F).
pub const HASHICORP_FINGERPRINT: &str = "c874011f0ab405110d02105534365d9472d7468f";

/// Short id of HashiCorp's key, used in the preferred signature file name
/// (`<product>_<ver>_SHA256SUMS.72D7468F.sig`, as hc-install fetches it).
pub const HASHICORP_SHORT_KEY_ID: &str = "72D7468F";

/// Why a signature, key or checksum file was refused.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A key file could not be read.
    #[error("failed to read key file {}", path.display())]
    ReadKey {
        /// The key file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: crate::role::file::FileError,
    },
    /// A key file is not an OpenPGP public key.
    #[error("failed to parse OpenPGP key {origin}")]
    ParseKey {
        /// Where the key came from.
        origin: String,
        /// The cause.
        #[source]
        source: Box<pgp::errors::Error>,
    },
    /// No key is trusted at all.
    #[error("no trusted key: the HashiCorp key is disabled and no extra key is configured")]
    NoTrustedKey,
    /// The signature file holds no OpenPGP signature.
    #[error("failed to parse the OpenPGP signature")]
    ParseSignature(#[source] Box<pgp::errors::Error>),
    /// The signature file holds no signature packet.
    #[error("the signature file holds no signature")]
    EmptySignature,
    /// No signature was made by a trusted key.
    #[error("signature made by key {issuer}, which is not trusted")]
    UnknownKey {
        /// The issuer key id(s) named by the signature.
        issuer: String,
    },
    /// The signature uses a hash algorithm outside the policy.
    #[error("signature uses hash algorithm {0:?}; only SHA-256 and SHA-512 are accepted")]
    WeakHash(HashAlgorithm),
    /// The signature is not a binary document signature.
    #[error("signature has type {0:?}, expected a binary document signature")]
    WrongType(Option<SignatureType>),
    /// The signature has no creation time.
    #[error("signature has no creation time")]
    NoCreationTime,
    /// The signature was made outside the signing key's validity.
    #[error(
        "signature made at {created} by key {key}, outside the key's validity ({valid_from} to {valid_until})"
    )]
    OutsideValidity {
        /// The signing key id.
        key: String,
        /// Signature creation (unix seconds).
        created: u32,
        /// Key creation (unix seconds).
        valid_from: u32,
        /// Key expiry (unix seconds), or "never".
        valid_until: String,
    },
    /// The signature names more than one issuer.
    #[error("signature names conflicting issuers {0}")]
    ConflictingIssuers(String),
    /// The signing key was revoked.
    #[error("signing key {0} is revoked")]
    Revoked(String),
    /// The cryptographic check failed: the data or the signature was altered.
    #[error("bad signature by key {key}: the signed file or the signature was altered")]
    BadSignature {
        /// The signing key id.
        key: String,
        /// The cause.
        #[source]
        source: Box<pgp::errors::Error>,
    },
    /// The embedded HashiCorp key does not carry the pinned fingerprint.
    #[error("embedded HashiCorp key has fingerprint {0}, not the pinned one")]
    PinnedFingerprint(String),
    /// A `SHA256SUMS` file is malformed.
    #[error("malformed SHA256SUMS line {line}")]
    MalformedSums {
        /// 1-based line number.
        line: usize,
    },
}

/// One key that may sign: a primary or a signing subkey, with the window
/// in which its signatures are accepted.
#[derive(Debug, Clone)]
struct Signer {
    key: SignerKey,
    /// Creation time (unix seconds).
    created: u32,
    /// Expiry per the newest valid self-signature (unix seconds), if any.
    expires: Option<u32>,
    /// Expiry of the primary this signer belongs to.
    primary_expires: Option<u32>,
    revoked: bool,
}

#[derive(Debug, Clone)]
enum SignerKey {
    Primary(PublicKey),
    Subkey(PublicSubkey),
}

impl SignerKey {
    fn key_id(&self) -> KeyId {
        match self {
            Self::Primary(k) => k.legacy_key_id(),
            Self::Subkey(k) => k.legacy_key_id(),
        }
    }

    fn fingerprint_hex(&self) -> String {
        match self {
            Self::Primary(k) => hex::encode(k.fingerprint().as_bytes()),
            Self::Subkey(k) => hex::encode(k.fingerprint().as_bytes()),
        }
    }

    fn verify(&self, sig: &Signature, data: &[u8]) -> pgp::errors::Result<()> {
        match self {
            Self::Primary(k) => sig.verify(k, data),
            Self::Subkey(k) => sig.verify(k, data),
        }
    }
}

/// The set of keys whose signatures we accept.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    signers: Vec<Signer>,
    /// Primary fingerprints (lowercase hex), for reports.
    primaries: Vec<String>,
}

impl Keyring {
    /// HashiCorp's embedded release key, both copies merged, checked against
    /// the pinned fingerprint.
    pub fn hashicorp() -> Result<Keyring, VerifyError> {
        let mut keys = parse_keys(HASHICORP_KEY_LEGACY, "embedded HashiCorp key (legacy copy)")?;
        keys.extend(parse_keys(
            HASHICORP_KEY_RENEWED,
            "embedded HashiCorp key (renewed copy)",
        )?);
        let ring = Keyring::from_keys(&keys);
        if ring.primaries.len() != 1 || ring.primaries[0] != HASHICORP_FINGERPRINT {
            return Err(VerifyError::PinnedFingerprint(ring.primaries.join(",")));
        }
        Ok(ring)
    }

    /// The keyring a release plan asks for: HashiCorp's key when trusted,
    /// plus every extra key file.
    pub fn for_plan(trust_hashicorp: bool, extra: &[PathBuf]) -> Result<Keyring, VerifyError> {
        let mut ring = if trust_hashicorp {
            Keyring::hashicorp()?
        } else {
            Keyring::default()
        };
        for path in extra {
            ring.add_file(path)?;
        }
        if ring.signers.is_empty() {
            return Err(VerifyError::NoTrustedKey);
        }
        Ok(ring)
    }

    /// Adds the keys of an armored or binary OpenPGP public key file.
    pub fn add_file(&mut self, path: &Path) -> Result<(), VerifyError> {
        let bytes = crate::role::file::read_regular(path, crate::role::limits::KEY_FILE_BYTES)
            .map_err(|source| VerifyError::ReadKey {
                path: path.to_path_buf(),
                source,
            })?;
        let origin = path.display().to_string();
        let keys = parse_key_bytes(&bytes, &origin)?;
        let other = Keyring::from_keys(&keys);
        self.signers.extend(other.signers);
        self.primaries.extend(other.primaries);
        Ok(())
    }

    /// Builds signers from parsed certificates, merging copies of the same
    /// primary key so that every binding signature ever published is seen.
    fn from_keys(keys: &[SignedPublicKey]) -> Keyring {
        let mut by_primary: BTreeMap<String, Vec<&SignedPublicKey>> = BTreeMap::new();
        for k in keys {
            by_primary
                .entry(hex::encode(k.primary_key.fingerprint().as_bytes()))
                .or_default()
                .push(k);
        }
        let mut ring = Keyring::default();
        for (fpr, copies) in by_primary {
            let primary = copies[0].primary_key.clone();
            let (p_expires, p_can_sign) = primary_validity(&primary, &copies);
            let p_revoked = copies.iter().any(|c| {
                c.details
                    .revocation_signatures
                    .iter()
                    .any(|s| s.verify_key(&primary).is_ok())
            });
            let p_created = primary.created_at().as_secs();
            if p_can_sign {
                ring.signers.push(Signer {
                    key: SignerKey::Primary(primary.clone()),
                    created: p_created,
                    expires: p_expires,
                    primary_expires: p_expires,
                    revoked: p_revoked,
                });
            }
            // Subkeys, merged by fingerprint across copies.
            let mut subkeys: BTreeMap<String, (PublicSubkey, Vec<&Signature>)> = BTreeMap::new();
            for c in &copies {
                for sk in &c.public_subkeys {
                    let e = subkeys
                        .entry(hex::encode(sk.key.fingerprint().as_bytes()))
                        .or_insert_with(|| (sk.key.clone(), Vec::new()));
                    e.1.extend(sk.signatures.iter());
                }
            }
            for (_, (subkey, sigs)) in subkeys {
                let mut newest: Option<&Signature> = None;
                let mut revoked = p_revoked;
                for s in sigs {
                    if s.verify_subkey_binding(&primary, &subkey).is_err() {
                        continue;
                    }
                    match s.typ() {
                        Some(SignatureType::SubkeyRevocation) => revoked = true,
                        Some(SignatureType::SubkeyBinding) => {
                            let newer = match (newest.and_then(|n| n.created()), s.created()) {
                                (None, _) => true,
                                (Some(a), Some(b)) => b.as_secs() >= a.as_secs(),
                                (Some(_), None) => false,
                            };
                            if newer {
                                newest = Some(s);
                            }
                        }
                        _ => {}
                    }
                }
                let Some(binding) = newest else { continue };
                if !binding.key_flags().sign() {
                    continue;
                }
                // A signing subkey must cross-certify its primary (RFC 4880
                // 5.2.1, the 0x19 back-signature), so that nobody can claim
                // someone else's signing key as their subkey.
                let back_ok = binding
                    .embedded_signature()
                    .is_some_and(|b| b.verify_primary_key_binding(&subkey, &primary).is_ok());
                if !back_ok {
                    continue;
                }
                let created = subkey.created_at().as_secs();
                ring.signers.push(Signer {
                    key: SignerKey::Subkey(subkey),
                    created,
                    expires: expiry(created, binding),
                    primary_expires: p_expires,
                    revoked,
                });
            }
            ring.primaries.push(fpr);
        }
        ring
    }

    /// Lowercase hex fingerprints of the trusted primary keys.
    pub fn primary_fingerprints(&self) -> &[String] {
        &self.primaries
    }

    /// Verifies a detached signature (binary or armored) over `data` under
    /// the policy of this module. Returns the signing key's fingerprint.
    pub fn verify_detached(&self, data: &[u8], sig_bytes: &[u8]) -> Result<String, VerifyError> {
        let sigs = parse_signatures(sig_bytes)?;
        let mut first_err = None;
        for sig in &sigs {
            match self.verify_one(data, sig) {
                Ok(fpr) => return Ok(fpr),
                Err(e) => {
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                }
            }
        }
        Err(first_err.unwrap_or(VerifyError::EmptySignature))
    }

    fn verify_one(&self, data: &[u8], sig: &Signature) -> Result<String, VerifyError> {
        let issuers: Vec<KeyId> = issuer_ids(sig);
        let signer = self
            .signers
            .iter()
            .find(|s| issuers.contains(&s.key.key_id()))
            .ok_or_else(|| VerifyError::UnknownKey {
                issuer: if issuers.is_empty() {
                    "(none named)".to_string()
                } else {
                    issuers.iter().map(key_hex).collect::<Vec<_>>().join(",")
                },
            })?;
        let key_name = key_hex(&signer.key.key_id());
        // Every issuer claim (including the unhashed ones, which the
        // signature does not cover) must name the same key: an altered
        // claim means an altered signature file.
        if issuers.len() != 1 {
            return Err(VerifyError::ConflictingIssuers(
                issuers.iter().map(key_hex).collect::<Vec<_>>().join(","),
            ));
        }
        if signer.revoked {
            return Err(VerifyError::Revoked(key_name));
        }
        match sig.typ() {
            Some(SignatureType::Binary) => {}
            other => return Err(VerifyError::WrongType(other)),
        }
        match sig.hash_alg() {
            Some(HashAlgorithm::Sha256 | HashAlgorithm::Sha512) => {}
            Some(other) => return Err(VerifyError::WeakHash(other)),
            None => return Err(VerifyError::WrongType(None)),
        }
        let created = sig.created().ok_or(VerifyError::NoCreationTime)?.as_secs();
        let until = match (signer.expires, signer.primary_expires) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let inside = created >= signer.created && until.is_none_or(|u| created < u);
        if !inside {
            return Err(VerifyError::OutsideValidity {
                key: key_name,
                created,
                valid_from: signer.created,
                valid_until: until.map_or_else(|| "never".to_string(), |u| u.to_string()),
            });
        }
        signer
            .key
            .verify(sig, data)
            .map_err(|source| VerifyError::BadSignature {
                key: key_name,
                source: Box::new(source),
            })?;
        Ok(signer.key.fingerprint_hex())
    }
}

/// Issuer key ids named by a signature (issuer subpacket or the low 64 bits
/// of an issuer fingerprint).
fn issuer_ids(sig: &Signature) -> Vec<KeyId> {
    let mut ids: Vec<KeyId> = sig.issuer_key_id().into_iter().cloned().collect();
    for fpr in sig.issuer_fingerprint() {
        let b = fpr.as_bytes();
        if b.len() >= 8 {
            let mut id = [0u8; 8];
            id.copy_from_slice(&b[b.len() - 8..]);
            ids.push(KeyId::from(id));
        }
    }
    ids.dedup_by(|a, b| a.as_ref() == b.as_ref());
    let mut uniq: Vec<KeyId> = Vec::new();
    for id in ids {
        if !uniq.iter().any(|u| u.as_ref() == id.as_ref()) {
            uniq.push(id);
        }
    }
    uniq
}

/// Uppercase hex of a key id, as gpg prints it.
fn key_hex(id: &KeyId) -> String {
    hex::encode_upper(id.as_ref())
}

/// Expiry (unix seconds) of a key created at `created` per `sig`'s key
/// expiration subpacket; none when absent or zero.
fn expiry(created: u32, sig: &Signature) -> Option<u32> {
    sig.key_expiration_time()
        .map(|d| d.as_secs())
        .filter(|d| *d != 0)
        .map(|d| created.saturating_add(d))
}

/// The primary's expiry and sign capability per its newest valid
/// self-signature (direct-key or user-id certification).
fn primary_validity(primary: &PublicKey, copies: &[&SignedPublicKey]) -> (Option<u32>, bool) {
    let mut newest: Option<&Signature> = None;
    let mut valid: Vec<&Signature> = Vec::new();
    for c in copies {
        for s in &c.details.direct_signatures {
            if s.verify_key(primary).is_ok() {
                valid.push(s);
            }
        }
        for u in &c.details.users {
            for s in &u.signatures {
                if s.is_certification()
                    && s.verify_certification(primary, Tag::UserId, &u.id).is_ok()
                {
                    valid.push(s);
                }
            }
        }
    }
    for s in valid {
        let newer = match (newest.and_then(|n| n.created()), s.created()) {
            (None, _) => true,
            (Some(a), Some(b)) => b.as_secs() >= a.as_secs(),
            (Some(_), None) => false,
        };
        if newer {
            newest = Some(s);
        }
    }
    match newest {
        Some(s) => {
            let flags = s.key_flags();
            // No key-flags subpacket at all: the primary may sign (RFC 4880).
            let can_sign = flags.sign() || !(flags.certify() || flags.encrypt_comms());
            (expiry(primary.created_at().as_secs(), s), can_sign)
        }
        None => (None, false),
    }
}

/// Checks that `bytes` (armored or binary) hold at least one OpenPGP public
/// key, exactly as [`Keyring::add_file`] will parse them: `check` uses it so
/// that a wrong trusted key file is refused before any fetch.
pub fn check_public_key_bytes(bytes: &[u8], origin: &str) -> Result<(), VerifyError> {
    parse_key_bytes(bytes, origin).map(drop)
}

fn parse_keys(armored: &str, origin: &str) -> Result<Vec<SignedPublicKey>, VerifyError> {
    parse_key_bytes(armored.as_bytes(), origin)
}

fn parse_key_bytes(bytes: &[u8], origin: &str) -> Result<Vec<SignedPublicKey>, VerifyError> {
    let err = |source| VerifyError::ParseKey {
        origin: origin.to_string(),
        source: Box::new(source),
    };
    let iter = SignedPublicKey::from_reader_many(bytes).map_err(err)?.0;
    let mut out = Vec::new();
    for k in iter {
        out.push(k.map_err(err)?);
    }
    if out.is_empty() {
        return Err(VerifyError::ParseKey {
            origin: origin.to_string(),
            source: Box::new(pgp::errors::Error::from(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "no public key in the file",
            ))),
        });
    }
    Ok(out)
}

/// Checks the encoding of the MPIs of every signature packet in `bytes`
/// (binary or armored). rPGP ignores an MPI's declared bit count, so a flip
/// of it would go unnoticed; we accept the canonical count or a count padded
/// to the full byte length (HashiCorp's 2021 signatures carry the latter),
/// nothing else.
fn check_mpi_encoding(bytes: &[u8]) -> Result<(), VerifyError> {
    let raw: Vec<u8>;
    let bin: &[u8] = if bytes.starts_with(b"-----BEGIN") {
        let mut d = pgp::armor::Dearmor::new(std::io::BufReader::new(bytes));
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut d, &mut out)
            .map_err(|e| VerifyError::ParseSignature(Box::new(pgp::errors::Error::from(e))))?;
        raw = out;
        &raw
    } else {
        bytes
    };
    let malformed = || {
        VerifyError::ParseSignature(Box::new(pgp::errors::Error::from(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "malformed signature packet encoding",
        ))))
    };
    let mut rest = bin;
    while !rest.is_empty() {
        let (tag, body, next) = split_packet(rest).ok_or_else(malformed)?;
        rest = next;
        if tag != 2 {
            continue;
        }
        if body.first() != Some(&4) || body.len() < 6 {
            continue; // not v4: rPGP's own checks apply
        }
        let mut i = 4;
        let area_len = |i: usize| -> Result<usize, VerifyError> {
            Ok(usize::from(u16::from_be_bytes([
                *body.get(i).ok_or_else(malformed)?,
                *body.get(i + 1).ok_or_else(malformed)?,
            ])))
        };
        i += 2 + area_len(i)?;
        let unhashed_len = area_len(i)?;
        let unhashed = body
            .get(i + 2..i + 2 + unhashed_len)
            .ok_or_else(malformed)?;
        check_unhashed(unhashed).ok_or_else(malformed)?;
        i += 2 + unhashed_len;
        i += 2; // left 16 bits of the hash
        if i > body.len() {
            return Err(malformed());
        }
        while i < body.len() {
            let bits = usize::from(u16::from_be_bytes([
                *body.get(i).ok_or_else(malformed)?,
                *body.get(i + 1).ok_or_else(malformed)?,
            ]));
            let len = bits.div_ceil(8);
            let value = body.get(i + 2..i + 2 + len).ok_or_else(malformed)?;
            let actual = value.iter().position(|b| *b != 0).map_or(0, |p| {
                (len - p - 1) * 8 + (8 - value[p].leading_zeros() as usize)
            });
            if bits != actual && bits != len * 8 {
                return Err(malformed());
            }
            i += 2 + len;
        }
    }
    Ok(())
}

/// The unhashed subpacket area is not covered by the signature: we allow
/// only issuer claims there (key id 16, fingerprint 33), which are checked
/// against the signer. Anything else there is an altered file.
fn check_unhashed(mut area: &[u8]) -> Option<()> {
    while !area.is_empty() {
        let l0 = usize::from(area[0]);
        let (hlen, len) = match l0 {
            0..=191 => (1, l0),
            192..=254 => (2, ((l0 - 192) << 8) + usize::from(*area.get(1)?) + 192),
            _ => (
                5,
                usize::try_from(u32::from_be_bytes([
                    *area.get(1)?,
                    *area.get(2)?,
                    *area.get(3)?,
                    *area.get(4)?,
                ]))
                .ok()?,
            ),
        };
        let sub = area.get(hlen..hlen + len)?;
        match (sub.first()?, sub.len()) {
            (16, 9) | (33, 22) => {}
            _ => return None,
        }
        area = &area[hlen + len..];
    }
    Some(())
}

/// Splits one OpenPGP packet off `b`: (tag, body, rest).
fn split_packet(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let h = *b.first()?;
    if h & 0x80 == 0 {
        return None;
    }
    let (tag, hlen, len): (u8, usize, usize) = if h & 0x40 != 0 {
        let tag = h & 0x3f;
        let l0 = usize::from(*b.get(1)?);
        match l0 {
            0..=191 => (tag, 2, l0),
            192..=223 => (tag, 3, ((l0 - 192) << 8) + usize::from(*b.get(2)?) + 192),
            255 => {
                let l = u32::from_be_bytes([*b.get(2)?, *b.get(3)?, *b.get(4)?, *b.get(5)?]);
                (tag, 6, usize::try_from(l).ok()?)
            }
            _ => return None, // partial lengths never frame a signature
        }
    } else {
        let tag = (h >> 2) & 0x0f;
        match h & 0x03 {
            0 => (tag, 2, usize::from(*b.get(1)?)),
            1 => (
                tag,
                3,
                usize::from(u16::from_be_bytes([*b.get(1)?, *b.get(2)?])),
            ),
            2 => {
                let l = u32::from_be_bytes([*b.get(1)?, *b.get(2)?, *b.get(3)?, *b.get(4)?]);
                (tag, 5, usize::try_from(l).ok()?)
            }
            _ => return None,
        }
    };
    let body = b.get(hlen..hlen.checked_add(len)?)?;
    Some((tag, body, &b[hlen + len..]))
}

fn parse_signatures(bytes: &[u8]) -> Result<Vec<Signature>, VerifyError> {
    check_mpi_encoding(bytes)?;
    let iter = DetachedSignature::from_reader_many(bytes)
        .map_err(|e| VerifyError::ParseSignature(Box::new(e)))?
        .0;
    let mut out = Vec::new();
    for s in iter {
        out.push(
            s.map_err(|e| VerifyError::ParseSignature(Box::new(e)))?
                .signature,
        );
    }
    if out.is_empty() {
        return Err(VerifyError::EmptySignature);
    }
    Ok(out)
}

/// A parsed `SHA256SUMS` file: file name → lowercase hex SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sha256Sums {
    entries: BTreeMap<String, String>,
}

impl Sha256Sums {
    /// Parses `<64 hex><two spaces><filename>` lines (a `*` binary marker
    /// before the name is tolerated). Blank lines are skipped.
    pub fn parse(text: &[u8]) -> Result<Sha256Sums, VerifyError> {
        let text = std::str::from_utf8(text).map_err(|_| VerifyError::MalformedSums { line: 0 })?;
        let mut entries = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let bad = VerifyError::MalformedSums { line: i + 1 };
            let (hash, rest) = line.split_once(' ').ok_or(bad)?;
            let name = rest.trim_start_matches(' ').trim_start_matches('*');
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) || name.is_empty() {
                return Err(VerifyError::MalformedSums { line: i + 1 });
            }
            entries.insert(name.to_string(), hash.to_ascii_lowercase());
        }
        Ok(Sha256Sums { entries })
    }

    /// The hash of a file name, if listed.
    pub fn get(&self, file: &str) -> Option<&str> {
        self.entries.get(file).map(String::as_str)
    }
}

/// A downloaded release zip whose SHA-256 matched a line of a `SHA256SUMS`
/// file whose signature verified. Only [`crate::release`]'s verification
/// builds one; installation accepts nothing else.
#[derive(Debug)]
pub struct VerifiedArtifact {
    pub(super) product: Product,
    pub(super) version: semver::Version,
    pub(super) zip: super::fsutil::TempPath,
    pub(super) zip_name: String,
    pub(super) zip_sha256: String,
    pub(super) signer: String,
}

impl VerifiedArtifact {
    /// Builds the proof of verification. Private to the release module: the
    /// caller has checked `sha256` against a signed `SHA256SUMS` line.
    pub(super) fn new(
        product: Product,
        version: semver::Version,
        zip: super::fsutil::TempPath,
        zip_name: String,
        zip_sha256: String,
        signer: String,
    ) -> VerifiedArtifact {
        VerifiedArtifact {
            product,
            version,
            zip,
            zip_name,
            zip_sha256,
            signer,
        }
    }

    /// Product of the artifact.
    pub fn product(&self) -> Product {
        self.product
    }

    /// Version of the artifact.
    pub fn version(&self) -> &semver::Version {
        &self.version
    }

    /// SHA-256 of the zip (lowercase hex), as signed.
    pub fn zip_sha256(&self) -> &str {
        &self.zip_sha256
    }

    /// Fingerprint of the key that signed the `SHA256SUMS`.
    pub fn signer(&self) -> &str {
        &self.signer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_key_carries_the_pinned_fingerprint() {
        let ring = Keyring::hashicorp().expect("embedded key loads");
        assert_eq!(ring.primary_fingerprints(), [HASHICORP_FINGERPRINT]);
    }

    #[test]
    fn parses_sums_lines() {
        let s = Sha256Sums::parse(
            b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef  consul_1.2.3_linux_amd64.zip\n",
        )
        .expect("parses");
        assert_eq!(
            s.get("consul_1.2.3_linux_amd64.zip"),
            Some("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
        );
        assert!(s.get("other").is_none());
    }

    #[test]
    fn refuses_malformed_sums() {
        assert!(Sha256Sums::parse(b"abc  file\n").is_err());
        assert!(Sha256Sums::parse(b"nospace\n").is_err());
    }
}

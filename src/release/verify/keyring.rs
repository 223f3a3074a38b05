//! The trusted keyring and the signature acceptance policy.
//!
//! Owns the keys we trust (HashiCorp's embedded release key, pinned by
//! fingerprint, plus any extra key files) and this policy (tested against
//! the real signed vectors in `tests/data/hashicorp-release/`):
//!
//! * the issuer must be a trusted primary key or one of its signing subkeys
//!   (a subkey only with a valid back-signature);
//! * the signature's creation time must lie between the signing key's
//!   creation and its expiry as given by its newest valid self-signature,
//!   whatever the time now (a signature made while the key was valid stays
//!   valid, one made after the key's expiry is refused);
//! * the self-signature is not required to predate the signature (HashiCorp
//!   renews bindings and re-signs old releases);
//! * hash algorithms SHA-256 or SHA-512 only.
//!
//! It reads key files but never touches the network; the bytes of a
//! signature file are read by [`super::packet`], not here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pgp::composed::SignedPublicKey;
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{PublicKey, PublicSubkey, Signature, SignatureType};
use pgp::types::{KeyDetails, KeyId, Tag};

use super::VerifyError;
use super::packet::parse_signatures;

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
    include_str!("../keys/hashicorp-release-key-legacy-expired-2026-04-18.asc");
/// HashiCorp's release key, renewed copy (2026-02-18 self-signatures).
const HASHICORP_KEY_RENEWED: &str = include_str!("../keys/hashicorp-release-key.asc");

/// Pinned primary fingerprint of HashiCorp's release key
/// (C874 011F 0AB4 0511 0D02 1055 3436 5D94 72D7 468F).
pub const HASHICORP_FINGERPRINT: &str = "c874011f0ab405110d02105534365d9472d7468f";

/// Short id of HashiCorp's key, used in the preferred signature file name
/// (`<product>_<ver>_SHA256SUMS.72D7468F.sig`, as hc-install fetches it).
pub const HASHICORP_SHORT_KEY_ID: &str = "72D7468F";

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
                        Some(SignatureType::SubkeyBinding) if is_newest(newest, s) => {
                            newest = Some(s);
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
/// Whether `s` replaces `newest` as the newest self-signature seen: the
/// first one does, a later one when it was made at the same time or after
/// (a signature without a creation time never replaces one that has it).
fn is_newest(newest: Option<&Signature>, s: &Signature) -> bool {
    match (newest.and_then(|n| n.created()), s.created()) {
        (None, _) => true,
        (Some(a), Some(b)) => b.as_secs() >= a.as_secs(),
        (Some(_), None) => false,
    }
}

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
        if is_newest(newest, s) {
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

fn parse_keys(armored: &str, origin: &str) -> Result<Vec<SignedPublicKey>, VerifyError> {
    parse_key_bytes(armored.as_bytes(), origin)
}

/// The keys of a key file, parsed as `check` parsed them
/// ([`crate::openpgp::parse_public_keys`]).
fn parse_key_bytes(bytes: &[u8], origin: &str) -> Result<Vec<SignedPublicKey>, VerifyError> {
    crate::openpgp::parse_public_keys(bytes).map_err(|source| VerifyError::ParseKey {
        origin: origin.to_string(),
        source: Box::new(source),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_key_carries_the_pinned_fingerprint() {
        let ring = Keyring::hashicorp().expect("embedded key loads");
        assert_eq!(ring.primary_fingerprints(), [HASHICORP_FINGERPRINT]);
    }
}

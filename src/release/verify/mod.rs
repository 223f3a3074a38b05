//! Verification of a release: OpenPGP signatures of `SHA256SUMS` files, and
//! the [`VerifiedArtifact`] type that only verification builds.
//!
//! * `keyring`: the trusted keys (HashiCorp's pinned release key, extra
//!   key files) and the acceptance policy of a signature;
//! * `packet`: reading a signature file (untrusted bytes) into signature
//!   packets, with the encoding checks rPGP leaves out;
//! * `sums`: parsing a `SHA256SUMS` file.
//!
//! This module owns [`VerifyError`], the one error of all three. It must not
//! touch the network or the disk beyond reading key files.

mod keyring;
mod packet;
mod sums;

use std::path::PathBuf;

use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::SignatureType;

use crate::vocab::Product;

pub use keyring::{HASHICORP_FINGERPRINT, HASHICORP_SHORT_KEY_ID, Keyring};
pub use sums::Sha256Sums;

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

//! Trust in a join endpoint by the CA its join token pins (as kubeadm's
//! `--discovery-token-ca-cert-hash`): of the certificates the endpoint
//! presents, the one whose SubjectPublicKeyInfo hashes to the pin becomes
//! the only root, and the leaf is then verified by webpki against it for
//! [`paths::JOIN_SERVER_NAME`] (whatever address was dialled). No system
//! root, no other name, no "trust on first use".
//!
//! Owns the verifier and the SPKI pin of a DER certificate. It must not
//! do I/O: the join client (`join_client`) dials and maps what the
//! verifier saw into its error.

use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::paths;

/// The prefix of a pin: `sha256:<64 lowercase hex>`.
pub const PIN_PREFIX: &str = "sha256:";

/// Why a certificate's pin could not be computed.
#[derive(Debug, thiserror::Error)]
#[error("failed to parse a presented certificate: {reason}")]
pub struct PinError {
    /// What the DER parser said.
    pub reason: String,
}

/// `sha256:<hex>` of the SubjectPublicKeyInfo DER of the certificate
/// `der`.
pub fn pin_of_der(der: &[u8]) -> Result<String, PinError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| PinError {
        reason: e.to_string(),
    })?;
    let spki = cert.tbs_certificate.subject_pki.raw;
    Ok(format!("{PIN_PREFIX}{}", hex::encode(Sha256::digest(spki))))
}

/// What the endpoint presented when the pin did not match: the pins of
/// the presented CA (the last certificate of the chain, which is the root
/// a well-formed endpoint sends) and what the token pins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinMismatch {
    /// `sha256:<hex>` of the last certificate presented.
    pub presented: String,
    /// The token's pin.
    pub pinned: String,
}

/// The ring provider every TLS config of the join uses (the one reqwest
/// already pulls in; no second TLS stack).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A [`ServerCertVerifier`] that trusts only the CA whose SPKI hash is the
/// pin, for the name [`paths::JOIN_SERVER_NAME`].
#[derive(Debug)]
pub struct PinnedCaVerifier {
    pin: String,
    provider: Arc<CryptoProvider>,
    /// Set when the presented chain held no certificate with the pin; the
    /// client reads it to say which CA the endpoint has.
    mismatch: Mutex<Option<PinMismatch>>,
}

impl PinnedCaVerifier {
    /// A verifier for `pin` (`sha256:<hex>`, compared in lowercase).
    pub fn new(pin: &str, provider: Arc<CryptoProvider>) -> Self {
        Self {
            pin: pin.to_ascii_lowercase(),
            provider,
            mismatch: Mutex::new(None),
        }
    }

    /// The pin this verifier trusts.
    pub fn pin(&self) -> &str {
        &self.pin
    }

    /// What the last handshake presented, when it was refused for its CA.
    pub fn mismatch(&self) -> Option<PinMismatch> {
        self.mismatch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn record_mismatch(&self, presented: String) {
        *self
            .mismatch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(PinMismatch {
            presented,
            pinned: self.pin.clone(),
        });
    }
}

fn bad_encoding() -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut anchor = None;
        let mut last = None;
        for cert in std::iter::once(end_entity).chain(intermediates) {
            let pin = pin_of_der(cert).map_err(|_| bad_encoding())?;
            if anchor.is_none() && pin == self.pin {
                anchor = Some(cert);
            }
            last = Some(pin);
        }
        let Some(anchor) = anchor else {
            self.record_mismatch(last.unwrap_or_default());
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ));
        };
        let mut roots = RootCertStore::empty();
        roots
            .add(anchor.clone().into_owned())
            .map_err(|_| bad_encoding())?;
        let webpki =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(format!("failed to build a verifier: {e}")))?;
        let name = ServerName::try_from(paths::JOIN_SERVER_NAME)
            .map_err(|e| rustls::Error::General(format!("bad join server name: {e}")))?;
        // The pinned CA itself presented as the leaf is no endpoint
        // certificate: webpki refuses a CA as end entity.
        webpki.verify_server_cert(end_entity, intermediates, &name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, PublicKeyData};

    struct Ca {
        cert: rcgen::Certificate,
        issuer: rcgen::Issuer<'static, KeyPair>,
    }

    fn ca() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let cert = p.self_signed(&key).unwrap();
        let issuer = rcgen::Issuer::new(p, key);
        Ca { cert, issuer }
    }

    fn leaf(ca: &Ca, name: &str) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let p = CertificateParams::new(vec![name.to_string()]).unwrap();
        p.signed_by(&key, &ca.issuer).unwrap().der().clone()
    }

    fn verify(
        v: &PinnedCaVerifier,
        chain: &[CertificateDer<'static>],
    ) -> Result<(), rustls::Error> {
        let name = ServerName::try_from("192.0.2.1").unwrap();
        v.verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn the_pinned_ca_verifies_the_join_name_whatever_address_was_dialled() {
        let ca = ca();
        let pin = pin_of_der(ca.cert.der()).unwrap();
        let v = PinnedCaVerifier::new(&pin, provider());
        let chain = [leaf(&ca, paths::JOIN_SERVER_NAME), ca.cert.der().clone()];
        verify(&v, &chain).unwrap();
        assert_eq!(v.mismatch(), None);
    }

    #[test]
    fn another_ca_is_refused_and_both_pins_are_recorded() {
        let ours = ca();
        let theirs = ca();
        let pin = pin_of_der(ours.cert.der()).unwrap();
        let v = PinnedCaVerifier::new(&pin, provider());
        let chain = [
            leaf(&theirs, paths::JOIN_SERVER_NAME),
            theirs.cert.der().clone(),
        ];
        assert!(verify(&v, &chain).is_err());
        let m = v.mismatch().unwrap();
        assert_eq!(m.pinned, pin);
        assert_eq!(m.presented, pin_of_der(theirs.cert.der()).unwrap());
        assert_ne!(m.presented, m.pinned);
    }

    #[test]
    fn a_leaf_for_another_name_under_the_pinned_ca_is_refused() {
        let ca = ca();
        let pin = pin_of_der(ca.cert.der()).unwrap();
        let v = PinnedCaVerifier::new(&pin, provider());
        let chain = [leaf(&ca, "server.dc1.consul"), ca.cert.der().clone()];
        assert!(verify(&v, &chain).is_err());
        assert_eq!(v.mismatch(), None, "the CA matched; the name did not");
    }

    #[test]
    fn the_pinned_ca_with_a_leaf_signed_by_another_key_is_refused() {
        // The endpoint sends our CA certificate (public) beside a leaf it
        // signed itself: the CA is found, the signature is not its.
        let ours = ca();
        let theirs = ca();
        let pin = pin_of_der(ours.cert.der()).unwrap();
        let v = PinnedCaVerifier::new(&pin, provider());
        let chain = [
            leaf(&theirs, paths::JOIN_SERVER_NAME),
            ours.cert.der().clone(),
        ];
        assert!(verify(&v, &chain).is_err());
    }

    #[test]
    fn the_pin_is_the_sha256_of_the_spki_der() {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["x".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let expected = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(key.subject_public_key_info()))
        );
        assert_eq!(pin_of_der(cert.der()).unwrap(), expected);
    }
}

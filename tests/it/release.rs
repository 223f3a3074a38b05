//! Integration tests: release (verification against HashiCorp's real signed
//! files, and fetch/verify/install through a real HTTP mirror).

use hashi_supervisor::release::{Keyring, VerifyError};

use crate::support::shared_dir;

fn vector(name: &str) -> Vec<u8> {
    let p = shared_dir().join("hashicorp-release").join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// (SHA256SUMS, signature) pairs the README marks valid.
const VALID_VECTORS: &[(&str, &str)] = &[
    ("consul_1.8.7_SHA256SUMS", "consul_1.8.7_SHA256SUMS.sig"),
    ("terraform_0.13.1_SHA256SUMS", "terraform_0.13.1_SHA256SUMS.72D7468F.sig"),
    ("terraform_0.15.1_SHA256SUMS", "terraform_0.15.1_SHA256SUMS.sig"),
    ("terraform_1.12.2_SHA256SUMS", "terraform_1.12.2_SHA256SUMS.72D7468F.sig"),
    ("terraform_1.14.9_SHA256SUMS", "terraform_1.14.9_SHA256SUMS.72D7468F.sig"),
    ("terraform_1.15.8_SHA256SUMS", "terraform_1.15.8_SHA256SUMS.sig"),
];

#[test]
fn every_real_vector_verifies_with_the_embedded_key() {
    let ring = Keyring::hashicorp().expect("embedded key loads");
    for (sums, sig) in VALID_VECTORS {
        let r = ring.verify_detached(&vector(sums), &vector(sig));
        assert!(r.is_ok(), "{sig}: {r:?}");
    }
}

#[test]
fn signature_by_the_old_2014_key_is_refused_as_unknown() {
    let ring = Keyring::hashicorp().expect("embedded key loads");
    let r = ring.verify_detached(
        &vector("terraform_0.13.1_SHA256SUMS"),
        &vector("terraform_0.13.1_SHA256SUMS.348FFC4C.sig"),
    );
    match r {
        Err(VerifyError::UnknownKey { issuer }) => assert_eq!(issuer, "51852D87348FFC4C"),
        other => panic!("expected UnknownKey, got {other:?}"),
    }
}

#[test]
fn any_flipped_byte_in_sums_or_signature_is_refused() {
    let ring = Keyring::hashicorp().expect("embedded key loads");
    for (sums, sig) in VALID_VECTORS {
        let data = vector(sums);
        let sigb = vector(sig);
        for i in 0..data.len() {
            let mut d = data.clone();
            d[i] ^= 0x01;
            assert!(ring.verify_detached(&d, &sigb).is_err(), "{sums} byte {i} flipped accepted");
        }
        for i in 0..sigb.len() {
            let mut s = sigb.clone();
            s[i] ^= 0x01;
            assert!(ring.verify_detached(&data, &s).is_err(), "{sig} byte {i} flipped accepted");
        }
    }
}

//! OpenPGP public keys, parsed one way for every reader: role validation
//! (`check` refuses a trusted key file that holds no key before any fetch)
//! and the release verifier's keyring (`release::verify`).
//!
//! A leaf: it knows nothing of roles or releases and imports nothing of the
//! crate (its stage comes before `role`, see `lib.rs`). It reads bytes it
//! is given; it never opens files nor touches the network.

use pgp::composed::{Deserializable, SignedPublicKey};

/// Every OpenPGP public key in `bytes` (armored or binary); an error when
/// a packet is malformed or there is no key at all.
pub fn parse_public_keys(bytes: &[u8]) -> Result<Vec<SignedPublicKey>, pgp::errors::Error> {
    let mut out = Vec::new();
    for key in SignedPublicKey::from_reader_many(bytes)?.0 {
        out.push(key?);
    }
    if out.is_empty() {
        return Err(pgp::errors::Error::from(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "no public key in the file",
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_release_key_parses_and_text_does_not() {
        let key = include_str!("release/keys/hashicorp-release-key.asc");
        assert!(!parse_public_keys(key.as_bytes()).unwrap().is_empty());
        assert!(parse_public_keys(b"not a key").is_err());
        assert!(parse_public_keys(b"").is_err());
    }
}

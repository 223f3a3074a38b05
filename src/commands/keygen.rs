//! `supervisor keygen`: a new gossip encryption key, in the format both
//! `consul keygen` and `nomad operator gossip keyring generate` print
//! (32 random bytes, standard base64).

use std::io::Write;

use crate::error::Error;

/// Length of a gossip key (AES-256).
const GOSSIP_KEY_BYTES: usize = 32;

/// Runs `supervisor keygen`.
pub fn run() -> Result<u8, Error> {
    let key = new_gossip_key();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{key}").map_err(|e| Error::io("write the key to stdout", e))?;
    Ok(0)
}

/// A fresh random gossip key, base64-encoded.
pub fn new_gossip_key() -> String {
    let mut bytes = [0u8; GOSSIP_KEY_BYTES];
    rand::fill(&mut bytes);
    base64_encode(&bytes)
}

fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_44_chars_of_base64_for_32_bytes() {
        let k = new_gossip_key();
        assert_eq!(k.len(), 44);
        assert!(k.ends_with('='));
        assert_ne!(k, new_gossip_key());
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    }
}

//! Reading signature files: untrusted bytes from a mirror.
//!
//! Owns the framing checks rPGP does not make (the declared bit count of
//! each MPI, what the unhashed subpacket area may hold) and then rPGP's own
//! parse into signature packets. Every length read from the input is
//! bounds-checked: a malformed file is a [`VerifyError::ParseSignature`],
//! never a panic. It does not decide whether a signature is acceptable:
//! that is [`super::keyring`]'s policy.

use pgp::composed::{Deserializable, DetachedSignature};
use pgp::packet::Signature;

use super::VerifyError;

/// Parses every signature packet of a detached signature file (binary or
/// armored), after checking its encoding.
pub(super) fn parse_signatures(bytes: &[u8]) -> Result<Vec<Signature>, VerifyError> {
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

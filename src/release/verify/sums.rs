//! `SHA256SUMS` files: `<64 hex><two spaces><file name>` lines.
//!
//! Owns the parse only; a file is trusted once [`super::Keyring`] has
//! verified its signature, which is the caller's order to keep. Input is
//! untrusted: a malformed line is an error naming it, never a panic.

use std::collections::BTreeMap;

use super::VerifyError;

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

#[cfg(test)]
mod tests {
    use super::*;

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

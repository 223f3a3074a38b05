//! `supervisor completions SHELL`. SKELETON: replaced by the packaging work.

use crate::error::Error;

/// Prints completions for `shell`.
pub fn run(shell: &str) -> Result<u8, Error> {
    Err(Error::Usage(format!(
        "completions for `{shell}` are not built yet"
    )))
}

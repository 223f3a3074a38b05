//! Reading a file the role file names (the role file itself, gossip keys,
//! TLS files, trusted OpenPGP keys): always as a regular file, with a size
//! limit, and never blocking. `/dev/zero` would otherwise be read until
//! memory runs out, and a FIFO would block `check` forever.
//!
//! This is the only way the supervisor reads such a file; it must not
//! follow anything but a regular file and must not read past its limit.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Why a named file was refused. The message says what was wrong; the
/// caller adds which key and which path.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Opening failed (missing, permission, ...).
    #[error("{0}")]
    Open(#[source] io::Error),
    /// The path is not a regular file (a directory, a device, a FIFO, ...).
    #[error("is a {0}, not a regular file")]
    NotRegular(&'static str),
    /// The file is larger than the limit.
    #[error("is larger than the {limit} byte limit")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// Reading failed.
    #[error("{0}")]
    Read(#[source] io::Error),
}

/// Opens `path` without blocking (`O_NONBLOCK`: opening a FIFO with no
/// writer would wait for one) and close-on-exec, and checks that it is a
/// regular file of at most `limit` bytes.
pub fn open_regular(path: &Path, limit: u64) -> Result<File, FileError> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(FileError::Open)?;
    let meta = f.metadata().map_err(FileError::Open)?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let kind = if ft.is_dir() {
            "directory"
        } else if ft.is_fifo() {
            "FIFO"
        } else if ft.is_char_device() {
            "character device"
        } else if ft.is_block_device() {
            "block device"
        } else if ft.is_socket() {
            "socket"
        } else {
            "special file"
        };
        return Err(FileError::NotRegular(kind));
    }
    if meta.len() > limit {
        return Err(FileError::TooLarge { limit });
    }
    Ok(f)
}

/// Reads a regular file of at most `limit` bytes (see [`open_regular`]).
/// At most `limit + 1` bytes are ever read, so a file that grows between
/// the check and the read is still refused.
pub fn read_regular(path: &Path, limit: u64) -> Result<Vec<u8>, FileError> {
    let f = open_regular(path, limit)?;
    let mut buf = Vec::new();
    f.take(limit.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(FileError::Read)?;
    if buf.len() as u64 > limit {
        return Err(FileError::TooLarge { limit });
    }
    Ok(buf)
}

/// [`read_regular`] as UTF-8 text.
pub fn read_regular_text(path: &Path, limit: u64) -> Result<String, FileError> {
    into_text(read_regular(path, limit)?)
}

/// Bytes [`read_regular`] returned, as UTF-8 text.
pub fn into_text(bytes: Vec<u8>) -> Result<String, FileError> {
    String::from_utf8(bytes).map_err(|_| {
        FileError::Read(io::Error::new(
            io::ErrorKind::InvalidData,
            "is not UTF-8 text",
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_regular_file_within_the_limit_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, "abc").unwrap();
        assert_eq!(read_regular(&p, 3).unwrap(), b"abc");
        assert!(matches!(
            read_regular(&p, 2),
            Err(FileError::TooLarge { limit: 2 })
        ));
    }

    #[test]
    fn devices_directories_and_fifos_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        for (p, kind) in [
            (Path::new("/dev/zero"), "character device"),
            (dir.path(), "directory"),
            (fifo.as_path(), "FIFO"),
        ] {
            match read_regular(p, 1024) {
                Err(FileError::NotRegular(k)) => assert_eq!(k, kind, "{}", p.display()),
                other => panic!("{}: {other:?}", p.display()),
            }
        }
    }

    #[test]
    fn a_missing_file_says_so() {
        let e = read_regular(Path::new("/nonexistent/k"), 10).unwrap_err();
        assert!(e.to_string().contains("No such file"), "{e}");
    }
}

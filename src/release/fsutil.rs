//! Small filesystem helpers of the release module: temp paths that remove
//! themselves unless kept, unique names, directory fsync, atomic symlink
//! switch. Nothing here knows about releases.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Prefix of every temporary entry the release module creates; a leftover
/// one is never a release.
pub const TEMP_PREFIX: &str = ".tmp-";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A unique temporary name in `dir`: `.tmp-<stem>-<pid>-<n>-<random>`.
pub fn temp_name(dir: &Path, stem: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let r: u32 = rand::random();
    dir.join(format!(
        "{TEMP_PREFIX}{stem}-{}-{n}-{r:08x}",
        std::process::id()
    ))
}

/// A file or directory that is removed when dropped, unless
/// [`TempPath::keep`] was called.
#[derive(Debug)]
pub struct TempPath {
    path: PathBuf,
    armed: bool,
}

impl TempPath {
    /// Guards `path` (which may not exist yet).
    pub fn new(path: PathBuf) -> TempPath {
        TempPath { path, armed: true }
    }

    /// The guarded path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Disarms the guard and returns the path.
    pub fn keep(mut self) -> PathBuf {
        self.armed = false;
        std::mem::take(&mut self.path)
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if m.is_dir() => {
                let _ = std::fs::remove_dir_all(&self.path);
            }
            Ok(_) => {
                let _ = std::fs::remove_file(&self.path);
            }
            Err(_) => {}
        }
    }
}

/// fsyncs a directory so that renames inside it are durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Points the symlink `link` at `target` atomically: a symlink under a temp
/// name, then a rename over `link`.
pub fn switch_symlink(link: &Path, target: &Path) -> io::Result<()> {
    let dir = link
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "link has no parent"))?;
    let stem = link
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = TempPath::new(temp_name(dir, &stem));
    std::os::unix::fs::symlink(target, tmp.path())?;
    std::fs::rename(tmp.path(), link)?;
    tmp.keep();
    fsync_dir(dir)
}

/// Removes leftover temporary entries (from a crash) in `dir`.
pub fn remove_stale_temps(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        if e.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            drop(TempPath::new(e.path()));
        }
    }
}

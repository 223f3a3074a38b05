//! The only writer of rendered config files, and the one place that knows
//! the owners and modes of the agents' directories. Each file is written to
//! a temporary file in its own directory, fsynced, renamed over the old one
//! and the directory fsynced: a reader sees the old file or the new one,
//! never half of one. The temporary name ends in neither `.json` nor `.hcl`,
//! so neither agent would read it.
//!
//! Directory layout for an agent that runs as its own user (say `consul`):
//!
//! ```text
//! /var/lib/hashi-supervisor        0755 root           (the package makes it)
//! /var/lib/hashi-supervisor/data   0755 root           ensure_agent_dir
//! .../data/consul                  0750 consul:consul  ensure_agent_dir
//! /etc/hashi-supervisor            0755 root           write_files
//! /etc/hashi-supervisor/consul.d   0750 root:consul    write_files
//! .../consul.d/consul.json         0640 consul:consul  write_files
//! ```
//!
//! Each directory is created with its mode (never created open and
//! narrowed later); one an older version left unreachable is corrected, and
//! an ancestor we do not own that the agent's user cannot search is an
//! error naming it, so the agent never starts only to fail on it.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid, User};

use super::{RenderError, RenderedFile};

/// Mode of directories we create for config files.
const DIR_MODE: u32 = 0o750;
/// Mode of an agent's data dir: its user's; its group may read.
pub const DATA_DIR_MODE: u32 = 0o750;
/// Mode of the directories on the way to the agents' own (`<state>/data`,
/// the config dir): anyone may search them.
pub const TRAVERSE_MODE: u32 = 0o755;

/// The Unix user an agent's directories belong to, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// User name.
    pub name: String,
    /// Its uid.
    pub uid: Uid,
    /// Its primary gid.
    pub gid: Gid,
    /// Every group it is in (primary included).
    pub groups: Vec<Gid>,
}

impl Owner {
    /// Resolves `name`; `Ok(None)` when no such user exists.
    pub fn lookup(name: &str) -> std::io::Result<Option<Owner>> {
        let Some(user) = User::from_name(name).map_err(std::io::Error::from)? else {
            return Ok(None);
        };
        let groups = std::ffi::CString::new(name)
            .ok()
            .and_then(|c| nix::unistd::getgrouplist(&c, user.gid).ok())
            .unwrap_or_else(|| vec![user.gid]);
        Ok(Some(Owner {
            name: name.to_string(),
            uid: user.uid,
            gid: user.gid,
            groups,
        }))
    }

    /// Whether this user may search (`x`) a directory with `meta`.
    fn can_search(&self, meta: &fs::Metadata) -> bool {
        use std::os::unix::fs::MetadataExt;
        let mode = meta.mode();
        if self.uid.is_root() {
            return true;
        }
        if meta.uid() == self.uid.as_raw() {
            mode & 0o100 != 0
        } else if self.groups.iter().any(|g| g.as_raw() == meta.gid()) {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        }
    }
}

/// Creates an agent's data dir `dir`: its parent (`<state>/data`, ours) with
/// [`TRAVERSE_MODE`], `dir` itself with [`DATA_DIR_MODE`] owned by `owner`.
/// A parent an older version made unreachable (0750 root) is opened up, a
/// data dir with the wrong owner or mode corrected; every other ancestor
/// must already be searchable by `owner`. `owner` is `None` when the agent
/// runs as ourselves (not root): then only the directories are created.
pub fn ensure_agent_dir(dir: &Path, owner: Option<&Owner>) -> Result<(), RenderError> {
    use std::os::unix::fs::MetadataExt;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(TRAVERSE_MODE)
            .create(parent)
            .map_err(io("create directory", parent))?;
        if let Some(o) = owner {
            let meta = fs::metadata(parent).map_err(io("inspect", parent))?;
            if !o.can_search(&meta) {
                fs::set_permissions(
                    parent,
                    fs::Permissions::from_mode(meta.mode() & 0o7777 | TRAVERSE_MODE),
                )
                .map_err(io("set the mode of", parent))?;
            }
            check_reachable(parent, dir, o)?;
        }
    }
    match fs::DirBuilder::new().mode(DATA_DIR_MODE).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => return Err(io("create directory", dir)(e)),
    }
    let meta = fs::metadata(dir).map_err(io("inspect", dir))?;
    if let Some(o) = owner {
        if meta.uid() != o.uid.as_raw() || meta.gid() != o.gid.as_raw() {
            nix::unistd::chown(dir, Some(o.uid), Some(o.gid))
                .map_err(|e| io("change the owner of", dir)(e.into()))?;
        }
    }
    // The umask may have narrowed the mode given to mkdir.
    if meta.mode() & 0o7777 != DATA_DIR_MODE {
        fs::set_permissions(dir, fs::Permissions::from_mode(DATA_DIR_MODE))
            .map_err(io("set the mode of", dir))?;
    }
    Ok(())
}

/// Fails naming the first directory on the way to `file` (a rendered
/// config) that `owner` cannot search: the agent reads its config as its
/// own user. Not for `render --out`, whose files are for inspection.
pub fn check_agent_reaches(file: &Path, owner: &Owner) -> Result<(), RenderError> {
    match file.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => check_reachable(dir, file, owner),
        None => Ok(()),
    }
}

/// Fails naming the first of `from` and its ancestors that `owner` cannot
/// search (it then cannot reach `target`).
fn check_reachable(from: &Path, target: &Path, owner: &Owner) -> Result<(), RenderError> {
    use std::os::unix::fs::MetadataExt;
    for a in from.ancestors().filter(|p| !p.as_os_str().is_empty()) {
        let meta = fs::metadata(a).map_err(io("inspect", a))?;
        if !owner.can_search(&meta) {
            return Err(RenderError::Unreachable {
                user: owner.name.clone(),
                dir: target.to_path_buf(),
                blocked: a.to_path_buf(),
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
            });
        }
    }
    Ok(())
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> RenderError + 'a {
    move |source| RenderError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Writes the files whose contents differ from what is on disk; returns the
/// paths it wrote. Files already identical keep their bytes; their mode is
/// corrected if it drifted.
pub fn write_files(files: &[RenderedFile]) -> Result<Vec<PathBuf>, RenderError> {
    let mut changed = Vec::new();
    for f in files {
        match fs::read(&f.path) {
            Ok(old) if old == f.contents.as_bytes() => {
                let meta = fs::metadata(&f.path).map_err(io("inspect", &f.path))?;
                if meta.permissions().mode() & 0o7777 != f.mode {
                    fs::set_permissions(&f.path, fs::Permissions::from_mode(f.mode))
                        .map_err(io("set the mode of", &f.path))?;
                }
                continue;
            }
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(source) => {
                return Err(RenderError::Io {
                    what: "read",
                    path: f.path.clone(),
                    source,
                });
            }
        }
        write_atomic(f)?;
        changed.push(f.path.clone());
    }
    Ok(changed)
}

fn owner_ids(name: &str) -> Option<(Uid, Gid)> {
    User::from_name(name).ok().flatten().map(|u| (u.uid, u.gid))
}

fn write_atomic(f: &RenderedFile) -> Result<(), RenderError> {
    let dir = f.path.parent().unwrap_or(Path::new("."));
    let name = f
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !dir.as_os_str().is_empty() {
        // Ancestors stay traversable (0755) for the agents' users; the
        // agent's own directory is 0750 with the agent's group.
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(io("create directory", parent))?;
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(io("create directory", dir))?;
        if let Some((_, gid)) = f.owner.as_deref().and_then(owner_ids) {
            if Uid::effective().is_root() {
                nix::unistd::chown(dir, None, Some(gid))
                    .map_err(|e| io("change the group of", dir)(e.into()))?;
            }
        }
    }
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file: File = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(f.mode)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        // The umask may have narrowed the mode given to open.
        file.set_permissions(fs::Permissions::from_mode(f.mode))
            .map_err(io("set the mode of", &tmp))?;
        if let Some((uid, gid)) = f.owner.as_deref().and_then(owner_ids) {
            match nix::unistd::fchown(&file, Some(uid), Some(gid)) {
                Ok(()) => {}
                // Not root (e.g. `render --out` by a user): keep our owner.
                Err(nix::errno::Errno::EPERM) if !Uid::effective().is_root() => {
                    tracing::warn!(path = %f.path.display(), "not root: rendered file keeps the current owner");
                }
                Err(e) => return Err(io("change the owner of", &tmp)(e.into())),
            }
        }
        file.write_all(f.contents.as_bytes())
            .map_err(io("write", &tmp))?;
        file.sync_all().map_err(io("sync", &tmp))?;
        fs::rename(&tmp, &f.path).map_err(io("rename into place", &f.path))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("sync directory", dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::Product;

    fn file(path: PathBuf, contents: &str) -> RenderedFile {
        RenderedFile {
            product: Product::Consul,
            path,
            contents: contents.to_string(),
            mode: 0o640,
            owner: None,
        }
    }

    #[test]
    fn writes_new_files_with_mode_0640_and_reports_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("consul.d/consul.json");
        let changed = write_files(&[file(p.clone(), "{}\n")]).unwrap();
        assert_eq!(changed, vec![p.clone()]);
        assert_eq!(fs::read_to_string(&p).unwrap(), "{}\n");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
            0o640
        );
    }

    #[test]
    fn identical_contents_are_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_files(&[file(p.clone(), "x")]).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let changed = write_files(&[file(p.clone(), "x")]).unwrap();
        assert!(changed.is_empty());
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
            0o640
        );
    }

    #[test]
    fn changed_contents_replace_the_file_and_leave_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.hcl");
        write_files(&[file(p.clone(), "old")]).unwrap();
        let changed = write_files(&[file(p.clone(), "new")]).unwrap();
        assert_eq!(changed, vec![p.clone()]);
        assert_eq!(fs::read_to_string(&p).unwrap(), "new");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.hcl")]);
    }

    #[test]
    fn existing_user_becomes_the_owner() {
        use hashi_testrig::require::{available, root};
        if !available("root", root("chown needs it")) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        let mut f = file(p.clone(), "x");
        f.owner = Some("nobody".into());
        write_files(&[f]).unwrap();
        let (uid, _) = owner_ids("nobody").expect("the nobody user exists");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(fs::metadata(&p).unwrap().uid(), uid.as_raw());
    }
}

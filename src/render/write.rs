//! The only writer of rendered config files. Each file is written to a
//! temporary file in its own directory, fsynced, renamed over the old one
//! and the directory fsynced: a reader sees the old file or the new one,
//! never half of one. The temporary name ends in neither `.json` nor `.hcl`,
//! so neither agent would read it.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid, User};

use super::{RenderError, RenderedFile};

/// Mode of directories we create for config files.
const DIR_MODE: u32 = 0o750;

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
    use crate::plan::Product;

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
        if !Uid::effective().is_root() {
            eprintln!("skipped: chown needs root");
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

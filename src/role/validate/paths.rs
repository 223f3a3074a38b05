//! `[paths]`: the config and state directories, absolute.

use std::path::{Path, PathBuf};

use super::{Checked, Findings};
use crate::paths::{DEFAULT_CONFIG_DIR, DEFAULT_STATE_DIR};
use crate::role::raw::{RawPaths, SpStr};

/// Where the supervisor keeps its files.
pub(super) struct Dirs {
    pub config_dir: PathBuf,
    pub state_dir: PathBuf,
}

/// The config directory, then the state directory.
pub(super) fn check(p: &RawPaths) -> Checked<Dirs> {
    let mut found = Findings::default();
    let config_dir = absolute_dir(
        &mut found,
        &p.config_dir,
        DEFAULT_CONFIG_DIR,
        "paths.config_dir",
    );
    let state_dir = absolute_dir(
        &mut found,
        &p.state_dir,
        DEFAULT_STATE_DIR,
        "paths.state_dir",
    );
    let dirs = Dirs {
        config_dir,
        state_dir,
    };
    (dirs, found)
}

fn absolute_dir(found: &mut Findings, v: &Option<SpStr>, default: &str, key: &str) -> PathBuf {
    match v {
        Some(s) if Path::new(s.get_ref()).is_absolute() => PathBuf::from(s.get_ref()),
        Some(s) => {
            found.span(s, format!("`{key}` must be an absolute path"));
            PathBuf::from(default)
        }
        None => PathBuf::from(default),
    }
}

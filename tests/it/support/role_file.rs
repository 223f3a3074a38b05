//! A builder of role files for tests that run the real binary: a
//! consul-server node `ams2-server-01` in `ams2` on 127.0.0.1, its config
//! and state under a test directory. Keys are written in the order given,
//! one per line, so a test can name the `line:col` of a value.

use std::path::{Path, PathBuf};

/// A role file being built; [`RoleFile::write`] puts it at `<dir>/node.toml`.
#[derive(Debug, Clone)]
pub struct RoleFile {
    dir: PathBuf,
    consul: Vec<(String, String)>,
    release: Option<(String, PathBuf)>,
    health_listen: String,
}

impl RoleFile {
    /// The consul-server node, config in `<dir>/etc`, state in
    /// `<dir>/state`, health on `127.0.0.1:0`.
    pub fn consul_server(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            consul: Vec::new(),
            release: None,
            health_listen: "127.0.0.1:0".into(),
        }
    }

    /// Adds `key = value` to `[consul]` (`value` is TOML: quote strings).
    pub fn consul(mut self, key: &str, value: &str) -> Self {
        self.consul.push((key.into(), value.into()));
        self
    }

    /// Fetches from `mirror`, trusting only the key in `public_key`.
    pub fn mirror(mut self, mirror: &str, public_key: &Path) -> Self {
        self.release = Some((mirror.into(), public_key.to_path_buf()));
        self
    }

    /// The health endpoint listens on `addr`.
    pub fn health_listen(mut self, addr: std::net::SocketAddr) -> Self {
        self.health_listen = addr.to_string();
        self
    }

    /// The text of the role file.
    pub fn text(&self) -> String {
        let mut t = String::from(
            "schema = 1\nroles = [\"consul-server\"]\nnode_name = \"ams2-server-01\"\ndatacenter = \"ams2\"\n\
             [addresses]\nprivate = \"127.0.0.1\"\n[consul]\n",
        );
        for (k, v) in &self.consul {
            t.push_str(&format!("{k} = {v}\n"));
        }
        if let Some((mirror, key)) = &self.release {
            t.push_str(&format!(
                "[release]\nmirror = \"{mirror}\"\ntrust_hashicorp_key = false\ntrusted_key_files = [\"{}\"]\n",
                key.display()
            ));
        }
        t.push_str(&format!(
            "[health]\nlisten = \"{}\"\n[paths]\nconfig_dir = \"{}\"\nstate_dir = \"{}\"\n",
            self.health_listen,
            self.dir.join("etc").display(),
            self.dir.join("state").display()
        ));
        // Not about security: an explicit plaintext cluster.
        t.push_str("[security]\nplaintext = true\n");
        t
    }

    /// Writes `<dir>/node.toml` and returns its path.
    pub fn write(&self) -> PathBuf {
        let role = self.dir.join("node.toml");
        std::fs::write(&role, self.text())
            .unwrap_or_else(|e| panic!("failed to write {}: {e}", role.display()));
        role
    }
}

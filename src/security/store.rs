//! The security material on disk (names in `paths`):
//!
//! ```text
//! <config>/cluster/     0700 root   CA holders only
//!     ca.pem            0644
//!     ca-key.pem        0600
//!     cluster.json      0600        ClusterFile: gossip keys, ACL tokens
//!     tokens.json       0600        join tokens (token::TokenStore)
//! <config>/security/    0755 root   every secured node
//!     ca.pem            0644
//!     node.pem          0644        one certificate, every name the roles need
//!     node-key.pem      0600 root   for the supervisor
//!     consul-key.pem    0600 consul only if Consul runs here
//!     nomad-key.pem     0600 nomad  only if Nomad runs here
//!     node.json         0600 root   role::security::NodeSecretsFile
//! ```
//!
//! Every file is written atomically (a temporary file in the same
//! directory, fsync, rename, directory fsync), never half-written; the
//! cluster dir is built under a temporary name and renamed into place as a
//! whole. `render::write` owns the agents' configs and `release` its own
//! temp files; neither helper fits these modes and owners, so this module
//! has its own small writer (`write_file_atomic`), used for nothing else.
//!
//! Secrets read here stay out of `Debug` output ([`ClusterFile`]'s is
//! redacted).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid, User};

use crate::paths;
use crate::role::file::{FileError, read_regular};
use crate::role::security::{AclTokensFile, NodeSecretsFile};
use crate::role::{REDACTED, RoleSet, Secret};

use super::ca::{CaError, ClusterCa, SignedCert};
use super::token::{TokenError, TokenRecord, TokenStore};

/// Format version of `cluster.json` and `node.json`.
pub const FILE_VERSION: u32 = 1;
/// Largest `cluster.json` read.
pub const MAX_CLUSTER_FILE_BYTES: u64 = 64 * 1024;
/// Mode of the cluster dir.
pub const CLUSTER_DIR_MODE: u32 = 0o700;
/// Mode of the security dir.
pub const SECURITY_DIR_MODE: u32 = 0o755;
/// Mode of certificates.
pub const CERT_MODE: u32 = 0o644;
/// Mode of keys and secret files.
pub const SECRET_MODE: u32 = 0o600;

/// What went wrong reading or writing the material.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file or directory operation failed.
    #[error("failed to {what} {}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A file could not be read.
    #[error("failed to read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: FileError,
    },
    /// A file is not what it should be.
    #[error("failed to parse {}: {reason}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why (never a secret).
        reason: String,
    },
    /// This node does not hold the cluster CA.
    #[error("this node holds no cluster CA ({} is missing): run `supervisor cluster init` first, or run this on a node that holds the CA", path.display())]
    NotHolder {
        /// The missing cluster dir.
        path: PathBuf,
    },
    /// The cluster dir (or the node's material) exists already.
    #[error("{} exists already: this node already belongs to a cluster", path.display())]
    Exists {
        /// The dir.
        path: PathBuf,
    },
    /// `cluster.json` names another CA than `ca.pem`.
    #[error("{} pins the CA {pinned}, but {} is {actual}", cluster_file.display(), ca_file.display())]
    PinMismatch {
        /// `cluster.json`.
        cluster_file: PathBuf,
        /// `ca.pem`.
        ca_file: PathBuf,
        /// Its `ca_sha256`.
        pinned: String,
        /// The certificate's pin.
        actual: String,
    },
    /// An agent's user does not exist (running as root).
    #[error("user `{name}` does not exist: it must own {}", path.display())]
    NoUser {
        /// The user.
        name: String,
        /// The file it must own.
        path: PathBuf,
    },
    /// The CA could not be read or used.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The token store could not be read or written.
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// `cluster.json`: what every CA holder keeps besides the CA.
#[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// Format version: 1.
    pub version: u32,
    /// The CA's pin (`sha256:<hex>`).
    pub ca_sha256: String,
    /// Consul's gossip key (base64).
    pub consul_gossip_key: String,
    /// Nomad's gossip key (base64).
    pub nomad_gossip_key: String,
    /// Consul's primary datacenter: the init node's.
    pub primary_datacenter: String,
    /// Whether the cluster runs ACLs (default deny).
    pub acl_enabled: bool,
    /// The ACL tokens, chosen at init (UUID v4) so a node that joins
    /// before the ACL bootstrap already has its own; `nomad_supervisor` is
    /// filled in once Nomad's ACLs are bootstrapped.
    #[serde(default)]
    pub acl: AclTokensFile,
}

impl fmt::Debug for ClusterFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterFile")
            .field("version", &self.version)
            .field("ca_sha256", &self.ca_sha256)
            .field("consul_gossip_key", &REDACTED)
            .field("nomad_gossip_key", &REDACTED)
            .field("primary_datacenter", &self.primary_datacenter)
            .field("acl_enabled", &self.acl_enabled)
            .field("acl", &REDACTED)
            .finish()
    }
}

/// A random UUID v4 (RFC 9562), lowercase: the form Consul's and Nomad's
/// ACL SecretIDs take.
pub fn uuid_v4() -> String {
    let mut b = [0u8; 16];
    rand::fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl ClusterFile {
    /// A new cluster's file: `ca`'s pin, the gossip keys, this node's
    /// datacenter as the primary, and, with ACLs, every pre-chosen token.
    pub fn new(
        ca: &ClusterCa,
        consul_gossip_key: &Secret,
        nomad_gossip_key: &Secret,
        primary_datacenter: &str,
        acl_enabled: bool,
    ) -> ClusterFile {
        let acl = if acl_enabled {
            AclTokensFile {
                consul_initial_management: Some(uuid_v4()),
                consul_agent: Some(uuid_v4()),
                consul_supervisor: Some(uuid_v4()),
                consul_replication: Some(uuid_v4()),
                nomad_consul: Some(uuid_v4()),
                nomad_bootstrap: Some(uuid_v4()),
                nomad_supervisor: None,
            }
        } else {
            AclTokensFile::default()
        };
        ClusterFile {
            version: FILE_VERSION,
            ca_sha256: ca.pin(),
            consul_gossip_key: consul_gossip_key.expose().to_string(),
            nomad_gossip_key: nomad_gossip_key.expose().to_string(),
            primary_datacenter: primary_datacenter.to_string(),
            acl_enabled,
            acl,
        }
    }

    fn to_json(&self) -> Result<String, StoreError> {
        let mut s = serde_json::to_string_pretty(self).map_err(|e| StoreError::Parse {
            path: PathBuf::from(paths::CLUSTER_FILE),
            reason: format!("failed to encode: {e}"),
        })?;
        s.push('\n');
        Ok(s)
    }
}

/// The cluster dir, read.
#[derive(Debug)]
pub struct ClusterMaterial {
    /// The dir.
    pub dir: PathBuf,
    /// The CA.
    pub ca: ClusterCa,
    /// `cluster.json`.
    pub cluster: ClusterFile,
    /// `tokens.json`.
    pub tokens: TokenStore,
}

/// What a server joining with a token that allows servers receives to
/// become a CA holder (`wire::JoinResponse::cluster`).
#[derive(Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterHandover {
    /// The CA certificate (PEM).
    pub ca_cert: String,
    /// The CA key (PEM).
    pub ca_key: String,
    /// `cluster.json`.
    pub cluster: ClusterFile,
    /// The join token records.
    pub tokens: Vec<TokenRecord>,
}

impl fmt::Debug for ClusterHandover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterHandover")
            .field("ca_key", &REDACTED)
            .field("cluster", &self.cluster)
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

impl ClusterHandover {
    /// The handover of `material`.
    pub fn of(material: &ClusterMaterial) -> ClusterHandover {
        ClusterHandover {
            ca_cert: material.ca.cert_pem().to_string(),
            ca_key: material.ca.key_pem().expose().to_string(),
            cluster: material.cluster.clone(),
            tokens: material.tokens.list().to_vec(),
        }
    }

    /// As the JSON value the join response carries.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// From the join response's value; the CA key must be the CA
    /// certificate's and `cluster.json`'s pin the CA's.
    pub fn from_value(
        value: serde_json::Value,
    ) -> Result<(ClusterHandover, ClusterCa), StoreError> {
        let h: ClusterHandover = serde_json::from_value(value).map_err(|e| StoreError::Parse {
            path: PathBuf::from("the join response's cluster"),
            reason: json_problem(&e),
        })?;
        let ca = ClusterCa::from_pem(&h.ca_cert, &Secret::new(h.ca_key.clone()))?;
        if ca.pin() != h.cluster.ca_sha256 {
            return Err(StoreError::PinMismatch {
                cluster_file: PathBuf::from(paths::CLUSTER_FILE),
                ca_file: PathBuf::from(paths::CA_CERT_FILE),
                pinned: h.cluster.ca_sha256.clone(),
                actual: ca.pin(),
            });
        }
        Ok((h, ca))
    }
}

/// Writes a new cluster dir `dir` (mode 0700) with `ca.pem`, `ca-key.pem`,
/// `cluster.json` and `tokens.json`. The files are made under a temporary
/// name beside `dir`, which is renamed into place when complete; an
/// existing `dir` is an error ([`StoreError::Exists`]).
pub fn write_cluster_dir(
    dir: &Path,
    ca: &ClusterCa,
    cluster: &ClusterFile,
    tokens: &[TokenRecord],
) -> Result<(), StoreError> {
    if fs::symlink_metadata(dir).is_ok() {
        return Err(StoreError::Exists {
            path: dir.to_path_buf(),
        });
    }
    let parent = parent_of(dir);
    // The config dir is made when missing, but an existing one keeps its
    // mode and owner: it is the operator's.
    fs::DirBuilder::new()
        .recursive(true)
        .mode(SECURITY_DIR_MODE)
        .create(parent)
        .map_err(io_err("create directory", parent))?;
    let tmp = parent.join(format!(
        ".{}.tmp-{}-{:08x}",
        dir.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id(),
        rand::random::<u32>()
    ));
    let result = (|| {
        ensure_dir(&tmp, CLUSTER_DIR_MODE, false)?;
        let mut store = TokenStore::new(&tmp, &ca.pin());
        store.merge(tokens);
        write(
            &tmp.join(paths::CA_CERT_FILE),
            ca.cert_pem(),
            CERT_MODE,
            None,
        )?;
        write(
            &tmp.join(paths::CA_KEY_FILE),
            ca.key_pem().expose(),
            SECRET_MODE,
            None,
        )?;
        write(
            &tmp.join(paths::CLUSTER_FILE),
            &cluster.to_json()?,
            SECRET_MODE,
            None,
        )?;
        store.save()?;
        fs::rename(&tmp, dir).map_err(|e| {
            if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::EEXIST)) {
                StoreError::Exists {
                    path: dir.to_path_buf(),
                }
            } else {
                io_err("rename into place", dir)(e)
            }
        })?;
        fsync_dir(parent)
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

/// Reads a cluster dir: the CA, `cluster.json` (which must pin that CA)
/// and the token store.
pub fn load_cluster_dir(dir: &Path) -> Result<ClusterMaterial, StoreError> {
    if fs::symlink_metadata(dir).is_err() {
        return Err(StoreError::NotHolder {
            path: dir.to_path_buf(),
        });
    }
    let ca = ClusterCa::load(dir)?;
    let path = dir.join(paths::CLUSTER_FILE);
    let bytes = read_regular(&path, MAX_CLUSTER_FILE_BYTES).map_err(|source| StoreError::Read {
        path: path.clone(),
        source,
    })?;
    let cluster: ClusterFile = serde_json::from_slice(&bytes).map_err(|e| StoreError::Parse {
        path: path.clone(),
        reason: json_problem(&e),
    })?;
    if cluster.version != FILE_VERSION {
        return Err(StoreError::Parse {
            path,
            reason: format!(
                "version {} (this supervisor reads {FILE_VERSION})",
                cluster.version
            ),
        });
    }
    if cluster.ca_sha256 != ca.pin() {
        return Err(StoreError::PinMismatch {
            cluster_file: path,
            ca_file: dir.join(paths::CA_CERT_FILE),
            pinned: cluster.ca_sha256,
            actual: ca.pin(),
        });
    }
    let tokens = TokenStore::load(dir, &ca.pin())?;
    Ok(ClusterMaterial {
        dir: dir.to_path_buf(),
        ca,
        cluster,
        tokens,
    })
}

/// Rewrites `cluster.json` of an existing cluster dir (atomically, 0600):
/// after Nomad's ACL bootstrap filled in `nomad_supervisor`.
pub fn save_cluster_file(dir: &Path, cluster: &ClusterFile) -> Result<(), StoreError> {
    write(
        &dir.join(paths::CLUSTER_FILE),
        &cluster.to_json()?,
        SECRET_MODE,
        None,
    )
}

/// The `node.json` of a node of `roles` in `datacenter` whose certificate
/// `cert` holds `names` and `ips`: the gossip keys and the ACL tokens
/// its roles use: the Consul agent token where Consul runs, the
/// supervisor's tokens everywhere, Nomad's Consul token where Nomad runs,
/// the replication token on Consul servers outside the primary datacenter.
/// The init node's bootstrap tokens are added by [`with_init_tokens`].
pub fn secrets_for(
    cluster: &ClusterFile,
    roles: RoleSet,
    datacenter: &str,
    names: &[String],
    ips: &[IpAddr],
    cert: &SignedCert,
) -> NodeSecretsFile {
    let a = &cluster.acl;
    let acl = if cluster.acl_enabled {
        AclTokensFile {
            consul_agent: a.consul_agent.clone().filter(|_| roles.is_consul()),
            consul_supervisor: a.consul_supervisor.clone(),
            consul_replication: a
                .consul_replication
                .clone()
                .filter(|_| roles.consul_server && datacenter != cluster.primary_datacenter),
            consul_initial_management: None,
            nomad_consul: a.nomad_consul.clone().filter(|_| roles.is_nomad()),
            nomad_supervisor: a.nomad_supervisor.clone(),
            nomad_bootstrap: None,
        }
    } else {
        AclTokensFile::default()
    };
    NodeSecretsFile {
        version: FILE_VERSION,
        ca_sha256: cluster.ca_sha256.clone(),
        names: names.to_vec(),
        ips: ips.to_vec(),
        not_before: cert.not_before,
        not_after: cert.not_after,
        primary_datacenter: cluster.primary_datacenter.clone(),
        consul_gossip_key: cluster.consul_gossip_key.clone(),
        nomad_gossip_key: cluster.nomad_gossip_key.clone(),
        acl_enabled: cluster.acl_enabled,
        acl,
    }
}

/// Adds the bootstrap tokens the init node alone holds: Consul's
/// `initial_management` and Nomad's bootstrap secret.
pub fn with_init_tokens(mut secrets: NodeSecretsFile, cluster: &ClusterFile) -> NodeSecretsFile {
    if cluster.acl_enabled {
        secrets.acl.consul_initial_management = cluster.acl.consul_initial_management.clone();
        secrets.acl.nomad_bootstrap = cluster.acl.nomad_bootstrap.clone();
    }
    secrets
}

/// Name of the link in the security dir to the generation in force.
pub const CURRENT_LINK: &str = "current";
/// Name of the link to the generation before it (kept until the next
/// write: the way back if the one in force turns out broken).
pub const PREVIOUS_LINK: &str = "previous";
/// Prefix of a generation dir (`gen-<n>`).
const GEN_PREFIX: &str = "gen-";
/// The lock file in the security dir: every writer of the material holds
/// it (renewal, the ACL bootstrap's local renewal, init, recovery).
pub const LOCK_FILE: &str = ".lock";
/// The files of a generation; each is a link `<name> -> current/<name>` in
/// the security dir, the paths the agents' configs and the role name.
pub const MATERIAL_FILES: [&str; 6] = [
    paths::CA_CERT_FILE,
    paths::NODE_CERT_FILE,
    paths::NODE_KEY_FILE,
    paths::CONSUL_KEY_FILE,
    paths::NOMAD_KEY_FILE,
    paths::NODE_SECRETS_FILE,
];

/// The steps of [`write_node_material`] in order; a test stops after each
/// to show that every intermediate state is old-complete or new-complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[cfg_attr(not(test), allow(dead_code))]
enum Step {
    /// An old flat layout was turned into generation 0 (links in place).
    Migrated,
    /// The new generation's files are written under a temporary dir name.
    TempWritten,
    /// The new generation dir has its final name.
    GenNamed,
    /// The top-level links exist for every file of the new generation.
    Linked,
    /// `current` names the new generation.
    Swapped,
    /// `previous` names the old one.
    PreviousSet,
}

/// The security dir's lock ([`LOCK_FILE`]), held until dropped.
#[derive(Debug)]
pub struct MaterialLock(#[allow(dead_code)] nix::fcntl::Flock<File>);

/// Takes the security dir's lock, waiting for another holder (made with
/// the dir when missing).
pub fn lock_material(security_dir: &Path) -> Result<MaterialLock, StoreError> {
    ensure_dir(security_dir, SECURITY_DIR_MODE, true)?;
    let path = security_dir.join(LOCK_FILE);
    lock_file(&path)
        .map(MaterialLock)
        .map_err(io_err("lock", &path))
}

/// Writes a node's material into `security_dir` (0755) as one new
/// generation `gen-<n>/` (0755): `ca.pem` and `node.pem` 0644,
/// `node-key.pem` 0600, a copy of the key for each agent user given
/// (`consul-key.pem`, `nomad-key.pem`, 0600, owned by that user), and
/// `node.json` 0600; then the link `current` is moved to it with one
/// rename, so the key, its copies, the certificate and `node.json` change
/// together: a crash at any point leaves either the old set or the new one
/// in force, never a key beside another key's certificate. The files the
/// agents and the role read are links `<name> -> current/<name>`; the
/// generation before stays as `previous` (the way back, see
/// [`recover_node_material`]), older ones are removed.
///
/// Owners are looked up before anything is written and set only when
/// running as root (a user that does not exist is then an error);
/// otherwise every file keeps the current user as its owner (tests,
/// `--config` dirs of an unprivileged user). The caller holds
/// [`lock_material`] where another writer may run.
pub fn write_node_material(
    security_dir: &Path,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &Secret,
    secrets: &NodeSecretsFile,
    consul_user: Option<&str>,
    nomad_user: Option<&str>,
) -> Result<(), StoreError> {
    write_generation(
        security_dir,
        &NewMaterial {
            ca_pem,
            cert_pem,
            key_pem,
            secrets,
            consul_user,
            nomad_user,
        },
        None,
    )
}

struct NewMaterial<'a> {
    ca_pem: &'a str,
    cert_pem: &'a str,
    key_pem: &'a Secret,
    secrets: &'a NodeSecretsFile,
    consul_user: Option<&'a str>,
    nomad_user: Option<&'a str>,
}

fn owner_of(name: &str, path: &Path) -> Result<Option<(Uid, Gid)>, StoreError> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    match User::from_name(name) {
        Ok(Some(u)) => Ok(Some((u.uid, u.gid))),
        Ok(None) => Err(StoreError::NoUser {
            name: name.to_string(),
            path: path.to_path_buf(),
        }),
        Err(e) => Err(io_err("look up the owner of", path)(e.into())),
    }
}

/// One file of a generation: name, bytes, mode, owner.
type GenFile<'a> = (&'a str, &'a [u8], u32, Option<(Uid, Gid)>);

/// [`write_node_material`], stopping (as a crash would) after `crash_at`.
fn write_generation(
    dir: &Path,
    m: &NewMaterial<'_>,
    crash_at: Option<Step>,
) -> Result<(), StoreError> {
    let stop = |s: Step| crash_at == Some(s);
    // Everything that can refuse is asked before the first write.
    let root_owner = Uid::effective()
        .is_root()
        .then(|| (Uid::from_raw(0), Gid::from_raw(0)));
    let consul_owner = match m.consul_user {
        Some(u) => Some(owner_of(u, &dir.join(paths::CONSUL_KEY_FILE))?),
        None => None,
    };
    let nomad_owner = match m.nomad_user {
        Some(u) => Some(owner_of(u, &dir.join(paths::NOMAD_KEY_FILE))?),
        None => None,
    };
    let json_path = dir.join(paths::NODE_SECRETS_FILE);
    let mut json = serde_json::to_string_pretty(m.secrets).map_err(|e| StoreError::Parse {
        path: json_path.clone(),
        reason: format!("failed to encode: {e}"),
    })?;
    json.push('\n');
    ensure_dir(dir, SECURITY_DIR_MODE, true)?;
    migrate_flat_layout(dir)?;
    if stop(Step::Migrated) {
        return Ok(());
    }

    let old = current_generation(dir);
    let n = generations(dir)?
        .into_iter()
        .map(|(n, _)| n + 1)
        .max()
        .unwrap_or(0);
    let gen_name = format!("{GEN_PREFIX}{n}");
    let tmp = dir.join(format!(
        ".{gen_name}.tmp-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let mut files: Vec<GenFile<'_>> = vec![
        (
            paths::NODE_KEY_FILE,
            m.key_pem.expose().as_bytes(),
            SECRET_MODE,
            root_owner,
        ),
        (
            paths::CA_CERT_FILE,
            m.ca_pem.as_bytes(),
            CERT_MODE,
            root_owner,
        ),
        (
            paths::NODE_CERT_FILE,
            m.cert_pem.as_bytes(),
            CERT_MODE,
            root_owner,
        ),
        (
            paths::NODE_SECRETS_FILE,
            json.as_bytes(),
            SECRET_MODE,
            root_owner,
        ),
    ];
    if let Some(owner) = consul_owner {
        files.push((
            paths::CONSUL_KEY_FILE,
            m.key_pem.expose().as_bytes(),
            SECRET_MODE,
            owner,
        ));
    }
    if let Some(owner) = nomad_owner {
        files.push((
            paths::NOMAD_KEY_FILE,
            m.key_pem.expose().as_bytes(),
            SECRET_MODE,
            owner,
        ));
    }
    let written = (|| {
        ensure_dir(&tmp, SECURITY_DIR_MODE, false)?;
        for (name, bytes, mode, owner) in &files {
            let path = tmp.join(name);
            write_file_atomic(&path, bytes, *mode, *owner).map_err(|(what, source)| {
                StoreError::Io {
                    what,
                    path: path.clone(),
                    source,
                }
            })?;
        }
        fsync_dir(&tmp)
    })();
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if stop(Step::TempWritten) {
        return Ok(());
    }
    let gen_dir = dir.join(&gen_name);
    fs::rename(&tmp, &gen_dir).map_err(io_err("rename into place", &gen_dir))?;
    fsync_dir(dir)?;
    if stop(Step::GenNamed) {
        return Ok(());
    }
    // Links first: one for a file the old generation lacks dangles until
    // the swap, and the role in force did not need it.
    for (name, ..) in &files {
        let target = Path::new(CURRENT_LINK).join(name);
        set_link(&dir.join(name), &target)?;
    }
    fsync_dir(dir)?;
    if stop(Step::Linked) {
        return Ok(());
    }
    set_link(&dir.join(CURRENT_LINK), Path::new(&gen_name))?;
    fsync_dir(dir)?;
    if stop(Step::Swapped) {
        return Ok(());
    }
    if let Some(old) = old.filter(|o| *o != gen_name) {
        set_link(&dir.join(PREVIOUS_LINK), Path::new(&old))?;
    }
    fsync_dir(dir)?;
    if stop(Step::PreviousSet) {
        return Ok(());
    }
    tidy(dir, &files.iter().map(|f| f.0).collect::<Vec<_>>())
}

/// The generation `current` names (`gen-<n>`), if any.
fn current_generation(dir: &Path) -> Option<String> {
    link_target(&dir.join(CURRENT_LINK))
}

fn link_target(link: &Path) -> Option<String> {
    fs::read_link(link)
        .ok()
        .map(|t| t.to_string_lossy().into_owned())
        .filter(|t| generation_number(t).is_some())
}

fn generation_number(name: &str) -> Option<u64> {
    name.strip_prefix(GEN_PREFIX)?.parse().ok()
}

/// The generation dirs present, by number.
fn generations(dir: &Path) -> Result<Vec<(u64, String)>, StoreError> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let e = e.map_err(io_err("list", dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(n) = generation_number(&name) {
            out.push((n, name));
        }
    }
    out.sort();
    Ok(out)
}

/// Makes `link` a symlink to `target` with one rename (a link beside it,
/// then renamed over it), unless it already is.
fn set_link(link: &Path, target: &Path) -> Result<(), StoreError> {
    if fs::read_link(link).is_ok_and(|t| t == target) {
        return Ok(());
    }
    let dir = parent_of(link);
    let name = link
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.link-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::os::unix::fs::symlink(target, &tmp).map_err(io_err("create the link", &tmp))?;
    fs::rename(&tmp, link).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err("rename into place", link)(e)
    })
}

/// After a swap: removes links to files the generation in force lacks,
/// generations other than `current` and `previous`, and temporary dirs
/// a crash left.
fn tidy(dir: &Path, present: &[&str]) -> Result<(), StoreError> {
    for name in MATERIAL_FILES {
        let p = dir.join(name);
        if !present.contains(&name) && fs::symlink_metadata(&p).is_ok_and(|m| m.is_symlink()) {
            fs::remove_file(&p).map_err(io_err("remove", &p))?;
        }
    }
    let keep = [
        current_generation(dir),
        link_target(&dir.join(PREVIOUS_LINK)),
    ];
    for (_, name) in generations(dir)? {
        if !keep.iter().any(|k| k.as_deref() == Some(name.as_str())) {
            let p = dir.join(&name);
            fs::remove_dir_all(&p).map_err(io_err("remove", &p))?;
        }
    }
    for e in fs::read_dir(dir).map_err(io_err("list", dir))?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!(".{GEN_PREFIX}")) && name.contains(".tmp-") {
            let _ = fs::remove_dir_all(e.path());
        }
    }
    fsync_dir(dir)
}

/// A security dir of the first layout (the material as plain files) is
/// turned into generation 0 without changing what is in force: the files
/// are copied into `gen-0/` (modes and owners kept), `current` names it,
/// then each file is replaced by its link, one rename each (every state on
/// the way reads the same bytes).
fn migrate_flat_layout(dir: &Path) -> Result<(), StoreError> {
    let flat: Vec<&str> = MATERIAL_FILES
        .into_iter()
        .filter(|n| fs::symlink_metadata(dir.join(n)).is_ok_and(|m| m.is_file()))
        .collect();
    if flat.is_empty() {
        return Ok(());
    }
    let gen_name = match current_generation(dir) {
        Some(g) => g,
        None => {
            let name = format!("{GEN_PREFIX}0");
            let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
            let _ = fs::remove_dir_all(&tmp);
            ensure_dir(&tmp, SECURITY_DIR_MODE, false)?;
            for n in &flat {
                use std::os::unix::fs::MetadataExt;
                let from = dir.join(n);
                let meta = fs::metadata(&from).map_err(io_err("read", &from))?;
                let bytes = fs::read(&from).map_err(io_err("read", &from))?;
                let owner = Uid::effective()
                    .is_root()
                    .then(|| (Uid::from_raw(meta.uid()), Gid::from_raw(meta.gid())));
                let to = tmp.join(n);
                write_file_atomic(&to, &bytes, meta.mode() & 0o7777, owner).map_err(
                    |(what, source)| StoreError::Io {
                        what,
                        path: to.clone(),
                        source,
                    },
                )?;
            }
            fsync_dir(&tmp)?;
            let to = dir.join(&name);
            let _ = fs::remove_dir_all(&to);
            fs::rename(&tmp, &to).map_err(io_err("rename into place", &to))?;
            set_link(&dir.join(CURRENT_LINK), Path::new(&name))?;
            fsync_dir(dir)?;
            name
        }
    };
    let gen_dir = dir.join(&gen_name);
    for n in flat {
        // Only a file the generation holds becomes a link to it.
        if gen_dir.join(n).is_file() {
            set_link(&dir.join(n), &Path::new(CURRENT_LINK).join(n))?;
        }
    }
    fsync_dir(dir)
}

/// What [`recover_node_material`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// No material, or the pair in force matches.
    Fine,
    /// Another writer holds the lock (it leaves a whole set).
    Busy,
    /// The pair in force did not match; the previous generation (which
    /// does) is in force again.
    RolledBack {
        /// The broken generation.
        from: String,
        /// The one now in force.
        to: String,
    },
    /// The pair in force does not match and there is no way back.
    Broken {
        /// What does not match (no key material).
        reason: String,
    },
}

/// Whether `dir`'s node certificate is for its node key (and each agent's
/// key copy is that key): `None` when they match or a file is missing
/// (the role loader reports missing files), else what is wrong.
pub fn pair_problem(dir: &Path) -> Option<String> {
    let read = |n: &str| read_regular(&dir.join(n), MAX_CLUSTER_FILE_BYTES).ok();
    let (Some(cert), Some(key)) = (read(paths::NODE_CERT_FILE), read(paths::NODE_KEY_FILE)) else {
        return None;
    };
    let cert_pin = std::str::from_utf8(&cert)
        .ok()
        .and_then(|c| super::ca::pin_of_cert_pem(c).ok());
    let key_pin = std::str::from_utf8(&key)
        .ok()
        .and_then(|k| rcgen::KeyPair::from_pem(k).ok())
        .map(|k| super::ca::pin_of_spki_der(&rcgen::PublicKeyData::subject_public_key_info(&k)));
    match (cert_pin, key_pin) {
        (None, _) => return Some(format!("{} is not a certificate", paths::NODE_CERT_FILE)),
        (_, None) => return Some(format!("{} is not a key", paths::NODE_KEY_FILE)),
        (Some(c), Some(k)) if c != k => {
            return Some(format!(
                "{} is not the certificate of {}",
                paths::NODE_CERT_FILE,
                paths::NODE_KEY_FILE
            ));
        }
        _ => {}
    }
    for copy in [paths::CONSUL_KEY_FILE, paths::NOMAD_KEY_FILE] {
        if let Some(c) = read(copy) {
            if c != key {
                return Some(format!("{copy} is not a copy of {}", paths::NODE_KEY_FILE));
            }
        }
    }
    None
}

/// The load-time check: when the node certificate in force is not for the
/// node key (or a key copy differs) and the previous generation's pair
/// matches, that one is put back in force (logged as a warning). Skipped
/// while another writer holds the lock. Missing material is fine.
pub fn recover_node_material(dir: &Path) -> Result<Recovery, StoreError> {
    if fs::symlink_metadata(dir.join(paths::NODE_SECRETS_FILE)).is_err() {
        return Ok(Recovery::Fine);
    }
    let lock_path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(SECRET_MODE)
        .open(&lock_path)
        .map_err(io_err("open", &lock_path))?;
    let _lock = match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Ok(Recovery::Busy),
        Err((_, e)) => return Err(io_err("lock", &lock_path)(e.into())),
    };
    let Some(reason) = pair_problem(dir) else {
        return Ok(Recovery::Fine);
    };
    let current = current_generation(dir);
    let previous = link_target(&dir.join(PREVIOUS_LINK));
    if let (Some(from), Some(to)) = (current, previous) {
        if pair_problem(&dir.join(&to)).is_none()
            && dir.join(&to).join(paths::NODE_SECRETS_FILE).is_file()
        {
            set_link(&dir.join(CURRENT_LINK), Path::new(&to))?;
            fs::remove_file(dir.join(PREVIOUS_LINK))
                .map_err(io_err("remove", &dir.join(PREVIOUS_LINK)))?;
            fsync_dir(dir)?;
            tracing::warn!(dir = %dir.display(), broken = %from, restored = %to, problem = %reason, "the node's key and certificate did not match; the previous pair is in force again");
            return Ok(Recovery::RolledBack { from, to });
        }
    }
    Ok(Recovery::Broken { reason })
}

/// What is wrong with a JSON file that holds secrets, without serde's text:
/// an "invalid type" message quotes the value it found, which may be a key.
pub(crate) fn json_problem(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Io => "failed to read",
        Category::Syntax => "not valid JSON",
        Category::Eof => "ends early",
        Category::Data => "a field is missing, unknown or of the wrong type",
    };
    if e.line() == 0 {
        what.to_string()
    } else {
        format!("{what} at line {} column {}", e.line(), e.column())
    }
}

fn parent_of(p: &Path) -> &Path {
    p.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `dir` with `mode` (its missing ancestors 0755 when `parents`);
/// an existing dir gets `mode` (the umask may have narrowed it at mkdir,
/// and a wider one left from before is narrowed).
fn ensure_dir(dir: &Path, mode: u32, parents: bool) -> Result<(), StoreError> {
    if parents {
        let parent = parent_of(dir);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(SECURITY_DIR_MODE)
            .create(parent)
            .map_err(io_err("create directory", parent))?;
    }
    match fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && !parents => {
            return Err(io_err("create directory", dir)(e));
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => return Err(io_err("create directory", dir)(e)),
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
        .map_err(io_err("set the mode of", dir))
}

fn write(
    path: &Path,
    contents: &str,
    mode: u32,
    owner: Option<(Uid, Gid)>,
) -> Result<(), StoreError> {
    write_file_atomic(path, contents.as_bytes(), mode, owner).map_err(|(what, source)| {
        StoreError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Writes `path` atomically with `mode` and, when given, `owner`: a
/// temporary file in the same directory (created with the mode, never
/// wider), fsync, rename over `path`, fsync of the directory. On error the
/// temporary file is removed; the error says which step failed.
pub(super) fn write_file_atomic(
    path: &Path,
    contents: &[u8],
    mode: u32,
    owner: Option<(Uid, Gid)>,
) -> Result<(), (&'static str, io::Error)> {
    let dir = parent_of(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let result = (|| {
        let mut file: File = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| ("create", e))?;
        // The umask may have narrowed the mode given to open.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| ("set the mode of", e))?;
        if let Some((uid, gid)) = owner {
            nix::unistd::fchown(&file, Some(uid), Some(gid))
                .map_err(|e| ("change the owner of", io::Error::from(e)))?;
        }
        file.write_all(contents).map_err(|e| ("write", e))?;
        file.sync_all().map_err(|e| ("sync", e))?;
        fs::rename(&tmp, path).map_err(|e| ("rename into place", e))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| ("sync the directory of", e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync directory", dir))
}

/// An exclusive `flock` on `path` (created 0600 if missing), held until
/// the returned value is dropped.
pub(super) fn lock_file(path: &Path) -> io::Result<nix::fcntl::Flock<File>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(SECRET_MODE)
        .open(path)?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, errno)| io::Error::from(errno))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;
    use std::time::Duration;

    use super::*;
    use crate::security::ca::new_key_pair;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().mode() & 0o7777
    }

    fn cluster(ca: &ClusterCa, acl: bool) -> ClusterFile {
        ClusterFile::new(
            ca,
            &Secret::new("Y29uc3Vs"),
            &Secret::new("bm9tYWQ="),
            "ams2",
            acl,
        )
    }

    #[test]
    fn uuids_are_version_4_variant_1() {
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        let parts: Vec<&str> = u.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            vec![8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'));
        assert!(matches!(parts[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'));
        assert_ne!(u, uuid_v4());
    }

    #[test]
    fn the_cluster_dir_is_written_0700_with_secret_files_0600_and_loads_back() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("etc/cluster");
        let ca = ClusterCa::create().unwrap();
        let c = cluster(&ca, true);
        let mut tokens = TokenStore::new(&dir, &ca.pin());
        let t = tokens
            .create(Duration::from_secs(3600), Some("first"), false, 10)
            .unwrap();
        write_cluster_dir(&dir, &ca, &c, tokens.list()).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(paths::CA_CERT_FILE)), 0o644);
        assert_eq!(mode(&dir.join(paths::CA_KEY_FILE)), 0o600);
        assert_eq!(mode(&dir.join(paths::CLUSTER_FILE)), 0o600);
        assert_eq!(mode(&dir.join(paths::TOKENS_FILE)), 0o600);
        // No temporary dir or file is left beside it.
        let names: Vec<_> = fs::read_dir(tmp.path().join("etc"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("cluster")]);
        let m = load_cluster_dir(&dir).unwrap();
        assert_eq!(m.ca.pin(), ca.pin());
        assert_eq!(m.cluster, c);
        assert!(m.tokens.check(&t.id, &t.secret, 11).is_ok());
        // Debug shows no gossip key nor ACL token.
        let shown = format!("{m:?}");
        assert!(!shown.contains("Y29uc3Vs"), "{shown}");
        let agent = c.acl.consul_agent.clone().unwrap();
        assert!(!shown.contains(&agent), "{shown}");
        // A second write is refused.
        let e = write_cluster_dir(&dir, &ca, &c, &[]).unwrap_err();
        assert!(matches!(e, StoreError::Exists { .. }), "{e}");
    }

    #[test]
    fn a_bad_cluster_file_is_refused_without_quoting_its_values() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cluster");
        let ca = ClusterCa::create().unwrap();
        write_cluster_dir(&dir, &ca, &cluster(&ca, true), &[]).unwrap();
        let path = dir.join(paths::CLUSTER_FILE);
        let text = fs::read_to_string(&path).unwrap();
        // A gossip key where a boolean belongs.
        let bad = text.replace(
            "\"acl_enabled\": true",
            "\"acl_enabled\": \"c2VjcmV0LWdvc3NpcC1rZXk=\"",
        );
        assert_ne!(bad, text);
        fs::write(&path, bad).unwrap();
        let e = load_cluster_dir(&dir).unwrap_err().to_string();
        assert!(e.contains("of the wrong type at line"), "{e}");
        assert!(!e.contains("c2VjcmV0"), "{e}");
    }

    #[test]
    fn a_cluster_file_pinning_another_ca_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cluster");
        let ca = ClusterCa::create().unwrap();
        let other = ClusterCa::create().unwrap();
        write_cluster_dir(&dir, &ca, &cluster(&other, false), &[]).unwrap();
        let e = load_cluster_dir(&dir).unwrap_err();
        assert!(matches!(e, StoreError::PinMismatch { .. }), "{e}");
        assert!(e.to_string().contains(&other.pin()), "{e}");
    }

    #[test]
    fn the_handover_round_trips_and_refuses_a_mismatched_pin() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cluster");
        let ca = ClusterCa::create().unwrap();
        write_cluster_dir(&dir, &ca, &cluster(&ca, true), &[]).unwrap();
        let m = load_cluster_dir(&dir).unwrap();
        let h = ClusterHandover::of(&m);
        assert!(!format!("{h:?}").contains("PRIVATE KEY"));
        let (back, ca2) = ClusterHandover::from_value(h.to_value()).unwrap();
        assert_eq!(ca2.pin(), ca.pin());
        assert_eq!(back.cluster, m.cluster);
        let mut bad = h.clone();
        bad.cluster.ca_sha256 = ClusterCa::create().unwrap().pin();
        assert!(matches!(
            ClusterHandover::from_value(bad.to_value()),
            Err(StoreError::PinMismatch { .. })
        ));
    }

    #[test]
    fn secrets_follow_the_roles() {
        let ca = ClusterCa::create().unwrap();
        let c = cluster(&ca, true);
        let cert = SignedCert {
            pem: String::new(),
            not_before: 1,
            not_after: 2,
        };
        let server = RoleSet {
            consul_server: true,
            nomad_server: true,
            ..RoleSet::default()
        };
        let s = secrets_for(&c, server, "ams2", &[], &[], &cert);
        assert!(s.acl.consul_agent.is_some() && s.acl.nomad_consul.is_some());
        assert!(s.acl.consul_supervisor.is_some());
        assert!(
            s.acl.consul_replication.is_none(),
            "primary dc: no replication"
        );
        assert!(s.acl.consul_initial_management.is_none() && s.acl.nomad_bootstrap.is_none());
        let s = secrets_for(&c, server, "fra1", &[], &[], &cert);
        assert_eq!(s.acl.consul_replication, c.acl.consul_replication);
        let client = RoleSet {
            nomad_client: true,
            ..RoleSet::default()
        };
        let s = secrets_for(&c, client, "fra1", &[], &[], &cert);
        assert!(s.acl.consul_agent.is_none() && s.acl.consul_replication.is_none());
        assert!(s.acl.nomad_consul.is_some());
        let s = with_init_tokens(secrets_for(&c, server, "ams2", &[], &[], &cert), &c);
        assert_eq!(
            s.acl.consul_initial_management,
            c.acl.consul_initial_management
        );
        assert_eq!(s.acl.nomad_bootstrap, c.acl.nomad_bootstrap);
        assert_eq!((s.not_before, s.not_after), (1, 2));
        // Without ACLs no token at all.
        let c = cluster(&ca, false);
        let s = with_init_tokens(secrets_for(&c, server, "fra1", &[], &[], &cert), &c);
        assert_eq!(s.acl, AclTokensFile::default());
        assert_eq!(s.consul_gossip_key, "Y29uc3Vs");
    }

    #[test]
    fn node_material_is_written_with_its_modes_and_replaced_atomically() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("security");
        let ca = ClusterCa::create().unwrap();
        let key = new_key_pair().unwrap();
        let dns = vec!["localhost".to_string()];
        let ips: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap()];
        let cert = ca
            .issue(&key, &dns, &ips, Duration::from_secs(86_400))
            .unwrap();
        let c = cluster(&ca, true);
        let secrets = secrets_for(&c, RoleSet::default(), "ams2", &dns, &ips, &cert);
        let me = User::from_uid(Uid::effective()).unwrap().unwrap().name;
        let key_pem = crate::security::ca::key_pem_of(&key);
        write_node_material(
            &dir,
            ca.cert_pem(),
            &cert.pem,
            &key_pem,
            &secrets,
            Some(&me),
            None,
        )
        .unwrap();
        assert_eq!(mode(&dir), 0o755);
        assert_eq!(mode(&dir.join(paths::CA_CERT_FILE)), 0o644);
        assert_eq!(mode(&dir.join(paths::NODE_CERT_FILE)), 0o644);
        assert_eq!(mode(&dir.join(paths::NODE_KEY_FILE)), 0o600);
        assert_eq!(mode(&dir.join(paths::CONSUL_KEY_FILE)), 0o600);
        assert!(!dir.join(paths::NOMAD_KEY_FILE).exists());
        assert_eq!(mode(&dir.join(paths::NODE_SECRETS_FILE)), 0o600);
        assert_eq!(
            fs::read_to_string(dir.join(paths::CONSUL_KEY_FILE)).unwrap(),
            key_pem.expose()
        );
        let back: NodeSecretsFile =
            serde_json::from_str(&fs::read_to_string(dir.join(paths::NODE_SECRETS_FILE)).unwrap())
                .unwrap();
        assert_eq!(back, secrets);
        // Written again (a renewal): replaced, no temporary file left.
        write_node_material(
            &dir,
            ca.cert_pem(),
            &cert.pem,
            &key_pem,
            &secrets,
            Some(&me),
            Some(&me),
        )
        .unwrap();
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![
                ".lock",
                "ca.pem",
                "consul-key.pem",
                "current",
                "gen-0",
                "gen-1",
                "node-key.pem",
                "node.json",
                "node.pem",
                "nomad-key.pem",
                "previous",
            ]
            .into_iter()
            .filter(|n| *n != ".lock")
            .collect::<Vec<_>>()
        );
        assert_eq!(
            fs::read_link(dir.join("current")).unwrap(),
            Path::new("gen-1")
        );
        assert_eq!(
            fs::read_link(dir.join("previous")).unwrap(),
            Path::new("gen-0")
        );
        assert_eq!(
            fs::read_link(dir.join(paths::NODE_CERT_FILE)).unwrap(),
            Path::new("current/node.pem")
        );
        // A third write drops gen-0.
        write_node_material(
            &dir,
            ca.cert_pem(),
            &cert.pem,
            &key_pem,
            &secrets,
            Some(&me),
            None,
        )
        .unwrap();
        assert!(!dir.join("gen-0").exists() && dir.join("gen-2").is_dir());
        // The Nomad key copy is gone with the role: no dangling link.
        assert!(fs::symlink_metadata(dir.join(paths::NOMAD_KEY_FILE)).is_err());
    }

    /// A node's material for a fresh key: (ca pem, cert pem, key pem,
    /// node.json).
    fn material(ca: &ClusterCa, days: u64) -> (String, Secret, NodeSecretsFile) {
        let key = new_key_pair().unwrap();
        let dns = vec!["localhost".to_string()];
        let ips: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap()];
        let cert = ca
            .issue(&key, &dns, &ips, Duration::from_secs(days * 86_400))
            .unwrap();
        let secrets = secrets_for(
            &cluster(ca, true),
            RoleSet::default(),
            "ams2",
            &dns,
            &ips,
            &cert,
        );
        (cert.pem, crate::security::ca::key_pem_of(&key), secrets)
    }

    /// The set in force: its pair matches, the key copies are the key, and
    /// node.json describes the certificate. Returns node.json's not_after.
    fn in_force(dir: &Path) -> u64 {
        assert_eq!(pair_problem(dir), None);
        let cert = fs::read_to_string(dir.join(paths::NODE_CERT_FILE)).unwrap();
        let json: NodeSecretsFile =
            serde_json::from_str(&fs::read_to_string(dir.join(paths::NODE_SECRETS_FILE)).unwrap())
                .unwrap();
        assert_eq!(
            crate::security::ca::not_after_of_cert_pem(&cert).unwrap(),
            json.not_after
        );
        json.not_after
    }

    #[test]
    fn a_crash_at_any_step_leaves_the_old_set_or_the_new_one_in_force() {
        let me = User::from_uid(Uid::effective()).unwrap().unwrap().name;
        let ca = ClusterCa::create().unwrap();
        let (c1, k1, s1) = material(&ca, 10);
        let (c2, k2, s2) = material(&ca, 20);
        for step in [
            Step::Migrated,
            Step::TempWritten,
            Step::GenNamed,
            Step::Linked,
            Step::Swapped,
            Step::PreviousSet,
        ] {
            for flat in [false, true] {
                let tmp = tempfile::tempdir().unwrap();
                let dir = tmp.path().join("security");
                if flat {
                    // The first layout: plain files.
                    fs::create_dir_all(&dir).unwrap();
                    for (n, b) in [
                        (paths::CA_CERT_FILE, ca.cert_pem()),
                        (paths::NODE_CERT_FILE, c1.as_str()),
                        (paths::NODE_KEY_FILE, k1.expose()),
                        (paths::CONSUL_KEY_FILE, k1.expose()),
                        (
                            paths::NODE_SECRETS_FILE,
                            &serde_json::to_string(&s1).unwrap(),
                        ),
                    ] {
                        fs::write(dir.join(n), b).unwrap();
                    }
                } else {
                    write_node_material(&dir, ca.cert_pem(), &c1, &k1, &s1, Some(&me), None)
                        .unwrap();
                }
                let new = NewMaterial {
                    ca_pem: ca.cert_pem(),
                    cert_pem: &c2,
                    key_pem: &k2,
                    secrets: &s2,
                    consul_user: Some(&me),
                    nomad_user: None,
                };
                write_generation(&dir, &new, Some(step)).unwrap();
                let got = in_force(&dir);
                let expected = if step >= Step::Swapped {
                    s2.not_after
                } else {
                    s1.not_after
                };
                assert_eq!(got, expected, "after {step:?} (flat layout: {flat})");
                // The next whole write completes from there.
                write_node_material(&dir, ca.cert_pem(), &c2, &k2, &s2, Some(&me), None).unwrap();
                assert_eq!(in_force(&dir), s2.not_after);
                let stray: Vec<_> = fs::read_dir(&dir)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|n| n.contains(".tmp-") || n.contains(".link-"))
                    .collect();
                assert!(stray.is_empty(), "{stray:?}");
            }
        }
    }

    #[test]
    fn a_mismatched_pair_falls_back_to_the_previous_generation() {
        let me = User::from_uid(Uid::effective()).unwrap().unwrap().name;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("security");
        let ca = ClusterCa::create().unwrap();
        let (c1, k1, s1) = material(&ca, 10);
        let (c2, k2, s2) = material(&ca, 20);
        assert_eq!(recover_node_material(&dir).unwrap(), Recovery::Fine);
        write_node_material(&dir, ca.cert_pem(), &c1, &k1, &s1, Some(&me), None).unwrap();
        write_node_material(&dir, ca.cert_pem(), &c2, &k2, &s2, Some(&me), None).unwrap();
        assert_eq!(recover_node_material(&dir).unwrap(), Recovery::Fine);
        // The key in force replaced by another (a broken writer, a disk).
        fs::write(dir.join("gen-1").join(paths::NODE_KEY_FILE), k1.expose()).unwrap();
        assert!(
            pair_problem(&dir)
                .unwrap()
                .contains("is not the certificate of")
        );
        let r = recover_node_material(&dir).unwrap();
        assert_eq!(
            r,
            Recovery::RolledBack {
                from: "gen-1".into(),
                to: "gen-0".into()
            }
        );
        assert_eq!(in_force(&dir), s1.not_after);
        // A key copy that differs is caught as well; no way back now.
        fs::write(dir.join("gen-0").join(paths::CONSUL_KEY_FILE), k2.expose()).unwrap();
        match recover_node_material(&dir).unwrap() {
            Recovery::Broken { reason } => {
                assert!(reason.contains("consul-key.pem"), "{reason}");
                assert!(!reason.contains("PRIVATE"), "{reason}");
            }
            r => panic!("{r:?}"),
        }
        // While another writer holds the lock, nothing is touched.
        let _held = lock_material(&dir).unwrap();
        assert_eq!(recover_node_material(&dir).unwrap(), Recovery::Busy);
    }

    #[test]
    fn an_unknown_agent_user_is_refused_before_anything_is_written() {
        let me = User::from_uid(Uid::effective()).unwrap().unwrap().name;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("security");
        let ca = ClusterCa::create().unwrap();
        let (c1, k1, s1) = material(&ca, 10);
        let (c2, k2, s2) = material(&ca, 20);
        write_node_material(&dir, ca.cert_pem(), &c1, &k1, &s1, Some(&me), None).unwrap();
        let before: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        if Uid::effective().is_root() {
            let e = write_node_material(
                &dir,
                ca.cert_pem(),
                &c2,
                &k2,
                &s2,
                Some(&me),
                Some("no-such-user-hs11"),
            )
            .unwrap_err();
            assert!(e.to_string().contains("no-such-user-hs11"), "{e}");
            let after: Vec<_> = fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(before, after);
            assert_eq!(in_force(&dir), s1.not_after);
        }
    }

    #[test]
    fn agent_key_copies_belong_to_the_agent_user_when_root() {
        use hashi_testrig::require::{available, root};
        if !available("root", root("chown needs it")) {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("security");
        let nobody = User::from_name("nobody")
            .unwrap()
            .expect("user nobody exists");
        write_node_material(
            &dir,
            "ca",
            "cert",
            &Secret::new("key"),
            &NodeSecretsFile::default(),
            Some("nobody"),
            Some("root"),
        )
        .unwrap();
        let meta = fs::metadata(dir.join(paths::CONSUL_KEY_FILE)).unwrap();
        assert_eq!(meta.uid(), nobody.uid.as_raw());
        assert_eq!(meta.mode() & 0o7777, 0o600);
        assert_eq!(
            fs::metadata(dir.join(paths::NODE_KEY_FILE)).unwrap().uid(),
            0
        );
        let e = write_node_material(
            &dir,
            "ca",
            "cert",
            &Secret::new("key"),
            &NodeSecretsFile::default(),
            Some("no-such-user-hs19"),
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("no-such-user-hs19"), "{e}");
    }
}

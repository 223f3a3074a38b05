//! What the stand-in writes into its data dir at start, as the real agents
//! do (Consul's `node-id`, Nomad's `server/`, `client/`, `alloc/`), and its
//! failed start when it cannot.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

use serde_json::json;

use crate::support::{StandIn, install_as};

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

#[test]
fn consul_writes_a_node_id_once_and_keeps_it_across_restarts() {
    let keep = tempfile::tempdir().unwrap();
    let data = keep.path().join("consul-data");
    let first = StandIn::consul().set("data_dir", json!(data)).start();
    let id = std::fs::read_to_string(data.join("node-id")).unwrap();
    assert!(is_uuid(&id), "node-id holds {id:?}");
    let mode = std::fs::metadata(data.join("node-id"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    drop(first);
    let _second = StandIn::consul().set("data_dir", json!(data)).start();
    assert_eq!(std::fs::read_to_string(data.join("node-id")).unwrap(), id);
}

#[test]
fn nomad_creates_server_client_and_alloc_dirs_per_its_mode() {
    let both = StandIn::nomad().with_client().start();
    for d in ["server", "client", "alloc"] {
        assert!(both.dir().join("data").join(d).is_dir(), "{d}/ missing");
    }
    let server = StandIn::nomad().start();
    assert!(server.dir().join("data/server").is_dir());
    assert!(!server.dir().join("data/client").exists());
}

/// Runs `<product> agent` with the config `cfg` (file name, contents) and
/// returns (exit code, stderr); `uid` runs it as that user.
fn failed_start(product: &str, file: (&str, &str), uid: Option<u32>) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cfg");
    std::fs::create_dir(&cfg).unwrap();
    std::fs::write(cfg.join(file.0), file.1).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = install_as(&dir.path().join("bin"), product);
    let flag = if product == "consul" {
        format!("-config-dir={}", cfg.display())
    } else {
        format!("-config={}", cfg.display())
    };
    let mut cmd = Command::new(bin);
    cmd.args(["agent", &flag])
        .env_remove("NOTIFY_SOCKET")
        .env_remove("STANDIN_EVENT_LOG");
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn consul_whose_data_dir_cannot_be_created_exits_1_naming_the_node_id() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let data = file.join("data");
    let (code, err) = failed_start(
        "consul",
        (
            "a.json",
            &json!({"data_dir": data, "bind_addr": "127.0.0.1", "ports": {"dns": -1}}).to_string(),
        ),
        None,
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "==> Error starting agent: failed to setup node ID: open {}/node-id: not a directory",
            data.display()
        )),
        "{err}"
    );
}

#[test]
fn nomad_server_without_write_access_to_its_data_dir_exits_1() {
    use hashi_testrig::require::{available, root};
    if !available(
        "root",
        root("running the stand-in as another user needs it"),
    ) {
        return;
    }
    // A data dir owned by root 0755: `nobody` can read it, not write it.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let hcl = format!(
        "data_dir = \"{}\"\nbind_addr = \"127.0.0.1\"\nserver {{\n  enabled = true\n  bootstrap_expect = 1\n}}\n",
        data.display()
    );
    let (code, err) = failed_start("nomad", ("a.hcl", &hcl), Some(65534));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "==> Error starting agent: mkdir {}/server: permission denied",
            data.display()
        )),
        "{err}"
    );
}

//! `supervisor cluster init` and `supervisor cluster token create|list|revoke`
//! through the real binary, in a temp config dir (the role file's `[paths]`):
//! the files and their modes, the printed token, refusals and exit codes,
//! and that no listing ever shows a secret.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hashi_supervisor::paths;
use hashi_supervisor::role::security::NodeSecretsFile;
use hashi_supervisor::security::ca;
use hashi_supervisor::security::token::JoinToken;

use crate::support::supervisor_bin;

/// A role file for a Consul + Nomad server in `ams2` / `eu` with its config
/// and state under `dir`.
fn role_file(dir: &Path, roles: &str) -> PathBuf {
    let p = dir.join("node.toml");
    let text = format!(
        "schema = 1\nroles = [{roles}]\nnode_name = \"ams2-server-01\"\nregion = \"eu\"\ndatacenter = \"ams2\"\n\
         [addresses]\nprivate = \"127.0.0.1\"\n\
         [paths]\nconfig_dir = \"{}\"\nstate_dir = \"{}\"\n",
        dir.join("etc").display(),
        dir.join("state").display()
    );
    fs::write(&p, text).expect("the test dir is writable");
    p
}

fn server_role(dir: &Path) -> PathBuf {
    role_file(dir, "\"consul-server\", \"nomad-server\"")
}

fn supervisor(role: &Path, args: &[&str]) -> Output {
    Command::new(supervisor_bin())
        .arg("--config")
        .arg(role)
        .args(args)
        .output()
        .expect("the supervisor binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .mode()
        & 0o7777
}

/// Runs `cluster init` and returns the printed token.
fn init(role: &Path) -> JoinToken {
    let o = supervisor(role, &["cluster", "init", "--token-ttl", "2h"]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let out = stdout(&o);
    let first = out.lines().next().expect("a first line");
    JoinToken::parse(first).unwrap_or_else(|e| panic!("first line {first:?} is no token: {e}"))
}

#[test]
fn cluster_init_writes_the_ca_and_node_material_with_their_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let role = server_role(tmp.path());
    let o = supervisor(&role, &["cluster", "init", "--token-ttl", "2h"]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let out = stdout(&o);
    let token = JoinToken::parse(out.lines().next().unwrap()).unwrap();
    assert!(out.contains("--join-token-file"), "{out}");
    assert!(out.contains("join_token_file"), "{out}");

    let cluster = tmp.path().join("etc").join(paths::CLUSTER_SUBDIR);
    let security = tmp.path().join("etc").join(paths::SECURITY_SUBDIR);
    assert_eq!(mode(&cluster), 0o700);
    assert_eq!(mode(&cluster.join(paths::CA_CERT_FILE)), 0o644);
    assert_eq!(mode(&cluster.join(paths::CA_KEY_FILE)), 0o600);
    assert_eq!(mode(&cluster.join(paths::CLUSTER_FILE)), 0o600);
    assert_eq!(mode(&cluster.join(paths::TOKENS_FILE)), 0o600);
    assert_eq!(mode(&security), 0o755);
    assert_eq!(mode(&security.join(paths::CA_CERT_FILE)), 0o644);
    assert_eq!(mode(&security.join(paths::NODE_CERT_FILE)), 0o644);
    assert_eq!(mode(&security.join(paths::NODE_KEY_FILE)), 0o600);
    assert_eq!(mode(&security.join(paths::CONSUL_KEY_FILE)), 0o600);
    assert_eq!(mode(&security.join(paths::NOMAD_KEY_FILE)), 0o600);
    assert_eq!(mode(&security.join(paths::NODE_SECRETS_FILE)), 0o600);

    // The token pins this CA.
    let ca_pem = fs::read_to_string(cluster.join(paths::CA_CERT_FILE)).unwrap();
    assert_eq!(token.pin, ca::pin_of_cert_pem(&ca_pem).unwrap());
    assert_eq!(
        fs::read_to_string(security.join(paths::CA_CERT_FILE)).unwrap(),
        ca_pem
    );
    // The node certificate has every name its roles need.
    let node_pem = fs::read_to_string(security.join(paths::NODE_CERT_FILE)).unwrap();
    let (dns, ips) = ca::names_of_cert_pem(&node_pem).unwrap();
    assert_eq!(
        dns,
        vec!["localhost", "server.ams2.consul", "server.eu.nomad"]
    );
    assert_eq!(ips, vec!["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]);
    // node.json: the init node holds the bootstrap tokens; its facts match.
    let secrets: NodeSecretsFile =
        serde_json::from_str(&fs::read_to_string(security.join(paths::NODE_SECRETS_FILE)).unwrap())
            .unwrap();
    assert_eq!(secrets.ca_sha256, token.pin);
    assert_eq!(secrets.primary_datacenter, "ams2");
    assert!(secrets.acl_enabled);
    assert_eq!(secrets.consul_gossip_key.len(), 44);
    assert_ne!(secrets.consul_gossip_key, secrets.nomad_gossip_key);
    assert!(secrets.acl.consul_initial_management.is_some());
    assert!(secrets.acl.nomad_bootstrap.is_some());
    assert!(secrets.acl.consul_agent.is_some());
    assert_eq!(
        secrets.not_after,
        ca::not_after_of_cert_pem(&node_pem).unwrap()
    );
    // Default cert_days: 90.
    assert!(secrets.not_after - secrets.not_before >= 90 * 86_400);
    // The secret is printed once and stored nowhere.
    for f in [paths::TOKENS_FILE, paths::CLUSTER_FILE] {
        let text = fs::read_to_string(cluster.join(f)).unwrap();
        assert!(
            !text.contains(token.secret.expose()),
            "{f} holds the secret"
        );
    }
    // As root, each agent's key copy belongs to its user (the test support
    // made the `consul` and `nomad` users).
    if nix::unistd::Uid::effective().is_root() {
        let consul = nix::unistd::User::from_name("consul").unwrap().unwrap();
        let nomad = nix::unistd::User::from_name("nomad").unwrap().unwrap();
        let meta = |f: &str| fs::metadata(security.join(f)).unwrap();
        assert_eq!(meta(paths::CONSUL_KEY_FILE).uid(), consul.uid.as_raw());
        assert_eq!(meta(paths::NOMAD_KEY_FILE).uid(), nomad.uid.as_raw());
        assert_eq!(meta(paths::NODE_KEY_FILE).uid(), 0);
        assert_eq!(fs::metadata(&cluster).unwrap().uid(), 0);
    }
}

#[test]
fn cluster_init_twice_is_refused_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let role = server_role(tmp.path());
    init(&role);
    let ca_file = tmp.path().join("etc/cluster").join(paths::CA_CERT_FILE);
    let before = fs::read(&ca_file).unwrap();
    let node = tmp.path().join("etc/security").join(paths::NODE_CERT_FILE);
    let node_before = fs::read(&node).unwrap();
    let o = supervisor(&role, &["cluster", "init"]);
    assert_eq!(o.status.code(), Some(1), "stdout: {}", stdout(&o));
    assert!(
        stderr(&o).contains("exists already: this node already belongs to a cluster"),
        "{}",
        stderr(&o)
    );
    assert!(stdout(&o).is_empty());
    assert_eq!(fs::read(&ca_file).unwrap(), before);
    assert_eq!(fs::read(&node).unwrap(), node_before);
}

#[test]
fn cluster_init_without_acl_hands_out_no_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let role = server_role(tmp.path());
    let o = supervisor(&role, &["cluster", "init", "--no-acl"]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert!(stdout(&o).contains("ACLs off"), "{}", stdout(&o));
    let secrets: NodeSecretsFile = serde_json::from_str(
        &fs::read_to_string(
            tmp.path()
                .join("etc/security")
                .join(paths::NODE_SECRETS_FILE),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(!secrets.acl_enabled);
    assert_eq!(secrets.acl, Default::default());
}

#[test]
fn cluster_init_refuses_a_dev_role_and_a_bad_ttl_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let role = role_file(tmp.path(), "\"dev\"");
    let o = supervisor(&role, &["cluster", "init"]);
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    assert!(stderr(&o).contains("never secured"), "{}", stderr(&o));
    assert!(!tmp.path().join("etc/cluster").exists());

    let role = server_role(tmp.path());
    let o = supervisor(&role, &["cluster", "init", "--token-ttl", "400d"]);
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--token-ttl: `400d` is out of range"),
        "{}",
        stderr(&o)
    );
    assert!(!tmp.path().join("etc/cluster").exists());
    assert!(!tmp.path().join("etc/security").exists());
}

#[test]
fn cluster_init_refuses_a_role_with_its_own_gossip_key() {
    let tmp = tempfile::tempdir().unwrap();
    let role = server_role(tmp.path());
    let key = tmp.path().join("consul.key");
    fs::write(&key, "Y29uc3VsY29uc3VsY29uc3VsY29uc3VsY29uc3VsMTI=\n").unwrap();
    let mut text = fs::read_to_string(&role).unwrap();
    text.push_str(&format!(
        "[consul]\nencrypt_key_file = \"{}\"\n",
        key.display()
    ));
    fs::write(&role, text).unwrap();
    let o = supervisor(&role, &["cluster", "init"]);
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("consul.encrypt_key_file name the operator's own TLS or gossip keys"),
        "{}",
        stderr(&o)
    );
    assert!(!tmp.path().join("etc/cluster").exists());
}

#[test]
fn token_commands_on_a_node_without_the_ca_say_so() {
    let tmp = tempfile::tempdir().unwrap();
    let role = server_role(tmp.path());
    for args in [
        &["cluster", "token", "list"][..],
        &["cluster", "token", "create"][..],
        &["cluster", "token", "revoke", "abcdef"][..],
    ] {
        let o = supervisor(&role, args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("holds no cluster CA") && stderr(&o).contains("cluster init"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
}

#[test]
fn tokens_are_created_listed_and_revoked_and_no_list_shows_a_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let role = server_role(tmp.path());
    let first = init(&role);

    let o = supervisor(
        &role,
        &[
            "cluster",
            "token",
            "create",
            "--ttl",
            "30m",
            "--description",
            "web clients",
            "--clients-only",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // Only the token, on one line.
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 1, "{out}");
    let second = JoinToken::parse(&out).unwrap();
    assert_eq!(second.pin, first.pin);
    assert_ne!(second.id, first.id);

    let table = stdout(&supervisor(&role, &["cluster", "token", "list"]));
    let row = |id: &str| {
        table
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("no row for {id} in\n{table}"))
            .to_string()
    };
    assert!(table.starts_with("ID "), "{table}");
    let r2 = row(&second.id);
    assert!(
        r2.contains(" active ") && r2.contains(" yes ") && r2.ends_with("web clients"),
        "{r2}"
    );
    assert!(row(&first.id).contains(" no "), "{table}");

    let o = supervisor(&role, &["cluster", "token", "revoke", &second.id]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).starts_with(&format!("revoked join token {}", second.id)));

    let table = stdout(&supervisor(&role, &["cluster", "token", "list"]));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&second.id) && l.contains(" revoked ")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&first.id) && l.contains(" active ")),
        "{table}"
    );

    let o = supervisor(&role, &["cluster", "token", "list", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = json.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let revoked = rows.iter().find(|r| r["id"] == second.id.as_str()).unwrap();
    assert_eq!(revoked["state"], "revoked");
    assert_eq!(revoked["clients_only"], true);
    assert!(revoked["revoked"].is_u64());
    assert!(revoked.get("secret_sha256").is_none());

    // Neither listing shows a secret.
    let json_text = stdout(&o);
    for t in [&first, &second] {
        assert!(!table.contains(t.secret.expose()));
        assert!(!json_text.contains(t.secret.expose()));
    }

    // Revoking an unknown id names it.
    let o = supervisor(&role, &["cluster", "token", "revoke", "zzzzzz"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no join token with id `zzzzzz`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn check_refuses_the_node_before_init_and_reads_its_material_after() {
    let tmp = tempfile::tempdir().unwrap();
    let role = server_role(tmp.path());
    let o = supervisor(&role, &["check"]);
    assert_eq!(o.status.code(), Some(78), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("`supervisor cluster init`"),
        "{}",
        stderr(&o)
    );
    let token = init(&role);
    let o = supervisor(&role, &["check"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains(&token.pin), "{out}");
    assert!(out.contains("server.ams2.consul"), "{out}");
    assert!(!out.contains(token.secret.expose()), "{out}");
}

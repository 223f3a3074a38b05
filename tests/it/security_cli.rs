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

/// A renewal whose reload is refused (here the role file no longer loads)
/// still sends SIGHUP to both agents: their TLS files changed on disk and
/// they re-read them only on it. A plain reload refused the same way sends
/// nothing.
#[tokio::test]
async fn a_renewal_whose_reload_is_refused_still_sighups_the_agents() {
    use crate::support::daemon::{Rig, agent, all_ready, poll, start};
    use crate::support::preparer::FakePreparer;
    use hashi_supervisor::supervise::DaemonEvent;
    use hashi_supervisor::vocab::Product;
    use nix::sys::signal::Signal;
    let rig = Rig::new();
    let plan = rig.plan(vec![
        rig.agent(Product::Consul, Signal::SIGINT),
        rig.agent(Product::Nomad, Signal::SIGINT),
    ]);
    let preparer = FakePreparer::new()
        .reload_fails("the role file does not load")
        .reload_fails("the role file still does not load")
        .build();
    let d = start(plan, preparer, rig.opts(&[]));
    let s = d.wait("ready", all_ready).await;
    let pids = (
        agent(&s, Product::Consul).pid,
        agent(&s, Product::Nomad).pid,
    );
    let hups = |rig: &Rig| {
        rig.events()
            .iter()
            .filter(|e| e.ends_with("signal HUP"))
            .count()
    };
    d.events.send(DaemonEvent::Reload).unwrap();
    d.wait("the plain reload refused", |s| {
        s.reload_error
            .as_deref()
            .is_some_and(|e| e.contains("does not load"))
    })
    .await;
    assert_eq!(hups(&rig), 0, "{:?}", rig.events());
    d.events.send(DaemonEvent::Renewed).unwrap();
    d.wait("the renewal's reload refused", |s| {
        s.reload_error
            .as_deref()
            .is_some_and(|e| e.contains("still does not load"))
    })
    .await;
    poll("SIGHUP to both agents", || {
        let e = rig.events();
        e.contains(&"consul signal HUP".to_string()) && e.contains(&"nomad signal HUP".to_string())
    })
    .await;
    let s = d.wait("ready after the SIGHUP", all_ready).await;
    assert_eq!(
        (
            agent(&s, Product::Consul).pid,
            agent(&s, Product::Nomad).pid
        ),
        pids,
        "reloaded, not restarted"
    );
    d.stop().await;
}

/// The role of `role_file`, loaded as `run` loads it.
fn load_role(role_file: &Path) -> hashi_supervisor::role::NodeRole {
    use hashi_supervisor::role::{self, Overrides, SystemHost};
    role::load_with(role_file, true, &Overrides::default(), &SystemHost)
        .unwrap_or_else(|e| panic!("the role loads: {e}"))
        .role
}

/// Where `current` points in the security dir.
fn generation(etc: &Path) -> PathBuf {
    fs::read_link(etc.join("security/current")).expect("a current generation")
}

/// While tokens are missing, the renewal task fetches the secrets alone:
/// nothing new → nothing written (same generation); a new supervisor token
/// → node.json rewritten with the SAME key and certificate, and only the
/// supervisor's part changed; a changed token an agent carries → reported
/// as an agent change.
#[tokio::test]
async fn fetching_missing_tokens_keeps_the_key_and_writes_only_what_changed() {
    use hashi_supervisor::security::renew::{self, Change};
    use hashi_supervisor::security::store;
    let tmp = tempfile::tempdir().unwrap();
    let role_path = server_role(tmp.path());
    init(&role_path);
    let etc = tmp.path().join("etc");
    let role = load_role(&role_path);
    let m = role
        .security
        .material
        .as_ref()
        .expect("material after init");
    assert!(
        renew::lacks_acl_tokens(&role, &m.secrets),
        "no Nomad token before the bootstrap"
    );
    let key = fs::read(etc.join("security/node-key.pem")).unwrap();
    let cert = fs::read(etc.join("security/node.pem")).unwrap();
    let gen0 = generation(&etc);

    let r = renew::refresh_secrets(&role, &[]).await.unwrap();
    assert_eq!(r.change, Change::Nothing);
    assert_eq!(generation(&etc), gen0, "nothing new, nothing written");

    // The ACL bootstrap made the Nomad supervisors' token.
    let cluster_dir = etc.join("cluster");
    let mut c = store::load_cluster_dir(&cluster_dir).unwrap().cluster;
    c.acl.nomad_supervisor = Some("9d1c3a52-0000-4000-8000-00000000abcd".into());
    store::save_cluster_file(&cluster_dir, &c).unwrap();
    let r = renew::refresh_secrets(&role, &[]).await.unwrap();
    assert_eq!(r.change, Change::SupervisorOnly);
    assert_ne!(generation(&etc), gen0);
    assert_eq!(fs::read(etc.join("security/node-key.pem")).unwrap(), key);
    assert_eq!(fs::read(etc.join("security/nomad-key.pem")).unwrap(), key);
    assert_eq!(fs::read(etc.join("security/node.pem")).unwrap(), cert);
    let json: NodeSecretsFile =
        serde_json::from_slice(&fs::read(etc.join("security/node.json")).unwrap()).unwrap();
    assert_eq!(
        json.acl.nomad_supervisor.as_deref(),
        Some("9d1c3a52-0000-4000-8000-00000000abcd")
    );
    assert_eq!(
        json.not_after, m.secrets.not_after,
        "the certificate is kept"
    );
    assert!(
        json.acl.nomad_bootstrap.is_some(),
        "the init node keeps its bootstrap secret"
    );

    // Now complete: the role read again lacks nothing.
    let role = load_role(&role_path);
    let m = role.security.material.as_ref().unwrap();
    assert!(!renew::lacks_acl_tokens(&role, &m.secrets));

    // A token Nomad's config carries changed in the cluster.
    c.acl.nomad_consul = Some("9d1c3a52-0000-4000-8000-00000000beef".into());
    store::save_cluster_file(&cluster_dir, &c).unwrap();
    let r = renew::refresh_secrets(&role, &[]).await.unwrap();
    assert_eq!(r.change, Change::Agents);
    assert_eq!(fs::read(etc.join("security/node-key.pem")).unwrap(), key);
}

#[test]
fn cluster_init_with_acls_needs_both_servers_and_names_the_flag() {
    for roles in [
        "\"consul-server\"",
        "\"nomad-server\"",
        "\"consul-server\", \"nomad-client\"",
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let role = role_file(tmp.path(), roles);
        if !roles.contains("consul-server") {
            // A Nomad node without a local Consul must say where its
            // servers are.
            let mut text = fs::read_to_string(&role).unwrap();
            text.push_str("[discovery]\nnomad_retry_join = [\"127.0.0.2\"]\n");
            fs::write(&role, text).unwrap();
        }
        let o = supervisor(&role, &["cluster", "init"]);
        assert_eq!(o.status.code(), Some(78), "{roles}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(
            e.contains("must run on a node with both consul-server and nomad-server"),
            "{e}"
        );
        assert!(e.contains("--no-acl"), "{e}");
        assert!(stdout(&o).is_empty());
        assert!(!tmp.path().join("etc/cluster").exists(), "{roles}");
        assert!(!tmp.path().join("etc/security").exists(), "{roles}");
        // Without ACLs there is nothing to bootstrap: allowed.
        let o = supervisor(&role, &["cluster", "init", "--no-acl"]);
        assert_eq!(o.status.code(), Some(0), "{roles}: {}", stderr(&o));
    }
}

/// An init that stopped after renaming the cluster dir into place (the
/// node's material never written) is finished by the next `init`: same
/// CA, a new join token (the first was never printed), and then it is a
/// complete cluster that a third `init` refuses.
#[test]
fn a_half_finished_cluster_init_is_finished_by_running_it_again() {
    let tmp = tempfile::tempdir().unwrap();
    let role = server_role(tmp.path());
    let first = init(&role);
    let etc = tmp.path().join("etc");
    let ca_before = fs::read(etc.join("cluster").join(paths::CA_CERT_FILE)).unwrap();
    // As if the node material's write had failed.
    fs::remove_dir_all(etc.join("security")).unwrap();
    let o = supervisor(&role, &["cluster", "init", "--token-ttl", "2h"]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("initialisation finished"), "{out}");
    let second = JoinToken::parse(out.lines().next().unwrap()).unwrap();
    assert_eq!(second.pin, first.pin, "the same CA");
    assert_ne!(second.id, first.id);
    assert_eq!(
        fs::read(etc.join("cluster").join(paths::CA_CERT_FILE)).unwrap(),
        ca_before
    );
    // The node's material is complete and loads (check reads it).
    let o = supervisor(&role, &["check"]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    let secrets: NodeSecretsFile = serde_json::from_slice(
        &fs::read(etc.join("security").join(paths::NODE_SECRETS_FILE)).unwrap(),
    )
    .unwrap();
    assert!(secrets.acl.consul_initial_management.is_some());
    let o = supervisor(&role, &["cluster", "init"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("exists already"), "{}", stderr(&o));
}

/// A cluster dir without node material that an init alone did not leave
/// (a join token was used: a server that joined) is not "finished": the
/// message says exactly what to remove.
#[test]
fn a_cluster_dir_without_material_that_init_did_not_leave_is_refused_naming_it() {
    use hashi_supervisor::security::token::TokenStore;
    let tmp = tempfile::tempdir().unwrap();
    let role = server_role(tmp.path());
    let t = init(&role);
    let etc = tmp.path().join("etc");
    let cluster = etc.join("cluster");
    assert!(TokenStore::modify(&cluster, &t.pin, |s| Ok(s.record_use(&t.id))).unwrap());
    fs::remove_dir_all(etc.join("security")).unwrap();
    let o = supervisor(&role, &["cluster", "init"]);
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains(&format!(
            "{} exists but {} does not",
            cluster.display(),
            etc.join("security/node.json").display()
        )),
        "{e}"
    );
    assert!(e.contains(&format!("remove {}", cluster.display())), "{e}");
    assert!(!etc.join("security/node.json").exists());
}

/// A role file for a Nomad client in `dir` (`join_token_file` when given).
fn client_role(dir: &Path, token_file: Option<&Path>) -> PathBuf {
    let p = dir.join("node.toml");
    let mut text = format!(
        "schema = 1\nroles = [\"nomad-client\"]\nnode_name = \"ams2-client-07\"\nregion = \"eu\"\ndatacenter = \"ams2\"\n\
         [addresses]\nprivate = \"127.0.0.1\"\n[nomad]\nuser = \"nobody\"\n\
         [discovery]\nnomad_retry_join = [\"127.0.0.1\"]\n\
         [paths]\nconfig_dir = \"{}\"\nstate_dir = \"{}\"\n",
        dir.join("etc").display(),
        dir.join("state").display()
    );
    if let Some(f) = token_file {
        text.push_str(&format!(
            "[security]\njoin_token_file = \"{}\"\n",
            f.display()
        ));
    }
    fs::write(&p, text).expect("the test dir is writable");
    p
}

#[test]
fn a_join_token_file_open_to_others_is_refused_naming_it() {
    use std::os::unix::fs::PermissionsExt;
    let server = tempfile::tempdir().unwrap();
    let token = init(&server_role(server.path()));
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("join-token");
    fs::write(&file, format!("{}\n", token.expose())).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    let role = client_role(tmp.path(), Some(&file));
    for args in [
        vec!["check"],
        vec!["--join-token-file", file.to_str().unwrap(), "check"],
    ] {
        let o = supervisor(&role, &args);
        assert_eq!(o.status.code(), Some(78), "{args:?}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(
            e.contains(&format!(
                "the join token file {} is open to group or others (mode 0644)",
                file.display()
            )),
            "{e}"
        );
        assert!(!e.contains(&token.expose()), "{e}");
    }
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    let o = supervisor(&role, &["check"]);
    assert!(!stderr(&o).contains("join token file"), "{}", stderr(&o));
}

/// The load-time check: when the key in force is not the certificate's
/// (a broken writer, a disk), `check` (any command's load) puts the
/// previous generation's matching pair back in force.
#[test]
fn a_mismatched_key_and_certificate_fall_back_to_the_previous_pair_at_load() {
    use hashi_supervisor::security::store;
    let tmp = tempfile::tempdir().unwrap();
    let role = server_role(tmp.path());
    init(&role);
    let etc = tmp.path().join("etc");
    let sec = etc.join("security");
    let old_key = fs::read_to_string(sec.join(paths::NODE_KEY_FILE)).unwrap();
    // A second generation (what a renewal writes).
    let m = store::load_cluster_dir(&etc.join("cluster")).unwrap();
    let key = ca::new_key_pair().unwrap();
    let json: NodeSecretsFile =
        serde_json::from_slice(&fs::read(sec.join(paths::NODE_SECRETS_FILE)).unwrap()).unwrap();
    let cert =
        m.ca.issue(
            &key,
            &json.names,
            &json.ips,
            std::time::Duration::from_secs(86_400 * 40),
        )
        .unwrap();
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::effective())
        .unwrap()
        .unwrap()
        .name;
    store::write_node_material(
        &sec,
        m.ca.cert_pem(),
        &cert.pem,
        &ca::key_pem_of(&key),
        &NodeSecretsFile {
            not_before: cert.not_before,
            not_after: cert.not_after,
            ..json
        },
        Some(&user),
        Some(&user),
    )
    .unwrap();
    assert_eq!(generation(&etc), PathBuf::from("gen-1"));
    // The key in force replaced by the old one.
    let broken = sec.join("gen-1").join(paths::NODE_KEY_FILE);
    fs::write(&broken, &old_key).unwrap();
    let o = supervisor(&role, &["check"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(generation(&etc), PathBuf::from("gen-0"));
    assert_eq!(store::pair_problem(&sec), None);
    assert!(!stderr(&o).contains("PRIVATE KEY"), "{}", stderr(&o));
}

/// A node whose certificate expired (renewal over mutual TLS impossible)
/// and that is given a join token must join again; the join writes a new
/// generation and keeps the old set as `previous` until then. Without a
/// token it does not, and a node with a valid certificate ignores a token.
#[tokio::test]
async fn a_node_whose_certificate_expired_rejoins_with_a_join_token() {
    use hashi_supervisor::role::{self, Overrides, Secret, SystemHost};
    use hashi_supervisor::security::join_client;
    use hashi_supervisor::security::join_server::JoinEndpoint;
    let server = tempfile::tempdir().unwrap();
    let token = init(&server_role(server.path()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let endpoint = JoinEndpoint::new(
        &server.path().join("etc/cluster"),
        std::time::Duration::from_secs(86_400 * 90),
    );
    tokio::spawn(endpoint.serve(listener, cancel.clone()));
    let candidates = vec![addr.to_string()];

    let tmp = tempfile::tempdir().unwrap();
    let role_path = client_role(tmp.path(), None);
    let load = |with_token: bool| {
        let overrides = Overrides {
            join_token: with_token.then(|| Secret::new(token.expose())),
            ..Overrides::default()
        };
        role::load_with(&role_path, true, &overrides, &SystemHost)
            .unwrap_or_else(|e| panic!("the role loads: {e}"))
            .role
    };
    let now = ca::now_unix();
    let first = load(true);
    assert!(first.security.must_join(now));
    join_client::join(&first, &token, &candidates)
        .await
        .unwrap();
    let etc = tmp.path().join("etc");
    let gen0 = generation(&etc);
    assert!(
        !load(true).security.must_join(now),
        "a valid certificate: no rejoin"
    );

    // The certificate expired (as node.json records it).
    let json_path = etc.join("security").join(paths::NODE_SECRETS_FILE);
    let mut json: NodeSecretsFile = serde_json::from_slice(&fs::read(&json_path).unwrap()).unwrap();
    json.not_before = now - 200;
    json.not_after = now - 100;
    fs::write(&json_path, serde_json::to_string(&json).unwrap()).unwrap();
    let without = load(false);
    assert!(without.security.material.is_some());
    assert!(
        !without.security.must_join(now),
        "no token: nothing to rejoin with"
    );
    let expired = load(true);
    assert!(expired.security.must_join(now));
    join_client::join(&expired, &token, &candidates)
        .await
        .unwrap();
    assert_ne!(generation(&etc), gen0);
    assert_eq!(
        fs::read_link(etc.join("security/previous")).unwrap(),
        gen0,
        "the old set is kept"
    );
    let again = load(true);
    let m = again.security.material.as_ref().unwrap();
    assert!(m.secrets.not_after > now + 86_400);
    assert!(!again.security.must_join(now));
    cancel.cancel();
}

/// `renew` holds the security dir's lock from reading the material in
/// force to writing the new set, network exchange included: while it
/// waits on a join endpoint that accepted and never answers, any other
/// writer (here the load-time check) finds the lock taken.
#[tokio::test]
async fn a_renewal_holds_the_security_dir_lock_through_its_exchange() {
    use hashi_supervisor::role::{self, Overrides, Secret, SystemHost};
    use hashi_supervisor::security::join_server::JoinEndpoint;
    use hashi_supervisor::security::store::{self, Recovery};
    use hashi_supervisor::security::{join_client, renew};
    let server = tempfile::tempdir().unwrap();
    let token = init(&server_role(server.path()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let endpoint = JoinEndpoint::new(
        &server.path().join("etc/cluster"),
        std::time::Duration::from_secs(86_400 * 90),
    );
    tokio::spawn(endpoint.serve(listener, cancel.clone()));
    let tmp = tempfile::tempdir().unwrap();
    let role_path = client_role(tmp.path(), None);
    let overrides = Overrides {
        join_token: Some(Secret::new(token.expose())),
        ..Overrides::default()
    };
    let joining = role::load_with(&role_path, true, &overrides, &SystemHost)
        .unwrap()
        .role;
    join_client::join(&joining, &token, &[addr.to_string()])
        .await
        .unwrap();
    let role = role::load_with(&role_path, true, &Overrides::default(), &SystemHost)
        .unwrap()
        .role;
    assert!(role.security.material.is_some());

    // An endpoint that accepts and then says nothing.
    let stalled = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stalled_addr = stalled.local_addr().unwrap();
    let (accepted_tx, mut accepted_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = stalled.accept().await {
            held.push(s);
            let _ = accepted_tx.send(());
        }
    });
    let sec = tmp.path().join("etc/security");
    assert_eq!(store::recover_node_material(&sec).unwrap(), Recovery::Fine);
    let task = tokio::spawn(async move { renew::renew(&role, &[stalled_addr.to_string()]).await });
    accepted_rx.recv().await.expect("the renewal connects");
    assert_eq!(store::recover_node_material(&sec).unwrap(), Recovery::Busy);
    task.abort();
    let _ = task.await;
    // Released with the renewal.
    assert_eq!(store::recover_node_material(&sec).unwrap(), Recovery::Fine);
    cancel.cancel();
}

//! The join endpoint and the join client over real TLS on loopback: a CA
//! holder's cluster dir in a temp dir, `JoinEndpoint` serving on port 0,
//! and `join_client::join` writing a node's material into another temp
//! dir; refusals (wrong secret, revoked, expired, clients-only token for a
//! server, extra names), a man in the middle with another CA (refused
//! before any request is sent), and renewal.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup step is a failed test

use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hashi_supervisor::role::{self, NodeRole, Secret, SystemHost};
use hashi_supervisor::security::ca::{self, ClusterCa};
use hashi_supervisor::security::join_client::{self, Credential, JoinError};
use hashi_supervisor::security::join_server::{self, JoinEndpoint};
use hashi_supervisor::security::store::{self, ClusterFile};
use hashi_supervisor::security::token::{JoinToken, TokenStore};
use hashi_supervisor::security::{names, renew, sync, wire};
use tokio_util::sync::CancellationToken;

const GOSSIP: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
const DAY: Duration = Duration::from_secs(86_400);

/// A CA holder: its config dir, the endpoint's address, tokens.
struct Holder {
    _tmp: tempfile::TempDir,
    cluster_dir: PathBuf,
    addr: SocketAddr,
    pin: String,
    cancel: CancellationToken,
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Holder {
    /// A new cluster (ACLs on, primary dc `ams2`) serving joins, signing
    /// certificates for `lifetime`.
    async fn start(lifetime: Duration) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let cluster_dir = tmp.path().join("etc/cluster");
        let ca = ClusterCa::create().unwrap();
        let cluster = ClusterFile::new(
            &ca,
            &Secret::new(GOSSIP),
            &Secret::new(GOSSIP),
            "ams2",
            true,
        );
        store::write_cluster_dir(&cluster_dir, &ca, &cluster, &[]).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let endpoint = JoinEndpoint::new(&cluster_dir, lifetime);
        tokio::spawn(endpoint.serve(listener, cancel.clone()));
        Self {
            _tmp: tmp,
            cluster_dir,
            addr,
            pin: ca.pin(),
            cancel,
        }
    }

    /// A token made `age` ago living `ttl` (`clients_only` as given).
    fn token(&self, ttl: Duration, age: Duration, clients_only: bool) -> JoinToken {
        TokenStore::modify(&self.cluster_dir, &self.pin, |s| {
            s.create(
                ttl,
                Some("test"),
                clients_only,
                ca::now_unix() - age.as_secs(),
            )
        })
        .unwrap()
    }

    fn revoke(&self, id: &str) {
        TokenStore::modify(&self.cluster_dir, &self.pin, |s| {
            s.revoke(id, ca::now_unix()).map(|_| ())
        })
        .unwrap();
    }

    fn uses(&self, id: &str) -> u64 {
        let s = TokenStore::load(&self.cluster_dir, &self.pin).unwrap();
        s.list().iter().find(|r| r.id == id).unwrap().uses
    }

    fn candidates(&self) -> Vec<String> {
        vec![self.addr.to_string()]
    }
}

/// A node's role file in `dir` (config under `dir/etc`), loaded with
/// `token` as `--join-token` would pass it.
fn node_role(dir: &Path, roles: &[&str], token: &JoinToken) -> NodeRole {
    let roles = roles
        .iter()
        .map(|r| format!("\"{r}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!(
        "schema = 1\nroles = [{roles}]\nnode_name = \"ams2-node-07\"\ndatacenter = \"ams2\"\n\
         [addresses]\nprivate = \"127.0.0.1\"\n[consul]\nuser = \"nobody\"\n[nomad]\nuser = \"nobody\"\n\
         [discovery]\nnomad_retry_join = [\"127.0.0.1\"]\n[paths]\nconfig_dir = \"{}\"\nstate_dir = \"{}\"\n",
        dir.join("etc").display(),
        dir.join("state").display()
    );
    let path = dir.join("node.toml");
    std::fs::write(&path, text).unwrap();
    let overrides = role::Overrides {
        join_token: Some(Secret::new(token.expose())),
        ..role::Overrides::default()
    };
    role::load_with(&path, true, &overrides, &SystemHost)
        .unwrap()
        .role
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

#[tokio::test]
async fn a_client_joins_with_a_token_and_gets_its_material() {
    let holder = Holder::start(90 * DAY).await;
    let token = holder.token(DAY, Duration::ZERO, true);
    let tmp = tempfile::tempdir().unwrap();
    let role = node_role(tmp.path(), &["consul-client", "nomad-client"], &token);
    let out = join_client::join(&role, &token, &holder.candidates())
        .await
        .unwrap();
    assert_eq!(out.endpoint, holder.addr.to_string());
    assert!(!out.ca_holder);
    let sec = tmp.path().join("etc/security");
    assert_eq!(mode(&sec), 0o755);
    for (f, m) in [
        ("ca.pem", 0o644),
        ("node.pem", 0o644),
        ("node-key.pem", 0o600),
        ("consul-key.pem", 0o600),
        ("nomad-key.pem", 0o600),
        ("node.json", 0o600),
    ] {
        assert_eq!(mode(&sec.join(f)), m, "{f}");
    }
    if is_root() {
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        for f in ["consul-key.pem", "nomad-key.pem"] {
            assert_eq!(
                std::fs::metadata(sec.join(f)).unwrap().uid(),
                nobody.uid.as_raw(),
                "{f}"
            );
        }
        assert_eq!(
            std::fs::metadata(sec.join("node-key.pem")).unwrap().uid(),
            0
        );
    }
    assert!(
        !tmp.path().join("etc/cluster").exists(),
        "a client holds no CA"
    );
    // The certificate: exactly the names of the roles, the pinned CA.
    let cert = std::fs::read_to_string(sec.join("node.pem")).unwrap();
    let (dns, ips) = ca::names_of_cert_pem(&cert).unwrap();
    let mut want = vec![
        "client.ams2.consul".to_string(),
        "client.global.nomad".to_string(),
        "localhost".to_string(),
    ];
    want.sort();
    let mut dns_sorted = dns.clone();
    dns_sorted.sort();
    assert_eq!(dns_sorted, want);
    assert_eq!(ips, vec!["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]);
    assert_eq!(
        ca::pin_of_cert_pem(&std::fs::read_to_string(sec.join("ca.pem")).unwrap()).unwrap(),
        holder.pin
    );
    // The key on disk is the certificate's.
    let key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(sec.join("node-key.pem")).unwrap())
        .unwrap();
    use rcgen::PublicKeyData;
    assert_eq!(
        ca::pin_of_cert_pem(&cert).unwrap(),
        ca::pin_of_spki_der(&key.subject_public_key_info())
    );
    // node.json: the cluster's gossip keys and this node's tokens; the
    // role loader reads it back as material.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sec.join("node.json")).unwrap()).unwrap();
    assert_eq!(json["consul_gossip_key"], GOSSIP);
    assert_eq!(json["not_after"].as_u64().unwrap(), out.not_after);
    assert!(json["acl"]["consul_agent"].is_string());
    assert!(json["acl"].get("consul_initial_management").is_none());
    let reloaded = node_role(tmp.path(), &["consul-client", "nomad-client"], &token);
    let m = reloaded.security.material.expect("material read back");
    assert_eq!(m.secrets.ca_sha256, holder.pin);
    assert_eq!(holder.uses(&token.id), 1);
}

#[tokio::test]
async fn a_server_joining_with_a_server_token_becomes_a_ca_holder() {
    let holder = Holder::start(90 * DAY).await;
    let token = holder.token(DAY, Duration::ZERO, false);
    let tmp = tempfile::tempdir().unwrap();
    let role = node_role(tmp.path(), &["consul-server", "nomad-server"], &token);
    let out = join_client::join(&role, &token, &holder.candidates())
        .await
        .unwrap();
    assert!(out.ca_holder);
    let cluster = tmp.path().join("etc/cluster");
    assert_eq!(mode(&cluster), 0o700);
    assert_eq!(mode(&cluster.join("ca-key.pem")), 0o600);
    let m = store::load_cluster_dir(&cluster).unwrap();
    assert_eq!(m.ca.pin(), holder.pin);
    assert!(m.tokens.list().iter().any(|r| r.id == token.id));
    let cert = std::fs::read_to_string(tmp.path().join("etc/security/node.pem")).unwrap();
    let (mut dns, _) = ca::names_of_cert_pem(&cert).unwrap();
    dns.sort();
    assert_eq!(
        dns,
        vec!["localhost", "server.ams2.consul", "server.global.nomad"]
    );
}

/// Joins `role` with `token` and returns the error.
async fn refused(holder: &Holder, roles: &[&str], token: &JoinToken) -> JoinError {
    let tmp = tempfile::tempdir().unwrap();
    let role = node_role(tmp.path(), roles, token);
    let e = join_client::join(&role, token, &holder.candidates())
        .await
        .unwrap_err();
    assert!(
        !tmp.path().join("etc/security").exists(),
        "nothing is written on a refusal"
    );
    e
}

#[tokio::test]
async fn a_wrong_secret_is_refused_with_401() {
    let holder = Holder::start(90 * DAY).await;
    let good = holder.token(DAY, Duration::ZERO, false);
    let wrong = JoinToken::parse(&format!(
        "{}.{}@{}",
        good.id, "0123456789abcdef", holder.pin
    ))
    .unwrap();
    let e = refused(&holder, &["nomad-client"], &wrong).await;
    assert!(e.is_refusal());
    assert!(matches!(e, JoinError::Refused { status: 401, .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "the join endpoint at {} refused the join token: wrong secret for join token {}",
            holder.addr, good.id
        )
    );
    assert!(!e.to_string().contains("0123456789abcdef"));
    assert_eq!(holder.uses(&good.id), 0);
}

#[tokio::test]
async fn revoked_and_expired_tokens_are_refused_with_403() {
    let holder = Holder::start(90 * DAY).await;
    let revoked = holder.token(DAY, Duration::ZERO, false);
    holder.revoke(&revoked.id);
    let e = refused(&holder, &["nomad-client"], &revoked).await;
    assert!(matches!(e, JoinError::Refused { status: 403, .. }), "{e:?}");
    assert!(e.to_string().contains("was revoked"), "{e}");
    // Made two hours ago, living one.
    let expired = holder.token(Duration::from_secs(3600), Duration::from_secs(7200), false);
    let e = refused(&holder, &["nomad-client"], &expired).await;
    assert!(matches!(e, JoinError::Refused { status: 403, .. }), "{e:?}");
    assert!(e.to_string().contains("expired"), "{e}");
}

#[tokio::test]
async fn a_clients_only_token_cannot_join_a_server() {
    let holder = Holder::start(90 * DAY).await;
    let token = holder.token(DAY, Duration::ZERO, true);
    let e = refused(&holder, &["nomad-server"], &token).await;
    assert!(matches!(e, JoinError::Refused { status: 403, .. }), "{e:?}");
    assert!(e.to_string().contains("joins clients only"), "{e}");
    assert_eq!(holder.uses(&token.id), 0);
}

#[tokio::test]
async fn a_request_with_extra_names_is_refused_with_400() {
    let holder = Holder::start(90 * DAY).await;
    let token = holder.token(DAY, Duration::ZERO, true);
    let key = ca::new_key_pair().unwrap();
    let roles = names::role_set(&["nomad-client".to_string()]).unwrap();
    let mut dns = names::dns_names(roles, "global", "ams2");
    dns.push("server.global.nomad".into());
    let ips = vec!["127.0.0.1".parse().unwrap()];
    let request = wire::JoinRequest {
        node: "ams2-node-07".into(),
        roles: vec!["nomad-client".into()],
        region: "global".into(),
        datacenter: "ams2".into(),
        ips: ips.clone(),
        csr: ca::make_csr(&key, &dns, &ips).unwrap(),
    };
    let e = join_client::exchange(
        &holder.candidates(),
        &holder.pin,
        Credential::Token(&token),
        &request,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e, JoinError::Rejected { status: 400, .. }),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("extra DNS:server.global.nomad"),
        "{e}"
    );
    assert!(!e.is_refusal());
    assert_eq!(holder.uses(&token.id), 0);
}

/// A TLS endpoint with its own CA (a man in the middle): counts the
/// handshakes that completed and the request bytes it read.
async fn rogue_endpoint() -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>, String) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::AsyncReadExt;
    let ca = ClusterCa::create().unwrap();
    let (cert, key) = ca.mint_join_server_cert().unwrap();
    let chain = vec![
        CertificateDer::from_pem_slice(cert.pem.as_bytes()).unwrap(),
        CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap(),
    ];
    let key = PrivateKeyDer::from_pem_slice(key.expose().as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let bytes = Arc::new(AtomicUsize::new(0));
    let (h, b) = (handshakes.clone(), bytes.clone());
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            if let Ok(mut tls) = acceptor.accept(s).await {
                h.fetch_add(1, Ordering::SeqCst);
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    b.fetch_add(n, Ordering::SeqCst);
                }
            }
        }
    });
    (addr, handshakes, bytes, ca.pin())
}

#[tokio::test]
async fn an_endpoint_with_another_ca_is_refused_before_any_request() {
    let holder = Holder::start(90 * DAY).await;
    let token = holder.token(DAY, Duration::ZERO, false);
    let (rogue, handshakes, bytes, rogue_pin) = rogue_endpoint().await;
    let tmp = tempfile::tempdir().unwrap();
    let role = node_role(tmp.path(), &["nomad-client"], &token);
    let e = join_client::join(&role, &token, &[rogue.to_string()])
        .await
        .unwrap_err();
    assert!(e.is_refusal(), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "the join endpoint at {rogue} is not this cluster's: it presents CA {rogue_pin}, the token pins {}",
            holder.pin
        )
    );
    // The rogue saw no completed handshake and not one byte of a request
    // (the bearer token never left the node).
    assert_eq!(handshakes.load(Ordering::SeqCst), 0);
    assert_eq!(bytes.load(Ordering::SeqCst), 0);
    assert!(!tmp.path().join("etc/security").exists());
}

#[tokio::test]
async fn a_rogue_endpoint_first_in_line_does_not_stop_the_join() {
    let holder = Holder::start(90 * DAY).await;
    let token = holder.token(DAY, Duration::ZERO, true);
    let (rogue, _, bytes, _) = rogue_endpoint().await;
    let tmp = tempfile::tempdir().unwrap();
    let role = node_role(tmp.path(), &["nomad-client"], &token);
    let out = join_client::join(&role, &token, &[rogue.to_string(), holder.addr.to_string()])
        .await
        .unwrap();
    assert_eq!(out.endpoint, holder.addr.to_string());
    assert_eq!(bytes.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn unreachable_candidates_are_each_named() {
    let token = JoinToken::parse(&format!(
        "abcdef.0123456789abcdef@sha256:{}",
        "a".repeat(64)
    ))
    .unwrap();
    // Ports that were just free: nothing listens.
    let free = |_| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let (a, b): (SocketAddr, SocketAddr) = (free(0), free(1));
    let tmp = tempfile::tempdir().unwrap();
    let role = node_role(tmp.path(), &["nomad-client"], &token);
    let e = join_client::join(&role, &token, &[a.to_string(), b.to_string()])
        .await
        .unwrap_err();
    assert!(!e.is_refusal());
    let text = e.to_string();
    assert!(text.starts_with("no join endpoint answered: "), "{text}");
    assert!(text.contains(&format!("{a}: failed to connect")), "{text}");
    assert!(text.contains(&format!("{b}: failed to connect")), "{text}");
}

#[tokio::test]
async fn renewal_extends_the_certificate_and_keeps_its_names() {
    // Joined with a 2-day certificate; the endpoint now signs 90 days.
    let short = Holder::start(2 * DAY).await;
    let token = short.token(DAY, Duration::ZERO, true);
    let tmp = tempfile::tempdir().unwrap();
    let role = node_role(tmp.path(), &["consul-client", "nomad-client"], &token);
    let first = join_client::join(&role, &token, &short.candidates())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let long_addr = listener.local_addr().unwrap();
    tokio::spawn(
        JoinEndpoint::new(&short.cluster_dir, 90 * DAY).serve(listener, short.cancel.clone()),
    );
    let sec = tmp.path().join("etc/security");
    let old_cert = std::fs::read_to_string(sec.join("node.pem")).unwrap();
    let role = node_role(tmp.path(), &["consul-client", "nomad-client"], &token);
    assert!(role.security.material.is_some());
    let secrets = renew::renew(&role, &[long_addr.to_string()]).await.unwrap();
    assert!(secrets.not_after > first.not_after + 80 * DAY.as_secs());
    let new_cert = std::fs::read_to_string(sec.join("node.pem")).unwrap();
    assert_ne!(new_cert, old_cert);
    assert_eq!(
        ca::not_after_of_cert_pem(&new_cert).unwrap(),
        secrets.not_after
    );
    let (mut a, ai) = ca::names_of_cert_pem(&old_cert).unwrap();
    let (mut b, bi) = ca::names_of_cert_pem(&new_cert).unwrap();
    a.sort();
    b.sort();
    assert_eq!((a, ai), (b, bi));
    // A new key, written beside the new certificate.
    let key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(sec.join("node-key.pem")).unwrap())
        .unwrap();
    use rcgen::PublicKeyData;
    assert_eq!(
        ca::pin_of_cert_pem(&new_cert).unwrap(),
        ca::pin_of_spki_der(&key.subject_public_key_info())
    );
    assert_eq!(
        std::fs::read_to_string(sec.join("consul-key.pem")).unwrap(),
        std::fs::read_to_string(sec.join("node-key.pem")).unwrap()
    );
}

#[tokio::test]
async fn a_signer_whose_certificates_live_shorter_than_renew_before_renews_once_not_in_a_loop() {
    use hashi_supervisor::supervise::DaemonEvent;
    use renew::RenewalReport as R;
    // The CA holder signs 2-day certificates; the node renews 30 days
    // ahead (the default): every certificate it gets is "due" by
    // renew_before_days alone.
    let holder = Holder::start(2 * DAY).await;
    // The Nomad supervisors' token exists (a node lacking it would also
    // fetch its secrets now and then, which is not what this looks at).
    let mut c = store::load_cluster_dir(&holder.cluster_dir)
        .unwrap()
        .cluster;
    c.acl.nomad_supervisor = Some(store::uuid_v4());
    store::save_cluster_file(&holder.cluster_dir, &c).unwrap();
    let token = holder.token(DAY, Duration::ZERO, true);
    let tmp = tempfile::tempdir().unwrap();
    let role = node_role(tmp.path(), &["nomad-client"], &token);
    join_client::join(&role, &token, &holder.candidates())
        .await
        .unwrap();
    // node.json: less than a third of its 2 days left, so it is due.
    let json_path = tmp.path().join("etc/security/node.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    let now = ca::now_unix();
    v["not_before"] = (now - 2 * DAY.as_secs() + 3600).into();
    v["not_after"] = (now + 3600).into();
    std::fs::write(&json_path, v.to_string()).unwrap();
    let role = node_role(tmp.path(), &["nomad-client"], &token);
    assert_eq!(role.security.renew_before, 30 * DAY);
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let (reports_tx, mut reports) = tokio::sync::mpsc::unbounded_channel();
    let renewal = renew::Renewal {
        role,
        candidates: holder.candidates(),
        events: events_tx,
        report: Arc::new(move |r| {
            let _ = reports_tx.send(r);
        }),
        recheck: Arc::new(tokio::sync::Notify::new()),
    };
    let cancel = CancellationToken::new();
    let task = tokio::spawn(renewal.run(cancel.clone()));
    let next_report = async |reports: &mut tokio::sync::mpsc::UnboundedReceiver<R>| {
        tokio::time::timeout(Duration::from_secs(60), reports.recv())
            .await
            .expect("a report of the renewal task")
            .expect("the task runs")
    };
    let first = next_report(&mut reports).await;
    let R::Renewed {
        at,
        not_after,
        next,
        ..
    } = first
    else {
        panic!("the due certificate is renewed first: {first:?}");
    };
    assert!(not_after > now + DAY.as_secs(), "a fresh 2-day certificate");
    assert!(
        next >= at + renew::MIN_RENEW_INTERVAL.as_secs(),
        "the next look is not at once: {next} vs {at}"
    );
    // Then the task waits: its next report is a wait, not a renewal.
    let second = next_report(&mut reports).await;
    match second {
        R::Next { next } => assert!(next >= at + renew::MIN_RENEW_INTERVAL.as_secs()),
        other => panic!("renewed again instead of waiting: {other:?}"),
    }
    assert_eq!(events.try_recv(), Ok(DaemonEvent::Renewed));
    assert!(events.try_recv().is_err(), "one renewal, one SIGHUP");
    cancel.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn a_renewal_without_a_certificate_or_for_other_names_is_refused() {
    let holder = Holder::start(90 * DAY).await;
    let token = holder.token(DAY, Duration::ZERO, true);
    let tmp = tempfile::tempdir().unwrap();
    let role = node_role(tmp.path(), &["nomad-client"], &token);
    join_client::join(&role, &token, &holder.candidates())
        .await
        .unwrap();
    let sec = tmp.path().join("etc/security");
    let cert = std::fs::read_to_string(sec.join("node.pem")).unwrap();
    let key_pem = Secret::new(std::fs::read_to_string(sec.join("node-key.pem")).unwrap());
    // Asking for a server name with a client's certificate.
    let key = ca::new_key_pair().unwrap();
    let server = node_role(
        tempfile::tempdir().unwrap().path(),
        &["nomad-server"],
        &token,
    );
    let request = join_client::request_for(&server, &key).unwrap();
    let e = join_client::exchange(
        &holder.candidates(),
        &holder.pin,
        Credential::Certificate {
            cert_pem: &cert,
            key_pem: &key_pem,
        },
        &request,
    )
    .await
    .unwrap_err();
    assert!(matches!(e, JoinError::Refused { status: 403, .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("keeps the current certificate's names"),
        "{e}"
    );
    // No certificate at all: a renewal is not a join.
    let request = join_client::request_for(&role, &key).unwrap();
    let e = raw_post(
        holder.addr,
        &holder.pin,
        "/v1/renew",
        &serde_json::to_vec(&request).unwrap(),
    )
    .await;
    assert_eq!(e.0, 401, "{}", e.1);
}

/// POSTs `body` to `path` without a token or certificate; status and body.
async fn raw_post(addr: SocketAddr, pin: &str, path: &str, body: &[u8]) -> (u16, String) {
    use hashi_supervisor::security::pin::PinnedCaVerifier;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let verifier = Arc::new(PinnedCaVerifier::new(
        pin,
        Arc::new(rustls::crypto::ring::default_provider()),
    ));
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(verifier)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("join.hashi-supervisor").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: join.hashi-supervisor\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let _ = tls.write_all(body).await;
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn an_oversized_request_is_refused_with_413() {
    let holder = Holder::start(90 * DAY).await;
    let body = vec![b'x'; wire::MAX_REQUEST_BYTES + 1];
    let (status, text) = raw_post(holder.addr, &holder.pin, "/v1/join", &body).await;
    assert_eq!(status, 413, "{text}");
}

/// Runs `supervisor --config <role> run` with `--join-token token` for a
/// nomad-client whose `[security] join` names `endpoint`; exit code and
/// stderr. It ends by itself: the join is refused.
fn run_with_token(endpoint: SocketAddr, token: &str) -> (Option<i32>, String, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let text = format!(
        "schema = 1\nroles = [\"nomad-client\"]\nnode_name = \"ams2-node-09\"\ndatacenter = \"ams2\"\n\
         [addresses]\nprivate = \"127.0.0.1\"\n[nomad]\nuser = \"nobody\"\n\
         [discovery]\nnomad_retry_join = [\"127.0.0.1\"]\nmdns = false\n\
         [health]\nlisten = \"127.0.0.1:0\"\n\
         [security]\njoin = [\"{endpoint}\"]\n\
         [paths]\nconfig_dir = \"{}\"\nstate_dir = \"{}\"\n",
        tmp.path().join("etc").display(),
        tmp.path().join("state").display()
    );
    let role = tmp.path().join("node.toml");
    std::fs::write(&role, text).unwrap();
    let out = std::process::Command::new(crate::support::supervisor_bin())
        .arg("--config")
        .arg(&role)
        .args(["--join-token", token, "run"])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        tmp,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_a_wrong_secret_exits_77_with_the_endpoints_reason() {
    let holder = Holder::start(90 * DAY).await;
    let good = holder.token(DAY, Duration::ZERO, true);
    let wrong = format!("{}.{}@{}", good.id, "0123456789abcdef", holder.pin);
    let addr = holder.addr;
    let (code, stderr, tmp) = tokio::task::spawn_blocking(move || run_with_token(addr, &wrong))
        .await
        .unwrap();
    assert_eq!(code, Some(77), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: the join endpoint at {addr} refused the join token: wrong secret for join token {}",
            good.id
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("0123456789abcdef"), "{stderr}");
    assert!(!tmp.path().join("etc/security").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_against_an_endpoint_with_another_ca_exits_77_naming_both_pins() {
    let (rogue, handshakes, bytes, rogue_pin) = rogue_endpoint().await;
    let pin = format!("sha256:{}", "ab".repeat(32));
    let token = format!("abc123.0123456789abcdef@{pin}");
    let (code, stderr, _tmp) = tokio::task::spawn_blocking(move || run_with_token(rogue, &token))
        .await
        .unwrap();
    assert_eq!(code, Some(77), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: the join endpoint at {rogue} is not this cluster's: it presents CA {rogue_pin}, the token pins {pin}"
        )),
        "{stderr}"
    );
    assert_eq!(handshakes.load(Ordering::SeqCst), 0);
    assert_eq!(bytes.load(Ordering::SeqCst), 0);
}

/// A renewal rewrites the TLS files but not the rendered config: the
/// daemon's `Renewed` event still sends SIGHUP to every agent (both
/// re-read their TLS files only on it), where a plain reload with an
/// unchanged config sends nothing.
#[tokio::test]
async fn a_renewal_reloads_agents_whose_config_is_unchanged() {
    use crate::support::daemon::{Rig, agent, all_ready, poll, start};
    use crate::support::preparer::{FakePreparer, RELOADED_HASH};
    use hashi_supervisor::render::ChangeKind;
    use hashi_supervisor::supervise::DaemonEvent;
    use hashi_supervisor::vocab::Product;
    use nix::sys::signal::Signal;
    let rig = Rig::new();
    let plan = rig.plan(vec![
        rig.agent(Product::Consul, Signal::SIGINT),
        rig.agent(Product::Nomad, Signal::SIGINT),
    ]);
    let preparer = FakePreparer::new()
        .reloads_to(plan.clone())
        .reloads_to(plan.clone())
        .with_change(Product::Consul, ChangeKind::Unchanged)
        .with_change(Product::Nomad, ChangeKind::Unchanged)
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
    // A reload with nothing changed: no signal (the hash is the sign it ran).
    d.events.send(DaemonEvent::Reload).unwrap();
    d.wait("reloaded", |s| s.config_hash == RELOADED_HASH).await;
    assert_eq!(hups(&rig), 0, "{:?}", rig.events());
    d.events.send(DaemonEvent::Renewed).unwrap();
    poll("SIGHUP to both agents", || {
        let e = rig.events();
        e.contains(&"consul signal HUP".to_string()) && e.contains(&"nomad signal HUP".to_string())
    })
    .await;
    // Reloaded, not restarted.
    let s = d.wait("ready after the reload", all_ready).await;
    assert_eq!(
        (
            agent(&s, Product::Consul).pid,
            agent(&s, Product::Nomad).pid
        ),
        pids
    );
    assert_eq!(s.reload_error, None);
    d.stop().await;
}

/// A second CA holder: a server that joined `first` with a token allowing
/// servers (so it holds the CA and a server certificate), serving joins on
/// its own loopback port.
struct Second {
    _tmp: tempfile::TempDir,
    config: PathBuf,
    addr: SocketAddr,
    cancel: CancellationToken,
}

impl Drop for Second {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Second {
    async fn join(first: &Holder) -> Self {
        let token = first.token(DAY, Duration::ZERO, false);
        let tmp = tempfile::tempdir().unwrap();
        let role = node_role(tmp.path(), &["consul-server", "nomad-server"], &token);
        let out = join_client::join(&role, &token, &first.candidates())
            .await
            .unwrap();
        assert!(out.ca_holder);
        let config = tmp.path().join("etc");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        tokio::spawn(
            JoinEndpoint::new(&config.join("cluster"), 90 * DAY).serve(listener, cancel.clone()),
        );
        Self {
            _tmp: tmp,
            config,
            addr,
            cancel,
        }
    }

    /// Pulls from `from` every 50 ms until dropped.
    fn sync_from(&self, from: SocketAddr, pin: &str) {
        let (_tx, rx) = tokio::sync::watch::channel(vec![from.to_string()]);
        let sync = sync::TokenSync {
            cluster_dir: self.config.join("cluster"),
            pin: pin.to_string(),
            cert_file: self.config.join("security/node.pem"),
            key_file: self.config.join("security/node-key.pem"),
            candidates: rx,
            every: Duration::from_millis(50),
        };
        tokio::spawn(sync.run(self.cancel.clone()));
    }

    /// This holder's record of `id`, if it has one.
    fn record(
        &self,
        id: &str,
        pin: &str,
    ) -> Option<hashi_supervisor::security::token::TokenRecord> {
        let s = TokenStore::load(&self.config.join("cluster"), pin).unwrap();
        s.list().iter().find(|r| r.id == id).cloned()
    }

    /// Polls until `cond` holds for this holder's record of `id`.
    async fn wait_for(
        &self,
        id: &str,
        pin: &str,
        cond: impl Fn(&Option<hashi_supervisor::security::token::TokenRecord>) -> bool,
    ) {
        for _ in 0..600 {
            if cond(&self.record(id, pin)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the second CA holder's record of {id} never got there");
    }
}

#[tokio::test]
async fn a_token_made_on_one_ca_holder_joins_through_another_after_sync() {
    let a = Holder::start(90 * DAY).await;
    let b = Second::join(&a).await;
    let token = a.token(DAY, Duration::ZERO, true);
    // B does not know it yet: not final, A is asked next.
    let tmp = tempfile::tempdir().unwrap();
    let role = node_role(tmp.path(), &["nomad-client"], &token);
    let out = join_client::join(&role, &token, &[b.addr.to_string(), a.addr.to_string()])
        .await
        .unwrap();
    assert_eq!(out.endpoint, a.addr.to_string());
    // B alone: no endpoint knows it (a refusal, exit 77, once given up).
    let e = refused_at(&b.addr, &["nomad-client"], &token).await;
    assert!(matches!(e, JoinError::UnknownToken { .. }), "{e:?}");
    assert!(e.is_refusal());
    assert!(
        e.to_string()
            .contains(&format!("unknown join token {}", token.id)),
        "{e}"
    );
    assert!(
        !e.to_string().contains(
            token
                .expose()
                .split('@')
                .next()
                .unwrap()
                .split('.')
                .nth(1)
                .unwrap()
        )
    );
    // After sync, B knows it (with A's use count) and signs the join itself.
    b.sync_from(a.addr, &a.pin);
    b.wait_for(&token.id, &a.pin, |r| {
        r.as_ref().is_some_and(|r| r.uses == 1)
    })
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let role = node_role(tmp.path(), &["nomad-client"], &token);
    let out = join_client::join(&role, &token, &[b.addr.to_string()])
        .await
        .unwrap();
    assert_eq!(out.endpoint, b.addr.to_string());
    // Revoked on A: refused by B once synced.
    a.revoke(&token.id);
    b.wait_for(&token.id, &a.pin, |r| {
        r.as_ref().is_some_and(|r| r.revoked.is_some())
    })
    .await;
    let e = refused_at(&b.addr, &["nomad-client"], &token).await;
    assert!(matches!(e, JoinError::Refused { status: 403, .. }), "{e:?}");
    assert!(e.to_string().contains("was revoked"), "{e}");
}

#[tokio::test]
async fn a_wrong_secret_for_a_known_token_stays_final_before_other_candidates() {
    let a = Holder::start(90 * DAY).await;
    let b = Second::join(&a).await;
    // Known to both (B took A's records at its join).
    let token = a.token(DAY, Duration::ZERO, false);
    b.sync_from(a.addr, &a.pin);
    b.wait_for(&token.id, &a.pin, Option::is_some).await;
    let wrong =
        JoinToken::parse(&format!("{}.{}@{}", token.id, "0123456789abcdef", a.pin)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let role = node_role(tmp.path(), &["nomad-client"], &wrong);
    let e = join_client::join(&role, &wrong, &[b.addr.to_string(), a.addr.to_string()])
        .await
        .unwrap_err();
    // B's answer is final: A never saw a use or an attempt count.
    assert!(
        matches!(e, JoinError::Refused { status: 401, ref endpoint, .. } if *endpoint == b.addr.to_string()),
        "{e:?}"
    );
}

/// Joins a fresh node of `roles` with `token` through `addr` only.
async fn refused_at(addr: &SocketAddr, roles: &[&str], token: &JoinToken) -> JoinError {
    let tmp = tempfile::tempdir().unwrap();
    let role = node_role(tmp.path(), roles, token);
    join_client::join(&role, token, &[addr.to_string()])
        .await
        .unwrap_err()
}

#[tokio::test]
async fn token_records_go_only_to_a_server_certificate_of_the_cluster() {
    let a = Holder::start(90 * DAY).await;
    let b = Second::join(&a).await;
    let cert = std::fs::read_to_string(b.config.join("security/node.pem")).unwrap();
    let key = Secret::new(std::fs::read_to_string(b.config.join("security/node-key.pem")).unwrap());
    let records = sync::pull(&a.addr.to_string(), &a.pin, &cert, &key)
        .await
        .unwrap();
    assert!(!records.is_empty());
    // A client's certificate is refused.
    let token = a.token(DAY, Duration::ZERO, true);
    let tmp = tempfile::tempdir().unwrap();
    let role = node_role(tmp.path(), &["nomad-client"], &token);
    join_client::join(&role, &token, &a.candidates())
        .await
        .unwrap();
    let ccert = std::fs::read_to_string(tmp.path().join("etc/security/node.pem")).unwrap();
    let ckey =
        Secret::new(std::fs::read_to_string(tmp.path().join("etc/security/node-key.pem")).unwrap());
    let e = sync::pull(&a.addr.to_string(), &a.pin, &ccert, &ckey)
        .await
        .unwrap_err();
    assert!(
        matches!(e, sync::SyncError::Status { status: 403, .. }),
        "{e:?}"
    );
    // An endpoint of another CA gets no request.
    let (rogue, _, bytes, _) = rogue_endpoint().await;
    let e = sync::pull(&rogue.to_string(), &a.pin, &cert, &key)
        .await
        .unwrap_err();
    assert!(matches!(e, sync::SyncError::OtherCa { .. }), "{e:?}");
    assert_eq!(bytes.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn idle_connections_from_one_address_cannot_take_every_slot() {
    use hashi_supervisor::security::pin::{self, PinnedCaVerifier};
    let holder = Holder::start(90 * DAY).await;
    // More TLS connections than the endpoint serves at once, from
    // 127.0.0.2, each completing its handshake and then sending nothing
    // (each would hold a slot for the 10 s header timeout).
    let config = rustls::ClientConfig::builder_with_provider(pin::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCaVerifier::new(
            &holder.pin,
            pin::provider(),
        )))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("join.hashi-supervisor").unwrap();
    let mut idle = Vec::new();
    let mut handshakes = Vec::new();
    for _ in 0..join_server::MAX_CONNECTIONS + 6 {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let tcp = s.connect(holder.addr).await.unwrap();
        let (connector, name) = (connector.clone(), name.clone());
        handshakes.push(tokio::spawn(
            async move { connector.connect(name, tcp).await },
        ));
    }
    // Wait until the ones the endpoint takes from that address are in.
    let mut done = 0;
    let until = tokio::time::Instant::now() + Duration::from_secs(2);
    for h in handshakes {
        if let Ok(Ok(Ok(tls))) = tokio::time::timeout_at(until, h).await {
            idle.push(tls);
            done += 1;
        }
    }
    assert!(
        done >= join_server::MAX_CONNECTIONS_PER_IP,
        "{done} idle connections got in"
    );
    // A node on another address joins at once (its client gives the
    // handshake 5 s; the idle connections would hold every slot for 10 s
    // without the per-address cap).
    let token = holder.token(DAY, Duration::ZERO, true);
    let tmp = tempfile::tempdir().unwrap();
    let role = node_role(tmp.path(), &["nomad-client"], &token);
    join_client::join(&role, &token, &holder.candidates())
        .await
        .unwrap();
    drop(idle);
}

#[tokio::test]
async fn a_candidate_that_accepts_and_stalls_costs_only_the_handshake_timeout() {
    let holder = Holder::start(90 * DAY).await;
    let token = holder.token(DAY, Duration::ZERO, true);
    // Accepts TCP and never answers.
    let stall = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stall_addr = stall.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = stall.accept().await {
            held.push(s);
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let role = node_role(tmp.path(), &["nomad-client"], &token);
    let e = join_client::join(&role, &token, &[stall_addr.to_string()])
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("{stall_addr}: no TLS handshake within 5s")),
        "{e}"
    );
    // First in line, it does not stop the join.
    let out = join_client::join(
        &role,
        &token,
        &[stall_addr.to_string(), holder.addr.to_string()],
    )
    .await
    .unwrap();
    assert_eq!(out.endpoint, holder.addr.to_string());
}

#[tokio::test]
async fn each_node_gets_only_the_keys_and_tokens_its_roles_use() {
    let holder = Holder::start(90 * DAY).await;
    let cluster = store::load_cluster_dir(&holder.cluster_dir)
        .unwrap()
        .cluster;
    let server_token = cluster.acl.consul_supervisor.clone().unwrap();
    let client_token =
        hashi_supervisor::security::acl::consul_client_supervisor_secret(&server_token);
    let joined = |roles: &'static [&'static str], clients_only: bool| {
        let holder = &holder;
        async move {
            let token = holder.token(DAY, Duration::ZERO, clients_only);
            let tmp = tempfile::tempdir().unwrap();
            let role = node_role(tmp.path(), roles, &token);
            join_client::join(&role, &token, &holder.candidates())
                .await
                .unwrap();
            let json: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(tmp.path().join("etc/security/node.json")).unwrap(),
            )
            .unwrap();
            // The role loader takes the narrowed material.
            let again = node_role(tmp.path(), roles, &token);
            assert!(again.security.material.is_some(), "{roles:?}");
            json
        }
    };
    // A Nomad client alone: no gossip key, no Consul agent token, the
    // client supervisors' Consul token.
    let n = joined(&["nomad-client"], true).await;
    assert_eq!(n["nomad_gossip_key"], "");
    assert_eq!(n["consul_gossip_key"], "");
    assert!(n["acl"].get("consul_agent").is_none(), "{}", n["acl"]);
    assert_eq!(n["acl"]["consul_supervisor"], client_token.as_str());
    assert!(n["acl"]["nomad_consul"].is_string());
    // Consul and Nomad clients: Consul's gossip key, not Nomad's.
    let c = joined(&["consul-client", "nomad-client"], true).await;
    assert_eq!(c["consul_gossip_key"], GOSSIP);
    assert_eq!(c["nomad_gossip_key"], "");
    assert!(c["acl"]["consul_agent"].is_string());
    assert_eq!(c["acl"]["consul_supervisor"], client_token.as_str());
    // A Nomad server without Consul: Nomad's key, the servers' token.
    let s = joined(&["nomad-server"], false).await;
    assert_eq!(s["nomad_gossip_key"], GOSSIP);
    assert_eq!(s["consul_gossip_key"], "");
    assert_eq!(s["acl"]["consul_supervisor"], server_token.as_str());
    // Both servers: everything their roles use.
    let b = joined(&["consul-server", "nomad-server"], false).await;
    assert_eq!(b["nomad_gossip_key"], GOSSIP);
    assert_eq!(b["consul_gossip_key"], GOSSIP);
    assert_eq!(b["acl"]["consul_supervisor"], server_token.as_str());
}

#[tokio::test]
async fn a_joining_node_cannot_name_a_known_servers_address() {
    let holder = Holder::start(90 * DAY).await;
    // The same CA holder's endpoint, knowing a server at 10.0.1.11.
    let (_tx, protected) = tokio::sync::watch::channel(vec!["10.0.1.11".parse().unwrap()]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        JoinEndpoint::new(&holder.cluster_dir, 90 * DAY)
            .with_protected_ips(protected)
            .serve(listener, holder.cancel.clone()),
    );
    let token = holder.token(DAY, Duration::ZERO, true);
    let tmp = tempfile::tempdir().unwrap();
    let mut role = node_role(tmp.path(), &["nomad-client"], &token);
    role.addresses.private = "10.0.1.11".parse().unwrap();
    let e = join_client::join(&role, &token, &[addr.to_string()])
        .await
        .unwrap_err();
    assert!(
        matches!(e, JoinError::Rejected { status: 400, .. }),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .contains("IP address 10.0.1.11 belongs to a server or CA holder"),
        "{e}"
    );
    assert!(!tmp.path().join("etc/security").exists());
    assert_eq!(holder.uses(&token.id), 0);
    // Its own address is fine.
    role.addresses.private = "10.0.1.21".parse().unwrap();
    join_client::join(&role, &token, &[addr.to_string()])
        .await
        .unwrap();
}

//! Security checks of the stand-in (issue 19): TLS files checked at start,
//! HTTPS with client certificates, the gossip key, TLS between agents, and
//! the ACL API of Consul and Nomad. Certificates are made here with rcgen.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use serde_json::{Value, json};
use tokio_rustls::rustls;

use crate::support::{HttpReply, StandIn, free_port, http, install_as, wait_for};

const DEADLINE: Duration = Duration::from_secs(15);

/// A test CA.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// PEM files of one node.
#[derive(Clone)]
struct NodeFiles {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    cert_pem: String,
    key_pem: String,
    ca_pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        Ca {
            issuer: CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// A node certificate for these DNS names plus IP 127.0.0.1, written to
    /// `dir` as ca.pem, node.pem, node-key.pem.
    fn node(&self, dir: &Path, names: &[&str]) -> NodeFiles {
        let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
        p.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let files = NodeFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("node.pem"),
            key: dir.join("node-key.pem"),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            ca_pem: self.issuer.pem(),
        };
        std::fs::write(&files.ca, &files.ca_pem).unwrap();
        std::fs::write(&files.cert, &files.cert_pem).unwrap();
        std::fs::write(&files.key, &files.key_pem).unwrap();
        files
    }
}

/// Consul's `tls` block as the supervisor renders it (design contract).
fn consul_tls(f: &NodeFiles) -> Value {
    json!({"tls": {
        "defaults": {"ca_file": f.ca, "cert_file": f.cert, "key_file": f.key,
                     "verify_incoming": true, "verify_outgoing": true},
        "internal_rpc": {"verify_server_hostname": true},
    }})
}

/// Nomad's `tls` block as the supervisor renders it (design contract).
fn nomad_tls(f: &NodeFiles) -> String {
    format!(
        "tls {{\n  http = true\n  rpc = true\n  ca_file = \"{}\"\n  cert_file = \"{}\"\n  key_file = \"{}\"\n  verify_server_hostname = true\n  verify_https_client = false\n}}\n",
        f.ca.display(),
        f.cert.display(),
        f.key.display()
    )
}

/// Run `consul agent` / `nomad agent` on a config dir holding one file and
/// return (exit code, stderr) once it exits (it must fail at start).
fn start_fails(product: &str, file_name: &str, contents: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(cfg.join(file_name), contents).unwrap();
    let bin = install_as(&dir.path().join("bin"), product);
    let flag = match product {
        "consul" => format!("-config-dir={}", cfg.display()),
        _ => format!("-config={}", cfg.display()),
    };
    let mut child = Command::new(bin)
        .arg("agent")
        .arg(flag)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_for(DEADLINE, || child.try_wait().unwrap());
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the stand-in kept running with a bad TLS configuration");
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code(), err)
}

fn consul_server_config(data: &Path, tls: &Value) -> String {
    let mut cfg = json!({
        "node_name": "s1", "datacenter": "dc1", "data_dir": data, "server": true,
        "bootstrap_expect": 1, "bind_addr": "127.0.0.1", "client_addr": "127.0.0.1",
        "ports": {"http": free_port(), "serf_lan": free_port(), "serf_wan": free_port(),
                  "server": free_port(), "dns": -1},
    });
    for (k, v) in tls.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    cfg.to_string()
}

#[test]
fn consul_server_with_a_certificate_without_its_server_name_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    // A client's certificate on a server.
    let f = ca.node(dir.path(), &["client.dc1.consul", "localhost"]);
    let (code, err) = start_fails(
        "consul",
        "agent.json",
        &consul_server_config(&dir.path().join("data"), &consul_tls(&f)),
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("==> Error starting agent:"), "{err}");
    assert!(err.contains("server.dc1.consul"), "{err}");
}

#[test]
fn certificate_signed_by_another_ca_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("cluster CA");
    let other = Ca::new("someone else's CA");
    let mut f = other.node(
        &dir.path().join("other"),
        &["server.dc1.consul", "localhost"],
    );
    f.ca = ca.node(&dir.path().join("ours"), &["x"]).ca;
    let (code, err) = start_fails(
        "consul",
        "agent.json",
        &consul_server_config(&dir.path().join("data"), &consul_tls(&f)),
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("is not signed by the CA in ca_file"), "{err}");
}

#[test]
fn key_that_does_not_match_the_certificate_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("cluster CA");
    let mut f = ca.node(&dir.path().join("a"), &["server.dc1.consul"]);
    f.key = ca.node(&dir.path().join("b"), &["server.dc1.consul"]).key;
    let (code, err) = start_fails(
        "consul",
        "agent.json",
        &consul_server_config(&dir.path().join("data"), &consul_tls(&f)),
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("does not match the certificate"), "{err}");
}

#[test]
fn missing_tls_file_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("cluster CA");
    let mut f = ca.node(dir.path(), &["server.dc1.consul"]);
    f.cert = dir.path().join("absent.pem");
    let (code, err) = start_fails(
        "consul",
        "agent.json",
        &consul_server_config(&dir.path().join("data"), &consul_tls(&f)),
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("absent.pem"), "{err}");
}

#[test]
fn nomad_client_needs_the_client_name_of_its_region() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("cluster CA");
    let f = ca.node(dir.path(), &["server.global.nomad", "localhost"]);
    let hcl = format!(
        "name = \"c1\"\ndata_dir = \"{}\"\nbind_addr = \"127.0.0.1\"\nports {{\n  http = {}\n  rpc = {}\n  serf = {}\n}}\nclient {{\n  enabled = true\n}}\n{}",
        dir.path().join("data").display(),
        free_port(),
        free_port(),
        free_port(),
        nomad_tls(&f)
    );
    let (code, err) = start_fails("nomad", "agent.hcl", &hcl);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("client.global.nomad"), "{err}");
}

/// A blocking HTTPS request: (status, body), or the handshake/IO error.
fn https(
    addr: &str,
    method: &str,
    path: &str,
    ca_pem: &str,
    client: Option<&NodeFiles>,
    headers: &[(&str, &str)],
) -> Result<HttpReply, String> {
    https_as(addr, "localhost", method, path, ca_pem, client, headers)
}

/// [`https`] verifying the server for `server_name`.
fn https_as(
    addr: &str,
    server_name: &str,
    method: &str,
    path: &str,
    ca_pem: &str,
    client: Option<&NodeFiles>,
    headers: &[(&str, &str)],
) -> Result<HttpReply, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some(f) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(f.cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(f.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let name = ServerName::try_from(server_name.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let sock = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    tls.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    match tls.read_to_end(&mut buf) {
        Ok(_) => {}
        Err(e) if buf.is_empty() => return Err(e.to_string()),
        Err(_) => {}
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP answer: {text:?}"))?;
    Ok(HttpReply {
        status: head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        headers: Vec::new(),
        body: body.to_string(),
    })
}

fn wait_port(addr: &str) {
    wait_for(DEADLINE, || TcpStream::connect(addr).ok().map(|_| ()))
        .unwrap_or_else(|| panic!("nothing listens on {addr}"));
}

#[test]
fn consul_https_with_verify_incoming_requires_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("cluster CA");
    let f = ca.node(dir.path(), &["server.dc1.consul", "localhost"]);
    let https_port = free_port();
    let mut tls = consul_tls(&f);
    tls["ports"] = json!({"http": -1, "https": https_port});
    let s = StandIn::consul()
        .server(1)
        .node_name("s1")
        .file("10-tls.json", &tls.to_string())
        .no_wait()
        .start();
    let addr = format!("127.0.0.1:{https_port}");
    wait_port(&addr);
    // ports.http = -1: no plain HTTP API.
    assert!(
        TcpStream::connect(s.addr()).is_err(),
        "plain HTTP still served"
    );
    // No client certificate: the handshake is refused.
    let r = https(&addr, "GET", "/v1/status/leader", &f.ca_pem, None, &[]);
    assert!(r.is_err(), "answered without a client certificate: {r:?}");
    // A client certificate from another CA: refused too.
    let other = Ca::new("other CA").node(&dir.path().join("other"), &["localhost"]);
    let r = https(
        &addr,
        "GET",
        "/v1/status/leader",
        &f.ca_pem,
        Some(&other),
        &[],
    );
    assert!(r.is_err(), "answered a certificate of another CA: {r:?}");
    // Our CA's certificate: answered.
    let r = https(&addr, "GET", "/v1/status/leader", &f.ca_pem, Some(&f), &[]).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    // Plain HTTP on the HTTPS port gets no HTTP answer.
    assert!(http(&addr, "GET", "/v1/status/leader", "").map_or(true, |r| r.status == 0));
}

const KEY_A: &str = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=";
const KEY_B: &str = "Dt3P9SpKGAR/DIUN1cDirg==";

/// A stand-in whose log lines are copied to a file (`STANDIN_LOG_COPY`).
struct Logged {
    s: StandIn,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

impl std::ops::Deref for Logged {
    type Target = StandIn;
    fn deref(&self) -> &StandIn {
        &self.s
    }
}

impl Logged {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn member_names(s: &StandIn) -> Vec<String> {
    let mut n: Vec<String> = s
        .get("/v1/agent/members")
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["Name"].as_str().unwrap().to_string())
        .collect();
    n.sort();
    n
}

fn consul_with_key(name: &str, server: bool, key: Option<&str>) -> Logged {
    let mut b = StandIn::consul().node_name(name);
    if server {
        b = b.server(1);
    }
    if let Some(k) = key {
        b = b.set("encrypt", json!(k));
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.txt");
    let s = b.env("STANDIN_LOG_COPY", log.to_str().unwrap()).start();
    Logged { s, _dir: dir, log }
}

#[test]
fn agents_with_different_gossip_keys_never_join() {
    let a = consul_with_key("a", true, Some(KEY_A));
    let b = consul_with_key("b", false, Some(KEY_B));
    let r = b.put(&format!("/v1/agent/join/{}", a.join_addr()), "");
    assert_eq!(r.status, 500, "{}", r.body);
    assert!(
        r.body
            .contains("No installed keys could decrypt the message"),
        "{}",
        r.body
    );
    let logged = wait_for(DEADLINE, || {
        a.log()
            .lines()
            .find(|l| {
                l.contains("[ERR] memberlist:")
                    && l.contains("No installed keys could decrypt the message")
            })
            .map(str::to_string)
    });
    assert!(logged.is_some(), "log: {}", a.log());
    // Neither ever lists the other (a second join attempt fails the same way).
    let r = b.put(&format!("/v1/agent/join/{}", a.join_addr()), "");
    assert_eq!(r.status, 500);
    assert_eq!(member_names(&a), vec!["a"]);
    assert_eq!(member_names(&b), vec!["b"]);
    // A node without a key is refused by a keyed one, and refuses a keyed one.
    let c = consul_with_key("c", false, None);
    assert_eq!(
        c.put(&format!("/v1/agent/join/{}", a.join_addr()), "")
            .status,
        500
    );
    let r = b.put(&format!("/v1/agent/join/{}", c.join_addr()), "");
    assert_eq!(r.status, 500, "{}", r.body);
    assert!(
        r.body.contains("encryption is not configured"),
        "{}",
        r.body
    );
    assert_eq!(member_names(&c), vec!["c"]);
}

#[test]
fn agents_with_the_same_gossip_key_join() {
    let a = consul_with_key("a", true, Some(KEY_A));
    let b = consul_with_key("b", false, Some(KEY_A));
    let r = b.put(&format!("/v1/agent/join/{}", a.join_addr()), "");
    assert_eq!(r.status, 200, "{}", r.body);
    wait_for(DEADLINE, || {
        (member_names(&a) == ["a", "b"] && member_names(&b) == ["a", "b"]).then_some(())
    })
    .expect("both see each other");
}

const MGMT: &str = "6c4c9d4f-0c33-4b3a-9d22-6f1e5c0a7b11";

fn consul_acl(initial: Option<&str>) -> Value {
    let mut acl = json!({"enabled": true, "default_policy": "deny",
                         "down_policy": "extend-cache", "enable_token_persistence": true});
    if let Some(t) = initial {
        acl["tokens"] = json!({"initial_management": t});
    }
    json!({"primary_datacenter": "dc1", "acl": acl})
}

fn req(s: &StandIn, method: &str, path: &str, token: Option<&str>, body: &str) -> HttpReply {
    let mut h = String::new();
    if let Some(t) = token {
        let name = match s.product {
            crate::support::Product::Consul => "X-Consul-Token",
            crate::support::Product::Nomad => "X-Nomad-Token",
        };
        h = format!("{name}: {t}\r\n");
    }
    let mut sock = TcpStream::connect(s.addr()).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        sock,
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{h}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut buf = String::new();
    sock.read_to_string(&mut buf).unwrap();
    let (head, body) = buf.split_once("\r\n\r\n").unwrap();
    HttpReply {
        status: head.split_whitespace().nth(1).unwrap().parse().unwrap(),
        headers: Vec::new(),
        body: body.to_string(),
    }
}

fn wait_leader(s: &StandIn) {
    wait_for(DEADLINE, || {
        let r = s.get("/v1/status/leader");
        (r.status == 200 && r.json() != json!("")).then_some(())
    })
    .expect("a leader");
}

#[test]
fn consul_acl_denies_without_a_token_and_accepts_initial_management() {
    let s = StandIn::consul()
        .server(1)
        .file("10-acl.json", &consul_acl(Some(MGMT)).to_string())
        .start();
    wait_leader(&s);
    // Open in the real agent too.
    assert_eq!(req(&s, "GET", "/v1/status/peers", None, "").status, 200);
    let r = req(&s, "GET", "/v1/agent/members", None, "");
    assert_eq!((r.status, r.body.as_str()), (403, "Permission denied"));
    let r = req(&s, "GET", "/v1/agent/members", Some("not-a-token"), "");
    assert_eq!(r.status, 403, "{}", r.body);
    let r = req(&s, "GET", "/v1/agent/members", Some(MGMT), "");
    assert_eq!(r.status, 200, "{}", r.body);
    // The refusals are listed (for "every call carries a token"), secrets never.
    let denied = s.get("/_standin/acl-denied");
    assert!(!denied.body.contains("not-a-token"), "{}", denied.body);
    let denied = denied.json();
    let reasons: Vec<(&str, &str)> = denied
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["Path"].as_str().unwrap(), d["Reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("/v1/agent/members", "no token"),
            ("/v1/agent/members", "unknown token")
        ]
    );
    let r = req(&s, "GET", "/v1/acl/token/self", Some(MGMT), "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["SecretID"], json!(MGMT));
    // initial_management made the bootstrap.
    let r = req(&s, "PUT", "/v1/acl/bootstrap", None, "");
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.body
            .starts_with("Permission denied: ACL bootstrap no longer allowed"),
        "{}",
        r.body
    );
}

#[test]
fn consul_acl_bootstrap_once_then_policy_and_token_with_a_chosen_secret() {
    let s = StandIn::consul()
        .server(1)
        .file("10-acl.json", &consul_acl(None).to_string())
        .start();
    wait_leader(&s);
    let r = req(&s, "PUT", "/v1/acl/bootstrap", None, "");
    assert_eq!(r.status, 200, "{}", r.body);
    let boot = r.json();
    crate::shape::assert_shape("consul", "acl_bootstrap", &boot);
    assert_eq!(
        boot["Policies"][0]["Name"],
        json!("global-management"),
        "{boot}"
    );
    let root = boot["SecretID"].as_str().unwrap().to_string();
    let r = req(&s, "PUT", "/v1/acl/bootstrap", None, "");
    assert_eq!(r.status, 403, "{}", r.body);
    // Writes need a token.
    let policy = json!({"Name": "supervisor", "Rules": "node_prefix \"\" { policy = \"read\" }"})
        .to_string();
    assert_eq!(req(&s, "PUT", "/v1/acl/policy", None, &policy).status, 403);
    let r = req(&s, "PUT", "/v1/acl/policy", Some(&root), &policy);
    assert_eq!(r.status, 200, "{}", r.body);
    crate::shape::assert_shape("consul", "acl_policy", &r.json());
    assert!(r.json()["ID"].as_str().is_some_and(|id| !id.is_empty()));
    let chosen = "0b0d1f2e-3c4b-4a59-8e7d-6c5b4a392817";
    let token = json!({"SecretID": chosen, "Description": "supervisor",
                       "Policies": [{"Name": "supervisor"}]})
    .to_string();
    let r = req(&s, "PUT", "/v1/acl/token", Some(&root), &token);
    assert_eq!(r.status, 200, "{}", r.body);
    crate::shape::assert_shape("consul", "acl_token", &r.json());
    assert_eq!(r.json()["SecretID"], json!(chosen));
    assert_eq!(
        req(&s, "GET", "/v1/agent/members", Some(chosen), "").status,
        200
    );
    let me = req(&s, "GET", "/v1/acl/token/self", Some(chosen), "").json();
    crate::shape::assert_shape("consul", "acl_token_self", &me);
    assert_eq!(me["Policies"][0]["Name"], json!("supervisor"));
}

#[test]
fn consul_client_asks_its_server_about_tokens() {
    let server = StandIn::consul()
        .server(1)
        .node_name("s1")
        .file("10-acl.json", &consul_acl(Some(MGMT)).to_string())
        .start();
    let client = StandIn::consul()
        .node_name("c1")
        .set("retry_join", json!([server.join_addr()]))
        .file("10-acl.json", &consul_acl(None).to_string())
        .start();
    wait_for(DEADLINE, || {
        let r = req(&client, "GET", "/v1/status/leader", None, "");
        (r.status == 200 && r.body != "\"\"").then_some(())
    })
    .expect("the client sees the leader");
    assert_eq!(
        req(&client, "GET", "/v1/agent/members", None, "").status,
        403
    );
    assert_eq!(
        req(&client, "GET", "/v1/agent/members", Some("nope"), "").status,
        403
    );
    let r = req(&client, "GET", "/v1/agent/members", Some(MGMT), "");
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn nomad_acl_bootstrap_with_bootstrap_secret_once_then_tokens() {
    let s = StandIn::nomad().hcl("acl {\n  enabled = true\n}").start();
    wait_for(DEADLINE, || {
        (s.get("/v1/status/leader").status == 200).then_some(())
    })
    .expect("a leader");
    assert_eq!(req(&s, "GET", "/v1/agent/members", None, "").status, 403);
    let secret = "2b778dd9-f5f1-4f29-b4b4-9a5fa948757a";
    let r = req(
        &s,
        "POST",
        "/v1/acl/bootstrap",
        None,
        &json!({"BootstrapSecret": secret}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["SecretID"], json!(secret));
    assert_eq!(r.json()["Type"], json!("management"));
    crate::shape::assert_shape("nomad", "acl_bootstrap", &r.json());
    let r = req(&s, "POST", "/v1/acl/bootstrap", None, "");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.starts_with("ACL bootstrap already done"),
        "{}",
        r.body
    );
    assert_eq!(
        req(&s, "GET", "/v1/agent/members", Some(secret), "").status,
        200
    );
    let policy = json!({"Name": "supervisor", "Rules": "agent { policy = \"read\" }"}).to_string();
    let r = req(
        &s,
        "POST",
        "/v1/acl/policy/supervisor",
        Some(secret),
        &policy,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = req(
        &s,
        "POST",
        "/v1/acl/token",
        Some(secret),
        &json!({"Name": "supervisor", "Type": "client", "Policies": ["supervisor"]}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    crate::shape::assert_shape("nomad", "acl_token", &r.json());
    let t = r.json()["SecretID"].as_str().unwrap().to_string();
    assert_eq!(
        req(&s, "GET", "/v1/agent/members", Some(&t), "").status,
        200
    );
    let me = req(&s, "GET", "/v1/acl/token/self", Some(&t), "").json();
    assert_eq!(me["Name"], json!("supervisor"));
    crate::shape::assert_shape("nomad", "acl_token_self", &me);
}

fn peers_of(addr: &str, f: &NodeFiles) -> Vec<Value> {
    https(addr, "GET", "/_standin/tls-peers", &f.ca_pem, Some(f), &[])
        .map(|r| r.json().as_array().cloned().unwrap_or_default())
        .unwrap_or_default()
}

#[test]
fn consul_client_and_server_talk_tls_and_record_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("cluster CA");
    let sf = ca.node(&dir.path().join("s"), &["server.dc1.consul", "localhost"]);
    let cf = ca.node(&dir.path().join("c"), &["client.dc1.consul", "localhost"]);
    let (sp, cp) = (free_port(), free_port());
    let mut stls = consul_tls(&sf);
    stls["ports"] = json!({"http": -1, "https": sp});
    let mut ctls = consul_tls(&cf);
    ctls["ports"] = json!({"http": -1, "https": cp});
    let server = StandIn::consul()
        .server(1)
        .node_name("s1")
        .set("encrypt", json!(KEY_A))
        .file("10-tls.json", &stls.to_string())
        .no_wait()
        .start();
    wait_port(&format!("127.0.0.1:{sp}"));
    let _client = StandIn::consul()
        .node_name("c1")
        .set("encrypt", json!(KEY_A))
        .set("retry_join", json!([server.join_addr()]))
        .file("10-tls.json", &ctls.to_string())
        .no_wait()
        .start();
    let caddr = format!("127.0.0.1:{cp}");
    let saddr = format!("127.0.0.1:{sp}");
    wait_port(&caddr);
    let out = wait_for(DEADLINE, || {
        peers_of(&caddr, &cf)
            .into_iter()
            .find(|p| p["Node"] == "s1" && p["Direction"] == "out")
    })
    .expect("the client verified the server over TLS");
    assert_eq!(out["VerifiedName"], json!("server.dc1.consul"));
    wait_for(DEADLINE, || {
        peers_of(&saddr, &sf)
            .into_iter()
            .find(|p| p["Node"] == "c1" && p["Direction"] == "in")
    })
    .expect("the server saw the client's certificate");
    // The serf port carries gossip only once TLS is on.
    assert_eq!(
        http(&server.join_addr(), "GET", "/v1/agent/members", "")
            .unwrap()
            .status,
        404
    );
}

#[test]
fn nomad_client_registers_with_its_server_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("cluster CA");
    let sf = ca.node(&dir.path().join("s"), &["server.global.nomad", "localhost"]);
    let cf = ca.node(&dir.path().join("c"), &["client.global.nomad", "localhost"]);
    let server = StandIn::nomad()
        .node_name("s1")
        .hcl(&nomad_tls(&sf))
        .no_wait()
        .start();
    wait_port(&server.addr());
    let client = StandIn::nomad()
        .client()
        .node_name("c1")
        .hcl(&nomad_tls(&cf))
        .file(
            "10-servers.hcl",
            &format!("client {{\n  servers = [\"{}\"]\n}}\n", server.rpc_addr()),
        )
        .no_wait()
        .start();
    wait_port(&client.addr());
    let nodes = wait_for(DEADLINE, || {
        let r = https(&server.addr(), "GET", "/v1/nodes", &sf.ca_pem, None, &[]).ok()?;
        let v: Value = serde_json::from_str(&r.body).ok()?;
        (v.as_array().map(Vec::len) == Some(1)).then_some(v)
    })
    .expect("the client registered over the TLS RPC port");
    assert_eq!(nodes[0]["Name"], json!("c1"));
    let peer = wait_for(DEADLINE, || {
        peers_of(&client.addr(), &cf)
            .into_iter()
            .find(|p| p["Node"] == "s1")
    })
    .expect("the client verified the server");
    assert_eq!(peer["VerifiedName"], json!("server.global.nomad"));
}

#[test]
fn consul_token_made_on_one_server_works_on_another_of_its_dc() {
    let a = StandIn::consul()
        .server(2)
        .node_name("s1")
        .file("10-acl.json", &consul_acl(Some(MGMT)).to_string())
        .start();
    let b = StandIn::consul()
        .server(2)
        .node_name("s2")
        .set("retry_join", json!([a.join_addr()]))
        .file("10-acl.json", &consul_acl(Some(MGMT)).to_string())
        .start();
    wait_leader(&a);
    wait_leader(&b);
    let chosen = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
    let token = json!({"SecretID": chosen, "Policies": [{"Name": "global-management"}]});
    let r = req(&b, "PUT", "/v1/acl/token", Some(MGMT), &token.to_string());
    assert_eq!(r.status, 200, "{}", r.body);
    // s1 learns it by the servers' exchange (or asks its leader).
    let r = wait_for(DEADLINE, || {
        let r = req(&a, "GET", "/v1/agent/members", Some(chosen), "");
        (r.status == 200).then_some(r)
    });
    assert!(r.is_some(), "s1 never accepted the token made on s2");
    // And keeps it in its data dir (0600).
    let f = a.dir().join("data").join("standin-acl.json");
    let text = wait_for(DEADLINE, || {
        std::fs::read_to_string(&f)
            .ok()
            .filter(|t| t.contains(chosen))
    });
    assert!(text.is_some(), "no ACL state file with the token");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn consul_server_outside_the_primary_dc_asks_the_primary_over_the_wan() {
    let primary = StandIn::consul()
        .server(1)
        .node_name("s1")
        .datacenter("dc1")
        .file("10-acl.json", &consul_acl(Some(MGMT)).to_string())
        .start();
    let mut acl = consul_acl(None);
    acl["primary_datacenter"] = json!("dc1");
    let other = StandIn::consul()
        .server(1)
        .node_name("s9")
        .datacenter("dc2")
        .set("retry_join_wan", json!([primary.wan_join_addr()]))
        .file("10-acl.json", &acl.to_string())
        .start();
    wait_leader(&other);
    let r = wait_for(DEADLINE, || {
        let r = req(&other, "GET", "/v1/agent/members", Some(MGMT), "");
        (r.status == 200).then_some(r)
    });
    assert!(r.is_some(), "dc2 never resolved the primary's token");
    assert_eq!(
        req(&other, "GET", "/v1/agent/members", Some("unknown"), "").status,
        403
    );
}

#[test]
fn nomad_servers_of_a_region_share_the_bootstrap() {
    let a = StandIn::nomad()
        .server(2)
        .node_name("n1")
        .hcl("acl {\n  enabled = true\n}")
        .start();
    let b = StandIn::nomad()
        .server(2)
        .node_name("n2")
        .hcl(&format!(
            "acl {{\n  enabled = true\n}}\nserver {{\n  server_join {{\n    retry_join = [\"{}\"]\n  }}\n}}",
            a.join_addr()
        ))
        .start();
    wait_for(DEADLINE, || {
        (a.get("/v1/status/leader").status == 200 && b.get("/v1/status/leader").status == 200)
            .then_some(())
    })
    .expect("a leader");
    let secret = "11111111-2222-4333-8444-555555555555";
    let r = req(
        &a,
        "POST",
        "/v1/acl/bootstrap",
        None,
        &json!({"BootstrapSecret": secret}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let ok = wait_for(DEADLINE, || {
        (req(&b, "GET", "/v1/agent/members", Some(secret), "").status == 200).then_some(())
    });
    assert!(ok.is_some(), "n2 never accepted n1's bootstrap token");
    let r = wait_for(DEADLINE, || {
        let r = req(&b, "POST", "/v1/acl/bootstrap", None, "");
        (r.status == 400).then_some(r)
    });
    assert!(r.is_some(), "n2 bootstrapped a second time");
}

/// Every key the supervisor renders for a secured node (design contract of
/// issue 19) loads with its type.
#[test]
fn secured_configs_as_the_supervisor_renders_them_validate() {
    let dir = tempfile::tempdir().unwrap();
    let consul = r#"
encrypt = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s="
primary_datacenter = "dc1"
ports {
  http  = -1
  https = 8501
}
tls {
  defaults {
    ca_file         = "/etc/hashi-supervisor/security/ca.pem"
    cert_file       = "/etc/hashi-supervisor/security/node.pem"
    key_file        = "/etc/hashi-supervisor/security/consul-key.pem"
    verify_incoming = true
    verify_outgoing = true
  }
  internal_rpc {
    verify_server_hostname = true
  }
}
acl {
  enabled                  = true
  default_policy           = "deny"
  down_policy              = "extend-cache"
  enable_token_persistence = true
  enable_token_replication = true
  tokens {
    agent              = "0b0d1f2e-3c4b-4a59-8e7d-6c5b4a392817"
    initial_management = "6c4c9d4f-0c33-4b3a-9d22-6f1e5c0a7b11"
    replication        = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
  }
}
"#;
    let nomad = r#"
server {
  enabled = true
  encrypt = "Dt3P9SpKGAR/DIUN1cDirg=="
}
tls {
  http                   = true
  rpc                    = true
  ca_file                = "/etc/hashi-supervisor/security/ca.pem"
  cert_file              = "/etc/hashi-supervisor/security/node.pem"
  key_file               = "/etc/hashi-supervisor/security/nomad-key.pem"
  verify_server_hostname = true
  verify_https_client    = false
}
consul {
  address   = "127.0.0.1:8501"
  ssl       = true
  ca_file   = "/etc/hashi-supervisor/security/ca.pem"
  cert_file = "/etc/hashi-supervisor/security/node.pem"
  key_file  = "/etc/hashi-supervisor/security/nomad-key.pem"
  token     = "11111111-2222-4333-8444-555555555555"
}
acl {
  enabled = true
}
"#;
    for (product, file, text, args) in [
        ("consul", "consul.hcl", consul, vec!["validate"]),
        ("nomad", "nomad.hcl", nomad, vec!["config", "validate"]),
    ] {
        let path = dir.path().join(file);
        std::fs::write(&path, text).unwrap();
        let bin = install_as(&dir.path().join(format!("bin-{product}")), product);
        let out = Command::new(bin).args(&args).arg(&path).output().unwrap();
        assert!(
            out.status.success(),
            "{product}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A wrong type is still refused (the tables check inside these blocks).
    let path = dir.path().join("bad.hcl");
    std::fs::write(
        &path,
        "tls {\n  defaults {\n    verify_incoming = \"yes\"\n  }\n}\n",
    )
    .unwrap();
    let bin = install_as(&dir.path().join("bin-bad"), "consul");
    let out = Command::new(bin)
        .arg("validate")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("tls.defaults.verify_incoming"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn consul_servers_with_tls_links_share_acl_state_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("cluster CA");
    let f1 = ca.node(&dir.path().join("s1"), &["server.dc1.consul", "localhost"]);
    let f2 = ca.node(&dir.path().join("s2"), &["server.dc1.consul", "localhost"]);
    let mut t1 = consul_tls(&f1);
    t1["tls"]["defaults"]["verify_incoming"] = json!(false);
    let mut t2 = consul_tls(&f2);
    t2["tls"]["defaults"]["verify_incoming"] = json!(false);
    let a = StandIn::consul()
        .server(2)
        .node_name("s1")
        .set("encrypt", json!(KEY_A))
        .file("10-tls.json", &t1.to_string())
        .file("20-acl.json", &consul_acl(Some(MGMT)).to_string())
        .start();
    let b = StandIn::consul()
        .server(2)
        .node_name("s2")
        .set("encrypt", json!(KEY_A))
        .set("retry_join", json!([a.join_addr()]))
        .file("10-tls.json", &t2.to_string())
        .file("20-acl.json", &consul_acl(Some(MGMT)).to_string())
        .start();
    wait_leader(&a);
    wait_leader(&b);
    let chosen = "7f6e5d4c-3b2a-4190-8fed-cba987654321";
    let token = json!({"SecretID": chosen, "Policies": [{"Name": "global-management"}]});
    let r = req(&b, "PUT", "/v1/acl/token", Some(MGMT), &token.to_string());
    assert_eq!(r.status, 200, "{}", r.body);
    let ok = wait_for(DEADLINE, || {
        (req(&a, "GET", "/v1/agent/members", Some(chosen), "").status == 200).then_some(())
    });
    assert!(ok.is_some(), "s1 never accepted the token made on s2");
    // Both verified each other as servers of dc1 over TLS.
    let peer = wait_for(DEADLINE, || {
        let v = a.get("/_standin/tls-peers").json();
        v.as_array()?
            .iter()
            .find(|p| p["Node"] == "s2" && p["Direction"] == "out")
            .cloned()
    })
    .expect("s1 verified s2");
    assert_eq!(peer["VerifiedName"], json!("server.dc1.consul"));
}

#[test]
fn sighup_picks_up_a_renewed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("cluster CA");
    let f = ca.node(dir.path(), &["server.dc1.consul", "localhost"]);
    let https_port = free_port();
    let mut tls = consul_tls(&f);
    tls["ports"] = json!({"https": https_port});
    let s = StandIn::consul()
        .server(1)
        .node_name("s1")
        .file("10-tls.json", &tls.to_string())
        .start();
    let addr = format!("127.0.0.1:{https_port}");
    wait_port(&addr);
    let get = |name: &str| {
        https_as(
            &addr,
            name,
            "GET",
            "/v1/status/leader",
            &f.ca_pem,
            Some(&f),
            &[],
        )
    };
    assert_eq!(get("localhost").unwrap().status, 200);
    assert!(
        get("renewed.example").is_err(),
        "the old certificate has no such name"
    );
    // The renewal writes a new certificate and key over the old files.
    let _renewed = ca.node(
        dir.path(),
        &["server.dc1.consul", "localhost", "renewed.example"],
    );
    s.signal(crate::support::Signal::SIGHUP);
    assert!(s.wait_event("reload ok", DEADLINE));
    let r = wait_for(DEADLINE, || get("renewed.example").ok());
    assert_eq!(
        r.map(|r| r.status),
        Some(200),
        "the renewed certificate is not served"
    );
}

#[test]
fn nomad_https_with_verify_https_client_requires_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("cluster CA");
    let f = ca.node(dir.path(), &["server.global.nomad", "localhost"]);
    let tls = nomad_tls(&f).replace("verify_https_client = false", "verify_https_client = true");
    let s = StandIn::nomad().node_name("s1").hcl(&tls).start();
    let r = https(&s.addr(), "GET", "/v1/status/leader", &f.ca_pem, None, &[]);
    assert!(r.is_err(), "answered without a client certificate: {r:?}");
    let r = wait_for(DEADLINE, || {
        https(
            &s.addr(),
            "GET",
            "/v1/status/leader",
            &f.ca_pem,
            Some(&f),
            &[],
        )
        .ok()
        .filter(|r| r.status == 200)
    });
    assert!(r.is_some(), "no answer with a client certificate");
}

//! Test helpers: a cluster CA and an agent API over real TLS on loopback
//! that requires a client certificate (Consul's `verify_incoming`) and
//! records the token headers of every request. Used by the transport and
//! catalog tests.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType,
};
use tokio::net::TcpListener;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::transport::{CONSUL_TOKEN_HEADER, NOMAD_TOKEN_HEADER};
use crate::plan::{ApiTls, ClientCert};
use crate::role::Secret;

/// A token value tests grep for.
pub const CONSUL_TOKEN: &str = "5c0e7d1a-93b4-4c2e-8f11-2a7d9e6b4f30";

/// A CA, able to sign leaf certificates.
pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pub pem: String,
    pub der: CertificateDer<'static>,
}

impl Ca {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            der: cert.der().clone(),
            params,
            key,
        }
    }

    /// A leaf for `names` (+ IP SAN 127.0.0.1): (cert PEM, key PEM, cert
    /// DER, key DER).
    pub fn leaf(
        &self,
        names: &[&str],
        client: bool,
    ) -> (
        String,
        String,
        CertificateDer<'static>,
        PrivateKeyDer<'static>,
    ) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
        p.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        p.extended_key_usages = if client {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        } else {
            vec![ExtendedKeyUsagePurpose::ServerAuth]
        };
        let cert = p
            .signed_by(&key, &Issuer::from_params(&self.params, &self.key))
            .unwrap();
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (cert.pem(), key.serialize_pem(), cert.der().clone(), key_der)
    }
}

/// What the server saw of each request: path and the token headers.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub path: String,
    pub consul_token: Option<String>,
    pub nomad_token: Option<String>,
}

/// An agent API over TLS on a free loopback port that requires a client
/// certificate signed by `client_ca` (like Consul's `verify_incoming`):
/// `/v1/status/leader` answers a leader, `/denied` 403 as Consul does
/// for a token without the permission; every request is recorded.
pub async fn tls_agent(server_ca: &Ca, client_ca: &Ca) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (_, _, cert, key) = server_ca.leaf(&["localhost", "server.dc1.consul"], false);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(client_ca.der.clone()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert, server_ca.der.clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = l.accept().await.unwrap();
            let (acceptor, log) = (acceptor.clone(), log.clone());
            tokio::spawn(async move {
                // A client without a certificate fails here.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let h = |n: &str| {
                        req.headers()
                            .get(n)
                            .map(|v| v.to_str().unwrap().to_string())
                    };
                    log.lock().unwrap().push(Seen {
                        path: req.uri().to_string(),
                        consul_token: h(CONSUL_TOKEN_HEADER),
                        nomad_token: h(NOMAD_TOKEN_HEADER),
                    });
                    let (status, body) = match req.uri().path() {
                        "/v1/status/leader" => (200, "\"10.0.0.1:8300\""),
                        "/v1/agent/service/register" => (200, ""),
                        "/denied" => (
                            403,
                            "Permission denied: token lacks permission 'agent:read'",
                        ),
                        _ => (404, "not found"),
                    };
                    async move {
                        hyper::Response::builder()
                            .status(status)
                            .body(Full::new(Bytes::from_static(body.as_bytes())))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// Writes `ca` and (when given) the client cert and key in `dir`; the
/// API settings naming them.
pub fn api_tls(
    dir: &std::path::Path,
    ca: &Ca,
    client: Option<(String, String)>,
    server_name: &str,
    token: Option<&str>,
) -> ApiTls {
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let client_cert = client.map(|(cert, key)| {
        let (cert_file, key_file) = (dir.join("node.pem"), dir.join("node-key.pem"));
        std::fs::write(&cert_file, cert).unwrap();
        std::fs::write(&key_file, key).unwrap();
        ClientCert {
            cert_file,
            key_file,
        }
    });
    ApiTls {
        ca_file,
        server_name: server_name.into(),
        client_cert,
        token: token.map(Secret::new),
    }
}

/// A client certificate of `ca` (PEM cert, PEM key).
pub fn client_pem(ca: &Ca) -> (String, String) {
    let (c, k, _, _) = ca.leaf(&["client.dc1.consul", "localhost"], true);
    (c, k)
}

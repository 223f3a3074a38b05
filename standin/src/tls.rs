//! TLS of the stand-in: loading the configured CA, certificate and key at
//! start and refusing to start when they do not fit the agent's role
//! (missing or unreadable file, certificate not signed by `ca_file`, key not
//! matching the certificate, role name missing with
//! `verify_server_hostname`), the acceptors of the HTTPS API and the RPC
//! port, the connector of the stand-in's own RPC links, and the record of
//! every verified peer handshake (`/_standin/tls-peers`).
//!
//! The real agents load the same files at start but only notice a wrong
//! name when a peer's handshake fails; the stand-in refuses earlier on
//! purpose (README "TLS"). Not HashiCorp's tlsutil, and not meant to be.

use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{
    self, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig,
    SignatureScheme,
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::Product;
use crate::config::{AgentConfig, TlsSettings};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// The names a role's certificate must carry with `verify_server_hostname`
/// (the names Consul's and Nomad's RPC verify): Consul server
/// `server.<dc>.consul`; Nomad server `server.<region>.nomad`, Nomad client
/// `client.<region>.nomad`. Consul clients need none.
pub fn role_names(cfg: &AgentConfig) -> Vec<String> {
    let mut out = Vec::new();
    match cfg.product {
        Product::Consul => {
            if cfg.server {
                out.push(server_name(Product::Consul, &cfg.datacenter));
            }
        }
        Product::Nomad => {
            if cfg.server {
                out.push(server_name(Product::Nomad, &cfg.region));
            }
            if cfg.client {
                out.push(format!("client.{}.nomad", cfg.region));
            }
        }
    }
    out
}

/// `server.<dc>.consul` / `server.<region>.nomad`.
pub fn server_name(product: Product, dc_or_region: &str) -> String {
    match product {
        Product::Consul => format!("server.{dc_or_region}.consul"),
        Product::Nomad => format!("server.{dc_or_region}.nomad"),
    }
}

/// The node's TLS material, checked.
pub struct NodeTls {
    pub settings: TlsSettings,
    roots: Option<Arc<RootCertStore>>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// Verified peer handshakes (`/_standin/tls-peers`), kept across a
    /// reload of the files.
    peers: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("NodeTls")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn read_certs(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    std::fs::read(path).map_err(|e| format!("failed to read {what} {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("failed to parse {what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "failed to parse {what} {}: no PEM certificate found",
            path.display()
        ));
    }
    Ok(certs)
}

/// Load and check the TLS files of `cfg` (None when no TLS is configured).
pub fn load(cfg: &AgentConfig) -> Result<Option<NodeTls>, String> {
    let Some(t) = cfg.tls.clone() else {
        return Ok(None);
    };
    let roots = match &t.ca_file {
        Some(ca) => {
            let mut store = RootCertStore::empty();
            for c in read_certs("CA file", ca)? {
                store
                    .add(c)
                    .map_err(|e| format!("failed to parse CA file {}: {e}", ca.display()))?;
            }
            Some(Arc::new(store))
        }
        None => None,
    };
    // The stand-in always presents its own certificate once TLS is
    // configured (README "TLS"), so both files are needed.
    let (Some(cert_file), Some(key_file)) = (&t.cert_file, &t.key_file) else {
        return Err("cert_file and key_file must both be set".to_string());
    };
    let chain = read_certs("certificate file", cert_file)?;
    std::fs::read(key_file)
        .map_err(|e| format!("failed to read key file {}: {e}", key_file.display()))?;
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| format!("failed to parse key file {}: {e}", key_file.display()))?;
    let signing = provider()
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| format!("failed to load key file {}: {e}", key_file.display()))?;
    let certified = CertifiedKey::new(chain.clone(), signing);
    if let Err(rustls::Error::InconsistentKeys(_)) = certified.keys_match() {
        return Err(format!(
            "failed to load cert/key pair: the private key in {} does not match the certificate in {}",
            key_file.display(),
            cert_file.display()
        ));
    }
    if let Some(roots) = &roots {
        check_chain(roots, &chain, cert_file)?;
        if t.verify_server_hostname {
            for name in role_names(cfg) {
                check_name(roots, &chain, &name, cert_file)?;
            }
        }
    }
    Ok(Some(NodeTls {
        settings: t,
        roots,
        chain,
        key,
        peers: Arc::new(Mutex::new(Vec::new())),
    }))
}

fn now() -> UnixTime {
    UnixTime::now()
}

/// The certificate chains to `ca_file` (as a server or a client certificate).
fn check_chain(
    roots: &Arc<RootCertStore>,
    chain: &[CertificateDer<'static>],
    file: &Path,
) -> Result<(), String> {
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| e.to_string())?;
    let (leaf, rest) = chain.split_first().ok_or("empty certificate chain")?;
    let probe = ServerName::try_from("standin.invalid").map_err(|e| e.to_string())?;
    let server = verifier.verify_server_cert(leaf, rest, &probe, &[], now());
    let err = match server {
        Ok(_) => return Ok(()),
        // The chain is fine: only the probe name is missing.
        Err(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => return Ok(()),
        Err(e) => e,
    };
    // A client-only certificate (clientAuth EKU) is checked as a client's.
    let client = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
        .build()
        .map_err(|e| e.to_string())?;
    if client.verify_client_cert(leaf, rest, now()).is_ok() {
        return Ok(());
    }
    Err(match err {
        rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => format!(
            "certificate {} is not signed by the CA in ca_file",
            file.display()
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => format!("certificate {} has expired", file.display()),
        e => format!("certificate {} failed verification: {e}", file.display()),
    })
}

fn check_name(
    roots: &Arc<RootCertStore>,
    chain: &[CertificateDer<'static>],
    name: &str,
    file: &Path,
) -> Result<(), String> {
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| e.to_string())?;
    let (leaf, rest) = chain.split_first().ok_or("empty certificate chain")?;
    let sn = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
    match verifier.verify_server_cert(leaf, rest, &sn, &[], now()) {
        Ok(_) => Ok(()),
        Err(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => Err(format!(
            "certificate {} is not valid for {name}, the name this agent's role needs with verify_server_hostname",
            file.display()
        )),
        // A client-only certificate: names cannot be checked as a server's.
        Err(rustls::Error::InvalidCertificate(CertificateError::InvalidPurpose))
            if name.starts_with("client.") =>
        {
            Ok(())
        }
        Err(e) => Err(format!(
            "certificate {} failed verification for {name}: {e}",
            file.display()
        )),
    }
}

impl NodeTls {
    fn server_config(&self, require_client: bool) -> Result<ServerConfig, String> {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = match (&self.roots, require_client) {
            (Some(roots), true) => builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
                    .build()
                    .map_err(|e| e.to_string())?,
            ),
            (Some(roots), false) => builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| e.to_string())?,
            ),
            (None, true) => return Err("verify_incoming needs ca_file".to_string()),
            (None, false) => builder.with_no_client_auth(),
        };
        builder
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| e.to_string())
    }

    /// Acceptor of the HTTPS API (client certificates required with
    /// `verify_incoming` / `verify_https_client`).
    pub fn https_acceptor(&self) -> Result<TlsAcceptor, String> {
        Ok(TlsAcceptor::from(Arc::new(
            self.server_config(self.settings.verify_incoming_https)?,
        )))
    }

    /// Acceptor of the RPC port.
    pub fn rpc_acceptor(&self) -> Result<TlsAcceptor, String> {
        Ok(TlsAcceptor::from(Arc::new(
            self.server_config(self.settings.verify_incoming_rpc)?,
        )))
    }

    /// Connector of the stand-in's RPC links: the node certificate as client
    /// certificate; the peer verified against `ca_file`, and with
    /// `verify_server_hostname` for the name the caller gives.
    pub fn connector(&self) -> Result<TlsConnector, String> {
        let roots = self
            .roots
            .clone()
            .ok_or("TLS links need ca_file to verify peers")?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| e.to_string())?;
        let verifier = Arc::new(PeerVerifier {
            inner,
            check_name: self.settings.verify_server_hostname,
        });
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| e.to_string())?;
        Ok(TlsConnector::from(Arc::new(config)))
    }

    /// Keep the peer record of the material this one replaces (SIGHUP).
    pub fn keep_peers_of(&mut self, old: &NodeTls) {
        self.peers = old.peers.clone();
    }

    /// Whether a peer's certificate chain (already verified as a client's)
    /// also carries `name` (e.g. this DC's `server.<dc>.consul`).
    pub fn cert_has_name(&self, chain: &[CertificateDer<'static>], name: &str) -> bool {
        match &self.roots {
            Some(roots) => check_name(roots, chain, name, Path::new("peer")).is_ok(),
            None => false,
        }
    }

    /// Record a verified handshake with a peer and log it.
    pub fn record_peer(&self, direction: &str, node: &str, addr: &str, name: &str) {
        let entry = serde_json::json!({
            "Direction": direction, "Node": node, "Addr": addr, "VerifiedName": name,
        });
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let known = peers.iter().any(|p| {
            p["Direction"] == entry["Direction"]
                && p["Node"] == entry["Node"]
                && p["VerifiedName"] == entry["VerifiedName"]
        });
        if !known {
            peers.push(entry);
            drop(peers);
            crate::events::log(&format!(
                "    [INFO] standin: tls handshake with {node} verified: direction={direction} addr={addr} name={name}"
            ));
        }
    }

    /// Every verified peer handshake so far.
    pub fn peers(&self) -> serde_json::Value {
        serde_json::Value::Array(self.peers.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// Verifies a peer's certificate against the CA; the name only with
/// `verify_server_hostname` (as Consul's and Nomad's RPC do).
#[derive(Debug)]
struct PeerVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    check_name: bool,
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A TLS client for Nomad's `consul {}` block (`ssl = true`): the Consul
/// HTTPS API verified against `ca_file` for the address's host, with the
/// client certificate when given.
pub fn consul_client_connector(t: &crate::config::ConsulClientTls) -> Result<TlsConnector, String> {
    let mut store = RootCertStore::empty();
    if let Some(ca) = &t.ca_file {
        for c in read_certs("consul CA file", ca)? {
            store.add(c).map_err(|e| e.to_string())?;
        }
    }
    let inner =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider())
            .build()
            .map_err(|e| e.to_string())?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PeerVerifier {
            inner,
            check_name: t.verify_ssl,
        }));
    let config = match (&t.cert_file, &t.key_file) {
        (Some(c), Some(k)) => {
            let chain = read_certs("consul certificate file", c)?;
            let key = PrivateKeyDer::from_pem_file(k)
                .map_err(|e| format!("failed to parse consul key file {}: {e}", k.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| e.to_string())?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(TlsConnector::from(Arc::new(config)))
}

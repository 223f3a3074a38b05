//! The cluster CA: an ECDSA P-256 key and a 10-year self-signed
//! certificate made by `supervisor cluster init`, kept in
//! `<config>/cluster/` by every CA holder. It signs node certificates (from
//! a CSR whose names must be exactly the ones the node's roles need: the
//! node's key never leaves it) and the join endpoint's short-lived serving
//! certificate.
//!
//! The CA's pin is `sha256:<hex>` of its SubjectPublicKeyInfo DER, the
//! same value as kubeadm's `--discovery-token-ca-cert-hash`, so
//! `openssl x509 -pubkey | openssl pkey -pubin -outform der | sha256sum`
//! computes it too.
//!
//! This module reads the CA's files but writes nothing (`store` does); the
//! key is only ever handed out as a [`Secret`].

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType, SerialNumber,
};
use sha2::{Digest, Sha256};

use crate::paths;
use crate::role::Secret;
use crate::role::file::{FileError, read_regular_text};

/// The CA certificate's common name.
pub const CA_COMMON_NAME: &str = "hashi-supervisor cluster CA";
/// Lifetime of the cluster CA.
pub const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86_400);
/// Lifetime of the join endpoint's serving certificate: minted at every
/// start of the endpoint, so it only needs to outlive one run by a margin;
/// the endpoint mints again before it runs out.
pub const JOIN_SERVER_CERT_LIFETIME: Duration = Duration::from_secs(7 * 86_400);
/// Certificates are valid from this long before they are made, so a node
/// whose clock is a little behind the CA holder's still accepts them.
pub const BACKDATE: Duration = Duration::from_secs(5 * 60);
/// Largest PEM file (certificate or key) read from disk.
pub const MAX_PEM_BYTES: u64 = 64 * 1024;
/// Prefix of a pin.
pub const PIN_PREFIX: &str = "sha256:";

/// What went wrong with the CA, a certificate or a request.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A file of the CA could not be read.
    #[error("failed to read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: FileError,
    },
    /// The CA certificate or key on disk is not usable.
    #[error("the cluster CA in {} is not usable: {reason}", dir.display())]
    BadCa {
        /// The cluster dir.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
    /// A certificate (PEM) could not be parsed.
    #[error("failed to parse the certificate: {0}")]
    BadCert(String),
    /// The certificate request could not be parsed or its signature is
    /// wrong.
    #[error("the certificate request is not valid: {0}")]
    BadCsr(String),
    /// The request's key is not the algorithm the cluster uses.
    #[error("the certificate request's key is not ECDSA P-256")]
    KeyAlgorithm,
    /// The request's names are not exactly the expected ones.
    #[error("{}", names_message(extra, missing))]
    Names {
        /// Names in the request that the node's roles do not need.
        extra: Vec<String>,
        /// Names the node's roles need that the request lacks.
        missing: Vec<String>,
    },
    /// rcgen refused to build or sign a certificate.
    #[error("failed to {what}: {reason}")]
    Generate {
        /// What was being made.
        what: &'static str,
        /// rcgen's reason.
        reason: String,
    },
}

fn names_message(extra: &[String], missing: &[String]) -> String {
    let mut s = String::from("the certificate request's names are not the ones the roles need");
    if !extra.is_empty() {
        s.push_str(&format!(": extra {}", extra.join(", ")));
    }
    if !missing.is_empty() {
        s.push_str(if extra.is_empty() { ": " } else { "; " });
        s.push_str(&format!("missing {}", missing.join(", ")));
    }
    s
}

fn generate(what: &'static str) -> impl FnOnce(rcgen::Error) -> CaError {
    move |e| CaError::Generate {
        what,
        reason: e.to_string(),
    }
}

/// A certificate the CA signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCert {
    /// The certificate (PEM).
    pub pem: String,
    /// Valid from (Unix seconds).
    pub not_before: u64,
    /// Valid until (Unix seconds).
    pub not_after: u64,
}

/// The cluster CA: certificate and key.
pub struct ClusterCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
    pin: String,
}

impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCa")
            .field("pin", &self.pin)
            .field("key", &crate::role::REDACTED)
            .finish()
    }
}

/// Now, as Unix seconds (0 if the clock is before 1970).
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn offset_time(unix: u64) -> Result<time::OffsetDateTime, CaError> {
    let secs = i64::try_from(unix).map_err(|_| CaError::Generate {
        what: "set the validity",
        reason: "time out of range".to_string(),
    })?;
    time::OffsetDateTime::from_unix_timestamp(secs).map_err(|e| CaError::Generate {
        what: "set the validity",
        reason: e.to_string(),
    })
}

/// A random positive serial number (RFC 5280: at most 20 octets).
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::fill(&mut bytes);
    bytes[0] &= 0x7f;
    // A leading zero octet would be dropped by DER; keep 16 octets.
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

/// A new ECDSA P-256 key pair (a node's key, made on the node).
pub fn new_key_pair() -> Result<KeyPair, CaError> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate("generate a key"))
}

/// The key's PEM (PKCS#8), wrapped so that it is never printed.
pub fn key_pem_of(key: &KeyPair) -> Secret {
    Secret::new(key.serialize_pem())
}

/// A PKCS#10 request (PEM) for exactly `dns` and `ips`, signed with `key`:
/// what a joining or renewing node sends.
pub fn make_csr(key: &KeyPair, dns: &[String], ips: &[IpAddr]) -> Result<String, CaError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = node_dn();
    params.subject_alt_names = sans(dns, ips)?;
    let csr = params
        .serialize_request(key)
        .map_err(generate("make the certificate request"))?;
    csr.pem()
        .map_err(generate("encode the certificate request"))
}

fn node_dn() -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "hashi-supervisor node");
    dn
}

fn sans(dns: &[String], ips: &[IpAddr]) -> Result<Vec<SanType>, CaError> {
    let mut out = Vec::with_capacity(dns.len() + ips.len());
    for d in dns {
        let name = d.clone().try_into().map_err(|_| CaError::Generate {
            what: "put a DNS name into a certificate",
            reason: format!("`{d}` is not an IA5 string"),
        })?;
        out.push(SanType::DnsName(name));
    }
    out.extend(ips.iter().copied().map(SanType::IpAddress));
    Ok(out)
}

/// The parameters of a node (leaf) certificate: TLS server and client, for
/// Consul's and Nomad's RPC, HTTPS and the join endpoint's mutual TLS.
fn leaf_params(
    dns: &[String],
    ips: &[IpAddr],
    lifetime: Duration,
) -> Result<(CertificateParams, u64, u64), CaError> {
    let now = now_unix();
    let not_before = now.saturating_sub(BACKDATE.as_secs());
    let not_after = now.saturating_add(lifetime.as_secs());
    let mut p = CertificateParams::default();
    p.distinguished_name = node_dn();
    p.subject_alt_names = sans(dns, ips)?;
    p.not_before = offset_time(not_before)?;
    p.not_after = offset_time(not_after)?;
    p.serial_number = Some(random_serial());
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.use_authority_key_identifier_extension = true;
    Ok((p, not_before, not_after))
}

impl ClusterCa {
    /// A new CA: ECDSA P-256 key, self-signed for [`CA_LIFETIME`], basic
    /// constraints CA with path length 0 (it signs leaves only), key usage
    /// certificate and CRL signing.
    pub fn create() -> Result<ClusterCa, CaError> {
        let key = new_key_pair()?;
        let now = now_unix();
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, CA_COMMON_NAME);
        p.distinguished_name = dn;
        p.not_before = offset_time(now.saturating_sub(BACKDATE.as_secs()))?;
        p.not_after = offset_time(now.saturating_add(CA_LIFETIME.as_secs()))?;
        p.serial_number = Some(random_serial());
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = p.self_signed(&key).map_err(generate("self-sign the CA"))?;
        let cert_pem = cert.pem();
        let pin = pin_of_cert_der(cert.der())?;
        Ok(ClusterCa {
            cert_pem,
            issuer: Issuer::new(p, key),
            pin,
        })
    }

    /// Reads `ca.pem` and `ca-key.pem` from a cluster dir.
    pub fn load(cluster_dir: &Path) -> Result<ClusterCa, CaError> {
        let read = |name: &str| {
            let path = cluster_dir.join(name);
            read_regular_text(&path, MAX_PEM_BYTES).map_err(|source| CaError::Read { path, source })
        };
        let cert_pem = read(paths::CA_CERT_FILE)?;
        let key_pem = Secret::new(read(paths::CA_KEY_FILE)?);
        Self::from_pem(&cert_pem, &key_pem).map_err(|e| CaError::BadCa {
            dir: cluster_dir.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// The CA from its certificate and key (PEM): what a server receives
    /// from the join endpoint when it becomes a CA holder. The key must be
    /// the certificate's.
    pub fn from_pem(cert_pem: &str, key_pem: &Secret) -> Result<ClusterCa, CaError> {
        let key = KeyPair::from_pem(key_pem.expose()).map_err(|_| CaError::Generate {
            what: "read the CA key",
            reason: "not a PEM private key rcgen can use".to_string(),
        })?;
        let der = first_cert_der(cert_pem)?;
        let (_, x509) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| CaError::BadCert(e.to_string()))?;
        if x509.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(CaError::Generate {
                what: "pair the CA key with its certificate",
                reason: "the key is not the certificate's".to_string(),
            });
        }
        if !x509.is_ca() {
            return Err(CaError::BadCert("the certificate is not a CA".to_string()));
        }
        let pin = pin_of_spki_der(x509.public_key().raw);
        let issuer = Issuer::from_ca_cert_der(&der.clone().into(), key)
            .map_err(generate("use the CA certificate as issuer"))?;
        Ok(ClusterCa {
            cert_pem: cert_pem.to_string(),
            issuer,
            pin,
        })
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA key (PEM, PKCS#8): only for writing the cluster dir and for
    /// the handover to a server that becomes a CA holder.
    pub fn key_pem(&self) -> Secret {
        Secret::new(self.issuer.key().serialize_pem())
    }

    /// `sha256:<hex>` of the CA's SubjectPublicKeyInfo DER.
    pub fn pin(&self) -> String {
        self.pin.clone()
    }

    /// Signs a node's certificate request: checks its signature and key
    /// algorithm, refuses it unless its names are exactly `expected_dns`
    /// and `expected_ips` (naming what is extra and what is missing), and
    /// issues a certificate for those names with the CA's own choice of
    /// everything else (validity `lifetime`, key usage digitalSignature and
    /// keyEncipherment, extended key usage serverAuth and clientAuth, not a
    /// CA): nothing but the public key and the checked names is taken from
    /// the request.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        expected_dns: &[String],
        expected_ips: &[IpAddr],
        lifetime: Duration,
    ) -> Result<SignedCert, CaError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CaError::BadCsr(e.to_string()))?;
        if csr.public_key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            return Err(CaError::KeyAlgorithm);
        }
        check_names(&csr.params.subject_alt_names, expected_dns, expected_ips)?;
        let (params, not_before, not_after) = leaf_params(expected_dns, expected_ips, lifetime)?;
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(generate("sign the node certificate"))?;
        Ok(SignedCert {
            pem: cert.pem(),
            not_before,
            not_after,
        })
    }

    /// Issues a certificate for `key` (made on this node) with `dns` and
    /// `ips`: the init node's own certificate.
    pub fn issue(
        &self,
        key: &KeyPair,
        dns: &[String],
        ips: &[IpAddr],
        lifetime: Duration,
    ) -> Result<SignedCert, CaError> {
        let (params, not_before, not_after) = leaf_params(dns, ips, lifetime)?;
        let cert = params
            .signed_by(key, &self.issuer)
            .map_err(generate("sign the node certificate"))?;
        Ok(SignedCert {
            pem: cert.pem(),
            not_before,
            not_after,
        })
    }

    /// A fresh key and certificate for the join endpoint (DNS name
    /// [`paths::JOIN_SERVER_NAME`], [`JOIN_SERVER_CERT_LIFETIME`]), and the
    /// certificate's expiry. The chain to serve is `[cert, ca]`.
    pub fn mint_join_server_cert(&self) -> Result<(SignedCert, Secret), CaError> {
        let key = new_key_pair()?;
        let cert = self.issue(
            &key,
            &[paths::JOIN_SERVER_NAME.to_string()],
            &[],
            JOIN_SERVER_CERT_LIFETIME,
        )?;
        Ok((cert, key_pem_of(&key)))
    }
}

/// Refuses a request unless its SANs are exactly the expected DNS names
/// and IPs (each at most once; no other kind of name).
fn check_names(
    got: &[SanType],
    expected_dns: &[String],
    expected_ips: &[IpAddr],
) -> Result<(), CaError> {
    let mut have: BTreeSet<String> = BTreeSet::new();
    let mut extra: Vec<String> = Vec::new();
    for san in got {
        let shown = match san {
            SanType::DnsName(n) => format!("DNS:{}", n.as_str()),
            SanType::IpAddress(ip) => format!("IP:{ip}"),
            SanType::Rfc822Name(n) => format!("email:{}", n.as_str()),
            SanType::URI(u) => format!("URI:{}", u.as_str()),
            _ => "a name of another kind".to_string(),
        };
        if !have.insert(shown.clone()) {
            extra.push(format!("{shown} (twice)"));
        }
    }
    let want: BTreeSet<String> = expected_dns
        .iter()
        .map(|d| format!("DNS:{d}"))
        .chain(expected_ips.iter().map(|ip| format!("IP:{ip}")))
        .collect();
    extra.extend(have.difference(&want).cloned());
    let missing: Vec<String> = want.difference(&have).cloned().collect();
    if extra.is_empty() && missing.is_empty() {
        Ok(())
    } else {
        // A hostile request may carry many names: report a bounded list.
        extra.truncate(16);
        Err(CaError::Names { extra, missing })
    }
}

/// The DER of the first certificate in `pem`.
fn first_cert_der(pem: &str) -> Result<Vec<u8>, CaError> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| CaError::BadCert(format!("not PEM: {e}")))?;
    if p.label != "CERTIFICATE" {
        return Err(CaError::BadCert(format!(
            "the PEM block is a {}, not a CERTIFICATE",
            p.label
        )));
    }
    Ok(p.contents)
}

/// `sha256:<hex>` of a SubjectPublicKeyInfo DER.
pub fn pin_of_spki_der(spki: &[u8]) -> String {
    format!("{PIN_PREFIX}{}", hex::encode(Sha256::digest(spki)))
}

/// The pin of a certificate (DER): `sha256:<hex>` of its
/// SubjectPublicKeyInfo.
pub fn pin_of_cert_der(der: &[u8]) -> Result<String, CaError> {
    let (_, x509) =
        x509_parser::parse_x509_certificate(der).map_err(|e| CaError::BadCert(e.to_string()))?;
    Ok(pin_of_spki_der(x509.public_key().raw))
}

/// The pin of the first certificate in `pem`.
pub fn pin_of_cert_pem(pem: &str) -> Result<String, CaError> {
    pin_of_cert_der(&first_cert_der(pem)?)
}

/// Expiry (Unix seconds) of the first certificate in `pem`.
pub fn not_after_of_cert_pem(pem: &str) -> Result<u64, CaError> {
    let der = first_cert_der(pem)?;
    let (_, x509) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| CaError::BadCert(e.to_string()))?;
    u64::try_from(x509.validity().not_after.timestamp())
        .map_err(|_| CaError::BadCert("expiry before 1970".to_string()))
}

/// The DNS names and IP addresses of a certificate (DER), as the names in
/// a renewal must equal the current certificate's.
pub fn names_of_cert_der(der: &[u8]) -> Result<(Vec<String>, Vec<IpAddr>), CaError> {
    use x509_parser::extensions::GeneralName;
    let (_, x509) =
        x509_parser::parse_x509_certificate(der).map_err(|e| CaError::BadCert(e.to_string()))?;
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    let san = x509
        .subject_alternative_name()
        .map_err(|e| CaError::BadCert(e.to_string()))?;
    if let Some(san) = san {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => dns.push((*d).to_string()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => ips
                        .push(IpAddr::from(<[u8; 4]>::try_from(*b).map_err(|_| {
                            CaError::BadCert("bad IPv4 address".to_string())
                        })?)),
                    16 => ips
                        .push(IpAddr::from(<[u8; 16]>::try_from(*b).map_err(|_| {
                            CaError::BadCert("bad IPv6 address".to_string())
                        })?)),
                    n => {
                        return Err(CaError::BadCert(format!("an IP address of {n} bytes")));
                    }
                },
                _ => {}
            }
        }
    }
    Ok((dns, ips))
}

/// The names of the first certificate in `pem`.
pub fn names_of_cert_pem(pem: &str) -> Result<(Vec<String>, Vec<IpAddr>), CaError> {
    names_of_cert_der(&first_cert_der(pem)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn names() -> (Vec<String>, Vec<IpAddr>) {
        (
            vec!["localhost".to_string(), "server.ams2.consul".to_string()],
            vec!["127.0.0.1".parse().unwrap(), "10.0.0.5".parse().unwrap()],
        )
    }

    fn der(pem: &str) -> Vec<u8> {
        first_cert_der(pem).unwrap()
    }

    #[test]
    fn a_csr_with_exactly_the_expected_names_is_signed_as_a_tls_leaf() {
        let ca = ClusterCa::create().unwrap();
        let (dns, ips) = names();
        let key = new_key_pair().unwrap();
        let csr = make_csr(&key, &dns, &ips).unwrap();
        let cert = ca.sign_csr(&csr, &dns, &ips, 90 * DAY).unwrap();
        let d = der(&cert.pem);
        let (_, x) = x509_parser::parse_x509_certificate(&d).unwrap();
        // The node's key, the CA's signature, the checked names.
        assert_eq!(x.public_key().raw, key.subject_public_key_info().as_slice());
        let ca_der = der(ca.cert_pem());
        let (_, cax) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        x.verify_signature(Some(cax.public_key())).unwrap();
        let (got_dns, got_ips) = names_of_cert_der(&d).unwrap();
        assert_eq!(got_dns, dns);
        assert_eq!(got_ips, ips);
        assert!(!x.is_ca());
        let eku = x.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        let ku = x.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
        assert_eq!(
            cert.not_after - cert.not_before,
            90 * 86_400 + BACKDATE.as_secs()
        );
        assert_eq!(not_after_of_cert_pem(&cert.pem).unwrap(), cert.not_after);
    }

    #[test]
    fn a_csr_with_an_extra_name_is_refused_naming_it() {
        let ca = ClusterCa::create().unwrap();
        let (dns, ips) = names();
        let key = new_key_pair().unwrap();
        let mut more = dns.clone();
        more.push("server.other.nomad".to_string());
        let csr = make_csr(&key, &more, &ips).unwrap();
        let err = ca.sign_csr(&csr, &dns, &ips, DAY).unwrap_err();
        match &err {
            CaError::Names { extra, missing } => {
                assert_eq!(extra, &vec!["DNS:server.other.nomad".to_string()]);
                assert!(missing.is_empty());
            }
            e => panic!("unexpected {e:?}"),
        }
        assert!(
            err.to_string().contains("extra DNS:server.other.nomad"),
            "{err}"
        );
        // An extra IP too.
        let mut ips2 = ips.clone();
        ips2.push("192.0.2.1".parse().unwrap());
        let csr = make_csr(&key, &dns, &ips2).unwrap();
        let err = ca.sign_csr(&csr, &dns, &ips, DAY).unwrap_err();
        assert!(err.to_string().contains("extra IP:192.0.2.1"), "{err}");
    }

    #[test]
    fn a_csr_missing_a_name_is_refused_naming_it() {
        let ca = ClusterCa::create().unwrap();
        let (dns, ips) = names();
        let key = new_key_pair().unwrap();
        let csr = make_csr(&key, &dns[..1], &ips).unwrap();
        let err = ca.sign_csr(&csr, &dns, &ips, DAY).unwrap_err();
        assert!(
            err.to_string().ends_with("missing DNS:server.ams2.consul"),
            "{err}"
        );
    }

    #[test]
    fn a_tampered_csr_is_refused() {
        let ca = ClusterCa::create().unwrap();
        let (dns, ips) = names();
        let key = new_key_pair().unwrap();
        let csr = make_csr(&key, &dns, &ips).unwrap();
        // Change one name inside the signed part: the signature no longer
        // matches.
        let p = x509_parser::pem::parse_x509_pem(csr.as_bytes()).unwrap().1;
        let mut d = p.contents.clone();
        let at = d
            .windows(b"server.ams2".len())
            .position(|w| w == b"server.ams2")
            .unwrap();
        d[at + 7] = b'x';
        let tampered = pem_encode("CERTIFICATE REQUEST", &d);
        let err = ca.sign_csr(&tampered, &dns, &ips, DAY).unwrap_err();
        assert!(matches!(err, CaError::BadCsr(_)), "{err:?}");
        assert!(ca.sign_csr("not a csr", &dns, &ips, DAY).is_err());
    }

    #[test]
    fn a_csr_with_another_key_algorithm_is_refused() {
        let ca = ClusterCa::create().unwrap();
        let (dns, ips) = names();
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let csr = make_csr(&key, &dns, &ips).unwrap();
        let err = ca.sign_csr(&csr, &dns, &ips, DAY).unwrap_err();
        assert!(matches!(err, CaError::KeyAlgorithm), "{err:?}");
    }

    fn pem_encode(label: &str, der: &[u8]) -> String {
        const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for c in der.chunks(3) {
            let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                s.push(if i <= c.len() {
                    B64[((n >> (18 - 6 * i)) & 63) as usize] as char
                } else {
                    '='
                });
            }
        }
        let body: Vec<String> = s
            .as_bytes()
            .chunks(64)
            .map(|l| String::from_utf8(l.to_vec()).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            body.join("\n")
        )
    }

    #[test]
    fn the_ca_is_a_p256_ca_with_path_length_0_for_ten_years() {
        let ca = ClusterCa::create().unwrap();
        let d = der(ca.cert_pem());
        let (_, x) = x509_parser::parse_x509_certificate(&d).unwrap();
        assert!(x.is_ca());
        let bc = x.basic_constraints().unwrap().unwrap().value;
        assert_eq!(bc.path_len_constraint, Some(0));
        let ku = x.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign());
        assert_eq!(x.subject().to_string(), format!("CN={CA_COMMON_NAME}"));
        let life = x.validity().not_after.timestamp() - x.validity().not_before.timestamp();
        assert_eq!(life as u64, CA_LIFETIME.as_secs() + BACKDATE.as_secs());
        x.verify_signature(None).unwrap();
    }

    #[test]
    fn the_pin_equals_openssls_sha256_of_the_public_key_der() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let ca = ClusterCa::create().unwrap();
        // openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | sha256
        let run = |args: &[&str], input: &[u8]| -> Vec<u8> {
            let mut child = Command::new("openssl")
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("openssl must be installed for this test");
            child.stdin.take().unwrap().write_all(input).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "openssl {args:?} failed");
            out.stdout
        };
        let pubkey = run(&["x509", "-pubkey", "-noout"], ca.cert_pem().as_bytes());
        let spki = run(&["pkey", "-pubin", "-outform", "der"], &pubkey);
        let want = format!("sha256:{}", hex::encode(Sha256::digest(&spki)));
        assert_eq!(ca.pin(), want);
        assert_eq!(pin_of_cert_pem(ca.cert_pem()).unwrap(), want);
        assert_eq!(ca.pin().len(), PIN_PREFIX.len() + 64);
    }

    #[test]
    fn a_ca_loaded_from_its_pem_signs_certificates_the_original_verifies() {
        let ca = ClusterCa::create().unwrap();
        let again = ClusterCa::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
        assert_eq!(again.pin(), ca.pin());
        let key = new_key_pair().unwrap();
        let (dns, ips) = names();
        let cert = again.issue(&key, &dns, &ips, DAY).unwrap();
        let d = der(&cert.pem);
        let (_, x) = x509_parser::parse_x509_certificate(&d).unwrap();
        let ca_der = der(ca.cert_pem());
        let (_, cax) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        x.verify_signature(Some(cax.public_key())).unwrap();
        assert_eq!(x.issuer(), cax.subject());
        // Another CA's key with this certificate is refused.
        let other = ClusterCa::create().unwrap();
        assert!(ClusterCa::from_pem(ca.cert_pem(), &other.key_pem()).is_err());
        // Debug never shows the key.
        let shown = format!("{ca:?}");
        assert!(!shown.contains("PRIVATE KEY") && shown.contains(&ca.pin()));
    }

    #[test]
    fn the_join_server_certificate_names_the_join_endpoint_only() {
        let ca = ClusterCa::create().unwrap();
        let (cert, key) = ca.mint_join_server_cert().unwrap();
        let (dns, ips) = names_of_cert_pem(&cert.pem).unwrap();
        assert_eq!(dns, vec![paths::JOIN_SERVER_NAME.to_string()]);
        assert!(ips.is_empty());
        assert!(key.expose().contains("PRIVATE KEY"));
        assert_eq!(format!("{key:?}"), crate::role::REDACTED);
        assert_eq!(
            cert.not_after - cert.not_before,
            JOIN_SERVER_CERT_LIFETIME.as_secs() + BACKDATE.as_secs()
        );
    }
}

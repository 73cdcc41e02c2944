//! TLS for `turns:` and `stuns:` URLs: the handshake a browser would
//! make, and what it says about the server's certificate.
//!
//! The chain is verified as rustls verifies any server's (webpki: the
//! chain up to a trusted root, validity dates, the URL's host among the
//! certificate's names) against the system's roots (what
//! `rustls-native-certs` finds: `SSL_CERT_FILE`, `SSL_CERT_DIR`, else the
//! distribution's bundle) or only the CAs of `--ca FILE`. A certificate
//! that fails is never talked through: the handshake is refused, so no
//! credential is ever sent over a connection a client would not trust,
//! and the report says why.
//!
//! To say *why* and how long a certificate has left, [`Recording`] wraps
//! the verifier: it keeps the leaf certificate and the verifier's error of
//! the last handshake. [`describe`] reads the leaf's subject, issuer and
//! notAfter (x509-parser); a certificate it cannot read is reported as
//! such, never a panic.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Where the trusted roots come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trust {
    /// The system's roots.
    System,
    /// Only the CA certificates (PEM) of this file.
    CaFile(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("no trusted root certificates found on this system (install ca-certificates, or give --ca FILE)")]
    NoSystemRoots,
    #[error("{path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("cannot build a certificate verifier: {0}")]
    Verifier(String),
}

/// The leaf certificate, as far as a report needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateInfo {
    pub subject: String,
    pub issuer: String,
    /// notAfter, in seconds since the Unix epoch.
    pub not_after_unix: i64,
}

impl CertificateInfo {
    /// Whole days from `now_unix` to notAfter (negative once expired).
    pub fn days_left(&self, now_unix: u64) -> i64 {
        let now = i64::try_from(now_unix).unwrap_or(i64::MAX);
        self.not_after_unix.saturating_sub(now).div_euclid(86_400)
    }

    /// notAfter as RFC 3339 (UTC).
    pub fn not_after(&self) -> String {
        let secs = u64::try_from(self.not_after_unix).unwrap_or(0);
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)).to_string()
    }
}

/// Subject, issuer and notAfter of a DER certificate; `None` if it does
/// not parse.
pub fn describe(der: &[u8]) -> Option<CertificateInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(CertificateInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        not_after_unix: cert.validity().not_after.timestamp(),
    })
}

/// A TLS client for the checks: the roots, loaded once.
#[derive(Clone, Debug)]
pub struct TlsClient {
    verifier: Arc<WebPkiServerVerifier>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

/// A finished or refused handshake, and what was seen of the certificate.
pub struct Handshake {
    pub result: Result<TlsStream<TcpStream>, String>,
    /// The leaf the server presented, if it presented one that parses.
    pub leaf: Option<CertificateInfo>,
    /// The TLS version agreed, e.g. "TLSv1.3".
    pub version: Option<String>,
}

impl TlsClient {
    pub fn new(trust: &Trust) -> Result<TlsClient, TrustError> {
        let mut roots = rustls::RootCertStore::empty();
        match trust {
            Trust::System => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(TrustError::NoSystemRoots);
                }
            }
            Trust::CaFile(path) => {
                for cert in read_pem_certificates(path)? {
                    roots.add(cert).map_err(|e| TrustError::CaFile {
                        path: path.clone(),
                        reason: format!("not a usable CA certificate: {e}"),
                    })?;
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| TrustError::Verifier(e.to_string()))?;
        Ok(TlsClient { verifier, provider })
    }

    /// The handshake on `tcp` for `host` (a name or an IP address, as in
    /// the URL). The caller bounds it in time.
    pub async fn handshake(&self, tcp: TcpStream, host: &str) -> Handshake {
        let recording = Arc::new(Recording {
            inner: self.verifier.clone(),
            seen: Mutex::new(Seen::default()),
        });
        let leaf = |recording: &Recording| {
            let seen = recording.seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.leaf.as_deref().and_then(describe)
        };
        let name = match ServerName::try_from(host.to_owned()) {
            Ok(name) => name,
            Err(_) => {
                return Handshake {
                    result: Err(format!("{host:?} is not a name a certificate can be checked against")),
                    leaf: None,
                    version: None,
                }
            }
        };
        let config = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map(|builder| {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(recording.clone())
                    .with_no_client_auth()
            });
        let config = match config {
            Ok(config) => config,
            Err(e) => {
                return Handshake {
                    result: Err(format!("TLS client setup: {e}")),
                    leaf: None,
                    version: None,
                }
            }
        };
        let outcome = TlsConnector::from(Arc::new(config)).connect(name, tcp).await;
        let leaf = leaf(&recording);
        match outcome {
            Ok(stream) => {
                let version = stream.get_ref().1.protocol_version().and_then(|v| v.as_str());
                Handshake {
                    result: Ok(stream),
                    leaf,
                    version: version.map(str::to_owned),
                }
            }
            Err(e) => {
                let refused = recording.seen.lock().unwrap_or_else(|e| e.into_inner()).error.take();
                let reason = match refused {
                    Some(error) => certificate_refusal(&error, leaf.as_ref(), host),
                    None => format!("TLS handshake failed: {e}"),
                };
                Handshake {
                    result: Err(reason),
                    leaf,
                    version: None,
                }
            }
        }
    }
}

/// Every certificate in the PEM file at `path` (at least one).
fn read_pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let bad = |reason: String| TrustError::CaFile {
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(format!("cannot read: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not PEM: {e}")))?;
    match certs.is_empty() {
        true => Err(bad("holds no certificate".to_owned())),
        false => Ok(certs),
    }
}

/// Why a certificate was refused, in the words an operator acts on.
fn certificate_refusal(error: &rustls::Error, leaf: Option<&CertificateInfo>, host: &str) -> String {
    let certificate = match error {
        rustls::Error::InvalidCertificate(certificate) => certificate,
        other => return format!("certificate refused: {other}"),
    };
    match (certificate, leaf) {
        (CertificateError::Expired | CertificateError::ExpiredContext { .. }, Some(leaf)) => {
            // days_left floors: -1 is "less than a day ago".
            let days = (-1 - leaf.days_left(crate::process::clock::unix_secs())).max(0);
            format!("certificate expired on {} ({days} days ago)", leaf.not_after())
        }
        (CertificateError::UnknownIssuer, Some(leaf)) => format!(
            "certificate not trusted: its issuer ({}) is not among the trusted roots",
            leaf.issuer
        ),
        #[allow(deprecated)] // what webpki still returns for a chain that does not verify
        (CertificateError::BadSignature, Some(leaf)) => format!(
            "certificate not trusted: it is not signed by the trusted CA named like its issuer ({})",
            leaf.issuer
        ),
        (CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }, _) => {
            format!("certificate not valid for {host:?}: {certificate}")
        }
        _ => format!("certificate refused: {certificate}"),
    }
}

#[derive(Default)]
struct Seen {
    leaf: Option<Vec<u8>>,
    error: Option<rustls::Error>,
}

/// The webpki verifier, keeping what it was shown and what it said.
#[derive(Debug)]
struct Recording {
    inner: Arc<WebPkiServerVerifier>,
    seen: Mutex<Seen>,
}

impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seen")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.leaf = Some(end_entity.to_vec());
        seen.error = verdict.as_ref().err().cloned();
        verdict
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_left_round_down_and_go_negative_once_expired() {
        let info = CertificateInfo {
            subject: "CN=x".into(),
            issuer: "CN=ca".into(),
            not_after_unix: 1_000_000,
        };
        assert_eq!(info.days_left(1_000_000 - 86_400 * 3 - 1), 3);
        assert_eq!(info.days_left(1_000_000 - 1), 0);
        assert_eq!(info.days_left(1_000_001), -1);
        assert_eq!(info.days_left(1_000_000 + 86_400 * 2 + 1), -3);
        assert_eq!(info.not_after(), "1970-01-12T13:46:40Z");
    }

    #[test]
    fn garbage_is_no_certificate_and_a_missing_ca_file_is_named() {
        assert_eq!(describe(b"not a certificate"), None);
        assert_eq!(describe(&[]), None);
        let missing = PathBuf::from("/nonexistent/ca.pem");
        let error = TlsClient::new(&Trust::CaFile(missing)).unwrap_err().to_string();
        assert!(error.starts_with("/nonexistent/ca.pem: cannot read"), "{error}");
    }
}

//! TLS for `turns:` (RFC 8656 §3.1): rustls with the ring provider, TLS 1.2
//! and 1.3, no client certificates.
//!
//! The certificate comes from one of two sources:
//! * **files** (`tls.cert`, `tls.key`): read at start, which fails with
//!   the file and the reason if they are missing, malformed or do not
//!   match, and again on [`TlsCertificates::reload`] (SIGHUP);
//! * **ACME** (`[tls.acme]`, [`crate::process::acme`]): the cached
//!   certificate if it is still valid for the configured domains, else a
//!   self-signed placeholder until the first one is issued; the ACME
//!   client then calls [`TlsCertificates::install`] with each certificate
//!   it obtains.
//!
//! Either way a new certificate swaps the configuration used for *new*
//! handshakes; established connections and their allocations are
//! untouched, and a load that fails keeps the previous certificate.
//!
//! Two configurations are built from each certificate: the one
//! `listen.tls` and HTTPS serve (no ALPN: a client's offer is ignored, as
//! before), and the one of a TLS port shared with HTTP
//! (`signaling.share_tls_port`), which advertises [`ALPN_OFFERED`] (RFC
//! 7301), so a client that offers ALPN names the service it wants, and
//! rustls refuses one that offers only protocols served by neither
//! (`no_application_protocol`, RFC 7301 §3.2).
//!
//! [`TlsCertificates::accept`] reads the ClientHello before it picks a
//! configuration: with ACME's TLS-ALPN-01 (RFC 8737 §3) a hello that
//! offers `acme-tls/1` is the CA's validation, answered with the challenge
//! certificate of its SNI and closed after the handshake; it never reaches
//! TURN or HTTP, and no other handshake changes.

mod leaf;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::Acceptor;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;

pub use leaf::Leaf;

use crate::process::acme::{Acme, ACME_TLS_ALPN};
use crate::proto::first_bytes::ALPN_OFFERED;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("{path}: no certificate in the file")]
    NoCertificate { path: PathBuf },
    #[error("certificate {cert} and key {key} are not usable together: {source}")]
    Rustls {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("tls.acme: {0}")]
    Acme(String),
}

/// The current TLS configuration, shared by every shard.
pub struct TlsCertificates {
    source: Source,
    current: RwLock<Configs>,
}

/// Where the certificate comes from.
enum Source {
    Files { cert: PathBuf, key: PathBuf },
    Acme(Arc<Acme>),
}

/// What one certificate gives: both configurations share it and are
/// swapped together.
struct Configs {
    plain: Arc<rustls::ServerConfig>,
    /// With ALPN, for a TLS port shared with HTTP.
    shared: Arc<rustls::ServerConfig>,
    /// Its leaf; `None` for ACME's self-signed placeholder (or a file
    /// certificate x509-parser cannot read).
    leaf: Option<Leaf>,
}

impl Configs {
    fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        leaf: Option<Leaf>,
    ) -> Result<Configs, rustls::Error> {
        let plain = server_config(chain, key)?;
        let mut shared = plain.clone();
        shared.alpn_protocols = ALPN_OFFERED.iter().map(|p| p.to_vec()).collect();
        Ok(Configs {
            plain: Arc::new(plain),
            shared: Arc::new(shared),
            leaf,
        })
    }

    fn load(cert: &Path, key: &Path) -> Result<Configs, TlsError> {
        let pem_error = |path: &Path| {
            let path = path.to_owned();
            move |e: rustls::pki_types::pem::Error| TlsError::Pem {
                path,
                reason: e.to_string(),
            }
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(pem_error(cert))?
            .collect::<Result<_, _>>()
            .map_err(pem_error(cert))?;
        let first = chain
            .first()
            .ok_or_else(|| TlsError::NoCertificate { path: cert.to_owned() })?;
        // Only for the expiry metric: rustls judges the certificate.
        let leaf = Leaf::parse(first).ok();
        let private_key = PrivateKeyDer::from_pem_file(key).map_err(pem_error(key))?;
        Configs::new(chain, private_key, leaf).map_err(|source| TlsError::Rustls {
            cert: cert.to_owned(),
            key: key.to_owned(),
            source,
        })
    }
}

/// A certificate chain and its key, in PEM, that ACME issued (or the cache
/// kept).
pub struct PemPair<'a> {
    pub chain: &'a str,
    pub key: &'a str,
}

impl PemPair<'_> {
    /// The chain, its key and its leaf; the error says what is wrong.
    fn parse(&self) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, Leaf), String> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(self.chain.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("certificate chain: {e}"))?;
        let leaf = Leaf::parse(chain.first().ok_or("no certificate in the chain")?)?;
        let key = PrivateKeyDer::from_pem_slice(self.key.as_bytes()).map_err(|e| format!("private key: {e}"))?;
        Ok((chain, key, leaf))
    }
}

impl TlsCertificates {
    /// The certificates `config` asks for: loaded if it has TLS listeners
    /// or serves HTTPS (validation guarantees `tls.cert` and `tls.key`,
    /// or `[tls.acme]`, then), else `None`.
    pub fn from_config(config: &crate::config::Config) -> Result<Option<TlsCertificates>, TlsError> {
        let wanted = !config.listen.tls.is_empty() || (config.signaling.tls && config.listen.http.is_some());
        if let (Some(acme), true) = (&config.tls.acme, wanted) {
            return Self::from_acme(Arc::new(Acme::new(acme.clone()))).map(Some);
        }
        match (&config.tls.cert, &config.tls.key) {
            (Some(cert), Some(key)) if wanted => Self::load(cert, key).map(Some),
            _ => Ok(None),
        }
    }

    pub fn load(cert: &Path, key: &Path) -> Result<TlsCertificates, TlsError> {
        Ok(TlsCertificates {
            source: Source::Files {
                cert: cert.to_owned(),
                key: key.to_owned(),
            },
            current: RwLock::new(Configs::load(cert, key)?),
        })
    }

    /// Certificates that ACME keeps: the cached one if it is still valid
    /// for the configured domains, else a self-signed placeholder.
    fn from_acme(acme: Arc<Acme>) -> Result<TlsCertificates, TlsError> {
        let cached = acme.cached_certificate();
        let configs = match cached.as_ref().and_then(|(chain, key)| {
            let pair = PemPair { chain, key };
            Self::usable(&acme, &pair)
        }) {
            Some(configs) => configs,
            None => {
                let (chain, key) = acme.placeholder().map_err(TlsError::Acme)?;
                Configs::new(vec![chain], key, None).map_err(|e| TlsError::Acme(e.to_string()))?
            }
        };
        Ok(TlsCertificates {
            source: Source::Acme(acme),
            current: RwLock::new(configs),
        })
    }

    /// The configurations of a cached certificate, if it parses, covers
    /// the domains and has not expired (logged otherwise).
    fn usable(acme: &Acme, pair: &PemPair<'_>) -> Option<Configs> {
        let (chain, key, leaf) = match pair.parse() {
            Ok(parsed) => parsed,
            Err(e) => {
                tracing::warn!("ACME: the cached certificate is not usable ({e}); a new one is requested");
                return None;
            }
        };
        let expired = leaf.not_after <= crate::process::clock::wall();
        if expired || !leaf.covers(&acme.settings.domains) {
            let why = if expired { "has expired" } else { "is for other domains" };
            tracing::info!("ACME: the cached certificate {why}; a new one is requested");
            return None;
        }
        Configs::new(chain, key, Some(leaf)).ok()
    }

    /// Re-reads the files; on error the previous certificate stays. With
    /// ACME there are no files, and nothing changes.
    pub fn reload(&self) -> Result<(), TlsError> {
        let Source::Files { cert, key } = &self.source else {
            return Ok(());
        };
        let fresh = Configs::load(cert, key)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    /// Serves `pair` (a certificate ACME issued) from the next handshake
    /// on; on error the previous certificate stays. Returns its leaf.
    pub fn install(&self, pair: &PemPair<'_>) -> Result<Leaf, TlsError> {
        let (chain, key, leaf) = pair.parse().map_err(TlsError::Acme)?;
        let fresh = Configs::new(chain, key, Some(leaf.clone())).map_err(|e| TlsError::Acme(e.to_string()))?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(leaf)
    }

    /// The leaf served now; `None` while ACME serves its placeholder.
    pub fn leaf(&self) -> Option<Leaf> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).leaf.clone()
    }

    /// The ACME client's state, with `[tls.acme]`.
    pub fn acme(&self) -> Option<&Arc<Acme>> {
        match &self.source {
            Source::Acme(acme) => Some(acme),
            Source::Files { .. } => None,
        }
    }

    /// The configuration of a new handshake (the lock is taken once per
    /// accepted connection, never per packet).
    fn config(&self, shared: bool) -> Arc<rustls::ServerConfig> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        match shared {
            true => current.shared.clone(),
            false => current.plain.clone(),
        }
    }

    /// The TLS handshake of an accepted connection, with the current
    /// certificate; `shared` for a TLS port shared with HTTP, which
    /// advertises [`ALPN_OFFERED`]. `Ok(None)` when it was the CA's
    /// TLS-ALPN-01 validation, answered and closed.
    pub(crate) async fn accept<IO>(&self, stream: IO, shared: bool) -> io::Result<Option<TlsStream<IO>>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let start = LazyConfigAcceptor::new(Acceptor::default(), stream).await?;
        let hello = start.client_hello();
        let validation = hello
            .alpn()
            .is_some_and(|mut offered| offered.any(|p| p == ACME_TLS_ALPN));
        let acme = self.acme().filter(|_| validation);
        let Some(acme) = acme else {
            return start.into_stream(self.config(shared)).await.map(Some);
        };
        let name = hello.server_name().unwrap_or_default().to_ascii_lowercase();
        let config = acme
            .challenges
            .tls_alpn(&name)
            .ok_or_else(|| io::Error::other(format!("acme-tls/1 for {name:?}, for which no challenge is pending")))?;
        let mut stream = start.into_stream(config).await?;
        let _ = stream.shutdown().await;
        tracing::debug!(domain = %name, "ACME: TLS-ALPN-01 validation answered");
        Ok(None)
    }
}

/// A server configuration with the ring provider, the default protocol
/// versions and `chain` with `key`.
fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
}

//! TLS for `turns:` (RFC 8656 §3.1): rustls with the ring provider, TLS 1.2
//! and 1.3, no client certificates.
//!
//! The certificate and key are read from PEM files at start, which fails
//! with the file and the reason if they are missing, malformed or do not
//! match, and again on [`TlsCertificates::reload`] (SIGHUP). A reload
//! swaps the configuration used for *new* handshakes; established
//! connections and their allocations are untouched. A reload that fails
//! keeps the previous certificate.
//!
//! Two configurations are built from each load: the one `listen.tls` and
//! HTTPS serve (no ALPN: a client's offer is ignored, as before), and the
//! one of a TLS port shared with HTTP (`signaling.share_tls_port`), which
//! advertises [`ALPN_OFFERED`] (RFC 7301), so a client that offers ALPN
//! names the service it wants, and rustls refuses one that offers only
//! protocols served by neither (`no_application_protocol`, RFC 7301 §3.2).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

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
}

/// The current TLS configuration, shared by every shard.
pub struct TlsCertificates {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Configs>,
}

/// What one load of the files gives: both configurations share the
/// certificate and are swapped together.
struct Configs {
    plain: Arc<rustls::ServerConfig>,
    /// With ALPN, for a TLS port shared with HTTP.
    shared: Arc<rustls::ServerConfig>,
}

impl Configs {
    fn load(cert: &Path, key: &Path) -> Result<Configs, TlsError> {
        let plain = server_config(cert, key)?;
        let mut shared = (*plain).clone();
        shared.alpn_protocols = ALPN_OFFERED.iter().map(|p| p.to_vec()).collect();
        Ok(Configs {
            plain,
            shared: Arc::new(shared),
        })
    }
}

impl TlsCertificates {
    /// The certificates `config` asks for: loaded if it has TLS listeners
    /// or serves HTTPS (validation guarantees `tls.cert` and `tls.key`
    /// then), else `None`.
    pub fn from_config(config: &crate::config::Config) -> Result<Option<TlsCertificates>, TlsError> {
        let wanted = !config.listen.tls.is_empty() || (config.signaling.tls && config.listen.http.is_some());
        match (&config.tls.cert, &config.tls.key) {
            (Some(cert), Some(key)) if wanted => Self::load(cert, key).map(Some),
            _ => Ok(None),
        }
    }

    pub fn load(cert: &Path, key: &Path) -> Result<TlsCertificates, TlsError> {
        Ok(TlsCertificates {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(Configs::load(cert, key)?),
        })
    }

    /// Re-reads the files; on error the previous certificate stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = Configs::load(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    /// An acceptor with the current certificate (one per connection: the
    /// lock is taken once per accepted connection, never per packet).
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().unwrap_or_else(|e| e.into_inner()).plain.clone())
    }

    /// The same for a TLS port shared with HTTP: it advertises
    /// [`ALPN_OFFERED`].
    pub(crate) fn shared_acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().unwrap_or_else(|e| e.into_inner()).shared.clone())
    }
}

fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
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
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: cert.to_owned() });
    }
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(pem_error(key))?;
    let rustls_error = |source| TlsError::Rustls {
        cert: cert.to_owned(),
        key: key.to_owned(),
        source,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(rustls_error)?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(rustls_error)?;
    Ok(Arc::new(config))
}

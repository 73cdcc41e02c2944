//! A throwaway certificate authority, and TLS client connections that
//! trust only it.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A throwaway certificate authority for a test server's TLS listener.
pub struct TestPki {
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestPki {
    pub fn new() -> TestPki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "turnpike test CA");
        let key = rcgen::KeyPair::generate().expect("CA key");
        TestPki {
            ca: rcgen::CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    /// The CA certificate, for a client's trust store.
    pub fn ca_der(&self) -> rustls::pki_types::CertificateDer<'static> {
        self.ca.der().clone()
    }

    /// The CA certificate as PEM, for a client's `--ca` file.
    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A new leaf for `localhost` and 127.0.0.1 signed by this CA, as
    /// (certificate PEM, key PEM, certificate DER).
    pub fn leaf(&self, common_name: &str) -> (String, String, Vec<u8>) {
        self.leaf_with(common_name, |_| {})
    }

    /// A leaf as [`TestPki::leaf`] that expired on 1 January 2021 (valid
    /// through 2020), as (certificate PEM, key PEM).
    pub fn expired_leaf(&self, common_name: &str) -> (String, String) {
        let (cert, key, _) = self.leaf_with(common_name, |params| {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        });
        (cert, key)
    }

    fn leaf_with(
        &self,
        common_name: &str,
        change: impl FnOnce(&mut rcgen::CertificateParams),
    ) -> (String, String, Vec<u8>) {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("leaf params");
        params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
        change(&mut params);
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.ca).expect("leaf certificate");
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    pub fn write_leaf(&self, common_name: &str, cert_path: &Path, key_path: &Path) {
        let (cert, key, _) = self.leaf(common_name);
        fs::write(cert_path, cert).expect("write cert");
        fs::write(key_path, key).expect("write key");
    }

    /// A client config trusting only this CA, limited to `versions`,
    /// offering the ALPN protocols `alpn` (none if empty).
    pub fn client_config(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
        alpn: &[&[u8]],
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der()).expect("trust the test CA");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// A TLS client connection to `addr` trusting only this CA, limited to
    /// `versions`; blocking, so the stream helpers below work on it.
    pub fn connect(
        &self,
        addr: SocketAddr,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>> {
        self.connect_alpn(addr, versions, &[])
    }

    /// [`TestPki::connect`], offering the ALPN protocols `alpn`.
    pub fn connect_alpn(
        &self,
        addr: SocketAddr,
        versions: &[&'static rustls::SupportedProtocolVersion],
        alpn: &[&[u8]],
    ) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>> {
        tls_connect(self.client_config(versions, alpn), "localhost", addr)
    }
}

/// A TLS 1.3 client config trusting only `root`, as a client of a server
/// whose certificate a public CA (here, an ACME test CA) issued.
pub fn client_config_trusting(root: rustls::pki_types::CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root).expect("trust the root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// A TLS client connection to `addr` for server name `name` with
/// `config`, its handshake done; blocking.
pub fn tls_connect(
    config: Arc<rustls::ClientConfig>,
    name: &str,
    addr: SocketAddr,
) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>> {
    let name = rustls::pki_types::ServerName::try_from(name.to_owned()).map_err(std::io::Error::other)?;
    let conn = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
    let tcp = std::net::TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    // Drive the handshake now so that failures show here.
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

//! The answers to the CA's challenges while an order is pending, and the
//! self-signed certificates ACME needs besides the one it issues.
//!
//! * **TLS-ALPN-01** (RFC 8737 §3): for each domain, a self-signed
//!   certificate whose only subjectAltName is the domain and whose
//!   critical `acmeIdentifier` extension holds the SHA-256 digest of the
//!   key authorization; it is served to a handshake that offers only
//!   `acme-tls/1` with that SNI (`TlsCertificates::accept`), which
//!   negotiates `acme-tls/1`.
//! * **HTTP-01** (RFC 8555 §8.3): for each token, the key authorization,
//!   served as `text/plain`-ish bytes at
//!   `/.well-known/acme-challenge/<token>` on `listen.http`.
//!
//! An answer lives as long as the [`Pending`] guard of the attempt that
//! set it: when the attempt ends, however it ends, they are gone, so no
//! stale answer is ever served.
//!
//! The **placeholder** is what the TLS listeners serve before the first
//! certificate is issued: self-signed for the configured domains, so that
//! a client that does not verify (a load balancer's health check, many
//! TURN clients) still gets through, and one that verifies refuses it as
//! it would refuse no certificate at all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rcgen::{CertificateParams, CustomExtension, DnType, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::{CertifiedKey, SingleCertAndKey};

use super::ACME_TLS_ALPN;

/// The challenge answers of the attempt under way.
#[derive(Default)]
pub struct Challenges {
    /// TLS-ALPN-01: the validation handshake's configuration, by domain
    /// (lowercase).
    tls_alpn: Mutex<HashMap<String, Arc<rustls::ServerConfig>>>,
    /// HTTP-01: the key authorization, by token.
    http: Mutex<HashMap<String, String>>,
}

impl Challenges {
    /// The configuration that answers a TLS-ALPN-01 validation of
    /// `domain`, while one is pending.
    pub fn tls_alpn(&self, domain: &str) -> Option<Arc<rustls::ServerConfig>> {
        self.tls_alpn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(domain)
            .cloned()
    }

    /// The key authorization of HTTP-01 `token`, while it is pending.
    pub fn http(&self, token: &str) -> Option<String> {
        self.http.lock().unwrap_or_else(|e| e.into_inner()).get(token).cloned()
    }
}

/// The answers one attempt set; dropped, it takes them all back.
pub(super) struct Pending<'a> {
    challenges: &'a Challenges,
    domains: Vec<String>,
    tokens: Vec<String>,
}

impl<'a> Pending<'a> {
    pub(super) fn new(challenges: &'a Challenges) -> Pending<'a> {
        Pending {
            challenges,
            domains: Vec::new(),
            tokens: Vec::new(),
        }
    }

    /// Answers TLS-ALPN-01 for `domain` with `digest`, the SHA-256 of its
    /// key authorization.
    pub(super) fn tls_alpn(&mut self, domain: &str, digest: &[u8]) -> Result<(), String> {
        let domain = domain.to_ascii_lowercase();
        let mut params = CertificateParams::new(vec![domain.clone()]).map_err(|e| e.to_string())?;
        params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest)];
        let (chain, key) = self_signed(params)?;
        let config = validation_config(chain, key).map_err(|e| e.to_string())?;
        let mut answers = self.challenges.tls_alpn.lock().unwrap_or_else(|e| e.into_inner());
        answers.insert(domain.clone(), Arc::new(config));
        self.domains.push(domain);
        Ok(())
    }

    /// Answers HTTP-01 `token` with `key_authorization`.
    pub(super) fn http(&mut self, token: &str, key_authorization: &str) {
        let mut answers = self.challenges.http.lock().unwrap_or_else(|e| e.into_inner());
        answers.insert(token.to_owned(), key_authorization.to_owned());
        self.tokens.push(token.to_owned());
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        let mut tls_alpn = self.challenges.tls_alpn.lock().unwrap_or_else(|e| e.into_inner());
        for domain in &self.domains {
            tls_alpn.remove(domain);
        }
        drop(tls_alpn);
        let mut http = self.challenges.http.lock().unwrap_or_else(|e| e.into_inner());
        for token in &self.tokens {
            http.remove(token);
        }
    }
}

/// The configuration of the validation handshake: `chain` with `key`,
/// and `acme-tls/1` the one protocol. rustls checks a certificate given
/// to `with_single_cert` with webpki, which refuses the critical
/// acmeIdentifier extension it does not know; this one is served, never
/// verified here, so it goes in through a resolver of its own.
fn validation_config(
    chain: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let signing = provider.key_provider.load_private_key(key)?;
    let certified = CertifiedKey::new(vec![chain], signing);
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
    Ok(config)
}

/// The self-signed placeholder for `domains`.
pub(super) fn placeholder(domains: &[String]) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), String> {
    let mut params = CertificateParams::new(domains.to_vec()).map_err(|e| e.to_string())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "turnpike placeholder: no ACME certificate yet");
    self_signed(params)
}

fn self_signed(params: CertificateParams) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), String> {
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((cert.der().clone(), key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_live_as_long_as_their_attempt() {
        let challenges = Challenges::default();
        {
            let mut pending = Pending::new(&challenges);
            pending
                .tls_alpn("Turn.Example.org", &[7; 32])
                .expect("challenge certificate");
            pending.http("token-1", "token-1.thumbprint");
            let config = challenges.tls_alpn("turn.example.org").expect("answered");
            assert_eq!(config.alpn_protocols, [b"acme-tls/1".to_vec()]);
            assert_eq!(challenges.http("token-1").as_deref(), Some("token-1.thumbprint"));
            assert!(challenges.http("token-2").is_none());
        }
        assert!(challenges.tls_alpn("turn.example.org").is_none());
        assert!(challenges.http("token-1").is_none());
    }

    #[test]
    fn the_challenge_certificate_carries_the_digest_in_a_critical_acme_identifier() {
        let digest = [0xAB; 32];
        let mut params = CertificateParams::new(vec!["turn.example.org".to_owned()]).expect("params");
        params.custom_extensions = vec![CustomExtension::new_acme_identifier(&digest)];
        let (der, _) = self_signed(params).expect("certificate");
        let (_, cert) = <x509_parser::certificate::X509Certificate as x509_parser::prelude::FromDer<_>>::from_der(&der)
            .expect("parses");
        // id-pe-acmeIdentifier, 1.3.6.1.5.5.7.1.31 (RFC 8737 §6.1).
        let extension = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier");
        assert!(extension.critical);
        // An OCTET STRING of the 32-byte digest.
        let mut expected = vec![0x04, 0x20];
        expected.extend_from_slice(&digest);
        assert_eq!(extension.value, expected.as_slice());
    }
}

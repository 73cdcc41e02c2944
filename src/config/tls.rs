//! `[tls]`: the certificate and key of the TLS listeners and of HTTPS,
//! either read from files (`cert`, `key`) or obtained and renewed from an
//! ACME certificate authority (`[tls.acme]`, RFC 8555).
//!
//! This file holds the section's structs and the doc comment on each field
//! that is the reference for its key, and [`check`]: the rules of
//! `[tls.acme]` on its own (domains that are DNS names, an `https`
//! directory, `mailto:` contacts, a bounded retry interval, and no
//! `cert`/`key` beside it). Its files are read by `process::tls`, which
//! reports a bad PEM file; when a certificate is needed (`listen.tls`,
//! `signaling.tls`) and which listener a challenge needs are rules across
//! sections, in `cross.rs`. The loader resolves relative paths against the
//! config file's directory.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::value::is_valid_host;
use super::ConfigError;

/// `[tls]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSection {
    /// PEM file with the certificate chain, leaf first. Read at start and
    /// again on SIGHUP (a renewed certificate takes effect for new
    /// connections; live ones and their allocations stay). A relative path
    /// is taken from the config file's directory. Required when
    /// `listen.tls` is non-empty, unless `[tls.acme]` is set.
    pub cert: Option<PathBuf>,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1). Same rules
    /// as `cert`.
    pub key: Option<PathBuf>,
    /// `[tls.acme]`: obtain and renew the certificate from an ACME CA
    /// (Let's Encrypt by default) instead of reading `cert` and `key`.
    pub acme: Option<AcmeSection>,
}

/// Let's Encrypt's production directory, the default of `tls.acme.directory`.
pub const LETS_ENCRYPT_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// The ACME challenge the CA validates a domain with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum AcmeChallenge {
    /// `"tls-alpn-01"` (RFC 8737): answered on the TLS port itself, so it
    /// works with nothing but 443 open, the shared port included.
    #[default]
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    /// `"http-01"` (RFC 8555 §8.3): answered on `listen.http`, which the
    /// CA reaches on port 80.
    #[serde(rename = "http-01")]
    Http01,
}

impl AcmeChallenge {
    /// Its name in the config and in ACME.
    pub fn name(self) -> &'static str {
        match self {
            AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
            AcmeChallenge::Http01 => "http-01",
        }
    }
}

/// `[tls.acme]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AcmeSection {
    /// The DNS names the certificate is for (its subject alternative
    /// names), the first being what clients are told to use. Each must
    /// resolve to this server for the CA (no wildcards: neither challenge
    /// can prove one). Required, at least one.
    pub domains: Vec<String>,
    /// Contact URLs given to the CA for the account (expiry and incident
    /// mail), each `mailto:someone@example.org`. Default: none.
    pub contact: Vec<String>,
    /// The CA's ACME directory URL; must be `https://`. Let's Encrypt's
    /// staging directory (`https://acme-staging-v02.api.letsencrypt.org/directory`)
    /// is the one to try a setup with. Default: Let's Encrypt's production
    /// directory.
    pub directory: String,
    /// PEM file with the root certificate to trust for the directory's
    /// own HTTPS, for a private CA (step-ca, Pebble); without it the
    /// system's trust store is used. Default: unset.
    pub directory_ca: Option<PathBuf>,
    /// Where the account key and the certificate with its key are kept
    /// (files 0600, the folder 0700, created if missing), so that a
    /// restart reuses them instead of asking the CA again. A relative path
    /// is taken from the config file's directory. Default:
    /// `/var/lib/turnpike/acme` (the systemd unit's `StateDirectory`).
    pub cache_dir: PathBuf,
    /// How the CA validates the domains: `"tls-alpn-01"` on the TLS port
    /// (`listen.tls`, or HTTPS on `listen.http`), which the CA reaches on
    /// port 443; or `"http-01"` on plain `listen.http`, which it reaches on
    /// port 80. Default: `"tls-alpn-01"`.
    pub challenge: AcmeChallenge,
    /// How long to wait after a failed attempt before the next; each
    /// failure in a row doubles it, up to 1 hour (or this, if longer).
    /// From 1 s to 1 day. Default: `"1m"`.
    #[serde(with = "humantime_serde")]
    pub retry_interval: Duration,
}

impl Default for AcmeSection {
    fn default() -> Self {
        AcmeSection {
            domains: Vec::new(),
            contact: Vec::new(),
            directory: LETS_ENCRYPT_DIRECTORY.to_owned(),
            directory_ca: None,
            cache_dir: PathBuf::from("/var/lib/turnpike/acme"),
            challenge: AcmeChallenge::default(),
            retry_interval: Duration::from_secs(60),
        }
    }
}

/// Bounds of `tls.acme.retry_interval`.
const MIN_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(86_400);

/// The rules of `[tls.acme]` that need no other section.
pub(super) fn check(tls: &TlsSection) -> Result<(), ConfigError> {
    let Some(acme) = &tls.acme else {
        return Ok(());
    };
    if tls.cert.is_some() || tls.key.is_some() {
        return Err(ConfigError::invalid(
            "tls.acme",
            "the certificate comes either from ACME or from files: remove tls.cert and tls.key, or [tls.acme]",
        ));
    }
    if acme.domains.is_empty() {
        return Err(ConfigError::invalid(
            "tls.acme.domains",
            "name at least one DNS name the certificate is for",
        ));
    }
    for (i, domain) in acme.domains.iter().enumerate() {
        if let Err(reason) = check_domain(domain) {
            return Err(ConfigError::invalid(format!("tls.acme.domains[{i}]"), reason));
        }
        let lower = domain.to_ascii_lowercase();
        if acme.domains[..i].iter().any(|d| d.to_ascii_lowercase() == lower) {
            return Err(ConfigError::invalid(
                format!("tls.acme.domains[{i}]"),
                format!("{domain} is listed twice"),
            ));
        }
    }
    for (i, contact) in acme.contact.iter().enumerate() {
        let address = contact.strip_prefix("mailto:").unwrap_or_default();
        let valid = address
            .split_once('@')
            .is_some_and(|(user, host)| !user.is_empty() && is_valid_host(host) && !address.contains(','));
        if !valid {
            return Err(ConfigError::invalid(
                format!("tls.acme.contact[{i}]"),
                format!("{contact:?} is not a mailto: URL with one address (e.g. \"mailto:ops@example.org\")"),
            ));
        }
    }
    check_directory(&acme.directory).map_err(|reason| ConfigError::invalid("tls.acme.directory", reason))?;
    if acme.cache_dir.as_os_str().is_empty() {
        return Err(ConfigError::invalid("tls.acme.cache_dir", "must not be empty"));
    }
    if !(MIN_RETRY..=MAX_RETRY).contains(&acme.retry_interval) {
        return Err(ConfigError::invalid(
            "tls.acme.retry_interval",
            format!(
                "{} is not between 1s and 1day",
                humantime::format_duration(acme.retry_interval)
            ),
        ));
    }
    Ok(())
}

/// A DNS name a CA can validate with TLS-ALPN-01 or HTTP-01: a host name
/// of at least two labels, not an IP address, no wildcard.
fn check_domain(domain: &str) -> Result<(), String> {
    if domain.starts_with("*.") {
        return Err(format!(
            "{domain}: a wildcard needs the DNS-01 challenge, which turnpike does not answer"
        ));
    }
    if domain.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!("{domain}: an IP address, not a DNS name"));
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let numeric_top = labels.last().is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    if !is_valid_host(domain) || labels.len() < 2 || numeric_top {
        return Err(format!(
            "{domain:?} is not a DNS name with a domain (e.g. \"turn.example.org\")"
        ));
    }
    Ok(())
}

/// An `https://` URL with a host.
fn check_directory(directory: &str) -> Result<(), String> {
    let uri: hyper::Uri = directory
        .parse()
        .map_err(|e| format!("{directory:?} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("https") {
        return Err(format!("{directory:?} is not https: (RFC 8555 §6.1 requires HTTPS)"));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{directory:?} has no host"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{invalid_key, parse};

    const ACME: &str = "[listen]\ntls = [\"0.0.0.0:443\"]\n\n[tls.acme]\ndomains = [\"turn.example.org\"]\n";

    #[test]
    fn a_minimal_acme_section_takes_the_defaults() {
        let config = parse(ACME).unwrap_or_else(|e| panic!("{e}"));
        let acme = config.tls.acme.expect("[tls.acme]");
        assert_eq!(acme.domains, ["turn.example.org"]);
        assert_eq!(acme.directory, LETS_ENCRYPT_DIRECTORY);
        assert_eq!(acme.challenge, AcmeChallenge::TlsAlpn01);
        assert_eq!(acme.cache_dir, PathBuf::from("/var/lib/turnpike/acme"));
        assert_eq!(acme.retry_interval, Duration::from_secs(60));
    }

    #[test]
    fn acme_and_certificate_files_are_mutually_exclusive() {
        let text = "[listen]\ntls = [\"0.0.0.0:443\"]\n\n[tls]\ncert = \"c.pem\"\n\n[tls.acme]\ndomains = [\"turn.example.org\"]\n";
        assert_eq!(invalid_key(text), "tls.acme");
    }

    #[test]
    fn domains_must_be_dns_names_a_challenge_can_prove() {
        let with = |domains: &str| format!("[listen]\ntls = [\"0.0.0.0:443\"]\n\n[tls.acme]\ndomains = {domains}\n");
        assert_eq!(invalid_key(&with("[]")), "tls.acme.domains");
        for bad in [
            "*.example.org",
            "192.0.2.1",
            "localhost",
            "bad_name.org",
            "a..b",
            "x.123",
            "",
        ] {
            assert_eq!(
                invalid_key(&with(&format!("[\"{bad}\"]"))),
                "tls.acme.domains[0]",
                "{bad}"
            );
        }
        assert_eq!(
            invalid_key(&with("[\"turn.example.org\", \"TURN.example.org\"]")),
            "tls.acme.domains[1]"
        );
        assert!(parse(&with("[\"turn.example.org\", \"xn--bcher-kva.example\"]")).is_ok());
    }

    #[test]
    fn the_directory_must_be_https_and_contacts_mailto() {
        let with = |key: &str| format!("{ACME}{key}\n");
        assert_eq!(
            invalid_key(&with("directory = \"http://ca.example/dir\"")),
            "tls.acme.directory"
        );
        assert_eq!(invalid_key(&with("directory = \"not a url\"")), "tls.acme.directory");
        assert!(parse(&with("directory = \"https://127.0.0.1:14000/dir\"")).is_ok());
        assert_eq!(
            invalid_key(&with("contact = [\"ops@example.org\"]")),
            "tls.acme.contact[0]"
        );
        assert_eq!(invalid_key(&with("contact = [\"mailto:\"]")), "tls.acme.contact[0]");
        assert!(parse(&with("contact = [\"mailto:ops@example.org\"]")).is_ok());
        assert_eq!(
            invalid_key(&with("retry_interval = \"100ms\"")),
            "tls.acme.retry_interval"
        );
        // An unknown challenge is a parse error that names the known ones.
        let err = parse(&with("challenge = \"dns-01\"")).expect_err("dns-01");
        assert!(err.to_string().contains("tls-alpn-01"), "{err}");
    }
}

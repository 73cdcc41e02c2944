//! What the server needs to know of the certificate it serves: when it is
//! valid (RFC 5280 §4.1.2.5), for the renewal schedule and the expiry
//! metric, and the DNS names it covers (its subjectAltName, RFC 5280
//! §4.2.1.6), so that a cached certificate is reused only for the
//! domains it was issued for. Read with `x509-parser`; nothing here
//! verifies a signature.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The leaf certificate of a chain, as far as the server cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// Its DNS names, lowercase.
    pub names: Vec<String>,
}

impl Leaf {
    /// Reads `der`; the error says what is wrong with it.
    pub fn parse(der: &CertificateDer<'_>) -> Result<Leaf, String> {
        let (_, cert) =
            X509Certificate::from_der(der.as_ref()).map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let validity = cert.validity();
        let names = match cert.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
                    _ => None,
                })
                .collect(),
            Ok(None) => Vec::new(),
            Err(e) => return Err(format!("bad subjectAltName: {e}")),
        };
        Ok(Leaf {
            not_before: unix(validity.not_before.timestamp()),
            not_after: unix(validity.not_after.timestamp()),
            names,
        })
    }

    /// True if it names every one of `domains` (compared without case).
    pub fn covers(&self, domains: &[String]) -> bool {
        domains.iter().all(|d| self.names.contains(&d.to_ascii_lowercase()))
    }

    /// Seconds since the Unix epoch of its end (0 before 1970).
    pub fn expiry_unix_secs(&self) -> u64 {
        self.not_after.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
    }
}

fn unix(secs: i64) -> SystemTime {
    match u64::try_from(secs) {
        Ok(secs) => UNIX_EPOCH + Duration::from_secs(secs),
        Err(_) => UNIX_EPOCH,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_validity_and_the_dns_names() {
        let mut params =
            rcgen::CertificateParams::new(vec!["Turn.Example.org".to_owned(), "192.0.2.1".to_owned()]).expect("params");
        params.not_before = rcgen::date_time_ymd(2030, 1, 2);
        params.not_after = rcgen::date_time_ymd(2030, 4, 2);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("certificate");
        let leaf = Leaf::parse(cert.der()).expect("parses");
        assert_eq!(leaf.names, ["turn.example.org"], "the IP address is no DNS name");
        assert!(leaf.covers(&["TURN.example.org".to_owned()]));
        assert!(!leaf.covers(&["turn.example.org".to_owned(), "other.example.org".to_owned()]));
        // 2030-01-02 and 2030-04-02, 00:00 UTC.
        assert_eq!(leaf.not_before, UNIX_EPOCH + Duration::from_secs(1_893_542_400));
        assert_eq!(leaf.expiry_unix_secs(), 1_901_318_400);
        assert!(Leaf::parse(&CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01])).is_err());
    }
}

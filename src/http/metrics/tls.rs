//! The TLS certificate's families of `/metrics`: its expiry, and with
//! `[tls.acme]` the ACME client's attempts.

use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use super::{by_label, family, one};
use crate::process::acme::status::OUTCOMES as ACME_OUTCOMES;
use crate::process::tls::TlsCertificates;

/// The certificate's families, written only when one is served: its
/// expiry, and with `[tls.acme]` the client's attempts.
pub(super) fn encode_tls(e: &mut DescriptorEncoder, certificates: &TlsCertificates) -> std::fmt::Result {
    use MetricType::{Counter, Gauge};
    let expiry = certificates.leaf().map_or(0, |leaf| leaf.expiry_unix_secs());
    family(
        e,
        "turnpike_tls_certificate_expiry_timestamp_seconds",
        "When the TLS certificate served now expires (Unix time; 0 while ACME serves its self-signed placeholder)",
        None,
        Gauge,
        one(expiry),
    )?;
    let Some(acme) = certificates.acme() else {
        return Ok(());
    };
    family(
        e,
        "turnpike_acme_renewals",
        "Attempts to obtain a certificate from the ACME CA (the first one included), by outcome",
        None,
        Counter,
        by_label("outcome", &ACME_OUTCOMES, acme.status.attempts()),
    )?;
    family(
        e,
        "turnpike_acme_consecutive_failures",
        "Failed ACME attempts since the last success (0: the last attempt succeeded or none failed yet)",
        None,
        Gauge,
        one(u64::from(acme.status.failures_in_a_row())),
    )?;
    let next = acme.status.next_attempt().map_or(0, |at| {
        at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
    });
    family(
        e,
        "turnpike_acme_next_attempt_timestamp_seconds",
        "When the ACME client next asks for a certificate (Unix time): the renewal date, or the retry after a failure",
        None,
        Gauge,
        one(next),
    )
}

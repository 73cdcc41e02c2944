//! Automatic certificates from an ACME CA (RFC 8555), `[tls.acme]`: the
//! certificate of the TLS listeners and of HTTPS is obtained at start,
//! renewed well before it expires, and swapped in without dropping a
//! connection.
//!
//! **Crate.** [`instant_acme`] (by a rustls maintainer) speaks the
//! protocol: accounts, orders, challenges, finalization, with a hyper and
//! rustls client that uses **ring**, the provider the server already uses
//! (its `aws-lc-rs` default is turned off), and rcgen for the CSR. It
//! leaves the loop, the challenge answering, the cache and the schedule
//! to the caller, which is what the server needs: TLS-ALPN-01 answered by
//! the server's own TLS accept (including the TLS port shared with
//! HTTPS), HTTP-01 by its own HTTP endpoint, its own metrics and
//! readiness. `rustls-acme`, the other maintained crate, runs its own
//! state machine with its own certificate resolver and acceptor (which
//! the shared port's accept would have to be bent around), and brings a
//! second HTTP client stack (async-io, futures-rustls). instant-acme 0.8
//! builds with the project's toolchain (rustc 1.95) and pulls in no
//! aws-lc.
//!
//! **Lifecycle.**
//! * At start ([`crate::process::tls::TlsCertificates`]) the cached
//!   certificate is served if it is still valid and covers the configured
//!   domains; otherwise a self-signed placeholder (see `challenges`) until
//!   the first certificate is issued: the TLS listeners must accept from
//!   the start, since TLS-ALPN-01 is answered on them.
//! * [`start`] runs the client on a thread of its own. It asks for a
//!   certificate at once when the placeholder is served, and otherwise
//!   when two thirds of the served one's lifetime have passed (see
//!   `status`). A restart with a cached certificate that is not due
//!   orders nothing.
//! * An issued certificate is written to the cache (`cache`, 0600) and
//!   installed with [`TlsCertificates::install`]: new handshakes get it,
//!   live connections keep theirs.
//! * A failed attempt keeps the certificate that is served, is logged
//!   (warning), counted (`turnpike_acme_renewals_total{outcome="failure"}`,
//!   `/readyz` says `acme: failing`) and retried after
//!   `tls.acme.retry_interval`, doubled with each failure in a row, up
//!   to an hour. Each attempt is bounded by [`ATTEMPT_LIMIT`].
//!
//! Challenges: TLS-ALPN-01 (RFC 8737) or HTTP-01 (RFC 8555 §8.3), as
//! `tls.acme.challenge` says; `challenges` holds the answers while an
//! attempt is under way. Accepting the CA's terms of service is implied
//! by configuring `[tls.acme]`.

pub mod cache;
mod challenges;
mod order;
pub mod status;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tracing::{info, warn};

pub use challenges::Challenges;
pub use status::AcmeStatus;

use crate::config::AcmeSection;
use crate::process::clock;
use crate::process::runtime_thread;
use crate::process::tls::{PemPair, TlsCertificates};
use cache::Cache;

/// The ALPN protocol of TLS-ALPN-01 validation (RFC 8737 §6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The longest one attempt may take, from login to the downloaded chain.
pub const ATTEMPT_LIMIT: Duration = Duration::from_secs(600);

/// The longest the client sleeps before it looks at the clock again
/// (a suspended machine's monotonic clock does not count the suspension).
const LONGEST_SLEEP: Duration = Duration::from_secs(3600);

/// What the TLS accept, the HTTP endpoint and the client share.
pub struct Acme {
    pub settings: AcmeSection,
    pub challenges: Challenges,
    pub status: AcmeStatus,
}

impl Acme {
    pub fn new(settings: AcmeSection) -> Acme {
        Acme {
            settings,
            challenges: Challenges::default(),
            status: AcmeStatus::default(),
        }
    }

    fn cache(&self) -> Cache {
        Cache::new(&self.settings.cache_dir)
    }

    /// The chain and key in the cache, if there are (a cache that cannot
    /// be read is logged and taken as empty).
    pub(crate) fn cached_certificate(&self) -> Option<(String, String)> {
        self.cache().certificate().unwrap_or_else(|e| {
            warn!("ACME: cannot read the cached certificate: {e}");
            None
        })
    }

    /// The self-signed certificate served until the first is issued.
    pub(crate) fn placeholder(&self) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), String> {
        challenges::placeholder(&self.settings.domains)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("tls.acme.cache_dir: {0}")]
    Cache(#[from] cache::CacheError),
    #[error("cannot start the ACME thread: {0}")]
    Thread(std::io::Error),
}

/// The running ACME client.
pub struct AcmeClient {
    stop: tokio::sync::watch::Sender<bool>,
    thread: JoinHandle<()>,
}

impl AcmeClient {
    /// Stops it (an attempt under way is abandoned) and waits for its
    /// thread.
    pub fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.thread.join();
    }
}

/// Starts the client for `certificates` if they come from ACME (`None`
/// otherwise); creates the cache folder first, and fails if it cannot.
pub fn start(certificates: Option<Arc<TlsCertificates>>) -> Result<Option<AcmeClient>, AcmeError> {
    let Some(certificates) = certificates else {
        return Ok(None);
    };
    let Some(acme) = certificates.acme().cloned() else {
        return Ok(None);
    };
    acme.cache().prepare()?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let thread = runtime_thread::spawn("turnpike-acme", "ACME", move |runtime| {
        runtime.block_on(run(acme, certificates, stopped));
    })
    .map_err(AcmeError::Thread)?;
    Ok(Some(AcmeClient { stop, thread }))
}

/// The client's loop: wait until the next attempt is due, try, install or
/// back off; until stopped.
async fn run(acme: Arc<Acme>, certificates: Arc<TlsCertificates>, mut stopped: tokio::sync::watch::Receiver<bool>) {
    let domains = acme.settings.domains.join(", ");
    let mut next = match certificates.leaf() {
        Some(leaf) => {
            let due = status::renew_at(&leaf);
            info!(
                "ACME: serving the cached certificate for {domains}, valid until {}; renewal due at {}",
                humantime::format_rfc3339_seconds(leaf.not_after),
                humantime::format_rfc3339_seconds(due)
            );
            due
        }
        None => {
            warn!("ACME: serving a self-signed placeholder until a certificate for {domains} is issued");
            clock::wall()
        }
    };
    let mut account = None;
    loop {
        acme.status.set_next_attempt(next);
        let wait = next.duration_since(clock::wall()).unwrap_or_default();
        if !wait.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(wait.min(LONGEST_SLEEP)) => {}
                _ = stopped.changed() => return,
            }
            continue;
        }
        let attempt = attempt(&acme, &certificates, &mut account);
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(ATTEMPT_LIMIT, attempt) => outcome,
            _ = stopped.changed() => return,
        };
        let outcome = outcome.unwrap_or_else(|_| Err(format!("no certificate within {ATTEMPT_LIMIT:?}")));
        next = match outcome {
            Ok(due) => {
                acme.status.succeeded();
                // A CA that issues certificates already past two thirds
                // of their lifetime must not make this loop spin.
                due.max(clock::wall() + acme.settings.retry_interval)
            }
            Err(error) => {
                let failures = acme.status.failed(error.clone());
                let delay = status::backoff(acme.settings.retry_interval, failures);
                let keeping = match certificates.leaf() {
                    Some(leaf) => format!(
                        "keeping the certificate valid until {}",
                        humantime::format_rfc3339_seconds(leaf.not_after)
                    ),
                    None => "keeping the self-signed placeholder".to_owned(),
                };
                warn!(
                    "ACME: obtaining a certificate for {domains} failed ({failures} in a row): {error}; {keeping}; \
                     retrying in {}",
                    humantime::format_duration(delay)
                );
                clock::wall() + delay
            }
        };
    }
}

/// One attempt: log in if not yet, order, store, install. Returns when
/// the new certificate is due for renewal.
async fn attempt(
    acme: &Acme,
    certificates: &TlsCertificates,
    account: &mut Option<instant_acme::Account>,
) -> Result<SystemTime, String> {
    let cache = acme.cache();
    let logged_in = match account.take() {
        Some(account) => account,
        None => order::login(acme, &cache).await.map_err(|e| format!("account: {e}"))?,
    };
    let issued = order::obtain(acme, &logged_in).await;
    *account = Some(logged_in);
    let issued = issued.map_err(|e| e.to_string())?;
    let pair = PemPair {
        chain: &issued.chain,
        key: &issued.key,
    };
    // Installed first: a certificate the server cannot serve is not kept.
    let leaf = certificates.install(&pair).map_err(|e| e.to_string())?;
    if let Err(e) = cache.store_certificate(&issued.chain, &issued.key) {
        warn!("ACME: the new certificate is served but not cached (a restart asks for another): {e}");
    }
    let due = status::renew_at(&leaf);
    info!(
        "ACME: certificate for {} issued, valid until {}; renewal due at {}",
        acme.settings.domains.join(", "),
        humantime::format_rfc3339_seconds(leaf.not_after),
        humantime::format_rfc3339_seconds(due)
    );
    Ok(due)
}

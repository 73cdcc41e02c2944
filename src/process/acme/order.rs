//! One attempt to obtain a certificate (RFC 8555 §7.4): log in to the
//! account (registered on first use and cached), order the configured
//! domains, answer each pending authorization's challenge of the
//! configured kind, wait for the order to be ready, finalize it with a
//! CSR for a fresh key (ECDSA P-256, made by instant-acme with rcgen) and
//! download the chain.
//!
//! Every request goes through instant-acme; every wait on the CA is
//! bounded ([`POLL`]), and the whole attempt by the caller's timeout. The
//! challenge answers are taken back when the attempt ends, however it
//! ends ([`Pending`]).

use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, Order, OrderStatus, RetryPolicy,
};

use super::cache::{Cache, CacheError};
use super::challenges::Pending;
use super::Acme;
use crate::config::AcmeChallenge;

/// How long to wait for the CA to validate, and then to issue.
const POLL: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_millis(250))
    .timeout(Duration::from_secs(120));

#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("{0}")]
    Acme(#[from] instant_acme::Error),
    #[error("cache: {0}")]
    Cache(#[from] CacheError),
    #[error("{domain}: the CA offers no {kind} challenge")]
    NoChallenge { domain: String, kind: &'static str },
    #[error("{domain}: authorization is {status:?}")]
    Authorization {
        domain: String,
        status: AuthorizationStatus,
    },
    #[error("{domain}: cannot make the challenge certificate: {reason}")]
    ChallengeCertificate { domain: String, reason: String },
    #[error("the order became invalid: {0}")]
    Invalid(String),
}

/// What the CA issued, in PEM.
pub(super) struct Issued {
    pub chain: String,
    pub key: String,
}

/// The account to order with: the one in the cache, else a new one
/// (stored in the cache). The caller keeps it for the next attempts.
pub(super) async fn login(acme: &Acme, cache: &Cache) -> Result<Account, OrderError> {
    let settings = &acme.settings;
    let builder = || match &settings.directory_ca {
        Some(root) => Account::builder_with_root(root),
        None => Account::builder(),
    };
    if let Some(credentials) = cache.account(&settings.directory)? {
        return Ok(builder()?.from_credentials(credentials).await?);
    }
    let contact: Vec<&str> = settings.contact.iter().map(String::as_str).collect();
    let new_account = NewAccount {
        contact: &contact,
        terms_of_service_agreed: true,
        only_return_existing: false,
    };
    let (account, credentials) = builder()?
        .create(&new_account, settings.directory.clone(), None)
        .await?;
    cache.store_account(&settings.directory, credentials)?;
    tracing::info!(directory = %settings.directory, id = %account.id(), "ACME: account registered");
    Ok(account)
}

/// One order for every configured domain, to the end.
pub(super) async fn obtain(acme: &Acme, account: &Account) -> Result<Issued, OrderError> {
    let identifiers: Vec<Identifier> = acme.settings.domains.iter().cloned().map(Identifier::Dns).collect();
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
    let mut pending = Pending::new(&acme.challenges);
    let (kind, name) = match acme.settings.challenge {
        AcmeChallenge::TlsAlpn01 => (ChallengeType::TlsAlpn01, "tls-alpn-01"),
        AcmeChallenge::Http01 => (ChallengeType::Http01, "http-01"),
    };
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization?;
        let domain = authorization.identifier().to_string();
        match authorization.status {
            AuthorizationStatus::Pending => {}
            // Still valid from an earlier order: nothing to prove.
            AuthorizationStatus::Valid => continue,
            status => return Err(OrderError::Authorization { domain, status }),
        }
        let mut challenge = authorization
            .challenge(kind.clone())
            .ok_or_else(|| OrderError::NoChallenge {
                domain: domain.clone(),
                kind: name,
            })?;
        let key_authorization = challenge.key_authorization();
        match kind {
            ChallengeType::TlsAlpn01 => pending
                .tls_alpn(&domain, key_authorization.digest().as_ref())
                .map_err(|reason| OrderError::ChallengeCertificate { domain, reason })?,
            _ => pending.http(&challenge.token, key_authorization.as_str()),
        }
        challenge.set_ready().await?;
    }
    let status = order.poll_ready(&POLL).await?;
    if status != OrderStatus::Ready {
        return Err(OrderError::Invalid(why_invalid(&mut order).await));
    }
    let key = order.finalize().await?;
    let chain = order.poll_certificate(&POLL).await?;
    drop(pending);
    Ok(Issued { chain, key })
}

/// What the CA said about the challenges of an order that became
/// invalid.
async fn why_invalid(order: &mut Order) -> String {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authorization)) = authorizations.next().await {
        let domain = authorization.identifier().to_string();
        if let Ok(state) = authorization.refresh().await {
            let problems = state.challenges.iter().filter_map(|c| c.error.as_ref());
            reasons.extend(problems.map(|problem| format!("{domain}: {problem}")));
        }
    }
    match reasons.is_empty() {
        true => "no reason given".to_owned(),
        false => reasons.join("; "),
    }
}

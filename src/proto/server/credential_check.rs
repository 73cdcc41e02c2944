//! The long-term credential check (RFC 8489 §9.2.4): which unsigned
//! requests earn a 401 challenge at all ([`Server::challengeable`], so
//! that a spoofed source cannot make the server send 401s towards someone
//! else), and the check of a signed one in the RFC's order
//! ([`Server::authenticate`]), with failures limited per source, per source
//! and username, and per username (`failure_limits`), and the same work
//! for a username that does not exist as for one that does.

use crate::proto::stun::Integrity;
use std::borrow::Cow;

use tracing::debug;

use super::answer::Failure;
use super::{source_key, ErrorCode, RelayBinder, Server, MAX_USERNAME_BYTES};
use crate::proto::addr::{ClientAddr, Transport};
use crate::proto::auth::{decode_algorithm, Features, NonceCheck, PasswordAlgorithm, UserError};
use crate::proto::method::Method;
use crate::proto::stats::AuthFailure;
use crate::proto::stun::Message;
use crate::proto::Now;

/// How a request names its user: USERNAME, or USERHASH (RFC 8489 §14.4).
#[derive(Clone, Copy)]
enum Name<'m> {
    Plain(&'m [u8]),
    Hash(&'m [u8]),
}

/// A request that passed the long-term credential check.
pub(super) struct Authenticated<'m> {
    /// As the request named it, or the configured user its USERHASH names.
    pub(super) username: Cow<'m, str>,
    pub(super) key: Integrity,
}

impl<B: RelayBinder> Server<B> {
    /// Whether a request without MESSAGE-INTEGRITY earns a challenge. Only
    /// one that could succeed once signed does: an Allocate with
    /// REQUESTED-TRANSPORT, a ConnectionBind with CONNECTION-ID on a stream,
    /// and the other TURN requests with their mandatory attributes on a
    /// 5-tuple that has an allocation. Anything else gets the small 400 or
    /// 437 it would get signed, instead of a 401 that a spoofed source
    /// could have sent towards someone else (SECURITY.md, amplification).
    pub(super) fn challengeable(&self, method: Method, client: ClientAddr, msg: &Message<'_>) -> Result<(), Failure> {
        use crate::proto::stun::attr;
        if msg.has_integrity() {
            return Ok(());
        }
        let needs_allocation = !matches!(method, Method::Allocate | Method::ConnectionBind | Method::Binding);
        if needs_allocation && !self.allocations.contains_key(&client) {
            return Err(ErrorCode::AllocationMismatch.into());
        }
        let mandatory: &[u16] = match method {
            Method::Binding | Method::Refresh => &[],
            Method::Allocate => &[attr::REQUESTED_TRANSPORT],
            Method::CreatePermission | Method::Connect => &[attr::XOR_PEER_ADDRESS],
            Method::ChannelBind => &[attr::CHANNEL_NUMBER, attr::XOR_PEER_ADDRESS],
            Method::ConnectionBind => &[attr::CONNECTION_ID],
        };
        let over_udp = method == Method::ConnectionBind && client.transport == Transport::Udp;
        match over_udp || !mandatory.iter().all(|a| msg.has(*a)) {
            true => Err(ErrorCode::BadRequest.into()),
            false => Ok(()),
        }
    }

    /// Long-term credential check in the order of RFC 8489 §9.2.4, with
    /// failures limited per source, per source and username, and per
    /// username (`failure_limits`: a guesser gets 401s without a look at
    /// its guesses once over a limit), and the same work for a username
    /// that does not exist as for one that does.
    ///
    /// Password algorithms (§9.2.1): under a nonce whose cookie announces
    /// them, a request names none (MD5, as RFC 5389 clients do) or echoes
    /// PASSWORD-ALGORITHMS exactly as offered and picks one of them with
    /// PASSWORD-ALGORITHM; anything else is 400, which is what catches a
    /// list tampered with on the way (a bid-down to MD5). An algorithm this
    /// server does not take (MD5 when only SHA-256 is configured) is
    /// refused like a bad credential. MESSAGE-INTEGRITY-SHA256 is checked
    /// when present (MESSAGE-INTEGRITY otherwise), and the answer is signed
    /// in kind.
    pub(super) fn authenticate<'m>(
        &mut self,
        client: ClientAddr,
        msg: &Message<'m>,
        now: Now,
    ) -> Result<Authenticated<'m>, Failure> {
        use crate::proto::stun::attr;
        if !msg.has_integrity() {
            return Err(Failure::Challenge(ErrorCode::Unauthorized));
        }
        let name = msg
            .get(attr::USERNAME)
            .map(Name::Plain)
            .or(msg.get(attr::USERHASH).map(Name::Hash));
        let (Some(name), Some(_realm), Some(nonce)) = (name, msg.get(attr::REALM), msg.get(attr::NONCE)) else {
            return Err(Failure::Code(ErrorCode::BadRequest));
        };
        let malformed = match name {
            Name::Plain(username) => username.len() > MAX_USERNAME_BYTES,
            Name::Hash(hash) => hash.len() != 32,
        };
        if malformed || msg.has_integrity_sha256() && msg.integrity_sha256_len().is_none() {
            return Err(Failure::Code(ErrorCode::BadRequest));
        }
        let algorithm = self.password_algorithm(msg, nonce)?;
        if self.credentials.check_nonce(nonce, client.remote, now.unix_secs) == NonceCheck::Stale
            && !self.nonce_of_control_connection(msg, nonce, now.unix_secs)
        {
            self.count_auth_failure(AuthFailure::StaleNonce);
            return Err(Failure::Challenge(ErrorCode::StaleNonce));
        }
        let username: Cow<'m, str> = match name {
            Name::Plain(bytes) => {
                Cow::Borrowed(std::str::from_utf8(bytes).map_err(|_| Failure::Challenge(ErrorCode::Unauthorized))?)
            }
            Name::Hash(hash) => match self.credentials.username_for_hash(hash) {
                Some(username) => Cow::Owned(username.to_owned()),
                None => {
                    let _ = msg.verify_integrity(&self.unknown_user_key);
                    debug!(%client, "authentication failed: no user with that USERHASH");
                    self.count_auth_failure(AuthFailure::UnknownUser);
                    return Err(Failure::Challenge(ErrorCode::Unauthorized));
                }
            },
        };
        let username_ref: &str = &username;
        let source = source_key(client).octets();
        if !self.failures.allows(&source, username_ref, now.mono) {
            debug!(%client, username = username_ref, "authentication refused: too many failures lately");
            self.count_auth_failure(AuthFailure::RateLimited);
            return Err(Failure::Challenge(ErrorCode::Unauthorized));
        }
        // Refused like a bad credential (401, RFC 8489 §9.2.4), after as
        // much work as a real check, and not counted as a guess.
        if self.revocations.is_revoked(username_ref, now.unix_secs) {
            let _ = msg.verify_integrity(&self.unknown_user_key);
            debug!(%client, username = username_ref, "authentication refused: username revoked");
            self.count_auth_failure(AuthFailure::Revoked);
            return Err(Failure::Challenge(ErrorCode::Unauthorized));
        }
        if !self.credentials.password_algorithms().contains(&algorithm) {
            let _ = msg.verify_integrity(&self.unknown_user_key);
            debug!(%client, username = username_ref, algorithm = algorithm.label(), "authentication refused: password algorithm not taken");
            self.count_auth_failure(AuthFailure::Algorithm);
            return Err(Failure::Challenge(ErrorCode::Unauthorized));
        }
        // An allocation may keep refreshing on the credential that created
        // it after that credential expires; nothing new may be started.
        let own_allocation = self
            .allocations
            .get(&client)
            .is_some_and(|a| *a.username == *username_ref);
        let keys = match self.credentials.keys_for(username_ref, algorithm, now.unix_secs) {
            Err(UserError::Expired) if own_allocation => self.credentials.keys_past_expiry(username_ref, algorithm),
            keys => keys,
        };
        let (failure, reason) = match keys {
            Ok(keys) => {
                for long_term in keys {
                    let key = match msg.integrity_sha256_len() {
                        Some(len) => Integrity::sha256(&long_term, len),
                        None => Integrity::sha1(&long_term),
                    };
                    if msg.verify(&key) {
                        self.failures.record_success(&source, username_ref, now.mono);
                        self.counters.authentications[algorithm as usize] += 1;
                        return Ok(Authenticated { username, key });
                    }
                }
                (AuthFailure::BadIntegrity, "bad message integrity")
            }
            Err(e) => {
                // As much work as a configured user's check, so the time
                // of the answer does not tell which usernames exist.
                let _ = msg.verify_integrity(&self.unknown_user_key);
                let failure = match e {
                    UserError::Unknown => AuthFailure::UnknownUser,
                    UserError::Expired => AuthFailure::ExpiredCredential,
                    UserError::TooLong => AuthFailure::CredentialTooLong,
                };
                (failure, e.reason())
            }
        };
        debug!(%client, username = username_ref, reason, "authentication failed");
        self.count_auth_failure(failure);
        self.failures.record_failure(&source, username_ref, now.mono);
        Err(Failure::Challenge(ErrorCode::Unauthorized))
    }

    /// The password algorithm of a request under `nonce` (RFC 8489
    /// §9.2.4): MD5 unless the nonce's cookie announced password
    /// algorithms and the request chose one as the RFC says; 400 for a
    /// request that did not.
    fn password_algorithm(&self, msg: &Message<'_>, nonce: &[u8]) -> Result<PasswordAlgorithm, Failure> {
        use crate::proto::stun::attr;
        let announced = Features::from_nonce(nonce).is_some_and(|(f, _)| f.contains(Features::PASSWORD_ALGORITHMS));
        if !announced {
            return Ok(PasswordAlgorithm::Md5);
        }
        match (msg.get(attr::PASSWORD_ALGORITHMS), msg.get(attr::PASSWORD_ALGORITHM)) {
            (None, None) => Ok(PasswordAlgorithm::Md5),
            (Some(offered), Some(chosen)) if offered == self.credentials.password_algorithms_value() => {
                match decode_algorithm(chosen) {
                    Some(algorithm) if self.credentials.password_algorithms().contains(&algorithm) => Ok(algorithm),
                    _ => Err(Failure::Code(ErrorCode::BadRequest)),
                }
            }
            _ => Err(Failure::Code(ErrorCode::BadRequest)),
        }
    }

    fn count_auth_failure(&mut self, why: AuthFailure) {
        self.counters.auth_failures[why as usize] += 1;
    }
}

//! The long-term credential check (RFC 8489 §9.2.4): which unsigned
//! requests earn a 401 challenge at all ([`Server::challengeable`], so
//! that a spoofed source cannot make the server send 401s towards someone
//! else), and the check of a signed one in the RFC's order
//! ([`Server::authenticate`]), with failures limited per source, per source
//! and username, and per username (`failure_limits`), and the same work
//! for a username that does not exist as for one that does.

use ring::hmac;
use tracing::debug;

use super::answer::Failure;
use super::{source_key, ErrorCode, RelayBinder, Server, MAX_USERNAME_BYTES};
use crate::proto::addr::{ClientAddr, Transport};
use crate::proto::auth::{NonceCheck, UserError};
use crate::proto::method::Method;
use crate::proto::stats::AuthFailure;
use crate::proto::stun::{self, Message};
use crate::proto::Now;

/// A request that passed the long-term credential check.
pub(super) struct Authenticated<'m> {
    pub(super) username: &'m str,
    pub(super) key: hmac::Key,
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
        let (Some(username), Some(_realm), Some(nonce)) =
            (msg.get(attr::USERNAME), msg.get(attr::REALM), msg.get(attr::NONCE))
        else {
            return Err(Failure::Code(ErrorCode::BadRequest));
        };
        if username.len() > MAX_USERNAME_BYTES {
            return Err(Failure::Code(ErrorCode::BadRequest));
        }
        if self.credentials.check_nonce(nonce, client.remote, now.unix_secs) == NonceCheck::Stale
            && !self.nonce_of_control_connection(msg, nonce, now.unix_secs)
        {
            self.count_auth_failure(AuthFailure::StaleNonce);
            return Err(Failure::Challenge(ErrorCode::StaleNonce));
        }
        let username = std::str::from_utf8(username).map_err(|_| Failure::Challenge(ErrorCode::Unauthorized))?;
        let source = source_key(client).octets();
        if !self.failures.allows(&source, username, now.mono) {
            debug!(%client, username, "authentication refused: too many failures lately");
            self.count_auth_failure(AuthFailure::RateLimited);
            return Err(Failure::Challenge(ErrorCode::Unauthorized));
        }
        // Refused like a bad credential (401, RFC 8489 §9.2.4), after as
        // much work as a real check, and not counted as a guess.
        if self.revocations.is_revoked(username, now.unix_secs) {
            let _ = msg.verify_integrity(&self.unknown_user_key);
            debug!(%client, username, "authentication refused: username revoked");
            self.count_auth_failure(AuthFailure::Revoked);
            return Err(Failure::Challenge(ErrorCode::Unauthorized));
        }
        // An allocation may keep refreshing on the credential that created
        // it after that credential expires; nothing new may be started.
        let own_allocation = self.allocations.get(&client).is_some_and(|a| *a.username == *username);
        let keys = match self.credentials.keys_for(username, now.unix_secs) {
            Err(UserError::Expired) if own_allocation => self.credentials.keys_past_expiry(username),
            keys => keys,
        };
        let (failure, reason) = match keys {
            Ok(keys) => {
                for long_term in keys {
                    let key = stun::integrity_key(&long_term);
                    if msg.verify_integrity(&key) {
                        self.failures.record_success(&source, username, now.mono);
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
        debug!(%client, username, reason, "authentication failed");
        self.count_auth_failure(failure);
        self.failures.record_failure(&source, username, now.mono);
        Err(Failure::Challenge(ErrorCode::Unauthorized))
    }

    fn count_auth_failure(&mut self, why: AuthFailure) {
        self.counters.auth_failures[why as usize] += 1;
    }
}

//! Answers: the error codes this server sends (RFC 8489 §14.8, RFC 8656
//! §19, RFC 6062 §6.3), how an error or success is encoded, and the rule
//! that every answer is counted once, by method and code, where it is
//! encoded.
//!
//! An answer to an unauthenticated request goes to an address nobody has
//! proven to own, so it must not be worth spoofing: it carries no SOFTWARE,
//! no MESSAGE-INTEGRITY, an empty reason phrase (RFC 8489 §14.8 allows any
//! text under 128 characters), and FINGERPRINT only if the request had one.
//! That keeps every such answer within twice the size of its request
//! (SECURITY.md, amplification). Answers to authenticated requests end in
//! SOFTWARE (if configured), MESSAGE-INTEGRITY under the user's key, and
//! FINGERPRINT.

use std::net::SocketAddr;

use tracing::trace;

use crate::proto::auth::Features;
use crate::proto::stun::Integrity;

use super::{RelayBinder, Server};
use crate::proto::addr::ClientAddr;
use crate::proto::method::Method;
use crate::proto::stats::LimitRefusal;
use crate::proto::stun::{attr, Class, Message, MessageWriter};

/// Where a 300 sends the client (`super::try_alternate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Redirect(pub(super) SocketAddr);

/// An error answer, before it is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Failure {
    /// 401 or 438 with REALM and a fresh NONCE (RFC 8489 §9.2.4).
    Challenge(ErrorCode),
    /// 420 with the unknown attribute types.
    UnknownAttributes([u16; 8], usize),
    Code(ErrorCode),
    /// 300 Try Alternate towards a sibling (see `try_alternate`).
    TryAlternate(Redirect),
}

/// STUN/TURN error codes this server sends (RFC 8489 §14.8, RFC 8656 §19).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    TryAlternate,
    BadRequest,
    Unauthorized,
    Forbidden,
    UnknownAttribute,
    AllocationMismatch,
    StaleNonce,
    AddressFamilyNotSupported,
    WrongCredentials,
    UnsupportedTransport,
    PeerAddressFamilyMismatch,
    AllocationQuotaReached,
    ConnectionAlreadyExists,
    ConnectionTimeoutOrFailure,
    InsufficientCapacity,
}

impl ErrorCode {
    pub fn code(self) -> u16 {
        match self {
            ErrorCode::TryAlternate => 300,
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::UnknownAttribute => 420,
            ErrorCode::AllocationMismatch => 437,
            ErrorCode::StaleNonce => 438,
            ErrorCode::AddressFamilyNotSupported => 440,
            ErrorCode::WrongCredentials => 441,
            ErrorCode::UnsupportedTransport => 442,
            ErrorCode::PeerAddressFamilyMismatch => 443,
            ErrorCode::AllocationQuotaReached => 486,
            ErrorCode::ConnectionAlreadyExists => 446,
            ErrorCode::ConnectionTimeoutOrFailure => 447,
            ErrorCode::InsufficientCapacity => 508,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            ErrorCode::TryAlternate => "Try Alternate",
            ErrorCode::BadRequest => "Bad Request",
            ErrorCode::Unauthorized => "Unauthorized",
            ErrorCode::Forbidden => "Forbidden",
            ErrorCode::UnknownAttribute => "Unknown Attribute",
            ErrorCode::AllocationMismatch => "Allocation Mismatch",
            ErrorCode::StaleNonce => "Stale Nonce",
            ErrorCode::AddressFamilyNotSupported => "Address Family not Supported",
            ErrorCode::WrongCredentials => "Wrong Credentials",
            ErrorCode::UnsupportedTransport => "Unsupported Transport Protocol",
            ErrorCode::PeerAddressFamilyMismatch => "Peer Address Family Mismatch",
            ErrorCode::AllocationQuotaReached => "Allocation Quota Reached",
            ErrorCode::ConnectionAlreadyExists => "Connection Already Exists",
            ErrorCode::ConnectionTimeoutOrFailure => "Connection Timeout or Failure",
            ErrorCode::InsufficientCapacity => "Insufficient Capacity",
        }
    }
}

impl From<ErrorCode> for Failure {
    fn from(code: ErrorCode) -> Failure {
        Failure::Code(code)
    }
}

impl<B: RelayBinder> Server<B> {
    /// Counts a successful answer to a request of `method` (errors are
    /// counted where they are sent, in the dispatch).
    pub(super) fn count_success(&mut self, method: Method) {
        self.counters.request(Some(method), 200);
    }

    /// Counts a refusal by a limit and names its code: 486 for the
    /// per-user and per-source quotas, 508 for every other capacity.
    pub(super) fn refuse(&mut self, why: LimitRefusal) -> Failure {
        self.count_refusal(why);
        match why {
            LimitRefusal::AllocationsPerUser | LimitRefusal::AllocationsPerSource => {
                ErrorCode::AllocationQuotaReached.into()
            }
            _ => ErrorCode::InsufficientCapacity.into(),
        }
    }

    /// Counts a refusal by a limit, of a request or of a peer connecting in.
    pub(super) fn count_refusal(&mut self, why: LimitRefusal) {
        self.counters.refusals[why as usize] += 1;
    }

    /// A success answer with no attributes of its own.
    pub(super) fn empty_success(&self, msg: &Message<'_>, key: &Integrity) -> Vec<u8> {
        let mut buf = Vec::with_capacity(64);
        let w = MessageWriter::new(&mut buf, Class::Success, msg.method(), msg.transaction_id());
        self.finish_authenticated(w, key);
        buf
    }

    /// SOFTWARE, MESSAGE-INTEGRITY, FINGERPRINT: the tail of every answer
    /// to an authenticated request.
    pub(super) fn finish_authenticated(&self, mut w: MessageWriter<'_>, key: &Integrity) {
        if let Some(software) = &self.config.software {
            w.bytes(attr::SOFTWARE, software.as_bytes());
        }
        w.finish_signed(key, true);
    }

    /// The error answer to `msg` and its code; signed with `key` when the
    /// request authenticated.
    pub(super) fn encode_failure(
        &mut self,
        client: ClientAddr,
        msg: &Message<'_>,
        failure: Failure,
        key: Option<&Integrity>,
        unix_secs: u64,
    ) -> (Vec<u8>, ErrorCode) {
        let code = match failure {
            Failure::Challenge(code) | Failure::Code(code) => code,
            Failure::UnknownAttributes(..) => ErrorCode::UnknownAttribute,
            Failure::TryAlternate(_) => ErrorCode::TryAlternate,
        };
        let features = self.credentials.features();
        if let (Failure::Challenge(_), false) = (failure, features.is_empty()) {
            // RFC 8489's offer makes a challenge longer (the nonce cookie,
            // PASSWORD-ALGORITHMS): over UDP it is made only while the
            // answer stays within twice the request (SECURITY.md,
            // amplification); streams cannot be spoofed.
            let offer = self.encode_answer(client, msg, failure, code, key, unix_secs, features);
            if client.transport.is_stream() || offer.len() <= 2 * msg.bytes().len() {
                trace!(%client, "challenge offering RFC 8489 password algorithms");
                return (offer, code);
            }
            trace!(%client, request = msg.bytes().len(), "challenge without the RFC 8489 offer: twice the request holds less");
        }
        let answer = self.encode_answer(client, msg, failure, code, key, unix_secs, Features::NONE);
        (answer, code)
    }

    /// An error answer; a challenge's nonce announces `features`, with
    /// PASSWORD-ALGORITHMS when they include password algorithms.
    #[allow(clippy::too_many_arguments)]
    fn encode_answer(
        &mut self,
        client: ClientAddr,
        msg: &Message<'_>,
        failure: Failure,
        code: ErrorCode,
        key: Option<&Integrity>,
        unix_secs: u64,
        features: Features,
    ) -> Vec<u8> {
        let mut buf = Vec::with_capacity(96);
        let mut w = MessageWriter::new(&mut buf, Class::Error, msg.method(), msg.transaction_id());
        let reason = match key {
            Some(_) => code.reason(),
            None => "",
        };
        w.error_code(code.code(), reason);
        match failure {
            Failure::Challenge(_) => {
                w.bytes(attr::REALM, self.credentials.realm().as_bytes()).bytes(
                    attr::NONCE,
                    &self.credentials.make_nonce(client.remote, unix_secs, features),
                );
                if features.contains(Features::PASSWORD_ALGORITHMS) {
                    w.bytes(attr::PASSWORD_ALGORITHMS, self.credentials.password_algorithms_value());
                }
            }
            Failure::UnknownAttributes(types, n) => {
                w.unknown_attributes(&types[..n]);
            }
            Failure::TryAlternate(to) => self.write_redirect(&mut w, client, to, unix_secs),
            Failure::Code(_) => {}
        }
        match key {
            Some(key) => self.finish_authenticated(w, key),
            None => w.finish(None, msg.has_fingerprint()),
        }
        buf
    }
}

impl Failure {
    /// 420 if `msg` has comprehension-required attributes this server does
    /// not know (RFC 8489 §7.3.1), naming up to eight of them.
    pub(super) fn check_unknown(msg: &Message<'_>) -> Result<(), Failure> {
        Failure::check_unknown_beyond(msg, &[])
    }

    /// [`Failure::check_unknown`] for a handler that also understands the
    /// types in `also` (Binding, RFC 5780's attributes where it can honour
    /// them).
    pub(super) fn check_unknown_beyond(msg: &Message<'_>, also: &[u16]) -> Result<(), Failure> {
        let mut unknown = [0u16; 8];
        match msg.unknown_required_beyond(also, &mut unknown) {
            0 => Ok(()),
            n => Err(Failure::UnknownAttributes(unknown, n)),
        }
    }
}

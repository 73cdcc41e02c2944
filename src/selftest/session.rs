//! A TURN client session over one [`Wire`]: requests with their
//! retransmissions and the long-term credential dance, and the data the
//! relay hands back.
//!
//! * A request is answered within the step's timeout or fails with
//!   [`StepError::NoAnswer`]. Over UDP it is sent again after 0.5 s, 1 s,
//!   2 s, … (RFC 8489 §6.2.1's doubling RTO) while time is left; over a
//!   stream once (§6.2.2: the transport is reliable).
//! * The dance (RFC 8489 §9.2): the first request goes unsigned; a 401
//!   carrying REALM and NONCE is answered by signing with the credential
//!   under that realm, and the session then signs every request with it;
//!   a 438 Stale Nonce is retried with the new nonce. A 401 to a signed
//!   request is [`StepError::CredentialRefused`]: the credential is wrong
//!   (or expired, or revoked), which is what an operator needs to read.
//! * A signed success answer must carry a MESSAGE-INTEGRITY that verifies
//!   under the credential (§9.2.5): one that does not is not from a server
//!   that knows the credential.
//! * Anything that is not the awaited answer is sorted: Data indications
//!   become [`Arrival`]s, everything else is dropped; no input makes this
//!   panic or wait beyond the caller's bounds.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::wire::{secs, Wire, WireError};
use super::Credential;
use crate::process::random::random_bytes;
use crate::proto::client::{encode, error_code, send_indication, Challenge, Cred};
use crate::proto::stun::{attr, method, Class, Message, MessageWriter, TransactionId};

/// REQUESTED-TRANSPORT: UDP (RFC 8656 §18.7).
const REQUESTED_UDP: [u8; 4] = [17, 0, 0, 0];
/// First retransmission timeout over UDP (RFC 8489 §6.2.1).
const FIRST_RTO: Duration = Duration::from_millis(500);
/// Data indications kept while a request waits for its answer.
const MAX_ARRIVALS: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("no answer within {}", secs(*.0))]
    NoAnswer(Duration),
    #[error("credential refused ({})", phrase(*.code, .reason))]
    CredentialRefused { code: u16, reason: String },
    #[error("the server asks for a credential ({}) and none was given", phrase(*.code, .reason))]
    NoCredential { code: u16, reason: String },
    #[error("refused ({})", phrase(*.code, .reason))]
    Refused { code: u16, reason: String },
    #[error("answer not understood: {0}")]
    Malformed(&'static str),
    #[error(transparent)]
    Wire(#[from] WireError),
}

impl StepError {
    /// True if the server may still be reachable: it answered, with a
    /// refusal or something odd, so later steps are worth trying.
    pub fn server_answered(&self) -> bool {
        !matches!(self, StepError::NoAnswer(_) | StepError::Wire(_))
    }
}

/// Data relayed to the client: where from and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arrival {
    pub from: SocketAddr,
    pub payload: Vec<u8>,
    pub at: Instant,
}

/// What a successful Allocate gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    pub relayed: SocketAddr,
    pub mapped: Option<SocketAddr>,
    pub lifetime_secs: Option<u32>,
    pub realm: String,
}

pub struct Session {
    wire: Wire,
    credential: Option<Credential>,
    signing: Option<(Cred, Challenge)>,
    arrivals: VecDeque<Arrival>,
    timeout: Duration,
}

impl Session {
    pub fn new(wire: Wire, credential: Option<Credential>, timeout: Duration) -> Session {
        Session {
            wire,
            credential,
            signing: None,
            arrivals: VecDeque::new(),
            timeout,
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.wire.local_addr()
    }

    /// STUN Binding, unsigned: the reflexive address.
    pub async fn binding(&mut self) -> Result<SocketAddr, StepError> {
        let id = transaction_id();
        let answer = self
            .transact(&encode(Class::Request, method::BINDING, id, |_| {}, None), id)
            .await?;
        let msg = Message::parse(&answer).map_err(|_| StepError::Malformed("not STUN"))?;
        if msg.class() == Class::Error {
            return Err(refusal(&msg));
        }
        match msg.xor_address(attr::XOR_MAPPED_ADDRESS) {
            Some(Ok(addr)) => Ok(addr),
            Some(Err(_)) => Err(StepError::Malformed("a bad XOR-MAPPED-ADDRESS")),
            None => msg
                .get(attr::MAPPED_ADDRESS)
                .and_then(|v| crate::proto::stun::decode_address(v).ok())
                .ok_or(StepError::Malformed("no XOR-MAPPED-ADDRESS")),
        }
    }

    /// Allocate a UDP relay.
    pub async fn allocate(&mut self) -> Result<Allocation, StepError> {
        let answer = self
            .request(method::ALLOCATE, |w| {
                w.bytes(attr::REQUESTED_TRANSPORT, &REQUESTED_UDP);
            })
            .await?;
        let msg = Message::parse(&answer).map_err(|_| StepError::Malformed("not STUN"))?;
        let relayed = match msg.xor_address(attr::XOR_RELAYED_ADDRESS) {
            Some(Ok(addr)) => addr,
            _ => return Err(StepError::Malformed("no valid XOR-RELAYED-ADDRESS")),
        };
        Ok(Allocation {
            relayed,
            mapped: msg.xor_address(attr::XOR_MAPPED_ADDRESS).and_then(Result::ok),
            lifetime_secs: msg.u32_attr(attr::LIFETIME).and_then(Result::ok),
            realm: self
                .signing
                .as_ref()
                .map(|(_, c)| c.realm().to_owned())
                .unwrap_or_default(),
        })
    }

    /// CreatePermission for `peer`'s IP.
    pub async fn create_permission(&mut self, peer: SocketAddr) -> Result<(), StepError> {
        self.request(method::CREATE_PERMISSION, |w| {
            w.xor_address(attr::XOR_PEER_ADDRESS, peer);
        })
        .await
        .map(drop)
    }

    /// Refresh with LIFETIME 0: deletes the allocation.
    pub async fn delete_allocation(&mut self) -> Result<(), StepError> {
        self.request(method::REFRESH, |w| {
            w.u32(attr::LIFETIME, 0);
        })
        .await
        .map(drop)
    }

    /// A Send indication of `payload` to `peer` (no answer comes).
    pub async fn send_to(&mut self, peer: SocketAddr, payload: &[u8]) -> Result<(), StepError> {
        self.wire
            .send(&send_indication(transaction_id(), peer, payload))
            .await?;
        Ok(())
    }

    /// The next relayed datagram, unbounded in time (callers bound it).
    /// Cancel-safe.
    pub async fn next_arrival(&mut self) -> Result<Arrival, StepError> {
        loop {
            if let Some(arrival) = self.arrivals.pop_front() {
                return Ok(arrival);
            }
            let frame = self.wire.recv().await?;
            self.sort(frame, None);
        }
    }

    /// A request of `method`, signed once a challenge is known; a 401
    /// starts the dance, a 438 renews the nonce. The success answer.
    async fn request(&mut self, method: u16, build: impl Fn(&mut MessageWriter<'_>)) -> Result<Vec<u8>, StepError> {
        for _ in 0..3 {
            let id = transaction_id();
            let signed = self.signing.as_ref().map(|(cred, challenge)| (cred, challenge));
            let was_signed = signed.is_some();
            let request = encode(Class::Request, method, id, &build, signed);
            let answer = self.transact(&request, id).await?;
            let msg = Message::parse(&answer).map_err(|_| StepError::Malformed("not STUN"))?;
            if msg.class() == Class::Success {
                if let Some((cred, _)) = &self.signing {
                    if was_signed && !msg.verify_integrity(&cred.integrity_key()) {
                        return Err(StepError::Malformed(
                            "the answer's MESSAGE-INTEGRITY does not verify under the credential",
                        ));
                    }
                }
                return Ok(answer);
            }
            let (code, reason) = error_code(&msg).unwrap_or((0, "no ERROR-CODE".to_owned()));
            let challenge = Challenge::of(&answer);
            match (code, challenge) {
                (401, Some(_)) if was_signed => return Err(StepError::CredentialRefused { code, reason }),
                (401 | 438, Some(challenge)) => {
                    let Some(credential) = &self.credential else {
                        return Err(StepError::NoCredential { code, reason });
                    };
                    self.signing = Some((credential.cred(challenge.realm()), challenge));
                }
                _ => return Err(refusal(&msg)),
            }
        }
        Err(StepError::Malformed("challenged three times in a row"))
    }

    /// Sends `request` and waits for the answer to `id`, retransmitting
    /// over UDP, within the session's timeout.
    async fn transact(&mut self, request: &[u8], id: TransactionId) -> Result<Vec<u8>, StepError> {
        let deadline = Instant::now() + self.timeout;
        let mut rto = FIRST_RTO;
        let mut next_send = Instant::now();
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(StepError::NoAnswer(self.timeout));
            }
            if now >= next_send {
                self.wire.send(request).await?;
                next_send = match self.wire.is_datagram() {
                    true => now + rto,
                    false => deadline,
                };
                rto *= 2;
            }
            match tokio::time::timeout_at(next_send.min(deadline), self.wire.recv()).await {
                Ok(frame) => {
                    if let Some(answer) = self.sort(frame?, Some(id)) {
                        return Ok(answer);
                    }
                }
                Err(_elapsed) => continue,
            }
        }
    }

    /// Keeps relayed data; returns `frame` if it answers `id`.
    fn sort(&mut self, frame: Vec<u8>, id: Option<TransactionId>) -> Option<Vec<u8>> {
        let msg = Message::parse(&frame).ok()?;
        match msg.class() {
            Class::Success | Class::Error if Some(msg.transaction_id()) == id => {}
            Class::Indication if msg.method() == method::DATA => {
                if let (Some(Ok(from)), Some(payload)) = (msg.xor_address(attr::XOR_PEER_ADDRESS), msg.get(attr::DATA))
                {
                    if self.arrivals.len() < MAX_ARRIVALS {
                        self.arrivals.push_back(Arrival {
                            from,
                            payload: payload.to_vec(),
                            at: Instant::now(),
                        });
                    }
                }
                return None;
            }
            _ => return None,
        }
        Some(frame)
    }
}

/// `code` and its reason phrase; the registry's name for the code when
/// the server sent none (RFC 8489 §18.4, RFC 8656 §19).
fn phrase(code: u16, reason: &str) -> String {
    let reason = reason.trim();
    if !reason.is_empty() {
        return format!("{code} {reason}");
    }
    let name = match code {
        300 => "Try Alternate",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        420 => "Unknown Attribute",
        437 => "Allocation Mismatch",
        438 => "Stale Nonce",
        440 => "Address Family not Supported",
        441 => "Wrong Credentials",
        442 => "Unsupported Transport Protocol",
        443 => "Peer Address Family Mismatch",
        486 => "Allocation Quota Reached",
        500 => "Server Error",
        508 => "Insufficient Capacity",
        _ => return code.to_string(),
    };
    format!("{code} {name}")
}

/// An error answer as a [`StepError`].
fn refusal(msg: &Message<'_>) -> StepError {
    match error_code(msg) {
        Some((code, reason)) => StepError::Refused { code, reason },
        None => StepError::Malformed("an error answer without ERROR-CODE"),
    }
}

fn transaction_id() -> TransactionId {
    random_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_read_with_their_reason_or_the_registered_name() {
        let refused = |code: u16, reason: &str| StepError::Refused {
            code,
            reason: reason.to_owned(),
        };
        assert_eq!(
            refused(403, "Forbidden by policy").to_string(),
            "refused (403 Forbidden by policy)"
        );
        assert_eq!(refused(403, "").to_string(), "refused (403 Forbidden)");
        assert_eq!(refused(499, " ").to_string(), "refused (499)");
        let wrong = StepError::CredentialRefused {
            code: 401,
            reason: String::new(),
        };
        assert_eq!(wrong.to_string(), "credential refused (401 Unauthorized)");
        assert!(!StepError::NoAnswer(Duration::from_secs(1)).server_answered());
        assert!(refused(403, "").server_answered());
    }
}

//! A TURN client's side of long-term credentials (RFC 8489 §9.2): the key
//! it holds, the challenge a server hands it, requests signed with both,
//! and the dance of an unsigned first try, a 401 (or 438), and a signed
//! retry. Sans-IO: [`authenticated`] takes the transport as a closure, so
//! the same code drives the core in a unit test and a running server over
//! UDP, TCP or TLS.
//!
//! Shipped (not only in the test kit): `turnpike selftest` is a client of
//! any TURN server built on it, and the tests share it through
//! `proto::testkit`. Nothing here trusts an answer: [`Challenge::of`] and
//! [`error_code`] read validated messages and give `None` for anything else.

use std::net::SocketAddr;

use ring::hmac;

use crate::proto::auth::{self, LongTermKey};
use crate::proto::stun::{self, attr, Class, Message, MessageWriter, TransactionId};

/// Long-term credentials as a client holds them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cred {
    pub username: String,
    pub key: LongTermKey,
}

impl Cred {
    /// The key `MD5(username ":" realm ":" password)`.
    pub fn new(username: &str, realm: &str, password: &str) -> Cred {
        Cred::with_key(username, auth::long_term_key(username, realm, password))
    }

    pub fn with_key(username: &str, key: LongTermKey) -> Cred {
        Cred {
            username: username.to_owned(),
            key,
        }
    }

    /// The MESSAGE-INTEGRITY key.
    pub fn integrity_key(&self) -> hmac::Key {
        stun::integrity_key(&self.key)
    }
}

/// What a 401 or 438 answer hands a client: the REALM and NONCE to sign
/// the next request with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub realm: Vec<u8>,
    pub nonce: Vec<u8>,
}

impl Challenge {
    /// The challenge in `answer`, if it is a 401 or 438 error carrying
    /// REALM and NONCE.
    pub fn of(answer: &[u8]) -> Option<Challenge> {
        let msg = Message::parse(answer).ok()?;
        let code = msg.get(attr::ERROR_CODE)?;
        if msg.class() != Class::Error || !matches!(code.get(2..4), Some([4, 1 | 38])) {
            return None;
        }
        Some(Challenge {
            realm: msg.get(attr::REALM)?.to_vec(),
            nonce: msg.get(attr::NONCE)?.to_vec(),
        })
    }

    /// The realm as text (a long-term key is derived from it).
    pub fn realm(&self) -> &str {
        std::str::from_utf8(&self.realm).unwrap_or("")
    }
}

/// The ERROR-CODE of an error answer (RFC 8489 §14.8): the code (class
/// × 100 + number) and its reason phrase; `None` if the attribute is
/// absent or shorter than its fixed part.
pub fn error_code(msg: &Message<'_>) -> Option<(u16, String)> {
    let value = msg.get(attr::ERROR_CODE)?;
    let [_, _, class, number] = *value.first_chunk::<4>()?;
    let code = u16::from(class & 0x7) * 100 + u16::from(number);
    Some((code, String::from_utf8_lossy(&value[4..]).into_owned()))
}

/// Appends USERNAME, REALM and NONCE to `w` and finishes it with
/// MESSAGE-INTEGRITY under `cred`'s key, and FINGERPRINT if asked.
pub fn sign(mut w: MessageWriter<'_>, cred: &Cred, challenge: &Challenge, fingerprint: bool) {
    w.bytes(attr::USERNAME, cred.username.as_bytes())
        .bytes(attr::REALM, &challenge.realm)
        .bytes(attr::NONCE, &challenge.nonce);
    w.finish(Some(&cred.integrity_key()), fingerprint);
}

/// One STUN message whose attributes `build` writes, signed when `signed`
/// names credentials and a challenge, and always ending in FINGERPRINT.
pub fn encode(
    class: Class,
    method: u16,
    id: TransactionId,
    build: impl FnOnce(&mut MessageWriter<'_>),
    signed: Option<(&Cred, &Challenge)>,
) -> Vec<u8> {
    let mut buf = Vec::with_capacity(128);
    let mut w = MessageWriter::new(&mut buf, class, method, id);
    build(&mut w);
    match signed {
        Some((cred, challenge)) => sign(w, cred, challenge, true),
        None => w.finish(None, true),
    }
    buf
}

/// A Send indication (RFC 8656 §11.1) carrying `payload` to `peer`; it
/// needs no signature (indications are not authenticated).
pub fn send_indication(id: TransactionId, peer: SocketAddr, payload: &[u8]) -> Vec<u8> {
    encode(
        Class::Indication,
        stun::method::SEND,
        id,
        |w| {
            w.xor_address(attr::XOR_PEER_ADDRESS, peer).bytes(attr::DATA, payload);
        },
        None,
    )
}

/// The long-term credential dance: sends the request of `method` unsigned;
/// if the answer is a challenge, signs it with that challenge as
/// `cred(realm)` (a client holding a password derives its key from the
/// realm the server names) under a new transaction id, and sends it again.
/// Returns the last answer. `exchange` sends one message and returns the
/// answer to it.
pub fn authenticated<E>(
    method: u16,
    build: impl Fn(&mut MessageWriter<'_>),
    mut id: impl FnMut() -> TransactionId,
    cred: impl FnOnce(&str) -> Cred,
    mut exchange: impl FnMut(&[u8]) -> Result<Vec<u8>, E>,
) -> Result<Vec<u8>, E> {
    let first = exchange(&encode(Class::Request, method, id(), &build, None))?;
    let Some(challenge) = Challenge::of(&first) else {
        return Ok(first);
    };
    let cred = cred(challenge.realm());
    exchange(&encode(Class::Request, method, id(), &build, Some((&cred, &challenge))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::stun::method;

    #[test]
    fn a_signed_request_verifies_under_the_credential_and_a_challenge_is_read_back() {
        let cred = Cred::new("alice", "example.org", "pw");
        let challenge = Challenge {
            realm: b"example.org".to_vec(),
            nonce: b"n0nce".to_vec(),
        };
        let bytes = encode(
            Class::Request,
            method::REFRESH,
            [7; 12],
            |_| {},
            Some((&cred, &challenge)),
        );
        let msg = Message::parse(&bytes).unwrap();
        assert!(msg.verify_integrity(&cred.integrity_key()));
        assert_eq!(msg.get(attr::USERNAME), Some(&b"alice"[..]));
        assert_eq!(Challenge::of(&bytes), None, "a request is no challenge");

        let mut answer = Vec::new();
        let mut w = MessageWriter::new(&mut answer, Class::Error, method::REFRESH, [7; 12]);
        w.error_code(438, "Stale Nonce")
            .bytes(attr::REALM, b"example.org")
            .bytes(attr::NONCE, b"n0nce");
        w.finish(None, true);
        assert_eq!(Challenge::of(&answer), Some(challenge));
        let msg = Message::parse(&answer).unwrap();
        assert_eq!(error_code(&msg), Some((438, "Stale Nonce".to_owned())));
        let request = Message::parse(&bytes).unwrap();
        assert_eq!(error_code(&request), None, "no ERROR-CODE in a request");
    }
}

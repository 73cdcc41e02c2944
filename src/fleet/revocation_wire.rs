//! What instances of a fleet tell each other about revoked usernames
//! through Redis (sans-IO; the channel is `super::revocations`).
//!
//! - The message published on `<prefix>:revocations`:
//!   `{"t":"revoke","user":U,"until":N}`: refuse username `U` until unix
//!   second `N`. JSON, so that an operator can read it with `redis-cli`.
//! - An entry of the sorted set `<prefix>:revoked`: member `U`, score `N`.
//!
//! Everything read from Redis is untrusted input: a message over
//! [`MAX_MESSAGE_BYTES`], not JSON of this shape, or with a username that
//! the admin API would not take (empty or over [`MAX_USERNAME`] bytes) is
//! refused with a [`RevocationWireError`]; the driver counts and drops it.
//! Nothing here panics.

use serde::{Deserialize, Serialize};

/// The longest username STUN carries (RFC 5389 §15.3), as the admin API.
pub const MAX_USERNAME: usize = 513;
/// Longest message accepted: a username of [`MAX_USERNAME`] bytes, every
/// one escaped by JSON as `\u00XX`, and the envelope.
pub const MAX_MESSAGE_BYTES: usize = 6 * MAX_USERNAME + 64;

/// Why a message or entry from Redis was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RevocationWireError {
    #[error("revocation message over its size bound")]
    TooLarge,
    #[error("revocation message is not valid JSON of the known shape")]
    Malformed,
    #[error("revocation has an invalid username or bound")]
    Invalid,
}

/// One username refused until `until_unix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedRevocation {
    pub username: String,
    pub until_unix: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<'a> {
    #[serde(borrow)]
    t: &'a str,
    user: String,
    until: u64,
}

fn is_username(username: &str) -> bool {
    (1..=MAX_USERNAME).contains(&username.len())
}

impl SharedRevocation {
    /// The JSON published for it.
    pub fn encode(&self) -> String {
        let envelope = Envelope {
            t: "revoke",
            user: self.username.clone(),
            until: self.until_unix,
        };
        // A string and a number: serializing cannot fail.
        serde_json::to_string(&envelope).unwrap_or_default()
    }

    /// Parses a published message.
    pub fn parse(bytes: &[u8]) -> Result<SharedRevocation, RevocationWireError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(RevocationWireError::TooLarge);
        }
        let e: Envelope<'_> = serde_json::from_slice(bytes).map_err(|_| RevocationWireError::Malformed)?;
        if e.t != "revoke" {
            return Err(RevocationWireError::Malformed);
        }
        if !is_username(&e.user) {
            return Err(RevocationWireError::Invalid);
        }
        Ok(SharedRevocation {
            username: e.user,
            until_unix: e.until,
        })
    }

    /// Parses one `(member, score)` pair of `<prefix>:revoked`, as
    /// `ZRANGEBYSCORE … WITHSCORES` answers it.
    pub fn parse_entry(member: &[u8], score: &[u8]) -> Result<SharedRevocation, RevocationWireError> {
        if member.len() > MAX_USERNAME {
            return Err(RevocationWireError::TooLarge);
        }
        let username = std::str::from_utf8(member).map_err(|_| RevocationWireError::Invalid)?;
        if !is_username(username) {
            return Err(RevocationWireError::Invalid);
        }
        // Scores are doubles; ours are whole seconds, exact below 2^53.
        let score: f64 = std::str::from_utf8(score)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(RevocationWireError::Malformed)?;
        if !score.is_finite() || score < 0.0 {
            return Err(RevocationWireError::Invalid);
        }
        Ok(SharedRevocation {
            username: username.to_owned(),
            // Saturating: a score beyond u64 is "forever".
            until_unix: score as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_entries_round_trip() {
        let r = SharedRevocation {
            username: "1700000000:ann \"q\"".into(),
            until_unix: 1_700_000_000,
        };
        assert_eq!(SharedRevocation::parse(r.encode().as_bytes()), Ok(r.clone()));
        assert_eq!(
            SharedRevocation::parse_entry(r.username.as_bytes(), b"1700000000"),
            Ok(r)
        );
        let longest = SharedRevocation {
            username: "\u{1}".repeat(MAX_USERNAME),
            until_unix: u64::MAX,
        };
        assert_eq!(SharedRevocation::parse(longest.encode().as_bytes()), Ok(longest));
    }

    #[test]
    fn hostile_messages_and_entries_are_refused_without_panicking() {
        let long = format!(
            r#"{{"t":"revoke","user":"{}","until":1}}"#,
            "u".repeat(MAX_USERNAME + 1)
        );
        let cases: [(&[u8], RevocationWireError); 7] = [
            (b"not json", RevocationWireError::Malformed),
            (br#"{"t":"revoke","user":"a"}"#, RevocationWireError::Malformed),
            (br#"{"t":"grant","user":"a","until":1}"#, RevocationWireError::Malformed),
            (
                br#"{"t":"revoke","user":"a","until":-1}"#,
                RevocationWireError::Malformed,
            ),
            (
                br#"{"t":"revoke","user":"a","until":1,"x":0}"#,
                RevocationWireError::Malformed,
            ),
            (br#"{"t":"revoke","user":"","until":1}"#, RevocationWireError::Invalid),
            (long.as_bytes(), RevocationWireError::Invalid),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                SharedRevocation::parse(bytes),
                Err(want),
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
        assert_eq!(
            SharedRevocation::parse(&vec![b' '; MAX_MESSAGE_BYTES + 1]),
            Err(RevocationWireError::TooLarge)
        );
        for (member, score) in [
            (&b""[..], &b"1"[..]),
            (b"\xff", b"1"),
            (b"a", b"nan"),
            (b"a", b"-5"),
            (b"a", b"inf"),
            (b"a", b"x"),
        ] {
            assert!(
                SharedRevocation::parse_entry(member, score).is_err(),
                "{member:?} {score:?}"
            );
        }
    }

    /// Bounded mutation of a valid message: parsing never panics, and what
    /// is accepted has a valid username and encodes to what parses back.
    #[test]
    fn mutated_messages_never_panic_and_what_is_accepted_is_valid() {
        let seed = br#"{"t":"revoke","user":"1700000000:al\u00e9ce","until":1700000000}"#;
        let mut rng = crate::proto::xorshift::XorShift::new(0x5e7_0c4e);
        let mut accepted = 0;
        for _ in 0..20_000u32 {
            let mut bytes = seed.to_vec();
            rng.mutate(&mut bytes, 3);
            if let Ok(r) = SharedRevocation::parse(&bytes) {
                accepted += 1;
                assert!(is_username(&r.username));
                assert_eq!(SharedRevocation::parse(r.encode().as_bytes()), Ok(r));
            }
        }
        assert!(accepted > 100, "the mutations reach accepted messages ({accepted})");
    }
}

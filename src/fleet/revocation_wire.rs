//! What instances of a fleet tell each other about revoked usernames
//! through Redis (sans-IO; the channel is `super::revocations`).
//!
//! - The message published on `<prefix>:revocations`:
//!   `{"t":"revoke","user":U,"until":N,"src":I,"ts":T,"boot":B,"seq":S}`:
//!   instance `I` refuses username `U` until unix second `N`, stamped
//!   ([`Stamp`]: unix ms, boot, sequence). JSON, so that an operator can
//!   read it with `redis-cli`, sealed for that channel with the fleet's
//!   secret (`signaling::switchboard::fleet_seal`: `v1.<MAC>.<JSON>`).
//! - An entry of `<prefix>:revoked`: member `U`, score `N` in the sorted
//!   set, and the same JSON sealed for `<prefix>:revoked` as the value of
//!   field `U` of the hash `<prefix>:revoked:signed`.
//!
//! Everything read from Redis is untrusted input: a text over
//! [`MAX_MESSAGE_BYTES`], unsigned or signed for another key, channel or
//! fleet, not JSON of this shape, with a username that the admin API would
//! not take (empty or over [`MAX_USERNAME`] bytes), a message stale or
//! replayed, or an entry whose signed username is not its member, is
//! refused with a [`RevocationWireError`]; the driver counts and drops it.
//! What is taken holds at most `auth.max_credential_lifetime` from its
//! signed time ([`HeardRevocation::bound`]), so a copy of an old one made
//! again revokes nothing for longer. Nothing here panics.

use serde::{Deserialize, Serialize};

use crate::config::is_fleet_name;
use crate::signaling::switchboard::fleet_seal::{
    FleetKeys, ReplayGuard, SealError, Stamp, MAX_CLOCK_SKEW_MS, SEAL_OVERHEAD_BYTES,
};

/// The longest username STUN carries (RFC 5389 §15.3), as the admin API.
pub const MAX_USERNAME: usize = 513;
/// Longest message or entry accepted: a username of [`MAX_USERNAME`]
/// bytes, every one escaped by JSON as `\u00XX`, the envelope, the stamp
/// and the seal.
pub const MAX_MESSAGE_BYTES: usize = 6 * MAX_USERNAME + 64 + SEAL_OVERHEAD_BYTES;
/// Longest instance id.
const MAX_INSTANCE_LEN: usize = 64;

/// Why a message or entry from Redis was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RevocationWireError {
    #[error("revocation message over its size bound")]
    TooLarge,
    #[error("revocation message is not valid JSON of the known shape")]
    Malformed,
    #[error("revocation has an invalid username, instance or bound")]
    Invalid,
    #[error("revocation refused: {0}")]
    Seal(#[from] SealError),
}

/// A verified revocation and who made it when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeardRevocation {
    pub revocation: SharedRevocation,
    /// The instance that made it.
    pub src: String,
    pub stamp: Stamp,
}

impl HeardRevocation {
    /// Its bound, at most `max_lifetime_secs` after it was made (unix s).
    pub fn bound(&self, max_lifetime_secs: u64) -> u64 {
        let made = self.stamp.ts / 1000;
        self.revocation.until_unix.min(made.saturating_add(max_lifetime_secs))
    }
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
    src: String,
    ts: u64,
    boot: u64,
    seq: u64,
}

fn is_username(username: &str) -> bool {
    (1..=MAX_USERNAME).contains(&username.len())
}

impl SharedRevocation {
    /// Its JSON as instance `src` makes it with `stamp`, unsigned (the
    /// body of what [`Self::seal`] writes).
    pub fn encode(&self, src: &str, stamp: Stamp) -> String {
        let envelope = Envelope {
            t: "revoke",
            user: self.username.clone(),
            until: self.until_unix,
            src: src.to_owned(),
            ts: stamp.ts,
            boot: stamp.boot,
            seq: stamp.seq,
        };
        // Strings and numbers: serializing cannot fail.
        serde_json::to_string(&envelope).unwrap_or_default()
    }

    /// What instance `src` writes to `place` (the channel, or the set for
    /// its entry) of the fleet of `prefix`: sealed.
    pub fn seal(&self, keys: &FleetKeys, prefix: &str, place: &str, src: &str, stamp: Stamp) -> String {
        keys.seal(prefix, place, &self.encode(src, stamp))
    }

    /// Parses the JSON of a revocation, unsigned (the body of a sealed
    /// one).
    pub fn parse(bytes: &[u8]) -> Result<HeardRevocation, RevocationWireError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(RevocationWireError::TooLarge);
        }
        let e: Envelope<'_> = serde_json::from_slice(bytes).map_err(|_| RevocationWireError::Malformed)?;
        if e.t != "revoke" {
            return Err(RevocationWireError::Malformed);
        }
        if !is_username(&e.user) || !is_fleet_name(&e.src, MAX_INSTANCE_LEN) {
            return Err(RevocationWireError::Invalid);
        }
        Ok(HeardRevocation {
            revocation: SharedRevocation {
                username: e.user,
                until_unix: e.until,
            },
            src: e.src,
            stamp: Stamp {
                ts: e.ts,
                boot: e.boot,
                seq: e.seq,
            },
        })
    }

    /// Opens a message heard on `channel` of the fleet of `prefix`: sealed
    /// with one of `keys`, of this shape, fresh at `now_ms` and not taken
    /// by `guard` before.
    pub fn open_message(
        bytes: &[u8],
        keys: &FleetKeys,
        (prefix, channel): (&str, &str),
        guard: &mut ReplayGuard,
        now_ms: u64,
    ) -> Result<HeardRevocation, RevocationWireError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(RevocationWireError::TooLarge);
        }
        let heard = SharedRevocation::parse(keys.open(prefix, channel, bytes)?)?;
        guard.take(&heard.src, heard.stamp, now_ms)?;
        Ok(heard)
    }

    /// Opens an entry of the set `set` of the fleet of `prefix`: member
    /// `member`, and `sealed` its value in the hash of signed entries,
    /// sealed for `set` with one of `keys`, naming that member, and made
    /// no later than `now_ms` (give or take the clock skew allowed).
    pub fn open_entry(
        member: &[u8],
        sealed: &[u8],
        keys: &FleetKeys,
        (prefix, set): (&str, &str),
        now_ms: u64,
    ) -> Result<HeardRevocation, RevocationWireError> {
        if member.len() > MAX_USERNAME || sealed.len() > MAX_MESSAGE_BYTES {
            return Err(RevocationWireError::TooLarge);
        }
        let heard = SharedRevocation::parse(keys.open(prefix, set, sealed)?)?;
        if heard.revocation.username.as_bytes() != member {
            return Err(RevocationWireError::Invalid);
        }
        if heard.stamp.ts > now_ms.saturating_add(MAX_CLOCK_SKEW_MS) {
            return Err(RevocationWireError::Seal(SealError::Stale));
        }
        Ok(heard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signaling::switchboard::fleet_seal::Stamper;

    const NOW: u64 = 1_700_000_000_000;

    fn keys() -> FleetKeys {
        FleetKeys::new(&["a-fleet-secret-for-the-tests"]).unwrap()
    }

    fn stamp(seq: u64) -> Stamp {
        Stamp { ts: NOW, boot: 9, seq }
    }

    #[test]
    fn messages_and_entries_round_trip_sealed() {
        let keys = keys();
        let r = SharedRevocation {
            username: "1700000000:ann \"q\"".into(),
            until_unix: 1_700_003_600,
        };
        let text = r.seal(&keys, "P", "P:revocations", "one", stamp(1));
        let mut guard = ReplayGuard::default();
        let heard = SharedRevocation::open_message(text.as_bytes(), &keys, ("P", "P:revocations"), &mut guard, NOW);
        assert_eq!(heard.as_ref().map(|h| &h.revocation), Ok(&r));
        assert_eq!(
            heard.map(|h| h.bound(60)),
            Ok(1_700_000_060),
            "held at most the lifetime from when it was made"
        );
        let entry = r.seal(&keys, "P", "P:revoked", "one", stamp(2));
        let opened =
            SharedRevocation::open_entry(r.username.as_bytes(), entry.as_bytes(), &keys, ("P", "P:revoked"), NOW);
        assert_eq!(opened.map(|h| h.revocation), Ok(r));
        let longest = SharedRevocation {
            username: "\u{1}".repeat(MAX_USERNAME),
            until_unix: u64::MAX,
        };
        let text = longest.seal(
            &keys,
            "P",
            "P:revocations",
            &"i".repeat(MAX_INSTANCE_LEN),
            Stamp {
                ts: NOW,
                boot: u64::MAX,
                seq: u64::MAX,
            },
        );
        assert!(text.len() <= MAX_MESSAGE_BYTES, "{}", text.len());
        let heard = SharedRevocation::open_message(text.as_bytes(), &keys, ("P", "P:revocations"), &mut guard, NOW);
        assert_eq!(heard.map(|h| h.revocation), Ok(longest));
    }

    #[test]
    fn unsigned_foreign_replayed_and_misplaced_revocations_are_refused() {
        let keys = keys();
        let r = SharedRevocation {
            username: "mallory".into(),
            until_unix: 1_700_003_600,
        };
        let mut guard = ReplayGuard::default();
        let mut open =
            |bytes: &[u8], place: (&str, &str)| SharedRevocation::open_message(bytes, &keys, place, &mut guard, NOW);
        let refused = |e: SealError| Err(RevocationWireError::Seal(e));
        let text = r.seal(&keys, "P", "P:revocations", "one", stamp(1));
        assert!(open(text.as_bytes(), ("P", "P:revocations")).is_ok());
        assert_eq!(
            open(text.as_bytes(), ("P", "P:revocations")),
            refused(SealError::Replayed)
        );
        assert_eq!(
            open(r.encode("one", stamp(2)).as_bytes(), ("P", "P:revocations")),
            refused(SealError::Unsigned)
        );
        let other = r.seal(&keys, "Q", "Q:revocations", "one", stamp(3));
        assert_eq!(
            open(other.as_bytes(), ("P", "P:revocations")),
            refused(SealError::BadSignature)
        );
        let foreign = FleetKeys::new(&["the-secret-of-another-fleet"]).unwrap();
        let forged = r.seal(&foreign, "P", "P:revocations", "one", stamp(4));
        assert_eq!(
            open(forged.as_bytes(), ("P", "P:revocations")),
            refused(SealError::BadSignature)
        );
        let old = r.seal(
            &keys,
            "P",
            "P:revocations",
            "one",
            Stamp {
                ts: NOW - 60_000,
                ..stamp(5)
            },
        );
        assert_eq!(open(old.as_bytes(), ("P", "P:revocations")), refused(SealError::Stale));
        let entry = r.seal(&keys, "P", "P:revoked", "one", stamp(6));
        let open_entry =
            |member: &[u8], sealed: &[u8]| SharedRevocation::open_entry(member, sealed, &keys, ("P", "P:revoked"), NOW);
        assert_eq!(
            open_entry(b"trent", entry.as_bytes()),
            Err(RevocationWireError::Invalid),
            "another member"
        );
        assert_eq!(
            open_entry(b"mallory", text.as_bytes()),
            refused(SealError::BadSignature),
            "the channel's copy"
        );
        assert_eq!(
            open_entry(&[b'u'; MAX_USERNAME + 1], entry.as_bytes()),
            Err(RevocationWireError::TooLarge)
        );
        assert_eq!(
            open_entry(b"mallory", &vec![b' '; MAX_MESSAGE_BYTES + 1]),
            Err(RevocationWireError::TooLarge)
        );
    }

    #[test]
    fn hostile_bodies_are_refused_without_panicking() {
        let long = format!(
            r#"{{"t":"revoke","user":"{}","until":1,"src":"i","ts":1,"boot":1,"seq":1}}"#,
            "u".repeat(MAX_USERNAME + 1)
        );
        let tail = r#","src":"i","ts":1,"boot":1,"seq":1}"#;
        let cases: Vec<(String, RevocationWireError)> = vec![
            ("not json".into(), RevocationWireError::Malformed),
            (
                r#"{"t":"revoke","user":"a","until":1}"#.into(),
                RevocationWireError::Malformed,
            ),
            (
                format!(r#"{{"t":"grant","user":"a","until":1{tail}"#),
                RevocationWireError::Malformed,
            ),
            (
                format!(r#"{{"t":"revoke","user":"a","until":-1{tail}"#),
                RevocationWireError::Malformed,
            ),
            (
                format!(r#"{{"t":"revoke","user":"a","until":1,"x":0{tail}"#),
                RevocationWireError::Malformed,
            ),
            (
                format!(r#"{{"t":"revoke","user":"","until":1{tail}"#),
                RevocationWireError::Invalid,
            ),
            (
                r#"{"t":"revoke","user":"a","until":1,"src":"a b","ts":1,"boot":1,"seq":1}"#.into(),
                RevocationWireError::Invalid,
            ),
            (long, RevocationWireError::Invalid),
        ];
        for (text, want) in cases {
            assert_eq!(
                SharedRevocation::parse(text.as_bytes()).map(|_| ()),
                Err(want),
                "{text}"
            );
        }
        assert_eq!(
            SharedRevocation::parse(&vec![b' '; MAX_MESSAGE_BYTES + 1]),
            Err(RevocationWireError::TooLarge)
        );
    }

    /// Bounded mutation of a sealed message: opening never panics, and
    /// only the unchanged bytes open.
    #[test]
    fn mutated_sealed_messages_never_panic_and_are_refused() {
        let keys = keys();
        let r = SharedRevocation {
            username: "1700000000:al\u{e9}ce".into(),
            until_unix: 1_700_000_000,
        };
        let mut stamper = Stamper::new(3);
        let mut rng = crate::proto::xorshift::XorShift::new(0x5e7_0c4e);
        for round in 0..5_000u32 {
            let text = r
                .seal(&keys, "P", "P:revocations", "one", stamper.next(NOW))
                .into_bytes();
            let mut bytes = text.clone();
            rng.mutate(&mut bytes, 1 + u64::from(round % 3));
            let mut guard = ReplayGuard::default();
            let heard = SharedRevocation::open_message(&bytes, &keys, ("P", "P:revocations"), &mut guard, NOW);
            assert_eq!(heard.is_ok(), bytes == text, "{}", String::from_utf8_lossy(&bytes));
            if let Ok(body) = SharedRevocation::parse(
                &bytes[crate::signaling::switchboard::fleet_seal::SEAL_HEADER_BYTES.min(bytes.len())..],
            ) {
                assert!(is_username(&body.revocation.username));
            }
        }
    }
}

//! The fleet's signature on what instances write to Redis (`[fleet]
//! secrets`, `docs/fleet.md`, "The fleet's secret"): sans-IO, the time is
//! passed in. Membership records and room messages (`fleet_wire`) and
//! shared revocations (`crate::fleet::revocation_wire`) are sealed here
//! when written and opened here when read; the fleet channels only call it.
//!
//! A sealed text is `v1.<MAC>.<body>`: the MAC is HMAC-SHA256, in
//! unpadded base64url (43 characters), over
//! `"turnpike-fleet-v1" 0 <key_prefix> 0 <place> 0 <body>`, where `place`
//! is the Redis key or channel the text is written to (`P:peer:<id>`,
//! `P:inst:<instance>`, `P:revocations`, `P:revoked`). The body is the
//! JSON of the record or message, which names its instance, room, ids and
//! a timestamp ([`Stamp`]), so every one of them is signed, and a text
//! copied to another key, channel or fleet (another `key_prefix`) does not
//! verify. The first secret signs; every secret verifies (rotation).
//!
//! Replay: a message carries its publisher's `src` and a [`Stamp`]: the
//! unix time in ms, a `boot` id drawn at each start of the publishing
//! channel and a `seq` that grows by one a message. [`ReplayGuard`]
//! refuses one more than [`MAX_CLOCK_SKEW`] away from now, and one whose
//! (`src`, `boot`, `seq`) it has taken already, or that is more than
//! [`REPLAY_WINDOW`] behind the newest of its (`src`, `boot`).
//!
//! Bounds: the guard holds at most [`MAX_PUBLISHERS`] (`src`, `boot`)
//! pairs, and forgets a pair whose newest message is older than
//! [`MAX_CLOCK_SKEW`] (any message of it would be refused as stale); only
//! verified messages reach it, so only holders of the secret fill it.
//! Opening never panics and copies nothing but the MAC input.

use std::collections::HashMap;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;
use serde::{Deserialize, Serialize};

/// What every sealed text starts with.
const VERSION: &[u8] = b"v1.";
/// Characters of the MAC in base64url without padding.
const MAC_CHARS: usize = 43;
/// Bytes before the body: `v1.`, the MAC and a dot.
pub const SEAL_HEADER_BYTES: usize = VERSION.len() + MAC_CHARS + 1;
/// What a seal and a stamp add to a body at most: the header, and
/// `,"src":"<64>","ts":N,"boot":N,"seq":N` with numbers of 20 digits.
pub const SEAL_OVERHEAD_BYTES: usize = 256;
/// Domain of the MAC: nothing else this secret could sign looks alike.
const DOMAIN: &[u8] = b"turnpike-fleet-v1";
/// Largest difference accepted between a message's time and the
/// reader's, and beyond a record's lifetime: instances' clocks must agree
/// within it (NTP does far better).
pub const MAX_CLOCK_SKEW_MS: u64 = 30_000;
/// [`MAX_CLOCK_SKEW_MS`] as a duration, for the docs.
pub const MAX_CLOCK_SKEW: std::time::Duration = std::time::Duration::from_millis(MAX_CLOCK_SKEW_MS);
/// How far behind the newest message of a publisher one may arrive.
pub const REPLAY_WINDOW: u64 = 64;
/// Most publishers (`src`, `boot`) a [`ReplayGuard`] follows at once.
pub const MAX_PUBLISHERS: usize = 1024;

/// Why a sealed text or a stamp was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("not signed (no v1 seal)")]
    Unsigned,
    #[error("its signature does not verify (another secret, key, channel or fleet)")]
    BadSignature,
    #[error("its timestamp is too old or too far ahead")]
    Stale,
    #[error("it was taken already (a replay)")]
    Replayed,
    #[error("too many publishers followed at once")]
    Crowded,
}

/// The fleet's secrets as MAC keys: the first signs, all verify.
pub struct FleetKeys {
    keys: Vec<hmac::Key>,
}

impl fmt::Debug for FleetKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FleetKeys({} keys, redacted)", self.keys.len())
    }
}

impl FleetKeys {
    /// Keys of `secrets`, in order; `None` if there is none.
    pub fn new<S: AsRef<[u8]>>(secrets: &[S]) -> Option<FleetKeys> {
        let keys: Vec<hmac::Key> = secrets
            .iter()
            .map(|s| hmac::Key::new(hmac::HMAC_SHA256, s.as_ref()))
            .collect();
        (!keys.is_empty()).then_some(FleetKeys { keys })
    }

    /// `body`, sealed for `place` of the fleet of `prefix`.
    pub fn seal(&self, prefix: &str, place: &str, body: &str) -> String {
        let input = mac_input(prefix, place, body.as_bytes());
        // `new` keeps at least one key.
        let tag = self.keys.first().map(|key| hmac::sign(key, &input));
        let mac = tag.map(|t| URL_SAFE_NO_PAD.encode(t.as_ref())).unwrap_or_default();
        let mut out = String::with_capacity(SEAL_HEADER_BYTES + body.len());
        out.push_str("v1.");
        out.push_str(&mac);
        out.push('.');
        out.push_str(body);
        out
    }

    /// The body of `text` if it is sealed for `place` of the fleet of
    /// `prefix` with one of the keys.
    pub fn open<'t>(&self, prefix: &str, place: &str, text: &'t [u8]) -> Result<&'t [u8], SealError> {
        let (Some(version), Some(mac), Some(b'.'), Some(body)) = (
            text.get(..VERSION.len()),
            text.get(VERSION.len()..VERSION.len() + MAC_CHARS),
            text.get(SEAL_HEADER_BYTES - 1),
            text.get(SEAL_HEADER_BYTES..),
        ) else {
            return Err(SealError::Unsigned);
        };
        if version != VERSION {
            return Err(SealError::Unsigned);
        }
        let mac = URL_SAFE_NO_PAD.decode(mac).map_err(|_| SealError::Unsigned)?;
        let input = mac_input(prefix, place, body);
        match self.keys.iter().any(|key| hmac::verify(key, &input, &mac).is_ok()) {
            true => Ok(body),
            false => Err(SealError::BadSignature),
        }
    }
}

fn mac_input(prefix: &str, place: &str, body: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(DOMAIN.len() + prefix.len() + place.len() + body.len() + 3);
    for part in [DOMAIN, prefix.as_bytes(), place.as_bytes()] {
        input.extend_from_slice(part);
        input.push(0);
    }
    input.extend_from_slice(body);
    input
}

/// When and in which order a message was published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// Unix time of publication, in ms.
    pub ts: u64,
    /// Drawn at each start of the publishing channel.
    pub boot: u64,
    /// One more than the publisher's previous message.
    pub seq: u64,
}

/// A publisher's side: the next [`Stamp`].
#[derive(Debug)]
pub struct Stamper {
    boot: u64,
    seq: u64,
}

impl Stamper {
    /// A publisher whose start drew `boot`.
    pub fn new(boot: u64) -> Stamper {
        Stamper { boot, seq: 0 }
    }

    /// The stamp of a message published at `now_ms`.
    pub fn next(&mut self, now_ms: u64) -> Stamp {
        self.seq = self.seq.wrapping_add(1);
        Stamp {
            ts: now_ms,
            boot: self.boot,
            seq: self.seq,
        }
    }
}

/// True if `ts_ms` is no further than [`MAX_CLOCK_SKEW_MS`] ahead of
/// `now_ms` and no more than `lifetime_ms` plus it behind: a record
/// refreshed within its lifetime, or a message (`lifetime_ms` 0).
pub fn is_fresh(ts_ms: u64, lifetime_ms: u64, now_ms: u64) -> bool {
    ts_ms <= now_ms.saturating_add(MAX_CLOCK_SKEW_MS)
        && ts_ms.saturating_add(lifetime_ms).saturating_add(MAX_CLOCK_SKEW_MS) >= now_ms
}

/// The newest message of one publisher and which of the
/// [`REPLAY_WINDOW`] before it were taken.
#[derive(Debug)]
struct Seen {
    top: u64,
    /// Bit `d`: message `top - d` was taken.
    taken: u64,
    newest_ts: u64,
}

/// A reader's side: refuses stale and replayed messages (module doc).
#[derive(Debug, Default)]
pub struct ReplayGuard {
    seen: HashMap<(String, u64), Seen>,
}

impl ReplayGuard {
    /// Takes the verified message of `src` stamped `stamp`, read at
    /// `now_ms`, unless it is stale or replayed.
    pub fn take(&mut self, src: &str, stamp: Stamp, now_ms: u64) -> Result<(), SealError> {
        if !is_fresh(stamp.ts, 0, now_ms) {
            return Err(SealError::Stale);
        }
        let key = (src.to_owned(), stamp.boot);
        if !self.seen.contains_key(&key) {
            self.seen
                .retain(|_, s| s.newest_ts.saturating_add(MAX_CLOCK_SKEW_MS) >= now_ms);
            if self.seen.len() >= MAX_PUBLISHERS {
                return Err(SealError::Crowded);
            }
            self.seen.insert(
                key,
                Seen {
                    top: stamp.seq,
                    taken: 1,
                    newest_ts: stamp.ts,
                },
            );
            return Ok(());
        }
        let Some(seen) = self.seen.get_mut(&key) else {
            return Err(SealError::Crowded);
        };
        if stamp.seq > seen.top {
            let shift = stamp.seq - seen.top;
            seen.taken = if shift >= REPLAY_WINDOW { 0 } else { seen.taken << shift };
            seen.taken |= 1;
            seen.top = stamp.seq;
        } else {
            let behind = seen.top - stamp.seq;
            if behind >= REPLAY_WINDOW || seen.taken & (1 << behind) != 0 {
                return Err(SealError::Replayed);
            }
            seen.taken |= 1 << behind;
        }
        seen.newest_ts = seen.newest_ts.max(stamp.ts);
        Ok(())
    }

    /// Publishers followed now.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// True if none is followed.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(secrets: &[&str]) -> FleetKeys {
        FleetKeys::new(secrets).unwrap()
    }

    #[test]
    fn a_sealed_text_opens_only_for_its_place_fleet_and_secrets() {
        let k = keys(&["first-secret-0123456789"]);
        let text = k.seal("P", "P:peer:ab", r#"{"room":"r"}"#);
        assert_eq!(text.len(), SEAL_HEADER_BYTES + 12);
        assert_eq!(k.open("P", "P:peer:ab", text.as_bytes()), Ok(&br#"{"room":"r"}"#[..]));
        assert_eq!(k.open("P", "P:peer:cd", text.as_bytes()), Err(SealError::BadSignature));
        assert_eq!(k.open("Q", "P:peer:ab", text.as_bytes()), Err(SealError::BadSignature));
        let other = keys(&["another-secret-0123456789"]);
        assert_eq!(
            other.open("P", "P:peer:ab", text.as_bytes()),
            Err(SealError::BadSignature)
        );
        // Rotation: a new first key signs, the old still verifies.
        let rotated = keys(&["another-secret-0123456789", "first-secret-0123456789"]);
        assert!(rotated.open("P", "P:peer:ab", text.as_bytes()).is_ok());
        let new = rotated.seal("P", "P:peer:ab", "{}");
        assert_eq!(k.open("P", "P:peer:ab", new.as_bytes()), Err(SealError::BadSignature));
        assert!(other.open("P", "P:peer:ab", new.as_bytes()).is_ok());
        for unsigned in [&b""[..], b"{\"room\":\"r\"}", b"v1.", b"v2.xxx", &text.as_bytes()[..46]] {
            assert_eq!(k.open("P", "P:peer:ab", unsigned), Err(SealError::Unsigned));
        }
        let mut bad_char = text.clone().into_bytes();
        bad_char[5] = b'*';
        assert_eq!(k.open("P", "P:peer:ab", &bad_char), Err(SealError::Unsigned));
    }

    /// Every byte of a sealed text is covered: flipping any one is refused.
    #[test]
    fn every_byte_of_a_sealed_text_matters() {
        let k = keys(&["first-secret-0123456789"]);
        let text = k
            .seal("P", "P:inst:a", r#"{"t":"leave","room":"r","id":"x"}"#)
            .into_bytes();
        for i in 0..text.len() {
            for flip in [1u8, 0x20, 0x80] {
                let mut bytes = text.clone();
                bytes[i] ^= flip;
                assert!(k.open("P", "P:inst:a", &bytes).is_err(), "byte {i} ^ {flip}");
            }
        }
    }

    #[test]
    fn stale_future_and_replayed_messages_are_refused_and_reordering_within_the_window_is_not() {
        let mut guard = ReplayGuard::default();
        let now = 1_700_000_000_000;
        let mut a = Stamper::new(7);
        let first = a.next(now);
        assert_eq!(guard.take("a", first, now), Ok(()));
        assert_eq!(guard.take("a", first, now), Err(SealError::Replayed));
        let (s2, s3) = (a.next(now), a.next(now));
        assert_eq!(guard.take("a", s3, now), Ok(()));
        assert_eq!(guard.take("a", s2, now), Ok(()), "out of order within the window");
        assert_eq!(guard.take("a", s2, now), Err(SealError::Replayed));
        assert_eq!(guard.take("b", first, now), Ok(()), "another publisher");
        let restarted = Stamper::new(8).next(now);
        assert_eq!(guard.take("a", restarted, now), Ok(()), "a new boot starts over");
        for _ in 0..REPLAY_WINDOW {
            a.next(now);
        }
        assert_eq!(guard.take("a", a.next(now), now), Ok(()));
        let old = Stamp { seq: 4, ..first };
        assert_eq!(guard.take("a", old, now), Err(SealError::Replayed), "behind the window");
        let stale = Stamp {
            ts: now - MAX_CLOCK_SKEW_MS - 1,
            seq: 1000,
            ..first
        };
        assert_eq!(guard.take("a", stale, now), Err(SealError::Stale));
        let ahead = Stamp {
            ts: now + MAX_CLOCK_SKEW_MS + 1,
            seq: 1001,
            ..first
        };
        assert_eq!(guard.take("a", ahead, now), Err(SealError::Stale));
        assert!(is_fresh(now - 10_000 - MAX_CLOCK_SKEW_MS, 10_000, now));
        assert!(!is_fresh(now - 10_001 - MAX_CLOCK_SKEW_MS, 10_000, now));
    }

    #[test]
    fn the_guard_follows_at_most_its_bound_and_forgets_the_silent() {
        let mut guard = ReplayGuard::default();
        let now = 1_000_000;
        for boot in 0..MAX_PUBLISHERS as u64 {
            assert_eq!(guard.take("a", Stamper::new(boot).next(now), now), Ok(()));
        }
        let one_more = Stamper::new(u64::MAX).next(now);
        assert_eq!(guard.take("a", one_more, now), Err(SealError::Crowded));
        let later = now + MAX_CLOCK_SKEW_MS + 1;
        assert_eq!(guard.take("a", Stamp { ts: later, ..one_more }, later), Ok(()));
        assert_eq!(guard.len(), 1, "the silent ones are forgotten");
    }
}

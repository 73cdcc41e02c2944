//! What instances of a fleet write to each other through Redis: the
//! messages published to an instance's channel (`<prefix>:inst:<id>`) and
//! the membership record of a peer (the value of `<prefix>:peer:<id>`).
//! JSON, so that an operator can read them with `redis-cli`.
//!
//! | message | meaning |
//! | --- | --- |
//! | `{"t":"join","room":R,"id":P,"name":N?,"inst":I,…}` | peer P of instance I joined R |
//! | `{"t":"leave","room":R,"id":P,…}` | P left R |
//! | `{"t":"signal","room":R,"from":F,"to":P,"data":ANY,…}` | relay `data` to P, verbatim |
//!
//! where `…` is `"src":S,"ts":T,"boot":B,"seq":N`: the publishing
//! instance and its [`Stamp`]. A membership record is
//! `{"room":R,"inst":I,"name":N?,"ttl_ms":L,"size":S,"ts":T}`: the
//! writer's `fleet.membership_ttl` in milliseconds (3 000 to 300 000), its
//! `signaling.room_size` (2 to 64), so that every instance judges the
//! record by its writer's lifetime and holds the room to the smallest
//! size among its members, whatever its own settings say, and when it was
//! written (unix ms). A record is at most [`MAX_RECORD_BYTES`]; the room
//! script does not read longer ones.
//!
//! Both are written sealed (`fleet_seal`: `v1.<MAC>.<JSON>`) for the key
//! or channel they go to, with the fleet's secret, and read with
//! [`Membership::open`] and [`WireMessage::open`]: an unsigned text, one
//! signed for another key, channel or fleet, a record older than its
//! lifetime (plus the clock skew allowed), a stale or replayed message, or
//! a join announcing a peer of an instance other than its publisher is
//! refused. Everything read from Redis is untrusted input: a text longer
//! than its bound, not JSON, or with a room, id, instance or name that a
//! client could not have sent is refused with a [`WireError`] (the driver
//! counts and drops it); nothing here panics.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::fleet_seal::{is_fresh, FleetKeys, ReplayGuard, SealError, Stamp, SEAL_OVERHEAD_BYTES};
use super::fleet_view::MAX_REMOTE_PER_ROOM;
use crate::config::{is_fleet_name, FleetSection};
use crate::signaling::protocol::{is_valid_room, MAX_NAME_LEN};

/// Longest membership record accepted: the longest an instance writes
/// (its seal, a room and an instance of 64 characters, a name of 64
/// characters of four bytes, the lifetime, the size and the time) fits.
pub const MAX_RECORD_BYTES: usize = 512 + SEAL_OVERHEAD_BYTES;
/// Smallest room size a record may carry (as `signaling.room_size`); the
/// largest is [`MAX_REMOTE_PER_ROOM`].
pub const MIN_RECORD_SIZE: usize = 2;

/// Longest instance id (as `fleet.instance_id` allows).
const MAX_INSTANCE_LEN: usize = 64;
/// Longest peer id accepted (ours are 16 hex digits).
const MAX_PEER_ID_LEN: usize = 64;

/// Why a message from Redis was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("fleet message over its size bound")]
    TooLarge,
    #[error("fleet message is not valid JSON of a known shape")]
    Malformed,
    #[error("fleet message has an invalid room, id, instance or name")]
    Invalid,
    #[error("fleet message refused: {0}")]
    Seal(#[from] SealError),
}

/// A verified message and who published it.
#[derive(Debug, Clone, PartialEq)]
pub struct Heard {
    /// The publishing instance.
    pub src: String,
    pub stamp: Stamp,
    pub message: WireMessage,
}

/// A message published to an instance's channel.
#[derive(Debug, Clone)]
pub enum WireMessage {
    Join {
        room: String,
        id: String,
        name: Option<String>,
        instance: String,
    },
    Leave {
        room: String,
        id: String,
    },
    Signal {
        room: String,
        from: String,
        to: String,
        data: Box<RawValue>,
    },
}

/// Equal when they encode alike (`data` is compared as its JSON text).
impl PartialEq for WireMessage {
    fn eq(&self, other: &WireMessage) -> bool {
        self.encode() == other.encode()
    }
}

#[derive(Serialize, Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    t: &'a str,
    room: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    inst: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to: Option<String>,
    /// `Some` for any JSON value, `null` included (a plain `Option`
    /// would read `null` as absent).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    src: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ts: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    boot: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
}

fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

impl WireMessage {
    /// The JSON of this message alone, unsigned (what [`Self::parse`]
    /// reads; compared by `PartialEq`).
    pub fn encode(&self) -> String {
        self.encode_with(None)
    }

    /// What instance `src` publishes on `channel` of the fleet of
    /// `prefix`: the message with `src` and `stamp`, sealed.
    pub fn seal(&self, keys: &FleetKeys, prefix: &str, channel: &str, src: &str, stamp: Stamp) -> String {
        keys.seal(prefix, channel, &self.encode_with(Some((src, stamp))))
    }

    /// Opens what `channel` of the fleet of `prefix` heard: at most
    /// `max` bytes, sealed with one of `keys`, of a known shape, fresh at
    /// `now_ms` and not taken by `guard` before; a join must announce a
    /// peer of its publisher.
    pub fn open(
        bytes: &[u8],
        max: usize,
        keys: &FleetKeys,
        prefix: &str,
        channel: &str,
        guard: &mut ReplayGuard,
        now_ms: u64,
    ) -> Result<Heard, WireError> {
        if bytes.len() > max {
            return Err(WireError::TooLarge);
        }
        let body = keys.open(prefix, channel, bytes)?;
        let (message, src, stamp) = WireMessage::parse_with(body, max)?;
        let (Some(src), Some(stamp)) = (src, stamp) else {
            return Err(WireError::Malformed);
        };
        if !is_fleet_name(&src, MAX_INSTANCE_LEN) {
            return Err(WireError::Invalid);
        }
        if matches!(&message, WireMessage::Join { instance, .. } if *instance != src) {
            return Err(WireError::Invalid);
        }
        guard.take(&src, stamp, now_ms)?;
        Ok(Heard { src, stamp, message })
    }

    fn encode_with(&self, meta: Option<(&str, Stamp)>) -> String {
        let mut envelope = Envelope {
            t: "",
            room: String::new(),
            id: None,
            name: None,
            inst: None,
            from: None,
            to: None,
            data: None,
            src: meta.map(|(src, _)| src.to_owned()),
            ts: meta.map(|(_, s)| s.ts),
            boot: meta.map(|(_, s)| s.boot),
            seq: meta.map(|(_, s)| s.seq),
        };
        match self {
            WireMessage::Join {
                room,
                id,
                name,
                instance,
            } => {
                envelope.t = "join";
                envelope.room.clone_from(room);
                envelope.id = Some(id.clone());
                envelope.name.clone_from(name);
                envelope.inst = Some(instance.clone());
            }
            WireMessage::Leave { room, id } => {
                envelope.t = "leave";
                envelope.room.clone_from(room);
                envelope.id = Some(id.clone());
            }
            WireMessage::Signal { room, from, to, data } => {
                envelope.t = "signal";
                envelope.room.clone_from(room);
                envelope.from = Some(from.clone());
                envelope.to = Some(to.clone());
                envelope.data = Some(data);
            }
        }
        // Strings and raw JSON only: serializing cannot fail.
        serde_json::to_string(&envelope).unwrap_or_default()
    }

    /// Parses the JSON of a message of at most `max` bytes, unsigned (the
    /// body of what [`Self::open`] takes).
    pub fn parse(bytes: &[u8], max: usize) -> Result<WireMessage, WireError> {
        WireMessage::parse_with(bytes, max).map(|(message, _, _)| message)
    }

    /// The message, its `src` and its stamp (if complete).
    fn parse_with(bytes: &[u8], max: usize) -> Result<(WireMessage, Option<String>, Option<Stamp>), WireError> {
        if bytes.len() > max {
            return Err(WireError::TooLarge);
        }
        let e: Envelope<'_> = serde_json::from_slice(bytes).map_err(|_| WireError::Malformed)?;
        let stamp = match (e.ts, e.boot, e.seq) {
            (Some(ts), Some(boot), Some(seq)) => Some(Stamp { ts, boot, seq }),
            _ => None,
        };
        let src = e.src;
        if !is_valid_room(&e.room) {
            return Err(WireError::Invalid);
        }
        let message = match e.t {
            "join" => WireMessage::Join {
                id: peer_id(e.id)?,
                name: display_name(e.name)?,
                instance: instance(e.inst)?,
                room: e.room,
            },
            "leave" => WireMessage::Leave {
                id: peer_id(e.id)?,
                room: e.room,
            },
            "signal" => WireMessage::Signal {
                from: peer_id(e.from)?,
                to: peer_id(e.to)?,
                data: e.data.ok_or(WireError::Malformed)?.to_owned(),
                room: e.room,
            },
            _ => return Err(WireError::Malformed),
        };
        Ok((message, src, stamp))
    }
}

/// The membership record of a peer in Redis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub room: String,
    pub inst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The writer's membership lifetime, in milliseconds (absent in
    /// records of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// The writer's room size (absent in records of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<usize>,
    /// When it was written, unix ms (0 when absent: then never fresh).
    #[serde(default)]
    pub ts: u64,
}

impl Membership {
    /// Its JSON, unsigned.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// What is written at `key` of the fleet of `prefix`: sealed.
    pub fn seal(&self, keys: &FleetKeys, prefix: &str, key: &str) -> String {
        keys.seal(prefix, key, &self.encode())
    }

    /// Opens the record read at `key` of the fleet of `prefix`: at most
    /// `max` bytes, sealed for that key with one of `keys`, checked as
    /// [`Self::parse`] does, and written no longer ago than its lifetime
    /// (`default_ttl_ms` if it carries none) plus the clock skew allowed.
    pub fn open(
        bytes: &[u8],
        max: usize,
        keys: &FleetKeys,
        (prefix, key): (&str, &str),
        default_ttl_ms: u64,
        now_ms: u64,
    ) -> Result<Membership, WireError> {
        if bytes.len() > max {
            return Err(WireError::TooLarge);
        }
        let record = Membership::parse(keys.open(prefix, key, bytes)?, max)?;
        match is_fresh(record.ts, record.ttl_ms.unwrap_or(default_ttl_ms), now_ms) {
            true => Ok(record),
            false => Err(WireError::Seal(SealError::Stale)),
        }
    }

    /// Parses a record of at most `max` bytes, checked as a message is:
    /// a lifetime or a size outside what an instance may be configured
    /// with is invalid.
    pub fn parse(bytes: &[u8], max: usize) -> Result<Membership, WireError> {
        if bytes.len() > max {
            return Err(WireError::TooLarge);
        }
        let m: Membership = serde_json::from_slice(bytes).map_err(|_| WireError::Malformed)?;
        if !is_valid_room(&m.room) || !is_fleet_name(&m.inst, MAX_INSTANCE_LEN) {
            return Err(WireError::Invalid);
        }
        let (min_ttl, max_ttl) = record_ttl_bounds();
        if m.ttl_ms.is_some_and(|t| !(min_ttl..=max_ttl).contains(&t))
            || m.size
                .is_some_and(|s| !(MIN_RECORD_SIZE..=MAX_REMOTE_PER_ROOM).contains(&s))
        {
            return Err(WireError::Invalid);
        }
        let name = display_name(m.name)?;
        Ok(Membership { name, ..m })
    }
}

/// The lifetimes (ms) a record may carry: those `fleet.membership_ttl`
/// allows.
pub fn record_ttl_bounds() -> (u64, u64) {
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    (
        ms(FleetSection::MIN_MEMBERSHIP_TTL),
        ms(FleetSection::MAX_MEMBERSHIP_TTL),
    )
}

/// True for an id a peer of ours could have: 1 to 64 ASCII letters and
/// digits.
pub fn is_peer_id(id: &str) -> bool {
    (1..=MAX_PEER_ID_LEN).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn peer_id(id: Option<String>) -> Result<String, WireError> {
    id.filter(|id| is_peer_id(id)).ok_or(WireError::Invalid)
}

fn instance(inst: Option<String>) -> Result<String, WireError> {
    inst.filter(|i| is_fleet_name(i, MAX_INSTANCE_LEN))
        .ok_or(WireError::Invalid)
}

fn display_name(name: Option<String>) -> Result<Option<String>, WireError> {
    match name {
        Some(n) if n.chars().count() > MAX_NAME_LEN || n.chars().any(char::is_control) => Err(WireError::Invalid),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_with_data_verbatim() {
        let data = RawValue::from_string(r#"{"sdp": "v=0\r\n", "n": [1, 2]}"#.to_owned()).unwrap();
        let messages = [
            WireMessage::Join {
                room: "r".into(),
                id: "ab12".into(),
                name: Some("Ann".into()),
                instance: "i-1".into(),
            },
            WireMessage::Leave {
                room: "r".into(),
                id: "ab12".into(),
            },
            WireMessage::Signal {
                room: "r".into(),
                from: "ab12".into(),
                to: "cd34".into(),
                data,
            },
        ];
        let null = WireMessage::Signal {
            room: "r".into(),
            from: "a".into(),
            to: "b".into(),
            data: RawValue::from_string("null".to_owned()).unwrap(),
        };
        for m in messages.into_iter().chain([null]) {
            let text = m.encode();
            let back = WireMessage::parse(text.as_bytes(), 4096).unwrap();
            assert_eq!(back.encode(), text);
            if let (WireMessage::Signal { data: sent, .. }, WireMessage::Signal { data, .. }) = (&m, &back) {
                assert_eq!(data.get(), sent.get(), "data is kept byte for byte");
            }
        }
    }

    #[test]
    fn hostile_messages_are_refused_without_panicking() {
        let cases: [(&[u8], WireError); 7] = [
            (b"not json", WireError::Malformed),
            (br#"{"t":"join","room":"r","id":"a"}"#, WireError::Invalid),
            (
                br#"{"t":"join","room":"bad room","id":"a","inst":"i"}"#,
                WireError::Invalid,
            ),
            (br#"{"t":"leave","room":"r","id":"a:b"}"#, WireError::Invalid),
            (
                br#"{"t":"signal","room":"r","from":"a","to":"b"}"#,
                WireError::Malformed,
            ),
            (br#"{"t":"shout","room":"r"}"#, WireError::Malformed),
            (&[b'x'; 100], WireError::TooLarge),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                WireMessage::parse(bytes, 99),
                Err(want),
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
        let name = format!(r#"{{"room":"r","inst":"i","name":"{}"}}"#, "n".repeat(65));
        assert_eq!(Membership::parse(name.as_bytes(), 4096), Err(WireError::Invalid));
        let m = Membership {
            room: "r".into(),
            inst: "i".into(),
            name: None,
            ttl_ms: None,
            size: None,
            ts: 0,
        };
        assert_eq!(Membership::parse(m.encode().as_bytes(), 4096), Ok(m.clone()));
        for (field, value) in [
            ("ttl_ms", "2999"),
            ("ttl_ms", "300001"),
            ("ttl_ms", "-1"),
            ("ttl_ms", "1e400"),
            ("ttl_ms", "\"10000\""),
            ("size", "1"),
            ("size", "65"),
            ("size", "2.5"),
        ] {
            let record = format!(r#"{{"room":"r","inst":"i","{field}":{value}}}"#);
            assert!(Membership::parse(record.as_bytes(), 4096).is_err(), "{record}");
        }
        for (ttl, size) in [(3000, 2), (300_000, 64), (10_000, 6)] {
            let full = Membership {
                ttl_ms: Some(ttl),
                size: Some(size),
                ..m.clone()
            };
            assert_eq!(Membership::parse(full.encode().as_bytes(), 4096), Ok(full));
        }
    }

    /// The longest record an instance writes, sealed, fits in
    /// [`MAX_RECORD_BYTES`]: a room and an instance of 64 characters, a
    /// name of 64 characters of four bytes (or of 64 quotes, each escaped),
    /// the longest lifetime, the largest size and the latest time.
    #[test]
    fn the_longest_record_fits_its_bound() {
        let keys = keys();
        for name in ["\u{1F600}".repeat(MAX_NAME_LEN), "\"".repeat(MAX_NAME_LEN)] {
            let m = Membership {
                room: "r".repeat(64),
                inst: "i".repeat(MAX_INSTANCE_LEN),
                name: Some(name),
                ttl_ms: Some(record_ttl_bounds().1),
                size: Some(MAX_REMOTE_PER_ROOM),
                ts: u64::MAX,
            };
            let text = m.seal(&keys, "P", "P:peer:x");
            assert!(text.len() <= MAX_RECORD_BYTES, "{} bytes: {text}", text.len());
            let opened = Membership::open(text.as_bytes(), MAX_RECORD_BYTES, &keys, ("P", "P:peer:x"), 0, u64::MAX);
            assert_eq!(opened, Ok(m));
        }
    }

    fn keys() -> FleetKeys {
        FleetKeys::new(&["a-fleet-secret-for-the-tests"]).unwrap()
    }

    const NOW: u64 = 1_700_000_000_000;

    /// A record opens only where it was written (key and fleet), with the
    /// fleet's secret, and while it is fresh.
    #[test]
    fn a_record_opens_only_at_its_key_of_its_fleet_and_while_fresh() {
        let keys = keys();
        let m = Membership {
            room: "r".into(),
            inst: "i".into(),
            name: Some("Ann".into()),
            ttl_ms: Some(10_000),
            size: Some(6),
            ts: NOW,
        };
        let text = m.seal(&keys, "P", "P:peer:ab12");
        let open = |bytes: &[u8], place: (&str, &str), now: u64| {
            Membership::open(bytes, MAX_RECORD_BYTES, &keys, place, 10_000, now)
        };
        assert_eq!(open(text.as_bytes(), ("P", "P:peer:ab12"), NOW), Ok(m.clone()));
        let refused = |e: SealError| Err(WireError::Seal(e));
        assert_eq!(
            open(text.as_bytes(), ("P", "P:peer:cd34"), NOW),
            refused(SealError::BadSignature)
        );
        assert_eq!(
            open(text.as_bytes(), ("Q", "Q:peer:ab12"), NOW),
            refused(SealError::BadSignature)
        );
        assert_eq!(
            open(m.encode().as_bytes(), ("P", "P:peer:ab12"), NOW),
            refused(SealError::Unsigned)
        );
        let late = NOW + 10_000 + super::super::fleet_seal::MAX_CLOCK_SKEW_MS + 1;
        assert_eq!(
            open(text.as_bytes(), ("P", "P:peer:ab12"), late),
            refused(SealError::Stale)
        );
        let foreign = FleetKeys::new(&["the-secret-of-another-fleet"]).unwrap();
        let forged = m.seal(&foreign, "P", "P:peer:ab12");
        assert_eq!(
            open(forged.as_bytes(), ("P", "P:peer:ab12"), NOW),
            refused(SealError::BadSignature)
        );
        let huge = vec![b' '; MAX_RECORD_BYTES + 1];
        assert_eq!(open(&huge, ("P", "P:peer:ab12"), NOW), Err(WireError::TooLarge));
    }

    /// A message opens only on its channel of its fleet, once, while fresh,
    /// and a join only for a peer of its publisher.
    #[test]
    fn a_message_opens_once_on_its_channel_and_a_join_names_its_publisher() {
        let keys = keys();
        let mut guard = ReplayGuard::default();
        let mut stamper = super::super::fleet_seal::Stamper::new(42);
        let join = WireMessage::Join {
            room: "r".into(),
            id: "ab12".into(),
            name: None,
            instance: "one".into(),
        };
        let text = join.seal(&keys, "P", "P:inst:two", "one", stamper.next(NOW));
        let open = |bytes: &[u8], channel: &str, guard: &mut ReplayGuard| {
            WireMessage::open(bytes, 4096, &keys, "P", channel, guard, NOW)
        };
        let heard = open(text.as_bytes(), "P:inst:two", &mut guard).unwrap();
        assert_eq!((heard.src.as_str(), &heard.message), ("one", &join));
        let refused = |e: SealError| Err(WireError::Seal(e));
        assert_eq!(
            open(text.as_bytes(), "P:inst:two", &mut guard),
            refused(SealError::Replayed)
        );
        assert_eq!(
            open(text.as_bytes(), "P:inst:three", &mut guard),
            refused(SealError::BadSignature)
        );
        assert_eq!(
            open(join.encode().as_bytes(), "P:inst:two", &mut guard),
            refused(SealError::Unsigned)
        );
        let impostor = join.seal(&keys, "P", "P:inst:two", "three", stamper.next(NOW));
        assert_eq!(
            open(impostor.as_bytes(), "P:inst:two", &mut guard),
            Err(WireError::Invalid)
        );
        let old = join.seal(&keys, "P", "P:inst:two", "one", stamper.next(NOW - 60_000));
        assert_eq!(
            open(old.as_bytes(), "P:inst:two", &mut guard),
            refused(SealError::Stale)
        );
        let unstamped = keys.seal("P", "P:inst:two", &join.encode());
        assert_eq!(
            open(unstamped.as_bytes(), "P:inst:two", &mut guard),
            Err(WireError::Malformed)
        );
        let leave = WireMessage::Leave {
            room: "r".into(),
            id: "ab12".into(),
        };
        let text = leave.seal(&keys, "P", "P:inst:two", "one", stamper.next(NOW));
        assert_eq!(
            open(text.as_bytes(), "P:inst:two", &mut guard).map(|h| h.message),
            Ok(leave)
        );
    }

    /// Bounded mutation of valid messages and records (bytes flipped,
    /// dropped, duplicated, cut): parsing never panics, and whatever is
    /// accepted has a valid room, ids, instance and name, and encodes to
    /// what parses back the same.
    #[test]
    fn mutated_messages_never_panic_and_what_is_accepted_is_valid() {
        let seeds = [
            r#"{"t":"join","room":"r-1","id":"ab12cd34ef56ab78","name":"Ann","inst":"i.1"}"#,
            r#"{"t":"leave","room":"r-1","id":"ab12cd34ef56ab78"}"#,
            r#"{"t":"signal","room":"r","from":"a1","to":"b2","data":{"sdp":"v=0\r\n","x":[null,1.5e3,"\u00e9"]}}"#,
            r#"{"room":"standup","inst":"turn-2","name":"Bob"}"#,
            r#"{"room":"standup","inst":"turn-2","name":"Bob","ttl_ms":30000,"size":6}"#,
        ];
        let mut rng = crate::proto::xorshift::XorShift::new(0xf1ee_7001);
        let mut accepted = 0;
        for round in 0..20_000u32 {
            let mut bytes = seeds[round as usize % seeds.len()].as_bytes().to_vec();
            rng.mutate(&mut bytes, 4);
            if let Ok(message) = WireMessage::parse(&bytes, 4096) {
                accepted += 1;
                let text = message.encode();
                assert_eq!(
                    WireMessage::parse(text.as_bytes(), 4096).as_ref(),
                    Ok(&message),
                    "{text}"
                );
            }
            if let Ok(record) = Membership::parse(&bytes, 512) {
                assert!(is_valid_room(&record.room) && is_fleet_name(&record.inst, MAX_INSTANCE_LEN));
                assert_eq!(Membership::parse(record.encode().as_bytes(), 512).as_ref(), Ok(&record));
            }
        }
        assert!(accepted > 100, "the mutations reach accepted messages ({accepted})");
    }

    /// Bounded mutation of sealed messages and records: opening never
    /// panics, and whatever is changed is refused (a mutation that leaves
    /// the bytes as they were is the only one that opens).
    #[test]
    fn mutated_sealed_texts_are_refused() {
        let keys = keys();
        let mut stamper = super::super::fleet_seal::Stamper::new(1);
        let signal = WireMessage::parse(
            br#"{"t":"signal","room":"r","from":"a1","to":"b2","data":{"sdp":"v=0"}}"#,
            4096,
        )
        .unwrap();
        let record = Membership::parse(br#"{"room":"r","inst":"i","ttl_ms":10000,"size":6}"#, 512).unwrap();
        let record = Membership { ts: NOW, ..record };
        let mut rng = crate::proto::xorshift::XorShift::new(0x5ea1);
        for round in 0..5_000u32 {
            let message = signal.seal(&keys, "P", "P:inst:i", "i", stamper.next(NOW)).into_bytes();
            let sealed = record.seal(&keys, "P", "P:peer:x").into_bytes();
            let (mut m, mut r) = (message.clone(), sealed.clone());
            rng.mutate(&mut m, 1 + u64::from(round % 4));
            rng.mutate(&mut r, 1 + u64::from(round % 4));
            let mut guard = ReplayGuard::default();
            let heard = WireMessage::open(&m, 4096, &keys, "P", "P:inst:i", &mut guard, NOW);
            assert_eq!(heard.is_ok(), m == message, "{}", String::from_utf8_lossy(&m));
            let opened = Membership::open(&r, MAX_RECORD_BYTES, &keys, ("P", "P:peer:x"), 10_000, NOW);
            assert_eq!(opened.is_ok(), r == sealed, "{}", String::from_utf8_lossy(&r));
        }
    }
}

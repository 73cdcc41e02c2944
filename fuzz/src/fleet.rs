//! The `fleet_message` target: what instances of a fleet read from Redis
//! (`signaling::switchboard::fleet_wire`, `fleet::revocation_wire`, both
//! sealed with `fleet_seal`), untrusted input.

use turnpike::fleet::revocation_wire::SharedRevocation;
use turnpike::signaling::switchboard::fleet_seal::{FleetKeys, ReplayGuard, Stamp};
use turnpike::signaling::switchboard::fleet_wire::{Membership, WireMessage};

/// The bound the fuzzed messages and records are read with.
const BOUND: usize = 1024;
/// The fleet's secret of the fuzzed instance.
const SECRET: &str = "the-fuzzed-fleet-secret-0123456789";
/// The time the fuzzed instance reads at (unix ms), and that of the
/// sealed messages it is given.
const NOW: u64 = 1_700_000_000_000;
const PREFIX: &str = "P";
const CHANNEL: &str = "P:inst:turn-1";
const PEER_KEY: &str = "P:peer:9427a16ee09700c0";
const REVOCATIONS: &str = "P:revocations";

fn keys() -> FleetKeys {
    FleetKeys::new(&[SECRET]).expect("one secret")
}

/// Four things, none of which may panic:
/// - `data` parsed as the JSON of a message and of a record: whatever is
///   accepted encodes to bytes that parse back to the same value (so
///   nothing accepted is lost or changed when an instance passes it on);
/// - `data` opened as a sealed message, record and revocation (as Redis
///   would hand it): refused unless it is one of the texts the fleet
///   signed (the seeds hold them), since the fuzzer cannot forge a MAC;
/// - a valid sealed message, record and revocation, each XORed with
///   `data` (its bytes over the text, from the start; the rest as it
///   was) or cut to `data`'s length when `data` is longer: what opens is
///   exactly the unchanged text, so a mutated signed text is refused.
pub fn fuzz_parse(data: &[u8]) {
    if let Ok(message) = WireMessage::parse(data, BOUND) {
        let again = WireMessage::parse(message.encode().as_bytes(), usize::MAX);
        assert_eq!(again.ok(), Some(message), "a message did not survive its encoding");
    }
    if let Ok(record) = Membership::parse(data, BOUND) {
        let again = Membership::parse(record.encode().as_bytes(), usize::MAX);
        assert_eq!(again.ok(), Some(record), "a record did not survive its encoding");
    }
    let keys = keys();
    let sealed = sealed_texts(&keys);
    let mut guard = ReplayGuard::default();
    let forged = WireMessage::open(data, BOUND, &keys, PREFIX, CHANNEL, &mut guard, NOW);
    assert!(forged.is_err() || data == sealed[0], "fuzz input opened as a message");
    let forged = Membership::open(data, BOUND, &keys, (PREFIX, PEER_KEY), 10_000, NOW);
    assert!(forged.is_err() || data == sealed[1], "fuzz input opened as a record");
    let forged = SharedRevocation::open_message(data, &keys, (PREFIX, REVOCATIONS), &mut guard, NOW);
    assert!(
        forged.is_err() || data == sealed[2],
        "fuzz input opened as a revocation"
    );

    for (i, text) in sealed.into_iter().enumerate() {
        let mutated = mutate(&text, data);
        let mut guard = ReplayGuard::default();
        let opened = match i {
            0 => WireMessage::open(&mutated, BOUND, &keys, PREFIX, CHANNEL, &mut guard, NOW).is_ok(),
            1 => Membership::open(&mutated, BOUND, &keys, (PREFIX, PEER_KEY), 10_000, NOW).is_ok(),
            _ => SharedRevocation::open_message(&mutated, &keys, (PREFIX, REVOCATIONS), &mut guard, NOW).is_ok(),
        };
        assert_eq!(
            opened,
            mutated == text,
            "sealed text {i}: a mutation opened, or the original did not"
        );
    }
}

/// A sealed message, record and revocation, as instances write them.
fn sealed_texts(keys: &FleetKeys) -> [Vec<u8>; 3] {
    let stamp = Stamp {
        ts: NOW,
        boot: 7,
        seq: 1,
    };
    let signal = br#"{"t":"signal","room":"standup","from":"bd1b2c3d4e5f6071","to":"9427a16ee09700c0","data":{"candidate":"a=1"}}"#;
    let message = WireMessage::parse(signal, BOUND).expect("a valid signal");
    let record = Membership::parse(
        br#"{"room":"standup","inst":"turn-2","name":"Bob","ttl_ms":10000,"size":6}"#,
        BOUND,
    )
    .expect("a valid record");
    let record = Membership { ts: NOW, ..record };
    let revocation = SharedRevocation {
        username: "1700003600:mallory".to_owned(),
        until_unix: 1_700_003_600,
    };
    [
        message.seal(keys, PREFIX, CHANNEL, "turn-2", stamp).into_bytes(),
        record.seal(keys, PREFIX, PEER_KEY).into_bytes(),
        revocation.seal(keys, PREFIX, REVOCATIONS, "turn-2", stamp).into_bytes(),
    ]
}

/// `text` XORed with `data` from its start; cut to `data`'s length first
/// when `data` is longer and its first byte is odd.
fn mutate(text: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = text.to_vec();
    if data.len() < text.len() && data.first().is_some_and(|b| b % 2 == 1) {
        out.truncate(data.len());
    }
    for (byte, d) in out.iter_mut().zip(data) {
        *byte ^= d;
    }
    out
}

/// Seeds: one of each message, a record, near misses, and sealed texts
/// (which, as fuzz input, also mutate the sealed ones by themselves).
pub fn seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = [
        r#"{"t":"join","room":"standup","id":"9427a16ee09700c0","name":"Bob","inst":"turn-1"}"#,
        r#"{"t":"leave","room":"standup","id":"9427a16ee09700c0"}"#,
        r#"{"t":"signal","room":"standup","from":"9427a16ee09700c0","to":"bd1b2c3d4e5f6071","data":{"description":{"type":"offer","sdp":"v=0\r\n"}}}"#,
        r#"{"t":"signal","room":"r","from":"a","to":"b","data":null}"#,
        r#"{"room":"standup","inst":"turn-1","name":"Bob"}"#,
        r#"{"room":"standup","inst":"turn-1","name":"Bob","ttl_ms":10000,"size":6,"ts":1700000000000}"#,
        r#"{"room":"standup","inst":"turn-1","ttl_ms":1e400,"size":65}"#,
        r#"{"t":"join","room":"a b","id":"x","inst":"i"}"#,
        r#"{"t":"signal","room":"r","from":"a","to":"b"}"#,
        r#"{"t":"leave","room":"r","id":"a","src":"turn-2","ts":1700000000000,"boot":7,"seq":1}"#,
        "v1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.{}",
        "",
        "\0",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    seeds.extend(sealed_texts(&keys()));
    seeds
}

//! The `fleet_message` target: what instances of a fleet read from Redis
//! (`signaling::switchboard::fleet_wire`), untrusted input.

use turnpike::signaling::switchboard::fleet_wire::{Membership, WireMessage};

/// The bound the fuzzed messages and records are read with.
const BOUND: usize = 1024;

/// Parses `data` as a published message and as a membership record:
/// neither panics, and whatever is accepted encodes to bytes that parse
/// back to the same value (so nothing accepted is lost or changed when an
/// instance passes it on).
pub fn fuzz_parse(data: &[u8]) {
    if let Ok(message) = WireMessage::parse(data, BOUND) {
        let again = WireMessage::parse(message.encode().as_bytes(), usize::MAX);
        assert_eq!(again.ok(), Some(message), "a message did not survive its encoding");
    }
    if let Ok(record) = Membership::parse(data, BOUND) {
        let again = Membership::parse(record.encode().as_bytes(), usize::MAX);
        assert_eq!(again.ok(), Some(record), "a record did not survive its encoding");
    }
}

/// Seeds: one of each message, a record, and near misses.
pub fn seeds() -> Vec<Vec<u8>> {
    [
        r#"{"t":"join","room":"standup","id":"9427a16ee09700c0","name":"Bob","inst":"turn-1"}"#,
        r#"{"t":"leave","room":"standup","id":"9427a16ee09700c0"}"#,
        r#"{"t":"signal","room":"standup","from":"9427a16ee09700c0","to":"bd1b2c3d4e5f6071","data":{"description":{"type":"offer","sdp":"v=0\r\n"}}}"#,
        r#"{"t":"signal","room":"r","from":"a","to":"b","data":null}"#,
        r#"{"room":"standup","inst":"turn-1","name":"Bob"}"#,
        r#"{"room":"standup","inst":"turn-1","name":"Bob","ttl_ms":10000,"size":6}"#,
        r#"{"room":"standup","inst":"turn-1","ttl_ms":1e400,"size":65}"#,
        r#"{"t":"join","room":"a b","id":"x","inst":"i"}"#,
        r#"{"t":"signal","room":"r","from":"a","to":"b"}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

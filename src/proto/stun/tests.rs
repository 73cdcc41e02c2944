use super::*;

use crate::proto::testkit::rfc5769::{self, unhex as hex};

#[test]
fn rfc5769_request_parses_and_its_integrity_and_fingerprint_verify() {
    let bytes = hex(rfc5769::REQUEST);
    let msg = Message::parse(&bytes).unwrap();
    assert_eq!(msg.class(), Class::Request);
    assert_eq!(msg.method(), method::BINDING);
    assert_eq!(msg.get(attr::SOFTWARE).unwrap(), b"STUN test client");
    assert_eq!(msg.get(attr::USERNAME).unwrap(), b"evtj:h6vY");
    assert!(msg.verify_integrity(&integrity_key(rfc5769::PASSWORD)));
    assert!(!msg.verify_integrity(&integrity_key(b"wrong")));
}

#[test]
fn rfc5769_responses_decode_the_mapped_address() {
    let key = integrity_key(rfc5769::PASSWORD);
    for (vector, expected) in [
        (rfc5769::RESPONSE_V4, "192.0.2.1:32853"),
        (rfc5769::RESPONSE_V6, "[2001:db8:1234:5678:11:2233:4455:6677]:32853"),
    ] {
        let bytes = hex(vector);
        let msg = Message::parse(&bytes).unwrap();
        assert_eq!(msg.class(), Class::Success);
        let addr = msg.xor_address(attr::XOR_MAPPED_ADDRESS).unwrap().unwrap();
        assert_eq!(addr, expected.parse().unwrap());
        assert!(msg.verify_integrity(&key));
    }
}

#[test]
fn rfc5769_long_term_request_verifies_with_md5_key() {
    let bytes = hex(rfc5769::LONG_TERM_REQUEST);
    let msg = Message::parse(&bytes).unwrap();
    assert_eq!(msg.get(attr::REALM).unwrap(), b"example.org");
    assert_eq!(msg.get(attr::NONCE).unwrap(), b"f//499k954d6OL34oL9FSTvy64sA");
    let username = std::str::from_utf8(msg.get(attr::USERNAME).unwrap()).unwrap();
    let key = crate::proto::auth::long_term_key(username, "example.org", rfc5769::LONG_TERM_PASSWORD);
    assert!(msg.verify_integrity(&integrity_key(&key)));
}

#[test]
fn writer_encodes_xor_mapped_address_as_rfc5769_does() {
    let expected = hex(rfc5769::RESPONSE_V4);
    let id: TransactionId = expected[8..20].try_into().unwrap();
    let key = integrity_key(rfc5769::PASSWORD);
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, Class::Success, method::BINDING, id);
    // The vector pads SOFTWARE with spaces; we pad with zeros (RFC 8489
    // allows any padding), so the attribute after it lines up again.
    w.bytes(attr::SOFTWARE, b"test vector")
        .xor_address(attr::XOR_MAPPED_ADDRESS, "192.0.2.1:32853".parse().unwrap());
    w.finish(Some(&key), true);
    assert_eq!(buf.len(), expected.len());
    assert_eq!(buf[..20], expected[..20]);
    assert_eq!(buf[36..48], expected[36..48]);
    let msg = Message::parse(&buf).unwrap();
    assert!(msg.verify_integrity(&key));
}

#[test]
fn written_message_round_trips_with_integrity_and_fingerprint() {
    let key = integrity_key(b"key");
    let id = [7u8; 12];
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, Class::Error, method::ALLOCATE, id);
    w.error_code(438, "Stale Nonce")
        .bytes(attr::NONCE, b"abc")
        .xor_address(attr::XOR_RELAYED_ADDRESS, "[2001:db8::1]:4000".parse().unwrap())
        .unknown_attributes(&[0x0003]);
    w.finish(Some(&key), true);
    let msg = Message::parse(&buf).unwrap();
    assert_eq!(msg.class(), Class::Error);
    assert_eq!(msg.method(), method::ALLOCATE);
    assert_eq!(msg.transaction_id(), id);
    assert_eq!(msg.get(attr::ERROR_CODE).unwrap(), b"\0\0\x04\x26Stale Nonce");
    assert_eq!(msg.get(attr::NONCE).unwrap(), b"abc");
    assert_eq!(
        msg.xor_address(attr::XOR_RELAYED_ADDRESS).unwrap().unwrap(),
        "[2001:db8::1]:4000".parse().unwrap()
    );
    assert!(msg.verify_integrity(&key));
}

#[test]
fn attributes_after_integrity_are_ignored() {
    let key = integrity_key(b"key");
    let mut buf = Vec::new();
    MessageWriter::new(&mut buf, Class::Request, method::REFRESH, [1; 12]).finish(Some(&key), false);
    // Append LIFETIME after MESSAGE-INTEGRITY and fix the length.
    buf.extend_from_slice(&[0x00, 0x0D, 0, 4, 0, 0, 0, 0]);
    let len = (buf.len() - HEADER_LEN) as u16;
    buf[2..4].copy_from_slice(&len.to_be_bytes());
    let msg = Message::parse(&buf).unwrap();
    assert!(msg.get(attr::LIFETIME).is_none());
    assert!(msg.verify_integrity(&key));
}

#[test]
fn malformed_packets_are_rejected_not_panicking() {
    let good = hex(rfc5769::REQUEST);
    assert_eq!(Message::parse(&good[..19]).unwrap_err(), DecodeError::TooShort);
    let mut bad = good.clone();
    bad[0] |= 0x80;
    assert_eq!(Message::parse(&bad).unwrap_err(), DecodeError::NotStun);
    assert_eq!(
        Message::parse(&good[..good.len() - 4]).unwrap_err(),
        DecodeError::BadLength
    );
    let mut bad = good.clone();
    bad[3] = 0x57; // not a multiple of 4
    assert_eq!(Message::parse(&bad).unwrap_err(), DecodeError::BadLength);
    let mut bad = good.clone();
    bad[22..24].copy_from_slice(&0xFFFFu16.to_be_bytes()); // SOFTWARE length overruns
    assert_eq!(Message::parse(&bad).unwrap_err(), DecodeError::AttributeOverrun);
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert_eq!(Message::parse(&bad).unwrap_err(), DecodeError::BadFingerprint);
    let mut bad = good.clone();
    bad[4] = 0; // no magic cookie, but a Binding request: classic
    assert!(Message::parse(&bad).is_err()); // fingerprint now mismatches
}

#[test]
fn huge_attribute_counts_are_refused() {
    let mut buf = vec![0x00, 0x01, 0, 0, 0x21, 0x12, 0xA4, 0x42];
    buf.extend_from_slice(&[0; 12]);
    for _ in 0..(MAX_ATTRIBUTES + 1) {
        buf.extend_from_slice(&[0x80, 0x22, 0, 0]);
    }
    let len = (buf.len() - HEADER_LEN) as u16;
    buf[2..4].copy_from_slice(&len.to_be_bytes());
    assert_eq!(Message::parse(&buf).unwrap_err(), DecodeError::TooManyAttributes);
}

#[test]
fn classic_message_must_be_a_binding_request() {
    let mut buf = vec![0x00, 0x03, 0, 0];
    buf.extend_from_slice(&[9; 16]);
    assert_eq!(Message::parse(&buf).unwrap_err(), DecodeError::ClassicNotBinding);
    buf[1] = 0x01;
    let msg = Message::parse(&buf).unwrap();
    assert!(!msg.has_magic_cookie());
    let mut out = Vec::new();
    let mut w = MessageWriter::classic_binding(&mut out, Class::Success, &msg);
    w.address(attr::MAPPED_ADDRESS, "1.2.3.4:5".parse().unwrap());
    w.finish(None, false);
    assert_eq!(&out[4..20], &[9; 16]);
    // Our parser accepts only classic requests, so read the answer by hand.
    assert_eq!(&out[..4], &[0x01, 0x01, 0x00, 0x0C]);
    assert_eq!(&out[20..24], &[0x00, 0x01, 0x00, 0x08]);
    let mapped = decode_address(&out[24..32]).unwrap();
    assert_eq!(mapped, "1.2.3.4:5".parse().unwrap());

    // A classic error (RFC 3489 §11.1): type 0x0111, the same id.
    let mut w = MessageWriter::classic_binding(&mut out, Class::Error, &msg);
    w.error_code(420, "").unknown_attributes(&[0x0003, 0x0003]);
    w.finish(None, false);
    assert_eq!(&out[..4], &[0x01, 0x11, 0x00, 0x10]);
    assert_eq!(&out[4..20], &[9; 16]);
    assert_eq!(&out[20..36], &[0, 9, 0, 4, 0, 0, 4, 20, 0, 0x0A, 0, 4, 0, 3, 0, 3]);
}

#[test]
fn unknown_comprehension_required_attributes_are_listed_once() {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, Class::Request, method::BINDING, [0; 12]);
    w.u32(0x0003, 0).u32(0x0003, 0).u32(0x7777, 0).u32(0x8888, 0);
    w.finish(None, false);
    let msg = Message::parse(&buf).unwrap();
    let mut out = [0u16; 8];
    let n = msg.unknown_required(&mut out);
    assert_eq!(&out[..n], &[0x0003, 0x7777]);
}

#[test]
fn data_indication_header_parses_as_stun() {
    for peer in ["198.51.100.2:1234", "[2001:db8::2]:1234"] {
        let peer: SocketAddr = peer.parse().unwrap();
        let payload = b"hello";
        let mut buf = vec![0u8; 64];
        let n = write_data_indication_header(&mut buf, peer, [3; 12], payload.len()).unwrap();
        let mut msg = buf[64 - n..].to_vec();
        msg.extend_from_slice(payload);
        msg.extend(std::iter::repeat_n(0, padding(payload.len())));
        let parsed = Message::parse(&msg).unwrap();
        assert_eq!(parsed.class(), Class::Indication);
        assert_eq!(parsed.method(), method::DATA);
        assert_eq!(parsed.get(attr::DATA).unwrap(), payload);
        assert_eq!(parsed.xor_address(attr::XOR_PEER_ADDRESS).unwrap().unwrap(), peer);
    }
}

#[test]
fn the_named_attributes_are_understood_and_others_below_0x8000_are_not() {
    assert!(attr::ALL.iter().all(|t| attr::is_understood(*t)));
    assert!(attr::is_understood(0xC001), "comprehension-optional");
    for unknown in [0x0003, 0x0026, 0x7FFF] {
        assert!(!attr::is_understood(unknown), "{unknown:#06x}");
    }
}

/// RFC 5769 §2.4's request with MESSAGE-INTEGRITY-SHA256 in place of
/// MESSAGE-INTEGRITY, under the SHA-256 key of RFC 8489 §9.2.2: the tags,
/// whole and truncated to 16 bytes, were computed with Python's `hmac`
/// and `hashlib` (which give §2.4's own MESSAGE-INTEGRITY from its MD5
/// key, `f670…9666`, so the method is sound).
const LONG_TERM_SHA256_KEY: &str = "dd295a613b9058c3c23d6dc7165bda072304d989c9d0af3a8c7e184b4f9bb4a1";
const SHA256_TAGS: [(usize, &str); 2] = [
    (32, "7c4f5d5611cf81555f1a0c4796844b397c56d45cd0f140cfa33504c892179325"),
    (16, "93ebe831ea6b165e2f7c9c1ed52488db"),
];

/// §2.4's request up to its MESSAGE-INTEGRITY, then MESSAGE-INTEGRITY-SHA256
/// with `tag`.
fn long_term_request_sha256(tag: &[u8]) -> Vec<u8> {
    let mut bytes = hex(rfc5769::LONG_TERM_REQUEST)[..92].to_vec();
    bytes[2..4].copy_from_slice(&((92 - 20 + 4 + tag.len()) as u16).to_be_bytes());
    bytes.extend_from_slice(&attr::MESSAGE_INTEGRITY_SHA256.to_be_bytes());
    bytes.extend_from_slice(&(tag.len() as u16).to_be_bytes());
    bytes.extend_from_slice(tag);
    bytes
}

#[test]
fn message_integrity_sha256_vectors_verify_whole_and_truncated_and_the_writer_reproduces_them() {
    let username = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";
    let key = crate::proto::auth::sha256_key(username, "example.org", rfc5769::LONG_TERM_PASSWORD);
    assert_eq!(key.to_vec(), hex(LONG_TERM_SHA256_KEY));
    for (len, tag) in SHA256_TAGS {
        let bytes = long_term_request_sha256(&hex(tag));
        let msg = Message::parse(&bytes).unwrap();
        assert_eq!(msg.integrity_sha256_len(), Some(len));
        assert!(msg.has_integrity());
        assert!(msg.verify(&Integrity::sha256(&key, len)), "{len} bytes");
        assert!(!msg.verify(&Integrity::sha256(b"wrong", len)));
        // Tampered with: one bit of the nonce.
        let mut tampered = bytes.clone();
        tampered[60] ^= 1;
        assert!(!Message::parse(&tampered).unwrap().verify(&Integrity::sha256(&key, len)));
        // The writer gives the same bytes.
        let source = Message::parse(&bytes).unwrap();
        let mut out = Vec::new();
        let mut w = MessageWriter::new(&mut out, Class::Request, method::BINDING, source.transaction_id());
        for (typ, value) in source.attributes() {
            w.bytes(typ, value);
        }
        w.finish_signed(&Integrity::sha256(&key, len), false);
        assert_eq!(out, bytes, "{len} bytes");
    }
}

#[test]
fn message_integrity_sha256_counts_first_or_right_after_message_integrity_and_hides_what_follows() {
    let key = b"key";
    let mut w_buf = Vec::new();
    let mut w = MessageWriter::new(&mut w_buf, Class::Request, method::ALLOCATE, [7; 12]);
    w.bytes(attr::USERNAME, b"u");
    w.finish(Some(&integrity_key(key)), false);
    // MESSAGE-INTEGRITY, then MESSAGE-INTEGRITY-SHA256 over both (§14.6).
    let sha256 = Integrity::sha256(key, 32);
    let mut both = w_buf.clone();
    let tag = integrity_tag(sha256_key_of(&sha256), &both, 32);
    append(&mut both, attr::MESSAGE_INTEGRITY_SHA256, &tag.as_ref()[..32]);
    let msg = Message::parse(&both).unwrap();
    assert!(msg.verify_integrity(&integrity_key(key)));
    assert!(msg.verify(&sha256));
    // Anything after MESSAGE-INTEGRITY-SHA256 but FINGERPRINT is ignored.
    let mut trailing = both.clone();
    append(&mut trailing, attr::SOFTWARE, b"late");
    let msg = Message::parse(&trailing).unwrap();
    assert_eq!(msg.get(attr::SOFTWARE), None);
    assert!(msg.verify(&sha256), "the length field is its own business");
    // A length the RFC does not allow (under 16, not a multiple of 4).
    for bad in [12, 18, 36] {
        let mut odd = Vec::new();
        MessageWriter::new(&mut odd, Class::Request, method::ALLOCATE, [7; 12]).finish(None, false);
        append(&mut odd, attr::MESSAGE_INTEGRITY_SHA256, &vec![0; bad]);
        let msg = Message::parse(&odd).unwrap();
        assert_eq!(msg.integrity_sha256_len(), None, "{bad}");
        assert!(!msg.verify(&Integrity::sha256(key, 32)));
    }
}

fn sha256_key_of(integrity: &Integrity) -> &hmac::Key {
    match integrity {
        Integrity::Sha256 { key, .. } => key,
        Integrity::Sha1(key) => key,
    }
}

/// Appends an attribute and fixes the length field.
fn append(message: &mut Vec<u8>, typ: u16, value: &[u8]) {
    message.extend_from_slice(&typ.to_be_bytes());
    message.extend_from_slice(&(value.len() as u16).to_be_bytes());
    message.extend_from_slice(value);
    message.resize(message.len().next_multiple_of(4), 0);
    let length = (message.len() - HEADER_LEN) as u16;
    message[2..4].copy_from_slice(&length.to_be_bytes());
}

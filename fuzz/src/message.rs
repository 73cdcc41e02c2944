//! Checks of a parsed [`Message`]: every accessor is called and what it
//! returns is compared with the raw bytes, so a getter that disagrees with
//! the parser (not just one that panics) is caught.

use turnpike::proto::stun::{self, attr, method, Class, Message, MessageWriter};
use turnpike::proto::testkit::rfc5769;

use crate::hex;

/// Every attribute type `turnpike::proto::stun::attr` names, plus a few it
/// does not (comprehension-required and optional ones).
pub static KNOWN_TYPES: std::sync::LazyLock<Vec<u16>> = std::sync::LazyLock::new(|| {
    let unnamed = [
        0x0003, // CHANGE-REQUEST (RFC 5780), not understood: 420
        0x7FFF, 0xC001,
    ];
    attr::ALL.into_iter().chain(unnamed).collect()
});

/// The attribute types that hold XOR-encoded addresses.
pub const XOR_TYPES: [u16; 3] = [
    attr::XOR_PEER_ADDRESS,
    attr::XOR_RELAYED_ADDRESS,
    attr::XOR_MAPPED_ADDRESS,
];

/// Parses `data` and, if it is a STUN message, runs [`exercise`] on it.
/// The `stun_message` target.
pub fn fuzz_parse(data: &[u8]) {
    assert_eq!(
        Message::looks_like_stun(data),
        data.first().is_some_and(|b| b >> 6 == 0)
    );
    if let Ok(msg) = Message::parse(data) {
        assert!(Message::looks_like_stun(data), "parsed a non-STUN packet");
        exercise(&msg);
    }
}

/// Calls every accessor of `msg` and checks the answers against its bytes.
pub fn exercise(msg: &Message<'_>) {
    let bytes = msg.bytes();
    let whole = bytes.as_ptr_range();
    let inside = |v: &[u8]| {
        let r = v.as_ptr_range();
        whole.start <= r.start && r.end <= whole.end
    };

    // Header invariants the module docs promise.
    assert!(bytes.len() >= stun::HEADER_LEN);
    let length = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
    assert_eq!(bytes.len(), stun::HEADER_LEN + length);
    assert_eq!(length % 4, 0);
    assert_eq!(bytes[0] & 0xC0, 0);
    assert!(msg.method() <= 0x0FFF);
    let class_bits = u16::from_be_bytes([bytes[0], bytes[1]]) & 0x0110;
    let class = match class_bits {
        0x000 => Class::Request,
        0x010 => Class::Indication,
        0x100 => Class::Success,
        _ => Class::Error,
    };
    assert_eq!(msg.class(), class);
    let cookie = bytes[4..8] == stun::MAGIC_COOKIE.to_be_bytes();
    assert_eq!(msg.has_magic_cookie(), cookie);
    if !cookie {
        assert_eq!(
            (msg.class(), msg.method()),
            (Class::Request, method::BINDING),
            "only classic Binding requests parse without the magic cookie"
        );
    }
    assert_eq!(msg.transaction_id()[..], bytes[8..20]);

    // The visible attributes: in bounds, bounded in number, and neither
    // MESSAGE-INTEGRITY nor FINGERPRINT among them.
    let mut count = 0;
    for (typ, value) in msg.attributes() {
        count += 1;
        assert!(count <= stun::MAX_ATTRIBUTES, "more than MAX_ATTRIBUTES");
        assert!(inside(value), "attribute value outside the message");
        assert_ne!(typ, attr::MESSAGE_INTEGRITY);
        assert_ne!(typ, attr::FINGERPRINT);
    }

    for &typ in KNOWN_TYPES.iter() {
        let first = msg.attributes().find(|(t, _)| *t == typ).map(|(_, v)| v);
        let got = msg.get(typ);
        assert_eq!(got, first, "get({typ:#06x}) is not the first such attribute");
        assert_eq!(msg.has(typ), got.is_some());
        match (got, msg.u32_attr(typ)) {
            (None, None) => {}
            (Some(v), Some(Ok(n))) => assert_eq!(v, n.to_be_bytes()),
            (Some(v), Some(Err(_))) => assert_ne!(v.len(), 4),
            (got, u) => panic!("u32_attr({typ:#06x}) = {u:?} but get = {got:?}"),
        }
        let all: Vec<_> = msg.xor_addresses(typ).collect();
        let n = msg.attributes().filter(|(t, _)| *t == typ).count();
        assert_eq!(all.len(), n, "xor_addresses({typ:#06x}) skipped or added values");
        let one = msg.xor_address(typ);
        assert_eq!(one.as_ref(), all.first());
        if let (Some(v), Some(Ok(addr))) = (got, one) {
            // An address decodes only from the exact length of its family.
            assert_eq!(v.len(), if addr.is_ipv4() { 8 } else { 20 });
        }
        if let Some(v) = got {
            let _ = stun::decode_address(v);
        }
    }

    // unknown_required: distinct, not understood, and a bigger buffer only
    // appends to what a smaller one got.
    let mut widest = [0u16; 64];
    let n_widest = msg.unknown_required(&mut widest);
    assert!(n_widest <= widest.len());
    for (i, t) in widest[..n_widest].iter().enumerate() {
        assert!(!attr::is_understood(*t));
        assert!(!widest[..i].contains(t), "unknown type listed twice");
        assert!(msg.has(*t));
    }
    for size in [0usize, 1, 2, 8] {
        let mut out = [0u16; 8];
        let n = msg.unknown_required(&mut out[..size]);
        assert_eq!(n, n_widest.min(size));
        assert_eq!(out[..n], widest[..n]);
    }

    let verified = msg.verify_integrity(&stun::integrity_key(rfc5769::PASSWORD));
    if !msg.has_integrity() {
        assert!(!verified, "integrity verified without MESSAGE-INTEGRITY");
    }
    let _ = msg.verify_integrity(&stun::integrity_key(b""));

    // Re-encoding the visible attributes with MessageWriter gives a message
    // that parses to the same thing.
    if cookie {
        let mut buf = Vec::new();
        let mut w = MessageWriter::new(&mut buf, msg.class(), msg.method(), msg.transaction_id());
        for (typ, value) in msg.attributes() {
            w.bytes(typ, value);
        }
        w.finish(None, false);
        let again = Message::parse(&buf).unwrap_or_else(|e| panic!("re-encoded {} does not parse: {e}", hex(&buf)));
        assert_eq!(buf[..2], bytes[..2], "message type changed on re-encoding");
        assert_eq!(again.class(), msg.class());
        assert_eq!(again.method(), msg.method());
        assert_eq!(again.transaction_id(), msg.transaction_id());
        assert!(!again.has_integrity());
        assert!(again.attributes().eq(msg.attributes()));
    }
}

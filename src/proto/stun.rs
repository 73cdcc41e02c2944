//! STUN message coding (RFC 8489 §5, §14; TURN attributes from RFC 8656 §18).
//!
//! [`Message::parse`] borrows the packet and checks its whole structure once:
//! header, lengths, attribute bounds, the position of MESSAGE-INTEGRITY and a
//! valid FINGERPRINT. After that every getter walks already-validated bytes,
//! so no accessor can fail on bounds or panic. Parsing allocates nothing,
//! which matters because Send indications are on the data path.
//!
//! [`MessageWriter`] builds control-plane messages into a caller-supplied
//! `Vec<u8>` and appends MESSAGE-INTEGRITY and FINGERPRINT last.
//! [`write_data_indication_header`] writes a Data indication header in place
//! into the headroom before a payload, for the relay path.
//!
//! Invariants of a parsed [`Message`]: `bytes.len() == 20 + length field`,
//! the length is a multiple of 4, every attribute (with padding) lies inside
//! `bytes`, there are at most [`MAX_ATTRIBUTES`] of them, FINGERPRINT (if
//! any) is last and correct, and only FINGERPRINT follows MESSAGE-INTEGRITY
//! among the attributes that getters return (RFC 8489 §14.5).
//!
//! Why not the `stun` crate: its `Message` decodes into owned `Vec`s per
//! attribute, which would put an allocation on every Send indication. It is
//! used in the tests as an independent encoder to check this codec against.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ring::hmac;

pub const HEADER_LEN: usize = 20;
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// A bound on attributes per message: far above what any real client sends
/// (a TURN request carries fewer than 15) and it keeps hostile packets with
/// thousands of empty attributes from costing more than a short walk.
pub const MAX_ATTRIBUTES: usize = 64;
const FINGERPRINT_XOR: u32 = 0x5354_554E;
const INTEGRITY_LEN: usize = 20;

pub type TransactionId = [u8; 12];

/// Message methods (RFC 8489 §18.2, RFC 8656 §17, RFC 6062 §6.1).
pub mod method {
    pub const BINDING: u16 = 0x001;
    pub const ALLOCATE: u16 = 0x003;
    pub const REFRESH: u16 = 0x004;
    pub const SEND: u16 = 0x006;
    pub const DATA: u16 = 0x007;
    pub const CREATE_PERMISSION: u16 = 0x008;
    pub const CHANNEL_BIND: u16 = 0x009;
    pub const CONNECT: u16 = 0x00A;
    pub const CONNECTION_BIND: u16 = 0x00B;
    pub const CONNECTION_ATTEMPT: u16 = 0x00C;
}

/// Attribute types (RFC 8489 §18.3, RFC 8656 §18, RFC 5245 ICE).
pub mod attr {
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    pub const USERNAME: u16 = 0x0006;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const ERROR_CODE: u16 = 0x0009;
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    pub const LIFETIME: u16 = 0x000D;
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    pub const DATA: u16 = 0x0013;
    pub const REALM: u16 = 0x0014;
    pub const NONCE: u16 = 0x0015;
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    pub const EVEN_PORT: u16 = 0x0018;
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    pub const DONT_FRAGMENT: u16 = 0x001A;
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    pub const RESERVATION_TOKEN: u16 = 0x0022;
    pub const PRIORITY: u16 = 0x0024;
    pub const USE_CANDIDATE: u16 = 0x0025;
    pub const CONNECTION_ID: u16 = 0x002A;
    pub const ADDITIONAL_ADDRESS_FAMILY: u16 = 0x8000;
    pub const ADDRESS_ERROR_CODE: u16 = 0x8001;
    /// RFC 8489 §14.16: the name to check the alternate's certificate
    /// against; sent, never read.
    pub const ALTERNATE_DOMAIN: u16 = 0x8003;
    pub const SOFTWARE: u16 = 0x8022;
    /// RFC 8489 §14.15: sent with 300 Try Alternate, never read.
    pub const ALTERNATE_SERVER: u16 = 0x8023;
    pub const FINGERPRINT: u16 = 0x8028;
    pub const ICE_CONTROLLED: u16 = 0x8029;
    pub const ICE_CONTROLLING: u16 = 0x802A;

    /// Every type named above, in the order above.
    pub const ALL: [u16; 28] = [
        MAPPED_ADDRESS,
        USERNAME,
        MESSAGE_INTEGRITY,
        ERROR_CODE,
        UNKNOWN_ATTRIBUTES,
        CHANNEL_NUMBER,
        LIFETIME,
        XOR_PEER_ADDRESS,
        DATA,
        REALM,
        NONCE,
        XOR_RELAYED_ADDRESS,
        REQUESTED_ADDRESS_FAMILY,
        EVEN_PORT,
        REQUESTED_TRANSPORT,
        DONT_FRAGMENT,
        MESSAGE_INTEGRITY_SHA256,
        XOR_MAPPED_ADDRESS,
        RESERVATION_TOKEN,
        PRIORITY,
        USE_CANDIDATE,
        CONNECTION_ID,
        ADDITIONAL_ADDRESS_FAMILY,
        ADDRESS_ERROR_CODE,
        SOFTWARE,
        FINGERPRINT,
        ICE_CONTROLLED,
        ICE_CONTROLLING,
    ];

    /// Comprehension-required attributes (type < 0x8000) this server
    /// understands or deliberately accepts and ignores: the named ones. Any
    /// other one in a request earns 420 Unknown Attribute (RFC 8489 §6.3.1).
    pub fn is_understood(t: u16) -> bool {
        t >= 0x8000 || ALL.contains(&t)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Request,
    Indication,
    Success,
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0x000,
            Class::Indication => 0x010,
            Class::Success => 0x100,
            Class::Error => 0x110,
        }
    }
}

/// Why a packet is not a well-formed STUN message. Hostile input produces
/// these, so they are small, `Copy` and carry no heap data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("shorter than a STUN header")]
    TooShort,
    #[error("first two bits are not zero")]
    NotStun,
    #[error("length field disagrees with the packet size")]
    BadLength,
    #[error("attribute runs past the end of the message")]
    AttributeOverrun,
    #[error("more than {MAX_ATTRIBUTES} attributes")]
    TooManyAttributes,
    #[error("FINGERPRINT is not the last attribute or does not match")]
    BadFingerprint,
    #[error("message without magic cookie is not a Binding request")]
    ClassicNotBinding,
}

/// A validated, borrowed STUN message.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    bytes: &'a [u8],
    class: Class,
    method: u16,
    /// Offset of the MESSAGE-INTEGRITY attribute header, if present.
    integrity_at: Option<usize>,
    /// End of the attributes that getters see (MESSAGE-INTEGRITY excluded
    /// onwards, RFC 8489 §14.5).
    visible_end: usize,
}

impl<'a> Message<'a> {
    /// Quick test used to demultiplex STUN from ChannelData on one socket
    /// (RFC 8656 §12: first two bits 00 are STUN, 01 are ChannelData).
    pub fn looks_like_stun(bytes: &[u8]) -> bool {
        bytes.first().is_some_and(|b| b & 0xC0 == 0)
    }

    pub fn parse(bytes: &'a [u8]) -> Result<Message<'a>, DecodeError> {
        let header: &[u8; HEADER_LEN] = bytes.first_chunk().ok_or(DecodeError::TooShort)?;
        let kind = u16::from_be_bytes([header[0], header[1]]);
        if kind & 0xC000 != 0 {
            return Err(DecodeError::NotStun);
        }
        let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
        if length % 4 != 0 || HEADER_LEN + length != bytes.len() {
            return Err(DecodeError::BadLength);
        }
        let class = match kind & 0x0110 {
            0x000 => Class::Request,
            0x010 => Class::Indication,
            0x100 => Class::Success,
            _ => Class::Error,
        };
        let method = (kind & 0x000F) | ((kind & 0x00E0) >> 1) | ((kind & 0x3E00) >> 2);
        let classic = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) != MAGIC_COOKIE;
        if classic && !(class == Class::Request && method == method::BINDING) {
            return Err(DecodeError::ClassicNotBinding);
        }

        let mut integrity_at = None;
        let mut visible_end = bytes.len();
        let mut count = 0;
        let mut at = HEADER_LEN;
        while at < bytes.len() {
            count += 1;
            if count > MAX_ATTRIBUTES {
                return Err(DecodeError::TooManyAttributes);
            }
            let (typ, value) = attribute_at(bytes, at).ok_or(DecodeError::AttributeOverrun)?;
            let next = at + 4 + padded(value.len());
            if next > bytes.len() {
                return Err(DecodeError::AttributeOverrun);
            }
            match typ {
                attr::FINGERPRINT => {
                    let expected = value
                        .try_into()
                        .map(u32::from_be_bytes)
                        .map_err(|_| DecodeError::BadFingerprint)?;
                    if next != bytes.len() || fingerprint(bytes, at) != expected {
                        return Err(DecodeError::BadFingerprint);
                    }
                    visible_end = visible_end.min(at);
                }
                attr::MESSAGE_INTEGRITY if integrity_at.is_none() => {
                    integrity_at = Some(at);
                    visible_end = at;
                }
                _ => {}
            }
            at = next;
        }
        Ok(Message {
            bytes,
            class,
            method,
            integrity_at,
            visible_end,
        })
    }

    pub fn class(&self) -> Class {
        self.class
    }

    pub fn method(&self) -> u16 {
        self.method
    }

    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// False for RFC 3489 requests, which have no magic cookie.
    pub fn has_magic_cookie(&self) -> bool {
        self.bytes[4..8] == MAGIC_COOKIE.to_be_bytes()
    }

    pub fn transaction_id(&self) -> TransactionId {
        let mut id = [0; 12];
        id.copy_from_slice(&self.bytes[8..HEADER_LEN]);
        id
    }

    /// The 16 bytes after the length field: RFC 3489 clients use all of
    /// them as the transaction id, so a classic answer echoes them.
    fn classic_transaction_id(&self) -> [u8; 16] {
        let mut id = [0; 16];
        id.copy_from_slice(&self.bytes[4..HEADER_LEN]);
        id
    }

    /// Attributes before MESSAGE-INTEGRITY, in order.
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes {
            bytes: &self.bytes[..self.visible_end],
            at: HEADER_LEN,
        }
    }

    /// The value of the first attribute of type `typ`.
    pub fn get(&self, typ: u16) -> Option<&'a [u8]> {
        self.attributes().find(|(t, _)| *t == typ).map(|(_, v)| v)
    }

    pub fn has(&self, typ: u16) -> bool {
        self.get(typ).is_some()
    }

    pub fn has_integrity(&self) -> bool {
        self.integrity_at.is_some()
    }

    /// True if the message ends in a FINGERPRINT (which parsing checked).
    pub fn has_fingerprint(&self) -> bool {
        self.bytes
            .len()
            .checked_sub(8)
            .and_then(|at| self.bytes.get(at..at + 2))
            .is_some_and(|typ| typ == attr::FINGERPRINT.to_be_bytes())
    }

    /// The first comprehension-required attribute types this server does
    /// not understand (at most `out.len()` of them); returns how many.
    pub fn unknown_required(&self, out: &mut [u16]) -> usize {
        let mut n = 0;
        for (typ, _) in self.attributes() {
            if !attr::is_understood(typ) && !out[..n].contains(&typ) {
                match out.get_mut(n) {
                    Some(slot) => *slot = typ,
                    None => break,
                }
                n += 1;
            }
        }
        n
    }

    pub fn xor_address(&self, typ: u16) -> Option<Result<SocketAddr, AttrError>> {
        self.get(typ).map(|v| decode_xor_address(v, &self.bytes[4..HEADER_LEN]))
    }

    /// All XOR-PEER-ADDRESS values (CreatePermission may carry several).
    pub fn xor_addresses(&self, typ: u16) -> impl Iterator<Item = Result<SocketAddr, AttrError>> + 'a {
        let cookie_and_id = &self.bytes[4..HEADER_LEN];
        self.attributes()
            .filter(move |(t, _)| *t == typ)
            .map(move |(_, v)| decode_xor_address(v, cookie_and_id))
    }

    pub fn u32_attr(&self, typ: u16) -> Option<Result<u32, AttrError>> {
        self.get(typ)
            .map(|v| v.try_into().map(u32::from_be_bytes).map_err(|_| AttrError::BadLength))
    }

    /// Verifies MESSAGE-INTEGRITY (RFC 8489 §14.5) with HMAC-SHA1 under
    /// `key`, in constant time. False if the attribute is absent.
    pub fn verify_integrity(&self, key: &hmac::Key) -> bool {
        let Some(at) = self.integrity_at else {
            return false;
        };
        let Some(received) = self.bytes.get(at + 4..at + 4 + INTEGRITY_LEN) else {
            return false;
        };
        let tag = integrity_tag(key, &self.bytes[..at]);
        constant_time_eq(tag.as_ref(), received)
    }
}

/// Iterator over `(type, value)` of validated attributes.
pub struct Attributes<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Iterator for Attributes<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (typ, value) = attribute_at(self.bytes, self.at)?;
        self.at += 4 + padded(value.len());
        Some((typ, value))
    }
}

fn attribute_at(bytes: &[u8], at: usize) -> Option<(u16, &[u8])> {
    let head = bytes.get(at..at + 4)?;
    let typ = u16::from_be_bytes([head[0], head[1]]);
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let value = bytes.get(at + 4..at + 4 + len)?;
    Some((typ, value))
}

fn padded(len: usize) -> usize {
    (len + 3) & !3
}

/// Why an attribute's value cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AttrError {
    #[error("attribute has the wrong length")]
    BadLength,
    #[error("unknown address family")]
    BadFamily,
}

const FAMILY_V4: u8 = 0x01;
const FAMILY_V6: u8 = 0x02;

fn decode_xor_address(value: &[u8], cookie_and_id: &[u8]) -> Result<SocketAddr, AttrError> {
    let (&[_, family, p0, p1], rest) = value.split_first_chunk::<4>().ok_or(AttrError::BadLength)?;
    let port = u16::from_be_bytes([p0, p1]) ^ (MAGIC_COOKIE >> 16) as u16;
    let ip = match (family, rest.len()) {
        (FAMILY_V4, 4) => {
            let mut o = [0u8; 4];
            for (i, b) in o.iter_mut().enumerate() {
                *b = rest[i] ^ cookie_and_id[i];
            }
            IpAddr::V4(Ipv4Addr::from(o))
        }
        (FAMILY_V6, 16) => {
            let mut o = [0u8; 16];
            for (i, b) in o.iter_mut().enumerate() {
                *b = rest[i] ^ cookie_and_id[i];
            }
            IpAddr::V6(Ipv6Addr::from(o))
        }
        (FAMILY_V4 | FAMILY_V6, _) => return Err(AttrError::BadLength),
        _ => return Err(AttrError::BadFamily),
    };
    Ok(SocketAddr::new(ip, port))
}

/// Decodes a plain (non-XOR) address attribute such as MAPPED-ADDRESS.
pub fn decode_address(value: &[u8]) -> Result<SocketAddr, AttrError> {
    decode_xor_address(value, &[0; 16]).map(|a| {
        // Undo the port XOR that decode_xor_address always applies.
        SocketAddr::new(a.ip(), a.port() ^ (MAGIC_COOKIE >> 16) as u16)
    })
}

/// Encodes an address attribute value; `xor_with` is the 16 bytes of magic
/// cookie and transaction id for XOR-* attributes, or `None` for plain ones.
fn encode_address(out: &mut Vec<u8>, addr: SocketAddr, xor_with: Option<&[u8; 16]>) {
    let zero = [0u8; 16];
    let mask = xor_with.unwrap_or(&zero);
    let port_mask = u16::from_be_bytes([mask[0], mask[1]]);
    out.push(0);
    out.push(if addr.is_ipv4() { FAMILY_V4 } else { FAMILY_V6 });
    out.extend_from_slice(&(addr.port() ^ port_mask).to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => out.extend(ip.octets().iter().zip(mask).map(|(a, m)| a ^ m)),
        IpAddr::V6(ip) => out.extend(ip.octets().iter().zip(mask).map(|(a, m)| a ^ m)),
    }
}

fn cookie_and_id(id: &TransactionId) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    m[4..].copy_from_slice(id);
    m
}

fn integrity_tag(key: &hmac::Key, before_integrity: &[u8]) -> hmac::Tag {
    // The length field must cover the MESSAGE-INTEGRITY attribute itself
    // and nothing after it (RFC 8489 §14.5).
    let length = (before_integrity.len() - HEADER_LEN + 4 + INTEGRITY_LEN) as u16;
    let mut header = [0u8; HEADER_LEN];
    header.copy_from_slice(&before_integrity[..HEADER_LEN]);
    header[2..4].copy_from_slice(&length.to_be_bytes());
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(&header);
    ctx.update(&before_integrity[HEADER_LEN..]);
    ctx.sign()
}

/// CRC-32 of the message up to the FINGERPRINT attribute at `at`, with the
/// length field covering the attribute (RFC 8489 §14.7).
fn fingerprint(bytes: &[u8], at: usize) -> u32 {
    let length = (at - HEADER_LEN + 8) as u16;
    let mut h = crc32fast::Hasher::new();
    h.update(&bytes[..2]);
    h.update(&length.to_be_bytes());
    h.update(&bytes[4..at]);
    h.finalize() ^ FINGERPRINT_XOR
}

/// Equal lengths and equal bytes, in time that depends on the length only
/// (for MACs and secrets; lengths are public).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// HMAC key for MESSAGE-INTEGRITY from a long-term key (RFC 8489 §9.2.2).
pub fn integrity_key(long_term_key: &[u8]) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, long_term_key)
}

/// Builds one message into a caller-owned buffer.
pub struct MessageWriter<'b> {
    buf: &'b mut Vec<u8>,
    transaction_id: TransactionId,
}

impl<'b> MessageWriter<'b> {
    pub fn new(buf: &'b mut Vec<u8>, class: Class, method: u16, transaction_id: TransactionId) -> Self {
        buf.clear();
        let m = method & 0x0FFF;
        let kind = (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | class.bits();
        buf.extend_from_slice(&kind.to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf.extend_from_slice(&transaction_id);
        MessageWriter { buf, transaction_id }
    }

    /// An RFC 3489 Binding success: echoes the 16-byte transaction id and
    /// carries MAPPED-ADDRESS only (the classic client knows nothing newer).
    pub fn classic_binding_success(buf: &'b mut Vec<u8>, request: &Message<'_>, mapped: SocketAddr) {
        buf.clear();
        buf.extend_from_slice(&0x0101u16.to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&request.classic_transaction_id());
        let mut w = MessageWriter {
            buf,
            transaction_id: [0; 12],
        };
        w.address(attr::MAPPED_ADDRESS, mapped);
        w.set_length();
    }

    fn begin(&mut self, typ: u16, len: usize) {
        self.buf.extend_from_slice(&typ.to_be_bytes());
        self.buf.extend_from_slice(&(len as u16).to_be_bytes());
    }

    fn pad(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }

    /// Appends a raw attribute. Values longer than 65535 bytes cannot be
    /// expressed; callers only pass bounded values (config strings are
    /// validated, nonces and tokens are fixed size).
    pub fn bytes(&mut self, typ: u16, value: &[u8]) -> &mut Self {
        debug_assert!(value.len() <= usize::from(u16::MAX));
        self.begin(typ, value.len());
        self.buf.extend_from_slice(value);
        self.pad();
        self
    }

    pub fn u32(&mut self, typ: u16, value: u32) -> &mut Self {
        self.bytes(typ, &value.to_be_bytes())
    }

    pub fn xor_address(&mut self, typ: u16, addr: SocketAddr) -> &mut Self {
        self.begin(typ, if addr.is_ipv4() { 8 } else { 20 });
        let mask = cookie_and_id(&self.transaction_id);
        encode_address(self.buf, addr, Some(&mask));
        self
    }

    pub fn address(&mut self, typ: u16, addr: SocketAddr) -> &mut Self {
        self.begin(typ, if addr.is_ipv4() { 8 } else { 20 });
        encode_address(self.buf, addr, None);
        self
    }

    /// ERROR-CODE (RFC 8489 §14.8): class and number, then a reason phrase.
    pub fn error_code(&mut self, code: u16, reason: &str) -> &mut Self {
        self.error_code_attr(attr::ERROR_CODE, 0, code, reason)
    }

    /// ADDRESS-ERROR-CODE (RFC 8656 §18.13): like ERROR-CODE with the
    /// family in the first byte.
    pub fn address_error_code(&mut self, family_v6: bool, code: u16, reason: &str) -> &mut Self {
        let family = if family_v6 { FAMILY_V6 } else { FAMILY_V4 };
        self.error_code_attr(attr::ADDRESS_ERROR_CODE, family, code, reason)
    }

    fn error_code_attr(&mut self, typ: u16, first: u8, code: u16, reason: &str) -> &mut Self {
        self.begin(typ, 4 + reason.len());
        self.buf
            .extend_from_slice(&[first, 0, (code / 100) as u8, (code % 100) as u8]);
        self.buf.extend_from_slice(reason.as_bytes());
        self.pad();
        self
    }

    pub fn unknown_attributes(&mut self, types: &[u16]) -> &mut Self {
        self.begin(attr::UNKNOWN_ATTRIBUTES, types.len() * 2);
        for t in types {
            self.buf.extend_from_slice(&t.to_be_bytes());
        }
        self.pad();
        self
    }

    fn set_length(&mut self) {
        let length = (self.buf.len() - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&length.to_be_bytes());
    }

    /// Appends MESSAGE-INTEGRITY (if a key is given) and FINGERPRINT (if
    /// asked) and fixes the length field.
    pub fn finish(mut self, integrity: Option<&hmac::Key>, with_fingerprint: bool) {
        if let Some(key) = integrity {
            let tag = integrity_tag(key, self.buf);
            self.begin(attr::MESSAGE_INTEGRITY, INTEGRITY_LEN);
            self.buf.extend_from_slice(tag.as_ref());
        }
        if with_fingerprint {
            let at = self.buf.len();
            self.begin(attr::FINGERPRINT, 4);
            self.buf.extend_from_slice(&[0; 4]);
            let crc = fingerprint(self.buf, at);
            self.buf[at + 4..at + 8].copy_from_slice(&crc.to_be_bytes());
        }
        self.set_length();
    }
}

/// Length of the Data indication header that
/// [`write_data_indication_header`] puts before a payload.
pub fn data_indication_header_len(peer: SocketAddr) -> usize {
    HEADER_LEN + 4 + if peer.is_ipv4() { 8 } else { 20 } + 4
}

/// Writes a Data indication (RFC 8656 §11.4) header carrying
/// XOR-PEER-ADDRESS and the DATA attribute header into the last
/// [`data_indication_header_len`] bytes of `headroom`, for a payload of
/// `payload_len` bytes that follows it. The caller appends
/// `padding(payload_len)` zero bytes after the payload. Returns the header
/// length, or `None` if `headroom` is too small or the payload cannot fit
/// one STUN message.
pub fn write_data_indication_header(
    headroom: &mut [u8],
    peer: SocketAddr,
    transaction_id: TransactionId,
    payload_len: usize,
) -> Option<usize> {
    let header_len = data_indication_header_len(peer);
    let body_len = header_len - HEADER_LEN + padded(payload_len);
    let body_len = u16::try_from(body_len).ok()?;
    let start = headroom.len().checked_sub(header_len)?;
    let out = &mut headroom[start..];
    let kind = 0x0017u16; // Data indication: method 0x007, class indication
    out[0..2].copy_from_slice(&kind.to_be_bytes());
    out[2..4].copy_from_slice(&body_len.to_be_bytes());
    out[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    out[8..20].copy_from_slice(&transaction_id);
    let addr_len: u16 = if peer.is_ipv4() { 8 } else { 20 };
    out[20..22].copy_from_slice(&attr::XOR_PEER_ADDRESS.to_be_bytes());
    out[22..24].copy_from_slice(&addr_len.to_be_bytes());
    let mask = cookie_and_id(&transaction_id);
    let port = peer.port() ^ (MAGIC_COOKIE >> 16) as u16;
    out[24] = 0;
    out[25] = if peer.is_ipv4() { FAMILY_V4 } else { FAMILY_V6 };
    out[26..28].copy_from_slice(&port.to_be_bytes());
    let ip_end = 28 + usize::from(addr_len) - 4;
    match peer.ip() {
        IpAddr::V4(ip) => xor_into(&mut out[28..ip_end], &ip.octets(), &mask),
        IpAddr::V6(ip) => xor_into(&mut out[28..ip_end], &ip.octets(), &mask),
    }
    out[ip_end..ip_end + 2].copy_from_slice(&attr::DATA.to_be_bytes());
    out[ip_end + 2..ip_end + 4].copy_from_slice(&(payload_len as u16).to_be_bytes());
    Some(header_len)
}

fn xor_into(out: &mut [u8], value: &[u8], mask: &[u8; 16]) {
    for ((o, v), m) in out.iter_mut().zip(value).zip(mask) {
        *o = v ^ m;
    }
}

/// Zero bytes needed after a payload of `len` to reach a 4-byte boundary.
pub fn padding(len: usize) -> usize {
    padded(len) - len
}

#[cfg(test)]
mod tests {
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
        MessageWriter::classic_binding_success(&mut out, &msg, "1.2.3.4:5".parse().unwrap());
        assert_eq!(&out[4..20], &[9; 16]);
        // Our parser accepts only classic requests, so read the answer by hand.
        assert_eq!(&out[..4], &[0x01, 0x01, 0x00, 0x0C]);
        assert_eq!(&out[20..24], &[0x00, 0x01, 0x00, 0x08]);
        let mapped = decode_address(&out[24..32]).unwrap();
        assert_eq!(mapped, "1.2.3.4:5".parse().unwrap());
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
}

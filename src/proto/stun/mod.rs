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

mod integrity;
mod writer;

pub use integrity::{integrity_key, Integrity, SHA256_INTEGRITY_LENS};
pub use writer::{data_indication_header_len, write_data_indication_header, MessageWriter};

use integrity::integrity_tag;

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
    pub const PASSWORD_ALGORITHM: u16 = 0x001D;
    pub const USERHASH: u16 = 0x001E;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    pub const RESERVATION_TOKEN: u16 = 0x0022;
    pub const PRIORITY: u16 = 0x0024;
    pub const USE_CANDIDATE: u16 = 0x0025;
    pub const CONNECTION_ID: u16 = 0x002A;
    pub const ADDITIONAL_ADDRESS_FAMILY: u16 = 0x8000;
    pub const ADDRESS_ERROR_CODE: u16 = 0x8001;
    pub const PASSWORD_ALGORITHMS: u16 = 0x8002;
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
    pub const ALL: [u16; 31] = [
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
        PASSWORD_ALGORITHM,
        USERHASH,
        XOR_MAPPED_ADDRESS,
        RESERVATION_TOKEN,
        PRIORITY,
        USE_CANDIDATE,
        CONNECTION_ID,
        ADDITIONAL_ADDRESS_FAMILY,
        ADDRESS_ERROR_CODE,
        PASSWORD_ALGORITHMS,
        SOFTWARE,
        FINGERPRINT,
        ICE_CONTROLLED,
        ICE_CONTROLLING,
    ];

    /// NAT behaviour discovery (RFC 5780 §7) and the RFC 3489 names of
    /// two of its addresses (§11.2.4, §11.2.5), which classic clients
    /// read. Binding alone understands the request attributes among them
    /// (see `proto::server::binding`), so they are not in [`ALL`].
    pub const CHANGE_REQUEST: u16 = 0x0003;
    pub const SOURCE_ADDRESS: u16 = 0x0004;
    pub const CHANGED_ADDRESS: u16 = 0x0005;
    pub const PADDING: u16 = 0x0026;
    pub const RESPONSE_PORT: u16 = 0x0027;
    pub const RESPONSE_ORIGIN: u16 = 0x802B;
    pub const OTHER_ADDRESS: u16 = 0x802C;

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
    /// Offset of the MESSAGE-INTEGRITY-SHA256 attribute header, if present
    /// where it counts (RFC 8489 §14.6: first, or right after
    /// MESSAGE-INTEGRITY).
    integrity_sha256_at: Option<usize>,
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
        let mut integrity_sha256_at = None;
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
                // Only FINGERPRINT may follow MESSAGE-INTEGRITY-SHA256,
                // and only it and FINGERPRINT may follow MESSAGE-INTEGRITY
                // (RFC 8489 §14.5, §14.6): anything else there is ignored.
                attr::MESSAGE_INTEGRITY if integrity_at.is_none() && integrity_sha256_at.is_none() => {
                    integrity_at = Some(at);
                    visible_end = at;
                }
                attr::MESSAGE_INTEGRITY_SHA256
                    if integrity_sha256_at.is_none() && integrity_at.is_none_or(|mi| mi + 4 + INTEGRITY_LEN == at) =>
                {
                    integrity_sha256_at = Some(at);
                    visible_end = visible_end.min(at);
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
            integrity_sha256_at,
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
        self.integrity_at.is_some() || self.integrity_sha256_at.is_some()
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
        self.unknown_required_beyond(&[], out)
    }

    /// [`Self::unknown_required`], with the types in `also` understood
    /// too (those a handler reads that the server does not know
    /// everywhere).
    pub fn unknown_required_beyond(&self, also: &[u16], out: &mut [u16]) -> usize {
        let mut n = 0;
        for (typ, _) in self.attributes() {
            if !attr::is_understood(typ) && !also.contains(&typ) && !out[..n].contains(&typ) {
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
        let tag = integrity_tag(key, &self.bytes[..at], INTEGRITY_LEN);
        constant_time_eq(tag.as_ref(), received)
    }

    /// Whether MESSAGE-INTEGRITY-SHA256 is there where it counts, valid
    /// or not.
    pub fn has_integrity_sha256(&self) -> bool {
        self.integrity_sha256_at.is_some()
    }

    /// The length of MESSAGE-INTEGRITY-SHA256 (16 to 32 bytes, a multiple
    /// of 4, RFC 8489 §14.6), if the message has a valid one.
    pub fn integrity_sha256_len(&self) -> Option<usize> {
        let at = self.integrity_sha256_at?;
        let (_, value) = attribute_at(self.bytes, at)?;
        (SHA256_INTEGRITY_LENS.contains(&value.len())).then_some(value.len())
    }

    /// Verifies MESSAGE-INTEGRITY-SHA256 (RFC 8489 §14.6) with
    /// HMAC-SHA256 under `key`, whole or truncated as it came, in constant
    /// time. False if it is absent or of a length the RFC does not allow.
    pub fn verify_integrity_sha256(&self, key: &hmac::Key) -> bool {
        let (Some(at), Some(len)) = (self.integrity_sha256_at, self.integrity_sha256_len()) else {
            return false;
        };
        let Some(received) = self.bytes.get(at + 4..at + 4 + len) else {
            return false;
        };
        let tag = integrity_tag(key, &self.bytes[..at], len);
        constant_time_eq(&tag.as_ref()[..len], received)
    }

    /// Verifies whichever integrity `integrity` names.
    pub fn verify(&self, integrity: &Integrity) -> bool {
        match integrity {
            Integrity::Sha1(key) => self.verify_integrity(key),
            Integrity::Sha256 { key, .. } => self.verify_integrity_sha256(key),
        }
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

/// Zero bytes needed after a payload of `len` to reach a 4-byte boundary.
pub fn padding(len: usize) -> usize {
    padded(len) - len
}

#[cfg(test)]
mod tests;

//! Writing STUN messages: [`MessageWriter`] for control-plane answers
//! (attributes appended in order, MESSAGE-INTEGRITY and FINGERPRINT last,
//! RFC 8489 §14.5, §14.7), and the Data indication header written in place
//! into a payload's headroom for the relay path (RFC 8656 §11.4), which
//! allocates nothing.

use std::net::{IpAddr, SocketAddr};

use ring::hmac;

use super::{
    attr, cookie_and_id, encode_address, fingerprint, integrity_tag, padded, Class, Integrity, Message, TransactionId,
    FAMILY_V4, FAMILY_V6, HEADER_LEN, INTEGRITY_LEN, MAGIC_COOKIE,
};

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

    /// An RFC 3489 Binding answer (`Class::Success` or `Class::Error`):
    /// echoes the 16-byte transaction id, which takes the place of the
    /// magic cookie. The classic client knows nothing newer, so the caller
    /// writes plain addresses only, and finishes without FINGERPRINT.
    pub fn classic_binding(buf: &'b mut Vec<u8>, class: Class, request: &Message<'_>) -> Self {
        buf.clear();
        buf.extend_from_slice(&(class.bits() | 0x0001).to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&request.classic_transaction_id());
        MessageWriter {
            buf,
            transaction_id: [0; 12],
        }
    }

    fn begin(&mut self, typ: u16, len: usize) {
        self.buf.extend_from_slice(&typ.to_be_bytes());
        self.buf.extend_from_slice(&(len as u16).to_be_bytes());
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
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

    /// An attribute of `len` zero bytes (RFC 5780 PADDING), which must
    /// fit the 16-bit length like any value.
    pub fn zeros(&mut self, typ: u16, len: usize) -> &mut Self {
        debug_assert!(len <= usize::from(u16::MAX));
        self.begin(typ, len);
        self.buf.resize(self.buf.len() + len, 0);
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
    pub fn finish(self, integrity: Option<&hmac::Key>, with_fingerprint: bool) {
        match integrity {
            Some(key) => self.finish_signed(&Integrity::Sha1(key.clone()), with_fingerprint),
            None => self.finish_unsigned(with_fingerprint),
        }
    }

    /// Appends the integrity attribute `integrity` names, and FINGERPRINT
    /// if asked, and fixes the length field.
    pub fn finish_signed(mut self, integrity: &Integrity, with_fingerprint: bool) {
        let (typ, key, len) = match integrity {
            Integrity::Sha1(key) => (attr::MESSAGE_INTEGRITY, key, INTEGRITY_LEN),
            Integrity::Sha256 { key, len } => (attr::MESSAGE_INTEGRITY_SHA256, key, *len),
        };
        let tag = integrity_tag(key, self.buf, len);
        self.begin(typ, len);
        self.buf.extend_from_slice(&tag.as_ref()[..len]);
        self.finish_unsigned(with_fingerprint);
    }

    fn finish_unsigned(mut self, with_fingerprint: bool) {
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

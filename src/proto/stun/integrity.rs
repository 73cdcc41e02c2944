//! Message integrity under a long-term key (RFC 8489 §14.5, §14.6):
//! MESSAGE-INTEGRITY (HMAC-SHA1, 20 bytes) and MESSAGE-INTEGRITY-SHA256
//! (HMAC-SHA256, 32 bytes or truncated to 16-28), each over the message up
//! to it with the length field covering it and nothing after.

use ring::hmac;

use super::HEADER_LEN;

/// The HMAC of a message up to an integrity attribute of `len` bytes,
/// whose length field must cover that attribute and nothing after it
/// (RFC 8489 §14.5, §14.6).
pub(super) fn integrity_tag(key: &hmac::Key, before_integrity: &[u8], len: usize) -> hmac::Tag {
    let length = (before_integrity.len() - HEADER_LEN + 4 + len) as u16;
    let mut header = [0u8; HEADER_LEN];
    header.copy_from_slice(&before_integrity[..HEADER_LEN]);
    header[2..4].copy_from_slice(&length.to_be_bytes());
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(&header);
    ctx.update(&before_integrity[HEADER_LEN..]);
    ctx.sign()
}

/// HMAC key for MESSAGE-INTEGRITY from a long-term key (RFC 8489 §9.2.2).
pub fn integrity_key(long_term_key: &[u8]) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, long_term_key)
}

/// The lengths MESSAGE-INTEGRITY-SHA256 may have (RFC 8489 §14.6).
pub const SHA256_INTEGRITY_LENS: [usize; 5] = [16, 20, 24, 28, 32];

/// How a message is signed under a long-term key: MESSAGE-INTEGRITY
/// (HMAC-SHA1, RFC 8489 §14.5), or MESSAGE-INTEGRITY-SHA256 (HMAC-SHA256,
/// §14.6) of `len` bytes, truncated below 32 as the peer chose.
#[derive(Clone, Debug)]
pub enum Integrity {
    Sha1(hmac::Key),
    Sha256 { key: hmac::Key, len: usize },
}

impl Integrity {
    pub fn sha1(long_term_key: &[u8]) -> Integrity {
        Integrity::Sha1(integrity_key(long_term_key))
    }

    /// `len` must be one of [`SHA256_INTEGRITY_LENS`] (others are taken
    /// as 32).
    pub fn sha256(long_term_key: &[u8], len: usize) -> Integrity {
        let len = if SHA256_INTEGRITY_LENS.contains(&len) { len } else { 32 };
        Integrity::Sha256 {
            key: hmac::Key::new(hmac::HMAC_SHA256, long_term_key),
            len,
        }
    }
}

//! RFC 8489's password algorithms (§9.2.2, §14.11, §14.12, §18.5), the
//! username hash (§14.4) and the STUN Security Features a nonce cookie
//! carries (§9.2.1, §18.1).
//!
//! * A long-term key is `MD5(username ":" realm ":" password)` (16 bytes,
//!   the only one RFC 5389 knew) or `SHA-256` of the same (32 bytes). The
//!   RFC runs username, realm and password through the OpaqueString
//!   profile (RFC 8265) first; like the MD5 key since RFC 5389, they are
//!   taken here as given (UTF-8), which is the same for the ASCII names
//!   and passwords deployments use.
//! * USERHASH is `SHA-256(username ":" realm)`, so a configured user can
//!   be found by it; a short-lived username (minted from a shared secret)
//!   cannot, since it is unknown until the client names it.
//! * A server that speaks RFC 8489 starts its nonces with the cookie
//!   `obMatJos2` and four base64 characters of 24 feature bits, numbered
//!   from the least significant (erratum 6290): bit 0 "password
//!   algorithms", bit 1 "username anonymity". The nonce is signed, so a
//!   man in the middle that strips a bit or the PASSWORD-ALGORITHMS list
//!   (to bid the client down to MD5) is caught: the client echoes the list
//!   it saw, under MESSAGE-INTEGRITY, and the server compares.

use base64::Engine;

/// A password algorithm (RFC 8489 §18.5), in the order of the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PasswordAlgorithm {
    Md5,
    Sha256,
}

/// Labels of [`PasswordAlgorithm`]s, for metrics, indexed by `as usize`.
pub const PASSWORD_ALGORITHMS: [&str; 2] = ["md5", "sha256"];

impl PasswordAlgorithm {
    /// Its number in the registry, as PASSWORD-ALGORITHM(S) carry it.
    pub const fn code(self) -> u16 {
        match self {
            PasswordAlgorithm::Md5 => 0x0001,
            PasswordAlgorithm::Sha256 => 0x0002,
        }
    }

    pub fn from_code(code: u16) -> Option<PasswordAlgorithm> {
        match code {
            0x0001 => Some(PasswordAlgorithm::Md5),
            0x0002 => Some(PasswordAlgorithm::Sha256),
            _ => None,
        }
    }

    pub const fn label(self) -> &'static str {
        PASSWORD_ALGORITHMS[self as usize]
    }

    /// The long-term key of `username` in `realm` with `password`.
    pub fn key(self, username: &str, realm: &str, password: &str) -> Vec<u8> {
        match self {
            PasswordAlgorithm::Md5 => super::long_term_key(username, realm, password).to_vec(),
            PasswordAlgorithm::Sha256 => sha256_key(username, realm, password).to_vec(),
        }
    }
}

/// `SHA-256(username ":" realm ":" password)` (RFC 8489 §9.2.2).
pub fn sha256_key(username: &str, realm: &str, password: &str) -> [u8; 32] {
    sha256(format!("{username}:{realm}:{password}").as_bytes())
}

/// USERHASH: `SHA-256(username ":" realm)` (RFC 8489 §14.4).
pub fn userhash(username: &str, realm: &str) -> [u8; 32] {
    sha256(format!("{username}:{realm}").as_bytes())
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// The value of PASSWORD-ALGORITHMS (RFC 8489 §14.11): each algorithm's
/// number and an empty parameter (neither MD5 nor SHA-256 has one).
pub fn encode_algorithms(algorithms: &[PasswordAlgorithm]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 * algorithms.len());
    for a in algorithms {
        out.extend_from_slice(&a.code().to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
    }
    out
}

/// PASSWORD-ALGORITHM (RFC 8489 §14.12): an algorithm this server knows,
/// with the empty parameter both have; `None` for anything else.
pub fn decode_algorithm(value: &[u8]) -> Option<PasswordAlgorithm> {
    let [a, b, 0, 0] = *value else {
        return None;
    };
    PasswordAlgorithm::from_code(u16::from_be_bytes([a, b]))
}

/// The 24 STUN Security Feature bits of a nonce cookie.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features(u32);

impl Features {
    pub const NONE: Features = Features(0);
    /// Bit 0: the server sends PASSWORD-ALGORITHMS.
    pub const PASSWORD_ALGORITHMS: Features = Features(1);
    /// Bit 1: the client may send USERHASH instead of USERNAME.
    pub const USERNAME_ANONYMITY: Features = Features(2);

    pub const fn with(self, other: Features) -> Features {
        Features(self.0 | other.0)
    }

    pub const fn contains(self, other: Features) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The three bytes the cookie encodes, most significant first.
    pub fn bytes(self) -> [u8; 3] {
        let b = self.0.to_be_bytes();
        [b[1], b[2], b[3]]
    }

    /// `obMatJos2` and the four base64 characters of the bits.
    pub fn cookie(self) -> [u8; COOKIE_LEN] {
        let mut out = [0u8; COOKIE_LEN];
        out[..COOKIE_PREFIX.len()].copy_from_slice(COOKIE_PREFIX);
        let written =
            base64::engine::general_purpose::STANDARD.encode_slice(self.bytes(), &mut out[COOKIE_PREFIX.len()..]);
        debug_assert_eq!(written, Ok(4));
        out
    }

    /// The features of the cookie `nonce` starts with, and the rest of
    /// it; `None` if it has no cookie (a nonce of RFC 5389's kind).
    pub fn from_nonce(nonce: &[u8]) -> Option<(Features, &[u8])> {
        let rest = nonce.strip_prefix(COOKIE_PREFIX)?;
        let (encoded, rest) = rest.split_at_checked(4)?;
        let mut bytes = [0u8; 3];
        match base64::engine::general_purpose::STANDARD.decode_slice(encoded, &mut bytes) {
            Ok(3) => {}
            _ => return None,
        }
        let bits = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]);
        Some((Features(bits), rest))
    }
}

/// What every nonce of an RFC 8489 server starts with (§9.2).
pub const COOKIE_PREFIX: &[u8] = b"obMatJos2";
/// The cookie: its prefix and four base64 characters of feature bits.
pub const COOKIE_LEN: usize = 13;

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn keys_and_userhash_are_sha256_of_the_joined_strings() {
        // printf 'user:realm:pass' | sha256sum
        assert_eq!(
            hex(&sha256_key("user", "realm", "pass")),
            "07e934117abd40836e7c6329b54731b2b2d2a5f9a71f544922d75e0730d8251b"
        );
        // printf 'user:realm' | sha256sum
        assert_eq!(
            hex(&userhash("user", "realm")),
            "6a3029116b47aa98bcaa325399733dc1a23cd57e26b81bef3ff6531ce624e2da"
        );
        assert_eq!(
            PasswordAlgorithm::Md5.key("user", "realm", "pass"),
            super::super::long_term_key("user", "realm", "pass")
        );
    }

    #[test]
    fn algorithms_encode_with_an_empty_parameter_and_decode_back() {
        let both = [PasswordAlgorithm::Sha256, PasswordAlgorithm::Md5];
        assert_eq!(encode_algorithms(&both), [0, 2, 0, 0, 0, 1, 0, 0]);
        assert_eq!(decode_algorithm(&[0, 2, 0, 0]), Some(PasswordAlgorithm::Sha256));
        assert_eq!(decode_algorithm(&[0, 1, 0, 0]), Some(PasswordAlgorithm::Md5));
        for bad in [&[0, 3, 0, 0][..], &[0, 2, 0, 4], &[0, 2], &[0, 2, 0, 0, 0, 0]] {
            assert_eq!(decode_algorithm(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_cookie_carries_the_bits_from_the_least_significant() {
        let both = Features::PASSWORD_ALGORITHMS.with(Features::USERNAME_ANONYMITY);
        assert_eq!(&Features::PASSWORD_ALGORITHMS.cookie(), b"obMatJos2AAAB");
        assert_eq!(&both.cookie(), b"obMatJos2AAAD");
        // The nonce of RFC 8489's own example (appendix B.1): bit 1.
        let (features, rest) = Features::from_nonce(b"obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA").unwrap();
        assert_eq!(features, Features::USERNAME_ANONYMITY);
        assert_eq!(rest, b"f//499k954d6OL34oL9FSTvy64sA");
        assert!(both.contains(Features::USERNAME_ANONYMITY) && !Features::NONE.contains(Features::USERNAME_ANONYMITY));
        for plain in [&b"f//499k9"[..], b"obMatJos2", b"obMatJos2AA", b"obMatJos2!!!!x"] {
            assert_eq!(Features::from_nonce(plain), None, "{plain:?}");
        }
    }
}

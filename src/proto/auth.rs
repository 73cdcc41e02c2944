//! Long-term credentials (RFC 8489 §9.2) and shared-secret ephemeral
//! credentials (the "TURN REST API" scheme, coturn's `use-auth-secret`).
//!
//! * A configured user has a key `MD5(username ":" realm ":" password)`,
//!   given either as the password or precomputed (coturn's `turnadmin -k`).
//! * An ephemeral username is `<unix-expiry>[:<name>]`; its password is
//!   `base64(HMAC-SHA1(secret, username))`, or, in the optional
//!   [`SecretAlgorithm::Sha256`] form, `base64(HMAC-SHA256(secret,
//!   username))` (44 characters instead of 28). Several secrets and
//!   algorithms verify at once so that either can be rotated; [`mint`] uses
//!   whichever the caller passes (the first configured ones). The same function mints for the CLI and the
//!   signaling endpoint, so what is handed out is what is verified here.
//! * Nonces are stateless: `base64url(expiry mod 2^16 || HMAC(nonce_key,
//!   expiry, client)[..4])`, 8 characters, where `expiry` is in unix
//!   seconds. Checking one costs an HMAC and no memory, so an
//!   unauthenticated source can make the server remember nothing. A nonce
//!   is only valid for the client address it was issued to (the TURN core
//!   makes one exception: an RFC 6062 ConnectionBind may carry the nonce
//!   of its control connection). The checker
//!   rebuilds the full expiry as the one instant within `nonce_ttl` (at most
//!   an hour, far below 2^15 s) ahead of now with those low 16 bits; the
//!   MAC is over the full value, so a nonce replayed 2^16 s later fails.
//!   It is short on purpose: it travels in every 401 and 438, which a
//!   spoofed source can ask for, and those answers must stay within twice
//!   the size of the request (SECURITY.md, amplification). Forging one
//!   takes 2^32 guesses per client address and gains nothing but the
//!   skipped round trip: the credential check still follows.
//!
//! * Signaling tokens gate the WebSocket endpoint: `<unix-expiry>.<sig>`
//!   with sig = base64url-nopad(HMAC-SHA256(token_secret, "<unix-expiry>")),
//!   or, bound to one room, `<unix-expiry>.<room>.<sig>` with the HMAC over
//!   `"<unix-expiry>.<room>"`, so an application backend can hand them out
//!   without talking to us. The two forms cannot be turned into each other:
//!   the signed text of the first has no `.`, that of the second has one.
//!
//! Secrets never appear in `Debug` output; MESSAGE-INTEGRITY is compared in
//! constant time (see [`super::stun::Message::verify_integrity`]).

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use base64::Engine;
use md5::{Digest, Md5};
use ring::hmac;

use super::stun::constant_time_eq;

/// A 16-byte long-term key, `MD5(username:realm:password)`.
pub type LongTermKey = [u8; 16];

pub fn long_term_key(username: &str, realm: &str, password: &str) -> LongTermKey {
    let mut h = Md5::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    h.finalize().into()
}

/// The HMAC that turns a shared secret and an ephemeral username into
/// its password. SHA-1 is the format coturn and every TURN REST API
/// backend speak; SHA-256 is for deployments that may not use SHA-1 at
/// all (HMAC-SHA1 is not broken as a MAC, but policies forbid it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretAlgorithm {
    #[default]
    Sha1,
    Sha256,
}

impl SecretAlgorithm {
    fn hmac(self) -> hmac::Algorithm {
        match self {
            SecretAlgorithm::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            SecretAlgorithm::Sha256 => hmac::HMAC_SHA256,
        }
    }
}

/// The password of an ephemeral username under `secret`.
pub fn ephemeral_password(algorithm: SecretAlgorithm, secret: &[u8], username: &str) -> String {
    let key = hmac::Key::new(algorithm.hmac(), secret);
    let tag = hmac::sign(&key, username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
}

/// The expiry of `username` read as an ephemeral username
/// (`<unix-expiry>[:<name>]`), if it has that form.
pub fn ephemeral_expiry(username: &str) -> Option<u64> {
    let expiry = username.split(':').next().unwrap_or("");
    expiry.parse().ok().filter(|_| !expiry.starts_with('+'))
}

/// A freshly minted ephemeral credential.
#[derive(Clone, PartialEq, Eq)]
pub struct Minted {
    pub username: String,
    pub password: String,
    pub expires_unix: u64,
}

impl fmt::Debug for Minted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Minted")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("expires_unix", &self.expires_unix)
            .finish()
    }
}

/// Mints an ephemeral credential valid until `now_unix + ttl`.
/// `name` must not contain ':' to keep the username unambiguous; callers
/// validate it (the name is informational only, it grants nothing).
pub fn mint(algorithm: SecretAlgorithm, secret: &[u8], name: Option<&str>, now_unix: u64, ttl: Duration) -> Minted {
    let expires_unix = now_unix.saturating_add(ttl.as_secs());
    let username = match name {
        Some(n) if !n.is_empty() => format!("{expires_unix}:{n}"),
        _ => expires_unix.to_string(),
    };
    let password = ephemeral_password(algorithm, secret, &username);
    Minted {
        username,
        password,
        expires_unix,
    }
}

/// The configured credentials, in checked form.
pub struct CredentialsConfig {
    pub realm: String,
    pub users: Vec<(String, LongTermKey)>,
    /// Shared secrets for ephemeral credentials; all of them verify.
    pub secrets: Vec<Vec<u8>>,
    /// The password forms of ephemeral credentials that verify (each with
    /// every secret); never empty in a validated config.
    pub secret_algorithms: Vec<SecretAlgorithm>,
    pub nonce_ttl: Duration,
    /// The key new nonces are made with: random bytes from the driver, so
    /// that nonces from another process or an earlier run are stale (which
    /// clients recover from with one retry), or a key the instances of a
    /// fleet share (`auth.nonce_keys`), so that any of them takes the
    /// nonces of all.
    pub nonce_key: [u8; 32],
    /// Keys whose nonces are still taken, but none is made with: the
    /// previous ones while a shared key is rotated.
    pub older_nonce_keys: Vec<[u8; 32]>,
    /// An ephemeral username whose expiry lies further ahead is refused:
    /// a leaked secret or a careless backend cannot mint credentials for
    /// years.
    pub max_credential_lifetime: Duration,
}

/// Why a username has no usable key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserError {
    /// Neither a configured user nor a well-formed ephemeral username.
    Unknown,
    /// An ephemeral username whose expiry has passed.
    Expired,
    /// An ephemeral username whose expiry lies beyond the longest
    /// lifetime this server accepts.
    TooLong,
}

impl UserError {
    pub fn reason(self) -> &'static str {
        match self {
            UserError::Unknown => "unknown user",
            UserError::Expired => "expired credential",
            UserError::TooLong => "credential lifetime beyond auth.max_credential_lifetime",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonceCheck {
    Valid,
    /// Expired, forged, or issued to another client: answer 438 with a new one.
    Stale,
}

/// Characters of a nonce: 6 bytes (the expiry's low 16 bits and a 4-byte
/// MAC) in base64url without padding.
pub const NONCE_LEN: usize = 8;
const NONCE_MAC_LEN: usize = 4;

pub struct Credentials {
    realm: String,
    users: HashMap<String, LongTermKey>,
    secrets: Vec<Vec<u8>>,
    secret_algorithms: Vec<SecretAlgorithm>,
    /// Makes nonces and checks them; `older_nonce_keys` check them too.
    nonce_key: hmac::Key,
    older_nonce_keys: Vec<hmac::Key>,
    nonce_ttl_secs: u64,
    max_lifetime_secs: u64,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("realm", &self.realm)
            .field("users", &self.users.len())
            .field("secrets", &self.secrets.len())
            .finish_non_exhaustive()
    }
}

impl Credentials {
    pub fn new(config: CredentialsConfig) -> Credentials {
        Credentials {
            realm: config.realm,
            users: config.users.into_iter().collect(),
            secrets: config.secrets,
            secret_algorithms: config.secret_algorithms,
            nonce_key: hmac::Key::new(hmac::HMAC_SHA256, &config.nonce_key),
            older_nonce_keys: config
                .older_nonce_keys
                .iter()
                .map(|key| hmac::Key::new(hmac::HMAC_SHA256, key))
                .collect(),
            // The nonce carries 16 bits of its expiry (see the module doc).
            nonce_ttl_secs: config.nonce_ttl.as_secs().clamp(1, u64::from(u16::MAX / 2)),
            max_lifetime_secs: config.max_credential_lifetime.as_secs(),
        }
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// The candidate keys for `username`: one for a configured user, one
    /// per shared secret for an ephemeral username. The caller tries each
    /// against MESSAGE-INTEGRITY.
    pub fn keys_for(&self, username: &str, now_unix: u64) -> Result<Vec<LongTermKey>, UserError> {
        if let Some(key) = self.users.get(username) {
            return Ok(vec![*key]);
        }
        let expiry = self.ephemeral_expiry(username)?;
        if expiry <= now_unix {
            return Err(UserError::Expired);
        }
        if expiry - now_unix > self.max_lifetime_secs {
            return Err(UserError::TooLong);
        }
        Ok(self.ephemeral_keys(username))
    }

    /// The keys of an ephemeral username whatever its expiry: for the
    /// allocation it created, which may keep refreshing after it expires
    /// (see SECURITY.md, "a credential that expires during a call").
    pub fn keys_past_expiry(&self, username: &str) -> Result<Vec<LongTermKey>, UserError> {
        self.ephemeral_expiry(username)?;
        Ok(self.ephemeral_keys(username))
    }

    /// The expiry of a well-formed ephemeral username, if secrets are set.
    fn ephemeral_expiry(&self, username: &str) -> Result<u64, UserError> {
        if self.secrets.is_empty() {
            return Err(UserError::Unknown);
        }
        ephemeral_expiry(username).ok_or(UserError::Unknown)
    }

    fn ephemeral_keys(&self, username: &str) -> Vec<LongTermKey> {
        self.secret_algorithms
            .iter()
            .flat_map(|algorithm| {
                self.secrets.iter().map(|secret| {
                    let password = ephemeral_password(*algorithm, secret, username);
                    long_term_key(username, &self.realm, &password)
                })
            })
            .collect()
    }

    fn nonce_mac(key: &hmac::Key, expiry: u64, client: SocketAddr) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(key);
        ctx.update(&expiry.to_be_bytes());
        match client.ip() {
            IpAddr::V4(ip) => ctx.update(&ip.octets()),
            IpAddr::V6(ip) => ctx.update(&ip.octets()),
        }
        ctx.update(&client.port().to_be_bytes());
        ctx.sign()
    }

    pub fn make_nonce(&self, client: SocketAddr, now_unix: u64) -> [u8; NONCE_LEN] {
        let expiry = now_unix.saturating_add(self.nonce_ttl_secs);
        let mut raw = [0u8; 2 + NONCE_MAC_LEN];
        raw[..2].copy_from_slice(&(expiry as u16).to_be_bytes());
        let mac = Self::nonce_mac(&self.nonce_key, expiry, client);
        raw[2..].copy_from_slice(&mac.as_ref()[..NONCE_MAC_LEN]);
        let mut out = [0u8; NONCE_LEN];
        let written = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_slice(raw, &mut out);
        debug_assert_eq!(written, Ok(NONCE_LEN));
        out
    }

    pub fn check_nonce(&self, nonce: &[u8], client: SocketAddr, now_unix: u64) -> NonceCheck {
        if nonce.len() != NONCE_LEN {
            return NonceCheck::Stale;
        }
        let mut raw = [0u8; 2 + NONCE_MAC_LEN];
        match base64::engine::general_purpose::URL_SAFE_NO_PAD.decode_slice(nonce, &mut raw) {
            Ok(n) if n == raw.len() => {}
            _ => return NonceCheck::Stale,
        }
        let (low, mac) = raw.split_at(2);
        // The one expiry ahead of now, within the nonce lifetime, with these
        // low bits; anything else is expired (or forged, or from 2^16 s ago).
        let ahead = u64::from(u16::from_be_bytes([low[0], low[1]]).wrapping_sub(now_unix as u16));
        if ahead == 0 || ahead > self.nonce_ttl_secs {
            return NonceCheck::Stale;
        }
        let expiry = now_unix.saturating_add(ahead);
        let made_here = std::iter::once(&self.nonce_key)
            .chain(&self.older_nonce_keys)
            .any(|key| {
                let expected = Self::nonce_mac(key, expiry, client);
                constant_time_eq(&expected.as_ref()[..NONCE_MAC_LEN], mac)
            });
        match made_here {
            true => NonceCheck::Valid,
            false => NonceCheck::Stale,
        }
    }
}

/// What a valid signaling token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalingGrant {
    /// The only room the holder may join; `None`: any room.
    pub room: Option<String>,
}

/// A signaling token valid until `expires_unix`; with `room`, valid for
/// that room only. `room` must not contain `.` (room names never do).
pub fn signaling_token(secret: &[u8], expires_unix: u64, room: Option<&str>) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let signed = match room {
        None => expires_unix.to_string(),
        Some(room) => format!("{expires_unix}.{room}"),
    };
    let tag = hmac::sign(&key, signed.as_bytes());
    format!(
        "{signed}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())
    )
}

/// What `token` grants if it was made by [`signaling_token`] with `secret`
/// and has not expired at `now_unix`; `None` otherwise. The signature is
/// checked in constant time.
pub fn verify_signaling_token(secret: &[u8], token: &str, now_unix: u64) -> Option<SignalingGrant> {
    let (signed, signature) = token.rsplit_once('.')?;
    let (expiry, room) = match signed.split_once('.') {
        None => (signed, None),
        Some((_, room)) if room.is_empty() || room.contains('.') => return None,
        Some((expiry, room)) => (expiry, Some(room)),
    };
    let expires = expiry.parse::<u64>().ok()?;
    let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(signature)
        .ok()?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    (expires > now_unix && hmac::verify(&key, signed.as_bytes(), &tag).is_ok()).then(|| SignalingGrant {
        room: room.map(str::to_owned),
    })
}

/// Compares two secrets without a timing signal about where they differ
/// (both are hashed first, so not even their lengths leak).
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (
        ring::digest::digest(&ring::digest::SHA256, a),
        ring::digest::digest(&ring::digest::SHA256, b),
    );
    constant_time_eq(a.as_ref(), b.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials(secrets: &[&str]) -> Credentials {
        Credentials::new(CredentialsConfig {
            realm: "turnpike".into(),
            users: vec![("alice".into(), long_term_key("alice", "turnpike", "s3cret"))],
            secrets: secrets.iter().map(|s| s.as_bytes().to_vec()).collect(),
            secret_algorithms: vec![SecretAlgorithm::Sha1],
            nonce_ttl: Duration::from_secs(600),
            nonce_key: [7; 32],
            older_nonce_keys: Vec::new(),
            max_credential_lifetime: Duration::from_secs(7 * 24 * 3600),
        })
    }

    #[test]
    fn long_term_key_is_md5_of_user_realm_password() {
        // printf 'user:realm:pass' | md5sum
        let key = long_term_key("user", "realm", "pass");
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "8493fbc53ba582fb4c044c456bdc40eb");
    }

    #[test]
    fn ephemeral_password_matches_coturn_rest_api_format() {
        // echo -n '1700000000:bob' | openssl dgst -sha1 -hmac secret -binary | base64
        assert_eq!(
            ephemeral_password(SecretAlgorithm::Sha1, b"secret", "1700000000:bob"),
            "YeMuUjjOaxvglmPbYS9o30UEIYg="
        );
        // echo -n '1700000000:bob' | openssl dgst -sha256 -hmac secret -binary | base64
        assert_eq!(
            ephemeral_password(SecretAlgorithm::Sha256, b"secret", "1700000000:bob"),
            "qZWbvdrJmVRuW8RVbd4+pVCN3MqtXwlYhRnJEzDRnrw="
        );
    }

    #[test]
    fn every_configured_algorithm_verifies_with_every_secret_and_no_other() {
        let mut c = credentials(&["new", "old"]);
        let sha256 = mint(
            SecretAlgorithm::Sha256,
            b"old",
            Some("bob"),
            1000,
            Duration::from_secs(60),
        );
        let sha256_key = long_term_key(&sha256.username, "turnpike", &sha256.password);
        assert!(
            !c.keys_for(&sha256.username, 1000).unwrap().contains(&sha256_key),
            "SHA-1 only by default"
        );
        c.secret_algorithms = vec![SecretAlgorithm::Sha256, SecretAlgorithm::Sha1];
        let keys = c.keys_for(&sha256.username, 1000).unwrap();
        assert_eq!(keys.len(), 4, "two algorithms times two secrets");
        assert!(keys.contains(&sha256_key));
        let sha1 = mint(
            SecretAlgorithm::Sha1,
            b"new",
            Some("bob"),
            1000,
            Duration::from_secs(60),
        );
        let sha1_key = long_term_key(&sha1.username, "turnpike", &sha1.password);
        assert!(
            c.keys_for(&sha1.username, 1000).unwrap().contains(&sha1_key),
            "SHA-1 still verifies"
        );
    }

    #[test]
    fn configured_user_has_one_key() {
        let c = credentials(&[]);
        assert_eq!(
            c.keys_for("alice", 0).unwrap(),
            vec![long_term_key("alice", "turnpike", "s3cret")]
        );
        assert_eq!(c.keys_for("mallory", 0), Err(UserError::Unknown));
    }

    #[test]
    fn ephemeral_username_is_valid_until_its_expiry_under_every_secret() {
        let c = credentials(&["new", "old"]);
        let minted = mint(
            SecretAlgorithm::Sha1,
            b"old",
            Some("bob"),
            1000,
            Duration::from_secs(60),
        );
        assert_eq!(minted.username, "1060:bob");
        let keys = c.keys_for(&minted.username, 1059).unwrap();
        let expected = long_term_key(&minted.username, "turnpike", &minted.password);
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[1], expected, "the second (rotated-out) secret still verifies");
        assert_eq!(c.keys_for(&minted.username, 1060), Err(UserError::Expired));
    }

    #[test]
    fn ephemeral_usernames_need_a_secret_and_a_numeric_expiry() {
        assert_eq!(credentials(&[]).keys_for("99999999999", 0), Err(UserError::Unknown));
        let c = credentials(&["s"]);
        assert_eq!(c.keys_for("bob", 0), Err(UserError::Unknown));
        assert_eq!(c.keys_for("+5000:bob", 0), Err(UserError::Unknown));
        assert_eq!(c.keys_for("", 0), Err(UserError::Unknown));
        assert!(c.keys_for("5000", 0).is_ok());
    }

    fn with_nonce_keys(key: u8, older: &[u8]) -> Credentials {
        Credentials::new(CredentialsConfig {
            realm: "turnpike".into(),
            users: Vec::new(),
            secrets: Vec::new(),
            secret_algorithms: vec![SecretAlgorithm::Sha1],
            nonce_ttl: Duration::from_secs(600),
            nonce_key: [key; 32],
            older_nonce_keys: older.iter().map(|k| [*k; 32]).collect(),
            max_credential_lifetime: Duration::from_secs(7 * 24 * 3600),
        })
    }

    #[test]
    fn instances_sharing_a_nonce_key_take_each_others_nonces_through_a_rotation() {
        let client: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let (a, b, other) = (
            with_nonce_keys(1, &[]),
            with_nonce_keys(1, &[]),
            with_nonce_keys(9, &[]),
        );
        let nonce = a.make_nonce(client, 1000);
        assert_eq!(b.check_nonce(&nonce, client, 1001), NonceCheck::Valid);
        assert_eq!(other.check_nonce(&nonce, client, 1001), NonceCheck::Stale);
        // Rotated to key 2 with key 1 kept: old nonces pass, new ones are
        // made with key 2 and pass where key 2 is known.
        let rotated = with_nonce_keys(2, &[1]);
        assert_eq!(rotated.check_nonce(&nonce, client, 1001), NonceCheck::Valid);
        let fresh = rotated.make_nonce(client, 1001);
        assert_eq!(
            with_nonce_keys(2, &[]).check_nonce(&fresh, client, 1002),
            NonceCheck::Valid
        );
        assert_eq!(a.check_nonce(&fresh, client, 1002), NonceCheck::Stale);
    }

    #[test]
    fn nonce_is_valid_for_its_client_until_it_expires() {
        let c = credentials(&[]);
        let client: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let nonce = c.make_nonce(client, 1000);
        assert_eq!(c.check_nonce(&nonce, client, 1000), NonceCheck::Valid);
        assert_eq!(c.check_nonce(&nonce, client, 1599), NonceCheck::Valid);
        assert_eq!(c.check_nonce(&nonce, client, 1600), NonceCheck::Stale);
        let other: SocketAddr = "192.0.2.1:5001".parse().unwrap();
        assert_eq!(c.check_nonce(&nonce, other, 1000), NonceCheck::Stale);
        assert_eq!(nonce.len(), NONCE_LEN);
    }

    #[test]
    fn a_nonce_carrying_16_bits_of_its_expiry_does_not_come_back_2_to_the_16_seconds_later() {
        let c = credentials(&[]);
        let client: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        // Across a wrap of the low 16 bits, too.
        let near_wrap = 65_536 * 3 - 300;
        let nonce = c.make_nonce(client, near_wrap);
        assert_eq!(c.check_nonce(&nonce, client, near_wrap + 599), NonceCheck::Valid);
        for later in [65_536, 2 * 65_536] {
            assert_eq!(c.check_nonce(&nonce, client, near_wrap + later), NonceCheck::Stale);
            assert_eq!(c.check_nonce(&nonce, client, near_wrap + later + 10), NonceCheck::Stale);
        }
    }

    #[test]
    fn forged_or_malformed_nonces_are_stale() {
        let c = credentials(&[]);
        let client: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let mut nonce = c.make_nonce(client, 1000);
        // Push the expiry far out without the key: the MAC no longer matches.
        nonce[0] = b'f';
        assert_eq!(c.check_nonce(&nonce, client, 1000), NonceCheck::Stale);
        assert_eq!(c.check_nonce(b"short", client, 1000), NonceCheck::Stale);
        assert_eq!(c.check_nonce(&[b'Z'; NONCE_LEN], client, 1000), NonceCheck::Stale);
    }

    #[test]
    fn minted_password_is_redacted_in_debug_output() {
        let m = mint(SecretAlgorithm::Sha1, b"s", None, 0, Duration::from_secs(1));
        assert!(!format!("{m:?}").contains(&m.password));
    }

    #[test]
    fn signaling_tokens_verify_until_they_expire_and_only_under_their_secret() {
        let token = signaling_token(b"k", 2000, None);
        assert!(token.starts_with("2000."));
        let any_room = Some(SignalingGrant { room: None });
        assert_eq!(verify_signaling_token(b"k", &token, 1999), any_room);
        assert_eq!(verify_signaling_token(b"k", &token, 2000), None, "expired");
        assert_eq!(verify_signaling_token(b"other", &token, 1999), None);
        let forged = token.replacen("2000", "9000", 1);
        assert_eq!(verify_signaling_token(b"k", &forged, 1999), None, "expiry is signed");
        for junk in [
            "", ".", "2000", "2000.", "x.y", "2000.!!!", "2000..x", "2000.r.", ".r.x",
        ] {
            assert_eq!(verify_signaling_token(b"k", junk, 0), None, "{junk:?}");
        }
    }

    #[test]
    fn a_room_token_names_its_room_and_the_room_is_signed() {
        let token = signaling_token(b"k", 2000, Some("standup"));
        assert!(token.starts_with("2000.standup."), "{token}");
        assert_eq!(
            verify_signaling_token(b"k", &token, 1999),
            Some(SignalingGrant {
                room: Some("standup".to_owned())
            })
        );
        let moved = token.replacen("standup", "other", 1);
        assert_eq!(verify_signaling_token(b"k", &moved, 1999), None, "room is signed");
        // Dropping the room does not leave a token for any room.
        let (_, signature) = token.rsplit_once('.').unwrap();
        assert_eq!(verify_signaling_token(b"k", &format!("2000.{signature}"), 1999), None);
        let extra = token.replacen("standup", "stand.up", 1);
        assert_eq!(verify_signaling_token(b"k", &extra, 1999), None);
    }

    #[test]
    fn secrets_equal_compares_whole_values() {
        assert!(secrets_equal(b"abc", b"abc"));
        assert!(!secrets_equal(b"abc", b"abd"));
        assert!(!secrets_equal(b"abc", b"abcd"));
        assert!(!secrets_equal(b"", b"a"));
    }
}

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

mod algorithm;

pub use algorithm::{
    decode_algorithm, encode_algorithms, sha256_key, userhash, Features, PasswordAlgorithm, COOKIE_LEN,
    PASSWORD_ALGORITHMS,
};

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
    /// SHA-256 keys of configured users (RFC 8489 §9.2.2), beside `users`'
    /// MD5 ones; a user may have either or both.
    pub users_sha256: Vec<(String, [u8; 32])>,
    /// The password algorithms taken, in the order offered (RFC 8489
    /// §9.2.1); never empty in a validated config. `[Md5]` alone is
    /// RFC 5389's mechanism, with no offer made.
    pub password_algorithms: Vec<PasswordAlgorithm>,
    /// Offer username anonymity: USERHASH finds configured users.
    pub userhash: bool,
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
/// MAC) in base64url without padding, after the RFC 8489 cookie when
/// features are offered.
pub const NONCE_LEN: usize = 8;
const NONCE_MAC_LEN: usize = 4;

/// A nonce as sent: [`NONCE_LEN`] characters, or [`COOKIE_LEN`] more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nonce {
    bytes: [u8; COOKIE_LEN + NONCE_LEN],
    len: usize,
}

impl AsRef<[u8]> for Nonce {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl std::ops::Deref for Nonce {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_ref()
    }
}

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
    users_sha256: HashMap<String, [u8; 32]>,
    /// Configured users by USERHASH, when username anonymity is offered.
    by_userhash: HashMap<[u8; 32], String>,
    algorithms: Vec<PasswordAlgorithm>,
    /// PASSWORD-ALGORITHMS as offered, to compare the client's echo with.
    algorithms_value: Vec<u8>,
    features: Features,
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
        let algorithms = match config.password_algorithms.is_empty() {
            true => vec![PasswordAlgorithm::Md5],
            false => config.password_algorithms,
        };
        let mut features = Features::NONE;
        if algorithms != [PasswordAlgorithm::Md5] {
            features = features.with(Features::PASSWORD_ALGORITHMS);
        }
        let by_userhash = match config.userhash {
            true => {
                features = features.with(Features::USERNAME_ANONYMITY);
                let names = config
                    .users
                    .iter()
                    .map(|(n, _)| n)
                    .chain(config.users_sha256.iter().map(|(n, _)| n));
                names.map(|n| (userhash(n, &config.realm), n.clone())).collect()
            }
            false => HashMap::new(),
        };
        Credentials {
            users_sha256: config.users_sha256.into_iter().collect(),
            by_userhash,
            algorithms_value: encode_algorithms(&algorithms),
            algorithms,
            features,
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

    /// What this server's nonces announce (RFC 8489 §9.2.1).
    pub fn features(&self) -> Features {
        self.features
    }

    /// The algorithms taken, in the order offered.
    pub fn password_algorithms(&self) -> &[PasswordAlgorithm] {
        &self.algorithms
    }

    /// PASSWORD-ALGORITHMS as this server sends it.
    pub fn password_algorithms_value(&self) -> &[u8] {
        &self.algorithms_value
    }

    /// The configured user whose USERHASH is `hash`, if username
    /// anonymity is offered.
    pub fn username_for_hash(&self, hash: &[u8]) -> Option<&str> {
        let hash: &[u8; 32] = hash.try_into().ok()?;
        self.by_userhash.get(hash).map(String::as_str)
    }

    /// The candidate `algorithm` keys for `username`: one for a
    /// configured user, one per shared secret and secret algorithm for an
    /// ephemeral username. The caller tries each against the message's
    /// integrity. A configured user without a key of that algorithm is
    /// unknown to it.
    pub fn keys_for(
        &self,
        username: &str,
        algorithm: PasswordAlgorithm,
        now_unix: u64,
    ) -> Result<Vec<Vec<u8>>, UserError> {
        let configured = match algorithm {
            PasswordAlgorithm::Md5 => self.users.get(username).map(|k| k.to_vec()),
            PasswordAlgorithm::Sha256 => self.users_sha256.get(username).map(|k| k.to_vec()),
        };
        if let Some(key) = configured {
            return Ok(vec![key]);
        }
        if self.users.contains_key(username) || self.users_sha256.contains_key(username) {
            return Err(UserError::Unknown);
        }
        let expiry = self.ephemeral_expiry(username)?;
        if expiry <= now_unix {
            return Err(UserError::Expired);
        }
        if expiry - now_unix > self.max_lifetime_secs {
            return Err(UserError::TooLong);
        }
        Ok(self.ephemeral_keys(username, algorithm))
    }

    /// The keys of an ephemeral username whatever its expiry: for the
    /// allocation it created, which may keep refreshing after it expires
    /// (see SECURITY.md, "a credential that expires during a call").
    pub fn keys_past_expiry(&self, username: &str, algorithm: PasswordAlgorithm) -> Result<Vec<Vec<u8>>, UserError> {
        self.ephemeral_expiry(username)?;
        Ok(self.ephemeral_keys(username, algorithm))
    }

    /// The expiry of a well-formed ephemeral username, if secrets are set.
    fn ephemeral_expiry(&self, username: &str) -> Result<u64, UserError> {
        if self.secrets.is_empty() {
            return Err(UserError::Unknown);
        }
        ephemeral_expiry(username).ok_or(UserError::Unknown)
    }

    fn ephemeral_keys(&self, username: &str, algorithm: PasswordAlgorithm) -> Vec<Vec<u8>> {
        self.secret_algorithms
            .iter()
            .flat_map(|secret_algorithm| {
                self.secrets.iter().map(|secret| {
                    let password = ephemeral_password(*secret_algorithm, secret, username);
                    algorithm.key(username, &self.realm, &password)
                })
            })
            .collect()
    }

    /// The MAC of a nonce; `features` are signed with it (when there are
    /// any, so that nonces without a cookie keep their form), so a cookie
    /// with a bit stripped is a forged nonce.
    fn nonce_mac(key: &hmac::Key, expiry: u64, client: SocketAddr, features: Features) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(key);
        ctx.update(&expiry.to_be_bytes());
        match client.ip() {
            IpAddr::V4(ip) => ctx.update(&ip.octets()),
            IpAddr::V6(ip) => ctx.update(&ip.octets()),
        }
        ctx.update(&client.port().to_be_bytes());
        if !features.is_empty() {
            ctx.update(&features.bytes());
        }
        ctx.sign()
    }

    /// A nonce for `client`, with the cookie of `features` unless they are
    /// none (RFC 8489 §9.2.1).
    pub fn make_nonce(&self, client: SocketAddr, now_unix: u64, features: Features) -> Nonce {
        let expiry = now_unix.saturating_add(self.nonce_ttl_secs);
        let mut raw = [0u8; 2 + NONCE_MAC_LEN];
        raw[..2].copy_from_slice(&(expiry as u16).to_be_bytes());
        let mac = Self::nonce_mac(&self.nonce_key, expiry, client, features);
        raw[2..].copy_from_slice(&mac.as_ref()[..NONCE_MAC_LEN]);
        let mut out = Nonce {
            bytes: [0; COOKIE_LEN + NONCE_LEN],
            len: NONCE_LEN,
        };
        let mut at = 0;
        if !features.is_empty() {
            out.bytes[..COOKIE_LEN].copy_from_slice(&features.cookie());
            at = COOKIE_LEN;
            out.len += COOKIE_LEN;
        }
        let written = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_slice(raw, &mut out.bytes[at..]);
        debug_assert_eq!(written, Ok(NONCE_LEN));
        out
    }

    pub fn check_nonce(&self, nonce: &[u8], client: SocketAddr, now_unix: u64) -> NonceCheck {
        let (features, nonce) = Features::from_nonce(nonce).unwrap_or((Features::NONE, nonce));
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
                let expected = Self::nonce_mac(key, expiry, client, features);
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
mod tests;

//! `[auth]` and its `[[auth.users]]`: shared secrets for short-lived
//! credentials, long-term users, credential and nonce lifetimes, nonce
//! keys; and what follows from them: the secrets in use and each user's
//! long-term key.
//!
//! This file holds the section's structs, their defaults, the doc comment
//! on each field that is the reference for its key, and its rules:
//! [`check`] (secrets non-empty and no example's placeholder, algorithms,
//! lifetimes in range, nonce keys, every user valid and unique) and
//! [`read_secrets`] (`secrets` then `secrets_file`, which `Config::validate`
//! stores in `resolved_secrets` once every rule holds). User keys live here
//! because they follow the rules of `check_user`: a user those rules would
//! refuse gets a key nobody can match.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::value::{check_not_placeholder, secret_lines};
use super::{Config, ConfigError, Secret, SecretAlgorithm};
use crate::proto::auth::{self, PasswordAlgorithm};

/// USERNAME holds fewer than 509 bytes (RFC 8489 §14.3).
const MAX_USERNAME_BYTES: usize = 508;

/// Most `auth.nonce_keys` (each is tried on every nonce check).
const MAX_NONCE_KEYS: usize = 4;
/// Shortest `auth.nonce_keys` entry.
const MIN_NONCE_KEY_CHARS: usize = 16;
/// Bounds of `auth.nonce_ttl`.
const MIN_NONCE_TTL: Duration = Duration::from_secs(10);
const MAX_NONCE_TTL: Duration = Duration::from_secs(3600);
/// Upper bound of `auth.max_credential_lifetime`: 10 years.
const MAX_CREDENTIAL_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// `[auth]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    /// Shared secrets for short-lived credentials (the "TURN REST API"
    /// scheme, coturn's `use-auth-secret`): username
    /// `<unix-expiry>[:<name>]`, password
    /// base64(HMAC-SHA1(secret, username)). The first secret mints
    /// (`turnpike credentials`, signaling) and all of them verify, so a
    /// secret is rotated by putting the new one first and removing the old
    /// one once `credential_ttl` has passed. Each must be non-empty. With no
    /// secrets and no users the server generates a random secret at start,
    /// for the demo. Default: `[]`.
    pub secrets: Vec<Secret>,
    /// The HMAC of short-lived credentials' passwords: `"sha1"` (coturn's
    /// format, what TURN REST API backends compute) or `"sha256"`
    /// (base64(HMAC-SHA256(secret, username)), for policies without
    /// SHA-1). The first mints (`turnpike credentials`, signaling) and all
    /// of them verify, so `["sha256", "sha1"]` moves a fleet and its
    /// backends over without a flag day. Non-empty, no repeats. Default:
    /// `["sha1"]`.
    pub secret_algorithms: Vec<SecretAlgorithm>,
    /// File with more shared secrets, appended after `secrets`: one secret
    /// per line, surrounding whitespace trimmed, empty lines and lines
    /// starting with `#` skipped. Keeps secrets out of the TOML. A relative
    /// path is taken from the config file's directory. A file that cannot be
    /// read or holds no secret is an error. Default: unset.
    pub secrets_file: Option<PathBuf>,
    /// Lifetime of minted short-lived credentials. At least 1s. Default:
    /// `"24h"`.
    #[serde(with = "humantime_serde")]
    pub credential_ttl: Duration,
    /// Longest lifetime of a short-lived credential this server accepts:
    /// a username whose expiry lies further ahead is refused (401), so a
    /// backend cannot mint credentials that live for years. At least
    /// `credential_ttl`, at most 10 years. Default: `"7d"`.
    #[serde(with = "humantime_serde")]
    pub max_credential_lifetime: Duration,
    /// Age after which a nonce is answered with 438 Stale Nonce and the
    /// client retries with a fresh one. Between 10s and 1h. Default: `"10m"`.
    #[serde(with = "humantime_serde")]
    pub nonce_ttl: Duration,
    /// Keys for nonces shared by the instances of a fleet, so that a
    /// client sent by DNS or a load balancer to another instance than the
    /// one that challenged it is not answered 438 Stale Nonce first. The
    /// first makes nonces and all of them check them, so a key is rotated
    /// (with a reload, no restart) by putting the new one first and
    /// dropping the old one once `nonce_ttl` has passed. At most 4, each at
    /// least 16 characters. Default: `[]`, a random key per process.
    pub nonce_keys: Vec<Secret>,
    /// Long-term credential users, one `[[auth.users]]` table each.
    /// Default: none.
    pub users: Vec<User>,
    /// The password algorithms of long-term credentials (RFC 8489 §9.2.1),
    /// in the order offered: `["md5"]` is RFC 5389's mechanism, which every
    /// client speaks, and makes no offer; `["sha256", "md5"]` offers
    /// SHA-256 keys (and MESSAGE-INTEGRITY-SHA256) to the clients that know
    /// RFC 8489 and still takes MD5 from the rest; `["sha256"]` requires
    /// SHA-256 (clients without it cannot authenticate). Over UDP the offer
    /// is made only where the challenge stays within twice the request
    /// (docs/turn.md). Non-empty, no repeats. Default: `["md5"]`.
    pub password_algorithms: Vec<PasswordAlgorithm>,
    /// Offer username anonymity (RFC 8489 §14.4): a client may send
    /// USERHASH, SHA-256(name:realm), instead of its username. Only
    /// configured users can be found that way (a short-lived username is
    /// unknown until a client names it). Default: `false`.
    pub userhash: bool,
    /// Every shared secret in order: `secrets`, then those read from
    /// `secrets_file`; the first one mints. Filled by [`Config::validate`]
    /// (empty before it) and not a TOML key.
    #[serde(skip)]
    pub resolved_secrets: Vec<Secret>,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            secrets: Vec::new(),
            secret_algorithms: vec![SecretAlgorithm::Sha1],
            secrets_file: None,
            credential_ttl: Duration::from_secs(24 * 3600),
            max_credential_lifetime: Duration::from_secs(7 * 24 * 3600),
            nonce_ttl: Duration::from_secs(600),
            nonce_keys: Vec::new(),
            users: Vec::new(),
            password_algorithms: vec![PasswordAlgorithm::Md5],
            userhash: false,
            resolved_secrets: Vec::new(),
        }
    }
}

impl AuthSection {
    /// The secret new short-lived credentials are minted with: the first of
    /// [`resolved_secrets`](Self::resolved_secrets), if any.
    pub fn minting_secret(&self) -> Option<&Secret> {
        self.resolved_secrets.first()
    }

    /// The password form new short-lived credentials are minted in.
    pub fn minting_algorithm(&self) -> SecretAlgorithm {
        self.secret_algorithms.first().copied().unwrap_or_default()
    }
}

/// One `[[auth.users]]` table: a long-term credential user.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct User {
    /// User name, as the client sends it in USERNAME. Non-empty, fewer than
    /// 509 bytes (RFC 8489 §14.3), no control characters, unique.
    pub name: String,
    /// Password; the key is then MD5(name:realm:password) (RFC 8489 §9.2.2).
    /// Exactly one of `password` and `key`.
    pub password: Option<Secret>,
    /// Precomputed key instead of a password: 32 hex digits of
    /// MD5(name:realm:password), as coturn's `turnadmin -k` prints, so the
    /// password itself stays out of the config. Only valid for the realm it
    /// was computed with. Either `password`, or `key` and/or `key_sha256`
    /// (`turnpike credentials --user` prints both).
    pub key: Option<Secret>,
    /// Precomputed RFC 8489 key instead of a password: 64 hex digits of
    /// SHA-256(name:realm:password), for `auth.password_algorithms` with
    /// `"sha256"`.
    pub key_sha256: Option<Secret>,
}

pub(super) fn check(auth: &AuthSection) -> Result<(), ConfigError> {
    for (i, secret) in auth.secrets.iter().enumerate() {
        if secret.expose().trim().is_empty() {
            return Err(ConfigError::invalid(format!("auth.secrets[{i}]"), "is empty"));
        }
        check_not_placeholder(&format!("auth.secrets[{i}]"), secret)?;
    }
    let algorithms = &auth.secret_algorithms;
    if algorithms.is_empty() {
        return Err(ConfigError::invalid(
            "auth.secret_algorithms",
            "is empty; name \"sha1\" (the default), \"sha256\" or both",
        ));
    }
    if algorithms.iter().enumerate().any(|(i, a)| algorithms[..i].contains(a)) {
        return Err(ConfigError::invalid(
            "auth.secret_algorithms",
            "names an algorithm twice",
        ));
    }
    if auth.credential_ttl < Duration::from_secs(1) {
        return Err(ConfigError::invalid(
            "auth.credential_ttl",
            format!(
                "{} is too short; it must be at least 1s",
                humantime::format_duration(auth.credential_ttl)
            ),
        ));
    }
    if auth.max_credential_lifetime < auth.credential_ttl || auth.max_credential_lifetime > MAX_CREDENTIAL_LIFETIME {
        return Err(ConfigError::invalid(
            "auth.max_credential_lifetime",
            format!(
                "{} is out of range; it must be between auth.credential_ttl ({}) and 10 years",
                humantime::format_duration(auth.max_credential_lifetime),
                humantime::format_duration(auth.credential_ttl)
            ),
        ));
    }
    if auth.nonce_ttl < MIN_NONCE_TTL || auth.nonce_ttl > MAX_NONCE_TTL {
        return Err(ConfigError::invalid(
            "auth.nonce_ttl",
            format!(
                "{} is out of range; it must be between 10s and 1h",
                humantime::format_duration(auth.nonce_ttl)
            ),
        ));
    }
    if auth.nonce_keys.len() > MAX_NONCE_KEYS {
        return Err(ConfigError::invalid(
            "auth.nonce_keys",
            format!("{} keys; at most {MAX_NONCE_KEYS}", auth.nonce_keys.len()),
        ));
    }
    if let Some(i) = auth
        .nonce_keys
        .iter()
        .position(|k| k.expose().chars().count() < MIN_NONCE_KEY_CHARS)
    {
        return Err(ConfigError::invalid(
            "auth.nonce_keys",
            format!("key {i} is shorter than {MIN_NONCE_KEY_CHARS} characters: anyone could forge nonces"),
        ));
    }
    let taken = &auth.password_algorithms;
    if taken.is_empty() {
        return Err(ConfigError::invalid(
            "auth.password_algorithms",
            "is empty; name \"md5\" (the default), \"sha256\" or both",
        ));
    }
    if taken.iter().enumerate().any(|(i, a)| taken[..i].contains(a)) {
        return Err(ConfigError::invalid(
            "auth.password_algorithms",
            "names an algorithm twice",
        ));
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, user) in auth.users.iter().enumerate() {
        check_user(i, user)?;
        let usable = user.password.is_some()
            || user.key.is_some() && taken.contains(&PasswordAlgorithm::Md5)
            || user.key_sha256.is_some() && taken.contains(&PasswordAlgorithm::Sha256);
        if !usable {
            return Err(ConfigError::invalid(
                format!("auth.users[{i}]"),
                format!(
                    "user {:?} has no key of any algorithm in auth.password_algorithms: it could never authenticate",
                    user.name
                ),
            ));
        }
        if let Some(first) = seen.insert(&user.name, i) {
            return Err(ConfigError::invalid(
                format!("auth.users[{i}].name"),
                format!("user {:?} is already defined by auth.users[{first}]", user.name),
            ));
        }
    }
    Ok(())
}

/// `auth.secrets` followed by the secrets in `auth.secrets_file`.
pub(super) fn read_secrets(auth: &AuthSection) -> Result<Vec<Secret>, ConfigError> {
    let mut secrets = auth.secrets.clone();
    if let Some(path) = &auth.secrets_file {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::SecretsFile {
            origin: None,
            path: path.clone(),
            error,
        })?;
        secrets.extend(secret_lines("auth.secrets_file", path, &text, check_not_placeholder)?);
    }
    Ok(secrets)
}

impl Config {
    /// The 16-byte long-term credential key of `user` (RFC 8489 §9.2.2):
    /// MD5(name:realm:password) with `server.realm`, or the decoded `key`.
    ///
    /// Meant for a validated config. A user that [`validate`](Self::validate)
    /// would refuse (no password and no key, both, or a malformed key) gets
    /// a random key nobody can match, so it fails closed; use
    /// [`try_user_key`](Self::try_user_key) to tell that case apart.
    pub fn user_key(&self, user: &User) -> [u8; 16] {
        self.try_user_key(user)
            .unwrap_or_else(|| unusable_key(&self.server.realm, user))
    }

    /// Like [`user_key`](Self::user_key), but `None` for a user without
    /// exactly one usable MD5 credential.
    pub fn try_user_key(&self, user: &User) -> Option<[u8; 16]> {
        match (&user.password, &user.key) {
            (Some(password), None) => Some(auth::long_term_key(&user.name, &self.server.realm, password.expose())),
            (None, Some(key)) => decode_hex(key.expose()),
            _ => None,
        }
    }

    /// The SHA-256 long-term key of `user` (RFC 8489 §9.2.2), from its
    /// password or `key_sha256`; `None` if it has neither.
    pub fn user_sha256_key(&self, user: &User) -> Option<[u8; 32]> {
        match (&user.password, &user.key_sha256) {
            (Some(password), None) => Some(auth::sha256_key(&user.name, &self.server.realm, password.expose())),
            (None, Some(key)) => decode_hex(key.expose()),
            _ => None,
        }
    }
}

fn check_user(i: usize, user: &User) -> Result<(), ConfigError> {
    let name = &user.name;
    if name.is_empty() {
        return Err(ConfigError::invalid(format!("auth.users[{i}].name"), "is empty"));
    }
    if name.len() > MAX_USERNAME_BYTES {
        return Err(ConfigError::invalid(
            format!("auth.users[{i}].name"),
            format!("is {} bytes long; USERNAME allows fewer than 509", name.len()),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ConfigError::invalid(
            format!("auth.users[{i}].name"),
            "contains a control character",
        ));
    }
    let has_key = user.key.is_some() || user.key_sha256.is_some();
    match (&user.password, has_key) {
        (Some(_), true) => Err(ConfigError::invalid(
            format!("auth.users[{i}]"),
            format!("user {name:?} sets both password and key; set exactly one"),
        )),
        (None, false) => Err(ConfigError::invalid(
            format!("auth.users[{i}]"),
            format!("user {name:?} has neither password nor key; set exactly one"),
        )),
        (Some(password), false) if password.expose().is_empty() => Err(ConfigError::invalid(
            format!("auth.users[{i}].password"),
            format!("user {name:?} has an empty password"),
        )),
        _ if user
            .key
            .as_ref()
            .is_some_and(|k| decode_hex::<16>(k.expose()).is_none()) =>
        {
            Err(ConfigError::invalid(
                format!("auth.users[{i}].key"),
                format!(
                    "user {name:?}: the key must be 32 hex digits, MD5(name:realm:password) \
                 as `turnadmin -k` prints it"
                ),
            ))
        }
        _ if user
            .key_sha256
            .as_ref()
            .is_some_and(|k| decode_hex::<32>(k.expose()).is_none()) =>
        {
            Err(ConfigError::invalid(
                format!("auth.users[{i}].key_sha256"),
                format!(
                    "user {name:?}: the key must be 64 hex digits, SHA-256(name:realm:password) \
                     as `turnpike credentials --user` prints it"
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// Decodes exactly `2 × N` hex digits (either case) into `N` bytes.
fn decode_hex<const N: usize>(hex: &str) -> Option<[u8; N]> {
    let digits = hex.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let nibble = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    let mut key = [0u8; N];
    for (byte, pair) in key.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(key)
}

/// A key for a user without a usable credential: random, so that no client
/// can compute it. Should the system RNG fail, a hash that at least differs
/// from every password-derived key stands in.
fn unusable_key(realm: &str, user: &User) -> [u8; 16] {
    use ring::rand::SecureRandom;
    let mut key = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut key).is_err() {
        let mut material = String::from("\0turnpike: no usable credential\0");
        for secret in [&user.key, &user.key_sha256, &user.password].into_iter().flatten() {
            material.push_str(secret.expose());
        }
        key = auth::long_term_key(&user.name, realm, &material);
    }
    key
}

#[cfg(test)]
mod tests;

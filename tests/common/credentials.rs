//! The test users and credentials: the long-term user of the test
//! configs, and short-lived ("TURN REST API") credentials computed here,
//! independently of the server.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;

/// The long-term user of [`LONG_TERM_USER_TOML`].
pub const USER: &str = "user";
/// The password of [`USER`].
pub const PASSWORD: &str = "pass";
/// The realm the server uses by default.
pub const REALM: &str = "turnpike";
/// Config fragment adding the long-term user [`USER`] / [`PASSWORD`].
pub const LONG_TERM_USER_TOML: &str = "[[auth.users]]\nname = \"user\"\npassword = \"pass\"\n";

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A short-lived ("TURN REST API") credential computed here, independently
/// of the server: username `<expiry>:<name>`, password
/// base64(HMAC-SHA1(secret, username)).
pub fn rest_credential(secret: &str, name: &str, expiry: u64) -> (String, String) {
    rest_credential_with(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret, name, expiry)
}

/// [`rest_credential`] with another HMAC (`auth.secret_algorithms`).
pub fn rest_credential_with(
    algorithm: ring::hmac::Algorithm,
    secret: &str,
    name: &str,
    expiry: u64,
) -> (String, String) {
    let username = format!("{expiry}:{name}");
    let key = ring::hmac::Key::new(algorithm, secret.as_bytes());
    let tag = ring::hmac::sign(&key, username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
    (username, password)
}

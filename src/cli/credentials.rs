//! `turnpike credentials` and `turnpike token`: mint what a client
//! presents, offline, with a secret from the command line, the
//! environment, a file or `--config`.
//!
//! Contract: each prints one line on stdout (an RTCIceServer JSON entry, or
//! a `/ws?token=` value) and nothing else, but `credentials --keys`, which
//! prints an `[[auth.users]]` table; the minting itself is the
//! library's (`proto::auth`), so what is printed here is exactly what the
//! running server accepts. A secret given explicitly wins over the config;
//! without either the command fails naming every way to give one.

use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use turnpike::config::Config;
use turnpike::process;
use turnpike::proto::auth;
use turnpike::signaling::protocol::is_valid_room;

use super::args::{CredentialsArgs, SecretSource};

/// `turnpike credentials`: a short-lived TURN credential as an
/// RTCIceServer entry.
pub fn credentials(args: CredentialsArgs, config_path: Option<&Path>) -> anyhow::Result<()> {
    let CredentialsArgs {
        secret,
        user,
        ttl,
        host,
        port,
        algorithm,
        keys,
        password,
        realm,
    } = args;
    let loaded = match config_path {
        Some(path) => Some((path, Config::load(path)?)),
        None => None,
    };
    if keys {
        let realm = realm
            .or_else(|| loaded.map(|(_, c)| c.server.realm))
            .unwrap_or_else(|| Config::default().server.realm);
        let Some(password) = password else {
            bail!("--keys needs the user's password: TURNPIKE_PASSWORD or --password");
        };
        print!("{}", user_keys(user.as_deref().unwrap_or_default(), &realm, &password));
        return Ok(());
    }
    let algorithm = algorithm
        .or_else(|| loaded.as_ref().map(|(_, c)| c.auth.minting_algorithm()))
        .unwrap_or_default();
    let secret = match (secret.resolve()?, &loaded) {
        (Some(s), _) => s,
        (None, Some((path, config))) => match config.auth.minting_secret() {
            Some(s) => s.expose().to_owned(),
            None => bail!("{} has no shared secret (auth.secrets)", path.display()),
        },
        (None, None) => bail!("give --secret, --secret-file, TURNPIKE_SECRET or --config with auth.secrets"),
    };
    if user.as_deref().is_some_and(|u| u.contains(':')) {
        bail!("--user must not contain ':'");
    }
    let minted = auth::mint(
        algorithm,
        secret.as_bytes(),
        user.as_deref(),
        process::clock::unix_secs(),
        ttl,
    );
    let entry = serde_json::json!({
        "urls": [format!("turn:{host}:{port}?transport=udp")],
        "username": minted.username,
        "credential": minted.password,
    });
    println!("{entry}");
    Ok(())
}

/// The `[[auth.users]]` lines of `name` with `password` in `realm`: both
/// long-term keys (RFC 8489 §9.2.2), so the password stays out of the
/// config.
fn user_keys(name: &str, realm: &str, password: &str) -> String {
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let md5 = auth::long_term_key(name, realm, password);
    let sha256 = auth::sha256_key(name, realm, password);
    let name = serde_json::Value::from(name);
    format!(
        "# for realm {realm:?}\n[[auth.users]]\nname = {name}\nkey = \"{}\"         # MD5(name:realm:password)\nkey_sha256 = \"{}\"  # SHA-256(name:realm:password), RFC 8489\n",
        hex(&md5),
        hex(&sha256)
    )
}

/// `turnpike token`: a signaling token for `/ws?token=`, bound to `room`
/// if one is given.
pub fn token(
    secret: SecretSource,
    ttl: Duration,
    room: Option<String>,
    config_path: Option<&Path>,
) -> anyhow::Result<()> {
    if let Some(room) = room.as_deref().filter(|r| !is_valid_room(r)) {
        bail!("--room {room:?}: a room is 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'");
    }
    let secret = match (secret.resolve()?, config_path) {
        (Some(s), _) => s,
        (None, Some(path)) => match Config::load(path)?.signaling.token_secret {
            Some(s) => s.expose().to_owned(),
            None => bail!("{} has no signaling.token_secret", path.display()),
        },
        (None, None) => {
            bail!("give --secret, --secret-file, TURNPIKE_SECRET or --config with signaling.token_secret")
        }
    };
    let expires = process::clock::unix_secs().saturating_add(ttl.as_secs());
    println!("{}", auth::signaling_token(secret.as_bytes(), expires, room.as_deref()));
    Ok(())
}

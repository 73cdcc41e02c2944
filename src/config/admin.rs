//! `[admin]`: the operator's admin API (`crate::admin`), off by default.
//!
//! This file holds the section's struct, the doc comment on each field
//! that is the reference for its key, and [`resolve_key`], its check:
//! `admin.listen` loopback (the API has no TLS), and then a key of at least
//! [`MIN_ADMIN_KEY`] characters from exactly one of `key` and `key_file`.
//! It returns the key rather than storing it, so that `Config::validate`
//! changes nothing until every rule holds.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::value::check_not_placeholder;
use super::{ConfigError, Secret};

/// Shortest `admin.key`: a bearer token must not be guessable.
pub const MIN_ADMIN_KEY: usize = 24;

/// `[admin]`: the operator's admin API (`crate::admin`), off by default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSection {
    /// Address of the admin API (HTTP/1.1, JSON, no TLS): lists
    /// allocations, ends them, revokes usernames. Must be a loopback
    /// address: the key travels in clear, so reach it from another host
    /// through SSH or a TLS-terminating proxy on this one. Set, `key` or
    /// `key_file` is required. Default: unset (off).
    pub listen: Option<SocketAddr>,
    /// The key callers present as `Authorization: Bearer <key>`; at least
    /// 24 characters (e.g. `openssl rand -base64 32`). Exactly one of
    /// `key` and `key_file` when `listen` is set; reloaded on SIGHUP.
    /// Default: unset.
    pub key: Option<Secret>,
    /// File whose first line is the key, to keep it out of the TOML. A
    /// relative path is taken from the config file's directory. Default:
    /// unset.
    pub key_file: Option<PathBuf>,
    /// The key from `key` or `key_file`. Filled by [`Config::validate`](super::Config::validate)
    /// and not a TOML key.
    #[serde(skip)]
    pub resolved_key: Option<Secret>,
}

/// The admin API's key, from `admin.key` or `admin.key_file`: required
/// when `admin.listen` is set, which must be loopback (the API has no
/// TLS, see SECURITY.md).
pub(super) fn resolve_key(admin: &AdminSection) -> Result<Option<Secret>, ConfigError> {
    let key = match (&admin.key, &admin.key_file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::invalid(
                "admin.key",
                "give admin.key or admin.key_file, not both",
            ))
        }
        (Some(key), None) => Some(key.clone()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError::invalid("admin.key_file", format!("cannot read {}: {e}", path.display())))?;
            let line = text.lines().map(str::trim).find(|l| !l.is_empty());
            match line {
                Some(line) => Some(Secret::new(line)),
                None => {
                    return Err(ConfigError::invalid(
                        "admin.key_file",
                        format!("{} holds no key", path.display()),
                    ))
                }
            }
        }
        (None, None) => None,
    };
    let Some(listen) = admin.listen else {
        return Ok(key);
    };
    if !listen.ip().to_canonical().is_loopback() {
        return Err(ConfigError::invalid(
            "admin.listen",
            format!(
                "{listen} is not a loopback address: the admin API has no TLS, reach it through SSH or a \
                 TLS-terminating proxy on this host"
            ),
        ));
    }
    let Some(key) = key else {
        return Err(ConfigError::invalid(
            "admin.key",
            "admin.listen is set: give admin.key or admin.key_file",
        ));
    };
    check_not_placeholder("admin.key", &key)?;
    if key.expose().len() < MIN_ADMIN_KEY {
        return Err(ConfigError::invalid(
            "admin.key",
            format!("is shorter than {MIN_ADMIN_KEY} characters: generate one, e.g. `openssl rand -base64 32`"),
        ));
    }
    Ok(Some(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{invalid_key, parse};

    #[test]
    fn the_admin_api_needs_a_long_key_and_a_loopback_address() {
        let key = "k".repeat(MIN_ADMIN_KEY);
        let on = |listen: &str, key: &str| format!("[admin]\nlisten = \"{listen}\"\n{key}");
        let config = parse(&on("127.0.0.1:8081", &format!("key = \"{key}\"\n"))).unwrap();
        assert_eq!(
            config.admin.resolved_key.as_ref().map(Secret::expose),
            Some(key.as_str())
        );
        assert!(parse(&on("[::1]:8081", &format!("key = \"{key}\"\n"))).is_ok());
        assert_eq!(invalid_key(&on("127.0.0.1:8081", "")), "admin.key");
        assert_eq!(invalid_key(&on("127.0.0.1:8081", "key = \"short-key\"\n")), "admin.key");
        assert_eq!(
            invalid_key(&on("0.0.0.0:8081", &format!("key = \"{key}\"\n"))),
            "admin.listen"
        );
        assert_eq!(
            invalid_key(&on("192.0.2.1:8081", &format!("key = \"{key}\"\n"))),
            "admin.listen"
        );
        let both = format!("key = \"{key}\"\nkey_file = \"/nonexistent\"\n");
        assert_eq!(invalid_key(&on("127.0.0.1:8081", &both)), "admin.key");
        assert_eq!(
            invalid_key(&on(
                "127.0.0.1:8081",
                "key_file = \"/nonexistent/turnpike/admin.key\"\n"
            )),
            "admin.key_file"
        );
        // Off by default, and a key alone turns nothing on.
        assert!(parse("").unwrap().admin.listen.is_none());
        assert!(parse(&format!("[admin]\nkey = \"{key}\"\n")).is_ok());
    }

    #[test]
    fn the_admin_key_is_read_from_the_first_line_of_its_file() {
        let dir = std::env::temp_dir().join(format!("turnpike-admin-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("admin.key");
        std::fs::write(&file, format!("\n  {}  \nignored\n", "x".repeat(32))).unwrap();
        let text = format!("[admin]\nlisten = \"127.0.0.1:0\"\nkey_file = \"{}\"\n", file.display());
        let config = parse(&text).unwrap();
        assert_eq!(
            config.admin.resolved_key.as_ref().map(Secret::expose),
            Some("x".repeat(32).as_str())
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

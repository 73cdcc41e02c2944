//! `[admin]`: the operator's admin API (`crate::admin`), off by default.
//!
//! This file holds the section's struct, the doc comment on each field
//! that is the reference for its key, and [`resolve_key`], its check:
//! `admin.listen` loopback (the API has no TLS), `admin.socket` an absolute
//! path of at most [`MAX_SOCKET_PATH`] bytes, and then, when either is
//! set, a key of at least [`MIN_ADMIN_KEY`] characters from exactly one of
//! `key` and `key_file`. (What the socket's directory must be is checked
//! when it is bound, by `crate::admin`: the directory may not exist yet
//! where the file is checked.)
//! It returns the key rather than storing it, so that `Config::validate`
//! changes nothing until every rule holds.

use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use serde::Deserialize;

use super::value::check_not_placeholder;
use super::{ConfigError, Secret};

/// Shortest `admin.key`: a bearer token must not be guessable.
pub const MIN_ADMIN_KEY: usize = 24;

/// Longest `admin.socket` in bytes: a Unix socket's name and its NUL fill
/// the 108 bytes of `sockaddr_un.sun_path` on Linux.
pub const MAX_SOCKET_PATH: usize = 107;

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
    /// A Unix socket for the admin API (the same routes and key), e.g.
    /// `/run/turnpike/admin.sock`: created with mode 0600, so only this
    /// user (and root) can connect, which no other local user can crowd
    /// out. An absolute path of at most 107 bytes, whose directory must be
    /// owned by this user or root and writable by nobody else (checked at
    /// start); a stale socket left there is replaced, one another process
    /// listens on is refused, and it is removed at stop. With `listen`,
    /// both are served. Set, `key` or `key_file` is required. Default:
    /// unset.
    pub socket: Option<PathBuf>,
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
/// when `admin.listen` or `admin.socket` is set; `listen` must be loopback
/// (the API has no TLS, see SECURITY.md) and `socket` an absolute path of
/// at most [`MAX_SOCKET_PATH`] bytes.
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
    if admin.listen.is_none() && admin.socket.is_none() {
        return Ok(key);
    }
    if let Some(listen) = admin.listen.filter(|l| !l.ip().to_canonical().is_loopback()) {
        return Err(ConfigError::invalid(
            "admin.listen",
            format!(
                "{listen} is not a loopback address: the admin API has no TLS, reach it through SSH or a \
                 TLS-terminating proxy on this host"
            ),
        ));
    }
    if let Some(socket) = &admin.socket {
        if !socket.is_absolute() || socket.file_name().is_none() {
            return Err(ConfigError::invalid(
                "admin.socket",
                format!("{} is not an absolute path to a file", socket.display()),
            ));
        }
        let len = socket.as_os_str().as_bytes().len();
        if len > MAX_SOCKET_PATH {
            return Err(ConfigError::invalid(
                "admin.socket",
                format!("is {len} bytes long: a Unix socket's path has at most {MAX_SOCKET_PATH}"),
            ));
        }
    }
    let Some(key) = key else {
        return Err(ConfigError::invalid(
            "admin.key",
            "admin.listen or admin.socket is set: give admin.key or admin.key_file",
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
    fn the_admin_socket_is_an_absolute_path_that_fits_a_socket_address_and_wants_the_key() {
        let key = format!("key = \"{}\"\n", "k".repeat(MIN_ADMIN_KEY));
        let on = |socket: &str, key: &str| format!("[admin]\nsocket = \"{socket}\"\n{key}");
        let config = parse(&on("/run/turnpike/admin.sock", &key)).unwrap();
        assert_eq!(
            config.admin.socket.as_deref(),
            Some(std::path::Path::new("/run/turnpike/admin.sock"))
        );
        assert!(config.admin.listen.is_none() && config.admin.resolved_key.is_some());
        // The key is still required: the socket's mode is one defence, the key another.
        assert_eq!(invalid_key(&on("/run/turnpike/admin.sock", "")), "admin.key");
        assert_eq!(invalid_key(&on("admin.sock", &key)), "admin.socket");
        assert_eq!(invalid_key(&on("/", &key)), "admin.socket");
        // The bound: 107 bytes fit, 108 do not.
        let longest = format!("/{}", "s".repeat(MAX_SOCKET_PATH - 1));
        assert!(parse(&on(&longest, &key)).is_ok());
        assert_eq!(invalid_key(&on(&format!("{longest}s"), &key)), "admin.socket");
        // With listen, both are served; listen is still held to loopback.
        let both = format!("[admin]\nsocket = \"/run/a.sock\"\nlisten = \"127.0.0.1:8081\"\n{key}");
        assert!(parse(&both).is_ok());
        let public = format!("[admin]\nsocket = \"/run/a.sock\"\nlisten = \"0.0.0.0:8081\"\n{key}");
        assert_eq!(invalid_key(&public), "admin.listen");
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

//! `[fleet]`: signaling rooms that span several instances, through Redis
//! (`docs/signaling.md`, "Rooms across a fleet"). Without `redis_url` the
//! section does nothing and rooms live in this process's memory.
//!
//! Every key is read at start: a reload does not change them (the log
//! says so when they differ).
//!
//! This file holds the section's struct, its defaults, the doc comment on
//! each field that is the reference for its key, and [`check`]: a
//! `redis://` URL (never quoted in an error: it may hold a password),
//! names that fit in a Redis key, a membership lifetime whose third
//! (the refresh) is at least a second, and with `redis_url` the fleet's
//! secrets (`secrets`, then those of `secrets_file`, read by
//! [`read_secrets`] into [`FleetSection::resolved_secrets`]): at least
//! one, each of [`MIN_FLEET_SECRET_CHARS`] or more and no example's
//! placeholder, never quoted.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::value::{check_not_placeholder, secret_lines};
use super::{ConfigError, Secret};

/// Longest `fleet.instance_id` and `fleet.key_prefix`.
const MAX_FLEET_NAME: usize = 64;
const MAX_FLEET_PREFIX: usize = 32;
/// Shortest fleet secret: 16 characters (as `auth.nonce_keys`); 32 random
/// ones (`openssl rand -base64 32`) are what the docs ask for.
pub const MIN_FLEET_SECRET_CHARS: usize = 16;
/// Most fleet secrets (each is one more MAC tried on what fails).
pub const MAX_FLEET_SECRETS: usize = 8;

/// `[fleet]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetSection {
    /// Redis server that holds room membership and carries signals
    /// between instances, as `redis://[user:password@]host[:port][/db]`.
    /// Every instance of a fleet names the same server and `key_prefix`.
    /// It also shares the admin API's revocations (`crate::fleet`).
    /// It may hold a password, so it is never logged. Unset, rooms and
    /// revocations stay in this process. Default: unset.
    pub redis_url: Option<Secret>,
    /// This instance's name in the fleet: which instance holds a peer, and
    /// the Redis channel (`<key_prefix>:inst:<instance_id>`) signals for
    /// its peers are published to. 1 to 64 of `[A-Za-z0-9_.-]`, unique in
    /// the fleet. Unset, a random one is drawn at every start (a restarted
    /// instance is a new one; its old peers expire). Default: unset.
    pub instance_id: Option<String>,
    /// How long a peer's membership lasts in Redis unless its instance
    /// refreshes it (every third of this). The peers of an instance that
    /// dies are seen leaving by the others within this (a record whose
    /// instance missed two refreshes counts as gone). From 3s to 5m.
    /// Instances may differ: each record carries its writer's lifetime
    /// and is judged by it. Default: `"10s"`.
    #[serde(with = "humantime_serde")]
    pub membership_ttl: Duration,
    /// Start of every Redis key and channel name of this fleet, so that
    /// several fleets can share one Redis. 1 to 32 of `[A-Za-z0-9_.-]`.
    /// Default: `"turnpike"`.
    pub key_prefix: String,
    /// The fleet's secrets: every membership record, message and shared
    /// revocation an instance writes to Redis is signed (HMAC-SHA256) with
    /// the first, and what it reads must carry the MAC of one of them, so
    /// that whoever can write to Redis without the secret cannot join
    /// rooms, read their signals or revoke (`docs/fleet.md`). Several for
    /// a rotation: add the new one second everywhere, then first, then
    /// drop the old. The same on every instance; at least 16 characters
    /// (`openssl rand -base64 32`); never logged. Required with
    /// `redis_url` (here or in `secrets_file`). Default: none.
    pub secrets: Vec<Secret>,
    /// A file of more fleet secrets, one a line (blank lines and `#`
    /// comments skipped), after those of `secrets`; relative to the
    /// config file's directory. Default: unset.
    pub secrets_file: Option<PathBuf>,
    /// `secrets` then those of `secrets_file`; the first signs. Filled by
    /// [`Config::validate`](super::Config::validate) (not a config key).
    #[serde(skip)]
    pub resolved_secrets: Vec<Secret>,
}

impl Default for FleetSection {
    fn default() -> Self {
        FleetSection {
            redis_url: None,
            instance_id: None,
            membership_ttl: Duration::from_secs(10),
            key_prefix: "turnpike".to_owned(),
            secrets: Vec::new(),
            secrets_file: None,
            resolved_secrets: Vec::new(),
        }
    }
}

impl FleetSection {
    /// Bounds of `fleet.membership_ttl`: its third, the refresh, is at
    /// least a second; at most, a dead instance's peers linger five
    /// minutes. A membership record carries its writer's lifetime, and one
    /// outside these bounds is invalid (`fleet_wire`).
    pub const MIN_MEMBERSHIP_TTL: Duration = Duration::from_secs(3);
    pub const MAX_MEMBERSHIP_TTL: Duration = Duration::from_secs(300);

    /// True if `other` says the same (a reload compares them: the section
    /// takes effect only at start).
    pub fn same_as(&self, other: &FleetSection) -> bool {
        self.redis_url.as_ref().map(Secret::expose) == other.redis_url.as_ref().map(Secret::expose)
            && self.instance_id == other.instance_id
            && self.membership_ttl == other.membership_ttl
            && self.key_prefix == other.key_prefix
            && self.secrets_file == other.secrets_file
            && same_secrets(&self.secrets, &other.secrets)
            && same_secrets(&self.resolved_secrets, &other.resolved_secrets)
    }
}

fn same_secrets(a: &[Secret], b: &[Secret]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.expose() == b.expose())
}

/// True for 1 to `max` characters of `[A-Za-z0-9_.-]`: safe inside a
/// Redis key or channel name and in a log line.
pub fn is_fleet_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// `[fleet]`: a `redis://` URL, names that fit in a Redis key, and a
/// membership lifetime whose third (the refresh) is at least a second.
pub(super) fn check(fleet: &FleetSection) -> Result<(), ConfigError> {
    if let Some(url) = &fleet.redis_url {
        // The reason never quotes the URL: it may hold a password.
        let rest = url.expose().strip_prefix("redis://").ok_or_else(|| {
            ConfigError::invalid(
                "fleet.redis_url",
                "must start with redis:// (TLS to Redis is not supported)",
            )
        })?;
        let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        if host.is_empty() || host.starts_with('/') || host.starts_with(':') {
            return Err(ConfigError::invalid("fleet.redis_url", "names no host"));
        }
    }
    if let Some(id) = &fleet.instance_id {
        if !is_fleet_name(id, MAX_FLEET_NAME) {
            return Err(ConfigError::invalid(
                "fleet.instance_id",
                format!("must be 1 to {MAX_FLEET_NAME} characters of A-Z, a-z, 0-9, '_', '.' and '-'"),
            ));
        }
    }
    if !is_fleet_name(&fleet.key_prefix, MAX_FLEET_PREFIX) {
        return Err(ConfigError::invalid(
            "fleet.key_prefix",
            format!("must be 1 to {MAX_FLEET_PREFIX} characters of A-Z, a-z, 0-9, '_', '.' and '-'"),
        ));
    }
    if !(FleetSection::MIN_MEMBERSHIP_TTL..=FleetSection::MAX_MEMBERSHIP_TTL).contains(&fleet.membership_ttl) {
        return Err(ConfigError::invalid("fleet.membership_ttl", "must be from 3s to 5m"));
    }
    for (i, secret) in fleet.secrets.iter().enumerate() {
        check_secret(&format!("fleet.secrets[{i}]"), secret)?;
    }
    Ok(())
}

/// `fleet.secrets` followed by those of `fleet.secrets_file`; with
/// `redis_url`, at least one and at most [`MAX_FLEET_SECRETS`]. Never
/// quotes a secret.
pub(super) fn read_secrets(fleet: &FleetSection) -> Result<Vec<Secret>, ConfigError> {
    let mut secrets = fleet.secrets.clone();
    if let Some(path) = &fleet.secrets_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::invalid("fleet.secrets_file", format!("cannot read {}: {e}", path.display())))?;
        secrets.extend(secret_lines("fleet.secrets_file", path, &text, check_secret)?);
    }
    if fleet.redis_url.is_some() && secrets.is_empty() {
        return Err(ConfigError::invalid(
            "fleet.secrets",
            "fleet.redis_url is set: give the fleet's secret in fleet.secrets or fleet.secrets_file, \
             the same on every instance (e.g. `openssl rand -base64 32`); without it anyone who can \
             write to Redis could join rooms and read their signals",
        ));
    }
    if secrets.len() > MAX_FLEET_SECRETS {
        return Err(ConfigError::invalid(
            "fleet.secrets",
            format!("{} secrets; at most {MAX_FLEET_SECRETS}", secrets.len()),
        ));
    }
    Ok(secrets)
}

fn check_secret(key: &str, secret: &Secret) -> Result<(), ConfigError> {
    check_not_placeholder(key, secret)?;
    if secret.expose().trim().chars().count() < MIN_FLEET_SECRET_CHARS {
        return Err(ConfigError::invalid(
            key,
            format!(
                "is shorter than {MIN_FLEET_SECRET_CHARS} characters: generate one, e.g. `openssl rand -base64 32`"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{invalid_key, parse};

    const SECRET: &str = "secrets = [\"a-fleet-secret-of-32-characters-x\"]\n";

    #[test]
    fn fleet_keys_are_checked_without_quoting_the_redis_url() {
        let ok = parse(&format!(
            "[fleet]\nredis_url = \"redis://:pw@127.0.0.1:6379/0\"\ninstance_id = \"a-1.x\"\nmembership_ttl = \"3s\"\n{SECRET}",
        ));
        assert!(ok.is_ok(), "{ok:?}");
        let err = parse(&format!("[fleet]\nredis_url = \"http://:hunter2@h\"\n{SECRET}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("fleet.redis_url") && !err.contains("hunter2"), "{err}");
        assert_eq!(invalid_key("[fleet]\nredis_url = \"redis://\"\n"), "fleet.redis_url");
        assert_eq!(invalid_key("[fleet]\ninstance_id = \"a b\"\n"), "fleet.instance_id");
        assert_eq!(invalid_key("[fleet]\nkey_prefix = \"\"\n"), "fleet.key_prefix");
        assert_eq!(
            invalid_key("[fleet]\nmembership_ttl = \"2s\"\n"),
            "fleet.membership_ttl"
        );
        assert_eq!(
            invalid_key("[fleet]\nmembership_ttl = \"6m\"\n"),
            "fleet.membership_ttl"
        );
    }

    /// With `redis_url` a secret is required (an existing config without
    /// one is refused with a clear reason); short ones, placeholders and
    /// files without one are refused; none is ever quoted; the file's
    /// follow those of `secrets`.
    #[test]
    fn a_fleet_with_redis_needs_a_secret_that_is_never_quoted() {
        let url = "[fleet]\nredis_url = \"redis://127.0.0.1:6379/0\"\n";
        let err = parse(url).unwrap_err().to_string();
        assert!(err.contains("fleet.secrets") && err.contains("openssl rand"), "{err}");
        assert!(parse("[fleet]\n").is_ok(), "no Redis, no secret needed");
        let short = parse(&format!("{url}secrets = [\"hunter2-short\"]\n"))
            .unwrap_err()
            .to_string();
        assert!(
            short.contains("fleet.secrets[0]") && !short.contains("hunter2"),
            "{short}"
        );
        assert_eq!(
            invalid_key(&format!("{url}secrets = [\"change-me\"]\n")),
            "fleet.secrets[0]"
        );
        let dir = std::env::temp_dir().join(format!("turnpike-fleet-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("fleet-secrets");
        std::fs::write(&file, "# rotation\n\nsecond-secret-from-the-file-0001\n").unwrap();
        let toml = format!("{url}{SECRET}secrets_file = {:?}\n", file.display().to_string());
        let config = parse(&toml).unwrap();
        let resolved: Vec<&str> = config.fleet.resolved_secrets.iter().map(|s| s.expose()).collect();
        assert_eq!(
            resolved,
            ["a-fleet-secret-of-32-characters-x", "second-secret-from-the-file-0001"]
        );
        std::fs::write(&file, "# nothing\n").unwrap();
        assert_eq!(invalid_key(&toml), "fleet.secrets_file");
        std::fs::remove_file(&file).unwrap();
        let err = parse(&toml).unwrap_err().to_string();
        assert!(err.contains("fleet.secrets_file"), "{err}");
    }
}

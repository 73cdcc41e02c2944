//! Tests of loading as a whole: parsing, the defaults, the example file,
//! error positions and file paths. Each section's rules are tested in its
//! own file; the helpers [`parse`] and [`invalid_key`] are shared with
//! them.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use super::*;

const EXAMPLE: &str = include_str!("../../config.example.toml");

pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, "test.toml")
}

pub(super) fn invalid_key(text: &str) -> String {
    match parse(text) {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[test]
fn default_config_validates() {
    let mut config = Config::default();
    config.validate().expect("defaults are valid");
    assert!(config.auth.resolved_secrets.is_empty());
    assert_eq!(config.relay.ports.to_string(), "49152-65535");
    assert_eq!(
        config.server.software,
        format!("turnpike/{}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn empty_file_gives_the_defaults() {
    let config = parse("").expect("empty config");
    assert_eq!(format!("{config:?}"), format!("{:?}", Config::default()),);
}

#[test]
fn example_config_parses_validates_and_equals_the_defaults() {
    let config = Config::from_toml(EXAMPLE, "config.example.toml").unwrap_or_else(|e| panic!("{e}"));
    // The example documents the defaults: it must not drift from them.
    assert_eq!(format!("{config:?}"), format!("{:?}", Config::default()),);
}

#[test]
fn example_config_mentions_every_key() {
    let keys = [
        "[server]",
        "realm",
        "software",
        "external_ip",
        "workers",
        "shutdown_grace",
        "[listen]",
        "udp",
        "[tls]",
        "cert",
        "[tls.acme]",
        "domains",
        "contact",
        "directory",
        "directory_ca",
        "cache_dir",
        "challenge",
        "retry_interval",
        "[relay]",
        "ipv4",
        "ports",
        "[auth]",
        "secrets",
        "secrets_file",
        "secret_algorithms",
        "credential_ttl",
        "max_credential_lifetime",
        "nonce_ttl",
        "[[auth.users]]",
        "name",
        "password",
        "key",
        "[peers]",
        "allow",
        "deny",
        "[limits]",
        "max_allocations",
        "max_allocations_per_user",
        "max_allocations_per_source",
        "max_allocation_lifetime",
        "max_permissions_per_allocation",
        "max_channels_per_allocation",
        "max_peer_connections_per_allocation",
        "max_peer_connections",
        "max_connections_per_source",
        "tls_handshakes_per_source",
        "allocation_bytes_per_second",
        "user_bytes_per_second",
        "challenge_bytes_per_second",
        "[alternate]",
        "servers",
        "domain",
        "bytes_per_second",
        "http",
        "[signaling]",
        "share_tls_port",
        "room_size",
        "max_rooms",
        "max_rooms_per_source",
        "max_connections_per_source",
        "max_message_size",
        "max_outbox_bytes",
        "messages_per_second",
        "ping_interval",
        "heartbeat_timeout",
        "resume_grace",
        "token_secret",
        "api_key",
        "allowed_origins",
        "turn_host",
        "[log]",
        "level",
        "format",
        "[admin]",
        "key_file",
        "[fleet]",
        "redis_url",
        "instance_id",
        "membership_ttl",
        "key_prefix",
        "secrets_file",
    ];
    for key in keys {
        assert!(EXAMPLE.contains(key), "config.example.toml lacks {key}");
    }
}

#[test]
fn full_config_is_read_into_typed_fields() {
    let config = parse(
        r#"
        [server]
        realm = "example.org"
        software = ""
        external_ip = "203.0.113.7"
        workers = 4

        [listen]
        udp = ["127.0.0.1:3478", "[::1]:3478"]

        [relay]
        ipv4 = "10.0.0.5"
        ports = "40000-40099"

        [auth]
        secrets = ["new", "old"]
        credential_ttl = "12h"
        nonce_ttl = "5m"

        [[auth.users]]
        name = "alice"
        password = "s3cret"

        [[auth.users]]
        name = "bob"
        key = "8493FBC53BA582FB4C044C456BDC40EB"

        [peers]
        allow = ["127.0.0.0/8", "::1/128"]
        deny = ["198.51.100.0/24"]

        [limits]
        max_allocations = 5
        max_allocations_per_user = 2
        max_allocation_lifetime = "30m"
        max_permissions_per_allocation = 8
        max_channels_per_allocation = 4

        [log]
        level = "turnpike=debug,info"
        format = "json"
        "#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.server.realm, "example.org");
    assert_eq!(config.server.software, "");
    assert_eq!(
        config.server.external_ip.public_v4(),
        Some(Ipv4Addr::new(203, 0, 113, 7))
    );
    assert_eq!(config.server.workers, 4);
    assert_eq!(config.listen.udp.len(), 2);
    assert_eq!(config.relay.ipv4, Ipv4Addr::new(10, 0, 0, 5));
    assert_eq!(config.relay.ports, PortRange::new(40000, 40099).unwrap());
    assert_eq!(config.auth.credential_ttl, Duration::from_secs(12 * 3600));
    assert_eq!(config.auth.nonce_ttl, Duration::from_secs(300));
    let resolved: Vec<&str> = config.auth.resolved_secrets.iter().map(Secret::expose).collect();
    assert_eq!(resolved, ["new", "old"]);
    assert_eq!(config.auth.minting_secret().map(Secret::expose), Some("new"));
    assert_eq!(config.auth.users.len(), 2);
    assert_eq!(config.peers.allow.len(), 2);
    assert_eq!(config.peers.allow[0].to_string(), "127.0.0.0/8");
    assert_eq!(config.peers.deny.len(), 1);
    assert_eq!(config.limits.max_allocations, 5);
    assert_eq!(config.limits.max_allocation_lifetime, Duration::from_secs(1800));
    assert_eq!(config.log.format, LogFormat::Json);
}

#[test]
fn durations_are_humantime_strings() {
    let config = parse("[auth]\nnonce_ttl = \"10m\"\ncredential_ttl = \"1h 30m\"\n").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.auth.nonce_ttl, Duration::from_secs(600));
    assert_eq!(config.auth.credential_ttl, Duration::from_secs(5400));
}

#[test]
fn unknown_key_is_reported_with_its_name_and_line() {
    let err = parse("[server]\nrealm = \"x\"\nrelm = \"typo\"\n").unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ConfigError::Parse { .. }), "{msg}");
    assert!(msg.starts_with("test.toml: "), "{msg}");
    assert!(msg.contains("relm"), "{msg}");
    assert!(msg.contains("line 3"), "{msg}");
}

#[test]
fn unknown_section_is_reported() {
    let msg = parse("[turn]\nx = 1\n").unwrap_err().to_string();
    assert!(msg.contains("turn"), "{msg}");
    assert!(msg.contains("line 1"), "{msg}");
}

#[test]
fn wrong_type_is_reported_with_its_line() {
    let msg = parse("[server]\nrealm = \"x\"\n\nworkers = \"four\"\n")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("line 4"), "{msg}");
    let msg = parse("[limits]\nmax_allocation_lifetime = 3600\n")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("line 2"), "{msg}");
}

#[test]
fn malformed_duration_is_reported_with_its_line() {
    let msg = parse("[auth]\nnonce_ttl = \"ten minutes\"\n").unwrap_err().to_string();
    assert!(msg.contains("line 2"), "{msg}");
}

#[test]
fn secrets_file_is_appended_after_inline_secrets() {
    let dir = std::env::temp_dir().join(format!("turnpike-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secrets = dir.join("secrets");
    std::fs::write(&secrets, "# rotated 2024-05-01\n\n  from-file-1  \nfrom-file-2\n").unwrap();
    let config_path = dir.join("turnpike.toml");
    std::fs::write(
        &config_path,
        "[auth]\nsecrets = [\"inline\"]\nsecrets_file = \"secrets\"\n",
    )
    .unwrap();
    let config = Config::load(&config_path).unwrap_or_else(|e| panic!("{e}"));
    let resolved: Vec<&str> = config.auth.resolved_secrets.iter().map(Secret::expose).collect();
    assert_eq!(resolved, ["inline", "from-file-1", "from-file-2"]);

    std::fs::write(&secrets, "# nothing yet\n").unwrap();
    let err = Config::load(&config_path).unwrap_err();
    assert_eq!(err.key(), Some("auth.secrets_file"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_config_file_is_an_error_naming_it() {
    let msg = Config::load(Path::new("/nonexistent/turnpike.toml"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("/nonexistent/turnpike.toml"), "{msg}");
}

//! The rules of `[auth]`, its users' keys and the reading of its
//! secrets file.

use std::path::PathBuf;

use super::*;
use crate::config::tests::{invalid_key, parse};

#[test]
fn secret_algorithms_are_sha1_or_sha256_at_least_one_no_repeats() {
    let both = parse("[auth]\nsecret_algorithms = [\"sha256\", \"sha1\"]\n").expect("valid");
    assert_eq!(both.auth.minting_algorithm(), auth::SecretAlgorithm::Sha256);
    assert_eq!(Config::default().auth.minting_algorithm(), auth::SecretAlgorithm::Sha1);
    assert_eq!(
        invalid_key("[auth]\nsecret_algorithms = []\n"),
        "auth.secret_algorithms"
    );
    assert_eq!(
        invalid_key("[auth]\nsecret_algorithms = [\"sha1\", \"sha1\"]\n"),
        "auth.secret_algorithms"
    );
    assert!(parse("[auth]\nsecret_algorithms = [\"md5\"]\n").is_err());
}

#[test]
fn user_with_both_password_and_key_is_refused() {
    let err = parse(
        "[[auth.users]]\nname = \"alice\"\npassword = \"pw\"\n\
         key = \"0123456789abcdef0123456789abcdef\"\n",
    )
    .unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.key(), Some("auth.users[0]"));
    assert!(msg.starts_with("test.toml: auth.users[0]: "), "{msg}");
    assert!(msg.contains("both"), "{msg}");
    assert!(!msg.contains("0123456789abcdef"), "{msg}");
}

#[test]
fn user_without_credential_is_refused() {
    assert_eq!(invalid_key("[[auth.users]]\nname = \"alice\"\n"), "auth.users[0]");
}

#[test]
fn bad_hex_key_is_refused_without_echoing_it() {
    for key in [
        "0123456789abcdef0123456789abcdeg",
        "0123456789abcdef0123456789abcde",
        "0123456789abcdef0123456789abcdef0",
        "",
    ] {
        let text = format!("[[auth.users]]\nname = \"bob\"\nkey = \"{key}\"\n");
        let err = parse(&text).unwrap_err();
        assert_eq!(err.key(), Some("auth.users[0].key"), "{key:?}");
        if !key.is_empty() {
            assert!(!err.to_string().contains(key), "{err}");
        }
    }
}

#[test]
fn user_names_must_be_unique_and_non_empty() {
    let text = "[[auth.users]]\nname = \"a\"\npassword = \"x\"\n\
                [[auth.users]]\nname = \"a\"\npassword = \"y\"\n";
    assert_eq!(invalid_key(text), "auth.users[1].name");
    assert_eq!(invalid_key("[[auth.users]]\npassword = \"x\"\n"), "auth.users[0].name");
}

#[test]
fn user_key_is_md5_of_name_realm_password() {
    let mut config = Config::default();
    config.server.realm = "realm".to_owned();
    let user = User {
        name: "user".to_owned(),
        password: Some(Secret::new("pass")),
        key: None,
        key_sha256: None,
    };
    // printf 'user:realm:pass' | md5sum
    let expected = decode_hex::<16>("8493fbc53ba582fb4c044c456bdc40eb").unwrap();
    assert_eq!(config.user_key(&user), expected);
    let by_key = User {
        name: "user".to_owned(),
        password: None,
        key: Some(Secret::new("8493FBC53BA582FB4C044C456BDC40EB")),
        key_sha256: None,
    };
    assert_eq!(config.user_key(&by_key), expected);
}

#[test]
fn user_without_usable_credential_gets_an_unguessable_key() {
    let config = Config::default();
    let user = User {
        name: "user".to_owned(),
        password: None,
        key: None,
        key_sha256: None,
    };
    assert_eq!(config.try_user_key(&user), None);
    // Not the key of an empty password.
    assert_ne!(
        config.user_key(&user),
        auth::long_term_key("user", &config.server.realm, "")
    );
}

#[test]
fn empty_secret_is_refused() {
    assert_eq!(invalid_key("[auth]\nsecrets = [\"ok\", \"\"]\n"), "auth.secrets[1]");
}

#[test]
fn nonce_keys_are_at_most_four_of_at_least_16_characters() {
    let key = "\"0123456789abcdef\"";
    assert!(parse(&format!("[auth]\nnonce_keys = [{key}, {key}]\n")).is_ok());
    assert_eq!(invalid_key("[auth]\nnonce_keys = [\"short\"]\n"), "auth.nonce_keys");
    assert_eq!(
        invalid_key(&format!("[auth]\nnonce_keys = [{key}, {key}, {key}, {key}, {key}]\n")),
        "auth.nonce_keys"
    );
}

#[test]
fn nonce_ttl_must_be_between_10s_and_1h() {
    assert_eq!(invalid_key("[auth]\nnonce_ttl = \"5s\"\n"), "auth.nonce_ttl");
    assert_eq!(invalid_key("[auth]\nnonce_ttl = \"2h\"\n"), "auth.nonce_ttl");
    assert!(parse("[auth]\nnonce_ttl = \"10s\"\n").is_ok());
    assert!(parse("[auth]\nnonce_ttl = \"1h\"\n").is_ok());
}

#[test]
fn missing_secrets_file_is_an_error_naming_it() {
    let err = parse("[auth]\nsecrets_file = \"/nonexistent/turnpike/secrets\"\n").unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ConfigError::SecretsFile { .. }), "{msg}");
    assert!(msg.starts_with("test.toml: auth.secrets_file: "), "{msg}");
    assert!(msg.contains("/nonexistent/turnpike/secrets"), "{msg}");
}

#[test]
fn failed_validation_leaves_resolved_secrets_alone() {
    let mut config = Config::default();
    config.auth.secrets = vec![Secret::new("a")];
    config.validate().unwrap();
    config.auth.secrets_file = Some(PathBuf::from("/nonexistent/turnpike/secrets"));
    assert!(config.validate().is_err());
    assert_eq!(config.auth.resolved_secrets.len(), 1);
}

#[test]
fn password_algorithms_are_md5_or_sha256_at_least_one_no_repeats() {
    assert_eq!(Config::default().auth.password_algorithms, [PasswordAlgorithm::Md5]);
    let both = parse("[auth]\npassword_algorithms = [\"sha256\", \"md5\"]\nuserhash = true\n").expect("valid");
    assert_eq!(
        both.auth.password_algorithms,
        [PasswordAlgorithm::Sha256, PasswordAlgorithm::Md5]
    );
    assert!(both.auth.userhash);
    for bad in ["[]", "[\"md5\", \"md5\"]"] {
        assert_eq!(
            invalid_key(&format!("[auth]\npassword_algorithms = {bad}\n")),
            "auth.password_algorithms"
        );
    }
    assert!(parse("[auth]\npassword_algorithms = [\"sha1\"]\n").is_err());
}

#[test]
fn a_sha256_key_is_64_hex_digits_and_a_user_needs_a_key_of_a_taken_algorithm() {
    let sha256 = "07e934117abd40836e7c6329b54731b2b2d2a5f9a71f544922d75e0730d8251b";
    let only_sha256 = format!(
        "[auth]\npassword_algorithms = [\"sha256\"]\n[[auth.users]]\nname = \"user\"\nkey_sha256 = \"{sha256}\"\n"
    );
    let config = parse(&only_sha256).expect("valid");
    let user = &config.auth.users[0];
    assert_eq!(config.user_sha256_key(user), decode_hex::<32>(sha256));
    assert_eq!(config.try_user_key(user), None, "no MD5 key");
    // A password gives both keys.
    let config =
        parse("[server]\nrealm = \"realm\"\n[[auth.users]]\nname = \"user\"\npassword = \"pass\"\n").expect("valid");
    assert_eq!(config.user_sha256_key(&config.auth.users[0]), decode_hex::<32>(sha256));
    // Only an MD5 key while SHA-256 is required: it could never pass.
    let md5_only = "[auth]\npassword_algorithms = [\"sha256\"]\n[[auth.users]]\nname = \"user\"\nkey = \"8493fbc53ba582fb4c044c456bdc40eb\"\n";
    assert_eq!(invalid_key(md5_only), "auth.users[0]");
    assert_eq!(
        invalid_key(&format!(
            "[[auth.users]]\nname = \"user\"\nkey_sha256 = \"{}\"\n",
            &sha256[..62]
        )),
        "auth.users[0].key_sha256"
    );
    assert_eq!(
        invalid_key(&format!(
            "[[auth.users]]\nname = \"user\"\npassword = \"p\"\nkey_sha256 = \"{sha256}\"\n"
        )),
        "auth.users[0]"
    );
}

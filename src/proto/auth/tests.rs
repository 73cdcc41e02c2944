//! Unit tests of [`super`]: keys, ephemeral credentials, nonces, signaling tokens.

use super::*;

/// A nonce without RFC 8489's cookie.
trait PlainNonce {
    fn make_nonce_plain(&self, client: SocketAddr, now: u64) -> Nonce;
}

impl PlainNonce for Credentials {
    fn make_nonce_plain(&self, client: SocketAddr, now: u64) -> Nonce {
        self.make_nonce(client, now, Features::NONE)
    }
}

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
        users_sha256: Vec::new(),
        password_algorithms: vec![PasswordAlgorithm::Md5],
        userhash: false,
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
        !c.keys_for(&sha256.username, PasswordAlgorithm::Md5, 1000)
            .unwrap()
            .contains(&sha256_key.to_vec()),
        "SHA-1 only by default"
    );
    c.secret_algorithms = vec![SecretAlgorithm::Sha256, SecretAlgorithm::Sha1];
    let keys = c.keys_for(&sha256.username, PasswordAlgorithm::Md5, 1000).unwrap();
    assert_eq!(keys.len(), 4, "two algorithms times two secrets");
    assert!(keys.contains(&sha256_key.to_vec()));
    let sha1 = mint(
        SecretAlgorithm::Sha1,
        b"new",
        Some("bob"),
        1000,
        Duration::from_secs(60),
    );
    let sha1_key = long_term_key(&sha1.username, "turnpike", &sha1.password);
    assert!(
        c.keys_for(&sha1.username, PasswordAlgorithm::Md5, 1000)
            .unwrap()
            .contains(&sha1_key.to_vec()),
        "SHA-1 still verifies"
    );
}

#[test]
fn configured_user_has_one_key() {
    let c = credentials(&[]);
    assert_eq!(
        c.keys_for("alice", PasswordAlgorithm::Md5, 0).unwrap(),
        vec![long_term_key("alice", "turnpike", "s3cret").to_vec()]
    );
    assert_eq!(
        c.keys_for("mallory", PasswordAlgorithm::Md5, 0),
        Err(UserError::Unknown)
    );
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
    let keys = c.keys_for(&minted.username, PasswordAlgorithm::Md5, 1059).unwrap();
    let expected = long_term_key(&minted.username, "turnpike", &minted.password);
    assert_eq!(keys.len(), 2);
    assert_eq!(
        keys[1],
        expected.to_vec(),
        "the second (rotated-out) secret still verifies"
    );
    assert_eq!(
        c.keys_for(&minted.username, PasswordAlgorithm::Md5, 1060),
        Err(UserError::Expired)
    );
}

#[test]
fn ephemeral_usernames_need_a_secret_and_a_numeric_expiry() {
    assert_eq!(
        credentials(&[]).keys_for("99999999999", PasswordAlgorithm::Md5, 0),
        Err(UserError::Unknown)
    );
    let c = credentials(&["s"]);
    assert_eq!(c.keys_for("bob", PasswordAlgorithm::Md5, 0), Err(UserError::Unknown));
    assert_eq!(
        c.keys_for("+5000:bob", PasswordAlgorithm::Md5, 0),
        Err(UserError::Unknown)
    );
    assert_eq!(c.keys_for("", PasswordAlgorithm::Md5, 0), Err(UserError::Unknown));
    assert!(c.keys_for("5000", PasswordAlgorithm::Md5, 0).is_ok());
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
        users_sha256: Vec::new(),
        password_algorithms: vec![PasswordAlgorithm::Md5],
        userhash: false,
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
    let nonce = a.make_nonce_plain(client, 1000);
    assert_eq!(b.check_nonce(&nonce, client, 1001), NonceCheck::Valid);
    assert_eq!(other.check_nonce(&nonce, client, 1001), NonceCheck::Stale);
    // Rotated to key 2 with key 1 kept: old nonces pass, new ones are
    // made with key 2 and pass where key 2 is known.
    let rotated = with_nonce_keys(2, &[1]);
    assert_eq!(rotated.check_nonce(&nonce, client, 1001), NonceCheck::Valid);
    let fresh = rotated.make_nonce_plain(client, 1001);
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
    let nonce = c.make_nonce_plain(client, 1000);
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
    let nonce = c.make_nonce_plain(client, near_wrap);
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
    let mut nonce = c.make_nonce_plain(client, 1000).to_vec();
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

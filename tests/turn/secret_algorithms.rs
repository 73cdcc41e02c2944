//! The HMAC-SHA256 form of shared-secret credentials
//! (`auth.secret_algorithms`, issue 12): passwords computed here with
//! `ring`, independently of the server, and used by two independent
//! clients (the `turn` crate and coturn's `turnutils_uclient`); the form
//! that is not configured is refused; `turnpike credentials` and
//! `/ice-servers` mint the first configured form; both forms verify during
//! a migration.

use std::process::Command;
use std::time::Duration;

use crate::common::uclient::relay_ten_each;
use crate::common::{
    http_exchange, rest_credential, rest_credential_with, run_with_timeout, turn_client, turnpike_bin, unix_now,
    TestServer,
};
use ring::hmac::{HMAC_SHA1_FOR_LEGACY_USE_ONLY as SHA1, HMAC_SHA256 as SHA256};

const SECRET: &str = "sha256-test-secret";

const API_KEY: &str = "api-key-of-the-sha256-test-backend";

fn server(algorithms: &str) -> TestServer {
    TestServer::start(&format!(
        "[auth]\nsecrets = [\"{SECRET}\"]\nsecret_algorithms = [{algorithms}]\n\n[signaling]\napi_key = \"{API_KEY}\"\n"
    ))
}

/// Whether the `turn` crate client gets an allocation with this credential.
async fn allocates(server: &TestServer, (user, password): &(String, String)) -> bool {
    let (client, _socket) = turn_client(server.addr(), user, password).await;
    let allocated = client.allocate().await.is_ok();
    client.close().await.ok();
    allocated
}

#[tokio::test]
async fn a_sha256_only_server_takes_sha256_passwords_and_refuses_sha1_ones() {
    let server = server("\"sha256\"");
    let expiry = unix_now() + 600;
    assert!(allocates(&server, &rest_credential_with(SHA256, SECRET, "a", expiry)).await);
    assert!(!allocates(&server, &rest_credential(SECRET, "b", expiry)).await);
    // What the server hands out is the SHA-256 form.
    let (status, body) = http_exchange(
        server.http_addr(),
        &format!(
            "GET /ice-servers HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_KEY}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let turn = list["iceServers"]
        .as_array()
        .and_then(|servers| servers.iter().find(|s| s["username"].is_string()))
        .unwrap_or_else(|| panic!("no TURN entry in {body}"));
    let user = turn["username"].as_str().unwrap();
    let name = user.split_once(':').map_or("", |(_, n)| n);
    let expiry: u64 = user.split(':').next().unwrap().parse().unwrap();
    let expected = rest_credential_with(SHA256, SECRET, name, expiry);
    assert_eq!(turn["credential"].as_str(), Some(expected.1.as_str()), "{body}");
}

#[tokio::test]
async fn during_a_migration_both_forms_verify() {
    let server = server("\"sha256\", \"sha1\"");
    let expiry = unix_now() + 600;
    assert!(allocates(&server, &rest_credential_with(SHA256, SECRET, "new", expiry)).await);
    assert!(allocates(&server, &rest_credential_with(SHA1, SECRET, "old", expiry)).await);
}

#[test]
fn turnutils_uclient_relays_with_a_sha256_password_and_the_cli_mints_one() {
    let server = server("\"sha256\"");
    // `turnpike credentials --config` mints the configured form.
    let out = run_with_timeout(
        Command::new(turnpike_bin())
            .arg("--config")
            .arg(server.config_path())
            .args(["credentials", "--user", "cli"]),
        Duration::from_secs(10),
    );
    assert!(out.success(), "{}", out.combined());
    let entry: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("JSON");
    let (user, password) = (
        entry["username"].as_str().expect("username").to_owned(),
        entry["credential"].as_str().expect("credential").to_owned(),
    );
    let expiry: u64 = user.split(':').next().unwrap().parse().unwrap();
    assert_eq!(
        (user.clone(), password.clone()),
        rest_credential_with(SHA256, SECRET, "cli", expiry)
    );
    let (text, summary) = relay_ten_each(server.addr(), &user, &password, &[]);
    assert!(summary.received > 0, "nothing came back through the relays:\n{text}");
}

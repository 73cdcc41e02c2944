//! The long-term credential check (RFC 8489 §9.2), in the dispatch of
//! [`crate::proto::server`].

use super::*;

// Long-term credentials (RFC 8489 §9.2)

#[test]
fn request_without_integrity_is_challenged_with_realm_and_nonce() {
    let mut h = Harness::new();
    let response = h.challenge(client(1), method::ALLOCATE, udp);
    assert_eq!(response.types(), [attr::ERROR_CODE, attr::REALM, attr::NONCE]);
    assert_eq!(h.server.allocation_count(), 0);
    assert!(h.binder().binds.is_empty());
}

#[test]
fn wrong_password_is_refused_with_401() {
    let mut h = Harness::new();
    h.request(client(1), &Cred::new("alice", REALM, "guess"), method::ALLOCATE, udp)
        .assert_challenge(401);
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn unknown_user_is_refused_with_401() {
    let mut h = Harness::new();
    h.request(
        client(1),
        &Cred::new("mallory", REALM, "alice-pw"),
        method::ALLOCATE,
        udp,
    )
    .assert_challenge(401);
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn integrity_without_nonce_is_a_bad_request() {
    let mut h = Harness::new();
    let mut request = Vec::new();
    let mut w = MessageWriter::new(&mut request, Class::Request, method::ALLOCATE, [1; 12]);
    w.bytes(attr::REQUESTED_TRANSPORT, &UDP)
        .bytes(attr::USERNAME, b"alice")
        .bytes(attr::REALM, REALM.as_bytes());
    w.finish(Some(&stun::integrity_key(&alice().key)), true);

    let response = h.exchange(client(1), &request);
    response.assert_code(400);
    assert!(!response.msg().has_integrity());
    assert_eq!(response.attr(attr::NONCE), None);
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn nonce_is_stale_after_its_ttl_and_the_438_carries_a_fresh_one() {
    let mut h = Harness::new();
    let c = client(1);
    // CreatePermission without an allocation: 437 shows the nonce passed.
    h.permit(c, &[peer_a()]).assert_code(437);
    h.at(NONCE_TTL - 1);
    h.permit(c, &[peer_a()]).assert_code(437);
    h.at(NONCE_TTL);
    let old = h.nonces[&c].clone();
    let response = h.permit(c, &[peer_a()]);
    response.assert_challenge(438);
    assert_ne!(response.attr(attr::NONCE), Some(&old[..]));
    // The harness kept the new nonce, as a client does: the retry passes.
    h.permit(c, &[peer_a()]).assert_code(437);
}

#[test]
fn nonce_issued_to_another_client_address_is_stale() {
    let mut h = Harness::new();
    h.challenge(client(1), method::ALLOCATE, udp);
    let stolen = h.nonces[&client(1)].clone();
    h.nonces.insert(client(2), stolen);
    h.request(client(2), &alice(), method::ALLOCATE, udp)
        .assert_challenge(438);
    assert_eq!(h.server.allocation_count(), 0);
    h.allocate(client(2));
}

#[test]
fn precomputed_key_user_authenticates_like_a_password_user() {
    let mut h = Harness::new();
    h.request(client(1), &Cred::new("carol", REALM, "alice-pw"), method::ALLOCATE, udp)
        .assert_challenge(401);
    let relay = h.allocate_as(client(1), &carol());
    assert_eq!(relay.0, relay_at(FIRST_PORT));
}

#[test]
fn ephemeral_credential_is_accepted_until_it_expires() {
    let mut h = Harness::new();
    let bob = ephemeral(SECRETS[0], h.unix_now(), 120);
    h.allocate_as(client(1), &bob);
    h.at(119);
    h.allocate_as(client(2), &bob);
    h.at(120);
    h.request(client(3), &bob, method::ALLOCATE, udp).assert_challenge(401);
    assert_eq!(h.server.allocation_count(), 2);
}

/// The policy for a credential that expires during a call (SECURITY.md):
/// the allocation it created keeps refreshing, permitting and binding on
/// it, as LiveKit does, so a call outlives its credential; the expired
/// credential starts nothing new, and works on no other 5-tuple.
#[test]
fn an_expired_credential_keeps_its_own_allocation_alive_and_starts_nothing_else() {
    let mut h = Harness::new();
    let bob = ephemeral(SECRETS[0], h.unix_now(), 120);
    h.allocate_as(client(1), &bob);
    h.at(500);
    h.refresh(client(1), &bob, None).assert_success();
    h.request(client(1), &bob, method::CREATE_PERMISSION, peers(&[peer_a()]))
        .assert_success();
    h.at(1000);
    h.refresh(client(1), &bob, Some(600)).assert_success();
    assert!(h.server.has_allocation(&client(1)));
    // Another 5-tuple, even with an allocation of its own, gets nothing.
    h.allocate(client(2));
    h.request(client(2), &bob, method::REFRESH, none).assert_challenge(401);
    h.request(client(3), &bob, method::ALLOCATE, udp).assert_challenge(401);
}

#[test]
fn a_credential_that_lives_beyond_the_longest_accepted_lifetime_is_refused() {
    let mut h = Harness::new();
    let forever = ephemeral(SECRETS[0], h.unix_now(), 8 * 24 * 3600);
    h.request(client(1), &forever, method::ALLOCATE, udp)
        .assert_challenge(401);
    let week = ephemeral(SECRETS[0], h.unix_now(), 7 * 24 * 3600);
    h.allocate_as(client(1), &week);
    let failures = h.server.snapshot(h.now().mono).counters.auth_failures;
    assert_eq!(failures[stats::AuthFailure::CredentialTooLong as usize], 1);
}

#[test]
fn a_client_with_a_stale_password_is_stopped_without_locking_out_the_others() {
    let mut h = Harness::new();
    // A client left with an old password for the shared user alice gets
    // five guesses a minute; then even the right password from it is
    // refused, without a look.
    let wrong = Cred::new("alice", REALM, "old-password");
    for _ in 0..5 {
        h.request(client(1), &wrong, method::ALLOCATE, udp)
            .assert_challenge(401);
    }
    h.request(client(1), &alice(), method::ALLOCATE, udp)
        .assert_challenge(401);
    // Everyone else with the right password gets in (the harness allows
    // alice two allocations).
    h.allocate(client(2));
    let failures = h.server.snapshot(h.now().mono).counters.auth_failures;
    assert_eq!(failures[stats::AuthFailure::BadIntegrity as usize], 5);
    assert_eq!(failures[stats::AuthFailure::RateLimited as usize], 1);
    // It has one guess back after twelve seconds (five a minute).
    h.elapsed += Duration::from_secs(12);
    h.allocate(client(1));
}

#[test]
fn guesses_from_many_addresses_get_the_usernames_budget_and_its_recent_clients_stay_in() {
    let mut h = Harness::new();
    h.allocate(client(1));
    // Thirty guesses at alice, five from each of six addresses, spend her
    // minute: a seventh address is refused without a look.
    let wrong = Cred::new("alice", REALM, "guess");
    for n in 10..16 {
        for _ in 0..5 {
            h.request(client(n), &wrong, method::ALLOCATE, udp)
                .assert_challenge(401);
        }
    }
    h.request(client(20), &wrong, method::ALLOCATE, udp)
        .assert_challenge(401);
    h.request(client(21), &alice(), method::ALLOCATE, udp)
        .assert_challenge(401);
    let failures = h.server.snapshot(h.now().mono).counters.auth_failures;
    assert_eq!(failures[stats::AuthFailure::BadIntegrity as usize], 30);
    assert_eq!(failures[stats::AuthFailure::RateLimited as usize], 2);
    // The address that authenticated as alice lately goes on: another of
    // its ports allocates, and carol is not affected.
    let again = ClientAddr {
        remote: SocketAddr::new(client(1).remote.ip(), 50_000),
        ..client(1)
    };
    h.allocate(again);
    h.allocate_as(client(3), &carol());
}

#[test]
fn one_source_guessing_many_usernames_is_stopped_after_sixty() {
    let mut h = Harness::new();
    for i in 0..60 {
        let guess = Cred::new(&format!("user{i}"), REALM, "x");
        h.request(client(4), &guess, method::ALLOCATE, udp)
            .assert_challenge(401);
    }
    h.request(client(4), &carol(), method::ALLOCATE, udp)
        .assert_challenge(401);
    h.allocate_as(client(5), &carol());
}

#[test]
fn a_username_over_513_bytes_is_a_bad_request() {
    let mut h = Harness::new();
    let long = Cred::new(&"a".repeat(514), REALM, "pw");
    let id = h.next_id();
    let packet = h.authed(client(1), &long, method::ALLOCATE, id, udp);
    let answer = h.exchange(client(1), &packet);
    answer.assert_code(400);
    assert!(!answer.msg().has_integrity());
    let limit = Cred::new(&"a".repeat(513), REALM, "pw");
    h.request(client(1), &limit, method::ALLOCATE, udp)
        .assert_challenge(401);
}

#[test]
fn ephemeral_credentials_of_both_shared_secrets_verify() {
    let mut h = Harness::new();
    let now = h.unix_now();
    h.allocate_as(client(1), &ephemeral(SECRETS[0], now, 60));
    h.allocate_as(client(2), &ephemeral(SECRETS[1], now, 60));
    h.request(client(3), &ephemeral("not-configured", now, 60), method::ALLOCATE, udp)
        .assert_challenge(401);
    assert_eq!(h.server.allocation_count(), 2);
}

//! The operator's view of the core ([`crate::proto::server::admin`]) and
//! revoked usernames in the credential check.

use super::*;
use crate::proto::server::AllocationId;

#[test]
fn summaries_name_each_allocation_with_a_shard_unique_id() {
    let mut h = Harness::new();
    let relay_1 = h.allocate(client(1));
    let relay_2 = h.allocate_as(client(2), &carol());
    h.at(10);
    let list = h.server.allocation_summaries(h.now().mono);
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].id.to_string(), "0-1");
    assert_eq!(list[1].id.to_string(), "0-2");
    assert_eq!(
        (list[0].username.as_str(), list[0].client, list[0].relays.as_slice()),
        ("alice", client(1), &[relay_1.0][..])
    );
    assert_eq!(
        (list[1].username.as_str(), list[1].relays.as_slice()),
        ("carol", &[relay_2.0][..])
    );
    assert_eq!(list[0].realm, REALM);
    assert_eq!(list[0].age, Duration::from_secs(10));
    assert_eq!(list[0].expires_in, Duration::from_secs(590));
}

#[test]
fn ending_an_allocation_by_id_frees_it_as_an_expiry_would() {
    let mut h = Harness::new();
    let relay = h.allocate(client(1));
    h.allocate(client(2));
    let id = h.server.allocation_summaries(h.now().mono)[0].id;
    assert!(h.server.end_allocation(id, h.now().mono));
    h.assert_quiet();
    assert_eq!(h.binder().releases, [(Family::V4, relay.0.port())]);
    assert!(!h.live.contains(Family::V4, RelayProtocol::Udp, relay.0.port()));
    assert_eq!(h.quota.total(), 1);
    assert_eq!(h.server.allocation_count(), 1);
    h.refresh(client(1), &alice(), None).assert_code(437);
    // Gone is gone, and an id of another shard is nobody's here.
    assert!(!h.server.end_allocation(id, h.now().mono));
    let elsewhere = AllocationId {
        shard: ShardId(1),
        serial: 2,
    };
    assert!(!h.server.end_allocation(elsewhere, h.now().mono));
    // Its timer went with it: nothing fires at the old deadline.
    h.at(601);
    assert_eq!(h.server.allocation_count(), 0, "the other one expired");
}

#[test]
fn ending_a_users_allocations_leaves_the_others() {
    let mut h = Harness::new();
    h.allocate(client(1));
    h.allocate(client(2));
    h.allocate_as(client(3), &carol());
    assert_eq!(h.server.end_user_allocations("alice", h.now().mono), 2);
    assert_eq!(h.server.end_user_allocations("alice", h.now().mono), 0);
    assert_eq!(h.server.allocation_count(), 1);
    assert_eq!(h.quota.total(), 1);
    h.refresh(client(3), &carol(), None).assert_success();
}

#[test]
fn a_revoked_username_is_refused_with_401_for_every_request_until_its_bound() {
    let mut h = Harness::new();
    let c = client(1);
    h.allocate(c);
    let until = h.unix_now() + 100;
    h.server.revocations.revoke("alice", until, h.unix_now()).unwrap();
    // An allocation the operator did not end cannot be refreshed or used
    // for anything new; a bad credential is 401 (RFC 8489 §9.2.4), not
    // 441, which says the credential is fine but not this allocation's.
    h.refresh(c, &alice(), None).assert_challenge(401);
    h.permit(c, &[peer_a()]).assert_challenge(401);
    h.request(client(2), &alice(), method::ALLOCATE, udp)
        .assert_challenge(401);
    assert_eq!(h.server.allocation_count(), 1);
    // Others are untouched.
    h.allocate_as(client(3), &carol());
    // Past its bound the username is served again.
    h.at(100);
    h.refresh(c, &alice(), None).assert_success();
}

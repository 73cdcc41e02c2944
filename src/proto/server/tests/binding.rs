//! Binding (RFC 8489 §6.3): [`crate::proto::server::binding`].

use super::*;

/// SOFTWARE goes only into authenticated answers: a Binding answer goes to
/// whoever the source address claims to be (see the module doc).
#[test]
fn binding_answers_with_the_clients_address_and_fingerprint_but_no_software() {
    let mut h = Harness::new();
    let v6 = ClientAddr {
        transport: Transport::Udp,
        local: addr("[2001:db8::1]:3478"),
        remote: addr("[2001:db8::99]:40000"),
    };
    for c in [client(1), v6] {
        let response = h.exchange(c, &binding_request([1; 12], none));
        response.assert_success();
        assert_eq!(response.types(), [attr::XOR_MAPPED_ADDRESS]);
        assert_eq!(response.xor(attr::XOR_MAPPED_ADDRESS), c.remote);
        assert!(!response.msg().has_integrity());
    }
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn binding_answers_carry_fingerprint_only_when_the_request_did_and_stay_within_twice_its_size() {
    let mut h = Harness::new();
    let mut bare = vec![0x00, 0x01, 0x00, 0x00];
    bare.extend_from_slice(&stun::MAGIC_COOKIE.to_be_bytes());
    bare.extend_from_slice(&[7; 12]);
    let answer = h.exchange_raw(client(1), &bare);
    assert_eq!(answer.len(), 32);
    assert!(!Message::parse(&answer).unwrap().has_fingerprint());
    let with_fingerprint = binding_request([1; 12], none);
    let answer = h.exchange_raw(client(1), &with_fingerprint);
    assert_eq!((with_fingerprint.len(), answer.len()), (28, 40));
    assert!(Message::parse(&answer).unwrap().has_fingerprint());
}

#[test]
fn binding_with_unknown_comprehension_required_attribute_gets_420() {
    let mut h = Harness::new();
    // CHANGE-REQUEST (RFC 5780) is comprehension-required and not ours;
    // an unknown comprehension-optional one is ignored.
    let request = binding_request([1; 12], |w| {
        w.u32(0x0003, 0).u32(0x8055, 0);
    });
    let response = h.exchange(client(1), &request);
    response.assert_code(420);
    assert_eq!(response.attr(attr::UNKNOWN_ATTRIBUTES), Some(&[0x00, 0x03][..]));
    assert!(!response.msg().has_integrity());
}

#[test]
fn classic_binding_request_gets_mapped_address_and_its_16_byte_id_back() {
    let mut h = Harness::new();
    let c = client(1);
    let id: [u8; 16] = *b"RFC3489-client!!";
    let mut request = vec![0x00, 0x01, 0x00, 0x00];
    request.extend_from_slice(&id);
    let response = h.exchange_raw(c, &request);

    let mut expected = vec![0x01, 0x01, 0x00, 0x0C];
    expected.extend_from_slice(&id);
    expected.extend_from_slice(&[0x00, 0x01, 0x00, 0x08, 0x00, 0x01]);
    expected.extend_from_slice(&c.remote.port().to_be_bytes());
    expected.extend_from_slice(&[192, 0, 2, 101]);
    assert_eq!(response, expected);
    assert_eq!(stun::decode_address(&response[24..]), Ok(c.remote));
}

#[test]
fn request_of_an_unsupported_method_gets_400_without_integrity() {
    let mut h = Harness::new();
    let request = encode(Class::Request, method::SEND, [1; 12], udp, None);
    let response = h.exchange(client(1), &request);
    response.assert_code(400);
    assert!(!response.msg().has_integrity());
}

//! Binding (RFC 8489 §6.3): [`crate::proto::server::binding`].

use super::*;

// Binding (RFC 8489 §6.3)

#[test]
fn binding_answers_with_the_clients_address_software_and_fingerprint() {
    let mut h = Harness::new();
    let v6 = ClientAddr {
        transport: Transport::Udp,
        local: addr("[2001:db8::1]:3478"),
        remote: addr("[2001:db8::99]:40000"),
    };
    for c in [client(1), v6] {
        let response = h.exchange(c, &binding_request([1; 12], none));
        response.assert_success();
        assert_eq!(response.types(), [attr::XOR_MAPPED_ADDRESS, attr::SOFTWARE]);
        assert_eq!(response.xor(attr::XOR_MAPPED_ADDRESS), c.remote);
        assert_eq!(response.attr(attr::SOFTWARE), Some(SOFTWARE.as_bytes()));
        assert!(!response.msg().has_integrity());
    }
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn binding_omits_software_when_none_is_configured() {
    let mut h = Harness::with(Settings {
        software: None,
        ..Settings::default()
    });
    let response = h.exchange(client(1), &binding_request([1; 12], none));
    response.assert_success();
    assert_eq!(response.types(), [attr::XOR_MAPPED_ADDRESS]);
    assert!(response.has_fingerprint());
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

//! NAT behaviour discovery (RFC 5780 §6): [`crate::proto::server::binding`]
//! on the addresses of [`crate::proto::server::nat_discovery`].

use super::*;
use crate::proto::server::AddressPair;

const A1P1: &str = "192.0.2.1:3478";
const A1P2: &str = "192.0.2.1:3479";
const A2P1: &str = "192.0.2.2:3478";
const A2P2: &str = "192.0.2.2:3479";

fn pairs() -> NatDiscovery {
    NatDiscovery::new([
        AddressPair::new(addr(A1P1), addr(A2P2)).unwrap(),
        AddressPair::new(addr("[2001:db8::1]:3478"), addr("[2001:db8::2]:3479")).unwrap(),
    ])
}

fn discovering() -> Harness {
    Harness::with(Settings {
        nat_discovery: pairs(),
        ..Settings::default()
    })
}

/// Client `n` over UDP, reaching the server at `local`.
fn at(local: &str, n: u8) -> ClientAddr {
    ClientAddr {
        local: addr(local),
        ..client(n)
    }
}

/// A Binding request of exactly the attributes `build` writes, with
/// FINGERPRINT if asked.
fn binding(build: impl Fn(&mut MessageWriter<'_>), fingerprint: bool) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, Class::Request, method::BINDING, [0x35; 12]);
    build(&mut w);
    w.finish(None, fingerprint);
    buf
}

fn change(flags: u32) -> impl Fn(&mut MessageWriter<'_>) {
    move |w| {
        w.u32(attr::CHANGE_REQUEST, flags);
    }
}

fn with(typ: u16, value: &[u8]) -> impl Fn(&mut MessageWriter<'_>) + '_ {
    move |w| {
        w.bytes(typ, value);
    }
}

fn plain(response: &Response, typ: u16) -> Option<SocketAddr> {
    response
        .attr(typ)
        .map(|v| stun::decode_address(v).expect("a valid address"))
}

/// Sends `request` as `client` and checks what every answer to it must
/// be: to the client's IP, within twice the request, transaction id
/// echoed. Returns where it goes and the answer.
fn ask(h: &mut Harness, client: ClientAddr, request: &[u8]) -> (ClientAddr, Response) {
    let (to, bytes) = h.exchange_anywhere(client, request);
    assert_eq!((to.transport, to.remote.ip()), (client.transport, client.remote.ip()));
    assert!(
        bytes.len() <= 2 * request.len(),
        "{} bytes for {}",
        bytes.len(),
        request.len()
    );
    let response = Response(bytes);
    assert_eq!(response.msg().transaction_id(), [0x35; 12]);
    (to, response)
}

#[test]
fn every_flag_on_every_address_is_answered_from_where_table_1_says() {
    let mut h = discovering();
    let quartet = [A1P1, A1P2, A2P1, A2P2];
    for (i, da_dp) in quartet.iter().enumerate() {
        let received = addr(da_dp);
        let other = quartet
            .iter()
            .map(|s| addr(s))
            .find(|s| s.ip() != received.ip() && s.port() != received.port())
            .unwrap();
        for (flags, ip, port) in [(0, false, false), (4, true, false), (2, false, true), (6, true, true)] {
            let c = at(da_dp, i as u8);
            let (to, response) = ask(&mut h, c, &binding(change(flags), false));
            response.assert_success();
            let source = SocketAddr::new(
                if ip { other.ip() } else { received.ip() },
                if port { other.port() } else { received.port() },
            );
            assert_eq!(to.local, source, "flags {flags} on {da_dp}");
            assert_eq!(to.remote, c.remote, "to the request's source");
            assert_eq!(response.xor(attr::XOR_MAPPED_ADDRESS), c.remote);
            // 28 bytes in: room for OTHER-ADDRESS and RESPONSE-ORIGIN.
            assert_eq!(
                plain(&response, attr::OTHER_ADDRESS),
                Some(other),
                "Ca:Cp whatever the flags"
            );
            assert_eq!(plain(&response, attr::RESPONSE_ORIGIN), Some(source));
            assert_eq!(response.0.len(), 56);
        }
    }
}

#[test]
fn what_rfc_5780_adds_is_what_fits_twice_the_request_most_useful_first() {
    let mut h = discovering();
    let c = at(A1P1, 1);
    let types = |h: &mut Harness, request: Vec<u8>| {
        let (_, response) = ask(h, c, &request);
        (request.len(), response.0.len(), response.types())
    };
    // A bare request: XOR-MAPPED-ADDRESS alone; 40 bytes leave no room.
    assert_eq!(
        types(&mut h, binding(none, false)),
        (20, 32, vec![attr::XOR_MAPPED_ADDRESS])
    );
    assert_eq!(
        types(&mut h, binding(none, true)),
        (28, 52, vec![attr::XOR_MAPPED_ADDRESS, attr::OTHER_ADDRESS])
    );
    let software = |w: &mut MessageWriter<'_>| {
        w.bytes(attr::SOFTWARE, b"a client of RFC 5780");
    };
    assert_eq!(
        types(&mut h, binding(software, true)),
        (
            52,
            76,
            vec![
                attr::XOR_MAPPED_ADDRESS,
                attr::MAPPED_ADDRESS,
                attr::RESPONSE_ORIGIN,
                attr::OTHER_ADDRESS
            ]
        )
    );
    let (_, full) = ask(&mut h, c, &binding(software, true));
    assert_eq!(
        plain(&full, attr::MAPPED_ADDRESS),
        Some(c.remote),
        "MAPPED-ADDRESS as XOR's"
    );
    assert!(full.has_fingerprint());
}

#[test]
fn response_port_changes_only_the_port_and_padding_is_echoed_within_the_bound() {
    let mut h = discovering();
    let c = at(A2P1, 2);
    let port = |w: &mut MessageWriter<'_>| {
        w.bytes(attr::RESPONSE_PORT, &[0xC3, 0x50, 0, 0])
            .u32(attr::CHANGE_REQUEST, 6);
    };
    let (to, response) = ask(&mut h, c, &binding(port, false));
    response.assert_success();
    assert_eq!(to.remote, SocketAddr::new(c.remote.ip(), 50_000));
    assert_eq!(to.local, addr(A1P2), "and from where CHANGE-REQUEST says");
    assert_eq!(
        response.xor(attr::XOR_MAPPED_ADDRESS),
        c.remote,
        "the mapped address is the source's"
    );

    for (asked, echoed) in [(1472, 1472), (13, 8), (0, 0), (2, 4)] {
        let request = binding(with(attr::PADDING, &vec![0xAB; asked]), false);
        let (to, response) = ask(&mut h, c, &request);
        assert_eq!(to, c);
        assert_eq!(
            response.attr(attr::PADDING).map(<[u8]>::len),
            Some(echoed),
            "PADDING {asked}"
        );
        assert!(response.attr(attr::PADDING).unwrap().iter().all(|b| *b == 0));
    }
    // 1472 padded bytes leave room for every address attribute.
    let (_, response) = ask(&mut h, c, &binding(with(attr::PADDING, &[0; 1472]), false));
    assert_eq!(response.types().len(), 5);

    let both = |w: &mut MessageWriter<'_>| {
        w.bytes(attr::RESPONSE_PORT, &[0xC3, 0x50, 0, 0])
            .bytes(attr::PADDING, &[0; 64]);
    };
    let (to, response) = ask(&mut h, c, &binding(both, false));
    assert_eq!(to, c, "an error goes back where the request came from");
    response.assert_code(400);
    let (to, response) = ask(&mut h, c, &binding(with(attr::RESPONSE_PORT, &[0; 4]), false));
    assert_eq!(to, c);
    response.assert_code(400);
}

#[test]
fn without_an_alternate_there_is_no_other_address_and_change_request_is_unknown() {
    let mut h = Harness::new();
    let c = at(A1P1, 3);
    let (to, response) = ask(&mut h, c, &binding(with(attr::SOFTWARE, &[0; 64]), false));
    assert_eq!(to, c);
    assert_eq!(response.types(), [attr::XOR_MAPPED_ADDRESS]);
    for flags in [0, 2, 4, 6] {
        let (to, response) = ask(&mut h, c, &binding(change(flags), false));
        assert_eq!(to, c);
        response.assert_code(420);
        assert_eq!(response.attr(attr::UNKNOWN_ATTRIBUTES), Some(&[0x00, 0x03][..]));
    }
    // RESPONSE-PORT and PADDING need no second address (RFC 5780 §5).
    let (to, response) = ask(&mut h, c, &binding(with(attr::RESPONSE_PORT, &[0, 99, 0, 0]), false));
    assert_eq!(to.remote, SocketAddr::new(c.remote.ip(), 99));
    response.assert_success();
    let (_, response) = ask(&mut h, c, &binding(with(attr::PADDING, &[0; 100]), false));
    assert_eq!(response.attr(attr::PADDING).map(<[u8]>::len), Some(100));
    // A UDP address of no pair is the same on a server that has one.
    let mut h = discovering();
    let elsewhere = at("192.0.2.9:3478", 3);
    let (_, response) = ask(&mut h, elsewhere, &binding(change(0), true));
    response.assert_code(420);
}

#[test]
fn over_tcp_the_request_attributes_are_unknown_and_nothing_of_rfc_5780_is_sent() {
    let mut h = discovering();
    let c = ClientAddr {
        transport: Transport::Tcp,
        ..at(A1P1, 4)
    };
    let (to, response) = ask(&mut h, c, &binding(with(attr::SOFTWARE, &[0; 64]), false));
    assert_eq!(to, c);
    assert_eq!(response.types(), [attr::XOR_MAPPED_ADDRESS]);
    for typ in [attr::CHANGE_REQUEST, attr::RESPONSE_PORT, attr::PADDING] {
        let (to, response) = ask(&mut h, c, &binding(with(typ, &[0, 0, 0, 6]), false));
        assert_eq!(to, c);
        response.assert_code(420);
        assert_eq!(response.attr(attr::UNKNOWN_ATTRIBUTES), Some(&typ.to_be_bytes()[..]));
    }
}

/// An RFC 3489 request as Debian's `stun` client sends it: a 16-byte
/// transaction id instead of the magic cookie, CHANGE-REQUEST always.
fn classic(flags: u8) -> Vec<u8> {
    let mut request = vec![0x00, 0x01, 0x00, 0x08];
    request.extend_from_slice(b"RFC3489-client!!");
    request.extend_from_slice(&[0x00, 0x03, 0x00, 0x04, 0, 0, 0, flags]);
    request
}

/// The attributes of an RFC 3489 answer (our parser reads only requests
/// without a cookie), after checking its header.
fn classic_attributes(answer: &[u8], class: u16) -> Vec<(u16, Vec<u8>)> {
    assert_eq!(u16::from_be_bytes([answer[0], answer[1]]), class | 0x0001);
    assert_eq!(
        usize::from(u16::from_be_bytes([answer[2], answer[3]])),
        answer.len() - 20
    );
    assert_eq!(&answer[4..20], b"RFC3489-client!!");
    let mut attributes = Vec::new();
    let mut at = 20;
    while at < answer.len() {
        let typ = u16::from_be_bytes([answer[at], answer[at + 1]]);
        let len = usize::from(u16::from_be_bytes([answer[at + 2], answer[at + 3]]));
        attributes.push((typ, answer[at + 4..at + 4 + len].to_vec()));
        at += 4 + len;
    }
    attributes
}

#[test]
fn an_rfc_3489_client_gets_changed_and_source_address_from_the_address_it_asks_for() {
    let mut h = discovering();
    let c = at(A1P1, 5);
    for (flags, source) in [(0, A1P1), (4, A2P1), (2, A1P2), (6, A2P2)] {
        let request = classic(flags);
        let (to, answer) = h.exchange_anywhere(c, &request);
        assert_eq!(
            to,
            ClientAddr {
                local: addr(source),
                ..c
            }
        );
        assert_eq!(answer.len(), 2 * request.len());
        let attributes = classic_attributes(&answer, 0x0100);
        let addresses: Vec<(u16, SocketAddr)> = attributes
            .iter()
            .map(|(t, v)| (*t, stun::decode_address(v).unwrap()))
            .collect();
        assert_eq!(
            addresses,
            [
                (attr::MAPPED_ADDRESS, c.remote),
                (attr::SOURCE_ADDRESS, addr(source)),
                (attr::CHANGED_ADDRESS, addr(A2P2))
            ]
        );
    }
    // Without a second address: no change asked, a plain answer; a
    // change, 420 in RFC 3489's form; a broken CHANGE-REQUEST, 400.
    let mut h = Harness::new();
    let answer = h.exchange_raw(c, &classic(0));
    assert_eq!(classic_attributes(&answer, 0x0100).len(), 1);
    let answer = h.exchange_raw(c, &classic(4));
    let attributes = classic_attributes(&answer, 0x0110);
    assert_eq!(
        attributes,
        [
            (attr::ERROR_CODE, vec![0, 0, 4, 20]),
            (attr::UNKNOWN_ATTRIBUTES, vec![0, 3, 0, 3])
        ]
    );
    let mut broken = classic(0);
    broken[3] = 0x0C;
    broken.extend_from_slice(&[0, 0, 0, 0]);
    broken[23] = 8;
    let answer = h.exchange_raw(c, &broken);
    assert_eq!(
        classic_attributes(&answer, 0x0110),
        [(attr::ERROR_CODE, vec![0, 0, 4, 0])]
    );
}

#[test]
fn an_ipv6_pair_answers_its_own_family() {
    let mut h = discovering();
    let c = ClientAddr {
        transport: Transport::Udp,
        local: addr("[2001:db8::2]:3478"),
        remote: addr("[2001:db8::99]:40000"),
    };
    let request = binding(with(attr::SOFTWARE, &[0; 40]), true);
    let (to, response) = ask(&mut h, c, &request);
    assert_eq!(to, c);
    assert_eq!(plain(&response, attr::OTHER_ADDRESS), Some(addr("[2001:db8::1]:3479")));
    assert_eq!(plain(&response, attr::RESPONSE_ORIGIN), Some(c.local));
    let (to, _) = ask(&mut h, c, &binding(change(6), true));
    assert_eq!(to.local, addr("[2001:db8::1]:3479"));
}

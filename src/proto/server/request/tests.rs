//! The request parsers of [`super`].

use super::*;
use crate::proto::stun::{method, Class, MessageWriter};

fn allocate(build: impl FnOnce(&mut MessageWriter<'_>), over: Transport) -> Result<AllocateRequest, Failure> {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, Class::Request, method::ALLOCATE, [1; 12]);
    build(&mut w);
    w.finish(None, false);
    AllocateRequest::parse(&Message::parse(&buf).unwrap(), over)
}

#[test]
fn allocate_attributes_are_read_and_contradictions_refused() {
    let dual = allocate(
        |w| {
            w.bytes(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
                .bytes(attr::ADDITIONAL_ADDRESS_FAMILY, &[2, 0, 0, 0])
                .u32(attr::LIFETIME, 900);
        },
        Transport::Udp,
    );
    assert_eq!(
        dual,
        Ok(AllocateRequest {
            protocol: RelayProtocol::Udp,
            even_port: None,
            reservation: None,
            family: None,
            additional_v6: true,
            lifetime: Some(900),
        })
    );
    let code = |r: Result<AllocateRequest, Failure>| match r {
        Err(Failure::Code(code)) => code.code(),
        other => panic!("{other:?}"),
    };
    let unknown_family = allocate(
        |w| {
            w.bytes(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
                .bytes(attr::REQUESTED_ADDRESS_FAMILY, &[3, 0, 0, 0]);
        },
        Transport::Udp,
    );
    assert_eq!(code(unknown_family), 440);
    let additional_v4 = allocate(
        |w| {
            w.bytes(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
                .bytes(attr::ADDITIONAL_ADDRESS_FAMILY, &[1, 0, 0, 0]);
        },
        Transport::Udp,
    );
    assert_eq!(code(additional_v4), 400);
    let transport = |protocol: u8| {
        move |w: &mut MessageWriter<'_>| {
            w.bytes(attr::REQUESTED_TRANSPORT, &[protocol, 0, 0, 0]);
        }
    };
    assert_eq!(code(allocate(transport(6), Transport::Udp)), 400);
    let sctp = allocate(transport(132), Transport::Tcp);
    assert_eq!(code(sctp), 442);
}

fn binding(build: impl FnOnce(&mut MessageWriter<'_>)) -> Result<BindingRequest, Failure> {
    let mut buf = Vec::new();
    let mut w = MessageWriter::new(&mut buf, Class::Request, method::BINDING, [1; 12]);
    build(&mut w);
    w.finish(None, true);
    BindingRequest::parse(&Message::parse(&buf).unwrap())
}

#[test]
fn binding_reads_the_rfc_5780_attributes_and_refuses_their_bad_forms() {
    assert_eq!(binding(|_| {}), Ok(BindingRequest::default()));
    let flags = |value: u32| {
        binding(move |w| {
            w.u32(attr::CHANGE_REQUEST, value);
        })
    };
    let both = flags(0x06).unwrap();
    assert!(both.change_ip && both.change_port);
    let ip = flags(0x04).unwrap();
    assert!(ip.change_ip && !ip.change_port);
    // Bits other than A and B mean nothing (§7.2).
    assert_eq!(flags(0xFFFF_FFF9), Ok(BindingRequest::default()));
    let port = binding(|w| {
        w.bytes(attr::RESPONSE_PORT, &[0x12, 0x34, 0, 0]);
    })
    .unwrap();
    assert_eq!(port.response_port, Some(0x1234));
    let padded = binding(|w| {
        w.bytes(attr::PADDING, &[0; 13]);
    })
    .unwrap();
    assert_eq!(padded.padding, Some(13));
    let bad = Err(Failure::Code(ErrorCode::BadRequest));
    assert_eq!(
        binding(|w| {
            w.bytes(attr::CHANGE_REQUEST, &[0, 6]);
        }),
        bad
    );
    assert_eq!(
        binding(|w| {
            w.bytes(attr::RESPONSE_PORT, &[0, 0, 0, 0]);
        }),
        bad
    );
    assert_eq!(
        binding(|w| {
            w.bytes(attr::RESPONSE_PORT, &[0x12, 0x34]);
        }),
        bad
    );
    let both = |w: &mut MessageWriter<'_>| {
        w.bytes(attr::RESPONSE_PORT, &[0x12, 0x34, 0, 0])
            .bytes(attr::PADDING, &[0; 8]);
    };
    assert_eq!(binding(both), bad);
}

//! The `proxy_header` target: the PROXY protocol header parser
//! (`turnpike::proto::proxy_header`) a load balancer's first bytes go
//! through.

use turnpike::proto::proxy_header::{self, Parse, ProxyHeaderError, Version, MAX_LEN, V1_MAX_LEN};

/// Parses `data` as the first bytes of a connection. Checked: a header
/// lies inside `data` and within the bounds, is told by its first byte,
/// stands on its own (its bytes alone parse the same, and what follows
/// them does not matter), and any shorter prefix of it is incomplete;
/// "incomplete" is only ever said of fewer bytes than the bound; a
/// version 1 header with addresses says what the line they print to
/// says.
pub fn fuzz_parse(data: &[u8]) {
    let outcome = proxy_header::parse(data);
    if proxy_header::starts_with_signature(data) {
        assert_ne!(outcome, Parse::Invalid(ProxyHeaderError::NoHeader));
    }
    match outcome {
        Parse::Incomplete => assert!(data.len() < MAX_LEN, "incomplete after {} bytes", data.len()),
        Parse::Invalid(_) => {}
        Parse::Parsed(header) => {
            assert!(header.len <= data.len() && header.len <= MAX_LEN, "{header:?}");
            let own = &data[..header.len];
            match header.version {
                Version::V1 => {
                    assert!(own.starts_with(proxy_header::V1_PREFIX) && own.ends_with(b"\r\n"));
                    assert!(header.len <= V1_MAX_LEN);
                }
                Version::V2 => assert!(own.starts_with(proxy_header::V2_SIGNATURE)),
            }
            assert_eq!(proxy_header::parse(own), outcome, "the header alone");
            let mut extended = own.to_vec();
            extended.extend_from_slice(b"\x00\x01 trailing");
            assert_eq!(proxy_header::parse(&extended), outcome, "what follows it");
            for cut in [header.len - 1, header.len / 2, 1] {
                assert_eq!(proxy_header::parse(&own[..cut]), Parse::Incomplete, "{cut} bytes");
            }
            if let (Version::V1, Some(a)) = (header.version, header.addresses) {
                let family = if a.source.is_ipv4() { "TCP4" } else { "TCP6" };
                let line = format!(
                    "PROXY {family} {} {} {} {}\r\n",
                    a.source.ip(),
                    a.destination.ip(),
                    a.source.port(),
                    a.destination.port()
                );
                let printed = match proxy_header::parse(line.as_bytes()) {
                    Parse::Parsed(printed) => printed.addresses,
                    other => panic!("{line:?}: {other:?}"),
                };
                assert_eq!(printed, header.addresses, "{line:?}");
            }
        }
    }
}

/// Headers of every kind the spec describes, and a few that are not.
pub fn seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = [
        &b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n"[..],
        b"PROXY TCP6 2001:db8::1 2001:db8::2 65535 65535\r\n",
        b"PROXY UNKNOWN\r\n",
        b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",
        b"PROXY TCP4 192.0.2.1 192.0.2.2 +1 2\r\n",
        b"\x00\x01\x00\x00\x21\x12\xa4\x42abcdefghijkl",
    ]
    .map(<[u8]>::to_vec)
    .into();
    let v2 = |version_command: u8, family: u8, body: &[u8]| {
        let mut header = proxy_header::V2_SIGNATURE.to_vec();
        header.extend([version_command, family]);
        header.extend((body.len() as u16).to_be_bytes());
        header.extend(body);
        header
    };
    let inet = [192, 0, 2, 1, 192, 0, 2, 11, 0xdc, 0x04, 0x01, 0xbb];
    let mut inet_tlvs = inet.to_vec();
    inet_tlvs.extend([0x01, 0x00, 0x02, b'h', b'2', 0x04, 0x00, 0x03, 0, 0, 0]);
    let mut inet6 = [0u8; 36];
    inet6[0] = 0x20;
    inet6[15] = 1;
    inet6[16] = 0x20;
    inet6[31] = 2;
    seeds.extend([
        v2(0x21, 0x11, &inet),
        v2(0x21, 0x11, &inet_tlvs),
        v2(0x21, 0x21, &inet6),
        v2(0x20, 0x00, &[]),
        v2(0x21, 0x31, &[0; 216]),
        v2(0x21, 0x12, &inet),
    ]);
    seeds
}

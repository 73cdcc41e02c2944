//! The PROXY protocol header, versions 1 and 2 (haproxy's
//! `doc/proxy-protocol.txt`, "The PROXY protocol", version 2.0 of the
//! text, 2020): what a load balancer in front of the server writes at the
//! very start of a TCP connection to say which client it accepted.
//!
//! [`parse`] takes the first bytes of a connection and answers
//! [`Parse::Incomplete`] (more bytes could still make a valid header),
//! [`Parse::Parsed`] (a header of [`ProxyHeader::len`] bytes, which the
//! caller consumes; what follows is the client's), or [`Parse::Invalid`].
//! It borrows, cannot panic and never looks further than
//! [`V1_MAX_LEN`] bytes (version 1) or [`V2_HEADER_LEN`] +
//! [`V2_MAX_BODY`] bytes (version 2), so a reader needs a buffer of
//! [`MAX_LEN`] at most. The version is told by the first byte, as the
//! spec's §2.2 describes ("PROXY" text or the 12-byte binary signature).
//!
//! What a header means here:
//! * version 1 `TCP4`/`TCP6` and version 2 `PROXY` with `AF_INET`/
//!   `AF_INET6` over `STREAM`: the source and destination addresses;
//! * version 1 `UNKNOWN`, version 2 `LOCAL` (the proxy's own health
//!   checks), and version 2 `AF_UNSPEC`, `AF_UNIX` or a transport other
//!   than `STREAM`: no addresses ([`ProxyHeader::addresses`] is `None`), so
//!   the connection keeps its own (spec §2.1 and §2.2: the receiver must
//!   then use the real connection endpoints);
//! * version 2 TLVs (spec §2.2.1 on) are walked to check each lies within
//!   the header, and are otherwise ignored: nothing of them is trusted.
//!
//! Strictness follows the spec where it is precise (single spaces,
//! `\r\n` within 107 bytes, addresses of the announced family, decimal
//! ports with no sign) because the bytes come from a proxy, which never
//! needs slack, and a lenient parser is what lets a crafted header mean
//! two things.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The start of a version 1 header (spec §2.1).
pub const V1_PREFIX: &[u8; 6] = b"PROXY ";

/// The longest version 1 header, `\r\n` included (spec §2.1: "107
/// characters").
pub const V1_MAX_LEN: usize = 107;

/// The version 2 signature (spec §2.2).
pub const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// Signature, version and command, family and transport, length.
pub const V2_HEADER_LEN: usize = 16;

/// The most address and TLV bytes accepted after the 16 of a version 2
/// header. The spec allows up to 65535; the largest address block is 216
/// bytes (`AF_UNIX`), and what proxies add (haproxy's unique id, SSL
/// details, a cloud's endpoint id) stays well under 1 KiB, so 2 KiB
/// bounds what a connection can make the server buffer before it is known.
pub const V2_MAX_BODY: usize = 2048;

/// The most bytes [`parse`] ever needs to decide.
pub const MAX_LEN: usize = V2_HEADER_LEN + V2_MAX_BODY;

/// Why bytes are not a PROXY header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("no PROXY header (neither the version 1 text nor the version 2 signature)")]
    NoHeader,
    #[error("version 1 header without CRLF within 107 bytes")]
    V1TooLong,
    #[error("version 1 header malformed: {0}")]
    V1Malformed(&'static str),
    #[error("version 2 header of an unknown version or command")]
    V2VersionCommand,
    #[error("version 2 header of an unknown family or transport")]
    V2Family,
    #[error("version 2 header longer than the {V2_MAX_BODY} bytes accepted")]
    V2TooLong,
    #[error("version 2 header too short for its addresses")]
    V2Truncated,
    #[error("version 2 TLV outside the header")]
    V2Tlv,
}

/// The connection a proxy accepted, as its header tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxiedAddresses {
    /// The client, as the proxy saw it.
    pub source: SocketAddr,
    /// Where the client connected to (the proxy's listening address).
    pub destination: SocketAddr,
}

/// Which version a header was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// A parsed header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyHeader {
    /// Bytes of the header; the client's bytes start after them.
    pub len: usize,
    pub version: Version,
    /// `None`: keep the connection's own addresses (see the module).
    pub addresses: Option<ProxiedAddresses>,
}

/// What [`parse`] makes of the first bytes of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parse {
    /// A prefix of a header that may still be valid: read more.
    Incomplete,
    Parsed(ProxyHeader),
    Invalid(ProxyHeaderError),
}

/// Whether `bytes` start with a PROXY header's signature: enough to
/// refuse a connection from a source that may not send one. A connection
/// whose first bytes are still too few to tell is not one (it is left to
/// the protocol it claims to speak, which refuses it anyway).
pub fn starts_with_signature(bytes: &[u8]) -> bool {
    bytes.starts_with(V1_PREFIX) || bytes.starts_with(V2_SIGNATURE)
}

/// Parses the header at the start of `bytes` (see the module).
pub fn parse(bytes: &[u8]) -> Parse {
    let is_prefix_of = |signature: &[u8]| {
        let n = bytes.len().min(signature.len());
        bytes.get(..n) == signature.get(..n)
    };
    if bytes.is_empty() {
        Parse::Incomplete
    } else if is_prefix_of(V1_PREFIX) {
        parse_v1(bytes)
    } else if is_prefix_of(V2_SIGNATURE) {
        parse_v2(bytes)
    } else {
        Parse::Invalid(ProxyHeaderError::NoHeader)
    }
}

fn parse_v1(bytes: &[u8]) -> Parse {
    let window = bytes.get(..V1_MAX_LEN).unwrap_or(bytes);
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return match window.len() {
            V1_MAX_LEN => Parse::Invalid(ProxyHeaderError::V1TooLong),
            _ => Parse::Incomplete,
        };
    };
    let line = window.get(V1_PREFIX.len()..end).unwrap_or_default();
    match v1_addresses(line) {
        Ok(addresses) => Parse::Parsed(ProxyHeader {
            len: end + 2,
            version: Version::V1,
            addresses,
        }),
        Err(why) => Parse::Invalid(ProxyHeaderError::V1Malformed(why)),
    }
}

/// The addresses of a version 1 line after `"PROXY "`, up to the CRLF.
fn v1_addresses(line: &[u8]) -> Result<Option<ProxiedAddresses>, &'static str> {
    let line = std::str::from_utf8(line).map_err(|_| "not ASCII")?;
    let mut fields = line.split(' ');
    let family = fields.next().unwrap_or_default();
    if family == "UNKNOWN" {
        // Spec §2.1: the rest of the line up to CRLF is to be ignored.
        return Ok(None);
    }
    let v6 = match family {
        "TCP4" => false,
        "TCP6" => true,
        _ => return Err("protocol is neither TCP4, TCP6 nor UNKNOWN"),
    };
    let mut next = || fields.next().ok_or("too few fields");
    let (src, dst, src_port, dst_port) = (next()?, next()?, next()?, next()?);
    if fields.next().is_some() {
        return Err("too many fields");
    }
    let ip = |text: &str| -> Result<IpAddr, &'static str> {
        match v6 {
            false => text.parse::<Ipv4Addr>().map(IpAddr::V4),
            true => text.parse::<Ipv6Addr>().map(IpAddr::V6),
        }
        .map_err(|_| "address not of the announced family")
    };
    Ok(Some(ProxiedAddresses {
        source: SocketAddr::new(ip(src)?, v1_port(src_port)?),
        destination: SocketAddr::new(ip(dst)?, v1_port(dst_port)?),
    }))
}

/// A decimal port: 1 to 5 digits, no sign (which `u16::from_str` would
/// take), at most 65535.
fn v1_port(text: &str) -> Result<u16, &'static str> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err("port is not decimal");
    }
    text.parse().map_err(|_| "port above 65535")
}

/// Version 2 command (low nibble of byte 13).
const V2_LOCAL: u8 = 0x0;
const V2_PROXY: u8 = 0x1;
/// Address family (high nibble of byte 14; 0 is `AF_UNSPEC`) and
/// transport (low nibble).
const AF_INET: u8 = 0x1;
const AF_INET6: u8 = 0x2;
const AF_UNIX: u8 = 0x3;
const TRANSPORT_STREAM: u8 = 0x1;
/// The largest transport value the spec defines (`DGRAM`).
const TRANSPORT_MAX: u8 = 0x2;

fn parse_v2(bytes: &[u8]) -> Parse {
    let Some(header) = bytes.first_chunk::<V2_HEADER_LEN>() else {
        return Parse::Incomplete;
    };
    let (version_command, family, len) = (header[12], header[13], u16::from_be_bytes([header[14], header[15]]));
    let command = version_command & 0x0f;
    if version_command >> 4 != 2 || !matches!(command, V2_LOCAL | V2_PROXY) {
        return Parse::Invalid(ProxyHeaderError::V2VersionCommand);
    }
    let (address_family, transport) = (family >> 4, family & 0x0f);
    if address_family > AF_UNIX || transport > TRANSPORT_MAX {
        return Parse::Invalid(ProxyHeaderError::V2Family);
    }
    let body_len = usize::from(len);
    if body_len > V2_MAX_BODY {
        return Parse::Invalid(ProxyHeaderError::V2TooLong);
    }
    let Some(body) = bytes.get(V2_HEADER_LEN..V2_HEADER_LEN + body_len) else {
        return Parse::Incomplete;
    };
    let address_len = match address_family {
        AF_INET => 12,
        AF_INET6 => 36,
        AF_UNIX => 216,
        // AF_UNSPEC: no addresses.
        _ => 0,
    };
    // A LOCAL header's address block is still there to be skipped, but a
    // sender may leave it out (haproxy's health checks send none).
    let Some((addresses, mut tlvs)) = body.split_at_checked(address_len) else {
        return match command {
            V2_LOCAL => done_v2(V2_HEADER_LEN + body_len, None),
            _ => Parse::Invalid(ProxyHeaderError::V2Truncated),
        };
    };
    while !tlvs.is_empty() {
        let Some(&[_kind, hi, lo]) = tlvs.first_chunk::<3>() else {
            return Parse::Invalid(ProxyHeaderError::V2Tlv);
        };
        let Some(rest) = tlvs.get(3 + usize::from(u16::from_be_bytes([hi, lo]))..) else {
            return Parse::Invalid(ProxyHeaderError::V2Tlv);
        };
        tlvs = rest;
    }
    let proxied = command == V2_PROXY && transport == TRANSPORT_STREAM;
    let addresses = match address_family {
        AF_INET if proxied => v2_addresses::<4>(addresses),
        AF_INET6 if proxied => v2_addresses::<16>(addresses),
        _ => None,
    };
    done_v2(V2_HEADER_LEN + body_len, addresses)
}

fn done_v2(len: usize, addresses: Option<ProxiedAddresses>) -> Parse {
    Parse::Parsed(ProxyHeader {
        len,
        version: Version::V2,
        addresses,
    })
}

/// Source address, destination address, source port, destination port,
/// each address `N` bytes (spec §2.2, `proxy_hdr_v2.addr`).
fn v2_addresses<const N: usize>(block: &[u8]) -> Option<ProxiedAddresses> {
    let ip = |at: usize| -> Option<IpAddr> {
        let octets = block.get(at..at + N)?;
        Some(match <[u8; 4]>::try_from(octets) {
            Ok(v4) => IpAddr::V4(Ipv4Addr::from(v4)),
            Err(_) => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(octets).ok()?)),
        })
    };
    let port = |at: usize| -> Option<u16> { block.get(at..at + 2).map(|p| u16::from_be_bytes([p[0], p[1]])) };
    Some(ProxiedAddresses {
        source: SocketAddr::new(ip(0)?, port(2 * N)?),
        destination: SocketAddr::new(ip(N)?, port(2 * N + 2)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(source: &str, destination: &str) -> Option<ProxiedAddresses> {
        Some(ProxiedAddresses {
            source: source.parse().unwrap(),
            destination: destination.parse().unwrap(),
        })
    }

    fn parsed(len: usize, version: Version, addresses: Option<ProxiedAddresses>) -> Parse {
        Parse::Parsed(ProxyHeader {
            len,
            version,
            addresses,
        })
    }

    /// The spec's §2.1 examples, each followed by a client's bytes.
    #[test]
    fn version_1_examples_of_the_spec_parse_and_leave_what_follows() {
        let tcp4 = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(tcp4),
            parsed(47, Version::V1, addrs("192.168.0.1:56324", "192.168.0.11:443"))
        );
        let tcp6 = b"PROXY TCP6 ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n";
        assert!(matches!(parse(tcp6), Parse::Invalid(ProxyHeaderError::V1Malformed(_))));
        let tcp6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 65535 65535\r\n\x00\x01";
        assert_eq!(
            parse(tcp6),
            parsed(48, Version::V1, addrs("[2001:db8::1]:65535", "[2001:db8::2]:65535"))
        );
        assert_eq!(parse(b"PROXY UNKNOWN\r\n"), parsed(15, Version::V1, None));
        // "the receiver must ignore anything presented before the CRLF".
        let unknown = b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n";
        assert_eq!(parse(unknown), parsed(unknown.len(), Version::V1, None));
        // The worst case of §2.1 (UNKNOWN with the longest addresses) is
        // exactly 107 bytes and fits; the longest TCP6 line too.
        let full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let longest = format!("PROXY UNKNOWN {full} {full} 65535 65535\r\n");
        assert_eq!(longest.len(), V1_MAX_LEN);
        assert_eq!(parse(longest.as_bytes()), parsed(V1_MAX_LEN, Version::V1, None));
        let tcp6 = format!("PROXY TCP6 {full} {full} 65535 65535\r\n");
        let source = format!("[{full}]:65535");
        assert_eq!(
            parse(tcp6.as_bytes()),
            parsed(104, Version::V1, addrs(&source, &source))
        );
    }

    #[test]
    fn every_prefix_of_a_header_is_incomplete() {
        let v1 = b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n";
        let v2 = v2_inet([0x21, 0x11], &[]);
        for header in [&v1[..], &v2[..]] {
            for n in 0..header.len() {
                assert_eq!(parse(&header[..n]), Parse::Incomplete, "{n} bytes of {header:?}");
            }
            assert!(matches!(parse(header), Parse::Parsed(h) if h.len == header.len()));
        }
    }

    #[test]
    fn malformed_version_1_lines_are_invalid() {
        for line in [
            &b"PROXY TCP4 192.0.2.1 192.0.2.2 +1 2\r\n"[..],
            b"PROXY TCP4 192.0.2.1 192.0.2.2 1 65536\r\n",
            b"PROXY TCP4 192.0.2.1  192.0.2.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2 \r\n",
            b"PROXY TCP4 192.0.2.1 192.0.2.2 1\r\n",
            b"PROXY TCP4 2001:db8::1 192.0.2.2 1 2\r\n",
            b"PROXY TCP6 192.0.2.1 2001:db8::2 1 2\r\n",
            b"PROXY TCP4 192.0.2.01 192.0.2.2 1 2\r\n",
            b"PROXY UDP4 192.0.2.1 192.0.2.2 1 2\r\n",
            b"PROXY \r\n",
            b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\xff\r\n",
        ] {
            assert!(
                matches!(parse(line), Parse::Invalid(ProxyHeaderError::V1Malformed(_))),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        let no_crlf = [b'P', b'R', b'O', b'X', b'Y', b' ']
            .iter()
            .copied()
            .chain([b'x'; 200])
            .collect::<Vec<_>>();
        assert_eq!(parse(&no_crlf), Parse::Invalid(ProxyHeaderError::V1TooLong));
        assert_eq!(parse(&no_crlf[..106]), Parse::Incomplete);
        assert_eq!(parse(&no_crlf[..107]), Parse::Invalid(ProxyHeaderError::V1TooLong));
    }

    #[test]
    fn other_protocols_are_no_header_at_once() {
        let stun_binding = [0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
        let tls_hello = [0x16, 0x03, 0x01, 0x02, 0x00];
        for bytes in [
            &stun_binding[..],
            &tls_hello,
            b"GET / HTTP/1.1\r\n",
            b"PROXZ",
            b"\r\n\r\n\0\r\nQUIX",
        ] {
            assert_eq!(parse(bytes), Parse::Invalid(ProxyHeaderError::NoHeader), "{bytes:?}");
            assert!(!starts_with_signature(bytes));
        }
        assert!(starts_with_signature(b"PROXY TCP4"));
        assert!(starts_with_signature(V2_SIGNATURE));
        assert!(!starts_with_signature(b"PROX"), "too few bytes to tell");
    }

    /// A version 2 header: `version_command`, `family`, `body`.
    fn v2(version_command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut header = V2_SIGNATURE.to_vec();
        header.extend([version_command, family]);
        header.extend((body.len() as u16).to_be_bytes());
        header.extend(body);
        header
    }

    /// 192.0.2.1:56324 → 192.0.2.11:443 in a version 2 header, then `tlvs`.
    fn v2_inet(head: [u8; 2], tlvs: &[u8]) -> Vec<u8> {
        let mut body = vec![192, 0, 2, 1, 192, 0, 2, 11];
        body.extend(56324u16.to_be_bytes());
        body.extend(443u16.to_be_bytes());
        body.extend(tlvs);
        v2(head[0], head[1], &body)
    }

    #[test]
    fn version_2_inet_and_inet6_give_the_addresses_and_tlvs_are_skipped() {
        let mut bytes = v2_inet([0x21, 0x11], &[]);
        bytes.extend(b"client bytes");
        assert_eq!(
            parse(&bytes),
            parsed(28, Version::V2, addrs("192.0.2.1:56324", "192.0.2.11:443"))
        );
        // PP2_TYPE_ALPN "h2", then PP2_TYPE_NOOP with 3 bytes of padding.
        let tlvs = [0x01, 0x00, 0x02, b'h', b'2', 0x04, 0x00, 0x03, 0, 0, 0];
        let with_tlvs = v2_inet([0x21, 0x11], &tlvs);
        assert_eq!(
            parse(&with_tlvs),
            parsed(28 + tlvs.len(), Version::V2, addrs("192.0.2.1:56324", "192.0.2.11:443"))
        );
        let mut body = Vec::new();
        body.extend("2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        body.extend("2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        body.extend([0x12, 0x34, 0x01, 0xbb]);
        assert_eq!(
            parse(&v2(0x21, 0x21, &body)),
            parsed(52, Version::V2, addrs("[2001:db8::1]:4660", "[2001:db8::2]:443"))
        );
    }

    #[test]
    fn version_2_local_unspec_unix_and_datagrams_keep_the_own_address() {
        // haproxy's health check: LOCAL, AF_UNSPEC, no address block.
        assert_eq!(parse(&v2(0x20, 0x00, &[])), parsed(16, Version::V2, None));
        // LOCAL with an address block that must be ignored and skipped.
        assert_eq!(parse(&v2_inet([0x20, 0x11], &[])), parsed(28, Version::V2, None));
        assert_eq!(parse(&v2(0x21, 0x00, &[])), parsed(16, Version::V2, None));
        assert_eq!(parse(&v2(0x21, 0x31, &[0; 216])), parsed(232, Version::V2, None));
        assert_eq!(parse(&v2_inet([0x21, 0x12], &[])), parsed(28, Version::V2, None));
        assert_eq!(parse(&v2_inet([0x21, 0x10], &[])), parsed(28, Version::V2, None));
    }

    #[test]
    fn malformed_version_2_headers_are_invalid() {
        let invalid = |bytes: &[u8]| match parse(bytes) {
            Parse::Invalid(e) => e,
            other => panic!("{other:?} for {bytes:?}"),
        };
        assert_eq!(invalid(&v2(0x11, 0x11, &[])), ProxyHeaderError::V2VersionCommand);
        assert_eq!(invalid(&v2(0x22, 0x11, &[])), ProxyHeaderError::V2VersionCommand);
        assert_eq!(invalid(&v2(0x21, 0x41, &[])), ProxyHeaderError::V2Family);
        assert_eq!(invalid(&v2(0x21, 0x13, &[])), ProxyHeaderError::V2Family);
        assert_eq!(invalid(&v2(0x21, 0x11, &[0; 11])), ProxyHeaderError::V2Truncated);
        assert_eq!(invalid(&v2(0x21, 0x21, &[0; 12])), ProxyHeaderError::V2Truncated);
        assert_eq!(invalid(&v2_inet([0x21, 0x11], &[0x01, 0x00])), ProxyHeaderError::V2Tlv);
        assert_eq!(
            invalid(&v2_inet([0x21, 0x11], &[0x01, 0x00, 0x05, 1])),
            ProxyHeaderError::V2Tlv
        );
        // The length alone refuses a header beyond the bound, before its
        // bytes arrive.
        let mut huge = v2(0x21, 0x11, &[]);
        huge[14..16].copy_from_slice(&(V2_MAX_BODY as u16 + 1).to_be_bytes());
        assert_eq!(invalid(&huge), ProxyHeaderError::V2TooLong);
        let mut largest = v2_inet([0x21, 0x11], &[]);
        largest.extend([0x04, 0x07, 0xf1]);
        largest.extend(vec![0; V2_MAX_BODY - 12 - 3]);
        largest[14..16].copy_from_slice(&(V2_MAX_BODY as u16).to_be_bytes());
        assert_eq!(largest.len(), MAX_LEN);
        assert!(matches!(parse(&largest), Parse::Parsed(h) if h.len == MAX_LEN));
    }
}

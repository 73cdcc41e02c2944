//! Which service a connection of the shared TLS port is for: TURN or
//! HTTP (`signaling.share_tls_port`, see `net/shared_port.rs`).
//!
//! Two signals, in this order:
//!
//! 1. **ALPN** (RFC 7301), when the client offered it: the shared port
//!    advertises [`ALPN_TURN`] (`stun.turn`, RFC 7443 §2) and
//!    [`ALPN_HTTP`] (`http/1.1`), and rustls refuses a handshake that
//!    offers neither (`no_application_protocol`, RFC 7301 §3.2), so the
//!    negotiated protocol names the service ([`by_alpn`]).
//! 2. **The first application bytes**, when no protocol was negotiated
//!    (browsers' TURN clients and most HTTP tools send none on a `turns:`
//!    or an `https:` connection with an IP address): [`by_first_bytes`].
//!    * A STUN message starts with two zero bits (RFC 8489 §5, the
//!      demultiplexing rule of RFC 7983 §7): first byte `0x00`–`0x3F`.
//!    * An HTTP/1.1 request starts with its method token and a space
//!      (RFC 9112 §3): one of [`HTTP_METHODS`]. Method letters fall in the
//!      ChannelData range, so the method is matched whole before
//!      ChannelData is considered.
//!    * ChannelData starts with a channel number `0x4000`–`0x4FFF` (RFC
//!      8656 §12): first byte `0x40`–`0x4F`, when it is no HTTP method. A
//!      genuine TURN client never opens with it (a channel is bound on the
//!      connection first), but it is TURN's framing, so the TURN side, with
//!      its own setup timeout, is the one to judge it.
//!    * Anything else is [`Service::Unknown`]: the connection is closed.
//!
//!    The first byte is all STUN is judged by (RFC 3489 clients send no
//!    magic cookie), so other bytes with two zero top bits (a TLS record
//!    inside TLS, say) reach the TURN side too, whose framing refuses them.
//!
//! Bounded: the verdict is known by [`DECIDE_WITHIN`] bytes (the longest
//! method and its space), so a caller that holds that many bytes and still
//! gets [`Peek::NeedMore`] has a bug; [`by_first_bytes`] answers
//! `Unknown` then rather than ask for more. Pure functions of the bytes:
//! no I/O, no clock.

/// The ALPN protocol id of TURN over TLS (RFC 7443 §2; also STUN's).
pub const ALPN_TURN: &[u8] = b"stun.turn";

/// The ALPN protocol id of HTTP/1.1 (RFC 7301 §6); `h2` is not offered,
/// since only HTTP/1.1 is served.
pub const ALPN_HTTP: &[u8] = b"http/1.1";

/// What the shared port offers, in the server's order of preference
/// (rustls picks the first of these the client also offers).
pub const ALPN_OFFERED: [&[u8]; 2] = [ALPN_TURN, ALPN_HTTP];

/// The request methods an HTTP/1.1 connection may open with (RFC 9110 §9,
/// and PATCH of RFC 5789).
pub const HTTP_METHODS: [&[u8]; 9] = [
    b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH",
];

/// Bytes after which [`by_first_bytes`] always knows: the longest method
/// (`CONNECT`, `OPTIONS`) and its space.
pub const DECIDE_WITHIN: usize = 8;

/// The service a connection is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// STUN/TURN framing (RFC 8489 §6.2.2, RFC 8656 §12.5).
    Turn,
    /// An HTTP/1.1 request (the signaling endpoint, the demo page).
    Http,
    /// Neither: close the connection.
    Unknown,
}

/// The answer to the first bytes read so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peek {
    Decided(Service),
    /// Fewer than [`DECIDE_WITHIN`] bytes, and they could still be either.
    NeedMore,
}

/// The service of a negotiated ALPN protocol.
pub fn by_alpn(protocol: &[u8]) -> Service {
    match protocol {
        ALPN_TURN => Service::Turn,
        ALPN_HTTP => Service::Http,
        _ => Service::Unknown,
    }
}

/// The service of a connection that negotiated no ALPN protocol, from the
/// first application bytes it sent.
pub fn by_first_bytes(bytes: &[u8]) -> Peek {
    let Some(&first) = bytes.first() else {
        return Peek::NeedMore;
    };
    if first >> 6 == 0b00 {
        return Peek::Decided(Service::Turn);
    }
    let mut could_be_http = false;
    for method in HTTP_METHODS {
        let (matched, rest) = (bytes.len().min(method.len()), bytes.get(method.len()));
        if bytes.get(..matched) != method.get(..matched) {
            continue;
        }
        match rest {
            Some(b' ') => return Peek::Decided(Service::Http),
            Some(_) => {}
            None => could_be_http = true,
        }
    }
    if could_be_http && bytes.len() < DECIDE_WITHIN {
        return Peek::NeedMore;
    }
    match first {
        0x40..=0x4F => Peek::Decided(Service::Turn),
        _ => Peek::Decided(Service::Unknown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decided(bytes: &[u8]) -> Service {
        match by_first_bytes(bytes) {
            Peek::Decided(service) => service,
            Peek::NeedMore => panic!("{bytes:?}: undecided"),
        }
    }

    #[test]
    fn alpn_names_the_service() {
        assert_eq!(by_alpn(b"stun.turn"), Service::Turn);
        assert_eq!(by_alpn(b"http/1.1"), Service::Http);
        assert_eq!(by_alpn(b"h2"), Service::Unknown);
        assert_eq!(by_alpn(b""), Service::Unknown);
    }

    #[test]
    fn a_stun_message_is_turn_from_its_first_byte() {
        // Binding request, Allocate request, and the top of the 00 range.
        for first in [0x00, 0x01, 0x3F] {
            assert_eq!(by_first_bytes(&[first]), Peek::Decided(Service::Turn), "{first:#x}");
        }
    }

    #[test]
    fn every_method_with_its_space_is_http() {
        for method in HTTP_METHODS {
            let mut request = method.to_vec();
            request.extend_from_slice(b" /healthz HTTP/1.1\r\n");
            assert_eq!(decided(&request), Service::Http, "{}", String::from_utf8_lossy(method));
            // Cut anywhere before the space, it could still be HTTP.
            for cut in 1..=method.len() {
                assert_eq!(by_first_bytes(&request[..cut]), Peek::NeedMore, "{cut}");
            }
        }
    }

    #[test]
    fn channel_data_that_is_no_method_goes_to_turn() {
        // Channel 0x4000 and 0x4FFF; 'G' (0x47) then a byte no method has.
        assert_eq!(decided(&[0x40, 0x00, 0x00, 0x04]), Service::Turn);
        assert_eq!(decided(&[0x4F, 0xFF]), Service::Turn);
        assert_eq!(decided(&[b'G', 0x00]), Service::Turn);
        // A method without its space is not HTTP, and after 8 bytes the
        // answer is final.
        assert_eq!(decided(b"GETX"), Service::Turn);
        assert_eq!(decided(b"OPTIONSX"), Service::Turn);
    }

    #[test]
    fn anything_else_is_unknown() {
        for junk in [&b"\x80\x00"[..], b"\xff", b"hello", b"get /", b"SSH-2.0"] {
            assert_eq!(decided(junk), Service::Unknown, "{junk:?}");
        }
        // A nested TLS record (0x16) has STUN's two zero bits: it goes to
        // TURN, whose framing closes it (no well-formed message in time).
        assert_eq!(decided(b"\x16\x03\x01"), Service::Turn);
        assert_eq!(by_first_bytes(b""), Peek::NeedMore);
    }

    #[test]
    fn the_verdict_is_known_within_decide_within_bytes() {
        // Every prefix of every byte string up to DECIDE_WITHIN long that
        // starts like a method: all are decided at DECIDE_WITHIN bytes.
        for method in HTTP_METHODS {
            let mut bytes = method.to_vec();
            bytes.resize(DECIDE_WITHIN, b'A');
            assert!(matches!(by_first_bytes(&bytes), Peek::Decided(_)), "{bytes:?}");
        }
        for first in 0..=u8::MAX {
            let bytes = [first; DECIDE_WITHIN];
            assert!(matches!(by_first_bytes(&bytes), Peek::Decided(_)), "{first:#x}");
        }
    }
}

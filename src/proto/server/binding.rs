//! Binding (RFC 8489 §6.3): no authentication, the client's address as
//! XOR-MAPPED-ADDRESS, or as MAPPED-ADDRESS for RFC 3489 clients that send
//! no magic cookie (RFC 8489 §12); and NAT behaviour discovery (RFC 5780
//! §6) over UDP.
//!
//! NAT behaviour discovery. On a UDP address of an address pair
//! (`listen.udp_alternate`, see [`super::nat_discovery`]) a Binding request may
//! carry CHANGE-REQUEST, and the answer leaves from the address Table 1
//! names (the driver sends it from that socket: the Transmit's
//! `to.local`); answers there may carry OTHER-ADDRESS, RESPONSE-ORIGIN and
//! MAPPED-ADDRESS beside XOR-MAPPED-ADDRESS (RFC 3489 clients:
//! CHANGED-ADDRESS and SOURCE-ADDRESS beside MAPPED-ADDRESS). On every UDP
//! address RESPONSE-PORT and PADDING are honoured (§5 allows them on a
//! server with one address). Elsewhere:
//! * a UDP address of no pair sends no OTHER-ADDRESS (it could not answer
//!   from the address it would advertise, §6) and answers CHANGE-REQUEST
//!   with 420 (it is comprehension-required, §7);
//! * over TCP and TLS an answer can only come back on the connection, and
//!   the usage is UDP's (§3.2, §3.4, §3.5): CHANGE-REQUEST, RESPONSE-PORT
//!   and PADDING are all unknown there (420), and no attribute of RFC 5780
//!   is sent.
//!
//! No reflection. Anyone can ask, from any source address, so every
//! answer stays within twice the request for IPv4 clients (SECURITY.md):
//! no SOFTWARE (RFC 8489 §14.14 makes it optional), FINGERPRINT only if
//! the request had one, and of what RFC 5780 adds only what fits, most
//! useful first: OTHER-ADDRESS (without it a client cannot run the tests,
//! §4.3), RESPONSE-ORIGIN (double NAT), MAPPED-ADDRESS (an ALG). A 20-byte
//! request therefore gets XOR-MAPPED-ADDRESS alone (32 bytes); one with
//! CHANGE-REQUEST (28) gets OTHER-ADDRESS and RESPONSE-ORIGIN as well (56);
//! a client wanting all of them sends a larger request (SOFTWARE,
//! PADDING). The answer's PADDING is *capped*, not refused: it echoes the
//! request's PADDING length (the client picked it for its MTU, §5; this
//! core does not know the outgoing interface's) as far as the bound
//! leaves room, and is there with length 0 if none is left, since §6.1
//! says it MUST be present. Refusing would fail padded requests that are
//! harmless; capping keeps the fragmentation test working for any
//! request padded by 24 bytes or more. RESPONSE-PORT changes only the
//! port: every answer goes to the request's source IP (§6.1), never
//! anywhere else, and RFC 3489's RESPONSE-ADDRESS is never honoured.

use std::net::SocketAddr;

use super::answer::Failure;
use super::nat_discovery::Quartet;
use super::request::{change_flags, BindingRequest};
use super::{Effect, ErrorCode, RelayBinder, Server};
use crate::proto::addr::{ClientAddr, Transport};
use crate::proto::method::Method;
use crate::proto::stun::{attr, Class, Message, MessageWriter, HEADER_LEN};

/// The largest UDP payload over IPv4 (65535 less the IP and UDP headers):
/// a padded answer never exceeds it, whatever twice its request is.
const MAX_UDP_PAYLOAD: usize = 65_507;
/// RFC 5780's request attributes, where the server can honour them all.
const WITH_ALTERNATE: [u16; 3] = [attr::CHANGE_REQUEST, attr::RESPONSE_PORT, attr::PADDING];
const WITHOUT_ALTERNATE: [u16; 2] = [attr::RESPONSE_PORT, attr::PADDING];

impl<B: RelayBinder> Server<B> {
    /// Answers a Binding request: queues its Transmit (from the address
    /// and to the port the request asks for) and counts it; a failure is
    /// answered by the dispatch, from where the request arrived.
    pub(super) fn binding(&mut self, client: ClientAddr, msg: &Message<'_>) -> Result<(), Failure> {
        let quartet = match client.transport {
            Transport::Udp => self.config.nat_discovery.at(client.local),
            Transport::Tcp | Transport::Tls => None,
        };
        if !msg.has_magic_cookie() {
            let (to, bytes, code) = classic(client, msg, quartet);
            self.effects.push_back(Effect::Transmit { to, bytes });
            self.counters.request(Some(Method::Binding), code);
            return Ok(());
        }
        let understood: &[u16] = match (client.transport, quartet) {
            (Transport::Udp, Some(_)) => &WITH_ALTERNATE,
            (Transport::Udp, None) => &WITHOUT_ALTERNATE,
            (Transport::Tcp | Transport::Tls, _) => &[],
        };
        Failure::check_unknown_beyond(msg, understood)?;
        let request = BindingRequest::parse(msg)?;
        // Without a quartet CHANGE-REQUEST was unknown (420) above.
        let from = quartet.map_or(client.local, |q| q.source(request.change_ip, request.change_port));
        let port = request.response_port.unwrap_or(client.remote.port());
        let to = ClientAddr {
            local: from,
            remote: SocketAddr::new(client.remote.ip(), port),
            ..client
        };
        let bytes = success(msg, client.remote, quartet.map(|q| (q.other, from)), request.padding);
        self.effects.push_back(Effect::Transmit { to, bytes });
        self.count_success(Method::Binding);
        Ok(())
    }
}

/// Bytes an address attribute takes (header and value).
fn address_len(addr: SocketAddr) -> usize {
    4 + if addr.is_ipv4() { 8 } else { 20 }
}

/// What [`within_bound`] decided to send beside the mapped address.
struct Extras {
    other: Option<SocketAddr>,
    origin: Option<SocketAddr>,
    mapped: bool,
    padding: Option<usize>,
}

/// Picks what fits `limit` bytes beside `fixed` (header, mapped address,
/// FINGERPRINT): a PADDING header if asked for, then the address
/// attributes in their order of use (module doc), then as much padding as
/// the request had, in 4-byte steps. `usage` is Ca:Cp and the answer's
/// source, when the request arrived on a quartet.
fn within_bound(
    limit: usize,
    fixed: usize,
    addr_len: usize,
    usage: Option<(SocketAddr, SocketAddr)>,
    padding: Option<usize>,
) -> Extras {
    let mut size = fixed + padding.map_or(0, |_| 4);
    let mut fits = || {
        let fit = size + addr_len <= limit;
        if fit {
            size += addr_len;
        }
        fit
    };
    let other = usage.filter(|_| fits()).map(|(other, _)| other);
    let origin = usage.filter(|_| fits()).map(|(_, from)| from);
    let mapped = usage.is_some_and(|_| fits());
    let room = limit.saturating_sub(size) & !3;
    Extras {
        other,
        origin,
        mapped,
        padding: padding.map(|asked| asked.next_multiple_of(4).min(room)),
    }
}

/// The success answer to an RFC 8489 Binding request from `remote`.
fn success(
    msg: &Message<'_>,
    remote: SocketAddr,
    usage: Option<(SocketAddr, SocketAddr)>,
    padding: Option<usize>,
) -> Vec<u8> {
    let limit = (2 * msg.bytes().len()).min(MAX_UDP_PAYLOAD);
    let fingerprint = msg.has_fingerprint();
    let fixed = HEADER_LEN + address_len(remote) + if fingerprint { 8 } else { 0 };
    let extras = within_bound(limit, fixed, address_len(remote), usage, padding);
    let mut buf = Vec::with_capacity(limit.max(fixed));
    let mut w = MessageWriter::new(&mut buf, Class::Success, msg.method(), msg.transaction_id());
    w.xor_address(attr::XOR_MAPPED_ADDRESS, remote);
    if extras.mapped {
        w.address(attr::MAPPED_ADDRESS, remote);
    }
    if let Some(origin) = extras.origin {
        w.address(attr::RESPONSE_ORIGIN, origin);
    }
    if let Some(other) = extras.other {
        w.address(attr::OTHER_ADDRESS, other);
    }
    if let Some(len) = extras.padding {
        w.zeros(attr::PADDING, len);
    }
    w.finish(None, fingerprint);
    buf
}

/// The answer to an RFC 3489 request (no magic cookie), its destination
/// and its code: MAPPED-ADDRESS, and on a quartet CHANGED-ADDRESS (Ca:Cp)
/// and SOURCE-ADDRESS (the answer's source) as the bound allows, from the
/// address its CHANGE-REQUEST names. RFC 3489 knows no server without an
/// alternate address, so a change this one cannot make gets 420 in RFC
/// 3489's form (§11.2.9: the unknown type repeated to fill 4 bytes); a
/// CHANGE-REQUEST without flags is answered from where it arrived, which
/// any server can. Its other attributes are not read (RESPONSE-ADDRESS
/// would reflect the answer anywhere).
fn classic(client: ClientAddr, msg: &Message<'_>, quartet: Option<Quartet>) -> (ClientAddr, Vec<u8>, u16) {
    let mut buf = Vec::with_capacity(64);
    let flags = change_flags(msg);
    let error = match (flags, quartet) {
        (Err(_), _) => Some((ErrorCode::BadRequest, &[][..])),
        (Ok((true, _) | (_, true)), None) => Some((ErrorCode::UnknownAttribute, &[attr::CHANGE_REQUEST; 2][..])),
        (Ok(_), _) => None,
    };
    if let Some((code, unknown)) = error {
        let mut w = MessageWriter::classic_binding(&mut buf, Class::Error, msg);
        w.error_code(code.code(), "");
        if !unknown.is_empty() {
            w.unknown_attributes(unknown);
        }
        w.finish(None, false);
        return (client, buf, code.code());
    }
    let (change_ip, change_port) = flags.unwrap_or_default();
    let from = quartet.map_or(client.local, |q| q.source(change_ip, change_port));
    let addr_len = address_len(client.remote);
    let limit = 2 * msg.bytes().len();
    let usage = quartet.map(|q| (q.other, from));
    let extras = within_bound(limit, HEADER_LEN + addr_len, addr_len, usage, None);
    let mut w = MessageWriter::classic_binding(&mut buf, Class::Success, msg);
    w.address(attr::MAPPED_ADDRESS, client.remote);
    if let Some(origin) = extras.origin {
        w.address(attr::SOURCE_ADDRESS, origin);
    }
    if let Some(other) = extras.other {
        w.address(attr::CHANGED_ADDRESS, other);
    }
    w.finish(None, false);
    (ClientAddr { local: from, ..client }, buf, 200)
}

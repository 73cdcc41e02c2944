//! Binding (RFC 8489 §6.3): no authentication, the client's address as
//! XOR-MAPPED-ADDRESS, or as MAPPED-ADDRESS for RFC 3489 clients that send
//! no magic cookie (RFC 8489 §12).
//!
//! Anyone can ask, from any source address, so the answer is kept within
//! twice the request for IPv4 clients: no SOFTWARE (RFC 8489 §14.14 makes
//! it optional; it is still sent on authenticated answers), and
//! FINGERPRINT only if the request had one. A 20-byte request from an
//! IPv4 client gets 32 bytes, a 28-byte one (with FINGERPRINT) 40.

use super::answer::Failure;
use super::{RelayBinder, Server};
use crate::proto::addr::ClientAddr;
use crate::proto::stun::{attr, Class, Message, MessageWriter};

impl<B: RelayBinder> Server<B> {
    pub(super) fn binding(&self, client: ClientAddr, msg: &Message<'_>) -> Result<Vec<u8>, Failure> {
        let mut buf = Vec::with_capacity(64);
        if !msg.has_magic_cookie() {
            MessageWriter::classic_binding_success(&mut buf, msg, client.remote);
            return Ok(buf);
        }
        Failure::check_unknown(msg)?;
        let mut w = MessageWriter::new(&mut buf, Class::Success, msg.method(), msg.transaction_id());
        w.xor_address(attr::XOR_MAPPED_ADDRESS, client.remote);
        w.finish(None, msg.has_fingerprint());
        Ok(buf)
    }
}

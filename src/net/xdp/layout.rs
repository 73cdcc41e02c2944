//! The keys and values of the program's maps, byte for byte as
//! `relay.h` declares them (`#[repr(C)]`, the same fields in the same
//! order, sizes asserted below; aya refuses a map whose key or value size
//! differs, so a drift fails the load, never a lookup).
//!
//! Addresses are 16 bytes, an IPv4 address in the first 4 and zeros
//! after; ports and channel numbers are stored in network byte order, so
//! the program compares them with the packet's bytes as they are. Every
//! padding byte is zero: the kernel hashes keys byte for byte.

use std::net::{IpAddr, SocketAddr};

/// `TP_FAMILY_V4`, `TP_FAMILY_V6`.
pub(super) const FAMILY_V4: u8 = 4;
pub(super) const FAMILY_V6: u8 = 6;

/// `struct tp_channel_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct ChannelKey {
    pub client_ip: [u8; 16],
    pub server_ip: [u8; 16],
    pub client_port: u16,
    pub server_port: u16,
    pub channel: u16,
    pub family: u8,
    pub pad: u8,
}

/// `struct tp_peer_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct PeerKey {
    pub relay_ip: [u8; 16],
    pub peer_ip: [u8; 16],
    pub relay_port: u16,
    pub peer_port: u16,
    pub family: u8,
    pub pad: [u8; 3],
}

/// `struct tp_route`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Route {
    pub src_ip: [u8; 16],
    pub dst_ip: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    /// Network order; 0: no ChannelData header.
    pub channel: u16,
    pub family: u8,
    pub pad: u8,
    pub slot: u32,
    pub pad2: u32,
    pub expires_ns: u64,
}

/// `struct tp_count`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Count {
    pub packets: u64,
    pub bytes: u64,
}

/// `struct tp_config`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Config {
    pub ttl: u8,
    pub hop_limit: u8,
    pub pad: [u8; 6],
}

const _: () = assert!(std::mem::size_of::<ChannelKey>() == 40);
const _: () = assert!(std::mem::size_of::<PeerKey>() == 40);
const _: () = assert!(std::mem::size_of::<Route>() == 56);
const _: () = assert!(std::mem::size_of::<Count>() == 16);
const _: () = assert!(std::mem::size_of::<Config>() == 8);

// SAFETY: each is `#[repr(C)]` plain data with no padding the compiler
// adds (the sizes above are the sums of the fields), so every byte
// pattern the kernel hands back is a valid value.
unsafe impl aya::Pod for ChannelKey {}
unsafe impl aya::Pod for PeerKey {}
unsafe impl aya::Pod for Route {}
unsafe impl aya::Pod for Count {}
unsafe impl aya::Pod for Config {}

/// An address as the maps hold it: 16 bytes, the port in network byte
/// order, the family.
pub(super) fn wire(addr: SocketAddr) -> ([u8; 16], u16, u8) {
    let mut ip = [0; 16];
    let family = match addr.ip() {
        IpAddr::V4(v4) => {
            ip[..4].copy_from_slice(&v4.octets());
            FAMILY_V4
        }
        IpAddr::V6(v6) => {
            ip.copy_from_slice(&v6.octets());
            FAMILY_V6
        }
    };
    (ip, addr.port().to_be(), family)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_laid_out_as_on_the_wire() {
        let (ip, port, family) = wire("192.0.2.7:3478".parse().unwrap());
        assert_eq!(ip, [192, 0, 2, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(port.to_ne_bytes(), [0x0d, 0x96]);
        assert_eq!(family, FAMILY_V4);
        let (ip, port, family) = wire("[2001:db8::1]:1".parse().unwrap());
        assert_eq!(ip[..4], [0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(ip[15], 1);
        assert_eq!(port.to_ne_bytes(), [0, 1]);
        assert_eq!(family, FAMILY_V6);
    }
}

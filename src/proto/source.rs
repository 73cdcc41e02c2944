//! Who a request or connection counts against in every per-source limit
//! (docs/design.md, "Per-source limits in bounded tables"): an IPv4 address, or
//! the /64 prefix of an IPv6 one. One host commonly holds a whole /64, so
//! counting its addresses apart would give it 2^64 budgets. IPv4-mapped
//! IPv6 addresses count as the IPv4 address.
//!
//! The TURN core (allocations, challenges, failed logins), the stream
//! listeners and the HTTP listener all key their tables by it, so one
//! source is one source everywhere.

use std::net::{IpAddr, Ipv6Addr};

/// A source address as the per-source limits count it (see the module).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceKey(IpAddr);

impl From<IpAddr> for SourceKey {
    fn from(ip: IpAddr) -> SourceKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => SourceKey(IpAddr::V4(v4)),
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                SourceKey(IpAddr::V6(Ipv6Addr::from(prefix)))
            }
        }
    }
}

impl std::fmt::Display for SourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

impl SourceKey {
    /// 16 bytes that name the source, for hashed tables
    /// ([`crate::proto::rate_table::RateTable`]); IPv4 as IPv4-mapped.
    pub fn octets(self) -> [u8; 16] {
        match self.0 {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ip: &str) -> SourceKey {
        SourceKey::from(ip.parse::<IpAddr>().unwrap())
    }

    #[test]
    fn ipv6_sources_count_by_their_64_prefix_and_mapped_ones_as_ipv4() {
        assert_eq!(key("2001:db8::1"), key("2001:db8::ffff:1"));
        assert_ne!(key("2001:db8::1"), key("2001:db8:0:1::1"));
        assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"));
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
        assert_eq!(key("2001:db8::1").to_string(), "2001:db8::/64");
    }

    #[test]
    fn octets_tell_the_families_apart_and_name_the_prefix() {
        assert_eq!(key("2001:db8::1").octets(), key("2001:db8::2").octets());
        assert_ne!(key("192.0.2.1").octets(), key("192.0.2.2").octets());
        assert_eq!(key("192.0.2.1").octets()[10..12], [0xff, 0xff]);
    }
}

//! Who gets a 401/438 challenge (SECURITY.md, "Reflection and
//! amplification"): a challenge answers a request nobody has proven to
//! come from its source, so over UDP it may be a reflection towards a
//! victim whose address was spoofed.
//!
//! * **Streams** (TCP, TLS) cannot be spoofed: the handshake proved the
//!   source. Their challenges neither need nor spend any budget.
//! * **UDP**: each source address (`super::source_key`) has a budget of
//!   `challenge_rate` bytes a second with four seconds of burst, in a
//!   fixed table of [`CHALLENGE_SLOTS`] slots. Beyond it, the slot still
//!   grants a **grace** challenge at most once every [`GRACE_INTERVAL`],
//!   and only to a sender (address and port) that has not had one of the
//!   slot's last [`GRACE_SENDERS`] graces within [`GRACE_MEMORY`]; every
//!   other request goes unanswered.
//!
//! Why the grace: a flood that spoofs an address spends that address's
//! budget, and its real owner would get no challenge while the flood
//! lasts. A real client retransmits (RFC 8489 §6.2.1: seven tries over
//! 39.5 s), from its own port; the grace goes round the senders, so once
//! a flood's ports (up to [`GRACE_SENDERS`] of them) have had theirs, the
//! next grace waits for another sender: the retransmitting owner. A flood
//! that sprays more ports than that competes with the owner for each
//! grace, and may still win them all; then only a stream gets the owner
//! in.
//!
//! The bound a spoofed flood gets towards one victim address, per worker:
//! the budget (`4 × rate` at once, then `rate` a second) plus one
//! challenge a second (the grace), whatever the flood sends. Memory is
//! fixed: a token bucket and 64 bytes of grace per slot.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ring::hmac;

use super::source_key;
use crate::proto::addr::{ClientAddr, Transport};
use crate::proto::rate_table::RateTable;

/// Slots of the per-source challenge budget: fixed memory (about 64 KiB a
/// shard for the buckets, 64 KiB for the graces) however many sources
/// there are.
pub(super) const CHALLENGE_SLOTS: usize = 1024;

/// A slot over its budget grants at most one grace challenge this often.
pub(super) const GRACE_INTERVAL: Duration = Duration::from_secs(1);

/// The senders a slot remembers having granted a grace to...
pub(super) const GRACE_SENDERS: usize = 8;

/// ...and for how long each of them waits before another grace. Shorter
/// than a client's retransmissions (39.5 s), so that a client graced once
/// whose next try also finds the budget spent (a 438 later, say) gets
/// another, longer than [`GRACE_SENDERS`] graces take, so that a flood's
/// ports cannot take them all.
pub(super) const GRACE_MEMORY: Duration = Duration::from_secs(30);

/// What [`ChallengeBudget::admit`] decided for one challenge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Admission {
    /// On a stream: sent, no budget needed.
    Stream,
    /// Within the source's budget (now spent by it).
    Budget,
    /// Beyond the budget, as the slot's grace.
    Grace,
    /// Beyond the budget and no grace: the request goes unanswered.
    Refused,
}

pub(super) struct ChallengeBudget {
    bytes: RateTable,
    /// Picks a source's grace slot, as `bytes` picks its bucket.
    grace_key: hmac::Key,
    graces: Box<[Grace]>,
    /// The first instant the table saw: the graces count time from it in
    /// integers, to keep a slot small.
    origin: Option<Instant>,
}

/// One slot's graces: 64 bytes.
#[derive(Clone, Copy, Default)]
struct Grace {
    /// Milliseconds after the origin from which the next grace may go.
    next_ms: u64,
    /// The last senders graced ([`sender_tag`]) and when (seconds after the
    /// origin), a ring of `len` entries that `cursor` writes next.
    senders: [u16; GRACE_SENDERS],
    at_secs: [u32; GRACE_SENDERS],
    len: u8,
    cursor: u8,
}

impl ChallengeBudget {
    /// `rate` bytes a second per source (0: no limit); `seed` keys the
    /// slots, so an attacker cannot aim at a chosen victim's slot.
    pub(super) fn new(seed: &[u8; 32], rate: u64) -> ChallengeBudget {
        let key = hmac::Key::new(hmac::HMAC_SHA256, seed);
        let bytes_seed = hmac::sign(&key, b"challenge budget");
        let grace_seed = hmac::sign(&key, b"challenge grace");
        let (rate, burst) = rate_and_burst(rate);
        ChallengeBudget {
            bytes: RateTable::new(bytes_seed.as_ref(), CHALLENGE_SLOTS, rate, burst),
            grace_key: hmac::Key::new(hmac::HMAC_SHA256, grace_seed.as_ref()),
            graces: vec![Grace::default(); CHALLENGE_SLOTS].into_boxed_slice(),
            origin: None,
        }
    }

    /// A new rate (a reload): the buckets start over, full; the graces
    /// stay.
    pub(super) fn set_rate(&mut self, rate: u64) {
        let (rate, burst) = rate_and_burst(rate);
        self.bytes.set_rate(rate, burst);
    }

    /// Whether a challenge of `len` bytes goes to `client`, spending what
    /// it must (see the module).
    pub(super) fn admit(&mut self, client: ClientAddr, len: u64, now: Instant) -> Admission {
        if client.transport != Transport::Udp {
            return Admission::Stream;
        }
        let source = source_key(client).octets();
        if self.bytes.try_take(&source, len, now) {
            return Admission::Budget;
        }
        match self.try_grace(&source, client, now) {
            true => Admission::Grace,
            false => Admission::Refused,
        }
    }

    fn try_grace(&mut self, source: &[u8; 16], client: ClientAddr, now: Instant) -> bool {
        let origin = *self.origin.get_or_insert(now);
        let elapsed = now.saturating_duration_since(origin);
        let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        let secs = u32::try_from(elapsed.as_secs()).unwrap_or(u32::MAX);
        let tag = hmac::sign(&self.grace_key, source);
        let mut index = [0u8; 8];
        index.copy_from_slice(&tag.as_ref()[..8]);
        let slot = (u64::from_le_bytes(index) % self.graces.len() as u64) as usize;
        let grace = &mut self.graces[slot];
        let sender = sender_tag(client);
        if ms < grace.next_ms || grace.graced_lately(sender, secs) {
            return false;
        }
        grace.next_ms = ms.saturating_add(GRACE_INTERVAL.as_millis() as u64);
        grace.record(sender, secs);
        true
    }
}

impl Grace {
    fn graced_lately(&self, sender: u16, now_secs: u32) -> bool {
        let memory = GRACE_MEMORY.as_secs() as u32;
        (0..usize::from(self.len))
            .any(|i| self.senders[i] == sender && now_secs.saturating_sub(self.at_secs[i]) < memory)
    }

    fn record(&mut self, sender: u16, now_secs: u32) {
        let i = usize::from(self.cursor);
        self.senders[i] = sender;
        self.at_secs[i] = now_secs;
        self.cursor = ((i + 1) % GRACE_SENDERS) as u8;
        self.len = (usize::from(self.len) + 1).min(GRACE_SENDERS) as u8;
    }
}

/// 16 bits that tell a slot's senders apart: the port, folded with the
/// address (an IPv6 /64 counts as one source but holds many hosts). Not a
/// secret: a flood that spoofs a victim's very port can do it directly.
fn sender_tag(client: ClientAddr) -> u16 {
    let octets = match client.remote.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    };
    let folded = octets.chunks_exact(2).fold(0u16, |acc, pair| {
        acc.rotate_left(5) ^ u16::from_be_bytes([pair[0], pair[1]])
    });
    folded ^ client.remote.port()
}

/// `rate` bytes a second, and four seconds of it (at least a few
/// challenges) at once.
fn rate_and_burst(rate: u64) -> (u64, u64) {
    (rate, rate.saturating_mul(4).max(512))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn udp_from(remote: &str) -> ClientAddr {
        ClientAddr {
            transport: Transport::Udp,
            local: SocketAddr::from(([192, 0, 2, 1], 3478)),
            remote: remote.parse().unwrap(),
        }
    }

    #[test]
    fn memory_is_fixed_whatever_the_number_of_sources() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        assert!(size_of::<Grace>() <= 64, "{} bytes a slot", size_of::<Grace>());
        let mut budget = ChallengeBudget::new(&[1; 32], 100);
        for i in 0u32..20_000 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            budget.admit(udp_from(&format!("{ip}:{}", 1024 + i % 1000)), 1_000, t0);
        }
        assert_eq!(budget.graces.len(), CHALLENGE_SLOTS);
    }

    #[test]
    fn the_ports_of_one_ipv4_address_are_told_apart() {
        let tags: std::collections::HashSet<u16> = (0..=u16::MAX)
            .map(|port| sender_tag(udp_from(&format!("198.51.100.7:{port}"))))
            .collect();
        assert_eq!(tags.len(), 1 << 16);
    }
}

//! Which ports of the relay range are free, per family, for every shard of
//! the process: one bit per port, so that choosing a port costs a scan of
//! a few words instead of `bind()` calls across the range, and an even port
//! with a free odd partner (EVEN-PORT with R, RFC 8656 §7.2) is found by a
//! scan too. Locked only when a relay is bound or released.
//!
//! Invariants: a listener port of the server inside the range is never
//! free. Any other port is in exactly one of four states per family —
//! free (its bit set), taken (handed to a relay or a reservation, until
//! [`PortPool::give_back`]), cooling (given back lately: it waits behind
//! up to half the range of other freed ports before it is free again, so
//! late packets of the old relay do not reach a new one at once and the
//! next relay rarely gets the port its predecessor had), or foreign (its
//! `bind()` failed: another process holds it). Cooling and foreign ports
//! return to the free set when the pool runs dry.

use std::collections::VecDeque;
use std::ops::RangeInclusive;

use crate::proto::addr::Family;
use crate::proto::server::PortWant;

#[derive(Debug)]
pub(in crate::net) struct PortPool {
    range: RangeInclusive<u16>,
    /// Per family (IPv4, IPv6): bit `p - low` set when port `p` is free.
    free: [Vec<u64>; 2],
    /// Given back, oldest first; at most `cooling_cap` per family.
    cooling: [VecDeque<u16>; 2],
    cooling_cap: usize,
    foreign: [Vec<u16>; 2],
}

fn slot(family: Family) -> usize {
    match family {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

impl PortPool {
    /// Every port of `range` free.
    pub(in crate::net) fn new(range: RangeInclusive<u16>) -> PortPool {
        let len = range.clone().count();
        let mut bits = vec![u64::MAX; len.div_ceil(64)];
        if !len.is_multiple_of(64) {
            if let Some(last) = bits.last_mut() {
                *last = (1u64 << (len % 64)) - 1;
            }
        }
        PortPool {
            range,
            free: [bits.clone(), bits],
            cooling: [VecDeque::new(), VecDeque::new()],
            cooling_cap: len / 2,
            foreign: [Vec::new(), Vec::new()],
        }
    }

    /// Takes a free port that suits `want` (for a pair, the odd partner
    /// too), searching from `start` (a random number, so ports are
    /// unpredictable as RFC 8656 §7.2 asks). `None` if there is none.
    pub(in crate::net) fn take(&mut self, family: Family, want: PortWant, start: u64) -> Option<u16> {
        let found = self.find(family, want, start).or_else(|| {
            // Dry: cooling ports are better than none, and ports other
            // processes held may be free again.
            let s = slot(family);
            let back: Vec<u16> = self.cooling[s]
                .drain(..)
                .chain(std::mem::take(&mut self.foreign[s]))
                .collect();
            for port in back {
                self.set(s, port, true);
            }
            self.find(family, want, start)
        })?;
        let s = slot(family);
        self.set(s, found, false);
        if want_pair(want) {
            self.set(s, found + 1, false);
        }
        Some(found)
    }

    /// Takes `port` out of the pool for good, in both families: a port of
    /// the server's own listeners is never a relay, whatever the protocol.
    pub(in crate::net) fn exclude(&mut self, port: u16) {
        for s in 0..2 {
            self.set(s, port, false);
        }
    }

    /// A port taken earlier is no longer used; it cools before it is free.
    pub(in crate::net) fn give_back(&mut self, family: Family, port: u16) {
        let s = slot(family);
        self.cooling[s].push_back(port);
        while self.cooling[s].len() > self.cooling_cap {
            if let Some(cooled) = self.cooling[s].pop_front() {
                self.set(s, cooled, true);
            }
        }
    }

    /// A taken port could not be bound: another process holds it.
    pub(in crate::net) fn foreign(&mut self, family: Family, port: u16) {
        self.foreign[slot(family)].push(port);
    }

    fn find(&self, family: Family, want: PortWant, start: u64) -> Option<u16> {
        let words = &self.free[slot(family)];
        let low = *self.range.start();
        let n = words.len();
        if n == 0 {
            return None;
        }
        // Start at a random word and a random bit in it; the first word's
        // lower bits come last.
        let first = (start % n as u64) as usize;
        let bit0 = (start / n as u64 % 64) as u32;
        for i in 0..=n {
            let w = (first + i) % n;
            let mut bits = words[w];
            if i == 0 {
                bits &= u64::MAX << bit0;
            } else if i == n {
                bits &= !(u64::MAX << bit0);
            }
            if want != PortWant::Any {
                // Only offsets whose port is even.
                bits &= if low.is_multiple_of(2) {
                    0x5555_5555_5555_5555
                } else {
                    0xAAAA_AAAA_AAAA_AAAA
                };
            }
            while bits != 0 {
                let bit = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let port = low as usize + w * 64 + bit;
                let Ok(port) = u16::try_from(port) else { break };
                if !want_pair(want) || (port < *self.range.end() && self.is_free(slot(family), port + 1)) {
                    return Some(port);
                }
            }
        }
        None
    }

    fn is_free(&self, s: usize, port: u16) -> bool {
        let offset = usize::from(port - self.range.start());
        self.free[s]
            .get(offset / 64)
            .is_some_and(|w| w & (1 << (offset % 64)) != 0)
    }

    fn set(&mut self, s: usize, port: u16, free: bool) {
        if !self.range.contains(&port) {
            return;
        }
        let offset = usize::from(port - self.range.start());
        if let Some(word) = self.free[s].get_mut(offset / 64) {
            match free {
                true => *word |= 1 << (offset % 64),
                false => *word &= !(1 << (offset % 64)),
            }
        }
    }
}

fn want_pair(want: PortWant) -> bool {
    matches!(want, PortWant::EvenPair(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_port_is_handed_out_once_until_it_is_given_back() {
        let mut pool = PortPool::new(50_001..=50_100);
        let mut taken: Vec<u16> = (0..100)
            .map(|i| pool.take(Family::V4, PortWant::Any, i * 7).unwrap())
            .collect();
        taken.sort_unstable();
        assert_eq!(taken, (50_001..=50_100).collect::<Vec<_>>());
        assert_eq!(pool.take(Family::V4, PortWant::Any, 3), None);
        // The other family has its own ports.
        assert!(pool.take(Family::V6, PortWant::Any, 3).is_some());
        pool.give_back(Family::V4, 50_042);
        assert_eq!(pool.take(Family::V4, PortWant::Any, 99), Some(50_042));
    }

    #[test]
    fn a_port_given_back_cools_behind_half_the_range_before_it_is_handed_out_again() {
        let mut pool = PortPool::new(50_000..=50_009);
        let first = pool.take(Family::V4, PortWant::Any, 0).unwrap();
        pool.give_back(Family::V4, first);
        // Nine other ports are free: none of the next five is the old one
        // while it cools behind up to five others.
        let next: Vec<u16> = (0..5)
            .map(|i| pool.take(Family::V4, PortWant::Any, i).unwrap())
            .collect();
        assert!(!next.contains(&first), "{next:?}");
        for port in &next {
            pool.give_back(Family::V4, *port);
        }
        // Behind five others, the first has cooled and is free again.
        let rest: Vec<u16> = (0..5)
            .map(|i| pool.take(Family::V4, PortWant::Any, i).unwrap())
            .collect();
        assert!(rest.contains(&first), "{rest:?}");
    }

    #[test]
    fn an_excluded_port_is_never_handed_out() {
        let mut pool = PortPool::new(50_000..=50_001);
        pool.exclude(50_001);
        assert_eq!(pool.take(Family::V4, PortWant::Any, 1), Some(50_000));
        assert_eq!(pool.take(Family::V4, PortWant::Any, 1), None);
        assert_eq!(pool.take(Family::V6, PortWant::Any, 7), Some(50_000));
    }

    #[test]
    fn even_ports_and_pairs_are_found_by_a_scan() {
        let mut pool = PortPool::new(50_001..=50_010);
        for start in 0..3 {
            let port = pool.take(Family::V4, PortWant::EvenPair(1), start).unwrap();
            assert_eq!(port % 2, 0);
            assert!(port < 50_010);
        }
        // Pairs 50002/3, 50004/5, ... 50008/9 hold four; a fifth has none
        // (50010's partner is out of the range), but an even port remains.
        assert!(pool.take(Family::V4, PortWant::EvenPair(1), 0).is_some());
        assert_eq!(pool.take(Family::V4, PortWant::EvenPair(1), 0), None);
        assert_eq!(pool.take(Family::V4, PortWant::Even, 0), Some(50_010));
        assert_eq!(pool.take(Family::V4, PortWant::Any, 0), Some(50_001));
    }

    #[test]
    fn a_port_held_by_another_process_comes_back_when_the_pool_runs_dry() {
        let mut pool = PortPool::new(50_000..=50_001);
        let a = pool.take(Family::V4, PortWant::Any, 0).unwrap();
        pool.foreign(Family::V4, a);
        let b = pool.take(Family::V4, PortWant::Any, 0).unwrap();
        assert_ne!(a, b);
        assert_eq!(pool.take(Family::V4, PortWant::Any, 0), Some(a));
    }
}

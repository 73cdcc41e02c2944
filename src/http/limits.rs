//! Per-source limits of the HTTP listener: the table that admits or refuses
//! a connection at accept, by its [`SourceKey`] (docs/design.md, "Per-source
//! limits in bounded tables").
//!
//! Plain data, no I/O: the accept loop asks [`ConnectionTable::admit`] and
//! closes the connection when refused; the connection's slot calls
//! [`ConnectionTable::release`] when it ends.
//!
//! Invariants:
//! - `general <= max_total` and `reserved <= MONITORING_SLOTS`;
//! - every source with a live connection has an entry, which counts exactly
//!   its live connections (general and reserved) and is never above
//!   `max_per_source`; a source with none has no entry. The table therefore
//!   never holds more than `max_total + MONITORING_SLOTS` entries, whatever
//!   the number of addresses that connect.
//!
//! Monitoring: one source cannot fill `max_total` (it is held to
//! `max_per_source`), but many sources can. So that `/metrics`, `/healthz`
//! and `/readyz` still answer then, [`MONITORING_SLOTS`] connections are
//! kept back beyond `max_total`. A reserved connection is only served those
//! three paths, one request, with a short deadline for its headers, so it
//! cannot be held to starve the scraper that comes next. We chose this over
//! a separate `listen.metrics` listener because it works on the default
//! config, where monitoring shares `listen.http`; a second listener would
//! protect only the operators who thought to configure one.

use crate::proto::source::SourceKey;
use std::collections::HashMap;

/// Connections kept back beyond `signaling.max_connections` for
/// monitoring requests.
pub const MONITORING_SLOTS: usize = 8;

/// The paths a reserved connection is served.
pub const MONITORING_PATHS: [&str; 3] = ["/metrics", "/healthz", "/readyz"];

/// How a connection was let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Under `max_connections`: served everything.
    General,
    /// From the monitoring reserve: served [`MONITORING_PATHS`] only.
    Monitoring,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionRefusal {
    /// Its source holds `max_per_source` connections.
    SourceLimit,
    /// `max_total` connections and every monitoring slot are taken.
    Full,
}

impl ConnectionRefusal {
    /// Every reason, as metric label values, in discriminant order.
    pub const ALL: [&'static str; 2] = ["source", "total"];
}

/// Live HTTP connections, in total and per source.
#[derive(Debug)]
pub struct ConnectionTable {
    max_total: usize,
    max_per_source: usize,
    general: usize,
    reserved: usize,
    per_source: HashMap<SourceKey, usize>,
    /// Connections refused, by [`ConnectionRefusal::ALL`] index.
    refused: [u64; ConnectionRefusal::ALL.len()],
}

impl ConnectionTable {
    pub fn new(max_total: usize, max_per_source: usize) -> ConnectionTable {
        ConnectionTable {
            max_total,
            max_per_source,
            general: 0,
            reserved: 0,
            per_source: HashMap::new(),
            refused: [0; ConnectionRefusal::ALL.len()],
        }
    }

    /// Lets a connection from `source` in, or says why not.
    pub fn admit(&mut self, source: SourceKey) -> Result<Admission, ConnectionRefusal> {
        let held = self.per_source.get(&source).copied().unwrap_or(0);
        let admission = if held >= self.max_per_source {
            Err(ConnectionRefusal::SourceLimit)
        } else if self.general < self.max_total {
            self.general += 1;
            Ok(Admission::General)
        } else if self.reserved < MONITORING_SLOTS {
            self.reserved += 1;
            Ok(Admission::Monitoring)
        } else {
            Err(ConnectionRefusal::Full)
        };
        match admission {
            Ok(_) => *self.per_source.entry(source).or_insert(0) += 1,
            Err(refusal) => self.refused[refusal as usize] += 1,
        }
        self.debug_check();
        admission
    }

    /// Gives back the place of a connection [`admit`](Self::admit) let in.
    pub fn release(&mut self, source: SourceKey, admission: Admission) {
        let pool = match admission {
            Admission::General => &mut self.general,
            Admission::Monitoring => &mut self.reserved,
        };
        debug_assert!(*pool > 0, "release without admit");
        *pool = pool.saturating_sub(1);
        if let Some(held) = self.per_source.get_mut(&source) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                self.per_source.remove(&source);
            }
        } else {
            debug_assert!(false, "release of an unknown source");
        }
        self.debug_check();
    }

    /// Live connections (general, reserved).
    pub fn live(&self) -> (usize, usize) {
        (self.general, self.reserved)
    }

    /// Sources with at least one live connection.
    pub fn sources(&self) -> usize {
        self.per_source.len()
    }

    /// Connections refused so far, by [`ConnectionRefusal::ALL`] index.
    pub fn refused(&self) -> [u64; ConnectionRefusal::ALL.len()] {
        self.refused
    }

    fn debug_check(&self) {
        debug_assert!(self.general <= self.max_total && self.reserved <= MONITORING_SLOTS);
        debug_assert_eq!(
            self.per_source.values().sum::<usize>(),
            self.general + self.reserved,
            "per-source counts mirror the live connections"
        );
        debug_assert!(self
            .per_source
            .values()
            .all(|&n| (1..=self.max_per_source).contains(&n)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ip: &str) -> SourceKey {
        SourceKey::from(ip.parse::<std::net::IpAddr>().unwrap())
    }

    #[test]
    fn one_source_is_held_to_its_share_and_others_still_get_in() {
        let mut table = ConnectionTable::new(10, 3);
        for _ in 0..3 {
            assert_eq!(table.admit(key("192.0.2.1")), Ok(Admission::General));
        }
        assert_eq!(table.admit(key("192.0.2.1")), Err(ConnectionRefusal::SourceLimit));
        assert_eq!(table.admit(key("192.0.2.2")), Ok(Admission::General));
        table.release(key("192.0.2.1"), Admission::General);
        assert_eq!(table.admit(key("192.0.2.1")), Ok(Admission::General));
        assert_eq!(table.refused(), [1, 0]);
        assert_eq!((table.live(), table.sources()), ((4, 0), 2));
    }

    #[test]
    fn beyond_the_total_only_the_monitoring_reserve_is_left_then_nothing() {
        let mut table = ConnectionTable::new(2, 1);
        let mut next = (1..=255u8).map(|i| key(&format!("192.0.2.{i}")));
        let mut sources = Vec::new();
        for _ in 0..2 {
            let s = next.next().unwrap();
            assert_eq!(table.admit(s), Ok(Admission::General));
            sources.push((s, Admission::General));
        }
        for _ in 0..MONITORING_SLOTS {
            let s = next.next().unwrap();
            assert_eq!(table.admit(s), Ok(Admission::Monitoring));
            sources.push((s, Admission::Monitoring));
        }
        assert_eq!(table.admit(next.next().unwrap()), Err(ConnectionRefusal::Full));
        for (s, a) in sources {
            table.release(s, a);
        }
        assert_eq!((table.live(), table.sources()), ((0, 0), 0), "nothing leaks");
        assert_eq!(table.admit(key("192.0.2.1")), Ok(Admission::General));
    }
}

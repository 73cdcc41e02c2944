//! The connection slots of one admin listener, and who may keep one.
//!
//! A listener holds at most [`MAX_CONNECTIONS`] connections. One that has
//! not yet sent a request head carrying the valid key is *unproven*, and
//! unproven ones hold at most [`MAX_UNPROVEN`] slots: when another
//! connection arrives while they are at that bound (or every slot is
//! taken), the longest-held unproven one is closed to make room. So idle
//! or slow callers without the key, which a local user can open at will,
//! never keep a key holder out, and [`RESERVED_FOR_KEY`] slots are only
//! ever held by connections that presented the key. A connection that has
//! presented it (proven) is never evicted; only when all
//! [`MAX_CONNECTIONS`] are proven does the next caller wait in the
//! kernel's backlog.
//!
//! [`SlotTable`] is the bookkeeping alone, without I/O: the listener
//! ([`super`]) asks it before and after each accept, stores with each
//! unproven slot what closes its connection, and tells it when a
//! connection presents the key and when it ends.

use std::collections::{HashSet, VecDeque};

/// Connections one admin listener holds at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Slots only connections that presented the key may hold.
pub const RESERVED_FOR_KEY: usize = 4;
/// Slots connections that have not (yet) presented the key may hold.
pub const MAX_UNPROVEN: usize = MAX_CONNECTIONS - RESERVED_FOR_KEY;

/// A connection's place in a [`SlotTable`].
pub type SlotId = u64;

/// The slots of one listener; `T` is what closes an unproven connection
/// (handed back when it is evicted).
pub struct SlotTable<T> {
    next: SlotId,
    /// Oldest first.
    unproven: VecDeque<(SlotId, T)>,
    proven: HashSet<SlotId>,
}

impl<T> Default for SlotTable<T> {
    fn default() -> Self {
        SlotTable {
            next: 0,
            unproven: VecDeque::new(),
            proven: HashSet::new(),
        }
    }
}

/// What [`SlotTable::admit`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission<T> {
    /// The new connection holds `id`; `evicted`, if any, is the closer of
    /// the unproven connection that made room.
    Admitted { id: SlotId, evicted: Option<T> },
    /// Every slot is held by a connection that presented the key.
    Full,
}

impl<T> SlotTable<T> {
    /// Connections held.
    pub fn held(&self) -> usize {
        self.unproven.len() + self.proven.len()
    }

    /// Whether a new connection would be admitted (at once or by evicting
    /// an unproven one): false only while every slot is proven.
    pub fn has_room(&self) -> bool {
        self.proven.len() < MAX_CONNECTIONS
    }

    /// Admits a new, unproven connection whose closer is `closer`,
    /// evicting the longest-held unproven one if unproven connections are
    /// at [`MAX_UNPROVEN`] or every slot is taken.
    pub fn admit(&mut self, closer: T) -> Admission<T> {
        let evicted = match self.unproven.len() >= MAX_UNPROVEN || self.held() >= MAX_CONNECTIONS {
            true => match self.unproven.pop_front() {
                Some((_, evicted)) => Some(evicted),
                None => return Admission::Full,
            },
            false => None,
        };
        let id = self.next;
        self.next += 1;
        self.unproven.push_back((id, closer));
        Admission::Admitted { id, evicted }
    }

    /// The connection `id` presented the key: it is never evicted from now
    /// on. False if it is no longer held (it was evicted).
    pub fn prove(&mut self, id: SlotId) -> bool {
        if self.proven.contains(&id) {
            return true;
        }
        match self.unproven.iter().position(|(held, _)| *held == id) {
            Some(at) => {
                self.unproven.remove(at);
                self.proven.insert(id);
                true
            }
            None => false,
        }
    }

    /// The connection `id` ended: its slot is free (nothing if it was
    /// evicted before).
    pub fn release(&mut self, id: SlotId) {
        if !self.proven.remove(&id) {
            self.unproven.retain(|(held, _)| *held != id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(table: &mut SlotTable<u32>, closer: u32) -> (SlotId, Option<u32>) {
        match table.admit(closer) {
            Admission::Admitted { id, evicted } => (id, evicted),
            Admission::Full => panic!("refused with {} held", table.held()),
        }
    }

    #[test]
    fn idle_callers_without_the_key_never_hold_more_than_their_share() {
        let mut table = SlotTable::default();
        let ids: Vec<SlotId> = (0..MAX_UNPROVEN as u32).map(|n| admitted(&mut table, n).0).collect();
        assert_eq!(table.held(), MAX_UNPROVEN);
        // Each further caller closes the longest-held unproven one.
        assert_eq!(admitted(&mut table, 100).1, Some(0));
        assert_eq!(admitted(&mut table, 101).1, Some(1));
        assert_eq!(table.held(), MAX_UNPROVEN);
        // An evicted one can no longer prove itself, and its end frees nothing twice.
        assert!(!table.prove(ids[0]));
        table.release(ids[0]);
        assert_eq!(table.held(), MAX_UNPROVEN);
        // A key holder arriving now is admitted and, once proven, stays.
        let (operator, evicted) = admitted(&mut table, 200);
        assert_eq!(evicted, Some(2));
        assert!(table.prove(operator));
        // Its place among the unproven is taken again once, then every
        // caller evicts one.
        let callers = 3 * MAX_CONNECTIONS as u32;
        let evictions = (0..callers)
            .filter(|n| admitted(&mut table, 300 + n).1.is_some())
            .count();
        assert_eq!(evictions, callers as usize - 1);
        assert!(table.prove(operator));
        assert_eq!(table.held(), MAX_UNPROVEN + 1);
        table.release(operator);
        assert_eq!(table.held(), MAX_UNPROVEN);
    }

    #[test]
    fn proven_connections_fill_every_slot_and_then_the_next_waits() {
        let mut table = SlotTable::default();
        for n in 0..MAX_CONNECTIONS as u32 - 1 {
            let (id, _) = admitted(&mut table, n);
            assert!(table.prove(id));
        }
        assert!(table.has_room());
        // The last slot: an unproven caller may take it, and is evicted by the next.
        let (last, evicted) = admitted(&mut table, 99);
        assert_eq!(evicted, None);
        assert_eq!(admitted(&mut table, 100).1, Some(99));
        assert!(!table.prove(last));
        let (newest, evicted) = admitted(&mut table, 101);
        assert_eq!((evicted, table.held()), (Some(100), MAX_CONNECTIONS));
        // Once it proves itself every slot is proven: the next caller waits.
        assert!(table.prove(newest));
        assert!(!table.has_room());
        assert_eq!(table.admit(102), Admission::Full);
        table.release(newest);
        assert!(table.has_room());
        assert_eq!(table.held(), MAX_CONNECTIONS - 1);
    }
}

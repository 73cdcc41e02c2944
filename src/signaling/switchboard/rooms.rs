//! Rooms: who is in which room, and who must hear about a join or a leave.
//!
//! Plain data, no I/O: the switchboard asks and then delivers.
//! Invariants:
//! - a peer is in at most one room;
//! - no room is empty (the last leave removes it), so rooms never leak;
//! - no room holds more than `room_size` peers, and there are never more
//!   than `max_rooms` rooms;
//! - each room is charged to the source that opened it until it is removed;
//!   `opened` counts exactly those rooms per source, holds no zero, and no
//!   source has more than `max_rooms_per_source` (so `opened` is bounded by
//!   `max_rooms` entries).

use std::collections::HashMap;

use crate::proto::source::SourceKey;
use crate::signaling::protocol::PeerInfo;

/// Why a join was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefused {
    /// The room holds `room_size` peers.
    RoomFull,
    /// The room does not exist and `max_rooms` rooms do.
    TooManyRooms,
    /// The room does not exist and the joiner's source has opened
    /// `max_rooms_per_source` rooms that still exist.
    SourceRooms,
    /// The peer is in a room already.
    AlreadyInRoom,
}

#[derive(Debug)]
struct Room {
    members: Vec<PeerInfo>,
    /// Who the room is charged to.
    opener: SourceKey,
}

#[derive(Debug)]
pub struct Rooms {
    room_size: usize,
    max_rooms: usize,
    max_rooms_per_source: usize,
    rooms: HashMap<String, Room>,
    /// Peer id → its room; mirrors the members of `rooms`.
    membership: HashMap<String, String>,
    /// Source → rooms it opened that exist; mirrors `Room::opener`.
    opened: HashMap<SourceKey, usize>,
}

impl Rooms {
    pub fn new(room_size: usize, max_rooms: usize, max_rooms_per_source: usize) -> Rooms {
        Rooms {
            room_size,
            max_rooms,
            max_rooms_per_source,
            rooms: HashMap::new(),
            membership: HashMap::new(),
            opened: HashMap::new(),
        }
    }

    /// Puts `peer`, connected from `source`, into `room`; returns the peers
    /// already there, who are the ones to tell.
    pub fn join(&mut self, peer: PeerInfo, source: SourceKey, room: &str) -> Result<Vec<PeerInfo>, JoinRefused> {
        if self.membership.contains_key(&peer.id) {
            return Err(JoinRefused::AlreadyInRoom);
        }
        let others = match self.rooms.get(room) {
            Some(room) if room.members.len() >= self.room_size => return Err(JoinRefused::RoomFull),
            Some(room) => room.members.clone(),
            None if self.rooms.len() >= self.max_rooms => return Err(JoinRefused::TooManyRooms),
            None if self.opened_by(source) >= self.max_rooms_per_source => return Err(JoinRefused::SourceRooms),
            None => {
                *self.opened.entry(source).or_insert(0) += 1;
                self.rooms.insert(
                    room.to_owned(),
                    Room {
                        members: Vec::new(),
                        opener: source,
                    },
                );
                Vec::new()
            }
        };
        self.membership.insert(peer.id.clone(), room.to_owned());
        if let Some(room) = self.rooms.get_mut(room) {
            room.members.push(peer);
        }
        self.debug_check();
        Ok(others)
    }

    /// Takes `peer` out of its room; returns the ids of the peers left in
    /// it (empty if it was alone or in no room).
    pub fn leave(&mut self, peer: &str) -> Vec<String> {
        let Some(name) = self.membership.remove(peer) else {
            return Vec::new();
        };
        let Some(room) = self.rooms.get_mut(&name) else {
            debug_assert!(false, "membership names a room that does not exist");
            return Vec::new();
        };
        room.members.retain(|m| m.id != peer);
        if !room.members.is_empty() {
            let left = room.members.iter().map(|m| m.id.clone()).collect();
            self.debug_check();
            return left;
        }
        let opener = room.opener;
        self.rooms.remove(&name);
        if let Some(count) = self.opened.get_mut(&opener) {
            *count -= 1;
            if *count == 0 {
                self.opened.remove(&opener);
            }
        }
        self.debug_check();
        Vec::new()
    }

    /// The room `peer` is in.
    pub fn room_of(&self, peer: &str) -> Option<&str> {
        self.membership.get(peer).map(String::as_str)
    }

    /// True if `a` and `b` are both in one room.
    pub fn same_room(&self, a: &str, b: &str) -> bool {
        match (self.membership.get(a), self.membership.get(b)) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        }
    }

    /// The peers of `room`, in the order they joined.
    pub fn members(&self, room: &str) -> &[PeerInfo] {
        self.rooms.get(room).map_or(&[], |r| r.members.as_slice())
    }

    /// Every room and its members.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[PeerInfo])> {
        self.rooms.iter().map(|(name, r)| (name.as_str(), r.members.as_slice()))
    }

    /// Rooms opened from `source` that exist now.
    pub fn opened_by(&self, source: SourceKey) -> usize {
        self.opened.get(&source).copied().unwrap_or(0)
    }

    /// Rooms that exist now.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Peers in any room now.
    pub fn peer_count(&self) -> usize {
        self.membership.len()
    }

    /// Checks the invariants of the module doc (debug builds only: the
    /// walk is over every room).
    fn debug_check(&self) {
        if cfg!(debug_assertions) {
            let checked = self.check();
            debug_assert!(checked.is_ok(), "rooms invariant broken: {checked:?}");
        }
    }

    /// The invariants of the module doc, checked in full; for tests and
    /// the fuzz harness.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.rooms.len() > self.max_rooms {
            return Err("more rooms than max_rooms");
        }
        let mut peers = 0;
        let mut opened: HashMap<SourceKey, usize> = HashMap::new();
        for (name, room) in &self.rooms {
            if room.members.is_empty() {
                return Err("an empty room exists");
            }
            if room.members.len() > self.room_size {
                return Err("a room holds more than room_size peers");
            }
            for m in &room.members {
                if self.membership.get(&m.id) != Some(name) {
                    return Err("a member's membership names another room");
                }
            }
            peers += room.members.len();
            *opened.entry(room.opener).or_insert(0) += 1;
        }
        if peers != self.membership.len() {
            return Err("a peer is in two rooms, or membership names a peer in none");
        }
        if opened != self.opened {
            return Err("opened does not mirror the rooms' openers");
        }
        if opened.values().any(|&n| n > self.max_rooms_per_source) {
            return Err("a source opened more than max_rooms_per_source rooms");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: &str) -> PeerInfo {
        PeerInfo {
            id: id.to_owned(),
            name: Some(id.to_uppercase()),
        }
    }

    fn src(n: u8) -> SourceKey {
        SourceKey::from(std::net::IpAddr::from([192, 0, 2, n]))
    }

    fn ids(peers: &[PeerInfo]) -> Vec<&str> {
        peers.iter().map(|p| p.id.as_str()).collect()
    }

    #[test]
    fn join_returns_those_already_there() {
        let mut rooms = Rooms::new(6, 10, 10);
        assert!(rooms.join(peer("a"), src(1), "r").unwrap().is_empty());
        assert_eq!(ids(&rooms.join(peer("b"), src(1), "r").unwrap()), ["a"]);
        assert_eq!(ids(&rooms.join(peer("c"), src(1), "r").unwrap()), ["a", "b"]);
        assert!(rooms.join(peer("d"), src(1), "other").unwrap().is_empty());
        assert!(rooms.same_room("a", "c"));
        assert!(!rooms.same_room("a", "d"));
        assert!(!rooms.same_room("a", "nobody"));
        assert_eq!(rooms.room_of("d"), Some("other"));
    }

    #[test]
    fn a_full_room_refuses_and_frees_a_seat_on_leave() {
        let mut rooms = Rooms::new(2, 10, 10);
        rooms.join(peer("a"), src(1), "r").unwrap();
        rooms.join(peer("b"), src(1), "r").unwrap();
        assert_eq!(rooms.join(peer("c"), src(1), "r").unwrap_err(), JoinRefused::RoomFull);
        assert_eq!(rooms.peer_count(), 2, "a refused join leaves no trace");
        assert_eq!(rooms.leave("a"), ["b"]);
        assert_eq!(ids(&rooms.join(peer("c"), src(1), "r").unwrap()), ["b"]);
    }

    #[test]
    fn the_last_leave_removes_the_room() {
        let mut rooms = Rooms::new(6, 1, 1);
        rooms.join(peer("a"), src(1), "r").unwrap();
        assert_eq!(
            rooms.join(peer("b"), src(1), "s").unwrap_err(),
            JoinRefused::TooManyRooms
        );
        assert!(rooms.leave("a").is_empty());
        assert_eq!((rooms.room_count(), rooms.peer_count()), (0, 0));
        assert!(
            rooms.join(peer("b"), src(1), "s").is_ok(),
            "the freed room slot is usable"
        );
    }

    #[test]
    fn one_room_at_a_time_and_leaving_twice_is_harmless() {
        let mut rooms = Rooms::new(6, 10, 10);
        rooms.join(peer("a"), src(1), "r").unwrap();
        assert_eq!(
            rooms.join(peer("a"), src(1), "s").unwrap_err(),
            JoinRefused::AlreadyInRoom
        );
        assert_eq!(rooms.room_count(), 1);
        assert!(rooms.leave("a").is_empty());
        assert!(rooms.leave("a").is_empty());
        assert!(rooms.room_of("a").is_none());
    }

    #[test]
    fn a_source_opens_at_most_its_share_of_rooms_and_gets_it_back_when_they_close() {
        let mut rooms = Rooms::new(6, 10, 2);
        rooms.join(peer("a"), src(1), "r").unwrap();
        rooms.join(peer("b"), src(1), "s").unwrap();
        assert_eq!(
            rooms.join(peer("c"), src(1), "t").unwrap_err(),
            JoinRefused::SourceRooms
        );
        assert!(
            rooms.join(peer("c"), src(1), "r").is_ok(),
            "joining an open room costs nothing"
        );
        assert!(
            rooms.join(peer("d"), src(2), "t").is_ok(),
            "another source is not affected"
        );
        // The room stays charged to its opener while others are in it.
        rooms.leave("a");
        assert_eq!(rooms.opened_by(src(1)), 2);
        rooms.leave("c");
        assert_eq!(rooms.opened_by(src(1)), 1);
        assert!(rooms.join(peer("e"), src(1), "u").is_ok());
        assert_eq!(rooms.check(), Ok(()));
    }
}

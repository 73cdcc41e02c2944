//! Rooms: who is in which room, and who must hear about a join or a leave.
//!
//! Plain data, no I/O: the session driver asks and then delivers.
//! Invariants:
//! - a peer is in at most one room;
//! - no room is empty (the last leave removes it), so rooms never leak;
//! - no room holds more than `room_size` peers, and there are never more
//!   than `max_rooms` rooms.

use std::collections::HashMap;

use super::protocol::PeerInfo;

/// Why a join was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefused {
    /// The room holds `room_size` peers.
    RoomFull,
    /// The room does not exist and `max_rooms` rooms do.
    TooManyRooms,
    /// The peer is in a room already.
    AlreadyInRoom,
}

#[derive(Debug)]
pub struct Rooms {
    room_size: usize,
    max_rooms: usize,
    rooms: HashMap<String, Vec<PeerInfo>>,
    /// Peer id → its room.
    membership: HashMap<String, String>,
}

impl Rooms {
    pub fn new(room_size: usize, max_rooms: usize) -> Rooms {
        Rooms {
            room_size,
            max_rooms,
            rooms: HashMap::new(),
            membership: HashMap::new(),
        }
    }

    /// Puts `peer` into `room`; returns the peers already there, who are
    /// the ones to tell.
    pub fn join(&mut self, peer: PeerInfo, room: &str) -> Result<Vec<PeerInfo>, JoinRefused> {
        if self.membership.contains_key(&peer.id) {
            return Err(JoinRefused::AlreadyInRoom);
        }
        let others = match self.rooms.get(room) {
            Some(members) if members.len() >= self.room_size => return Err(JoinRefused::RoomFull),
            Some(members) => members.clone(),
            None if self.rooms.len() >= self.max_rooms => return Err(JoinRefused::TooManyRooms),
            None => Vec::new(),
        };
        self.membership.insert(peer.id.clone(), room.to_owned());
        self.rooms.entry(room.to_owned()).or_default().push(peer);
        Ok(others)
    }

    /// Takes `peer` out of its room; returns the ids of the peers left in
    /// it (empty if it was alone or in no room).
    pub fn leave(&mut self, peer: &str) -> Vec<String> {
        let Some(room) = self.membership.remove(peer) else {
            return Vec::new();
        };
        let Some(members) = self.rooms.get_mut(&room) else {
            return Vec::new();
        };
        members.retain(|m| m.id != peer);
        if members.is_empty() {
            self.rooms.remove(&room);
            return Vec::new();
        }
        members.iter().map(|m| m.id.clone()).collect()
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

    /// Rooms that exist now.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Peers in any room now.
    pub fn peer_count(&self) -> usize {
        self.membership.len()
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

    fn ids(peers: &[PeerInfo]) -> Vec<&str> {
        peers.iter().map(|p| p.id.as_str()).collect()
    }

    #[test]
    fn join_returns_those_already_there() {
        let mut rooms = Rooms::new(6, 10);
        assert!(rooms.join(peer("a"), "r").unwrap().is_empty());
        assert_eq!(ids(&rooms.join(peer("b"), "r").unwrap()), ["a"]);
        assert_eq!(ids(&rooms.join(peer("c"), "r").unwrap()), ["a", "b"]);
        assert!(rooms.join(peer("d"), "other").unwrap().is_empty());
        assert!(rooms.same_room("a", "c"));
        assert!(!rooms.same_room("a", "d"));
        assert!(!rooms.same_room("a", "nobody"));
        assert_eq!(rooms.room_of("d"), Some("other"));
    }

    #[test]
    fn a_full_room_refuses_and_frees_a_seat_on_leave() {
        let mut rooms = Rooms::new(2, 10);
        rooms.join(peer("a"), "r").unwrap();
        rooms.join(peer("b"), "r").unwrap();
        assert_eq!(rooms.join(peer("c"), "r").unwrap_err(), JoinRefused::RoomFull);
        assert_eq!(rooms.peer_count(), 2, "a refused join leaves no trace");
        assert_eq!(rooms.leave("a"), ["b"]);
        assert_eq!(ids(&rooms.join(peer("c"), "r").unwrap()), ["b"]);
    }

    #[test]
    fn the_last_leave_removes_the_room() {
        let mut rooms = Rooms::new(6, 1);
        rooms.join(peer("a"), "r").unwrap();
        assert_eq!(rooms.join(peer("b"), "s").unwrap_err(), JoinRefused::TooManyRooms);
        assert!(rooms.leave("a").is_empty());
        assert_eq!((rooms.room_count(), rooms.peer_count()), (0, 0));
        assert!(rooms.join(peer("b"), "s").is_ok(), "the freed room slot is usable");
    }

    #[test]
    fn one_room_at_a_time_and_leaving_twice_is_harmless() {
        let mut rooms = Rooms::new(6, 10);
        rooms.join(peer("a"), "r").unwrap();
        assert_eq!(rooms.join(peer("a"), "s").unwrap_err(), JoinRefused::AlreadyInRoom);
        assert_eq!(rooms.room_count(), 1);
        assert!(rooms.leave("a").is_empty());
        assert!(rooms.leave("a").is_empty());
        assert!(rooms.room_of("a").is_none());
    }
}

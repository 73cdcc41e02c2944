//! The remote members of this instance's rooms: peers that other
//! instances of the fleet hold (`[fleet]`, `docs/signaling.md`, "Rooms
//! across a fleet"), as far as this instance has learnt of them.
//!
//! Plain data, no I/O: the switchboard adds and removes members as the
//! fleet driver reports joins, leaves and the membership it read from
//! Redis, and asks where a signal must go.
//!
//! Invariants ([`FleetView::check`]):
//! - a remote peer is in at most one room; `index` mirrors the members of
//!   `rooms`;
//! - no room is empty (the last removal drops it);
//! - no room holds more than [`MAX_REMOTE_PER_ROOM`] members, whatever
//!   Redis or another instance says.
//!
//! The switchboard keeps a further one: a room is here only while it has
//! a local member, and no remote id is a local session.

use std::collections::{BTreeSet, HashMap};

use crate::signaling::protocol::PeerInfo;

/// Most remote members one room may hold here: the largest `room_size`.
/// A fleet whose instances race past their room size stays within it.
pub const MAX_REMOTE_PER_ROOM: usize = 64;

/// A peer held by another instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteMember {
    pub id: String,
    pub name: Option<String>,
    /// The instance that holds it, where its signals are published.
    pub instance: String,
}

impl RemoteMember {
    pub fn info(&self) -> PeerInfo {
        PeerInfo {
            id: self.id.clone(),
            name: self.name.clone(),
        }
    }
}

#[derive(Debug, Default)]
pub struct FleetView {
    /// Room → its remote members, in the order they were learnt.
    rooms: HashMap<String, Vec<RemoteMember>>,
    /// Remote peer id → its room; mirrors the members of `rooms`.
    index: HashMap<String, String>,
}

impl FleetView {
    /// Adds `member` to `room`; false (nothing done) if it is known already
    /// (in any room) or the room holds [`MAX_REMOTE_PER_ROOM`].
    pub fn add(&mut self, room: &str, member: RemoteMember) -> bool {
        if self.index.contains_key(&member.id) {
            return false;
        }
        let members = self.rooms.entry(room.to_owned()).or_default();
        if members.len() >= MAX_REMOTE_PER_ROOM {
            if members.is_empty() {
                self.rooms.remove(room);
            }
            return false;
        }
        self.index.insert(member.id.clone(), room.to_owned());
        members.push(member);
        true
    }

    /// Takes remote peer `id` out of `room`; false if it was not there.
    pub fn remove(&mut self, room: &str, id: &str) -> bool {
        if self.index.get(id).map(String::as_str) != Some(room) {
            return false;
        }
        self.index.remove(id);
        if let Some(members) = self.rooms.get_mut(room) {
            members.retain(|m| m.id != id);
            if members.is_empty() {
                self.rooms.remove(room);
            }
        }
        true
    }

    /// Forgets `room` (its last local member left).
    pub fn drop_room(&mut self, room: &str) {
        for member in self.rooms.remove(room).unwrap_or_default() {
            self.index.remove(&member.id);
        }
    }

    /// The room remote peer `id` is in.
    pub fn room_of(&self, id: &str) -> Option<&str> {
        self.index.get(id).map(String::as_str)
    }

    /// The remote member `id` of `room`.
    pub fn member(&self, room: &str, id: &str) -> Option<&RemoteMember> {
        self.rooms.get(room)?.iter().find(|m| m.id == id)
    }

    /// The remote members of `room`.
    pub fn members(&self, room: &str) -> &[RemoteMember] {
        self.rooms.get(room).map_or(&[], Vec::as_slice)
    }

    /// The instances that hold a member of `room`, each once.
    pub fn instances(&self, room: &str) -> Vec<String> {
        let set: BTreeSet<&str> = self.members(room).iter().map(|m| m.instance.as_str()).collect();
        set.into_iter().map(str::to_owned).collect()
    }

    /// Remote peers known now.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Rooms with remote members now.
    pub fn rooms(&self) -> impl Iterator<Item = &str> {
        self.rooms.keys().map(String::as_str)
    }

    /// The invariants of the module doc, checked in full.
    pub fn check(&self) -> Result<(), &'static str> {
        let mut count = 0;
        for (room, members) in &self.rooms {
            if members.is_empty() {
                return Err("fleet view: an empty room is kept");
            }
            if members.len() > MAX_REMOTE_PER_ROOM {
                return Err("fleet view: a room holds more than MAX_REMOTE_PER_ROOM");
            }
            for m in members {
                if self.index.get(&m.id) != Some(room) {
                    return Err("fleet view: index does not mirror a member");
                }
            }
            count += members.len();
        }
        if count != self.index.len() {
            return Err("fleet view: index names a peer in no room, or one is in two");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, instance: &str) -> RemoteMember {
        RemoteMember {
            id: id.to_owned(),
            name: None,
            instance: instance.to_owned(),
        }
    }

    #[test]
    fn members_are_added_once_and_the_last_removal_drops_the_room() {
        let mut view = FleetView::default();
        assert!(view.add("r", member("a", "i1")));
        assert!(!view.add("s", member("a", "i1")), "one room per peer");
        assert!(view.add("r", member("b", "i2")));
        assert!(view.add("r", member("c", "i1")));
        assert_eq!(view.instances("r"), ["i1", "i2"]);
        assert!(!view.remove("s", "a"), "not in that room");
        assert!(view.remove("r", "a") && view.remove("r", "b") && view.remove("r", "c"));
        assert_eq!((view.len(), view.rooms().count()), (0, 0));
        assert_eq!(view.check(), Ok(()));
    }

    #[test]
    fn a_room_holds_at_most_its_bound_and_drop_room_forgets_everyone() {
        let mut view = FleetView::default();
        for i in 0..MAX_REMOTE_PER_ROOM + 5 {
            view.add("r", member(&format!("p{i}"), "i"));
        }
        assert_eq!(view.members("r").len(), MAX_REMOTE_PER_ROOM);
        assert_eq!(view.check(), Ok(()));
        view.drop_room("r");
        assert_eq!(view.len(), 0);
        assert_eq!(view.check(), Ok(()));
    }
}

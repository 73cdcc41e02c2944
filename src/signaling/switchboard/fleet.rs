//! Rooms that span a fleet (`[fleet]`, `docs/signaling.md`, "Rooms across
//! a fleet"): a third `impl Switchboard`, still sans-IO. The fleet's rooms
//! channel (`crate::fleet`, Redis) feeds in what other instances did
//! (`handle_remote_join`, `handle_remote_leave`, `handle_remote_signal`,
//! `handle_remote_members`) and the answers to the joins it was asked to
//! write (`handle_fleet_joined`); it drains what this instance must tell
//! the fleet with `poll_fleet` after every call.
//!
//! With the fleet up, a `join` is *pending* until the driver has written
//! the membership and read who is in the room fleet-wide (atomically in
//! Redis, so the room size holds across instances): `joined` then lists
//! the remote peers too, and the newcomer makes the offers as in v1. With
//! the fleet down (Redis unreachable) joins are local at once, as without
//! a fleet, and remote members already known stay (their media flows
//! peer to peer; only their signals wait for Redis to come back).
//!
//! Bounds: at most one pending join per session; at most
//! [`MAX_FLEET_EVENTS`] events queued for the driver (a signal beyond is
//! dropped and counted, a join beyond is done locally); remote members per
//! room as `FleetView` bounds them. A signal from the fleet for a peer that
//! is not in the named room here, or from one not known in it, is dropped
//! and counted.
//!
//! Invariants (in [`Switchboard::check`]): those of `FleetView`; a room
//! of the view has a local member; no remote id is a local session; a
//! pending join belongs to a session in no room.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use serde_json::value::RawValue;

use super::fleet_view::{FleetView, RemoteMember};
use super::fleet_wire::WireMessage;
use super::{Mint, Switchboard};
use crate::signaling::protocol::{ErrorCode, PeerInfo, ServerMessage};

/// Most events queued for the fleet driver.
pub const MAX_FLEET_EVENTS: usize = 4096;

/// What the switchboard asks of the fleet driver.
#[derive(Debug, Clone, PartialEq)]
pub enum FleetEvent {
    /// Write `peer`'s membership of `room` unless the room is full
    /// fleet-wide, read the members before it, tell their instances, and
    /// answer with [`Switchboard::handle_fleet_joined`].
    Join {
        room: String,
        peer: String,
        name: Option<String>,
    },
    /// Remove `peer`'s membership of `room` and tell `instances`.
    Leave {
        room: String,
        peer: String,
        instances: Vec<String>,
    },
    /// Publish `message` to `instance`.
    Publish { instance: String, message: WireMessage },
}

/// The driver's answer to a [`FleetEvent::Join`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetJoin {
    /// Written; these were in the room before, fleet-wide, in the order
    /// they joined (Redis's), this instance's own peers among them.
    Members(Vec<Listed>),
    /// The room holds `room_size` peers fleet-wide; nothing written.
    Full,
    /// Redis could not be asked: join locally.
    Unavailable,
}

/// A member of a room as Redis lists it, in the fleet-wide join order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listed {
    /// A peer whose record names this instance: only its place in the
    /// order is taken, for the local peer of that id (a record of a peer
    /// no longer here, or of an earlier run under the same instance id,
    /// is ignored).
    Here(String),
    /// A peer of another instance.
    There(RemoteMember),
}

impl From<RemoteMember> for Listed {
    fn from(member: RemoteMember) -> Listed {
        Listed::There(member)
    }
}

/// A join waiting for the fleet driver.
#[derive(Debug)]
pub(super) struct PendingJoin {
    pub(super) room: String,
    pub(super) name: Option<String>,
    pub(super) resume: bool,
    pub(super) ice_refresh: bool,
}

/// The fleet state of a switchboard that has one.
#[derive(Debug, Default)]
pub(super) struct Fleet {
    /// Whether the driver reaches Redis now.
    pub(super) up: bool,
    pub(super) view: FleetView,
    /// Peer id → its join in flight.
    pub(super) pending: HashMap<String, PendingJoin>,
    pub(super) events: VecDeque<FleetEvent>,
}

impl Switchboard {
    /// Turns on rooms across a fleet (down until [`Self::set_fleet_up`]).
    pub fn with_fleet(mut self) -> Switchboard {
        self.fleet = Some(Fleet::default());
        self
    }

    /// The driver reaches Redis (`true`) or lost it.
    pub fn set_fleet_up(&mut self, up: bool) {
        if let Some(fleet) = &mut self.fleet {
            fleet.up = up;
        }
    }

    /// The next thing to tell the fleet; drain after every call.
    #[must_use]
    pub fn poll_fleet(&mut self) -> Option<FleetEvent> {
        self.fleet.as_mut()?.events.pop_front()
    }

    /// True if [`Self::poll_fleet`] has something.
    pub fn has_fleet_events(&self) -> bool {
        self.fleet.as_ref().is_some_and(|f| !f.events.is_empty())
    }

    /// Every local peer in a room, as (room, peer, name): what this
    /// instance publishes to the fleet.
    pub fn local_members(&self) -> Vec<(String, String, Option<String>)> {
        let mut out = Vec::new();
        for (room, members) in self.rooms.iter() {
            for m in members {
                out.push((room.to_owned(), m.id.clone(), m.name.clone()));
            }
        }
        out
    }

    /// Remote peers known now.
    pub fn remote_count(&self) -> usize {
        self.fleet.as_ref().map_or(0, |f| f.view.len())
    }

    /// The driver's answer to the join of `peer`. False if that join is no
    /// longer wanted (the session left, went away or could not be let in
    /// after all): the driver then removes the membership it wrote.
    pub fn handle_fleet_joined(&mut self, peer: &str, outcome: FleetJoin, now: Instant, mint: &mut impl Mint) -> bool {
        let Some(join) = self.fleet.as_mut().and_then(|f| f.pending.remove(peer)) else {
            return false;
        };
        if self.sessions.get(peer).is_none_or(|s| s.evicted) {
            return false;
        }
        let members = match outcome {
            FleetJoin::Full => {
                self.reply_error(peer, ErrorCode::RoomFull, "the room is full");
                return false;
            }
            FleetJoin::Unavailable => Vec::new(),
            FleetJoin::Members(members) => members,
        };
        let joined = self.complete_join(peer, &join, &members, now, mint);
        self.debug_check();
        joined
    }

    /// Peer `member` of another instance joined `room`: the local members
    /// are told, if there are any.
    pub fn handle_remote_join(&mut self, room: &str, member: RemoteMember) {
        if self.rooms.members(room).is_empty() || self.sessions.contains_key(&member.id) {
            return;
        }
        let Some(fleet) = &mut self.fleet else {
            return;
        };
        let text: Arc<str> = ServerMessage::PeerJoined {
            id: &member.id,
            name: member.name.as_deref(),
        }
        .to_json()
        .into();
        if fleet.view.add(room, member) {
            self.tell_room(room, text);
        }
        self.debug_check();
    }

    /// Instance `publisher` says its peer `id` left `room`: taken only if
    /// the member known here is of that instance (as its signed record or
    /// join named it), so that no instance speaks for another's peers.
    pub fn handle_published_leave(&mut self, room: &str, id: &str, publisher: &str) {
        let known = self.fleet.as_ref().and_then(|f| f.view.member(room, id));
        if known.is_some_and(|m| m.instance == publisher) {
            self.handle_remote_leave(room, id);
        }
    }

    /// Remote peer `id` left `room`.
    pub fn handle_remote_leave(&mut self, room: &str, id: &str) {
        let Some(fleet) = &mut self.fleet else {
            return;
        };
        if fleet.view.remove(room, id) {
            self.tell_room(room, ServerMessage::PeerLeft { id }.to_json().into());
        }
        self.debug_check();
    }

    /// Remote peer `from` of `room` signals local peer `to`, in a message
    /// instance `publisher` published: delivered only if `from` is known
    /// in `room` as a peer of `publisher` (its signed record or join named
    /// that instance), so that no one answers as a peer of another.
    pub fn handle_remote_signal(&mut self, room: &str, from: &str, to: &str, data: &RawValue, publisher: &str) {
        let known = self
            .fleet
            .as_ref()
            .and_then(|f| f.view.member(room, from))
            .is_some_and(|m| m.instance == publisher);
        if !known || self.rooms.room_of(to) != Some(room) {
            self.counters.fleet_dropped += 1;
            return;
        }
        let text = ServerMessage::Signal { from, data }.to_json();
        self.deliver(to, text.into());
    }

    /// Who is in `room` fleet-wide, as read from Redis. Members not known
    /// here are announced; with `remove_missing`, known remote members
    /// that are not in `members` have left (their membership lapsed).
    pub fn handle_remote_members(&mut self, room: &str, members: Vec<RemoteMember>, remove_missing: bool) {
        if self.rooms.members(room).is_empty() || self.fleet.is_none() {
            return;
        }
        if remove_missing {
            let gone: Vec<String> = self
                .fleet
                .as_ref()
                .map(|f| f.view.members(room))
                .unwrap_or_default()
                .iter()
                .filter(|known| !members.iter().any(|m| m.id == known.id))
                .map(|m| m.id.clone())
                .collect();
            for id in gone {
                self.handle_remote_leave(room, &id);
            }
        }
        for member in members {
            if self
                .fleet
                .as_ref()
                .is_some_and(|f| f.view.room_of(&member.id).is_none())
            {
                self.handle_remote_join(room, member);
            }
        }
    }

    /// True if the join goes through the fleet: it is then pending.
    pub(super) fn fleet_join(&mut self, peer: &str, join: PendingJoin) -> Result<(), PendingJoin> {
        let Some(fleet) = self
            .fleet
            .as_mut()
            .filter(|f| f.up && f.events.len() < MAX_FLEET_EVENTS)
        else {
            return Err(join);
        };
        fleet.events.push_back(FleetEvent::Join {
            room: join.room.clone(),
            peer: peer.to_owned(),
            name: join.name.clone(),
        });
        fleet.pending.insert(peer.to_owned(), join);
        Ok(())
    }

    /// True if `peer` has a join in flight.
    pub(super) fn join_pending(&self, peer: &str) -> bool {
        self.fleet.as_ref().is_some_and(|f| f.pending.contains_key(peer))
    }

    /// Forgets the join in flight of `peer`; true if there was one.
    pub(super) fn cancel_pending_join(&mut self, peer: &str) -> bool {
        self.fleet.as_mut().is_some_and(|f| f.pending.remove(peer).is_some())
    }

    /// `to` is a remote member of `room`: its signal goes to its instance.
    /// False if it is not one.
    pub(super) fn fleet_signal(&mut self, room: &str, from: &str, to: &str, data: &RawValue) -> bool {
        let Some(fleet) = &mut self.fleet else {
            return false;
        };
        let Some(member) = fleet.view.member(room, to) else {
            return false;
        };
        if fleet.events.len() >= MAX_FLEET_EVENTS {
            self.counters.fleet_dropped += 1;
            return true;
        }
        let instance = member.instance.clone();
        fleet.events.push_back(FleetEvent::Publish {
            instance,
            message: WireMessage::Signal {
                room: room.to_owned(),
                from: from.to_owned(),
                to: to.to_owned(),
                data: data.to_owned(),
            },
        });
        true
    }

    /// Local peer `peer` left `room`, leaving `others` there: the fleet is
    /// told, and forgotten for the room if no local peer is left.
    pub(super) fn fleet_leave(&mut self, room: &str, peer: &str, others_here: bool) {
        let Some(fleet) = &mut self.fleet else {
            return;
        };
        let instances = fleet.view.instances(room);
        if !others_here {
            fleet.view.drop_room(room);
        }
        // Leaves are never dropped: each follows a join, so they are
        // bounded by the joins, and a dropped one would leave a ghost
        // until its membership lapses.
        fleet.events.push_back(FleetEvent::Leave {
            room: room.to_owned(),
            peer: peer.to_owned(),
            instances,
        });
    }

    /// The peers `joined` lists for a join of `room` by `peer` whose fleet
    /// members (before it, in join order) are `members`, once `local` (the
    /// local peers before it) are in: local and remote peers together in
    /// the fleet's join order, then local peers and remote ones known here
    /// that Redis did not list (joined during an outage).
    pub(super) fn fleet_peer_list(
        &mut self,
        room: &str,
        peer: &str,
        members: &[Listed],
        local: &[PeerInfo],
    ) -> Vec<PeerInfo> {
        let mut listed: Vec<PeerInfo> = Vec::new();
        let mut view = self.fleet.as_mut().map(|f| &mut f.view);
        for listed_member in members {
            let (id, remote) = match listed_member {
                Listed::Here(id) => (id, None),
                Listed::There(m) => (&m.id, Some(m)),
            };
            if id == peer || listed.iter().any(|p| p.id == *id) {
                continue;
            }
            if let Some(p) = local.iter().find(|p| p.id == *id) {
                listed.push(p.clone());
                continue;
            }
            // A local session elsewhere is no remote member (ids are ours).
            let (Some(m), Some(view)) = (remote, view.as_deref_mut().filter(|_| !self.sessions.contains_key(id)))
            else {
                continue;
            };
            if view.room_of(id).is_none() {
                view.add(room, m.clone());
            }
            if view.room_of(id) == Some(room) {
                listed.push(m.info());
            }
        }
        for p in local {
            if !listed.iter().any(|l| l.id == p.id) {
                listed.push(p.clone());
            }
        }
        for m in view.map_or(&[][..], |v| v.members(room)) {
            if !listed.iter().any(|l| l.id == m.id) {
                listed.push(m.info());
            }
        }
        listed
    }

    /// How many of `members` are remote peers not known here yet.
    pub(super) fn fleet_new_members(&self, members: &[Listed]) -> usize {
        let known = |id: &str| self.fleet.as_ref().is_some_and(|f| f.view.room_of(id).is_some());
        members
            .iter()
            .filter(|m| matches!(m, Listed::There(m) if !self.sessions.contains_key(&m.id) && !known(&m.id)))
            .count()
    }

    /// Remote members of `room` known here.
    pub(super) fn remote_in_room(&self, room: &str) -> usize {
        self.fleet.as_ref().map_or(0, |f| f.view.members(room).len())
    }

    /// Queues `text` for every local member of `room`.
    fn tell_room(&mut self, room: &str, text: Arc<str>) {
        let ids: Vec<String> = self.rooms.members(room).iter().map(|p| p.id.clone()).collect();
        let mut evict = Vec::new();
        for id in ids {
            self.push(&id, text.clone(), &mut evict);
        }
        self.evict_all(evict);
    }

    /// The fleet invariants of the module doc.
    pub(super) fn check_fleet(&self) -> Result<(), &'static str> {
        let Some(fleet) = &self.fleet else {
            return Ok(());
        };
        fleet.view.check()?;
        for room in fleet.view.rooms() {
            if self.rooms.members(room).is_empty() {
                return Err("fleet view: a room without local members is kept");
            }
            if fleet
                .view
                .members(room)
                .iter()
                .any(|m| self.sessions.contains_key(&m.id))
            {
                return Err("fleet view: a remote id is a local session");
            }
        }
        for peer in fleet.pending.keys() {
            if !self.sessions.contains_key(peer) || self.rooms.room_of(peer).is_some() {
                return Err("a pending join belongs to no session or to one in a room");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::{limits, Board};
    use super::super::{IceOnly, Limits};
    use super::*;

    fn remote(id: &str, instance: &str) -> RemoteMember {
        RemoteMember {
            id: id.to_owned(),
            name: Some(id.to_uppercase()),
            instance: instance.to_owned(),
        }
    }

    /// The driver's answer listing `members`, all of other instances.
    fn there(members: Vec<RemoteMember>) -> FleetJoin {
        FleetJoin::Members(members.into_iter().map(Listed::from).collect())
    }

    fn here(id: &str) -> Listed {
        Listed::Here(id.to_owned())
    }

    fn fleet_board() -> Board {
        let mut b = Board::new(limits());
        b.board = Switchboard::new(limits()).with_fleet();
        b.board.set_fleet_up(true);
        b
    }

    fn events(b: &mut Board) -> Vec<FleetEvent> {
        std::iter::from_fn(|| b.board.poll_fleet()).collect()
    }

    fn answer(b: &mut Board, peer: &str, outcome: FleetJoin) -> bool {
        let joined = b
            .board
            .handle_fleet_joined(peer, outcome, b.now, &mut IceOnly(Some(|_: &str| Vec::new())));
        assert_eq!(b.board.check(), Ok(()));
        joined
    }

    /// A fleet board where `a` joined `r` with `members` there before.
    fn joined_with(members: Vec<RemoteMember>) -> Board {
        let mut b = fleet_board();
        b.connect("a", None);
        b.join("a", "r");
        assert!(answer(&mut b, "a", there(members)));
        events(&mut b);
        b
    }

    fn data(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    #[test]
    fn a_join_waits_for_the_fleet_lists_remote_peers_and_signals_go_to_their_instance() {
        let mut b = fleet_board();
        b.connect("a", None);
        b.join("a", "r");
        assert!(b.read("a").is_empty(), "no joined before the fleet answers");
        let join = FleetEvent::Join {
            room: "r".into(),
            peer: "a".into(),
            name: None,
        };
        assert_eq!(events(&mut b), [join]);
        b.send("a", r#"{"type":"signal","to":"x","data":1}"#);
        assert_eq!(b.read("a")[0]["code"], "not-in-room", "pending is not in a room");
        assert!(answer(&mut b, "a", there(vec![remote("x", "i2"), remote("y", "i3")])));
        let joined = b.read("a");
        assert_eq!(
            joined[0]["peers"],
            json!([{"id": "x", "name": "X"}, {"id": "y", "name": "Y"}])
        );
        b.send("a", r#"{"type":"signal","to":"x","data":{"sdp":"o"}}"#);
        let sent = events(&mut b);
        let [FleetEvent::Publish { instance, message }] = sent.as_slice() else {
            panic!("one publish expected: {sent:?}");
        };
        assert_eq!(instance, "i2");
        assert_eq!(
            message.encode(),
            r#"{"t":"signal","room":"r","from":"a","to":"x","data":{"sdp":"o"}}"#
        );
        b.board.handle_remote_signal("r", "y", "a", &data(r#"{"c":1}"#), "i3");
        assert_eq!(b.read("a"), [json!({"type": "signal", "from": "y", "data": {"c": 1}})]);
        b.board.handle_remote_signal("r", "z", "a", &data("1"), "i3");
        b.board.handle_remote_signal("other", "y", "a", &data("1"), "i3");
        b.board.handle_remote_signal("r", "y", "a", &data("1"), "i2");
        assert!(
            b.read("a").is_empty(),
            "signals from unknown peers or rooms, or published by another instance than the peer's, are dropped"
        );
        assert_eq!(b.board.counters().fleet_dropped, 3);
        b.board.handle_published_leave("r", "x", "i3");
        assert!(b.read("a").is_empty(), "i3 does not speak for a peer of i2");
        b.board.handle_published_leave("r", "x", "i2");
        assert_eq!(b.read("a"), [json!({"type": "peer-left", "id": "x"})]);
        b.send("a", r#"{"type":"leave"}"#);
        let leave = FleetEvent::Leave {
            room: "r".into(),
            peer: "a".into(),
            instances: vec!["i3".into()],
        };
        assert_eq!(events(&mut b), [leave]);
        assert_eq!(b.board.remote_count(), 0, "a room without local peers is forgotten");
    }

    /// `joined` lists local and remote peers together in the fleet's join
    /// order, as Redis answered it; a record of this instance for a peer
    /// that is not here is ignored, and peers Redis did not list (joined
    /// during an outage) come last.
    #[test]
    fn joined_lists_local_and_remote_peers_in_the_fleets_join_order() {
        let mut b = fleet_board();
        b.board = Switchboard::new(Limits {
            room_size: 6,
            ..limits()
        })
        .with_fleet();
        b.board.set_fleet_up(true);
        b.connect("a1", None);
        b.join("a1", "r");
        assert!(answer(&mut b, "a1", FleetJoin::Members(Vec::new())));
        b.read("a1");
        b.connect("a2", None);
        b.join("a2", "r");
        let b1 = Listed::There(remote("b1", "i2"));
        let order = vec![here("gone"), here("a1"), b1.clone(), here("a2")];
        assert!(answer(&mut b, "a2", FleetJoin::Members(order)));
        assert_eq!(
            b.read("a2")[0]["peers"],
            json!([{"id": "a1"}, {"id": "b1", "name": "B1"}]),
            "joins a1 (here), b1 (there), a2: a2 lists a1 then b1"
        );
        assert_eq!(
            b.board.remote_count(),
            1,
            "a stale record of this instance is no remote peer"
        );
        // b2 there joined before a3 here; c1 joined during an outage (known
        // here, not in Redis); a2's record was lost (not listed): it comes
        // after the fleet's order.
        b.board.handle_remote_join("r", remote("c1", "i3"));
        b.connect("a3", None);
        b.join("a3", "r");
        let order = vec![here("a1"), b1, Listed::There(remote("b2", "i2"))];
        assert!(answer(&mut b, "a3", FleetJoin::Members(order)));
        let ids: Vec<String> = b.read("a3")[0]["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids, ["a1", "b1", "b2", "a2", "c1"]);
        assert_eq!(b.board.check(), Ok(()));
    }

    #[test]
    fn remote_joins_are_announced_and_lapsed_members_leave_once_absence_is_trusted() {
        let mut b = fleet_board();
        b.board.set_fleet_up(false);
        b.connect("a", None);
        b.join("a", "r");
        assert_eq!(b.read("a")[0]["type"], "joined", "with the fleet down, a join is local");
        assert!(events(&mut b).is_empty());
        b.board.set_fleet_up(true);
        b.board.handle_remote_join("r", remote("x", "i2"));
        b.board.handle_remote_join("r", remote("x", "i2"));
        assert_eq!(b.read("a"), [json!({"type": "peer-joined", "id": "x", "name": "X"})]);
        b.board.handle_remote_join("elsewhere", remote("q", "i2"));
        assert_eq!(b.board.remote_count(), 1, "no local peer there: ignored");
        b.board.handle_remote_members("r", Vec::new(), false);
        assert!(b.read("a").is_empty(), "absence not trusted yet");
        b.board.handle_remote_members("r", vec![remote("y", "i3")], true);
        let got = b.read("a");
        assert_eq!(
            got,
            [
                json!({"type": "peer-left", "id": "x"}),
                json!({"type": "peer-joined", "id": "y", "name": "Y"})
            ]
        );
        assert_eq!(b.board.check(), Ok(()));
    }

    #[test]
    fn room_size_holds_with_remote_members_and_a_join_given_up_is_reported_unwanted() {
        let mut b = fleet_board();
        b.connect("a", None);
        b.join("a", "r");
        assert!(!answer(&mut b, "a", FleetJoin::Full));
        assert_eq!(b.read("a")[0]["code"], "room-full");
        b.join("a", "r");
        b.send("a", r#"{"type":"leave"}"#);
        assert!(b.read("a").is_empty(), "leaving a pending join is no error");
        assert!(!answer(&mut b, "a", FleetJoin::Members(Vec::new())));
        // room_size is 3: three remote members fill the room.
        b.join("a", "r");
        let three = vec![remote("x", "i2"), remote("y", "i2"), remote("z", "i3")];
        assert!(!answer(&mut b, "a", there(three)));
        assert_eq!(b.read("a")[0]["code"], "room-full");
        b.join("a", "r");
        assert!(answer(&mut b, "a", FleetJoin::Unavailable));
        assert_eq!(b.read("a")[0]["peers"], json!([]));
        b.connect("b", None);
        b.join("b", "r");
        b.board.disconnect("b");
        assert!(
            !answer(&mut b, "b", FleetJoin::Members(Vec::new())),
            "b went away meanwhile"
        );
        assert_eq!(b.board.check(), Ok(()));
    }

    #[test]
    fn signals_to_other_instances_beyond_the_queue_bound_are_dropped_and_counted() {
        let mut b = joined_with(vec![remote("x", "i2")]);
        for _ in 0..MAX_FLEET_EVENTS + 3 {
            b.board
                .handle_text("a", r#"{"type":"signal","to":"x","data":0}"#, b.now, |_| Vec::new());
            b.now += std::time::Duration::from_millis(1);
        }
        assert_eq!(events(&mut b).len(), MAX_FLEET_EVENTS);
        assert_eq!(b.board.counters().fleet_dropped, 3);
    }
}

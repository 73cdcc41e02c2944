//! Joining, signalling and leaving a room: a fourth `impl Switchboard`
//! over the same fields (see the parent module for the invariants these
//! keep). A join is checked against the room grant, the room size and
//! the per-source share of rooms before the session is moved; with a
//! fleet the join may wait for Redis (`super::fleet`) and completes in
//! [`Switchboard::complete_join`]. Leaving tells the room at once; a
//! message that overflows a peer's outbox evicts that peer in the same
//! call.

use std::sync::Arc;
use std::time::Instant;

use serde_json::value::RawValue;

use super::fleet::{Listed, PendingJoin};
use super::resume::Resume;
use super::rooms::JoinRefused;
use super::{Mint, Switchboard};
use crate::signaling::protocol::{ErrorCode, PeerInfo, ResumeGrant, ServerMessage};

impl Switchboard {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn join(
        &mut self,
        id: &str,
        room: &str,
        name: Option<String>,
        resume: bool,
        ice_refresh: bool,
        now: Instant,
        mint: &mut impl Mint,
    ) {
        let Some(session) = self.sessions.get(id) else {
            return;
        };
        if session.room_grant.as_deref().is_some_and(|granted| granted != room) {
            return self.reply_error(id, ErrorCode::Unauthorized, "this token is for another room");
        }
        if self.rooms.room_of(id).is_some() || self.join_pending(id) {
            return self.reply_error(id, ErrorCode::BadMessage, "already in a room; send leave first");
        }
        let join = PendingJoin {
            room: room.to_owned(),
            name,
            resume,
            ice_refresh,
        };
        // With a fleet, the join waits for Redis; without (or with Redis
        // down) it is done here and now.
        if let Err(join) = self.fleet_join(id, join) {
            self.complete_join(id, &join, &[], now, mint);
        }
        self.debug_check();
    }

    /// Puts `id` into the room of `join`, whose fleet-wide members before
    /// it are `members` (in join order, none without a fleet), and answers `joined`;
    /// false (with the error answered) if it could not be let in.
    pub(super) fn complete_join(
        &mut self,
        id: &str,
        join: &PendingJoin,
        members: &[Listed],
        now: Instant,
        mint: &mut impl Mint,
    ) -> bool {
        let Some(session) = self.sessions.get(id) else {
            return false;
        };
        let room = join.room.as_str();
        let source = session.source;
        let host = session.host.clone();
        let me = PeerInfo {
            id: id.to_owned(),
            name: join.name.clone(),
        };
        // Room size counts remote members too (Redis checked it too, but
        // a join during an outage sees only what is known here).
        let remote = self.remote_in_room(room) + self.fleet_new_members(members);
        if self.rooms.members(room).len() + remote >= self.limits.room_size {
            self.reply_error(id, ErrorCode::RoomFull, "the room is full");
            return false;
        }
        let local = match self.rooms.join(me.clone(), source, room) {
            Ok(peers) => peers,
            Err(refused) => {
                let message = match refused {
                    JoinRefused::RoomFull => "the room is full".to_owned(),
                    JoinRefused::TooManyRooms => "no room can be opened: the server is at its room limit".to_owned(),
                    JoinRefused::SourceRooms => format!(
                        "no room can be opened: {} rooms opened from this address are still open",
                        self.rooms.opened_by(source)
                    ),
                    JoinRefused::AlreadyInRoom => {
                        self.reply_error(id, ErrorCode::BadMessage, "already in a room; send leave first");
                        return false;
                    }
                };
                self.reply_error(id, ErrorCode::RoomFull, &message);
                return false;
            }
        };
        let peers = self.fleet_peer_list(room, id, members, &local);
        let joined: Arc<str> = ServerMessage::PeerJoined {
            id,
            name: me.name.as_deref(),
        }
        .to_json()
        .into();
        let mut evict = Vec::new();
        for peer in &local {
            self.push(&peer.id, joined.clone(), &mut evict);
        }
        let (ice_servers, ttl) = mint.ice_servers(host.as_deref(), id);
        let token = match join.resume && !self.resume_grace.is_zero() {
            true => mint.resume_token(),
            false => None,
        };
        let grace = self.resume_grace.as_secs();
        let answer = ServerMessage::Joined {
            room,
            id,
            peers: &peers,
            ice_servers: &ice_servers,
            resume: token.as_deref().map(|token| ResumeGrant { token, grace }),
        }
        .to_json();
        self.push(id, answer.into(), &mut evict);
        // Numbering starts after `joined`, which the client counts from.
        if let (Some(token), Some(session)) = (token, self.sessions.get_mut(id)) {
            if !session.evicted {
                self.tokens.insert(token.clone(), id.to_owned());
                session.resume = Some(Resume::new(token));
            }
        }
        if join.ice_refresh {
            self.schedule_refresh(id, now, ttl);
        }
        self.evict_all(evict);
        true
    }

    pub(super) fn signal(&mut self, id: &str, to: &str, data: &RawValue) {
        let Some(room) = self.rooms.room_of(id).map(str::to_owned) else {
            return self.reply_error(id, ErrorCode::NotInRoom, "join a room before signaling");
        };
        if to != id && self.fleet_signal(&room, id, to, data) {
            return;
        }
        if to == id || !self.rooms.same_room(id, to) {
            return self.reply_error(id, ErrorCode::UnknownPeer, "no such peer in this room");
        }
        let message = ServerMessage::Signal { from: id, data }.to_json();
        self.deliver(to, message.into());
    }

    /// Takes `id` out of its room and tells the others; false if it was in
    /// none. Ends its resume and refresh: a leave is final.
    pub(super) fn leave(&mut self, id: &str) -> bool {
        let mut evict = Vec::new();
        let cancelled = self.cancel_pending_join(id);
        let left = self.announce_leave(id, &mut evict) || cancelled;
        self.forget_extras(id);
        self.evict_all(evict);
        left
    }

    /// Session `id` ends: out of its room (the others told), its timers and
    /// token dropped, forgotten. Its connection, if any, stays linked until
    /// its driver disconnects (then nothing is left to do).
    pub(super) fn end_session(&mut self, id: &str) {
        self.leave(id);
        if let Some(session) = self.sessions.remove(id) {
            if let Some(until) = session.grace_until {
                self.end_grace(until, id);
            }
            if let Some(conn) = session.conn {
                // Still driven: its driver sees `Gone` and disconnects.
                self.links.remove(&conn);
                self.woken.push(conn);
            }
        }
    }

    pub(super) fn announce_leave(&mut self, id: &str, evict: &mut Vec<String>) -> bool {
        let Some(room) = self.rooms.room_of(id).map(str::to_owned) else {
            return false;
        };
        let left: Arc<str> = ServerMessage::PeerLeft { id }.to_json().into();
        let others = self.rooms.leave(id);
        for other in &others {
            self.push(other, left.clone(), evict);
        }
        self.fleet_leave(&room, id, !others.is_empty());
        true
    }
}

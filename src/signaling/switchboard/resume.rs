//! Resume (v1.1, `docs/signaling.md`) and the timers of the
//! [`Switchboard`]: the per-session resume state (token, sequence numbers,
//! history), the `resume` and `ack` requests, the grace periods of
//! detached sessions and the credential refreshes.
//!
//! Resume is only for a join that asked for it, and only with a non-zero
//! grace: every message queued after `joined` gets the next sequence
//! number (the client counts what it reads, so numbers are not on the
//! wire); written messages stay in a [`History`] until the client acks
//! them. When the socket ends without a `leave`, the session stays in its
//! room, *detached*, for the grace period: the room sees no `peer-left`,
//! and what is addressed to it is queued. A `resume` with the token and
//! the count the client read puts the unread history and the queue, in
//! order, behind a `resumed`, and issues a new token (the old one is spent).
//! A grace period that runs out is a leave. A resume on a session whose
//! socket still looks alive takes it over: the old connection is told
//! `Gone`.
//!
//! A resume must come with the Origin header the session's own WebSocket
//! came with (none if it had none; compared as the HTTP door compares
//! `allowed_origins`, ASCII case aside): the driver passes it in at
//! connect ([`super::Handshake`]); any other is `resume-failed` and leaves
//! the session as it was.
//!
//! Bounds: a detached session keeps the place its connection held in the
//! HTTP side's connection table (`signaling.max_connections` and
//! `max_connections_per_source`) until it is resumed or its grace ends:
//! [`Switchboard::disconnect_at`] says it was kept, and
//! [`Switchboard::poll_released`] names it when it is no longer detached,
//! so the driver gives that place back then (`hub`). Detached and connected
//! sessions together are therefore at most `max_connections`, and each is
//! detached for at most `resume_grace`; at most one timer of each kind per
//! session.
//!
//! Invariants (checked by [`Switchboard::check`]): `tokens` mirrors the
//! sessions' resume tokens; `graces` holds exactly the detached sessions,
//! `refreshes` exactly the sessions with a refresh due; what waits in
//! `released` is detached no more.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tracing::debug;

use super::outbox::{cost, History, Queued};
use super::{Mint, Switchboard};
use crate::signaling::protocol::{ErrorCode, ResumeGrant, ServerMessage};

/// The resume state of a session that was granted it.
#[derive(Debug)]
pub(super) struct Resume {
    pub(super) token: String,
    /// Number of the next numbered message (the first is 1).
    pub(super) next_seq: u64,
    /// Written, not yet acked.
    pub(super) history: History,
    /// Client frames read after `joined`.
    pub(super) received: u64,
}

impl Resume {
    pub(super) fn new(token: String) -> Resume {
        Resume {
            token,
            next_seq: 1,
            history: History::default(),
            received: 0,
        }
    }

    /// The number of the message queued now.
    pub(super) fn number(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq - 1
    }
}

impl Switchboard {
    /// The earliest time [`Self::handle_timeout`] has work.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let grace = self.graces.first().map(|(t, _)| *t);
        let refresh = self.refreshes.first().map(|(t, _)| *t);
        match (grace, refresh) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Ends the grace periods that ran out by `now` (their rooms are told
    /// `peer-left`) and queues fresh `iceServers` that are due.
    pub fn handle_timeout(&mut self, now: Instant, mint: &mut impl Mint) {
        while let Some((until, peer)) = self.graces.first().cloned() {
            if until > now {
                break;
            }
            self.end_grace(until, &peer);
            if let Some(session) = self.sessions.get_mut(&peer) {
                session.grace_until = None;
            }
            debug!(peer = %peer, "signaling resume grace ran out");
            self.counters.grace_expiries += 1;
            self.end_session(&peer);
        }
        while let Some((due, peer)) = self.refreshes.first().cloned() {
            if due > now {
                break;
            }
            self.refreshes.remove(&(due, peer.clone()));
            let Some(session) = self.sessions.get_mut(&peer) else {
                continue;
            };
            session.refresh_at = None;
            let host = session.host.clone();
            let (ice_servers, ttl) = mint.ice_servers(host.as_deref(), &peer);
            let text = ServerMessage::IceServers {
                ice_servers: &ice_servers,
            }
            .to_json();
            self.schedule_refresh(&peer, now, ttl);
            self.deliver(&peer, text.into());
        }
        self.debug_check();
    }

    /// Fresh `iceServers` for `id` when three quarters of `ttl` have passed
    /// from `now` (none for a zero `ttl`).
    pub(super) fn schedule_refresh(&mut self, id: &str, now: Instant, ttl: Duration) {
        let Some(session) = self.sessions.get_mut(id).filter(|s| !s.evicted) else {
            return;
        };
        if let Some(old) = session.refresh_at.take() {
            self.refreshes.remove(&(old, id.to_owned()));
        }
        if ttl.is_zero() {
            return;
        }
        let due = now + ttl.mul_f64(0.75);
        session.refresh_at = Some(due);
        self.refreshes.insert((due, id.to_owned()));
    }

    /// Connection `conn` (whose own session is `current`) takes over the
    /// session `token` names, if its messages after the client's `last`
    /// can all be replayed.
    pub(super) fn resume(&mut self, conn: &str, current: &str, token: &str, last: u64, mint: &mut impl Mint) {
        let failed = |board: &mut Switchboard, message: &str| {
            board.reply_error(current, ErrorCode::ResumeFailed, message);
        };
        let Some(target) = self.tokens.get(token).cloned() else {
            return failed(self, "unknown or expired resume token; join again");
        };
        if target == current {
            return self.reply_error(
                current,
                ErrorCode::BadMessage,
                "this connection already holds that session",
            );
        }
        if self.rooms.room_of(current).is_some() {
            return self.reply_error(current, ErrorCode::BadMessage, "already in a room; send leave first");
        }
        // A token is bound to the Origin its session joined with: one
        // leaked to another page (or to a client sending none) is no use
        // there. Refused before anything of the session changes.
        let origin_of = |id: &str| self.sessions.get(id).map(|s| s.origin.as_deref());
        if let (Some(mine), Some(theirs)) = (origin_of(current), origin_of(&target)) {
            if !same_origin(mine, theirs) {
                debug!(peer = %target, "signaling resume refused: another origin");
                return failed(self, "that session joined from another origin; join again");
            }
        }
        let Some(session) = self.sessions.get_mut(&target) else {
            return failed(self, "unknown or expired resume token; join again");
        };
        let Some(resume) = session.resume.as_mut() else {
            return failed(self, "unknown or expired resume token; join again");
        };
        // What the client read is acked; make room for `resumed` at the
        // front, forgetting history if need be.
        resume.history.ack(last);
        let Some(new_token) = mint.resume_token() else {
            return failed(self, "resume is not available here");
        };
        let Some(room) = self.rooms.room_of(&target).map(str::to_owned) else {
            return failed(self, "the session is in no room; join again");
        };
        let grant = ResumeGrant {
            token: &new_token,
            grace: self.resume_grace.as_secs(),
        };
        let resumed = ServerMessage::Resumed {
            room: &room,
            id: &target,
            resume: grant,
            received: resume.received,
        }
        .to_json();
        let budget = self.limits.max_outbox_bytes;
        resume.history.give_way(session.outbox.bytes() + cost(&resumed), budget);
        let fits = session.outbox.bytes() + resume.history.bytes() + cost(&resumed) <= budget;
        if last < resume.history.forgotten() || last >= resume.next_seq || !fits {
            // The session cannot be made whole: end it, so the client's
            // fresh join is not a second copy of it in the room.
            self.end_session(&target);
            return failed(self, "messages of that session can no longer be replayed; join again");
        }
        // Success: the history goes back in front of the queue, behind
        // `resumed`.
        let old_token = std::mem::replace(&mut resume.token, new_token.clone());
        let mut replay: VecDeque<Queued> = resume.history.take();
        replay.push_front(Queued {
            seq: 0,
            text: resumed.into(),
        });
        let replayed = replay.len() - 1;
        session.outbox.prepend(replay);
        let grace = session.grace_until.take();
        let old_conn = session.conn.replace(conn.to_owned());
        if let Some(until) = grace {
            self.end_grace(until, &target);
        }
        self.tokens.remove(&old_token);
        self.tokens.insert(new_token, target.clone());
        // The connection's own fresh session is dropped: it was in no room.
        self.sessions.remove(current);
        self.links.insert(conn.to_owned(), target.clone());
        if let Some(old) = old_conn {
            self.links.remove(&old);
            self.replaced.insert(old.clone());
            self.woken.push(old);
        }
        self.woken.push(conn.to_owned());
        self.counters.resumes += 1;
        debug!(peer = %target, replayed, "signaling session resumed");
        self.debug_check();
    }

    pub(super) fn ack(&mut self, id: &str, seq: u64) {
        let Some(resume) = self.sessions.get_mut(id).and_then(|s| s.resume.as_mut()) else {
            return self.reply_error(id, ErrorCode::BadMessage, "ack without resume");
        };
        resume.history.ack(seq);
    }

    /// Ends detached session `id`'s grace period (that ends `until`): its
    /// timer goes, and its driver is told to give back the connection
    /// place it kept ([`Switchboard::poll_released`]). The caller clears
    /// or removes the session's `grace_until`.
    pub(super) fn end_grace(&mut self, until: Instant, id: &str) {
        if self.graces.remove(&(until, id.to_owned())) {
            self.released.push(id.to_owned());
        }
    }

    /// Drops `id`'s resume token and refresh timer.
    pub(super) fn forget_extras(&mut self, id: &str) {
        let Some(session) = self.sessions.get_mut(id) else {
            return;
        };
        if let Some(resume) = session.resume.take() {
            self.tokens.remove(&resume.token);
        }
        if let Some(due) = session.refresh_at.take() {
            self.refreshes.remove(&(due, id.to_owned()));
        }
    }
}

/// Whether two Origin headers (or their absence) name the same origin.
fn same_origin(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
        (a, b) => a.is_none() && b.is_none(),
    }
}

//! The switchboard's invariants (the parent module's list, and those of
//! `outbox`, `resume` and `fleet`), walked in full: by tests and the fuzz
//! harness through [`Switchboard::check`], and after every input in debug
//! builds.

use super::Switchboard;

impl Switchboard {
    /// The invariants of the module docs (this one's, `outbox`'s and
    /// `resume`'s), checked in full (for tests and
    /// the fuzz harness; it walks everything).
    pub fn check(&self) -> Result<(), &'static str> {
        self.rooms.check()?;
        let mut tokens = 0;
        let mut detached = 0;
        let mut refreshing = 0;
        for (id, session) in &self.sessions {
            session.outbox.check()?;
            let history = session.resume.as_ref().map_or(0, |r| r.history.bytes());
            if let Some(resume) = &session.resume {
                resume.history.check()?;
                if self.tokens.get(&resume.token) != Some(id) {
                    return Err("a resume token is not in tokens");
                }
                tokens += 1;
            }
            if session.outbox.bytes() + history > self.limits.max_outbox_bytes {
                return Err("an outbox and its history hold more than max_outbox_bytes");
            }
            if session.evicted && (self.rooms.room_of(id).is_some() || !session.outbox.is_empty()) {
                return Err("an evicted session is in a room or holds messages");
            }
            match (&session.conn, session.grace_until) {
                (Some(conn), None) if self.links.get(conn) == Some(id) => {}
                (None, Some(until)) if self.graces.contains(&(until, id.clone())) => detached += 1,
                _ => return Err("a session is neither linked to its connection nor in grace"),
            }
            if let Some(due) = session.refresh_at {
                if !self.refreshes.contains(&(due, id.clone())) {
                    return Err("a refresh is not in refreshes");
                }
                refreshing += 1;
            }
        }
        if tokens != self.tokens.len() || detached != self.graces.len() || refreshing != self.refreshes.len() {
            return Err("tokens, graces or refreshes name a session that does not hold them");
        }
        if self.links.len() != self.sessions.len() - detached {
            return Err("links do not mirror the attached sessions");
        }
        if self.released.iter().any(|id| self.is_detached(id)) {
            return Err("a session released from its grace is still detached");
        }
        let (_, peers, _) = self.counts();
        let in_rooms = self
            .sessions
            .keys()
            .filter(|id| self.rooms.room_of(id).is_some())
            .count();
        if in_rooms != peers {
            return Err("a peer in a room has no session");
        }
        self.check_fleet()
    }

    pub(super) fn debug_check(&self) {
        if cfg!(debug_assertions) {
            let checked = self.check();
            debug_assert!(checked.is_ok(), "switchboard invariant broken: {checked:?}");
        }
    }
}

//! A session's outbox and its history, with their byte accounting (plain
//! data, no I/O). The [`super::switchboard`] owns one [`Outbox`] per
//! session and, for a session that was granted resume, one [`History`].
//!
//! Every message to a client waits in its outbox in order; once written, a
//! numbered message moves to the history, where it stays until the client
//! acks it (v1.1 resume, `docs/signaling.md`).
//!
//! Bounds: an outbox and its history together hold at most
//! `max_outbox_bytes` (the switchboard enforces it with [`History::give_way`]
//! and by evicting a session whose outbox would overflow), each message
//! costing its length plus [`MESSAGE_OVERHEAD`], so a flood of tiny
//! messages is bounded by the same budget; no separate count is needed.
//! The history gives way first: its oldest messages are forgotten, and
//! [`History::forgotten`] says up to which number (a resume that would need
//! them fails with `resume-failed`).
//!
//! Invariants ([`Outbox::check`], [`History::check`], both called by
//! `Switchboard::check`): the byte count of each equals the cost of what it
//! holds.

use std::collections::VecDeque;
use std::sync::Arc;

/// What a queued message costs beyond its text: the `Arc` header, the
/// queue slot and allocator rounding, rounded up.
pub const MESSAGE_OVERHEAD: usize = 64;

/// What `message` costs against `max_outbox_bytes`.
pub(super) fn cost(message: &str) -> usize {
    message.len().saturating_add(MESSAGE_OVERHEAD)
}

/// A queued message; `seq` 0 is unnumbered (before resume was granted, or
/// `joined`/`resumed` themselves).
#[derive(Debug, Clone)]
pub(super) struct Queued {
    pub(super) seq: u64,
    pub(super) text: Arc<str>,
}

impl Queued {
    fn cost(&self) -> usize {
        cost(&self.text)
    }
}

/// The messages waiting to be written to a session's client, in order.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    queue: VecDeque<Queued>,
    /// Cost of `queue`: its lengths plus `MESSAGE_OVERHEAD` each.
    bytes: usize,
}

impl Outbox {
    /// What the outbox holds, in bytes as counted for the limit.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Queues `message` last; the caller checked that it fits.
    pub(super) fn push_back(&mut self, message: Queued) {
        self.bytes += message.cost();
        self.queue.push_back(message);
    }

    /// The next message to write.
    pub(super) fn pop_front(&mut self) -> Option<Queued> {
        let message = self.queue.pop_front()?;
        self.bytes -= message.cost();
        Some(message)
    }

    /// Puts `messages`, in their order, in front of what is queued.
    pub(super) fn prepend(&mut self, mut messages: VecDeque<Queued>) {
        messages.append(&mut self.queue);
        self.bytes = messages.iter().map(Queued::cost).sum();
        self.queue = messages;
    }

    pub(super) fn check(&self) -> Result<(), &'static str> {
        let held: usize = self.queue.iter().map(Queued::cost).sum();
        if held != self.bytes {
            return Err("an outbox's byte count does not match what it holds");
        }
        Ok(())
    }
}

/// The numbered messages written to a session's client and not yet acked,
/// oldest first.
#[derive(Debug, Default)]
pub(super) struct History {
    /// `seq` ascending.
    messages: VecDeque<Queued>,
    /// Cost of `messages`.
    bytes: usize,
    /// Highest number forgotten before it was acked (0: none); a resume
    /// from below it cannot be replayed.
    forgotten: u64,
}

impl History {
    /// What the history holds, in bytes as counted for the limit.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// See the field.
    pub(super) fn forgotten(&self) -> u64 {
        self.forgotten
    }

    /// Keeps a written message until it is acked.
    pub(super) fn push(&mut self, message: Queued) {
        self.bytes += message.cost();
        self.messages.push_back(message);
    }

    /// Drops the messages numbered up to `seq`: the client read them.
    pub(super) fn ack(&mut self, seq: u64) {
        while self.messages.front().is_some_and(|m| m.seq <= seq) {
            if let Some(m) = self.messages.pop_front() {
                self.bytes -= m.cost();
            }
        }
    }

    /// Forgets the oldest messages, unacked, while `others` (what else
    /// the budget holds) and the history are over `budget`.
    pub(super) fn give_way(&mut self, others: usize, budget: usize) {
        while others + self.bytes > budget {
            let Some(m) = self.messages.pop_front() else {
                break;
            };
            self.bytes -= m.cost();
            self.forgotten = self.forgotten.max(m.seq);
        }
    }

    /// Empties the history, for a replay; `forgotten` stays.
    pub(super) fn take(&mut self) -> VecDeque<Queued> {
        self.bytes = 0;
        std::mem::take(&mut self.messages)
    }

    pub(super) fn check(&self) -> Result<(), &'static str> {
        let held: usize = self.messages.iter().map(Queued::cost).sum();
        if held != self.bytes {
            return Err("a history's byte count does not match what it holds");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(seq: u64, text: &str) -> Queued {
        Queued { seq, text: text.into() }
    }

    #[test]
    fn an_outbox_counts_each_message_as_its_length_plus_the_overhead() {
        let mut outbox = Outbox::default();
        outbox.push_back(numbered(1, "abc"));
        outbox.push_back(numbered(2, "de"));
        assert_eq!(outbox.bytes(), 5 + 2 * MESSAGE_OVERHEAD);
        assert_eq!(outbox.pop_front().map(|m| m.seq), Some(1));
        assert_eq!(outbox.bytes(), 2 + MESSAGE_OVERHEAD);
        outbox.prepend(VecDeque::from([numbered(0, "x")]));
        assert_eq!(outbox.pop_front().map(|m| m.seq), Some(0));
        assert_eq!(outbox.pop_front().map(|m| m.seq), Some(2));
        assert_eq!((outbox.bytes(), outbox.is_empty()), (0, true));
        assert!(outbox.check().is_ok());
    }

    #[test]
    fn a_history_forgets_its_oldest_to_fit_and_acks_free_it() {
        let mut history = History::default();
        for seq in 1..=4 {
            history.push(numbered(seq, "0123456789"));
        }
        let each = 10 + MESSAGE_OVERHEAD;
        history.give_way(each, 3 * each);
        assert_eq!((history.bytes(), history.forgotten()), (2 * each, 2));
        history.ack(3);
        assert_eq!((history.bytes(), history.forgotten()), (each, 2));
        assert_eq!(history.take().iter().map(|m| m.seq).collect::<Vec<_>>(), [4]);
        assert_eq!((history.bytes(), history.forgotten()), (0, 2));
        assert!(history.check().is_ok());
    }
}

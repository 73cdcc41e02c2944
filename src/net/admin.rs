//! The operator's questions to the shards: list the allocations, end one
//! by id, end all of a user's, revoke a username. Each shard owns its
//! allocations, so the asker (the admin API's thread, see `crate::admin`)
//! sends an [`AdminCommand`] to every shard's inbox and gathers the
//! answers; nothing here takes a lock on a shard's state.
//!
//! Bounds: each inbox holds [`INBOX`] commands, and a full one answers
//! [`AdminError::Busy`] at once (never queued behind); every answer is
//! waited for at most [`REPLY_TIMEOUT`]. A shard handles a command in one
//! synchronous call on its own event loop, with the core's effects carried
//! out afterwards as after any request (relay sockets closed, RFC 6062
//! connections ended).
//!
//! A revocation is put in the shared [`Revocations`] first and only then
//! are the user's allocations ended, so no shard can let the user make a
//! new one in between. One heard from the fleet
//! ([`AdminHandle::revoke_shared`]) goes to the set's fleet part, and asks
//! the shards to end allocations only when the username was not refused
//! already (they were ended then).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::shard::Shard;
use crate::process::clock;
use crate::proto::revocations::{Revocations, RevokeError, SharedChange};
use crate::proto::server::{AllocationId, AllocationSummary};

/// Commands waiting for one shard.
const INBOX: usize = 8;

/// The longest a shard may take to answer.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// What a shard is asked to do.
pub(super) enum AdminCommand {
    List(oneshot::Sender<Vec<AllocationSummary>>),
    End(AllocationId, oneshot::Sender<bool>),
    EndUser(String, oneshot::Sender<usize>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    #[error("a shard is busy with other admin requests; try again")]
    Busy,
    #[error("a shard did not answer within {REPLY_TIMEOUT:?}")]
    Timeout,
    #[error("a shard has stopped")]
    Stopped,
    #[error(transparent)]
    Revoke(#[from] RevokeError),
}

/// The asking side: a cheap clone for the admin API.
#[derive(Clone)]
pub struct AdminHandle {
    inboxes: Arc<Vec<mpsc::Sender<AdminCommand>>>,
    revocations: Arc<Revocations>,
}

/// One inbox per shard, and the handle that sends to them all.
pub(super) fn inboxes(
    shards: usize,
    revocations: Arc<Revocations>,
) -> (AdminHandle, Vec<mpsc::Receiver<AdminCommand>>) {
    let (senders, receivers) = (0..shards).map(|_| mpsc::channel(INBOX)).unzip();
    let handle = AdminHandle {
        inboxes: Arc::new(senders),
        revocations,
    };
    (handle, receivers)
}

impl AdminHandle {
    /// Every allocation of every shard, ordered by id.
    pub async fn allocations(&self) -> Result<Vec<AllocationSummary>, AdminError> {
        let mut all = Vec::new();
        for shard in self.ask_all(AdminCommand::List).await? {
            all.extend(shard);
        }
        Ok(all)
    }

    /// Ends allocation `id`; false if no shard holds it.
    pub async fn end_allocation(&self, id: AllocationId) -> Result<bool, AdminError> {
        // The id names its shard; one that does not run holds nothing.
        let Some(inbox) = self.inboxes.get(usize::from(id.shard.0)) else {
            return Ok(false);
        };
        ask(inbox, |reply| AdminCommand::End(id, reply)).await
    }

    /// Ends every allocation of `username` on every shard; returns how many.
    pub async fn end_user(&self, username: &str) -> Result<usize, AdminError> {
        let ended = self
            .ask_all(|reply| AdminCommand::EndUser(username.to_owned(), reply))
            .await?;
        Ok(ended.into_iter().sum())
    }

    /// Refuses `username` until `until_unix` on every shard, then ends its
    /// allocations; returns how many ended.
    pub async fn revoke(&self, username: &str, until_unix: u64) -> Result<usize, AdminError> {
        self.revocations.revoke(username, until_unix, clock::unix_secs())?;
        self.end_user(username).await
    }

    /// A revocation heard from the fleet, its bound already clamped
    /// (`proto::revocations::clamp_shared`): held in the set's fleet part,
    /// then, if the username was not refused before, its allocations ended
    /// on every shard. One held already at least as long changes nothing
    /// and asks no shard.
    pub async fn revoke_shared(&self, username: &str, until_unix: u64) -> Result<SharedChange, AdminError> {
        let change = self
            .revocations
            .revoke_shared(username, until_unix, clock::unix_secs())?;
        if change == SharedChange::Added {
            self.end_user(username).await?;
        }
        Ok(change)
    }

    /// The revoked usernames, shared by every shard.
    pub fn revocations(&self) -> &Arc<Revocations> {
        &self.revocations
    }

    async fn ask_all<T>(&self, command: impl Fn(oneshot::Sender<T>) -> AdminCommand) -> Result<Vec<T>, AdminError> {
        let mut answers = Vec::with_capacity(self.inboxes.len());
        for inbox in self.inboxes.iter() {
            answers.push(ask(inbox, &command).await?);
        }
        Ok(answers)
    }
}

async fn ask<T>(
    inbox: &mpsc::Sender<AdminCommand>,
    command: impl FnOnce(oneshot::Sender<T>) -> AdminCommand,
) -> Result<T, AdminError> {
    let (reply, answer) = oneshot::channel();
    inbox.try_send(command(reply)).map_err(|e| match e {
        mpsc::error::TrySendError::Full(_) => AdminError::Busy,
        mpsc::error::TrySendError::Closed(_) => AdminError::Stopped,
    })?;
    match tokio::time::timeout(REPLY_TIMEOUT, answer).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(_)) => Err(AdminError::Stopped),
        Err(_) => Err(AdminError::Timeout),
    }
}

/// Serves a shard's inbox on its event loop, one command at a time.
pub(super) async fn inbox_loop(shard: std::rc::Rc<Shard>, mut inbox: mpsc::Receiver<AdminCommand>) {
    while let Some(command) = inbox.recv().await {
        let now = clock::mono();
        // A reply nobody waits for any more (timed out) is dropped.
        match command {
            AdminCommand::List(reply) => {
                let _ = reply.send(shard.with_core(|core| core.allocation_summaries(now)));
            }
            AdminCommand::End(id, reply) => {
                let _ = reply.send(shard.with_core(|core| core.end_allocation(id, now)));
            }
            AdminCommand::EndUser(user, reply) => {
                let _ = reply.send(shard.with_core(|core| core.end_user_allocations(&user, now)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::addr::ShardId;

    #[tokio::test(start_paused = true)]
    async fn a_silent_shard_times_out_a_full_inbox_is_busy_and_a_stopped_one_says_so() {
        let (handle, receivers) = inboxes(1, Arc::default());
        assert_eq!(handle.allocations().await, Err(AdminError::Timeout));
        // The unanswered command still sits in the inbox; fill the rest.
        for _ in 1..INBOX {
            let (reply, _) = oneshot::channel();
            assert!(handle.inboxes[0].try_send(AdminCommand::List(reply)).is_ok());
        }
        assert_eq!(handle.end_user("alice").await, Err(AdminError::Busy));
        drop(receivers);
        assert_eq!(handle.allocations().await, Err(AdminError::Stopped));
        // An id naming a shard that does not run is nobody's.
        let elsewhere = AllocationId {
            shard: ShardId(5),
            serial: 1,
        };
        assert_eq!(handle.end_allocation(elsewhere).await, Ok(false));
    }
}

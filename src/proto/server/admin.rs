//! The operator's view of one core: what its allocations are, and ending
//! them by id or by username (the admin API asks every shard's core in
//! turn, see `net::admin`).
//!
//! An [`AllocationId`] names the shard whose core made the allocation and
//! a serial that core never reuses, so it is unique in the process and
//! stable for the allocation's life; a client never sees it.
//!
//! Ending an allocation here is [`Server::remove_allocation`], the path an
//! expiry takes: relay sockets released (and their live bits cleared),
//! RFC 6062 peer connections closed through `ClosePeerConnection` effects,
//! the user's and the source's quota places returned. The client's
//! connection stays, so its next Refresh is answered 437 (RFC 8656 §7.3).

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::{Duration, Instant};

use super::{RelayBinder, Server};
use crate::proto::addr::{ClientAddr, RelayProtocol, ShardId};
use crate::proto::stats::{EndReason, Traffic};

/// An allocation's name for the operator: `<shard>-<serial>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AllocationId {
    pub shard: ShardId,
    pub serial: u64,
}

impl fmt::Display for AllocationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.shard.0, self.serial)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("an allocation id is <shard>-<serial>, two decimal numbers")]
pub struct BadAllocationId;

impl FromStr for AllocationId {
    type Err = BadAllocationId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (shard, serial) = s.split_once('-').ok_or(BadAllocationId)?;
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(shard) || !digits(serial) {
            return Err(BadAllocationId);
        }
        Ok(AllocationId {
            shard: ShardId(shard.parse().map_err(|_| BadAllocationId)?),
            serial: serial.parse().map_err(|_| BadAllocationId)?,
        })
    }
}

/// One allocation as the operator sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocationSummary {
    pub id: AllocationId,
    pub username: String,
    pub realm: String,
    pub client: ClientAddr,
    /// Its relayed transport addresses (two for a dual allocation).
    pub relays: Vec<SocketAddr>,
    pub protocol: RelayProtocol,
    pub age: Duration,
    pub expires_in: Duration,
    pub to_peer: Traffic,
    pub to_client: Traffic,
    /// Permissions and channels live now, and RFC 6062 peer connections.
    pub permissions: usize,
    pub channels: usize,
    pub peer_connections: usize,
}

impl<B: RelayBinder> Server<B> {
    /// The next id for an allocation of this core.
    pub(super) fn next_allocation_id(&mut self) -> AllocationId {
        self.allocation_serial += 1;
        AllocationId {
            shard: self.shard,
            serial: self.allocation_serial,
        }
    }

    /// Every allocation of this core, ordered by id. Walks them all: for
    /// the operator, not for the packet path.
    pub fn allocation_summaries(&self, now: Instant) -> Vec<AllocationSummary> {
        let mut list: Vec<AllocationSummary> = self
            .allocations
            .iter()
            .map(|(client, a)| AllocationSummary {
                id: a.id,
                username: a.username.to_string(),
                realm: self.credentials.realm().to_owned(),
                client: *client,
                relays: a.relays.iter().map(|r| r.0).collect(),
                protocol: a.protocol,
                age: now.saturating_duration_since(a.created),
                expires_in: a.expires.saturating_duration_since(now),
                to_peer: a.to_peer,
                to_client: a.to_client,
                permissions: a.permissions.iter().filter(|p| p.expires > now).count(),
                channels: a.channels.iter().filter(|c| c.expires > now).count(),
                peer_connections: a.connections.len(),
            })
            .collect();
        list.sort_by_key(|s| s.id);
        list
    }

    /// Ends allocation `id` as an expiry would; false if this core holds
    /// no such allocation.
    pub fn end_allocation(&mut self, id: AllocationId, now: Instant) -> bool {
        let client = self.allocations.iter().find(|(_, a)| a.id == id).map(|(c, _)| *c);
        match client {
            Some(client) => {
                self.remove_allocation(client, EndReason::Operator, now);
                true
            }
            None => false,
        }
    }

    /// Ends every allocation of `username` on this core; returns how many.
    pub fn end_user_allocations(&mut self, username: &str, now: Instant) -> usize {
        let clients: Vec<ClientAddr> = self
            .allocations
            .iter()
            .filter(|(_, a)| &*a.username == username)
            .map(|(c, _)| *c)
            .collect();
        for client in &clients {
            self.remove_allocation(*client, EndReason::Operator, now);
        }
        clients.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allocation_id_prints_and_parses_back() {
        let id = AllocationId {
            shard: ShardId(3),
            serial: 42,
        };
        assert_eq!(id.to_string(), "3-42");
        assert_eq!("3-42".parse(), Ok(id));
        for bad in ["", "3", "3-", "-4", "a-1", "1-+2", "256-1", "1-2-3"] {
            assert_eq!(bad.parse::<AllocationId>(), Err(BadAllocationId), "{bad:?}");
        }
    }
}

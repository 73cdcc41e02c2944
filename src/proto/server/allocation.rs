//! The allocation model (RFC 8656 §5): an allocation's relayed
//! addresses, permissions and channels, its traffic and byte rates, and
//! how the core inserts and removes one while keeping its indexes true.
//!
//! Invariants (checked by `debug_assert`s in [`Server::insert_allocation`]
//! and [`Server::remove_allocation`]):
//! * `Server::by_relay` mirrors `Server::allocations`: `by_relay[r] ==
//!   client` for every relay address `r` of every `(client, a)` and
//!   nothing else;
//! * `Server::timers` holds exactly one `(a.expires,
//!   Timer::Allocation(client))` per allocation;
//! * `Server::live` has the bit of every relay of every allocation set; a
//!   relay's bit is set after its socket is bound and cleared before the
//!   socket is released, so no other shard can be handed the port while
//!   the bit is still ours.
//!
//! Permissions and channels are bounded per allocation and expire lazily:
//! an expired entry is never used and is pruned before counting.

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::answer::{ErrorCode, Failure};
use super::{Authenticated, RelayBinder, Server, Timer};
use crate::proto::addr::{ClientAddr, ConnectionId, Family, PeerAddr, RelayAddr, RelayProtocol};
use crate::proto::channel_data::ChannelNumber;
use crate::proto::quota::{SharedBucket, MIN_BURST};
use crate::proto::stats::{self, EndReason, RateLimit, Traffic};
use crate::proto::stun::TransactionId;
use crate::proto::token_bucket::TokenBucket;
use tracing::info;

/// RFC 8656 §9: permissions last 300 s and are refreshed, never extended.
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);

pub(super) struct Permission {
    pub(super) ip: IpAddr,
    pub(super) expires: Instant,
}

pub(super) struct Channel {
    pub(super) number: ChannelNumber,
    pub(super) peer: PeerAddr,
    /// Data flows while `now < expires`; the entry stays until
    /// `expires + CHANNEL_COOLDOWN` to keep number and peer reserved.
    pub(super) expires: Instant,
}

/// An allocation's relayed addresses: at most one per family (a dual
/// allocation, RFC 8656 §7.2, has both).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Relays {
    pub(super) v4: Option<RelayAddr>,
    pub(super) v6: Option<RelayAddr>,
}

impl Relays {
    pub(super) fn slot(&mut self, family: Family) -> &mut Option<RelayAddr> {
        match family {
            Family::V4 => &mut self.v4,
            Family::V6 => &mut self.v6,
        }
    }

    /// The relay that talks to peers of `family`.
    pub(super) fn get(&self, family: Family) -> Option<RelayAddr> {
        match family {
            Family::V4 => self.v4,
            Family::V6 => self.v6,
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = RelayAddr> {
        self.v4.into_iter().chain(self.v6)
    }

    /// Index into [`stats::FAMILIES`].
    pub(super) fn family_index(&self) -> usize {
        match (self.v4, self.v6) {
            (Some(_), None) => 0,
            (None, Some(_)) => 1,
            _ => 2,
        }
    }
}

impl fmt::Display for Relays {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, relay) in self.iter().enumerate() {
            write!(f, "{}{}", if i > 0 { " " } else { "" }, relay.0)?;
        }
        Ok(())
    }
}

pub(super) struct Allocation {
    /// Its name for the operator (see [`super::admin`]).
    pub(super) id: super::AllocationId,
    pub(super) relays: Relays,
    pub(super) protocol: RelayProtocol,
    /// Ids of its TCP peer connections; mirrors `Server::connections`.
    pub(super) connections: Vec<ConnectionId>,
    pub(super) username: Box<str>,
    pub(super) created: Instant,
    pub(super) expires: Instant,
    /// Transaction that created it and the answer it got, so that a
    /// retransmitted Allocate gets the same answer (RFC 8656 §7.2).
    pub(super) created_by: TransactionId,
    pub(super) created_response: Box<[u8]>,
    pub(super) permissions: Vec<Permission>,
    pub(super) channels: Vec<Channel>,
    pub(super) to_peer: Traffic,
    pub(super) to_client: Traffic,
    /// Byte rate of this allocation, both directions together (boxed: it
    /// is off by default, and then costs a pointer).
    pub(super) rate: Option<Box<TokenBucket>>,
    /// Byte rate shared by all allocations of its user.
    pub(super) user_rate: Option<SharedBucket>,
}

impl Allocation {
    /// Takes `len` bytes from the allocation's and the user's byte rates,
    /// or says which one is exhausted (and takes from neither).
    pub(super) fn within_rate(&mut self, len: usize, now: Instant) -> Result<(), RateLimit> {
        let n = len as u64;
        if let Some(bucket) = &mut self.rate {
            if !bucket.has(n, now) {
                return Err(RateLimit::Allocation);
            }
        }
        if let Some(shared) = &self.user_rate {
            if !shared.lock().unwrap_or_else(|e| e.into_inner()).try_take(n, now) {
                return Err(RateLimit::User);
            }
        }
        if let Some(bucket) = &mut self.rate {
            bucket.try_take(n, now);
        }
        Ok(())
    }

    /// The byte rates for a stream (an RFC 6062 splice), which is delayed
    /// where a datagram would be dropped: takes `len` bytes from the
    /// allocation's and the user's rates if both hold them, or takes none
    /// and says when both will. `len` is at most [`MIN_BURST`], so a full
    /// bucket always holds it.
    pub(super) fn stream_within_rate(&mut self, len: usize, now: Instant) -> Result<(), Instant> {
        debug_assert!(len as u64 <= MIN_BURST, "a splice read beyond the smallest burst");
        let n = len as u64;
        let own_wait = self.rate.as_mut().map_or(Duration::ZERO, |b| b.time_until(n, now));
        let user_wait = match &self.user_rate {
            Some(shared) => {
                // One lock for the look and the take: another shard may
                // draw on this bucket in between otherwise.
                let mut bucket = shared.lock().unwrap_or_else(|e| e.into_inner());
                let wait = bucket.time_until(n, now);
                if wait.is_zero() && own_wait.is_zero() {
                    bucket.try_take(n, now);
                }
                wait
            }
            None => Duration::ZERO,
        };
        let wait = own_wait.max(user_wait);
        if !wait.is_zero() {
            return Err(now + wait);
        }
        if let Some(bucket) = &mut self.rate {
            bucket.try_take(n, now);
        }
        Ok(())
    }

    pub(super) fn permits(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions.iter().any(|p| p.ip == ip && p.expires > now)
    }

    pub(super) fn bound_channel_for(&self, peer: PeerAddr, now: Instant) -> Option<ChannelNumber> {
        self.channels
            .iter()
            .find(|c| c.peer == peer && c.expires > now)
            .map(|c| c.number)
    }

    /// Installs or refreshes the permission for `ip` (RFC 8656 §9).
    pub(super) fn permit(&mut self, ip: IpAddr, now: Instant) {
        let expires = now + PERMISSION_LIFETIME;
        match self.permissions.iter_mut().find(|p| p.ip == ip) {
            Some(p) => p.expires = expires,
            None => self.permissions.push(Permission { ip, expires }),
        }
    }
}

impl<B: RelayBinder> Server<B> {
    /// The allocation of `client` for a non-Allocate request: 437 if there
    /// is none, 441 if it belongs to another username (RFC 8656 §5).
    pub(super) fn allocation_of(
        &mut self,
        client: ClientAddr,
        auth: &Authenticated<'_>,
    ) -> Result<&mut Allocation, Failure> {
        let allocation = self.allocations.get_mut(&client).ok_or(ErrorCode::AllocationMismatch)?;
        if *allocation.username != *auth.username {
            return Err(ErrorCode::WrongCredentials.into());
        }
        Ok(allocation)
    }

    pub(super) fn insert_allocation(&mut self, client: ClientAddr, allocation: Allocation) {
        self.timers.insert((allocation.expires, Timer::Allocation(client)));
        for relay in allocation.relays.iter() {
            let previous = self.by_relay.insert(relay, client);
            debug_assert!(previous.is_none(), "relay address handed out twice");
            self.live
                .insert(Family::of(relay.0), allocation.protocol, relay.0.port(), self.shard);
        }
        let previous = self.allocations.insert(client, Box::new(allocation));
        debug_assert!(previous.is_none(), "two allocations for one 5-tuple");
    }

    pub(super) fn remove_allocation(&mut self, client: ClientAddr, why: EndReason, now: Instant) {
        if !self.allocations.contains_key(&client) {
            return;
        }
        // While the allocation is there to take the fast path's last counts.
        self.forget_routes(client);
        let Some(a) = self.allocations.remove(&client).map(|a| *a) else {
            return;
        };
        self.counters.allocations_ended[why as usize][client.transport as usize][a.relays.family_index()] += 1;
        self.counters.ended_to_peer.add(a.to_peer);
        self.counters.ended_to_client.add(a.to_client);
        // An expired allocation's timer was taken off the queue as it fired.
        let removed = self.timers.remove(&(a.expires, Timer::Allocation(client)));
        debug_assert!(removed || why == EndReason::Expired, "allocation without its timer");
        for relay in a.relays.iter() {
            let removed = self.by_relay.remove(&relay);
            debug_assert_eq!(removed, Some(client));
            self.release_relay(relay, a.protocol);
        }
        for id in a.connections {
            self.remove_connection(id);
        }
        self.quota.release(&a.username);
        self.quota.release_source(super::source_key(client));
        info!(
            id = %a.id,
            %client,
            user = a.username,
            relays = %a.relays,
            why = stats::END_REASONS[why as usize],
            age_s = now.saturating_duration_since(a.created).as_secs(),
            packets_to_peer = a.to_peer.packets,
            bytes_to_peer = a.to_peer.bytes,
            packets_to_client = a.to_client.packets,
            bytes_to_client = a.to_client.bytes,
            "allocation deleted"
        );
    }

    /// Forgets relay `relay` of an allocation: no longer live, then its
    /// socket released (in that order, see the module invariants).
    pub(super) fn release_relay(&mut self, relay: RelayAddr, protocol: RelayProtocol) {
        self.live.remove(Family::of(relay.0), protocol, relay.0.port());
        self.binder.release(Family::of(relay.0), relay.0.port());
    }
}

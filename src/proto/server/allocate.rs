//! Allocate and Refresh (RFC 8656 §7): lifetimes, the relay ports an
//! allocation gets (EVEN-PORT, RESERVATION-TOKEN, dual allocations), the
//! quota it is charged to, and its end.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ring::hmac;
use tracing::{debug, info};

use super::allocation::{Allocation, Relays};
use super::answer::{ErrorCode, Failure};
use super::request::{AllocateRequest, RefreshRequest};
use super::{Authenticated, PortWant, RelayBinder, Server, Timer};
use crate::proto::addr::{ClientAddr, Family, RelayAddr};
use crate::proto::quota::{rate_bucket, QuotaExceeded};
use crate::proto::stats::{EndReason, LimitRefusal, Traffic};
use crate::proto::stun::{attr, Class, Message, MessageWriter};

/// RFC 8656 §3.2 and §7.2: default and bounds of allocation lifetimes.
pub const DEFAULT_ALLOCATION_LIFETIME: Duration = Duration::from_secs(600);
/// RFC 8656 §7.2: a reserved even-port partner is held for about 30 s.
pub const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);

impl<B: RelayBinder> Server<B> {
    /// Allocate (RFC 8656 §7.2).
    pub(super) fn allocate(
        &mut self,
        client: ClientAddr,
        msg: &Message<'_>,
        auth: &Authenticated<'_>,
        now: Instant,
    ) -> Result<Vec<u8>, Failure> {
        if let Some(existing) = self.allocations.get(&client) {
            // Another user on this 5-tuple must never see the creator's
            // signed answer, retransmission or not.
            if *existing.username != *auth.username {
                return Err(ErrorCode::WrongCredentials.into());
            }
            if existing.created_by == msg.transaction_id() {
                return Ok(existing.created_response.to_vec());
            }
            return Err(ErrorCode::AllocationMismatch.into());
        }
        let request = AllocateRequest::parse(msg, client.transport)?;
        // A zero LIFETIME only means "delete" in a Refresh; in an Allocate
        // it is just below the default, which is what it gets (§7.2).
        let lifetime = match self.granted_lifetime(request.lifetime) {
            zero if zero.is_zero() => DEFAULT_ALLOCATION_LIFETIME.min(self.config.max_allocation_lifetime),
            lifetime => lifetime,
        };
        let family = request.family.unwrap_or(Family::V4);
        if request.reservation.is_none() && self.relay_ip(family).is_none() {
            return Err(ErrorCode::AddressFamilyNotSupported.into());
        }
        if self.quota.is_saturated() {
            return Err(self.shed(LimitRefusal::Bandwidth, client));
        }
        let source = super::source_key(client);
        if !self.quota.try_acquire_source(source) {
            return Err(self.refuse(LimitRefusal::AllocationsPerSource));
        }
        let acquired = match request.reservation {
            Some(token) => self.quota.try_acquire_claiming(&auth.username, token, now),
            None => self.quota.try_acquire(&auth.username, now),
        };
        let user_rate = match acquired {
            Ok(bucket) => bucket,
            Err(e) => {
                self.quota.release_source(source);
                return Err(self.shed(quota_refusal(e), client));
            }
        };
        // A reserved partner port holds a place in its creator's quota
        // until it is claimed or expires, like an allocation would.
        let new_token = (request.even_port == Some(true)).then(|| self.next_token());
        if let Some(token) = new_token {
            if let Err(e) = self.quota.try_reserve(token, &auth.username, now) {
                self.quota.release(&auth.username);
                self.quota.release_source(source);
                return Err(self.shed(quota_refusal(e), client));
            }
        }
        let Some((relays, additional_error)) = self.bind_relays(&request, family, new_token) else {
            self.quota.release(&auth.username);
            self.quota.release_source(source);
            if let Some(token) = new_token {
                self.quota.end_reservation(token);
            }
            debug!(%client, "allocation refused: no relay port");
            return Err(self.shed(LimitRefusal::RelayPorts, client));
        };
        if let Some(token) = new_token {
            self.timers
                .insert((now + RESERVATION_LIFETIME, Timer::Reservation(token)));
        }
        let mut buf = Vec::with_capacity(160);
        let mut w = MessageWriter::new(&mut buf, Class::Success, msg.method(), msg.transaction_id());
        for relay in relays.iter() {
            w.xor_address(attr::XOR_RELAYED_ADDRESS, relay.0);
        }
        w.u32(attr::LIFETIME, lifetime.as_secs() as u32);
        if let Some(token) = new_token {
            w.bytes(attr::RESERVATION_TOKEN, &token.to_be_bytes());
        }
        if let Some(code) = additional_error {
            w.address_error_code(true, code.code(), code.reason());
        }
        w.xor_address(attr::XOR_MAPPED_ADDRESS, client.remote);
        self.finish_authenticated(w, &auth.key);

        info!(%client, user = &*auth.username, %relays, lifetime_s = lifetime.as_secs(), "allocation created");
        self.counters.allocations_created[client.transport as usize][relays.family_index()] += 1;
        let id = self.next_allocation_id();
        self.insert_allocation(
            client,
            Allocation {
                id,
                relays,
                protocol: request.protocol,
                connections: Vec::new(),
                username: (&*auth.username).into(),
                created: now,
                expires: now + lifetime,
                created_by: msg.transaction_id(),
                created_response: buf.as_slice().into(),
                permissions: Vec::new(),
                channels: Vec::new(),
                to_peer: Traffic::default(),
                to_client: Traffic::default(),
                rate: (self.config.allocation_rate > 0)
                    .then(|| Box::new(rate_bucket(self.config.allocation_rate, now))),
                user_rate,
            },
        );
        Ok(buf)
    }

    /// The allocation's relays. The first is the reserved port named by
    /// the token, or a fresh one of `family` (even, and with its partner
    /// reserved under `new_token`, if EVEN-PORT asks); `None` if it cannot
    /// be had. The additional IPv6 relay of a dual allocation is best
    /// effort: if it cannot be had, the error code says why.
    fn bind_relays(
        &mut self,
        request: &AllocateRequest,
        family: Family,
        new_token: Option<u64>,
    ) -> Option<(Relays, Option<ErrorCode>)> {
        let want = match (request.even_port, new_token) {
            (None, _) => PortWant::Any,
            (Some(_), None) => PortWant::Even,
            (Some(_), Some(token)) => PortWant::EvenPair(token),
        };
        let bound = match request.reservation {
            Some(token) => self.binder.claim(token),
            None => self
                .binder
                .bind(family, request.protocol, want)
                .map(|port| (family, port)),
        };
        let (family, port) = bound.ok()?;
        let Some(ip) = self.relay_ip(family) else {
            // A reservation of a family that has no relay address now.
            self.binder.release(family, port);
            return None;
        };
        let mut relays = Relays::default();
        *relays.slot(family) = Some(RelayAddr(SocketAddr::new(ip, port)));
        let additional_error = match (request.additional_v6, self.relay_ip(Family::V6)) {
            (false, _) => None,
            (true, None) => Some(ErrorCode::AddressFamilyNotSupported),
            (true, Some(ip)) => match self.binder.bind(Family::V6, request.protocol, PortWant::Any) {
                Ok(port) => {
                    relays.v6 = Some(RelayAddr(SocketAddr::new(ip, port)));
                    None
                }
                Err(_) => Some(ErrorCode::InsufficientCapacity),
            },
        };
        Some((relays, additional_error))
    }

    fn relay_ip(&self, family: Family) -> Option<IpAddr> {
        match family {
            Family::V4 => self.config.relay_ip_v4.map(IpAddr::V4),
            Family::V6 => self.config.relay_ip_v6.map(IpAddr::V6),
        }
    }

    /// An unguessable RESERVATION-TOKEN: a keyed PRF of a counter.
    fn next_token(&mut self) -> u64 {
        self.token_counter += 1;
        let tag = hmac::sign(&self.token_key, &self.token_counter.to_be_bytes());
        let mut token = [0u8; 8];
        token.copy_from_slice(&tag.as_ref()[..8]);
        u64::from_be_bytes(token)
    }

    /// RFC 8656 §7.2/§7.3: the requested lifetime capped at the maximum,
    /// never below the default; zero stays zero (Refresh deletes).
    fn granted_lifetime(&self, requested: Option<u32>) -> Duration {
        let max = self.config.max_allocation_lifetime;
        match requested {
            None => DEFAULT_ALLOCATION_LIFETIME.min(max),
            Some(0) => Duration::ZERO,
            Some(secs) => Duration::from_secs(u64::from(secs))
                .min(max)
                .max(DEFAULT_ALLOCATION_LIFETIME)
                .min(max),
        }
    }

    /// Refresh (RFC 8656 §7.3); lifetime 0 deletes the allocation, and a
    /// retransmission then gets 437, which clients treat as success.
    pub(super) fn refresh(
        &mut self,
        client: ClientAddr,
        msg: &Message<'_>,
        auth: &Authenticated<'_>,
        now: Instant,
    ) -> Result<Vec<u8>, Failure> {
        let request = RefreshRequest::parse(msg)?;
        let lifetime = self.granted_lifetime(request.lifetime);
        let allocation = self.allocation_of(client, auth)?;
        if request.family.is_some_and(|f| allocation.relays.get(f).is_none()) {
            return Err(ErrorCode::PeerAddressFamilyMismatch.into());
        }
        // REQUESTED-ADDRESS-FAMILY names one family of a dual allocation:
        // deleting it (lifetime 0) keeps the other.
        let dual = allocation.relays.iter().count() == 2;
        if lifetime.is_zero() && dual && request.family.is_some() {
            let relay = request.family.and_then(|f| allocation.relays.slot(f).take());
            if let Some(relay) = relay {
                let protocol = allocation.protocol;
                self.by_relay.remove(&relay);
                self.release_relay(relay, protocol);
                info!(%client, relay = %relay.0, "relay of one family deleted by client");
            }
            self.sync_routes(client, now);
        } else if lifetime.is_zero() {
            self.remove_allocation(client, EndReason::Deleted, now);
        } else {
            let old = std::mem::replace(&mut allocation.expires, now + lifetime);
            self.timers.remove(&(old, Timer::Allocation(client)));
            self.timers.insert((now + lifetime, Timer::Allocation(client)));
            self.sync_routes(client, now);
        }
        let mut buf = Vec::with_capacity(64);
        let mut w = MessageWriter::new(&mut buf, Class::Success, msg.method(), msg.transaction_id());
        w.u32(attr::LIFETIME, lifetime.as_secs() as u32);
        self.finish_authenticated(w, &auth.key);
        Ok(buf)
    }

    /// The timer of reservation `token` fired: unless an allocation
    /// claimed it meanwhile, the partner port goes back and the creator's
    /// quota place is freed.
    pub(super) fn expire_reservation(&mut self, token: u64) {
        self.binder.forget(token);
        self.quota.end_reservation(token);
    }

    /// The allocation timer of `client` fired (and was taken off the
    /// queue). A timer that outlived its allocation, or belongs to an
    /// earlier allocation of the same 5-tuple, does nothing.
    pub(super) fn expire_allocation(&mut self, client: ClientAddr, now: Instant) {
        if self.allocations.get(&client).is_some_and(|a| a.expires <= now) {
            self.remove_allocation(client, EndReason::Expired, now);
        }
    }
}

fn quota_refusal(e: QuotaExceeded) -> LimitRefusal {
    match e {
        QuotaExceeded::User => LimitRefusal::AllocationsPerUser,
        QuotaExceeded::Total => LimitRefusal::AllocationsTotal,
        QuotaExceeded::Closed => LimitRefusal::Draining,
    }
}

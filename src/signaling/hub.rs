//! The hub that all signaling sessions share: the [`Switchboard`] behind
//! one mutex, a wake-up per session, the timer task and the ICE config
//! that credentials are minted from.
//!
//! Sessions ([`super::session`]) reach each other only through the hub,
//! held for a few map operations per message (signaling is a few messages
//! a second per peer, so one lock is plenty). Nothing is locked while the
//! hub's state is, and the ICE config is read before it is locked.
//!
//! A session detached for resume keeps the place its connection held in
//! the HTTP side's connection table (a [`ConnectionPlace`], opaque here)
//! until the switchboard releases it (resumed, grace over, evicted or
//! ended), so that connections and detached sessions together stay
//! within `signaling.max_connections` (and `max_connections_per_source`
//! for their source). Places are given back after the hub's lock is let
//! go (giving one back takes the connection table's lock).
//!
//! [`Hub::run_timers`] sleeps until the switchboard's next deadline (a
//! grace period's end, a credential refresh) and is woken when an earlier
//! one appears; it never ticks. With rooms that span a fleet, the fleet's
//! rooms channel (`crate::fleet`) is woken through [`Hub::fleet_wake`]
//! when the switchboard has events for it, drains them with
//! [`Hub::drain_fleet`] and reports back through [`Hub::with`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::debug;

use super::ice::IceConfig;
use super::protocol::IceServer;
use super::switchboard::{Counters, FleetEvent, Handshake, Limits, Mint, Switchboard, MAX_FLEET_EVENTS};
use crate::config::Config;
use crate::process::clock;
use crate::proto::source::SourceKey;

/// The timing limits of `[signaling]` the driver enforces.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    pub max_message_size: usize,
    pub ping_interval: Duration,
    pub heartbeat_timeout: Duration,
    /// `signaling.resume_grace`; zero offers no resume.
    pub resume_grace: Duration,
}

/// The place a connection holds in the HTTP side's connection table
/// (`signaling.max_connections`, `max_connections_per_source`), opaque
/// here: dropping it gives the place back. A session detached for resume
/// keeps its connection's place in the hub until it is resumed (the new
/// connection holds a place of its own) or its grace ends.
pub type ConnectionPlace = Box<dyn std::any::Any + Send>;

struct HubState {
    board: Switchboard,
    /// Connection id → its wake-up; one per running driver.
    wakers: HashMap<String, Arc<Notify>>,
    /// Peer id of a detached session → the place its connection held;
    /// exactly the detached sessions kept by [`Hub::disconnect`] (the
    /// switchboard names each released one, and it is dropped then).
    places: HashMap<String, ConnectionPlace>,
    /// The deadline the timer task sleeps until.
    armed: Option<std::time::Instant>,
}

/// What all sessions share.
pub struct Hub {
    state: Mutex<HubState>,
    pub limits: SessionLimits,
    ice: std::sync::RwLock<Arc<IceConfig>>,
    /// Wakes [`Hub::run_timers`] when an earlier deadline appears.
    timer: Notify,
    /// Wakes the fleet's rooms channel when the switchboard has events
    /// for it.
    pub fleet_wake: Notify,
}

/// The [`Mint`] of live sessions: credentials from the current ICE config,
/// tokens from the process's randomness.
pub struct LiveMint {
    ice: Arc<IceConfig>,
}

impl Mint for LiveMint {
    fn ice_servers(&mut self, host: Option<&str>, peer: &str) -> (Vec<IceServer>, Duration) {
        (self.ice.ice_servers(host, peer, clock::unix_secs()), self.ice.ttl)
    }

    fn resume_token(&mut self) -> Option<String> {
        Some(resume_token())
    }
}

impl Hub {
    /// The hub of `[signaling]`, spanning the fleet with `[fleet]`
    /// configured; `ice` is what `iceServers` are minted from.
    pub fn from_config(config: &Config, ice: IceConfig) -> Hub {
        let signaling = &config.signaling;
        let limits = Limits {
            room_size: signaling.room_size,
            max_rooms: signaling.max_rooms,
            max_rooms_per_source: signaling.max_rooms_per_source,
            max_message_size: signaling.max_message_size,
            messages_per_second: signaling.messages_per_second,
            // Two messages of the largest size always fit (each costs its
            // length + 64).
            max_outbox_bytes: signaling
                .max_outbox_bytes
                .max(signaling.max_message_size.saturating_add(64).saturating_mul(2)),
        };
        let session = SessionLimits {
            max_message_size: signaling.max_message_size,
            ping_interval: signaling.ping_interval,
            heartbeat_timeout: signaling.heartbeat_timeout,
            resume_grace: signaling.resume_grace,
        };
        Hub::new(limits, session, ice, config.fleet.redis_url.is_some())
    }

    /// With `spans_fleet`, rooms span the fleet: the switchboard waits for
    /// the fleet's rooms channel, which reports through the hub.
    pub fn new(limits: Limits, session: SessionLimits, ice: IceConfig, spans_fleet: bool) -> Hub {
        let board = Switchboard::new(limits).with_resume_grace(session.resume_grace);
        let board = match spans_fleet {
            true => board.with_fleet(),
            false => board,
        };
        Hub {
            state: Mutex::new(HubState {
                board,
                wakers: HashMap::new(),
                places: HashMap::new(),
                armed: None,
            }),
            limits: session,
            ice: std::sync::RwLock::new(Arc::new(ice)),
            timer: Notify::new(),
            fleet_wake: Notify::new(),
        }
    }

    /// Remote peers known now.
    pub fn remote_count(&self) -> usize {
        self.lock().board.remote_count()
    }

    /// What the switchboard asked of the fleet, at most
    /// [`MAX_FLEET_EVENTS`] at a time.
    pub fn drain_fleet(&self) -> Vec<FleetEvent> {
        let mut state = self.lock();
        std::iter::from_fn(|| state.board.poll_fleet())
            .take(MAX_FLEET_EVENTS)
            .collect()
    }

    /// A [`Mint`] for calls into the switchboard.
    pub fn mint(&self) -> LiveMint {
        LiveMint { ice: self.ice() }
    }

    /// What `iceServers` are made of now.
    pub fn ice(&self) -> Arc<IceConfig> {
        self.ice.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces it (config reload: a rotated secret mints from now on).
    pub fn set_ice(&self, ice: IceConfig) {
        *self.ice.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ice);
    }

    /// (rooms, peers in rooms, open sessions) right now.
    pub fn counts(&self) -> (usize, usize, usize) {
        self.lock().board.counts()
    }

    /// The switchboard's counters now.
    pub fn counters(&self) -> Counters {
        self.lock().board.counters().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        // A panic while holding the lock cannot leave the maps half-changed
        // in a way that matters more than losing the server would.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the switchboard, then wakes the connections it named,
    /// and the timer task if the next deadline moved earlier; the places
    /// of the detached sessions it released are given back once the lock
    /// is let go.
    pub fn with<R>(&self, f: impl FnOnce(&mut Switchboard) -> R) -> R {
        self.with_state(|state| f(&mut state.board))
    }

    fn with_state<R>(&self, f: impl FnOnce(&mut HubState) -> R) -> R {
        let mut released = Vec::new();
        let result = {
            let mut state = self.lock();
            let result = f(&mut state);
            while let Some(id) = state.board.poll_woken() {
                if let Some(waker) = state.wakers.get(&id) {
                    waker.notify_one();
                }
            }
            while let Some(peer) = state.board.poll_released() {
                released.extend(state.places.remove(&peer));
            }
            if state.board.has_fleet_events() {
                self.fleet_wake.notify_one();
            }
            let next = state.board.poll_timeout();
            if next.is_some_and(|next| state.armed.is_none_or(|armed| next < armed)) {
                state.armed = next;
                self.timer.notify_one();
            }
            result
        };
        // Dropped here, not under the hub's lock: giving a place back
        // takes the connection table's.
        drop(released);
        result
    }

    /// Sessions kept for resume that hold their connection's place now.
    pub fn detached_count(&self) -> usize {
        self.lock().places.len()
    }

    /// Runs the switchboard's timers (grace periods, credential refreshes)
    /// for as long as the HTTP side runs: sleeps until the next deadline,
    /// or until [`Hub::with`] reports an earlier one.
    pub async fn run_timers(self: Arc<Self>) {
        loop {
            let next = {
                let mut state = self.lock();
                state.armed = state.board.poll_timeout();
                state.armed
            };
            match next {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(Instant::from_std(at)) => {}
                        () = self.timer.notified() => continue,
                    }
                }
                None => {
                    self.timer.notified().await;
                    continue;
                }
            }
            let mut mint = LiveMint { ice: self.ice() };
            self.with(|board| board.handle_timeout(clock::mono(), &mut mint));
        }
    }

    /// A new connection (and session) with a fresh id, and its wake-up.
    pub(super) fn connect(
        &self,
        source: SourceKey,
        room_grant: Option<String>,
        handshake: Handshake,
    ) -> (String, Arc<Notify>) {
        let waker = Arc::new(Notify::new());
        let mut state = self.lock();
        let id = loop {
            let id = peer_id();
            if state
                .board
                .connect_with(&id, source, room_grant.clone(), handshake.clone(), clock::mono())
            {
                break id;
            }
        };
        state.wakers.insert(id.clone(), waker.clone());
        (id, waker)
    }

    /// The socket of connection `id` ended (`clean`: with the client's
    /// close frame, which is a leave); `place` is the connection's place in
    /// the connection table, kept while its session is detached for resume
    /// and given back otherwise. True if a resume elsewhere had taken it
    /// over.
    pub(super) fn disconnect(&self, id: &str, clean: bool, place: ConnectionPlace) -> bool {
        let (counts, replaced, replaced_place) = self.with_state(|state| {
            let board = &mut state.board;
            let replaced = board.was_replaced(id);
            let peer = board.peer_of(id).map(str::to_owned);
            let kept = match clean {
                true => {
                    board.disconnect(id);
                    false
                }
                false => board.disconnect_at(id, clock::mono()),
            };
            let counts = board.counts();
            state.wakers.remove(id);
            // Kept in the same call that detached it, so no release can
            // come in between.
            let replaced_place = match (kept, peer) {
                (true, Some(peer)) => state.places.insert(peer, place),
                _ => Some(place),
            };
            (counts, replaced, replaced_place)
        });
        drop(replaced_place);
        let (rooms, peers, sessions) = counts;
        debug!(conn = id, rooms, peers, sessions, "signaling connection ended");
        replaced
    }
}

/// A fresh resume token: 128 random bits, base64url without padding.
fn resume_token() -> String {
    use base64::Engine;
    let bytes: [u8; 16] = crate::process::random::random_bytes();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A fresh peer id: 16 hex digits, unguessable, so that ids learnt in one
/// room say nothing about another.
fn peer_id() -> String {
    let bytes: [u8; 8] = crate::process::random::random_bytes();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::signaling::switchboard::{Limits, Outgoing};

    /// A place that counts its drops (given back) in a shared counter.
    struct Place(Arc<AtomicUsize>);

    impl Drop for Place {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    const GRACE: Duration = Duration::from_secs(10);

    fn hub() -> Hub {
        let limits = Limits {
            room_size: 6,
            max_rooms: 10,
            max_rooms_per_source: 10,
            max_message_size: 4096,
            messages_per_second: 1000,
            max_outbox_bytes: 65536,
        };
        let session = SessionLimits {
            max_message_size: 4096,
            ping_interval: Duration::from_secs(20),
            heartbeat_timeout: Duration::from_secs(30),
            resume_grace: GRACE,
        };
        let ice = IceConfig {
            turn_host: None,
            fallback_host: "192.0.2.1".into(),
            udp_port: Some(3478),
            tcp_port: None,
            tls_port: None,
            secret: None,
            algorithm: crate::proto::auth::SecretAlgorithm::Sha1,
            ttl: Duration::from_secs(600),
        };
        Hub::new(limits, session, ice, false)
    }

    fn source() -> SourceKey {
        SourceKey::from(std::net::IpAddr::from([192, 0, 2, 9]))
    }

    /// A connection that joined `room` asking for resume; its id and token.
    fn joined(hub: &Hub, room: &str) -> (String, String) {
        let (id, _) = hub.connect(source(), None, Handshake::default());
        let join = format!(r#"{{"type":"join","room":"{room}","resume":true}}"#);
        let mut mint = hub.mint();
        hub.with(|board| board.handle_text_with(&id, &join, clock::mono(), &mut mint));
        let Outgoing::Message(text) = hub.with(|board| board.poll_outgoing(&id)) else {
            panic!("no joined");
        };
        let joined: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        let token = joined["resume"]["token"].as_str().expect("a resume token").to_owned();
        (id, token)
    }

    #[test]
    fn a_detached_session_keeps_its_place_until_its_grace_ends_or_it_is_resumed() {
        let hub = hub();
        let given_back = Arc::new(AtomicUsize::new(0));
        let place = || -> ConnectionPlace { Box::new(Place(given_back.clone())) };
        let (_other, _) = joined(&hub, "r");
        // A clean close gives the place back at once.
        let (leaver, _) = joined(&hub, "r");
        hub.disconnect(&leaver, true, place());
        assert_eq!(given_back.load(Ordering::Relaxed), 1);
        // A dropped socket: kept while detached, given back at the grace's end.
        let (dropped, _) = joined(&hub, "r");
        hub.disconnect(&dropped, false, place());
        assert_eq!((given_back.load(Ordering::Relaxed), hub.detached_count()), (1, 1));
        let mut mint = hub.mint();
        let later = clock::mono() + GRACE / 2;
        hub.with(|board| board.handle_timeout(later, &mut mint));
        assert_eq!((given_back.load(Ordering::Relaxed), hub.detached_count()), (1, 1));
        hub.with(|board| board.handle_timeout(later + GRACE, &mut mint));
        assert_eq!((given_back.load(Ordering::Relaxed), hub.detached_count()), (2, 0));
        // Resumed on a new connection, which holds its own place: the
        // detached one's is given back then.
        let (dropped, token) = joined(&hub, "r");
        hub.disconnect(&dropped, false, place());
        let (new, _) = hub.connect(source(), None, Handshake::default());
        let resume = format!(r#"{{"type":"resume","token":"{token}","last":0}}"#);
        hub.with(|board| board.handle_text_with(&new, &resume, clock::mono(), &mut mint));
        assert_eq!(hub.with(|board| board.peer_of(&new).map(str::to_owned)), Some(dropped));
        assert_eq!((given_back.load(Ordering::Relaxed), hub.detached_count()), (3, 0));
        // A v1 session (no resume) gives it back at once, however it ends.
        let (v1, _) = hub.connect(source(), None, Handshake::default());
        hub.disconnect(&v1, false, place());
        assert_eq!((given_back.load(Ordering::Relaxed), hub.detached_count()), (4, 0));
    }
}

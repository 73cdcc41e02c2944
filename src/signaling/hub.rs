//! The hub that all signaling sessions share: the [`Switchboard`] behind
//! one mutex, a wake-up per session, the timer task and the ICE config
//! that credentials are minted from.
//!
//! Sessions ([`super::session`]) reach each other only through the hub,
//! held for a few map operations per message (signaling is a few messages
//! a second per peer, so one lock is plenty). Lock order: the hub's state,
//! then nothing; the ICE config is read before the state is locked.
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
use super::switchboard::{Counters, FleetEvent, Limits, Mint, Switchboard, MAX_FLEET_EVENTS};
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

struct HubState {
    board: Switchboard,
    /// Connection id → its wake-up; one per running driver.
    wakers: HashMap<String, Arc<Notify>>,
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
    /// and the timer task if the next deadline moved earlier.
    pub fn with<R>(&self, f: impl FnOnce(&mut Switchboard) -> R) -> R {
        let mut state = self.lock();
        let result = f(&mut state.board);
        while let Some(id) = state.board.poll_woken() {
            if let Some(waker) = state.wakers.get(&id) {
                waker.notify_one();
            }
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
        host: Option<String>,
    ) -> (String, Arc<Notify>) {
        let waker = Arc::new(Notify::new());
        let mut state = self.lock();
        let id = loop {
            let id = peer_id();
            if state
                .board
                .connect_with_host(&id, source, room_grant.clone(), host.clone(), clock::mono())
            {
                break id;
            }
        };
        state.wakers.insert(id.clone(), waker.clone());
        (id, waker)
    }

    /// The socket of connection `id` ended (`clean`: with the client's
    /// close frame, which is a leave); true if a resume elsewhere had taken
    /// it over.
    pub(super) fn disconnect(&self, id: &str, clean: bool) -> bool {
        let (counts, replaced) = self.with(|board| {
            let replaced = board.was_replaced(id);
            match clean {
                true => board.disconnect(id),
                false => board.disconnect_at(id, clock::mono()),
            }
            (board.counts(), replaced)
        });
        self.lock().wakers.remove(id);
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

//! What the HTTP handlers are given: the [`App`] all requests share (the
//! signaling hub, the shards' status, the metrics registry, the connection
//! table and the access rules), and the [`ConnectionSlot`] each request
//! carries.
//!
//! The access rules are replaced whole on reload and read as a cloned
//! `Arc`: a request holds their lock for a pointer copy, never while it
//! works, and keeps the rules it started with.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

use axum::http::HeaderValue;
use prometheus_client::registry::Registry;

use super::limits::{Admission, ConnectionTable};
use super::self_check::LastCheck;
use crate::config::{Config, Secret};
use crate::fleet::FleetStatus;
use crate::process::status::ServerStatus;
use crate::process::tls::TlsCertificates;
use crate::proto::source::SourceKey;
use crate::signaling::Hub;

/// What the handlers share.
pub(super) struct App {
    pub(super) hub: Arc<Hub>,
    /// With `[fleet]`: whether Redis is up, and the fleet's counters.
    pub(super) fleet: Option<Arc<FleetStatus>>,
    pub(super) status: ServerStatus,
    /// The TLS certificate, when one is served: its expiry for
    /// `/metrics`, and with `[tls.acme]` the client's state for `/readyz`
    /// and the HTTP-01 answers.
    pub(super) certificates: Option<Arc<TlsCertificates>>,
    pub(super) metrics: Registry,
    /// Swapped whole on reload; a request takes a cheap clone of the Arc.
    pub(super) access: RwLock<Arc<Access>>,
    /// `/test/self-check`'s last report, and the lock of its one run.
    pub(super) self_check: tokio::sync::Mutex<Option<LastCheck>>,
}

/// Who may use the endpoints; replaced on reload.
pub(super) struct Access {
    pub(super) token_secret: Option<Secret>,
    pub(super) api_key: Option<Secret>,
    pub(super) allowed_origins: Vec<String>,
}

impl Access {
    pub(super) fn from_config(config: &Config) -> Access {
        Access {
            token_secret: config.signaling.token_secret.clone(),
            api_key: config.signaling.api_key.clone(),
            allowed_origins: config.signaling.allowed_origins.clone(),
        }
    }

    /// May a WebSocket upgrade with this Origin and Host, arrived at
    /// `local`, go ahead? A request without Origin comes from something
    /// other than a web page, which could send any Origin it liked anyway.
    /// With `allowed_origins` set only the listed origins may; without, only
    /// the page's own host (same-origin, `super::origin`).
    pub(super) fn origin_allowed(&self, origin: Option<&HeaderValue>, host: Option<&str>, local: SocketAddr) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        if self.allowed_origins.is_empty() {
            return super::origin::same_origin(origin, host, local.ip().to_canonical().is_loopback());
        }
        self.allowed_origins.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }
}

impl App {
    pub(super) fn access(&self) -> Arc<Access> {
        self.access.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A connection's place in the [`ConnectionTable`]. Requests carry a
/// clone, so that a WebSocket, which outlives the HTTP exchange that
/// upgraded it, keeps the place until it closes; the last clone gives it
/// back.
#[derive(Clone)]
pub(super) struct ConnectionSlot {
    inner: Arc<SlotInner>,
}

struct SlotInner {
    table: Arc<Mutex<ConnectionTable>>,
    source: SourceKey,
    admission: Admission,
    local: SocketAddr,
}

impl Drop for SlotInner {
    fn drop(&mut self) {
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .release(self.source, self.admission);
    }
}

impl ConnectionSlot {
    /// The place `admission` gave `source` in `table`, for a connection
    /// that reached `local`.
    pub(super) fn new(
        table: Arc<Mutex<ConnectionTable>>,
        source: SourceKey,
        admission: Admission,
        local: SocketAddr,
    ) -> ConnectionSlot {
        ConnectionSlot {
            inner: Arc::new(SlotInner {
                table,
                source,
                admission,
                local,
            }),
        }
    }

    pub(super) fn source(&self) -> SourceKey {
        self.inner.source
    }

    pub(super) fn admission(&self) -> Admission {
        self.inner.admission
    }

    /// The local address the connection reached.
    pub(super) fn local(&self) -> SocketAddr {
        self.inner.local
    }
}

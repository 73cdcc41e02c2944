//! The HTTP side: WebSocket signaling rooms at `/ws` (DESIGN.md,
//! "Signaling protocol v1"), `GET /ice-servers` for application
//! backends, the demo call page at `/`, `/metrics` for Prometheus, and
//! `/healthz` and `/readyz` for load balancers and orchestrators.
//!
//! It runs on a thread of its own with a single-threaded tokio runtime,
//! apart from the packet shards: signaling is a few messages a second per
//! peer and must never take time from relaying. It shares with the TURN
//! side the credential minting function (what it hands out is what TURN
//! verifies), the TLS certificate, and a read-only [`ServerStatus`]
//! (liveness, drain state, the shards' published counters).
//!
//! Bounds: at most `signaling.max_connections` HTTP connections, WebSockets
//! included (one beyond is closed at accept), 10 s to finish a TLS
//! handshake or send request headers (an idle keep-alive connection is
//! closed after as long), and the per-session limits of [`session`].

mod ice;
mod metrics;
mod page;
pub mod signaling;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Extension;
use axum::Router;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, info, warn};

pub use ice::IceConfig;

use crate::config::{Config, Secret};
use crate::process::status::ServerStatus;
use crate::process::tls::TlsCertificates;
use crate::proto::auth;
use signaling::protocol;
use signaling::session::{self, Hub, SessionLimits};

/// Time a client has to finish its TLS handshake and send its request
/// headers.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot bind HTTP {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot start the HTTP thread: {0}")]
    Thread(std::io::Error),
    #[error("signaling.tls is on but no TLS certificate is loaded")]
    NoCertificate,
}

/// The running HTTP endpoint.
pub struct HttpServer {
    /// The bound address (port 0 resolved).
    pub addr: SocketAddr,
    app: Arc<App>,
    stop: tokio::sync::watch::Sender<bool>,
    thread: JoinHandle<()>,
}

impl HttpServer {
    /// Applies a reloaded config: the minting secret, credential lifetime
    /// and TURN host of `iceServers`, the token secret, API key and
    /// allowed origins. Rooms and sessions stay.
    pub fn reload(&self, config: &Config, ice: IceConfig) {
        self.app.hub.set_ice(ice);
        *self.app.access.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Access::from_config(config));
    }

    /// Stops accepting, drops every connection and waits for the thread.
    pub fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.thread.join();
    }
}

/// What the handlers share.
struct App {
    hub: Arc<Hub>,
    status: ServerStatus,
    metrics: prometheus_client::registry::Registry,
    /// Swapped whole on reload; a request takes a cheap clone of the Arc.
    access: std::sync::RwLock<Arc<Access>>,
}

/// Who may use the endpoints; replaced on reload.
struct Access {
    token_secret: Option<Secret>,
    api_key: Option<Secret>,
    allowed_origins: Vec<String>,
}

impl Access {
    fn from_config(config: &Config) -> Access {
        Access {
            token_secret: config.signaling.token_secret.clone(),
            api_key: config.signaling.api_key.clone(),
            allowed_origins: config.signaling.allowed_origins.clone(),
        }
    }

    /// A request without Origin comes from something other than a web
    /// page, which could send any Origin it liked anyway.
    fn origin_allowed(&self, origin: Option<&HeaderValue>) -> bool {
        match origin.and_then(|o| o.to_str().ok()) {
            _ if self.allowed_origins.is_empty() => true,
            None => origin.is_none(),
            Some(origin) => self.allowed_origins.iter().any(|o| o == origin),
        }
    }
}

impl App {
    fn access(&self) -> Arc<Access> {
        self.access.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Binds `addr` and serves it. `ice` describes the TURN side to hand
/// out; `certificates` is required when `signaling.tls` is on.
pub fn start(
    config: &Config,
    addr: SocketAddr,
    ice: IceConfig,
    certificates: Option<Arc<TlsCertificates>>,
    status: ServerStatus,
) -> Result<HttpServer, HttpError> {
    let signaling = &config.signaling;
    let tls = match signaling.tls {
        true => Some(certificates.ok_or(HttpError::NoCertificate)?),
        false => None,
    };
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|source| HttpError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| HttpError::Bind { addr, source })?;
    let limits = SessionLimits {
        max_message_size: signaling.max_message_size,
        messages_per_second: signaling.messages_per_second,
        ping_interval: signaling.ping_interval,
        heartbeat_timeout: signaling.heartbeat_timeout,
    };
    let hub = Arc::new(Hub::new(signaling.room_size, signaling.max_rooms, limits, ice));
    let app = Arc::new(App {
        metrics: metrics::registry(status.clone(), hub.clone()),
        hub,
        status,
        access: std::sync::RwLock::new(Arc::new(Access::from_config(config))),
    });
    let max_connections = signaling.max_connections;
    let handle = app.clone();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let thread = std::thread::Builder::new()
        .name("turnpike-http".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(e) => return warn!("HTTP runtime failed to start: {e}"),
            };
            runtime.block_on(accept_loop(listener, router(app), tls, max_connections, stopped));
        })
        .map_err(HttpError::Thread)?;
    info!(addr = %bound, tls = signaling.tls, "signaling and demo page listening");
    Ok(HttpServer {
        addr: bound,
        app: handle,
        stop,
        thread,
    })
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(page::index))
        .route("/demo.js", get(page::script))
        .route("/demo.css", get(page::style))
        .route("/ws", get(ws))
        .route("/ice-servers", get(ice_servers).options(ice_servers_preflight))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(app)
}

async fn accept_loop(
    listener: std::net::TcpListener,
    router: Router,
    tls: Option<Arc<TlsCertificates>>,
    max_connections: usize,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => return warn!("HTTP listener: {e}"),
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    debug!("HTTP accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped.changed() => return,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(%remote, "HTTP connection limit reached; closing");
            continue;
        };
        let (router, tls, slot) = (
            router.clone(),
            tls.clone(),
            ConnectionSlot {
                _permit: Arc::new(slot),
            },
        );
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            match tls {
                None => serve_connection(stream, router, slot).await,
                Some(certificates) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, certificates.acceptor().accept(stream)).await {
                        Ok(Ok(stream)) => serve_connection(stream, router, slot).await,
                        Ok(Err(e)) => debug!(%remote, "HTTPS handshake failed: {e}"),
                        Err(_) => debug!(%remote, "HTTPS handshake timed out"),
                    }
                }
            }
        });
    }
}

/// A connection's place under `signaling.max_connections`. Requests carry
/// a clone, so that a WebSocket, which outlives the HTTP exchange that
/// upgraded it, keeps the place until it closes.
#[derive(Clone)]
struct ConnectionSlot {
    _permit: Arc<tokio::sync::OwnedSemaphorePermit>,
}

async fn serve_connection<S>(stream: S, router: Router, slot: ConnectionSlot)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: axum::http::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(slot.clone());
        tower::Service::call(&mut router.clone(), request)
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .with_upgrades();
    if let Err(e) = connection.await {
        debug!("HTTP connection ended: {e}");
    }
}

async fn ws(
    State(app): State<Arc<App>>,
    Extension(slot): Extension<ConnectionSlot>,
    upgrade: WebSocketUpgrade,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let access = app.access();
    if !access.origin_allowed(headers.get(header::ORIGIN)) {
        return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    }
    let authorized = match &access.token_secret {
        None => true,
        Some(secret) => query.get("token").is_some_and(|token| {
            auth::verify_signaling_token(secret.expose().as_bytes(), token, crate::process::clock::unix_secs())
        }),
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    // Over the soft limit a message is refused with `too-large`; this
    // hard limit bounds what is read at all.
    let hard_limit = app.hub.limits.max_message_size.saturating_mul(4);
    let hub = app.hub.clone();
    upgrade
        .max_message_size(hard_limit)
        .max_frame_size(hard_limit)
        .on_upgrade(move |socket| async move {
            session::run(socket, hub, host, authorized).await;
            drop(slot);
        })
}

/// `GET /ice-servers`: `{"iceServers":[…],"ttl":S}` for the holder of
/// `signaling.api_key`; 404 when no key is configured.
async fn ice_servers(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let access = app.access();
    let Some(key) = &access.api_key else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "));
    let cors = cors_headers(&access, &headers);
    if !presented.is_some_and(|p| auth::secrets_equal(p.as_bytes(), key.expose().as_bytes())) {
        return (
            StatusCode::UNAUTHORIZED,
            cors,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a valid Authorization: Bearer <signaling.api_key> is required\n",
        )
            .into_response();
    }
    let name = match query.get("user") {
        None => "api",
        Some(user) if user.len() <= 64 && protocol::is_valid_room(user) => user,
        Some(_) => {
            return (
                StatusCode::BAD_REQUEST,
                cors,
                "user must be 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'\n",
            )
                .into_response()
        }
    };
    let ice = app.hub.ice();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let body = serde_json::json!({
        "iceServers": ice.ice_servers(host, name, crate::process::clock::unix_secs()),
        "ttl": ice.ttl.as_secs(),
    });
    (cors, [(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
}

async fn ice_servers_preflight(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    (StatusCode::NO_CONTENT, cors_headers(&app.access(), &headers)).into_response()
}

/// CORS headers for `/ice-servers`: only for an Origin listed in
/// `signaling.allowed_origins` (none when that list is empty: the endpoint
/// is meant for backends).
fn cors_headers(access: &Access, headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    let origin = headers.get(header::ORIGIN);
    if let Some(origin) = origin.filter(|o| {
        o.to_str()
            .is_ok_and(|o| access.allowed_origins.iter().any(|allowed| allowed == o))
    }) {
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        out.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization"),
        );
        out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET"));
        out.insert(header::VARY, HeaderValue::from_static("origin"));
    }
    out
}

/// How long a shard's event loop may go without turning before the
/// process counts as unhealthy.
const STALL_LIMIT: Duration = Duration::from_secs(2);

/// `GET /healthz`: 200 while every shard's event loop turns (liveness).
async fn healthz(State(app): State<Arc<App>>) -> Response {
    match app.status.responsive(STALL_LIMIT) {
        true => (StatusCode::OK, "ok\n").into_response(),
        false => (StatusCode::SERVICE_UNAVAILABLE, "an event loop is stalled\n").into_response(),
    }
}

/// `GET /readyz`: 200 while the server takes new allocations: its
/// listeners are bound (it answers at all) and it is not draining.
async fn readyz(State(app): State<Arc<App>>) -> Response {
    if app.status.draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    match app.status.responsive(STALL_LIMIT) {
        true => (StatusCode::OK, "ready\n").into_response(),
        false => (StatusCode::SERVICE_UNAVAILABLE, "an event loop is stalled\n").into_response(),
    }
}

/// `GET /metrics`: OpenMetrics text for Prometheus.
async fn metrics_text(State(app): State<Arc<App>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics::encode(&app.metrics),
    )
        .into_response()
}

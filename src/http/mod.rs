//! The HTTP server: the door to WebSocket signaling at `/ws` (the rooms
//! themselves are `crate::signaling`), `GET /ice-servers` for application
//! backends, the demo call page at `/` and the TURN test page at `/test`,
//! `/metrics` for Prometheus, and
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
//! included, and `signaling.max_connections_per_source` from one source
//! (one beyond is closed at accept; from a proxy of
//! `listen.proxy_protocol_from`, by the client its PROXY header names,
//! once read: see [`ProxyProtocol::accept`]), plus [`limits::MONITORING_SLOTS`] kept
//! back for `/metrics`, `/healthz` and `/readyz` (see [`limits`]); one
//! deadline of 10 s from accept (2 s on a monitoring slot) for everything
//! before the first request is served: the PROXY header from a listed
//! proxy, the TLS handshake and the first request's headers together, not
//! each in turn (the next requests of a keep-alive connection then get as
//! long each for their headers, counted from when hyper starts reading
//! them, so an idle one is closed after as long); and the per-session
//! limits of `crate::signaling::switchboard`, whose sessions kept for
//! resume keep their connection's place in the table until they are
//! resumed or their grace ends (`ws`). The HTTP connections of a TLS port
//! shared with TURN (`signaling.share_tls_port`), handed over by the
//! shards after their handshake, are held to the same table and
//! deadline, counted from the shard's accept (`handed`).
//!
//! * `ws`: `GET /ws`, the Origin and token checks and the upgrade to a
//!   signaling session;
//! * `ice_servers`: `GET /ice-servers` (the list is
//!   `crate::signaling::ice`, which `/ws` hands out too);
//! * `page`: the demo call page and the TURN test page; `metrics`:
//!   `/metrics`; `health`: `/healthz` and `/readyz`; `acme`: the ACME
//!   HTTP-01 answers at `/.well-known/acme-challenge/<token>`;
//!   `self_check`: `GET /test/self-check`, the test page's view from the
//!   server itself (`turnpike selftest` against its own `/ice-servers`);
//! * `handed`: the HTTP connections of TLS ports shared with TURN
//!   (`signaling.share_tls_port`), which the shards hand over after the
//!   handshake and which are then served as those of the listener;
//! * `app`: what every handler is given; [`limits`]: the per-source
//!   connection table; `origin`: the same-origin rule of `/ws`.
//!
//! This file holds the listener and its connection slots, the router, and
//! [`start`], [`HttpServer::reload`] and [`HttpServer::stop`].

mod acme;
mod app;
mod handed;
mod health;
mod ice_servers;
pub mod limits;
mod metrics;
mod origin;
mod page;
mod self_check;
mod ws;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::fleet::FleetStatus;
use crate::process::accept::accept_until_stopped;
use crate::process::http_handover::HttpInbox;
use crate::process::proxy_protocol::ProxyProtocol;
use crate::process::runtime_thread;
use crate::process::status::ServerStatus;
use crate::process::tls::TlsCertificates;
use crate::proto::source::SourceKey;
use crate::signaling::{Hub, IceConfig};
use app::{Access, App, ConnectionSlot};
use limits::{Admission, ConnectionTable, MONITORING_PATHS};

/// Time from accept a client has to send its PROXY header (from a listed
/// proxy), finish its TLS handshake and send its first request's headers,
/// all together; then, on a keep-alive connection, to send each next
/// request's headers.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The same on a monitoring slot, which must not be held long: a scraper
/// sends its request at once.
const MONITORING_TIMEOUT: Duration = Duration::from_secs(2);

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
    /// The bound address of `listen.http` (port 0 resolved); `None` when
    /// it serves only the connections of shared TLS ports.
    pub addr: Option<SocketAddr>,
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

/// Where the HTTP endpoint takes its connections from: a listener of
/// its own (`listen.http`), the HTTP connections of shared TLS ports
/// (`signaling.share_tls_port`, see [`handed`]), or both.
pub struct HttpSources {
    pub listen: Option<SocketAddr>,
    pub handed: Option<HttpInbox>,
}

/// Binds `sources.listen` and serves it and `sources.handed`, with the
/// signaling rooms of `hub` at `/ws`, and `fleet` (with `[fleet]`) for
/// `/readyz` and `/metrics`; `certificates` is required when
/// `signaling.tls` is on and there is a listener.
pub fn start(
    config: &Config,
    sources: HttpSources,
    hub: Arc<Hub>,
    fleet: Option<Arc<FleetStatus>>,
    certificates: Option<Arc<TlsCertificates>>,
    status: ServerStatus,
) -> Result<HttpServer, HttpError> {
    let signaling = &config.signaling;
    let HttpSources { listen, handed } = sources;
    let tls = match signaling.tls && listen.is_some() {
        true => Some(certificates.clone().ok_or(HttpError::NoCertificate)?),
        false => None,
    };
    let listener = listen
        .map(|addr| {
            let listener = std::net::TcpListener::bind(addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|source| HttpError::Bind { addr, source })?;
            let bound = listener
                .local_addr()
                .map_err(|source| HttpError::Bind { addr, source })?;
            Ok((listener, bound))
        })
        .transpose()?;
    let bound = listener.as_ref().map(|(_, bound)| *bound);
    let connections = Arc::new(Mutex::new(ConnectionTable::new(
        signaling.max_connections,
        signaling.max_connections_per_source,
    )));
    let proxy = status.proxy_protocol();
    let app = Arc::new(App {
        metrics: metrics::registry(
            status.clone(),
            hub.clone(),
            fleet.clone(),
            connections.clone(),
            handed.as_ref().map(|h| h.counts.clone()),
            certificates.clone(),
        ),
        hub,
        fleet,
        status,
        certificates: certificates.clone(),
        access: RwLock::new(Arc::new(Access::from_config(config))),
        self_check: tokio::sync::Mutex::new(None),
    });
    let handle = app.clone();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let thread = runtime_thread::spawn("turnpike-http", "HTTP", move |runtime| {
        runtime.spawn(app.hub.clone().run_timers());
        let router = router(app);
        let listening = async {
            if let Some((listener, _)) = listener {
                accept_loop(
                    listener,
                    router.clone(),
                    tls,
                    connections.clone(),
                    proxy,
                    stopped.clone(),
                )
                .await;
            }
        };
        let handing = async {
            if let Some(handed) = handed {
                handed::serve(handed.queue, router.clone(), connections.clone(), stopped.clone()).await;
            }
        };
        runtime.block_on(async { tokio::join!(listening, handing) });
    })
    .map_err(HttpError::Thread)?;
    if let Some(addr) = bound {
        info!(%addr, tls = signaling.tls, "signaling and demo page listening");
    }
    Ok(HttpServer {
        addr: bound,
        app: handle,
        stop,
        thread,
    })
}

fn router(app: Arc<App>) -> Router {
    page::routes(Router::new())
        .route("/ws", get(ws::ws))
        .route("/ice-servers", get(ice_servers::list).options(ice_servers::preflight))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::text))
        .route("/.well-known/acme-challenge/{token}", get(acme::http_01))
        .route("/test/self-check", get(self_check::self_check))
        .with_state(app)
}

async fn accept_loop(
    listener: std::net::TcpListener,
    router: Router,
    tls: Option<Arc<TlsCertificates>>,
    connections: Arc<Mutex<ConnectionTable>>,
    proxy: Arc<ProxyProtocol>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => return warn!("HTTP listener: {e}"),
    };
    loop {
        let Some((stream, remote)) = accept_until_stopped(&listener, &mut stopped, "HTTP").await else {
            return;
        };
        // The one deadline of everything before the first request starts
        // now.
        let accepted = tokio::time::Instant::now();
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        // A trusted proxy is no source of its own: its connections take
        // their places under the client its header names, once read.
        let early = match proxy.trusts(remote.ip()) {
            true => None,
            false => match admit(&connections, remote, local) {
                Some(slot) => Some(slot),
                None => continue,
            },
        };
        let (router, tls, proxy, connections) = (router.clone(), tls.clone(), proxy.clone(), connections.clone());
        tokio::spawn(async move {
            let mut stream = stream;
            // Until the header names the client, a trusted proxy's
            // connection has no slot: it gets the general deadline, and the
            // monitoring one is checked once it has a slot.
            let header_deadline = accepted + early.as_ref().map_or(HANDSHAKE_TIMEOUT, |s| timeout_of(s.admission()));
            // Before TLS and hyper: nothing past the header is read.
            let remote = match proxy.accept(&mut stream, remote, header_deadline).await {
                Ok(client) => client,
                Err(e) => return debug!(%remote, error = %e, "HTTP connection refused (PROXY protocol)"),
            };
            let Some(slot) = early.or_else(|| admit(&connections, remote, local)) else {
                return;
            };
            let deadline = accepted + timeout_of(slot.admission());
            let _ = stream.set_nodelay(true);
            match tls {
                None => serve_connection(stream, router, slot, deadline).await,
                Some(certificates) => {
                    match tokio::time::timeout_at(deadline, certificates.accept(stream, false)).await {
                        Ok(Ok(Some(stream))) => serve_connection(stream, router, slot, deadline).await,
                        // The CA's TLS-ALPN-01 validation, answered.
                        Ok(Ok(None)) => {}
                        Ok(Err(e)) => debug!(%remote, "HTTPS handshake failed: {e}"),
                        Err(_) => debug!(%remote, "HTTPS handshake timed out"),
                    }
                }
            }
        });
    }
}

/// A place in the connection table for a connection from `remote` to
/// `local`, or `None` (logged; dropping the stream closes it, nothing is
/// read or kept).
fn admit(connections: &Arc<Mutex<ConnectionTable>>, remote: SocketAddr, local: SocketAddr) -> Option<ConnectionSlot> {
    let source = SourceKey::from(remote.ip());
    let admitted = connections.lock().unwrap_or_else(|e| e.into_inner()).admit(source);
    match admitted {
        Ok(admission) => Some(ConnectionSlot::new(connections.clone(), source, admission, local)),
        Err(refusal) => {
            debug!(%remote, ?refusal, "HTTP connection refused at accept");
            None
        }
    }
}

/// Time from accept to the first request's headers, and then for each
/// next request's headers.
fn timeout_of(admission: Admission) -> Duration {
    match admission {
        Admission::General => HANDSHAKE_TIMEOUT,
        Admission::Monitoring => MONITORING_TIMEOUT,
    }
}

/// Serves one connection, whose first request's headers must be read by
/// `first_by` (the connection is closed then otherwise). On a monitoring
/// slot only [`MONITORING_PATHS`] are answered (anything else gets 503)
/// and the connection closes after one request.
async fn serve_connection<S>(stream: S, router: Router, slot: ConnectionSlot, first_by: tokio::time::Instant)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let monitoring_only = slot.admission() == Admission::Monitoring;
    let timeout = timeout_of(slot.admission());
    // Set when hyper has read the first request's headers (it calls the
    // service right after).
    let started = Arc::new(AtomicBool::new(false));
    let service = hyper::service::service_fn({
        let started = started.clone();
        move |mut request: axum::http::Request<hyper::body::Incoming>| {
            started.store(true, Ordering::Relaxed);
            request.extensions_mut().insert(slot.clone());
            let mut router = router.clone();
            async move {
                if monitoring_only && !MONITORING_PATHS.contains(&request.uri().path()) {
                    let busy = (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the server is at its connection limit\n",
                    );
                    return Ok::<_, Infallible>(busy.into_response());
                }
                tower::Service::call(&mut router, request).await
            }
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(timeout)
        .keep_alive(!monitoring_only)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    // hyper's own header timeout starts afresh when it starts reading a
    // request; the first one's headers are also held to `first_by`.
    let ended = tokio::select! {
        ended = &mut connection => ended,
        () = tokio::time::sleep_until(first_by) => match started.load(Ordering::Relaxed) {
            true => connection.await,
            false => return debug!("HTTP request headers not read by the deadline from accept; closing"),
        },
    };
    if let Err(e) = ended {
        debug!("HTTP connection ended: {e}");
    }
}

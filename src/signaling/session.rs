//! One WebSocket session of `/ws`: the driver of the [`Switchboard`] for
//! one socket.
//!
//! Each session owns its socket and runs one loop that reads the client,
//! hands its frames to the switchboard (through the [`Hub`]), writes what
//! the switchboard queued for it, pings on a timer and watches the
//! heartbeat deadline.
//!
//! Bounds: the switchboard's (outbox bytes, message size and rate). Every
//! write to the socket is bounded by the heartbeat timeout *and* raced
//! against the session's wake-up, so a session evicted while its client
//! does not read ends at once instead of after a blocked write. Writes are
//! done [`SEND_BUDGET`] at a time between reads, so a busy outbox does not
//! keep the client's own frames or the heartbeat from being looked at.
//! Whatever way a socket ends, its session leaves its room and the others
//! are told at once (an evicted one was already), unless the session holds
//! a resume token (v1.1) and the socket ended without the client's close
//! frame (a reset, an error, a missed heartbeat: what a network blip looks
//! like): then [`Switchboard::disconnect_at`] keeps it for the grace
//! period, and the hub keeps the connection's place in the connection
//! table for it. A close frame (a tab closed sends 1001) is a leave.
//!
//! A text frame that is not UTF-8 closes the socket with 1007 (RFC 6455
//! §7.4.1), as the protocol has no way to answer it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::debug;

use super::hub::{ConnectionPlace, Hub};
use super::protocol::ErrorCode;
pub use super::switchboard::Handshake;
use super::switchboard::Outgoing;
#[cfg(doc)]
use super::switchboard::Switchboard;
use crate::process::clock;
use crate::proto::source::SourceKey;

/// WebSocket close code for a policy violation (RFC 6455 §7.4.1).
const CLOSE_POLICY: u16 = 1008;
/// WebSocket close code for data that does not match its type, such as a
/// text frame that is not UTF-8 (RFC 6455 §7.4.1).
const CLOSE_INVALID_DATA: u16 = 1007;
/// WebSocket close code for a normal end (RFC 6455 §7.4.1).
const CLOSE_NORMAL: u16 = 1000;

/// Messages written in a row before the session looks at its client again.
const SEND_BUDGET: usize = 16;

/// What the token check before the upgrade decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    /// No valid token where one is required: one `unauthorized`, then close.
    Refused,
    /// Let in; with a room, only that room may be joined.
    Granted { room: Option<String> },
}

/// Runs one session until the client leaves or is dropped. `handshake`
/// is what the upgrade request said: its Host header (for the ICE server
/// URLs) and its Origin (a resume must come with the same), `source` the address
/// it counts against, `place` the connection's place in the connection
/// table: given back when the session ends, or kept by the hub while the
/// session is detached for resume.
pub async fn run(
    mut socket: WebSocket,
    hub: Arc<Hub>,
    handshake: Handshake,
    source: SourceKey,
    authorization: Authorization,
    place: ConnectionPlace,
) {
    let limits = hub.limits.clone();
    let write_limit = limits.heartbeat_timeout;
    let room_grant = match authorization {
        Authorization::Granted { room } => room,
        Authorization::Refused => {
            let text = hub.with(|board| board.error_text(ErrorCode::Unauthorized, "a valid ?token= is required"));
            if send_bounded(&mut socket, Message::Text(text.into()), write_limit)
                .await
                .is_ok()
            {
                let close = CloseFrame {
                    code: CLOSE_POLICY,
                    reason: "unauthorized".into(),
                };
                let _ = send_bounded(&mut socket, Message::Close(Some(close)), write_limit).await;
            }
            return;
        }
    };
    let (id, wake) = hub.connect(source, room_grant, handshake);
    let mut ping = tokio::time::interval_at(Instant::now() + limits.ping_interval, limits.ping_interval);
    let heartbeat = tokio::time::sleep(limits.heartbeat_timeout);
    tokio::pin!(heartbeat);
    let mut evicted = false;
    let mut close: Option<CloseFrame> = None;
    let mut clean_close = false;
    'session: loop {
        // Write what is queued, a budget at a time.
        let mut more = true;
        for _ in 0..SEND_BUDGET {
            match hub.with(|board| board.poll_outgoing(&id)) {
                Outgoing::Gone => {
                    evicted = true;
                    break 'session;
                }
                Outgoing::Idle => {
                    more = false;
                    break;
                }
                Outgoing::Message(text) => {
                    let message = Message::Text(text.as_ref().into());
                    if let Err(ended) = send(&mut socket, message, write_limit, &hub, &id, &wake).await {
                        evicted = ended == Ended::Evicted;
                        break 'session;
                    }
                }
            }
        }
        tokio::select! {
            frame = socket.recv() => {
                heartbeat.as_mut().reset(Instant::now() + limits.heartbeat_timeout);
                let frame = match frame {
                    Some(Ok(frame)) => frame,
                    Some(Err(e)) => {
                        // tungstenite refuses a text frame that is not
                        // UTF-8 with its Utf8 error; axum passes it on
                        // boxed, so it is known by its message.
                        if e.to_string().contains("UTF-8") {
                            debug!(conn = %id, "signaling text frame is not UTF-8; closing with 1007");
                            close = Some(CloseFrame {
                                code: CLOSE_INVALID_DATA,
                                reason: "text frame is not valid UTF-8".into(),
                            });
                        }
                        break;
                    }
                    None => break,
                };
                match frame {
                    Message::Text(text) => {
                        let mut mint = hub.mint();
                        hub.with(|board| board.handle_text_with(&id, text.as_str(), clock::mono(), &mut mint));
                    }
                    Message::Binary(_) => hub.with(|board| board.handle_binary(&id, clock::mono())),
                    Message::Close(_) => {
                        // A clean close is the client going away on
                        // purpose (a closed tab sends 1001): a leave, with
                        // no grace period. A blip sends no close frame.
                        clean_close = true;
                        break;
                    }
                    Message::Ping(_) | Message::Pong(_) => {}
                }
            }
            () = wake.notified() => {}
            () = std::future::ready(()), if more => {}
            _ = ping.tick() => {
                if let Err(ended) = send(&mut socket, Message::Ping(Default::default()), write_limit, &hub, &id, &wake).await {
                    evicted = ended == Ended::Evicted;
                    break;
                }
            }
            () = &mut heartbeat => {
                debug!(peer = %id, "signaling heartbeat missed; dropping the session");
                break;
            }
        }
    }
    let replaced = hub.disconnect(&id, clean_close, place);
    if replaced {
        close = Some(CloseFrame {
            code: CLOSE_NORMAL,
            reason: "resumed on another connection".into(),
        });
    } else if evicted {
        close = Some(CloseFrame {
            code: CLOSE_POLICY,
            reason: "too slow: messages were not read".into(),
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.send(Message::Close(close))).await;
}

/// Why a write did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The socket failed or the write took longer than its limit.
    Socket,
    /// The session was evicted while the write was pending.
    Evicted,
}

/// Writes `message` within `limit`, giving up at once if the session is
/// evicted meanwhile (a client that does not read can hold a write
/// forever; its eviction must not wait for that).
async fn send(
    socket: &mut WebSocket,
    message: Message,
    limit: Duration,
    hub: &Hub,
    id: &str,
    wake: &Notify,
) -> Result<(), Ended> {
    let write = send_bounded(socket, message, limit);
    tokio::pin!(write);
    loop {
        tokio::select! {
            written = &mut write => return written.map_err(|()| Ended::Socket),
            // Any wake-up may be the eviction; others are looked at by the
            // caller's next poll of the outbox.
            () = wake.notified() => {
                if hub.with(|board| board.is_gone(id)) {
                    return Err(Ended::Evicted);
                }
            }
        }
    }
}

async fn send_bounded(socket: &mut WebSocket, message: Message, limit: Duration) -> Result<(), ()> {
    match tokio::time::timeout(limit, socket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

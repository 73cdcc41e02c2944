//! The tests' signaling client: a WebSocket (tokio-tungstenite, independent
//! of the server's code) speaking the JSON messages of `docs/signaling.md`,
//! every wait bounded by [`PATIENCE`].

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::common::TestServer;

/// Nothing a signaling test waits for should take longer than this.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// A WebSocket to the signaling endpoint, over `S` (by default the plain
/// TCP stream `connect_async` opens).
pub struct WsClient<S = MaybeTlsStream<tokio::net::TcpStream>> {
    pub ws: WebSocketStream<S>,
    /// Messages read other than `joined` and `resumed` (what a `resume`
    /// reports as read).
    pub read: u64,
}

/// What a `join` adds to `{"type": "join", "room": …}`: a name, or any
/// fields (e.g. `{"resume": true}`).
pub trait JoinWith {
    fn fields(self) -> Value;
}

impl JoinWith for &str {
    fn fields(self) -> Value {
        json!({ "name": self })
    }
}

impl JoinWith for &String {
    fn fields(self) -> Value {
        self.as_str().fields()
    }
}

impl JoinWith for Value {
    fn fields(self) -> Value {
        self
    }
}

/// A WebSocket to `/ws` of `server`.
pub async fn connect(server: &TestServer) -> WsClient {
    connect_url(&format!("ws://{}/ws", server.http_addr())).await
}

/// A WebSocket to `url`.
pub async fn connect_url(url: &str) -> WsClient {
    let (ws, _) = tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(url))
        .await
        .expect("WebSocket handshake within 5 s")
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    WsClient::new(ws)
}

/// A WebSocket to `/ws` of `server` with `headers` set (e.g. Origin, or a
/// Host naming another site); the HTTP status if the upgrade is refused.
pub async fn connect_with(server: &TestServer, headers: &[(&str, &str)]) -> Result<WsClient, u16> {
    let mut request = format!("ws://{}/ws", server.http_addr())
        .into_client_request()
        .expect("request");
    for (name, value) in headers {
        request.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            value.parse().expect("header value"),
        );
    }
    match tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(request))
        .await
        .expect("handshake answered within 5 s")
    {
        Ok((ws, _)) => Ok(WsClient::new(ws)),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("WebSocket handshake failed: {e}"),
    }
}

/// The `id` of a `joined` (or `peer-joined`) message.
pub fn id_of(joined: &Value) -> String {
    joined["id"].as_str().expect("an id").to_owned()
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsClient<S> {
    pub fn new(ws: WebSocketStream<S>) -> WsClient<S> {
        WsClient { ws, read: 0 }
    }

    pub async fn send(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send a text frame");
    }

    /// The next text message as JSON (pings are answered by the library).
    pub async fn recv(&mut self) -> Value {
        self.try_recv(PATIENCE).await.expect("a message within 5 s")
    }

    /// The next text message, or `None` if none comes within `wait` or the
    /// socket closes; counted in `read` unless it is `joined` or `resumed`.
    pub async fn try_recv(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await.ok()?? {
                Ok(Message::Text(text)) => {
                    let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
                    if value["type"] != "joined" && value["type"] != "resumed" {
                        self.read += 1;
                    }
                    return Some(value);
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// Asserts that nothing arrives for a while.
    pub async fn quiet(&mut self, what: &str) {
        if let Some(message) = self.try_recv(Duration::from_millis(300)).await {
            panic!("{what}: got {message}");
        }
    }

    /// Asserts that the next message is an error with `code`.
    pub async fn expect_error(&mut self, code: &str) {
        let message = self.recv().await;
        assert_eq!(message["type"], "error", "{message}");
        assert_eq!(message["code"], code, "{message}");
        assert!(message["message"].as_str().is_some_and(|m| !m.is_empty()), "{message}");
    }

    /// Asserts that the next message is `signal` from `from` with `data`.
    pub async fn expect_signal(&mut self, from: &str, data: Value) {
        assert_eq!(self.recv().await, json!({"type": "signal", "from": from, "data": data}));
    }

    /// Asserts that the socket still answers a ping.
    pub async fn assert_usable(&mut self) {
        self.send(json!({"type": "ping"})).await;
        assert_eq!(self.recv().await, json!({"type": "pong"}));
    }

    /// Joins `room` as a name, or with the fields given, and returns the
    /// `joined` message.
    pub async fn join(&mut self, room: &str, with: impl JoinWith) -> Value {
        let mut message = json!({"type": "join", "room": room});
        if let (Some(m), Some(fields)) = (message.as_object_mut(), with.fields().as_object()) {
            m.extend(fields.clone());
        }
        self.send(message).await;
        let joined = self.recv().await;
        assert_eq!(joined["type"], "joined", "{joined}");
        assert_eq!(joined["room"], room);
        joined
    }

    pub async fn signal(&mut self, to: &str, data: Value) {
        self.send(json!({"type": "signal", "to": to, "data": data})).await;
    }

    /// True once the server has closed the socket (within 5 s).
    pub async fn closed(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return false,
                Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return true,
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// The close code the server sends, within 5 s.
    pub async fn close_code(&mut self) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
                Ok(Some(Ok(_))) => continue,
                Ok(None) | Ok(Some(Err(_))) | Err(_) => return None,
            }
        }
    }
}

/// The TCP connection under a WebSocket is dropped without a close frame,
/// as a network blip (or a killed proxy) would.
pub fn cut(client: WsClient) {
    match client.ws.into_inner() {
        MaybeTlsStream::Plain(tcp) => drop(tcp),
        _ => unreachable!("plain ws:// in these tests"),
    }
}

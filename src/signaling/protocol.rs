//! Signaling protocol v1 and v1.1: the JSON messages of `/ws` (docs/design.md,
//! "Signaling protocol v1"; `docs/signaling.md` for both).
//!
//! Client messages are parsed leniently (unknown fields are ignored, so a
//! newer client can add some) but strictly in what they need: a `join`
//! needs a valid room name, a `signal` needs `to` and `data`. `data` is
//! kept as raw JSON and relayed byte for byte, never re-encoded; every JSON
//! value counts, `null` included (only a missing `data` is refused).
//! Anything else is a [`ErrorCode::BadMessage`].
//!
//! The additions of protocol v1.1 (`docs/signaling.md`) are opt-in: the
//! `resume` and `iceRefresh` flags of `join`, and the `resume` and `ack`
//! messages. A client that uses none of them sees exactly v1.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Longest room name, in characters.
pub const MAX_ROOM_LEN: usize = 64;
/// Longest display name, in characters.
pub const MAX_NAME_LEN: usize = 64;

/// A message from a client.
#[derive(Debug)]
pub enum ClientMessage {
    /// `resume` asks for a resume token (v1.1), `ice_refresh` for fresh
    /// `iceServers` before the credential expires (v1.1).
    Join {
        room: String,
        name: Option<String>,
        resume: bool,
        ice_refresh: bool,
    },
    Signal {
        to: String,
        data: Box<RawValue>,
    },
    Leave,
    Ping,
    /// v1.1: take over the session `token` names; `last` is the number of
    /// messages the client read after its `joined`.
    Resume {
        token: String,
        last: u64,
    },
    /// v1.1: the client has read `seq` messages after its `joined`.
    Ack {
        seq: u64,
    },
}

/// Longest resume token accepted, in bytes (tokens minted are 32).
pub const MAX_TOKEN_LEN: usize = 128;

/// The wire shape of every client message. Parsed as one flat struct
/// rather than an internally tagged enum because serde cannot keep `data`
/// raw inside a tagged enum.
#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    room: Option<String>,
    name: Option<String>,
    to: Option<String>,
    /// `Some` for any JSON value, `null` included; `None` only when absent
    /// (a plain `Option` would read `null` as absent).
    #[serde(default, deserialize_with = "present")]
    data: Option<Box<RawValue>>,
    // The v1.1 fields are read as any JSON, so that a v1 message carrying
    // a field of that name with another type still parses as before.
    resume: Option<serde_json::Value>,
    #[serde(rename = "iceRefresh")]
    ice_refresh: Option<serde_json::Value>,
    token: Option<serde_json::Value>,
    last: Option<serde_json::Value>,
    seq: Option<serde_json::Value>,
}

/// Reads a field that is present as `Some`, whatever JSON it holds.
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(deserializer).map(Some)
}

impl ClientMessage {
    /// Parses one text frame; the error says what is wrong, for the
    /// `bad-message` answer.
    pub fn parse(text: &str) -> Result<ClientMessage, String> {
        let envelope: Envelope = serde_json::from_str(text).map_err(|e| format!("not a valid message: {e}"))?;
        match envelope.kind.as_str() {
            "join" => {
                let room = envelope.room.ok_or("join needs a room")?;
                if !is_valid_room(&room) {
                    return Err(format!(
                        "room must be 1 to {MAX_ROOM_LEN} characters of A-Z, a-z, 0-9, '_' and '-'"
                    ));
                }
                let name = envelope.name.filter(|n| !n.is_empty());
                if let Some(name) = &name {
                    if name.chars().count() > MAX_NAME_LEN || name.chars().any(char::is_control) {
                        return Err(format!(
                            "name must be at most {MAX_NAME_LEN} characters, none of them control characters"
                        ));
                    }
                }
                let resume = envelope.resume == Some(serde_json::Value::Bool(true));
                let ice_refresh = envelope.ice_refresh == Some(serde_json::Value::Bool(true));
                Ok(ClientMessage::Join {
                    room,
                    name,
                    resume,
                    ice_refresh,
                })
            }
            "signal" => Ok(ClientMessage::Signal {
                to: envelope.to.ok_or("signal needs \"to\"")?,
                data: envelope.data.ok_or("signal needs \"data\"")?,
            }),
            "leave" => Ok(ClientMessage::Leave),
            "ping" => Ok(ClientMessage::Ping),
            "resume" => {
                let token = match envelope.token {
                    Some(serde_json::Value::String(token)) if !token.is_empty() && token.len() <= MAX_TOKEN_LEN => {
                        token
                    }
                    _ => {
                        return Err(format!(
                            "resume needs \"token\", a string of 1 to {MAX_TOKEN_LEN} bytes"
                        ))
                    }
                };
                let last = envelope.last.as_ref().and_then(serde_json::Value::as_u64);
                Ok(ClientMessage::Resume {
                    token,
                    last: last.ok_or("resume needs \"last\", a message count")?,
                })
            }
            "ack" => Ok(ClientMessage::Ack {
                seq: envelope
                    .seq
                    .as_ref()
                    .and_then(serde_json::Value::as_u64)
                    .ok_or("ack needs \"seq\", a message count")?,
            }),
            other => Err(format!(
                "unknown type {:?}; expected join, signal, leave, ping, resume or ack",
                other.chars().take(32).collect::<String>()
            )),
        }
    }
}

/// 1 to 64 characters of `[A-Za-z0-9_-]`.
pub fn is_valid_room(room: &str) -> bool {
    (1..=MAX_ROOM_LEN).contains(&room.len())
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The error codes of protocol v1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    BadMessage = 0,
    RoomFull = 1,
    NotInRoom = 2,
    UnknownPeer = 3,
    TooLarge = 4,
    RateLimited = 5,
    Unauthorized = 6,
    /// v1.1: a `resume` whose token is unknown or expired, or whose
    /// messages can no longer all be replayed; join afresh.
    ResumeFailed = 7,
}

impl ErrorCode {
    /// Every code, in discriminant order, as sent on the wire.
    pub const ALL: [&'static str; 8] = [
        "bad-message",
        "room-full",
        "not-in-room",
        "unknown-peer",
        "too-large",
        "rate-limited",
        "unauthorized",
        "resume-failed",
    ];
}

/// One entry of `peers`.
#[derive(Debug, Clone, Serialize)]
pub struct PeerInfo {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// An RTCIceServer dictionary (W3C WebRTC §4.2.2).
#[derive(Debug, Clone, Serialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// The `resume` object of `joined` and `resumed`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ResumeGrant<'a> {
    /// Secret: whoever holds it may take the session over.
    pub token: &'a str,
    /// Seconds the room keeps the session after its socket drops.
    pub grace: u64,
}

/// A message to a client.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerMessage<'a> {
    Joined {
        room: &'a str,
        id: &'a str,
        peers: &'a [PeerInfo],
        #[serde(rename = "iceServers")]
        ice_servers: &'a [IceServer],
        /// v1.1, only when the join asked for it.
        #[serde(skip_serializing_if = "Option::is_none")]
        resume: Option<ResumeGrant<'a>>,
    },
    /// v1.1: the answer to a successful `resume`; what the session missed
    /// follows it, in order.
    Resumed {
        room: &'a str,
        id: &'a str,
        resume: ResumeGrant<'a>,
        /// Client frames the server read after `joined`, across sockets.
        received: u64,
    },
    /// v1.1: fresh `iceServers`, pushed before the previous credential
    /// expires to sessions that joined with `iceRefresh`.
    IceServers {
        #[serde(rename = "iceServers")]
        ice_servers: &'a [IceServer],
    },
    PeerJoined {
        id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<&'a str>,
    },
    PeerLeft {
        id: &'a str,
    },
    Signal {
        from: &'a str,
        data: &'a RawValue,
    },
    Pong,
    Error {
        code: ErrorCode,
        message: &'a str,
    },
}

impl ServerMessage<'_> {
    pub fn to_json(&self) -> String {
        // Serializing these plain structs cannot fail: every map key is a
        // string and there are no foreign Serialize impls.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_client_message() {
        assert!(matches!(
            ClientMessage::parse(r#"{"type":"join","room":"a-b_1","name":"Ann"}"#),
            Ok(ClientMessage::Join { room, name: Some(name), resume: false, ice_refresh: false }) if room == "a-b_1" && name == "Ann"
        ));
        assert!(matches!(
            ClientMessage::parse(r#"{"type":"join","room":"r"}"#),
            Ok(ClientMessage::Join { name: None, .. })
        ));
        match ClientMessage::parse(r#"{"type":"signal","to":"x","data":{"sdp": "v=0", "n": [1, 2.5]}}"#) {
            Ok(ClientMessage::Signal { to, data }) => {
                assert_eq!(to, "x");
                assert_eq!(data.get(), r#"{"sdp": "v=0", "n": [1, 2.5]}"#, "data is kept verbatim");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            ClientMessage::parse(r#"{"type":"leave"}"#),
            Ok(ClientMessage::Leave)
        ));
        assert!(matches!(
            ClientMessage::parse(r#"{"type":"ping","extra":1}"#),
            Ok(ClientMessage::Ping)
        ));
    }

    #[test]
    fn refuses_malformed_messages() {
        let long_room = format!(r#"{{"type":"join","room":"{}"}}"#, "r".repeat(65));
        let long_name = format!(r#"{{"type":"join","room":"r","name":"{}"}}"#, "n".repeat(65));
        for bad in [
            "",
            "not json",
            "[]",
            "{}",
            r#"{"type":5}"#,
            r#"{"type":"join"}"#,
            r#"{"type":"join","room":""}"#,
            r#"{"type":"join","room":"a b"}"#,
            r#"{"type":"join","room":"é"}"#,
            r#"{"type":"join","room":"r","name":"a\nb"}"#,
            &long_room,
            &long_name,
            r#"{"type":"signal","to":"x"}"#,
            r#"{"type":"signal","data":1}"#,
            r#"{"type":"fly"}"#,
        ] {
            assert!(ClientMessage::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn parses_the_v1_1_additions_and_leaves_v1_alone() {
        assert!(matches!(
            ClientMessage::parse(r#"{"type":"join","room":"r","resume":true,"iceRefresh":true}"#),
            Ok(ClientMessage::Join {
                resume: true,
                ice_refresh: true,
                ..
            })
        ));
        assert!(
            matches!(
                ClientMessage::parse(r#"{"type":"join","room":"r","resume":"yes","iceRefresh":1}"#),
                Ok(ClientMessage::Join {
                    resume: false,
                    ice_refresh: false,
                    ..
                })
            ),
            "only true asks"
        );
        assert!(matches!(
            ClientMessage::parse(r#"{"type":"resume","token":"abc","last":7}"#),
            Ok(ClientMessage::Resume { token, last: 7 }) if token == "abc"
        ));
        assert!(matches!(
            ClientMessage::parse(r#"{"type":"ack","seq":3}"#),
            Ok(ClientMessage::Ack { seq: 3 })
        ));
        match ClientMessage::parse(r#"{"type":"signal","to":"x","data":null,"seq":"not a number","token":5}"#) {
            Ok(ClientMessage::Signal { data, .. }) => assert_eq!(data.get(), "null"),
            other => panic!("a v1 signal with odd extra fields: {other:?}"),
        }
        let long = format!(r#"{{"type":"resume","token":"{}","last":0}}"#, "t".repeat(129));
        for bad in [
            r#"{"type":"resume","last":0}"#,
            r#"{"type":"resume","token":"","last":0}"#,
            r#"{"type":"resume","token":5,"last":0}"#,
            r#"{"type":"resume","token":"t"}"#,
            r#"{"type":"resume","token":"t","last":-1}"#,
            r#"{"type":"ack"}"#,
            r#"{"type":"ack","seq":"1"}"#,
            &long,
        ] {
            assert!(ClientMessage::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn server_messages_have_the_documented_shape() {
        let data = RawValue::from_string(r#"{"candidate":"c"}"#.to_owned()).unwrap();
        assert_eq!(
            ServerMessage::Signal {
                from: "p1",
                data: &data
            }
            .to_json(),
            r#"{"type":"signal","from":"p1","data":{"candidate":"c"}}"#
        );
        assert_eq!(
            ServerMessage::Error {
                code: ErrorCode::RoomFull,
                message: "full"
            }
            .to_json(),
            r#"{"type":"error","code":"room-full","message":"full"}"#
        );
        assert_eq!(
            ServerMessage::PeerJoined { id: "p", name: None }.to_json(),
            r#"{"type":"peer-joined","id":"p"}"#
        );
        let peers = [PeerInfo {
            id: "a".into(),
            name: Some("A".into()),
        }];
        let ice = [IceServer {
            urls: vec!["stun:h:1".into()],
            username: None,
            credential: None,
        }];
        assert_eq!(
            ServerMessage::Joined {
                room: "r",
                id: "b",
                peers: &peers,
                ice_servers: &ice,
                resume: None,
            }
            .to_json(),
            r#"{"type":"joined","room":"r","id":"b","peers":[{"id":"a","name":"A"}],"iceServers":[{"urls":["stun:h:1"]}]}"#
        );
        let grant = ResumeGrant { token: "t", grace: 30 };
        assert_eq!(
            ServerMessage::Resumed {
                room: "r",
                id: "b",
                resume: grant,
                received: 4
            }
            .to_json(),
            r#"{"type":"resumed","room":"r","id":"b","resume":{"token":"t","grace":30},"received":4}"#
        );
        assert_eq!(
            ServerMessage::IceServers { ice_servers: &ice }.to_json(),
            r#"{"type":"ice-servers","iceServers":[{"urls":["stun:h:1"]}]}"#
        );
    }

    /// Bounded stable-toolchain cousin of the `signal_message` fuzz target:
    /// mutated messages never panic the parser.
    #[test]
    fn mutated_messages_never_panic() {
        let seeds = [
            r#"{"type":"join","room":"room-1","name":"Alice"}"#,
            r#"{"type":"signal","to":"0123456789abcdef","data":{"sdp":"v=0","n":[1,{"a":null}]}}"#,
            r#"{"type":"leave"}"#,
        ];
        let mut rng = crate::proto::xorshift::XorShift::new(0x9e37_79b9_7f4a_7c15);
        let mut next = move || rng.next_u64();
        for i in 0..20_000 {
            let mut bytes = seeds[i % seeds.len()].as_bytes().to_vec();
            for _ in 0..1 + next() % 4 {
                let at = (next() % bytes.len() as u64) as usize;
                match next() % 3 {
                    0 => bytes[at] = next() as u8,
                    1 => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, b"{}[]\",:\\"[(next() % 8) as usize]),
                }
                if bytes.is_empty() {
                    break;
                }
            }
            let _ = ClientMessage::parse(&String::from_utf8_lossy(&bytes));
        }
    }
}

//! The `signal_message` target: signaling protocol v1 (and v1.1) client
//! messages.

use turnpike::signaling::protocol::{is_valid_room, ClientMessage, ServerMessage, MAX_NAME_LEN, MAX_TOKEN_LEN};

/// Parses `data` (as text, lossily) as a client message. Whatever parses
/// must satisfy the protocol's rules, and a relayed `data` must come out of
/// the server's `signal` message as the very same JSON text.
pub fn fuzz_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(message) = ClientMessage::parse(&text) else {
        return;
    };
    match message {
        ClientMessage::Join { room, name, .. } => {
            assert!(is_valid_room(&room), "accepted room {room:?}");
            if let Some(name) = name {
                assert!(!name.is_empty() && name.chars().count() <= MAX_NAME_LEN);
                assert!(!name.chars().any(char::is_control), "accepted name {name:?}");
            }
        }
        ClientMessage::Signal { to, data } => {
            let out = ServerMessage::Signal { from: &to, data: &data }.to_json();
            assert!(out.contains(data.get()), "data was re-encoded");
            // Syntactically JSON always; and where `data` is also valid for
            // a strict parser (lone surrogate escapes such as "\ud83d" are
            // in the JSON grammar but refused by serde_json's Value, while
            // browsers accept them), the relayed value is the same value.
            serde_json::from_str::<&serde_json::value::RawValue>(&out).expect("the server's message is JSON");
            if let Ok(relayed) = serde_json::from_str::<serde_json::Value>(data.get()) {
                let value: serde_json::Value = serde_json::from_str(&out).expect("strict JSON in, strict JSON out");
                assert_eq!(value["data"], relayed);
            }
        }
        ClientMessage::Resume { token, .. } => {
            assert!(
                !token.is_empty() && token.len() <= MAX_TOKEN_LEN,
                "accepted token {token:?}"
            );
        }
        ClientMessage::Leave | ClientMessage::Ping | ClientMessage::Ack { .. } => {}
    }
}

/// Seeds: one of each message and some near misses.
pub fn seeds() -> Vec<Vec<u8>> {
    [
        r#"{"type":"join","room":"room-1","name":"Alice"}"#,
        r#"{"type":"join","room":"r"}"#,
        r#"{"type":"signal","to":"0123456789abcdef","data":{"description":{"type":"offer","sdp":"v=0\r\n"}}}"#,
        r#"{"type":"signal","to":"x","data":{"candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ relay","sdpMid":"0"}}}"#,
        r#"{"type":"leave"}"#,
        r#"{"type":"ping"}"#,
        r#"{"type":"join","room":"r","resume":true,"iceRefresh":true}"#,
        r#"{"type":"resume","token":"Qm9iIGlzIGJhY2sgYWdhaW4","last":12}"#,
        r#"{"type":"ack","seq":12}"#,
        r#"{"type":"signal","to":"x","data":null}"#,
        r#"{"type":"join","room":"a b"}"#,
        r#"{"type":"signal","to":"x","data":"\ud83d\ude00"}"#,
        r#"{"type":"signal","to":"x","data":"\ud83dTude00"}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

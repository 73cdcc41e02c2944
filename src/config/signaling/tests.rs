//! The rules of `[signaling]`.

use crate::config::tests::{invalid_key, parse};

#[test]
fn signaling_settings_are_checked() {
    for (text, key) in [
        ("[signaling]\nroom_size = 1", "signaling.room_size"),
        ("[signaling]\nroom_size = 65", "signaling.room_size"),
        ("[signaling]\nmax_rooms = 0", "signaling.max_rooms"),
        ("[signaling]\nmax_message_size = 100", "signaling.max_message_size"),
        ("[signaling]\nmax_rooms = 1048577", "signaling.max_rooms"),
        (
            "[signaling]\nmax_rooms_per_source = 0",
            "signaling.max_rooms_per_source",
        ),
        (
            "[signaling]\nmax_connections = 9223372036854775807",
            "signaling.max_connections",
        ),
        ("[signaling]\nmax_connections = 0", "signaling.max_connections"),
        (
            "[signaling]\nmax_connections_per_source = 1048577",
            "signaling.max_connections_per_source",
        ),
        ("[signaling]\nmax_outbox_bytes = 1000", "signaling.max_outbox_bytes"),
        ("[signaling]\nmax_outbox_bytes = 67108865", "signaling.max_outbox_bytes"),
        ("[signaling]\nmessages_per_second = 0", "signaling.messages_per_second"),
        ("[signaling]\nping_interval = \"10ms\"", "signaling.ping_interval"),
        ("[signaling]\nresume_grace = \"11m\"", "signaling.resume_grace"),
        (
            "[signaling]\nping_interval = \"20s\"\nheartbeat_timeout = \"10s\"",
            "signaling.heartbeat_timeout",
        ),
        ("[signaling]\ntoken_secret = \" \"", "signaling.token_secret"),
        ("[signaling]\napi_key = \"\"", "signaling.api_key"),
        (
            "[signaling]\nallowed_origins = [\"app.example\"]",
            "signaling.allowed_origins[0]",
        ),
        (
            "[signaling]\nallowed_origins = [\"https://a.example/\"]",
            "signaling.allowed_origins[0]",
        ),
        ("[signaling]\nturn_host = \"a b\"", "signaling.turn_host"),
        ("[signaling]\nturn_ports = { tls = 0 }", "signaling.turn_ports.tls"),
        ("[signaling]\ntls = true", "signaling.tls"),
        ("[signaling]\nshare_tls_port = true", "signaling.share_tls_port"),
    ] {
        assert_eq!(invalid_key(text), key, "{text}");
    }
    let config = parse("[listen]\nhttp = \"off\"\n[signaling]\nturn_host = \"turn.example.org\"").unwrap();
    assert_eq!(config.listen.http, None);
    let error = parse("[listen]\nhttp = \"localhost\"").unwrap_err().to_string();
    assert!(error.contains("neither an address"), "{error}");
}

//! The operator's admin API (`[admin]`) against a running server: its key
//! check, the list of allocations against what the clients saw, ending an
//! allocation by id and all of a user's, revoking a username on every
//! transport and shard, the `turnpike admin` commands, connection slots
//! that callers without the key cannot hold against a key holder, and the
//! API on a Unix socket (`admin.socket`).
//!
//! HTTP is spoken by hand here (one request per connection), not with the
//! server's own client, so that a mistake in one is not hidden by the
//! same mistake in the other.

#![allow(clippy::disallowed_methods)] // waits in black-box tests use the real clock

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::{
    authenticated_request_as, code_of, free_tcp_port, http_exchange, rest_credential, run_with_timeout, tcp_connect,
    turnpike_bin, udp_request_as, unix_now, CmdOutput, ScratchDir, TestServer,
};
use serde_json::Value;
use turnpike::proto::stun::{attr, method, Message, MessageWriter};

const KEY: &str = "an-admin-key-for-tests-0123456789";
const SECRET: &str = "a-shared-secret-for-admin-tests";

/// A server with the admin API on a port of its own, short-lived
/// credentials under [`SECRET`], and `workers` shards.
fn start(workers: usize) -> (TestServer, SocketAddr) {
    let port = free_tcp_port();
    let admin = SocketAddr::from(([127, 0, 0, 1], port));
    let server = TestServer::start_with(
        &format!("workers = {workers}\n"),
        &format!("[auth]\nsecrets = [\"{SECRET}\"]\n\n[admin]\nlisten = \"{admin}\"\nkey = \"{KEY}\"\n"),
    );
    (server, admin)
}

/// Status and JSON body of one request to the admin API, with `key` as
/// the bearer token if given.
fn call(admin: SocketAddr, method: &str, path: &str, key: Option<&str>, body: Option<&str>) -> (u16, Value) {
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, text) = http_exchange(admin, &request);
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn get(admin: SocketAddr, path: &str) -> Value {
    let (status, body) = call(admin, "GET", path, Some(KEY), None);
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

fn allocations(admin: SocketAddr, query: &str) -> Vec<Value> {
    get(admin, &format!("/v1/allocations{query}"))["allocations"]
        .as_array()
        .cloned()
        .expect("an allocations list")
}

fn allocate_build(w: &mut MessageWriter<'_>) {
    w.bytes(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
}

/// An authenticated request of `method` over UDP from `socket`.
fn udp_request(socket: &UdpSocket, server: SocketAddr, user: &str, password: &str, method: u16) -> Vec<u8> {
    udp_request_as(socket, server, (user, password), method, |w| {
        if method == method::ALLOCATE {
            allocate_build(w);
        }
    })
}

fn udp_socket() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    socket
}

/// The relayed address of a successful Allocate answer.
fn relayed(answer: &[u8]) -> SocketAddr {
    assert_eq!(code_of(answer), 200, "Allocate refused");
    Message::parse(answer)
        .expect("STUN")
        .xor_address(attr::XOR_RELAYED_ADDRESS)
        .expect("XOR-RELAYED-ADDRESS")
        .expect("a valid address")
}

/// A UDP allocation as `user`: the client's socket and its relayed address.
fn udp_allocation(server: &TestServer, user: &str, password: &str) -> (UdpSocket, SocketAddr) {
    let socket = udp_socket();
    let relay = relayed(&udp_request(&socket, server.addr(), user, password, method::ALLOCATE));
    (socket, relay)
}

/// A TCP allocation as `user`: the client's connection and its relayed address.
fn tcp_allocation(server: &TestServer, user: &str, password: &str) -> (TcpStream, SocketAddr) {
    let mut stream = tcp_connect(server.addr());
    let answer = authenticated_request_as(&mut stream, user, password, method::ALLOCATE, allocate_build);
    (stream, relayed(&answer))
}

fn entry_of(list: &[Value], relay: SocketAddr) -> &Value {
    list.iter()
        .find(|a| {
            a["relays"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r == &relay.to_string()))
        })
        .unwrap_or_else(|| panic!("no allocation with relay {relay} in {list:?}"))
}

#[test]
fn the_admin_api_wants_its_key_and_says_nothing_without_it() {
    let (server, admin) = start(2);
    let (user, password) = rest_credential(SECRET, "alice", unix_now() + 3600);
    let (_socket, _relay) = udp_allocation(&server, &user, &password);
    let requests = [
        ("GET", "/v1/allocations", None),
        ("GET", "/v1/revocations", None),
        ("DELETE", "/v1/allocations/0-1", None),
        ("DELETE", "/v1/users/alice/allocations", None),
        ("POST", "/v1/revocations", Some(r#"{"username":"alice"}"#)),
    ];
    for (method, path, body) in requests {
        for key in [
            None,
            Some("wrong-key-wrong-key-wrong-key-00"),
            Some(&KEY[..KEY.len() - 1]),
        ] {
            let (status, answer) = call(admin, method, path, key, body);
            assert_eq!(status, 401, "{method} {path} with {key:?}: {answer}");
            let text = answer.to_string();
            assert!(!text.contains("alice") && !text.contains("allocations\":"), "{text}");
        }
    }
    // Nothing was ended or revoked by the refused requests.
    assert_eq!(allocations(admin, "").len(), 1);
    assert_eq!(get(admin, "/v1/revocations")["revocations"], serde_json::json!([]));
    assert_eq!(call(admin, "GET", "/v2/nothing", Some(KEY), None).0, 404);
    assert_eq!(call(admin, "PUT", "/v1/allocations", Some(KEY), None).0, 405);
    assert_eq!(
        call(admin, "DELETE", "/v1/allocations/nonsense", Some(KEY), None).0,
        400
    );
    assert_eq!(
        call(admin, "DELETE", "/v1/allocations/0-999999", Some(KEY), None).0,
        404
    );
    // The refusals are counted.
    server.assert_metrics_settle(&[(r#"turnpike_admin_requests_total{outcome="unauthorized"}"#, 15.0)]);
}

#[test]
fn allocations_are_listed_as_the_clients_see_them_and_ended_by_id_or_user() {
    let (server, admin) = start(2);
    let (alice, alice_pw) = rest_credential(SECRET, "alice", unix_now() + 3600);
    let (bob, bob_pw) = rest_credential(SECRET, "bob", unix_now() + 3600);
    let (udp, udp_relay) = udp_allocation(&server, &alice, &alice_pw);
    let (mut tcp, tcp_relay) = tcp_allocation(&server, &alice, &alice_pw);
    let (_bob_socket, bob_relay) = udp_allocation(&server, &bob, &bob_pw);

    let list = allocations(admin, "");
    assert_eq!(list.len(), 3, "{list:?}");
    let a = entry_of(&list, udp_relay);
    assert_eq!(a["user"], alice.as_str());
    assert_eq!(a["realm"], "turnpike");
    assert_eq!(a["transport"], "udp");
    assert_eq!(a["client"], udp.local_addr().unwrap().to_string());
    assert_eq!(a["server"], server.addr().to_string());
    assert!(a["expires_in_s"].as_u64().is_some_and(|s| s > 500 && s <= 600), "{a}");
    assert!(a["age_s"].as_u64().is_some_and(|s| s < 30), "{a}");
    let t = entry_of(&list, tcp_relay);
    assert_eq!(t["transport"], "tcp");
    assert_eq!(t["client"], tcp.local_addr().unwrap().to_string());
    let ids: Vec<&str> = list.iter().map(|a| a["id"].as_str().expect("an id")).collect();
    assert!(ids.iter().all(|id| id.split_once('-').is_some()), "{ids:?}");
    assert_eq!(
        allocations(admin, &format!("?user={}", bob.replace(':', "%3A"))).len(),
        1
    );

    // Ended by id: the client's next Refresh finds no allocation.
    let id = a["id"].as_str().expect("id").to_owned();
    let (status, body) = call(admin, "DELETE", &format!("/v1/allocations/{id}"), Some(KEY), None);
    assert_eq!((status, &body["ended"]), (200, &serde_json::json!(1)), "{body}");
    assert_eq!(
        code_of(&udp_request(&udp, server.addr(), &alice, &alice_pw, method::REFRESH)),
        437
    );
    assert_eq!(
        call(admin, "DELETE", &format!("/v1/allocations/{id}"), Some(KEY), None).0,
        404
    );
    // Its relay port is free again: the list no longer has it.
    assert!(allocations(admin, "").iter().all(|a| a["id"] != id.as_str()));

    // All of a user's: alice's TCP allocation goes, bob's stays.
    let (status, body) = call(
        admin,
        "DELETE",
        &format!("/v1/users/{}/allocations", alice.replace(':', "%3A")),
        Some(KEY),
        None,
    );
    assert_eq!((status, &body["ended"]), (200, &serde_json::json!(1)), "{body}");
    let refresh = authenticated_request_as(&mut tcp, &alice, &alice_pw, method::REFRESH, |_| {});
    assert_eq!(code_of(&refresh), 437);
    let left = allocations(admin, "");
    assert_eq!(left.len(), 1, "{left:?}");
    entry_of(&left, bob_relay);
    // The user may allocate again: ending is not revoking.
    let (_again, _) = udp_allocation(&server, &alice, &alice_pw);
}

#[test]
fn a_revoked_username_is_refused_on_every_transport_and_shard() {
    let (server, admin) = start(4);
    let (carol, carol_pw) = rest_credential(SECRET, "carol", unix_now() + 3600);
    let (dave, dave_pw) = rest_credential(SECRET, "dave", unix_now() + 3600);
    // Enough UDP clients that the kernel spreads them over several shards.
    let mut udp: Vec<(UdpSocket, SocketAddr)> = (0..8).map(|_| udp_allocation(&server, &carol, &carol_pw)).collect();
    let (_tcp, _) = tcp_allocation(&server, &carol, &carol_pw);
    let (_dave, _) = udp_allocation(&server, &dave, &dave_pw);
    let list = allocations(admin, "");
    let shards: std::collections::BTreeSet<&str> = list
        .iter()
        .filter_map(|a| a["id"].as_str()?.split_once('-').map(|(s, _)| s))
        .collect();
    assert!(shards.len() > 1, "all allocations landed on one shard: {list:?}");

    let body = serde_json::json!({ "username": carol }).to_string();
    let (status, answer) = call(admin, "POST", "/v1/revocations", Some(KEY), Some(&body));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["ended"], 9, "{answer}");
    assert_eq!(
        answer["until_unix"],
        carol.split(':').next().unwrap().parse::<u64>().unwrap()
    );
    let left = allocations(admin, "");
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["user"], dave.as_str());
    let revoked = get(admin, "/v1/revocations");
    assert_eq!(revoked["revocations"][0]["username"], carol.as_str(), "{revoked}");

    // Allocate is refused, 401 as for a bad credential, from every client
    // (so on every shard they landed on) and over UDP, TCP and TLS.
    for (socket, _) in &udp {
        assert_eq!(
            code_of(&udp_request(socket, server.addr(), &carol, &carol_pw, method::ALLOCATE)),
            401
        );
    }
    let fresh = udp_socket();
    assert_eq!(
        code_of(&udp_request(&fresh, server.addr(), &carol, &carol_pw, method::ALLOCATE)),
        401
    );
    let mut tcp = tcp_connect(server.addr());
    let answer = authenticated_request_as(&mut tcp, &carol, &carol_pw, method::ALLOCATE, allocate_build);
    assert_eq!(code_of(&answer), 401);
    let mut tls = server
        .ca()
        .connect(server.tls_addr(), rustls::DEFAULT_VERSIONS)
        .expect("TLS connection");
    tls.sock
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let answer = authenticated_request_as(&mut tls, &carol, &carol_pw, method::ALLOCATE, allocate_build);
    assert_eq!(code_of(&answer), 401);
    // Refresh too: the old 5-tuples have no allocation left (437 before any
    // credential is looked at), and a signed Refresh is refused as well.
    udp.truncate(1);
    assert_eq!(
        code_of(&udp_request(
            &udp[0].0,
            server.addr(),
            &carol,
            &carol_pw,
            method::REFRESH
        )),
        437
    );
    // Another user is untouched.
    let (_other, _) = udp_allocation(&server, &dave, &dave_pw);
    server.assert_metrics_settle(&[("turnpike_revoked_usernames", 1.0)]);
    // 8 + 1 UDP clients, one TCP and one TLS: each signed Allocate refused.
    server.assert_metrics_settle(&[(r#"turnpike_auth_failures_total{reason="revoked"}"#, 11.0)]);
}

/// Runs `turnpike` with `args`; it must finish within 10 s.
fn turnpike(args: &[&str], env_key: Option<&str>) -> CmdOutput {
    let mut command = Command::new(turnpike_bin());
    command.args(args).env_remove("TURNPIKE_ADMIN_KEY");
    if let Some(key) = env_key {
        command.env("TURNPIKE_ADMIN_KEY", key);
    }
    let output = run_with_timeout(&mut command, Duration::from_secs(10));
    assert!(output.status.is_some(), "turnpike {args:?} still running: {output:?}");
    output
}

#[test]
fn turnpike_admin_commands_list_end_and_revoke() {
    let (server, admin) = start(2);
    let (erin, erin_pw) = rest_credential(SECRET, "erin", unix_now() + 3600);
    let (socket, relay) = udp_allocation(&server, &erin, &erin_pw);
    let (_second, _) = udp_allocation(&server, &erin, &erin_pw);
    let url = format!("http://{admin}");
    let dir = ScratchDir::new("admin-cli");
    let key_file = dir.path().join("admin.key");
    std::fs::write(&key_file, format!("{KEY}\n")).expect("write key file");
    let key_path = key_file.to_str().expect("UTF-8 path");

    // The table, with the key from a file.
    let out = turnpike(&["admin", "--url", &url, "--key-file", key_path, "list"], None);
    assert!(out.success(), "{out:?}");
    assert!(
        out.stdout.contains(&erin) && out.stdout.contains(&relay.to_string()),
        "{out:?}"
    );
    assert!(
        out.stdout.contains(&socket.local_addr().unwrap().to_string()),
        "{out:?}"
    );
    // JSON, with the URL and key read from the server's own config.
    let config = server.config_path().to_str().expect("UTF-8 path");
    let out = turnpike(&["--config", config, "admin", "--json", "list", "--user", &erin], None);
    assert!(out.success(), "{out:?}");
    let listed: Value = serde_json::from_str(&out.stdout).expect("JSON on stdout");
    let id = listed["allocations"][0]["id"].as_str().expect("an id").to_owned();
    assert_eq!(listed["allocations"].as_array().map(Vec::len), Some(2));

    // A wrong key fails, saying why, and ends nothing.
    let out = turnpike(
        &["admin", "--url", &url, "end", &id],
        Some("not-the-key-not-the-key-0000"),
    );
    assert!(!out.success() && out.stderr.contains("401"), "{out:?}");
    assert_eq!(allocations(admin, "").len(), 2);

    let out = turnpike(&["admin", "--url", &url, "end", &id], Some(KEY));
    assert!(out.success() && out.stdout.contains("1 allocation(s) ended"), "{out:?}");
    let out = turnpike(&["admin", "--url", &url, "end", &id], Some(KEY));
    assert!(!out.success() && out.stderr.contains("404"), "{out:?}");
    let out = turnpike(&["admin", "--url", &url, "end-user", &erin], Some(KEY));
    assert!(out.success() && out.stdout.contains("1 allocation(s) ended"), "{out:?}");
    assert!(allocations(admin, "").is_empty());

    let out = turnpike(&["admin", "--url", &url, "revoke", &erin, "--ttl", "10m"], Some(KEY));
    assert!(out.success() && out.stdout.contains("revoked"), "{out:?}");
    let out = turnpike(&["admin", "--url", &url, "revocations"], Some(KEY));
    assert!(out.success() && out.stdout.contains(&erin), "{out:?}");
    assert_eq!(
        code_of(&udp_request(&socket, server.addr(), &erin, &erin_pw, method::ALLOCATE)),
        401
    );
    let out = turnpike(&["admin", "--url", "http://127.0.0.1:1", "list"], Some(KEY));
    assert!(!out.success() && out.stderr.contains("cannot reach"), "{out:?}");
}

#[test]
fn a_reload_replaces_the_key() {
    let (server, admin) = start(1);
    let new_key = "a-new-admin-key-after-the-reload-42";
    let path = server.config_path();
    let text = std::fs::read_to_string(path).expect("read config");
    std::fs::write(path, text.replace(KEY, new_key)).expect("write config");
    let reloaded = server.stderr_log().matches("configuration reloaded").count();
    server.sighup();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while server.stderr_log().matches("configuration reloaded").count() == reloaded {
        assert!(
            std::time::Instant::now() < deadline,
            "no reload:\n{}",
            server.stderr_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(call(admin, "GET", "/v1/allocations", Some(KEY), None).0, 401);
    assert_eq!(call(admin, "GET", "/v1/allocations", Some(new_key), None).0, 200);
}

#[test]
fn the_admin_port_is_never_a_peer() {
    // The test base allows loopback peers, so only the service-port rule
    // stands between a client and the admin API.
    let (server, admin) = start(1);
    let (user, password) = rest_credential(SECRET, "frank", unix_now() + 3600);
    let (socket, _) = udp_allocation(&server, &user, &password);
    let permit = |peer: SocketAddr| {
        udp_request_as(
            &socket,
            server.addr(),
            (&user, &password),
            method::CREATE_PERMISSION,
            |w| {
                w.xor_address(attr::XOR_PEER_ADDRESS, peer);
            },
        )
    };
    assert_eq!(code_of(&permit(admin)), 403);
    let elsewhere = SocketAddr::from(([127, 0, 0, 1], crate::common::free_udp_port()));
    assert_eq!(code_of(&permit(elsewhere)), 200);
}

/// The head of one HTTP/1.1 answer on `stream` and its body, read by its
/// Content-Length (the connection stays open for the next request).
fn read_one_answer(stream: &mut impl Read) -> (u16, String) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).expect("read an answer's head"),
            1,
            "closed mid-answer"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).expect("UTF-8 head");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status");
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_owned())
        })
        .and_then(|v| v.parse().ok())
        .expect("a content-length");
    let mut body = vec![0; length];
    stream.read_exact(&mut body).expect("read the body");
    (status, String::from_utf8(body).expect("UTF-8 body"))
}

/// Whether the server has closed `stream` (EOF or reset), waiting up to 5 s
/// for it.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    match stream.read(&mut [0u8; 1]) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
    }
}

/// Whether `stream` is still open now: nothing to read and no EOF.
fn still_open(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).expect("nonblocking");
    let open = matches!((&*stream).read(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    stream.set_nonblocking(false).expect("blocking");
    open
}

#[test]
fn callers_without_the_key_cannot_keep_a_key_holder_out() {
    use turnpike::admin::{MAX_CONNECTIONS, MAX_UNPROVEN};
    let (_server, admin) = start(1);
    // A key holder on a keep-alive connection: proven by its first request.
    let mut holder = TcpStream::connect(admin).expect("connect");
    holder.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let keep_alive = format!("GET /v1/revocations HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n\r\n");
    holder.write_all(keep_alive.as_bytes()).expect("send");
    assert_eq!(read_one_answer(&mut holder).0, 200);

    // Any local user fills every slot with connections that never send a
    // byte (before, they held all 16 until the 10 s header timeout, and a
    // key holder waited in the backlog).
    let mut idle: Vec<TcpStream> = (0..MAX_CONNECTIONS)
        .map(|_| TcpStream::connect(admin).expect("connect"))
        .collect();
    // A key holder's request is answered at once, while those callers'
    // header timeout is still running: the idle ones still open prove it.
    let (status, body) = call(admin, "GET", "/v1/allocations", Some(KEY), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["allocations"], serde_json::json!([]));
    // The documented bound: at most MAX_UNPROVEN connections without the
    // key are held; the oldest were closed to make room, one more for the
    // key holder's connection, and the newest are still open.
    let closed = MAX_CONNECTIONS - MAX_UNPROVEN + 1;
    for (n, stream) in idle.iter_mut().enumerate().skip(closed) {
        assert!(still_open(stream), "idle connection {n} closed");
    }
    for (n, stream) in idle.iter_mut().enumerate().take(closed) {
        assert!(closed_by_server(stream), "idle connection {n} still held");
    }
    // The proven connection was never evicted: it is answered again.
    holder.write_all(keep_alive.as_bytes()).expect("send");
    assert_eq!(read_one_answer(&mut holder).0, 200);
}

#[test]
fn the_admin_api_on_a_unix_socket_is_owner_only_and_turnpike_admin_uses_it() {
    let dir = ScratchDir::new("admin-socket");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let socket = dir.path().join("admin.sock");
    // A socket file left by a crashed server: replaced at start.
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("a stale socket"));
    let server = TestServer::start_with(
        "workers = 2\n",
        &format!(
            "[auth]\nsecrets = [\"{SECRET}\"]\n\n[admin]\nsocket = \"{}\"\nkey = \"{KEY}\"\n",
            socket.display()
        ),
    );
    let meta = std::fs::symlink_metadata(&socket).expect("the socket exists");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "owner only");
    let (gina, gina_pw) = rest_credential(SECRET, "gina", unix_now() + 3600);
    let (_udp, relay) = udp_allocation(&server, &gina, &gina_pw);

    // The same routes and the same key check.
    let over_socket = |method: &str, path: &str, key: Option<&str>| {
        let mut stream = UnixStream::connect(&socket).expect("connect to the socket");
        stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
        write!(stream, "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}\r\n").expect("send");
        let (status, body) = read_one_answer(&mut stream);
        (status, serde_json::from_str::<Value>(&body).unwrap_or(Value::Null))
    };
    assert_eq!(over_socket("GET", "/v1/allocations", None).0, 401);
    assert_eq!(
        over_socket("GET", "/v1/allocations", Some("wrong-key-wrong-key-wrong-key-00")).0,
        401
    );
    let (status, list) = over_socket("GET", "/v1/allocations", Some(KEY));
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["allocations"][0]["relays"][0], relay.to_string(), "{list}");

    // `turnpike admin` over it, by --url and from the server's config
    // (which names only the socket).
    let url = format!("unix:{}", socket.display());
    let out = turnpike(&["admin", "--url", &url, "list"], Some(KEY));
    assert!(out.success() && out.stdout.contains(&gina), "{out:?}");
    let out = turnpike(&["admin", "--url", &url, "list"], Some("not-the-key-not-the-key-0000"));
    assert!(!out.success() && out.stderr.contains("401"), "{out:?}");
    let config = server.config_path().to_str().expect("UTF-8 path");
    let out = turnpike(&["--config", config, "admin", "end-user", &gina], None);
    assert!(out.success() && out.stdout.contains("1 allocation(s) ended"), "{out:?}");
    let missing = dir.path().join("none.sock");
    let out = turnpike(
        &["admin", "--url", &format!("unix:{}", missing.display()), "list"],
        Some(KEY),
    );
    assert!(!out.success() && out.stderr.contains("cannot reach"), "{out:?}");

    // Removed at stop.
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(10)).expect("exit on SIGTERM");
    assert!(status.success(), "{status:?}\n{}", server.stderr_log());
    assert!(!Path::new(&socket).exists(), "the socket outlived the server");
}

//! A real `redis-server` for the fleet tests: Debian's, on a free loopback
//! port, with persistence off (a restart starts empty, as after a crash
//! without a snapshot), killed with the test.

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{die_with_test, free_tcp_port, require_tool, ChildGuard};

/// The fleet secret (`[fleet] secrets`) of the test fleets: every
/// instance of a fleet signs what it writes to Redis with it.
pub const FLEET_SECRET: &str = "the-test-fleet-secret-0123456789abcdef";

/// The `secrets` line of a `[fleet]` section with [`FLEET_SECRET`].
pub fn fleet_secret_line() -> String {
    format!("secrets = [\"{FLEET_SECRET}\"]\n")
}

pub struct RedisServer {
    port: u16,
    child: Option<ChildGuard>,
}

impl RedisServer {
    /// Starts one and waits until it takes connections.
    pub fn start() -> RedisServer {
        let mut redis = RedisServer {
            port: free_tcp_port(),
            child: None,
        };
        redis.restart();
        redis
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills it (SIGKILL, as a crash).
    pub fn stop(&mut self) {
        self.child = None;
    }

    /// Freezes it (SIGSTOP): connections stay open and nothing answers, as
    /// when a Redis hangs or its network goes silent.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a paused one go on (SIGCONT).
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        let child = self.child.as_ref().expect("a running redis-server");
        let pid = libc::pid_t::try_from(child.0.id()).expect("a pid");
        // SAFETY: kill(2) with a pid of our own child and a valid signal.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill({pid}, {signal})");
    }

    /// Starts it again on the same port (empty), waiting until it takes
    /// connections; panics after 5 s.
    pub fn restart(&mut self) {
        self.stop();
        let binary = require_tool("redis-server");
        let child = die_with_test(&mut Command::new(binary))
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(ChildGuard(child));
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on {} within 5 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A connection for looking at what the instances wrote.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
            .expect("connect to the test redis-server")
    }

    /// What a raw subscriber of `channel` hears from now on (subscribed
    /// before this returns).
    pub fn capture(&self, channel: &str) -> std::sync::mpsc::Receiver<Vec<u8>> {
        let (heard, captured) = std::sync::mpsc::channel();
        let (ready, subscribed) = std::sync::mpsc::channel();
        let mut conn = self.connection();
        let channel = channel.to_owned();
        std::thread::spawn(move || {
            let mut pubsub = conn.as_pubsub();
            pubsub.subscribe(&channel).expect("SUBSCRIBE");
            ready.send(()).expect("the test waits");
            while let Ok(message) = pubsub.get_message() {
                if heard.send(message.get_payload_bytes().to_vec()).is_err() {
                    return;
                }
            }
        });
        subscribed.recv_timeout(Duration::from_secs(10)).expect("subscribed");
        captured
    }
}

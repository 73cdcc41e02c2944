//! The systemd integration: the unit file and the sysusers entry pass
//! systemd's own tools, the service's config passes `check-config` and is
//! never open, and the binary speaks the sd_notify protocol:
//! READY=1 only once its ports accept, WATCHDOG=1 under `WATCHDOG_USEC`,
//! RELOADING=1 then READY=1 around SIGHUP, STOPPING=1 on SIGTERM, and then
//! a clean exit.

#![allow(clippy::disallowed_methods)] // waits in black-box tests use the real clock

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{
    free_tcp_port, free_udp_port, run_with_timeout, stun_binding, turnpike_bin, turnpike_command, ChildGuard,
    ScratchDir,
};

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/turnpike.service");
const SYSUSERS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/turnpike.sysusers");
const SERVICE_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/turnpike.toml");

/// `systemd-analyze`, installed by the test script with Debian's `systemd`.
fn systemd_tool(name: &str) -> std::path::PathBuf {
    let path = Path::new("/usr/bin").join(name);
    assert!(
        path.is_file(),
        "`{name}` is missing: install Debian's `systemd` package (scripts/test.sh does)"
    );
    path
}

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(UNIT).expect("read the unit");
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "WatchdogSec=",
        "User=turnpike",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "SystemCallFilter=@system-service",
        "MemoryDenyWriteExecute=yes",
        "LimitNOFILE=",
        "StateDirectory=turnpike",
    ] {
        assert!(unit.lines().any(|l| l.starts_with(line)), "the unit lacks {line}");
    }
    // The binary is a bare name, which systemd looks up in /usr/local/bin
    // and /usr/bin: one unit for the package and a manual install.
    for exec in ["ExecStartPre=turnpike check-config ", "ExecStart=turnpike --config "] {
        assert!(unit.lines().any(|l| l.starts_with(exec)), "the unit lacks {exec}");
    }
    // verify insists that ExecStart's binary exists: point it at the one
    // cargo built, and the config at the example.
    let dir = ScratchDir::new("unit");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml");
    let local = unit
        .replace("=turnpike ", &format!("={} ", turnpike_bin()))
        .replace("/etc/turnpike/turnpike.toml", example);
    let path = dir.path().join("turnpike.service");
    std::fs::write(&path, local).expect("write the unit");
    let output = run_with_timeout(
        Command::new(systemd_tool("systemd-analyze")).arg("verify").arg(&path),
        Duration::from_secs(30),
    );
    assert!(
        output.success(),
        "systemd-analyze verify failed:\n{}",
        output.combined()
    );
    // Unknown keys and bad values are only warnings (exit 0): none allowed.
    assert_eq!(output.combined().trim(), "", "systemd-analyze verify warned");
}

#[test]
fn the_service_config_passes_check_config_without_a_warning_and_is_never_open() {
    let config = std::fs::read_to_string(SERVICE_CONFIG).expect("read systemd/turnpike.toml");
    // Never open: short-lived credentials from the generated secret only,
    // signaling on loopback, no admin API, the default peer filter.
    let keys: Vec<&str> = config
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(" = "))
        .map(|l| l.split(" = ").next().unwrap_or_default())
        .collect();
    assert_eq!(keys, ["realm", "udp", "tcp", "http", "ports", "secrets_file"]);
    assert!(
        config.contains("\nhttp = \"127.0.0.1:8080\"\n"),
        "signaling must stay on loopback"
    );
    assert!(config.contains("\nsecrets_file = \"/etc/turnpike/secrets\"\n"));
    // The secret as the postinst makes it: the service's own, mode 0600.
    let dir = ScratchDir::new("service-config");
    let secrets = dir.path().join("secrets");
    std::fs::write(&secrets, "a random secret of 32 bytes, in base64\n").expect("write the secret");
    std::fs::set_permissions(&secrets, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    let path = dir.write_config(&config.replace("/etc/turnpike/secrets", secrets.to_str().expect("UTF-8")));
    let output = run_with_timeout(
        Command::new(turnpike_bin()).arg("check-config").arg(&path),
        Duration::from_secs(30),
    );
    assert!(output.success(), "{}", output.combined());
    assert!(output.stdout.contains("1 shared secret(s)"), "{}", output.stdout);
    assert!(!output.combined().contains("warning"), "{}", output.combined());
}

#[test]
fn the_sysusers_entry_creates_the_service_user() {
    let root = ScratchDir::new("sysusers");
    std::fs::create_dir_all(root.path().join("etc")).expect("mkdir etc");
    let output = run_with_timeout(
        Command::new(systemd_tool("systemd-sysusers"))
            .arg(format!("--root={}", root.path().display()))
            .arg(SYSUSERS),
        Duration::from_secs(30),
    );
    assert!(output.success(), "{}", output.combined());
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).expect("passwd written");
    let entry = passwd
        .lines()
        .find(|l| l.starts_with("turnpike:"))
        .unwrap_or_else(|| panic!("no turnpike user in {passwd}"));
    assert!(entry.ends_with(":/usr/sbin/nologin"), "{entry}");
}

/// A notify socket the way systemd provides one: a datagram socket whose
/// path is passed in NOTIFY_SOCKET.
struct NotifySocket {
    socket: UnixDatagram,
    _dir: ScratchDir,
    path: std::path::PathBuf,
}

impl NotifySocket {
    fn new() -> NotifySocket {
        let dir = ScratchDir::new("notify");
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        NotifySocket {
            socket,
            _dir: dir,
            path,
        }
    }

    /// The next notification's lines, or `None` after `wait`.
    fn next(&self, wait: Duration) -> Option<Vec<String>> {
        self.socket.set_read_timeout(Some(wait)).expect("read timeout");
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).lines().map(str::to_owned).collect())
    }

    /// Waits (bounded) for a notification holding `line`; returns the
    /// notifications seen before it.
    fn wait_for(&self, line: &str, limit: Duration) -> Vec<Vec<String>> {
        let deadline = Instant::now() + limit;
        let mut before = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.next(left) {
                Some(lines) if lines.iter().any(|l| l == line) => return before,
                Some(lines) => before.push(lines),
                None => break,
            }
        }
        panic!("no {line} within {limit:?}; got {before:?}");
    }
}

fn signal(child: &std::process::Child, signal: libc::c_int) {
    // SAFETY: kill(2) on a child we spawned and still hold.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
}

#[test]
fn ready_after_the_ports_accept_watchdog_while_alive_stopping_on_sigterm() {
    // Ports probed free can be taken by another test's connections before
    // the server binds them: a server that exits at start is retried on
    // new ports, as the shared server builder does.
    let mut attempts = 0;
    let (notify, dir, mut guard, port, http) = loop {
        attempts += 1;
        let notify = NotifySocket::new();
        let dir = ScratchDir::new("notify-server");
        let (port, http) = (free_udp_port(), free_tcp_port());
        let config = dir.write_config(&format!(
            "[server]\nworkers = 2\n[listen]\nudp = [\"127.0.0.1:{port}\"]\ntcp = [\"127.0.0.1:{port}\"]\n\
             http = \"127.0.0.1:{http}\"\n[auth]\nsecrets = [\"s\"]\n"
        ));
        let mut guard = ChildGuard(
            turnpike_command(&config, &dir.path().join("stderr.log"))
                .env("NOTIFY_SOCKET", &notify.path)
                .env("WATCHDOG_USEC", "600000")
                .spawn()
                .expect("spawn turnpike"),
        );
        match notify.next(Duration::from_secs(10)) {
            Some(first) => {
                assert!(
                    first.iter().any(|l| l == "READY=1"),
                    "notifications before READY=1: {first:?}"
                );
                break (notify, dir, guard, port, http);
            }
            None => {
                let exited = guard.0.try_wait().expect("try_wait");
                let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
                assert!(
                    exited.is_some() && attempts < 3,
                    "no READY=1 within 10 s ({exited:?}):\n{log}"
                );
            }
        }
    };
    let server_log = || std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();

    // The moment READY=1 arrives, every port must already answer: one try
    // each, no retry.
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let server = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert!(
        stun_binding(&probe, server, Duration::from_secs(2)).is_some(),
        "READY=1 before UDP answers\n{}",
        server_log()
    );
    std::net::TcpStream::connect(server).expect("READY=1 before TCP accepts");
    std::net::TcpStream::connect(("127.0.0.1", http)).expect("READY=1 before HTTP accepts");

    // WATCHDOG_USEC=600000: a ping every 200 ms while the loops turn.
    let started = Instant::now();
    for _ in 0..3 {
        notify.wait_for("WATCHDOG=1", Duration::from_secs(2));
    }
    assert!(started.elapsed() < Duration::from_secs(2), "watchdog pings too slow");

    signal(&guard.0, libc::SIGHUP);
    notify.wait_for("RELOADING=1", Duration::from_secs(5));
    notify.wait_for("READY=1", Duration::from_secs(5));

    signal(&guard.0, libc::SIGTERM);
    notify.wait_for("STOPPING=1", Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = guard.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "still running 10 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status:?}\n{}", server_log());
}

//! A real ACME CA for the ACME tests: Debian's `pebble` (Let's Encrypt's
//! RFC 8555 test server) with `pebble-challtestsrv` as its DNS server,
//! which answers every A query with 127.0.0.1 (and no AAAA), so that the
//! test domains resolve to the turnpike under test. Both on loopback
//! ports of their own, killed on drop; pebble's HTTPS uses a certificate
//! of a [`TestPki`] the test's turnpike is told to trust
//! (`tls.acme.directory_ca`).
//!
//! Pebble validates TLS-ALPN-01 on `tls_port` and HTTP-01 on `http_port`
//! of the resolved address: the ports of the turnpike under test. It
//! never sleeps before validating (`PEBBLE_VA_NOSLEEP`), never rejects a
//! good nonce (`PEBBLE_WFE_NONCEREJECT=0`), never reuses an authorization
//! (`PEBBLE_AUTHZREUSE=0`, so every order is validated afresh), and
//! issues certificates valid for `validity` (its
//! `certificateValidityPeriod`, in seconds).

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::{die_with_test, free_tcp_port, free_udp_port, http_get_on, require_tool, ScratchDir, TestPki};

/// Where the CA validates, and how long what it issues is valid.
pub struct PebbleSetup {
    /// The port it connects to for TLS-ALPN-01 (turnpike's TLS listener).
    pub tls_port: u16,
    /// The port it connects to for HTTP-01 (turnpike's `listen.http`).
    pub http_port: u16,
    /// Lifetime of the certificates it issues.
    pub validity: Duration,
}

pub struct Pebble {
    pebble: Option<Child>,
    challtestsrv: Child,
    directory: SocketAddr,
    management: SocketAddr,
    pki: TestPki,
    ca_path: PathBuf,
    log_path: PathBuf,
    dir: ScratchDir,
}

impl Pebble {
    /// Starts both and waits until the directory answers; panics after
    /// 10 s.
    pub fn start(setup: &PebbleSetup) -> Pebble {
        let (pebble_bin, challtestsrv_bin) = (require_tool("pebble"), require_tool("pebble-challtestsrv"));
        let dir = ScratchDir::new("pebble");
        let pki = TestPki::new();
        let (cert_path, key_path) = (dir.path().join("pebble-cert.pem"), dir.path().join("pebble-key.pem"));
        pki.write_leaf("pebble test CA front end", &cert_path, &key_path);
        let ca_path = dir.path().join("pebble-https-ca.pem");
        fs::write(&ca_path, pem("CERTIFICATE", &pki.ca_der())).expect("write the CA of pebble's HTTPS");
        let dns = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
        let directory = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
        let management = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
        let config = format!(
            r#"{{"pebble": {{"listenAddress": "{directory}", "managementListenAddress": "{management}",
              "certificate": "{}", "privateKey": "{}", "httpPort": {}, "tlsPort": {},
              "ocspResponderURL": "", "externalAccountBindingRequired": false,
              "certificateValidityPeriod": {}}}}}"#,
            cert_path.display(),
            key_path.display(),
            setup.http_port,
            setup.tls_port,
            setup.validity.as_secs()
        );
        let config_path = dir.path().join("pebble-config.json");
        fs::write(&config_path, config).expect("write pebble's config");
        let log_path = dir.path().join("pebble.log");
        let log = {
            let log_path = log_path.clone();
            move || {
                fs::File::options()
                    .create(true)
                    .append(true)
                    .open(&log_path)
                    .expect("pebble log")
            }
        };
        // Only its DNS server: the challenge servers it also has are
        // turnpike's job here.
        let challtestsrv = die_with_test(&mut Command::new(challtestsrv_bin))
            .args([
                "-dns01",
                &dns.to_string(),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
            ])
            .args([
                "-management",
                &SocketAddr::from(([127, 0, 0, 1], free_tcp_port())).to_string(),
            ])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdin(Stdio::null())
            .stdout(log())
            .stderr(log())
            .spawn()
            .expect("spawn pebble-challtestsrv");
        let mut pebble = Pebble {
            pebble: None,
            challtestsrv,
            directory,
            management,
            pki,
            ca_path,
            log_path,
            dir,
        };
        let child = die_with_test(&mut Command::new(pebble_bin))
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &dns.to_string()])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdin(Stdio::null())
            .stdout(log())
            .stderr(log())
            .spawn()
            .expect("spawn pebble");
        pebble.pebble = Some(child);
        pebble.wait_ready(Duration::from_secs(10));
        pebble
    }

    fn wait_ready(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if TcpStream::connect(self.directory).is_ok() && TcpStream::connect(self.management).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "pebble did not listen within {limit:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The ACME directory URL.
    pub fn directory_url(&self) -> String {
        format!("https://{}/dir", self.directory)
    }

    /// The PEM file of the CA of pebble's own HTTPS (for
    /// `tls.acme.directory_ca`).
    pub fn https_ca_path(&self) -> &std::path::Path {
        &self.ca_path
    }

    /// The root that signs what pebble issues (made anew at each start),
    /// from its management interface's `/roots/0`.
    pub fn issuing_root(&self) -> CertificateDer<'static> {
        let mut stream = self
            .pki
            .connect(self.management, &[&rustls::version::TLS13])
            .expect("TLS to pebble's management interface");
        let (status, body) = http_get_on(&mut stream, "/roots/0");
        assert_eq!(status, 200, "GET /roots/0: {body}");
        CertificateDer::from_pem_slice(body.as_bytes()).expect("a PEM root from /roots/0")
    }

    /// Kills pebble (its DNS server stays): the directory is down from now
    /// on.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.pebble.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// What pebble and its DNS server logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A scratch folder that lives as long as this pebble.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
        let _ = self.challtestsrv.kill();
        let _ = self.challtestsrv.wait();
        if std::thread::panicking() {
            eprintln!("---- pebble log ----\n{}\n---- end of pebble log ----", self.log());
        }
    }
}

/// `der` as a PEM block of `label`.
pub fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

//! The command line: `--version`, `--help` against the docs,
//! `check-config`, `credentials`, and how configuration errors are
//! reported.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::{rest_credential, run_with_timeout, turnpike_bin, unix_now, CmdOutput, ScratchDir};

/// Runs `turnpike` with `args`; it must finish within 10 s.
fn turnpike(args: &[&str]) -> CmdOutput {
    let output = run_with_timeout(Command::new(turnpike_bin()).args(args), Duration::from_secs(10));
    assert!(
        output.status.is_some(),
        "turnpike {args:?} still running after 10 s: {output:?}"
    );
    output
}

/// A config file with `text` in a fresh directory (removed on drop).
struct ConfigFile {
    dir: ScratchDir,
}

impl ConfigFile {
    fn new(text: &str) -> ConfigFile {
        let dir = ScratchDir::new("cli");
        dir.write_config(text);
        ConfigFile { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("turnpike.toml")
    }
}

/// Runs `check-config` on `path` and returns its stderr, asserting that it
/// failed and named the file.
fn check_config_error(path: &Path) -> String {
    let path_text = path.to_str().expect("UTF-8 temp path");
    let output = turnpike(&["check-config", path_text]);
    assert!(!output.success(), "check-config accepted {path_text}: {output:?}");
    assert!(
        output.stderr.contains(path_text),
        "the error does not name the file {path_text}:\n{}",
        output.stderr
    );
    output.stderr
}

#[test]
fn version_flag_prints_the_version() {
    let output = turnpike(&["--version"]);
    assert!(output.success(), "{output:?}");
    assert_eq!(output.stdout.trim(), format!("turnpike {}", env!("CARGO_PKG_VERSION")));
}

/// The commands and the long options `turnpike <args> --help` lists
/// (without `help` and `--help`).
fn help_of(args: &[&str]) -> (Vec<String>, Vec<String>) {
    let mut args = args.to_vec();
    args.push("--help");
    let output = turnpike(&args);
    assert!(output.success(), "{output:?}");
    let section = |title: &str| -> Vec<String> {
        let text = output.stdout.split_once(title).map_or("", |(_, rest)| rest);
        text.lines()
            .skip(1)
            .take_while(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect()
    };
    let commands = section("Commands:")
        .iter()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|c| c != "help")
        .collect();
    let options = section("Options:")
        .iter()
        // An option's own line starts with it; a description's wrapped
        // lines may name others.
        .filter(|l| l.trim_start().starts_with('-'))
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("--")))
        .map(|o| o.trim_end_matches(',').to_owned())
        .filter(|o| o != "--help" && o != "--version")
        .collect();
    (commands, options)
}

/// The text of `path` (from the repository) from the heading `from` to
/// the next heading of its level.
fn doc_section(path: &str, from: &str) -> String {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).expect("read the doc");
    let (_, rest) = text
        .split_once(from)
        .unwrap_or_else(|| panic!("{path} has no {from:?}"));
    rest.split("\n## ").next().unwrap_or_default().to_owned()
}

/// Whether a command line of `docs` (one starting with `turnpike`) runs
/// `words` (e.g. ["admin", "list"]) in that order.
fn documents(docs: &str, words: &[&str]) -> bool {
    docs.lines()
        .filter_map(|l| l.find("turnpike ").map(|at| &l[at..]))
        .any(|line| {
            line.split_whitespace()
                .collect::<Vec<_>>()
                .windows(words.len())
                .any(|w| w == words)
        })
}

#[test]
fn every_command_and_option_that_help_lists_is_in_the_docs() {
    let usage = doc_section("docs/usage.md", "## The command line");
    let admin_docs = doc_section("docs/operations.md", "## The admin API");
    let selftest_docs = usage.clone() + &doc_section("docs/usage.md", "## Checking a deployment");
    let (commands, options) = help_of(&[]);
    assert!(commands.len() >= 5, "{commands:?}");
    let mut missing = Vec::new();
    for option in options {
        if !usage.contains(&option) {
            missing.push(format!("turnpike {option} (docs/usage.md)"));
        }
    }
    for command in &commands {
        let docs = match command.as_str() {
            "admin" => &admin_docs,
            "selftest" => &selftest_docs,
            _ => &usage,
        };
        if !documents(docs, &[command]) {
            missing.push(format!("turnpike {command}"));
        }
        let (subcommands, options) = help_of(&[command]);
        for option in options.iter().filter(|o| !docs.contains(*o)) {
            missing.push(format!("turnpike {command} {option}"));
        }
        for sub in subcommands {
            if !documents(docs, &[command, &sub]) {
                missing.push(format!("turnpike {command} {sub}"));
            }
            let (_, options) = help_of(&[command, &sub]);
            for option in options.iter().filter(|o| !docs.contains(*o)) {
                missing.push(format!("turnpike {command} {sub} {option}"));
            }
        }
    }
    assert!(missing.is_empty(), "`--help` lists what the docs do not: {missing:?}");
}

#[test]
fn check_config_accepts_the_example_config() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml");
    let output = turnpike(&["check-config", example]);
    assert!(output.success(), "config.example.toml refused: {output:?}");
}

#[test]
fn check_config_names_file_line_and_key_of_a_misspelt_key() {
    let stderr = check_config_error(&ConfigFile::new("[server]\nrelm = \"x\"\n").path());
    assert!(stderr.contains("line"), "no line number in:\n{stderr}");
    assert!(stderr.contains("relm"), "the key is not named in:\n{stderr}");
}

#[test]
fn check_config_names_relay_ports_for_a_bad_port_range() {
    let mut unnamed = Vec::new();
    for range in ["5000-5000", "3000-2000", "0-10", "1-70000", "abc"] {
        let stderr = check_config_error(&ConfigFile::new(&format!("[relay]\nports = \"{range}\"\n")).path());
        if !stderr.contains("relay.ports") {
            unnamed.push(format!("ports = {range:?}:\n{stderr}"));
        }
    }
    assert!(
        unnamed.is_empty(),
        "these errors do not name `relay.ports`:\n{}",
        unnamed.join("\n")
    );
}

#[test]
fn check_config_says_where_nat_behaviour_discovery_listens_and_names_a_bad_alternate() {
    let good = ConfigFile::new("[listen]\nudp = [\"192.0.2.1:3478\"]\nudp_alternate = [\"192.0.2.2:3479\"]\n");
    let output = turnpike(&["check-config", good.path().to_str().expect("UTF-8 temp path")]);
    assert!(output.success(), "{output:?}");
    assert!(
        output.stdout.contains(
            "RFC 5780 NAT behaviour discovery on 192.0.2.1:3478 and 192.0.2.2:3479, also listening on \
             192.0.2.1:3479 and 192.0.2.2:3478"
        ),
        "{}",
        output.stdout
    );
    // The default UDP listener is the wildcard, which cannot say which
    // address an answer leaves from.
    let bad = ConfigFile::new("[listen]\nudp_alternate = [\"192.0.2.2:3479\"]\n");
    let stderr = check_config_error(&bad.path());
    assert!(
        stderr.contains("listen.udp_alternate") && stderr.contains("0.0.0.0:3478"),
        "{stderr}"
    );
}

#[test]
fn server_refuses_to_start_with_an_invalid_config() {
    let config = ConfigFile::new("[server]\nrelm = \"x\"\n");
    let output = turnpike(&["--config", config.path().to_str().expect("UTF-8 temp path")]);
    assert!(!output.success(), "the server started on an invalid config: {output:?}");
    assert!(
        output.stderr.contains("relm"),
        "the key is not named in:\n{}",
        output.stderr
    );
}

#[test]
fn credentials_prints_an_ice_server_with_a_short_lived_credential() {
    let before = unix_now();
    let output = turnpike(&["credentials", "--secret", "s", "--user", "u", "--ttl", "1h"]);
    let after = unix_now();
    assert!(output.success(), "{output:?}");
    let lines: Vec<&str> = output.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "expected one JSON line: {:?}", output.stdout);
    let entry: serde_json::Value = serde_json::from_str(lines[0]).expect("valid JSON");

    let urls = entry["urls"].as_array().expect("urls is an array");
    assert!(!urls.is_empty(), "no urls: {entry}");
    assert!(
        urls.iter().all(|u| u.as_str().is_some_and(|u| u.starts_with("turn:"))),
        "urls: {entry}"
    );

    let username = entry["username"].as_str().expect("username is a string");
    let (expiry, name) = username.split_once(':').expect("username is <expiry>:<user>");
    assert_eq!(name, "u");
    assert!(
        !expiry.is_empty() && expiry.bytes().all(|b| b.is_ascii_digit()),
        "{username}"
    );
    let expiry: u64 = expiry.parse().expect("expiry is a number");
    assert!(
        (before + 3600..=after + 3601).contains(&expiry),
        "expiry {expiry} is not about now+3600 (now was {before}..{after})"
    );

    let (_, expected_password) = rest_credential("s", "u", expiry);
    assert_eq!(entry["credential"].as_str(), Some(expected_password.as_str()));
}

#[test]
fn token_with_a_room_prints_a_token_bound_to_it() {
    let before = unix_now();
    let output = turnpike(&["token", "--secret", "gate", "--room", "standup", "--ttl", "10m"]);
    assert!(output.success(), "{output:?}");
    let token = output.stdout.trim();
    let (signed, signature) = token.rsplit_once('.').expect("<expiry>.<room>.<signature>");
    let (expiry, room) = signed.split_once('.').expect("<expiry>.<room>");
    assert_eq!(room, "standup", "{token}");
    let expiry: u64 = expiry.parse().expect("numeric expiry");
    assert!((before + 600..=unix_now() + 601).contains(&expiry), "{token}");
    // HMAC-SHA256 over "<expiry>.<room>", computed here independently.
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"gate");
    let expected = ring::hmac::sign(&key, signed.as_bytes());
    use base64::Engine;
    assert_eq!(
        signature,
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(expected.as_ref())
    );
    for bad in ["a b", "", "a.b", &"r".repeat(65)] {
        let refused = turnpike(&["token", "--secret", "gate", "--room", bad]);
        assert!(
            !refused.success() && refused.stderr.contains("--room"),
            "{bad:?}: {refused:?}"
        );
    }
}

#[test]
fn token_prints_a_signaling_token_signed_with_the_configured_secret() {
    let config = ConfigFile::new("[signaling]\ntoken_secret = \"gate\"\n");
    let before = unix_now();
    let output = turnpike(&[
        "--config",
        config.path().to_str().expect("path"),
        "token",
        "--ttl",
        "10m",
    ]);
    assert!(output.success(), "{output:?}");
    let token = output.stdout.trim();
    let (expiry, signature) = token.split_once('.').expect("<expiry>.<signature>");
    let expiry: u64 = expiry.parse().expect("numeric expiry");
    assert!((before + 600..=unix_now() + 601).contains(&expiry), "{token}");
    // HMAC-SHA256 over the expiry, computed here independently.
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"gate");
    let expected = ring::hmac::sign(&key, expiry.to_string().as_bytes());
    use base64::Engine;
    assert_eq!(
        signature,
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(expected.as_ref())
    );
    let without = turnpike(&["token"]);
    assert!(
        !without.success() && without.stderr.contains("token_secret"),
        "{without:?}"
    );
}

#[test]
fn check_config_warns_about_an_open_signaling_endpoint() {
    let open = ConfigFile::new("[listen]\nhttp = \"0.0.0.0:8080\"\n");
    let output = turnpike(&["check-config", open.path().to_str().expect("path")]);
    assert!(output.success(), "{output:?}");
    assert!(
        output.stderr.contains("warning: listen.http 0.0.0.0:8080"),
        "{output:?}"
    );
    let gated = ConfigFile::new("[listen]\nhttp = \"0.0.0.0:8080\"\n[signaling]\ntoken_secret = \"t\"\n");
    let output = turnpike(&["check-config", gated.path().to_str().expect("path")]);
    assert!(output.success() && !output.stderr.contains("warning"), "{output:?}");
    let off = ConfigFile::new("[listen]\nhttp = \"off\"\n");
    let output = turnpike(&["check-config", off.path().to_str().expect("path")]);
    assert!(output.stdout.contains("HTTP off"), "{output:?}");
}

/// The password of the credential `turnpike credentials` prints for user
/// `u`, and its username.
fn minted(output: &CmdOutput) -> (String, String) {
    assert!(output.success(), "{output:?}");
    let entry: serde_json::Value = serde_json::from_str(output.stdout.trim()).expect("valid JSON");
    let username = entry["username"].as_str().expect("username").to_owned();
    (username, entry["credential"].as_str().expect("credential").to_owned())
}

#[test]
fn a_secret_can_come_from_a_file_or_the_environment_instead_of_the_command_line() {
    let dir = ScratchDir::new("cli-secret");
    let file = dir.path().join("secret");
    std::fs::write(&file, "file-secret\n# a comment line\n").expect("write secret");
    let from_file = turnpike(&[
        "credentials",
        "--secret-file",
        file.to_str().expect("path"),
        "--user",
        "u",
    ]);
    let (username, password) = minted(&from_file);
    let expiry: u64 = username.split(':').next().and_then(|e| e.parse().ok()).expect("expiry");
    assert_eq!(password, rest_credential("file-secret", "u", expiry).1);

    let from_env = run_with_timeout(
        Command::new(turnpike_bin())
            .args(["credentials", "--user", "u"])
            .env("TURNPIKE_SECRET", "env-secret"),
        Duration::from_secs(10),
    );
    let (username, password) = minted(&from_env);
    let expiry: u64 = username.split(':').next().and_then(|e| e.parse().ok()).expect("expiry");
    assert_eq!(password, rest_credential("env-secret", "u", expiry).1);

    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").expect("write");
    let refused = turnpike(&["credentials", "--secret-file", empty.to_str().expect("path")]);
    assert!(
        !refused.success() && refused.stderr.contains("holds no secret"),
        "{refused:?}"
    );
}

#[test]
fn check_config_says_what_acme_will_ask_for_and_refuses_what_cannot_work() {
    let acme = "[listen]\ntls = [\"127.0.0.1:5349\"]\n\n[tls.acme]\ndomains = [\"turn.example.org\"]\n\
                directory = \"https://ca.invalid/dir\"\ncache_dir = \"acme\"\n";
    let config = ConfigFile::new(acme);
    let output = turnpike(&["check-config", config.path().to_str().expect("path")]);
    assert!(output.success(), "{output:?}");
    // The cache is taken from the config file's folder, and nothing was
    // asked of the CA.
    let cache = config.dir.path().join("acme");
    assert!(
        output.stdout.contains(&format!(
            "tls.acme: certificate for turn.example.org from https://ca.invalid/dir by tls-alpn-01, cache {} \
             (no usable cached certificate: one is requested at start)",
            cache.display()
        )),
        "{output:?}"
    );
    assert!(
        output
            .stderr
            .contains("warning: tls.acme.challenge tls-alpn-01 is validated by the CA on port 443"),
        "{output:?}"
    );
    assert!(!cache.exists(), "check-config created the cache folder");
    // With certificate files too, or HTTP-01 without an HTTP listener:
    // refused, naming the key.
    let both = ConfigFile::new(&format!("[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n\n{acme}"));
    let stderr = check_config_error(&both.path());
    assert!(
        stderr.contains("tls.acme: the certificate comes either from ACME or from files"),
        "{stderr}"
    );
    let http_01 = "[listen]\ntls = [\"127.0.0.1:5349\"]\nhttp = \"off\"\n\n[tls.acme]\n\
                   domains = [\"turn.example.org\"]\nchallenge = \"http-01\"\n";
    let stderr = check_config_error(&ConfigFile::new(http_01).path());
    assert!(
        stderr.contains("tls.acme.challenge: http-01 is answered on listen.http, which is off"),
        "{stderr}"
    );
}

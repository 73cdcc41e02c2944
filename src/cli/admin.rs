//! `turnpike admin …`: one request to the admin API of a running server,
//! its answer printed as a table, a summary line or (`--json`) as is.
//!
//! The HTTP client is the library's (`turnpike::admin::client`); this file
//! only finds the URL and the key, maps a command to a request, and
//! prints. Contract: the URL is `--url`, else `admin.socket` of `--config`
//! (the socket first: no other local user can reach or crowd it), else
//! `http://<admin.listen>` of `--config`, else `http://127.0.0.1:8081`;
//! the key is `--key-file`, else
//! TURNPIKE_ADMIN_KEY, else `admin.key`/`admin.key_file` of `--config`,
//! and is never printed. An error answer of the API is an error here.

use std::path::{Path, PathBuf};

use anyhow::bail;
use turnpike::admin::client::{encode_component, AdminClient};
use turnpike::config::Config;

use super::args::{AdminArgs, AdminCommand, SecretSource};

/// Where the API is: a URL as given, or `admin.socket` as configured (a
/// path need not be UTF-8).
enum Target {
    Url(String),
    Socket(PathBuf),
}

/// Sends the request `args` names and prints the answer.
pub fn admin_command(args: AdminArgs, config_path: Option<&Path>) -> anyhow::Result<()> {
    let config = config_path.map(Config::load).transpose()?;
    let admin = config.as_ref().map(|c| &c.admin);
    let target = match (
        &args.url,
        admin.and_then(|a| a.socket.as_ref()),
        admin.and_then(|a| a.listen),
    ) {
        (Some(url), _, _) => Target::Url(url.clone()),
        (None, Some(socket), _) => Target::Socket(socket.clone()),
        (None, None, Some(listen)) => Target::Url(format!("http://{listen}")),
        (None, None, None) => Target::Url("http://127.0.0.1:8081".to_owned()),
    };
    let key = match (&args.key_file, std::env::var("TURNPIKE_ADMIN_KEY")) {
        (Some(path), _) => SecretSource {
            secret: None,
            secret_file: Some(path.clone()),
        }
        .resolve()?,
        (None, Ok(key)) if !key.is_empty() => Some(key),
        _ => config
            .as_ref()
            .and_then(|c| c.admin.resolved_key.as_ref())
            .map(|k| k.expose().to_owned()),
    };
    let Some(key) = key else {
        bail!("give --key-file, TURNPIKE_ADMIN_KEY or --config with admin.key or admin.key_file");
    };
    let client = match target {
        Target::Url(url) => AdminClient::new(&url, key)?,
        Target::Socket(path) => AdminClient::unix(path, key),
    };
    let encode = encode_component;
    let answer = match &args.command {
        AdminCommand::List { user } => {
            let query = user
                .as_deref()
                .map_or(String::new(), |u| format!("?user={}", encode(u)));
            client.request("GET", &format!("/v1/allocations{query}"), None)?
        }
        AdminCommand::End { id } => client.request("DELETE", &format!("/v1/allocations/{}", encode(id)), None)?,
        AdminCommand::EndUser { user } => {
            client.request("DELETE", &format!("/v1/users/{}/allocations", encode(user)), None)?
        }
        AdminCommand::Revoke { username, ttl } => {
            let body = serde_json::json!({ "username": username, "ttl": ttl });
            client.request("POST", "/v1/revocations", Some(&body))?
        }
        AdminCommand::Revocations => client.request("GET", "/v1/revocations", None)?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    match &args.command {
        AdminCommand::List { .. } => print_allocations(&answer),
        AdminCommand::Revocations => {
            for r in answer["revocations"].as_array().into_iter().flatten() {
                println!("{}\tuntil {}", r["username"].as_str().unwrap_or(""), r["until_unix"]);
            }
        }
        AdminCommand::Revoke { username, .. } => println!(
            "revoked {username} until {} (unix); {} allocation(s) ended",
            answer["until_unix"], answer["ended"]
        ),
        AdminCommand::End { .. } | AdminCommand::EndUser { .. } => {
            println!("{} allocation(s) ended", answer["ended"]);
        }
    }
    Ok(())
}

/// The allocations of `GET /v1/allocations` as a table.
fn print_allocations(answer: &serde_json::Value) {
    println!(
        "{:<10} {:<28} {:<5} {:<24} {:<24} {:>7} {:>7} {:>12} {:>12}",
        "ID", "USER", "VIA", "CLIENT", "RELAYS", "AGE_S", "LEFT_S", "BYTES_OUT", "BYTES_IN"
    );
    for a in answer["allocations"].as_array().into_iter().flatten() {
        let text = |key: &str| a[key].as_str().unwrap_or("").to_owned();
        let relays: Vec<&str> = a["relays"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r.as_str())
            .collect();
        println!(
            "{:<10} {:<28} {:<5} {:<24} {:<24} {:>7} {:>7} {:>12} {:>12}",
            text("id"),
            text("user"),
            text("transport"),
            text("client"),
            relays.join(","),
            a["age_s"],
            a["expires_in_s"],
            a["to_peer"]["bytes"],
            a["to_client"]["bytes"]
        );
    }
}

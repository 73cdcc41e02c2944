//! `turnpike selftest`: check a TURN deployment from here (the library's
//! `selftest`), and say so in text or JSON and in the exit code.
//!
//! Contract: everything that can be wrong with what the command was
//! given (a URL, the credential's sources, the config, the `--ca` file)
//! is found before any packet is sent and is a [`UsageError`] (exit 2);
//! then every check runs and the report goes to stdout, exit 0 if none
//! failed and 1 otherwise (a warning does not fail). The credential comes
//! from, in order: `--user`/`--password`, a secret (`--secret`,
//! `--secret-file`, `TURNPIKE_SECRET`) minted into a short-lived one, or
//! `--config` (its first secret, else its first user).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};
use turnpike::config::Config;
use turnpike::process;
use turnpike::proto::auth;
use turnpike::selftest::{self, from_config, Credential, Plan, TlsClient, Trust, TurnUrl};

use super::args::SelftestArgs;
use super::UsageError;

/// Runs the checks `args` asks for and prints the report.
pub fn selftest(args: SelftestArgs, config_path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let json = args.json;
    let plan = plan(args, config_path).map_err(UsageError)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(selftest::run(&plan));
    // A DNS lookup abandoned at its timeout may still hold a blocking
    // thread; the run is over, so do not wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match json {
        true => println!("{}", report.to_json()),
        false => print!("{}", report.render()),
    }
    Ok(ExitCode::from(report.exit_code()))
}

/// What to check, from the arguments and the config.
fn plan(args: SelftestArgs, config_path: Option<&Path>) -> anyhow::Result<Plan> {
    let config = match config_path {
        Some(path) => Some(Config::load(path)?),
        None => None,
    };
    let urls = match (args.urls.is_empty(), &config) {
        (false, _) => args
            .urls
            .iter()
            .map(|text| TurnUrl::parse(text))
            .collect::<Result<Vec<_>, _>>()?,
        (true, Some(config)) => from_config::urls(config, args.host.as_deref()),
        (true, None) => bail!("give the URLs to check (turn:host:port?transport=udp, …) or --config"),
    };
    if urls.is_empty() {
        bail!("the config has no listeners to check");
    }
    let credential = credential(&args, config.as_ref())?;
    if credential.is_none() && urls.iter().any(|url| url.scheme.is_turn()) {
        bail!("a turn: URL needs a credential: give --user and --password, --secret, --secret-file, TURNPIKE_SECRET or --config");
    }
    let tls = match urls.iter().any(|url| url.scheme.is_secure()) {
        true => {
            let trust = args.ca.clone().map_or(Trust::System, Trust::CaFile);
            Some(TlsClient::new(&trust)?)
        }
        false => None,
    };
    let mut plan = Plan::new(urls);
    plan.credential = credential;
    plan.tls = tls;
    plan.expect_relay_ips = args.expect_relay_ip;
    // The config's own listeners, named by their (loopback) addresses: the
    // relays are meant to advertise its external addresses, not those.
    if let (true, None, true, Some(config)) = (
        args.urls.is_empty(),
        &args.host,
        plan.expect_relay_ips.is_empty(),
        &config,
    ) {
        plan.expect_relay_ips = config.server.external_ip.public().collect();
    }
    plan.expect_realm = config.as_ref().map(|c| c.server.realm.clone());
    plan.count = usize::from(args.count);
    plan.timeout = args.timeout;
    plan.cert_warn_days = i64::from(args.cert_warn_days);
    Ok(plan)
}

fn credential(args: &SelftestArgs, config: Option<&Config>) -> anyhow::Result<Option<Credential>> {
    match (&args.user, &args.password) {
        (Some(user), Some(password)) => return Ok(Some(Credential::password(user, password))),
        (Some(_), None) => bail!("--user needs --password (or TURNPIKE_PASSWORD)"),
        (None, Some(_)) if args.secret.secret.is_none() && args.secret.secret_file.is_none() => {
            bail!("--password (or TURNPIKE_PASSWORD) needs --user")
        }
        _ => {}
    }
    if let Some(secret) = args.secret.clone().resolve()? {
        let algorithm = args
            .algorithm
            .or_else(|| config.map(|c| c.auth.minting_algorithm()))
            .unwrap_or_default();
        let minted = auth::mint(
            algorithm,
            secret.as_bytes(),
            Some("selftest"),
            process::clock::unix_secs(),
            from_config::MINTED_TTL,
        );
        return Ok(Some(Credential::password(&minted.username, &minted.password)));
    }
    Ok(config.and_then(|c| from_config::credential(c, process::clock::unix_secs())))
}

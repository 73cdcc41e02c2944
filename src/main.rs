//! The `turnpike` command: run the server, check a config, mint credentials,
//! ask the admin API of a running server.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use base64::Engine;
use clap::{Parser, Subcommand};
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

use turnpike::admin;
use turnpike::config::{Config, LogFormat, Secret};
use turnpike::fleet::{self, Fleet, FleetSettings};
use turnpike::http;
use turnpike::net;
use turnpike::process::{self, logging};
use turnpike::proto::auth;
use turnpike::signaling::{self, Hub, IceConfig};

#[derive(Parser)]
#[command(
    name = "turnpike",
    version,
    about = "STUN/TURN server with a minimal WebRTC signaling endpoint"
)]
struct Cli {
    /// Configuration file (TOML). Without one, built-in defaults are used.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default when no subcommand is given).
    Run,
    /// Validate a configuration file and exit (non-zero with the reason if it is invalid).
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Print an RTCIceServer JSON entry with a fresh short-lived credential.
    Credentials {
        /// Shared secret to mint with (default: the first secret of --config).
        #[command(flatten)]
        secret: SecretSource,
        /// Name embedded in the username (`<expiry>:<user>`).
        #[arg(long)]
        user: Option<String>,
        /// Lifetime of the credential, e.g. "1h", "30m".
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Host name or IP to put in the TURN URL.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Port to put in the TURN URL.
        #[arg(long, default_value_t = 3478)]
        port: u16,
        /// Password form: sha1 (coturn's) or sha256 (default: the first
        /// of auth.secret_algorithms of --config, else sha1).
        #[arg(long, value_parser = parse_algorithm)]
        algorithm: Option<auth::SecretAlgorithm>,
    },
    /// Print a token for `/ws?token=` when `signaling.token_secret` is set.
    Token {
        /// Token secret (default: signaling.token_secret of --config).
        #[command(flatten)]
        secret: SecretSource,
        /// Lifetime of the token, e.g. "1h", "10m".
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Bind the token to this room: its holder may join no other.
        #[arg(long)]
        room: Option<String>,
    },
    /// Ask the admin API of a running server (`[admin]` in its config).
    Admin(AdminArgs),
}

/// `turnpike admin`: where the API is, the key, and what to ask.
#[derive(clap::Args)]
struct AdminArgs {
    /// The API's URL (default: http://<admin.listen of --config>, else
    /// http://127.0.0.1:8081).
    #[arg(long)]
    url: Option<String>,
    /// A file whose first line is the key (default: TURNPIKE_ADMIN_KEY,
    /// else admin.key or admin.key_file of --config).
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Print the API's JSON answer instead of a table or a summary.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// List the allocations of every shard.
    List {
        /// Only those of this username.
        #[arg(long)]
        user: Option<String>,
    },
    /// End one allocation by its id (as `list` prints it).
    End { id: String },
    /// End every allocation of a username.
    EndUser { user: String },
    /// Refuse a username from now on and end its allocations.
    Revoke {
        username: String,
        /// How long the revocation holds (default: a short-lived username's
        /// own expiry, else auth.max_credential_lifetime).
        #[arg(long)]
        ttl: Option<String>,
    },
    /// List the revoked usernames.
    Revocations,
}

/// Where a command line takes a secret from. An argument is visible to
/// every user of the machine (`ps`), so a file or the environment is the
/// better place.
#[derive(clap::Args)]
struct SecretSource {
    /// The secret itself; prefer --secret-file or TURNPIKE_SECRET, which
    /// other users of the machine cannot see in the process list.
    #[arg(long, env = "TURNPIKE_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// A file whose first line is the secret.
    #[arg(long, conflicts_with = "secret")]
    secret_file: Option<PathBuf>,
}

impl SecretSource {
    fn resolve(self) -> anyhow::Result<Option<String>> {
        match (self.secret, self.secret_file) {
            (Some(secret), _) => Ok(Some(secret)),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
                match text.lines().next().map(str::trim).filter(|l| !l.is_empty()) {
                    Some(line) => Ok(Some(line.to_owned())),
                    None => bail!("{} holds no secret on its first line", path.display()),
                }
            }
            (None, None) => Ok(None),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(path) => Ok(Config::load(path)?),
        None => {
            let mut config = Config::default();
            config.validate().context("built-in defaults")?;
            Ok(config)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => serve(load(cli.config.as_ref())?, cli.config.as_deref()),
        Command::CheckConfig { file } => {
            let config = Config::load(&file)?;
            process::tls::TlsCertificates::from_config(&config)?;
            let http = config
                .listen
                .http
                .map_or("HTTP off".to_owned(), |addr| format!("HTTP on {addr}"));
            let admin = config
                .admin
                .listen
                .map_or("admin API off".to_owned(), |addr| format!("admin API on {addr}"));
            let http = match config.signaling.share_tls_port {
                true => format!("{http}, HTTPS on the TLS port(s) too"),
                false => http,
            };
            println!(
                "{}: ok ({} UDP, {} TCP and {} TLS listener(s), {http}, {admin}, {} user(s), {} shared secret(s))",
                file.display(),
                config.listen.udp.len(),
                config.listen.tcp.len(),
                config.listen.tls.len(),
                config.auth.users.len(),
                config.auth.resolved_secrets.len()
            );
            for warning in config.warnings() {
                eprintln!("warning: {warning}");
            }
            Ok(())
        }
        Command::Token { secret, ttl, room } => {
            if let Some(room) = room.as_deref().filter(|r| !signaling::protocol::is_valid_room(r)) {
                bail!("--room {room:?}: a room is 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'");
            }
            let secret = match (secret.resolve()?, &cli.config) {
                (Some(s), _) => s,
                (None, Some(path)) => match Config::load(path)?.signaling.token_secret {
                    Some(s) => s.expose().to_owned(),
                    None => bail!("{} has no signaling.token_secret", path.display()),
                },
                (None, None) => {
                    bail!("give --secret, --secret-file, TURNPIKE_SECRET or --config with signaling.token_secret")
                }
            };
            let expires = process::clock::unix_secs().saturating_add(ttl.as_secs());
            println!("{}", auth::signaling_token(secret.as_bytes(), expires, room.as_deref()));
            Ok(())
        }
        Command::Admin(args) => admin_command(args, cli.config.as_deref()),
        Command::Credentials {
            secret,
            user,
            ttl,
            host,
            port,
            algorithm,
        } => {
            let loaded = match &cli.config {
                Some(path) => Some((path, Config::load(path)?)),
                None => None,
            };
            let algorithm = algorithm
                .or_else(|| loaded.as_ref().map(|(_, c)| c.auth.minting_algorithm()))
                .unwrap_or_default();
            let secret = match (secret.resolve()?, &loaded) {
                (Some(s), _) => s,
                (None, Some((path, config))) => match config.auth.minting_secret() {
                    Some(s) => s.expose().to_owned(),
                    None => bail!("{} has no shared secret (auth.secrets)", path.display()),
                },
                (None, None) => bail!("give --secret, --secret-file, TURNPIKE_SECRET or --config with auth.secrets"),
            };
            if user.as_deref().is_some_and(|u| u.contains(':')) {
                bail!("--user must not contain ':'");
            }
            let minted = auth::mint(
                algorithm,
                secret.as_bytes(),
                user.as_deref(),
                process::clock::unix_secs(),
                ttl,
            );
            let entry = serde_json::json!({
                "urls": [format!("turn:{host}:{port}?transport=udp")],
                "username": minted.username,
                "credential": minted.password,
            });
            println!("{entry}");
            Ok(())
        }
    }
}

/// `turnpike admin …`: one request to the admin API, its answer printed.
fn admin_command(args: AdminArgs, config_path: Option<&std::path::Path>) -> anyhow::Result<()> {
    let config = config_path.map(Config::load).transpose()?;
    let url = match (&args.url, config.as_ref().and_then(|c| c.admin.listen)) {
        (Some(url), _) => url.clone(),
        (None, Some(listen)) => format!("http://{listen}"),
        (None, None) => "http://127.0.0.1:8081".to_owned(),
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
    let client = admin::client::AdminClient::new(&url, key)?;
    let encode = admin::client::encode_component;
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

fn init_logging(config: &Config) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::try_new(directives).context("RUST_LOG")?,
        _ => EnvFilter::try_new(&config.log.level).context("log.level")?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Text if logging::stderr_is_journal() => builder
            .with_ansi(false)
            .event_format(logging::JournalPriority(
                tracing_subscriber::fmt::format().without_time(),
            ))
            .init(),
        LogFormat::Text => builder.with_ansi(logging::colour_on_stderr()).init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

fn serve(mut config: Config, config_path: Option<&std::path::Path>) -> anyhow::Result<()> {
    init_logging(&config)?;
    for warning in config.warnings() {
        warn!("{warning}");
    }
    let demo_secret = config.auth.resolved_secrets.is_empty() && config.auth.users.is_empty();
    if demo_secret {
        // With nothing configured, a random secret makes the server usable
        // for a local try-out without ever accepting a guessable password.
        let bytes: [u8; 24] = process::random::random_bytes();
        let secret = base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes);
        config.auth.resolved_secrets.push(Secret::new(secret));
        info!("no users or shared secrets configured: generated a random shared secret for this run");
    }
    // Caught before anything serves, so that a signal during the start is
    // handled once it serves instead of killing the process.
    let signals = Signals::catch().context("signal handlers")?;
    let mut server = net::start(&config).context("starting the server")?;
    let sources = http::HttpSources {
        listen: config.listen.http,
        handed: server.take_http_inbox(),
    };
    let hub = (sources.listen.is_some() || sources.handed.is_some()).then(|| {
        Arc::new(Hub::from_config(
            &config,
            ice_config(&config, &server, config.listen.http),
        ))
    });
    let fleet = fleet::start(FleetSettings::from_config(&config), hub.clone(), server.admin())
        .context("starting the fleet's link to Redis")?;
    let http = hub
        .map(|hub| {
            let fleet_status = fleet.as_ref().map(Fleet::status);
            http::start(
                &config,
                sources,
                hub,
                fleet_status,
                server.certificates(),
                server.status(),
            )
        })
        .transpose()
        .context("starting the HTTP endpoint")?;
    let admin = admin::start(
        &config,
        server.admin(),
        server.status(),
        fleet.as_ref().map(Fleet::sharer),
    )
    .context("starting the admin API")?;
    if demo_secret && std::io::stderr().is_terminal() {
        // Printed for the person at the terminal, never into logs.
        if let Some(secret) = config.auth.resolved_secrets.first() {
            let minted = auth::mint(
                config.auth.minting_algorithm(),
                secret.expose().as_bytes(),
                Some("demo"),
                process::clock::unix_secs(),
                Duration::from_secs(86_400),
            );
            let port = server.udp.first().map_or(3478, |a| a.port());
            eprintln!(
                "\nTry it (credential valid 24 h, for this run only):\n  turnutils_uclient -u '{}' -w '{}' -p {port} -y 127.0.0.1\n",
                minted.username, minted.password
            );
        }
    }
    let page = http
        .as_ref()
        .and_then(|h| h.addr)
        .map(|addr| match config.signaling.tls {
            true => format!("https://{addr}/"),
            false => format!("http://{addr}/"),
        });
    let shared = server.tls.first().filter(|_| config.signaling.share_tls_port);
    if let Some(page) = page.or_else(|| shared.map(|addr| format!("https://{addr}/"))) {
        info!("demo call page: {page} (open it in two tabs and join one room)");
    }
    if config_path.is_none() {
        info!("running on built-in defaults; see config.example.toml for every option");
    }
    let generated = demo_secret.then(|| config.auth.resolved_secrets.clone());
    // Every listener is bound and serving: tell systemd (Type=notify).
    systemd_notify(&[sd_notify::NotifyState::Ready]);
    let reload = || {
        reload(
            config_path,
            generated.as_deref(),
            &server,
            (http.as_ref(), admin.as_ref()),
        )
    };
    supervise(signals, &server, config.server.shutdown_grace, reload)?;
    info!("shutting down");
    if let Some(http) = http {
        http.stop();
    }
    if let Some(admin) = admin {
        admin.stop();
    }
    if let Some(fleet) = fleet {
        fleet.stop();
    }
    server.stop();
    Ok(())
}

/// What the signaling endpoint hands out, for `config` on `server`, whose
/// HTTP listener is `http` (or, without one, a shared TLS port).
fn ice_config(config: &Config, server: &net::RunningServer, http: Option<std::net::SocketAddr>) -> IceConfig {
    let reached = http.or_else(|| server.tls.first().copied());
    IceConfig {
        turn_host: config.signaling.turn_host.clone(),
        fallback_host: reached.map_or_else(|| "127.0.0.1".to_owned(), IceConfig::fallback_host_for),
        udp_port: server.udp.first().map(|a| a.port()),
        tcp_port: server.tcp.first().map(|a| a.port()),
        tls_port: server.tls.first().map(|a| a.port()),
        secret: config.auth.minting_secret().cloned(),
        algorithm: config.auth.minting_algorithm(),
        ttl: config.auth.credential_ttl,
    }
}

/// SIGHUP: re-reads the config file and applies what can change while
/// running; an invalid file is refused with the reason and the running
/// config stays. Without a config file only the TLS certificate (if any)
/// is re-read. `generated` is the random demo secret, kept while the file
/// still configures no credentials.
fn reload(
    path: Option<&std::path::Path>,
    generated: Option<&[Secret]>,
    server: &net::RunningServer,
    (http, admin): (Option<&http::HttpServer>, Option<&admin::AdminServer>),
) {
    let Some(path) = path else {
        match server.reload_tls() {
            Ok(()) => info!("SIGHUP: TLS certificate reloaded"),
            Err(e) => error!("SIGHUP: keeping the previous TLS certificate: {e}"),
        }
        return;
    };
    let mut config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => return error!("SIGHUP: keeping the running configuration: {e}"),
    };
    if config.auth.resolved_secrets.is_empty() && config.auth.users.is_empty() {
        config
            .auth
            .resolved_secrets
            .extend(generated.unwrap_or_default().iter().cloned());
    }
    match server.reload(&config) {
        Ok(needs_restart) => {
            if let Some(http) = http {
                http.reload(&config, ice_config(&config, server, http.addr));
            }
            let admin_kept = admin.map_or(config.admin.listen.is_none(), |admin| admin.reload(&config));
            if !admin_kept {
                warn!("SIGHUP: the change to admin.listen takes effect only after a restart");
            }
            info!(path = %path.display(), "SIGHUP: configuration reloaded; live allocations kept");
            for what in needs_restart {
                warn!("SIGHUP: the change to {what} takes effect only after a restart");
            }
        }
        Err(e) => error!("SIGHUP: keeping the running configuration: TLS: {e}"),
    }
}

/// Sends `state` to systemd when started by it (NOTIFY_SOCKET set);
/// otherwise does nothing.
fn systemd_notify(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        warn!("cannot notify systemd: {e}");
    }
}

/// SIGTERM, SIGINT and SIGHUP, caught on the runtime that [`supervise`]
/// runs on.
struct Signals {
    runtime: tokio::runtime::Runtime,
    term: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn catch() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("signal runtime")?;
        let entered = runtime.enter();
        let term = signal(SignalKind::terminate())?;
        let interrupt = signal(SignalKind::interrupt())?;
        let hangup = signal(SignalKind::hangup())?;
        drop(entered);
        Ok(Signals {
            runtime,
            term,
            interrupt,
            hangup,
        })
    }
}

/// Runs until SIGINT or SIGTERM, then drains: new allocations are refused
/// and live ones get up to `grace` to end; a second signal ends the wait.
/// On SIGHUP calls `reload`. Under a systemd watchdog
/// (`WatchdogSec=`), sends WATCHDOG=1 at a third of its period, but only
/// while every shard's event loop is turning, so that a wedged loop gets
/// the service restarted.
fn supervise(signals: Signals, server: &net::RunningServer, grace: Duration, reload: impl Fn()) -> anyhow::Result<()> {
    use sd_notify::NotifyState;
    let Signals {
        runtime,
        mut term,
        mut interrupt,
        mut hangup,
    } = signals;
    let status = server.status();
    let watchdog = sd_notify::watchdog_enabled();
    runtime.block_on(async {
        let period = watchdog.map_or(Duration::from_secs(3600), |p| (p / 3).max(Duration::from_millis(100)));
        let mut watchdog_tick = tokio::time::interval(period);
        let mut drain_until: Option<tokio::time::Instant> = None;
        let mut drain_poll = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
                _ = hangup.recv() => {
                    systemd_notify(&reloading());
                    reload();
                    systemd_notify(&[NotifyState::Ready]);
                    continue;
                }
                _ = watchdog_tick.tick(), if watchdog.is_some() => {
                    if status.responsive(period) {
                        systemd_notify(&[NotifyState::Watchdog]);
                    } else {
                        warn!("an event loop has not turned for {period:?}; withholding the systemd watchdog ping");
                    }
                    continue;
                }
                _ = drain_poll.tick(), if drain_until.is_some() => {
                    let left = status.allocations();
                    if left == 0 {
                        info!("drained: no allocation left");
                        return Ok::<(), std::io::Error>(());
                    }
                    if drain_until.is_some_and(|until| tokio::time::Instant::now() >= until) {
                        info!(allocations = left, "shutdown grace period over; closing the remaining allocations");
                        return Ok(());
                    }
                    continue;
                }
            }
            // SIGTERM or SIGINT.
            if drain_until.is_some() {
                info!("second signal: not waiting for the drain");
                return Ok(());
            }
            systemd_notify(&[NotifyState::Stopping]);
            status.begin_drain();
            info!(
                allocations = status.allocations(),
                grace = %humantime::format_duration(grace),
                "draining: new allocations are refused; waiting for the live ones to end"
            );
            drain_until = Some(tokio::time::Instant::now() + grace);
        }
    })?;
    Ok(())
}

/// RELOADING=1 with the timestamp systemd 253+ wants alongside it.
fn reloading() -> Vec<sd_notify::NotifyState<'static>> {
    let mut state = vec![sd_notify::NotifyState::Reloading];
    state.extend(sd_notify::NotifyState::monotonic_usec_now().ok());
    state
}

/// `--algorithm`: the names `auth.secret_algorithms` takes.
fn parse_algorithm(name: &str) -> Result<auth::SecretAlgorithm, String> {
    match name {
        "sha1" => Ok(auth::SecretAlgorithm::Sha1),
        "sha256" => Ok(auth::SecretAlgorithm::Sha256),
        _ => Err(format!("{name:?} is not sha1 or sha256")),
    }
}

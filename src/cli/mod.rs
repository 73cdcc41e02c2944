//! The commands of the `turnpike` binary, on top of the library.
//!
//! Binary-only (declared from `main.rs`, not part of `lib.rs`): the
//! library never sees clap, anyhow or the process's signals. Each command
//! lives in a file of its own:
//!
//! - `args.rs`: the command line (clap derive types), nothing else;
//! - `serve.rs`: `turnpike run`, which starts every part of the server,
//!   reloads them on SIGHUP and stops them, in one fixed order;
//! - `signals.rs`: SIGTERM/SIGINT/SIGHUP, systemd notifications and the
//!   watchdog, the loop `run` waits in;
//! - `logging.rs`: the tracing subscriber `run` installs;
//! - `check_config.rs`, `credentials.rs` (`credentials`, `token`),
//!   `admin.rs` (`admin …`) and `selftest.rs`: the one-shot commands.
//!
//! Contract: a command returns the exit code (0, or `selftest`'s 1 for a
//! failed check) or an [`anyhow::Error`] whose chain is the message `main`
//! prints after `Error: `, exiting 2 if it is a [`UsageError`] and 1
//! otherwise; what it prints on success goes to stdout, warnings to
//! stderr. Only `run` installs logging.

pub mod args;

mod admin;
mod check_config;
mod credentials;
mod logging;
mod selftest;
mod serve;
mod signals;

use std::fmt;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use turnpike::config::Config;

use args::{Cli, Command};

/// Runs the command `cli` names (`run` when it names none); the exit
/// code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config_path = cli.config.as_deref();
    let done = match cli.command.unwrap_or(Command::Run) {
        Command::Run => serve::serve(load(config_path)?, config_path),
        Command::CheckConfig { file } => check_config::check_config(&file),
        Command::Token { secret, ttl, room } => credentials::token(secret, ttl, room, config_path),
        Command::Admin(args) => admin::admin_command(args, config_path),
        Command::Credentials(args) => credentials::credentials(args, config_path),
        Command::Selftest(args) => return selftest::selftest(args, config_path),
    };
    done.map(|()| ExitCode::SUCCESS)
}

/// An error in what the command was given (arguments, config), which
/// `main` exits 2 with, as clap does for the arguments it refuses, so a
/// monitoring script can tell "my setup is wrong" from "the server is".
#[derive(Debug)]
pub struct UsageError(pub anyhow::Error);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for UsageError {}

/// The config at `path`, or the validated built-in defaults without one.
fn load(path: Option<&Path>) -> anyhow::Result<Config> {
    match path {
        Some(path) => Ok(Config::load(path)?),
        None => {
            let mut config = Config::default();
            config.validate().context("built-in defaults")?;
            Ok(config)
        }
    }
}

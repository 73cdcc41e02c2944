//! The `turnpike` command: run the server, check a config, mint credentials,
//! ask the admin API of a running server.
//!
//! This file only parses the command line, hands it to [`cli::run`] and
//! turns the outcome into the exit code: the command's (0, or 1 for a
//! failed `selftest` check), or on an error `Error: {e:#}` (the whole
//! chain of causes) on stderr and 2 for a [`cli::UsageError`], else 1.
//! Everything else is in `cli/`.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::args::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:#}");
            match e.is::<cli::UsageError>() {
                true => ExitCode::from(2),
                false => ExitCode::FAILURE,
            }
        }
    }
}

//! The `turnpike` command: run the server, check a config, mint credentials,
//! ask the admin API of a running server.
//!
//! This file only parses the command line, hands it to [`cli::run`] and
//! turns the outcome into the exit code: 0, or 1 with `Error: {e:#}` (the
//! whole chain of causes) on stderr. Everything else is in `cli/`.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::args::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

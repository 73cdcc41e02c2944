//! The tracing subscriber of `turnpike run`: the filter of `RUST_LOG`
//! (when set and non-empty) or `log.level`, and the format of
//! `log.format`, written to stderr.
//!
//! Contract: called once, before anything logs. Text goes to systemd's
//! journal without timestamps (it has its own) and with `<N>` priority
//! prefixes, to a terminal in colour, elsewhere plain; JSON is one object
//! a line. The journal and colour rules are the library's
//! (`process::logging`); only the installation is here.

use anyhow::Context;
use tracing_subscriber::EnvFilter;
use turnpike::config::{Config, LogFormat};
use turnpike::process::logging;

/// Installs the global subscriber for `config`.
pub fn init(config: &Config) -> anyhow::Result<()> {
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

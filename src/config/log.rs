//! `[log]`: the log filter and the log line format.
//!
//! This file holds the section's struct, its defaults, the doc comment on
//! each field that is the reference for its key, and [`check`]: a filter
//! tracing-subscriber accepts. The subscriber itself is installed by the
//! binary (`cli/logging.rs`).

use serde::Deserialize;

use super::ConfigError;

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// Log filter, a tracing-subscriber `EnvFilter` directive such as
    /// `"info"` or `"turnpike=debug,info"`; `"off"` silences logging. The
    /// `RUST_LOG` environment variable, when set, overrides it. Default:
    /// `"info"`.
    pub level: String,
    /// Log line format: `"text"` for people, `"json"` (one object per line)
    /// for log collectors. Default: `"text"`.
    pub format: LogFormat,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// Value of `log.format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `"text"`: human-readable lines.
    #[default]
    Text,
    /// `"json"`: one JSON object per line.
    Json,
}

pub(super) fn check(log: &LogSection) -> Result<(), ConfigError> {
    let level = &log.level;
    if level.trim().is_empty() {
        return Err(ConfigError::invalid(
            "log.level",
            "is empty; use \"off\" to silence logging",
        ));
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(level)
        .map_err(|e| ConfigError::invalid("log.level", format!("{level:?} is not a valid filter: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{invalid_key, parse};

    #[test]
    fn bad_log_settings_are_refused() {
        assert_eq!(invalid_key("[log]\nlevel = \"\"\n"), "log.level");
        assert_eq!(invalid_key("[log]\nlevel = \"info,[\"\n"), "log.level");
        let msg = parse("[log]\nformat = \"xml\"\n").unwrap_err().to_string();
        assert!(msg.contains("line 2"), "{msg}");
    }
}

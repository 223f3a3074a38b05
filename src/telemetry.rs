//! Logging: journald when the supervisor runs under systemd and the journal
//! socket exists, human or logfmt lines on stderr otherwise.

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::cli::LogFormat;

const JOURNALD_SOCKET: &str = "/run/systemd/journal/socket";

/// Whether log lines should go to journald: stderr is connected to the
/// journal (systemd sets `JOURNAL_STREAM`) and its socket exists.
pub fn is_journald_wanted() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some() && std::path::Path::new(JOURNALD_SOCKET).exists()
}

/// The filter for a `--log-level` value: a level (`info`) or `target=level`
/// pairs with an optional default (`hashi_supervisor=debug,warn`); anything
/// else means `info`. A plain target filter (no regex-based `EnvFilter`):
/// it keeps the daemon's resident code small (BENCHMARKS.md, Supervision).
pub fn filter(level: &str) -> Targets {
    level
        .parse::<Targets>()
        .unwrap_or_else(|_| Targets::new().with_default(LevelFilter::INFO))
}

/// Installs the global subscriber. Safe to call once per process.
pub fn init(level: &str, format: LogFormat) {
    let filter = filter(level);
    if is_journald_wanted() {
        if let Ok(layer) = tracing_journald::layer() {
            let layer = layer.with_syslog_identifier("hashi-supervisor".to_string());
            let _ = tracing_subscriber::registry()
                .with(filter)
                .with(layer)
                .try_init();
            return;
        }
    }
    // Colours only for a terminal: `supervisor run 2>file` or a log
    // collector must not get escape sequences.
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(tty)
        .with_target(false);
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Human => registry.with(fmt).try_init(),
        LogFormat::Logfmt => registry.with(fmt.with_ansi(false).compact()).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_target_pairs_filter_as_written() {
        let f = filter("warn");
        assert!(f.would_enable("hashi_supervisor", &tracing::Level::WARN));
        assert!(!f.would_enable("hashi_supervisor", &tracing::Level::INFO));
        let f = filter("hashi_supervisor=debug,error");
        assert!(f.would_enable("hashi_supervisor::supervise", &tracing::Level::DEBUG));
        assert!(!f.would_enable("hyper", &tracing::Level::WARN));
        let f = filter("not a filter ===");
        assert!(f.would_enable("anything", &tracing::Level::INFO));
        assert!(!f.would_enable("anything", &tracing::Level::DEBUG));
    }
}

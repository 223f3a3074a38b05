//! Logging: journald when the supervisor runs under systemd and the journal
//! socket exists, human or logfmt lines on stderr otherwise.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::cli::LogFormat;

const JOURNALD_SOCKET: &str = "/run/systemd/journal/socket";

/// Whether log lines should go to journald: stderr is connected to the
/// journal (systemd sets `JOURNAL_STREAM`) and its socket exists.
pub fn is_journald_wanted() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some() && std::path::Path::new(JOURNALD_SOCKET).exists()
}

/// Installs the global subscriber. Safe to call once per process.
pub fn init(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
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
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Human => registry.with(fmt).try_init(),
        LogFormat::Logfmt => registry.with(fmt.with_ansi(false).compact()).try_init(),
    };
}

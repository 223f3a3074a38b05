//! Logging: journald when the supervisor runs under systemd and the journal
//! socket exists, human or logfmt lines on stderr otherwise.
//!
//! The agents' output is not the supervisor's log: under journald each
//! agent line goes to the journal by itself ([`AgentLog::Journal`], the
//! native protocol), under the agent's own `SYSLOG_IDENTIFIER` (`consul`,
//! `nomad`: `journalctl -t consul` works) and with the priority of the
//! agent's own level, whatever the supervisor's `--log-level`. Elsewhere it
//! stays one supervisor log event per line on stderr ([`AgentLog::Tracing`]).
//!
//! Every stage logs, and `supervise` routes the agents' output through
//! [`AgentLog`], so this module sits right after the shared vocabulary in the
//! layering (`lib.rs`): it imports nothing from the crate but `vocab`, and
//! owns its `--log-format` values ([`LogFormat`]) rather than reading `cli`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::vocab::Product;

/// Format of log lines on stderr (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// key=value lines.
    Logfmt,
}

/// journald's native protocol socket.
pub const JOURNALD_SOCKET: &str = "/run/systemd/journal/socket";
/// Environment variable naming another journal socket (tests; a journal
/// namespace's socket).
pub const JOURNAL_SOCKET_ENV: &str = "HASHI_SUPERVISOR_JOURNAL_SOCKET";

/// The journal socket: [`JOURNAL_SOCKET_ENV`] when set, else journald's.
pub fn journal_socket() -> PathBuf {
    std::env::var_os(JOURNAL_SOCKET_ENV)
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from(JOURNALD_SOCKET), PathBuf::from)
}

/// Whether log lines should go to journald: stderr is connected to the
/// journal (systemd sets `JOURNAL_STREAM`) and its socket exists.
pub fn is_journald_wanted() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some() && journal_socket().exists()
}

/// syslog priorities (`PRIORITY=` of a journal entry).
pub mod priority {
    /// Critical: a Go `panic:` or `fatal error:`.
    pub const CRIT: u8 = 2;
    /// `[ERROR]`.
    pub const ERR: u8 = 3;
    /// `[WARN]`.
    pub const WARNING: u8 = 4;
    /// `[INFO]`, and lines without a level.
    pub const INFO: u8 = 6;
    /// `[DEBUG]`, `[TRACE]`.
    pub const DEBUG: u8 = 7;
}

/// The syslog priority of one line of Consul's or Nomad's output, from the
/// agent's own level: hclog's text form (`2024-01-01T00:00:00.000Z [INFO]
/// agent: ...`, the timestamp optional) or its JSON form (`"@level"`, with
/// `log_json`). Lines without a level (the `==> ` banner) are INFO; a Go
/// runtime crash (`panic:`, `fatal error:`) is CRIT.
pub fn agent_line_priority(line: &str) -> u8 {
    let t = line.trim_start();
    if t.starts_with('{') {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(t) {
            if let Some(level) = v.get("@level").and_then(|l| l.as_str()) {
                return level_priority(level).unwrap_or(priority::INFO);
            }
        }
        return priority::INFO;
    }
    if t.starts_with("panic: ") || t.starts_with("fatal error: ") {
        return priority::CRIT;
    }
    // `[LEVEL]` as the first word, or the second after a timestamp.
    let mut words = t.split_whitespace();
    let first = words.next().unwrap_or_default();
    let word = if first.starts_with(|c: char| c.is_ascii_digit()) {
        words.next().unwrap_or_default()
    } else {
        first
    };
    word.strip_prefix('[')
        .and_then(|w| w.strip_suffix(']'))
        .and_then(level_priority)
        .unwrap_or(priority::INFO)
}

fn level_priority(level: &str) -> Option<u8> {
    Some(match level.to_ascii_uppercase().as_str() {
        "TRACE" | "DEBUG" => priority::DEBUG,
        "INFO" => priority::INFO,
        "WARN" | "WARNING" => priority::WARNING,
        "ERROR" | "ERR" => priority::ERR,
        _ => return None,
    })
}

/// Appends one field of journald's native protocol to `buf`: `KEY=value\n`,
/// or, for a value with a newline, `KEY\n`, its length as a little-endian
/// u64, the value and `\n`.
pub fn push_journal_field(buf: &mut Vec<u8>, key: &str, value: &[u8]) {
    buf.extend_from_slice(key.as_bytes());
    if value.contains(&b'\n') {
        buf.push(b'\n');
        buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        buf.push(b'=');
    }
    buf.extend_from_slice(value);
    buf.push(b'\n');
}

/// Where the agents' output lines go.
#[derive(Debug, Clone, Default)]
pub enum AgentLog {
    /// One supervisor log event per line (stderr, filtered by
    /// `--log-level` like the supervisor's own lines).
    #[default]
    Tracing,
    /// Straight to the journal, one entry per line.
    Journal(Arc<JournalWriter>),
}

impl AgentLog {
    /// The journal when the supervisor logs to it ([`is_journald_wanted`]),
    /// else [`AgentLog::Tracing`]. Needs a tokio runtime.
    pub fn for_this_process() -> Self {
        if !is_journald_wanted() {
            return Self::Tracing;
        }
        match JournalWriter::new(journal_socket()) {
            Ok(w) => Self::Journal(Arc::new(w)),
            Err(e) => {
                tracing::warn!(error = %e, "failed to open a journal socket, agent output goes to stderr");
                Self::Tracing
            }
        }
    }

    /// Writes one line of `agent`'s output (`stream`: stdout or stderr).
    pub async fn line(&self, agent: Product, pid: u32, stream: &'static str, text: &str) {
        match self {
            Self::Tracing => tracing::info!(agent = %agent, stream, "{text}"),
            Self::Journal(w) => {
                if let Err(e) = w.send(agent, pid, stream, text).await {
                    // The journal went away (restarted): the line is not lost.
                    tracing::warn!(agent = %agent, stream, error = %e, "{text}");
                }
            }
        }
    }
}

/// Sends journal entries over the native protocol.
#[derive(Debug)]
pub struct JournalWriter {
    socket: tokio::net::UnixDatagram,
    path: PathBuf,
}

impl JournalWriter {
    /// A writer to the journal socket at `path` (not checked until the
    /// first send). Needs a tokio runtime.
    pub fn new(path: impl AsRef<Path>) -> std::io::Result<Self> {
        Ok(Self {
            socket: tokio::net::UnixDatagram::unbound()?,
            path: path.as_ref().to_path_buf(),
        })
    }

    /// One entry for one line of an agent's output.
    pub async fn send(
        &self,
        agent: Product,
        pid: u32,
        stream: &str,
        text: &str,
    ) -> std::io::Result<()> {
        let buf = agent_entry(agent, pid, stream, text);
        self.socket.send_to(&buf, &self.path).await.map(|_| ())
    }
}

/// The native-protocol datagram of one agent line.
pub fn agent_entry(agent: Product, pid: u32, stream: &str, text: &str) -> Vec<u8> {
    let mut buf = Vec::with_capacity(text.len() + 128);
    push_journal_field(&mut buf, "MESSAGE", text.as_bytes());
    let prio = agent_line_priority(text).to_string();
    push_journal_field(&mut buf, "PRIORITY", prio.as_bytes());
    push_journal_field(&mut buf, "SYSLOG_IDENTIFIER", agent.as_str().as_bytes());
    push_journal_field(&mut buf, "SYSLOG_PID", pid.to_string().as_bytes());
    push_journal_field(&mut buf, "HASHI_SUPERVISOR_STREAM", stream.as_bytes());
    buf
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

#[cfg(test)]
mod agent_log_tests {
    use super::*;

    #[test]
    fn agent_levels_map_to_syslog_priorities() {
        for (line, want) in [
            ("2024-01-01T00:00:00.000Z [INFO]  agent: Joining cluster", 6),
            (
                "2024-01-01T00:00:00.000Z [WARN]  agent: BootstrapExpect is set to 1",
                4,
            ),
            ("2024-01-01T00:00:00.000Z [ERROR] agent: failed to sync", 3),
            ("2024-01-01T00:00:00.000Z [DEBUG] agent: ping", 7),
            ("2024-01-01T00:00:00.000Z [TRACE] agent: pong", 7),
            ("    [WARN] agent: cannot reload before agent started", 4),
            ("==> Starting Consul agent...", 6),
            ("", 6),
            ("panic: runtime error: index out of range", 2),
            (
                r#"{"@level":"error","@message":"rpc failed","@module":"agent"}"#,
                3,
            ),
            (r#"{"@level":"debug","@message":"x"}"#, 7),
            (r#"{"@level":"warn","@message":"x"}"#, 4),
            (r#"{"@message":"no level"}"#, 6),
            ("a line that mentions [ERROR] later", 6),
            ("word [ERROR] after a word that is no timestamp", 6),
        ] {
            assert_eq!(agent_line_priority(line), want, "{line}");
        }
    }

    #[test]
    fn a_value_with_a_newline_uses_the_length_prefixed_form() {
        let mut buf = Vec::new();
        push_journal_field(&mut buf, "A", b"one line");
        push_journal_field(&mut buf, "B", b"two\nlines");
        let mut want = b"A=one line\nB\n".to_vec();
        want.extend_from_slice(&9u64.to_le_bytes());
        want.extend_from_slice(b"two\nlines\n");
        assert_eq!(buf, want);
    }
}

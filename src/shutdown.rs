//! Process signals mapped to what they mean to the supervisor, and the root
//! cancellation token.

use futures_util::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use tokio::sync::mpsc;

/// What a signal to the supervisor asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalEvent {
    /// SIGTERM or SIGINT: stop the agents gracefully, then exit.
    Shutdown,
    /// SIGHUP: re-read the role file and apply what changed.
    Reload,
    /// SIGQUIT: stop at once (agents get their stop signal without grace).
    Quit,
}

/// Maps a raw signal number to its meaning.
pub fn classify(signal: i32) -> Option<SignalEvent> {
    match signal {
        SIGTERM | SIGINT => Some(SignalEvent::Shutdown),
        SIGHUP => Some(SignalEvent::Reload),
        SIGQUIT => Some(SignalEvent::Quit),
        _ => None,
    }
}

/// Installs the handlers and forwards each signal's meaning on a channel.
pub fn listen() -> std::io::Result<mpsc::UnboundedReceiver<SignalEvent>> {
    let mut signals = signal_hook_tokio::Signals::new([SIGTERM, SIGINT, SIGHUP, SIGQUIT])?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(sig) = signals.next().await {
            if let Some(ev) = classify(sig) {
                if tx.send(ev).is_err() {
                    break;
                }
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_map_to_their_meaning() {
        assert_eq!(classify(SIGTERM), Some(SignalEvent::Shutdown));
        assert_eq!(classify(SIGINT), Some(SignalEvent::Shutdown));
        assert_eq!(classify(SIGHUP), Some(SignalEvent::Reload));
        assert_eq!(classify(SIGQUIT), Some(SignalEvent::Quit));
        assert_eq!(classify(signal_hook::consts::SIGUSR1), None);
    }
}

//! Process signals mapped to what they mean to the supervisor, and the root
//! cancellation token.

use futures_util::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::supervise::DaemonEvent;

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

/// Turns signal meanings into the daemon's inputs: the first Shutdown
/// cancels `shutdown`; a second one (or Quit) also sends
/// [`DaemonEvent::Hurry`] (skip the remaining grace); Reload sends
/// [`DaemonEvent::Reload`]. Ends when the signal channel closes.
pub async fn forward(
    mut signals: mpsc::UnboundedReceiver<SignalEvent>,
    shutdown: CancellationToken,
    events: mpsc::UnboundedSender<DaemonEvent>,
) {
    while let Some(ev) = signals.recv().await {
        match ev {
            SignalEvent::Shutdown if !shutdown.is_cancelled() => {
                tracing::info!("shutdown requested");
                shutdown.cancel();
            }
            SignalEvent::Shutdown | SignalEvent::Quit => {
                tracing::warn!("stop now requested, skipping the remaining grace");
                shutdown.cancel();
                let _ = events.send(DaemonEvent::Hurry);
            }
            SignalEvent::Reload => {
                let _ = events.send(DaemonEvent::Reload);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn second_shutdown_hurries_and_reload_is_forwarded() {
        let (sig_tx, sig_rx) = mpsc::unbounded_channel();
        let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
        let token = CancellationToken::new();
        let task = tokio::spawn(forward(sig_rx, token.clone(), ev_tx));
        sig_tx.send(SignalEvent::Reload).unwrap();
        assert_eq!(ev_rx.recv().await, Some(DaemonEvent::Reload));
        assert!(!token.is_cancelled());
        sig_tx.send(SignalEvent::Shutdown).unwrap();
        token.cancelled().await;
        sig_tx.send(SignalEvent::Shutdown).unwrap();
        assert_eq!(ev_rx.recv().await, Some(DaemonEvent::Hurry));
        drop(sig_tx);
        task.await.unwrap();
    }

    #[test]
    fn signals_map_to_their_meaning() {
        assert_eq!(classify(SIGTERM), Some(SignalEvent::Shutdown));
        assert_eq!(classify(SIGINT), Some(SignalEvent::Shutdown));
        assert_eq!(classify(SIGHUP), Some(SignalEvent::Reload));
        assert_eq!(classify(SIGQUIT), Some(SignalEvent::Quit));
        assert_eq!(classify(signal_hook::consts::SIGUSR1), None);
    }
}

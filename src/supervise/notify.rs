//! The supervisor as `NOTIFY_SOCKET` for its agents, and its own sd_notify
//! messages to systemd.
//!
//! One unix datagram socket per agent under `<state_dir>/run`, so a message's
//! sender is known without `SCM_CREDENTIALS`.

use std::path::{Path, PathBuf};

use tokio::net::UnixDatagram;

use crate::plan::Product;

/// Largest sd_notify datagram we read.
pub const MAX_NOTIFY_DATAGRAM: usize = 4096;

/// One sd_notify message from an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentNotice {
    /// `READY=1`.
    Ready,
    /// `RELOADING=1`.
    Reloading,
    /// `STOPPING=1`.
    Stopping,
    /// `STATUS=...`.
    Status(String),
}

/// Parses one datagram (newline-separated `KEY=VALUE` assignments).
pub fn parse_notify(datagram: &[u8]) -> Vec<AgentNotice> {
    String::from_utf8_lossy(datagram)
        .lines()
        .filter_map(|line| match line.split_once('=')? {
            ("READY", "1") => Some(AgentNotice::Ready),
            ("RELOADING", "1") => Some(AgentNotice::Reloading),
            ("STOPPING", "1") => Some(AgentNotice::Stopping),
            ("STATUS", s) => Some(AgentNotice::Status(s.to_string())),
            _ => None,
        })
        .collect()
}

/// Path of an agent's notify socket under `run_dir`.
pub fn socket_path(run_dir: &Path, product: Product) -> PathBuf {
    run_dir.join(format!("{product}.notify"))
}

/// Binds an agent's notify socket (replacing a stale one), writable by the
/// agent's user.
pub fn bind_agent_socket(
    path: &Path,
    owner: Option<nix::unistd::Uid>,
) -> std::io::Result<UnixDatagram> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let sock = UnixDatagram::bind(path)?;
    if let Some(uid) = owner {
        nix::unistd::chown(path, Some(uid), None).map_err(std::io::Error::from)?;
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(sock)
}

/// Sends the supervisor's own sd_notify states; a no-op outside systemd.
pub fn notify_systemd(states: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "failed to notify systemd");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_messages_parse_by_key() {
        assert_eq!(
            parse_notify(b"READY=1\nSTATUS=joined\nMAINPID=4\nRELOADING=1\nSTOPPING=1\n"),
            vec![
                AgentNotice::Ready,
                AgentNotice::Status("joined".into()),
                AgentNotice::Reloading,
                AgentNotice::Stopping
            ]
        );
        assert!(parse_notify(b"READY=0").is_empty());
    }

    #[tokio::test]
    async fn socket_receives_a_datagram() {
        let dir = tempfile::tempdir().unwrap();
        let p = socket_path(dir.path(), Product::Consul);
        let sock = bind_agent_socket(&p, None).unwrap();
        let tx = std::os::unix::net::UnixDatagram::unbound().unwrap();
        tx.send_to(b"READY=1", &p).unwrap();
        let mut buf = [0u8; MAX_NOTIFY_DATAGRAM];
        let n = sock.recv(&mut buf).await.unwrap();
        assert_eq!(parse_notify(&buf[..n]), vec![AgentNotice::Ready]);
    }
}

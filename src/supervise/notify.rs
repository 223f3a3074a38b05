//! The supervisor as `NOTIFY_SOCKET` for its agents, and its own sd_notify
//! messages to systemd.
//!
//! One unix datagram socket per agent under `<state_dir>/run`, so a message's
//! sender is known without `SCM_CREDENTIALS`.

use std::path::{Path, PathBuf};

use tokio::net::UnixDatagram;

use crate::vocab::Product;

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
///
/// Never blocks: if the manager stops reading `NOTIFY_SOCKET` and its queue
/// is full, the message is dropped with a warning rather than stalling the
/// daemon (a blocking send would stop supervision on the runtime thread).
pub fn notify_systemd(states: &[sd_notify::NotifyState<'_>]) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send_notify(&socket, states) {
        tracing::warn!(error = %e, socket = %socket.to_string_lossy(), "failed to notify systemd; message dropped");
    }
}

/// Sends one datagram of `states` to the sd_notify socket `socket` (a path,
/// or `@name` for the abstract namespace) without blocking: a full queue is
/// an [`std::io::ErrorKind::WouldBlock`] error.
pub fn send_notify(
    socket: &std::ffi::OsStr,
    states: &[sd_notify::NotifyState<'_>],
) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};

    let msg: String = states.iter().map(|s| format!("{s}\n")).collect();
    let sock = UnixDatagram::unbound()?;
    sock.set_nonblocking(true)?;
    let addr = match socket.as_bytes().strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(socket)?,
    };
    let sent = sock.send_to_addr(msg.as_bytes(), &addr)?;
    if sent != msg.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::WriteZero,
            "sd_notify datagram truncated",
        ));
    }
    Ok(())
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

    #[test]
    fn own_notify_reaches_a_path_and_an_abstract_socket() {
        use sd_notify::NotifyState;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        send_notify(
            path.as_os_str(),
            &[NotifyState::Ready, NotifyState::Status("2/2 agents ready")],
        )
        .unwrap();
        let mut buf = [0u8; MAX_NOTIFY_DATAGRAM];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=2/2 agents ready\n");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("hashi-supervisor-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
        let rx = std::os::unix::net::UnixDatagram::bind_addr(&addr).unwrap();
        send_notify(
            std::ffi::OsStr::new(&format!("@{name}")),
            &[NotifyState::Watchdog],
        )
        .unwrap();
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1\n");
    }

    /// A manager that stops reading its socket must not stall the daemon:
    /// once the receive queue is full, sends fail at once instead of
    /// blocking (a blocking send would hang this test's thread).
    #[test]
    fn own_notify_never_blocks_on_a_full_socket() {
        use sd_notify::NotifyState;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let _rx = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let (done, result) = std::sync::mpsc::channel();
        let p = path.clone();
        std::thread::spawn(move || {
            // The queue holds net.unix.max_dgram_qlen datagrams (10 by
            // default); far more than that are sent here.
            let outcome = (0..10_000)
                .map(|_| send_notify(p.as_os_str(), &[NotifyState::Watchdog]))
                .find_map(Result::err);
            let _ = done.send(outcome.map(|e| e.kind()));
        });
        let kind = result
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("a send to a full notify socket blocked");
        assert_eq!(kind, Some(std::io::ErrorKind::WouldBlock));
    }
}

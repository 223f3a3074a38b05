//! The stand-in's event log (`STANDIN_EVENT_LOG`, one line per event,
//! appended and flushed at once so tests can read it while it runs) and
//! sd_notify messages to `NOTIFY_SOCKET`.

use std::io::Write;

/// Append one event line to `STANDIN_EVENT_LOG` if set.
pub fn event(line: &str) {
    let Ok(path) = std::env::var("STANDIN_EVENT_LOG") else {
        return;
    };
    if path.is_empty() {
        return;
    }
    let res = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
    if let Err(e) = res {
        eprintln!("stand-in: failed to write event log {path}: {e}");
    }
}

/// Log a line the way the agents do (stderr keeps stdout for command output).
pub fn log(line: &str) {
    eprintln!("{line}");
}

/// Send an sd_notify datagram to `$NOTIFY_SOCKET` (path or `@abstract`).
pub fn notify(msg: &str) {
    let Ok(addr) = std::env::var("NOTIFY_SOCKET") else {
        return;
    };
    if addr.is_empty() {
        return;
    }
    let res = (|| -> std::io::Result<()> {
        let sock = std::os::unix::net::UnixDatagram::unbound()?;
        if let Some(name) = addr.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            let sa = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            sock.send_to_addr(msg.as_bytes(), &sa)?;
        } else {
            sock.send_to(msg.as_bytes(), &addr)?;
        }
        Ok(())
    })();
    if let Err(e) = res {
        eprintln!("stand-in: failed to notify {addr}: {e}");
    }
}

//! The stand-in's event log (`STANDIN_EVENT_LOG`, one line per event,
//! appended and flushed at once so tests can read it while it runs) and
//! sd_notify messages to `NOTIFY_SOCKET`.

use std::io::Write;

/// Append one event line to `STANDIN_EVENT_LOG` if set (environment, or
/// the knob file once it is read).
pub fn event(line: &str) {
    append_to("STANDIN_EVENT_LOG", line);
}

/// Append `line` to the file the knob `knob` names, if set.
fn append_to(knob: &str, line: &str) {
    let Some(path) = crate::knobs::non_empty_var(knob) else {
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
        log_err(&format!("stand-in: failed to write {knob} {path}: {e}"));
    }
}

/// Write an error line to stderr, ignoring write errors (a closed pipe).
pub fn log_err(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
    copy_log(line);
}

/// Log a line to stdout, where the agents write their banner and log;
/// write errors (a closed pipe) are ignored, as the agents' loggers do.
pub fn log(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    drop(out);
    copy_log(line);
}

/// `STANDIN_LOG_COPY=<path>`: every log line is also appended there, so a
/// test whose harness discards stdout can read the log.
fn copy_log(line: &str) {
    let Ok(path) = std::env::var("STANDIN_LOG_COPY") else {
        return;
    };
    if path.is_empty() {
        return;
    }
    let _ = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
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
        log_err(&format!("stand-in: failed to notify {addr}: {e}"));
    }
}

/// The membership log (`STANDIN_MEMBERSHIP_LOG`, environment or knob
/// file): one line per agent start and stop (servers and clients), so
/// that a test can tell how many servers of a cluster were down at any
/// moment and when clients restarted; several agents may
/// share one file (each line is one append).
fn membership(line: &str) {
    append_to("STANDIN_MEMBERSHIP_LOG", line);
}

/// What the membership lines say of this agent: (kind, product, node,
/// version), set while it is up; kind is `server` or `client`.
static MEMBER: std::sync::Mutex<Option<(&'static str, String, String, String)>> =
    std::sync::Mutex::new(None);

fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

fn member_up(kind: &'static str, product: &str, node: &str, version: &str) {
    let mut s = MEMBER.lock().unwrap_or_else(|p| p.into_inner());
    if s.is_none() {
        membership(&format!(
            "{kind}-up {product} {node} {version} {}",
            unix_ms()
        ));
        *s = Some((
            kind,
            product.to_string(),
            node.to_string(),
            version.to_string(),
        ));
    }
}

/// A server agent serves: `server-up <product> <node> <version> <unix_ms>`.
pub fn server_up(product: &str, node: &str, version: &str) {
    member_up("server", product, node, version);
}

/// A client agent serves: `client-up <product> <node> <version> <unix_ms>`
/// (so a test can tell when clients restarted against their servers).
pub fn client_up(product: &str, node: &str, version: &str) {
    member_up("client", product, node, version);
}

/// The agent stops serving (leave or exit): `server-down` (or
/// `client-down`) `<product> <node> <version> <unix_ms>`, once, and only
/// after its `-up` line.
pub fn server_down() {
    let mut s = MEMBER.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((kind, product, node, version)) = s.take() {
        membership(&format!(
            "{kind}-down {product} {node} {version} {}",
            unix_ms()
        ));
    }
}

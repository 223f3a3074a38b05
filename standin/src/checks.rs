//! Consul service checks of the stand-in: HTTP and TCP checks are really run
//! (first at registration, then every `Interval`), TTL checks are set via
//! the `/v1/agent/check/{pass,warn,fail,update}` endpoints, other kinds keep
//! the status they were registered with. Status changes bump the agent's
//! incarnation so peers (and the catalog they serve) see them.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::agent::Shared;
use crate::gossip::http_request_with;

/// Interval used when a check has none or it cannot be parsed.
const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// Shortest interval honoured (keeps a typo from spinning).
const MIN_CHECK_INTERVAL: Duration = Duration::from_millis(50);
/// Consul's default check timeout.
const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Parse a Go duration string (`10s`, `1m30s`, `500ms`).
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let mut total = 0f64;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_len..];
    }
    Some(Duration::from_secs_f64(total))
}

/// Start the runner of every HTTP/TCP check of a just-registered service.
pub fn start(shared: &Arc<Shared>, service: &Value) {
    let Some(sid) = service["ID"].as_str() else {
        return;
    };
    let generation = service["Generation"].as_u64().unwrap_or(0);
    for c in service["Checks"].as_array().into_iter().flatten() {
        let ty = c["Type"].as_str().unwrap_or("");
        if ty != "http" && ty != "tcp" {
            continue;
        }
        let shared = shared.clone();
        let sid = sid.to_string();
        let check = c.clone();
        tokio::spawn(async move { run(shared, sid, generation, check).await });
    }
}

async fn run(shared: Arc<Shared>, sid: String, generation: u64, check: Value) {
    let cid = check["CheckID"].as_str().unwrap_or("").to_string();
    let interval = check["Interval"]
        .as_str()
        .and_then(parse_go_duration)
        .unwrap_or(DEFAULT_CHECK_INTERVAL)
        .max(MIN_CHECK_INTERVAL);
    let timeout = check["Timeout"]
        .as_str()
        .and_then(parse_go_duration)
        .unwrap_or(DEFAULT_CHECK_TIMEOUT);
    loop {
        let (status, output) = if check["Type"] == "http" {
            http_check(&check, timeout).await
        } else {
            tcp_check(&check, timeout).await
        };
        if !set_status(&shared, &sid, Some(generation), &cid, status, &output) {
            return; // service deregistered or re-registered
        }
        tokio::time::sleep(interval).await;
    }
}

/// Update a check's status/output; false when the check is gone.
pub fn set_status(
    shared: &Shared,
    sid: &str,
    generation: Option<u64>,
    cid: &str,
    status: &str,
    output: &str,
) -> bool {
    let mut st = shared.lock();
    let mut changed = false;
    let mut found = false;
    for s in st.me.services.iter_mut() {
        if s["ID"].as_str() != Some(sid) {
            continue;
        }
        if generation.is_some_and(|g| s["Generation"].as_u64() != Some(g)) {
            continue;
        }
        if let Some(checks) = s["Checks"].as_array_mut() {
            for c in checks.iter_mut() {
                if c["CheckID"].as_str() == Some(cid) {
                    found = true;
                    if c["Status"] != status || c["Output"] != output {
                        c["Status"] = Value::from(status);
                        c["Output"] = Value::from(output);
                        changed = true;
                    }
                }
            }
        }
    }
    if changed {
        st.me.incarnation += 1;
    }
    found
}

/// Find a check by ID among the local services: (service ID, check ID).
pub fn find(shared: &Shared, cid: &str) -> Option<String> {
    let st = shared.lock();
    st.me.services.iter().find_map(|s| {
        s["Checks"]
            .as_array()?
            .iter()
            .any(|c| c["CheckID"].as_str() == Some(cid))
            .then(|| s["ID"].as_str().unwrap_or("").to_string())
    })
}

async fn http_check(check: &Value, timeout: Duration) -> (&'static str, String) {
    let url = check["HTTP"].as_str().unwrap_or("");
    let method = check["Method"].as_str().unwrap_or("GET").to_string();
    let Some(rest) = url.strip_prefix("http://") else {
        return (
            "critical",
            format!("Get {url:?}: the stand-in runs only http:// checks"),
        );
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let hostport = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    match http_request_with(&hostport, &method, path, "", timeout).await {
        Ok((code, body)) => {
            // agent/checks/check.go CheckHTTP: 2xx passing, 429 warning.
            let status = match code {
                200..=299 => "passing",
                429 => "warning",
                _ => "critical",
            };
            let mut body = body;
            body.truncate(4096);
            (
                status,
                format!("HTTP {method} {url}: {code} Output: {body}"),
            )
        }
        Err(e) => ("critical", format!("Get {url:?}: {e}")),
    }
}

async fn tcp_check(check: &Value, timeout: Duration) -> (&'static str, String) {
    let addr = check["TCP"].as_str().unwrap_or("").to_string();
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr)).await {
        Ok(Ok(_)) => ("passing", format!("TCP connect {addr}: Success")),
        Ok(Err(e)) => ("critical", format!("dial tcp {addr}: {e}")),
        Err(_) => ("critical", format!("dial tcp {addr}: i/o timeout")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse_go_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("ten"), None);
    }
}

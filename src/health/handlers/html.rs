//! `/`: a small self-contained HTML page (no script, no external resource)
//! that reloads itself, built from the same document as `/v1/status`.

use crate::html::escape as esc;
use std::fmt::Write as _;
use std::time::SystemTime;

use super::Answer;
use super::json::status_doc;
use crate::health::snapshot::HealthSnapshot;

const HTML: &str = "text/html; charset=utf-8";
/// How often the HTML page reloads itself.
const PAGE_REFRESH_SECS: u32 = 5;

/// Renders the self-contained HTML status page.
pub fn render_page(s: &HealthSnapshot, now: SystemTime) -> String {
    let doc = status_doc(s, now);
    let mut o = String::with_capacity(4096);
    let verdict = if doc.healthy { "healthy" } else { "unhealthy" };
    let _ = write!(
        o,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"refresh\" content=\"{PAGE_REFRESH_SECS}\">\
<title>{node}: {verdict}</title><style>\
body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}\
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}\
.ok{{color:#176b2c}}.fail{{color:#a1151f;font-weight:bold}}.warn{{color:#8a5a00}}\
.healthy{{background:#e3f5e6}}.unhealthy{{background:#fbe3e4}}pre{{background:#f4f4f4;padding:.5em}}\
</style></head><body>\
<h1 id=\"verdict\" class=\"{verdict}\" data-healthy=\"{healthy}\">{node}: {verdict}</h1>\
<p>region <b>{region}</b>, datacenter <b>{dc}</b>, roles <b>{roles}</b>; supervisor {ver}; config {hash}</p>",
        node = esc(&doc.node),
        healthy = doc.healthy,
        region = esc(&doc.region),
        dc = esc(&doc.datacenter),
        roles = esc(&doc.roles.join(", ")),
        ver = esc(&doc.supervisor_version),
        hash = esc(doc.config_hash.get(..12).unwrap_or(&doc.config_hash)),
    );
    if let Some(sec) = &doc.security {
        security_line(sec, &mut o);
    }
    o.push_str("<h2>Agents</h2><table><tr><th>agent</th><th>state</th><th>pid</th><th>version</th><th>uptime</th><th>restarts</th><th>ready</th><th>reported</th></tr>");
    for a in &doc.agents {
        let reported = match (&a.consul, &a.nomad) {
            (Some(c), _) => format!(
                "leader {}, LAN {}, WAN {}, failure tolerance {}",
                c.leader.as_deref().unwrap_or("none"),
                c.lan_members.map_or("?".into(), |n| n.to_string()),
                c.wan_members.map_or("-".into(), |n| n.to_string()),
                c.failure_tolerance.map_or("-".into(), |n| n.to_string()),
            ),
            (_, Some(n)) => format!(
                "leader {}, server {}, client {}, known servers {}",
                n.leader.as_deref().unwrap_or("none"),
                n.health_server
                    .as_ref()
                    .map_or("-".into(), |h| h.message.clone()),
                n.health_client
                    .as_ref()
                    .map_or("-".into(), |h| h.message.clone()),
                n.known_servers.len()
            ),
            _ => "-".into(),
        };
        let _ = write!(
            o,
            "<tr id=\"agent-{name}\" data-state=\"{state}\"><td>{name}</td><td class=\"state\">{state}{reason}</td>\
<td>{pid}</td><td>{ver}</td><td>{up}</td><td>{restarts}</td><td>{ready}</td><td>{reported}</td></tr>",
            name = esc(&a.agent),
            state = esc(&a.state),
            reason = a
                .reason
                .as_deref()
                .map(|r| format!(" ({})", esc(r)))
                .into_iter()
                .chain(a.upgrade.as_ref().map(|u| {
                    format!(
                        " <span class=\"upgrade\">upgrade: {}</span>",
                        esc(&u.summary())
                    )
                }))
                .collect::<String>(),
            pid = a.pid.map_or("-".into(), |p| p.to_string()),
            ver = esc(a.version.as_deref().unwrap_or("-")),
            up = a.uptime_secs.map_or("-".into(), |u| format!("{u}s")),
            restarts = a.restarts,
            ready = if a.ready { "yes" } else { "no" },
            reported = esc(&reported),
        );
    }
    o.push_str("</table><h2>Checks</h2><ul id=\"checks\">");
    for c in &doc.checks {
        let _ = write!(
            o,
            "<li class=\"{cls}\" data-check=\"{n}\">{mark} {n}: {r}</li>",
            cls = if c.ok { "ok" } else { "fail" },
            mark = if c.ok { "ok" } else { "FAIL" },
            n = esc(&c.name),
            r = esc(&c.reason)
        );
    }
    o.push_str("</ul>");
    if let Some(d) = &doc.discovery {
        o.push_str("<h2>Discovery</h2>");
        for (cls, what, list) in [
            ("fail", "waiting for", &d.waiting_for),
            ("fail", "problem", &d.problems),
            ("warn", "warning", &d.warnings),
        ] {
            for t in list {
                let _ = write!(o, "<p class=\"{cls}\">{what}: {}</p>", esc(t));
            }
        }
        if let (Some(r), Some(dc)) = (&d.learned.region, &d.learned.datacenter) {
            let _ = write!(
                o,
                "<p>learned region <b>{}</b> and datacenter <b>{}</b> from {} ({})</p>",
                esc(r),
                esc(dc),
                esc(d.learned.from_node.as_deref().unwrap_or("?")),
                esc(d.learned.from_source.as_deref().unwrap_or("discovery"))
            );
        }
        o.push_str("<table id=\"peers\"><tr><th>address</th><th>kind</th><th>source</th><th>node</th><th>datacenter</th><th>last seen</th></tr>");
        for p in &d.peers {
            let _ = write!(
                o,
                "<tr data-peer=\"{addr}\"><td>{addr}</td><td>{kind}</td><td>{src}</td><td>{node}</td><td>{dc}</td><td>{ago}</td></tr>",
                addr = esc(&p.address),
                kind = esc(&p.kind),
                src = esc(&p.source),
                node = esc(p.node.as_deref().unwrap_or("-")),
                dc = esc(p.datacenter.as_deref().unwrap_or("-")),
                ago = esc(&p.ago),
            );
        }
        o.push_str("</table>");
    }
    for a in &doc.agents {
        if !a.last_lines.is_empty() {
            let _ = write!(o, "<h3>{} last lines</h3><pre>", esc(&a.agent));
            for l in &a.last_lines {
                let _ = writeln!(o, "{}", esc(l));
            }
            o.push_str("</pre>");
        }
    }
    o.push_str("<p><a href=\"/v1/status\">/v1/status</a> · <a href=\"/metrics\">/metrics</a> · <a href=\"/ready?verbose\">/ready?verbose</a></p></body></html>\n");
    o
}

/// The security line: "plaintext" in red (class and inline style, so it
/// stays red without the stylesheet), else the mode and the certificate's
/// expiry.
fn security_line(sec: &super::json::SecurityDoc, o: &mut String) {
    if sec.mode == "plaintext" {
        o.push_str(
            "<p id=\"security\" data-mode=\"plaintext\">security: \
<b class=\"plaintext fail\" style=\"color:#c00000;font-weight:bold\">plaintext</b> \
(no TLS, no gossip encryption, no ACLs)</p>",
        );
        return;
    }
    let expiry = match (&sec.not_after, sec.days_left) {
        (Some(at), Some(d)) if d < 1 => format!(
            ", certificate <b class=\"fail\" style=\"color:#c00000\">expires {}</b>",
            esc(at)
        ),
        (Some(at), Some(d)) => format!(", certificate valid until {} ({d} days left)", esc(at)),
        _ => String::new(),
    };
    let _ = write!(
        o,
        "<p id=\"security\" data-mode=\"{mode}\">security: <b class=\"ok\">{mode}</b>{expiry}{acl}{holder}</p>",
        mode = esc(&sec.mode),
        acl = if sec.acl_enabled { ", ACLs on" } else { "" },
        holder = if sec.ca_holder { ", holds the CA" } else { "" },
    );
}

/// The `/` answer.
pub(super) fn page(s: &HealthSnapshot, now: SystemTime) -> Answer {
    Answer::ok(HTML, render_page(s, now))
}

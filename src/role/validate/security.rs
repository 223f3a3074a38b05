//! `[security]` and the node's security material: the join token (the
//! command line's `--join-token` / `--join-token-file`, else
//! `join_token_file`), join endpoints, certificate lifetimes, the files
//! `supervisor cluster init` or a join left in `<config>/security/`, and
//! the rule that makes the supervisor secure by default: a role that spans
//! more than one node runs with the cluster's material, a join token, the
//! operator's own TLS and gossip keys for every agent, or an explicit
//! `plaintext = true`.
//!
//! The join token's full parser is `security::token` (a later stage, which
//! the role must not import); here its shape is checked enough to point at
//! the file that holds a wrong one. No message quotes a token, a key or a
//! line of a secret file.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use super::{Checked, Context, Findings, sizes};
use crate::paths::{
    CA_CERT_FILE, CLUSTER_SUBDIR, CONSUL_KEY_FILE, DEFAULT_JOIN_PORT, NODE_CERT_FILE,
    NODE_KEY_FILE, NODE_SECRETS_FILE, NOMAD_KEY_FILE, SECURITY_SUBDIR,
};
use crate::role::diag::Location;
use crate::role::limits;
use crate::role::raw::{RawConsul, RawNomad, RawSecurity, SpStr};
use crate::role::security::{NodeMaterial, NodeSecretsFile, SecurityRole};
use crate::role::{ConsulRole, NomadRole, Overrides, RoleSet, Secret};

/// Seconds in a day.
const DAY_SECS: u64 = 86_400;
/// The `node.json` format this supervisor reads.
const NODE_SECRETS_VERSION: u32 = 1;
/// What a join token looks like, for messages.
const TOKEN_SHAPE: &str = "`<id>.<secret>@sha256:<64 hex>`";

/// What the `[security]` checks read besides `[security]` itself.
pub(super) struct Inputs<'a> {
    pub raw: &'a RawSecurity,
    pub raw_consul: &'a RawConsul,
    pub raw_nomad: &'a RawNomad,
    pub set: RoleSet,
    /// Where `roles` (or `--role`) is: secure-by-default points there.
    pub roles_at: &'a Location,
    pub overrides: &'a Overrides,
    pub consul: &'a ConsulRole,
    pub nomad: &'a NomadRole,
    pub private: IpAddr,
    pub config_dir: &'a Path,
}

/// `[security]`, the join token and the material, then the rules between
/// them.
pub(super) fn check(cx: Context<'_>, i: &Inputs<'_>) -> Checked<SecurityRole> {
    let mut found = Findings::default();
    let r = i.raw;
    let plaintext = r.plaintext.as_ref().is_some_and(|p| *p.get_ref());
    let join_token = join_token(&mut found, cx, r, i.overrides);
    let join = join_addresses(&mut found, &r.join);
    let join_listen = join_listen(&mut found, &r.join_listen, i.private);
    let (cert_lifetime, renew_before) = lifetimes(&mut found, r);
    // `dev` is a single node on loopback: never secured, its material
    // never read.
    let material = if i.set.dev {
        None
    } else {
        material(&mut found, cx, i.config_dir, i.set)
    };
    let ca_holder = !i.set.dev && cx.host.is_dir(&i.config_dir.join(CLUSTER_SUBDIR));
    let role = SecurityRole {
        plaintext,
        join_token,
        join,
        join_listen,
        renew_before,
        cert_lifetime,
        material,
        ca_holder,
    };
    found.append(check_rules(i, &role));
    (role, found)
}

/// The join token: `--join-token`, else `--join-token-file`, else
/// `join_token_file`, trimmed and of the right shape.
fn join_token(
    found: &mut Findings,
    cx: Context<'_>,
    r: &RawSecurity,
    ov: &Overrides,
) -> Option<Secret> {
    if let Some(t) = &ov.join_token {
        let t = t.expose().trim();
        if let Some(why) = token_shape_problem(t) {
            found.at(
                Location::Flag("--join-token"),
                format!("the join token is not of the form {TOKEN_SHAPE}: {why}"),
            );
            return None;
        }
        return Some(Secret::new(t));
    }
    if let Some(p) = &ov.join_token_file {
        return read_token(cx, p)
            .map_err(|why| {
                found.at(Location::Flag("--join-token-file"), why);
            })
            .ok();
    }
    let s = r.join_token_file.as_ref()?;
    if let Some(why) = long(s, limits::PATH_CHARS, "security.join_token_file") {
        found.span(s, why);
        return None;
    }
    let p = cx.resolve_path(s.get_ref());
    read_token(cx, &p).map_err(|why| found.span(s, why)).ok()
}

/// Reads a join token file (a regular file of at most 1 KiB).
fn read_token(cx: Context<'_>, p: &Path) -> Result<Secret, String> {
    let bytes = cx
        .host
        .read_file(p, limits::JOIN_TOKEN_FILE_BYTES)
        .map_err(|e| format!("failed to read the join token file {}: {e}", p.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| format!("the join token file {} is not UTF-8 text", p.display()))?;
    let t = text.trim();
    match token_shape_problem(t) {
        Some(why) => Err(format!(
            "the join token file {} does not hold a join token of the form {TOKEN_SHAPE}: {why}",
            p.display()
        )),
        None => Ok(Secret::new(t)),
    }
}

/// What is wrong with a join token's shape, in words that do not quote it:
/// `<id>.<secret>@sha256:<hex>`, id `[a-z0-9]{6}`, secret `[a-z0-9]{16}`,
/// hex 64 lowercase digits.
fn token_shape_problem(t: &str) -> Option<&'static str> {
    let lower_alnum = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    if t.is_empty() {
        return Some("it is empty");
    }
    let Some((head, pin)) = t.split_once('@') else {
        return Some("no `@sha256:` CA pin");
    };
    let Some((id, secret)) = head.split_once('.') else {
        return Some("no `.` between the id and the secret");
    };
    if !lower_alnum(id, 6) {
        return Some("the id is not 6 lowercase letters or digits");
    }
    if !lower_alnum(secret, 16) {
        return Some("the secret is not 16 lowercase letters or digits");
    }
    let Some(hex) = pin.strip_prefix("sha256:") else {
        return Some("the CA pin does not start with `sha256:`");
    };
    if !is_sha256_hex(hex) {
        return Some("the CA pin is not 64 lowercase hex digits");
    }
    None
}

fn is_sha256_hex(hex: &str) -> bool {
    hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A string longer than `max`, in the role file's words.
fn long(s: &SpStr, max: usize, key: &str) -> Option<String> {
    let n = s.get_ref().chars().count();
    (n > max).then(|| format!("`{key}` is {n} characters, at most {max} are allowed"))
}

/// `join`: at most 16 `host` or `host:port` entries.
fn join_addresses(found: &mut Findings, v: &Option<toml::Spanned<Vec<SpStr>>>) -> Vec<String> {
    let Some(list) = v else {
        return Vec::new();
    };
    if list.get_ref().len() > limits::JOIN_ADDRESSES {
        found.span(
            list,
            format!(
                "`security.join` has {} entries, at most {} are allowed",
                list.get_ref().len(),
                limits::JOIN_ADDRESSES
            ),
        );
        return Vec::new();
    }
    let mut out = Vec::new();
    for s in list.get_ref() {
        if let Some(why) = long(s, limits::ADDRESS_CHARS, "security.join") {
            found.span(s, why);
            continue;
        }
        match join_address_problem(s.get_ref()) {
            Some(why) => found.span(
                s,
                format!(
                    "`{}` is not a `host` or `host:port` join address: {why}",
                    s.get_ref()
                ),
            ),
            None => out.push(s.get_ref().clone()),
        }
    }
    out
}

/// What is wrong with a `host` / `host:port` (IPv6 as `[addr]:port` or a
/// bare address).
fn join_address_problem(a: &str) -> Option<&'static str> {
    if a.parse::<SocketAddr>().is_ok() || a.parse::<IpAddr>().is_ok() {
        return None;
    }
    let (host, port) = match a.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (a, None),
    };
    if let Some(p) = port {
        match p.parse::<u16>() {
            Ok(0) | Err(_) => return Some("the port is not a number from 1 to 65535"),
            Ok(_) => {}
        }
    }
    if host.is_empty() {
        return Some("no host");
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= limits::DNS_LABEL_CHARS
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if host.len() > limits::DNS_NAME_CHARS || !host.trim_end_matches('.').split('.').all(label_ok) {
        return Some("the host is neither an IP address nor a DNS name");
    }
    None
}

/// `join_listen`: `ip:port`; default the private address, port 4681.
fn join_listen(found: &mut Findings, v: &Option<SpStr>, private: IpAddr) -> SocketAddr {
    let default = SocketAddr::new(private, DEFAULT_JOIN_PORT);
    let Some(s) = v else {
        return default;
    };
    match s.get_ref().parse::<SocketAddr>() {
        Ok(a) if a.port() != 0 => a,
        _ => {
            found.span(
                s,
                format!(
                    "`security.join_listen` must be `ip:port` with a port from 1 to 65535 (e.g. `{default}`)"
                ),
            );
            default
        }
    }
}

/// `cert_days` (1 to 825, default 90) and `renew_before_days` (1 to
/// `cert_days - 1`, default 30, or a third of a shorter lifetime).
fn lifetimes(found: &mut Findings, r: &RawSecurity) -> (Duration, Duration) {
    let cert_days = sizes::number(
        found,
        &r.cert_days,
        "cert_days",
        &limits::CERT_DAYS,
        limits::DEFAULT_CERT_DAYS,
    );
    let lifetime = Duration::from_secs(cert_days * DAY_SECS);
    let default_renew = if cert_days > limits::DEFAULT_RENEW_BEFORE_DAYS {
        Duration::from_secs(limits::DEFAULT_RENEW_BEFORE_DAYS * DAY_SECS)
    } else {
        lifetime / 3
    };
    let renew = match &r.renew_before_days {
        None => default_renew,
        Some(s) => {
            let n = *s.get_ref();
            if cert_days < 2 || !(1..cert_days).contains(&n) {
                let why = if cert_days < 2 {
                    "`renew_before_days` needs `cert_days` of at least 2 (a certificate of one day is renewed after 16 hours)".to_string()
                } else {
                    format!(
                        "renew_before_days must be between 1 and {} (cert_days - 1) (got {n})",
                        cert_days - 1
                    )
                };
                found.span(s, why);
                default_renew
            } else {
                Duration::from_secs(n * DAY_SECS)
            }
        }
    };
    (lifetime, renew)
}

/// `<config>/security/`: `node.json` (when it exists, the node has
/// material), and beside it the CA, the node certificate and key, and the
/// key copy of each agent that runs here.
fn material(
    found: &mut Findings,
    cx: Context<'_>,
    config_dir: &Path,
    set: RoleSet,
) -> Option<NodeMaterial> {
    let dir = config_dir.join(SECURITY_SUBDIR);
    let json_path = dir.join(NODE_SECRETS_FILE);
    let bytes = match cx
        .host
        .read_file(&json_path, limits::NODE_SECRETS_FILE_BYTES)
    {
        Ok(b) => b,
        Err(crate::role::file::FileError::Open(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return None;
        }
        Err(e) => {
            found.at(
                Location::File,
                format!(
                    "failed to read the node's security material {}: {e}",
                    json_path.display()
                ),
            );
            return None;
        }
    };
    let file: NodeSecretsFile = match serde_json::from_slice(&bytes) {
        Ok(f) => f,
        Err(e) => {
            found.at(
                Location::File,
                format!(
                    "failed to read the node's security material {}:{}:{}: {}",
                    json_path.display(),
                    e.line(),
                    e.column(),
                    json_problem(&e)
                ),
            );
            return None;
        }
    };
    let mut ok = true;
    let mut bad = |why: String| {
        found.at(
            Location::File,
            format!("the node's security material {} {why}", json_path.display()),
        );
        ok = false;
    };
    if file.version != NODE_SECRETS_VERSION {
        bad(format!(
            "has version {}, this supervisor reads version {NODE_SECRETS_VERSION}",
            file.version
        ));
    }
    if !file
        .ca_sha256
        .strip_prefix("sha256:")
        .is_some_and(is_sha256_hex)
    {
        bad("has a `ca_sha256` that is not `sha256:<64 lowercase hex>`".into());
    }
    for (key, v) in [
        ("consul_gossip_key", &file.consul_gossip_key),
        ("nomad_gossip_key", &file.nomad_gossip_key),
    ] {
        if !super::tls::is_gossip_key(v.trim()) {
            bad(format!(
                "has a `{key}` that is not a base64 key of 16, 24 or 32 bytes"
            ));
        }
    }
    if file.not_after <= file.not_before {
        bad("has `not_after` before `not_before`".into());
    }
    if file.names.is_empty() {
        bad("names no certificate names".into());
    }
    let mut needed = vec![
        (CA_CERT_FILE, "the cluster CA"),
        (NODE_CERT_FILE, "the node certificate"),
        (NODE_KEY_FILE, "the node key"),
    ];
    if set.is_consul() {
        needed.push((CONSUL_KEY_FILE, "Consul's copy of the node key"));
    }
    if set.is_nomad() {
        needed.push((NOMAD_KEY_FILE, "Nomad's copy of the node key"));
    }
    for (name, what) in needed {
        let p = dir.join(name);
        if let Err(e) = cx.host.check_file(&p, limits::TLS_FILE_BYTES) {
            found.at(
                Location::File,
                format!("failed to read {what} {}: {e}", p.display()),
            );
            ok = false;
        }
    }
    if !ok {
        return None;
    }
    let mut secrets = file.into_secrets();
    secrets.consul_gossip_key = Secret::new(secrets.consul_gossip_key.expose().trim());
    secrets.nomad_gossip_key = Secret::new(secrets.nomad_gossip_key.expose().trim());
    Some(NodeMaterial {
        ca_file: dir.join(CA_CERT_FILE),
        cert_file: dir.join(NODE_CERT_FILE),
        key_file: dir.join(NODE_KEY_FILE),
        consul_key_file: dir.join(CONSUL_KEY_FILE),
        nomad_key_file: dir.join(NOMAD_KEY_FILE),
        dir,
        secrets,
    })
}

/// A `node.json` parse error without any value of the file (a wrong type's
/// message quotes the value, which may be a secret).
fn json_problem(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof => "is not valid JSON".into(),
        Category::Io => "could not be read".into(),
        Category::Data => {
            let m = e.to_string();
            let m = m.split(" at line ").next().unwrap_or_default();
            if m.starts_with("unknown field") || m.starts_with("missing field") {
                m.to_string()
            } else {
                "a value has the wrong type".into()
            }
        }
    }
}

/// The rules between the parts: plaintext contradicts material and tokens;
/// material contradicts the operator's own TLS and gossip files; and a
/// role beyond `dev` must be secured one way or say `plaintext = true`.
fn check_rules(i: &Inputs<'_>, s: &SecurityRole) -> Findings {
    let mut found = Findings::default();
    let (rc, rn) = (i.raw_consul, i.raw_nomad);
    if let Some(p) = i.raw.plaintext.as_ref().filter(|p| *p.get_ref()) {
        if s.material.is_some() {
            found.span(
                p,
                format!(
                    "`plaintext = true` but this node has the cluster's TLS material in {}: remove `plaintext` (or the material, to leave the cluster)",
                    i.config_dir.join(SECURITY_SUBDIR).display()
                ),
            );
        }
        if s.join_token.is_some() {
            found.span(
                p,
                "`plaintext = true` and a join token contradict each other: a join gives the node TLS certificates, gossip keys and ACL tokens; remove one of them",
            );
        }
    }
    if i.set.dev && s.join_token.is_some() {
        let why = "the `dev` role is a single node on loopback and is never secured: a join token has no use here";
        match &i.raw.join_token_file {
            Some(f)
                if i.overrides.join_token.is_none() && i.overrides.join_token_file.is_none() =>
            {
                found.span(f, why);
            }
            _ => found.at(i.roles_at.clone(), why),
        }
    }
    let hand_written: [(Option<&SpStr>, &str); 4] = [
        (
            rc.tls
                .ca_file
                .as_ref()
                .or(rc.tls.cert_file.as_ref())
                .or(rc.tls.key_file.as_ref()),
            "[consul.tls]",
        ),
        (rc.encrypt_key_file.as_ref(), "consul.encrypt_key_file"),
        (
            rn.tls
                .ca_file
                .as_ref()
                .or(rn.tls.cert_file.as_ref())
                .or(rn.tls.key_file.as_ref()),
            "[nomad.tls]",
        ),
        (rn.encrypt_key_file.as_ref(), "nomad.encrypt_key_file"),
    ];
    if let Some(m) = &s.material {
        for (v, key) in hand_written {
            if let Some(v) = v {
                found.span(
                    v,
                    format!(
                        "`{key}` names the operator's own TLS or gossip key, but this node has the cluster's material in {}: remove `{key}` (the cluster's material is used), or remove the material to use your own",
                        m.dir.display()
                    ),
                );
            }
        }
    }
    if i.set.dev || s.plaintext || s.material.is_some() || s.join_token.is_some() {
        return found;
    }
    // The operator's own PKI: TLS for every agent and gossip keys for
    // every agent that gossips (Nomad clients do not).
    let mut missing = Vec::new();
    if i.set.is_consul() {
        if i.consul.tls.is_none() {
            missing.push("`[consul.tls]`");
        }
        if i.consul.encrypt.is_none() {
            missing.push("`consul.encrypt_key_file`");
        }
    }
    if i.set.is_nomad() {
        if i.nomad.tls.is_none() {
            missing.push("`[nomad.tls]`");
        }
        if i.set.nomad_server && i.nomad.encrypt.is_none() {
            missing.push("`nomad.encrypt_key_file`");
        }
    }
    if missing.is_empty() {
        return found;
    }
    let own = if hand_written.iter().any(|(v, _)| v.is_some()) {
        format!(
            "; with your own certificates and keys, also set {}",
            missing.join(", ")
        )
    } else {
        String::new()
    };
    found.at(
        i.roles_at.clone(),
        format!(
            "these roles span more than one node and this node has no cluster security (no TLS material in {}, no join token): \
             run `supervisor cluster init` on the first server, start the others with `--join-token` (or `[security] join_token_file`), \
             or write `[security] plaintext = true` to run without TLS, gossip encryption and ACLs on purpose{own}",
            i.config_dir.join(SECURITY_SUBDIR).display()
        ),
    );
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn token_shapes_are_checked_without_quoting_them() {
        assert_eq!(
            token_shape_problem(&format!("abc123.0123456789abcdef@{PIN}")),
            None
        );
        for (t, why) in [
            (String::new(), "empty"),
            ("abc123.0123456789abcdef".to_string(), "no `@sha256:`"),
            (format!("abc1230123456789abcdef@{PIN}"), "no `.`"),
            (format!("ABC123.0123456789abcdef@{PIN}"), "the id"),
            (format!("abc123.0123456789abcde@{PIN}"), "the secret"),
            ("abc123.0123456789abcdef@md5:00".to_string(), "`sha256:`"),
            (
                format!("abc123.0123456789abcdef@{}", &PIN[..70]),
                "64 lowercase",
            ),
        ] {
            let got = token_shape_problem(&t).unwrap_or_else(|| panic!("{t:?} passed"));
            assert!(got.contains(why), "{t:?}: {got}");
        }
    }

    #[test]
    fn join_addresses_are_hosts_or_host_ports() {
        for ok in [
            "10.0.0.1",
            "10.0.0.1:4681",
            "[fd00::1]:4681",
            "fd00::1",
            "ams2-server-01",
            "join.example.com:443",
        ] {
            assert_eq!(join_address_problem(ok), None, "{ok}");
        }
        for bad in [
            "",
            "host:0",
            "host:70000",
            "host:",
            ":4681",
            "a b",
            "-x.example",
            "x_y",
        ] {
            assert!(join_address_problem(bad).is_some(), "{bad:?} passed");
        }
    }
}

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
    /// The node's public address, if any.
    pub public: Option<IpAddr>,
    pub config_dir: &'a Path,
}

/// `[security]`, the join token and the material, then the rules between
/// them.
pub(super) fn check(cx: Context<'_>, i: &Inputs<'_>) -> Checked<SecurityRole> {
    let mut found = Findings::default();
    let r = i.raw;
    let plaintext = r.plaintext.as_ref().is_some_and(|p| *p.get_ref());
    // `dev` is a single node on loopback: never secured, its material
    // never read.
    let material = if i.set.dev {
        None
    } else {
        material(&mut found, cx, i.config_dir, i.set)
    };
    let ca_holder = !i.set.dev && cx.host.is_dir(&i.config_dir.join(CLUSTER_SUBDIR));
    // A node with material has joined: its token is not read (the
    // operator may have deleted the file, as they should), unless its
    // certificate expired and it holds no CA (renewal over mutual TLS is
    // impossible): then a token, when one is given, joins it again
    // (SEC-STORE; a missing or bad token is no problem then).
    let expired = material
        .as_ref()
        .is_some_and(|m| !ca_holder && m.is_expired(crate::role::security::now_unix()));
    let join_token = if material.is_none() {
        join_token(&mut found, cx, r, i.overrides)
    } else if expired {
        join_token(&mut Findings::default(), cx, r, i.overrides)
    } else {
        None
    };
    let join_token_file = join_token.as_ref().and_then(|_| {
        if i.overrides.join_token.is_some() {
            return None;
        }
        i.overrides.join_token_file.clone().or_else(|| {
            r.join_token_file
                .as_ref()
                .map(|s| cx.resolve_path(s.get_ref()))
        })
    });
    let join = join_addresses(&mut found, &r.join);
    let join_listen = join_listen(&mut found, &r.join_listen, i.private, i.public);
    let (cert_lifetime, renew_before) = lifetimes(&mut found, r);
    let role = SecurityRole {
        plaintext,
        join_token,
        join_token_file,
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

/// `join_listen`: `ip:port`; default port 4681 on the private address, or
/// on every address of a node with a public one (a server joined from
/// other datacenters through its WAN address, as `retry_join_wan` names it).
fn join_listen(
    found: &mut Findings,
    v: &Option<SpStr>,
    private: IpAddr,
    public: Option<IpAddr>,
) -> SocketAddr {
    let host = match public {
        Some(IpAddr::V4(_)) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        Some(IpAddr::V6(_)) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        None => private,
    };
    let default = SocketAddr::new(host, DEFAULT_JOIN_PORT);
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
    // A key the node's roles do not use is handed out empty (the join
    // endpoint narrows what each node gets).
    for (key, v, used) in [
        (
            "consul_gossip_key",
            &file.consul_gossip_key,
            set.is_consul(),
        ),
        ("nomad_gossip_key", &file.nomad_gossip_key, set.nomad_server),
    ] {
        if (used || !v.is_empty()) && !super::tls::is_gossip_key(v.trim()) {
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
    if i.set.dev
        || s.plaintext
        || s.material.is_some()
        || s.join_token.is_some()
        || i.overrides.cluster_command
    {
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
        format!("; your own TLS also needs {}", missing.join(", "))
    } else {
        String::new()
    };
    found.at(
        i.roles_at.clone(),
        format!(
            "these roles span more than one node and this node has no cluster security (no material in {}, no join token): \
             run `supervisor cluster init` on the first server, `--join-token` or `[security] join_token_file` on the others, \
             or set `[security] plaintext = true`{own}",
            i.config_dir.join(SECURITY_SUBDIR).display()
        ),
    );
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::role::{NodeRole, RoleError, StaticHost, parse_with};

    const SECRET: &str = "0123456789abcdef";
    const TOKEN: &str = "abc123.0123456789abcdef@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const SEC: &str = "/etc/hashi-supervisor/security";

    fn host() -> StaticHost {
        StaticHost {
            hostname: Some("ams2-server-01".into()),
            interfaces: vec![("eth1".into(), std::net::Ipv4Addr::new(10, 0, 1, 11))],
            ..StaticHost::default()
        }
    }

    fn node_json() -> String {
        serde_json::json!({
            "version": 1,
            "ca_sha256": PIN,
            "names": ["server.ams2.consul", "localhost"],
            "ips": ["127.0.0.1", "10.0.1.11"],
            "not_before": 1_700_000_000u64,
            "not_after": 1_707_776_000u64,
            "primary_datacenter": "ams2",
            "consul_gossip_key": "AAAAAAAAAAAAAAAAAAAAAA==",
            "nomad_gossip_key": "BBBBBBBBBBBBBBBBBBBBBB==",
            "acl_enabled": true,
            "acl": {"consul_agent": "11111111-1111-4111-8111-111111111111"}
        })
        .to_string()
    }

    /// A host with the material of a node running Consul and Nomad.
    fn secured_host() -> StaticHost {
        let mut h = host();
        for f in [
            "ca.pem",
            "node.pem",
            "node-key.pem",
            "consul-key.pem",
            "nomad-key.pem",
        ] {
            h.files.insert(Path::new(SEC).join(f), "pem".into());
        }
        h.files
            .insert(Path::new(SEC).join("node.json"), node_json());
        h
    }

    fn load(text: &str, ov: &Overrides, h: &StaticHost) -> Result<NodeRole, String> {
        parse_with(Path::new("/r/node.toml"), text, ov, h).map_err(|e: RoleError| e.to_string())
    }

    fn load_ok(text: &str, h: &StaticHost) -> NodeRole {
        load(text, &Overrides::default(), h).unwrap_or_else(|e| panic!("{e}"))
    }

    fn load_err(text: &str, h: &StaticHost) -> String {
        load(text, &Overrides::default(), h).unwrap_err()
    }

    const SERVER: &str = "schema = 1\nroles = [\"consul-server\", \"nomad-server\"]\n";

    #[test]
    fn secure_by_default_refuses_a_cluster_role_at_roles_naming_the_three_ways_out() {
        let e = load_err(SERVER, &host());
        assert!(
            e.contains("/r/node.toml:2:9: these roles span more than one node"),
            "{e}"
        );
        for want in [
            "`supervisor cluster init`",
            "`--join-token`",
            "join_token_file",
            "`[security] plaintext = true`",
            "/etc/hashi-supervisor/security",
        ] {
            assert!(e.contains(want), "{want}: {e}");
        }
        // From `--role` alone, the flag is the place.
        let e = parse_with(
            Path::new("/r/node.toml"),
            "schema = 1\n",
            &Overrides::roles(&["nomad-client".into()]),
            &host(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("--role: these roles span more than one node"),
            "{e}"
        );
    }

    #[test]
    fn dev_and_explicit_plaintext_need_nothing() {
        let r = load_ok("schema = 1\nroles = [\"dev\"]\n", &host());
        assert!(!r.security.plaintext && r.security.material.is_none());
        let r = load_ok(&format!("{SERVER}[security]\nplaintext = true\n"), &host());
        assert!(r.security.plaintext);
        assert_eq!(r.security.join_listen.to_string(), "10.0.1.11:4681");
        assert_eq!(r.security.cert_lifetime, Duration::from_secs(90 * DAY_SECS));
        assert_eq!(r.security.renew_before, Duration::from_secs(30 * DAY_SECS));
        assert!(!r.security.ca_holder);
    }

    #[test]
    fn the_operators_own_tls_and_gossip_keys_for_every_agent_are_enough() {
        let mut h = host();
        for f in ["/k/c.key", "/k/n.key"] {
            h.files.insert(f.into(), "AAAAAAAAAAAAAAAAAAAAAA==".into());
        }
        for f in ["/t/ca.pem", "/t/c.pem", "/t/k.pem"] {
            h.files.insert(f.into(), "pem".into());
        }
        let tls = |t: &str| {
            format!(
                "[{t}]\nca_file = \"/t/ca.pem\"\ncert_file = \"/t/c.pem\"\nkey_file = \"/t/k.pem\"\n"
            )
        };
        let full = format!(
            "{SERVER}[consul]\nencrypt_key_file = \"/k/c.key\"\n{}[nomad]\nencrypt_key_file = \"/k/n.key\"\n{}",
            tls("consul.tls"),
            tls("nomad.tls")
        );
        load_ok(&full, &h);
        // Consul's half alone: refused, saying what is missing.
        let half = format!(
            "{SERVER}[consul]\nencrypt_key_file = \"/k/c.key\"\n{}",
            tls("consul.tls")
        );
        let e = load_err(&half, &h);
        assert!(
            e.contains("your own TLS also needs `[nomad.tls]`, `nomad.encrypt_key_file`"),
            "{e}"
        );
        // A Nomad client does not gossip: TLS is enough for it.
        let client = format!(
            "schema = 1\nroles = [\"nomad-client\"]\n{}",
            tls("nomad.tls")
        );
        load_ok(&client, &h);
    }

    #[test]
    fn join_token_file_is_read_trimmed_and_shape_checked_at_its_key() {
        let mut h = host();
        h.files
            .insert("/r/join.token".into(), format!("  {TOKEN}\n"));
        h.files.insert(
            "/r/bad.token".into(),
            format!("{}\n", TOKEN.replace("abc123", "ABC123")),
        );
        let text = |f: &str| format!("{SERVER}[security]\njoin_token_file = \"{f}\"\n");
        let r = load_ok(&text("join.token"), &h);
        let t = r.security.join_token.as_ref().unwrap();
        assert_eq!(t.expose(), TOKEN);
        assert!(!format!("{r:?}").contains(SECRET), "the secret is in Debug");
        assert!(
            !serde_json::to_string(&r).unwrap().contains(SECRET),
            "the secret is serialised"
        );
        let e = load_err(&text("bad.token"), &h);
        assert!(
            e.contains("/r/node.toml:4:19: the join token file /r/bad.token does not hold a join token of the form `<id>.<secret>@sha256:<64 hex>`: the id is not 6 lowercase letters or digits"),
            "{e}"
        );
        assert!(!e.contains(SECRET), "{e}");
        let e = load_err(&text("missing.token"), &h);
        assert!(
            e.contains("/r/node.toml:4:19: failed to read the join token file /r/missing.token"),
            "{e}"
        );
        h.files.insert("/r/big.token".into(), "a".repeat(1025));
        let e = load_err(&text("big.token"), &h);
        assert!(e.contains("larger than the 1024 byte limit"), "{e}");
    }

    #[test]
    fn the_command_line_token_overrides_the_files_and_is_checked_at_its_flag() {
        let text = format!("{SERVER}[security]\njoin_token_file = \"/nowhere\"\n");
        let ov = Overrides {
            join_token: Some(Secret::new(format!("{TOKEN}\n"))),
            ..Overrides::default()
        };
        let r = load(&text, &ov, &host()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.security.join_token.unwrap().expose(), TOKEN);
        let ov = Overrides {
            join_token: Some(Secret::new(format!("{SECRET}@sha256:00"))),
            ..Overrides::default()
        };
        let e = load(SERVER, &ov, &host()).unwrap_err();
        assert!(
            e.contains("--join-token: the join token is not of the form"),
            "{e}"
        );
        assert!(!e.contains(SECRET), "{e}");
        let mut h = host();
        h.files.insert("/tok".into(), TOKEN.into());
        let ov = Overrides {
            join_token_file: Some("/tok".into()),
            ..Overrides::default()
        };
        let r = load(&text, &ov, &h).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.security.join_token.unwrap().expose(), TOKEN);
        let ov = Overrides {
            join_token_file: Some("/none".into()),
            ..Overrides::default()
        };
        let e = load(SERVER, &ov, &h).unwrap_err();
        assert!(
            e.contains("--join-token-file: failed to read the join token file /none"),
            "{e}"
        );
    }

    #[test]
    fn plaintext_with_a_token_or_material_is_a_contradiction() {
        let ov = Overrides {
            join_token: Some(Secret::new(TOKEN)),
            ..Overrides::default()
        };
        let e = load(
            &format!("{SERVER}[security]\nplaintext = true\n"),
            &ov,
            &host(),
        )
        .unwrap_err();
        assert!(
            e.contains(
                "/r/node.toml:4:13: `plaintext = true` and a join token contradict each other"
            ),
            "{e}"
        );
        let e = load_err(
            &format!("{SERVER}[security]\nplaintext = true\n"),
            &secured_host(),
        );
        assert!(e.contains("/r/node.toml:4:13: `plaintext = true` but this node has the cluster's TLS material in /etc/hashi-supervisor/security"), "{e}");
        let e = load("schema = 1\nroles = [\"dev\"]\n", &ov, &host()).unwrap_err();
        assert!(
            e.contains("/r/node.toml:2:9: the `dev` role is a single node on loopback"),
            "{e}"
        );
    }

    #[test]
    fn material_is_read_from_the_security_dir() {
        let r = load_ok(SERVER, &secured_host());
        let m = r.security.material.as_ref().expect("material");
        assert_eq!(m.cert_file, Path::new(SEC).join("node.pem"));
        assert_eq!(m.consul_key_file, Path::new(SEC).join("consul-key.pem"));
        assert_eq!(
            m.secrets.consul_gossip_key.expose(),
            "AAAAAAAAAAAAAAAAAAAAAA=="
        );
        assert!(m.secrets.acl_enabled);
        assert_eq!(m.secrets.primary_datacenter, "ams2");
        assert!(
            !format!("{r:?}").contains("11111111-1111"),
            "a token is in Debug"
        );
        assert!(!r.security.ca_holder);
        let mut h = secured_host();
        h.files
            .insert("/etc/hashi-supervisor/cluster/ca.pem".into(), "pem".into());
        assert!(load_ok(SERVER, &h).security.ca_holder);
        // A Consul-only node needs no Nomad key copy.
        let mut h = secured_host();
        h.files.remove(&Path::new(SEC).join("nomad-key.pem"));
        load_ok("schema = 1\nroles = [\"consul-server\"]\n", &h);
        let e = load_err(SERVER, &h);
        assert!(e.contains("/r/node.toml: failed to read Nomad's copy of the node key /etc/hashi-supervisor/security/nomad-key.pem"), "{e}");
    }

    #[test]
    fn broken_material_is_refused_naming_the_file_without_its_values() {
        let json = Path::new(SEC).join("node.json");
        for (contents, want) in [
            ("{".to_string(), "node.json:1:1: is not valid JSON"),
            (
                node_json().replace("\"version\":1", "\"version\":2"),
                "node.json has version 2, this supervisor reads version 1",
            ),
            (
                node_json().replace("\"acl_enabled\"", "\"acl_enabeld\""),
                "unknown field `acl_enabeld`",
            ),
            (
                node_json().replace("\"11111111-1111-4111-8111-111111111111\"", "7"),
                "a value has the wrong type",
            ),
            (
                node_json().replace("\"ams2\"", "[\"supersecret\"]"),
                "a value has the wrong type",
            ),
            (
                node_json().replace("AAAAAAAAAAAAAAAAAAAAAA==", "short"),
                "`consul_gossip_key` that is not a base64 key",
            ),
        ] {
            let mut h = secured_host();
            h.files.insert(json.clone(), contents);
            let e = load_err(SERVER, &h);
            assert!(e.contains(want), "{want}: {e}");
            assert!(!e.contains("supersecret"), "{e}");
        }
        let mut h = secured_host();
        h.files.remove(&Path::new(SEC).join("node-key.pem"));
        let e = load_err(SERVER, &h);
        assert!(
            e.contains("failed to read the node key /etc/hashi-supervisor/security/node-key.pem"),
            "{e}"
        );
    }

    #[test]
    fn a_node_with_material_does_not_read_its_join_token_any_more() {
        let text = format!("{SERVER}[security]\njoin_token_file = \"/deleted.token\"\n");
        let r = load_ok(&text, &secured_host());
        assert!(r.security.material.is_some() && r.security.join_token.is_none());
    }

    #[test]
    fn material_and_the_operators_own_files_are_refused_together() {
        let mut h = secured_host();
        h.files
            .insert("/k/c.key".into(), "AAAAAAAAAAAAAAAAAAAAAA==".into());
        let e = load_err(
            &format!("{SERVER}[consul]\nencrypt_key_file = \"/k/c.key\"\n"),
            &h,
        );
        assert!(e.contains("/r/node.toml:4:20: `consul.encrypt_key_file` names the operator's own TLS or gossip key, but this node has the cluster's material"), "{e}");
    }

    #[test]
    fn lifetimes_and_join_settings_have_ranges() {
        let sec = |body: &str| format!("{SERVER}[security]\nplaintext = true\n{body}");
        let r = load_ok(&sec("cert_days = 10\n"), &host());
        assert_eq!(r.security.cert_lifetime, Duration::from_secs(10 * DAY_SECS));
        assert_eq!(
            r.security.renew_before,
            Duration::from_secs(10 * DAY_SECS / 3)
        );
        let r = load_ok(&sec("cert_days = 825\nrenew_before_days = 824\n"), &host());
        assert_eq!(r.security.renew_before, Duration::from_secs(824 * DAY_SECS));
        for (body, want) in [
            (
                "cert_days = 0\n",
                "5:13: cert_days must be between 1 and 825 (got 0)",
            ),
            (
                "cert_days = 826\n",
                "5:13: cert_days must be between 1 and 825 (got 826)",
            ),
            (
                "renew_before_days = 90\n",
                "5:21: renew_before_days must be between 1 and 89 (cert_days - 1) (got 90)",
            ),
            (
                "renew_before_days = 0\n",
                "5:21: renew_before_days must be between 1 and 89",
            ),
            (
                "cert_days = 1\nrenew_before_days = 1\n",
                "6:21: `renew_before_days` needs `cert_days` of at least 2",
            ),
            (
                "join_listen = \"10.0.1.11\"\n",
                "5:15: `security.join_listen` must be `ip:port`",
            ),
            (
                "join = [\"ok:4681\", \"bad host\"]\n",
                "5:20: `bad host` is not a `host` or `host:port` join address",
            ),
        ] {
            let e = load_err(&sec(body), &host());
            assert!(e.contains(&format!("/r/node.toml:{want}")), "{want}: {e}");
        }
        let many: Vec<String> = (0..17).map(|i| format!("\"10.0.0.{i}\"")).collect();
        let e = load_err(&sec(&format!("join = [{}]\n", many.join(", "))), &host());
        assert!(
            e.contains("/r/node.toml:5:8: `security.join` has 17 entries, at most 16 are allowed"),
            "{e}"
        );
        let r = load_ok(
            &sec(
                "join = [\"10.0.1.12\", \"ams2-server-02:4690\"]\njoin_listen = \"0.0.0.0:4690\"\n",
            ),
            &host(),
        );
        assert_eq!(r.security.join, ["10.0.1.12", "ams2-server-02:4690"]);
        assert_eq!(r.security.join_listen.to_string(), "0.0.0.0:4690");
    }

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

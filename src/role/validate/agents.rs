//! `[consul]` and `[nomad]`: versions, cluster size, gossip keys and TLS
//! ([`super::tls`]), restart policy ([`super::restart`]), stop settings,
//! Unix users ([`super::users`]) and pass-through tables ([`super::extra`]).
//! Each agent's settings are checked in the order they are listed here.

use toml::Spanned;

use super::{Checked, Context, Findings, extra, restart, sizes, tls, users};
use crate::role::limits;
use crate::role::raw::{RawConsul, RawNomad, SpStr};
use crate::role::{AdvertiseScope, ConsulRole, NomadRole, RoleSet};
use crate::version::VersionSpec;
use crate::vocab::{CONSUL_USER, NOMAD_USER, ROOT_USER};

/// Default `bootstrap_expect` for servers: HashiCorp's recommended three.
const DEFAULT_BOOTSTRAP_EXPECT: u32 = 3;

/// `[consul]`.
pub(super) fn consul(cx: Context<'_>, rc: &RawConsul, set: RoleSet) -> Checked<ConsulRole> {
    let mut found = Findings::default();
    let server = set.consul_server;
    let version = version(&mut found, &rc.version);
    let bootstrap_expect = bootstrap_expect(&mut found, &rc.bootstrap_expect, set.dev, "consul");
    let encrypt = tls::gossip_key(&mut found, cx, &rc.encrypt_key_file, "consul");
    let tls = tls::files(
        &mut found,
        cx,
        [&rc.tls.ca_file, &rc.tls.cert_file, &rc.tls.key_file],
        "consul.tls",
    );
    let restart = restart::policy(&mut found, &rc.restart);
    let stop_timeout = sizes::secs(
        &mut found,
        &rc.stop_timeout_secs,
        "stop_timeout_secs",
        &limits::STOP_TIMEOUT_SECS,
    );
    let leave_on_stop = leave_on_stop(&mut found, &rc.leave_on_stop, server, "consul");
    let user = users::agent_user(&mut found, &rc.user, CONSUL_USER, "consul");
    let extra = extra::table(&mut found, &rc.extra, "consul");
    let role = ConsulRole {
        version,
        bootstrap_expect,
        encrypt,
        ui: rc.ui.unwrap_or(server),
        tls,
        restart,
        stop_timeout,
        leave_on_stop,
        user,
        extra,
    };
    (role, found)
}

/// `[nomad]`. `has_public`: whether `addresses.public` is set.
pub(super) fn nomad(
    cx: Context<'_>,
    rn: &RawNomad,
    set: RoleSet,
    has_public: bool,
) -> Checked<NomadRole> {
    let mut found = Findings::default();
    let advertise = advertise(&mut found, &rn.advertise, has_public);
    let version = version(&mut found, &rn.version);
    let bootstrap_expect = bootstrap_expect(&mut found, &rn.bootstrap_expect, set.dev, "nomad");
    let encrypt = tls::gossip_key(&mut found, cx, &rn.encrypt_key_file, "nomad");
    let tls = tls::files(
        &mut found,
        cx,
        [&rn.tls.ca_file, &rn.tls.cert_file, &rn.tls.key_file],
        "nomad.tls",
    );
    let restart = restart::policy(&mut found, &rn.restart);
    let stop_timeout = sizes::secs(
        &mut found,
        &rn.stop_timeout_secs,
        "stop_timeout_secs",
        &limits::STOP_TIMEOUT_SECS,
    );
    let leave_on_stop = leave_on_stop(&mut found, &rn.leave_on_stop, set.nomad_server, "nomad");
    let drain_deadline = sizes::secs(
        &mut found,
        &rn.drain_deadline_secs,
        "drain_deadline_secs",
        &limits::DRAIN_DEADLINE_SECS,
    );
    let default_user = if set.nomad_client {
        ROOT_USER
    } else {
        NOMAD_USER
    };
    let user = users::agent_user(&mut found, &rn.user, default_user, "nomad");
    let extra = extra::table(&mut found, &rn.extra, "nomad");
    let role = NomadRole {
        version,
        bootstrap_expect,
        encrypt,
        advertise,
        tls,
        tls_http: rn.tls.http.unwrap_or(false),
        restart,
        stop_timeout,
        leave_on_stop,
        drain_deadline,
        user,
        extra,
    };
    (role, found)
}

fn version(found: &mut Findings, v: &Option<SpStr>) -> VersionSpec {
    match v {
        None => VersionSpec::Latest,
        Some(s) => match s.get_ref().parse::<VersionSpec>() {
            Ok(v) => v,
            Err(e) => {
                found.span(s, e.to_string());
                VersionSpec::Latest
            }
        },
    }
}

fn bootstrap_expect(
    found: &mut Findings,
    v: &Option<Spanned<i64>>,
    dev: bool,
    product: &str,
) -> u32 {
    let default = if dev { 1 } else { DEFAULT_BOOTSTRAP_EXPECT };
    let Some(s) = v else {
        return default;
    };
    let n = *s.get_ref();
    let in_range = u64::try_from(n)
        .ok()
        .filter(|n| limits::BOOTSTRAP_EXPECT.contains(n));
    if in_range.is_none() {
        found.span(
            s,
            format!(
                "bootstrap_expect must be between {} and {} (got {n})",
                limits::BOOTSTRAP_EXPECT.start(),
                limits::BOOTSTRAP_EXPECT.end()
            ),
        );
        return default;
    }
    if dev && n != 1 {
        found.span(
            s,
            format!(
                "the dev role runs a single-node {product} cluster: bootstrap_expect must be 1"
            ),
        );
    }
    u32::try_from(n).unwrap_or(default)
}

fn leave_on_stop(
    found: &mut Findings,
    v: &Option<Spanned<bool>>,
    server: bool,
    product: &str,
) -> bool {
    match v {
        Some(s) if !server => {
            found.span(
                s,
                format!("`{product}.leave_on_stop` applies to {product} servers only (clients always leave)"),
            );
            true
        }
        Some(s) => *s.get_ref(),
        None => !server,
    }
}

/// `nomad.advertise`: `private` or `public` (which needs a public address).
fn advertise(found: &mut Findings, v: &Option<SpStr>, has_public: bool) -> AdvertiseScope {
    match v {
        None => AdvertiseScope::Private,
        Some(s) => match s.get_ref().as_str() {
            "private" => AdvertiseScope::Private,
            "public" => {
                if !has_public {
                    found.span(s, "`nomad.advertise = \"public\"` needs `addresses.public`");
                }
                AdvertiseScope::Public
            }
            other => {
                found.span(
                    s,
                    format!("unknown advertise scope `{other}`, expected `private` or `public`"),
                );
                AdvertiseScope::Private
            }
        },
    }
}

//! The agents' Unix users: a valid name, and (when the supervisor runs as
//! root and switches users) one that exists on this host.

use std::path::Path;

use super::Findings;
use crate::role::diag::Location;
use crate::role::host::Host;
use crate::role::raw::SpStr;

/// Longest Unix user name `useradd` accepts everywhere.
const MAX_USER_NAME_LEN: usize = 32;

/// The agent's Unix user: `[<product>] user` when set, else `default`.
pub(super) fn agent_user(
    found: &mut Findings,
    v: &Option<SpStr>,
    default: &str,
    product: &str,
) -> String {
    let Some(s) = v else {
        return default.to_string();
    };
    let name = s.get_ref();
    // useradd's portable names: no leading `-`, at most 32 bytes.
    let ok = !name.is_empty()
        && name.len() <= MAX_USER_NAME_LEN
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if !ok {
        found.span(
            s,
            format!(
                "`{product}.user` must be a Unix user name (at most {MAX_USER_NAME_LEN} letters, digits, `-`, `_` or `.`, not starting with `-`)"
            ),
        );
    }
    name.clone()
}

/// A supervisor running as root switches each agent to its user; a user
/// that does not exist is refused here, so `check` and `run` refuse alike
/// before anything starts (the agent never runs as root instead).
/// `(user, explicit)`: the user, and `[<product>] user` when it named it.
pub(super) fn check_exist(
    host: &dyn Host,
    runs: bool,
    (user, explicit): (&str, &Option<SpStr>),
    product: &str,
    state_dir: &Path,
) -> Findings {
    let mut found = Findings::default();
    if !runs || !host.switches_users() || host.user_exists(user) {
        return found;
    }
    let how = format!(
        "create it with `useradd --system --user-group --home-dir {} --shell /usr/sbin/nologin {user}` \
         (the hashi-supervisor package creates `consul` and `nomad`), or name an existing user with `[{product}] user = \"...\"`",
        state_dir.display()
    );
    let message =
        format!("{product} runs as user `{user}`, which does not exist on this host: {how}");
    match explicit {
        Some(s) => found.span(s, message),
        None => found.at(Location::File, message),
    }
    found
}

//! One file per command. Each returns the exit code of a completed command
//! (0, or 1 for "ran fine but found a problem", e.g. drift) or an [`Error`]
//! whose `exit_code()` main uses.
//!
//! Every command that reads the role file does it through [`load`], so
//! `check` validates exactly what `run` applies.

mod check;
mod cluster;
mod completions;
mod fetch;
mod fleet;
mod keygen;
mod render;
mod run;
mod status;
mod versions;

use crate::cli::{Cli, Command, GlobalArgs};
use crate::error::Error;
use crate::plan::Plan;
use crate::role::{self, NodeRole, SystemHost};

/// The role file the command line names: validated, planned, and hashed.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The validated role.
    pub role: NodeRole,
    /// Its plan.
    pub plan: Plan,
    /// SHA-256 (hex) of the role file bytes that were validated; empty
    /// when no file was read.
    pub hash: String,
}

/// Loads the role file the command line names (`--config`, else the
/// default path, which may be missing), with `--role`: the one way every
/// command (and `run`, at start and on SIGHUP) gets its role and plan.
pub fn load(global: &GlobalArgs) -> Result<Loaded, Error> {
    load_overriding(global, false)
}

/// [`load`] for `supervisor cluster ...`, which makes (`init`) or manages
/// (`token`) the material the secure-by-default check asks for: that check
/// is off, every other one is the same.
pub fn load_for_cluster_command(global: &GlobalArgs) -> Result<Loaded, Error> {
    load_overriding(global, true)
}

fn load_overriding(global: &GlobalArgs, cluster_command: bool) -> Result<Loaded, Error> {
    let (path, must_exist) = global.role_file();
    let overrides = role::Overrides {
        roles: global.role.clone(),
        join_token: global.join_token.as_deref().map(role::Secret::new),
        join_token_file: global.join_token_file.clone(),
        cluster_command,
    };
    let role::LoadedRole { role, hash } =
        role::load_with(&path, must_exist, &overrides, &SystemHost)?;
    let role::LoadedRole { role, hash } = if recover_material(&role) {
        role::load_with(&path, must_exist, &overrides, &SystemHost)?
    } else {
        role::LoadedRole { role, hash }
    };
    // A join token file others can read or change is refused, as ssh
    // refuses such a key.
    if role.security.join_token.is_some() {
        if let Some(why) = role
            .security
            .join_token_file
            .as_deref()
            .and_then(crate::security::token::token_file_problem)
        {
            return Err(Error::Unsecurable(why));
        }
    }
    let plan = Plan::from_role(&role);
    Ok(Loaded { role, plan, hash })
}

/// The load-time check of the node's key and certificate
/// (`security::store::recover_node_material`): when they do not match and
/// the previous pair does, that one is put back in force; true when the
/// role must be read again.
fn recover_material(role: &NodeRole) -> bool {
    use crate::security::store::{Recovery, recover_node_material};
    if role.roles.dev {
        return false;
    }
    let dir = role.config_dir.join(crate::paths::SECURITY_SUBDIR);
    match recover_node_material(&dir) {
        Ok(Recovery::RolledBack { .. }) => true,
        Ok(Recovery::Broken { reason }) => {
            tracing::error!(
                dir = %dir.display(),
                problem = %reason,
                "the node's key and certificate do not match and no previous pair does: move the security dir away and join again with a join token"
            );
            false
        }
        Ok(Recovery::Fine | Recovery::Busy) => false,
        // Not ours to write (a user's `check` of root's files): the
        // agents' own start-up reports a broken pair.
        Err(e) => {
            tracing::debug!(error = %e, "could not check the node's key and certificate");
            false
        }
    }
}

/// Runs the command the command line asked for.
pub async fn dispatch(cli: Cli) -> Result<u8, Error> {
    let global = cli.global;
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run::run(&global).await,
        Command::Check(a) => check::run(&global, &a).await,
        Command::Render(a) => render::run(&global, &a),
        Command::Fetch => fetch::run(&global).await,
        Command::Versions(a) => versions::run(&global, &a).await,
        Command::Status(a) => status::run(&global, &a).await,
        Command::Fleet(a) => fleet::run(&a).await,
        Command::Keygen => keygen::run(),
        Command::Cluster(a) => cluster::run(&global, &a).await,
        Command::Completions { shell } => completions::run(&shell),
    }
}

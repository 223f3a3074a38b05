//! One file per command. Each returns the exit code of a completed command
//! (0, or 1 for "ran fine but found a problem", e.g. drift) or an [`Error`]
//! whose `exit_code()` main uses.

mod check;
mod completions;
mod fetch;
mod keygen;
mod render;
mod run;
mod status;
mod versions;

use crate::cli::{Cli, Command};
use crate::error::Error;

/// Runs the command the command line asked for.
pub async fn dispatch(cli: Cli) -> Result<u8, Error> {
    let global = cli.global;
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run::run(&global).await,
        Command::Check(a) => check::run(&global, &a),
        Command::Render(a) => render::run(&global, &a),
        Command::Fetch => fetch::run(&global).await,
        Command::Versions(a) => versions::run(&global, &a).await,
        Command::Status(a) => status::run(&global, &a).await,
        Command::Keygen => keygen::run(),
        Command::Completions { shell } => completions::run(&shell),
    }
}

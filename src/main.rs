//! `supervisor`: parse the command line, set up logging, run the command,
//! map its error to an exit code.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use hashi_supervisor::cli::Cli;
use hashi_supervisor::{commands, telemetry};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    telemetry::init(&cli.global.log_level, cli.global.log_format);
    let runtime = match hashi_supervisor::supervise::runtime::build() {
        Ok(rt) => rt,
        Err(e) => {
            report(&hashi_supervisor::Error::io("start the async runtime", e));
            return ExitCode::from(hashi_supervisor::error::EXIT_INTERNAL);
        }
    };
    match runtime.block_on(commands::dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            report(&e);
            ExitCode::from(e.exit_code())
        }
    }
}

/// Prints clap's message (help and version on stdout, errors on stderr)
/// and exits 0 for `--help`/`--version`, 64 (EX_USAGE, as the README
/// promises) for a usage error instead of clap's own 2.
fn usage_error(e: &clap::Error) -> ExitCode {
    let _ = e.print();
    if e.use_stderr() {
        ExitCode::from(hashi_supervisor::error::EXIT_USAGE)
    } else {
        ExitCode::SUCCESS
    }
}

/// Prints `error: <top>`, one `  caused by: <source>` line per level, then
/// `hint: <next step>` when the error has one.
fn report(err: &hashi_supervisor::Error) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "error: {err}");
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        let _ = writeln!(stderr, "  caused by: {s}");
        source = s.source();
    }
    if let Some(hint) = err.hint() {
        let _ = writeln!(stderr, "hint: {hint}");
    }
}

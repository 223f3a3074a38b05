//! `supervisor completions SHELL`: prints shell completions, or the man page
//! when SHELL is `man`, generated from the clap definitions in [`crate::cli`].
//!
//! The packages ship what this prints (see `packaging/gen-assets.sh`), so
//! completions and the man page never drift from the real command line. This
//! module only writes to stdout; it reads no role file and touches no state.

use std::io::Write;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;
use crate::error::Error;

/// Binary name the completions are registered for.
const BIN_NAME: &str = "supervisor";
/// The pseudo-shell that selects the man page (roff, section 1).
const MAN: &str = "man";
/// Name of the man page: `hashi-supervisor(1)`, not `supervisor(1)`, which
/// Debian's `supervisor` package (supervisord) ships. Its NAME section also
/// lists `supervisor`, so `man supervisor` finds it where no other page has
/// that name.
const MAN_PAGE_NAME: &str = "hashi-supervisor";
/// Shells whose completions the packages install; listed in usage errors.
const SHELLS: &str = "bash, zsh, fish, elvish, powershell";

/// Prints completions for `shell` (or the man page for `man`) on stdout.
pub fn run(shell: &str) -> Result<u8, Error> {
    let mut out = std::io::stdout().lock();
    write_asset(shell, &mut out)?;
    out.flush()
        .map_err(|e| Error::io("write completions to stdout", e))?;
    Ok(0)
}

/// Writes completions for `shell` (or the man page for `man`) to `out`.
fn write_asset(shell: &str, out: &mut dyn Write) -> Result<(), Error> {
    let mut cmd = Cli::command();
    if shell == MAN {
        return write_man_page(cmd, out);
    }
    let parsed = shell.parse::<Shell>().map_err(|_| {
        Error::Usage(format!(
            "unknown shell `{shell}` (expected one of: {SHELLS}; or `{MAN}` for the man page)"
        ))
    })?;
    clap_complete::generate(parsed, &mut cmd, BIN_NAME, out);
    Ok(())
}

/// Writes the man page `hashi-supervisor(1)` for the `supervisor` command:
/// clap_mangen's page with its title renamed and both names in NAME.
fn write_man_page(cmd: clap::Command, out: &mut dyn Write) -> Result<(), Error> {
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd)
        .title(MAN_PAGE_NAME)
        .render(&mut page)
        .map_err(|e| Error::io("render the man page", e))?;
    let page = String::from_utf8_lossy(&page);
    // clap_mangen writes NAME as `supervisor \- <about>`; roff escapes
    // the hyphen of a name that has one.
    let clap_name = format!("\n.SH NAME\n{BIN_NAME} \\- ");
    let both_names = format!(
        "\n.SH NAME\n{}, {BIN_NAME} \\- ",
        MAN_PAGE_NAME.replace('-', "\\-")
    );
    if !page.contains(&clap_name) {
        return Err(Error::Internal(
            "failed to rename the man page: clap_mangen's NAME section has an unexpected form"
                .to_string(),
        ));
    }
    out.write_all(page.replacen(&clap_name, &both_names, 1).as_bytes())
        .map_err(|e| Error::io("write the man page", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(shell: &str) -> String {
        let mut buf = Vec::new();
        write_asset(shell, &mut buf).expect("asset renders");
        String::from_utf8(buf).expect("asset is utf-8")
    }

    #[test]
    fn bash_completions_register_the_supervisor_binary_and_its_commands() {
        let text = render("bash");
        assert!(text.contains("complete -F _supervisor"), "{text}");
        for sub in [
            "run", "check", "render", "fetch", "versions", "status", "keygen",
        ] {
            assert!(text.contains(sub), "missing {sub}");
        }
    }

    #[test]
    fn fish_completions_offer_the_global_role_option() {
        let text = render("fish");
        assert!(text.contains("-l role"), "{text}");
        assert!(text.contains("-a \"check\""), "{text}");
    }

    #[test]
    fn zsh_completions_start_with_a_compdef_line() {
        assert!(render("zsh").starts_with("#compdef supervisor"));
    }

    #[test]
    fn man_page_is_roff_naming_the_binary_and_the_role_option() {
        let text = render("man");
        assert!(text.starts_with(".ie \\n(.g .ds Aq"), "{text}");
        assert!(text.contains("\\fBsupervisor\\fR"), "{text}");
        assert!(text.contains("\\-\\-role"), "{text}");
    }

    #[test]
    fn man_page_is_hashi_supervisor_1_and_also_named_supervisor() {
        let text = render("man");
        assert!(text.contains("\n.TH hashi-supervisor 1 "), "{text}");
        let name_line = text
            .split("\n.SH NAME\n")
            .nth(1)
            .and_then(|rest| rest.lines().next())
            .expect("page has a NAME section");
        assert!(
            name_line.starts_with("hashi\\-supervisor, supervisor \\- "),
            "{name_line}"
        );
    }

    #[test]
    fn unknown_shell_is_a_usage_error_listing_the_choices() {
        let err = write_asset("tcsh", &mut Vec::new()).expect_err("tcsh is not supported");
        assert_eq!(err.exit_code(), crate::error::EXIT_USAGE);
        assert!(err.to_string().contains("bash, zsh, fish"), "{err}");
    }
}

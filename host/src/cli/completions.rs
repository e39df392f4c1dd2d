//! `completions bash|zsh|fish|elvish|powershell` and `man [--out DIR]`: both generated from
//! the clap definitions themselves, so they can never disagree with what
//! the binary accepts.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::CommandFactory;
use clap_complete::Shell;

use super::{Cli, Finish, Output};

/// The name completions are registered for and man pages are called.
const BIN: &str = "claude-max-market";

#[derive(Debug, clap::Args)]
#[command(after_help = "Install, e.g.:\n  \
    claude-max-market completions bash > ~/.local/share/bash-completion/completions/claude-max-market\n  \
    claude-max-market completions zsh > \"${fpath[1]}/_claude-max-market\"\n  \
    claude-max-market completions fish > ~/.config/fish/completions/claude-max-market.fish")]
pub struct CompletionArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    shell: Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write claude-max-market.1 and one page per command (e.g.
    /// claude-max-market-policy-install.1) into DIR instead of printing the
    /// main page.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

pub fn completions(args: CompletionArgs) -> anyhow::Result<Finish> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), BIN, &mut script);
    let mut script = String::from_utf8(script)?;
    if args.shell == Shell::Bash {
        script = mend_bash(&script);
    }
    std::io::stdout().lock().write_all(script.as_bytes())?;
    Ok(Finish::Done)
}

/// clap_complete's bash script spells a hyphenated bin name one way where
/// it tracks the subcommand typed so far (`claude__max__market__subcmd__policy`)
/// and another in the case arms that complete it
/// (`claude__subcmd__max__subcmd__market__subcmd__policy`), so nothing after
/// a subcommand ever completes (clap-rs/clap#6421). The arms are respelled
/// the way the tracking spells them; once clap spells both alike, this
/// finds nothing to change.
fn mend_bash(script: &str) -> String {
    script.replace(&BIN.replace('-', "__subcmd__"), &BIN.replace('-', "__"))
}

pub fn man(args: ManArgs, out: &Output) -> anyhow::Result<Finish> {
    let mut command = Cli::command();
    // Building fills in each subcommand's display name
    // (claude-max-market-policy-install) and bin name
    // (claude-max-market policy install), which the pages use.
    command.build();
    let Some(dir) = args.out else {
        clap_mangen::Man::new(command).render(&mut std::io::stdout().lock())?;
        return Ok(Finish::Done);
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    write_pages(&command, &dir, &mut written)?;
    let summary = serde_json::json!({ "written": written });
    out.emit(&summary, |w| {
        writeln!(
            w,
            "wrote {} manual pages to {}",
            written.len(),
            dir.display()
        )
    })?;
    Ok(Finish::Done)
}

/// Writes the page for `command`, then one for each visible subcommand, as
/// `<display name>.1` (git and cargo name theirs the same way).
fn write_pages(
    command: &clap::Command,
    dir: &std::path::Path,
    written: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    let name = command
        .get_display_name()
        .unwrap_or(command.get_name())
        .replace(':', "-");
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut page)?;
    std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
    written.push(path);
    for sub in command
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        write_pages(sub, dir, written)?;
    }
    Ok(())
}

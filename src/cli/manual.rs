//! `cairn completions SHELL` and `cairn man --dir DIR`: shell completions (clap_complete)
//! and man pages (clap_mangen, one per command and subcommand, with each flag's
//! `CAIRN_*` variable) generated from the clap tree, so they list exactly the flags the
//! binary has. The internal commands a `cairn` process starts itself
//! (`__executor-lifeline`, `__evaluate-config`) are not in the tree, so neither shows.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

use super::Cli;

/// The completion script of `shell` for `cairn`.
pub fn completions(shell: Shell) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "cairn", &mut script);
    script
}

/// Writes `cairn.1`, `cairn-serve.1`, `cairn-store-serve.1`, … into `dir` (made if
/// missing): one page per visible command; returns the files written.
pub fn man_pages(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut root = Cli::command().disable_help_subcommand(true);
    root.build();
    let mut written = Vec::new();
    let mut stack = vec![root];
    while let Some(cmd) = stack.pop() {
        stack.extend(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
        let page = clap_mangen::Man::new(cmd);
        let path = page
            .generate_to(dir)
            .with_context(|| format!("writing {} into {}", page.get_filename(), dir.display()))?;
        written.push(path);
    }
    written.sort();
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bash_completions_offer_the_commands() {
        let script = String::from_utf8(completions(Shell::Bash)).expect("UTF-8");
        for word in ["serve", "executor", "completions", "--config", "--data-dir"] {
            assert!(script.contains(word), "no {word} in the bash completions");
        }
        assert!(!script.contains("lifeline"));
    }

    #[test]
    fn every_shell_gets_a_script() {
        for shell in [
            Shell::Bash,
            Shell::Zsh,
            Shell::Fish,
            Shell::Elvish,
            Shell::PowerShell,
        ] {
            assert!(!completions(shell).is_empty(), "{shell}");
        }
    }

    #[test]
    fn man_pages_are_written_for_every_command() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let written = man_pages(&dir.path().join("man1")).expect("man pages");
        let names: Vec<String> = written
            .iter()
            .map(|p| {
                p.file_name()
                    .expect("a name")
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        for page in [
            "cairn.1",
            "cairn-serve.1",
            "cairn-executor.1",
            "cairn-store-serve.1",
            "cairn-cert-issue.1",
        ] {
            assert!(names.iter().any(|n| n == page), "no {page} in {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("help")), "{names:?}");
        let serve = std::fs::read_to_string(dir.path().join("man1/cairn-serve.1")).expect("read");
        assert!(
            serve.contains("CAIRN_DATA_DIR"),
            "the page names the flags' variables"
        );
        assert!(serve.contains("config"));
    }
}

//! `cairn validate [DIR]`: checks a directory's pipeline config as a run would load it
//! (Jsonnet and Starlark evaluated for the checked-out branch) and prints its warnings and
//! errors with file, line and field.

use std::path::Path;

use super::direct::SetupError;
use crate::configfile;

/// `cairn validate [DIR]`: the config's errors with file, line and field; exit 2 if any.
pub fn validate(dir: &Path) -> anyhow::Result<u8> {
    let path = configfile::find_config(dir).ok_or_else(|| {
        anyhow::Error::new(SetupError(format!(
            "no pipeline in {}: add {}",
            dir.display(),
            configfile::config_files_list()
        )))
    })?;
    let rel = path
        .strip_prefix(dir)
        .unwrap_or(&path)
        .display()
        .to_string();
    let content = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::Error::new(SetupError(format!("{rel}: {e}"))))?;
    // Programs (Jsonnet, Starlark) are evaluated as for a run of the checked-out branch.
    let branch = super::snapshot::WorkTree::open(dir)
        .ok()
        .and_then(|t| t.branch())
        .unwrap_or_else(|| "main".into());
    let ctx = configfile::ConfigContext::new(Some(&branch), None, None, "");
    match configfile::load(&rel, &content, &ctx) {
        Ok(configfile::Parsed { config, warnings }) => {
            for warning in &warnings {
                errln!("warning: {warning}");
            }
            let tasks: usize = config.runs.iter().map(|r| r.tasks.len()).sum();
            outln!(
                "{}",
                ok_line(&rel, config.runs.len(), tasks, warnings.len())
            )?;
            Ok(0)
        }
        Err(errors) => {
            for line in errors.to_string().lines() {
                errln!("{line}");
            }
            errln!("{rel}: {} error(s)", errors.len());
            Ok(2)
        }
    }
}

/// The line of a valid config: its runs and tasks, and its warnings if any.
fn ok_line(rel: &str, runs: usize, tasks: usize, warnings: usize) -> String {
    let noted = match warnings {
        0 => String::new(),
        n => format!(", {n} warning(s)"),
    };
    format!("{rel}: ok ({runs} runs, {tasks} tasks{noted})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_line_counts_runs_and_tasks_and_notes_warnings_only_when_there_are_some() {
        assert_eq!(
            ok_line(".agola/config.yml", 2, 5, 0),
            ".agola/config.yml: ok (2 runs, 5 tasks)"
        );
        assert_eq!(
            ok_line("c.yml", 1, 1, 3),
            "c.yml: ok (1 runs, 1 tasks, 3 warning(s))"
        );
    }
}

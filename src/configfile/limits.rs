//! Cairn's limits on one config, far above what a real Agola config needs, so that a
//! small request cannot make the parser, the validator or the expansion costly (issue 11,
//! security review H4). Each is checked before the step it protects: the size before
//! parsing ([`super::MAX_CONFIG_SIZE`]), YAML aliases while loading (`yaml.rs`), the
//! counts of runs, tasks and steps on the loaded tree before decoding (`check_counts`),
//! the regexes of `when` clauses before each is compiled (`when.rs`). A problem found
//! here is a [`ConfigError`] with [`ConfigError::limit`] set: the API refuses the request
//! (400) instead of recording a setuperror run.

use saphyr::MarkedYamlOwned;

use super::error::ConfigError;
use super::yaml::Node;

/// Runs in one config.
pub const MAX_RUNS: usize = 100;
/// Tasks in one config, all runs together (the dependency checks are quadratic in the
/// tasks of a run at worst, in bits: 1,000 tasks are 125 KB).
pub const MAX_TASKS: usize = 1_000;
/// Steps in one config, all tasks together.
pub const MAX_STEPS: usize = 10_000;
/// Regular expressions (`/…/`, `#…#`) in the `when` clauses of one config.
pub const MAX_REGEXES: usize = 100;
/// Bytes of all the regular expressions' patterns of one config together.
pub const MAX_REGEX_BYTES: usize = 16 * 1024;
/// Compiled size of one regular expression (`regex::RegexBuilder::size_limit`), and the
/// size of its lazy DFA cache (`dfa_size_limit`).
pub const REGEX_SIZE_LIMIT: usize = 256 * 1024;
/// YAML aliases (`*name`) in one config.
pub const MAX_ALIASES: usize = 1_000;
/// What all the aliases of one config may add to it once expanded, in bytes of scalar
/// text plus [`ALIAS_NODE_COST`] per node: each alias clones its anchor's subtree.
pub const MAX_ALIAS_EXPANSION: usize = 1024 * 1024;
/// The weight of one node in [`MAX_ALIAS_EXPANSION`] (about its size in memory).
pub const ALIAS_NODE_COST: usize = 64;
/// Problems reported for one config; the rest are counted in a last line.
pub const MAX_REPORTED_ERRORS: usize = 200;

/// Refuses a config with more than [`MAX_RUNS`] runs, [`MAX_TASKS`] tasks or
/// [`MAX_STEPS`] steps, at the first one beyond the limit; walks only the lists it
/// counts, and stops there. Keys are matched regardless of case, as the decoder does.
pub(super) fn check_counts(file: &str, root: &MarkedYamlOwned) -> Result<(), ConfigError> {
    let over = |node: &Node<'_>, what: &str, limit: usize| {
        ConfigError::over_limit(
            file,
            node.line(),
            node.column(),
            node.path.clone(),
            format!("more than {limit} {what} in one config (Cairn's limit)"),
        )
    };
    let Some(runs) = field(&Node::root(root), "runs").and_then(|n| n.items()) else {
        return Ok(());
    };
    if let Some(run) = runs.get(MAX_RUNS) {
        return Err(over(run, "runs", MAX_RUNS));
    }
    let (mut tasks, mut steps) = (0usize, 0usize);
    for run in &runs {
        let Some(list) = field(run, "tasks").and_then(|n| n.items()) else {
            continue;
        };
        if let Some(task) = list.get(MAX_TASKS - tasks) {
            return Err(over(task, "tasks", MAX_TASKS));
        }
        tasks += list.len();
        for task in &list {
            let Some(list) = field(task, "steps").and_then(|n| n.items()) else {
                continue;
            };
            if let Some(step) = list.get(MAX_STEPS - steps) {
                return Err(over(step, "steps", MAX_STEPS));
            }
            steps += list.len();
        }
    }
    Ok(())
}

/// The value of `key` (any case) in a map node.
fn field<'a>(node: &Node<'a>, key: &str) -> Option<Node<'a>> {
    node.entries()?
        .into_iter()
        .find(|e| e.key.is_some_and(|k| k.eq_ignore_ascii_case(key)))
        .map(|e| e.value)
}

/// Keeps the first [`MAX_REPORTED_ERRORS`] of `errors` (already in document order) and
/// says how many more there were.
pub(super) fn truncate_errors(file: &str, errors: &mut Vec<ConfigError>) {
    if errors.len() <= MAX_REPORTED_ERRORS {
        return;
    }
    let more = errors.len() - MAX_REPORTED_ERRORS;
    let limit = errors.iter().any(|e| e.limit);
    errors.truncate(MAX_REPORTED_ERRORS);
    let mut last = ConfigError::new(file, 0, 0, "", format!("… and {more} more problems"));
    last.limit = limit;
    errors.push(last);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configfile::parse;

    /// `runs` runs of `tasks` tasks of `steps` steps each.
    fn config(runs: usize, tasks: usize, steps: usize) -> String {
        let mut yaml = String::from("runs:\n");
        for r in 0..runs {
            yaml.push_str(&format!("  - name: r{r}\n    tasks:\n"));
            for t in 0..tasks {
                yaml.push_str(&format!(
                    "      - name: t{t}\n        runtime: {{ containers: [ {{ image: a }} ] }}\n        steps:\n"
                ));
                for _ in 0..steps {
                    yaml.push_str("          - run: x\n");
                }
            }
        }
        yaml
    }

    fn limit_error(yaml: &str) -> ConfigError {
        let errors = parse("c.yml", yaml).expect_err("over a limit");
        assert_eq!(errors.len(), 1, "{errors}");
        assert!(errors.over_limit(), "{errors}");
        errors.0[0].clone()
    }

    #[test]
    fn runs_tasks_and_steps_are_counted_across_the_config() {
        parse("c.yml", &config(MAX_RUNS, 1, 1)).expect("at the run limit");
        let e = limit_error(&config(MAX_RUNS + 1, 1, 1));
        assert_eq!(e.field, "runs[100]");
        assert_eq!(
            e.message,
            "more than 100 runs in one config (Cairn's limit)"
        );

        parse("c.yml", &config(4, MAX_TASKS / 4, 1)).expect("at the task limit");
        let e = limit_error(&config(5, MAX_TASKS / 4, 1));
        assert_eq!(e.field, "runs[4].tasks[0]");
        assert_eq!(
            e.message,
            "more than 1000 tasks in one config (Cairn's limit)"
        );
        assert!(e.line > 1);

        parse("c.yml", &config(2, 50, 100)).expect("at the step limit");
        let e = limit_error(&config(2, 51, 100));
        assert_eq!(e.field, "runs[1].tasks[49].steps[0]");
        assert_eq!(
            e.message,
            "more than 10000 steps in one config (Cairn's limit)"
        );
    }

    #[test]
    fn a_16k_task_chain_is_refused_at_once() {
        let mut yaml = String::from("runs:\n  - name: ci\n    tasks:\n");
        for i in 0..16_000 {
            let depends = if i == 0 {
                String::new()
            } else {
                format!("t{}", i - 1)
            };
            yaml.push_str(&format!("      - {{ name: t{i}, depends: [{depends}] }}\n"));
        }
        let started = std::time::Instant::now();
        let e = limit_error(&yaml);
        assert_eq!(e.field, "runs[0].tasks[1000]");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn many_errors_are_reported_up_to_a_limit() {
        let mut yaml = String::from(
            "runs:\n  - name: ci\n    tasks:\n      - name: t\n        runtime: { containers: [ { image: a } ] }\n        depends: [",
        );
        for i in 0..500 {
            yaml.push_str(&format!("x{i}, "));
        }
        yaml.push_str("]\n");
        let errors = parse("c.yml", &yaml).expect_err("unknown tasks");
        assert_eq!(errors.len(), MAX_REPORTED_ERRORS + 1);
        assert!(!errors.over_limit());
        assert_eq!(
            errors.0[MAX_REPORTED_ERRORS].message,
            "… and 300 more problems"
        );
    }
}

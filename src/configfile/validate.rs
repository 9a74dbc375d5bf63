//! Checks across nodes of a decoded [`Config`]: unique run names, unique task names in
//! a run, dependencies on existing tasks, no duplicate dependency, no dependency cycle
//! (named: `a -> b -> a`), and Agola's rule against redundant dependencies (a task must
//! not depend on a task that one of its other dependencies already depends on).

use std::collections::{BTreeSet, HashMap};

use super::error::ConfigError;
use super::model::{Config, ConfigRun};

pub(super) fn validate(config: &Config) -> Vec<ConfigError> {
    let file = config.file.as_str();
    let mut errors = Vec::new();
    let mut runs: HashMap<&str, usize> = HashMap::new();
    for run in &config.runs {
        if !run.name.is_empty() {
            if let Some(line) = runs.get(run.name.as_str()) {
                errors.push(run.loc.error(
                    file,
                    format!("duplicate run name \"{}\" (first at line {line})", run.name),
                ));
            } else {
                runs.insert(&run.name, run.loc.line);
            }
        }
        validate_run(file, run, &mut errors);
    }
    errors
}

fn validate_run(file: &str, run: &ConfigRun, errors: &mut Vec<ConfigError>) {
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, task) in run.tasks.iter().enumerate() {
        if task.name.is_empty() {
            continue;
        }
        if let Some(&first) = index.get(task.name.as_str()) {
            errors.push(task.loc.error(
                file,
                format!(
                    "duplicate task name \"{}\" (first at line {})",
                    task.name, run.tasks[first].loc.line
                ),
            ));
        } else {
            index.insert(&task.name, i);
        }
    }

    // Edges by task index, keeping only dependencies on known tasks.
    let mut parents: Vec<Vec<usize>> = vec![Vec::new(); run.tasks.len()];
    let mut broken = false;
    for (i, task) in run.tasks.iter().enumerate() {
        let mut seen = BTreeSet::new();
        for dep in &task.depends {
            match index.get(dep.task.as_str()) {
                None => {
                    broken = true;
                    errors.push(
                        dep.loc
                            .error(file, format!("unknown task \"{}\"", dep.task)),
                    );
                }
                Some(&p) if !seen.insert(p) => {
                    errors.push(
                        dep.loc
                            .error(file, format!("duplicate dependency on \"{}\"", dep.task)),
                    );
                }
                Some(&p) => parents[i].push(p),
            }
        }
    }

    let cycles = cycles(&parents);
    for cycle in &cycles {
        let names: Vec<&str> = cycle.iter().map(|&i| run.tasks[i].name.as_str()).collect();
        let first = &run.tasks[cycle[0]];
        let closing = first
            .depends
            .iter()
            .find(|d| d.task == run.tasks[cycle[1]].name)
            .map_or(&first.loc, |d| &d.loc);
        errors.push(closing.error(file, format!("dependency cycle: {}", names.join(" -> "))));
    }
    if !cycles.is_empty() || broken {
        return;
    }

    let ancestors = ancestors(&parents);
    let mut reached = Bits::new(run.tasks.len());
    for (i, task) in run.tasks.iter().enumerate() {
        // What the dependencies of `i` depend on: a dependency in there is redundant
        // (never on itself: the graph is acyclic).
        reached.clear();
        for &other in &parents[i] {
            reached.union(&ancestors[other]);
        }
        for dep in &task.depends {
            let Some(&p) = index.get(dep.task.as_str()) else {
                continue;
            };
            if !reached.contains(p) {
                continue;
            }
            let through = parents[i]
                .iter()
                .find(|&&other| other != p && ancestors[other].contains(p));
            if let Some(&other) = through {
                errors.push(dep.loc.error(
                    file,
                    format!(
                        "redundant dependency on \"{}\": \"{}\", another dependency of \"{}\", already depends on it",
                        dep.task, run.tasks[other].name, task.name
                    ),
                ));
            }
        }
    }
}

/// Each cycle found by a depth-first walk along dependency edges, as the task indexes
/// from the task that closes it back to itself (`[a, b, a]`).
fn cycles(parents: &[Vec<usize>]) -> Vec<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut marks = vec![Mark::New; parents.len()];
    let mut found = Vec::new();
    for start in 0..parents.len() {
        if marks[start] != Mark::New {
            continue;
        }
        // (node, next edge to follow)
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        marks[start] = Mark::OnPath;
        while let Some(&mut (node, ref mut edge)) = stack.last_mut() {
            if let Some(&next) = parents[node].get(*edge) {
                *edge += 1;
                match marks[next] {
                    Mark::New => {
                        marks[next] = Mark::OnPath;
                        stack.push((next, 0));
                    }
                    Mark::OnPath => {
                        let from = stack.iter().position(|&(n, _)| n == next).unwrap_or(0);
                        let mut cycle: Vec<usize> = stack[from..].iter().map(|&(n, _)| n).collect();
                        cycle.push(next);
                        found.push(cycle);
                    }
                    Mark::Done => {}
                }
            } else {
                marks[node] = Mark::Done;
                stack.pop();
            }
        }
    }
    found
}

/// Every task's ancestors (parents, their parents, …) as bitsets, computed in
/// topological order (Kahn's algorithm), without recursion: O(tasks × (tasks + edges) / 64)
/// time and tasks² bits, bounded by [`super::limits::MAX_TASKS`]. The graph must be
/// acyclic.
fn ancestors(parents: &[Vec<usize>]) -> Vec<Bits> {
    let n = parents.len();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut waiting: Vec<usize> = vec![0; n];
    for (i, ps) in parents.iter().enumerate() {
        waiting[i] = ps.len();
        for &p in ps {
            children[p].push(i);
        }
    }
    let mut ready: Vec<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
    let mut all: Vec<Bits> = (0..n).map(|_| Bits::new(n)).collect();
    while let Some(i) = ready.pop() {
        let mut mine = Bits::new(n);
        for &p in &parents[i] {
            mine.union(&all[p]);
            mine.insert(p);
        }
        all[i] = mine;
        for &c in &children[i] {
            waiting[c] -= 1;
            if waiting[c] == 0 {
                ready.push(c);
            }
        }
    }
    all
}

/// A fixed-size set of task indexes.
#[derive(Clone)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }

    fn insert(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn contains(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    fn union(&mut self, other: &Bits) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= b;
        }
    }

    fn clear(&mut self) {
        self.0.iter_mut().for_each(|w| *w = 0);
    }
}

#[cfg(test)]
mod tests {
    use crate::configfile::{ConfigError, parse};

    /// A run named `ci` whose tasks are `(name, depends)`, one per line from line 4.
    fn run(tasks: &[(&str, &str)]) -> String {
        let mut yaml = String::from("runs:\n  - name: ci\n    tasks:\n");
        for (name, depends) in tasks {
            yaml.push_str(&format!(
                "      - {{ name: {name}, runtime: {{ containers: [ {{ image: a }} ] }}, depends: [{depends}] }}\n"
            ));
        }
        yaml
    }

    fn errors(yaml: &str) -> Vec<ConfigError> {
        parse("c.yml", yaml).expect_err("invalid").0
    }

    #[test]
    fn run_names_are_unique() {
        let one =
            "  - name: ci\n    tasks: [ { name: t, runtime: { containers: [ { image: a } ] } } ]\n";
        let e = errors(&format!("runs:\n{one}{one}"));
        assert_eq!(e.len(), 1);
        assert_eq!(
            (e[0].line, e[0].column, e[0].field.as_str()),
            (4, 11, "runs[1] \"ci\" › name")
        );
        assert_eq!(e[0].message, "duplicate run name \"ci\" (first at line 2)");
    }

    #[test]
    fn task_names_are_unique_in_a_run() {
        let e = errors(&run(&[("a", ""), ("b", ""), ("a", "")]));
        assert_eq!(e.len(), 1);
        assert_eq!(
            (e[0].line, e[0].field.as_str()),
            (6, "runs[0] \"ci\" › tasks[2] \"a\" › name")
        );
        assert_eq!(e[0].message, "duplicate task name \"a\" (first at line 4)");
    }

    #[test]
    fn a_dependency_on_a_missing_task_is_an_error_at_the_entry() {
        let e = errors(&run(&[("build", ""), ("test", "buidl")]));
        assert_eq!(e.len(), 1);
        assert_eq!(
            e[0].to_string(),
            "c.yml:5:76: runs[0] \"ci\" › tasks[1] \"test\" › depends[0]: unknown task \"buidl\""
        );
    }

    #[test]
    fn duplicate_dependencies_are_errors() {
        let e = errors(&run(&[
            ("build", ""),
            ("test", "build, {build: [on_failure]}"),
        ]));
        assert_eq!(e.len(), 1);
        assert_eq!(
            e[0].field,
            "runs[0] \"ci\" › tasks[1] \"test\" › depends[1]"
        );
        assert_eq!(e[0].message, "duplicate dependency on \"build\"");
    }

    #[test]
    fn cycles_are_named() {
        let e = errors(&run(&[("a", "c"), ("b", "a"), ("c", "b")]));
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].message, "dependency cycle: a -> c -> b -> a");
        assert_eq!(
            (e[0].line, e[0].field.as_str()),
            (4, "runs[0] \"ci\" › tasks[0] \"a\" › depends[0]")
        );
        let e = errors(&run(&[("a", "a")]));
        assert_eq!(e[0].message, "dependency cycle: a -> a");
    }

    #[test]
    fn redundant_dependencies_are_refused() {
        // deploy depends on build, and on test which already depends on build.
        let e = errors(&run(&[
            ("build", ""),
            ("test", "build"),
            ("deploy", "build, test"),
        ]));
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(
            e[0].field,
            "runs[0] \"ci\" › tasks[2] \"deploy\" › depends[0]"
        );
        assert_eq!(
            e[0].message,
            "redundant dependency on \"build\": \"test\", another dependency of \"deploy\", already depends on it"
        );
        // Also through a longer chain.
        let e = errors(&run(&[("a", ""), ("b", "a"), ("c", "b"), ("d", "c, a")]));
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].field, "runs[0] \"ci\" › tasks[3] \"d\" › depends[1]");
    }

    #[test]
    fn a_diamond_is_fine() {
        parse(
            "c.yml",
            &run(&[("a", ""), ("b", "a"), ("c", "a"), ("d", "b, c")]),
        )
        .expect("a diamond has no redundant edge");
    }

    #[test]
    fn a_chain_at_the_task_limit_validates_fast() {
        let names: Vec<String> = (0..super::super::limits::MAX_TASKS)
            .map(|i| format!("t{i}"))
            .collect();
        let tasks: Vec<(&str, &str)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), if i == 0 { "" } else { names[i - 1].as_str() }))
            .collect();
        let mut yaml = run(&tasks);
        let started = std::time::Instant::now();
        parse("c.yml", &yaml).expect("a long chain is fine");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // The last task also depends on the first: redundant through the whole chain.
        yaml = yaml.replace("depends: [t998]", "depends: [t998, t0]");
        let e = errors(&yaml);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(
            e[0].message,
            "redundant dependency on \"t0\": \"t998\", another dependency of \"t999\", already depends on it"
        );
    }
}

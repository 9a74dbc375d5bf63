//! Cairn's limits on one config, far above what a real Agola config needs, so that a
//! small request cannot make the parser, the validator or the expansion costly (issue 11,
//! security review H4). Each is checked before the step it protects: the size before
//! parsing ([`super::MAX_CONFIG_SIZE`]), YAML aliases while loading (`yaml.rs`), the
//! counts of runs, tasks and steps on the parser's events before the tree holds them
//! (`Counter`), the regexes of `when` clauses before each is compiled (`when.rs`). A
//! problem found here is a [`ConfigError`] with [`ConfigError::limit`] set: the API
//! refuses the request (400) instead of recording a setuperror run.

use std::collections::HashMap;

use saphyr_parser::{Event, Span};

use super::error::ConfigError;
use super::yaml::{Flow, Watch, child_path};

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

/// The places that count, as the decoder reads a config: the document (a map), its `runs`
/// (a list), a run (a map), its `tasks` (a list), a task (a map), its `steps` (a list).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Root,
    Runs,
    Run,
    Tasks,
    Task,
    Steps,
}

/// The counted keys (in any case; only the first of a map counts), the role of the map
/// that holds each and the role of its value.
const KEYS: [(&str, Role, Role); 3] = [
    ("runs", Role::Root, Role::Runs),
    ("tasks", Role::Run, Role::Tasks),
    ("steps", Role::Task, Role::Steps),
];

impl Role {
    fn is_list(self) -> bool {
        matches!(self, Role::Runs | Role::Tasks | Role::Steps)
    }

    /// The role of the items of a list in this role (steps are counted, not entered).
    fn item(self) -> Option<Role> {
        match self {
            Role::Runs => Some(Role::Run),
            Role::Tasks => Some(Role::Task),
            _ => None,
        }
    }
}

/// Runs, tasks and steps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    runs: usize,
    tasks: usize,
    steps: usize,
}

impl Counts {
    /// What one item of a list in `role` is.
    fn item(role: Role) -> Counts {
        let one = |r: Role| usize::from(r == role);
        Counts {
            runs: one(Role::Runs),
            tasks: one(Role::Tasks),
            steps: one(Role::Steps),
        }
    }

    fn add(&mut self, other: Counts) {
        self.runs = self.runs.saturating_add(other.runs);
        self.tasks = self.tasks.saturating_add(other.tasks);
        self.steps = self.steps.saturating_add(other.steps);
    }
}

/// What a node adds to the counts in each role it may stand in, indexed by
/// `Role as usize`: an alias of it stands wherever the alias does.
type Summary = [Counts; 6];

/// An anchored node that matters to its aliases: its summary, and its text when it is a
/// scalar that spells a counted key.
struct Anchor {
    summary: Summary,
    key: Option<String>,
}

/// A collection being read.
struct Frame {
    map: bool,
    anchor: usize,
    /// Its role in the count and its field path, when it counts.
    counted: Option<(Role, String)>,
    summary: Summary,
    /// Items of a list; keys and values of a map.
    len: usize,
    /// Map: the counted keys met so far (only the first of each counts).
    seen: [bool; 3],
    /// Map: the counted key (index in `KEYS`, text as written) whose value comes next.
    pending: Option<(usize, String)>,
}

/// Counts the runs, tasks and steps of a config on the parser's events, before the tree
/// holds them, as the decoder reads the config: the `runs` list of the document, the
/// `tasks` list of each run, the `steps` list of each task; an alias counts what its
/// anchor holds. At the first item beyond a limit the loader gets nothing more (the tree
/// never grows past it); the events are then only counted, to the end of the `runs`
/// list, so that the problem named is the one of the loaded tree's walk: the runs limit
/// first, then run by run its tasks before its steps. An item beyond a limit that an
/// alias brings is reported at the alias. Memory: one frame per open collection and one
/// summary per anchor that holds counted lists.
pub(super) struct Counter<'f> {
    file: &'f str,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Anchor>,
    total: Counts,
    /// The first item beyond the runs limit.
    over_runs: Option<ConfigError>,
    /// The first items beyond the tasks and the steps limits, each with the number of
    /// runs met before it ends (its run).
    over_tasks: Option<(usize, ConfigError)>,
    over_steps: Option<(usize, ConfigError)>,
    /// Nothing more counts: the `runs` list or the first document is over.
    ended: bool,
}

impl<'f> Counter<'f> {
    /// A counter whose errors name `file`.
    pub(super) fn new(file: &'f str) -> Counter<'f> {
        Counter {
            file,
            stack: Vec::new(),
            anchors: HashMap::new(),
            total: Counts::default(),
            over_runs: None,
            over_tasks: None,
            over_steps: None,
            ended: false,
        }
    }

    fn refused(&self) -> bool {
        self.over_runs.is_some() || self.over_tasks.is_some() || self.over_steps.is_some()
    }

    /// Adds `counts`, found at `span` (field `path`), to the totals, and notes the first
    /// item beyond each limit.
    fn add(&mut self, counts: Counts, span: Span, path: &str) {
        let before = self.total;
        self.total.add(counts);
        let file = self.file;
        let over = |what: &str, limit: usize| {
            ConfigError::over_limit(
                file,
                span.start.line(),
                span.start.col() + 1,
                path,
                format!("more than {limit} {what} in one config (Cairn's limit)"),
            )
        };
        if before.runs <= MAX_RUNS && self.total.runs > MAX_RUNS {
            self.over_runs = Some(over("runs", MAX_RUNS));
        }
        if before.tasks <= MAX_TASKS && self.total.tasks > MAX_TASKS {
            self.over_tasks = Some((self.total.runs, over("tasks", MAX_TASKS)));
        }
        if before.steps <= MAX_STEPS && self.total.steps > MAX_STEPS {
            self.over_steps = Some((self.total.runs, over("steps", MAX_STEPS)));
        }
    }

    /// A node starts at `span`: counts it if it is an item of a counted list; its role
    /// and field path if it stands where things are counted.
    fn enter(&mut self, span: Span) -> Option<(Role, String)> {
        let Some(parent) = self.stack.last() else {
            return Some((Role::Root, String::new()));
        };
        let (role, path) = parent.counted.as_ref()?;
        if parent.map {
            if parent.len % 2 == 0 {
                return None;
            }
            let (i, key) = parent.pending.as_ref()?;
            let (_, holder, list) = KEYS[*i];
            return (holder == *role).then(|| (list, child_path(path, key)));
        }
        let role = *role;
        let path = format!("{path}[{}]", parent.len);
        self.add(Counts::item(role), span, &path);
        role.item().map(|item| (item, path))
    }

    /// A node of `summary` ends; `text` is a scalar's.
    fn complete(&mut self, summary: Summary, anchor: usize, text: Option<&str>) {
        let key = text.and_then(|t| {
            KEYS.iter()
                .position(|(name, _, _)| t.eq_ignore_ascii_case(name))
                .map(|i| (i, t))
        });
        if anchor > 0 && (key.is_some() || summary != Summary::default()) {
            let key = key.map(|(_, t)| t.to_string());
            self.anchors.insert(anchor, Anchor { summary, key });
        }
        let Some(parent) = self.stack.last_mut() else {
            return;
        };
        if !parent.map {
            for list in [Role::Runs, Role::Tasks, Role::Steps] {
                let mut counts = Counts::item(list);
                if let Some(item) = list.item() {
                    counts.add(summary[item as usize]);
                }
                parent.summary[list as usize].add(counts);
            }
        } else if parent.len % 2 == 0 {
            parent.pending = key.and_then(|(i, t)| {
                let first = !std::mem::replace(&mut parent.seen[i], true);
                first.then(|| (i, t.to_string()))
            });
        } else if let Some((i, _)) = parent.pending.take() {
            let (_, holder, list) = KEYS[i];
            parent.summary[holder as usize] = summary[list as usize];
        }
        parent.len += 1;
    }

    fn count(&mut self, ev: &Event<'_>, span: Span) {
        match ev {
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                let map = matches!(ev, Event::MappingStart(..));
                let counted = self.enter(span).filter(|(role, _)| role.is_list() != map);
                self.stack.push(Frame {
                    map,
                    anchor: *anchor,
                    counted,
                    summary: Summary::default(),
                    len: 0,
                    seen: [false; 3],
                    pending: None,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = self.stack.pop() else {
                    return;
                };
                if matches!(frame.counted, Some((Role::Runs, _))) {
                    self.ended = true;
                }
                self.complete(frame.summary, frame.anchor, None);
            }
            Event::Scalar(text, _, anchor, _) => {
                self.enter(span);
                self.complete(Summary::default(), *anchor, Some(text));
            }
            Event::Alias(id) => {
                let slot = self.enter(span);
                let (summary, key) = match self.anchors.get(id) {
                    Some(a) => (a.summary, a.key.clone()),
                    None => (Summary::default(), None),
                };
                if let Some((role, path)) = slot {
                    self.add(summary[role as usize], span, &path);
                }
                self.complete(summary, 0, key.as_deref());
            }
            Event::DocumentEnd => self.ended = true,
            _ => {}
        }
    }
}

impl Watch for Counter<'_> {
    fn on_event(&mut self, ev: &Event<'_>, span: Span) -> Flow {
        if !self.ended {
            self.count(ev, span);
        }
        if self.over_runs.is_some() || (self.ended && self.refused()) {
            Flow::Stop
        } else if self.refused() {
            Flow::Skip
        } else {
            Flow::Load
        }
    }

    fn error(&mut self) -> Option<ConfigError> {
        if let Some(e) = self.over_runs.take() {
            return Some(e);
        }
        match (self.over_tasks.take(), self.over_steps.take()) {
            (Some((tasks_run, tasks)), Some((steps_run, steps))) => {
                Some(if tasks_run <= steps_run { tasks } else { steps })
            }
            (tasks, steps) => tasks.or(steps).map(|(_, e)| e),
        }
    }
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
        let yaml = chain(16_000);
        let started = std::time::Instant::now();
        let e = limit_error(&yaml);
        assert_eq!(e.field, "runs[0].tasks[1000]");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    /// The chain of the review (H4.3), 16,000 tasks each depending on the previous one.
    fn chain(tasks: usize) -> String {
        let mut yaml = String::from("runs:\n  - name: ci\n    tasks:\n");
        for i in 0..tasks {
            let depends = if i == 0 {
                String::new()
            } else {
                format!("t{}", i - 1)
            };
            yaml.push_str(&format!("      - {{ name: t{i}, depends: [{depends}] }}\n"));
        }
        yaml
    }

    /// The counter, and what the loader got of the events it saw.
    struct Spy<'f> {
        counter: Counter<'f>,
        seen: usize,
        loaded: usize,
    }

    impl Watch for Spy<'_> {
        fn on_event(&mut self, ev: &Event<'_>, span: Span) -> Flow {
            self.seen += 1;
            let flow = self.counter.on_event(ev, span);
            if matches!(flow, Flow::Load) {
                self.loaded += 1;
            }
            flow
        }
        fn error(&mut self) -> Option<ConfigError> {
            self.counter.error()
        }
    }

    #[test]
    fn the_tree_stops_at_the_first_task_beyond_the_limit() {
        let yaml = chain(16_000);
        let mut spy = Spy {
            counter: Counter::new("c.yml"),
            seen: 0,
            loaded: 0,
        };
        let e = crate::configfile::yaml::load("c.yml", &yaml, &mut spy).expect_err("refused");
        assert_eq!(e.field, "runs[0].tasks[1000]");
        assert_eq!((e.line, e.column), (1004, 9));
        assert!(e.limit);
        // A task is 8 events (a map and its end, two keys, a name, a list, its item and
        // its end): the loader got the first 1,000 tasks and nothing after; the counter
        // read on to the end of the runs list.
        assert!(spy.loaded < 1_000 * 8 + 20, "{} events loaded", spy.loaded);
        assert!(spy.seen > 16_000 * 8, "{} events seen", spy.seen);
    }

    #[test]
    fn a_config_is_refused_at_the_limit_whatever_follows() {
        // Invalid YAML within the runs list, after the 1,001st task: read up to it, and
        // the limit is the problem reported.
        let mut yaml = chain(1_001);
        yaml.push_str("      - { name: [unclosed\n");
        let e = limit_error(&yaml);
        assert_eq!(e.field, "runs[0].tasks[1000]");
        assert_eq!(e.line, 1004);
        // After the runs list: never read.
        let mut yaml = chain(1_001);
        yaml.push_str("other: [unclosed\n  : : :\n");
        let e = limit_error(&yaml);
        assert_eq!(e.field, "runs[0].tasks[1000]");
        assert_eq!(
            e.message,
            "more than 1000 tasks in one config (Cairn's limit)"
        );
        // At the limit, the same invalid YAML is the problem.
        let mut yaml = chain(1_000);
        yaml.push_str("other: [unclosed\n");
        let errors = parse("c.yml", &yaml).expect_err("invalid");
        assert!(!errors.over_limit(), "{errors}");
        assert!(errors.0[0].message.starts_with("invalid YAML"), "{errors}");
    }

    #[test]
    fn the_runs_limit_is_named_before_the_tasks_and_tasks_before_steps() {
        // 101 runs of 20 tasks: the 1,001st task comes first, the runs limit is named.
        let e = limit_error(&config(MAX_RUNS + 1, 20, 1));
        assert_eq!(e.field, "runs[100]");
        // One run: its first task has 10,001 steps, and it has 1,001 tasks.
        let e = limit_error(&config(1, 1, MAX_STEPS + 1).replace(
            "    tasks:\n",
            &format!("    tasks:\n{}", "      - name: x\n".repeat(MAX_TASKS)),
        ));
        assert_eq!(e.field, "runs[0].tasks[1000]");
        // Steps beyond the limit in the first run, tasks in the second: the steps.
        let mut yaml = config(1, 1, MAX_STEPS + 1);
        yaml.push_str(&format!(
            "  - name: second\n    tasks:\n{}",
            "      - name: x\n".repeat(MAX_TASKS)
        ));
        let e = limit_error(&yaml);
        assert_eq!(e.field, "runs[0].tasks[0].steps[10000]");
    }

    #[test]
    fn aliases_count_what_they_clone() {
        let task = "{ name: t, runtime: { containers: [ { image: a } ] }, steps: [ { run: x } ] }";
        let tasks = |n: usize| vec![task; n].join(", ");
        // A list of 600 tasks, used again by a second run: 1,200 tasks.
        let yaml = format!(
            "runs:\n  - name: a\n    tasks: &t [{}]\n  - name: b\n    tasks: *t\n",
            tasks(600)
        );
        let e = limit_error(&yaml);
        assert_eq!(e.field, "runs[1].tasks");
        assert_eq!((e.line, e.column), (5, 12));
        // A task used as an item counts as one, with its steps.
        let yaml = format!(
            "runs:\n  - name: a\n    tasks: [ &t {task}, {} ]\n",
            vec!["*t"; MAX_TASKS].join(", ")
        );
        let e = limit_error(&yaml);
        assert_eq!(e.field, "runs[0].tasks[1000]");
        // A key spelled by an alias.
        let yaml = format!(
            "x: &k runs\n*k : [{}]\n",
            vec!["{ name: r }"; MAX_RUNS + 1].join(", ")
        );
        let e = limit_error(&yaml);
        assert_eq!(e.field, "runs[100]");
        // Within the limits, aliases change nothing.
        let yaml = format!(
            "runs:\n  - name: a\n    tasks: &t [{}]\n  - name: b\n    tasks: *t\n",
            tasks(2)
        );
        let errors = parse("c.yml", &yaml).expect_err("duplicate task names");
        assert!(!errors.over_limit(), "{errors}");
    }

    #[test]
    fn a_16k_task_chain_in_json_is_refused_at_once() {
        let mut json = String::from("{\"runs\": [{\"name\": \"ci\", \"tasks\": [\n");
        for i in 0..16_000 {
            let depends = if i == 0 {
                String::new()
            } else {
                format!("\"t{}\"", i - 1)
            };
            let comma = if i == 0 { "" } else { "," };
            json.push_str(&format!(
                "{comma}{{\"name\": \"t{i}\", \"depends\": [{depends}]}}\n"
            ));
        }
        json.push_str("]}]}\n");
        assert!(
            json.len() < crate::configfile::MAX_CONFIG_SIZE,
            "{}",
            json.len()
        );
        let started = std::time::Instant::now();
        let errors = parse("c.json", &json).expect_err("over a limit");
        assert_eq!(errors.len(), 1, "{errors}");
        let e = &errors.0[0];
        assert!(e.limit);
        assert_eq!(e.field, "runs[0].tasks[1000]");
        assert_eq!((e.line, e.column), (1002, 2));
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

//! Executor-side markers: the step script every task of the chaos pipeline runs, and the
//! pure check of what it wrote. Each execution of a task's marker step appends `start
//! <run> <task> <token> <ns> <dir>` to `<marks>/<run>/<task>` before its work and `end
//! <run> <task> <token> <ns>` after it (the token is the step's pid and the process's
//! start time, unique on the host; `<ns>` the wall clock, `<dir>` its working directory,
//! which names the executor, for the report of a violation). An attempt killed with its executor shows as a start without an end. Before
//! it starts, an execution looks at every earlier unended attempt of the same task: if
//! that process is still alive (same pid, same start time, not a zombie) the two run at
//! once, and it appends `overlap <run> <task> <token> <other token>`.

use std::path::Path;

/// The marker step: `sh step.sh TASK SECONDS [FILE LINE]` — markers, then its log lines
/// ([`expected_log`]), checking that FILE holds LINE when given, sleeping SECONDS in the
/// middle. Needs `CHAOS_MARKS` and `CAIRN_RUN_ID` in its environment.
pub const STEP_SCRIPT: &str = r#"set -e
task=$1; secs=$2; file=${3:-}; want=${4:-}
dir="$CHAOS_MARKS/$CAIRN_RUN_ID"
mkdir -p "$dir"
f="$dir/$task"
me="$$-$(cut -d' ' -f22 /proc/$$/stat)"
if [ -f "$f" ]; then
  while read -r kind run t tok rest; do
    [ "$kind" = start ] || continue
    if grep -q "^end $run $t $tok " "$f"; then continue; fi
    set -- $(cat "/proc/${tok%%-*}/stat" 2>/dev/null || true)
    if [ $# -ge 22 ] && [ "$3" != Z ] && [ "${22}" = "${tok#*-}" ]; then
      echo "overlap $CAIRN_RUN_ID $task $me $tok" >> "$f"
    fi
  done < "$f"
fi
echo "start $CAIRN_RUN_ID $task $me $(date +%s%N) $PWD" >> "$f"
echo "chaos $task begin $CAIRN_RUN_ID"
if [ -n "$file" ]; then grep -qx "$want" "$file"; echo "chaos $task found $want"; fi
i=1
while [ $i -le 20 ]; do echo "chaos $task line $i"; i=$((i + 1)); done
sleep "$secs"
echo "chaos $task end $CAIRN_RUN_ID"
echo "end $CAIRN_RUN_ID $task $me $(date +%s%N)" >> "$f"
"#;

/// The whole log of a marker step of `task` in run `run` (`found`: the line it checked).
pub fn expected_log(run: &str, task: &str, found: Option<&str>) -> String {
    let mut log = format!("chaos {task} begin {run}\n");
    if let Some(line) = found {
        log.push_str(&format!("chaos {task} found {line}\n"));
    }
    for i in 1..=20 {
        log.push_str(&format!("chaos {task} line {i}\n"));
    }
    log.push_str(&format!("chaos {task} end {run}\n"));
    log
}

/// One execution of a marker step, as its lines tell it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Execution {
    pub token: String,
    /// Wall clock of its start and end, ns since the epoch.
    pub started_ns: u128,
    pub ended_ns: Option<u128>,
    /// Its working directory (under the executor's task directory).
    pub dir: String,
}

impl Execution {
    /// The index of the executor that ran it: `N` of the `exN-tasks` directory its
    /// working directory is under.
    pub fn executor(&self) -> Option<usize> {
        self.dir
            .split('/')
            .find_map(|seg| seg.strip_prefix("ex")?.strip_suffix("-tasks")?.parse().ok())
    }
}

/// What the markers of one task of one run say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskMarks {
    /// In the order they started.
    pub executions: Vec<Execution>,
    /// (token, token of an earlier attempt that was still alive when it started).
    pub overlaps: Vec<(String, String)>,
    /// Lines that are none of the above, name another run or task, or end an execution
    /// that never started.
    pub malformed: Vec<String>,
}

impl TaskMarks {
    /// Reads the marker lines of `task` in `run`.
    pub fn parse(run: &str, task: &str, text: &str) -> TaskMarks {
        let mut marks = TaskMarks::default();
        for line in text.lines() {
            let words: Vec<&str> = line.split(' ').collect();
            let ns = |w: &str| w.parse::<u128>().ok();
            match words.as_slice() {
                ["start", r, t, tok, at, dir] if *r == run && *t == task && ns(at).is_some() => {
                    marks.executions.push(Execution {
                        token: tok.to_string(),
                        started_ns: ns(at).unwrap_or_default(),
                        ended_ns: None,
                        dir: dir.to_string(),
                    })
                }
                ["end", r, t, tok, at] if *r == run && *t == task && ns(at).is_some() => {
                    match marks.executions.iter_mut().find(|e| e.token == *tok) {
                        Some(e) if e.ended_ns.is_none() => e.ended_ns = ns(at),
                        _ => marks.malformed.push(line.to_string()),
                    }
                }
                ["overlap", r, t, tok, other] if *r == run && *t == task => {
                    marks.overlaps.push((tok.to_string(), other.to_string()))
                }
                _ => marks.malformed.push(line.to_string()),
            }
        }
        marks
    }

    /// Reads `<marks>/<run>/<task>` (no file: no execution).
    pub fn read(marks: &Path, run: &str, task: &str) -> TaskMarks {
        let text = std::fs::read_to_string(marks.join(run).join(task)).unwrap_or_default();
        TaskMarks::parse(run, task, &text)
    }

    /// Attempts that started and never ended (killed with their executor).
    pub fn lost(&self) -> usize {
        self.executions
            .iter()
            .filter(|e| e.ended_ns.is_none())
            .count()
    }

    /// Executions that completed and were nevertheless followed by another: the step
    /// ended but the server never learned it (see [`TaskMarks::violations`]).
    pub fn superseded(&self) -> Vec<&Execution> {
        let n = self.executions.len().saturating_sub(1);
        self.executions[..n]
            .iter()
            .filter(|e| e.ended_ns.is_some())
            .collect()
    }

    /// Why these markers are not those of a task that ran to its end once, after
    /// attempts that were lost. Allowed: earlier attempts that never ended (killed with
    /// their executor), and an earlier attempt that completed when `unreported(it, the
    /// next execution's start)` says the server cannot have known it completed (its
    /// executor was killed before it could report, and the server recorded the attempt
    /// as lost). Not allowed: two executions alive at once, a last execution that never
    /// completed, any other completed execution followed by another.
    pub fn violations(&self, unreported: impl Fn(&Execution, u128) -> bool) -> Vec<String> {
        let mut why = Vec::new();
        if !self.malformed.is_empty() {
            why.push(format!("malformed marker lines {:?}", self.malformed));
        }
        for (tok, other) in &self.overlaps {
            why.push(format!("{tok} started while {other} was still running"));
        }
        match self.executions.last() {
            None => why.push("never ran".to_string()),
            Some(last) if last.ended_ns.is_none() => {
                why.push(format!("its last execution {} never completed", last.token))
            }
            Some(_) => {}
        }
        for (i, e) in self.executions.iter().enumerate() {
            let Some(next) = self.executions.get(i + 1) else {
                break;
            };
            if e.ended_ns.is_some() && !unreported(e, next.started_ns) {
                why.push(format!(
                    "{} completed, then {} ran the task again",
                    e.token, next.token
                ));
            }
        }
        why
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marks(lines: &[&str]) -> TaskMarks {
        TaskMarks::parse("r1", "a", &lines.join("\n"))
    }

    fn never(_: &Execution, _: u128) -> bool {
        false
    }

    #[test]
    fn one_completed_execution_after_killed_attempts_is_clean() {
        let m = marks(&[
            "start r1 a 10-1 100 /x/ex0-tasks/t/home",
            "start r1 a 11-2 200 /x/ex1-tasks/t/home",
            "end r1 a 11-2 300",
        ]);
        assert!(m.violations(never).is_empty(), "{:?}", m.violations(never));
        assert_eq!(m.lost(), 1);
        assert_eq!(m.executions[0].executor(), Some(0));
        assert_eq!(m.executions[1].executor(), Some(1));
    }

    #[test]
    fn a_second_completion_is_allowed_only_when_the_first_went_unreported() {
        let twice = marks(&[
            "start r1 a 1-1 100 /x/ex1-tasks/t",
            "end r1 a 1-1 150",
            "start r1 a 2-2 400 /x/ex0-tasks/t",
            "end r1 a 2-2 500",
        ]);
        assert_eq!(twice.violations(never).len(), 1);
        assert_eq!(twice.superseded().len(), 1);
        let killed = |e: &Execution, next: u128| e.executor() == Some(1) && next == 400;
        assert!(twice.violations(killed).is_empty());
        let again = marks(&[
            "start r1 a 1-1 1 /d",
            "end r1 a 1-1 2",
            "start r1 a 2-2 3 /d",
        ]);
        assert_eq!(
            again.violations(never).len(),
            2,
            "{:?}",
            again.violations(never)
        );
    }

    #[test]
    fn an_overlap_a_missing_completion_or_another_runs_line_is_a_violation() {
        let overlap = marks(&[
            "start r1 a 1-1 1 /d",
            "overlap r1 a 2-2 1-1",
            "start r1 a 2-2 2 /d",
            "end r1 a 2-2 3",
        ]);
        assert_eq!(
            overlap.violations(never).len(),
            1,
            "{:?}",
            overlap.violations(never)
        );
        assert_eq!(marks(&["start r1 a 1-1 1 /d"]).violations(never).len(), 1);
        assert_eq!(marks(&[]).violations(never).len(), 1);
        let foreign = marks(&[
            "start r2 a 1-1 1 /d",
            "start r1 a 2-2 2 /d",
            "end r1 a 2-2 3",
        ]);
        assert_eq!(foreign.violations(never).len(), 1);
        let orphan_end = marks(&["start r1 a 2-2 2 /d", "end r1 a 2-2 3", "end r1 a 3-3 4"]);
        assert_eq!(orphan_end.violations(never).len(), 1);
    }

    #[test]
    fn the_step_script_writes_what_the_check_reads() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("step.sh");
        std::fs::write(&script, STEP_SCRIPT).unwrap();
        let input = dir.path().join("in.txt");
        std::fs::write(&input, "from-a\n").unwrap();
        let run = |task: &str| {
            std::process::Command::new("sh")
                .arg(&script)
                .args([task, "0"])
                .arg(&input)
                .arg("from-a")
                .env("CHAOS_MARKS", dir.path())
                .env("CAIRN_RUN_ID", "r1")
                .output()
                .unwrap()
        };
        let out = run("d");
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            expected_log("r1", "d", Some("from-a"))
        );
        let m = TaskMarks::read(dir.path(), "r1", "d");
        assert!(m.violations(never).is_empty(), "{m:?}");
        // A second execution is seen as one.
        run("d");
        let m = TaskMarks::read(dir.path(), "r1", "d");
        assert_eq!(m.superseded().len(), 1);
        assert!(!m.violations(never).is_empty());
    }

    #[test]
    fn the_step_script_flags_an_earlier_attempt_that_is_still_alive() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("r1")).unwrap();
        // This test process plays the earlier attempt that never ended.
        let me = std::process::id();
        let stat = std::fs::read_to_string(format!("/proc/{me}/stat")).unwrap();
        let start = stat.rsplit_once(')').unwrap().1.split(' ').nth(20).unwrap();
        std::fs::write(
            dir.path().join("r1").join("b"),
            format!("start r1 b {me}-{start}\n"),
        )
        .unwrap();
        let script = dir.path().join("step.sh");
        std::fs::write(&script, STEP_SCRIPT).unwrap();
        let out = std::process::Command::new("sh")
            .arg(&script)
            .args(["b", "0"])
            .env("CHAOS_MARKS", dir.path())
            .env("CAIRN_RUN_ID", "r1")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let m = TaskMarks::read(dir.path(), "r1", "b");
        assert_eq!(m.overlaps.len(), 1, "{m:?}");
    }
}

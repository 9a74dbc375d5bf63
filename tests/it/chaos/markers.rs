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

/// What the markers of one task of one run say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskMarks {
    /// Tokens in the order their executions started.
    pub started: Vec<String>,
    /// Tokens of executions that ended.
    pub ended: Vec<String>,
    /// (token, token of an earlier attempt that was still alive when it started).
    pub overlaps: Vec<(String, String)>,
    /// Lines that are none of the above, or name another run or task.
    pub malformed: Vec<String>,
}

impl TaskMarks {
    /// Reads the marker lines of `task` in `run`.
    pub fn parse(run: &str, task: &str, text: &str) -> TaskMarks {
        let mut marks = TaskMarks::default();
        for line in text.lines() {
            let words: Vec<&str> = line.split(' ').collect();
            match words.as_slice() {
                ["start", r, t, tok, ..] if *r == run && *t == task => {
                    marks.started.push(tok.to_string())
                }
                ["end", r, t, tok, ..] if *r == run && *t == task => marks.ended.push(tok.to_string()),
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
        self.started.len() - self.ended.len().min(self.started.len())
    }

    /// Why these markers are not those of a task that ran exactly once to its end
    /// (earlier attempts killed before their end are allowed; two completed executions,
    /// an execution after the completed one, or two alive at once are not).
    pub fn violations(&self) -> Vec<String> {
        let mut why = Vec::new();
        if !self.malformed.is_empty() {
            why.push(format!("malformed marker lines {:?}", self.malformed));
        }
        for (tok, other) in &self.overlaps {
            why.push(format!("{tok} started while {other} was still running"));
        }
        match self.ended.as_slice() {
            [] => why.push(format!(
                "no execution completed (started: {:?})",
                self.started
            )),
            [done] => {
                if !self.started.contains(done) {
                    why.push(format!("{done} ended without a start"));
                } else if self.started.last() != Some(done) {
                    why.push(format!(
                        "an execution started after {done} had completed: {:?}",
                        self.started
                    ));
                }
            }
            many => why.push(format!("{} completed executions: {many:?}", many.len())),
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

    #[test]
    fn one_completed_execution_after_killed_attempts_is_clean() {
        let m = marks(&["start r1 a 10-1", "start r1 a 11-2", "end r1 a 11-2"]);
        assert!(m.violations().is_empty(), "{:?}", m.violations());
        assert_eq!(m.lost(), 1);
    }

    #[test]
    fn two_completions_a_start_after_completion_and_an_overlap_are_violations() {
        let twice = marks(&[
            "start r1 a 1-1",
            "end r1 a 1-1",
            "start r1 a 2-2",
            "end r1 a 2-2",
        ]);
        assert_eq!(twice.violations().len(), 1, "{:?}", twice.violations());
        let again = marks(&["start r1 a 1-1", "end r1 a 1-1", "start r1 a 2-2"]);
        assert_eq!(again.violations().len(), 1, "{:?}", again.violations());
        let overlap = marks(&[
            "start r1 a 1-1",
            "overlap r1 a 2-2 1-1",
            "start r1 a 2-2",
            "end r1 a 2-2",
        ]);
        assert_eq!(overlap.violations().len(), 1, "{:?}", overlap.violations());
    }

    #[test]
    fn a_missing_completion_or_another_runs_line_is_a_violation() {
        assert_eq!(marks(&["start r1 a 1-1"]).violations().len(), 1);
        assert_eq!(marks(&[]).violations().len(), 1);
        let foreign = marks(&["start r2 a 1-1", "start r1 a 2-2", "end r1 a 2-2"]);
        assert_eq!(foreign.violations().len(), 1, "{:?}", foreign.violations());
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
        assert!(m.violations().is_empty(), "{m:?}");
        // A second execution is seen as one.
        run("d");
        let m = TaskMarks::read(dir.path(), "r1", "d");
        assert_eq!(m.ended.len(), 2);
        assert!(!m.violations().is_empty());
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

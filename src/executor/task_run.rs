//! One executor task's status as it runs, decided without I/O. [`TaskRun`] takes the
//! runner's events (started or cancelled before start, setup done or failed, each step's
//! outcome, stop, timeout) and keeps the [`ExecutorTaskStatus`] the runner reports; it says
//! which step runs next and which line ends a log. The runner (`task.rs`) does the I/O
//! around it: the pod, the logs, the reports. Times are given by the caller, so every
//! transition is a plain function of its inputs.
//!
//! The rules: steps run in order and the first one that does not succeed ends the task
//! with its result (a non-zero exit or an error: failed; cancelled: stopped, or failed when
//! the deadline passed); a stop before a step starts ends the task stopped; a passed
//! deadline makes the task failed and `timedout` whatever the steps did.

use cairn_client::executor::{ExecutorTaskStatus, StepStatus};
use cairn_client::run::{ExecutorTaskPhase, Time};

/// How a step ended, as far as the task's status is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepOutcome {
    /// The step's command (or its built-in work) ended with this exit code.
    Exited(i32),
    /// The step was cancelled: the task was stopped or its deadline passed.
    Cancelled,
    /// The step could not run (driver, server or i/o error); the error's text.
    Error(String),
}

/// The status of one task from its start to its end (see the module doc).
#[derive(Clone, Debug)]
pub struct TaskRun {
    status: ExecutorTaskStatus,
    timeout_secs: Option<u64>,
    /// The task's result so far: success until a step does not succeed or a stop comes.
    result: ExecutorTaskPhase,
    fail_error: Option<String>,
    /// The index of the next step to start.
    next: usize,
    /// The step started by [`TaskRun::next_step`] and not yet ended.
    running: Option<usize>,
}

impl TaskRun {
    /// A task whose last reported status is `status`, with `steps` steps and an optional
    /// deadline of `timeout_secs` (only named in the failure message).
    pub fn new(mut status: ExecutorTaskStatus, steps: usize, timeout_secs: Option<u64>) -> Self {
        status.steps.resize(steps, StepStatus::default());
        TaskRun {
            status,
            timeout_secs,
            result: ExecutorTaskPhase::Success,
            fail_error: None,
            next: 0,
            running: None,
        }
    }

    /// The status to report.
    pub fn status(&self) -> &ExecutorTaskStatus {
        &self.status
    }

    /// The stop flag was set before the task started: it ends cancelled, nothing runs.
    pub fn cancel(&mut self, now: Time) {
        self.status.phase = ExecutorTaskPhase::Cancelled;
        self.status.end_time = Some(now);
    }

    /// The task starts: it and its setup are running.
    pub fn start(&mut self, now: Time) {
        self.status.phase = ExecutorTaskPhase::Running;
        self.status.start_time = Some(now);
        self.status.setup_step.phase = ExecutorTaskPhase::Running;
        self.status.setup_step.start_time = Some(now);
    }

    /// The setup failed for the reason `why`: the task ends failed, no step runs. Returns
    /// the line that ends the setup log.
    pub fn setup_failed(&mut self, why: &str, now: Time) -> String {
        self.status.setup_step.phase = ExecutorTaskPhase::Failed;
        self.status.setup_step.end_time = Some(now);
        self.status.phase = ExecutorTaskPhase::Failed;
        self.status.fail_error = Some(format!("setup failed: {why}"));
        self.status.end_time = Some(now);
        format!("setup failed: {why}\n")
    }

    /// The setup succeeded: the steps may run.
    pub fn setup_done(&mut self, now: Time) {
        self.status.setup_step.phase = ExecutorTaskPhase::Success;
        self.status.setup_step.end_time = Some(now);
    }

    /// The step to run next, now marked running; `None` when the steps are over: all of
    /// them ran, one did not succeed, or `cancelled` (a stop or the deadline) came before
    /// the next one started, which makes the task stopped.
    pub fn next_step(&mut self, cancelled: bool, now: Time) -> Option<usize> {
        if self.result != ExecutorTaskPhase::Success || self.next >= self.status.steps.len() {
            return None;
        }
        if cancelled {
            self.result = ExecutorTaskPhase::Stopped;
            return None;
        }
        let i = self.next;
        let step = &mut self.status.steps[i];
        step.phase = ExecutorTaskPhase::Running;
        step.start_time = Some(now);
        self.next += 1;
        self.running = Some(i);
        Some(i)
    }

    /// The running step ended with `outcome`; `timed_out` tells whether the task's
    /// deadline had passed (which is what cancelled a cancelled step, if no stop did).
    /// Returns the line that ends the step's log, if any. Does nothing when no step runs.
    pub fn step_ended(
        &mut self,
        outcome: StepOutcome,
        timed_out: bool,
        now: Time,
    ) -> Option<String> {
        let i = self.running.take()?;
        let step = &mut self.status.steps[i];
        step.end_time = Some(now);
        match outcome {
            StepOutcome::Exited(0) => {
                step.phase = ExecutorTaskPhase::Success;
                step.exit_status = Some(0);
                None
            }
            StepOutcome::Exited(code) => {
                step.phase = ExecutorTaskPhase::Failed;
                step.exit_status = Some(code);
                self.result = ExecutorTaskPhase::Failed;
                Some(format!("exit status {code}\n"))
            }
            StepOutcome::Cancelled => {
                step.phase = if timed_out {
                    ExecutorTaskPhase::Failed
                } else {
                    ExecutorTaskPhase::Stopped
                };
                self.result = step.phase;
                let why = if timed_out { "timed out" } else { "stopped" };
                Some(format!("{why}\n"))
            }
            StepOutcome::Error(e) => {
                step.phase = ExecutorTaskPhase::Failed;
                self.result = ExecutorTaskPhase::Failed;
                self.fail_error = Some(format!("step {i}: {e}"));
                Some(format!("error: {e}\n"))
            }
        }
    }

    /// The steps are over and the pod is gone: the task ends with its result, failed and
    /// `timedout` when `timed_out` (its deadline passed).
    pub fn finish(&mut self, timed_out: bool, now: Time) {
        if timed_out {
            self.status.timedout = true;
            self.result = ExecutorTaskPhase::Failed;
            let secs = self.timeout_secs.unwrap_or(0);
            self.fail_error
                .get_or_insert_with(|| format!("timed out after {secs}s"));
        }
        self.status.phase = self.result;
        self.status.fail_error = self.fail_error.clone();
        self.status.end_time = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use ExecutorTaskPhase::{Cancelled, Failed, NotStarted, Running, Stopped, Success};

    fn at(secs: i64) -> Time {
        chrono::DateTime::from_timestamp(secs, 0).expect("a valid timestamp")
    }

    /// A task with `steps` steps, started and set up at times 1 and 2.
    fn set_up(steps: usize, timeout_secs: Option<u64>) -> TaskRun {
        let mut run = TaskRun::new(ExecutorTaskStatus::default(), steps, timeout_secs);
        run.start(at(1));
        run.setup_done(at(2));
        run
    }

    fn phases(run: &TaskRun) -> Vec<ExecutorTaskPhase> {
        run.status().steps.iter().map(|s| s.phase).collect()
    }

    #[test]
    fn a_task_stopped_before_it_starts_is_cancelled_and_runs_nothing() {
        let mut run = TaskRun::new(ExecutorTaskStatus::default(), 2, None);
        run.cancel(at(5));
        let st = run.status();
        assert_eq!(st.phase, Cancelled);
        assert_eq!(st.end_time, Some(at(5)));
        assert_eq!(st.start_time, None);
        assert_eq!(phases(&run), vec![NotStarted, NotStarted]);
    }

    #[test]
    fn starting_marks_the_task_and_its_setup_running() {
        let mut run = TaskRun::new(ExecutorTaskStatus::default(), 1, None);
        run.start(at(1));
        let st = run.status();
        assert_eq!((st.phase, st.setup_step.phase), (Running, Running));
        assert_eq!(st.start_time, Some(at(1)));
        assert_eq!(st.setup_step.start_time, Some(at(1)));
        run.setup_done(at(2));
        assert_eq!(run.status().setup_step.phase, Success);
        assert_eq!(run.status().setup_step.end_time, Some(at(2)));
        assert_eq!(run.status().phase, Running);
    }

    #[test]
    fn the_status_gets_one_entry_per_step() {
        let mut status = ExecutorTaskStatus::default();
        status.steps.resize(5, StepStatus::default());
        assert_eq!(TaskRun::new(status, 3, None).status().steps.len(), 3);
        let run = TaskRun::new(ExecutorTaskStatus::default(), 2, None);
        assert_eq!(run.status().steps.len(), 2);
    }

    #[test]
    fn a_failed_setup_fails_the_task_and_runs_no_step() {
        let mut run = TaskRun::new(ExecutorTaskStatus::default(), 2, None);
        run.start(at(1));
        let line = run.setup_failed("no image", at(3));
        assert_eq!(line, "setup failed: no image\n");
        let st = run.status();
        assert_eq!((st.phase, st.setup_step.phase), (Failed, Failed));
        assert_eq!(st.fail_error.as_deref(), Some("setup failed: no image"));
        assert_eq!(
            (st.end_time, st.setup_step.end_time),
            (Some(at(3)), Some(at(3)))
        );
        assert_eq!(phases(&run), vec![NotStarted, NotStarted]);
    }

    #[test]
    fn steps_run_in_order_and_all_successes_make_a_successful_task() {
        let mut run = set_up(2, None);
        assert_eq!(run.next_step(false, at(3)), Some(0));
        assert_eq!(run.status().steps[0].phase, Running);
        assert_eq!(run.status().steps[0].start_time, Some(at(3)));
        assert_eq!(run.step_ended(StepOutcome::Exited(0), false, at(4)), None);
        assert_eq!(run.next_step(false, at(5)), Some(1));
        assert_eq!(run.step_ended(StepOutcome::Exited(0), false, at(6)), None);
        assert_eq!(run.next_step(false, at(7)), None);
        run.finish(false, at(8));
        let st = run.status();
        assert_eq!(st.phase, Success);
        assert_eq!(st.fail_error, None);
        assert!(!st.timedout);
        assert_eq!(st.end_time, Some(at(8)));
        assert_eq!(phases(&run), vec![Success, Success]);
        assert_eq!(st.steps[0].exit_status, Some(0));
        assert_eq!(st.steps[1].end_time, Some(at(6)));
    }

    #[test]
    fn a_non_zero_exit_fails_the_step_and_the_task_and_skips_the_rest() {
        let mut run = set_up(3, None);
        run.next_step(false, at(3));
        let line = run.step_ended(StepOutcome::Exited(2), false, at(4));
        assert_eq!(line.as_deref(), Some("exit status 2\n"));
        assert_eq!(run.next_step(false, at(5)), None);
        run.finish(false, at(6));
        let st = run.status();
        assert_eq!(st.phase, Failed);
        assert_eq!(st.fail_error, None, "a failing command is no error");
        assert_eq!(st.steps[0].exit_status, Some(2));
        assert_eq!(phases(&run), vec![Failed, NotStarted, NotStarted]);
    }

    #[test]
    fn a_step_that_cannot_run_fails_the_task_with_its_error() {
        let mut run = set_up(2, None);
        run.next_step(false, at(3));
        run.step_ended(StepOutcome::Exited(0), false, at(4));
        run.next_step(false, at(5));
        let line = run.step_ended(StepOutcome::Error("no such cache".into()), false, at(6));
        assert_eq!(line.as_deref(), Some("error: no such cache\n"));
        run.finish(false, at(7));
        let st = run.status();
        assert_eq!(st.phase, Failed);
        assert_eq!(st.fail_error.as_deref(), Some("step 1: no such cache"));
        assert_eq!(st.steps[1].exit_status, None);
        assert_eq!(phases(&run), vec![Success, Failed]);
    }

    #[test]
    fn a_stop_while_a_step_runs_stops_the_step_and_the_task() {
        let mut run = set_up(2, None);
        run.next_step(false, at(3));
        let line = run.step_ended(StepOutcome::Cancelled, false, at(4));
        assert_eq!(line.as_deref(), Some("stopped\n"));
        assert_eq!(run.next_step(true, at(5)), None);
        run.finish(false, at(6));
        let st = run.status();
        assert_eq!(st.phase, Stopped);
        assert_eq!(st.fail_error, None);
        assert!(!st.timedout);
        assert_eq!(phases(&run), vec![Stopped, NotStarted]);
    }

    #[test]
    fn a_stop_between_steps_stops_the_task_before_the_next_one() {
        let mut run = set_up(2, None);
        run.next_step(false, at(3));
        run.step_ended(StepOutcome::Exited(0), false, at(4));
        assert_eq!(run.next_step(true, at(5)), None);
        assert_eq!(
            run.next_step(false, at(5)),
            None,
            "a stopped task stays stopped"
        );
        run.finish(false, at(6));
        assert_eq!(run.status().phase, Stopped);
        assert_eq!(phases(&run), vec![Success, NotStarted]);
    }

    #[test]
    fn a_stop_after_the_last_step_changes_nothing() {
        let mut run = set_up(1, None);
        run.next_step(false, at(3));
        run.step_ended(StepOutcome::Exited(0), false, at(4));
        assert_eq!(run.next_step(true, at(5)), None);
        run.finish(false, at(6));
        assert_eq!(run.status().phase, Success);
    }

    #[test]
    fn a_stop_during_setup_stops_the_task_before_its_first_step() {
        let mut run = set_up(1, None);
        assert_eq!(run.next_step(true, at(3)), None);
        run.finish(false, at(4));
        assert_eq!(run.status().phase, Stopped);
        assert_eq!(run.status().setup_step.phase, Success);
        assert_eq!(phases(&run), vec![NotStarted]);
    }

    #[test]
    fn a_timeout_while_a_step_runs_fails_the_step_and_the_task() {
        let mut run = set_up(2, Some(30));
        run.next_step(false, at(3));
        let line = run.step_ended(StepOutcome::Cancelled, true, at(33));
        assert_eq!(line.as_deref(), Some("timed out\n"));
        assert_eq!(run.next_step(true, at(34)), None);
        run.finish(true, at(35));
        let st = run.status();
        assert_eq!(st.phase, Failed);
        assert!(st.timedout);
        assert_eq!(st.fail_error.as_deref(), Some("timed out after 30s"));
        assert_eq!(phases(&run), vec![Failed, NotStarted]);
    }

    #[test]
    fn a_timeout_before_the_first_step_fails_the_task() {
        let mut run = set_up(1, Some(5));
        assert_eq!(run.next_step(true, at(6)), None);
        run.finish(true, at(7));
        let st = run.status();
        assert_eq!(st.phase, Failed);
        assert!(st.timedout);
        assert_eq!(st.fail_error.as_deref(), Some("timed out after 5s"));
    }

    #[test]
    fn a_timeout_after_the_steps_still_fails_the_task() {
        let mut run = set_up(1, Some(5));
        run.next_step(false, at(3));
        run.step_ended(StepOutcome::Exited(0), false, at(4));
        run.finish(true, at(6));
        assert_eq!(run.status().phase, Failed);
        assert!(run.status().timedout);
        assert_eq!(phases(&run), vec![Success]);
    }

    #[test]
    fn a_step_error_is_kept_over_the_timeout_message() {
        let mut run = set_up(1, Some(5));
        run.next_step(false, at(3));
        run.step_ended(StepOutcome::Error("disk full".into()), true, at(6));
        run.finish(true, at(7));
        assert_eq!(
            run.status().fail_error.as_deref(),
            Some("step 0: disk full")
        );
        assert!(run.status().timedout);
    }

    #[test]
    fn a_task_without_steps_succeeds() {
        let mut run = set_up(0, None);
        assert_eq!(run.next_step(false, at(3)), None);
        run.finish(false, at(4));
        assert_eq!(run.status().phase, Success);
    }

    #[test]
    fn an_earlier_fail_error_is_not_carried_over() {
        let status = ExecutorTaskStatus {
            fail_error: Some("an old error".into()),
            ..Default::default()
        };
        let mut run = TaskRun::new(status, 0, None);
        run.start(at(1));
        run.setup_done(at(2));
        run.finish(false, at(3));
        assert_eq!(run.status().fail_error, None);
    }

    #[test]
    fn ending_a_step_when_none_runs_does_nothing() {
        let mut run = set_up(1, None);
        assert_eq!(run.step_ended(StepOutcome::Exited(1), false, at(3)), None);
        assert_eq!(run.next_step(false, at(4)), Some(0));
        assert_eq!(run.step_ended(StepOutcome::Exited(0), false, at(5)), None);
        assert_eq!(run.step_ended(StepOutcome::Exited(1), false, at(6)), None);
        run.finish(false, at(7));
        assert_eq!(run.status().phase, Success);
    }
}

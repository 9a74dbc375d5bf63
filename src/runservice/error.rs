//! [`RunServiceError`]: why a run-service decision refused its input. Its variants are what
//! callers branch on; [`RunServiceError::code`] gives the stable API error kind, and the API
//! layer alone turns that into an HTTP status.

use cairn_client::ErrorCode;
use cairn_client::run::{ExecutorTaskPhase, RunPhase, RunTaskStatus};

use super::reference::ReferenceError;
use crate::configfile::ConfigErrors;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RunServiceError {
    /// The run has no task with this id.
    #[error("run {run_id} has no task {task_id}")]
    TaskNotFound { run_id: String, task_id: String },

    /// The action is not allowed in the run's current phase.
    #[error("run {run_id} is {}, expected {}", .found.as_str(), phase_list(.expected))]
    InvalidPhase {
        run_id: String,
        expected: &'static [RunPhase],
        found: RunPhase,
    },

    /// The run may not be restarted this way (it succeeded, or data of the tasks it would
    /// reuse is not in object storage yet).
    #[error("run {run_id} cannot be restarted: {reason}")]
    CannotRestart { run_id: String, reason: String },

    /// A queued run asked to cancel cannot start.
    #[error("run {run_id} is being cancelled")]
    CancelRequested { run_id: String },

    /// A restart names tasks the run does not have.
    #[error(
        "run {run_id} has no task named {}; its tasks are: {}",
        .unknown.join(", "),
        .known.join(", ")
    )]
    UnknownTasks {
        run_id: String,
        unknown: Vec<String>,
        known: Vec<String>,
    },

    /// A restart request that asks for contradictory things.
    #[error("bad restart request: {reason}")]
    BadRestart { reason: String },

    /// Approval asked for a task that does not wait for it.
    #[error("task {task_id} is not waiting for approval")]
    NotWaitingApproval { task_id: String },

    /// Approval asked twice.
    #[error("task {task_id} is already approved")]
    AlreadyApproved { task_id: String },

    /// The task's `approvers` annotation is not a JSON list of strings.
    #[error("task {task_id} has an approvers annotation that is not a JSON list: {reason}")]
    BadApproversAnnotation { task_id: String, reason: String },

    /// An executor task reported for another run.
    #[error("executor task {task_id} belongs to run {reported}, not to run {run_id}")]
    WrongRun {
        task_id: String,
        run_id: String,
        reported: String,
    },

    /// An executor reported a phase that cannot follow the task's current status.
    #[error(
        "task {task_id} is {}: a report of phase {} cannot follow",
        .current.as_str(),
        .reported.as_str()
    )]
    InconsistentStatus {
        task_id: String,
        current: RunTaskStatus,
        reported: ExecutorTaskPhase,
    },

    /// An executor reported a different number of steps than the task has.
    #[error("task {task_id} has {expected} steps, the executor reported {reported}")]
    StepCountMismatch {
        task_id: String,
        expected: usize,
        reported: usize,
    },

    /// An executor reported the status of a task assigned to another executor.
    #[error("task {task_id} is assigned to another executor")]
    NotAssigned { task_id: String },

    /// A status report for an executor task that already finished: its status is final.
    #[error(
        "task {task_id} already finished ({}); a {} report is refused",
        .phase.as_str(),
        .reported.as_str()
    )]
    AlreadyFinished {
        task_id: String,
        phase: ExecutorTaskPhase,
        reported: ExecutorTaskPhase,
    },

    /// A run group that is not an absolute path of at least two segments.
    #[error(
        "group {group:?} must be an absolute path of at least two segments, like /user/<id>/branch/<name>"
    )]
    BadGroup { group: String },

    /// A creation request's reference, commit or pull-request patterns are not usable.
    #[error(transparent)]
    Reference(#[from] ReferenceError),

    /// A config beyond Cairn's limits, or whose runs cannot be expanded.
    #[error("{0}")]
    Config(ConfigErrors),

    /// A creation request names a run that does not match its reference.
    #[error("{path}: no run named {name:?} matches this reference")]
    NoRunNamed { path: String, name: String },

    /// No run of the config matches a creation request's reference.
    #[error("{path}: no run of the config matches this reference")]
    NoMatchingRun { path: String },
}

impl RunServiceError {
    /// The stable error kind of this error in the API.
    pub fn code(&self) -> ErrorCode {
        match self {
            RunServiceError::TaskNotFound { .. } => ErrorCode::NotFound,
            RunServiceError::NotAssigned { .. } => ErrorCode::Forbidden,
            RunServiceError::InvalidPhase { .. }
            | RunServiceError::CannotRestart { .. }
            | RunServiceError::CancelRequested { .. }
            | RunServiceError::AlreadyApproved { .. }
            | RunServiceError::InconsistentStatus { .. }
            | RunServiceError::AlreadyFinished { .. } => ErrorCode::Conflict,
            RunServiceError::NotWaitingApproval { .. }
            | RunServiceError::BadApproversAnnotation { .. }
            | RunServiceError::UnknownTasks { .. }
            | RunServiceError::BadRestart { .. }
            | RunServiceError::WrongRun { .. }
            | RunServiceError::StepCountMismatch { .. }
            | RunServiceError::BadGroup { .. }
            | RunServiceError::Reference(_)
            | RunServiceError::Config(_)
            | RunServiceError::NoRunNamed { .. }
            | RunServiceError::NoMatchingRun { .. } => ErrorCode::BadRequest,
        }
    }
}

fn phase_list(phases: &[RunPhase]) -> String {
    phases
        .iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(" or ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_phase_names_what_was_expected_and_found() {
        let err = RunServiceError::InvalidPhase {
            run_id: "r1".into(),
            expected: &[RunPhase::Finished, RunPhase::Cancelled],
            found: RunPhase::Running,
        };
        assert_eq!(
            err.to_string(),
            "run r1 is running, expected finished or cancelled"
        );
        assert_eq!(err.code(), ErrorCode::Conflict);
    }

    #[test]
    fn missing_tasks_are_not_found_and_bad_reports_are_bad_requests() {
        let missing = RunServiceError::TaskNotFound {
            run_id: "r1".into(),
            task_id: "t9".into(),
        };
        assert_eq!(missing.code(), ErrorCode::NotFound);
        let bad = RunServiceError::StepCountMismatch {
            task_id: "t1".into(),
            expected: 2,
            reported: 3,
        };
        assert_eq!(bad.code(), ErrorCode::BadRequest);
        assert_eq!(
            bad.to_string(),
            "task t1 has 2 steps, the executor reported 3"
        );
    }
}

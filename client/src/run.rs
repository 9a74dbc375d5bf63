//! The mutable state of a run and its tasks (`Run`, `RunTask`), their phases and results,
//! and run events.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A point in time as RFC 3339 in UTC.
pub type Time = DateTime<Utc>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum RunPhase {
    /// The config could not be turned into tasks; the run never starts.
    #[serde(rename = "setuperror")]
    SetupError,
    Queued,
    Cancelled,
    Running,
    Finished,
}

impl RunPhase {
    pub const ALL: [RunPhase; 5] = [
        RunPhase::SetupError,
        RunPhase::Queued,
        RunPhase::Cancelled,
        RunPhase::Running,
        RunPhase::Finished,
    ];

    /// No more change will happen to a run in this phase.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RunPhase::SetupError | RunPhase::Cancelled | RunPhase::Finished
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunPhase::SetupError => "setuperror",
            RunPhase::Queued => "queued",
            RunPhase::Cancelled => "cancelled",
            RunPhase::Running => "running",
            RunPhase::Finished => "finished",
        }
    }

    pub fn parse(s: &str) -> Option<RunPhase> {
        RunPhase::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// A name that is none of an enum's values (the `FromStr` error of [`RunPhase`],
/// [`RunResult`] and [`crate::runconfig::Arch`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {name:?}")]
pub struct UnknownName {
    /// What was named: `phase`, `result`, `arch`.
    pub kind: &'static str,
    /// The name given.
    pub name: String,
}

impl UnknownName {
    pub(crate) fn new(kind: &'static str, name: &str) -> UnknownName {
        UnknownName {
            kind,
            name: name.to_string(),
        }
    }
}

impl std::str::FromStr for RunPhase {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<RunPhase, UnknownName> {
        RunPhase::parse(s).ok_or_else(|| UnknownName::new("phase", s))
    }
}

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum RunResult {
    /// Not decided yet.
    #[default]
    Unknown,
    Stopped,
    Success,
    Failed,
}

impl RunResult {
    pub const ALL: [RunResult; 4] = [
        RunResult::Unknown,
        RunResult::Stopped,
        RunResult::Success,
        RunResult::Failed,
    ];

    pub fn is_set(self) -> bool {
        self != RunResult::Unknown
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunResult::Unknown => "unknown",
            RunResult::Stopped => "stopped",
            RunResult::Success => "success",
            RunResult::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<RunResult> {
        RunResult::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl std::str::FromStr for RunResult {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<RunResult, UnknownName> {
        RunResult::parse(s).ok_or_else(|| UnknownName::new("result", s))
    }
}

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum RunTaskStatus {
    #[default]
    #[serde(rename = "notstarted")]
    NotStarted,
    Skipped,
    Cancelled,
    Running,
    Stopped,
    Success,
    Failed,
}

impl RunTaskStatus {
    pub fn is_finished(self) -> bool {
        !matches!(self, RunTaskStatus::NotStarted | RunTaskStatus::Running)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunTaskStatus::NotStarted => "notstarted",
            RunTaskStatus::Skipped => "skipped",
            RunTaskStatus::Cancelled => "cancelled",
            RunTaskStatus::Running => "running",
            RunTaskStatus::Stopped => "stopped",
            RunTaskStatus::Success => "success",
            RunTaskStatus::Failed => "failed",
        }
    }
}

/// The phase of an executor task and of each of its steps.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ExecutorTaskPhase {
    #[default]
    #[serde(rename = "notstarted")]
    NotStarted,
    Cancelled,
    Running,
    Stopped,
    Success,
    Failed,
}

impl ExecutorTaskPhase {
    pub fn is_finished(self) -> bool {
        !matches!(
            self,
            ExecutorTaskPhase::NotStarted | ExecutorTaskPhase::Running
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorTaskPhase::NotStarted => "notstarted",
            ExecutorTaskPhase::Cancelled => "cancelled",
            ExecutorTaskPhase::Running => "running",
            ExecutorTaskPhase::Stopped => "stopped",
            ExecutorTaskPhase::Success => "success",
            ExecutorTaskPhase::Failed => "failed",
        }
    }
}

/// Whether a step's log or a workspace archive has been moved to object storage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum FetchPhase {
    #[default]
    #[serde(rename = "notstarted")]
    NotStarted,
    Finished,
}

/// A run: the small mutable state the scheduler advances.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Run {
    /// Sortable: later runs have greater ids.
    pub id: String,
    pub name: String,
    /// `#N` within the run group's root.
    pub counter: u64,
    pub group: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub phase: RunPhase,
    #[serde(default)]
    pub result: RunResult,
    /// Asked to stop.
    #[serde(default)]
    pub stop: bool,
    /// Asked to cancel while queued; the scheduler applies it (phase `cancelled`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel: bool,
    /// Tasks by id.
    #[serde(default)]
    pub tasks: BTreeMap<String, RunTask>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub enqueue_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub end_time: Option<Time>,
    /// Finished and every log and archive moved to object storage.
    #[serde(default)]
    pub archived: bool,
}

impl Run {
    /// The second path element of the group: a project or user id.
    pub fn root_group(&self) -> &str {
        root_group(&self.group)
    }

    pub fn tasks_waiting_approval(&self) -> impl Iterator<Item = &RunTask> {
        self.tasks.values().filter(|t| t.waiting_approval)
    }
}

/// The second path element of a run group (`/project/<id>/branch/main` → `<id>`), or the
/// whole group when it has fewer elements.
pub fn root_group(group: &str) -> &str {
    group
        .trim_start_matches('/')
        .split('/')
        .nth(1)
        .filter(|s| !s.is_empty())
        .unwrap_or(group)
}

/// The state of one task within a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunTask {
    pub id: String,
    pub status: RunTaskStatus,
    /// Opaque; `approvers` holds a JSON list of who approved.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub skip: bool,
    #[serde(default)]
    pub waiting_approval: bool,
    #[serde(default)]
    pub approved: bool,
    #[serde(default)]
    pub setup_step: RunTaskStep,
    #[serde(default)]
    pub steps: Vec<RunTaskStep>,
    /// Indexes of the steps that save to the workspace.
    #[serde(default)]
    pub workspace_archives: Vec<usize>,
    /// Parallel to `workspace_archives`.
    #[serde(default)]
    pub workspace_archives_phase: Vec<FetchPhase>,
    /// Failure reason reported by the executor or set by the scheduler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_error: Option<String>,
    #[serde(default)]
    pub timedout: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub end_time: Option<Time>,
    /// Earlier attempts of this task lost with their executor and run again
    /// (`--retry-lost-tasks`, a task's `retry_lost_tasks`), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lost_attempts: Vec<LostAttempt>,
}

/// An attempt of a run task lost with its executor, after which the task ran again (its
/// logs are discarded: the task's logs are those of its last attempt).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LostAttempt {
    pub executor_id: String,
    /// Why it was lost ("executor … is gone", "the executor restarted and lost the task").
    pub reason: String,
    /// When the scheduler gave it up and queued the task again.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub time: Time,
}

impl RunTask {
    /// Every log and workspace archive of this task is in object storage (or there is
    /// nothing to fetch).
    pub fn all_fetched(&self) -> bool {
        self.logs_fetched() && self.archives_fetched()
    }

    pub fn logs_fetched(&self) -> bool {
        self.setup_step.log_phase == FetchPhase::Finished
            && self
                .steps
                .iter()
                .all(|s| s.log_phase == FetchPhase::Finished)
    }

    pub fn archives_fetched(&self) -> bool {
        self.workspace_archives_phase
            .iter()
            .all(|p| *p == FetchPhase::Finished)
    }
}

/// One step (or the setup) of a run task.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunTaskStep {
    pub phase: ExecutorTaskPhase,
    #[serde(default)]
    pub log_phase: FetchPhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub end_time: Option<Time>,
}

/// A change of a run's phase or result, numbered by a cluster-wide sequence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunEvent {
    pub sequence: u64,
    pub run_id: String,
    pub group: String,
    pub phase: RunPhase,
    pub result: RunResult,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub time: Time,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_group_is_the_second_path_element() {
        assert_eq!(root_group("/project/p1/branch/main"), "p1");
        assert_eq!(root_group("/user/u1/branch/feat%2Fx"), "u1");
        assert_eq!(root_group("/solo"), "/solo");
    }

    #[test]
    fn phases_serialize_as_agola_names() {
        let json = serde_json::to_string(&RunPhase::SetupError).expect("serializes");
        assert_eq!(json, "\"setuperror\"");
        let json = serde_json::to_string(&RunTaskStatus::NotStarted).expect("serializes");
        assert_eq!(json, "\"notstarted\"");
        assert_eq!(RunPhase::parse("running"), Some(RunPhase::Running));
        assert_eq!(RunResult::parse("nope"), None);
    }
}

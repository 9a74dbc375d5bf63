//! Executors and the tasks handed to them: the registry entry (`Executor`), the stored
//! part of an executor task (`ExecutorTask` = spec + status) and the data generated for it
//! at every hand-out (`ExecutorTaskSpecData`, never stored).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::run::{ExecutorTaskPhase, Time};
use crate::runconfig::{Arch, Container, Env, RegistryAuth, SourceRef, Step};

/// What an executor reports about itself on registration and every heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Executor {
    pub id: String,
    #[serde(default)]
    pub archs: Vec<Arch>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub allow_privileged: bool,
    /// 0 = no limit.
    #[serde(default)]
    pub active_tasks_limit: u32,
    /// The executor's own count of tasks it is running.
    #[serde(default)]
    pub active_tasks: u32,
    /// Stamped by the server on each heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub last_heartbeat: Option<Time>,
    /// The store lease the executor's key is attached to (set by the server).
    #[serde(default)]
    pub lease: i64,
}

/// The stored part of a task handed to an executor. Its id is the run task's id, so a
/// run task is scheduled at most once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExecutorTask {
    pub id: String,
    pub spec: ExecutorTaskSpec,
    pub status: ExecutorTaskStatus,
}

impl ExecutorTask {
    /// A task just assigned to `executor_id`, with one not-started status per step.
    pub fn new(id: &str, run_id: &str, executor_id: &str, steps: usize) -> ExecutorTask {
        ExecutorTask {
            id: id.to_string(),
            spec: ExecutorTaskSpec {
                executor_id: executor_id.to_string(),
                run_id: run_id.to_string(),
                stop: false,
                attempt: 0,
            },
            status: ExecutorTaskStatus {
                steps: vec![StepStatus::default(); steps],
                ..ExecutorTaskStatus::default()
            },
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExecutorTaskSpec {
    pub executor_id: String,
    pub run_id: String,
    /// Asked to stop (before start: cancelled; while running: stopped).
    #[serde(default)]
    pub stop: bool,
    /// Which attempt of the run task this is: how many earlier attempts were lost with
    /// their executor when it was handed out (see `RunTask::lost_attempts`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What the executor reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExecutorTaskStatus {
    pub phase: ExecutorTaskPhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_error: Option<String>,
    /// Failed because the task was lost with its executor (gone, restarted, stopped, out
    /// of contact), not by its steps: the scheduler may run it again elsewhere.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lost: bool,
    #[serde(default)]
    pub timedout: bool,
    #[serde(default)]
    pub setup_step: StepStatus,
    #[serde(default)]
    pub steps: Vec<StepStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub end_time: Option<Time>,
}

impl ExecutorTaskStatus {
    /// Marks the task lost with its executor: failed with `reason`, [`lost`](Self::lost)
    /// (so the server may run it again), its running steps (setup included) failed, all
    /// ended at `now`. The one definition of a lost task, for the server (executor gone)
    /// and the executor (restarted, stopped, out of contact).
    pub fn mark_lost(&mut self, reason: &str, now: Time) {
        self.phase = ExecutorTaskPhase::Failed;
        self.fail_error = Some(reason.to_string());
        self.lost = true;
        self.end_time = Some(now);
        let steps = std::iter::once(&mut self.setup_step).chain(self.steps.iter_mut());
        for step in steps.filter(|s| s.phase == ExecutorTaskPhase::Running) {
            step.phase = ExecutorTaskPhase::Failed;
            step.end_time = Some(now);
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StepStatus {
    pub phase: ExecutorTaskPhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub end_time: Option<Time>,
}

/// Everything an executor needs to run a task, derived from the run and its config when
/// the task is handed out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExecutorTaskSpecData {
    pub task_name: String,
    pub run_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<Arch>,
    pub containers: Vec<Container>,
    /// Task environment overlaid by the run's static, then the run's own environment.
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, String>))]
    pub environment: Env,
    pub working_dir: String,
    pub shell: String,
    pub user: String,
    pub privileged: bool,
    pub steps: Vec<Step>,
    /// Parents' workspace archives to restore, in (level, task name) order.
    pub workspace_operations: Vec<WorkspaceOperation>,
    #[serde(default)]
    pub docker_registries_auth: BTreeMap<String, RegistryAuth>,
    /// Prefix of every cache key of this task.
    pub cache_prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceRef>,
    /// Values the executor replaces by `***` in the task's logs as they stream: those of
    /// the task's `secret_environment` and its registry passwords and auths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
}

/// One workspace archive of an ancestor task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkspaceOperation {
    pub task_id: String,
    /// Index of the save_to_workspace step in that task.
    pub step: usize,
    #[serde(default)]
    pub overwrite: bool,
}

/// A task as handed to its executor: the stored part, its store revision (for status
/// reports) and the generated spec data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AssignedTask {
    pub task: ExecutorTask,
    pub data: ExecutorTaskSpecData,
}

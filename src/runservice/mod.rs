//! The run service's decisions, as pure functions: data in, data out.
//!
//! This module owns every change of a [`Run`](cairn_client::run::Run)'s phase, result and
//! task states, and the data derived from a run for executors and for "why is it
//! pending?". It performs no I/O, reads no clock (callers pass `now`) and never touches the
//! store: the scheduler and the API read the run, its config and its executor tasks, call
//! these functions, and write the results back with compare-and-swap.
//!
//! - [`create`]: a new run from its config, and the run configs a creation request asks for.
//! - [`restart`](mod@restart): a new run (and config) from a finished one, from scratch
//!   from failed tasks or from chosen tasks.
//! - [`advance`](mod@advance): the state machine (result, phase, dependency conditions with skip
//!   propagation, approval, stop, cancellation) and the tasks ready to hand out.
//! - [`archive`]: when a finished task's logs go to object storage and its executor
//!   task can go, and when a run is archivable.
//! - [`actions`]: user actions (start, cancel, stop, approve, task annotations).
//! - [`task_status`]: executor status reports accepted (finished is final) and applied to
//!   the run, lost executor tasks.
//! - [`retry`]: a task lost with its executor queued again while it has retries left.
//! - [`spec`]: the executor task spec data generated at every hand-out.
//! - [`cache_namespace`]: the unambiguous id of a task's cache group.
//! - [`placement`]: which executor gets a task, or why none can.
//! - [`pending`]: why each not-started task is waiting.
//! - [`unplaceable`]: failing a task that no executor of a fixed set can ever take.
//! - [`reference`](mod@reference): a git reference classified as Agola does (branch, tag, pull request),
//!   its run group, the static environment and the run annotations.
//! - [`retention`]: which archived runs are past their group's limits, and which of their
//!   tasks' logs and archives no kept run uses.
//! - [`depends`]: the evaluation of a task's parents shared by the above.
//! - [`error`]: the typed [`RunServiceError`].

pub mod actions;
pub mod advance;
pub mod archive;
pub mod cache_namespace;
pub mod create;
pub mod depends;
pub mod error;
pub mod pending;
pub mod placement;
pub mod reference;
pub mod restart;
pub mod retention;
pub mod retry;
pub mod spec;
pub mod task_status;
pub mod unplaceable;

#[cfg(test)]
pub(crate) mod fixture;

pub use actions::{APPROVERS_ANNOTATION, approve, cancel, set_task_annotations, start, stop};
pub use advance::{Advance, advance};
pub use create::{SETUP_ERROR_RUN_NAME, new_run};
pub use error::RunServiceError;
pub use pending::task_pending_reasons;
pub use placement::{NoExecutor, choose_executor, never_placeable};
pub use restart::{
    RestartFrom, can_restart_from_failed, can_restart_from_scratch, check_restart, restart,
};
pub use retry::{LostTask, retry_lost_task};
pub use spec::spec_data;
pub use task_status::{accept_report, apply_executor_status, fail_lost_task};
pub use unplaceable::fail_unplaceable;

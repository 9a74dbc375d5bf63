//! The executor: runs tasks handed out by the run service. A plain client of the API
//! (`cairn_client::RunClient`), in-process in `cairn serve` or standalone as
//! `cairn executor`; it only dials out.
//!
//! - [`agent`]: registration, heartbeats, the task long poll, runners, restart recovery,
//!   hand-back on a clean stop.
//! - [`lifeline`]: the watchdog process that kills a dead executor's steps.
//! - [`task`]: one task: setup, steps in order, status reports, stop and timeout.
//! - [`task_run`]: the task's status transitions, decided without I/O.
//! - [`steps`]: clone, run, workspaces and caches over the driver's pod.
//! - [`log_upload`]: a step's output streamed to the server as it is produced.
//! - [`driver`]: where steps run (`local` host processes, `docker` containers).
//! - [`archive`]: selecting and renaming tar entries for workspaces and caches.
//! - [`cache_key`]: cache key templates (`{{ md5sum "go.sum" }}`…), parsed then rendered.
//! - [`source`]: packing a working-tree snapshot (extracted by [`archive`]).

pub mod agent;
pub mod archive;
pub mod cache_key;
pub mod driver;
pub mod lifeline;
pub mod log_upload;
pub mod source;
pub mod steps;
pub mod task;
pub mod task_run;

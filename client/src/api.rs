//! Request and response bodies of the run-service API (`/api/v1`), and the wire values
//! both sides parse: which log of a task ([`LogStep`], the `step=` query value) and the
//! header of a log that is complete ([`LOG_COMPLETE_HEADER`]).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::executor::{AssignedTask, Executor, ExecutorTask};
use crate::run::{Run, RunPhase, RunResult};
use crate::runconfig::{Env, RunConfig, SourceRef};

/// The largest body of one log append (`POST /executors/{id}/tasks/{task_id}/logs`): the
/// server answers 413 to anything longer, so executors send longer output in chunks.
pub const MAX_LOG_CHUNK_BYTES: usize = 4 << 20;

/// Response header of a log read (`GET /runs/{id}/tasks/{task_id}/logs`) whose log was
/// already complete when the request arrived; its value is `true`.
pub const LOG_COMPLETE_HEADER: &str = "x-cairn-log-complete";

/// The request header of `POST /runs` naming one logical creation: sent again with the
/// same request (after a lost answer, to any node), it answers with the runs the first
/// sending made instead of making more. Kept for [`IDEMPOTENCY_KEY_TTL_SECS`].
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// The response header set (`true`) when `POST /runs` answered with runs made earlier
/// under the same idempotency key.
pub const IDEMPOTENT_REPLAYED_HEADER: &str = "idempotent-replayed";
/// The longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
/// How long the server remembers an idempotency key (a day).
pub const IDEMPOTENCY_KEY_TTL_SECS: u64 = 24 * 3600;

/// Why `key` is not a valid idempotency key (1 to [`MAX_IDEMPOTENCY_KEY_LEN`] visible
/// ASCII characters), or `None`.
pub fn idempotency_key_error(key: &str) -> Option<String> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Some(format!(
            "the {IDEMPOTENCY_KEY_HEADER} header must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} bytes long, got {}",
            key.len()
        ));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Some(format!(
            "the {IDEMPOTENCY_KEY_HEADER} header must be visible ASCII characters (no spaces or control characters)"
        ));
    }
    None
}

/// A fresh random idempotency key (a UUID).
pub fn new_idempotency_key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Which log of a task: its setup (pod creation, image pulls, clone…) or one of its steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LogStep {
    /// The task's setup log.
    Setup,
    /// The log of step N (0-based, the index in the task's step list).
    Step(usize),
}

/// The `step=` query value: `setup` or the step's index.
impl fmt::Display for LogStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogStep::Setup => f.write_str("setup"),
            LogStep::Step(n) => write!(f, "{n}"),
        }
    }
}

/// Parses the `step=` query value: `setup` or a step index.
impl FromStr for LogStep {
    type Err = BadLogStep;

    fn from_str(s: &str) -> Result<LogStep, BadLogStep> {
        if s == "setup" {
            return Ok(LogStep::Setup);
        }
        s.parse::<usize>()
            .map(LogStep::Step)
            .map_err(|_| BadLogStep { step: s.to_owned() })
    }
}

/// A step name that is neither `setup` nor a step index.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("step {step:?} is neither `setup` nor a step index")]
pub struct BadLogStep {
    /// The text given.
    pub step: String,
}

/// The git reference a run is for; selects the config's `when` clauses. A run request
/// gives exactly one of them (as Agola's): the server classifies it, so `ref:
/// refs/heads/x` is a branch run for `x`, `refs/tags/y` a tag run and a pull-request ref
/// (`refs/pull/N/head`, `refs/merge-requests/N/head`, or the request's
/// `pull_request_ref_regexes`) a pull-request run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RefSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
}

/// A config file as sent by the client: its repository-relative path (for error
/// messages and to pick the format) and its text.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConfigFile {
    pub path: String,
    pub content: String,
}

/// `POST /api/v1/runs`: one run per config run whose `when` matches. A config that
/// cannot be parsed still records one run, in phase `setuperror`, whose config's
/// `setup_errors` say why (`201` like any other; Agola's gateway does the same).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateRunRequest {
    /// `/project/<id>/branch/<b>`, `/user/<id>/branch/<b>`, …
    pub group: String,
    pub config: ConfigFile,
    #[serde(default)]
    pub reference: RefSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceRef>,
    /// Values for `from_variable`.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// Run-level environment (wins over task environment).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, String>))]
    pub environment: Env,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_group: Option<String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Only these tasks and their ancestors (by name); empty = all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<String>,
    /// Only the config run with this name; empty = every matching run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_name: Option<String>,
    /// The commit the run is for (`AGOLA_GIT_COMMITSHA`, the `commit_sha` annotation);
    /// defaults to a git source's commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_sha: Option<String>,
    /// The commit message (the `message` annotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Patterns of pull-request refs, each with a capture group for the pull request id;
    /// empty = the server's (by default Agola's `refs/pull/(\d+)/head` and
    /// `refs/merge-requests/(\d+)/head`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pull_request_ref_regexes: Vec<String>,
}

/// The runs a `POST /api/v1/runs` created; for a config that cannot be parsed, the one run
/// in phase `setuperror` that records why (see [`CreateRunResponse::setup_errors`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateRunResponse {
    pub runs: Vec<RunResponse>,
}

impl CreateRunResponse {
    /// The setup errors (`file:line:column: field: message`) of the created runs that are
    /// in phase `setuperror`; empty when every run can start.
    pub fn setup_errors(&self) -> Vec<&str> {
        self.runs
            .iter()
            .filter(|r| r.run.phase == RunPhase::SetupError)
            .flat_map(|r| r.run_config.setup_errors.iter().map(String::as_str))
            .collect()
    }
}

/// `GET /api/v1/whoami`: the role of the caller's token and whether it may act on runs
/// (create, restart, stop, cancel, approve). The web page shows action buttons by it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WhoAmI {
    /// `admin`, `user` or `read-only`.
    pub role: String,
    pub can_act: bool,
}

/// `POST /api/v1/runs/{id}/restart`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RestartRunRequest {
    /// Re-run every task; otherwise only failed tasks and their descendants.
    #[serde(default)]
    pub from_start: bool,
    /// Replaces the run-level environment when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<BTreeMap<String, String>>))]
    pub environment: Option<Env>,
    /// Re-run these tasks (by name or id) and everything that depends on them, keeping
    /// the others; not with `from_start`. Empty: as `from_start` says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<String>,
}

/// A run with its config and, while it waits, why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunResponse {
    pub run: Run,
    pub run_config: RunConfig,
    /// Why the run, or each not-started task (by task name), is waiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingReasons>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PendingReasons {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    #[serde(default)]
    pub tasks: BTreeMap<String, String>,
}

/// `GET /api/v1/runs` query.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ListRunsQuery {
    /// Group path prefix on segment boundaries (`/project/p1` matches `/project/p1/…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phase: Vec<RunPhase>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub result: Vec<RunResult>,
    /// Only the last run of each group.
    #[serde(default)]
    pub last_run: bool,
    /// Continue after this cursor (from a previous page's `next`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Oldest first (default newest first).
    #[serde(default)]
    pub asc: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunsPage {
    pub runs: Vec<Run>,
    /// Cursor of the next page, absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RunAction {
    /// Running runs: stop their tasks; result becomes stopped.
    Stop,
    /// Queued runs: never start.
    Cancel,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunActionRequest {
    pub action: RunAction,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum TaskActionRequest {
    Approve {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        approver: Option<String>,
    },
    SetAnnotations {
        annotations: BTreeMap<String, String>,
    },
}

/// `POST /api/v1/executors/{id}` reply: how long the registration lives without a
/// heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeartbeatResponse {
    pub lease_ttl_secs: i64,
    pub executor: Executor,
    /// The executor's own credential (`cairnx.<id>.<secret>`), given once when a
    /// registration (or admin) token registers it: every later call uses it, and it is
    /// valid only for this executor's tasks, blobs and heartbeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// The role of a token made with `cairn token create` (the admin token of the data dir
/// and the per-executor credentials are not made that way).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum TokenRole {
    /// Everything, as the data dir's token.
    Admin,
    /// Create, act on and read runs.
    User,
    /// `GET` only.
    ReadOnly,
    /// Only registers executors (exchanged for a per-executor credential).
    Registration,
    /// Only reads `GET /metrics` (a Prometheus scraper).
    Metrics,
}

impl TokenRole {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenRole::Admin => "admin",
            TokenRole::User => "user",
            TokenRole::ReadOnly => "read-only",
            TokenRole::Registration => "registration",
            TokenRole::Metrics => "metrics",
        }
    }

    pub fn parse(s: &str) -> Option<TokenRole> {
        match s {
            "admin" => Some(TokenRole::Admin),
            "user" => Some(TokenRole::User),
            "read-only" | "readonly" | "read" => Some(TokenRole::ReadOnly),
            "registration" | "executor" => Some(TokenRole::Registration),
            "metrics" => Some(TokenRole::Metrics),
            _ => None,
        }
    }
}

/// `POST /api/v1/tokens` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateTokenRequest {
    pub role: TokenRole,
    #[serde(default)]
    pub name: String,
}

/// A stored token, without its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub role: TokenRole,
    pub created: chrono::DateTime<chrono::Utc>,
}

/// `POST /api/v1/tokens` reply: the token itself, shown only this once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateTokenResponse {
    pub token: String,
    #[serde(flatten)]
    pub info: TokenInfo,
}

/// `GET /api/v1/tokens` reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokensResponse {
    pub tokens: Vec<TokenInfo>,
}

/// `GET /api/v1/executors/{id}/tasks?after=R&wait=S`: the executor's tasks as of
/// `revision`; a long poll returns early when one of them changes after `after`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExecutorTasksResponse {
    pub revision: i64,
    pub tasks: Vec<AssignedTask>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExecutorsResponse {
    pub executors: Vec<Executor>,
    /// Unfinished executor tasks per executor id.
    #[serde(default)]
    pub assigned: BTreeMap<String, usize>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExecutorTaskResponse {
    pub task: ExecutorTask,
}

/// `POST /api/v1/sources`: where an uploaded working-tree snapshot was stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SourceUploadResponse {
    pub source: SourceRef,
}

/// `GET /api/v1/cluster`: the answering node's view of itself and of the cluster.
/// `cairn cluster status` asks every member for it. The fields after `revision` came
/// later: a node that does not send them reads as their defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeInfo {
    pub node_id: u64,
    pub leader_id: Option<u64>,
    /// Whether this node's scheduler holds the scheduler lock.
    pub scheduler_active: bool,
    /// The store revision this node has applied.
    pub revision: i64,
    /// Cairn's version (`CARGO_PKG_VERSION`) on this node.
    #[serde(default)]
    pub version: String,
    /// The peer protocol version this node speaks.
    #[serde(default)]
    pub peer_protocol: u32,
    #[serde(default)]
    pub cluster_id: u64,
    /// The URL this node is reached at (its address in the membership).
    #[serde(default)]
    pub addr: String,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub term: u64,
    /// The highest log index this node knows committed (exact on the leader).
    #[serde(default)]
    pub committed: Option<u64>,
    #[serde(default)]
    pub applied: Option<u64>,
    #[serde(default)]
    pub voters: Vec<ClusterMember>,
    #[serde(default)]
    pub learners: Vec<ClusterMember>,
    /// Whether this node has switched to maintenance mode.
    #[serde(default)]
    pub maintenance: bool,
    /// The store's active alarms, e.g. `memberID:1f alarm:NOSPACE`.
    #[serde(default)]
    pub alarms: Vec<String>,
    /// The store's size on this node's disk.
    #[serde(default)]
    pub db_size: u64,
}

/// A member of the store's Raft membership.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterMember {
    pub id: u64,
    pub addr: String,
}

/// One node's view of maintenance mode (`GET /api/v1/maintenance`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeMode {
    pub node_id: u64,
    /// Whether this node has switched to maintenance.
    pub maintenance: bool,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub since: crate::run::Time,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MaintenanceStatus {
    /// Whether maintenance is requested (the key exists).
    pub requested: bool,
    /// Each live node's current mode.
    pub nodes: Vec<NodeMode>,
}

/// `POST /api/v1/import` reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImportResponse {
    pub entries: u64,
    pub runs: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_errors_are_those_of_the_setuperror_runs() {
        let run: Run = serde_json::from_str(
            r#"{"id":"1","name":"Setup Error","counter":1,"group":"/user/u/branch/main","phase":"setuperror"}"#,
        )
        .expect("a run");
        let mut bad = RunResponse {
            run,
            run_config: RunConfig::default(),
            pending: None,
        };
        bad.run.phase = RunPhase::SetupError;
        bad.run_config.setup_errors = vec![".agola/config.yml:3:5: runs: bad".into()];
        let mut good = bad.clone();
        good.run.phase = RunPhase::Queued;
        good.run_config.setup_errors = vec!["not a setup error run".into()];
        let created = CreateRunResponse {
            runs: vec![good.clone(), bad],
        };
        assert_eq!(created.setup_errors(), [".agola/config.yml:3:5: runs: bad"]);
        let fine = CreateRunResponse { runs: vec![good] };
        assert!(fine.setup_errors().is_empty());
    }

    #[test]
    fn steps_are_named_setup_or_by_index() {
        assert_eq!(LogStep::Setup.to_string(), "setup");
        assert_eq!(LogStep::Step(4).to_string(), "4");
    }

    #[test]
    fn log_steps_parse_back_and_a_bad_one_is_named_in_the_error() {
        assert_eq!("setup".parse::<LogStep>(), Ok(LogStep::Setup));
        assert_eq!("12".parse::<LogStep>(), Ok(LogStep::Step(12)));
        for step in [LogStep::Setup, LogStep::Step(0), LogStep::Step(7)] {
            assert_eq!(step.to_string().parse::<LogStep>(), Ok(step));
        }
        for bad in ["x", "", "-1", "Setup", " 1"] {
            let e = bad.parse::<LogStep>().expect_err("not a step");
            assert_eq!(e.step, bad);
            assert_eq!(
                e.to_string(),
                format!("step {bad:?} is neither `setup` nor a step index")
            );
        }
    }
}

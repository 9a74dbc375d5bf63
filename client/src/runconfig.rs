//! The immutable definition of a run: its tasks, their DAG and their steps, as expanded
//! from a config file when the run is created (`RunConfig`, `RunConfigTask`, `Step`).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Environment variables, ordered by name so serialized configs are stable.
pub type Env = BTreeMap<String, String>;

/// Everything about a run that never changes once it is created.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunConfig {
    /// Same as the run's id.
    pub id: String,
    pub name: String,
    pub group: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub setup_errors: Vec<String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Values identical across re-creations of the run (CI=true, repository data…).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, String>))]
    pub static_environment: Env,
    /// Per-run values (user variables); replaced on restart. Wins over everything.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, String>))]
    pub environment: Env,
    /// Tasks by id.
    #[serde(default)]
    pub tasks: BTreeMap<String, RunConfigTask>,
    /// Cache namespace; when absent the run group's root is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_group: Option<String>,
    /// Where the run's source comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceRef>,
}

/// The code a run checks out in its `clone` steps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceRef {
    /// A working-tree snapshot uploaded to the server (direct runs); `object` is its
    /// object-storage key.
    Snapshot { object: String },
    /// A git repository at a commit.
    Git {
        url: String,
        #[serde(default, rename = "ref")]
        git_ref: String,
        #[serde(default)]
        commit: String,
    },
}

/// The most times a task lost with its executor runs again, however it is asked (a
/// config's `retry_lost_tasks`, `--retry-lost-tasks`, or a run config from an import).
pub const MAX_RETRY_LOST: u32 = 10;

/// One task of a run config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunConfigTask {
    /// Fresh for every creation or re-run of the task.
    pub id: String,
    pub name: String,
    /// DAG depth: 0 for tasks without parents, else 1 + the deepest parent.
    pub level: u32,
    /// Parents by task id.
    #[serde(default)]
    pub depends: BTreeMap<String, Depend>,
    pub runtime: Runtime,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, String>))]
    pub environment: Env,
    #[serde(default)]
    pub working_dir: String,
    #[serde(default)]
    pub shell: String,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub steps: Vec<Step>,
    #[serde(default)]
    pub ignore_failure: bool,
    #[serde(default)]
    pub needs_approval: bool,
    /// Excluded by `when`: created skipped.
    #[serde(default)]
    pub skip: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub docker_registries_auth: BTreeMap<String, RegistryAuth>,
    /// Seconds after which the executor stops the task and fails it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// Names of the environment variables (of the task, its containers or its steps)
    /// whose values came from `from_variable`: secrets, redacted from step logs.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub secret_environment: BTreeSet<String>,
    /// How many times the task runs again when an attempt is lost with its executor
    /// (Cairn's `retry_lost_tasks`, at most [`MAX_RETRY_LOST`]); `None`: the server's
    /// `--retry-lost-tasks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_lost: Option<u32>,
}

/// An edge of the DAG: the parent and the parent outcomes that let the child run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Depend {
    pub task_id: String,
    /// Empty means `[on_success]`.
    #[serde(default)]
    pub conditions: Vec<DependCondition>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DependCondition {
    OnSuccess,
    OnFailure,
    OnSkipped,
}

/// Where a task runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Runtime {
    #[serde(default, rename = "type")]
    pub kind: RuntimeType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<Arch>,
    #[serde(default)]
    pub containers: Vec<Container>,
    /// Labels an executor must carry (all of them, same values) to get this task.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RuntimeType {
    #[default]
    Pod,
}

/// CPU architectures, named as Go (and Agola) name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Arch {
    #[serde(rename = "386")]
    I386,
    #[serde(rename = "amd64")]
    Amd64,
    #[serde(rename = "arm")]
    Arm,
    #[serde(rename = "arm64")]
    Arm64,
}

impl Arch {
    pub const ALL: [Arch; 4] = [Arch::I386, Arch::Amd64, Arch::Arm, Arch::Arm64];

    pub fn as_str(self) -> &'static str {
        match self {
            Arch::I386 => "386",
            Arch::Amd64 => "amd64",
            Arch::Arm => "arm",
            Arch::Arm64 => "arm64",
        }
    }

    pub fn parse(s: &str) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// The architecture this program was built for, if it is one of ours.
    pub fn host() -> Option<Arch> {
        match std::env::consts::ARCH {
            "x86" => Some(Arch::I386),
            "x86_64" => Some(Arch::Amd64),
            "arm" => Some(Arch::Arm),
            "aarch64" => Some(Arch::Arm64),
            _ => None,
        }
    }
}

impl std::str::FromStr for Arch {
    type Err = crate::run::UnknownName;

    fn from_str(s: &str) -> Result<Arch, crate::run::UnknownName> {
        Arch::parse(s).ok_or_else(|| crate::run::UnknownName::new("arch", s))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Container {
    pub image: String,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, String>))]
    pub environment: Env,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub privileged: bool,
    #[serde(default)]
    pub entrypoint: String,
    /// Volumes mounted into the container (Agola's container `volumes`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
}

/// A volume of a container: today only tmpfs, as in Agola.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Volume {
    /// The absolute path inside the container.
    pub path: String,
    /// A tmpfs mounted at `path`; `None` is not valid today (Agola accepts only tmpfs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs: Option<TmpfsVolume>,
}

/// A tmpfs volume; `size_bytes` limits it (`None`: the engine's default).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TmpfsVolume {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
}

/// Credentials for one registry host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegistryAuth {
    #[serde(default, rename = "type")]
    pub kind: RegistryAuthType,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    #[serde(default)]
    pub auth: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RegistryAuthType {
    #[default]
    Basic,
    Encodedauth,
}

/// A task step, discriminated by `type`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Step {
    Clone(CloneStep),
    Run(RunStep),
    SaveToWorkspace(SaveToWorkspaceStep),
    RestoreWorkspace(RestoreWorkspaceStep),
    SaveCache(SaveCacheStep),
    RestoreCache(RestoreCacheStep),
}

impl Step {
    pub fn name(&self) -> &str {
        match self {
            Step::Clone(s) => &s.name,
            Step::Run(s) => &s.name,
            Step::SaveToWorkspace(s) => &s.name,
            Step::RestoreWorkspace(s) => &s.name,
            Step::SaveCache(s) => &s.name,
            Step::RestoreCache(s) => &s.name,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CloneStep {
    #[serde(default)]
    pub name: String,
    /// Shallow clone with this many commits (Agola's `depth`); `None`: full history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<u32>,
    /// Also clone the submodules, recursively (Agola's `recurse_submodules`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recurse_submodules: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunStep {
    #[serde(default)]
    pub name: String,
    pub command: String,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, String>))]
    pub environment: Env,
    #[serde(default)]
    pub working_dir: String,
    #[serde(default)]
    pub shell: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<bool>,
}

/// Files to archive: globs relative to `source_dir`, stored under `dest_dir`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SaveContent {
    #[serde(default)]
    pub source_dir: String,
    #[serde(default)]
    pub dest_dir: String,
    #[serde(default)]
    pub paths: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SaveToWorkspaceStep {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub contents: Vec<SaveContent>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RestoreWorkspaceStep {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub dest_dir: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SaveCacheStep {
    #[serde(default)]
    pub name: String,
    pub key: String,
    #[serde(default)]
    pub contents: Vec<SaveContent>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RestoreCacheStep {
    #[serde(default)]
    pub name: String,
    pub keys: Vec<String>,
    #[serde(default)]
    pub dest_dir: String,
}

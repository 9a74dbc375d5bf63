//! The typed config tree, as decoded from a config file: [`Config`] → [`ConfigRun`] →
//! [`ConfigTask`] with its runtime, steps and dependencies. Values keep what the file
//! said (defaults are applied at expansion); names and dependencies keep their
//! [`Loc`] so validation can point at them.

use std::collections::BTreeMap;

use cairn_client::runconfig::{
    Arch, CloneStep, DependCondition, RegistryAuthType, RestoreCacheStep, RestoreWorkspaceStep,
    RuntimeType, SaveCacheStep, SaveToWorkspaceStep, Volume,
};

use super::error::ConfigError;
use super::when::When;

/// Where something is in the file: 1-based line and column, and its field path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Loc {
    pub line: usize,
    pub column: usize,
    pub field: String,
}

impl Loc {
    pub fn error(&self, file: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::new(file, self.line, self.column, self.field.clone(), message)
    }
}

/// A whole config file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Config {
    /// The path the config was read from, for error messages.
    pub file: String,
    pub runs: Vec<ConfigRun>,
    pub docker_registries_auth: BTreeMap<String, ConfigRegistryAuth>,
    /// Seconds (`task_timeout_interval` or its alias `task_timeout`); the outermost
    /// default for every task. `Some(0)`: no timeout, overriding an outer one.
    pub task_timeout: Option<u64>,
}

impl Config {
    pub fn run(&self, name: &str) -> Option<&ConfigRun> {
        self.runs.iter().find(|r| r.name == name)
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfigRun {
    pub name: String,
    /// Where the run's `name` is (or the run itself when the name is missing).
    pub loc: Loc,
    pub tasks: Vec<ConfigTask>,
    pub when: Option<When>,
    pub docker_registries_auth: BTreeMap<String, ConfigRegistryAuth>,
    pub task_timeout: Option<u64>,
}

impl ConfigRun {
    pub fn task(&self, name: &str) -> Option<&ConfigTask> {
        self.tasks.iter().find(|t| t.name == name)
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfigTask {
    pub name: String,
    /// Where the task's `name` is (or the task itself when the name is missing).
    pub loc: Loc,
    pub runtime: ConfigRuntime,
    pub environment: BTreeMap<String, ConfigValue>,
    /// `None` = the default, `~/project`.
    pub working_dir: Option<String>,
    /// `None` = the default, `/bin/sh -e`.
    pub shell: Option<String>,
    pub user: Option<String>,
    pub steps: Vec<ConfigStep>,
    pub depends: Vec<ConfigDepend>,
    pub ignore_failure: bool,
    pub approval: bool,
    pub when: Option<When>,
    pub docker_registries_auth: BTreeMap<String, ConfigRegistryAuth>,
    pub task_timeout: Option<u64>,
    /// Cairn's `retry_lost_tasks`: runs again after an attempt lost with its executor.
    pub retry_lost: Option<u32>,
}

/// A value that is either written in the file or read from a variable at run creation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigValue {
    Literal(String),
    /// `{from_variable: name}`; an unknown variable resolves to the empty string.
    FromVariable(String),
}

impl ConfigValue {
    pub fn resolve(&self, variables: &BTreeMap<String, String>) -> String {
        match self {
            ConfigValue::Literal(s) => s.clone(),
            ConfigValue::FromVariable(name) => variables.get(name).cloned().unwrap_or_default(),
        }
    }
}

impl Default for ConfigValue {
    fn default() -> Self {
        ConfigValue::Literal(String::new())
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfigRuntime {
    pub kind: RuntimeType,
    pub arch: Option<Arch>,
    pub containers: Vec<ConfigContainer>,
    /// Labels an executor must carry to get the task (Cairn).
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfigContainer {
    pub image: String,
    pub environment: BTreeMap<String, ConfigValue>,
    pub user: String,
    pub privileged: bool,
    pub entrypoint: String,
    /// Agola's container volumes (tmpfs).
    pub volumes: Vec<Volume>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfigRegistryAuth {
    pub kind: RegistryAuthType,
    pub username: ConfigValue,
    pub password: ConfigValue,
    pub auth: ConfigValue,
}

/// A step as written; `Run` keeps its environment unresolved.
#[derive(Clone, Debug, PartialEq)]
pub enum ConfigStep {
    /// `depth` and `recurse_submodules` as Agola's clone step.
    Clone(CloneStep),
    Run(ConfigRunStep),
    SaveToWorkspace(SaveToWorkspaceStep),
    RestoreWorkspace(RestoreWorkspaceStep),
    SaveCache(SaveCacheStep),
    RestoreCache(RestoreCacheStep),
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfigRunStep {
    pub name: String,
    pub command: String,
    pub environment: BTreeMap<String, ConfigValue>,
    pub working_dir: String,
    pub shell: String,
    pub tty: Option<bool>,
}

/// A dependency on another task of the same run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigDepend {
    pub task: String,
    /// As written; empty means on_success.
    pub conditions: Vec<DependCondition>,
    pub loc: Loc,
}

//! Decoding of the document tree: the top level, runs, tasks, runtimes, containers and
//! docker registry auth, into the [`model`](super::model) types. Steps, depends and
//! `when` have their own files. Checks that need only one node (required keys, types,
//! lengths, containers ≥ 1) happen here; checks across nodes are in `validate.rs`.

use std::collections::BTreeMap;

use cairn_client::runconfig::{Arch, RegistryAuthType, RuntimeType};
use saphyr::MarkedYamlOwned;

use super::decode::{Decoder, Fields};
use super::depend::decode_depends;
use super::model::{
    Config, ConfigContainer, ConfigRegistryAuth, ConfigRun, ConfigRuntime, ConfigTask,
};
use super::step::decode_step;
use super::when::decode_when;
use super::yaml::Node;

/// Longest run or task name.
pub const MAX_NAME_LEN: usize = 100;

pub(super) fn decode_config(dec: &mut Decoder<'_>, root: &MarkedYamlOwned) -> Config {
    let root = Node::root(root);
    let mut config = Config {
        file: dec.file.to_string(),
        ..Config::default()
    };
    let Some(fields) = dec.fields(
        &root,
        "config",
        &["runs", "docker_registries_auth", "task_timeout"],
    ) else {
        return config;
    };
    config.docker_registries_auth = registries(dec, &fields);
    config.task_timeout = fields.get("task_timeout").and_then(|n| dec.duration(n));
    if let Some(runs) = fields.require(dec, "runs")
        && let Some(items) = dec.list(&runs)
    {
        if items.is_empty() {
            dec.error(&runs, "a config needs at least one run");
        }
        config.runs = items.iter().filter_map(|n| decode_run(dec, n)).collect();
    }
    config
}

fn decode_run(dec: &mut Decoder<'_>, node: &Node<'_>) -> Option<ConfigRun> {
    let fields = dec.fields(
        node,
        "run",
        &[
            "name",
            "tasks",
            "when",
            "docker_registries_auth",
            "task_timeout",
        ],
    )?;
    let (name, loc) = name(dec, &fields, "run");
    let mut run = ConfigRun {
        name,
        loc,
        when: fields.get("when").and_then(|n| decode_when(dec, n)),
        docker_registries_auth: registries(dec, &fields),
        task_timeout: fields.get("task_timeout").and_then(|n| dec.duration(n)),
        ..ConfigRun::default()
    };
    if let Some(tasks) = fields.require(dec, "tasks")
        && let Some(items) = dec.list(&tasks)
    {
        if items.is_empty() {
            dec.error(&tasks, "a run needs at least one task");
        }
        run.tasks = items.iter().filter_map(|n| decode_task(dec, n)).collect();
    }
    Some(run)
}

const TASK_KEYS: [&str; 13] = [
    "name",
    "runtime",
    "environment",
    "working_dir",
    "shell",
    "user",
    "steps",
    "depends",
    "ignore_failure",
    "approval",
    "when",
    "docker_registries_auth",
    "task_timeout",
];

fn decode_task(dec: &mut Decoder<'_>, node: &Node<'_>) -> Option<ConfigTask> {
    let fields = dec.fields(node, "task", &TASK_KEYS)?;
    let (name, loc) = name(dec, &fields, "task");
    let string = |dec: &mut Decoder<'_>, key| fields.get(key).and_then(|n| dec.string(n));
    let flag = |dec: &mut Decoder<'_>, key| {
        fields
            .get(key)
            .and_then(|n| dec.bool(n))
            .unwrap_or_default()
    };
    let task = ConfigTask {
        name,
        loc,
        runtime: fields
            .require(dec, "runtime")
            .and_then(|n| decode_runtime(dec, &n))
            .unwrap_or_default(),
        environment: fields
            .get("environment")
            .map(|n| dec.env(n))
            .unwrap_or_default(),
        working_dir: string(dec, "working_dir"),
        shell: string(dec, "shell"),
        user: string(dec, "user"),
        steps: fields
            .get("steps")
            .and_then(|n| dec.list(n))
            .map(|items| items.iter().filter_map(|n| decode_step(dec, n)).collect())
            .unwrap_or_default(),
        depends: fields
            .get("depends")
            .map(|n| decode_depends(dec, n))
            .unwrap_or_default(),
        ignore_failure: flag(dec, "ignore_failure"),
        approval: flag(dec, "approval"),
        when: fields.get("when").and_then(|n| decode_when(dec, n)),
        docker_registries_auth: registries(dec, &fields),
        task_timeout: fields.get("task_timeout").and_then(|n| dec.duration(n)),
    };
    Some(task)
}

/// A run's or task's `name`: required, non-empty, at most [`MAX_NAME_LEN`] characters.
fn name(dec: &mut Decoder<'_>, fields: &Fields<'_>, what: &str) -> (String, super::model::Loc) {
    let Some(node) = fields.require(dec, "name") else {
        return (String::new(), dec.loc(&fields.node));
    };
    let loc = dec.loc(&node);
    let Some(name) = dec.string(&node) else {
        return (String::new(), loc);
    };
    if name.trim().is_empty() {
        dec.error(&node, format!("a {what} name must not be empty"));
    } else if name.chars().count() > MAX_NAME_LEN {
        dec.error(
            &node,
            format!("a {what} name must be at most {MAX_NAME_LEN} characters"),
        );
    }
    (name, loc)
}

fn decode_runtime(dec: &mut Decoder<'_>, node: &Node<'_>) -> Option<ConfigRuntime> {
    let fields = dec.fields(node, "runtime", &["type", "arch", "containers", "labels"])?;
    let mut runtime = ConfigRuntime::default();
    if let Some(kind) = fields.get("type")
        && let Some(text) = dec.string(kind)
    {
        match text.as_str() {
            "pod" => runtime.kind = RuntimeType::Pod,
            other => dec.error(
                kind,
                format!("unknown runtime type `{other}`; expected pod"),
            ),
        }
    }
    if let Some(arch) = fields.get("arch")
        && let Some(text) = dec.stringish(arch)
    {
        runtime.arch = Arch::parse(&text);
        if runtime.arch.is_none() {
            let all: Vec<_> = Arch::ALL.iter().map(|a| a.as_str()).collect();
            dec.error(
                arch,
                format!("unknown arch `{text}`; expected one of {}", all.join(", ")),
            );
        }
    }
    match fields.get("containers") {
        None => dec.error(
            node,
            "a runtime needs at least one container (`containers`)",
        ),
        Some(list) => {
            if let Some(items) = dec.list(list) {
                if items.is_empty() {
                    dec.error(list, "a runtime needs at least one container");
                }
                runtime.containers = items
                    .iter()
                    .filter_map(|n| decode_container(dec, n))
                    .collect();
            }
        }
    }
    runtime.labels = fields
        .get("labels")
        .map(|n| dec.string_map(n))
        .unwrap_or_default();
    Some(runtime)
}

fn decode_container(dec: &mut Decoder<'_>, node: &Node<'_>) -> Option<ConfigContainer> {
    let fields = dec.fields(
        node,
        "container",
        &["image", "environment", "user", "privileged", "entrypoint"],
    )?;
    let image_node = fields.require(dec, "image")?;
    let image = dec.string(&image_node)?;
    if image.trim().is_empty() {
        dec.error(&image_node, "a container image must not be empty");
    }
    let string = |dec: &mut Decoder<'_>, key| {
        fields
            .get(key)
            .and_then(|n| dec.string(n))
            .unwrap_or_default()
    };
    Some(ConfigContainer {
        image,
        environment: fields
            .get("environment")
            .map(|n| dec.env(n))
            .unwrap_or_default(),
        user: string(dec, "user"),
        privileged: fields
            .get("privileged")
            .and_then(|n| dec.bool(n))
            .unwrap_or_default(),
        entrypoint: string(dec, "entrypoint"),
    })
}

/// `docker_registries_auth` of a map, if any: registry host → credentials.
fn registries(dec: &mut Decoder<'_>, fields: &Fields<'_>) -> BTreeMap<String, ConfigRegistryAuth> {
    let mut out = BTreeMap::new();
    let Some(node) = fields.get("docker_registries_auth") else {
        return out;
    };
    for (host, value) in dec.map_entries(node).unwrap_or_default() {
        let Some(f) = dec.fields(
            &value,
            "registry auth",
            &["type", "username", "password", "auth"],
        ) else {
            continue;
        };
        let mut auth = ConfigRegistryAuth::default();
        if let Some(kind) = f.get("type")
            && let Some(text) = dec.string(kind)
        {
            match text.as_str() {
                "basic" => auth.kind = RegistryAuthType::Basic,
                "encodedauth" => auth.kind = RegistryAuthType::Encodedauth,
                other => dec.error(
                    kind,
                    format!("unknown registry auth type `{other}`; expected basic or encodedauth"),
                ),
            }
        }
        if let Some(v) = f.get("username").and_then(|n| dec.value(n)) {
            auth.username = v;
        }
        if let Some(v) = f.get("password").and_then(|n| dec.value(n)) {
            auth.password = v;
        }
        if let Some(a) = f.get("auth").and_then(|n| dec.string(n)) {
            auth.auth = a;
        }
        out.insert(host, auth);
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::configfile::{ConfigError, parse};

    fn errors(yaml: &str) -> Vec<ConfigError> {
        parse("c.yml", yaml).expect_err("invalid").0
    }

    fn one_error(yaml: &str) -> ConfigError {
        let mut e = errors(yaml);
        assert_eq!(e.len(), 1, "{e:?}");
        e.remove(0)
    }

    const TASK: &str = "runs:\n  - name: ci\n    tasks:\n      - name: t\n        runtime: { containers: [ { image: alpine } ] }\n";

    #[test]
    fn runs_are_required_and_not_empty() {
        let e = one_error("docker_registries_auth: {}\n");
        assert_eq!((e.line, e.column, e.field.as_str()), (1, 1, "runs"));
        assert_eq!(e.message, "missing required key `runs`");
        let e = one_error("runs: []\n");
        assert_eq!((e.line, e.column), (1, 7));
        assert_eq!(e.message, "a config needs at least one run");
    }

    #[test]
    fn wrong_types_name_what_was_expected_and_found() {
        let e = one_error(&format!("{TASK}        shell: [bash]\n"));
        assert_eq!((e.line, e.column), (6, 16));
        assert_eq!(e.field, "runs[0].tasks[0].shell");
        assert_eq!(e.message, "expected a string, found a list");
    }

    #[test]
    fn unknown_keys_list_the_allowed_ones() {
        let e = one_error(&format!("{TASK}        enviroment: {{ A: b }}\n"));
        assert_eq!((e.line, e.column), (6, 9));
        assert_eq!(e.field, "runs[0].tasks[0].enviroment");
        assert_eq!(
            e.message,
            "unknown key `enviroment` in task; expected one of name, runtime, environment, \
             working_dir, shell, user, steps, depends, ignore_failure, approval, when, \
             docker_registries_auth, task_timeout"
        );
    }

    #[test]
    fn a_task_needs_a_name_and_a_runtime() {
        let e = errors("runs:\n  - name: ci\n    tasks:\n      - steps: []\n");
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!((e[0].line, e[0].column), (4, 9));
        assert_eq!(e[0].field, "runs[0].tasks[0].name");
        assert_eq!(e[1].field, "runs[0].tasks[0].runtime");
    }

    #[test]
    fn runtime_checks_containers_images_and_arch() {
        let yaml = "runs:\n  - name: ci\n    tasks:\n      - name: t\n        runtime: { type: vm, arch: sparc, containers: [ { image: '' }, { user: root } ] }\n";
        let e = errors(yaml);
        let messages: Vec<_> = e.iter().map(|e| (e.column, e.message.as_str())).collect();
        assert_eq!(
            messages,
            [
                (26, "unknown runtime type `vm`; expected pod"),
                (
                    36,
                    "unknown arch `sparc`; expected one of 386, amd64, arm, arm64"
                ),
                (66, "a container image must not be empty"),
                (72, "missing required key `image`"),
            ]
        );
        let e = one_error(
            "runs:\n  - name: ci\n    tasks:\n      - name: t\n        runtime: { arch: 386 }\n",
        );
        assert_eq!(
            e.message,
            "a runtime needs at least one container (`containers`)"
        );
    }

    #[test]
    fn names_must_be_short_and_not_empty() {
        let long = "n".repeat(101);
        let e = one_error(
            "runs:\n  - name: ci\n    tasks:\n      - name: ''\n        runtime: { containers: [ { image: a } ] }\n",
        );
        assert_eq!(e.message, "a task name must not be empty");
        let e = errors(&format!(
            "runs:\n  - name: {long}\n    tasks: [ {{ name: t, runtime: {{ containers: [ {{ image: a }} ] }} }} ]\n"
        ));
        assert_eq!(e[0].message, "a run name must be at most 100 characters");
        assert_eq!((e[0].line, e[0].column), (2, 11));
    }

    #[test]
    fn task_timeouts_accept_durations_and_seconds_at_every_level() {
        let yaml = "task_timeout: 1h\nruns:\n  - name: ci\n    task_timeout: 90\n    tasks:\n      - name: t\n        task_timeout: 1h30m\n        runtime: { containers: [ { image: a } ] }\n";
        let config = parse("c.yml", yaml).expect("valid").config;
        assert_eq!(config.task_timeout, Some(3600));
        assert_eq!(config.runs[0].task_timeout, Some(90));
        assert_eq!(config.runs[0].tasks[0].task_timeout, Some(5400));
        let e = one_error(&format!("{TASK}        task_timeout: 0\n"));
        assert_eq!(e.message, "a timeout must be longer than zero");
        assert_eq!((e.line, e.column), (6, 23));
    }

    #[test]
    fn environment_values_are_literals_numbers_or_variables() {
        let yaml = format!(
            "{TASK}        environment: {{ A: 1.10, B: true, C: {{ from_variable: c }}, D: [x], E: {{ from_var: e }} }}\n"
        );
        let e = errors(&yaml);
        assert_eq!(e.len(), 3, "{e:?}");
        assert_eq!(e[0].field, "runs[0].tasks[0].environment.D");
        assert_eq!(
            e[0].message,
            "expected a string or {from_variable: name}, found a list"
        );
        assert_eq!(e[1].message, "missing required key `from_variable`");
        assert_eq!(e[2].field, "runs[0].tasks[0].environment.E.from_var");
    }

    #[test]
    fn registry_auth_types_are_checked() {
        let yaml = format!(
            "{TASK}        docker_registries_auth: {{ r.io: {{ type: token, username: u }} }}\n"
        );
        let e = one_error(&yaml);
        assert_eq!(e.field, "runs[0].tasks[0].docker_registries_auth.r.io.type");
        assert_eq!(
            e.message,
            "unknown registry auth type `token`; expected basic or encodedauth"
        );
    }
}

//! Decoding of the document tree: the top level, runs, tasks, runtimes, containers and
//! docker registry auth, into the [`model`](super::model) types. Steps, depends and
//! `when` have their own files. Checks that need only one node (required keys, types,
//! lengths, containers ≥ 1) happen here; checks across nodes are in `validate.rs`.

use std::collections::BTreeMap;

use cairn_client::runconfig::{
    Arch, MAX_RETRY_LOST, RegistryAuthType, RuntimeType, TmpfsVolume, Volume,
};
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
        &[
            "runs",
            "docker_registries_auth",
            "task_timeout_interval",
            "task_timeout",
        ],
    ) else {
        return config;
    };
    config.docker_registries_auth = registries(dec, &fields);
    config.task_timeout = timeout(dec, &fields);
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
    let node = node.named(peek_name(node).as_deref());
    let fields = dec.fields(
        &node,
        "run",
        &[
            "name",
            "tasks",
            "when",
            "docker_registries_auth",
            "task_timeout_interval",
            "task_timeout",
        ],
    )?;
    let (name, loc) = name(dec, &fields, "run");
    let mut run = ConfigRun {
        name,
        loc,
        when: fields.get("when").and_then(|n| decode_when(dec, n)),
        docker_registries_auth: registries(dec, &fields),
        task_timeout: timeout(dec, &fields),
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

const TASK_KEYS: [&str; 15] = [
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
    "task_timeout_interval",
    "task_timeout",
    "retry_lost_tasks",
];

fn decode_task(dec: &mut Decoder<'_>, node: &Node<'_>) -> Option<ConfigTask> {
    let node = node.named(peek_name(node).as_deref());
    let fields = dec.fields(&node, "task", &TASK_KEYS)?;
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
        task_timeout: timeout(dec, &fields),
        retry_lost: fields
            .get("retry_lost_tasks")
            .and_then(|n| dec.count(n, MAX_RETRY_LOST)),
    };
    Some(task)
}

/// The `name` of a run or task node, if it is a string, to name the node in paths.
fn peek_name(node: &Node<'_>) -> Option<String> {
    node.entries()?
        .into_iter()
        .find(|e| e.key.is_some_and(|k| k.eq_ignore_ascii_case("name")))
        .and_then(|e| e.value.as_str().map(str::to_string))
}

/// The timeout of a config, run or task: Agola's `task_timeout_interval` (a Go
/// duration; 0 = none) or Cairn's `task_timeout` (its alias, also taking seconds).
fn timeout(dec: &mut Decoder<'_>, fields: &Fields<'_>) -> Option<u64> {
    match (
        fields.get("task_timeout_interval"),
        fields.get("task_timeout"),
    ) {
        (Some(_), Some(alias)) => {
            dec.error(
                alias,
                "`task_timeout` is an alias of `task_timeout_interval`; give only one",
            );
            None
        }
        (Some(interval), None) => dec.go_duration(interval),
        (None, Some(alias)) => dec.duration(alias),
        (None, None) => None,
    }
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
        &[
            "image",
            "environment",
            "user",
            "privileged",
            "entrypoint",
            "volumes",
        ],
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
        volumes: fields
            .get("volumes")
            .and_then(|n| dec.list(n))
            .map(|items| items.iter().filter_map(|n| decode_volume(dec, n)).collect())
            .unwrap_or_default(),
    })
}

/// A container volume, as Agola: `{path, tmpfs: {size}}`, tmpfs being the only kind;
/// `size` is a Kubernetes quantity (`64Mi`, `1Gi`, `500M`, `1000000`).
fn decode_volume(dec: &mut Decoder<'_>, node: &Node<'_>) -> Option<Volume> {
    let fields = dec.fields(node, "volume", &["path", "tmpfs"])?;
    let path_node = fields.require(dec, "path")?;
    let path = dec.string(&path_node)?;
    if !path.starts_with('/') {
        dec.error(
            &path_node,
            format!("a volume path must be absolute (start with /), found {path:?}"),
        );
    }
    let Some(tmpfs) = fields.get("tmpfs") else {
        dec.error(
            node,
            "a volume needs `tmpfs` (the only kind of volume, as in Agola)",
        );
        return None;
    };
    let tmpfs = dec.fields(tmpfs, "tmpfs", &["size"])?;
    let mut size_bytes = None;
    if let Some(size) = tmpfs.get("size")
        && let Some(text) = dec.stringish(size)
    {
        match parse_quantity(&text) {
            Ok(0) => {}
            Ok(bytes) => size_bytes = Some(bytes),
            Err(message) => dec.error(size, message),
        }
    }
    Some(Volume {
        path,
        tmpfs: Some(TmpfsVolume { size_bytes }),
    })
}

/// A Kubernetes quantity as bytes, rounded up: a decimal number with a binary (`Ki`,
/// `Mi`, `Gi`, `Ti`, `Pi`, `Ei`), decimal (`n`, `u`, `m`, `k`, `M`, `G`, `T`, `P`,
/// `E`) or exponent (`e3`, `E6`) suffix.
pub(super) fn parse_quantity(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "invalid size {text:?}; expected a quantity such as \"64Mi\", \"1Gi\", \"500M\" or a number of bytes"
        )
    };
    let trimmed = text.trim();
    let (negative, rest) = match trimmed.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, trimmed.strip_prefix('+').unwrap_or(trimmed)),
    };
    let number_len = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_len);
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') || int.len() + frac.len() > 30 {
        return Err(bad());
    }
    // value = mantissa * 2^bin * 10^dec / 10^frac.len()
    let (bin, dec): (u32, i32) = match suffix {
        "" => (0, 0),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        s if s.len() > 1 && (s.starts_with('e') || s.starts_with('E')) => {
            let exp: i32 = s[1..].parse().map_err(|_| bad())?;
            if !(-30..=30).contains(&exp) {
                return Err(bad());
            }
            (0, exp)
        }
        _ => return Err(bad()),
    };
    let mantissa: u128 = format!("{int}{frac}").parse().map_err(|_| bad())?;
    if negative && mantissa != 0 {
        return Err(format!("a size must not be negative, found {text:?}"));
    }
    let too_large = || format!("size {text:?} is too large");
    let frac_len = i32::try_from(frac.len()).map_err(|_| bad())?;
    let dec = dec - frac_len;
    let ten = |e: i32| 10u128.checked_pow(e.unsigned_abs());
    let mut numerator = mantissa
        .checked_shl(bin)
        .filter(|_| mantissa.leading_zeros() >= bin)
        .ok_or_else(too_large)?;
    let mut denominator: u128 = 1;
    if dec >= 0 {
        numerator = ten(dec)
            .and_then(|t| numerator.checked_mul(t))
            .ok_or_else(too_large)?;
    } else {
        denominator = ten(dec).ok_or_else(bad)?;
    }
    let bytes = numerator.div_ceil(denominator);
    u64::try_from(bytes)
        .ok()
        .filter(|b| i64::try_from(*b).is_ok())
        .ok_or_else(too_large)
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
        if let Some(v) = f.get("auth").and_then(|n| dec.value(n)) {
            auth.auth = v;
        }
        out.insert(host, auth);
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::configfile::{ConfigError, ConfigValue, parse};

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
        assert_eq!(e.field, "runs[0] \"ci\" › tasks[0] \"t\" › shell");
        assert_eq!(e.message, "expected a string, found a list");
    }

    #[test]
    fn unknown_keys_are_warnings_with_a_suggestion() {
        let yaml = format!(
            "{TASK}        enviroment: {{ A: b }}\n        Shell: bash\n        colour: red\n"
        );
        let parsed = parse("c.yml", &yaml).expect("unknown keys do not make a config invalid");
        let w = &parsed.warnings;
        assert_eq!(w.len(), 3, "{w:?}");
        assert_eq!((w[0].line, w[0].column), (6, 9));
        assert_eq!(w[0].field, "runs[0] \"ci\" › tasks[0] \"t\" › enviroment");
        assert_eq!(
            w[0].message,
            "unknown key `enviroment` in task is ignored, as Agola ignores it; did you mean `environment`?"
        );
        assert_eq!(
            w[1].message,
            "key `Shell` in task is read as `shell` (Agola matches keys regardless of case)"
        );
        assert_eq!(
            parsed.config.runs[0].tasks[0].shell.as_deref(),
            Some("bash")
        );
        assert_eq!(
            w[2].message,
            "unknown key `colour` in task is ignored, as Agola ignores it"
        );
        assert!(parsed.config.runs[0].tasks[0].environment.is_empty());
        // Wrong types stay errors.
        let e = one_error(&format!("{TASK}        environment: [A]\n"));
        assert_eq!(e.message, "expected a map, found a list");
    }

    #[test]
    fn a_task_needs_a_name_and_a_runtime() {
        let e = errors("runs:\n  - name: ci\n    tasks:\n      - steps: []\n");
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!((e[0].line, e[0].column), (4, 9));
        assert_eq!(e[0].field, "runs[0] \"ci\" › tasks[0].name");
        assert_eq!(e[1].field, "runs[0] \"ci\" › tasks[0].runtime");
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
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(
            e[0].field,
            "runs[0] \"ci\" › tasks[0] \"t\" › environment.D"
        );
        assert_eq!(
            e[0].message,
            "expected a string or {from_variable: name}, found a list"
        );
        assert_eq!(e[1].message, "missing required key `from_variable`");
        let parsed = parse(
            "c.yml",
            &yaml
                .replace("D: [x], ", "")
                .replace("from_var:", "from_variable: v, from_var:"),
        )
        .expect("valid");
        assert_eq!(
            parsed.warnings[0].field,
            "runs[0] \"ci\" › tasks[0] \"t\" › environment.E.from_var"
        );
    }

    #[test]
    fn registry_auth_types_are_checked() {
        let yaml = format!(
            "{TASK}        docker_registries_auth: {{ r.io: {{ type: token, username: u }} }}\n"
        );
        let e = one_error(&yaml);
        assert_eq!(
            e.field,
            "runs[0] \"ci\" › tasks[0] \"t\" › docker_registries_auth.r.io.type"
        );
        assert_eq!(
            e.message,
            "unknown registry auth type `token`; expected basic or encodedauth"
        );
    }

    #[test]
    fn task_timeout_interval_takes_go_durations_at_every_level() {
        let yaml = "task_timeout_interval: 1h\nruns:\n  - name: ci\n    task_timeout_interval: 90s\n    tasks:\n      - name: t\n        task_timeout_interval: 1.5m\n        runtime: { containers: [ { image: a } ] }\n      - name: u\n        task_timeout_interval: 0s\n        runtime: { containers: [ { image: a } ] }\n      - name: v\n        task_timeout_interval: 500ms\n        runtime: { containers: [ { image: a } ] }\n";
        let config = parse("c.yml", yaml).expect("valid").config;
        assert_eq!(config.task_timeout, Some(3600));
        assert_eq!(config.runs[0].task_timeout, Some(90));
        let tasks = &config.runs[0].tasks;
        assert_eq!(tasks[0].task_timeout, Some(90));
        assert_eq!(tasks[1].task_timeout, Some(0), "0 = no timeout, overriding");
        assert_eq!(tasks[2].task_timeout, Some(1), "rounded up to a second");
        let e = errors(&format!(
            "{TASK}        task_timeout_interval: 10\n        task_timeout: 10\n"
        ));
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].line, 7);
        assert!(e[0].message.contains("give only one"), "{}", e[0]);
        let e = one_error(&format!("{TASK}        task_timeout_interval: '90'\n"));
        assert!(e.message.starts_with("invalid duration"), "{e}");
        // A number is nanoseconds, as Agola reads it.
        let config = parse(
            "c.yml",
            &format!("{TASK}        task_timeout_interval: 90000000000\n"),
        )
        .expect("valid")
        .config;
        assert_eq!(config.runs[0].tasks[0].task_timeout, Some(90));
        let config = parse(
            "c.yml",
            &format!("{TASK}        task_timeout_interval: 1.5e9\n"),
        )
        .expect("valid")
        .config;
        assert_eq!(
            config.runs[0].tasks[0].task_timeout,
            Some(2),
            "1.5 s, rounded up"
        );
        let e = one_error(&format!("{TASK}        task_timeout_interval: '-5m'\n"));
        assert_eq!(e.message, "a timeout must not be negative");
    }

    #[test]
    fn container_volumes_are_tmpfs_with_a_kubernetes_size() {
        let yaml = "runs:\n  - name: ci\n    tasks:\n      - name: t\n        runtime:\n          containers:\n            - image: a\n              volumes:\n                - { path: /mnt/a, tmpfs: { size: 1Gi } }\n                - { path: /mnt/b, tmpfs: {} }\n                - { path: /mnt/c, tmpfs: { size: 500M } }\n                - { path: /mnt/d, tmpfs: { size: 1048576 } }\n";
        let config = parse("c.yml", yaml).expect("valid").config;
        let volumes = &config.runs[0].tasks[0].runtime.containers[0].volumes;
        let sizes: Vec<_> = volumes
            .iter()
            .map(|v| (v.path.as_str(), v.tmpfs.as_ref().and_then(|t| t.size_bytes)))
            .collect();
        assert_eq!(
            sizes,
            [
                ("/mnt/a", Some(1 << 30)),
                ("/mnt/b", None),
                ("/mnt/c", Some(500_000_000)),
                ("/mnt/d", Some(1 << 20))
            ]
        );
        let bad = "runs:\n  - name: ci\n    tasks:\n      - name: t\n        runtime:\n          containers:\n            - image: a\n              volumes:\n                - { path: /mnt/a }\n                - { path: rel, tmpfs: {} }\n                - { path: /c, tmpfs: { size: 1Gb } }\n                - { path: /d, tmpfs: { size: -1Mi } }\n";
        let e = errors(bad);
        let messages: Vec<_> = e.iter().map(|e| (e.line, e.message.as_str())).collect();
        assert_eq!(messages.len(), 4, "{e:?}");
        assert_eq!(
            messages[0],
            (
                9,
                "a volume needs `tmpfs` (the only kind of volume, as in Agola)"
            )
        );
        assert_eq!(
            messages[1],
            (
                10,
                "a volume path must be absolute (start with /), found \"rel\""
            )
        );
        assert!(messages[2].1.starts_with("invalid size \"1Gb\""), "{e:?}");
        assert_eq!(
            messages[3],
            (12, "a size must not be negative, found \"-1Mi\"")
        );
        assert_eq!(
            e[0].field,
            "runs[0] \"ci\" › tasks[0] \"t\" › runtime.containers[0].volumes[0]"
        );
    }

    #[test]
    fn quantities_read_as_kubernetes_does() {
        use super::parse_quantity;
        assert_eq!(parse_quantity("64Mi"), Ok(64 << 20));
        assert_eq!(parse_quantity("1.5Gi"), Ok(3 << 29));
        assert_eq!(parse_quantity("2k"), Ok(2000));
        assert_eq!(parse_quantity("1e3"), Ok(1000));
        assert_eq!(parse_quantity("1E6"), Ok(1_000_000));
        assert_eq!(parse_quantity("1E"), Ok(1_000_000_000_000_000_000));
        assert_eq!(parse_quantity("100m"), Ok(1), "milli-bytes round up");
        assert_eq!(parse_quantity("0"), Ok(0));
        for bad in ["", "Mi", "1.2.3", "1 Mi", "1mb", "9Ei", "1e99"] {
            assert!(parse_quantity(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn registry_auth_takes_a_string_or_a_variable() {
        let yaml = format!(
            "{TASK}        docker_registries_auth:\n          a.io: {{ type: encodedauth, auth: {{ from_variable: reg }} }}\n          b.io: {{ type: encodedauth, auth: dXNlcjpwYXNz }}\n"
        );
        let config = parse("c.yml", &yaml).expect("valid").config;
        let auths = &config.runs[0].tasks[0].docker_registries_auth;
        assert_eq!(auths["a.io"].auth, ConfigValue::FromVariable("reg".into()));
        assert_eq!(
            auths["b.io"].auth,
            ConfigValue::Literal("dXNlcjpwYXNz".into())
        );
    }

    #[test]
    fn yaml_1_1_booleans_are_booleans_where_a_boolean_is_expected() {
        let yaml = "runs:\n  - name: ci\n    tasks:\n      - name: t\n        ignore_failure: yes\n        approval: On\n        runtime: { containers: [ { image: a, privileged: Y } ] }\n        environment: { A: yes }\n        steps:\n          - run: { command: make, tty: off }\n          - clone: { recurse_submodules: YES }\n      - name: u\n        ignore_failure: NO\n        runtime: { containers: [ { image: a } ] }\n";
        let config = parse("c.yml", yaml).expect("valid").config;
        let t = &config.runs[0].tasks[0];
        assert!(t.ignore_failure && t.approval && t.runtime.containers[0].privileged);
        assert_eq!(
            t.environment["A"],
            ConfigValue::Literal("yes".into()),
            "strings stay strings"
        );
        assert!(
            matches!(&t.steps[0], crate::configfile::ConfigStep::Run(r) if r.tty == Some(false))
        );
        assert!(
            matches!(&t.steps[1], crate::configfile::ConfigStep::Clone(c) if c.recurse_submodules)
        );
        assert!(!config.runs[0].tasks[1].ignore_failure);
        for not_bool in ["'yes'", "yEs", "oN", "nope"] {
            let e = one_error(&format!("{TASK}        approval: {not_bool}\n"));
            assert_eq!(
                e.message, "expected true or false, found a string",
                "{not_bool}"
            );
        }
    }

    #[test]
    fn containers_take_agola_keys_cairn_does_not_use_with_warnings() {
        let yaml = TASK.replace(
            "{ image: alpine }",
            "{ image: alpine, auth: { username: u, password: p }, Tty: true }",
        );
        let parsed = parse("c.yml", &yaml).expect("valid");
        assert_eq!(parsed.warnings.len(), 2, "{:?}", parsed.warnings);
        assert_eq!(
            parsed.warnings[0].field,
            "runs[0] \"ci\" › tasks[0] \"t\" › runtime.containers[0].auth"
        );
    }
}

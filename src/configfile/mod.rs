//! The run config format (Agola's `.agola/config.star`, `.agola/config.jsonnet`,
//! `.agola/config.json`, `.agola/config.yml`, and Cairn's `.cairn/config.yml`): evaluate,
//! parse, validate, expand.
//!
//! Map of this module:
//! - `yaml`: loads YAML/JSON with positions and offers a path-aware node view;
//! - `decode`: the error-collecting decoder and its typed accessors;
//! - `document`, `step`, `depend`, `when`: the grammar, node → `model` types;
//! - `validate`: checks across nodes (names, dependencies, cycles, redundancy);
//! - `expand`: a config run → `cairn_client::runconfig::RunConfigTask`s;
//! - `error`: [`ConfigError`] (file, line, column, field, message) and [`ConfigErrors`];
//! - [`eval`]: Jsonnet and Starlark configs, evaluated into the JSON that `parse` reads.
//!
//! It owns the format only: no I/O but [`find_config`] and the evaluator's child process
//! ([`eval::sandbox`]), and no knowledge of runs, the store or HTTP.

#[cfg(test)]
mod corpus;
mod decode;
mod depend;
mod document;
mod error;
pub mod eval;
mod excluded;
mod expand;
pub mod limits;
mod model;
mod step;
mod validate;
mod when;
mod yaml;

use std::path::{Path, PathBuf};

pub use document::MAX_NAME_LEN;
pub use error::{ConfigError, ConfigErrors};
pub use eval::{ConfigContext, Language};
pub use excluded::{Exclusion, excluded_runs};
pub use expand::{DEFAULT_SHELL, DEFAULT_WORKING_DIR, ExpandContext, expand, matching_runs};
pub use model::{
    Config, ConfigContainer, ConfigDepend, ConfigRegistryAuth, ConfigRun, ConfigRunStep,
    ConfigRuntime, ConfigStep, ConfigTask, ConfigValue, Loc,
};
pub use step::CLONE_STEP_NAME;
pub use when::{Matcher, When, WhenConditions, when_matches};

/// The config file names looked for in a repository, most preferred first, in Agola's
/// order (`gateway/action/run.go`, `fetchConfigFiles`): Starlark, Jsonnet, JSON, YAML;
/// then Cairn's own `.cairn/config.yml`.
pub const CONFIG_FILES: [&str; 5] = [
    ".agola/config.star",
    ".agola/config.jsonnet",
    ".agola/config.json",
    ".agola/config.yml",
    ".cairn/config.yml",
];

/// [`CONFIG_FILES`] as a sentence for messages ("add … or …").
pub fn config_files_list() -> String {
    let (last, rest) = CONFIG_FILES
        .split_last()
        .expect("CONFIG_FILES is not empty");
    format!("{} or {last}", rest.join(", "))
}

/// The first of [`CONFIG_FILES`] that exists as a file under `dir`.
pub fn find_config(dir: &Path) -> Option<PathBuf> {
    CONFIG_FILES
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_file())
}

/// Reads a config file of any format: Jsonnet and Starlark programs are evaluated with
/// `ctx` in the evaluator's child process ([`eval::sandbox`]), then parsed as JSON; YAML
/// and JSON files are parsed as they are. Errors name `path`.
pub fn load(path: &str, content: &str, ctx: &ConfigContext) -> Result<Parsed, ConfigErrors> {
    load_with(path, content, ctx, |language, file, content, ctx| {
        eval::sandbox::evaluate(language, file, content, ctx, &eval::Limits::default())
    })
}

/// [`load`] with the evaluation of programs done by `evaluate` (for instance
/// [`eval::evaluate`] on the calling thread).
pub fn load_with(
    path: &str,
    content: &str,
    ctx: &ConfigContext,
    evaluate: impl FnOnce(Language, &str, &str, &ConfigContext) -> Result<String, ConfigError>,
) -> Result<Parsed, ConfigErrors> {
    let Some(language) = Language::of(path) else {
        return parse(path, content);
    };
    let json = evaluate(language, path, content, ctx).map_err(ConfigErrors::single)?;
    // The result is read as JSON under the program's name. Positions in the generated
    // text mean nothing to the author: its errors and warnings keep the file and the
    // field path.
    let unplaced = |e: ConfigError| ConfigError {
        line: 0,
        column: 0,
        ..e
    };
    match parse(path, &json) {
        Ok(parsed) => Ok(Parsed {
            config: parsed.config,
            warnings: parsed.warnings.into_iter().map(unplaced).collect(),
        }),
        Err(errors) => Err(ConfigErrors(errors.0.into_iter().map(unplaced).collect())),
    }
}

/// The largest config accepted, in bytes (Agola's limit).
pub const MAX_CONFIG_SIZE: usize = 1024 * 1024;

/// A config that parsed and validated, with the warnings found on the way (keys
/// Agola ignores, …), in document order.
#[derive(Clone, Debug, PartialEq)]
pub struct Parsed {
    pub config: Config,
    pub warnings: Vec<ConfigError>,
}

/// Parses and validates a config file's `content`; `path` names the file in errors
/// (`.json` files are read as JSON, anything else as YAML). Returns every problem
/// found, in document order; warnings never make a config invalid.
pub fn parse(path: &str, content: &str) -> Result<Parsed, ConfigErrors> {
    if content.len() > MAX_CONFIG_SIZE {
        return Err(ConfigErrors::single(ConfigError::over_limit(
            path,
            0,
            0,
            "",
            format!(
                "the config is {} bytes, more than the limit of {MAX_CONFIG_SIZE} bytes (1 MiB, as Agola)",
                content.len()
            ),
        )));
    }
    let mut counter = limits::Counter::new(path);
    let root = yaml::load(path, content, &mut counter).map_err(ConfigErrors::single)?;
    let mut dec = decode::Decoder::new(path);
    let config = document::decode_config(&mut dec, &root);
    let mut errors = dec.errors;
    errors.extend(validate::validate(&config));
    if errors.is_empty() {
        let mut warnings = dec.warnings;
        warnings.sort_by_key(|e| (e.line, e.column));
        Ok(Parsed { config, warnings })
    } else {
        errors.sort_by_key(|e| (e.line, e.column));
        limits::truncate_errors(path, &mut errors);
        Err(ConfigErrors(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest useful config: one run, one task in one container, clone then test.
    pub(super) const MINIMAL: &str = "\
runs:
  - name: ci
    tasks:
      - name: test
        runtime:
          containers:
            - image: golang:1.13
        steps:
          - clone:
          - run: go test ./...
";

    /// A typical config: registry auth from a variable, caches, a workspace passed from
    /// build to test, a task run on failure, and a deploy gated by approval and a tag.
    pub(super) const TYPICAL: &str = r#"
docker_registries_auth:
  registry.example.com:
    username: ci
    password: { from_variable: registry_password }
runs:
  - name: pipeline
    tasks:
      - name: build
        runtime: { arch: amd64, containers: [ { image: golang:1.13 } ] }
        environment: { GO111MODULE: "on" }
        steps:
          - clone:
          - restore_cache: { keys: ['mod-{{ md5sum "go.sum" }}', 'mod-'], dest_dir: /go/pkg/mod }
          - run: { name: build, command: "make all" }
          - save_cache: { key: 'mod-{{ md5sum "go.sum" }}', contents: [ { source_dir: /go/pkg/mod } ] }
          - save_to_workspace: { contents: [ { source_dir: ./bin, dest_dir: /bin, paths: ['*'] } ] }
      - name: test
        runtime: { containers: [ { image: golang:1.13 }, { image: postgres:11 } ] }
        steps:
          - restore_workspace: { dest_dir: . }
          - run: ./bin/tests
        depends: [ build ]
      - name: report failure
        runtime: { containers: [ { image: alpine } ] }
        steps: [ { run: echo failed } ]
        depends: [ { test: [ on_failure ] } ]
      - name: deploy
        runtime: { containers: [ { image: alpine } ] }
        approval: true
        when: { tag: '#v.*#' }
        steps: [ { run: ./deploy.sh } ]
        depends: [ test ]
"#;

    #[test]
    fn the_minimal_example_parses() {
        let config = parse(".agola/config.yml", MINIMAL).expect("valid").config;
        assert_eq!(config.runs.len(), 1);
        let task = &config.runs[0].tasks[0];
        assert_eq!(task.name, "test");
        assert_eq!(task.runtime.containers[0].image, "golang:1.13");
        assert_eq!(
            task.steps,
            [
                ConfigStep::Clone(cairn_client::runconfig::CloneStep {
                    name: CLONE_STEP_NAME.into(),
                    ..Default::default()
                }),
                ConfigStep::Run(ConfigRunStep {
                    name: "go test ./...".into(),
                    command: "go test ./...".into(),
                    ..ConfigRunStep::default()
                })
            ]
        );
    }

    #[test]
    fn the_typical_example_parses() {
        let config = parse(".agola/config.yml", TYPICAL).expect("valid").config;
        let run = &config.runs[0];
        let names: Vec<_> = run.tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["build", "test", "report failure", "deploy"]);
        assert_eq!(
            config.docker_registries_auth["registry.example.com"].password,
            ConfigValue::FromVariable("registry_password".into())
        );
        assert_eq!(
            run.tasks[0].environment["GO111MODULE"],
            ConfigValue::Literal("on".into())
        );
        assert_eq!(run.tasks[0].steps.len(), 5);
        assert!(run.tasks[3].approval);
        assert!(run.tasks[3].when.is_some());
    }

    #[test]
    fn json_configs_parse_with_positions() {
        let json = r#"{
  "runs": [
    {
      "name": "ci",
      "tasks": [
        {
          "name": "test",
          "runtime": {"containers": [{"image": "alpine"}]},
          "steps": [{"type": "run", "command": "true"}],
          "enviroment": {"A": 1}
        }
      ]
    }
  ]
}"#;
        let warnings = parse(".agola/config.json", json)
            .expect("a typo is a warning")
            .warnings;
        assert_eq!(warnings.len(), 1);
        let e = &warnings[0];
        assert_eq!((e.line, e.column), (10, 11));
        assert_eq!(e.field, "runs[0] \"ci\" › tasks[0] \"test\" › enviroment");
        assert!(e.message.ends_with("did you mean `environment`?"), "{e}");
        let fixed = json.replace("enviroment", "environment");
        let config = parse(".agola/config.json", &fixed)
            .expect("valid json")
            .config;
        assert_eq!(
            config.runs[0].tasks[0].environment["A"],
            ConfigValue::Literal("1".into())
        );
    }

    #[test]
    fn every_error_is_reported_not_only_the_first() {
        let yaml = "\
runs:
  - name: ci
    tasks:
      - name: a
        runtime: { containers: [ { image: alpine } ] }
        ignore_failure: 'yes'
        depends: [ buidl ]
      - name: b
        runtime: { containers: [] }
        task_timeout: 10x
";
        let errors = parse("c.yml", yaml).expect_err("three problems");
        let lines: Vec<_> = errors.lines();
        assert_eq!(
            lines,
            [
                "c.yml:6:25: runs[0] \"ci\" › tasks[0] \"a\" › ignore_failure: expected true or false, found a string",
                "c.yml:7:20: runs[0] \"ci\" › tasks[0] \"a\" › depends[0]: unknown task \"buidl\"",
                "c.yml:9:32: runs[0] \"ci\" › tasks[1] \"b\" › runtime.containers: a runtime needs at least one container",
                "c.yml:10:23: runs[0] \"ci\" › tasks[1] \"b\" › task_timeout: invalid duration \"10x\"; expected hours, minutes and seconds such as \"30m\", \"1h30m\", \"45s\"",
            ]
        );
    }

    #[test]
    fn retry_lost_tasks_is_a_small_whole_number_per_task() {
        let yaml = "\
runs:
  - name: ci
    tasks:
      - name: a
        runtime: { containers: [ { image: alpine } ] }
        retry_lost_tasks: 3
      - name: b
        runtime: { containers: [ { image: alpine } ] }
";
        let parsed = parse("c.yml", yaml).expect("valid");
        let tasks = &parsed.config.runs[0].tasks;
        assert_eq!((tasks[0].retry_lost, tasks[1].retry_lost), (Some(3), None));
        let expanded = expand(&parsed.config, "ci", &ExpandContext::default()).expect("expands");
        let by_name = |n: &str| expanded.values().find(|t| t.name == n).expect("task");
        assert_eq!(by_name("a").retry_lost, Some(3));
        assert_eq!(by_name("b").retry_lost, None);

        for (value, found) in [("11", "11"), ("-1", "-1"), ("two", "a string")] {
            let bad = yaml.replace("retry_lost_tasks: 3", &format!("retry_lost_tasks: {value}"));
            let errors = parse("c.yml", &bad).expect_err("refused");
            assert_eq!(
                errors.lines(),
                [format!(
                    "c.yml:6:27: runs[0] \"ci\" › tasks[0] \"a\" › retry_lost_tasks: expected a whole number from 0 to 10, found {found}"
                )]
            );
        }
    }

    #[test]
    fn find_config_follows_agolas_order_then_cairns() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(find_config(dir.path()), None);
        let write = |name: &str| {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
            std::fs::write(&path, MINIMAL).expect("write");
            path
        };
        // Written least preferred first: each new file takes over.
        for name in CONFIG_FILES.iter().rev() {
            let path = write(name);
            assert_eq!(find_config(dir.path()), Some(path), "{name}");
        }
        assert_eq!(
            CONFIG_FILES,
            [
                ".agola/config.star",
                ".agola/config.jsonnet",
                ".agola/config.json",
                ".agola/config.yml",
                ".cairn/config.yml"
            ]
        );
        assert_eq!(
            config_files_list(),
            ".agola/config.star, .agola/config.jsonnet, .agola/config.json, .agola/config.yml or .cairn/config.yml"
        );
    }

    fn in_thread(
        language: Language,
        file: &str,
        content: &str,
        ctx: &ConfigContext,
    ) -> Result<String, ConfigError> {
        eval::evaluate(language, file, content, ctx, &eval::Limits::default())
    }

    #[test]
    fn load_evaluates_programs_and_parses_the_result_as_json() {
        let ctx = ConfigContext::new(Some("main"), None, None, "abc");
        let jsonnet = "function(ctx) { runs: [ { name: 'ci-' + ctx.branch, tasks: [ { name: 't', runtime: { containers: [ { image: 'alpine' } ] }, steps: [ { type: 'run', command: 'true' } ] } ] } ] }";
        let parsed = load_with(".agola/config.jsonnet", jsonnet, &ctx, in_thread).expect("valid");
        assert_eq!(parsed.config.runs[0].name, "ci-main");
        let star = "def main(ctx):\n    return {'runs': [{'name': 'ci-' + ctx['commit_sha'], 'tasks': [{'name': 't', 'runtime': {'containers': [{'image': 'alpine'}]}, 'steps': [{'type': 'run', 'command': 'true'}]}]}]}\n";
        let parsed = load_with(".agola/config.star", star, &ctx, in_thread).expect("valid");
        assert_eq!(parsed.config.runs[0].name, "ci-abc");
        let yml = load_with(".agola/config.yml", MINIMAL, &ctx, |_, _, _, _| {
            unreachable!("YAML is not evaluated")
        })
        .expect("valid");
        assert_eq!(yml.config.runs[0].name, "ci");
    }

    #[test]
    fn a_bad_evaluated_config_is_a_json_level_error_naming_the_program() {
        let ctx = ConfigContext::default();
        let errors = load_with(".agola/config.jsonnet", "[1, 2]", &ctx, in_thread)
            .expect_err("not an object");
        assert!(
            errors.0[0]
                .to_string()
                .starts_with(".agola/config.jsonnet: "),
            "{errors}"
        );
        let errors = load_with(
            ".agola/config.jsonnet",
            "{ runs: [ { name: 'ci', tasks: [ { name: 't', runtime: { containers: [] }, steps: [] } ] } ] }",
            &ctx,
            in_thread,
        )
        .expect_err("no container");
        let e = &errors.0[0];
        assert_eq!(
            (e.file.as_str(), e.line, e.column),
            (".agola/config.jsonnet", 0, 0)
        );
        assert_eq!(
            e.field,
            "runs[0] \"ci\" › tasks[0] \"t\" › runtime.containers"
        );
        let parsed = load_with(
            ".agola/config.jsonnet",
            "{ runs: [ { name: 'ci', tasks: [ { name: 't', runtime: { containers: [ { image: 'a' } ] }, steps: [ { type: 'run', command: 'x' } ], enviroment: {} } ] } ] }",
            &ctx,
            in_thread,
        )
        .expect("an unknown key is a warning");
        let w = &parsed.warnings[0];
        assert_eq!(
            (w.file.as_str(), w.line, w.column),
            (".agola/config.jsonnet", 0, 0)
        );
        assert!(w.message.contains("enviroment"), "{w}");
        let errors = load_with(
            ".agola/config.star",
            "def main(ctx):\n    return {'runs': 1}\n",
            &ctx,
            in_thread,
        )
        .expect_err("wrong type");
        assert_eq!(errors.0[0].field, "runs");
    }

    #[test]
    fn configs_over_one_mebibyte_are_refused() {
        let mut big = String::from(MINIMAL);
        big.push_str(&"#".repeat(MAX_CONFIG_SIZE - big.len()));
        parse("c.yml", &big).expect("exactly 1 MiB is fine");
        big.push('#');
        let e = parse("c.yml", &big).expect_err("too big");
        assert_eq!(e.len(), 1);
        assert_eq!(
            e.0[0].message,
            "the config is 1048577 bytes, more than the limit of 1048576 bytes (1 MiB, as Agola)"
        );
    }
}

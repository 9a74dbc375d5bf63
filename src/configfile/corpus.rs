//! The Agola-format config corpus (`tests/fixtures/agola/`): every config there is
//! parsed, and the outcome compared with the expectation next to it
//! (`name.yml` or `name.json` + `name.expect.json`). One test runs them all and names
//! every fixture that fails, with why.
//!
//! An expectation is a JSON object:
//! - `ok`: whether the config is valid;
//! - `errors` / `warnings`: the exact list, each `{line, field?, message}` where
//!   `message` is a substring of the real message;
//! - `expand`: cases of `{reference, variables?, runs?, run?, tasks?}`: `runs` the
//!   names of the runs matching `reference`; `tasks` (of run `run`, default the first
//!   matching run) the expected part of each task, by name, as the wire
//!   `RunConfigTask` serializes (`depends` keyed by parent *name*; `null` matches an
//!   absent value). Objects match when every expected key matches; lists need the
//!   same length.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cairn_client::api::RefSpec;
use serde_json::{Map, Value};

use super::{ConfigError, ExpandContext, expand, matching_runs, parse};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/agola")
}

/// The config files of the corpus, sorted by name.
fn fixtures() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .map(|dir| {
            dir.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                    !name.ends_with(".expect.json")
                        && (name.ends_with(".yml") || name.ends_with(".json"))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Whether `actual` has everything `expected` says; else where it differs.
fn contains(expected: &Value, actual: &Value, at: &str) -> Result<(), String> {
    match (expected, actual) {
        (Value::Null, Value::Null) => Ok(()),
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                let path = format!("{at}.{k}");
                match a.get(k) {
                    Some(av) => contains(ev, av, &path)?,
                    None if ev.is_null() => {}
                    None => return Err(format!("{path}: missing, expected {ev}")),
                }
            }
            Ok(())
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                return Err(format!(
                    "{at}: {} items, expected {}: {actual}",
                    a.len(),
                    e.len()
                ));
            }
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                contains(ev, av, &format!("{at}[{i}]"))?;
            }
            Ok(())
        }
        (e, a) if e == a => Ok(()),
        (e, a) => Err(format!("{at}: {a}, expected {e}")),
    }
}

/// The problems of `actual` against the expected `[{line, field?, message}]`.
fn compare_problems(what: &str, expected: Option<&Value>, actual: &[ConfigError]) -> Vec<String> {
    let expected = expected
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut out = Vec::new();
    if expected.len() != actual.len() {
        out.push(format!(
            "{} {what}, expected {}: {:#?}",
            actual.len(),
            expected.len(),
            actual.iter().map(ToString::to_string).collect::<Vec<_>>()
        ));
        return out;
    }
    for (e, a) in expected.iter().zip(actual) {
        let line = e.get("line").and_then(Value::as_u64);
        let field = e.get("field").and_then(Value::as_str);
        let message = e.get("message").and_then(Value::as_str).unwrap_or_default();
        let line_ok = line.is_none_or(|l| l == a.line as u64);
        let field_ok = field.is_none_or(|f| f == a.field);
        if !(line_ok && field_ok && a.message.contains(message)) {
            out.push(format!("{what}: got `{a}`, expected {e}"));
        }
    }
    out
}

/// A task as the wire serializes it, with `depends` keyed by parent name and no id.
fn task_json(
    task: &cairn_client::runconfig::RunConfigTask,
    names: &BTreeMap<String, String>,
) -> Value {
    let mut value = serde_json::to_value(task).unwrap_or(Value::Null);
    if let Some(obj) = value.as_object_mut() {
        obj.remove("id");
        let depends: Map<String, Value> = task
            .depends
            .iter()
            .map(|(id, d)| {
                (
                    names.get(id).cloned().unwrap_or_else(|| id.clone()),
                    serde_json::to_value(&d.conditions).unwrap_or(Value::Null),
                )
            })
            .collect();
        obj.insert("depends".into(), Value::Object(depends));
    }
    value
}

fn check_expand(config: &super::Config, case: &Value, i: usize) -> Vec<String> {
    let mut out = Vec::new();
    let reference: RefSpec = match case.get("reference") {
        Some(r) => match serde_json::from_value(r.clone()) {
            Ok(r) => r,
            Err(e) => return vec![format!("expand[{i}]: bad reference: {e}")],
        },
        None => RefSpec::default(),
    };
    let variables: BTreeMap<String, String> = case
        .get("variables")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    let matching: Vec<&str> = matching_runs(config, &reference)
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    if let Some(runs) = case.get("runs") {
        let expected: Vec<&str> = runs
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if expected != matching {
            out.push(format!(
                "expand[{i}]: runs {matching:?} match, expected {expected:?}"
            ));
        }
    }
    let Some(tasks) = case.get("tasks").and_then(Value::as_object) else {
        return out;
    };
    let run = case
        .get("run")
        .and_then(Value::as_str)
        .or_else(|| matching.first().copied())
        .unwrap_or_default();
    let ctx = ExpandContext {
        reference,
        variables,
        ..ExpandContext::default()
    };
    let expanded = match expand(config, run, &ctx) {
        Ok(t) => t,
        Err(e) => return vec![format!("expand[{i}]: run {run:?} does not expand: {e}")],
    };
    let names: BTreeMap<String, String> = expanded
        .values()
        .map(|t| (t.id.clone(), t.name.clone()))
        .collect();
    let by_name: BTreeMap<&str, Value> = expanded
        .values()
        .map(|t| (t.name.as_str(), task_json(t, &names)))
        .collect();
    for (name, expected) in tasks {
        match by_name.get(name.as_str()) {
            None => out.push(format!("expand[{i}]: no task {name:?} in run {run:?}")),
            Some(actual) => {
                if let Err(e) = contains(expected, actual, name) {
                    out.push(format!("expand[{i}]: {e}"));
                }
            }
        }
    }
    out
}

/// Every problem of one fixture, empty when it behaves as expected.
fn check(path: &Path) -> Vec<String> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let stem = name.rsplit_once('.').map_or(name, |(s, _)| s);
    let expect_path = path.with_file_name(format!("{stem}.expect.json"));
    let expect: Value = match std::fs::read_to_string(&expect_path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(v) => v,
        Err(e) => return vec![format!("{}: {e}", expect_path.display())],
    };
    let content = match std::fs::read_to_string(path) {
        Ok(c) => c,
        Err(e) => return vec![e.to_string()],
    };
    let want_ok = expect.get("ok").and_then(Value::as_bool).unwrap_or(true);
    match parse(name, &content) {
        Ok(parsed) => {
            let mut out = Vec::new();
            if !want_ok {
                out.push("valid, expected errors".to_string());
            }
            out.extend(compare_problems(
                "warnings",
                expect.get("warnings"),
                &parsed.warnings,
            ));
            let cases = expect.get("expand").and_then(Value::as_array);
            for (i, case) in cases.into_iter().flatten().enumerate() {
                out.extend(check_expand(&parsed.config, case, i));
            }
            out
        }
        Err(errors) => {
            let mut out = Vec::new();
            if want_ok {
                out.push(format!("invalid, expected ok:\n{errors}"));
                return out;
            }
            out.extend(compare_problems("errors", expect.get("errors"), &errors.0));
            out
        }
    }
}

#[test]
fn every_agola_fixture_behaves_as_its_expectation_says() {
    let files = fixtures();
    assert!(
        files.len() >= 40,
        "the corpus has {} configs, expected at least 40",
        files.len()
    );
    let failures: Vec<String> = files
        .iter()
        .filter_map(|path| {
            let problems = check(path);
            let name = path.file_name()?.to_str()?;
            (!problems.is_empty()).then(|| format!("{name}:\n  {}", problems.join("\n  ")))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn partial_matching_needs_every_expected_key_and_equal_lengths() {
    let actual = serde_json::json!({"a": 1, "b": [1, 2], "c": {"d": "x", "e": "y"}});
    assert!(
        contains(
            &serde_json::json!({"c": {"d": "x"}, "z": null}),
            &actual,
            "t"
        )
        .is_ok()
    );
    assert!(contains(&serde_json::json!({"b": [1]}), &actual, "t").is_err());
    assert!(contains(&serde_json::json!({"a": 2}), &actual, "t").is_err());
    assert!(contains(&serde_json::json!({"q": 1}), &actual, "t").is_err());
}

//! Decoding of a task's `depends` entries: `"task"`, `{"task": [conditions]}` or
//! `{task: name, conditions: [...]}`, with conditions on_success (the default when none
//! is given), on_failure and on_skipped.

use cairn_client::runconfig::DependCondition;

use super::decode::{Decoder, suggestion};
use super::model::ConfigDepend;
use super::yaml::{Kind, Node};

pub(super) fn decode_depends(dec: &mut Decoder<'_>, node: &Node<'_>) -> Vec<ConfigDepend> {
    let Some(items) = dec.list(node) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| decode_depend(dec, item))
        .collect()
}

fn decode_depend(dec: &mut Decoder<'_>, node: &Node<'_>) -> Option<ConfigDepend> {
    let loc = dec.loc(node);
    match node.kind() {
        Kind::Str => Some(ConfigDepend {
            task: node.as_str().unwrap_or_default().to_string(),
            conditions: Vec::new(),
            loc,
        }),
        Kind::Map => {
            let entries = node.entries().unwrap_or_default();
            let object_form = entries.iter().any(|e| {
                e.key == Some("conditions")
                    || (e.key == Some("task") && e.value.kind() == Kind::Str)
            });
            if object_form {
                let fields = dec.fields(node, "depends entry", &["task", "conditions"])?;
                let task = fields.require(dec, "task")?;
                let task = dec.string(&task)?;
                let conditions = fields
                    .get("conditions")
                    .map(|n| conditions(dec, n))
                    .unwrap_or_default();
                return Some(ConfigDepend {
                    task,
                    conditions,
                    loc,
                });
            }
            let [entry] = entries.as_slice() else {
                dec.error(
                    node,
                    "a dependency is a task name, `{<task>: [conditions]}` or `{task: <name>, conditions: [...]}`",
                );
                return None;
            };
            let task = entry.key.unwrap_or_default().to_string();
            let conditions = if entry.value.is_null() {
                Vec::new()
            } else {
                conditions(dec, &entry.value)
            };
            Some(ConfigDepend {
                task,
                conditions,
                loc,
            })
        }
        other => {
            dec.error(
                node,
                format!("expected a task name or a map, found {}", other.describe()),
            );
            None
        }
    }
}

/// A list of conditions (or a single one), without repeats.
fn conditions(dec: &mut Decoder<'_>, node: &Node<'_>) -> Vec<DependCondition> {
    let items = node.items().unwrap_or_else(|| vec![node.clone()]);
    let mut out = Vec::new();
    for item in &items {
        let Some(text) = dec.string(item) else {
            continue;
        };
        let condition = match text.as_str() {
            "on_success" => DependCondition::OnSuccess,
            "on_failure" => DependCondition::OnFailure,
            "on_skipped" => DependCondition::OnSkipped,
            other => {
                let all = ["on_success", "on_failure", "on_skipped"];
                let hint = match suggestion(other, &all) {
                    Some(close) => format!("did you mean `{close}`?"),
                    None => format!("expected one of {}", all.join(", ")),
                };
                dec.error(item, format!("unknown condition `{other}`; {hint}"));
                continue;
            }
        };
        if !out.contains(&condition) {
            out.push(condition);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configfile::error::ConfigError;
    use crate::configfile::yaml::load_unwatched as load;

    fn depends(yaml: &str) -> (Vec<(String, Vec<DependCondition>)>, Vec<ConfigError>) {
        let doc = load("c.yml", yaml).expect("yaml");
        let mut dec = Decoder::new("c.yml");
        let d = decode_depends(&mut dec, &Node::root(&doc));
        (
            d.into_iter().map(|d| (d.task, d.conditions)).collect(),
            dec.errors,
        )
    }

    #[test]
    fn the_three_depend_forms() {
        let (d, errors) = depends(
            "- build\n- { test: [ on_failure, on_skipped ] }\n- { task: lint, conditions: [ on_success ] }\n- { task: [on_failure] }\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        use DependCondition::*;
        assert_eq!(
            d,
            [
                ("build".to_string(), vec![]),
                ("test".to_string(), vec![OnFailure, OnSkipped]),
                ("lint".to_string(), vec![OnSuccess]),
                ("task".to_string(), vec![OnFailure]),
            ]
        );
    }

    #[test]
    fn unknown_conditions_are_errors_at_the_condition() {
        let (_, errors) = depends("- build\n- { test: [ on_failure, on_fail ] }\n");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "[1].test[1]");
        assert_eq!((errors[0].line, errors[0].column), (2, 25));
        assert_eq!(
            errors[0].message,
            "unknown condition `on_fail`; expected one of on_success, on_failure, on_skipped"
        );
        let (_, errors) = depends("- { test: [ on_sucess ] }\n");
        assert_eq!(
            errors[0].message,
            "unknown condition `on_sucess`; did you mean `on_success`?"
        );
    }
}

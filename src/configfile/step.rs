//! Decoding of task steps. A step is `{type: t, …fields}`, the single-key form
//! `{t: {…fields}}` or `{t:}` (no fields), and for `run` also `{run: "command"}`.
//! Types: clone, run, save_to_workspace, restore_workspace, save_cache, restore_cache.
//! Defaults that belong to the step itself (names, cache paths `**`) are applied here.

use cairn_client::runconfig::{
    CloneStep, RestoreCacheStep, RestoreWorkspaceStep, SaveCacheStep, SaveContent,
    SaveToWorkspaceStep,
};

use super::decode::{Decoder, Fields, suggestion};
use super::error::ConfigError;
use super::model::{ConfigRunStep, ConfigStep};
use super::when::decode_when;
use super::yaml::{Kind, Node, child_path};

pub(super) const STEP_TYPES: [&str; 6] = [
    "clone",
    "run",
    "save_to_workspace",
    "restore_workspace",
    "save_cache",
    "restore_cache",
];

/// The name given to a clone step that has none.
pub const CLONE_STEP_NAME: &str = "Clone repository and checkout code";

const MAX_STEP_NAME: usize = 100;

fn allowed_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "clone" => &["name", "depth", "recurse_submodules", "when"],
        "run" => &[
            "name",
            "command",
            "environment",
            "working_dir",
            "shell",
            "tty",
            "when",
        ],
        "save_to_workspace" => &["name", "contents", "when"],
        "restore_workspace" => &["name", "dest_dir", "when"],
        "save_cache" => &["name", "key", "contents", "when"],
        "restore_cache" => &["name", "keys", "dest_dir", "when"],
        _ => &[],
    }
}

/// A step's fields: a map, or nothing at all (`clone:`).
struct Body<'a> {
    fields: Option<Fields<'a>>,
    node: Node<'a>,
}

impl<'a> Body<'a> {
    fn get(&self, key: &str) -> Option<&Node<'a>> {
        self.fields.as_ref().and_then(|f| f.get(key))
    }

    fn require(&self, dec: &mut Decoder<'_>, key: &str) -> Option<Node<'a>> {
        match &self.fields {
            Some(f) => f.require(dec, key),
            None => {
                dec.errors.push(ConfigError::new(
                    dec.file,
                    self.node.line(),
                    self.node.column(),
                    child_path(&self.node.path, key),
                    format!("missing required key `{key}`"),
                ));
                None
            }
        }
    }

    fn string(&self, dec: &mut Decoder<'_>, key: &str) -> String {
        self.get(key)
            .and_then(|n| dec.string(n))
            .unwrap_or_default()
    }

    /// A directory that must not climb out of its root with `..`.
    fn dir(&self, dec: &mut Decoder<'_>, key: &str) -> String {
        self.get(key).and_then(|n| dir(dec, n)).unwrap_or_default()
    }
}

/// A string path that stays inside its root: Agola's toolbox reads a leading `/` as
/// the root of the workspace, cache or task, so `/bin/` is fine, while a `..` that
/// climbs above the root (`../x`, `a/../../x`) is refused here, with its position.
fn dir(dec: &mut Decoder<'_>, node: &Node<'_>) -> Option<String> {
    let path = dec.string(node)?;
    if escapes(&path) {
        dec.error(
            node,
            format!("{path:?} climbs out of its root with `..`; paths stay inside the workspace, cache or task directory"),
        );
        return None;
    }
    Some(path)
}

/// Whether `path`, read from its root, goes above it.
pub(super) fn escapes(path: &str) -> bool {
    let mut depth: usize = 0;
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return true,
            },
            _ => depth += 1,
        }
    }
    false
}

/// A clone `depth`: an integer greater than zero (Agola).
fn depth(dec: &mut Decoder<'_>, node: &Node<'_>) -> Option<u32> {
    let Some(n) = node.as_int() else {
        let found = node.kind().describe();
        dec.error(node, format!("expected a number of commits, found {found}"));
        return None;
    };
    match u32::try_from(n) {
        Ok(d) if d > 0 => Some(d),
        _ => {
            dec.error(
                node,
                format!("a clone depth must be greater than 0, found {n}"),
            );
            None
        }
    }
}

pub(super) fn decode_step(dec: &mut Decoder<'_>, node: &Node<'_>) -> Option<ConfigStep> {
    let Some(entries) = node.entries() else {
        let found = node.kind().describe();
        dec.error(
            node,
            format!("expected a step (a map such as `run: make`), found {found}"),
        );
        return None;
    };
    if let Some(type_entry) = entries.iter().find(|e| e.key == Some("type")) {
        let kind = dec.string(&type_entry.value)?;
        if !STEP_TYPES.contains(&kind.as_str()) {
            dec.error(&type_entry.value, unknown_type(&kind));
            return None;
        }
        let mut allowed = allowed_fields(&kind).to_vec();
        allowed.push("type");
        let fields = dec.fields(node, &format!("{kind} step"), &allowed)?;
        let body = Body {
            fields: Some(fields),
            node: node.clone(),
        };
        return decode_body(dec, &kind, &body);
    }
    let [entry] = entries.as_slice() else {
        dec.error(
            node,
            "a step is `{type: <t>, …}` or a map with a single key, the step type",
        );
        return None;
    };
    let kind = entry.key.unwrap_or_default();
    if !STEP_TYPES.contains(&kind) {
        dec.error(&entry.key_node, unknown_type(kind));
        return None;
    }
    let value = &entry.value;
    if kind == "run" && value.kind() == Kind::Str {
        let command = value.as_str().unwrap_or_default().to_string();
        let name = default_run_name(dec, value, &command)?;
        return Some(ConfigStep::Run(ConfigRunStep {
            name,
            command,
            ..ConfigRunStep::default()
        }));
    }
    let fields = if value.is_null() {
        None
    } else {
        Some(dec.fields(value, &format!("{kind} step"), allowed_fields(kind))?)
    };
    let body = Body {
        fields,
        node: value.clone(),
    };
    decode_body(dec, kind, &body)
}

fn unknown_type(kind: &str) -> String {
    match suggestion(kind, &STEP_TYPES) {
        Some(close) => format!("unknown step type `{kind}`; did you mean `{close}`?"),
        None => format!(
            "unknown step type `{kind}`; expected one of {}",
            STEP_TYPES.join(", ")
        ),
    }
}

fn decode_body(dec: &mut Decoder<'_>, kind: &str, body: &Body<'_>) -> Option<ConfigStep> {
    if let Some(when) = body.get("when") {
        // Parsed for its errors; run generation does not use step-level `when`.
        decode_when(dec, when);
    }
    let name = body.get("name").and_then(|n| dec.string(n));
    let name = name.map(|n| truncate(&n));
    let named = |default: &str| name.clone().unwrap_or_else(|| default.to_string());
    let step = match kind {
        "clone" => ConfigStep::Clone(CloneStep {
            name: named(CLONE_STEP_NAME),
            depth: body.get("depth").and_then(|n| depth(dec, n)),
            recurse_submodules: body
                .get("recurse_submodules")
                .and_then(|n| dec.bool(n))
                .unwrap_or_default(),
        }),
        "run" => {
            let command_node = body.require(dec, "command")?;
            let command = dec.string(&command_node)?;
            let name = match name.clone() {
                Some(n) => n,
                None => default_run_name(dec, &body.node, &command)?,
            };
            ConfigStep::Run(ConfigRunStep {
                name,
                command,
                environment: body
                    .get("environment")
                    .map(|n| dec.env(n))
                    .unwrap_or_default(),
                working_dir: body.string(dec, "working_dir"),
                shell: body.string(dec, "shell"),
                tty: body.get("tty").and_then(|n| dec.bool(n)),
            })
        }
        "save_to_workspace" => ConfigStep::SaveToWorkspace(SaveToWorkspaceStep {
            name: named("save to workspace"),
            contents: contents(dec, body, false),
        }),
        "restore_workspace" => ConfigStep::RestoreWorkspace(RestoreWorkspaceStep {
            name: named("restore workspace"),
            dest_dir: body.dir(dec, "dest_dir"),
        }),
        "save_cache" => {
            let key_node = body.require(dec, "key")?;
            let key = dec.string(&key_node)?;
            if key.is_empty() {
                dec.error(&key_node, "a cache key must not be empty");
            }
            ConfigStep::SaveCache(SaveCacheStep {
                name: named("save cache"),
                key,
                contents: contents(dec, body, true),
            })
        }
        "restore_cache" => {
            let keys_node = body.require(dec, "keys")?;
            let keys = dec.strings(&keys_node)?;
            if keys.is_empty() {
                dec.error(&keys_node, "restore_cache needs at least one key");
            }
            ConfigStep::RestoreCache(RestoreCacheStep {
                name: named("restore cache"),
                keys,
                dest_dir: body.dir(dec, "dest_dir"),
            })
        }
        _ => return None,
    };
    Some(step)
}

/// The first line of a single-line command; a multi-line command needs a name.
fn default_run_name(dec: &mut Decoder<'_>, node: &Node<'_>, command: &str) -> Option<String> {
    let trimmed = command.trim();
    if trimmed.lines().count() > 1 {
        dec.error(node, "a run step with a multi-line command needs a `name`");
        return None;
    }
    Some(truncate(trimmed))
}

fn truncate(name: &str) -> String {
    name.chars().take(MAX_STEP_NAME).collect()
}

fn contents(dec: &mut Decoder<'_>, body: &Body<'_>, default_all: bool) -> Vec<SaveContent> {
    let Some(list) = body.get("contents").and_then(|n| dec.list(n)) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|item| {
            let f = dec.fields(item, "contents", &["source_dir", "dest_dir", "paths"])?;
            let mut paths: Vec<String> = f
                .get("paths")
                .and_then(|n| dec.list(n))
                .map(|items| items.iter().filter_map(|n| dir(dec, n)).collect())
                .unwrap_or_default();
            if paths.is_empty() && default_all {
                paths.push("**".to_string());
            }
            Some(SaveContent {
                source_dir: f
                    .get("source_dir")
                    .and_then(|n| dir(dec, n))
                    .unwrap_or_default(),
                dest_dir: f
                    .get("dest_dir")
                    .and_then(|n| dir(dec, n))
                    .unwrap_or_default(),
                paths,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configfile::yaml::load_unwatched as load;

    fn steps(yaml: &str) -> (Vec<ConfigStep>, Vec<ConfigError>) {
        let doc = load("c.yml", yaml).expect("yaml");
        let mut dec = Decoder::new("c.yml");
        let root = Node::root(&doc);
        let steps = root
            .items()
            .expect("a list")
            .iter()
            .filter_map(|n| decode_step(&mut dec, n))
            .collect();
        (steps, dec.errors)
    }

    #[test]
    fn the_three_step_forms_decode_alike() {
        let (s, errors) =
            steps("- run: make\n- run: { command: make }\n- { type: run, command: make }\n");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(s.len(), 3);
        assert!(s.iter().all(|st| st == &s[0]));
        let ConfigStep::Run(run) = &s[0] else {
            panic!("a run step")
        };
        assert_eq!((run.name.as_str(), run.command.as_str()), ("make", "make"));
    }

    #[test]
    fn clone_takes_a_null_body_and_a_default_name() {
        let (s, errors) = steps("- clone:\n- type: clone\n  name: checkout\n");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            s,
            [
                ConfigStep::Clone(CloneStep {
                    name: CLONE_STEP_NAME.into(),
                    ..CloneStep::default()
                }),
                ConfigStep::Clone(CloneStep {
                    name: "checkout".into(),
                    ..CloneStep::default()
                })
            ]
        );
    }

    #[test]
    fn a_multi_line_command_needs_a_name_and_long_names_are_cut() {
        let (_, errors) = steps("- run: |\n    make\n    make test\n");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "[0].run");
        // A block scalar's position is where its text starts.
        assert_eq!((errors[0].line, errors[0].column), (2, 5));
        let long = "x".repeat(150);
        let (s, _) = steps(&format!("- run: {long}\n"));
        assert_eq!(
            s[0].clone(),
            ConfigStep::Run(ConfigRunStep {
                name: "x".repeat(100),
                command: long,
                ..ConfigRunStep::default()
            })
        );
    }

    #[test]
    fn unknown_step_types_are_errors_at_the_type() {
        let (_, errors) = steps("- make: all\n- type: compile\n");
        assert_eq!(errors.len(), 2);
        assert_eq!((errors[0].line, errors[0].column), (1, 3));
        assert!(errors[0].message.starts_with("unknown step type `make`"));
        assert_eq!(errors[1].field, "[1].type");
        assert_eq!((errors[1].line, errors[1].column), (2, 9));
        let (_, errors) = steps("- restore_cach: { keys: [k] }\n");
        assert_eq!(
            errors[0].message,
            "unknown step type `restore_cach`; did you mean `restore_cache`?"
        );
    }

    #[test]
    fn caches_need_keys_and_default_their_paths() {
        let (s, errors) = steps(
            "- save_cache: { key: k, contents: [ { source_dir: /go } ] }\n- restore_cache: { keys: [], dest_dir: /go }\n- save_cache: { contents: [] }\n",
        );
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0].message, "restore_cache needs at least one key");
        assert_eq!(errors[1].message, "missing required key `key`");
        assert_eq!(errors[1].field, "[2].save_cache.key");
        let ConfigStep::SaveCache(save) = &s[0] else {
            panic!("save_cache")
        };
        assert_eq!(save.contents[0].paths, ["**"]);
    }

    #[test]
    fn clone_takes_depth_and_recurse_submodules() {
        let (s, errors) = steps(
            "- clone: { depth: 1, recurse_submodules: true }\n- { type: clone, depth: 50 }\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            s,
            [
                ConfigStep::Clone(CloneStep {
                    name: CLONE_STEP_NAME.into(),
                    depth: Some(1),
                    recurse_submodules: true
                }),
                ConfigStep::Clone(CloneStep {
                    name: CLONE_STEP_NAME.into(),
                    depth: Some(50),
                    recurse_submodules: false
                })
            ]
        );
        let (_, errors) = steps(
            "- clone: { depth: 0 }\n- clone: { depth: -2, recurse_submodules: maybe }\n- clone: { depth: '3' }\n",
        );
        let messages: Vec<_> = errors
            .iter()
            .map(|e| (e.line, e.column, e.message.as_str()))
            .collect();
        assert_eq!(
            messages,
            [
                (1, 19, "a clone depth must be greater than 0, found 0"),
                (2, 19, "a clone depth must be greater than 0, found -2"),
                (2, 43, "expected true or false, found a string"),
                (3, 19, "expected a number of commits, found a string"),
            ]
        );
    }

    #[test]
    fn leading_slashes_are_roots_and_dot_dot_escapes_are_refused() {
        let (s, errors) = steps(
            "- save_to_workspace: { contents: [ { source_dir: ./bin, dest_dir: /bin/, paths: ['*', 'a/../b'] } ] }\n- restore_workspace: { dest_dir: / }\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        let ConfigStep::SaveToWorkspace(save) = &s[0] else {
            panic!("save_to_workspace")
        };
        assert_eq!(save.contents[0].dest_dir, "/bin/");
        let (_, errors) = steps(
            "- save_to_workspace: { contents: [ { source_dir: ../x, dest_dir: /a/../../b, paths: ['../*'] } ] }\n- restore_cache: { keys: [k], dest_dir: 'x/../..' }\n",
        );
        let mut at: Vec<_> = errors
            .iter()
            .map(|e| (e.line, e.column, e.field.as_str()))
            .collect();
        at.sort();
        assert_eq!(
            at,
            [
                (1, 50, "[0].save_to_workspace.contents[0].source_dir"),
                (1, 66, "[0].save_to_workspace.contents[0].dest_dir"),
                (1, 86, "[0].save_to_workspace.contents[0].paths[0]"),
                (2, 41, "[1].restore_cache.dest_dir"),
            ]
        );
        assert!(
            errors[1]
                .message
                .contains("climbs out of its root with `..`"),
            "{}",
            errors[1]
        );
        assert!(escapes("a/../../b") && !escapes("/a/b/../c") && !escapes("./"));
    }
}

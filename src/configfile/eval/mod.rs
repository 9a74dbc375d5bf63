//! Configs that are programs: `.agola/config.jsonnet` and `.agola/config.star`, evaluated
//! as Agola does (`internal/config/jsonnet.go`, `starlark.go`) into the JSON document
//! that [`super::parse`] then reads like a `.agola/config.json`.
//!
//! - Jsonnet: a top-level function is called with the top-level argument `ctx` (Agola's
//!   `vm.TLACode("ctx", …)`); any other top-level value is the config itself.
//! - Starlark: the file must define `main`, which is called with `ctx` as a dict and must
//!   return a dict.
//!
//! `ctx` is [`ConfigContext`]: `ref_type`, `ref`, `branch`, `tag`, `pull_request_id`,
//! `commit_sha`, all strings, empty when not applicable.
//!
//! Configs are untrusted input. Evaluation reads no file (no Jsonnet `import`, no
//! Starlark `load()`), is bounded by [`Limits`] (call depth, Starlark steps and heap, a
//! deadline) and its result by Agola's 1 MiB ([`super::MAX_CONFIG_SIZE`]). [`evaluate`] is the
//! pure evaluation on the calling thread; [`sandbox`] runs it in a child process with an
//! address-space and CPU limit and a wall-clock deadline, so that no config can exhaust
//! the server's memory, stack or time (Agola's own TODO in `config.go`).
//!
//! Errors are [`ConfigError`]s naming the file, and the line and column the evaluator
//! reports.

mod jsonnet;
pub mod sandbox;
mod starlark;

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::MAX_CONFIG_SIZE;
use super::error::ConfigError;

/// What a config program is given as `ctx`: Agola's `ConfigContext`, every field present
/// and a string (empty when it does not apply, e.g. `tag` of a branch run).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigContext {
    /// `branch`, `tag` or `pull_request`.
    pub ref_type: String,
    /// The full git reference (`refs/heads/main`).
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub branch: String,
    pub tag: String,
    pub pull_request_id: String,
    pub commit_sha: String,
}

impl ConfigContext {
    /// The context of a run for `branch`, `tag` or `git_ref` (the first given wins, as
    /// in run creation) at `commit_sha`. A bare ref is classified as Agola's gateway
    /// does: `refs/heads/x` is branch `x`, `refs/tags/y` tag `y`, `refs/pull/N/head` and
    /// `refs/merge-requests/N/head` pull request `N`.
    pub fn new(
        branch: Option<&str>,
        tag: Option<&str>,
        git_ref: Option<&str>,
        commit_sha: &str,
    ) -> ConfigContext {
        let mut ctx = ConfigContext {
            commit_sha: commit_sha.to_string(),
            ..ConfigContext::default()
        };
        if let Some(b) = branch {
            ctx.ref_type = "branch".into();
            ctx.branch = b.to_string();
            ctx.git_ref = git_ref.map_or_else(|| format!("refs/heads/{b}"), str::to_string);
        } else if let Some(t) = tag {
            ctx.ref_type = "tag".into();
            ctx.tag = t.to_string();
            ctx.git_ref = git_ref.map_or_else(|| format!("refs/tags/{t}"), str::to_string);
        } else if let Some(r) = git_ref {
            ctx.git_ref = r.to_string();
            if let Some(b) = r.strip_prefix("refs/heads/") {
                ctx.ref_type = "branch".into();
                ctx.branch = b.to_string();
            } else if let Some(t) = r.strip_prefix("refs/tags/") {
                ctx.ref_type = "tag".into();
                ctx.tag = t.to_string();
            } else if let Some(id) = pull_request_id(r) {
                ctx.ref_type = "pull_request".into();
                ctx.pull_request_id = id.to_string();
            }
        }
        ctx
    }
}

/// `N` of `refs/pull/N/head` (GitHub, Gitea) or `refs/merge-requests/N/head` (GitLab).
fn pull_request_id(git_ref: &str) -> Option<&str> {
    let rest = git_ref
        .strip_prefix("refs/pull/")
        .or_else(|| git_ref.strip_prefix("refs/merge-requests/"))?;
    let id = rest.strip_suffix("/head")?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())).then_some(id)
}

/// The config languages that are evaluated rather than read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Language {
    Jsonnet,
    Starlark,
}

impl Language {
    /// The language of a config file by its extension (`.jsonnet`, `.star`); `None` for
    /// YAML and JSON.
    pub fn of(path: &str) -> Option<Language> {
        if path.ends_with(".jsonnet") {
            Some(Language::Jsonnet)
        } else if path.ends_with(".star") {
            Some(Language::Starlark)
        } else {
            None
        }
    }
}

/// Bounds on one evaluation. The defaults are far above what a real config needs (Agola's
/// own `.agola/config.jsonnet` takes a few hundred calls) and far below what hurts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Nested calls (Jsonnet stack frames, Starlark call depth).
    pub max_stack: usize,
    /// Starlark "ticks": function calls plus loop iterations.
    pub max_steps: u64,
    /// Bytes of the Starlark heap (checked as evaluation goes).
    pub max_heap: usize,
    /// Address space of the [`sandbox`] process, in bytes.
    pub max_memory: u64,
    /// Wall-clock bound of the whole evaluation.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_stack: 500,
            max_steps: 20_000_000,
            max_heap: 512 * 1024 * 1024,
            max_memory: 2 * 1024 * 1024 * 1024,
            timeout: Duration::from_secs(20),
        }
    }
}

/// Evaluates the config program `content` of `file` in `language` with `ctx`, on the
/// calling thread, into the config as JSON text. Bounded by `limits` except for the
/// memory of Jsonnet evaluation and the deadline of Jsonnet (its evaluator has no step
/// hook): run it through [`sandbox`] for those.
pub fn evaluate(
    language: Language,
    file: &str,
    content: &str,
    ctx: &ConfigContext,
    limits: &Limits,
) -> Result<String, ConfigError> {
    let deadline = Instant::now() + limits.timeout;
    let json = match language {
        Language::Jsonnet => jsonnet::evaluate(file, content, ctx, limits)?,
        Language::Starlark => starlark::evaluate(file, content, ctx, limits, deadline)?,
    };
    check_size(file, &json)?;
    Ok(json)
}

/// Agola's limit on the evaluated config.
fn check_size(file: &str, json: &str) -> Result<(), ConfigError> {
    if json.len() > MAX_CONFIG_SIZE {
        return Err(ConfigError::over_limit(
            file,
            0,
            0,
            "",
            format!(
                "the evaluated config is {} bytes, more than the limit of {MAX_CONFIG_SIZE} bytes (1 MiB)",
                json.len()
            ),
        ));
    }
    Ok(())
}

/// 1-based line and column (in characters) of byte `offset` in `content`.
fn position(content: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(content.len());
    while !content.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &content[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configfile::{ConfigStep, load_with};

    const JSONNET: &str = include_str!("../../../tests/fixtures/agola/eval/config.jsonnet");
    const STARLARK: &str = include_str!("../../../tests/fixtures/agola/eval/config.star");

    /// Each task of the fixture's only run: name, run commands, dependencies.
    fn tasks(path: &str, src: &str, ctx: &ConfigContext) -> Vec<(String, Vec<String>, usize)> {
        let config = load_with(path, src, ctx, |language, file, content, ctx| {
            evaluate(language, file, content, ctx, &Limits::default())
        })
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .config;
        assert_eq!(config.runs.len(), 1);
        config.runs[0]
            .tasks
            .iter()
            .map(|t| {
                let commands = t
                    .steps
                    .iter()
                    .filter_map(|s| match s {
                        ConfigStep::Run(r) => Some(r.command.clone()),
                        _ => None,
                    })
                    .collect();
                (t.name.clone(), commands, t.depends.len())
            })
            .collect()
    }

    fn owned(v: &[(&str, &[&str], usize)]) -> Vec<(String, Vec<String>, usize)> {
        v.iter()
            .map(|(n, c, d)| (n.to_string(), c.iter().map(|c| c.to_string()).collect(), *d))
            .collect()
    }

    #[test]
    fn the_fixtures_expand_by_branch() {
        let ctx = ConfigContext::new(Some("main"), None, None, "0123456789abcdef");
        let expected = owned(&[
            ("shard a", &["echo \"shard a on main\""], 0),
            ("shard b", &["echo \"shard b on main\""], 0),
            ("gather", &["echo \"gathered 2 shards: a,b\""], 2),
        ]);
        assert_eq!(tasks(".agola/config.jsonnet", JSONNET, &ctx), expected);
        assert_eq!(tasks(".agola/config.star", STARLARK, &ctx), expected);
    }

    #[test]
    fn the_fixtures_expand_by_tag() {
        let ctx = ConfigContext::new(None, Some("v2.0"), None, "");
        let jsonnet = tasks(".agola/config.jsonnet", JSONNET, &ctx);
        assert_eq!(
            jsonnet.iter().map(|t| t.0.as_str()).collect::<Vec<_>>(),
            ["shard a", "shard b", "gather", "release"]
        );
        assert_eq!(
            jsonnet[0].1,
            ["echo \"shard a on refs/tags/v2.0\"", "echo tag v2.0"]
        );
        assert_eq!(jsonnet[3].1[0], "echo \"release v2.0\"");
        let star = tasks(".agola/config.star", STARLARK, &ctx);
        assert_eq!(
            star.iter().map(|t| t.0.as_str()).collect::<Vec<_>>(),
            ["shard a", "shard b", "gather", "release"]
        );
    }

    #[test]
    fn an_evaluated_config_over_one_mebibyte_is_refused() {
        let ctx = ConfigContext::default();
        let src = "{ runs: [], padding: std.join('', ['x' for i in std.range(1, 1100000)]) }";
        let e = evaluate(
            Language::Jsonnet,
            "c.jsonnet",
            src,
            &ctx,
            &Limits::default(),
        )
        .expect_err("too big");
        assert!(
            e.message.contains("more than the limit of 1048576 bytes"),
            "{e}"
        );
        let src = "def main(ctx):\n    return {'runs': [], 'padding': 'x' * 1100000}\n";
        let e = evaluate(Language::Starlark, "c.star", src, &ctx, &Limits::default())
            .expect_err("too big");
        assert!(
            e.message.contains("more than the limit of 1048576 bytes"),
            "{e}"
        );
    }

    #[test]
    fn the_language_follows_the_extension() {
        assert_eq!(
            Language::of(".agola/config.jsonnet"),
            Some(Language::Jsonnet)
        );
        assert_eq!(Language::of(".agola/config.star"), Some(Language::Starlark));
        assert_eq!(Language::of(".agola/config.json"), None);
        assert_eq!(Language::of(".agola/config.yml"), None);
    }

    #[test]
    fn the_context_classifies_references_as_agola() {
        let c = ConfigContext::new(Some("main"), None, None, "abc");
        assert_eq!(
            (c.ref_type.as_str(), c.git_ref.as_str(), c.branch.as_str()),
            ("branch", "refs/heads/main", "main")
        );
        assert_eq!(c.commit_sha, "abc");
        let c = ConfigContext::new(None, Some("v1.0"), None, "");
        assert_eq!((c.ref_type.as_str(), c.tag.as_str()), ("tag", "v1.0"));
        assert_eq!(c.git_ref, "refs/tags/v1.0");
        let c = ConfigContext::new(None, None, Some("refs/pull/42/head"), "");
        assert_eq!(
            (c.ref_type.as_str(), c.pull_request_id.as_str()),
            ("pull_request", "42")
        );
        let c = ConfigContext::new(None, None, Some("refs/merge-requests/7/head"), "");
        assert_eq!(c.pull_request_id, "7");
        let c = ConfigContext::new(None, None, Some("refs/heads/dev"), "");
        assert_eq!((c.ref_type.as_str(), c.branch.as_str()), ("branch", "dev"));
        let c = ConfigContext::new(None, None, Some("refs/pull/x/head"), "");
        assert_eq!(c.ref_type, "");
    }

    #[test]
    fn the_context_serializes_with_agolas_field_names() {
        let c = ConfigContext::new(Some("main"), None, None, "abc");
        let json = serde_json::to_value(&c).expect("serializable");
        assert_eq!(
            json,
            serde_json::json!({
                "ref_type": "branch", "ref": "refs/heads/main", "branch": "main",
                "tag": "", "pull_request_id": "", "commit_sha": "abc"
            })
        );
    }

    #[test]
    fn positions_are_one_based_in_characters() {
        let s = "ab\nçd\n";
        assert_eq!(position(s, 0), (1, 1));
        assert_eq!(position(s, 3), (2, 1));
        assert_eq!(position(s, 5), (2, 2));
        assert_eq!(position(s, 100), (3, 1));
    }

    #[test]
    fn a_result_over_one_mebibyte_is_refused() {
        let big = format!("{{\"x\": \"{}\"}}", "a".repeat(MAX_CONFIG_SIZE));
        let e = check_size("c.jsonnet", &big).expect_err("too big");
        assert!(e.message.contains("more than the limit of 1048576 bytes"));
        assert!(check_size("c.jsonnet", "{}").is_ok());
    }
}

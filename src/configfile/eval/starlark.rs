//! Starlark configs (Meta's `starlark`): Agola's `execStarlark` — the file defines
//! `main`, called with `ctx` as a dict of strings, returning the config as a dict that is
//! written as JSON the way Agola's `starlarkJSON` does (dicts with string keys, lists and
//! tuples, strings, numbers, booleans, `None`; anything else is an error). The dialect
//! is go-starlark's default as Agola runs it, without `load()`; `print` output is
//! dropped as in Agola. Call depth, steps, heap and time are bounded.

use std::time::Instant;

use starlark::environment::{Globals, Module};
use starlark::eval::Evaluator;
use starlark::syntax::{AstModule, Dialect};
use starlark::values::Value;
use starlark::values::dict::{AllocDict, DictRef};
use starlark::values::list::ListRef;
use starlark::values::tuple::TupleRef;

use super::{ConfigContext, Limits};
use crate::configfile::error::ConfigError;

/// `print` in a config goes nowhere (Agola: "TODO redirect print to a logger?").
struct Quiet;

impl starlark::PrintHandler for Quiet {
    fn println(&self, _: &str) -> starlark::Result<()> {
        Ok(())
    }
}

pub(super) fn evaluate(
    file: &str,
    content: &str,
    ctx: &ConfigContext,
    limits: &Limits,
    deadline: Instant,
) -> Result<String, ConfigError> {
    let dialect = Dialect {
        enable_load: false,
        ..Dialect::Standard
    };
    let ast = AstModule::parse(file, content.to_owned(), &dialect).map_err(|e| error(file, &e))?;
    let globals = Globals::standard();
    Module::with_temp_heap(|module| {
        let quiet = Quiet;
        let mut eval = Evaluator::new(&module);
        eval.set_print_handler(&quiet);
        let limit = |r: anyhow::Result<()>| {
            r.map_err(|e| ConfigError::new(file, 0, 0, "", format!("starlark: {e}")))
        };
        limit(eval.set_max_callstack_size(limits.max_stack.max(1)))?;
        limit(eval.set_max_tick_count(limits.max_steps.max(1)))?;
        limit(eval.set_max_heap_size(limits.max_heap.max(1)))?;
        eval.set_check_cancelled(Box::new(move || Instant::now() >= deadline));
        eval.eval_module(ast, &globals)
            .map_err(|e| error(file, &e))?;
        let main = module.get("main").ok_or_else(|| {
            ConfigError::new(file, 0, 0, "", "no main function in starlark config")
        })?;
        if main.get_type() != "function" {
            return Err(ConfigError::new(
                file,
                0,
                0,
                "",
                "main in starlark config is not a function",
            ));
        }
        let ctx = eval.heap().alloc(AllocDict([
            ("ref_type", ctx.ref_type.as_str()),
            ("ref", ctx.git_ref.as_str()),
            ("branch", ctx.branch.as_str()),
            ("tag", ctx.tag.as_str()),
            ("pull_request_id", ctx.pull_request_id.as_str()),
            ("commit_sha", ctx.commit_sha.as_str()),
        ]));
        let out = eval
            .eval_function(main, &[ctx], &[])
            .map_err(|e| error(file, &e))?;
        if DictRef::from_value(out).is_none() {
            return Err(ConfigError::new(
                file,
                0,
                0,
                "",
                format!(
                    "wrong starlark output, must be a dict (main returned a {})",
                    out.get_type()
                ),
            ));
        }
        let json = to_json(out, 0).map_err(|message| ConfigError::new(file, 0, 0, "", message))?;
        serde_json::to_string(&json).map_err(|e| ConfigError::new(file, 0, 0, "", e.to_string()))
    })
}

/// Values nested deeper than this are refused (a self-referencing list would not end).
const MAX_DEPTH: usize = 200;

/// Agola's `starlarkJSON`.
fn to_json(v: Value<'_>, depth: usize) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    if depth > MAX_DEPTH {
        return Err(format!(
            "the config is nested more than {MAX_DEPTH} levels deep"
        ));
    }
    if v.is_none() {
        return Ok(J::Null);
    }
    if let Some(b) = v.unpack_bool() {
        return Ok(J::Bool(b));
    }
    if let Some(s) = v.unpack_str() {
        return Ok(J::String(s.to_string()));
    }
    if matches!(v.get_type(), "int" | "float") {
        return v.to_json_value().map_err(|e| e.to_string());
    }
    let items = ListRef::from_value(v)
        .map(|l| l.content().to_vec())
        .or_else(|| TupleRef::from_value(v).map(|t| t.content().to_vec()));
    if let Some(items) = items {
        return items
            .into_iter()
            .map(|x| to_json(x, depth + 1))
            .collect::<Result<Vec<_>, _>>()
            .map(J::Array);
    }
    if let Some(dict) = DictRef::from_value(v) {
        let mut map = serde_json::Map::new();
        for (k, x) in dict.iter() {
            let Some(key) = k.unpack_str() else {
                return Err("cannot convert non-string dict key to JSON".into());
            };
            map.insert(key.to_string(), to_json(x, depth + 1)?);
        }
        return Ok(J::Object(map));
    }
    Err(format!(
        "cannot convert starlark type {:?} to JSON",
        v.get_type()
    ))
}

/// The error with its position (0-based in the evaluator, 1-based here): the error's own
/// span, else the innermost frame of its call stack.
fn error(file: &str, e: &starlark::Error) -> ConfigError {
    let span = e.span().cloned().or_else(|| {
        e.call_stack()
            .frames
            .iter()
            .rev()
            .find_map(|f| f.location.clone())
    });
    let (line, column) = span.map_or((0, 0), |s| {
        let pos = s.resolve_span().begin;
        (pos.line + 1, pos.column + 1)
    });
    ConfigError::new(file, line, column, "", e.without_diagnostic().to_string())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn eval_with(src: &str, limits: &Limits) -> Result<serde_json::Value, ConfigError> {
        let ctx = ConfigContext::new(None, Some("v1.2"), None, "0123abc");
        let deadline = Instant::now() + limits.timeout;
        let json = evaluate("c.star", src, &ctx, limits, deadline)?;
        Ok(serde_json::from_str(&json).expect("valid json"))
    }

    fn eval(src: &str) -> Result<serde_json::Value, ConfigError> {
        eval_with(src, &Limits::default())
    }

    #[test]
    fn main_gets_ctx_as_a_dict_of_strings() {
        let v = eval("def main(ctx):\n    return ctx\n").expect("evaluates");
        assert_eq!(
            v,
            serde_json::json!({
                "ref_type": "tag", "ref": "refs/tags/v1.2", "branch": "",
                "tag": "v1.2", "pull_request_id": "", "commit_sha": "0123abc"
            })
        );
    }

    #[test]
    fn the_result_converts_as_agolas_starlark_json() {
        let v = eval(
            "def main(ctx):\n    return {'a': [1, 2.5, True, None, 'x'], 't': (1, 'y'), 'd': {'k': {}}}\n",
        )
        .expect("evaluates");
        assert_eq!(
            v,
            serde_json::json!({"a": [1, 2.5, true, null, "x"], "t": [1, "y"], "d": {"k": {}}})
        );
        let e = eval("def main(ctx):\n    return {1: 'x'}\n").expect_err("int key");
        assert_eq!(e.message, "cannot convert non-string dict key to JSON");
        let e = eval("def main(ctx):\n    return {'f': main}\n").expect_err("function");
        assert_eq!(
            e.message,
            "cannot convert starlark type \"function\" to JSON"
        );
    }

    #[test]
    fn main_must_exist_be_a_function_and_return_a_dict() {
        let e = eval("x = 1\n").expect_err("no main");
        assert_eq!(e.message, "no main function in starlark config");
        let e = eval("main = 1\n").expect_err("not a function");
        assert_eq!(e.message, "main in starlark config is not a function");
        let e = eval("def main(ctx):\n    return [1]\n").expect_err("not a dict");
        assert!(
            e.message
                .starts_with("wrong starlark output, must be a dict"),
            "{e}"
        );
    }

    #[test]
    fn load_is_refused() {
        let e =
            eval("load('other.star', 'x')\ndef main(ctx):\n    return {}\n").expect_err("no load");
        assert_eq!((e.line, e.column), (1, 1), "{e}");
    }

    #[test]
    fn errors_point_into_the_file() {
        let e = eval("def main(ctx):\n    x = {}\n    return x['missing']\n").expect_err("key");
        assert_eq!((e.file.as_str(), e.line), ("c.star", 3), "{e}");
        let e = eval("def main(ctx):\n    return {'a': 1 +\n").expect_err("syntax");
        assert!(e.line >= 2, "{e}");
        let e = eval("def main(ctx):\n    return {'a': undefined_name}\n").expect_err("name");
        assert_eq!((e.line, e.column), (2, 18), "{e}");
    }

    #[test]
    fn recursion_and_endless_loops_end_with_an_error() {
        let e = eval("def f(x):\n    return f(x)\ndef main(ctx):\n    return f(1)\n")
            .expect_err("recursion");
        assert!(e.line > 0, "{e}");
        let limits = Limits {
            max_steps: 100_000,
            ..Limits::default()
        };
        let e = eval_with(
            "def main(ctx):\n    return {'a': [x for x in range(100000000)]}\n",
            &limits,
        )
        .expect_err("too many steps");
        assert!(e.message.contains("limit"), "{e}");
        let limits = Limits {
            timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let started = Instant::now();
        let e = eval_with(
            "def main(ctx):\n    n = 0\n    for x in range(1000000000):\n        n += x\n    return {}\n",
            &limits,
        )
        .expect_err("deadline");
        assert!(started.elapsed() < Duration::from_secs(10), "{e}");
    }
}

//! Jsonnet configs (rsjsonnet-lang): Agola's `execJsonnet` — `ctx` as a top-level
//! argument, the result manifested as JSON. Imports are refused; the call depth is
//! bounded (the evaluator keeps its own stack on the heap, so depth never grows the
//! native stack).

use rsjsonnet_lang::arena::Arena;
use rsjsonnet_lang::interner::InternedStr;
use rsjsonnet_lang::parser::{ActualToken, ExpectedToken, ParseError};
use rsjsonnet_lang::program::{
    AnalyzeError, Callbacks, EvalError, EvalErrorKind, EvalStackTraceItem, ImportError, LoadError,
    NativeError, Program, Thunk, Value,
};
use rsjsonnet_lang::span::{SpanContextId, SpanId};
use rsjsonnet_lang::token::STokenKind;

use super::{ConfigContext, Limits, position};
use crate::configfile::error::ConfigError;

/// The only outside world a config sees: none.
struct Sealed;

impl<'p> Callbacks<'p> for Sealed {
    fn import(
        &mut self,
        _: &mut Program<'p>,
        _: SpanId,
        _: &str,
    ) -> Result<Thunk<'p>, ImportError> {
        Err(ImportError)
    }

    fn import_str(
        &mut self,
        _: &mut Program<'p>,
        _: SpanId,
        _: &str,
    ) -> Result<String, ImportError> {
        Err(ImportError)
    }

    fn import_bin(
        &mut self,
        _: &mut Program<'p>,
        _: SpanId,
        _: &str,
    ) -> Result<Vec<u8>, ImportError> {
        Err(ImportError)
    }

    fn trace(&mut self, _: &mut Program<'p>, _: &str, _: &[EvalStackTraceItem]) {}

    fn native_call(
        &mut self,
        _: &mut Program<'p>,
        _: InternedStr<'p>,
        _: &[Value<'p>],
    ) -> Result<Value<'p>, NativeError> {
        Err(NativeError)
    }
}

pub(super) fn evaluate(
    file: &str,
    content: &str,
    ctx: &ConfigContext,
    limits: &Limits,
) -> Result<String, ConfigError> {
    let arena = Arena::new();
    let mut program = Program::new(&arena);
    program.set_max_stack(limits.max_stack);
    let (span_ctx, _) = program
        .span_manager_mut()
        .insert_source_context(content.len());
    let at = Locator {
        file,
        content,
        span_ctx,
    };
    let thunk = program
        .load_source(span_ctx, content.as_bytes(), true, file)
        .map_err(|e| at.load_error(&program, &e))?;
    let mut sealed = Sealed;
    let mut value = program
        .eval_value(&thunk, &mut sealed)
        .map_err(|e| at.eval_error(&program, &e))?;
    if value.is_function() {
        let fields = [
            ("ref_type", &ctx.ref_type),
            ("ref", &ctx.git_ref),
            ("branch", &ctx.branch),
            ("tag", &ctx.tag),
            ("pull_request_id", &ctx.pull_request_id),
            ("commit_sha", &ctx.commit_sha),
        ]
        .map(|(k, v)| (program.intern_str(k), Value::string(v)));
        let ctx_value = program.make_object(&fields);
        let ctx_thunk = program.value_to_thunk(&ctx_value);
        let function = program.value_to_thunk(&value);
        let name = program.intern_str("ctx");
        value = program
            .eval_call(&function, &[], &[(name, ctx_thunk)], &mut sealed)
            .map_err(|e| at.eval_error(&program, &e))?;
    }
    program
        .manifest_json(&value, true)
        .map_err(|e| at.eval_error(&program, &e))
}

/// Turns the evaluator's spans into positions of the config file.
struct Locator<'a> {
    file: &'a str,
    content: &'a str,
    span_ctx: SpanContextId,
}

impl Locator<'_> {
    fn error(&self, program: &Program<'_>, span: Option<SpanId>, message: String) -> ConfigError {
        let (line, column) = span
            .map(|s| program.span_manager().get_span(s))
            .filter(|(ctx, _, _)| *ctx == self.span_ctx)
            .map_or((0, 0), |(_, start, _)| position(self.content, start));
        ConfigError::new(self.file, line, column, "", message)
    }

    fn load_error(&self, program: &Program<'_>, e: &LoadError) -> ConfigError {
        let (span, message) = match e {
            LoadError::Lex(e) => (lex_span(e), format!("invalid Jsonnet: {}", debug_words(e))),
            LoadError::Parse(ParseError::Expected {
                span,
                expected,
                instead,
            }) => {
                let expected: Vec<String> = expected.iter().map(expected_token).collect();
                (
                    Some(*span),
                    format!(
                        "invalid Jsonnet: expected {}, found {}",
                        expected.join(" or "),
                        actual_token(instead)
                    ),
                )
            }
            LoadError::Analyze(e) => analyze_error(e),
        };
        self.error(program, span, message)
    }

    /// The error's own span if it is in the config, else the innermost frame of the
    /// stack trace that is (not the standard library's source).
    fn eval_error(&self, program: &Program<'_>, e: &EvalError) -> ConfigError {
        let in_file = |s: &SpanId| program.span_manager().get_span(*s).0 == self.span_ctx;
        let span = kind_span(&e.kind).filter(in_file).or_else(|| {
            e.stack_trace
                .iter()
                .filter_map(trace_span)
                .find(|s| in_file(s))
        });
        self.error(program, span, eval_message(&e.kind))
    }
}

fn trace_span(item: &EvalStackTraceItem) -> Option<SpanId> {
    match item {
        EvalStackTraceItem::Expr { span }
        | EvalStackTraceItem::Variable { span, .. }
        | EvalStackTraceItem::Import { span } => Some(*span),
        EvalStackTraceItem::Call { span, .. }
        | EvalStackTraceItem::ArrayItem { span, .. }
        | EvalStackTraceItem::ObjectField { span, .. } => *span,
        _ => None,
    }
}

fn lex_span(e: &rsjsonnet_lang::lexer::LexError) -> Option<SpanId> {
    use rsjsonnet_lang::lexer::LexError as L;
    Some(match e {
        L::InvalidChar { span, .. }
        | L::InvalidUtf8 { span, .. }
        | L::UnfinishedMultilineComment { span }
        | L::LeadingZeroInNumber { span }
        | L::MissingFracDigits { span }
        | L::MissingExpDigits { span }
        | L::MissingDigitAfterUnderscore { span }
        | L::ExpOverflow { span }
        | L::InvalidEscapeInString { span, .. }
        | L::IncompleteUnicodeEscape { span }
        | L::InvalidUtf16EscapeSequence { span, .. }
        | L::UnfinishedString { span }
        | L::MissingLineBreakAfterTextBlockStart { span }
        | L::MissingWhitespaceTextBlockStart { span }
        | L::InvalidTextBlockTermination { span } => *span,
    })
}

fn analyze_error(e: &AnalyzeError) -> (Option<SpanId>, String) {
    match e {
        AnalyzeError::UnknownVariable { span, name } => {
            (Some(*span), format!("unknown variable `{name}`"))
        }
        AnalyzeError::SelfOutsideObject { self_span } => {
            (Some(*self_span), "`self` outside of an object".into())
        }
        AnalyzeError::SuperOutsideObject { super_span } => {
            (Some(*super_span), "`super` outside of an object".into())
        }
        AnalyzeError::DollarOutsideObject { dollar_span } => {
            (Some(*dollar_span), "`$` outside of an object".into())
        }
        AnalyzeError::RepeatedLocalName {
            repeated_span,
            name,
            ..
        } => (
            Some(*repeated_span),
            format!("local `{name}` defined twice"),
        ),
        AnalyzeError::RepeatedFieldName {
            repeated_span,
            name,
            ..
        } => (
            Some(*repeated_span),
            format!("field `{name}` defined twice"),
        ),
        AnalyzeError::RepeatedParamName {
            repeated_span,
            name,
            ..
        } => (
            Some(*repeated_span),
            format!("parameter `{name}` defined twice"),
        ),
        AnalyzeError::PositionalArgAfterNamed { arg_span } => (
            Some(*arg_span),
            "positional argument after a named one".into(),
        ),
        AnalyzeError::TextBlockAsImportPath { span }
        | AnalyzeError::ComputedImportPath { span } => {
            (Some(*span), "imports are not allowed in a config".into())
        }
    }
}

fn expected_token(t: &ExpectedToken) -> String {
    match t {
        ExpectedToken::EndOfFile => "end of file".into(),
        ExpectedToken::Simple(k) => format!("`{}`", simple_token(*k)),
        ExpectedToken::Ident => "an identifier".into(),
        ExpectedToken::Number => "a number".into(),
        ExpectedToken::String => "a string".into(),
        ExpectedToken::TextBlock => "a text block".into(),
        ExpectedToken::Expr => "an expression".into(),
        ExpectedToken::BinaryOp => "a binary operator".into(),
    }
}

fn actual_token(t: &ActualToken) -> String {
    match t {
        ActualToken::EndOfFile => "end of file".into(),
        ActualToken::Simple(k) => format!("`{}`", simple_token(*k)),
        ActualToken::OtherOp(op) => format!("`{op}`"),
        ActualToken::Ident(name) => format!("`{name}`"),
        ActualToken::Number => "a number".into(),
        ActualToken::String => "a string".into(),
        ActualToken::TextBlock => "a text block".into(),
    }
}

fn simple_token(k: STokenKind) -> &'static str {
    use STokenKind as T;
    match k {
        T::Exclam => "!",
        T::ExclamEq => "!=",
        T::Dollar => "$",
        T::Percent => "%",
        T::Amp => "&",
        T::AmpAmp => "&&",
        T::LeftParen => "(",
        T::RightParen => ")",
        T::Asterisk => "*",
        T::Plus => "+",
        T::PlusColon => "+:",
        T::PlusColonColon => "+::",
        T::PlusColonColonColon => "+:::",
        T::Comma => ",",
        T::Minus => "-",
        T::Dot => ".",
        T::Slash => "/",
        T::Colon => ":",
        T::ColonColon => "::",
        T::ColonColonColon => ":::",
        T::Semicolon => ";",
        T::Lt => "<",
        T::LtLt => "<<",
        T::LtEq => "<=",
        T::Eq => "=",
        T::EqEq => "==",
        T::Gt => ">",
        T::GtEq => ">=",
        T::GtGt => ">>",
        T::LeftBracket => "[",
        T::RightBracket => "]",
        T::Hat => "^",
        T::LeftBrace => "{",
        T::Pipe => "|",
        T::PipePipe => "||",
        T::RightBrace => "}",
        T::Tilde => "~",
        T::Assert => "assert",
        T::Else => "else",
        T::Error => "error",
        T::False => "false",
        T::For => "for",
        T::Function => "function",
        T::If => "if",
        T::Import => "import",
        T::Importstr => "importstr",
        T::Importbin => "importbin",
        T::In => "in",
        T::Local => "local",
        T::Null => "null",
        T::Tailstrict => "tailstrict",
        T::Then => "then",
        T::Self_ => "self",
        T::Super => "super",
        T::True => "true",
    }
}

fn kind_span(kind: &EvalErrorKind) -> Option<SpanId> {
    use EvalErrorKind as K;
    match kind {
        K::InvalidIndexedType { span, .. }
        | K::InvalidSlicedType { span, .. }
        | K::SliceIndexOrStepIsNotNumber { span, .. }
        | K::StringIndexIsNotNumber { span, .. }
        | K::ArrayIndexIsNotNumber { span, .. }
        | K::NumericIndexIsNotValid { span, .. }
        | K::NumericIndexOutOfRange { span, .. }
        | K::ObjectIndexIsNotString { span, .. }
        | K::RepeatedFieldName { span, .. }
        | K::FieldNameIsNotString { span, .. }
        | K::UnknownObjectField { span, .. }
        | K::FieldOfNonObject { span }
        | K::SuperWithoutSuperObject { span }
        | K::ForSpecValueIsNotArray { span, .. }
        | K::CondIsNotBool { span, .. }
        | K::InvalidUnaryOpType { span, .. }
        | K::AssertFailed { span, .. }
        | K::ExplicitError { span, .. }
        | K::ImportFailed { span, .. } => Some(*span),
        K::CalleeIsNotFunction { span, .. }
        | K::TooManyCallArgs { span, .. }
        | K::UnknownCallParam { span, .. }
        | K::RepeatedCallParam { span, .. }
        | K::CallParamNotBound { span, .. }
        | K::InvalidBinaryOpTypes { span, .. }
        | K::NumberNotBitwiseSafe { span }
        | K::NumberOverflow { span }
        | K::NumberNan { span }
        | K::DivByZero { span }
        | K::ShiftByNegative { span }
        | K::Other { span, .. } => *span,
        _ => None,
    }
}

fn eval_message(kind: &EvalErrorKind) -> String {
    use EvalErrorKind as K;
    match kind {
        K::StackOverflow => {
            "evaluation too deep: more nested calls than allowed (infinite recursion?)".into()
        }
        K::InfiniteRecursion => "infinite recursion: a value depends on itself".into(),
        K::ExplicitError { message, .. } => format!("error: {message}"),
        K::AssertFailed {
            message: Some(message),
            ..
        } => format!("assertion failed: {message}"),
        K::AssertFailed { message: None, .. } => "assertion failed".into(),
        K::UnknownObjectField { field_name, .. } => format!("no field `{field_name}`"),
        K::ImportFailed { path, .. } => {
            format!("imports are not allowed in a config (import {path:?})")
        }
        K::UnknownCallParam { param_name, .. } => {
            format!("the function has no parameter `{param_name}`")
        }
        K::CallParamNotBound { param_name, .. } => {
            format!("missing argument for parameter `{param_name}`")
        }
        K::InvalidBinaryOpTypes {
            op,
            lhs_type,
            rhs_type,
            ..
        } => format!(
            "operator {} cannot be applied to {} and {}",
            debug_words(op),
            debug_words(lhs_type),
            debug_words(rhs_type)
        ),
        K::InvalidStdFuncArgType {
            func_name,
            arg_index,
            got_type,
            ..
        } => format!(
            "std.{func_name}: argument {} has the wrong type ({})",
            arg_index + 1,
            debug_words(got_type)
        ),
        K::NumericIndexOutOfRange { index, length, .. } => {
            format!("index {index} out of range (length {length})")
        }
        K::Other { message, .. } => message.clone(),
        K::ManifestFunction => "a function cannot be part of the config".into(),
        other => debug_words(other),
    }
}

/// A readable rendering of an evaluator value that has no `Display`: its `Debug` form
/// without the internal span ids (`FieldOfNonObject { span: SpanId(…) }` → "field of
/// non object").
fn debug_words(v: &impl std::fmt::Debug) -> String {
    let debug = format!("{v:?}");
    let name = debug.split([' ', '{', '(']).next().unwrap_or(&debug);
    let mut words = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            words.push(' ');
        }
        words.extend(c.to_lowercase());
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(src: &str) -> Result<serde_json::Value, ConfigError> {
        let ctx = ConfigContext::new(Some("main"), None, None, "0123abc");
        let json = evaluate("c.jsonnet", src, &ctx, &Limits::default())?;
        Ok(serde_json::from_str(&json).expect("valid json"))
    }

    #[test]
    fn a_plain_object_is_the_config() {
        let v = eval("{ runs: [ { name: 'a' + 'b' } ] }").expect("evaluates");
        assert_eq!(v, serde_json::json!({"runs": [{"name": "ab"}]}));
    }

    #[test]
    fn a_top_level_function_gets_ctx_as_agola_passes_it() {
        let v = eval("function(ctx) ctx").expect("evaluates");
        assert_eq!(
            v,
            serde_json::json!({
                "ref_type": "branch", "ref": "refs/heads/main", "branch": "main",
                "tag": "", "pull_request_id": "", "commit_sha": "0123abc"
            })
        );
    }

    #[test]
    fn a_function_without_a_ctx_parameter_is_an_error() {
        let e = eval("function(x) {}").expect_err("no ctx");
        assert!(e.message.contains("`ctx`"), "{e}");
    }

    #[test]
    fn imports_are_refused() {
        for src in [
            "import 'other.libsonnet'",
            "importstr '/etc/passwd'",
            "importbin '/etc/passwd'",
        ] {
            let e = eval(src).expect_err("no files");
            assert!(e.message.contains("imports are not allowed"), "{src}: {e}");
            assert_eq!((e.line, e.column), (1, 1), "{src}");
        }
    }

    #[test]
    fn infinite_recursion_ends_with_an_error() {
        let e = eval("local f(x) = f(x) + 1; f(1)").expect_err("too deep");
        assert!(e.message.contains("too deep"), "{e}");
        assert_eq!(e.file, "c.jsonnet");
        assert_eq!(e.line, 1);
    }

    #[test]
    fn errors_point_into_the_file() {
        let e = eval("{\n  runs: [\n    error 'no runs here',\n  ],\n}").expect_err("error");
        assert_eq!(e.to_string(), "c.jsonnet:3:5: error: no runs here", "{e:?}");
        let e = eval("{\n  a: 1,\n  b: self.c,\n}").expect_err("no field");
        assert_eq!((e.line, e.message.as_str()), (3, "no field `c`"));
        let e = eval("{\n  a: [1,\n}").expect_err("syntax");
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.starts_with("invalid Jsonnet: expected"), "{e}");
        let e = eval("local a = 1;\nb").expect_err("unknown variable");
        assert_eq!(e.to_string(), "c.jsonnet:2:1: unknown variable `b`");
    }

    #[test]
    fn errors_inside_std_point_at_the_call_in_the_file() {
        let e = eval("{\n  a: std.length(1),\n}").expect_err("bad argument");
        assert_eq!(e.line, 2, "{e}");
    }
}

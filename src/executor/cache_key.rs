//! Cache key templates, as Agola wrote them in Go template syntax:
//! `deps-{{ os }}-{{ arch }}-{{ md5sum "go.sum" }}`. The functions are `md5sum FILE`,
//! `sha256sum FILE`, `env NAME`, `os`, `arch`, `year`, `month`, `day` and `unixtime`; an
//! action is one function call with quoted-string arguments (`"…"` with Go escapes, or
//! `` `raw` ``), and `{{-` / `-}}` trim the white space next to the action as in Go.
//! Pipelines, variables and fields are not part of the language here.
//!
//! Two phases, so that the files can be read where the task runs: [`parse`] checks the
//! template and tells which files it needs ([`KeyTemplate::files`]); the caller fetches
//! them out of the pod, [`digest`]s them (at most 1 MiB each, as Agola), and
//! [`KeyTemplate::render`]s the key, which is validated before [`cache_key`] puts it in
//! the namespace of the task's cache group (`<namespace>/<key>`: the namespace is hex, so
//! the first `/` ends it and no key of one group can be read as another group's). Pure: no
//! I/O besides the reader handed to [`digest`].

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read};

use cairn_client::runconfig::Env;
use chrono::{DateTime, Datelike, Utc};
use md5::{Digest, Md5};
use sha2::Sha256;

/// The largest file `md5sum` and `sha256sum` accept (Agola's limit).
pub const MAX_SUMMED_FILE: u64 = 1024 * 1024;

/// The longest full cache key (`<namespace>/<rendered>`), in characters.
pub const MAX_KEY_LEN: usize = 200;

/// Where in a template something is: 1-based line and column (in characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    fn of(template: &str, offset: usize) -> Self {
        let before = &template[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Self { line, column }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Why a key template could not be parsed or rendered.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{at}: unclosed action (no matching `}}}}`)")]
    UnclosedAction { at: Position },
    #[error("{at}: empty action")]
    EmptyAction { at: Position },
    #[error("{at}: unterminated string")]
    UnterminatedString { at: Position },
    #[error("{at}: unexpected {found:?}: {expected}")]
    Unexpected {
        found: String,
        expected: &'static str,
        at: Position,
    },
    #[error("{at}: function {name:?} not defined")]
    UnknownFunction { name: String, at: Position },
    #[error("{at}: {function} needs an argument")]
    MissingArgument {
        function: &'static str,
        at: Position,
    },
    #[error("{at}: {function} takes {takes} argument(s), got more")]
    ExtraArgument {
        function: &'static str,
        takes: usize,
        at: Position,
    },
    #[error("file {file:?} is too big (more than {MAX_SUMMED_FILE} bytes)")]
    FileTooBig { file: String },
    #[error("no checksum of file {file:?} was given")]
    MissingFileSum { file: String },
    #[error("invalid cache key {key:?}: {why}")]
    InvalidKey { key: String, why: String },
    #[error("reading {file:?}: {source}")]
    Read { file: String, source: io::Error },
}

/// The checksums of one file, in lowercase hex.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileDigest {
    pub md5: String,
    pub sha256: String,
}

/// Reads `file`'s contents from `read` and sums them; more than [`MAX_SUMMED_FILE`]
/// bytes is an error. Streaming: the contents are never held whole.
pub fn digest(file: &str, read: impl Read) -> Result<FileDigest, KeyError> {
    let mut md5 = Md5::new();
    let mut sha256 = Sha256::new();
    let mut limited = read.take(MAX_SUMMED_FILE + 1);
    let mut buf = [0u8; 16 * 1024];
    let mut total: u64 = 0;
    loop {
        let n = match limited.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(KeyError::Read {
                    file: file.to_owned(),
                    source,
                });
            }
        };
        total += n as u64;
        if total > MAX_SUMMED_FILE {
            return Err(KeyError::FileTooBig {
                file: file.to_owned(),
            });
        }
        md5.update(&buf[..n]);
        sha256.update(&buf[..n]);
    }
    Ok(FileDigest {
        md5: hex(&md5.finalize()),
        sha256: hex(&sha256.finalize()),
    })
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        write!(out, "{b:02x}").expect("writing to a String cannot fail");
    }
    out
}

/// What a rendering needs besides the template.
#[derive(Clone, Debug)]
pub struct KeyContext<'a> {
    /// The task's environment, read by `env` (a missing variable is empty, as in Go).
    pub env: &'a Env,
    /// What `os` and `arch` print (`linux`, `amd64`…).
    pub os: &'a str,
    pub arch: &'a str,
    /// The instant the date functions read, taken in UTC.
    pub now: DateTime<Utc>,
    /// The sums of every file in [`KeyTemplate::files`].
    pub file_sums: BTreeMap<String, FileDigest>,
    /// The cache namespace [`cache_key`] will add, counted in the length limit.
    pub prefix: &'a str,
}

/// A function of the template language.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Function {
    Md5Sum,
    Sha256Sum,
    Env,
    Os,
    Arch,
    Year,
    Month,
    Day,
    UnixTime,
}

impl Function {
    fn named(name: &str) -> Option<Self> {
        Some(match name {
            "md5sum" => Self::Md5Sum,
            "sha256sum" => Self::Sha256Sum,
            "env" => Self::Env,
            "os" => Self::Os,
            "arch" => Self::Arch,
            "year" => Self::Year,
            "month" => Self::Month,
            "day" => Self::Day,
            "unixtime" => Self::UnixTime,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Md5Sum => "md5sum",
            Self::Sha256Sum => "sha256sum",
            Self::Env => "env",
            Self::Os => "os",
            Self::Arch => "arch",
            Self::Year => "year",
            Self::Month => "month",
            Self::Day => "day",
            Self::UnixTime => "unixtime",
        }
    }

    fn takes_argument(self) -> bool {
        matches!(self, Self::Md5Sum | Self::Sha256Sum | Self::Env)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Call(Function, Option<String>),
}

/// A parsed key template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyTemplate {
    parts: Vec<Part>,
}

impl KeyTemplate {
    /// The files whose sums rendering needs, in order of first use, without repeats.
    pub fn files(&self) -> Vec<String> {
        let mut files: Vec<String> = Vec::new();
        for part in &self.parts {
            if let Part::Call(Function::Md5Sum | Function::Sha256Sum, Some(file)) = part
                && !files.contains(file)
            {
                files.push(file.clone());
            }
        }
        files
    }

    /// Renders the key and validates it (see [`validate_key`]).
    pub fn render(&self, ctx: &KeyContext<'_>) -> Result<String, KeyError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Call(function, arg) => {
                    let arg = arg.as_deref().unwrap_or_default();
                    let sums = || {
                        ctx.file_sums
                            .get(arg)
                            .ok_or_else(|| KeyError::MissingFileSum {
                                file: arg.to_owned(),
                            })
                    };
                    match function {
                        Function::Md5Sum => out.push_str(&sums()?.md5),
                        Function::Sha256Sum => out.push_str(&sums()?.sha256),
                        Function::Env => {
                            out.push_str(ctx.env.get(arg).map_or("", String::as_str));
                        }
                        Function::Os => out.push_str(ctx.os),
                        Function::Arch => out.push_str(ctx.arch),
                        Function::Year => out.push_str(&ctx.now.year().to_string()),
                        Function::Month => out.push_str(&format!("{:02}", ctx.now.month())),
                        Function::Day => out.push_str(&format!("{:02}", ctx.now.day())),
                        Function::UnixTime => out.push_str(&unix_nanos(ctx.now)),
                    }
                }
            }
        }
        validate_key(ctx.prefix, &out)?;
        Ok(out)
    }
}

/// `unixtime` as Agola's toolbox prints it: nanoseconds since the epoch (Go's
/// `UnixNano`), exact over the whole range chrono represents.
fn unix_nanos(now: DateTime<Utc>) -> String {
    let nanos =
        i128::from(now.timestamp()) * 1_000_000_000 + i128::from(now.timestamp_subsec_nanos());
    nanos.to_string()
}

/// Checks a rendered key: not empty, printable (no control characters), not starting with
/// `/`, no `..`, and `<namespace>/<rendered>` at most [`MAX_KEY_LEN`] characters.
pub fn validate_key(prefix: &str, rendered: &str) -> Result<(), KeyError> {
    let invalid = |why: String| {
        Err(KeyError::InvalidKey {
            key: rendered.to_owned(),
            why,
        })
    };
    if rendered.is_empty() {
        return invalid("it is empty".to_owned());
    }
    if rendered.starts_with('/') {
        return invalid("it starts with `/`".to_owned());
    }
    if rendered.contains("..") {
        return invalid("it contains `..`".to_owned());
    }
    if rendered.chars().any(char::is_control) {
        return invalid("it contains control characters".to_owned());
    }
    let room = MAX_KEY_LEN.saturating_sub(prefix.chars().count() + 1);
    if rendered.chars().count() > room {
        return invalid(format!(
            "longer than {room} characters (the full key may have {MAX_KEY_LEN})"
        ));
    }
    Ok(())
}

/// The full cache key: `<namespace>/<rendered>`, the key in its cache group's namespace.
pub fn cache_key(namespace: &str, rendered: &str) -> String {
    format!("{namespace}/{rendered}")
}

/// Parses a key template.
pub fn parse(template: &str) -> Result<KeyTemplate, KeyError> {
    let mut parts = Vec::new();
    let mut rest = 0;
    let mut trim_next_text = false;
    while let Some(found) = template[rest..].find("{{") {
        let open = rest + found;
        let mut text = &template[rest..open];
        if trim_next_text {
            text = text.trim_start();
        }
        let mut body_start = open + 2;
        let mut after_open = template[body_start..].chars();
        if after_open.next() == Some('-') && after_open.next().is_some_and(char::is_whitespace) {
            // `{{- ` trims the white space before the action, as in Go.
            text = text.trim_end();
            body_start += 1;
        }
        push_text(&mut parts, text);
        let action = parse_action(template, open, body_start)?;
        parts.push(action.part);
        trim_next_text = action.trims_after;
        rest = action.end;
    }
    let mut text = &template[rest..];
    if trim_next_text {
        text = text.trim_start();
    }
    push_text(&mut parts, text);
    Ok(KeyTemplate { parts })
}

fn push_text(parts: &mut Vec<Part>, text: &str) {
    if !text.is_empty() {
        parts.push(Part::Text(text.to_owned()));
    }
}

/// One parsed action and where the text after it begins.
struct Action {
    part: Part,
    end: usize,
    trims_after: bool,
}

/// A token inside an action.
#[derive(Debug)]
enum Token {
    Ident(String),
    Str(String),
}

/// Parses the action opened by `{{` at `open` whose body starts at `start`.
fn parse_action(template: &str, open: usize, start: usize) -> Result<Action, KeyError> {
    let at = |offset: usize| Position::of(template, offset);
    if !template[start..].contains("}}") {
        return Err(KeyError::UnclosedAction { at: at(open) });
    }
    let mut tokens: Vec<(Token, usize)> = Vec::new();
    let mut i = start;
    let (end, trims_after) = loop {
        let Some(c) = template[i..].chars().next() else {
            return Err(KeyError::UnclosedAction { at: at(open) });
        };
        let rest = &template[i..];
        if rest.starts_with("}}") {
            break (i + 2, false);
        }
        if c.is_whitespace() {
            let after = &rest[c.len_utf8()..];
            if after.starts_with("-}}") {
                break (i + c.len_utf8() + 3, true);
            }
            i += c.len_utf8();
        } else if c == '"' || c == '`' {
            let (value, len) = string_literal(template, i)?;
            tokens.push((Token::Str(value), i));
            i += len;
        } else if c.is_alphabetic() || c == '_' {
            let len = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            tokens.push((Token::Ident(rest[..len].to_owned()), i));
            i += len;
        } else {
            let found = rest.split_whitespace().next().unwrap_or(rest).to_owned();
            let found = found.split("}}").next().unwrap_or_default().to_owned();
            return Err(KeyError::Unexpected {
                found: if found.is_empty() {
                    c.to_string()
                } else {
                    found
                },
                expected: "a function name or a quoted string (pipelines, variables and \
                           fields are not supported)",
                at: at(i),
            });
        }
    };
    let mut tokens = tokens.into_iter();
    let (function, name_at) = match tokens.next() {
        None => return Err(KeyError::EmptyAction { at: at(open) }),
        Some((Token::Str(s), pos)) => {
            return Err(KeyError::Unexpected {
                found: format!("{s:?}"),
                expected: "a function name",
                at: at(pos),
            });
        }
        Some((Token::Ident(name), pos)) => match Function::named(&name) {
            Some(f) => (f, pos),
            None => return Err(KeyError::UnknownFunction { name, at: at(pos) }),
        },
    };
    let arg = if function.takes_argument() {
        match tokens.next() {
            None => {
                return Err(KeyError::MissingArgument {
                    function: function.name(),
                    at: at(name_at),
                });
            }
            Some((Token::Str(s), _)) => Some(s),
            Some((Token::Ident(name), pos)) => {
                return Err(KeyError::Unexpected {
                    found: name,
                    expected: "a quoted string argument",
                    at: at(pos),
                });
            }
        }
    } else {
        None
    };
    if let Some((_, pos)) = tokens.next() {
        return Err(KeyError::ExtraArgument {
            function: function.name(),
            takes: usize::from(function.takes_argument()),
            at: at(pos),
        });
    }
    Ok(Action {
        part: Part::Call(function, arg),
        end,
        trims_after,
    })
}

/// Reads the string literal starting at `start` (on its opening quote): its value and
/// its length in bytes, quotes included.
fn string_literal(template: &str, start: usize) -> Result<(String, usize), KeyError> {
    let unterminated = || KeyError::UnterminatedString {
        at: Position::of(template, start),
    };
    let body = &template[start + 1..];
    if template[start..].starts_with('`') {
        let close = body.find('`').ok_or_else(unterminated)?;
        return Ok((body[..close].to_owned(), close + 2));
    }
    let mut value = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, i + 2)),
            '\n' => return Err(unterminated()),
            '\\' => {
                let Some((j, escaped)) = chars.next() else {
                    return Err(unterminated());
                };
                value.push(match escaped {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    '\\' => '\\',
                    '"' => '"',
                    '\'' => '\'',
                    other => {
                        return Err(KeyError::Unexpected {
                            found: format!("\\{other}"),
                            expected: "a known escape (\\\\ \\\" \\n \\t \\r)",
                            at: Position::of(template, start + 1 + j - 1),
                        });
                    }
                });
            }
            c => value.push(c),
        }
    }
    Err(unterminated())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn sums() -> BTreeMap<String, FileDigest> {
        let mut m = BTreeMap::new();
        m.insert(
            "go.sum".to_owned(),
            digest("go.sum", &b"module example\n"[..]).expect("small file"),
        );
        m.insert(
            "Cargo.lock".to_owned(),
            digest("Cargo.lock", &b""[..]).expect("empty file"),
        );
        m
    }

    fn render_with(template: &str, prefix: &str) -> Result<String, KeyError> {
        let mut env = Env::new();
        env.insert("GOVERSION".to_owned(), "1.22".to_owned());
        let ctx = KeyContext {
            env: &env,
            os: "linux",
            arch: "amd64",
            now: Utc
                .with_ymd_and_hms(2024, 3, 7, 12, 30, 45)
                .single()
                .expect("valid date"),
            file_sums: sums(),
            prefix,
        };
        parse(template)?.render(&ctx)
    }

    fn render(template: &str) -> String {
        render_with(template, "proj").expect("renders")
    }

    fn parse_err(template: &str) -> KeyError {
        parse(template).expect_err("parse error")
    }

    #[test]
    fn plain_text_is_the_key() {
        assert_eq!(render("deps-v1"), "deps-v1");
    }

    #[test]
    fn md5sum_is_the_hex_md5_of_the_file() {
        assert_eq!(
            render(r#"{{ md5sum "Cargo.lock" }}"#),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
    }

    #[test]
    fn sha256sum_is_the_hex_sha256_of_the_file() {
        assert_eq!(
            render(r#"{{ sha256sum "Cargo.lock" }}"#),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn env_reads_the_task_environment_and_missing_is_empty() {
        assert_eq!(render(r#"go-{{ env "GOVERSION" }}"#), "go-1.22");
        assert_eq!(render(r#"go-{{ env "NOPE" }}x"#), "go-x");
    }

    #[test]
    fn os_and_arch_come_from_the_context() {
        assert_eq!(render("{{ os }}-{{ arch }}"), "linux-amd64");
    }

    #[test]
    fn date_parts_come_from_now_in_utc_formatted_as_agolas_toolbox() {
        // Go's time.Format("01") and ("02"): zero padded; unixtime is UnixNano.
        assert_eq!(render("{{ year }}-{{ month }}-{{ day }}"), "2024-03-07");
        assert_eq!(render("t{{ unixtime }}"), "t1709814645000000000");
    }

    #[test]
    fn unixtime_keeps_the_sub_second_nanoseconds() {
        let now = Utc
            .timestamp_opt(1_709_814_645, 123_456_789)
            .single()
            .expect("valid instant");
        assert_eq!(unix_nanos(now), "1709814645123456789");
    }

    #[test]
    fn whitespace_inside_actions_is_free() {
        let expected = render(r#"{{ md5sum "go.sum" }}"#);
        for t in [
            r#"{{md5sum "go.sum"}}"#,
            r#"{{   md5sum    "go.sum"   }}"#,
            "{{\tmd5sum\t\"go.sum\"\n}}",
        ] {
            assert_eq!(render(t), expected, "{t}");
        }
        assert_eq!(render("{{os}}"), "linux");
    }

    #[test]
    fn trim_markers_eat_neighbouring_whitespace() {
        assert_eq!(render("a  {{- os -}}  b"), "alinuxb");
        assert_eq!(render("a {{ os -}} b"), "a linuxb");
    }

    #[test]
    fn several_actions_and_text_around() {
        let key =
            render(r#"cargo-{{ os }}/{{ arch }}-{{ md5sum "go.sum" }}-{{ env "GOVERSION" }}"#);
        let md5 = &sums()["go.sum"].md5;
        assert_eq!(key, format!("cargo-linux/amd64-{md5}-1.22"));
    }

    #[test]
    fn string_literals_take_escapes_and_raw_strings() {
        let t = parse(r#"{{ md5sum "dir/a \"b\".txt" }}{{ sha256sum `c\d` }}"#).expect("parses");
        assert_eq!(t.files(), ["dir/a \"b\".txt", "c\\d"]);
    }

    #[test]
    fn files_lists_each_summed_file_once_in_order() {
        let t = parse(r#"{{ sha256sum "b" }}{{ md5sum "a" }}{{ md5sum "b" }}{{ env "a" }}"#)
            .expect("parses");
        assert_eq!(t.files(), ["b", "a"]);
        assert!(parse("v1-{{ os }}").expect("parses").files().is_empty());
    }

    #[test]
    fn a_missing_sum_at_render_time_is_an_error() {
        let err = render_with(r#"{{ md5sum "other.lock" }}"#, "p").expect_err("no sum");
        assert!(matches!(err, KeyError::MissingFileSum { ref file } if file == "other.lock"));
    }

    #[test]
    fn unknown_function_is_an_error_with_its_position() {
        let err = parse_err("key-{{ os }}\n  {{ hostname }}");
        match err {
            KeyError::UnknownFunction { name, at } => {
                assert_eq!(name, "hostname");
                assert_eq!(at, Position { line: 2, column: 6 });
            }
            other => panic!("unexpected {other}"),
        }
        assert_eq!(
            parse_err("{{ base64 \"x\" }}").to_string(),
            "1:4: function \"base64\" not defined"
        );
    }

    #[test]
    fn unclosed_action_points_at_its_opening() {
        let err = parse_err(r#"deps-{{ md5sum "go.sum" "#);
        assert!(
            matches!(err, KeyError::UnclosedAction { at } if at == Position { line: 1, column: 6 })
        );
        assert!(matches!(parse_err("{{"), KeyError::UnclosedAction { .. }));
        assert!(matches!(
            parse_err("a {{ os }"),
            KeyError::UnclosedAction { .. }
        ));
    }

    #[test]
    fn a_missing_argument_is_an_error() {
        for f in ["md5sum", "sha256sum", "env"] {
            let err = parse_err(&format!("x-{{{{ {f} }}}}"));
            match err {
                KeyError::MissingArgument { function, at } => {
                    assert_eq!(function, f);
                    assert_eq!(at, Position { line: 1, column: 6 });
                }
                other => panic!("{f}: unexpected {other}"),
            }
        }
    }

    #[test]
    fn extra_arguments_are_errors() {
        let err = parse_err(r#"{{ os "x" }}"#);
        assert!(
            matches!(err, KeyError::ExtraArgument { function: "os", takes: 0, at } if at.column == 7)
        );
        let err = parse_err(r#"{{ md5sum "a" "b" }}"#);
        assert!(matches!(
            err,
            KeyError::ExtraArgument {
                function: "md5sum",
                takes: 1,
                ..
            }
        ));
    }

    #[test]
    fn unsupported_syntax_is_an_error() {
        for t in [
            r#"{{ md5sum "a" | printf }}"#,
            "{{ .Name }}",
            "{{ $x }}",
            "{{ env GOPATH }}",
            r#"{{ "text" }}"#,
        ] {
            let err = parse_err(t);
            assert!(matches!(err, KeyError::Unexpected { .. }), "{t}: {err}");
        }
    }

    #[test]
    fn empty_action_and_unterminated_string_are_errors() {
        assert!(matches!(parse_err("a{{ }}b"), KeyError::EmptyAction { .. }));
        let err = parse_err(r#"{{ md5sum "go.sum }}"#);
        assert!(matches!(err, KeyError::UnterminatedString { at } if at.column == 11));
    }

    #[test]
    fn digest_accepts_exactly_one_mebibyte_and_refuses_more() {
        let mib = vec![b'a'; MAX_SUMMED_FILE as usize];
        assert!(digest("big", &mib[..]).is_ok());
        let more = vec![b'a'; MAX_SUMMED_FILE as usize + 1];
        let err = digest("bigger", &more[..]).expect_err("over the limit");
        assert!(matches!(err, KeyError::FileTooBig { ref file } if file == "bigger"));
    }

    #[test]
    fn digest_gives_both_sums() {
        let d = digest("f", &b"abc"[..]).expect("small");
        assert_eq!(d.md5, "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            d.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn rendered_keys_are_validated() {
        let bad = |t: &str| render_with(t, "proj").expect_err(t);
        assert!(matches!(bad("/abs"), KeyError::InvalidKey { .. }));
        assert!(matches!(bad("a..b"), KeyError::InvalidKey { .. }));
        assert!(matches!(
            bad(r#"{{ env "NOPE" }}"#),
            KeyError::InvalidKey { .. }
        ));
        assert!(matches!(bad("tab\there"), KeyError::InvalidKey { .. }));
    }

    #[test]
    fn the_length_limit_counts_the_prefix() {
        let prefix = "p".repeat(49);
        let fits = "k".repeat(MAX_KEY_LEN - 50);
        assert_eq!(render_with(&fits, &prefix).expect("fits"), fits);
        let over = "k".repeat(MAX_KEY_LEN - 49);
        let err = render_with(&over, &prefix).expect_err("too long");
        assert!(err.to_string().contains("longer than 150"), "{err}");
        assert_eq!(cache_key(&prefix, &fits).chars().count(), MAX_KEY_LEN);
    }

    #[test]
    fn cache_key_puts_the_key_in_its_namespace() {
        assert_eq!(cache_key("0a1b", "deps-abc"), "0a1b/deps-abc");
        // A key with slashes stays whole after the namespace's separator.
        assert_eq!(cache_key("0a1b", "linux/deps"), "0a1b/linux/deps");
    }

    #[test]
    fn positions_count_lines_and_characters() {
        let t = "é\n ab{{ nope }}";
        let err = parse_err(t);
        assert!(
            matches!(err, KeyError::UnknownFunction { at, .. } if at == Position { line: 2, column: 7 })
        );
    }
}

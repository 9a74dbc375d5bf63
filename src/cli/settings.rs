//! The `--config FILE` of the long-running commands (`cairn serve`, `cairn executor`,
//! `cairn store serve`): a TOML file whose keys are the command's long flag names
//! (`data-dir = "/var/lib/cairn"`, `no-executor = true`, `label = ["os=linux"]`). Named
//! "settings" here so it is not mistaken for [`crate::configfile`], the pipelines' config.
//!
//! Precedence, highest first: the command line, the flag's `CAIRN_*` environment variable,
//! the file, the flag's default. [`parse`] gets there with two parses of the clap tree:
//! the first (errors ignored) finds the command, its `--config` (or `CAIRN_CONFIG`) and
//! which flags the command line or the environment already gave; [`merge`] (pure) turns
//! the file's other keys into arguments; the second parse is of the command line with
//! those arguments added after it. A file's key is checked against the command's flags
//! before anything runs: an unknown key, a value of the wrong type, a value the flag
//! refuses or two keys that exclude each other is one [`SettingsError`] line naming the
//! file, the line and the key. This file owns no flag: each stays where it is declared.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command, CommandFactory, FromArgMatches};

use super::Cli;

/// The id of the flag naming the file (every command that takes one calls it so).
const CONFIG_ID: &str = "config";

/// The largest config file read (a settings file is a few hundred bytes).
pub const MAX_SETTINGS_BYTES: u64 = 1 << 20;

/// What is wrong with a config file.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {}: larger than {MAX_SETTINGS_BYTES} bytes", path.display())]
    TooLarge { path: PathBuf },
    #[error("config file {}:{line}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("config file {}:{line}: unknown key `{key}`: `{command}` has no flag --{key}{hint}", path.display())]
    UnknownKey {
        path: PathBuf,
        line: usize,
        key: String,
        command: String,
        /// A suggestion, with its leading space, or empty.
        hint: String,
    },
    #[error("config file {}:{line}: `{key}` cannot be set in a config file", path.display())]
    NotSettable {
        path: PathBuf,
        line: usize,
        key: String,
    },
    #[error("config file {}:{line}: `{key}` takes {expected}, not {found}", path.display())]
    WrongType {
        path: PathBuf,
        line: usize,
        key: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("config file {}:{line}: `{key}` and `{other}` (line {other_line}) {why}", path.display())]
    Clash {
        path: PathBuf,
        line: usize,
        key: String,
        other: String,
        other_line: usize,
        why: &'static str,
    },
    #[error("config file {}:{line}: `{key}`: {message}", path.display())]
    BadValue {
        path: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
}

/// Why the command line was not parsed: clap's own error (help and version included,
/// which clap prints itself), or the config file's.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error(transparent)]
    Clap(#[from] clap::Error),
    #[error(transparent)]
    Settings(#[from] SettingsError),
}

/// A parsed config file: its keys in file order, each with its line.
#[derive(Debug, Clone)]
pub struct SettingsFile {
    path: PathBuf,
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    key: String,
    line: usize,
    value: toml::Value,
}

impl SettingsFile {
    /// Reads and parses the file at `path`.
    pub fn read(path: &Path) -> Result<SettingsFile, SettingsError> {
        use std::io::Read as _;
        let read_err = |source| SettingsError::Read {
            path: path.to_path_buf(),
            source,
        };
        // At most one byte past the cap is read: a path to a device or a huge file is an
        // error, not a process that fills its memory.
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_SETTINGS_BYTES + 1).read_to_string(&mut text))
            .map_err(read_err)?;
        if text.len() as u64 > MAX_SETTINGS_BYTES {
            return Err(SettingsError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        SettingsFile::parse(path, &text)
    }

    /// Parses `text`, the content of the file at `path` (named in errors).
    pub fn parse(path: &Path, text: &str) -> Result<SettingsFile, SettingsError> {
        let syntax = |span: Option<std::ops::Range<usize>>, message: &str| SettingsError::Syntax {
            path: path.to_path_buf(),
            line: span.map_or(1, |s| line_of(text, s.start)),
            message: message.trim().replace('\n', " "),
        };
        let table: BTreeMap<toml::Spanned<String>, toml::Spanned<toml::Value>> =
            toml::from_str(text).map_err(|e| syntax(e.span(), e.message()))?;
        let mut entries: Vec<Entry> = table
            .into_iter()
            .map(|(key, value)| Entry {
                line: line_of(text, key.span().start),
                key: key.into_inner(),
                value: value.into_inner(),
            })
            .collect();
        entries.sort_by_key(|e| e.line);
        Ok(SettingsFile {
            path: path.to_path_buf(),
            entries,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The 1-based line of byte `offset` of `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// One key of the file as arguments of the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The key as the file spells it (a flag's name or one of its aliases).
    pub key: String,
    pub line: usize,
    /// The clap id of its flag.
    pub id: String,
    /// The flag's long name.
    pub long: String,
    /// `--long` for a flag set to true, `--long=VALUE` per value otherwise; empty for a
    /// flag set to false.
    pub args: Vec<OsString>,
}

/// The file's keys as arguments of `cmd` (a built command; `name` is how errors call it,
/// e.g. `cairn serve`), leaving out every key whose flag `given` says the command line or
/// the environment gave, and every key whose flag excludes one that was given (the
/// file's `token` gives way to a `--token-file` of the command line). Every key is
/// checked first, left out or not: each names a flag of `cmd`, with a value of its type,
/// and no two name the same flag or flags that exclude each other.
pub fn merge(
    cmd: &Command,
    name: &str,
    file: &SettingsFile,
    given: &dyn Fn(&str) -> bool,
) -> Result<Vec<Setting>, SettingsError> {
    let mut settings: Vec<Setting> = Vec::new();
    for entry in &file.entries {
        let arg = find_flag(cmd, name, file, entry)?;
        let setting = Setting {
            key: entry.key.clone(),
            line: entry.line,
            id: arg.get_id().to_string(),
            long: arg.get_long().unwrap_or_default().to_string(),
            args: arguments(arg, file, entry)?,
        };
        if let Some(earlier) = settings.iter().find(|s| s.id == setting.id) {
            return Err(clash(file, &setting, earlier, "set the same flag"));
        }
        settings.push(setting);
    }
    let excludes = exclusions(cmd);
    let excluded = |a: &str, b: &str| excludes.contains(&(a.to_string(), b.to_string()));
    for (i, s) in settings.iter().enumerate() {
        if let Some(earlier) = settings[..i].iter().find(|e| excluded(&s.id, &e.id)) {
            return Err(clash(file, s, earlier, "exclude each other"));
        }
    }
    Ok(settings
        .into_iter()
        .filter(|s| {
            !given(&s.id)
                && !cmd
                    .get_arguments()
                    .any(|a| given(a.get_id().as_str()) && excluded(&s.id, a.get_id().as_str()))
        })
        .collect())
}

/// The flag of `cmd` a key names (its long name or an alias).
fn find_flag<'c>(
    cmd: &'c Command,
    name: &str,
    file: &SettingsFile,
    entry: &Entry,
) -> Result<&'c Arg, SettingsError> {
    let named = |key: &str| {
        cmd.get_arguments().find(|a| {
            a.get_long() == Some(key) || a.get_all_aliases().is_some_and(|al| al.contains(&key))
        })
    };
    let Some(arg) = named(&entry.key).filter(|a| !a.is_positional()) else {
        let dashed = entry.key.replace('_', "-");
        let hint = match named(&dashed) {
            Some(_) if dashed != entry.key => format!(" (did you mean `{dashed}`?)"),
            _ => String::new(),
        };
        return Err(SettingsError::UnknownKey {
            path: file.path.clone(),
            line: entry.line,
            key: entry.key.clone(),
            command: name.to_string(),
            hint,
        });
    };
    let settable = matches!(
        arg.get_action(),
        ArgAction::Set | ArgAction::Append | ArgAction::SetTrue
    );
    if !settable || arg.get_id() == CONFIG_ID {
        return Err(SettingsError::NotSettable {
            path: file.path.clone(),
            line: entry.line,
            key: entry.key.clone(),
        });
    }
    Ok(arg)
}

/// A key's value as arguments of its flag: a boolean for a flag, one value for an
/// option, one or a list for a repeatable option. Values themselves are checked by the
/// flag's own parser when the command line is parsed.
fn arguments(
    arg: &Arg,
    file: &SettingsFile,
    entry: &Entry,
) -> Result<Vec<OsString>, SettingsError> {
    let long = arg.get_long().unwrap_or_default();
    let wrong = |expected: &'static str| SettingsError::WrongType {
        path: file.path.clone(),
        line: entry.line,
        key: entry.key.clone(),
        expected,
        found: kind(&entry.value),
    };
    let one = |v: &toml::Value| scalar(v).map(|s| OsString::from(format!("--{long}={s}")));
    match arg.get_action() {
        ArgAction::SetTrue => match entry.value {
            toml::Value::Boolean(true) => Ok(vec![OsString::from(format!("--{long}"))]),
            toml::Value::Boolean(false) => Ok(Vec::new()),
            _ => Err(wrong("true or false")),
        },
        ArgAction::Append => match &entry.value {
            toml::Value::Array(items) => items
                .iter()
                .map(|v| one(v).ok_or_else(|| wrong("a list of strings or numbers")))
                .collect(),
            v => one(v)
                .map(|a| vec![a])
                .ok_or_else(|| wrong("a list of strings or numbers")),
        },
        _ => one(&entry.value)
            .map(|a| vec![a])
            .ok_or_else(|| wrong("one string or number")),
    }
}

/// A string or a number as the command line would spell it.
fn scalar(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        _ => None,
    }
}

/// What a TOML value is, for errors.
fn kind(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

/// Every pair of flag ids of `cmd` that exclude each other, both ways round.
fn exclusions(cmd: &Command) -> std::collections::BTreeSet<(String, String)> {
    let mut pairs = std::collections::BTreeSet::new();
    for a in cmd.get_arguments() {
        for b in cmd.get_arg_conflicts_with(a) {
            let (a, b) = (a.get_id().to_string(), b.get_id().to_string());
            pairs.insert((b.clone(), a.clone()));
            pairs.insert((a, b));
        }
    }
    pairs
}

fn clash(file: &SettingsFile, s: &Setting, earlier: &Setting, why: &'static str) -> SettingsError {
    SettingsError::Clash {
        path: file.path.clone(),
        line: s.line,
        key: s.key.clone(),
        other: earlier.key.clone(),
        other_line: earlier.line,
        why,
    }
}

/// Parses this process's command line, with the config file of the command when it has
/// one ([`parse_from`]).
pub fn parse() -> Result<Cli, ParseError> {
    parse_from(std::env::args_os().collect(), SettingsFile::read)
}

/// Parses `argv` (program name first) into a [`Cli`]: when the command it names takes a
/// `--config FILE` and one is given (or `CAIRN_CONFIG`), the file's keys, read by
/// `read`, fill the flags that neither the command line nor the environment gave.
pub fn parse_from(
    argv: Vec<OsString>,
    read: impl Fn(&Path) -> Result<SettingsFile, SettingsError>,
) -> Result<Cli, ParseError> {
    let mut tree = Cli::command();
    tree.build();
    // Errors ignored: this pass only looks; the second reports what is wrong. (Set
    // before the tree is built, so that clap hands the setting down to subcommands.)
    let first = Cli::command()
        .ignore_errors(true)
        .try_get_matches_from(argv.iter());
    if let Ok(first) = first
        && let Some((path, names, matches)) = config_of(&first)
        && let Some(cmd) = find_command(&tree, &names)
    {
        let file = read(&path)?;
        let given = |id: &str| {
            matches!(
                matches.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        };
        let added = merge(cmd, &format!("cairn {}", names.join(" ")), &file, &given)?;
        let all = argv
            .iter()
            .cloned()
            .chain(added.iter().flat_map(|s| s.args.iter().cloned()));
        let matches = tree
            .try_get_matches_from_mut(all)
            .map_err(|e| from_file(e, &file, &added))?;
        return Ok(Cli::from_arg_matches(&matches)?);
    }
    let matches = tree.try_get_matches_from_mut(argv)?;
    Ok(Cli::from_arg_matches(&matches)?)
}

/// The config file the matched command names, the command's path of names and its
/// matches; `None` when it takes none or none was given.
fn config_of(root: &ArgMatches) -> Option<(PathBuf, Vec<String>, &ArgMatches)> {
    let mut names = Vec::new();
    let mut m = root;
    while let Some((name, sub)) = m.subcommand() {
        names.push(name.to_string());
        m = sub;
    }
    let path = m.try_get_one::<PathBuf>(CONFIG_ID).ok().flatten()?.clone();
    Some((path, names, m))
}

fn find_command<'c>(root: &'c Command, names: &[String]) -> Option<&'c Command> {
    names
        .iter()
        .try_fold(root, |cmd, name| cmd.find_subcommand(name))
}

/// Clap's refusal of a value the file gave, as the file's error (naming line and key);
/// other errors as they are.
fn from_file(e: clap::Error, file: &SettingsFile, added: &[Setting]) -> ParseError {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        e.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return e.into();
    }
    let flag = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => s
            .split([' ', '='])
            .next()
            .unwrap_or_default()
            .trim_start_matches('-')
            .to_string(),
        _ => return e.into(),
    };
    let Some(s) = added.iter().find(|s| s.long == flag) else {
        return e.into();
    };
    let text = e.render().to_string();
    let message = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
        .collect::<Vec<_>>()
        .join(" ");
    SettingsError::BadValue {
        path: file.path.clone(),
        line: s.line,
        key: s.key.clone(),
        message: message
            .strip_prefix("error: ")
            .unwrap_or(&message)
            .to_string(),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Command as Cmd;

    fn file(text: &str) -> SettingsFile {
        SettingsFile::parse(Path::new("/etc/cairn/cairn.toml"), text).expect("valid TOML")
    }

    fn built() -> Command {
        let mut tree = Cli::command();
        tree.build();
        tree
    }

    fn merged(text: &str, given: &[&str]) -> Result<Vec<String>, SettingsError> {
        let tree = built();
        let serve = tree.find_subcommand("serve").expect("cairn serve");
        let settings = merge(serve, "cairn serve", &file(text), &|id| given.contains(&id))?;
        Ok(settings
            .iter()
            .flat_map(|s| s.args.iter().map(|a| a.to_string_lossy().into_owned()))
            .collect())
    }

    fn serve(argv: &[&str], text: &str) -> Result<crate::cli::RunServeArgs, ParseError> {
        let text = text.to_string();
        let argv = argv.iter().map(OsString::from).collect();
        match parse_from(argv, move |p| SettingsFile::parse(p, &text))?.command {
            Cmd::Serve(args) => Ok(*args),
            other => panic!("not serve: {other:?}"),
        }
    }

    #[test]
    fn a_config_path_to_an_endless_device_or_a_huge_file_is_refused_unread() {
        // /dev/zero never ends: read whole, it would fill the memory.
        match SettingsFile::read(Path::new("/dev/zero")) {
            Err(SettingsError::TooLarge { path }) => assert_eq!(path, Path::new("/dev/zero")),
            other => panic!("/dev/zero as a config file: {other:?}"),
        }
        let dir = tempfile::tempdir().expect("a temp dir");
        let big = dir.path().join("big.toml");
        let line = "# padding padding padding padding padding padding padding padding\n";
        std::fs::write(
            &big,
            line.repeat((MAX_SETTINGS_BYTES as usize) / line.len() + 1),
        )
        .expect("a big file");
        assert!(matches!(
            SettingsFile::read(&big),
            Err(SettingsError::TooLarge { .. })
        ));
        let small = dir.path().join("small.toml");
        std::fs::write(&small, "data-dir = \"/var/lib/cairn\"\n").expect("a small file");
        assert!(SettingsFile::read(&small).is_ok());
    }

    #[test]
    fn every_flag_of_the_long_running_commands_has_its_cairn_variable() {
        let tree = built();
        for path in [&["serve"][..], &["executor"], &["store", "serve"]] {
            let names: Vec<String> = path.iter().map(|n| n.to_string()).collect();
            let cmd = find_command(&tree, &names).expect("the command");
            let flags = cmd.get_arguments().filter(|a| {
                matches!(
                    a.get_action(),
                    ArgAction::Set | ArgAction::Append | ArgAction::SetTrue
                )
            });
            for arg in flags {
                let long = arg.get_long().expect("a long flag");
                // The Docker Engine's own variable, as docker and podman read it.
                let want = match long {
                    "docker-host" => "DOCKER_HOST".to_string(),
                    _ => format!("CAIRN_{}", long.to_uppercase().replace('-', "_")),
                };
                assert_eq!(
                    arg.get_env().and_then(|e| e.to_str()),
                    Some(want.as_str()),
                    "--{long} of cairn {}",
                    names.join(" ")
                );
            }
        }
    }

    #[test]
    fn keys_become_flags_in_file_order() {
        let args = merged(
            "data-dir = \"/var/lib/cairn\"\nlisten = \"0.0.0.0:7070\"\nexecutor-ttl = 30\npod-cpus = 1.5\n",
            &[],
        )
        .expect("accepted");
        assert_eq!(
            args,
            [
                "--data-dir=/var/lib/cairn",
                "--listen=0.0.0.0:7070",
                "--executor-ttl=30",
                "--pod-cpus=1.5"
            ]
        );
    }

    #[test]
    fn a_flag_given_on_the_command_line_or_environment_wins_over_the_file() {
        let args = merged(
            "data-dir = \"/a\"\nlisten = \"0.0.0.0:7070\"\n",
            &["data_dir"],
        )
        .expect("accepted");
        assert_eq!(args, ["--listen=0.0.0.0:7070"]);
    }

    #[test]
    fn a_key_whose_flag_excludes_a_given_flag_gives_way() {
        // The file's token, the command line's --token-file: the token file is used.
        let args = merged("token = \"t\"\nengine = \"redb\"\n", &["token_file"]).expect("accepted");
        assert_eq!(args, ["--engine=redb"]);
        let args = merged("init = true\n", &["join"]).expect("accepted");
        assert!(args.is_empty());
    }

    #[test]
    fn lists_are_arrays_and_a_single_value_is_a_list_of_one() {
        let args = merged(
            "label = [\"os=linux\", \"arch=x86_64\"]\nobjects-option = \"aws_region=eu-west-1\"\n",
            &[],
        )
        .expect("accepted");
        assert_eq!(
            args,
            [
                "--label=os=linux",
                "--label=arch=x86_64",
                "--objects-option=aws_region=eu-west-1"
            ]
        );
    }

    #[test]
    fn booleans_set_a_flag_or_leave_it_unset() {
        assert_eq!(
            merged("no-executor = true\n", &[]).expect("accepted"),
            ["--no-executor"]
        );
        assert!(
            merged("no-executor = false\n", &[])
                .expect("accepted")
                .is_empty()
        );
    }

    #[test]
    fn an_unknown_key_is_refused_with_file_line_and_key() {
        let e =
            merged("listen = \"127.0.0.1:7070\"\n\ndata_dir = \"/x\"\n", &[]).expect_err("refused");
        assert_eq!(
            e.to_string(),
            "config file /etc/cairn/cairn.toml:3: unknown key `data_dir`: `cairn serve` has no flag --data_dir (did you mean `data-dir`?)"
        );
        let e = merged("server = \"https://x\"\n", &[]).expect_err("refused");
        assert!(
            matches!(e, SettingsError::UnknownKey { line: 1, .. }),
            "{e}"
        );
    }

    #[test]
    fn the_config_key_and_help_cannot_be_set() {
        for text in ["config = \"/x\"\n", "help = true\n"] {
            let e = merged(text, &[]).expect_err("refused");
            assert!(matches!(e, SettingsError::NotSettable { .. }), "{e}");
        }
    }

    #[test]
    fn a_value_of_the_wrong_type_is_refused() {
        let cases = [
            (
                "init = \"yes\"\n",
                "`init` takes true or false, not a string",
            ),
            (
                "listen = [\"a\", \"b\"]\n",
                "`listen` takes one string or number, not an array",
            ),
            (
                "engine = true\n",
                "`engine` takes one string or number, not a boolean",
            ),
            (
                "label = [{ a = 1 }]\n",
                "`label` takes a list of strings or numbers, not an array",
            ),
            (
                "objects = { dir = \"/x\" }\n",
                "`objects` takes one string or number, not a table",
            ),
        ];
        for (text, want) in cases {
            let e = merged(text, &[]).expect_err("refused").to_string();
            assert_eq!(e, format!("config file /etc/cairn/cairn.toml:1: {want}"));
        }
    }

    #[test]
    fn keys_for_the_same_flag_or_exclusive_flags_are_refused() {
        let e = merged(
            "cache-ttl = \"1d\"\nrun-cache-expire-interval = \"2d\"\n",
            &[],
        )
        .expect_err("refused");
        assert!(
            e.to_string().ends_with(
                ":2: `run-cache-expire-interval` and `cache-ttl` (line 1) set the same flag"
            ),
            "{e}"
        );
        let e = merged("token = \"t\"\ntoken-file = \"/f\"\n", &[]).expect_err("refused");
        assert!(
            e.to_string()
                .ends_with(":2: `token-file` and `token` (line 1) exclude each other"),
            "{e}"
        );
    }

    #[test]
    fn a_syntax_error_names_its_line() {
        let e = SettingsFile::parse(Path::new("c.toml"), "listen = \"a\"\nengine = \n")
            .expect_err("refused");
        assert!(e.to_string().starts_with("config file c.toml:2: "), "{e}");
        let e = SettingsFile::parse(Path::new("c.toml"), "a = 1\na = 2\n").expect_err("refused");
        assert!(e.to_string().starts_with("config file c.toml:2: "), "{e}");
    }

    #[test]
    fn the_command_line_beats_the_file_which_beats_the_defaults() {
        let text = "data-dir = \"/from-file\"\nlisten = \"0.0.0.0:7300\"\nno-executor = true\nlabel = [\"a=1\", \"b=2\"]\n";
        let args = serve(
            &[
                "cairn",
                "serve",
                "--config",
                "c.toml",
                "--listen",
                "127.0.0.1:1",
                "--label",
                "c=3",
            ],
            text,
        )
        .expect("accepted");
        assert_eq!(args.node.data_dir, Path::new("/from-file"));
        assert_eq!(args.node.listen.to_string(), "127.0.0.1:1");
        assert!(args.no_executor);
        assert_eq!(
            args.executor.labels,
            ["c=3"],
            "a list is replaced, not extended"
        );
        assert_eq!(args.executor_ttl, 15, "a default the file leaves alone");
    }

    #[test]
    fn a_value_the_flag_refuses_names_the_file_and_key() {
        let e = serve(
            &["cairn", "serve", "--config", "c.toml"],
            "\nengine = \"leveldb\"\n",
        )
        .expect_err("refused")
        .to_string();
        assert!(
            e.starts_with("config file c.toml:2: `engine`: invalid value 'leveldb'"),
            "{e}"
        );
        let e = serve(
            &["cairn", "serve", "--config", "c.toml"],
            "segment-runs = 5000\n",
        )
        .expect_err("refused")
        .to_string();
        assert!(
            e.starts_with("config file c.toml:1: `segment-runs`: invalid value '5000'"),
            "{e}"
        );
    }

    #[test]
    fn the_same_bad_value_on_the_command_line_is_clap_s_error() {
        let e = serve(
            &[
                "cairn", "serve", "--config", "c.toml", "--engine", "leveldb",
            ],
            "",
        )
        .expect_err("refused");
        assert!(matches!(e, ParseError::Clap(_)), "{e}");
    }

    #[test]
    fn without_a_config_the_command_line_parses_as_before() {
        let args = serve(
            &["cairn", "serve", "--listen", "127.0.0.1:9"],
            "engine = 1\n",
        )
        .expect("accepted");
        assert_eq!(args.node.listen.to_string(), "127.0.0.1:9");
    }

    #[test]
    fn the_executor_and_the_store_node_take_a_config_too() {
        let text =
            "server = [\"https://a:7070\", \"https://b:7070\"]\ntoken-file = \"/etc/cairn/reg\"\n";
        let cli = parse_from(
            ["cairn", "executor", "--config", "x.toml"]
                .map(OsString::from)
                .to_vec(),
            |p| SettingsFile::parse(p, text),
        )
        .expect("accepted");
        let Cmd::Executor(x) = cli.command else {
            panic!("not executor")
        };
        assert_eq!(x.server, ["https://a:7070", "https://b:7070"]);
        assert_eq!(x.token_file.as_deref(), Some(Path::new("/etc/cairn/reg")));
        let cli = parse_from(
            ["cairn", "store", "serve", "--config", "s.toml"]
                .map(OsString::from)
                .to_vec(),
            |p| SettingsFile::parse(p, "token = \"t\"\nlisten = \"127.0.0.1:2400\"\n"),
        )
        .expect("accepted");
        let Cmd::Store {
            command: crate::cli::store::StoreCommand::Serve(s),
        } = cli.command
        else {
            panic!("not store serve")
        };
        assert_eq!(s.token, "t");
        assert_eq!(s.node.listen.to_string(), "127.0.0.1:2400");
    }
}

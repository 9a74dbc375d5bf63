//! Config errors: one [`ConfigError`] per problem, each naming the file, the position
//! (line and column, 1-based) and the field path, and [`ConfigErrors`], all of a file's
//! problems at once. Both serialize so the API can return them as they are.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One problem in a config file, e.g.
/// `.agola/config.yml:12:9: runs[0].tasks[1].depends[0]: unknown task "buidl"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigError {
    pub file: String,
    /// 1-based; 0 when the problem has no place in the file (e.g. an unknown run name
    /// asked for by the caller).
    pub line: usize,
    /// 1-based, in characters; 0 when `line` is 0.
    pub column: usize,
    /// Path of the field in the document (`runs[0].tasks[1].depends[0]`); empty for
    /// problems of the file as a whole (YAML syntax).
    pub field: String,
    pub message: String,
    /// The config goes beyond one of Cairn's limits ([`super::limits`]): the request
    /// is refused (400) rather than recorded as a setuperror run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub limit: bool,
}

impl ConfigError {
    pub fn new(
        file: impl Into<String>,
        line: usize,
        column: usize,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: file.into(),
            line,
            column,
            field: field.into(),
            message: message.into(),
            limit: false,
        }
    }

    /// A problem of [`ConfigError::new`]'s kind that is a limit exceeded.
    pub fn over_limit(
        file: impl Into<String>,
        line: usize,
        column: usize,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            limit: true,
            ..ConfigError::new(file, line, column, field, message)
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in a config file, in document order; displayed one per line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn single(error: ConfigError) -> ConfigErrors {
        ConfigErrors(vec![error])
    }

    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether one of the problems is a limit exceeded ([`ConfigError::limit`]).
    pub fn over_limit(&self) -> bool {
        self.0.iter().any(|e| e.limit)
    }

    /// One line per error, as `setup_errors` of a run that could not be set up.
    pub fn lines(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_displays_file_position_field_and_message() {
        let e = ConfigError::new(
            ".agola/config.yml",
            12,
            9,
            "runs[0].tasks[1].depends[0]",
            "unknown task \"buidl\"",
        );
        assert_eq!(
            e.to_string(),
            ".agola/config.yml:12:9: runs[0].tasks[1].depends[0]: unknown task \"buidl\""
        );
    }

    #[test]
    fn an_error_without_position_or_field_leaves_them_out() {
        let e = ConfigError::new("c.yml", 0, 0, "", "no run named \"x\"");
        assert_eq!(e.to_string(), "c.yml: no run named \"x\"");
    }

    #[test]
    fn errors_display_one_per_line_and_serialize() {
        let errs = ConfigErrors(vec![
            ConfigError::new("c.yml", 1, 1, "runs", "a"),
            ConfigError::new("c.yml", 2, 3, "x", "b"),
        ]);
        assert_eq!(errs.to_string(), "c.yml:1:1: runs: a\nc.yml:2:3: x: b");
        let json = serde_json::to_value(&errs).expect("serializable");
        assert_eq!(json[1]["line"], 2);
        assert_eq!(json[1]["column"], 3);
        assert_eq!(json[1]["field"], "x");
    }
}

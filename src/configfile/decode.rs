//! The decoder's toolbox: [`Decoder`] collects every error of a file while typed
//! accessors turn [`Node`]s into strings, booleans, lists, `from_variable` values,
//! environment maps and durations, each complaining with the node's position and path
//! ("expected a string, found a list"). The grammar itself is in `document.rs`,
//! `step.rs`, `depend.rs` and `when.rs`.

use std::collections::BTreeMap;

use super::error::ConfigError;
use super::model::{ConfigValue, Loc};
use super::yaml::{Entry, Kind, Node, child_path};

/// Collects the errors of one file.
pub(super) struct Decoder<'f> {
    pub(super) file: &'f str,
    pub(super) errors: Vec<ConfigError>,
    /// Problems that do not make the config invalid (keys Agola ignores).
    pub(super) warnings: Vec<ConfigError>,
    /// Regular expressions of `when` clauses met so far, and their patterns' bytes
    /// ([`super::limits::MAX_REGEXES`], [`super::limits::MAX_REGEX_BYTES`]).
    pub(super) regexes: usize,
    pub(super) regex_bytes: usize,
}

/// A map whose keys have been checked against the allowed ones.
pub(super) struct Fields<'a> {
    pub(super) node: Node<'a>,
    entries: Vec<Entry<'a>>,
}

impl<'a> Fields<'a> {
    /// The value of `key`, if present and not null.
    pub(super) fn get(&self, key: &str) -> Option<&Node<'a>> {
        self.entries
            .iter()
            .find(|e| e.key == Some(key))
            .map(|e| &e.value)
            .filter(|v| !v.is_null())
    }

    /// The value of `key`, which must be present (a null value is kept, so that the
    /// type check names it).
    pub(super) fn require(&self, dec: &mut Decoder<'_>, key: &str) -> Option<Node<'a>> {
        match self.entries.iter().find(|e| e.key == Some(key)) {
            Some(e) => Some(e.value.clone()),
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
}

impl<'f> Decoder<'f> {
    pub(super) fn new(file: &'f str) -> Decoder<'f> {
        Decoder {
            file,
            errors: Vec::new(),
            warnings: Vec::new(),
            regexes: 0,
            regex_bytes: 0,
        }
    }

    pub(super) fn error(&mut self, node: &Node<'_>, message: impl Into<String>) {
        self.errors.push(node.error(self.file, message));
    }

    pub(super) fn loc(&self, node: &Node<'_>) -> Loc {
        Loc {
            line: node.line(),
            column: node.column(),
            field: node.path.clone(),
        }
    }

    fn expected(&mut self, node: &Node<'_>, what: &str) {
        let found = node.kind().describe();
        self.error(node, format!("expected {what}, found {found}"));
    }

    /// A problem that does not make the config invalid.
    pub(super) fn warn(&mut self, node: &Node<'_>, message: impl Into<String>) {
        self.warnings.push(node.error(self.file, message));
    }

    /// The node as a map of the keys in `allowed`; `what` names the object in messages.
    /// As Agola (Go's `encoding/json`), a key that differs from an allowed one only by
    /// case is read as that key, and an unknown key is ignored: both are warnings, the
    /// latter with the closest allowed key when one is close ("did you mean …?").
    pub(super) fn fields<'a>(
        &mut self,
        node: &Node<'a>,
        what: &str,
        allowed: &[&'a str],
    ) -> Option<Fields<'a>> {
        let Some(mut entries) = node.entries() else {
            self.expected(node, &format!("a map ({what})"));
            return None;
        };
        for e in &mut entries {
            match e.key {
                Some(k) if allowed.contains(&k) => {}
                Some(k) => {
                    if let Some(known) = allowed.iter().find(|a| a.eq_ignore_ascii_case(k)) {
                        self.warn(
                            &e.key_node,
                            format!("key `{k}` in {what} is read as `{known}` (Agola matches keys regardless of case)"),
                        );
                        e.key = Some(known);
                        continue;
                    }
                    let mut message =
                        format!("unknown key `{k}` in {what} is ignored, as Agola ignores it");
                    if let Some(close) = suggestion(k, allowed) {
                        message.push_str(&format!("; did you mean `{close}`?"));
                    }
                    self.warn(&e.key_node, message);
                }
                None => self.error(&e.key_node, "expected a string key"),
            }
        }
        Some(Fields {
            node: node.clone(),
            entries,
        })
    }

    /// A map's entries with string keys, for maps keyed by user names (environment,
    /// registries, labels, single-key step and depend forms).
    pub(super) fn map_entries<'a>(&mut self, node: &Node<'a>) -> Option<Vec<(String, Node<'a>)>> {
        let Some(entries) = node.entries() else {
            self.expected(node, "a map");
            return None;
        };
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            match e.key {
                Some(k) => out.push((k.to_string(), e.value)),
                None => self.error(&e.key_node, "expected a string key"),
            }
        }
        Some(out)
    }

    pub(super) fn list<'a>(&mut self, node: &Node<'a>) -> Option<Vec<Node<'a>>> {
        let items = node.items();
        if items.is_none() {
            self.expected(node, "a list");
        }
        items
    }

    pub(super) fn string(&mut self, node: &Node<'_>) -> Option<String> {
        let s = node.as_str();
        if s.is_none() {
            self.expected(node, "a string");
        }
        s.map(str::to_string)
    }

    /// A string, or a number or boolean taken as written (`1.10` → "1.10").
    pub(super) fn stringish(&mut self, node: &Node<'_>) -> Option<String> {
        match node.kind() {
            Kind::Str | Kind::Int | Kind::Float | Kind::Bool => node.text().map(str::to_string),
            _ => {
                self.expected(node, "a string");
                None
            }
        }
    }

    /// A boolean, in YAML 1.1's forms too (`yes`, `no`, `on`, `off`, `y`, `n`, plain
    /// and in the cases Agola's YAML library takes).
    pub(super) fn bool(&mut self, node: &Node<'_>) -> Option<bool> {
        let b = node.as_bool().or_else(|| node.as_yaml11_bool());
        if b.is_none() {
            self.expected(node, "true or false");
        }
        b
    }

    pub(super) fn strings(&mut self, node: &Node<'_>) -> Option<Vec<String>> {
        let items = self.list(node)?;
        let strings: Vec<_> = items.iter().filter_map(|i| self.string(i)).collect();
        (strings.len() == items.len()).then_some(strings)
    }

    /// A literal (string, number or boolean) or `{from_variable: name}`.
    pub(super) fn value(&mut self, node: &Node<'_>) -> Option<ConfigValue> {
        if node.kind() == Kind::Map {
            let fields = self.fields(node, "value", &["from_variable"])?;
            let name = fields.require(self, "from_variable")?;
            return self.string(&name).map(ConfigValue::FromVariable);
        }
        match node.kind() {
            Kind::Null => Some(ConfigValue::Literal(String::new())),
            Kind::Str | Kind::Int | Kind::Float | Kind::Bool => {
                self.stringish(node).map(ConfigValue::Literal)
            }
            _ => {
                self.expected(node, "a string or {from_variable: name}");
                None
            }
        }
    }

    /// `NAME: value` pairs.
    pub(super) fn env(&mut self, node: &Node<'_>) -> BTreeMap<String, ConfigValue> {
        let mut env = BTreeMap::new();
        for (name, value) in self.map_entries(node).unwrap_or_default() {
            if let Some(v) = self.value(&value) {
                env.insert(name, v);
            }
        }
        env
    }

    /// `NAME: "literal"` pairs (labels).
    pub(super) fn string_map(&mut self, node: &Node<'_>) -> BTreeMap<String, String> {
        let mut map = BTreeMap::new();
        for (name, value) in self.map_entries(node).unwrap_or_default() {
            if let Some(v) = self.stringish(&value) {
                map.insert(name, v);
            }
        }
        map
    }

    /// A whole number from 0 to `max` (Cairn's `retry_lost_tasks`).
    pub(super) fn count(&mut self, node: &Node<'_>, max: u32) -> Option<u32> {
        let found = match (node.kind(), node.as_int()) {
            (Kind::Int, Some(n)) => match u32::try_from(n).ok().filter(|n| *n <= max) {
                Some(n) => return Some(n),
                None => n.to_string(),
            },
            (kind, _) => kind.describe().to_string(),
        };
        self.error(
            node,
            format!("expected a whole number from 0 to {max}, found {found}"),
        );
        None
    }

    /// Seconds, from an integer or a duration string such as "1h30m", "45s" (Cairn's
    /// `task_timeout`).
    pub(super) fn duration(&mut self, node: &Node<'_>) -> Option<u64> {
        let parsed = match node.kind() {
            Kind::Int => node
                .as_int()
                .and_then(|i| u64::try_from(i).ok())
                .ok_or_else(|| "a timeout must not be negative".to_string()),
            Kind::Str => parse_duration(node.as_str().unwrap_or_default()),
            _ => Err(format!(
                "expected a duration (\"30m\", \"1h30m\", \"45s\" or seconds), found {}",
                node.kind().describe()
            )),
        };
        match parsed {
            Ok(0) => {
                self.error(node, "a timeout must be longer than zero");
                None
            }
            Ok(secs) => Some(secs),
            Err(message) => {
                self.error(node, message);
                None
            }
        }
    }

    /// Agola's `task_timeout_interval`: a Go duration string ("1h30m", "90s", "1.5h",
    /// "500ms") or a number of nanoseconds, as whole seconds rounded up; 0 means no
    /// timeout (and overrides an outer one, as in Agola).
    pub(super) fn go_duration(&mut self, node: &Node<'_>) -> Option<u64> {
        let nanos = match node.kind() {
            Kind::Int => node
                .as_int()
                .map(i128::from)
                .ok_or_else(|| "invalid number".to_string()),
            // Agola reads a number as float64 nanoseconds (`1.5e9`).
            Kind::Float => node
                .text()
                .and_then(|t| t.parse::<f64>().ok())
                .filter(|f| f.is_finite() && f.abs() < 9.2e18)
                .map(|f| f.trunc() as i128)
                .ok_or_else(|| "invalid number of nanoseconds".to_string()),
            Kind::Str => parse_go_duration(node.as_str().unwrap_or_default()),
            _ => Err(format!(
                "expected a duration such as \"30m\", \"1h30m\", \"45s\", found {}",
                node.kind().describe()
            )),
        };
        match nanos {
            Ok(n) if n < 0 => {
                self.error(node, "a timeout must not be negative");
                None
            }
            Ok(n) => Some(u64::try_from((n + 999_999_999) / 1_000_000_000).unwrap_or(u64::MAX)),
            Err(message) => {
                self.error(node, message);
                None
            }
        }
    }
}

/// Go's `time.ParseDuration`: an optional sign, then decimal numbers (with an optional
/// fraction) each followed by a unit (ns, us, µs, ms, s, m, h); "0" alone is zero.
/// Returns nanoseconds.
pub(super) fn parse_go_duration(text: &str) -> Result<i128, String> {
    let bad = || {
        format!(
            "invalid duration \"{text}\"; expected a Go duration such as \"30m\", \"1h30m\", \"45s\", \"1.5h\""
        )
    };
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    const LIMIT: i128 = i64::MAX as i128;
    let mut total: i128 = 0;
    let mut chars = rest.char_indices().peekable();
    while chars.peek().is_some() {
        let mut int = String::new();
        let mut frac = String::new();
        let mut seen_dot = false;
        while let Some(&(_, c)) = chars.peek() {
            if c.is_ascii_digit() {
                if seen_dot { frac.push(c) } else { int.push(c) }
            } else if c == '.' && !seen_dot {
                seen_dot = true;
            } else {
                break;
            }
            chars.next();
        }
        if int.is_empty() && frac.is_empty() {
            return Err(bad());
        }
        let mut unit = String::new();
        while let Some(&(_, c)) = chars.peek() {
            if c.is_ascii_digit() || c == '.' {
                break;
            }
            unit.push(c);
            chars.next();
        }
        let scale: i128 = match unit.as_str() {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        let whole: i128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| bad())?
        };
        let mut value = whole.checked_mul(scale).ok_or_else(bad)?;
        let mut divisor: i128 = 1;
        for d in frac.chars().take(30) {
            divisor *= 10;
            value += i128::from(d.to_digit(10).unwrap_or(0)) * scale / divisor;
        }
        total = total.checked_add(value).ok_or_else(bad)?;
        if total > LIMIT {
            return Err(bad());
        }
    }
    Ok(if negative { -total } else { total })
}

/// The allowed key closest to `key` by edit distance, when close enough to be a typo.
pub(super) fn suggestion<'k>(key: &str, allowed: &[&'k str]) -> Option<&'k str> {
    let key = key.to_ascii_lowercase();
    let len = key.chars().count();
    let limit = if len <= 3 { 1 } else { (len / 3).clamp(2, 3) };
    allowed
        .iter()
        .map(|a| (edit_distance(&key, a), *a))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

/// Levenshtein distance, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// "1h30m", "45s", "2m", "90" (seconds) → seconds.
pub(super) fn parse_duration(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "invalid duration \"{text}\"; expected hours, minutes and seconds such as \"30m\", \"1h30m\", \"45s\""
        )
    };
    let text_trimmed = text.trim();
    if text_trimmed.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = text_trimmed.parse::<u64>() {
        return Ok(secs);
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut last_unit = u64::MAX;
    for c in text_trimmed.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        // Units appear once each, largest first.
        if digits.is_empty() || unit >= last_unit {
            return Err(bad());
        }
        let n: u64 = digits.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        digits.clear();
        last_unit = unit;
    }
    if !digits.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_hours_minutes_seconds_or_plain_seconds() {
        assert_eq!(parse_duration("30m"), Ok(1800));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert_eq!(parse_duration("45s"), Ok(45));
        assert_eq!(parse_duration("1h2m3s"), Ok(3723));
        assert_eq!(parse_duration("90"), Ok(90));
    }

    #[test]
    fn malformed_durations_are_refused() {
        for bad in ["", "m", "1d", "30m1h", "5m5m", "1h 30m", "1.5h", "-3s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn go_durations_parse_as_agola_reads_them() {
        let s = 1_000_000_000;
        assert_eq!(parse_go_duration("1h30m"), Ok(5400 * s));
        assert_eq!(parse_go_duration("1.5h"), Ok(5400 * s));
        assert_eq!(parse_go_duration("90s"), Ok(90 * s));
        assert_eq!(parse_go_duration("500ms"), Ok(s / 2));
        assert_eq!(parse_go_duration("2m3s4ms5us6ns"), Ok(123 * s + 4_005_006));
        assert_eq!(parse_go_duration("1µs"), Ok(1_000));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration("-1m"), Ok(-60 * s));
        assert_eq!(parse_go_duration(".5s"), Ok(s / 2));
        for bad in ["", "90", "1d", "1h 30m", "h", "1..5s", "3000000h"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn suggestions_are_close_keys_only() {
        let keys = [
            "environment",
            "working_dir",
            "name",
            "task_timeout_interval",
        ];
        assert_eq!(suggestion("enviroment", &keys), Some("environment"));
        assert_eq!(suggestion("workingdir", &keys), Some("working_dir"));
        assert_eq!(suggestion("nmae", &keys), Some("name"));
        assert_eq!(
            suggestion("task_timeout_intervall", &keys),
            Some("task_timeout_interval")
        );
        assert_eq!(suggestion("colour", &keys), None);
    }
}

//! `when` clauses of runs and tasks: their model ([`When`], [`WhenConditions`],
//! [`Matcher`]), their decoding (a string, a list, or `{include, exclude}` per key; a
//! `/…/` or `#…#` string is a regexp) and Agola's matching rule ([`When::matches`]).

use cairn_client::api::RefSpec;
use regex::{Regex, RegexBuilder};

use super::decode::Decoder;
use super::error::ConfigError;
use super::limits::{MAX_REGEX_BYTES, MAX_REGEXES, REGEX_SIZE_LIMIT};
use super::yaml::{Kind, Node};

/// Which git references a run or task is for. Without `when` everything matches.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct When {
    pub branch: Option<WhenConditions>,
    pub tag: Option<WhenConditions>,
    pub git_ref: Option<WhenConditions>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct WhenConditions {
    pub include: Vec<Matcher>,
    pub exclude: Vec<Matcher>,
}

/// An exact name or an (unanchored) regular expression.
#[derive(Clone, Debug)]
pub enum Matcher {
    Exact(String),
    Regex(Regex),
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Matcher) -> bool {
        match (self, other) {
            (Matcher::Exact(a), Matcher::Exact(b)) => a == b,
            (Matcher::Regex(a), Matcher::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl Matcher {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Exact(s) => s == value,
            Matcher::Regex(r) => r.is_match(value),
        }
    }
}

impl WhenConditions {
    /// Agola's order: an include match sets the verdict, an exclude match then clears it.
    fn apply(&self, value: &str, included: &mut bool) {
        if self.include.iter().any(|m| m.matches(value)) {
            *included = true;
        }
        if self.exclude.iter().any(|m| m.matches(value)) {
            *included = false;
        }
    }
}

impl When {
    /// Agola's rule: start excluded; branch conditions count only when the reference is
    /// a branch, tag conditions only when it is a tag; ref conditions always, last, so
    /// they can override. When the reference has no explicit ref, it is derived from
    /// the branch (`refs/heads/<b>`) or tag (`refs/tags/<t>`), else empty.
    pub fn matches(&self, reference: &RefSpec) -> bool {
        let mut included = false;
        if let (Some(c), Some(branch)) = (&self.branch, non_empty(&reference.branch)) {
            c.apply(branch, &mut included);
        }
        if let (Some(c), Some(tag)) = (&self.tag, non_empty(&reference.tag)) {
            c.apply(tag, &mut included);
        }
        if let Some(c) = &self.git_ref {
            c.apply(&effective_ref(reference), &mut included);
        }
        included
    }
}

/// `true` when there is no `when`, else [`When::matches`].
pub fn when_matches(when: Option<&When>, reference: &RefSpec) -> bool {
    when.is_none_or(|w| w.matches(reference))
}

pub(super) fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// The ref a `ref` clause is matched against: the given ref, else derived from the
/// branch or tag (`refs/heads/<b>`, `refs/tags/<t>`).
pub(super) fn effective_ref(reference: &RefSpec) -> String {
    if let Some(r) = non_empty(&reference.git_ref) {
        r.to_string()
    } else if let Some(b) = non_empty(&reference.branch) {
        format!("refs/heads/{b}")
    } else if let Some(t) = non_empty(&reference.tag) {
        format!("refs/tags/{t}")
    } else {
        String::new()
    }
}

pub(super) fn decode_when(dec: &mut Decoder<'_>, node: &Node<'_>) -> Option<When> {
    let fields = dec.fields(node, "when", &["branch", "tag", "ref"])?;
    let conditions =
        |dec: &mut Decoder<'_>, key| fields.get(key).and_then(|n| decode_conditions(dec, n));
    Some(When {
        branch: conditions(dec, "branch"),
        tag: conditions(dec, "tag"),
        git_ref: conditions(dec, "ref"),
    })
}

fn decode_conditions(dec: &mut Decoder<'_>, node: &Node<'_>) -> Option<WhenConditions> {
    if node.kind() == Kind::Map {
        let fields = dec.fields(node, "when condition", &["include", "exclude"])?;
        let include = fields.get("include").map(|n| decode_matchers(dec, n));
        let exclude = fields.get("exclude").map(|n| decode_matchers(dec, n));
        return Some(WhenConditions {
            include: include.unwrap_or_default(),
            exclude: exclude.unwrap_or_default(),
        });
    }
    Some(WhenConditions {
        include: decode_matchers(dec, node),
        exclude: Vec::new(),
    })
}

/// A string or a list of strings.
fn decode_matchers(dec: &mut Decoder<'_>, node: &Node<'_>) -> Vec<Matcher> {
    let items = match node.items() {
        Some(items) => items,
        None => vec![node.clone()],
    };
    items
        .iter()
        .filter_map(|item| {
            let Some(text) = item.as_str() else {
                let found = item.kind().describe();
                dec.error(
                    item,
                    format!("expected a string or a list of strings, found {found}"),
                );
                return None;
            };
            let Some(pattern) = regex_pattern(text) else {
                return Some(Matcher::Exact(text.to_string()));
            };
            // Counted before compiling: the limits are what make compiling cheap.
            let within = dec.regexes <= MAX_REGEXES && dec.regex_bytes <= MAX_REGEX_BYTES;
            dec.regexes += 1;
            dec.regex_bytes = dec.regex_bytes.saturating_add(pattern.len());
            if dec.regexes > MAX_REGEXES || dec.regex_bytes > MAX_REGEX_BYTES {
                // Reported once, at the first regexp beyond a limit.
                if within {
                    dec.errors.push(ConfigError::over_limit(
                        dec.file,
                        item.line(),
                        item.column(),
                        item.path.clone(),
                        format!(
                            "more than {MAX_REGEXES} regular expressions or {} KiB of them in the `when` clauses of one config (Cairn's limit)",
                            MAX_REGEX_BYTES / 1024
                        ),
                    ));
                }
                return None;
            }
            compile(text, pattern).map_err(|e| dec.error(item, e)).ok()
        })
        .collect()
}

/// `/re/` or `#re#` is a regexp, anything else an exact name; as in Agola, only when
/// longer than two characters (`//` and `##` are literal text). The pattern, if a regexp.
fn regex_pattern(text: &str) -> Option<&str> {
    let delimited = |d: char| text.len() > 2 && text.starts_with(d) && text.ends_with(d);
    (delimited('/') || delimited('#')).then(|| &text[1..text.len() - 1])
}

/// Compiles `pattern` (written `text`) within [`REGEX_SIZE_LIMIT`] for its program and
/// for its lazy DFA's cache.
fn compile(text: &str, pattern: &str) -> Result<Matcher, String> {
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map(Matcher::Regex)
        .map_err(|e| format!("invalid regular expression {text}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configfile::yaml::load_unwatched as load;

    fn when(yaml: &str) -> When {
        let doc = load("c.yml", yaml).expect("yaml");
        let mut dec = Decoder::new("c.yml");
        let w = decode_when(&mut dec, &Node::root(&doc)).expect("a when");
        assert!(dec.errors.is_empty(), "{:?}", dec.errors);
        w
    }

    fn branch(b: &str) -> RefSpec {
        RefSpec {
            branch: Some(b.into()),
            ..RefSpec::default()
        }
    }

    fn tag(t: &str) -> RefSpec {
        RefSpec {
            tag: Some(t.into()),
            ..RefSpec::default()
        }
    }

    #[test]
    fn no_when_includes_everything() {
        assert!(when_matches(None, &branch("anything")));
        assert!(when_matches(None, &RefSpec::default()));
    }

    #[test]
    fn a_branch_string_is_an_exact_match() {
        let w = when("branch: master");
        assert!(w.matches(&branch("master")));
        assert!(!w.matches(&branch("master2")));
        assert!(!w.matches(&tag("master")), "branch conditions ignore tags");
    }

    #[test]
    fn a_list_matches_any_of_its_items() {
        let w = when("branch: [master, develop]");
        assert!(w.matches(&branch("develop")));
        assert!(!w.matches(&branch("feature")));
    }

    #[test]
    fn regexps_use_either_delimiter_and_are_unanchored() {
        let w = when("tag: '#v[0-9]+#'");
        assert!(w.matches(&tag("v12")));
        assert!(w.matches(&tag("release-v2")));
        assert!(!w.matches(&tag("latest")));
        let w = when("branch: /^feature-.*$/");
        assert!(w.matches(&branch("feature-x")));
        assert!(!w.matches(&branch("my-feature-x")));
    }

    #[test]
    fn exclude_clears_what_include_set() {
        let w = when("branch: { include: '/.*/', exclude: [wip, '#^tmp-#'] }");
        assert!(w.matches(&branch("master")));
        assert!(!w.matches(&branch("wip")));
        assert!(!w.matches(&branch("tmp-1")));
    }

    #[test]
    fn exclude_only_never_includes() {
        let w = when("branch: { exclude: wip }");
        assert!(!w.matches(&branch("master")));
    }

    #[test]
    fn tag_conditions_apply_only_to_tags() {
        let w = when("tag: '/.*/'");
        assert!(w.matches(&tag("v1")));
        assert!(!w.matches(&branch("master")));
    }

    #[test]
    fn ref_is_evaluated_last_and_overrides() {
        let w = when("branch: master\nref: { exclude: refs/heads/master }");
        assert!(!w.matches(&branch("master")), "ref derived from the branch");
        let w = when("ref: '#^refs/pull/#'");
        let pr = RefSpec {
            git_ref: Some("refs/pull/3/head".into()),
            ..RefSpec::default()
        };
        assert!(w.matches(&pr));
        assert!(!w.matches(&branch("master")));
    }

    #[test]
    fn an_empty_when_excludes_everything() {
        let w = when("{}");
        assert!(!w.matches(&branch("master")));
    }

    #[test]
    fn an_invalid_regexp_is_an_error_at_its_position() {
        let doc = load("c.yml", "branch:\n  include: [ok, '/[/']\n").expect("yaml");
        let mut dec = Decoder::new("c.yml");
        decode_when(&mut dec, &Node::root(&doc));
        assert_eq!(dec.errors.len(), 1);
        let e = &dec.errors[0];
        assert_eq!((e.line, e.column), (2, 17));
        assert_eq!(e.field, "branch.include[1]");
        assert!(
            e.message.starts_with("invalid regular expression /[/"),
            "{e}"
        );
    }

    #[test]
    fn two_character_delimiters_are_literal_text() {
        let w = when("branch: ['//', '##']");
        assert_eq!(
            w.branch.as_ref().map(|c| c.include.clone()),
            Some(vec![
                Matcher::Exact("//".into()),
                Matcher::Exact("##".into())
            ])
        );
        assert!(
            !w.matches(&branch("feature")),
            "`//` is not an empty regexp"
        );
        assert!(w.matches(&branch("//")));
        let w = when("branch: '/a/'");
        assert!(matches!(
            &w.branch.as_ref().map(|c| c.include[0].clone()),
            Some(Matcher::Regex(_))
        ));
    }

    fn errors_of(yaml: &str) -> Vec<ConfigError> {
        let doc = load("c.yml", yaml).expect("yaml");
        let mut dec = Decoder::new("c.yml");
        decode_when(&mut dec, &Node::root(&doc));
        dec.errors
    }

    #[test]
    fn a_regexp_is_compiled_within_256_kib() {
        // About 8 MB compiled with the crate's default limit (security review H4).
        let started = std::time::Instant::now();
        let e = errors_of("branch: '/\\w{200}x/'\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(!e[0].limit);
        assert!(e[0].message.contains("size limit"), "{}", e[0]);
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        assert!(errors_of("branch: '/^(main|release-[0-9]+\\.[0-9]+)$/'\n").is_empty());
    }

    #[test]
    fn regexps_are_counted_and_refused_beyond_the_limit_once() {
        let list = |n: usize, len: usize| {
            let items: Vec<String> = (0..n).map(|i| format!("'/{i:0len$}/'")).collect();
            format!("branch: [{}]\n", items.join(", "))
        };
        assert!(errors_of(&list(MAX_REGEXES, 3)).is_empty());
        let started = std::time::Instant::now();
        let e = errors_of(&list(500, 3));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].limit);
        assert_eq!(e[0].field, "branch[100]");
        assert_eq!(
            e[0].message,
            "more than 100 regular expressions or 16 KiB of them in the `when` clauses of one config (Cairn's limit)"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        // The summed size: 20 patterns of 1000 bytes pass 16 KiB at the 17th.
        let e = errors_of(&list(20, 1000));
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].field, "branch[16]");
    }
}

//! Marked YAML access: loads a document with `saphyr` (positions kept, scalars left as
//! written), showing each parser event to a [`Watch`] (Cairn's limits) before the tree
//! holds it, and offers [`Node`], a read-only view of one node that knows its field path,
//! its position and what kind of value it holds. JSON is read by the same parser (YAML
//! 1.2 is a superset of JSON). Knows nothing of the config grammar.

use std::borrow::Cow;

use saphyr::{MarkedYamlOwned, ScalarOwned, ScalarStyle, YamlDataOwned, YamlLoader};
use saphyr_parser::{Event, Parser, Span, SpannedEventReceiver};

use super::error::ConfigError;
use super::limits::{ALIAS_NODE_COST, MAX_ALIAS_EXPANSION, MAX_ALIASES};

/// What [`load`] does with the event a [`Watch`] has just seen.
pub(super) enum Flow {
    /// Build it into the tree.
    Load,
    /// A limit is passed: build nothing more, but read on (the watch needs what follows
    /// to name the problem).
    Skip,
    /// A limit is passed and the problem is known: read no further.
    Stop,
}

/// Sees every event of the parser before the loader builds it into the tree, to refuse
/// a document before it costs memory (the limits on the config's grammar, `limits.rs`).
pub(super) trait Watch {
    fn on_event(&mut self, ev: &Event<'_>, span: Span) -> Flow;
    /// The problem, once [`Watch::on_event`] has said [`Flow::Skip`] or [`Flow::Stop`].
    fn error(&mut self) -> Option<ConfigError>;
}

/// Parses `content` into its single document's root node, showing each event to `watch`
/// first and stopping where it refuses. The parser is read event by event: a problem
/// ends the reading where it is found (a syntax error, an alias beyond the budget, a
/// limit of `watch`), so what follows it is never loaded, nor even parsed once the
/// problem is known. A problem the loader found before a refusal (a duplicated key) is
/// reported rather than the refusal.
pub(super) fn load(
    file: &str,
    content: &str,
    watch: &mut dyn Watch,
) -> Result<MarkedYamlOwned, ConfigError> {
    // JSON allows tabs wherever it allows blanks but never inside strings, while YAML
    // refuses them as indentation: a tab becomes a blank, which keeps every column.
    let content: Cow<'_, str> = if file.ends_with(".json") {
        Cow::Owned(content.replace('\t', " "))
    } else {
        Cow::Borrowed(content)
    };
    let mut loader = YamlLoader::<MarkedYamlOwned>::default();
    loader.early_parse(false);
    let mut budget = AliasBudget::default();
    let syntax = |e: &saphyr::ScanError| {
        let m = e.marker();
        ConfigError::new(
            file,
            m.line(),
            m.col() + 1,
            "",
            format!("invalid YAML: {}", e.info()),
        )
    };
    let mut refused = false;
    for next in Parser::new_from_str(&content) {
        let (ev, span) = match next {
            Ok(next) => next,
            Err(_) if refused => break,
            Err(e) => return Err(syntax(&e)),
        };
        if let Some(message) = budget.weigh(&ev) {
            return Err(ConfigError::over_limit(
                file,
                span.start.line(),
                span.start.col() + 1,
                "",
                message,
            ));
        }
        match watch.on_event(&ev, span) {
            Flow::Load if !refused => loader.on_event(ev, span),
            Flow::Load | Flow::Skip => refused = true,
            Flow::Stop => {
                refused = true;
                break;
            }
        }
    }
    if let Some(e) = loader.error() {
        return Err(syntax(e));
    }
    if refused {
        return Err(watch
            .error()
            .expect("a watch that refuses a document says why"));
    }
    let mut docs = loader.into_documents();
    if docs.len() > 1 {
        let second = &docs[1];
        return Err(ConfigError::new(
            file,
            second.span.start.line(),
            second.span.start.col() + 1,
            "",
            "several YAML documents; a config file holds exactly one",
        ));
    }
    match docs.pop() {
        Some(doc) if !matches!(doc.data, YamlDataOwned::BadValue) => Ok(doc),
        _ => Err(ConfigError::new(file, 1, 1, "", "the config file is empty")),
    }
}

/// No limits but the aliases' (the grammar's are `limits.rs`'s), for the tests of
/// the grammar.
#[cfg(test)]
impl Watch for () {
    fn on_event(&mut self, _: &Event<'_>, _: Span) -> Flow {
        Flow::Load
    }
    fn error(&mut self) -> Option<ConfigError> {
        None
    }
}

/// [`load`] with no [`Watch`], for the tests of the grammar.
#[cfg(test)]
pub(super) fn load_unwatched(file: &str, content: &str) -> Result<MarkedYamlOwned, ConfigError> {
    load(file, content, &mut ())
}

/// Weighs what each alias will clone (its anchor's scalar bytes plus [`ALIAS_NODE_COST`]
/// per node, aliases inside counted expanded) from the parser's events, and refuses the
/// first alias beyond [`MAX_ALIASES`] or [`MAX_ALIAS_EXPANSION`] before the loader sees
/// it: the loader never clones it. Linear in the events, with no recursion (saphyr's own
/// budget counts nodes, not bytes: 100,000 aliases of a 1 MB scalar would pass it).
#[derive(Default)]
struct AliasBudget {
    /// Weight of every anchor defined so far, by anchor id.
    anchors: std::collections::HashMap<usize, usize>,
    /// Open collections: (anchor id, weight so far).
    open: Vec<(usize, usize)>,
    aliases: usize,
    expanded: usize,
}

impl AliasBudget {
    /// Adds a finished node of `weight` to its parent, and to its anchor if it has one.
    fn close(&mut self, anchor: usize, weight: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, weight);
        }
        if let Some((_, parent)) = self.open.last_mut() {
            *parent = parent.saturating_add(weight);
        }
    }

    /// Weighs one event; the reason to refuse it, if it is an alias beyond the budget.
    fn weigh(&mut self, ev: &Event<'_>) -> Option<String> {
        match ev {
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                self.open.push((*anchor, ALIAS_NODE_COST));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((anchor, weight)) = self.open.pop() {
                    self.close(anchor, weight);
                }
            }
            Event::Scalar(text, _, anchor, _) => {
                self.close(*anchor, text.len().saturating_add(ALIAS_NODE_COST));
            }
            Event::Alias(id) => {
                let weight = self.anchors.get(id).copied().unwrap_or(ALIAS_NODE_COST);
                self.aliases += 1;
                self.expanded = self.expanded.saturating_add(weight);
                if self.aliases > MAX_ALIASES {
                    return Some(format!(
                        "more than {MAX_ALIASES} YAML aliases in one config (Cairn's limit)"
                    ));
                }
                if self.expanded > MAX_ALIAS_EXPANSION {
                    return Some(format!(
                        "YAML aliases expand the config by more than {} KiB (Cairn's limit)",
                        MAX_ALIAS_EXPANSION / 1024
                    ));
                }
                self.close(0, weight);
            }
            _ => {}
        }
        None
    }
}

/// What a node holds, as named in "expected …, found …" messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Null,
    Bool,
    Int,
    Float,
    Str,
    List,
    Map,
    /// A scalar whose explicit tag does not fit its text (`!!int abc`), or an alias to
    /// nothing.
    Invalid,
}

impl Kind {
    pub(super) fn describe(self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Bool => "a boolean",
            Kind::Int => "an integer",
            Kind::Float => "a number",
            Kind::Str => "a string",
            Kind::List => "a list",
            Kind::Map => "a map",
            Kind::Invalid => "an invalid value",
        }
    }
}

/// One node of the document and its field path (`runs[0].tasks[1]`).
#[derive(Clone, Debug)]
pub(super) struct Node<'a> {
    yaml: &'a MarkedYamlOwned,
    pub(super) path: String,
}

/// One `key: value` of a map: the key's text (None when the key is not a scalar) and
/// both nodes; the value's path is the map's path plus the key.
#[derive(Clone, Debug)]
pub(super) struct Entry<'a> {
    pub(super) key: Option<&'a str>,
    pub(super) key_node: Node<'a>,
    pub(super) value: Node<'a>,
}

impl<'a> Node<'a> {
    pub(super) fn root(yaml: &'a MarkedYamlOwned) -> Node<'a> {
        Node {
            yaml,
            path: String::new(),
        }
    }

    /// The node without its custom tag (`!foo {…}`), which the grammar ignores.
    fn data(&self) -> &'a YamlDataOwned<MarkedYamlOwned> {
        let mut yaml = self.yaml;
        while let YamlDataOwned::Tagged(_, inner) = &yaml.data {
            yaml = inner;
        }
        &yaml.data
    }

    pub(super) fn line(&self) -> usize {
        self.yaml.span.start.line()
    }

    /// 1-based.
    pub(super) fn column(&self) -> usize {
        self.yaml.span.start.col() + 1
    }

    pub(super) fn error(&self, file: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::new(file, self.line(), self.column(), self.path.clone(), message)
    }

    pub(super) fn kind(&self) -> Kind {
        match self.data() {
            YamlDataOwned::Representation(text, style, tag) => {
                let tag = tag.as_ref().map(Cow::Borrowed);
                match ScalarOwned::parse_from_cow_and_metadata(
                    Cow::Borrowed(text.as_str()),
                    *style,
                    tag.as_ref(),
                ) {
                    Some(scalar) => scalar_kind(&scalar),
                    None => Kind::Invalid,
                }
            }
            YamlDataOwned::Value(scalar) => scalar_kind(scalar),
            YamlDataOwned::Sequence(_) => Kind::List,
            YamlDataOwned::Mapping(_) => Kind::Map,
            YamlDataOwned::Tagged(..) | YamlDataOwned::Alias(_) | YamlDataOwned::BadValue => {
                Kind::Invalid
            }
        }
    }

    pub(super) fn is_null(&self) -> bool {
        self.kind() == Kind::Null
    }

    /// The scalar's text as written (`1.10` stays `1.10`), for any non-null scalar.
    pub(super) fn text(&self) -> Option<&'a str> {
        match self.data() {
            YamlDataOwned::Representation(text, _, _) if self.kind() != Kind::Null => {
                Some(text.as_str())
            }
            YamlDataOwned::Value(ScalarOwned::String(text)) => Some(text.as_str()),
            _ => None,
        }
    }

    /// The text of a string scalar (quoted, or plain and not a number/bool/null).
    pub(super) fn as_str(&self) -> Option<&'a str> {
        if self.kind() == Kind::Str {
            self.text()
        } else {
            None
        }
    }

    pub(super) fn as_bool(&self) -> Option<bool> {
        if self.kind() != Kind::Bool {
            return None;
        }
        self.text().and_then(|t| t.parse().ok())
    }

    /// A plain (unquoted) scalar that YAML 1.1 reads as a boolean, as Agola's YAML
    /// library (go-yaml v2) does: `y`, `yes`, `on`, `n`, `no`, `off` in lower case,
    /// capitalized or upper case. `true`/`false` are YAML 1.2 booleans already.
    pub(super) fn as_yaml11_bool(&self) -> Option<bool> {
        let YamlDataOwned::Representation(text, ScalarStyle::Plain, None) = self.data() else {
            return None;
        };
        match text.as_str() {
            "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Some(true),
            "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => Some(false),
            _ => None,
        }
    }

    /// The same node with `name` in its path (`runs[0] "ci"`), so that the paths of
    /// its children and of every problem under it name it.
    pub(super) fn named(&self, name: Option<&str>) -> Node<'a> {
        let path = match name {
            Some(name) => format!("{} {name:?}", self.path),
            None => self.path.clone(),
        };
        Node {
            yaml: self.yaml,
            path,
        }
    }

    pub(super) fn as_int(&self) -> Option<i64> {
        match self.data() {
            YamlDataOwned::Representation(text, style, tag) => {
                let tag = tag.as_ref().map(Cow::Borrowed);
                match ScalarOwned::parse_from_cow_and_metadata(
                    Cow::Borrowed(text.as_str()),
                    *style,
                    tag.as_ref(),
                ) {
                    Some(ScalarOwned::Integer(i)) => Some(i),
                    _ => None,
                }
            }
            YamlDataOwned::Value(ScalarOwned::Integer(i)) => Some(*i),
            _ => None,
        }
    }

    /// The items of a list, with paths `path[i]`.
    pub(super) fn items(&self) -> Option<Vec<Node<'a>>> {
        match self.data() {
            YamlDataOwned::Sequence(items) => Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, yaml)| Node {
                        yaml,
                        path: format!("{}[{i}]", self.path),
                    })
                    .collect(),
            ),
            _ => None,
        }
    }

    /// The entries of a map, in document order.
    pub(super) fn entries(&self) -> Option<Vec<Entry<'a>>> {
        match self.data() {
            YamlDataOwned::Mapping(map) => Some(
                map.iter()
                    .map(|(k, v)| {
                        let key_node = Node {
                            yaml: k,
                            path: String::new(),
                        };
                        let key = key_node.text();
                        let path = child_path(&self.path, key.unwrap_or("?"));
                        Entry {
                            key,
                            key_node: Node {
                                yaml: k,
                                path: path.clone(),
                            },
                            value: Node { yaml: v, path },
                        }
                    })
                    .collect(),
            ),
            _ => None,
        }
    }
}

fn scalar_kind(scalar: &ScalarOwned) -> Kind {
    match scalar {
        ScalarOwned::Null => Kind::Null,
        ScalarOwned::Boolean(_) => Kind::Bool,
        ScalarOwned::Integer(_) => Kind::Int,
        ScalarOwned::FloatingPoint(_) => Kind::Float,
        ScalarOwned::String(_) => Kind::Str,
    }
}

/// `parent.key`, or `key` at the top; after a named node (`runs[0] "ci"`) the
/// separator is ` › ` so names stand out: `runs[0] "ci" › tasks[1] "build" › steps`.
pub(super) fn child_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else if parent.ends_with('"') {
        format!("{parent} › {key}")
    } else {
        format!("{parent}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::load_unwatched as load;
    use super::*;

    fn root(content: &str) -> MarkedYamlOwned {
        load("c.yml", content).expect("valid yaml")
    }

    #[test]
    fn scalars_keep_their_text_and_kind() {
        let doc = root("a: 1.10\nb: '7'\nc: true\nd:\ne: hello\nf: !!str 12\n");
        let entries = Node::root(&doc).entries().expect("a map");
        let kinds: Vec<_> = entries.iter().map(|e| e.value.kind()).collect();
        assert_eq!(
            kinds,
            [
                Kind::Float,
                Kind::Str,
                Kind::Bool,
                Kind::Null,
                Kind::Str,
                Kind::Str
            ]
        );
        assert_eq!(entries[0].value.text(), Some("1.10"));
        assert_eq!(entries[1].value.as_str(), Some("7"));
        assert_eq!(entries[2].value.as_bool(), Some(true));
        assert_eq!(entries[3].value.text(), None);
        assert_eq!(entries[5].value.as_str(), Some("12"));
    }

    #[test]
    fn nodes_know_their_path_and_position() {
        let doc = root("runs:\n  - name: ci\n    tasks: [ {name: a} ]\n");
        let runs = &Node::root(&doc).entries().expect("map")[0].value;
        let run = &runs.items().expect("list")[0];
        let tasks = run.entries().expect("map");
        assert_eq!(tasks[1].value.path, "runs[0].tasks");
        let task = &tasks[1].value.items().expect("list")[0];
        let name = &task.entries().expect("map")[0];
        assert_eq!(name.value.path, "runs[0].tasks[0].name");
        assert_eq!((name.key_node.line(), name.key_node.column()), (3, 15));
        assert_eq!((name.value.line(), name.value.column()), (3, 21));
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let e = load("c.yml", "runs:\n  - name: [a\n").expect_err("unclosed");
        assert_eq!(e.file, "c.yml");
        assert!(e.line >= 2, "{e}");
        assert!(e.message.starts_with("invalid YAML"), "{e}");
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let e = load("c.yml", "a: 1\na: 2\n").expect_err("duplicate");
        assert!(e.message.contains("duplicated key"), "{e}");
        assert_eq!(e.line, 2);
    }

    #[test]
    fn empty_and_multi_document_files_are_refused() {
        let e = load("c.yml", "# nothing\n").expect_err("empty");
        assert_eq!(e.message, "the config file is empty");
        let e = load("c.yml", "a: 1\n---\nb: 2\n").expect_err("two docs");
        assert_eq!(e.line, 3);
    }

    #[test]
    fn aliases_are_fine_within_the_budget() {
        let doc = root("a: &x [1, 2, {b: c}]\nd: *x\ne: *x\n");
        let entries = Node::root(&doc).entries().expect("map");
        assert_eq!(entries[2].value.items().expect("cloned list").len(), 3);
    }

    #[test]
    fn an_alias_bomb_is_refused_at_the_alias_before_it_is_cloned() {
        // One 1000-byte scalar, ten levels of ten aliases each: 10^10 copies.
        let mut yaml = format!("a0: &a0 \"{}\"\n", "x".repeat(1000));
        for level in 1..=10 {
            let refs = vec![format!("*a{}", level - 1); 10].join(", ");
            yaml.push_str(&format!("a{level}: &a{level} [{refs}]\n"));
        }
        let started = std::time::Instant::now();
        let e = load("c.yml", &yaml).expect_err("a bomb");
        assert!(e.limit, "{e}");
        assert_eq!(
            e.message,
            "YAML aliases expand the config by more than 1024 KiB (Cairn's limit)"
        );
        // Level 2 holds 100 copies (~107 KB): the 9th alias of level 3 passes 1 MiB.
        assert_eq!(e.line, 4, "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn too_many_aliases_are_refused() {
        let mut yaml = String::from("a: &a x\nb: [");
        yaml.push_str(&vec!["*a"; MAX_ALIASES].join(", "));
        yaml.push_str("]\n");
        load("c.yml", &yaml).expect("at the limit");
        let yaml = yaml.replace("]\n", ", *a]\n");
        let e = load("c.yml", &yaml).expect_err("one more");
        assert!(e.limit);
        assert_eq!(
            e.message,
            "more than 1000 YAML aliases in one config (Cairn's limit)"
        );
        assert_eq!(e.line, 2);
    }

    #[test]
    fn tab_indented_json_is_read() {
        let doc = load(
            "c.json",
            "{\n\t\"runs\": [\n\t\t{\"name\": \"ci\"}\n\t]\n}\n",
        )
        .expect("json with tabs");
        let entries = Node::root(&doc).entries().expect("map");
        assert_eq!(entries[0].key, Some("runs"));
        assert_eq!(
            (entries[0].key_node.line(), entries[0].key_node.column()),
            (2, 2)
        );
    }
}

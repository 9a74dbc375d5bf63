//! Why a run of the config does not match a reference: the counterpart of
//! [`matching_runs`](super::matching_runs) that `cairn run` prints when nothing matches
//! ("run ci: excluded by when.branch (include: main; this is branch feature)").
//!
//! It replays Agola's rule of [`When::matches`] clause by clause (branch conditions only
//! for a branch, tag conditions only for a tag, ref conditions always, last) and names the
//! clause that decided: the last exclude that matched, else the includes that did not.
//! Pure: no I/O.

use cairn_client::api::RefSpec;

use super::model::Config;
use super::when::{Matcher, When, WhenConditions, effective_ref, non_empty, when_matches};

/// A run of the config that does not match the reference, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exclusion {
    pub run: String,
    pub reason: String,
}

impl std::fmt::Display for Exclusion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "run {}: {}", self.run, self.reason)
    }
}

/// Every run of `config` that `reference` does not match, in config order, with the
/// `when` clause that excluded it.
pub fn excluded_runs(config: &Config, reference: &RefSpec) -> Vec<Exclusion> {
    config
        .runs
        .iter()
        .filter(|r| !when_matches(r.when.as_ref(), reference))
        .filter_map(|r| {
            let when = r.when.as_ref()?;
            Some(Exclusion {
                run: r.name.clone(),
                reason: explain(when, reference),
            })
        })
        .collect()
}

/// One clause of a `when`, as evaluated against the reference.
struct Clause<'a> {
    key: &'static str,
    conditions: &'a WhenConditions,
    /// The value the clause was matched against (`None`: the clause does not apply).
    value: Option<String>,
}

/// Why `when` does not match `reference` (the caller knows it does not).
fn explain(when: &When, reference: &RefSpec) -> String {
    let this = describe(reference);
    let branch = non_empty(&reference.branch);
    let tag = non_empty(&reference.tag);
    let clauses: Vec<Clause<'_>> = [
        ("branch", when.branch.as_ref(), branch.map(str::to_string)),
        ("tag", when.tag.as_ref(), tag.map(str::to_string)),
        ("ref", when.git_ref.as_ref(), Some(effective_ref(reference))),
    ]
    .into_iter()
    .filter_map(|(key, conditions, value)| {
        conditions.map(|conditions| Clause {
            key,
            conditions,
            value,
        })
    })
    .collect();

    // The last exclude that matched decided (a later include never overrides it within
    // a clause, and Agola evaluates the ref clause last).
    if let Some((clause, m)) = clauses.iter().rev().find_map(|c| {
        let value = c.value.as_deref()?;
        c.conditions
            .exclude
            .iter()
            .find(|m| m.matches(value))
            .map(|m| (c, m))
    }) {
        return format!(
            "excluded by when.{} (exclude: {} matches; this is {this})",
            clause.key,
            show(m)
        );
    }
    let applying: Vec<(&str, String)> = clauses
        .iter()
        .filter(|c| c.value.is_some())
        .map(|c| (c.key, list(&c.conditions.include)))
        .collect();
    let not_applying: Vec<&str> = clauses
        .iter()
        .filter(|c| c.value.is_none())
        .map(|c| c.key)
        .collect();
    if applying.is_empty() {
        let only: Vec<String> = not_applying
            .iter()
            .map(|k| match *k {
                "branch" => "when.branch applies to branches only".to_string(),
                "tag" => "when.tag applies to tags only".to_string(),
                other => format!("when.{other} does not apply"),
            })
            .collect();
        return format!("excluded: {}; this is {this}", only.join(", "));
    }
    if let [(key, include)] = applying.as_slice() {
        return format!("excluded by when.{key} (include: {include}; this is {this})");
    }
    let all: Vec<String> = applying
        .iter()
        .map(|(key, include)| format!("when.{key} (include: {include})"))
        .collect();
    format!("excluded by {}; this is {this}", all.join(", "))
}

/// `branch feature`, `tag v1.0`, `ref refs/pull/3/head`.
fn describe(reference: &RefSpec) -> String {
    if let Some(b) = non_empty(&reference.branch) {
        format!("branch {b}")
    } else if let Some(t) = non_empty(&reference.tag) {
        format!("tag {t}")
    } else if let Some(r) = non_empty(&reference.git_ref) {
        format!("ref {r}")
    } else {
        "no reference".to_string()
    }
}

fn show(m: &Matcher) -> String {
    match m {
        Matcher::Exact(s) => s.clone(),
        Matcher::Regex(r) => format!("/{}/", r.as_str()),
    }
}

fn list(matchers: &[Matcher]) -> String {
    if matchers.is_empty() {
        return "nothing".to_string();
    }
    matchers.iter().map(show).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configfile::parse;

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

    fn config(runs: &str) -> Config {
        let text = format!("runs:\n{runs}");
        parse("config.yml", &text).expect("a valid config").config
    }

    const TASK: &str = "    tasks:\n      - name: t\n        runtime: {containers: [{image: alpine}]}\n        steps: [{type: run, command: 'true'}]\n";

    #[test]
    fn an_include_that_does_not_match_names_the_includes_and_the_branch() {
        let c = config(&format!("  - name: ci\n    when: {{branch: main}}\n{TASK}"));
        let ex = excluded_runs(&c, &branch("feature"));
        assert_eq!(
            ex.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
            ["run ci: excluded by when.branch (include: main; this is branch feature)"]
        );
    }

    #[test]
    fn a_matching_exclude_is_named_as_the_reason() {
        let c = config(&format!(
            "  - name: ci\n    when:\n      branch:\n        include: '/.*/'\n        exclude: [wip, '/^feat/']\n{TASK}"
        ));
        let ex = excluded_runs(&c, &branch("feature"));
        assert_eq!(ex.len(), 1);
        assert_eq!(
            ex[0].reason,
            "excluded by when.branch (exclude: /^feat/ matches; this is branch feature)"
        );
    }

    #[test]
    fn branch_conditions_do_not_apply_to_a_tag() {
        let c = config(&format!("  - name: ci\n    when: {{branch: main}}\n{TASK}"));
        let ex = excluded_runs(&c, &tag("v1.0"));
        assert_eq!(
            ex[0].reason,
            "excluded: when.branch applies to branches only; this is tag v1.0"
        );
    }

    #[test]
    fn ref_conditions_apply_to_the_derived_ref() {
        let c = config(&format!(
            "  - name: release\n    when: {{tag: '/^v/', ref: refs/heads/release}}\n{TASK}"
        ));
        let ex = excluded_runs(&c, &branch("main"));
        assert_eq!(
            ex[0].reason,
            "excluded by when.ref (include: refs/heads/release; this is branch main)"
        );
    }

    #[test]
    fn matching_runs_and_runs_without_when_are_not_excluded() {
        let c = config(&format!(
            "  - name: ci\n    when: {{branch: main}}\n{TASK}  - name: always\n{TASK}  - name: docs\n    when: {{branch: docs}}\n{TASK}"
        ));
        let ex = excluded_runs(&c, &branch("main"));
        assert_eq!(
            ex.iter().map(|e| e.run.as_str()).collect::<Vec<_>>(),
            ["docs"]
        );
    }
}

//! What a run is for, as Agola's gateway decides it: a git reference classified into a
//! branch, tag or pull-request run (`gateway/action/user.go` `UserCreateRun` and the git
//! sources' `RefType`), the run group it lands in, the static environment every task gets
//! and the run annotations.
//!
//! Pure: the API's run creation and `cairn run` call it; the config evaluators read the
//! plain [`Reference`] as their `ctx`. It knows nothing of the store, HTTP or processes.

use std::collections::BTreeMap;

use cairn_client::api::RefSpec;
use cairn_client::runconfig::Env;
use regex::{Regex, RegexBuilder};

/// Agola's default pull-request refs (`agola directrun start --pull-request-ref-regexes`):
/// GitHub/Gitea's and GitLab's; the first capture group is the pull request id.
pub const DEFAULT_PULL_REQUEST_REF_REGEXES: [&str; 2] =
    [r"refs/pull/(\d+)/head", r"refs/merge-requests/(\d+)/head"];

/// At most this many pull-request patterns (they come from API callers too).
pub const MAX_PULL_REQUEST_PATTERNS: usize = 16;
/// At most this many bytes in one pattern.
pub const MAX_PULL_REQUEST_PATTERN_LEN: usize = 256;
/// The compiled size of one pattern (the regex crate's default is 10 MiB per pattern,
/// which a handful of crafted patterns in one request turn into a memory exhaustion).
const PULL_REQUEST_PATTERN_SIZE_LIMIT: usize = 256 * 1024;

const BRANCH_PREFIX: &str = "refs/heads/";
const TAG_PREFIX: &str = "refs/tags/";

/// The annotation saying where a direct run's commit sha comes from.
pub const COMMIT_SHA_SOURCE_ANNOTATION: &str = "commit_sha_source";

/// Agola's `RunRefType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefType {
    Branch,
    Tag,
    PullRequest,
}

impl RefType {
    /// As Agola writes it (`AGOLA_GIT_REF_TYPE`, the `ref_type` annotation, `ctx.ref_type`).
    pub fn as_str(self) -> &'static str {
        match self {
            RefType::Branch => "branch",
            RefType::Tag => "tag",
            RefType::PullRequest => "pull_request",
        }
    }

    /// The run-group segment (Agola's `GroupType`): `branch`, `tag` or `pr`.
    pub fn group_segment(self) -> &'static str {
        match self {
            RefType::Branch => "branch",
            RefType::Tag => "tag",
            RefType::PullRequest => "pr",
        }
    }
}

/// A classified reference. Exactly one of `branch`, `tag`, `pull_request_id` is non-empty
/// (the one `ref_type` names); the others are empty strings, as in Agola's config context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    pub ref_type: RefType,
    /// The full ref: `refs/heads/<b>`, `refs/tags/<t>`, `refs/pull/<n>/head`, …
    pub git_ref: String,
    pub branch: String,
    pub tag: String,
    pub pull_request_id: String,
}

/// Why a reference cannot be classified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("one of branch, tag or ref is required")]
    Missing,
    #[error("only one of branch, tag or ref can be given")]
    Several,
    #[error("wrong pull request ref regular expression {pattern:?}: {why}")]
    BadPattern { pattern: String, why: String },
    #[error(
        "{0} pull request ref regular expressions; at most {MAX_PULL_REQUEST_PATTERNS} are allowed"
    )]
    TooManyPatterns(usize),
    #[error("{0}")]
    BadCommit(String),
    #[error(
        "unsupported ref {0:?}: it is neither refs/heads/<branch>, refs/tags/<tag> nor a pull request ref ({1})"
    )]
    Unsupported(String, String),
}

/// The compiled pull-request ref patterns; each must have a capture group (the id).
#[derive(Clone, Debug)]
pub struct PullRequestRefs(Vec<Regex>);

impl PullRequestRefs {
    /// Compiles `patterns`; refuses more than [`MAX_PULL_REQUEST_PATTERNS`], one longer
    /// than [`MAX_PULL_REQUEST_PATTERN_LEN`] bytes or one whose compiled form is too big.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<PullRequestRefs, ReferenceError> {
        if patterns.len() > MAX_PULL_REQUEST_PATTERNS {
            return Err(ReferenceError::TooManyPatterns(patterns.len()));
        }
        patterns
            .iter()
            .map(|p| {
                let p = p.as_ref();
                let bad = |why: String| ReferenceError::BadPattern {
                    pattern: p.to_string(),
                    why,
                };
                if p.len() > MAX_PULL_REQUEST_PATTERN_LEN {
                    return Err(bad(format!(
                        "it is {} bytes long; at most {MAX_PULL_REQUEST_PATTERN_LEN} are allowed",
                        p.len()
                    )));
                }
                let re = RegexBuilder::new(p)
                    .size_limit(PULL_REQUEST_PATTERN_SIZE_LIMIT)
                    .build()
                    .map_err(|e| bad(e.to_string()))?;
                if re.captures_len() < 2 {
                    return Err(bad(
                        "it needs a capture group for the pull request id".into()
                    ));
                }
                Ok(re)
            })
            .collect::<Result<_, _>>()
            .map(PullRequestRefs)
    }

    /// Agola's defaults, [`DEFAULT_PULL_REQUEST_REF_REGEXES`].
    pub fn agola_default() -> PullRequestRefs {
        PullRequestRefs::new(&DEFAULT_PULL_REQUEST_REF_REGEXES)
            .expect("the default patterns compile and have a capture group")
    }

    /// The pull request id of `git_ref`, from the first pattern that matches (unanchored,
    /// as Go's `MatchString`).
    fn id(&self, git_ref: &str) -> Option<String> {
        self.0.iter().find_map(|re| {
            let caps = re.captures(git_ref)?;
            Some(caps.get(1).map_or("", |m| m.as_str()).to_string())
        })
    }

    fn describe(&self) -> String {
        let patterns: Vec<&str> = self.0.iter().map(Regex::as_str).collect();
        if patterns.is_empty() {
            "no pull request patterns".to_string()
        } else {
            patterns.join(", ")
        }
    }
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// Classifies `spec` as Agola's `UserCreateRun`: exactly one of branch, tag and ref; a
/// branch or tag becomes its full ref; a ref under `refs/heads/` is a branch run, under
/// `refs/tags/` a tag run, one matching a pull-request pattern a pull-request run.
pub fn classify(spec: &RefSpec, prs: &PullRequestRefs) -> Result<Reference, ReferenceError> {
    let given = [&spec.branch, &spec.tag, &spec.git_ref]
        .into_iter()
        .filter(|v| non_empty(v).is_some())
        .count();
    if given == 0 {
        return Err(ReferenceError::Missing);
    }
    if given > 1 {
        return Err(ReferenceError::Several);
    }
    let git_ref = match (
        non_empty(&spec.branch),
        non_empty(&spec.tag),
        non_empty(&spec.git_ref),
    ) {
        (Some(b), _, _) => format!("{BRANCH_PREFIX}{b}"),
        (_, Some(t), _) => format!("{TAG_PREFIX}{t}"),
        (_, _, Some(r)) => r.to_string(),
        _ => return Err(ReferenceError::Missing),
    };
    let mut r = Reference {
        ref_type: RefType::Branch,
        git_ref: git_ref.clone(),
        branch: String::new(),
        tag: String::new(),
        pull_request_id: String::new(),
    };
    let unsupported = || ReferenceError::Unsupported(git_ref.clone(), prs.describe());
    if let Some(b) = git_ref.strip_prefix(BRANCH_PREFIX) {
        r.branch = b.to_string();
    } else if let Some(t) = git_ref.strip_prefix(TAG_PREFIX) {
        r.ref_type = RefType::Tag;
        r.tag = t.to_string();
    } else if let Some(id) = prs.id(&git_ref) {
        r.ref_type = RefType::PullRequest;
        r.pull_request_id = id;
    } else {
        return Err(unsupported());
    }
    if r.name().is_empty() {
        return Err(unsupported());
    }
    Ok(r)
}

impl Reference {
    /// The branch, tag or pull request id, whichever the reference is.
    pub fn name(&self) -> &str {
        match self.ref_type {
            RefType::Branch => &self.branch,
            RefType::Tag => &self.tag,
            RefType::PullRequest => &self.pull_request_id,
        }
    }

    /// What `when` conditions are matched against: the branch (branch runs), the tag (tag
    /// runs) and always the full ref, as Agola's `MatchWhen` does.
    pub fn ref_spec(&self) -> RefSpec {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        RefSpec {
            branch: some(&self.branch),
            tag: some(&self.tag),
            git_ref: some(&self.git_ref),
        }
    }

    /// The run group under `base` (`/user/<u>`, `/project/<p>`): `<base>/branch/<b>`,
    /// `<base>/tag/<t>` or `<base>/pr/<n>`, the name path-escaped into one segment
    /// (Agola's `GenRunGroup`).
    pub fn run_group(&self, base: &str) -> String {
        format!(
            "{}/{}/{}",
            base.trim_end_matches('/'),
            self.ref_type.group_segment(),
            path_escape(self.name())
        )
    }
}

/// Go's `url.PathEscape`: everything but unreserved characters and `$&+:=@` is escaped.
pub fn path_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~$&+:=@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A group path in canonical form: leading `/`, no trailing `/`, no empty segments;
/// `/` alone is the root. `None` when it has `..`, `.`, a NUL or a control character.
pub fn normalize_group(group: &str) -> Option<String> {
    if group.chars().any(|c| c.is_control()) {
        return None;
    }
    let segments: Vec<&str> = group.split('/').filter(|s| !s.is_empty()).collect();
    if segments.iter().any(|s| *s == "." || *s == "..") {
        return None;
    }
    Some(format!("/{}", segments.join("/")))
}

/// What a run is for beyond its reference: where its sources come from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Commit {
    /// The commit sha (for a direct run of a dirty tree, a content hash of its snapshot).
    pub sha: String,
    /// The commit message (its subject for direct runs).
    pub message: String,
    /// The repository's clone URL; empty for uploaded snapshots.
    pub repository_url: String,
}

/// At most this many bytes in a caller's commit sha (a SHA-256 in hex is 64).
pub const MAX_COMMIT_SHA_LEN: usize = 64;
/// At most this many bytes in a caller's commit message.
pub const MAX_COMMIT_MESSAGE_LEN: usize = 64 * 1024;

/// Checks a caller's commit sha and message where they enter: the sha becomes
/// `AGOLA_GIT_COMMITSHA` in every task's environment, so it is ASCII letters and digits
/// only; the message is bounded and has no NUL.
pub fn check_commit(sha: Option<&str>, message: Option<&str>) -> Result<(), ReferenceError> {
    let sha = sha.unwrap_or_default();
    if sha.len() > MAX_COMMIT_SHA_LEN || !sha.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ReferenceError::BadCommit(format!(
            "commit_sha must be at most {MAX_COMMIT_SHA_LEN} letters and digits"
        )));
    }
    let message = message.unwrap_or_default();
    if message.len() > MAX_COMMIT_MESSAGE_LEN || message.contains('\0') {
        return Err(ReferenceError::BadCommit(format!(
            "message must be at most {MAX_COMMIT_MESSAGE_LEN} bytes without NUL characters"
        )));
    }
    Ok(())
}

/// Agola's static environment (`gateway/action/run.go`), every variable always set (empty
/// when it does not apply), with a `CAIRN_*` twin for each `AGOLA_*` one, plus `CAIRN` and
/// `CAIRN_RUN_GROUP`. The run's id and counter are added at hand-out (`spec_data`).
pub fn static_environment(r: &Reference, commit: &Commit, group: &str) -> Env {
    let mut env = Env::new();
    env.insert("CI".into(), "true".into());
    env.insert("CAIRN".into(), "true".into());
    env.insert("CAIRN_RUN_GROUP".into(), group.to_string());
    for (name, value) in [
        ("REPOSITORY_URL", &commit.repository_url),
        ("GIT_BRANCH", &r.branch),
        ("GIT_TAG", &r.tag),
        ("PULL_REQUEST_ID", &r.pull_request_id),
        ("GIT_REF_TYPE", &r.ref_type.as_str().to_string()),
        ("GIT_REF", &r.git_ref),
        ("GIT_COMMITSHA", &commit.sha),
    ] {
        env.insert(format!("AGOLA_{name}"), value.clone());
        env.insert(format!("CAIRN_{name}"), value.clone());
    }
    env
}

/// The run annotations Agola's gateway sets: `run_type` (`user`/`project`, from the group,
/// unless given), `run_creation_trigger` (`manual` unless given), `userid`/`projectid`,
/// `ref_type`, `ref`, `commit_sha`, `message`, and `branch`, `tag` or `pull_request_id`.
/// The caller's other annotations are kept; the ones derived from the reference and the
/// commit always win, so they cannot contradict the run.
pub fn annotations(
    r: &Reference,
    commit: &Commit,
    group: &str,
    given: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut a = given.clone();
    let mut segments = group.split('/').filter(|s| !s.is_empty());
    let (kind, id) = (segments.next().unwrap_or(""), segments.next().unwrap_or(""));
    a.entry("run_type".into())
        .or_insert_with(|| kind.to_string());
    a.entry("run_creation_trigger".into())
        .or_insert_with(|| "manual".to_string());
    match kind {
        "user" => {
            a.entry("userid".into()).or_insert_with(|| id.to_string());
        }
        "project" => {
            a.entry("projectid".into())
                .or_insert_with(|| id.to_string());
        }
        _ => {}
    }
    a.insert("ref_type".into(), r.ref_type.as_str().into());
    a.insert("ref".into(), r.git_ref.clone());
    for (key, value) in [
        ("branch", &r.branch),
        ("tag", &r.tag),
        ("pull_request_id", &r.pull_request_id),
        ("commit_sha", &commit.sha),
        ("message", &commit.message),
    ] {
        if value.is_empty() {
            a.remove(key);
        } else {
            a.insert(key.into(), value.clone());
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(branch: Option<&str>, tag: Option<&str>, git_ref: Option<&str>) -> RefSpec {
        RefSpec {
            branch: branch.map(Into::into),
            tag: tag.map(Into::into),
            git_ref: git_ref.map(Into::into),
        }
    }

    fn r(git_ref: &str) -> Result<Reference, ReferenceError> {
        classify(
            &spec(None, None, Some(git_ref)),
            &PullRequestRefs::agola_default(),
        )
    }

    #[test]
    fn refs_are_classified_as_agolas_gateway_does() {
        // (ref, type, branch, tag, pull request id, group under /user/u)
        let table = [
            (
                "refs/heads/main",
                RefType::Branch,
                "main",
                "",
                "",
                "/user/u/branch/main",
            ),
            (
                "refs/heads/feature/x",
                RefType::Branch,
                "feature/x",
                "",
                "",
                "/user/u/branch/feature%2Fx",
            ),
            (
                "refs/tags/v1.0",
                RefType::Tag,
                "",
                "v1.0",
                "",
                "/user/u/tag/v1.0",
            ),
            (
                "refs/pull/42/head",
                RefType::PullRequest,
                "",
                "",
                "42",
                "/user/u/pr/42",
            ),
            (
                "refs/merge-requests/7/head",
                RefType::PullRequest,
                "",
                "",
                "7",
                "/user/u/pr/7",
            ),
        ];
        for (git_ref, ty, branch, tag, pr, group) in table {
            let got = r(git_ref).unwrap_or_else(|e| panic!("{git_ref}: {e}"));
            assert_eq!(got.ref_type, ty, "{git_ref}");
            assert_eq!(got.git_ref, git_ref);
            assert_eq!(
                (
                    got.branch.as_str(),
                    got.tag.as_str(),
                    got.pull_request_id.as_str()
                ),
                (branch, tag, pr),
                "{git_ref}"
            );
            assert_eq!(got.run_group("/user/u"), group, "{git_ref}");
        }
    }

    #[test]
    fn a_branch_or_tag_becomes_its_full_ref() {
        let prs = PullRequestRefs::agola_default();
        let b = classify(&spec(Some("dev"), None, None), &prs).expect("branch");
        assert_eq!(
            (b.ref_type, b.git_ref.as_str()),
            (RefType::Branch, "refs/heads/dev")
        );
        let t = classify(&spec(None, Some("v2"), None), &prs).expect("tag");
        assert_eq!(
            (t.ref_type, t.git_ref.as_str()),
            (RefType::Tag, "refs/tags/v2")
        );
        assert_eq!(t.ref_spec(), spec(None, Some("v2"), Some("refs/tags/v2")));
    }

    #[test]
    fn exactly_one_of_branch_tag_and_ref_is_required() {
        let prs = PullRequestRefs::agola_default();
        assert_eq!(
            classify(&spec(None, None, None), &prs),
            Err(ReferenceError::Missing)
        );
        assert_eq!(
            classify(&spec(Some(""), None, None), &prs),
            Err(ReferenceError::Missing)
        );
        assert_eq!(
            classify(&spec(Some("a"), None, Some("refs/heads/a")), &prs),
            Err(ReferenceError::Several)
        );
    }

    #[test]
    fn unknown_refs_and_empty_names_are_unsupported() {
        for bad in [
            "refs/notes/x",
            "main",
            "refs/heads/",
            "refs/tags/",
            "refs/pull/x/merge",
        ] {
            let e = r(bad).expect_err(bad);
            assert!(matches!(e, ReferenceError::Unsupported(..)), "{bad}: {e:?}");
            assert!(e.to_string().contains("refs/pull/"), "{e}");
        }
    }

    #[test]
    fn custom_pull_request_patterns_replace_the_defaults() {
        let prs = PullRequestRefs::new(&[r"^refs/reviews/(\d+)$"]).expect("valid");
        let got = classify(&spec(None, None, Some("refs/reviews/9")), &prs).expect("pr");
        assert_eq!(got.pull_request_id, "9");
        assert_eq!(got.run_group("/project/p"), "/project/p/pr/9");
        assert!(classify(&spec(None, None, Some("refs/pull/1/head")), &prs).is_err());
        // Branches and tags need no pattern.
        assert!(classify(&spec(None, None, Some("refs/heads/a")), &prs).is_ok());
    }

    #[test]
    fn hostile_pull_request_patterns_are_refused_before_they_cost_memory() {
        let many = vec![r"refs/pull/(\d+)/head"; MAX_PULL_REQUEST_PATTERNS + 1];
        let e = PullRequestRefs::new(&many).expect_err("too many");
        assert!(matches!(e, ReferenceError::TooManyPatterns(17)), "{e:?}");
        let long = format!(
            "refs/pull/(\\d+)/{}",
            "a".repeat(MAX_PULL_REQUEST_PATTERN_LEN)
        );
        let e = PullRequestRefs::new(&[long.as_str()]).expect_err("too long");
        assert!(e.to_string().contains("at most 256"), "{e}");
        // Short, but compiles to far more than the limit.
        let big = r"(\w{1000}){1000}";
        let e = PullRequestRefs::new(&[big]).expect_err("too big once compiled");
        assert!(matches!(e, ReferenceError::BadPattern { .. }), "{e:?}");
        // The limits leave room for real patterns.
        assert!(PullRequestRefs::new(&DEFAULT_PULL_REQUEST_REF_REGEXES).is_ok());
    }

    #[test]
    fn a_callers_commit_sha_and_message_are_checked_where_they_enter() {
        assert!(check_commit(None, None).is_ok());
        let sha256 = "a".repeat(64);
        assert!(check_commit(Some(&sha256), Some("fix: the build\n\nbody")).is_ok());
        for bad_sha in [
            "a".repeat(65),
            "abc\n".into(),
            "abc\0".into(),
            "$(id)".into(),
        ] {
            let e = check_commit(Some(&bad_sha), None).expect_err(&bad_sha);
            assert!(e.to_string().contains("commit_sha"), "{e}");
        }
        let long = "m".repeat(MAX_COMMIT_MESSAGE_LEN + 1);
        for bad_message in [long.as_str(), "a\0b"] {
            let e = check_commit(None, Some(bad_message)).expect_err("bad message");
            assert!(e.to_string().contains("message"), "{e}");
        }
    }

    #[test]
    fn bad_pull_request_patterns_are_refused() {
        for bad in [r"refs/pull/(\d+", r"refs/pull/\d+/head"] {
            let e = PullRequestRefs::new(&[bad]).expect_err(bad);
            assert!(
                matches!(e, ReferenceError::BadPattern { .. }),
                "{bad}: {e:?}"
            );
        }
    }

    #[test]
    fn group_names_are_escaped_as_gos_path_escape() {
        assert_eq!(path_escape("a/b c%d?e"), "a%2Fb%20c%25d%3Fe");
        assert_eq!(path_escape("v1.0-rc_1~x+y=z@h:$&"), "v1.0-rc_1~x+y=z@h:$&");
        assert_eq!(path_escape("é"), "%C3%A9");
    }

    #[test]
    fn ref_specs_for_when_hold_the_branch_or_tag_and_always_the_ref() {
        let pr = r("refs/pull/3/head").expect("pr");
        assert_eq!(pr.ref_spec(), spec(None, None, Some("refs/pull/3/head")));
        let b = r("refs/heads/main").expect("branch");
        assert_eq!(
            b.ref_spec(),
            spec(Some("main"), None, Some("refs/heads/main"))
        );
    }

    fn commit() -> Commit {
        Commit {
            sha: "abc123".into(),
            message: "fix the build".into(),
            repository_url: String::new(),
        }
    }

    #[test]
    fn the_static_environment_has_every_agola_variable_and_its_cairn_twin_always() {
        let env = static_environment(
            &r("refs/pull/5/head").expect("pr"),
            &commit(),
            "/user/u/pr/5",
        );
        let expect = [
            ("CI", "true"),
            ("AGOLA_REPOSITORY_URL", ""),
            ("AGOLA_GIT_BRANCH", ""),
            ("AGOLA_GIT_TAG", ""),
            ("AGOLA_PULL_REQUEST_ID", "5"),
            ("AGOLA_GIT_REF_TYPE", "pull_request"),
            ("AGOLA_GIT_REF", "refs/pull/5/head"),
            ("AGOLA_GIT_COMMITSHA", "abc123"),
        ];
        for (name, value) in expect {
            assert_eq!(env.get(name).map(String::as_str), Some(value), "{name}");
            if let Some(rest) = name.strip_prefix("AGOLA_") {
                let twin = format!("CAIRN_{rest}");
                assert_eq!(env.get(&twin).map(String::as_str), Some(value), "{twin}");
            }
        }
        assert_eq!(env["CAIRN_RUN_GROUP"], "/user/u/pr/5");
        let b = static_environment(
            &r("refs/heads/main").expect("b"),
            &Commit::default(),
            "/g/x",
        );
        assert_eq!(b["AGOLA_GIT_BRANCH"], "main");
        assert_eq!(b["AGOLA_GIT_REF_TYPE"], "branch");
        assert_eq!(b["AGOLA_PULL_REQUEST_ID"], "");
        assert_eq!(b["AGOLA_GIT_COMMITSHA"], "");
    }

    #[test]
    fn annotations_are_agolas_and_the_derived_ones_win_over_the_callers() {
        let given: BTreeMap<String, String> = [
            ("branch", "stale"),
            ("ref_type", "tag"),
            ("custom", "kept"),
            ("run_creation_trigger", "webhook"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let a = annotations(
            &r("refs/tags/v1").expect("tag"),
            &commit(),
            "/user/u/tag/v1",
            &given,
        );
        let want: BTreeMap<String, String> = [
            ("custom", "kept"),
            ("run_type", "user"),
            ("run_creation_trigger", "webhook"),
            ("userid", "u"),
            ("ref_type", "tag"),
            ("ref", "refs/tags/v1"),
            ("tag", "v1"),
            ("commit_sha", "abc123"),
            ("message", "fix the build"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(a, want);
        let p = annotations(
            &r("refs/pull/8/head").expect("pr"),
            &Commit::default(),
            "/project/p1/pr/8",
            &BTreeMap::new(),
        );
        assert_eq!(p["run_type"], "project");
        assert_eq!(p["projectid"], "p1");
        assert_eq!(p["run_creation_trigger"], "manual");
        assert_eq!(p["pull_request_id"], "8");
        assert!(!p.contains_key("commit_sha") && !p.contains_key("branch"));
    }
}

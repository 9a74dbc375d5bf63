//! Retention of archived runs, as pure decisions: which finished runs in segments are past
//! their group's limits, and which of the deleted runs' tasks no remaining run still uses.
//!
//! A [`RetentionPolicy`] has two limits, each optional (none: keep everything, the
//! default): keep runs for a duration (`keep_for`) and keep the newest N runs of each
//! group (`keep_runs`). A run past either is deleted. Rules override them by group prefix
//! (on path-element boundaries); the longest matching prefix wins, field by field, and a
//! rule may lift a limit (`forever`, `all`).
//!
//! Only runs in recorded segments are considered, so a live run (in the store) is never a
//! candidate; entries that are not finished are never deleted nor counted. A run's age is
//! counted from its segment's creation time, which is after the run ended (compaction
//! keeps it), so a run is never deleted before it is `keep_for` old. Counts are over
//! archived runs: runs of the group still in the store come on top, so at least N
//! finished runs remain.
//!
//! Nothing here reads a clock or does I/O: the scheduler's retention pass reads footers,
//! calls these functions, and does the deleting.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::str::FromStr;
use std::time::Duration;

use cairn_client::run::{Run, Time};

use crate::datamanager::segments::{FooterEntry, SegmentFooter};

/// Why a retention setting is not valid; each message is one line that names the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetentionError {
    #[error(
        "invalid duration {input:?}: expected a whole number and a unit s, m, h, d or w (e.g. 90d), at least 1s"
    )]
    Duration { input: String },
    #[error("invalid run count {input:?}: expected a whole number of at least 1")]
    Count { input: String },
    #[error(
        "invalid retention rule {input:?}: expected GROUP_PREFIX=LIMITS, e.g. /project/a=30d,100 (LIMITS: a duration and/or a run count, or forever/all to lift one)"
    )]
    Rule { input: String },
    #[error("invalid retention rule {input:?}: {why}")]
    RuleField { input: String, why: String },
    #[error("retention rule for {prefix} is given twice")]
    Duplicate { prefix: String },
}

/// A limit a rule sets: a value, or none at all (lifting an inherited one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit<T> {
    /// No limit of this kind for the matching groups.
    Unlimited,
    At(T),
}

impl<T: Copy> Limit<T> {
    fn value(self) -> Option<T> {
        match self {
            Limit::Unlimited => None,
            Limit::At(v) => Some(v),
        }
    }
}

/// The limits of one group, after rules are applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Runs archived longer ago than this are deleted.
    pub keep_for: Option<Duration>,
    /// Only the newest this many archived runs of the group are kept.
    pub keep_runs: Option<usize>,
}

impl Limits {
    fn is_unlimited(&self) -> bool {
        self.keep_for.is_none() && self.keep_runs.is_none()
    }
}

/// An override of the limits for the groups under `prefix`; a field left `None` keeps
/// the value of the less specific rule (or the default).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionRule {
    /// A group path (`/project/a`), without a trailing slash; `/` matches every group.
    pub prefix: String,
    pub keep_for: Option<Limit<Duration>>,
    pub keep_runs: Option<Limit<usize>>,
}

impl RetentionRule {
    fn matches(&self, group: &str) -> bool {
        self.prefix == "/"
            || group == self.prefix
            || group
                .strip_prefix(self.prefix.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

impl FromStr for RetentionRule {
    type Err = RetentionError;

    /// `PREFIX=LIMITS`: LIMITS are one or two comma-separated items, a duration (`30d`)
    /// or `forever`, and a run count (`100`) or `all`.
    fn from_str(input: &str) -> Result<RetentionRule, RetentionError> {
        let rule_error = || RetentionError::Rule {
            input: input.to_string(),
        };
        let field = |why: String| RetentionError::RuleField {
            input: input.to_string(),
            why,
        };
        let (prefix, limits) = input.split_once('=').ok_or_else(rule_error)?;
        let prefix = parse_prefix(prefix).map_err(field)?;
        let mut rule = RetentionRule {
            prefix,
            keep_for: None,
            keep_runs: None,
        };
        for item in limits.split(',').map(str::trim) {
            if item.is_empty() {
                return Err(rule_error());
            }
            let is_age = item == "forever"
                || (item != "all" && item.ends_with(|c: char| c.is_ascii_alphabetic()));
            if is_age {
                if rule.keep_for.is_some() {
                    return Err(field("two durations".into()));
                }
                rule.keep_for = Some(match item {
                    "forever" => Limit::Unlimited,
                    _ => Limit::At(parse_duration(item).map_err(|e| field(e.to_string()))?),
                });
            } else {
                if rule.keep_runs.is_some() {
                    return Err(field("two run counts".into()));
                }
                rule.keep_runs = Some(match item {
                    "all" => Limit::Unlimited,
                    _ => Limit::At(parse_count(item).map_err(|e| field(e.to_string()))?),
                });
            }
        }
        Ok(rule)
    }
}

/// A group prefix as rules take it: absolute, no empty element, trailing slash dropped.
fn parse_prefix(input: &str) -> Result<String, String> {
    let trimmed = input.trim();
    if trimmed == "/" {
        return Ok("/".into());
    }
    let prefix = trimmed.trim_end_matches('/');
    let valid = prefix.starts_with('/')
        && prefix[1..]
            .split('/')
            .all(|e| !e.is_empty() && !e.chars().any(char::is_whitespace));
    if valid {
        Ok(prefix.to_string())
    } else {
        Err(format!(
            "group prefix {trimmed:?} is not a path like /project/a"
        ))
    }
}

/// A duration as the flags take it: a whole number and one unit, `s`, `m`, `h`, `d`
/// (24 h) or `w` (7 d); at least one second.
pub fn parse_duration(input: &str) -> Result<Duration, RetentionError> {
    let error = || RetentionError::Duration {
        input: input.to_string(),
    };
    let s = input.trim();
    let unit = s.chars().last().ok_or_else(error)?;
    let secs_per: u64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => return Err(error()),
    };
    let digits = &s[..s.len() - unit.len_utf8()];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(error());
    }
    let n: u64 = digits.parse().map_err(|_| error())?;
    let secs = n.checked_mul(secs_per).ok_or_else(error)?;
    // Beyond a thousand years it is no limit anyone means, and chrono could not add it.
    if secs == 0 || secs > 1000 * 365 * 86_400 {
        return Err(error());
    }
    Ok(Duration::from_secs(secs))
}

/// A run count: a whole number of at least 1.
pub fn parse_count(input: &str) -> Result<usize, RetentionError> {
    let s = input.trim();
    match s.parse::<usize>() {
        Ok(n) if n >= 1 && s.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(RetentionError::Count {
            input: input.to_string(),
        }),
    }
}

/// How long archived runs are kept: default limits and per-prefix rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    defaults: Limits,
    /// Shortest prefix first, so later rules override earlier ones.
    rules: Vec<RetentionRule>,
}

impl RetentionPolicy {
    /// The policy of `defaults` overridden by `rules`; a prefix given twice is refused.
    pub fn new(
        defaults: Limits,
        mut rules: Vec<RetentionRule>,
    ) -> Result<RetentionPolicy, RetentionError> {
        rules.sort_by(|a, b| (a.prefix.len(), &a.prefix).cmp(&(b.prefix.len(), &b.prefix)));
        if let Some(w) = rules.windows(2).find(|w| w[0].prefix == w[1].prefix) {
            return Err(RetentionError::Duplicate {
                prefix: w[0].prefix.clone(),
            });
        }
        Ok(RetentionPolicy { defaults, rules })
    }

    /// True when no group has any limit: retention deletes nothing (the default).
    pub fn keeps_everything(&self) -> bool {
        self.defaults.is_unlimited()
            && self.rules.iter().all(|r| {
                !matches!(r.keep_for, Some(Limit::At(_)))
                    && !matches!(r.keep_runs, Some(Limit::At(_)))
            })
    }

    /// The limits of `group`: the defaults, then each matching rule from the least to the
    /// most specific, each replacing the fields it sets.
    pub fn limits_for(&self, group: &str) -> Limits {
        let mut limits = self.defaults;
        for rule in self.rules.iter().filter(|r| r.matches(group)) {
            if let Some(l) = rule.keep_for {
                limits.keep_for = l.value();
            }
            if let Some(l) = rule.keep_runs {
                limits.keep_runs = l.value();
            }
        }
        limits
    }

    /// The shortest age limit of any group (`None` when no group has one): a segment
    /// created more recently than that holds no run past an age limit.
    pub fn shortest_keep_for(&self) -> Option<Duration> {
        let rule_ages = self.rules.iter().filter_map(|r| match r.keep_for {
            Some(Limit::At(d)) => Some(d),
            _ => None,
        });
        self.defaults.keep_for.into_iter().chain(rule_ages).min()
    }

    /// Whether some group may have a count limit (then every footer must be read).
    pub fn counts_runs(&self) -> bool {
        self.defaults.keep_runs.is_some()
            || self
                .rules
                .iter()
                .any(|r| matches!(r.keep_runs, Some(Limit::At(_))))
    }
}

/// First pass over the footers when counts are limited: the newest `keep_runs` finished
/// run ids of each group with a count limit, in bounded heaps (memory O(groups × N), not
/// O(runs)).
#[derive(Debug, Default)]
pub struct NewestRuns {
    heaps: BTreeMap<String, (usize, BinaryHeap<Reverse<String>>)>,
}

impl NewestRuns {
    /// Takes the entries of one segment's footer into account.
    pub fn observe(&mut self, policy: &RetentionPolicy, footer: &SegmentFooter) {
        for entry in footer.runs.iter().filter(|e| e.phase.is_finished()) {
            let (n, heap) = match self.heaps.get_mut(&entry.group) {
                Some(slot) => slot,
                None => {
                    let Some(n) = policy.limits_for(&entry.group).keep_runs else {
                        continue;
                    };
                    self.heaps
                        .entry(entry.group.clone())
                        .or_insert((n, BinaryHeap::new()))
                }
            };
            if heap.len() < *n {
                heap.push(Reverse(entry.id.clone()));
            } else if heap.peek().is_some_and(|Reverse(min)| entry.id > *min) {
                heap.pop();
                heap.push(Reverse(entry.id.clone()));
            }
        }
    }

    /// For each group with more archived runs than it keeps: the oldest id it keeps
    /// (every older run of the group goes).
    pub fn cutoffs(self) -> BTreeMap<String, String> {
        self.heaps
            .into_iter()
            .filter(|(_, (n, heap))| heap.len() >= *n)
            .filter_map(|(group, (_, heap))| heap.peek().map(|Reverse(id)| (group, id.clone())))
            .collect()
    }
}

/// Which runs of one segment are past their limits at `now`, given the count cutoffs of
/// [`NewestRuns::cutoffs`]. Entries that are not finished are never chosen.
pub fn doomed_in_segment<'f>(
    policy: &RetentionPolicy,
    cutoffs: &BTreeMap<String, String>,
    footer: &'f SegmentFooter,
    now: Time,
) -> Vec<&'f FooterEntry> {
    footer
        .runs
        .iter()
        .filter(|e| e.phase.is_finished())
        .filter(|e| {
            let limits = policy.limits_for(&e.group);
            let too_old = limits
                .keep_for
                .is_some_and(|d| is_older(footer.created, d, now));
            let beyond_count = limits.keep_runs.is_some()
                && cutoffs
                    .get(&e.group)
                    .is_some_and(|oldest_kept| e.id < *oldest_kept);
            too_old || beyond_count
        })
        .collect()
}

/// `created` is more than `keep_for` before `now`.
fn is_older(created: Time, keep_for: Duration, now: Time) -> bool {
    match chrono::Duration::from_std(keep_for) {
        Ok(d) => now.signed_duration_since(created) > d,
        Err(_) => false,
    }
}

/// Every run past its limits in `footers`, by run id: both passes over footers held in
/// memory (the scheduler streams them instead).
pub fn doomed_runs(
    policy: &RetentionPolicy,
    footers: &[SegmentFooter],
    now: Time,
) -> BTreeSet<String> {
    let mut newest = NewestRuns::default();
    if policy.counts_runs() {
        for footer in footers {
            newest.observe(policy, footer);
        }
    }
    let cutoffs = newest.cutoffs();
    footers
        .iter()
        .flat_map(|f| doomed_in_segment(policy, &cutoffs, f, now))
        .map(|e| e.id.clone())
        .collect()
}

/// The task ids the remaining runs use, gathered run by run: a restarted run keeps the
/// ids of the tasks it did not re-run (and with them their logs and workspace archives),
/// so a deleted run's task may still belong to an older or a newer run of its group.
#[derive(Debug, Default)]
pub struct TasksInUse {
    used: BTreeSet<String>,
}

impl TasksInUse {
    /// Takes a remaining run into account.
    pub fn observe(&mut self, run: &Run) {
        self.used.extend(run.tasks.keys().cloned());
    }

    /// The tasks of `deleted` runs split into those no remaining run uses (their logs
    /// and archives go) and those one does (kept).
    pub fn split<'a>(
        &self,
        deleted: impl IntoIterator<Item = &'a Run>,
    ) -> (BTreeSet<String>, BTreeSet<String>) {
        deleted
            .into_iter()
            .flat_map(|r| r.tasks.keys().cloned())
            .partition(|t| !self.used.contains(t))
    }
}

/// Whether a retention pass is due in the housekeeping pass at `now`, with passes
/// `period` apart: once per `every`, when `now` is the first pass past a multiple of
/// `every` (stateless, so a new scheduler keeps the rhythm).
pub fn due(now: Time, every: Duration, period: Duration) -> bool {
    let every = every.as_secs().max(1) as i64;
    let period = period.as_secs().max(1) as i64;
    let t = now.timestamp();
    if period >= every {
        return true;
    }
    t.div_euclid(every) != (t - period).div_euclid(every)
}

#[cfg(test)]
mod tests {
    use cairn_client::run::{RunPhase, RunResult, RunTask};

    use super::*;

    const A: &str = "/project/a/branch/main";
    const B: &str = "/project/b/branch/main";

    fn at(days: i64) -> Time {
        chrono::DateTime::from_timestamp(1_700_000_000 + days * 86_400, 0).expect("a time")
    }

    fn id(seq: u64) -> String {
        format!("{seq:016}")
    }

    fn entry(seq: u64, group: &str, phase: RunPhase) -> FooterEntry {
        FooterEntry {
            id: id(seq),
            group: group.to_string(),
            phase,
            result: RunResult::Success,
            offset: 0,
            len: 0,
        }
    }

    /// A segment created on day `created` holding finished runs `(seq, group)`.
    fn footer(created: i64, runs: &[(u64, &str)]) -> SegmentFooter {
        SegmentFooter {
            version: 1,
            segment_id: format!("seg-{created}"),
            created: at(created),
            runs: runs
                .iter()
                .map(|(s, g)| entry(*s, g, RunPhase::Finished))
                .collect(),
        }
    }

    fn policy(keep_for: Option<&str>, keep_runs: Option<usize>, rules: &[&str]) -> RetentionPolicy {
        let defaults = Limits {
            keep_for: keep_for.map(|d| parse_duration(d).expect("duration")),
            keep_runs,
        };
        let rules = rules.iter().map(|r| r.parse().expect("rule")).collect();
        RetentionPolicy::new(defaults, rules).expect("policy")
    }

    fn ids(seqs: &[u64]) -> BTreeSet<String> {
        seqs.iter().map(|s| id(*s)).collect()
    }

    #[test]
    fn the_default_policy_keeps_everything() {
        let p = RetentionPolicy::default();
        assert!(p.keeps_everything());
        let footers = [footer(0, &[(1, A), (2, A)])];
        assert!(doomed_runs(&p, &footers, at(10_000)).is_empty());
        // Rules that only lift limits keep everything too.
        assert!(policy(None, None, &["/project/a=forever,all"]).keeps_everything());
    }

    #[test]
    fn keep_runs_keeps_the_newest_n_of_each_group_across_segments() {
        let p = policy(None, Some(2), &[]);
        let footers = [
            footer(0, &[(1, A), (2, B), (3, A)]),
            footer(1, &[(4, A), (5, B), (6, A)]),
        ];
        // A: 1, 3, 4, 6 → 6 and 4 kept; B: 2, 5 → both kept.
        assert_eq!(doomed_runs(&p, &footers, at(2)), ids(&[1, 3]));
    }

    #[test]
    fn keep_runs_for_deletes_runs_archived_longer_ago_than_the_limit() {
        let p = policy(Some("30d"), None, &[]);
        let footers = [
            footer(0, &[(1, A), (2, B)]),
            footer(20, &[(3, A)]),
            footer(31, &[(4, A)]),
        ];
        // At day 50: day 0 is 50 days old, day 20 is 30 days old (not more), day 31 is 19.
        assert_eq!(doomed_runs(&p, &footers, at(50)), ids(&[1, 2]));
        assert_eq!(doomed_runs(&p, &footers, at(51)), ids(&[1, 2, 3]));
    }

    #[test]
    fn a_run_past_either_limit_goes() {
        let p = policy(Some("30d"), Some(2), &[]);
        let footers = [footer(0, &[(1, A)]), footer(40, &[(2, A), (3, A), (4, A)])];
        // 1 is too old, 2 is beyond the newest two.
        assert_eq!(doomed_runs(&p, &footers, at(45)), ids(&[1, 2]));
    }

    #[test]
    fn the_longest_matching_prefix_wins_field_by_field() {
        let p = policy(
            Some("10d"),
            Some(100),
            &[
                "/project=5",
                "/project/a=forever",
                "/project/a/branch/main=1",
            ],
        );
        // /project/a/branch/main: age lifted by /project/a, count 1 from the most specific.
        assert_eq!(
            p.limits_for(A),
            Limits {
                keep_for: None,
                keep_runs: Some(1)
            }
        );
        // /project/a/branch/dev: age lifted, count 5 from /project.
        assert_eq!(
            p.limits_for("/project/a/branch/dev"),
            Limits {
                keep_for: None,
                keep_runs: Some(5)
            }
        );
        // Prefixes match whole path elements: /project/ab is not under /project/a.
        assert_eq!(
            p.limits_for("/project/ab"),
            Limits {
                keep_for: Some(Duration::from_secs(10 * 86_400)),
                keep_runs: Some(5)
            }
        );
        // Outside every rule: the defaults.
        assert_eq!(p.limits_for("/user/u").keep_runs, Some(100));

        let footers = [footer(0, &[(1, A), (2, A), (3, B), (4, B)])];
        // A keeps 1 run and no age; B (under /project) keeps 5 but is 20 days old.
        assert_eq!(doomed_runs(&p, &footers, at(20)), ids(&[1, 3, 4]));
    }

    #[test]
    fn a_run_that_is_not_finished_is_never_deleted_nor_counted() {
        let p = policy(Some("1d"), Some(1), &[]);
        let mut f = footer(0, &[(1, A), (3, A)]);
        f.runs.insert(1, entry(2, A, RunPhase::Running));
        f.runs.push(entry(4, A, RunPhase::Queued));
        // 3 is the newest finished run (4 is live and does not count), but all are too
        // old: every finished one goes, the live ones stay.
        assert_eq!(doomed_runs(&p, &[f.clone()], at(5)), ids(&[1, 3]));
        let count_only = policy(None, Some(1), &[]);
        assert_eq!(doomed_runs(&count_only, &[f], at(5)), ids(&[1]));
    }

    #[test]
    fn durations_counts_and_rules_parse_or_say_why_in_one_line() {
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_duration("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert_eq!(parse_duration("36h"), Ok(Duration::from_secs(36 * 3600)));
        assert_eq!(parse_duration("45s"), Ok(Duration::from_secs(45)));
        for bad in [
            "",
            "d",
            "90",
            "0d",
            "-1d",
            "1.5d",
            "90 days",
            "99999999999999999w",
        ] {
            let e = parse_duration(bad).expect_err(bad);
            assert!(!e.to_string().contains('\n'), "{e}");
        }
        assert_eq!(parse_count("100"), Ok(100));
        for bad in ["0", "-3", "+3", "ten", ""] {
            assert!(parse_count(bad).is_err(), "{bad}");
        }
        let rule: RetentionRule = "/project/a/=30d,100".parse().expect("rule");
        assert_eq!(
            rule,
            RetentionRule {
                prefix: "/project/a".into(),
                keep_for: Some(Limit::At(Duration::from_secs(30 * 86_400))),
                keep_runs: Some(Limit::At(100)),
            }
        );
        let lifted: RetentionRule = "/=all".parse().expect("rule");
        assert_eq!(lifted.keep_runs, Some(Limit::Unlimited));
        assert_eq!(lifted.keep_for, None);
        for bad in [
            "/project/a",
            "/project/a=",
            "project/a=30d",
            "/project//a=30d",
            "/project/a=30d,40d",
            "/project/a=1,2",
            "/project/a=30x",
            "/project/a=0",
            "/project/a=30d,,1",
        ] {
            let e = bad.parse::<RetentionRule>().expect_err(bad);
            let msg = e.to_string();
            assert!(msg.contains(bad) && !msg.contains('\n'), "{msg}");
        }
        let twice = RetentionPolicy::new(
            Limits::default(),
            vec![
                "/project/a=1".parse().expect("rule"),
                "/project/a/=2".parse().expect("rule"),
            ],
        );
        assert_eq!(
            twice,
            Err(RetentionError::Duplicate {
                prefix: "/project/a".into()
            })
        );
    }

    fn run_with_tasks(seq: u64, tasks: &[&str]) -> Run {
        Run {
            id: id(seq),
            name: "ci".into(),
            counter: seq,
            group: A.into(),
            annotations: Default::default(),
            phase: RunPhase::Finished,
            result: RunResult::Success,
            stop: false,
            cancel: false,
            enqueue_time: None,
            start_time: None,
            end_time: None,
            archived: true,
            tasks: tasks
                .iter()
                .map(|t| {
                    (
                        t.to_string(),
                        RunTask {
                            id: t.to_string(),
                            ..RunTask::default()
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn tasks_a_remaining_run_shares_with_a_deleted_one_are_kept() {
        let original = run_with_tasks(1, &["build", "test"]);
        let other = run_with_tasks(2, &["lint"]);
        // Restarted from failed tasks: kept `build`, re-ran `test` as `test-2`.
        let restarted = run_with_tasks(3, &["build", "test-2"]);
        let mut in_use = TasksInUse::default();
        in_use.observe(&restarted);
        let (gone, kept) = in_use.split([&original, &other]);
        assert_eq!(
            gone,
            BTreeSet::from(["test".to_string(), "lint".to_string()])
        );
        assert_eq!(kept, BTreeSet::from(["build".to_string()]));
        // The other way round: the restart is deleted and the original remains.
        let mut in_use = TasksInUse::default();
        in_use.observe(&original);
        let (gone, kept) = in_use.split([&restarted]);
        assert_eq!(gone, BTreeSet::from(["test-2".to_string()]));
        assert_eq!(kept, BTreeSet::from(["build".to_string()]));
    }

    #[test]
    fn a_pass_is_due_once_per_interval() {
        let every = Duration::from_secs(600);
        let period = Duration::from_secs(60);
        let start = 1_700_000_000 - 1_700_000_000 % 600;
        let due_at: Vec<i64> = (0..30)
            .map(|i| start + 1 + i * 60)
            .filter(|t| {
                due(
                    chrono::DateTime::from_timestamp(*t, 0).expect("time"),
                    every,
                    period,
                )
            })
            .collect();
        assert_eq!(due_at, vec![start + 1, start + 601, start + 1201]);
        // Housekeeping as slow as the interval: every pass.
        assert!(due(at(0), every, every));
    }
}

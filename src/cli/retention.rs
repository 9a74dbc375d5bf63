//! The options of `cairn serve` that say how long things are kept: archived runs (per
//! group, with prefix overrides) and, each with its own TTL, caches, workspace archives
//! and source snapshots. Parsing and validation are
//! [`crate::runservice::retention`]'s; this file only names the flags.

use std::time::Duration;

use clap::Args;

use crate::runservice::retention::{
    Limits, RetentionError, RetentionPolicy, RetentionRule, parse_count, parse_duration,
};
use crate::scheduler::SchedulerConfig;

/// Retention and expiry flags. Durations are a whole number and a unit: s, m, h, d or w
/// (`90d`, `36h`).
#[derive(Args, Debug, Clone)]
pub struct RetentionArgs {
    /// Delete archived runs (with their logs and workspace archives) archived longer ago
    /// than this, e.g. 90d (default: keep forever). Agola's runLogExpireInterval comes
    /// closest: here a run's logs go with the run.
    #[arg(long, env = "CAIRN_KEEP_RUNS_FOR", value_name = "DURATION", value_parser = parse_duration)]
    pub keep_runs_for: Option<Duration>,
    /// Keep only the newest N archived runs of each run group, deleting older ones with
    /// their logs and workspace archives (default: all).
    #[arg(long, env = "CAIRN_KEEP_RUNS", value_name = "N", value_parser = parse_count)]
    pub keep_runs: Option<usize>,
    /// Override the two limits above for the groups under a prefix, e.g.
    /// /project/a=30d,100; one or both of a duration (or `forever`) and a run count (or
    /// `all`); a limit left out is inherited. Repeatable; the longest matching prefix
    /// wins.
    #[arg(long = "retention", env = "CAIRN_RETENTION", value_name = "PREFIX=LIMITS", value_parser = parse_rule)]
    pub rules: Vec<RetentionRule>,
    /// How often the scheduler looks for archived runs past their limits.
    #[arg(long, env = "CAIRN_RETENTION_INTERVAL", value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub retention_interval: Duration,
    /// Delete caches saved longer ago than this (Agola: runCacheExpireInterval; default:
    /// --blob-ttl-secs, 7 days).
    #[arg(long, env = "CAIRN_CACHE_TTL", value_name = "DURATION", value_parser = parse_duration,
        alias = "run-cache-expire-interval")]
    pub cache_ttl: Option<Duration>,
    /// Delete workspace archives saved longer ago than this (Agola:
    /// runWorkspaceExpireInterval; default: --blob-ttl-secs, 7 days).
    #[arg(long, env = "CAIRN_ARCHIVE_TTL", value_name = "DURATION", value_parser = parse_duration,
        alias = "run-workspace-expire-interval")]
    pub archive_ttl: Option<Duration>,
    /// Delete uploaded source snapshots (of `cairn run`) older than this once no run
    /// still to be archived uses them (default: --blob-ttl-secs, 7 days).
    #[arg(long, env = "CAIRN_SOURCE_TTL", value_name = "DURATION", value_parser = parse_duration)]
    pub source_ttl: Option<Duration>,
}

fn parse_rule(input: &str) -> Result<RetentionRule, RetentionError> {
    input.parse()
}

impl RetentionArgs {
    /// `base` with these limits and TTLs; a TTL not given is `blob_ttl`. A prefix given
    /// twice is refused.
    pub fn apply(
        &self,
        base: SchedulerConfig,
        blob_ttl: Duration,
    ) -> Result<SchedulerConfig, RetentionError> {
        let defaults = Limits {
            keep_for: self.keep_runs_for,
            keep_runs: self.keep_runs,
        };
        Ok(SchedulerConfig {
            retention: RetentionPolicy::new(defaults, self.rules.clone())?,
            retention_every: self.retention_interval,
            cache_ttl: self.cache_ttl.unwrap_or(blob_ttl),
            archive_ttl: self.archive_ttl.unwrap_or(blob_ttl),
            source_ttl: self.source_ttl.unwrap_or(blob_ttl),
            ..base
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        retention: RetentionArgs,
    }

    fn parse(args: &[&str]) -> Result<RetentionArgs, String> {
        let argv = std::iter::once("cairn").chain(args.iter().copied());
        Cli::try_parse_from(argv)
            .map(|c| c.retention)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_flags_build_the_policy_and_the_ttls() {
        let args = parse(&[
            "--keep-runs-for",
            "90d",
            "--keep-runs",
            "500",
            "--retention",
            "/project/a=30d,100",
            "--retention",
            "/user=forever",
            "--cache-ttl",
            "2d",
            "--run-workspace-expire-interval",
            "12h",
        ])
        .expect("valid flags");
        let week = Duration::from_secs(7 * 86_400);
        let config = args
            .apply(SchedulerConfig::default(), week)
            .expect("valid policy");
        assert_eq!(config.cache_ttl, Duration::from_secs(2 * 86_400));
        assert_eq!(config.archive_ttl, Duration::from_secs(12 * 3600));
        assert_eq!(config.source_ttl, week);
        assert_eq!(config.retention_every, Duration::from_secs(600));
        let a = config.retention.limits_for("/project/a/branch/main");
        assert_eq!(
            (a.keep_for, a.keep_runs),
            (Some(Duration::from_secs(30 * 86_400)), Some(100))
        );
        let u = config.retention.limits_for("/user/u1/branch/x");
        assert_eq!((u.keep_for, u.keep_runs), (None, Some(500)));
    }

    #[test]
    fn no_flag_keeps_every_run() {
        let args = parse(&[]).expect("no flags");
        let config = args
            .apply(SchedulerConfig::default(), Duration::from_secs(60))
            .expect("valid");
        assert!(config.retention.keeps_everything());
        assert_eq!(config.cache_ttl, Duration::from_secs(60));
    }

    #[test]
    fn bad_values_are_refused_with_a_one_line_reason() {
        for args in [
            &["--keep-runs-for", "90"][..],
            &["--keep-runs", "0"],
            &["--retention", "project/a=30d"],
            &["--retention", "/project/a"],
            &["--cache-ttl", "soon"],
        ] {
            let e = parse(args).expect_err("refused");
            let first = e.lines().next().unwrap_or_default();
            assert!(first.contains(args[1]), "{e}");
        }
        let twice = parse(&["--retention", "/p=1", "--retention", "/p/=2"]).expect("parsed");
        let e = twice
            .apply(SchedulerConfig::default(), Duration::from_secs(1))
            .expect_err("duplicate");
        assert_eq!(e.to_string(), "retention rule for /p is given twice");
    }
}

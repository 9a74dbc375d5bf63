//! The steps of a task, written once over the [`Pod`] interface: clone, run,
//! save/restore workspace, save/restore cache. Each returns the step's exit code (`None`
//! when it was cancelled) and writes what it does to the step's log.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bytes::Bytes;
use cairn_client::executor::ExecutorTaskSpecData;
use cairn_client::runconfig::{
    CloneStep, Env, RestoreCacheStep, RestoreWorkspaceStep, RunStep, SaveCacheStep, SaveContent,
    SaveToWorkspaceStep, SourceRef,
};
use cairn_client::{ClientError, RunClient};
use futures::{StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;

use super::archive::ArchiveWriter;
use super::cache_key::{self, KeyContext};
use super::driver::{ByteStream, DriverError, ExecRequest, LogSink, Pod};

/// Why a step could not run (as opposed to running and failing).
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Driver(#[from] DriverError),
    #[error("server: {0}")]
    Server(#[from] ClientError),
    #[error("{0}")]
    Invalid(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// What every step of one task shares.
pub struct StepCtx<'a> {
    pub pod: &'a dyn Pod,
    pub client: &'a RunClient,
    pub executor_id: &'a str,
    pub task_id: &'a str,
    pub spec: &'a ExecutorTaskSpecData,
    /// The executor's directory for this task (spool files).
    pub task_dir: PathBuf,
    /// Container 0's user, or the task's.
    pub user: String,
    /// The task's working directory, `~` expanded.
    pub working_dir: String,
    pub home: String,
}

impl StepCtx<'_> {
    /// `dir` relative to the working directory (`~` = home); absolute stays.
    pub fn path(&self, dir: &str) -> String {
        resolve(&self.home, &self.working_dir, dir)
    }

    async fn log(&self, out: &mut dyn LogSink, line: String) {
        out.write(Bytes::from(line + "\n")).await;
    }
}

/// Resolves `dir` against `base` with `~` as `home`.
pub fn resolve(home: &str, base: &str, dir: &str) -> String {
    let expanded = expand_tilde(home, dir);
    if expanded.is_empty() || expanded == "." {
        base.to_string()
    } else if expanded.starts_with('/') {
        expanded
    } else {
        format!(
            "{}/{}",
            base.trim_end_matches('/'),
            expanded.trim_start_matches("./")
        )
    }
}

/// `~` and `~/x` become paths under `home`.
pub fn expand_tilde(home: &str, dir: &str) -> String {
    if dir == "~" {
        home.to_string()
    } else if let Some(rest) = dir.strip_prefix("~/") {
        format!("{}/{rest}", home.trim_end_matches('/'))
    } else {
        dir.to_string()
    }
}

/// The shell words of a step: the step's shell, else the task's, else `/bin/sh -e`.
pub fn shell_words(step_shell: &str, task_shell: &str) -> Vec<String> {
    let shell = [step_shell, task_shell]
        .into_iter()
        .find(|s| !s.trim().is_empty())
        .unwrap_or("/bin/sh -e");
    shell.split_whitespace().map(str::to_string).collect()
}

/// The environment of a step: the task's (already merged with the run's), overlaid by
/// the step's own.
pub fn step_env(task: &Env, step: &Env) -> Env {
    let mut env = task.clone();
    env.extend(step.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

pub async fn run(
    ctx: &StepCtx<'_>,
    step: &RunStep,
    out: &mut dyn LogSink,
    cancel: &CancellationToken,
) -> Result<Option<i32>, StepError> {
    let mut cmd = shell_words(&step.shell, &ctx.spec.shell);
    cmd.push("-c".into());
    cmd.push(step.command.clone());
    let working_dir = if step.working_dir.is_empty() {
        ctx.working_dir.clone()
    } else {
        ctx.path(&step.working_dir)
    };
    let req = ExecRequest {
        cmd,
        env: step_env(&ctx.spec.environment, &step.environment),
        working_dir,
        user: ctx.user.clone(),
    };
    Ok(ctx.pod.exec(&req, out, cancel).await?)
}

/// Checks out the run's source into the working directory: a git source with the step's
/// `depth` and `recurse_submodules` (see [`git_clone_script`]); an uploaded snapshot has
/// no history and no submodules, so they do not apply to it (said in the log).
pub async fn clone(
    ctx: &StepCtx<'_>,
    step: &CloneStep,
    out: &mut dyn LogSink,
    cancel: &CancellationToken,
) -> Result<Option<i32>, StepError> {
    match &ctx.spec.source {
        None => {
            ctx.log(out, "no source for this run: nothing to clone".into())
                .await;
            Ok(Some(0))
        }
        Some(SourceRef::Snapshot { object }) => {
            if step.depth.is_some() || step.recurse_submodules {
                ctx.log(
                    out,
                    "clone: depth and recurse_submodules do not apply to an uploaded working \
                     tree (it has no history and its submodules are sent as files)"
                        .into(),
                )
                .await;
            }
            ctx.log(
                out,
                format!(
                    "restoring the uploaded working tree into {}",
                    ctx.working_dir
                ),
            )
            .await;
            let stream = ctx.client.download_source(object).await?;
            let stream: ByteStream = stream
                .map_err(|source| DriverError::Download {
                    what: "the source",
                    source,
                })
                .boxed();
            ctx.pod
                .put_archive(&ctx.working_dir, &ctx.user, stream)
                .await?;
            Ok(Some(0))
        }
        Some(SourceRef::Git {
            url,
            git_ref,
            commit,
        }) => {
            let target = if commit.is_empty() {
                "FETCH_HEAD"
            } else {
                commit.as_str()
            };
            let fetch = if git_ref.is_empty() {
                "HEAD"
            } else {
                git_ref.as_str()
            };
            let script = git_clone_script(url, fetch, target, step);
            let depth = match step.depth {
                Some(n) if n > 0 => format!("the last {n} commits"),
                _ => "the whole history".to_owned(),
            };
            let submodules = if step.recurse_submodules {
                ", with its submodules"
            } else {
                ""
            };
            ctx.log(
                out,
                format!(
                    "git: fetching {fetch} of {url} ({depth}), checking out {target}{submodules}"
                ),
            )
            .await;
            let req = ExecRequest {
                cmd: vec!["/bin/sh".into(), "-e".into(), "-c".into(), script],
                env: ctx.spec.environment.clone(),
                working_dir: ctx.working_dir.clone(),
                user: ctx.user.clone(),
            };
            Ok(ctx.pod.exec(&req, out, cancel).await?)
        }
    }
}

/// The shell script that checks out `target` (a commit, or `FETCH_HEAD`) of `git_ref` of
/// `url` into the current directory, as Agola's clone step: `depth` N fetches the last N
/// commits (`git clone --depth N`; none, or 0, the whole history) and `recurse_submodules`
/// then checks out the submodules of that commit, recursively (`--recurse-submodules`).
pub fn git_clone_script(url: &str, git_ref: &str, target: &str, step: &CloneStep) -> String {
    let depth = match step.depth {
        Some(n) if n > 0 => format!(" --depth {n}"),
        _ => String::new(),
    };
    let mut script = format!(
        "git init -q . && git fetch -q{depth} {} {} && git checkout -q {}",
        shell_quote(url),
        shell_quote(git_ref),
        shell_quote(target)
    );
    if step.recurse_submodules {
        script.push_str(" && git submodule -q update --init --recursive");
    }
    script
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Builds one tar of `contents` (each a directory of the pod and globs under it) in a
/// spool file of the task directory. Returns its path and how many entries it holds.
async fn build_archive(
    ctx: &StepCtx<'_>,
    contents: &[SaveContent],
) -> Result<(PathBuf, usize), StepError> {
    let spool = ctx
        .task_dir
        .join(format!("archive-{}.tar", uuid::Uuid::new_v4()));
    let file = std::fs::File::create(&spool)?;
    let mut writer = ArchiveWriter::new(file);
    let mut entries = 0;
    for c in contents {
        let source = ctx.path(&c.source_dir);
        let stream = match ctx.pod.get_archive(&source).await {
            Ok(s) => s,
            Err(DriverError::NotFound(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        let reader = tokio_util::io::StreamReader::new(
            stream.map_err(|e| std::io::Error::other(e.to_string())),
        );
        let paths = c.paths.clone();
        let dest = c.dest_dir.clone();
        let (w, n) = tokio::task::spawn_blocking(move || {
            let sync = tokio_util::io::SyncIoBridge::new(reader);
            let n = writer.add_selected(sync, &paths, &dest);
            (writer, n)
        })
        .await
        .map_err(|e| StepError::Invalid(format!("archiving failed: {e}")))?;
        writer = w;
        entries += n.map_err(|e| StepError::Invalid(e.to_string()))?;
    }
    writer
        .finish()
        .map_err(|e| StepError::Invalid(e.to_string()))?;
    Ok((spool, entries))
}

async fn file_stream(path: &PathBuf) -> Result<cairn_client::http::Payload, StepError> {
    let file = tokio::fs::File::open(path).await?;
    let stream = tokio_util::io::ReaderStream::new(file);
    Ok(cairn_client::http::Payload::stream(stream))
}

/// How long a workspace archive or cache upload is sent again after failures that may be
/// passing (the node receiving it killed mid-upload, no leader for a moment): the spooled
/// file is still there, and both uploads may be repeated (an archive overwrites its own
/// object; a cache that did land reads as saved by another task).
const UPLOAD_GIVE_UP_AFTER: std::time::Duration = std::time::Duration::from_secs(120);

/// Sends the file at `path` with `send`, from its start again after each transient
/// failure, until [`UPLOAD_GIVE_UP_AFTER`]. A streamed body is sent once per attempt, so
/// the client cannot retry it itself.
async fn upload_file<T, F, Fut>(path: &PathBuf, what: &str, mut send: F) -> Result<T, StepError>
where
    F: FnMut(cairn_client::http::Payload) -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let started = std::time::Instant::now();
    let mut pause = std::time::Duration::from_millis(200);
    loop {
        match send(file_stream(path).await?).await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() && started.elapsed() < UPLOAD_GIVE_UP_AFTER => {
                tracing::info!(error = %e, what, "upload failed; sending it again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(2));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

pub async fn save_to_workspace(
    ctx: &StepCtx<'_>,
    index: usize,
    step: &SaveToWorkspaceStep,
    out: &mut dyn LogSink,
) -> Result<Option<i32>, StepError> {
    let (spool, entries) = build_archive(ctx, &step.contents).await?;
    let size = tokio::fs::metadata(&spool).await?.len();
    ctx.log(
        out,
        format!("saving {entries} entries ({size} bytes) to the workspace"),
    )
    .await;
    let r = upload_file(&spool, "workspace archive", |payload| {
        ctx.client
            .upload_archive(ctx.executor_id, ctx.task_id, index, payload)
    })
    .await;
    let _ = tokio::fs::remove_file(&spool).await;
    r?;
    Ok(Some(0))
}

pub async fn restore_workspace(
    ctx: &StepCtx<'_>,
    step: &RestoreWorkspaceStep,
    out: &mut dyn LogSink,
) -> Result<Option<i32>, StepError> {
    let dest = ctx.path(&step.dest_dir);
    if ctx.spec.workspace_operations.is_empty() {
        ctx.log(out, "no parent saved anything to the workspace".into())
            .await;
    }
    for op in &ctx.spec.workspace_operations {
        ctx.log(
            out,
            format!(
                "restoring the workspace of task {} step {} into {dest}",
                op.task_id, op.step
            ),
        )
        .await;
        let stream = ctx.client.download_archive(&op.task_id, op.step).await?;
        let stream: ByteStream = stream
            .map_err(|source| DriverError::Download {
                what: "the archive",
                source,
            })
            .boxed();
        ctx.pod.put_archive(&dest, &ctx.user, stream).await?;
    }
    Ok(Some(0))
}

/// A rendered cache key: as the user wrote it, and in its cache group's namespace.
struct CacheKey {
    rendered: String,
    full: String,
}

/// Renders a key template, reading the files it hashes from the pod.
async fn render_key(ctx: &StepCtx<'_>, template: &str) -> Result<CacheKey, StepError> {
    let parsed = cache_key::parse(template)
        .map_err(|e| StepError::Invalid(format!("cache key {template:?}: {e}")))?;
    let mut file_sums = BTreeMap::new();
    for f in parsed.files() {
        let d = sum_file(ctx, &f).await?;
        file_sums.insert(f.clone(), d);
    }
    let arch = ctx
        .spec
        .arch
        .or_else(cairn_client::runconfig::Arch::host)
        .map_or("", |a| a.as_str());
    let kctx = KeyContext {
        env: &ctx.spec.environment,
        os: std::env::consts::OS,
        arch,
        now: chrono::Utc::now(),
        file_sums,
        prefix: &ctx.spec.cache_prefix,
    };
    let rendered = parsed
        .render(&kctx)
        .map_err(|e| StepError::Invalid(format!("cache key {template:?}: {e}")))?;
    Ok(CacheKey {
        full: cache_key::cache_key(&ctx.spec.cache_prefix, &rendered),
        rendered,
    })
}

/// The checksums of the pod's file `file` (relative to the working directory), read as
/// it streams out of the pod: only the first entry of the pod's archive is read, through
/// [`cache_key::digest`]'s limit, and the rest is never asked for (security review M7:
/// the whole archive used to be collected in memory first). A directory is refused.
async fn sum_file(ctx: &StepCtx<'_>, file: &str) -> Result<cache_key::FileDigest, StepError> {
    let path = ctx.path(file);
    let stream = ctx.pod.get_archive(&path).await?;
    let reader =
        tokio_util::io::StreamReader::new(stream.map_err(|e| std::io::Error::other(e.to_string())));
    let bridge = tokio_util::io::SyncIoBridge::new(reader);
    let file = file.to_owned();
    tokio::task::spawn_blocking(move || first_file_digest(bridge, &file, &path))
        .await
        .map_err(|e| StepError::Invalid(format!("summing a file failed: {e}")))?
}

/// The checksums of the first entry of the tar `read` (the pod's archive of `path`),
/// which must be a regular file of at most [`cache_key::MAX_SUMMED_FILE`] bytes; nothing
/// after it is read.
pub(crate) fn first_file_digest(
    read: impl std::io::Read,
    file: &str,
    path: &str,
) -> Result<cache_key::FileDigest, StepError> {
    let mut archive = tar::Archive::new(read);
    for entry in archive.entries()? {
        let entry = entry?;
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            continue;
        }
        if kind.is_dir() {
            return Err(StepError::Invalid(format!(
                "{path} is a directory: a cache key sums files"
            )));
        }
        if !kind.is_file() {
            break;
        }
        if entry.size() > cache_key::MAX_SUMMED_FILE {
            return Err(StepError::Invalid(
                cache_key::KeyError::FileTooBig {
                    file: file.to_owned(),
                }
                .to_string(),
            ));
        }
        return cache_key::digest(file, entry).map_err(|e| StepError::Invalid(e.to_string()));
    }
    Err(StepError::Invalid(format!("{path} is not a file")))
}
pub async fn save_cache(
    ctx: &StepCtx<'_>,
    step: &SaveCacheStep,
    out: &mut dyn LogSink,
) -> Result<Option<i32>, StepError> {
    let CacheKey {
        rendered: key,
        full,
    } = render_key(ctx, &step.key).await?;
    if ctx.client.cache_exists(&full, false).await? {
        ctx.log(
            out,
            format!("cache {key} already exists: not saving it again"),
        )
        .await;
        return Ok(Some(0));
    }
    let (spool, entries) = build_archive(ctx, &step.contents).await?;
    let size = tokio::fs::metadata(&spool).await?.len();
    let created = upload_file(&spool, "cache", |payload| {
        ctx.client.upload_cache(&full, payload)
    })
    .await;
    let _ = tokio::fs::remove_file(&spool).await;
    if created? {
        ctx.log(
            out,
            format!("saved cache {key}: {entries} entries, {size} bytes"),
        )
        .await;
    } else {
        ctx.log(
            out,
            format!("cache {key} was saved by another task meanwhile: kept theirs"),
        )
        .await;
    }
    Ok(Some(0))
}

pub async fn restore_cache(
    ctx: &StepCtx<'_>,
    step: &RestoreCacheStep,
    out: &mut dyn LogSink,
) -> Result<Option<i32>, StepError> {
    let dest = ctx.path(&step.dest_dir);
    for template in &step.keys {
        let CacheKey {
            rendered: key,
            full,
        } = render_key(ctx, template).await?;
        if let Some((found, stream)) = ctx.client.download_cache_found(&full, true).await? {
            // The key in the cache group's namespace, as the user wrote it.
            let matched = found.split_once('/').map_or(found.as_str(), |(_, k)| k);
            ctx.log(
                out,
                format!("restoring cache {matched} (matching key {key}) into {dest}"),
            )
            .await;
            let stream: ByteStream = stream
                .map_err(|source| DriverError::Download {
                    what: "the cache",
                    source,
                })
                .boxed();
            ctx.pod.put_archive(&dest, &ctx.user, stream).await?;
            return Ok(Some(0));
        }
        ctx.log(out, format!("no cache matches {key}")).await;
    }
    ctx.log(out, "no cache restored".into()).await;
    Ok(Some(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_against_the_working_dir_with_tilde_as_home() {
        assert_eq!(resolve("/h", "/h/project", ""), "/h/project");
        assert_eq!(resolve("/h", "/h/project", "."), "/h/project");
        assert_eq!(resolve("/h", "/h/project", "bin"), "/h/project/bin");
        assert_eq!(resolve("/h", "/h/project", "./bin"), "/h/project/bin");
        assert_eq!(resolve("/h", "/h/project", "/abs"), "/abs");
        assert_eq!(resolve("/h", "/h/project", "~/x"), "/h/x");
        assert_eq!(expand_tilde("/h", "~"), "/h");
    }

    #[tokio::test]
    async fn an_upload_is_sent_again_after_transient_failures_and_not_after_others() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let spool = dir.path().join("spool.tar");
        std::fs::write(&spool, b"archive").expect("the spool");
        // A node killed mid-upload, then no leader for a moment, then it lands.
        let mut calls = 0;
        let r = upload_file(&spool, "test", |_payload| {
            calls += 1;
            let n = calls;
            async move {
                match n {
                    1 => Err(ClientError::Transport("connection reset".into())),
                    2 => Err(ClientError::Api(cairn_client::ApiError {
                        code: cairn_client::ErrorCode::Unavailable,
                        message: "no leader".into(),
                        details: None,
                    })),
                    _ => Ok(n),
                }
            }
        })
        .await;
        assert_eq!(r.expect("sent at the third attempt"), 3);
        // A refusal is final: sent once.
        let mut calls = 0;
        let r: Result<(), _> = upload_file(&spool, "test", |_payload| {
            calls += 1;
            async {
                Err(ClientError::Api(cairn_client::ApiError {
                    code: cairn_client::ErrorCode::BadRequest,
                    message: "no".into(),
                    details: None,
                }))
            }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 1);
        // A spool that is gone is an error, not a retry.
        std::fs::remove_file(&spool).expect("removed");
        let r: Result<(), _> = upload_file(&spool, "test", |_payload| async { Ok(()) }).await;
        assert!(r.is_err());
    }

    #[test]
    fn shells_fall_back_from_step_to_task_to_sh() {
        assert_eq!(shell_words("", ""), vec!["/bin/sh", "-e"]);
        assert_eq!(
            shell_words("", "/bin/bash -eo pipefail"),
            vec!["/bin/bash", "-eo", "pipefail"]
        );
        assert_eq!(shell_words("zsh", "/bin/bash"), vec!["zsh"]);
    }

    #[test]
    fn step_environment_wins_over_the_task() {
        let task: Env = [
            ("A".to_string(), "1".to_string()),
            ("B".to_string(), "1".to_string()),
        ]
        .into();
        let step: Env = [("B".to_string(), "2".to_string())].into();
        let env = step_env(&task, &step);
        assert_eq!(env["A"], "1");
        assert_eq!(env["B"], "2");
    }

    fn clone_step(depth: Option<u32>, recurse_submodules: bool) -> CloneStep {
        CloneStep {
            depth,
            recurse_submodules,
            ..CloneStep::default()
        }
    }

    #[test]
    fn a_clone_fetches_the_whole_history_unless_given_a_depth() {
        let full = git_clone_script(
            "u",
            "refs/heads/main",
            "FETCH_HEAD",
            &clone_step(None, false),
        );
        assert_eq!(
            full,
            "git init -q . && git fetch -q 'u' 'refs/heads/main' && git checkout -q 'FETCH_HEAD'"
        );
        let zero = git_clone_script("u", "r", "c", &clone_step(Some(0), false));
        assert!(!zero.contains("--depth"), "{zero}");
        let shallow = git_clone_script("u", "r", "c", &clone_step(Some(3), false));
        assert!(
            shallow.contains("git fetch -q --depth 3 'u' 'r'"),
            "{shallow}"
        );
        assert!(!shallow.contains("submodule"), "{shallow}");
    }

    #[test]
    fn recurse_submodules_checks_them_out_after_the_commit() {
        let s = git_clone_script("u", "r", "c", &clone_step(Some(1), true));
        assert!(
            s.ends_with("git checkout -q 'c' && git submodule -q update --init --recursive"),
            "{s}"
        );
    }

    fn git(dir: &std::path::Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .args(["-c", "protocol.file.allow=always"])
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(dir)
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The script against real repositories: a shallow fetch has `depth` commits and the
    /// submodule's file is there only with `recurse_submodules`.
    #[test]
    fn the_clone_script_honours_depth_and_submodules_with_real_git() {
        if std::process::Command::new("git")
            .arg("--version")
            .output()
            .is_err()
        {
            println!("skipped: no git on this machine");
            return;
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let sub = tmp.path().join("sub");
        let origin = tmp.path().join("origin");
        for dir in [&sub, &origin] {
            std::fs::create_dir_all(dir).expect("dir");
            git(dir, &["init", "-q", "-b", "main"]);
        }
        std::fs::write(sub.join("lib.txt"), "from the submodule\n").expect("write");
        git(&sub, &["add", "."]);
        git(&sub, &["commit", "-q", "-m", "sub"]);
        for i in 0..3 {
            std::fs::write(origin.join("n.txt"), format!("{i}\n")).expect("write");
            git(&origin, &["add", "."]);
            git(&origin, &["commit", "-q", "-m", &format!("c{i}")]);
        }
        let sub_url = format!("file://{}", sub.display());
        git(&origin, &["submodule", "-q", "add", &sub_url, "vendor/sub"]);
        git(&origin, &["commit", "-q", "-m", "with submodule"]);
        let url = format!("file://{}", origin.display());

        let checkout = |name: &str, step: CloneStep| {
            let dir = tmp.path().join(name);
            std::fs::create_dir_all(&dir).expect("dir");
            let script = git_clone_script(&url, "refs/heads/main", "FETCH_HEAD", &step);
            let out = std::process::Command::new("/bin/sh")
                .args(["-e", "-c", &script])
                .current_dir(&dir)
                .env("GIT_CONFIG_COUNT", "1")
                .env("GIT_CONFIG_KEY_0", "protocol.file.allow")
                .env("GIT_CONFIG_VALUE_0", "always")
                .output()
                .expect("sh runs");
            assert!(out.status.success(), "{script}: {out:?}");
            dir
        };
        let shallow = checkout("shallow", clone_step(Some(2), true));
        assert_eq!(git(&shallow, &["rev-list", "--count", "HEAD"]), "2");
        assert_eq!(
            std::fs::read_to_string(shallow.join("vendor/sub/lib.txt")).expect("submodule"),
            "from the submodule\n"
        );
        let full = checkout("full", clone_step(None, false));
        assert_eq!(git(&full, &["rev-list", "--count", "HEAD"]), "4");
        assert!(!full.join("vendor/sub/lib.txt").exists());
    }

    /// Counts the bytes read through it.
    struct Counting<R>(R, std::sync::Arc<std::sync::atomic::AtomicU64>);

    impl<R: std::io::Read> std::io::Read for Counting<R> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.read(buf)?;
            self.1
                .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            Ok(n)
        }
    }

    fn tar_header(kind: tar::EntryType, name: &str, size: u64) -> Vec<u8> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_path(name).expect("name");
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        h.as_bytes().to_vec()
    }

    /// M7: a 100 MB file in a cache key is refused after reading its header, never
    /// buffered (the pod's archive used to be collected whole first).
    #[test]
    fn summing_a_huge_file_reads_only_its_header() {
        use std::io::Read;
        let size = 100 * 1024 * 1024;
        let read = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let archive = std::io::Cursor::new(tar_header(tar::EntryType::Regular, "big", size))
            .chain(std::io::repeat(0).take(size));
        let e = first_file_digest(Counting(archive, read.clone()), "big", "/w/big")
            .expect_err("too big");
        assert!(e.to_string().contains("too big"), "{e}");
        assert!(
            read.load(std::sync::atomic::Ordering::Relaxed) < 64 * 1024,
            "read {} bytes",
            read.load(std::sync::atomic::Ordering::Relaxed)
        );
    }

    #[test]
    fn summing_a_directory_is_refused_and_a_small_file_is_summed() {
        use std::io::Read;
        let dir = std::io::Cursor::new(tar_header(tar::EntryType::Directory, "d/", 0))
            .chain(std::io::repeat(0).take(1024));
        let e = first_file_digest(dir, "d", "/w/d").expect_err("a directory");
        assert!(e.to_string().contains("is a directory"), "{e}");
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        b.append_data(&mut h, "f", &b"abc"[..]).expect("append");
        let tar = b.into_inner().expect("finish");
        let d = first_file_digest(&tar[..], "f", "/w/f").expect("a file");
        assert_eq!(d, cache_key::digest("f", &b"abc"[..]).expect("digest"));
    }

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(shell_quote("a'b"), "'a'\\''b'");
    }
}

//! `cairn run [DIR]`: a direct run of the pipeline in DIR. It validates the config,
//! snapshots the working tree, uploads it, creates the run in the user's group with the
//! repository's cache group, and streams every task's log to the terminal as it is
//! produced, with a live status line and a final summary. Without `--server` it starts
//! an embedded single node (store, scheduler, local executor) over a persistent data dir.
//!
//! Exit codes: 0 success, 1 failed or stopped, 2 setup error (no config, a config error —
//! recorded on the server as a run in phase setuperror —, a server that cannot be
//! reached), 130 interrupted (the run is stopped first).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::bail;
use cairn_client::RunClient;
use cairn_client::api::{ConfigFile, CreateRunRequest, RefSpec, RunResponse};
use cairn_client::http::Payload;
use cairn_client::run::RunPhase;
use cairn_client::runconfig::SourceRef;
use clap::Args;

use super::embedded::{Embedded, EmbeddedExecutor};
use super::snapshot::{TreeCommit, WorkTree};
use super::terminal::Terminal;
use crate::configfile;
use crate::runservice::reference;

mod approval;
mod watch;

use super::user::user_name;

use watch::Interrupt;
pub(crate) use watch::follow;

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The repository (or any directory) whose pipeline to run.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Run on this server or cluster (comma separated URLs) instead of an embedded node.
    #[arg(long, env = "CAIRN_SERVER", value_delimiter = ',')]
    pub server: Vec<String>,
    /// The server's API token.
    #[arg(long, env = "CAIRN_TOKEN")]
    pub token: Option<String>,
    #[command(flatten)]
    pub tls: crate::cli::TlsClientArgs,
    /// Also send files git ignores.
    #[arg(long)]
    pub ignored: bool,
    /// A variable for `from_variable` (NAME=VALUE, repeatable; wins over --var-file).
    #[arg(long = "var")]
    pub vars: Vec<String>,
    /// A YAML map of variables (repeatable).
    #[arg(long = "var-file")]
    pub var_files: Vec<PathBuf>,
    /// The branch the run is for (default: the current git branch, else main).
    #[arg(long, conflicts_with_all = ["tag", "git_ref"])]
    pub branch: Option<String>,
    /// The tag the run is for.
    #[arg(long, conflicts_with = "git_ref")]
    pub tag: Option<String>,
    /// The git ref the run is for: refs/heads/NAME is a branch run, refs/tags/NAME a tag
    /// run, a pull-request ref (see --pull-request-ref-regexes) a pull-request run.
    #[arg(long = "ref")]
    pub git_ref: Option<String>,
    /// A regular expression of pull-request refs, its first group the pull request id
    /// (repeatable; default Agola's refs/pull/(\d+)/head and
    /// refs/merge-requests/(\d+)/head).
    #[arg(long = "pull-request-ref-regexes")]
    pub pull_request_ref_regexes: Vec<String>,
    /// Only this task and its ancestors (by name, repeatable).
    #[arg(long = "task")]
    pub tasks: Vec<String>,
    /// Data directory of the embedded node (default: the user's data dir).
    #[arg(long, env = "CAIRN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Driver of the embedded executor: local or docker.
    #[arg(long, default_value = "local")]
    pub driver: crate::service::DriverKind,
    /// Let the embedded executor run tasks with privileged containers.
    #[arg(long)]
    pub allow_privileged: bool,
    /// Approve every task that waits for approval (otherwise: a prompt on a terminal;
    /// without one, `cairn run` waits for `cairn runs approve` from elsewhere).
    #[arg(long)]
    pub approve: bool,
    /// Print the URL of the web page that shows the run (the embedded node's page, which
    /// serves while the run goes on; or the first --server's).
    #[arg(long)]
    pub ui: bool,
}

/// Where `cairn run` keeps its embedded node: `$XDG_DATA_HOME/cairn` or
/// `~/.local/share/cairn`.
pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("cairn");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/cairn"),
        None => PathBuf::from(".cairn-data"),
    }
}

/// A failure before the run exists: exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(pub String);

fn setup<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::Error::new(SetupError(e.to_string()))
}

/// `NAME=VALUE` pairs from `--var-file`s then `--var`s.
fn variables(args: &RunArgs) -> anyhow::Result<BTreeMap<String, String>> {
    let mut vars = BTreeMap::new();
    for f in &args.var_files {
        let text =
            std::fs::read_to_string(f).map_err(|e| setup(format!("{}: {e}", f.display())))?;
        use saphyr::LoadableYamlNode;
        let doc = saphyr::Yaml::load_from_str(&text)
            .map_err(|e| setup(format!("{}: {e}", f.display())))?;
        let map = doc
            .first()
            .and_then(|d| d.as_mapping())
            .ok_or_else(|| setup(format!("{}: expected a map of NAME: value", f.display())))?;
        for (k, v) in map {
            let (Some(k), Some(v)) = (scalar(k), scalar(v)) else {
                return Err(setup(format!(
                    "{}: variables must be NAME: value scalars",
                    f.display()
                )));
            };
            vars.insert(k, v);
        }
    }
    for v in &args.vars {
        let (k, val) = v
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| setup(format!("--var {v:?} is not NAME=VALUE")))?;
        vars.insert(k.to_string(), val.to_string());
    }
    Ok(vars)
}

fn scalar(y: &saphyr::Yaml) -> Option<String> {
    use saphyr::{Scalar, Yaml};
    match y {
        Yaml::Value(Scalar::String(s)) => Some(s.to_string()),
        Yaml::Value(Scalar::Integer(i)) => Some(i.to_string()),
        Yaml::Value(Scalar::FloatingPoint(f)) => Some(f.to_string()),
        Yaml::Value(Scalar::Boolean(b)) => Some(b.to_string()),
        Yaml::Representation(s, _, _) => Some(s.to_string()),
        _ => None,
    }
}

/// Runs the pipeline and returns the process exit code.
pub async fn run(args: RunArgs) -> anyhow::Result<u8> {
    let mut term = Terminal::new();
    let Some(pipeline) = Pipeline::load(&args, &mut term).await? else {
        return Ok(0);
    };
    // The server: a remote one, or the embedded node.
    let (client, embedded) = connect(&args).await?;
    let page = args
        .ui
        .then(|| page_url(&args, embedded.as_ref(), &mut term));
    let result = run_on(&client, &mut term, &args, &pipeline, page.as_deref()).await;
    if let Some(node) = embedded {
        node.stop().await;
    }
    result
}

/// The working tree, its pipeline and what the run is for, read before any server is
/// involved.
struct Pipeline {
    tree: WorkTree,
    files: BTreeSet<PathBuf>,
    commit: TreeCommit,
    /// The config file, relative to the tree's root.
    rel: String,
    content: String,
    /// Whether the config parses (and evaluates); one that does not is still sent, without
    /// the tree, and recorded by the server as a setuperror run.
    config_ok: bool,
    variables: BTreeMap<String, String>,
    user: String,
    repo: String,
    spec: RefSpec,
    pr_patterns: Vec<String>,
    group: String,
}

impl Pipeline {
    /// Reads the tree and its config; `None` when no run of the config matches the
    /// reference (each exclusion noted: nothing to do is not an error).
    async fn load(args: &RunArgs, term: &mut Terminal) -> anyhow::Result<Option<Pipeline>> {
        let tree = WorkTree::open(&args.dir).map_err(setup)?;
        let config_path = configfile::find_config(&tree.root).ok_or_else(|| {
            setup(format!(
                "no pipeline in {}: add {}",
                tree.root.display(),
                configfile::config_files_list()
            ))
        })?;
        let rel = config_path
            .strip_prefix(&tree.root)
            .unwrap_or(&config_path)
            .display()
            .to_string();
        let content =
            std::fs::read_to_string(&config_path).map_err(|e| setup(format!("{rel}: {e}")))?;
        let variables = variables(args)?;
        let user = user_name();
        let repo = tree.repo_uuid().map_err(setup)?;
        let spec = RefSpec {
            branch: match (&args.branch, &args.tag, &args.git_ref) {
                (Some(b), _, _) => Some(b.clone()),
                (None, None, None) => Some(tree.branch().unwrap_or_else(|| "main".into())),
                _ => None,
            },
            tag: args.tag.clone(),
            git_ref: args.git_ref.clone(),
        };
        // Classified here as the server will (same patterns, sent along): the run's group.
        let pr_patterns: Vec<String> = if args.pull_request_ref_regexes.is_empty() {
            reference::DEFAULT_PULL_REQUEST_REF_REGEXES
                .iter()
                .map(|p| p.to_string())
                .collect()
        } else {
            args.pull_request_ref_regexes.clone()
        };
        let prs = reference::PullRequestRefs::new(&pr_patterns).map_err(setup)?;
        let classified = reference::classify(&spec, &prs).map_err(setup)?;
        let for_when = classified.ref_spec();
        let files = tree.files(args.ignored).map_err(setup)?;
        let commit = tree.commit(&files, args.ignored).map_err(setup)?;
        // A config that does not parse (or, for Jsonnet and Starlark, evaluate for this
        // reference and commit, as the server will again) is still sent, without the
        // working tree: the server records it as a setuperror run (as Agola does), and its
        // errors are printed then.
        let ctx = configfile::ConfigContext {
            ref_type: classified.ref_type.as_str().to_string(),
            git_ref: classified.git_ref.clone(),
            branch: classified.branch.clone(),
            tag: classified.tag.clone(),
            pull_request_id: classified.pull_request_id.clone(),
            commit_sha: commit.sha.clone(),
        };
        let (file, text) = (rel.clone(), content.clone());
        let loaded = tokio::task::spawn_blocking(move || configfile::load(&file, &text, &ctx))
            .await
            .map_err(setup)?;
        let parsed = match loaded {
            Ok(parsed) => {
                for warning in &parsed.warnings {
                    term.note(&format!("warning: {warning}"));
                }
                Some(parsed.config)
            }
            Err(_) => None,
        };
        if let Some(parsed) = &parsed
            && configfile::matching_runs(parsed, &for_when).is_empty()
        {
            term.note(&format!(
                "cairn: no run of {rel} matches {} {}:",
                classified.ref_type.as_str(),
                classified.name()
            ));
            for exclusion in configfile::excluded_runs(parsed, &for_when) {
                term.note(&format!("  {exclusion}"));
            }
            return Ok(None);
        }
        let group = classified.run_group(&format!("/user/{user}"));
        Ok(Some(Pipeline {
            tree,
            files,
            commit,
            rel,
            content,
            config_ok: parsed.is_some(),
            variables,
            user,
            repo,
            spec,
            pr_patterns,
            group,
        }))
    }

    /// The creation request of the pipeline's runs, with the uploaded tree's `source`.
    fn request(&self, args: &RunArgs, source: Option<SourceRef>) -> CreateRunRequest {
        CreateRunRequest {
            group: self.group.clone(),
            config: ConfigFile {
                path: self.rel.clone(),
                content: self.content.clone(),
            },
            reference: self.spec.clone(),
            source,
            variables: self.variables.clone(),
            environment: Default::default(),
            cache_group: Some(format!("{}-{}", self.user, self.repo)),
            // The server adds Agola's (run_type, ref_type, ref, branch/tag/pull_request_id,
            // commit_sha, message, run_creation_trigger…).
            annotations: [(
                reference::COMMIT_SHA_SOURCE_ANNOTATION.to_string(),
                if self.commit.from_head {
                    "head"
                } else {
                    "snapshot"
                }
                .to_string(),
            )]
            .into(),
            tasks: args.tasks.clone(),
            run_name: None,
            commit_sha: Some(self.commit.sha.clone()),
            message: Some(self.commit.message.clone()),
            pull_request_ref_regexes: self.pr_patterns.clone(),
        }
    }

    /// Snapshots the working tree and uploads it (not when the config is broken).
    async fn send_tree(
        &self,
        client: &RunClient,
        term: &mut Terminal,
    ) -> anyhow::Result<Option<SourceRef>> {
        if !self.config_ok {
            return Ok(None);
        }
        let spool = tempfile::NamedTempFile::new().map_err(setup)?;
        let count = self
            .tree
            .pack(
                &self.files,
                std::io::BufWriter::new(spool.reopen().map_err(setup)?),
            )
            .map_err(setup)?;
        let file = tokio::fs::File::open(spool.path()).await.map_err(setup)?;
        let source = client
            .upload_source(Payload::stream(tokio_util::io::ReaderStream::new(file)))
            .await
            .map_err(|e| setup(format!("uploading the working tree: {e}")))?;
        term.note(&format!(
            "cairn: {count} files of {} sent; running {}",
            self.tree.root.display(),
            self.rel
        ));
        Ok(Some(source))
    }
}

/// A client of `--server`, or of an embedded node started here (returned to be stopped).
async fn connect(args: &RunArgs) -> anyhow::Result<(RunClient, Option<Embedded>)> {
    if !args.server.is_empty() {
        let client = RunClient::with_tls(&args.server, args.token.clone(), &args.tls.client_tls())
            .map_err(setup)?;
        return Ok((client, None));
    }
    let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    let node = Embedded::start(
        &data_dir,
        Some(EmbeddedExecutor {
            driver: args.driver,
            allow_privileged: args.allow_privileged,
        }),
    )
    .await
    .map_err(setup)?;
    let client = node.client().map_err(setup)?;
    Ok((client, Some(node)))
}

/// The web page's URL (`--ui`): the embedded node's, or the first server's; noted on the
/// terminal with where its token is. The token itself is never put in a URL.
fn page_url(args: &RunArgs, embedded: Option<&Embedded>, term: &mut Terminal) -> String {
    let (base, sign_in) = match embedded {
        Some(node) => {
            let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
            let file = crate::service::token_file(&data_dir);
            (
                node.url().to_string(),
                format!("sign in with the token in {}", file.display()),
            )
        }
        None => (
            args.server.first().cloned().unwrap_or_default(),
            "sign in with your API token".to_string(),
        ),
    };
    let base = base.trim_end_matches('/').to_string();
    term.note(&format!("cairn: web page: {base}/ ({sign_in})"));
    base
}

/// Sends the tree, creates the runs and follows each to its end; the worst exit code.
/// With `page` (the web page's base URL), each run's page is noted.
async fn run_on(
    client: &RunClient,
    term: &mut Terminal,
    args: &RunArgs,
    pipeline: &Pipeline,
    page: Option<&str>,
) -> anyhow::Result<u8> {
    let source = pipeline.send_tree(client, term).await?;
    let req = pipeline.request(args, source);
    // Ctrl-C is caught from here on, before the run exists: one pressed before the
    // watch starts still stops the run instead of killing `cairn run` and leaving
    // the run behind, unwatched, to block its group.
    let mut interrupt = Interrupt::catch();
    let created = client.create_run(&req).await.map_err(|e| match e.code() {
        Some(cairn_client::ErrorCode::BadRequest) => setup(e_message(&e)),
        _ => setup(format!("creating the run: {e}")),
    })?;
    let setup_errors = recorded_setup_errors(term, &created.runs);
    if !setup_errors.is_empty() {
        return Err(setup(setup_errors.join("\n")));
    }
    if let Some(base) = page {
        for r in &created.runs {
            term.note(&format!(
                "cairn: run {} on the web page: {base}/#/runs/{}",
                r.run.id, r.run.id
            ));
        }
    }
    let mut worst = 0u8;
    for r in created.runs {
        let code = watch::watch_run(client, term, r, args.approve, &mut interrupt).await?;
        worst = worst.max(code);
    }
    Ok(worst)
}

/// The setup errors of the setuperror runs among `runs`, each run noted as recorded.
fn recorded_setup_errors(term: &mut Terminal, runs: &[RunResponse]) -> Vec<String> {
    let mut errors = Vec::new();
    for r in runs.iter().filter(|r| r.run.phase == RunPhase::SetupError) {
        term.note(&format!(
            "cairn: run {} #{} ({}) in {}: setuperror",
            r.run.id, r.run.counter, r.run.name, r.run.group
        ));
        errors.extend(r.run_config.setup_errors.iter().cloned());
    }
    errors
}

fn e_message(e: &cairn_client::ClientError) -> String {
    match e {
        cairn_client::ClientError::Api(a) => a.message.clone(),
        other => other.to_string(),
    }
}

/// Bails with exit code 2 semantics when `args` cannot make a run.
pub fn check(args: &RunArgs) -> anyhow::Result<()> {
    if !args.server.is_empty() && args.token.is_none() {
        bail!(SetupError("--server needs --token (or CAIRN_TOKEN)".into()));
    }
    Ok(())
}

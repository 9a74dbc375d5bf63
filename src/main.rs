//! The `cairn` binary: parses the command line, runs the command, and turns any error
//! into one readable line and a non-zero exit code.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::anyhow;
use cairn::cli::settings::ParseError;
use cairn::cli::store::{ServeArgs, StoreCommand};
use cairn::cli::{Cli, Command, ExecutorArgs, RunServeArgs};
use cairn::service::{DriverKind, Service, ServiceOptions, default_tasks_dir};
use cairn::store_node::{StoreOptions, StoreServer};
use tracing_subscriber::EnvFilter;

/// mimalloc, not glibc's allocator: glibc keeps the freed pages of each thread's arena
/// (the blocking pool indexing segments, imports, exports), so a node's RSS stayed near
/// the peak of its largest job for good — 132 MiB RSS for 38 MiB in use after indexing
/// 300,000 archived runs (BENCHMARKS.md "Archived runs"). mimalloc returns freed pages to
/// the system on its own.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // A child started to evaluate a Jsonnet or Starlark config (configfile::eval::sandbox).
    if let Some(code) = cairn::configfile::eval::sandbox::child_main() {
        return ExitCode::from(code);
    }
    // The lifeline watchdog of an executor (executor::lifeline).
    if let Some(code) = cairn::executor::lifeline::child_main() {
        return ExitCode::from(code);
    }
    let cli = match cairn::cli::settings::parse() {
        Ok(cli) => cli,
        Err(ParseError::Clap(e)) => return bad_value(e),
        Err(ParseError::Settings(e)) => {
            let _ = writeln!(std::io::stderr(), "cairn: {e}");
            return ExitCode::from(2);
        }
    };
    // Commands that keep data (a store, objects, an executor's task dirs) create it
    // private to this user: directories 0700, files 0600.
    if matches!(
        cli.command,
        Command::Serve(_) | Command::Executor(_) | Command::Run(_) | Command::Store { .. }
    ) {
        restrict_new_files();
    }
    // `cairn run` prints task output: only problems from the embedded node go to stderr.
    let default_filter = match cli.command {
        Command::Run(_) | Command::Runs { .. } | Command::Executors { .. } => "error,openraft=off",
        _ => "info,openraft=warn",
    };
    {
        use tracing_subscriber::prelude::*;
        tracing_subscriber::registry()
            .with(
                EnvFilter::try_from_env("CAIRN_LOG")
                    .unwrap_or_else(|_| EnvFilter::new(default_filter)),
            )
            // openraft repeats its warnings on every retry while a peer is down.
            .with(cairn::log_limit::RepeatLimit::new(
                cairn::log_limit::DEFAULT_PERIOD,
            ))
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    // Colours only for a person at a terminal.
                    .with_ansi(
                        std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
                    ),
            )
            .init();
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "cairn: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(cli));
    // Blocking work still running (a store read, a file being written) is not waited for
    // beyond this: a stop takes seconds, not a blocking task's whole run.
    rt.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(code) => ExitCode::from(code),
        // The reader of stdout went away (`cairn … | head`): nothing more to say.
        Err(e) if broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "cairn: {e:#}");
            // Setup errors of `cairn run` (no config, a config error…) exit 2.
            if e.downcast_ref::<cairn::cli::direct::SetupError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Reports a command line clap refused: a bad value (`--engine leveldb`, `--phase x`) as
/// one line and exit code 2; help, version and other usage errors as clap prints them.
fn bad_value(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if !matches!(
        e.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        e.exit();
    }
    let text = e.render().to_string();
    let line = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
        .collect::<Vec<_>>()
        .join(" ");
    let line = line.strip_prefix("error: ").unwrap_or(&line);
    let _ = writeln!(std::io::stderr(), "cairn: {line}");
    ExitCode::from(2)
}

/// Sets the process umask to 0o077: whatever this process (and the step processes it
/// starts, unless their driver sets its own) creates is readable by this user only.
fn restrict_new_files() {
    #[cfg(unix)]
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
}

/// Whether `e` comes from writing to a closed pipe.
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Run(args) => {
            cairn::cli::direct::check(&args)?;
            cairn::cli::direct::run(args).await
        }
        Command::Runs { command, server } => cairn::cli::runs::runs(command, server).await,
        Command::Executors { command, server } => {
            cairn::cli::executors::executors(command, server).await
        }
        Command::Validate { dir } => cairn::cli::validate::validate(&dir),
        Command::Maintenance { command, server } => {
            cairn::cli::admin::maintenance(command, server).await
        }
        Command::Cluster { command, server } => cairn::cli::cluster::cluster(command, server).await,
        Command::Token { command, server } => cairn::cli::token::token(command, server).await,
        Command::Export {
            include_secrets,
            server,
        } => cairn::cli::admin::export(server, include_secrets).await,
        Command::Import { file, server } => cairn::cli::admin::import(file, server).await,
        Command::Serve(args) => serve_service(*args).await.map(|()| 0),
        Command::Executor(args) => run_executor(args).await.map(|()| 0),
        Command::Cert { command } => cairn::cli::cert::run(command).map(|()| 0),
        Command::Completions { shell } => {
            std::io::stdout().write_all(&cairn::cli::manual::completions(shell))?;
            Ok(0)
        }
        Command::Man { dir } => {
            for page in cairn::cli::manual::man_pages(&dir)? {
                writeln!(std::io::stdout(), "{}", page.display())?;
            }
            Ok(0)
        }
        Command::Store { command } => match command {
            StoreCommand::Serve(args) => serve(*args).await.map(|()| 0),
            StoreCommand::Client(command) => cairn::cli::store::run(command).await.map(|()| 0),
        },
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Peers present their own secret, never the client token (as `cairn serve` does).
    let peer_given = cairn::cli::token_from(None, args.peer_token_file.as_deref())?;
    let peer_token = cairn::service::load_or_make_peer_token(
        &args.node.data_dir,
        peer_given.as_deref(),
        &args.token,
    )?;
    let opts = StoreOptions {
        data_dir: args.node.data_dir,
        listen: args.node.listen,
        advertise: args.node.advertise,
        engine: args.node.engine,
        timing: args.node.timing,
        quota_bytes: args.node.quota_bytes,
        init: args.node.init,
        init_if_new: false,
        join: args.node.join,
        learner: args.node.learner,
        client_token: if args.no_client_auth {
            None
        } else {
            Some(args.token.clone())
        },
        cluster_token: peer_token,
        streams: cairn::api::streams::StreamCaps::default(),
        net: args.net.serve_net(),
        // The bare store serves no /metrics.
        http_metrics: None,
    };
    let server = StoreServer::start(opts).await?;
    // One line on stdout, so scripts and tests learn the bound address and identity.
    let _ = writeln!(
        std::io::stdout(),
        "cairn store: listening on {} node {:x} cluster {:x}",
        server.url,
        server.node.id(),
        server.node.cluster_id()
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    server.stop().await;
    Ok(())
}

async fn serve_service(args: RunServeArgs) -> anyhow::Result<()> {
    let executor_dir = args.node.data_dir.join("executor");
    let token = cairn::cli::token_from(args.token, args.token_file.as_deref())?;
    if args.node.join.is_some() && token.is_none() {
        anyhow::bail!("--join needs the cluster's admin token (--token-file or CAIRN_TOKEN)");
    }
    let peer_token = cairn::cli::token_from(None, args.peer_token_file.as_deref())?;
    let tasks_dir = default_tasks_dir(&args.node.data_dir);
    let opts = ServiceOptions {
        data_dir: args.node.data_dir,
        listen: args.node.listen,
        advertise: args.node.advertise,
        engine: args.node.engine,
        timing: args.node.timing,
        quota_bytes: args.node.quota_bytes,
        init: args.node.init,
        join: args.node.join,
        learner: args.node.learner,
        token,
        peer_token,
        objects: args.objects,
        objects_options: args.objects_options,
        scheduler: args.retention.apply(
            cairn::scheduler::SchedulerConfig {
                housekeeping_every: std::time::Duration::from_secs(args.housekeeping_secs.max(1)),
                segments: cairn::runservice::archive::SegmentPolicy {
                    batch: usize::try_from(args.segment_runs).unwrap_or(1000),
                    max_wait: std::time::Duration::from_secs(args.segment_wait_secs),
                    ..Default::default()
                },
                retry_lost_tasks: args.retry_lost_tasks,
                ..cairn::scheduler::SchedulerConfig::default()
            },
            std::time::Duration::from_secs(args.blob_ttl_secs),
        )?,
        executor_ttl_secs: args.executor_ttl,
        pull_request_ref_regexes: args.pull_request_ref_regexes,
        streams: args.streams.limits(),
        net: args.net.serve_net(),
        executor: if args.no_executor {
            None
        } else {
            Some(
                args.executor
                    .options(executor_dir.clone(), tasks_dir, ", or --no-executor")
                    .await?,
            )
        },
    };
    let service = Service::start(opts).await?;
    // One line on stdout, so scripts and tests learn the address and the token's place.
    let _ = writeln!(
        std::io::stdout(),
        "cairn: serving on {} node {:x}; admin token in {}",
        service.url(),
        service.store.node.id(),
        service.token_file.display()
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    service.stop().await;
    Ok(())
}

async fn run_executor(args: ExecutorArgs) -> anyhow::Result<()> {
    let opts = args
        .executor
        .options(args.data_dir.clone(), default_tasks_dir(&args.data_dir), "")
        .await?;
    let token =
        cairn::cli::token_from(args.token, args.token_file.as_deref())?.ok_or_else(|| {
            anyhow!("a registration token is required: --token-file FILE or CAIRN_TOKEN")
        })?;
    let agent = opts
        .start(args.server.clone(), Some(token), args.tls.client_tls())
        .await?;
    let driver = match opts.driver {
        DriverKind::Local => "local",
        DriverKind::Docker => "docker",
    };
    let _ = writeln!(
        std::io::stdout(),
        "cairn: executor {} ({driver} driver) serving {}",
        agent.id,
        args.server.join(",")
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    agent.stop().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

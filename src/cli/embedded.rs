//! The embedded node of the CLI, over the user's data dir: `cairn run` and `cairn runs
//! restart` start it with a local executor, the other client commands without one.
//!
//! While it runs it advertises its loopback URL in `<data_dir>/endpoint` (written once it
//! serves, removed when it stops), so that `cairn runs …` from another terminal talks to
//! it over that port, with the token kept in the data dir, instead of failing on the data
//! dir's lock ([`running_node`]). An endpoint left behind by a killed node is probed and
//! ignored, never trusted: the caller then opens the data dir itself.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow};
use cairn_client::RunClient;

use crate::service::{DriverKind, ExecutorOptions, Service, ServiceOptions, token_file};

/// How long a probe of an advertised endpoint may take before it counts as stale.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the embedded executor has to register before `cairn run` gives up.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);

/// The in-process executor of an embedded node.
#[derive(Clone, Debug)]
pub struct EmbeddedExecutor {
    pub driver: DriverKind,
    pub allow_privileged: bool,
}

/// The file in which a running embedded node advertises its URL.
pub fn endpoint_file(data_dir: &Path) -> PathBuf {
    data_dir.join("endpoint")
}

/// The embedded single node of the CLI over `data_dir` (loopback, any port, the `solo`
/// timing), with `executor` or none. With an executor, the executors are fixed: a task
/// that executor can never take fails at once instead of waiting forever.
pub(crate) fn embedded_options(
    data_dir: &Path,
    executor: Option<ExecutorOptions>,
) -> ServiceOptions {
    ServiceOptions {
        data_dir: data_dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().expect("a valid address"),
        advertise: None,
        engine: store::EngineKind::Redb,
        timing: raft::Timing::solo(),
        quota_bytes: raft::alarms::DEFAULT_QUOTA_BYTES,
        init: false,
        join: None,
        learner: false,
        token: None,
        peer_token: None,
        objects: None,
        objects_options: Vec::new(),
        scheduler: crate::scheduler::SchedulerConfig {
            fixed_executors: executor.is_some(),
            ..crate::scheduler::SchedulerConfig::default()
        },
        executor_ttl_secs: 15,
        pull_request_ref_regexes: Vec::new(),
        streams: crate::api::streams::StreamLimits::default(),
        net: crate::store_node::ServeNet::default(),
        executor,
    }
}

/// A running embedded node.
pub struct Embedded {
    service: Service,
    endpoint: PathBuf,
}

impl Embedded {
    /// Starts the node over `data_dir` (made if missing) and advertises it. With an
    /// executor, returns once that executor has registered with its current settings, so
    /// that placement decisions never see a previous process's registration.
    pub async fn start(
        data_dir: &Path,
        executor: Option<EmbeddedExecutor>,
    ) -> anyhow::Result<Embedded> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let executor = executor.map(|e| ExecutorOptions {
            allow_privileged: e.allow_privileged,
            lifeline: crate::executor::lifeline::this_program(),
            ..ExecutorOptions::new(data_dir.join("executor"), e.driver)
        });
        let started = chrono::Utc::now();
        let service = Service::start(embedded_options(data_dir, executor))
            .await
            .map_err(|e| {
                let text = format!("{e:#}");
                let locked = e.chain().any(|c| {
                    matches!(
                        c.downcast_ref::<store::EngineError>(),
                        Some(store::EngineError::Locked(_))
                    )
                });
                if locked {
                    anyhow!("the embedded node's data dir {} is in use by another cairn (pass --data-dir, or --server): {text}", data_dir.display())
                } else {
                    anyhow!("starting the embedded node in {}: {text}", data_dir.display())
                }
            })?;
        let node = Embedded {
            endpoint: endpoint_file(data_dir),
            service,
        };
        if let Err(e) = node.wait_registered(started).await {
            node.stop().await;
            return Err(e);
        }
        if let Err(e) = write_endpoint(&node.endpoint, node.url()) {
            // Other terminals then cannot find the node; this one still works.
            tracing::warn!(error = %e, "cannot advertise the embedded node");
        }
        Ok(node)
    }

    pub fn url(&self) -> &str {
        self.service.url()
    }

    pub fn token(&self) -> &str {
        &self.service.token
    }

    /// A client of this node.
    pub fn client(&self) -> anyhow::Result<RunClient> {
        Ok(RunClient::new(
            &[self.url().to_string()],
            Some(self.token().to_string()),
        )?)
    }

    /// Waits until the in-process executor (if any) has registered since `since`.
    async fn wait_registered(&self, since: chrono::DateTime<chrono::Utc>) -> anyhow::Result<()> {
        let Some(id) = self.service.executor_id() else {
            return Ok(());
        };
        let client = self.client()?;
        let deadline = tokio::time::Instant::now() + REGISTER_TIMEOUT;
        loop {
            if let Ok(list) = client.executors().await
                && list
                    .executors
                    .iter()
                    .any(|e| e.id == id && e.last_heartbeat.is_some_and(|t| t >= since))
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(anyhow!(
                    "the embedded executor did not register within {}s",
                    REGISTER_TIMEOUT.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops advertising the node, then stops it.
    pub async fn stop(self) {
        // Only our own advertisement: never one a later node wrote.
        if std::fs::read_to_string(&self.endpoint).is_ok_and(|u| u.trim() == self.url()) {
            let _ = std::fs::remove_file(&self.endpoint);
        }
        self.service.stop().await;
    }
}

fn write_endpoint(path: &Path, url: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{url}\n"))
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Whether `url` is `http://<loopback address>:<port>`, the only kind of URL an embedded
/// node advertises: the data dir's token is never sent anywhere else.
fn is_loopback_url(url: &str) -> bool {
    url.strip_prefix("http://")
        .and_then(|rest| {
            rest.trim_end_matches('/')
                .parse::<std::net::SocketAddr>()
                .ok()
        })
        .is_some_and(|addr| addr.ip().is_loopback())
}

/// A client of the embedded node another `cairn` runs over `data_dir`, if one answers at
/// the advertised endpoint with the data dir's token. A stale endpoint (its node was
/// killed) is removed; `None` then tells the caller to open the data dir itself.
pub async fn running_node(data_dir: &Path) -> Option<RunClient> {
    let endpoint = endpoint_file(data_dir);
    let url = std::fs::read_to_string(&endpoint).ok()?.trim().to_string();
    let token = std::fs::read_to_string(token_file(data_dir))
        .ok()?
        .trim()
        .to_string();
    if !is_loopback_url(&url) || token.is_empty() {
        return None;
    }
    let probe = RunClient::new(std::slice::from_ref(&url), Some(token.clone()))
        .ok()?
        .with_request_timeout(PROBE_TIMEOUT);
    match tokio::time::timeout(PROBE_TIMEOUT, probe.executors()).await {
        Ok(Ok(_)) => RunClient::new(&[url], Some(token)).ok(),
        _ => {
            // Nobody (or a stranger) answers there: the node is gone. Remove the file
            // unless a new node has replaced it meanwhile.
            if std::fs::read_to_string(&endpoint).is_ok_and(|u| u.trim() == url) {
                let _ = std::fs::remove_file(&endpoint);
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_loopback_endpoint_gets_the_data_dirs_token() {
        for good in [
            "http://127.0.0.1:4000",
            "http://127.0.0.1:4000/",
            "http://[::1]:80",
        ] {
            assert!(is_loopback_url(good), "{good}");
        }
        for bad in [
            "",
            "http://10.0.0.1:4000",
            "https://127.0.0.1:4000",
            "http://evil.example:4000",
            "http://127.0.0.1:4000@evil.example",
            "http://127.0.0.1",
        ] {
            assert!(!is_loopback_url(bad), "{bad}");
        }
    }
}

//! A running pod ([`DockerPod`]): commands run by `docker exec` in container 0 with their
//! output streamed to the step's log, the exec's exit code, cancellation (container 0 is
//! killed, see the driver's module doc), a user's home, stop and removal. Moving files in
//! and out is in `transfer`.

use async_trait::async_trait;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use bollard::query_parameters::{KillContainerOptionsBuilder, StopContainerOptionsBuilder};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::passwd::{default_home, passwd_entry, resolve_owner, user_name};
use super::{STOP_GRACE_SECS, env_list, non_empty, remove_container, status};
use crate::executor::driver::{ByteStream, DriverError, ExecRequest, LogSink, Pod};

/// A task's containers; `containers[0]` runs the steps.
pub(super) struct DockerPod {
    pub(super) docker: Docker,
    pub(super) containers: Vec<String>,
    /// Container 0's user as the Engine reports it (empty: root).
    pub(super) default_user: String,
}

impl DockerPod {
    pub(super) fn main(&self) -> &str {
        &self.containers[0]
    }

    /// The user a request runs as: its own, else container 0's, else root.
    fn user_or_default<'a>(&'a self, user: &'a str) -> &'a str {
        match (user, self.default_user.as_str()) {
            ("", "") => "root",
            ("", default) => default,
            (user, _) => user,
        }
    }

    /// The exit code of a finished exec. Docker may report the exec as running for a
    /// moment after its output ended, so this asks again a few times.
    async fn exit_code(&self, exec_id: &str) -> Result<Option<i32>, DriverError> {
        for _ in 0..100 {
            let inspect = self
                .docker
                .inspect_exec(exec_id)
                .await
                .map_err(DriverError::Engine)?;
            if inspect.running != Some(true) {
                return Ok(inspect.exit_code.map(|c| i32::try_from(c).unwrap_or(-1)));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Err(DriverError::Unexpected(format!(
            "exec {exec_id} still running after its output ended"
        )))
    }

    /// Kills every process of container 0 (see the module doc).
    async fn kill_main(&self) {
        let options = KillContainerOptionsBuilder::new().signal("SIGKILL").build();
        if let Err(e) = self.docker.kill_container(self.main(), Some(options)).await
            && !matches!(status(&e), Some(404 | 409))
        {
            tracing::warn!(container = self.main(), error = %e, "cannot kill container");
        }
    }
}

#[async_trait]
impl Pod for DockerPod {
    async fn exec(
        &self,
        req: &ExecRequest,
        out: &mut dyn LogSink,
        cancel: &CancellationToken,
    ) -> Result<Option<i32>, DriverError> {
        let what = || req.cmd.join(" ");
        if req.cmd.is_empty() {
            return Err(DriverError::Start {
                what: "exec".into(),
                why: "empty command".into(),
            });
        }
        let working_dir = if req.working_dir.starts_with('/') {
            req.working_dir.clone()
        } else {
            let home = self.home(&req.user).await?;
            join_path(&home, &req.working_dir)
        };
        let config = ExecConfig {
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            env: Some(env_list(req.env.iter())),
            cmd: Some(req.cmd.clone()),
            user: non_empty(&req.user),
            working_dir: Some(working_dir),
            ..Default::default()
        };
        let start_error = |e: bollard::errors::Error| DriverError::Start {
            what: what(),
            why: e.to_string(),
        };
        let created = self
            .docker
            .create_exec(self.main(), config)
            .await
            .map_err(start_error)?;
        let started = self
            .docker
            .start_exec(&created.id, Some(StartExecOptions::default()))
            .await
            .map_err(start_error)?;
        let StartExecResults::Attached { mut output, .. } = started else {
            return Err(DriverError::Unexpected("exec started detached".into()));
        };
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    self.kill_main().await;
                    return Ok(None);
                }
                item = output.next() => match item {
                    Some(Ok(
                        LogOutput::StdOut { message }
                        | LogOutput::StdErr { message }
                        | LogOutput::Console { message },
                    )) => out.write(message).await,
                    Some(Ok(LogOutput::StdIn { .. })) => {}
                    Some(Err(e)) => return Err(DriverError::Engine(e)),
                    None => break,
                },
            }
        }
        self.exit_code(&created.id).await
    }

    async fn home(&self, user: &str) -> Result<String, DriverError> {
        let user = self.user_or_default(user);
        let passwd = self.passwd().await?;
        Ok(passwd_entry(&passwd, user_name(user))
            .map(|entry| entry.home)
            .unwrap_or_else(|| default_home(user_name(user)).to_string()))
    }
    async fn put_archive(
        &self,
        dest: &str,
        user: &str,
        tar: ByteStream,
    ) -> Result<(), DriverError> {
        if !dest.starts_with('/') {
            return Err(DriverError::Refused(format!(
                "{dest} is not an absolute path"
            )));
        }
        let user = self.user_or_default(user);
        let passwd = self.passwd().await?;
        let owner = resolve_owner(&passwd, user)
            .ok_or_else(|| DriverError::Refused(format!("unknown user {user}")))?;
        self.make_dir(dest, owner).await?;
        self.upload_owned(dest, owner, tar).await
    }

    async fn get_archive(&self, path: &str) -> Result<ByteStream, DriverError> {
        self.download(path).await
    }

    async fn stop(&self) {
        let options = StopContainerOptionsBuilder::new()
            .t(STOP_GRACE_SECS)
            .build();
        for id in self.containers.iter().rev() {
            if let Err(e) = self.docker.stop_container(id, Some(options.clone())).await
                && !matches!(status(&e), Some(304 | 404))
            {
                tracing::warn!(container = %id, error = %e, "cannot stop container");
            }
        }
    }

    async fn remove(&self) {
        for id in self.containers.iter().rev() {
            if let Err(e) = remove_container(&self.docker, id).await {
                tracing::warn!(container = %id, error = %e, "cannot remove container");
            }
        }
    }
}

/// `base/rel`, or `base` when `rel` is empty.
fn join_path(base: &str, rel: &str) -> String {
    let rel = rel.trim_start_matches("./");
    match (base.trim_end_matches('/'), rel) {
        ("", "" | ".") => "/".into(),
        (base, "" | ".") => base.into(),
        (base, rel) => format!("{base}/{rel}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    use crate::executor::driver::docker::DockerOptions;

    use crate::executor::driver::docker::testbed::{
        archive, bytes_stream, container, engine, run, sh,
    };

    #[test]
    fn working_dirs_are_joined_under_the_home() {
        assert_eq!(join_path("/root", ""), "/root");
        assert_eq!(join_path("/root/", "src/app"), "/root/src/app");
        assert_eq!(join_path("/", "./x"), "/x");
        assert_eq!(join_path("/", ""), "/");
    }

    #[tokio::test]
    async fn exec_runs_in_container_zero_with_env_working_dir_and_user() {
        let Some(engine) = engine(DockerOptions::default()).await else {
            return;
        };
        let pod = engine.pod(vec![container("")]).await;

        let (code, output) = run(
            pod.as_ref(),
            ExecRequest {
                cmd: sh(r#"echo "$GREETING from $(pwd) as $(id -un) $FROM_CONTAINER"; echo oops >&2; exit 3"#),
                env: [("GREETING".to_string(), "hello".to_string())].into(),
                working_dir: "/tmp".into(),
                user: String::new(),
            },
        )
        .await;
        assert_eq!(code, Some(3));
        assert!(output.contains("hello from /tmp as root yes\n"), "{output}");
        assert!(
            output.contains("oops\n"),
            "stderr goes to the sink too: {output}"
        );

        assert_eq!(pod.home("").await.expect("home"), "/root");
        assert_eq!(pod.home("nobody").await.expect("home"), "/nonexistent");
        let (code, output) = run(
            pod.as_ref(),
            ExecRequest {
                cmd: sh("id -un; id -u"),
                working_dir: "/tmp".into(),
                user: "nobody".into(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!((code, output.as_str()), (Some(0), "nobody\n65534\n"));

        // A relative working dir is under the home; put_archive makes it.
        pod.put_archive("/root/src/app", "", bytes_stream(archive(&[])))
            .await
            .expect("an empty archive creates the directory");
        let (code, output) = run(
            pod.as_ref(),
            ExecRequest {
                cmd: vec!["pwd".into()],
                working_dir: "src/app".into(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!((code, output.as_str()), (Some(0), "/root/src/app\n"));
        pod.remove().await;
    }

    /// Issue 10 (1): Agola's container `volumes` (tmpfs with a size) are mounted.
    #[tokio::test]
    async fn a_tmpfs_volume_is_mounted_at_its_path_with_its_size() {
        let Some(engine) = engine(DockerOptions::default()).await else {
            return;
        };
        let mut c = container("");
        c.volumes = vec![cairn_client::runconfig::Volume {
            path: "/scratch".into(),
            tmpfs: Some(cairn_client::runconfig::TmpfsVolume {
                size_bytes: Some(8 * 1024 * 1024),
            }),
        }];
        let pod = engine.pod(vec![c]).await;
        let (code, output) = run(
            pod.as_ref(),
            ExecRequest {
                cmd: sh("grep ' /scratch ' /proc/mounts; df -k /scratch | tail -n 1"),
                working_dir: "/".into(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(code, Some(0), "{output}");
        let mount = output.lines().next().unwrap_or_default();
        assert!(mount.starts_with("tmpfs /scratch tmpfs "), "{output}");
        assert!(mount.contains("size=8192k"), "{output}");
        let df: Vec<&str> = output
            .lines()
            .nth(1)
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert_eq!(df.get(1), Some(&"8192"), "{output}");
        pod.remove().await;
    }

    #[tokio::test]
    async fn a_service_container_is_reached_on_localhost_from_container_zero() {
        let Some(engine) = engine(DockerOptions::default()).await else {
            return;
        };
        let pod = engine
            .pod(vec![container(""), container("httpd -f -p 8080 -h /etc")])
            .await;
        // The service may still be starting: ask until it answers (bounded).
        let (code, output) = run(
            pod.as_ref(),
            ExecRequest {
                cmd: sh("for i in $(seq 100); do wget -q -O - http://127.0.0.1:8080/passwd && exit 0; sleep 0.1; done; exit 1"),
                working_dir: "/".into(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(code, Some(0), "{output}");
        assert!(output.contains("nobody:x:65534"), "{output}");
        pod.remove().await;
        assert!(
            engine.containers(None).await.is_empty(),
            "remove takes every container"
        );
    }

    #[tokio::test]
    async fn get_archive_of_a_missing_path_is_not_found() {
        let Some(engine) = engine(DockerOptions::default()).await else {
            return;
        };
        let pod = engine.pod(vec![container("")]).await;
        assert!(matches!(
            pod.get_archive("/no/such/dir").await,
            Err(DriverError::NotFound(p)) if p == "/no/such/dir"
        ));
        pod.remove().await;
    }

    /// Cancels its token when the command first writes.
    struct CancelOnOutput(CancellationToken);

    #[async_trait]
    impl LogSink for CancelOnOutput {
        async fn write(&mut self, _data: Bytes) {
            self.0.cancel();
        }
    }

    #[tokio::test]
    async fn cancel_kills_a_running_exec_and_returns_none() {
        let Some(engine) = engine(DockerOptions::default()).await else {
            return;
        };
        let pod = engine.pod(vec![container("")]).await;
        let cancel = CancellationToken::new();
        let started = std::time::Instant::now();
        let code = pod
            .exec(
                &ExecRequest {
                    cmd: sh("echo started; sleep 60"),
                    working_dir: "/".into(),
                    ..Default::default()
                },
                &mut CancelOnOutput(cancel.clone()),
                &cancel,
            )
            .await
            .expect("a cancelled exec is not an error");
        assert_eq!(code, None);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "took {:?}",
            started.elapsed()
        );
        pod.stop().await;
        pod.stop().await;
        pod.remove().await;
        pod.remove().await;
        assert!(engine.containers(None).await.is_empty());
    }

    #[tokio::test]
    async fn stop_ends_every_container_and_remove_deletes_them() {
        let Some(engine) = engine(DockerOptions::default()).await else {
            return;
        };
        let pod = engine
            .pod(vec![container(""), container("httpd -f -p 8081 -h /etc")])
            .await;
        let ids = engine.containers(None).await;
        assert_eq!(ids.len(), 2);
        pod.stop().await;
        for id in &ids {
            let state = engine
                .driver
                .docker
                .inspect_container(id, None)
                .await
                .expect("inspect")
                .state;
            assert_eq!(
                state.and_then(|s| s.running),
                Some(false),
                "container {id} stopped"
            );
        }
        pod.remove().await;
        assert!(engine.containers(None).await.is_empty());
    }
}

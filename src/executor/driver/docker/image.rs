//! Images: references (registry host, repository, tag), the task's registry credentials
//! for a host, and whether an image may be used as found or must be (re-)pulled, so that
//! an image pulled with one task's credentials is never handed to a task without them
//! (issue 11, L6). The ids of such images are kept in memory and, when the executor
//! names a file, on disk.

use std::collections::BTreeSet;

use base64::Engine as _;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::CreateImageOptionsBuilder;
use bytes::Bytes;
use cairn_client::runconfig::{RegistryAuth, RegistryAuthType};
use futures::StreamExt;

use super::{DockerDriver, status};
use crate::executor::driver::{DriverError, LogSink, PodSpec};

/// What to do about a task's image before starting it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pull {
    /// Present and public as far as this executor knows: use it.
    UseLocal,
    /// Pull (or re-pull) with the task's credentials: the registry checks them.
    WithCredentials,
    /// Pull anonymously: missing, or present only because a task with credentials
    /// pulled it (the registry then decides whether it is public).
    Anonymously,
}

/// Whether to pull: a task with credentials for the image's registry always pulls
/// with them; one without uses a present image only if no task with credentials pulled
/// it (`present` is the local image's id).
pub fn pull_decision(
    present: Option<&str>,
    has_credentials: bool,
    private: &BTreeSet<String>,
) -> Pull {
    match (present, has_credentials) {
        (_, true) => Pull::WithCredentials,
        (Some(id), false) if !private.contains(id) => Pull::UseLocal,
        _ => Pull::Anonymously,
    }
}

impl DockerDriver {
    /// The id of the local image `image`, `None` when it is missing.
    async fn image_id(&self, image: &str) -> Result<Option<String>, DriverError> {
        match self.docker.inspect_image(image).await {
            Ok(inspect) => Ok(Some(inspect.id.unwrap_or_default())),
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(DriverError::Engine(e)),
        }
    }

    /// Records (or forgets) `id` as an image pulled with credentials, on disk too.
    fn mark_private(&self, id: &str, private: bool) -> Result<(), DriverError> {
        let mut set = self.private.lock().unwrap_or_else(|p| p.into_inner());
        let changed = if private {
            set.insert(id.to_string())
        } else {
            set.remove(id)
        };
        if let (true, Some(path)) = (changed, &self.options.private_images) {
            let text: String = set.iter().map(|i| format!("{i}\n")).collect();
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text)?;
            std::fs::rename(&tmp, path)?;
        }
        Ok(())
    }

    /// Makes sure `image` is present and that this task may use it (see
    /// [`pull_decision`]): pulled with the task's credentials for its registry whenever
    /// the task has some, else used as found unless a task with credentials pulled it.
    pub(super) async fn ensure_image(
        &self,
        image: &str,
        spec: &PodSpec,
        setup_log: &mut dyn LogSink,
    ) -> Result<(), DriverError> {
        let host = registry_host(image);
        let credentials = registry_credentials(&spec.registry_auth, host)?;
        let present = self.image_id(image).await?;
        let decision = {
            let private = self.private.lock().unwrap_or_else(|p| p.into_inner());
            pull_decision(present.as_deref(), credentials.is_some(), &private)
        };
        if decision == Pull::UseLocal {
            return Ok(());
        }
        if present.is_some() && decision == Pull::Anonymously {
            setup_log
                .write(Bytes::from(format!(
                    "image {image} was pulled with another task's credentials: pulling it again without any\n"
                )))
                .await;
        }
        self.pull(image, credentials, setup_log).await?;
        if let Some(id) = self.image_id(image).await? {
            self.mark_private(&id, decision == Pull::WithCredentials)?;
        }
        Ok(())
    }

    /// Pulls `image`, writing progress to `setup_log`.
    async fn pull(
        &self,
        image: &str,
        credentials: Option<DockerCredentials>,
        setup_log: &mut dyn LogSink,
    ) -> Result<(), DriverError> {
        let (name, tag) = split_reference(image);
        setup_log
            .write(Bytes::from(format!("pulling image {image}\n")))
            .await;
        let options = CreateImageOptionsBuilder::new()
            .from_image(name)
            .tag(tag)
            .build();
        let mut progress = self.docker.create_image(Some(options), None, credentials);
        let refused =
            |why: String| DriverError::Refused(format!("cannot pull image {image}: {why}"));
        while let Some(item) = progress.next().await {
            let info = item.map_err(|e| refused(e.to_string()))?;
            if let Some(detail) = info.error_detail {
                return Err(refused(detail.message.unwrap_or_default()));
            }
            let progress = info
                .progress_detail
                .and_then(|p| match (p.current, p.total) {
                    (Some(current), Some(total)) => Some(format!("{current}/{total}")),
                    _ => None,
                });
            let line = [info.id, info.status, progress]
                .into_iter()
                .flatten()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            if !line.is_empty() {
                setup_log.write(Bytes::from(line + "\n")).await;
            }
        }
        Ok(())
    }
}

/// The registry host of an image reference (`docker.io` when it names none).
fn registry_host(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// The repository and the tag (or digest) to pull; `latest` when the reference has none.
fn split_reference(image: &str) -> (&str, &str) {
    if let Some((name, digest)) = image.split_once('@') {
        return (name, digest);
    }
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(i) => (&image[..last_slash + i], &image[last_slash + i + 1..]),
        None => (image, "latest"),
    }
}

/// The credentials for `host` among the task's registry auths (Docker Hub answers to
/// several names).
fn registry_credentials(
    auths: &std::collections::BTreeMap<String, RegistryAuth>,
    host: &str,
) -> Result<Option<DockerCredentials>, DriverError> {
    let aliases: &[&str] = if host == "docker.io" {
        &[
            "docker.io",
            "index.docker.io",
            "registry-1.docker.io",
            "https://index.docker.io/v1/",
        ]
    } else {
        &[host]
    };
    let Some(auth) = aliases.iter().find_map(|h| auths.get(*h)) else {
        return Ok(None);
    };
    let (username, password) = match auth.kind {
        RegistryAuthType::Basic => (auth.username.clone(), auth.password.clone()),
        RegistryAuthType::Encodedauth => {
            let invalid =
                || DriverError::Refused(format!("registry auth for {host}: invalid encoded auth"));
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.auth.trim())
                .map_err(|_| invalid())?;
            let decoded = String::from_utf8(decoded).map_err(|_| invalid())?;
            let (u, p) = decoded.split_once(':').ok_or_else(invalid)?;
            (u.to_string(), p.to_string())
        }
    };
    Ok(Some(DockerCredentials {
        username: Some(username),
        password: Some(password),
        serveraddress: Some(host.to_string()),
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_client::runconfig::Container;

    use crate::executor::driver::Driver;
    use crate::executor::driver::docker::DockerOptions;

    use crate::executor::driver::docker::testbed::{Collect, container, engine};

    /// Issue 11 (L6): a private image pulled with one task's credentials is not reused
    /// by a task without them.
    #[test]
    fn an_image_pulled_with_credentials_is_pulled_again_without_them() {
        let private = BTreeSet::from(["sha256:private".to_string()]);
        assert_eq!(
            pull_decision(Some("sha256:public"), false, &private),
            Pull::UseLocal
        );
        assert_eq!(
            pull_decision(Some("sha256:private"), false, &private),
            Pull::Anonymously
        );
        assert_eq!(pull_decision(None, false, &private), Pull::Anonymously);
        assert_eq!(
            pull_decision(Some("sha256:public"), true, &private),
            Pull::WithCredentials
        );
        assert_eq!(pull_decision(None, true, &private), Pull::WithCredentials);
    }

    #[test]
    fn image_references_give_their_registry_and_tag() {
        assert_eq!(registry_host("busybox"), "docker.io");
        assert_eq!(registry_host("library/debian:12"), "docker.io");
        assert_eq!(registry_host("ghcr.io/org/app:1"), "ghcr.io");
        assert_eq!(registry_host("localhost:5000/app"), "localhost:5000");
        assert_eq!(split_reference("busybox"), ("busybox", "latest"));
        assert_eq!(
            split_reference("localhost:5000/app:1.2"),
            ("localhost:5000/app", "1.2")
        );
        assert_eq!(
            split_reference("localhost:5000/app"),
            ("localhost:5000/app", "latest")
        );
        assert_eq!(split_reference("app@sha256:abc"), ("app", "sha256:abc"));
    }

    #[test]
    fn registry_credentials_come_from_basic_or_encoded_auth() {
        let auths = std::collections::BTreeMap::from([
            (
                "index.docker.io".to_string(),
                RegistryAuth {
                    username: "u".into(),
                    password: "p".into(),
                    ..Default::default()
                },
            ),
            (
                "ghcr.io".to_string(),
                RegistryAuth {
                    kind: RegistryAuthType::Encodedauth,
                    auth: base64::engine::general_purpose::STANDARD.encode("me:se:cret"),
                    ..Default::default()
                },
            ),
            (
                "bad.io".to_string(),
                RegistryAuth {
                    kind: RegistryAuthType::Encodedauth,
                    auth: "!!".into(),
                    ..Default::default()
                },
            ),
        ]);
        let hub = registry_credentials(&auths, "docker.io")
            .expect("valid")
            .expect("found");
        assert_eq!(
            (hub.username.as_deref(), hub.password.as_deref()),
            (Some("u"), Some("p"))
        );
        let ghcr = registry_credentials(&auths, "ghcr.io")
            .expect("valid")
            .expect("found");
        assert_eq!(
            (ghcr.username.as_deref(), ghcr.password.as_deref()),
            (Some("me"), Some("se:cret"))
        );
        assert!(
            registry_credentials(&auths, "quay.io")
                .expect("valid")
                .is_none()
        );
        assert!(matches!(
            registry_credentials(&auths, "bad.io"),
            Err(DriverError::Refused(_))
        ));
    }

    #[tokio::test]
    async fn present_images_are_not_pulled_and_missing_ones_are() {
        let Some(engine) = engine(DockerOptions::default()).await else {
            return;
        };
        let mut log = Collect::default();
        let spec = engine.spec("task", vec![container("")]);
        let pod = engine
            .driver
            .create_pod(&spec, &mut log)
            .await
            .expect("no registry is needed");
        assert_eq!(log.text(), "", "nothing pulled");
        pod.remove().await;

        // No registry listens there: the pull is tried, fails, and nothing is left.
        let missing = Container {
            image: "127.0.0.1:9/cairn/missing:1".into(),
            ..container("")
        };
        let spec = engine.spec("task", vec![container(""), missing]);
        let mut log = Collect::default();
        let result = engine.driver.create_pod(&spec, &mut log).await;
        assert!(
            matches!(result, Err(DriverError::Refused(_))),
            "{:?}",
            result.err()
        );
        assert!(
            log.text()
                .contains("pulling image 127.0.0.1:9/cairn/missing:1"),
            "{}",
            log.text()
        );
        assert!(engine.containers(None).await.is_empty());
    }
}

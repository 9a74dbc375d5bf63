//! What the docker driver's tests share: a driver per test on the machine's Docker Engine
//! (only with `CAIRN_DOCKER_TESTS=1`; its containers are removed on drop, pass or fail),
//! pods of the local test image, log sinks, and tar archives built and read by the tests.

use std::collections::HashMap;
use std::io::Read;

use async_trait::async_trait;
use bollard::query_parameters::ListContainersOptionsBuilder;
use bytes::Bytes;
use cairn_client::runconfig::Container;
use futures::{StreamExt, TryStreamExt, stream};
use tokio_util::sync::CancellationToken;

use super::{DockerDriver, DockerOptions, LABEL_EXECUTOR, LABEL_TASK};
use crate::executor::driver::{ByteStream, Discard, Driver, ExecRequest, LogSink, Pod, PodSpec};

/// A tar entry as the tests see it (read by the `tar` crate, PAX records applied).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) name: String,
    pub(super) kind: u8,
    pub(super) uid: u64,
    pub(super) gid: u64,
    pub(super) uname: String,
    pub(super) gname: String,
    pub(super) link: String,
    pub(super) data: Vec<u8>,
}

/// Reads a whole archive with the `tar` crate (an oracle independent of the code under
/// test), applying PAX `uid`/`gid`/`uname`/`gname` records (the crate applies `path` and
/// `linkpath` itself).
pub(super) fn entries(archive: &[u8]) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut archive = tar::Archive::new(archive);
    for entry in archive.entries().expect("an archive") {
        let mut entry = entry.expect("a valid entry");
        let pax: Vec<(String, String)> = match entry.pax_extensions().expect("readable") {
            Some(records) => records
                .map(|r| {
                    let r = r.expect("a valid record");
                    let text = |b: &[u8]| String::from_utf8(b.to_vec()).expect("utf-8");
                    (text(r.key_bytes()), text(r.value_bytes()))
                })
                .collect(),
            None => Vec::new(),
        };
        let value = |key: &str| {
            pax.iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        let text =
            |b: Option<&[u8]>| String::from_utf8(b.unwrap_or_default().to_vec()).expect("utf-8");
        let header = entry.header();
        let number =
            |key: &str, field: u64| value(key).map_or(field, |v| v.parse().expect("a number"));
        let uid = number("uid", header.uid().expect("a uid"));
        let gid = number("gid", header.gid().expect("a gid"));
        let uname = value("uname").unwrap_or_else(|| text(header.username_bytes()));
        let gname = value("gname").unwrap_or_else(|| text(header.groupname_bytes()));
        let kind = header.entry_type().as_byte();
        let name = text(Some(&entry.path_bytes()));
        let link = text(entry.link_name_bytes().as_deref());
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("the entry's data");
        out.push(Entry {
            name,
            kind,
            uid,
            gid,
            uname,
            gname,
            link,
            data,
        });
    }
    out
}

/// Builds, with the `tar` crate, an archive of `(name, kind, link, data)` entries owned
/// by 1000:1000 (`someone`), names over 100 bytes in PAX `path` records as the Engine
/// writes them.
pub(super) fn archive(items: &[(&str, u8, &str, &[u8])]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, kind, link, data) in items {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::new(*kind));
        header.set_mode(if *kind == b'5' { 0o755 } else { 0o644 });
        header.set_size(data.len() as u64);
        header.set_mtime(1);
        header.set_uid(1000);
        header.set_gid(1000);
        header.set_username("someone").expect("a short name");
        header.set_groupname("someone").expect("a short name");
        if !link.is_empty() {
            header.set_link_name(link).expect("a short link");
        }
        if name.len() > 100 {
            tar.append_pax_extensions([("path", name.as_bytes())])
                .expect("a pax record");
            header
                .as_old_mut()
                .name
                .copy_from_slice(&name.as_bytes()[..100]);
            header.set_cksum();
            tar.append(&header, *data).expect("an entry");
        } else {
            tar.append_data(&mut header, name, *data).expect("an entry");
        }
    }
    tar.into_inner().expect("an archive")
}

pub(super) fn long_name(root: &str) -> String {
    format!("{root}/{}/file.txt", "deep".repeat(30))
}

pub(super) const TEST_IMAGE: &str = "cairn-test/busybox:latest";

/// A driver for one test, with its own executor id; every container it labelled is
/// removed on drop, pass or fail.
pub(super) struct Engine {
    pub(super) driver: DockerDriver,
    pub(super) executor_id: String,
}

impl Drop for Engine {
    fn drop(&mut self) {
        let filter = format!("label={LABEL_EXECUTOR}={}", self.executor_id);
        let Ok(listed) = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output()
        else {
            return;
        };
        let ids = String::from_utf8_lossy(&listed.stdout).into_owned();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", "-v"])
                .args(&ids)
                .output();
        }
    }
}

/// `None` (the test is skipped) unless CAIRN_DOCKER_TESTS=1; then the Engine and the
/// test image must be there.
pub(super) async fn engine(options: DockerOptions) -> Option<Engine> {
    if std::env::var("CAIRN_DOCKER_TESTS").as_deref() != Ok("1") {
        println!("skipped: set CAIRN_DOCKER_TESTS=1");
        return None;
    }
    let driver = DockerDriver::connect(options).await.unwrap_or_else(|e| {
        panic!("the Docker Engine is needed ({e}); start it and run scripts/docker-test-image.sh")
    });
    if let Err(e) = driver.docker.inspect_image(TEST_IMAGE).await {
        panic!("image {TEST_IMAGE} is missing ({e}): run scripts/docker-test-image.sh");
    }
    Some(Engine {
        driver,
        executor_id: format!("test-{}", uuid::Uuid::new_v4().simple()),
    })
}

pub(super) fn container(entrypoint: &str) -> Container {
    Container {
        image: TEST_IMAGE.into(),
        entrypoint: entrypoint.into(),
        environment: [("FROM_CONTAINER".to_string(), "yes".to_string())].into(),
        ..Default::default()
    }
}

impl Engine {
    pub(super) fn spec(&self, task_id: &str, containers: Vec<Container>) -> PodSpec {
        PodSpec {
            task_id: task_id.into(),
            executor_id: self.executor_id.clone(),
            containers,
            registry_auth: Default::default(),
            task_dir: std::env::temp_dir(),
        }
    }

    pub(super) async fn pod(&self, containers: Vec<Container>) -> Box<dyn Pod> {
        let spec = self.spec("task", containers);
        self.driver
            .create_pod(&spec, &mut Discard)
            .await
            .expect("a pod of the test image")
    }

    /// Ids of this engine's containers, optionally of one task.
    pub(super) async fn containers(&self, task: Option<&str>) -> Vec<String> {
        let mut labels = vec![format!("{LABEL_EXECUTOR}={}", self.executor_id)];
        labels.extend(task.map(|t| format!("{LABEL_TASK}={t}")));
        let filters = HashMap::from([("label".to_string(), labels)]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        self.driver
            .docker
            .list_containers(Some(options))
            .await
            .expect("containers listed")
            .into_iter()
            .filter_map(|c| c.id)
            .collect()
    }
}

#[derive(Default)]
pub(super) struct Collect(pub(super) Vec<u8>);

#[async_trait]
impl LogSink for Collect {
    async fn write(&mut self, data: Bytes) {
        self.0.extend_from_slice(&data);
    }
}

impl Collect {
    pub(super) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

pub(super) async fn run(pod: &dyn Pod, req: ExecRequest) -> (Option<i32>, String) {
    let mut out = Collect::default();
    let code = pod
        .exec(&req, &mut out, &CancellationToken::new())
        .await
        .expect("the exec runs");
    (code, out.text())
}

pub(super) fn sh(script: &str) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), script.into()]
}

pub(super) fn bytes_stream(data: Vec<u8>) -> ByteStream {
    stream::iter([Ok(Bytes::from(data))]).boxed()
}

pub(super) async fn collect(stream: ByteStream) -> Vec<u8> {
    stream
        .try_fold(Vec::new(), |mut all, chunk| async move {
            all.extend_from_slice(&chunk);
            Ok(all)
        })
        .await
        .expect("the archive streams")
}

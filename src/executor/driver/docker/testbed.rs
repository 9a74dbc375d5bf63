//! What the docker driver's tests share: a driver per test on the machine's Docker Engine
//! (only with `CAIRN_DOCKER_TESTS=1`; its containers are removed on drop, pass or fail),
//! pods of the local test image, log sinks, and tar archives built and read by the tests.

use std::collections::HashMap;

use async_trait::async_trait;
use bollard::query_parameters::ListContainersOptionsBuilder;
use bytes::Bytes;
use cairn_client::runconfig::Container;
use futures::{StreamExt, TryStreamExt, stream};
use tokio_util::sync::CancellationToken;

use super::transfer::{
    BLOCK, c_string, new_header, padded, parse_decimal, parse_number, parse_pax, pax_header,
    pax_value, set_checksum, set_field, ustar_name, write_octal,
};
use super::{DockerDriver, DockerOptions, LABEL_EXECUTOR, LABEL_TASK};
use crate::executor::driver::{ByteStream, Discard, Driver, ExecRequest, LogSink, Pod, PodSpec};

/// A tar entry as the tests see it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) name: String,
    pub(super) kind: u8,
    pub(super) uid: u64,
    pub(super) gid: u64,
    pub(super) link: String,
    pub(super) data: Vec<u8>,
}

/// Reads a whole archive, applying PAX `path`/`linkpath`/`uid`/`gid` records.
pub(super) fn entries(archive: &[u8]) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut pax = Vec::new();
    let mut pos = 0;
    while pos + BLOCK <= archive.len() {
        let block: &[u8; BLOCK] = archive[pos..pos + BLOCK].try_into().expect("a block");
        if block.iter().all(|b| *b == 0) {
            break;
        }
        let size = parse_number(&block[124..136]).expect("size") as usize;
        let data = archive[pos + BLOCK..pos + BLOCK + size].to_vec();
        pos += BLOCK + padded(size as u64) as usize;
        if block[156] == b'x' {
            pax = parse_pax(&data).expect("pax records");
            continue;
        }
        let text = |key: &[u8], default: Vec<u8>| {
            String::from_utf8(pax_value(&pax, key).map_or(default, <[u8]>::to_vec)).expect("utf-8")
        };
        let number = |key: &[u8], field: &[u8]| {
            pax_value(&pax, key)
                .map_or_else(|| parse_number(field), parse_decimal)
                .expect("a number")
        };
        out.push(Entry {
            name: text(b"path", ustar_name(block)),
            kind: block[156],
            uid: number(b"uid", &block[108..116]),
            gid: number(b"gid", &block[116..124]),
            link: text(b"linkpath", c_string(&block[157..257]).to_vec()),
            data,
        });
        pax.clear();
    }
    out
}

/// Builds an archive of `(name, kind, link, data)` entries owned by 1000:1000, names
/// over 100 bytes through PAX.
pub(super) fn archive(items: &[(&str, u8, &str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, link, data) in items {
        let mode = if *kind == b'5' { 0o755 } else { 0o644 };
        let mut block = new_header(name.as_bytes(), *kind, mode, data.len() as u64, 1);
        write_octal(&mut block[108..116], 1000);
        write_octal(&mut block[116..124], 1000);
        set_field(&mut block[265..297], b"someone");
        set_field(&mut block[157..257], link.as_bytes());
        if name.len() > 100 {
            out.extend_from_slice(&pax_header(&[(b"path".to_vec(), name.as_bytes().to_vec())]));
        }
        set_checksum(&mut block);
        out.extend_from_slice(&block);
        out.extend_from_slice(data);
        out.resize(
            out.len() + (padded(data.len() as u64) as usize - data.len()),
            0,
        );
    }
    out.extend_from_slice(&[0u8; 2 * BLOCK]);
    out
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

//! Client load over [`EtcdClient`]: concurrent writers, a single reader, and the leader
//! failover trial. Every request goes through the same JSON HTTP client for both systems.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use cairn_client::etcd::{B64Bytes, EtcdClient, PutRequest, RangeRequest};
use tokio::task::JoinSet;

use crate::procs::Cluster;

/// The latencies of one measured phase.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Acknowledged operations' latencies, sorted.
    pub lats: Vec<Duration>,
    pub errors: usize,
    pub first_error: Option<String>,
    pub elapsed: Duration,
}

impl Sample {
    fn new(mut lats: Vec<Duration>, errors: Vec<String>, elapsed: Duration) -> Sample {
        lats.sort();
        Sample {
            lats,
            errors: errors.len(),
            first_error: errors.into_iter().next(),
            elapsed,
        }
    }

    /// Acknowledged operations per second of wall time.
    pub fn per_sec(&self) -> f64 {
        self.lats.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Nearest-rank percentile, in milliseconds.
    pub fn pct_ms(&self, q: f64) -> f64 {
        if self.lats.is_empty() {
            return f64::NAN;
        }
        let rank = ((q * self.lats.len() as f64).ceil() as usize).clamp(1, self.lats.len());
        self.lats[rank - 1].as_secs_f64() * 1e3
    }
}

pub fn key(prefix: &str, i: usize) -> B64Bytes {
    B64Bytes(format!("{prefix}/{i:08}").into_bytes())
}

/// `total` puts of 256-byte values to distinct keys `prefix/i`, from `clients` concurrent
/// tasks sharing one client (and its connection pool), stopping early at `max_time`.
pub async fn writes(
    client: &EtcdClient,
    prefix: &str,
    clients: usize,
    total: usize,
    max_time: Duration,
) -> Sample {
    let value = B64Bytes((0..256).map(|i| b'a' + (i % 26) as u8).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + max_time;
    let mut set = JoinSet::new();
    for _ in 0..clients {
        let (c, next, value, prefix) = (
            client.clone(),
            next.clone(),
            value.clone(),
            prefix.to_string(),
        );
        set.spawn(async move {
            let (mut lats, mut errs) = (Vec::new(), Vec::new());
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total || Instant::now() >= deadline {
                    break;
                }
                let req = PutRequest {
                    key: key(&prefix, i),
                    value: value.clone(),
                    ..Default::default()
                };
                let t = Instant::now();
                match c.put(&req).await {
                    Ok(_) => lats.push(t.elapsed()),
                    Err(e) => errs.push(e.to_string()),
                }
            }
            (lats, errs)
        });
    }
    let (mut lats, mut errs) = (Vec::new(), Vec::new());
    while let Some(r) = set.join_next().await {
        match r {
            Ok((l, e)) => {
                lats.extend(l);
                errs.extend(e);
            }
            Err(e) => errs.push(format!("client task failed: {e}")),
        }
    }
    Sample::new(lats, errs, start.elapsed())
}

/// `count` sequential single-key reads of `prefix/0..keys`, one client.
pub async fn reads(
    client: &EtcdClient,
    prefix: &str,
    keys: usize,
    count: usize,
    serializable: bool,
) -> Sample {
    let (mut lats, mut errs) = (Vec::with_capacity(count), Vec::new());
    let start = Instant::now();
    for i in 0..count {
        let req = RangeRequest {
            key: key(prefix, i % keys.max(1)),
            serializable,
            ..Default::default()
        };
        let t = Instant::now();
        match client.range(&req).await {
            Ok(r) if r.kvs.len() == 1 => lats.push(t.elapsed()),
            Ok(r) => errs.push(format!("read {} keys, expected 1", r.kvs.len())),
            Err(e) => errs.push(e.to_string()),
        }
    }
    Sample::new(lats, errs, start.elapsed())
}

/// One failover trial: waits for a healthy cluster, kills the leader with SIGKILL, and
/// measures until a write through a surviving node is acknowledged. A new attempt starts
/// every 50 ms without cancelling earlier ones (a write stuck on the dead leader may time
/// out late on one system and not the other), and the first acknowledgement ends the
/// trial. Then the killed node is restarted on its data dir.
pub async fn failover(cluster: &mut Cluster, trial: usize) -> anyhow::Result<Duration> {
    let leader = cluster.wait_healthy(Duration::from_secs(90)).await?;
    let survivor = (leader + 1) % cluster.nodes.len();
    let client = cluster.nodes[survivor].client(Duration::from_secs(15));
    let give_up = Duration::from_secs(60);
    let t0 = Instant::now();
    cluster.nodes[leader].kill();
    let mut set = JoinSet::new();
    let mut attempt = 0;
    let mut errors = Vec::new();
    let acked = loop {
        if t0.elapsed() > give_up {
            break Err(anyhow!(
                "no write acknowledged within {give_up:?} (errors: {:?})",
                errors.first()
            ));
        }
        let c = client.clone();
        let k = key(&format!("bench/failover/{trial}"), attempt);
        attempt += 1;
        set.spawn(async move {
            let req = PutRequest {
                key: k,
                value: B64Bytes(b"x".to_vec()),
                ..Default::default()
            };
            c.put(&req).await.map(|_| Instant::now())
        });
        let tick = tokio::time::sleep(Duration::from_millis(50));
        tokio::pin!(tick);
        let mut done = None;
        loop {
            tokio::select! {
                _ = &mut tick => break,
                Some(r) = set.join_next() => match r {
                    Ok(Ok(at)) => {
                        done = Some(at);
                        break;
                    }
                    Ok(Err(e)) => errors.push(e.to_string()),
                    Err(e) => errors.push(e.to_string()),
                },
            }
        }
        if let Some(at) = done {
            break Ok(at.duration_since(t0));
        }
    };
    set.abort_all();
    let restarted = cluster.nodes[leader].start().await;
    let took = acked?;
    restarted?;
    if took.is_zero() {
        bail!("a write was acknowledged before the leader was killed");
    }
    Ok(took)
}

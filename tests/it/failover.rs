//! Real processes, three nodes: kill -9 the leader again and again under concurrent
//! load. Every acknowledged write survives, the register/CAS history is linearizable,
//! and the watch stream a client saw is ordered and gap-free.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::support::load::{
    Recorder, Seen, assert_acked_on_every_node, assert_linearizable, assert_watch_is_history,
    client_loop, watch_loop,
};
use crate::support::poll::eventually;
use crate::support::process::Cluster;

const KILLS: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_of_the_leader_under_load_loses_nothing_and_stays_linearizable() {
    let mut cluster = Cluster::start(3, "redb");
    let rec = Recorder::new();
    let stop = CancellationToken::new();
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let watcher = tokio::spawn(watch_loop(cluster.urls(), stop.clone(), seen.clone()));
    let clients: Vec<_> = (0..6)
        .map(|id| {
            let load = client_loop(id, 0, cluster.client(), rec.clone(), stop.clone());
            tokio::spawn(load)
        })
        .collect();

    let mut failovers = Vec::new();
    for trial in 0..KILLS {
        let leader = cluster.leader(Duration::from_secs(30)).await;
        let acked_before = rec.acked_count();
        let killed_at = Instant::now();
        cluster.nodes[leader].kill9();
        // The survivors elect a new leader and acknowledge writes again.
        eventually(
            Duration::from_secs(30),
            "writes acknowledged after the kill",
            || {
                let rec = rec.clone();
                async move { rec.acked_count() > acked_before + 5 }
            },
        )
        .await;
        failovers.push(killed_at.elapsed());
        cluster.nodes[leader].restart();
        let url = cluster.nodes[leader].url.clone();
        eventually(
            Duration::from_secs(30),
            "restarted node has a leader",
            || {
                let url = url.clone();
                async move {
                    reqwest::get(format!("{url}/readyz"))
                        .await
                        .is_ok_and(|r| r.status().is_success())
                }
            },
        )
        .await;
        println!(
            "trial {trial}: killed node {leader}, writes resumed after {:?}",
            failovers.last().unwrap()
        );
    }
    stop.cancel();
    for c in clients {
        c.await.unwrap();
    }
    watcher.await.unwrap();

    // 1. Every acknowledged write is on every replica.
    let acked = rec.acked.lock().unwrap().clone();
    assert!(
        acked.len() > 100,
        "the load generated too few writes ({})",
        acked.len()
    );
    let target = cluster.client().status().await.unwrap().header.revision;
    assert_acked_on_every_node(&cluster.nodes, &acked, target).await;

    // 2. The register/CAS history is linearizable.
    let history = rec.history.lock().unwrap().clone();
    assert!(
        history.len() > 100,
        "too few register operations ({})",
        history.len()
    );
    assert_linearizable(&history);

    // 3. The watch stream equals the committed history of reg/ (ordered, no gap, no duplicate).
    let seen = seen.lock().unwrap().clone();
    assert_watch_is_history(&cluster.client(), &seen).await;
    let worst = failovers.iter().max().unwrap();
    println!(
        "{} register ops, {} acked writes, {} watch events; worst failover {worst:?}",
        history.len(),
        acked.len(),
        seen.len()
    );
}

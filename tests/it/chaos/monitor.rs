//! The cluster monitor: a task that asks every node for `GET /api/v1/cluster` every
//! 100 ms (each poll bounded by 1 s, so a frozen node is only a missing answer) and keeps
//! every round. From the rounds: who holds the scheduler and who leads now (for the fault
//! driver's targets), whether the cluster is whole again, the instants two nodes said
//! their scheduler was active (a stale report is possible: the old holder is fenced, and
//! the markers are what prove no task ran twice), and how long the scheduler took to move
//! after its holder was killed or frozen.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_client::RunClient;
use futures::future::join_all;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What one node said in one round (`None`: no answer within the poll's bound).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View {
    pub node_id: u64,
    pub leader_id: Option<u64>,
    pub scheduler_active: bool,
}

/// One round: when it started (since the monitor's start) and each node's answer.
#[derive(Clone, Debug)]
pub struct Round {
    pub at: Duration,
    pub views: Vec<Option<View>>,
}

impl Round {
    /// The nodes that said their scheduler is active.
    pub fn active(&self) -> Vec<usize> {
        (0..self.views.len())
            .filter(|&i| self.views[i].is_some_and(|v| v.scheduler_active))
            .collect()
    }

    /// Every node answered, all name the same leader, which is one of them, and exactly
    /// one scheduler is active.
    pub fn whole(&self) -> bool {
        let views: Vec<View> = self.views.iter().flatten().copied().collect();
        let leader = views.first().and_then(|v| v.leader_id);
        views.len() == self.views.len()
            && leader.is_some()
            && views.iter().all(|v| v.leader_id == leader)
            && views.iter().any(|v| Some(v.node_id) == leader)
            && self.active().len() == 1
    }

    /// The node that leads, by the answers of this round.
    pub fn leader(&self) -> Option<usize> {
        let leader = self.views.iter().flatten().find_map(|v| v.leader_id)?;
        self.views
            .iter()
            .position(|v| v.is_some_and(|v| v.node_id == leader))
    }
}

/// The rounds so far, shared between the monitor task and the test.
#[derive(Clone, Default)]
pub struct Rounds(Arc<Mutex<Vec<Round>>>);

impl Rounds {
    pub fn last(&self) -> Option<Round> {
        self.0.lock().unwrap().last().cloned()
    }

    pub fn all(&self) -> Vec<Round> {
        self.0.lock().unwrap().clone()
    }
}

/// The running monitor.
pub struct Monitor {
    pub rounds: Rounds,
    pub start: Instant,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Monitor {
    /// Starts polling `nodes` (one client per node, each bounded to about a second).
    pub fn start(nodes: Vec<RunClient>) -> Monitor {
        let rounds = Rounds::default();
        let stop = CancellationToken::new();
        let start = Instant::now();
        let task = tokio::spawn(poll_loop(nodes, rounds.clone(), stop.clone(), start));
        Monitor {
            rounds,
            start,
            stop,
            task,
        }
    }

    /// Time since the monitor started (the clock of its rounds).
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    pub async fn stop(self) -> Vec<Round> {
        self.stop.cancel();
        self.task.await.expect("the monitor task");
        self.rounds.all()
    }
}

async fn poll_loop(nodes: Vec<RunClient>, rounds: Rounds, stop: CancellationToken, start: Instant) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let at = start.elapsed();
        let views = join_all(nodes.iter().map(|c| async move {
            let info = tokio::time::timeout(Duration::from_secs(1), c.cluster()).await;
            info.ok()?.ok().map(|i| View {
                node_id: i.node_id,
                leader_id: i.leader_id,
                scheduler_active: i.scheduler_active,
            })
        }))
        .await;
        rounds.0.lock().unwrap().push(Round { at, views });
    }
}

/// The rounds in which two or more nodes said their scheduler was active.
pub fn overlaps(rounds: &[Round]) -> Vec<(Duration, Vec<usize>)> {
    rounds
        .iter()
        .filter(|r| r.active().len() > 1)
        .map(|r| (r.at, r.active()))
        .collect()
}

/// How long after `from` a node other than `victim` first said its scheduler was active
/// (`None`: none did in the rounds).
pub fn takeover(rounds: &[Round], victim: usize, from: Duration) -> Option<Duration> {
    rounds
        .iter()
        .filter(|r| r.at >= from)
        .find(|r| r.active().iter().any(|&i| i != victim))
        .map(|r| r.at - from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(at_ms: u64, active: &[bool]) -> Round {
        Round {
            at: Duration::from_millis(at_ms),
            views: active
                .iter()
                .enumerate()
                .map(|(i, &a)| {
                    Some(View {
                        node_id: i as u64 + 1,
                        leader_id: Some(1),
                        scheduler_active: a,
                    })
                })
                .collect(),
        }
    }

    #[test]
    fn takeover_is_the_first_round_another_node_is_active_and_overlaps_are_listed() {
        let mut dead = round(1200, &[false, false, false]);
        dead.views[0] = None;
        let rounds = vec![
            round(900, &[true, false, false]),
            dead,
            round(3100, &[false, true, false]),
            round(3200, &[true, true, false]),
        ];
        assert_eq!(
            takeover(&rounds, 0, Duration::from_millis(1000)),
            Some(Duration::from_millis(2100))
        );
        assert_eq!(takeover(&rounds, 1, Duration::from_millis(3300)), None);
        assert_eq!(
            overlaps(&rounds),
            vec![(Duration::from_millis(3200), vec![0, 1])]
        );
        assert!(rounds[0].whole());
        assert!(!rounds[1].whole());
        assert_eq!(rounds[0].leader(), Some(0));
    }
}

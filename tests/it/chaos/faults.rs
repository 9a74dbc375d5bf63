//! The fault driver: applies a [`schedule::plan`](super::schedule::plan) to the rig, one
//! fault at a time. Before a node fault it waits until the monitor sees the cluster whole
//! again (every node answers, one leader, one active scheduler), so a restarted node has
//! rejoined before another goes down: never two nodes down or frozen at once. Each fault
//! is recorded with the node or executor it hit and when.

use std::time::Duration;

use super::monitor::Monitor;
use super::rig::Rig;
use super::schedule::{Fault, FaultKind, Target};

/// How long the cluster is given to become whole again after a fault.
const WHOLE_WAIT: Duration = Duration::from_secs(90);

/// A fault as it was applied.
#[derive(Clone, Debug)]
pub struct Applied {
    pub kind: FaultKind,
    /// The node or executor it hit.
    pub victim: usize,
    /// Whether the victim (a node) held the scheduler when it was hit.
    pub hit_holder: bool,
    pub injected: Duration,
    pub healed: Duration,
}

/// Waits until a round that started after `after` shows the cluster whole; on a timeout
/// the test fails with the last round (what each node said).
pub async fn wait_whole(monitor: &Monitor, after: Duration) -> super::monitor::Round {
    let deadline = tokio::time::Instant::now() + WHOLE_WAIT;
    loop {
        let last = monitor.rounds.last();
        if let Some(round) = last.clone().filter(|r| r.at > after && r.whole()) {
            return round;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cluster was not whole again {WHOLE_WAIT:?} after {:.1}s; last round: {last:?}",
            after.as_secs_f64()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Applies `plan` to `rig`; returns the faults as applied.
pub async fn drive(rig: &mut Rig, monitor: &Monitor, plan: &[Fault]) -> Vec<Applied> {
    let mut applied = Vec::new();
    let mut healed = monitor.now();
    for fault in plan {
        tokio::time::sleep(fault.pause).await;
        let (victim, hit_holder) = match fault.kind {
            FaultKind::KillNode(target) | FaultKind::FreezeNode(target) => {
                let round = wait_whole(monitor, healed).await;
                let holder = round.active()[0];
                let victim = match target {
                    Target::SchedulerHolder => holder,
                    Target::Leader => round.leader().expect("a whole round has a leader"),
                    Target::Node(i) => i,
                };
                (victim, victim == holder)
            }
            FaultKind::KillExecutor(i) => (i, false),
        };
        let injected = monitor.now();
        match fault.kind {
            FaultKind::KillNode(_) => rig.kill_node(victim),
            FaultKind::FreezeNode(_) => rig.freeze_node(victim),
            FaultKind::KillExecutor(_) => rig.kill_executor(victim),
        }
        tokio::time::sleep(fault.hold).await;
        match fault.kind {
            FaultKind::KillNode(_) => rig.restart_node(victim),
            FaultKind::FreezeNode(_) => rig.thaw_node(victim),
            FaultKind::KillExecutor(_) => rig.restart_executor(victim),
        }
        healed = monitor.now();
        println!(
            "chaos fault {:?} on {victim} (holder: {hit_holder}) from {:.1}s to {:.1}s",
            fault.kind,
            injected.as_secs_f64(),
            healed.as_secs_f64()
        );
        applied.push(Applied {
            kind: fault.kind,
            victim,
            hit_holder,
            injected,
            healed,
        });
    }
    wait_whole(monitor, healed).await;
    applied
}

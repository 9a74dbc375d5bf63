//! The fault driver: applies a [`schedule::plan`](super::schedule::plan) to the rig, one
//! fault at a time. Before a node fault (a kill, a freeze, a partition) it waits until
//! the monitor sees the cluster whole again (every node answers, one leader, one active
//! scheduler), so a restarted or reconnected node has rejoined before another is hit:
//! never two nodes down, frozen or cut off at once. Each fault is recorded with the node
//! or executor it hit and when; a partition is healed (every cut removed) before the
//! next fault, and the rig's network removes whatever a panic left.

use std::time::Duration;

use crate::support::poll::wait_for_saying;

use super::monitor::Monitor;
use super::rig::Rig;
use super::schedule::{Fault, FaultKind};

/// How long the cluster is given to become whole again after a fault.
const WHOLE_WAIT: Duration = Duration::from_secs(90);

/// A fault as it was applied.
#[derive(Clone, Debug)]
pub struct Applied {
    pub kind: FaultKind,
    /// The node or executor it hit.
    pub victim: usize,
    /// The other end of a cut link (a node).
    pub peer: Option<usize>,
    /// Whether the victim (a node) held the scheduler when it was hit.
    pub hit_holder: bool,
    pub injected: Duration,
    pub healed: Duration,
}

impl Applied {
    /// What was hit, for the printed lines: `node 0`, `node 0 -> node 2` (one way), `node 0 <-> node 2`, `executor 1`.
    pub fn what(&self) -> String {
        match (self.kind, self.peer) {
            (FaultKind::KillExecutor(_), _) => format!("executor {}", self.victim),
            (FaultKind::CutOneWay { .. }, Some(p)) => format!("node {} -> node {p}", self.victim),
            (_, Some(p)) => format!("node {} <-> node {p}", self.victim),
            (_, None) => format!("node {}", self.victim),
        }
    }
}

/// Waits until a round that started after `after` shows the cluster whole; on a timeout
/// the test fails with the last round (what each node said).
pub async fn wait_whole(monitor: &Monitor, after: Duration) -> super::monitor::Round {
    wait_for_saying(
        WHOLE_WAIT,
        || async { monitor.rounds.last().filter(|r| r.at > after && r.whole()) },
        || {
            format!(
                "the cluster was not whole again {WHOLE_WAIT:?} after {:.1}s; last round: {:?}",
                after.as_secs_f64(),
                monitor.rounds.last()
            )
        },
    )
    .await
}

/// Applies `plan` to `rig`; returns the faults as applied.
pub async fn drive(rig: &mut Rig, monitor: &Monitor, plan: &[Fault]) -> Vec<Applied> {
    let mut applied = Vec::new();
    let mut healed = monitor.now();
    for fault in plan {
        tokio::time::sleep(fault.pause).await;
        let (victim, hit_holder) = match (fault.kind, fault.kind.target()) {
            (_, Some(target)) => {
                let round = wait_whole(monitor, healed).await;
                let holder = round.active()[0];
                let leader = round.leader().expect("a whole round has a leader");
                let victim = target.resolve(holder, leader);
                (victim, victim == holder)
            }
            (FaultKind::KillExecutor(i), None) => (i, false),
            (kind, None) => unreachable!("{kind:?} has a target"),
        };
        let peer = fault.kind.peer(victim);
        let injected = monitor.now();
        let mut done = Applied {
            kind: fault.kind,
            victim,
            peer,
            hit_holder,
            injected,
            healed: injected,
        };
        // Printed as it happens too: the last one names the fault a failed wait was after.
        println!(
            "chaos inject {:?} on {} at {:.1}s for {:.1}s",
            fault.kind,
            done.what(),
            injected.as_secs_f64(),
            fault.hold.as_secs_f64()
        );
        match (fault.kind, peer) {
            (FaultKind::KillNode(_), _) => rig.kill_node(victim),
            (FaultKind::FreezeNode(_), _) => rig.freeze_node(victim),
            (FaultKind::KillExecutor(_), _) => rig.kill_executor(victim),
            (FaultKind::IsolateNode(_), _) => rig.net().isolate(victim),
            (FaultKind::CutLink { .. }, Some(p)) => rig.net().cut(victim, p),
            (FaultKind::CutOneWay { .. }, Some(p)) => rig.net().cut_one_way(victim, p),
            (kind, None) => unreachable!("{kind:?} has a second node"),
        }
        tokio::time::sleep(fault.hold).await;
        match fault.kind {
            FaultKind::KillNode(_) => rig.restart_node(victim),
            FaultKind::FreezeNode(_) => rig.thaw_node(victim),
            FaultKind::KillExecutor(_) => rig.restart_executor(victim),
            FaultKind::IsolateNode(_) | FaultKind::CutLink { .. } | FaultKind::CutOneWay { .. } => {
                rig.net().heal_all()
            }
        }
        healed = monitor.now();
        done.healed = healed;
        println!(
            "chaos fault {:?} on {} (holder: {hit_holder}) from {:.1}s to {:.1}s",
            fault.kind,
            done.what(),
            injected.as_secs_f64(),
            healed.as_secs_f64()
        );
        applied.push(done);
    }
    wait_whole(monitor, healed).await;
    applied
}

//! A seeded schedule of network and process faults for a 3-node cluster on the `lan`
//! timing profile (issue 14): pure, so the same seed replays the same faults
//! (`CAIRN_PARTITION_SEED`), and tested here without a network.
//!
//! A schedule is a list of [`Episode`]s, one after the other with a healthy gap between
//! them. Each applies one kind of fault ([`Kind`]) and undoes it before it ends. Nodes are
//! named by role ([`Who`]), which the runner resolves to node indexes when the episode
//! starts: "the leader" is whoever leads then.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// Nodes of the cluster the schedule is for.
pub const NODES: usize = 3;

/// When the cluster starts to be faulted: its load is under way by then.
const FIRST_FAULT: Duration = Duration::from_secs(1);

/// A node, by index or by role at the start of its episode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Who {
    Node(usize),
    Leader,
    /// The `k`-th follower (modulo their count), in node order.
    Follower(usize),
}

/// One change to the network or to a node process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// No link between these nodes and the others, both ways.
    Split(Vec<Who>),
    /// Drop what `from` sends to `to`.
    CutOneWay { from: Who, to: Who },
    /// Cut the link between two nodes, both ways.
    Cut(Who, Who),
    /// Restore the link between two nodes.
    Heal(Who, Who),
    /// Remove every cut.
    HealAll,
    /// SIGSTOP the node.
    Freeze(Who),
    /// SIGCONT it.
    Thaw(Who),
}

/// A kind of episode; the runner checks more for some.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A minority of the nodes (here one, leader or not) cut from the majority.
    Split,
    /// The leader cut from both followers, long enough for the majority to elect another:
    /// the runner measures the failover (isolation → first write acknowledged through the
    /// majority).
    IsolatedLeader,
    /// One direction of one link dropped.
    OneWay,
    /// One link cut and restored several times in quick succession.
    Flap,
    /// A follower frozen for less than the election timeout: the runner checks that no
    /// election followed (every node's term unchanged).
    ShortFreeze,
    /// A node (the leader or a follower) frozen for longer than the election window.
    LongFreeze,
}

pub const KINDS: [Kind; 6] = [
    Kind::Split,
    Kind::IsolatedLeader,
    Kind::OneWay,
    Kind::Flap,
    Kind::ShortFreeze,
    Kind::LongFreeze,
];

/// An action at a time from the start of the schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub at: Duration,
    pub action: Action,
}

/// One fault, applied and undone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Episode {
    pub kind: Kind,
    /// In time order; the last one undoes the fault.
    pub steps: Vec<Step>,
}

impl Episode {
    pub fn start(&self) -> Duration {
        self.steps.first().map_or(Duration::ZERO, |s| s.at)
    }

    pub fn end(&self) -> Duration {
        self.steps.last().map_or(Duration::ZERO, |s| s.at)
    }
}

/// When a follower that lost its leader calls an election (`lan`).
pub fn election_window() -> (Duration, Duration) {
    raft::Timing::lan().election_window()
}

/// The longest short freeze: half the earliest election, so a follower thawed after it
/// has had a heartbeat well within the election timeout, even on a slow machine.
pub fn short_freeze_max() -> Duration {
    election_window().0 / 2
}

/// The faults of `seed` over `duration`: the kinds in a seeded order, cycled, each
/// episode followed by a healthy gap; nothing is faulted at `duration`.
pub fn schedule(seed: u64, duration: Duration) -> Vec<Episode> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut kinds = KINDS;
    kinds.shuffle(&mut rng);
    let mut episodes = Vec::new();
    let mut t = FIRST_FAULT;
    for kind in kinds.iter().cycle() {
        let episode = episode(*kind, t, &mut rng);
        if episode.end() > duration {
            break;
        }
        t = episode.end() + ms(&mut rng, 500, 1500);
        episodes.push(episode);
    }
    episodes
}

fn ms(rng: &mut StdRng, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(rng.gen_range(lo..=hi))
}

fn any_follower(rng: &mut StdRng) -> Who {
    Who::Follower(rng.gen_range(0..NODES - 1))
}

/// One episode of `kind` starting at `t`.
fn episode(kind: Kind, t: Duration, rng: &mut StdRng) -> Episode {
    let (_, elected_by) = election_window();
    let step = |at, action| Step { at, action };
    let steps = match kind {
        Kind::Split => {
            let minority = Who::Node(rng.gen_range(0..NODES));
            let hold = ms(rng, 1500, 4000);
            vec![
                step(t, Action::Split(vec![minority])),
                step(t + hold, Action::HealAll),
            ]
        }
        Kind::IsolatedLeader => {
            // Past the election window by enough for a new leader to take writes.
            let hold = elected_by + ms(rng, 1500, 3000);
            vec![
                step(t, Action::Split(vec![Who::Leader])),
                step(t + hold, Action::HealAll),
            ]
        }
        Kind::OneWay => {
            let follower = any_follower(rng);
            let (from, to) = if rng.gen_bool(0.5) {
                (Who::Leader, follower)
            } else {
                (follower, Who::Leader)
            };
            let hold = ms(rng, 1500, 4000);
            vec![
                step(t, Action::CutOneWay { from, to }),
                step(t + hold, Action::HealAll),
            ]
        }
        Kind::Flap => {
            let (a, b) = (Who::Leader, any_follower(rng));
            let mut steps = Vec::new();
            let mut at = t;
            for _ in 0..rng.gen_range(3..=6) {
                steps.push(step(at, Action::Cut(a, b)));
                at += ms(rng, 100, 700);
                steps.push(step(at, Action::Heal(a, b)));
                at += ms(rng, 100, 500);
            }
            steps.push(step(at, Action::HealAll));
            steps
        }
        Kind::ShortFreeze => {
            let who = any_follower(rng);
            let max = short_freeze_max().as_millis() as u64;
            let hold = ms(rng, max / 3, max);
            vec![
                step(t, Action::Freeze(who)),
                step(t + hold, Action::Thaw(who)),
            ]
        }
        Kind::LongFreeze => {
            let who = if rng.gen_bool(0.5) {
                Who::Leader
            } else {
                any_follower(rng)
            };
            let hold = elected_by + ms(rng, 500, 2500);
            vec![
                step(t, Action::Freeze(who)),
                step(t + hold, Action::Thaw(who)),
            ]
        }
    };
    Episode { kind, steps }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    const SECS: Duration = Duration::from_secs(18);

    /// What is faulted after `steps`: directed cuts (by role) and frozen nodes.
    fn replay(steps: &[Step]) -> (BTreeSet<(Who, Who)>, BTreeSet<Who>) {
        let mut cuts = BTreeSet::new();
        let mut frozen = BTreeSet::new();
        for s in steps {
            match &s.action {
                Action::Split(side) => {
                    for w in side {
                        // "the others", symbolically.
                        cuts.insert((*w, Who::Node(usize::MAX)));
                        cuts.insert((Who::Node(usize::MAX), *w));
                    }
                }
                Action::CutOneWay { from, to } => {
                    cuts.insert((*from, *to));
                }
                Action::Cut(a, b) => {
                    cuts.insert((*a, *b));
                    cuts.insert((*b, *a));
                }
                Action::Heal(a, b) => {
                    cuts.remove(&(*a, *b));
                    cuts.remove(&(*b, *a));
                }
                Action::HealAll => cuts.clear(),
                Action::Freeze(w) => assert!(frozen.insert(*w), "{w:?} frozen twice"),
                Action::Thaw(w) => assert!(frozen.remove(w), "{w:?} thawed while running"),
            }
        }
        (cuts, frozen)
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        for seed in [0, 1, 42, u64::MAX] {
            assert_eq!(schedule(seed, SECS), schedule(seed, SECS));
        }
        let distinct: BTreeSet<String> = (0..20)
            .map(|seed| format!("{:?}", schedule(seed, SECS)))
            .collect();
        assert!(distinct.len() > 15, "seeds barely change the schedule");
    }

    #[test]
    fn every_episode_undoes_its_fault_before_the_next_starts_and_the_schedule_ends_healed() {
        for seed in 0..200 {
            let episodes = schedule(seed, SECS);
            assert!(
                episodes.len() >= 3,
                "seed {seed}: {} episodes",
                episodes.len()
            );
            let mut previous_end = Duration::ZERO;
            for e in &episodes {
                assert!(
                    e.start() > previous_end,
                    "seed {seed}: overlapping episodes"
                );
                assert!(
                    e.steps.windows(2).all(|w| w[0].at <= w[1].at),
                    "seed {seed}: steps out of order"
                );
                let (cuts, frozen) = replay(&e.steps);
                assert!(cuts.is_empty() && frozen.is_empty(), "seed {seed}: {e:?}");
                previous_end = e.end();
            }
            assert!(previous_end <= SECS, "seed {seed}: runs past the duration");
        }
    }

    #[test]
    fn freezes_are_shorter_than_an_election_or_longer_than_its_window() {
        let (earliest, latest) = election_window();
        for seed in 0..200 {
            for e in schedule(seed, SECS) {
                let held = e.end() - e.start();
                match e.kind {
                    Kind::ShortFreeze => assert!(held <= earliest / 2, "{e:?}"),
                    Kind::LongFreeze | Kind::IsolatedLeader => assert!(held > latest, "{e:?}"),
                    _ => {}
                }
                if e.kind == Kind::ShortFreeze {
                    assert!(
                        matches!(e.steps[0].action, Action::Freeze(Who::Follower(_))),
                        "a short freeze is of a follower: {e:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_few_seeds_cover_every_kind_of_fault() {
        let seen: BTreeSet<Kind> = (0..10)
            .flat_map(|seed| schedule(seed, SECS))
            .map(|e| e.kind)
            .collect();
        assert_eq!(seen, KINDS.into_iter().collect());
    }
}

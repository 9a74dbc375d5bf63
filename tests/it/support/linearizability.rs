//! Linearizability checker for register / compare-and-swap histories.
//!
//! A history is a list of client operations (reads, blind writes and CAS) on
//! string keys, each with an invocation time and, when known, a return time.
//! Every key is an independent register that starts absent. Because
//! linearizability is compositional (P-compositionality), the history is split
//! by key and each key is checked on its own. For one key we run the Wing &
//! Gong / Lowe (WGL) search as done by porcupine: call and return events are
//! kept in a time-sorted doubly linked list; the search repeatedly tries to
//! linearize a pending call whose model step is legal, backtracks when it hits
//! the return of an op it has not linearized, and memoizes
//! (linearized-set bitset, register state) pairs so no configuration is
//! explored twice. Reads whose outcome is unknown are dropped. Writes and CAS
//! whose outcome is unknown get a return time of +infinity and may stay
//! un-linearized (never took effect); a linearized unknown CAS must succeed,
//! since a failed CAS is a no-op. The search succeeds once every op with a
//! known return is linearized. Equal timestamps count as overlapping.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// What an operation did (and, when it returned, observed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpKind {
    /// Read the key; `None` means the key was absent.
    Read { result: Option<String> },
    /// Unconditionally set the key.
    Write { value: String },
    /// Set the key to `new` iff it currently equals `expected`
    /// (`None` = "create only if absent"). `succeeded` is ignored when the
    /// outcome is unknown.
    Cas {
        expected: Option<String>,
        new: String,
        succeeded: bool,
    },
}

/// One client operation in a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub client: u64,
    pub key: String,
    /// Monotonic nanoseconds at invocation.
    pub call: u64,
    /// Monotonic nanoseconds at return; `None` = outcome unknown.
    pub ret: Option<u64>,
    pub kind: OpKind,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<String>| {
            v.as_ref()
                .map_or("absent".to_string(), |s| format!("{s:?}"))
        };
        write!(f, "client {} ", self.client)?;
        match &self.kind {
            OpKind::Read { result } => write!(f, "read -> {}", show(result))?,
            OpKind::Write { value } => write!(f, "write({value:?})")?,
            OpKind::Cas {
                expected,
                new,
                succeeded,
            } => {
                let outcome = match (self.ret, succeeded) {
                    (None, _) => "?",
                    (Some(_), true) => "ok",
                    (Some(_), false) => "failed",
                };
                write!(f, "cas({} -> {new:?}) {outcome}", show(expected))?;
            }
        }
        match self.ret {
            Some(ret) => write!(f, " [{}, {ret}]", self.call),
            None => write!(f, " [{}, ?]", self.call),
        }
    }
}

/// A key whose sub-history is not linearizable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub key: String,
    /// Human-readable excerpt of the ops that could not be linearized.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "history of key {:?} is not linearizable: {}",
            self.key, self.message
        )
    }
}

impl std::error::Error for Violation {}

/// Checks a whole multi-key history, key by key (in key order).
pub fn check(history: &[Operation]) -> Result<(), Violation> {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    for (key, ops) in by_key {
        check_register(&ops).map_err(|message| Violation {
            key: key.to_string(),
            message,
        })?;
    }
    Ok(())
}

/// Checks ops as a single register; the `key` field is ignored.
pub fn check_key(ops: &[Operation]) -> bool {
    check_register(&ops.iter().collect::<Vec<_>>()).is_ok()
}

/// Register state: 0 = absent, 1 = any value that no read or CAS observes
/// (all such values behave identically, so merging them helps the cache),
/// `i + 2` = interned observed value `i`.
type State = u32;

enum Step {
    Read(State),
    Write(State),
    Cas {
        expected: State,
        new: State,
        succeeded: bool,
    },
}

impl Step {
    fn apply(&self, state: State) -> Option<State> {
        match *self {
            Step::Read(v) => (state == v).then_some(state),
            Step::Write(v) => Some(v),
            Step::Cas {
                expected,
                new,
                succeeded: true,
            } => (state == expected).then_some(new),
            Step::Cas {
                expected,
                succeeded: false,
                ..
            } => (state != expected).then_some(state),
        }
    }
}

struct Op<'a> {
    step: Step,
    call: u64,
    /// Return time; `u64::MAX` (+infinity) when the outcome is unknown.
    ret: u64,
    src: &'a Operation,
}

const HEAD: usize = 0;
const TAIL: usize = 1;

/// Index-based doubly linked list of the known ops' call/return events,
/// sorted by time (dancing links: lifted nodes keep their own pointers).
struct Events {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// (op index, is_call) per node; sentinels hold `usize::MAX`.
    node: Vec<(usize, bool)>,
    call_node: Vec<usize>,
    ret_node: Vec<usize>,
}

impl Events {
    fn new(known: &[Op<'_>]) -> Self {
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(known.len() * 2);
        for (i, op) in known.iter().enumerate() {
            events.push((op.call, false, i));
            events.push((op.ret, true, i));
        }
        // Calls sort before returns at equal times: ties count as overlapping.
        events.sort_unstable();
        let n = events.len() + 2;
        let mut list = Events {
            next: vec![TAIL; n],
            prev: vec![HEAD; n],
            node: vec![(usize::MAX, false); n],
            call_node: vec![0; known.len()],
            ret_node: vec![0; known.len()],
        };
        let mut last = HEAD;
        for (pos, &(_, is_ret, op)) in events.iter().enumerate() {
            let id = pos + 2;
            list.node[id] = (op, !is_ret);
            if is_ret {
                list.ret_node[op] = id
            } else {
                list.call_node[op] = id
            }
            list.next[last] = id;
            list.prev[id] = last;
            last = id;
        }
        list.next[last] = TAIL;
        list.prev[TAIL] = last;
        list
    }

    fn unlink(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        self.next[p] = n;
        self.prev[n] = p;
    }

    fn relink(&mut self, x: usize) {
        let (p, n) = (self.prev[x], self.next[x]);
        self.next[p] = x;
        self.prev[n] = x;
    }

    fn lift(&mut self, op: usize) {
        self.unlink(self.call_node[op]);
        self.unlink(self.ret_node[op]);
    }

    fn unlift(&mut self, op: usize) {
        self.relink(self.ret_node[op]);
        self.relink(self.call_node[op]);
    }

    /// First return node: every candidate call must start at or before it.
    fn window_end(&self) -> usize {
        let mut n = self.next[HEAD];
        while self.node[n].1 {
            n = self.next[n];
        }
        n
    }
}

/// Deepest point the search reached before getting stuck (for reporting).
struct Stuck {
    done: usize,
    blocked: usize,
    state: State,
    recent: Vec<usize>,
    candidates: Vec<usize>,
}

fn check_register<'a>(history: &[&'a Operation]) -> Result<(), String> {
    let observed: HashSet<&str> = (history.iter())
        .filter_map(|o| match &o.kind {
            OpKind::Read { result } if o.ret.is_some() => result.as_deref(),
            OpKind::Cas { expected, .. } => expected.as_deref(),
            _ => None,
        })
        .collect();
    let mut interned: HashMap<&str, State> = HashMap::new();
    let mut values: Vec<&str> = Vec::new();
    let mut intern = |v: Option<&'a String>| -> State {
        match v {
            None => 0,
            Some(v) if !observed.contains(v.as_str()) => 1,
            Some(v) => *interned.entry(v.as_str()).or_insert_with(|| {
                values.push(v.as_str());
                State::try_from(values.len() + 1).expect("fewer than 2^32 distinct values")
            }),
        }
    };
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for &src in history {
        let step = match &src.kind {
            OpKind::Read { .. } if src.ret.is_none() => continue,
            OpKind::Read { result } => Step::Read(intern(result.as_ref())),
            OpKind::Write { value } => Step::Write(intern(Some(value))),
            OpKind::Cas {
                expected,
                new,
                succeeded,
            } => Step::Cas {
                expected: intern(expected.as_ref()),
                new: intern(Some(new)),
                // An unknown CAS that linearizes must have succeeded: a failed
                // CAS is a no-op, i.e. the same as never linearizing it.
                succeeded: src.ret.is_none() || *succeeded,
            },
        };
        // A bogus ret < call is clamped to call.
        match src.ret {
            Some(ret) => known.push(Op {
                step,
                call: src.call,
                ret: ret.max(src.call),
                src,
            }),
            None => unknown.push(Op {
                step,
                call: src.call,
                ret: u64::MAX,
                src,
            }),
        }
    }
    unknown.sort_by_key(|o| o.call);
    let n_known = known.len();
    known.extend(unknown);
    let Some(stuck) = search(&known, n_known) else {
        return Ok(());
    };

    let ops = known;
    let show_state = |s: State| match s {
        0 => "absent".to_string(),
        1 => "holding a value no op observed".to_string(),
        s => format!("{:?}", values[s as usize - 2]),
    };
    let list = |ids: &[usize]| {
        ids.iter()
            .map(|&i| ops[i].src.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    };
    Err(format!(
        "cannot linearize {{{}}}: the longest partial linearization covers {}/{n_known} completed ops and \
         leaves the register {}; last linearized: [{}]; pending candidates: [{}]",
        ops[stuck.blocked].src,
        stuck.done,
        show_state(stuck.state),
        list(&stuck.recent),
        list(&stuck.candidates),
    ))
}

/// One linearization step on the search stack.
struct Frame {
    op: usize,
    /// Register state before `op`.
    prev: State,
    /// Index of the next candidate to try after this one is backtracked, or
    /// `None` if `op` was committed without branching (see `search`).
    resume: Option<usize>,
}

struct Search<'s, 'a> {
    ops: &'s [Op<'a>],
    n_known: usize,
    events: Events,
    /// Known-op bitset with the register state appended as a last word.
    key: Vec<u64>,
    unknown_bits: Vec<u64>,
    /// (known bitset + state) -> antichain of unknown-op sets seen with it.
    cache: HashMap<Vec<u64>, Vec<Vec<u64>>>,
    stack: Vec<Frame>,
    state: State,
    done: usize,
}

fn subset(a: &[u64], b: &[u64]) -> bool {
    a.iter().zip(b).all(|(x, y)| x & !y == 0)
}

impl Search<'_, '_> {
    fn toggle(&mut self, op: usize, state: State) {
        let (bits, i) = match op.checked_sub(self.n_known) {
            None => (&mut self.key, op),
            Some(u) => (&mut self.unknown_bits, u),
        };
        bits[i / 64] ^= 1 << (i % 64);
        let last = self.key.len() - 1;
        self.key[last] = u64::from(state);
    }

    /// Candidates of the current configuration, in a deterministic order: the
    /// known calls before the first pending known return, most likely next
    /// first (earliest interval midpoint), then the unknown ops called by then.
    fn candidates(&self) -> Vec<usize> {
        let end = self.events.window_end();
        let mut out = Vec::new();
        let mut n = self.events.next[HEAD];
        while n != end {
            out.push(self.events.node[n].0);
            n = self.events.next[n];
        }
        let ops = self.ops;
        if end == TAIL {
            return out; // every known op is linearized
        }
        out.sort_by_key(|&o| (ops[o].call / 2 + ops[o].ret / 2, o));
        let horizon = ops[self.events.node[end].0].ret;
        out.extend(
            (self.n_known..ops.len())
                .take_while(|&u| ops[u].call <= horizon)
                .filter(|&u| {
                    let i = u - self.n_known;
                    self.unknown_bits[i / 64] & (1 << (i % 64)) == 0
                }),
        );
        out
    }

    /// Linearizes `op` next unless that is illegal or the resulting
    /// configuration is dominated by one already visited.
    fn try_push(&mut self, op: usize, resume: Option<usize>) -> bool {
        let Some(new_state) = self.ops[op].step.apply(self.state) else {
            return false;
        };
        self.toggle(op, new_state);
        let seen = self.cache.get_mut(self.key.as_slice());
        if seen
            .as_ref()
            .is_some_and(|sets| sets.iter().any(|s| subset(s, &self.unknown_bits)))
        {
            self.toggle(op, self.state);
            return false;
        }
        match seen {
            Some(sets) => {
                sets.retain(|s| !subset(&self.unknown_bits, s));
                sets.push(self.unknown_bits.clone());
            }
            None => {
                self.cache
                    .insert(self.key.clone(), vec![self.unknown_bits.clone()]);
            }
        }
        self.stack.push(Frame {
            op,
            prev: self.state,
            resume,
        });
        self.state = new_state;
        if op < self.n_known {
            self.events.lift(op);
            self.done += 1;
        }
        true
    }

    fn pop(&mut self) -> Option<Frame> {
        let frame = self.stack.pop()?;
        self.state = frame.prev;
        self.toggle(frame.op, frame.prev);
        if frame.op < self.n_known {
            self.events.unlift(frame.op);
            self.done -= 1;
        }
        Some(frame)
    }

    fn stuck(&self, candidates: &[usize]) -> Stuck {
        let recent = self
            .stack
            .iter()
            .rev()
            .take(3)
            .rev()
            .map(|f| f.op)
            .collect();
        Stuck {
            done: self.done,
            blocked: self.events.node[self.events.window_end()].0,
            state: self.state,
            recent,
            candidates: candidates.iter().copied().take(8).collect(),
        }
    }
}

/// WGL search over `ops`, whose first `n_known` entries have known returns
/// and the rest (unknown outcome) are sorted by call time. Returns `None` if
/// linearizable, otherwise the deepest point where the search got stuck.
///
/// Two prunings keep this fast, both sound:
/// - The cache maps (known-op bitset, state) to the unknown-op sets seen with
///   it; a configuration is skipped if a visited one has a subset of its
///   unknown ops, since any completion of it also completes that one.
/// - A legal candidate that leaves the state unchanged (a read, a failed CAS)
///   can be moved to the front of any completion, so it is committed without
///   trying alternatives; if that fails, the configuration fails.
fn search(ops: &[Op<'_>], n_known: usize) -> Option<Stuck> {
    let mut s = Search {
        ops,
        n_known,
        events: Events::new(&ops[..n_known]),
        key: vec![0; n_known.div_ceil(64) + 1],
        unknown_bits: vec![0; (ops.len() - n_known).div_ceil(64)],
        cache: HashMap::new(),
        stack: Vec::new(),
        state: 0,
        done: 0,
    };
    let mut stuck: Option<Stuck> = None;
    let (mut cands, mut next, mut fresh) = (s.candidates(), 0, true);
    while s.done < n_known {
        if fresh {
            let state = s.state;
            let preserving = |&&o: &&usize| o < n_known && ops[o].step.apply(state) == Some(state);
            let forced = cands
                .iter()
                .filter(preserving)
                .any(|&o| s.try_push(o, None));
            (cands, next, fresh) = if forced {
                (s.candidates(), 0, true)
            } else {
                (cands, 0, false)
            };
        } else if let Some(&op) = cands.get(next) {
            next += 1;
            if s.try_push(op, Some(next)) {
                (cands, next, fresh) = (s.candidates(), 0, true);
            }
        } else {
            if stuck.as_ref().is_none_or(|st| s.done > st.done) {
                stuck = Some(s.stuck(&cands));
            }
            let resume = loop {
                match s.pop() {
                    None => return stuck,
                    Some(Frame {
                        resume: Some(r), ..
                    }) => break r,
                    Some(_) => {}
                }
            };
            (cands, next) = (s.candidates(), resume);
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn op(client: u64, call: u64, ret: Option<u64>, kind: OpKind) -> Operation {
        Operation {
            client,
            key: "k".into(),
            call,
            ret,
            kind,
        }
    }
    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }
    fn r(client: u64, call: u64, ret: u64, result: Option<String>) -> Operation {
        op(client, call, Some(ret), OpKind::Read { result })
    }
    fn w(client: u64, call: u64, ret: Option<u64>, value: &str) -> Operation {
        op(
            client,
            call,
            ret,
            OpKind::Write {
                value: value.into(),
            },
        )
    }
    fn cas(
        c: u64,
        call: u64,
        ret: Option<u64>,
        expected: Option<String>,
        new: &str,
        ok: bool,
    ) -> Operation {
        op(
            c,
            call,
            ret,
            OpKind::Cas {
                expected,
                new: new.into(),
                succeeded: ok,
            },
        )
    }

    #[test]
    fn sequential_valid_history_passes() {
        let h = vec![
            r(1, 0, 1, None),
            cas(1, 2, Some(3), None, "a", true),
            cas(2, 4, Some(5), None, "b", false),
            r(2, 6, 7, s("a")),
            w(1, 8, Some(9), "b"),
            cas(2, 10, Some(11), s("a"), "c", false),
            cas(1, 12, Some(13), s("b"), "c", true),
            r(1, 14, 15, s("c")),
        ];
        assert!(check_key(&h));
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn stale_read_after_completed_write_fails() {
        let h = vec![
            w(1, 0, Some(10), "a"),
            w(1, 20, Some(30), "b"),
            r(2, 40, 50, s("a")),
        ];
        assert!(!check_key(&h));
        let v = check(&h).unwrap_err();
        assert_eq!(v.key, "k");
        assert!(v.message.contains("read -> \"a\""), "{}", v.message);
        assert!(v.to_string().contains("key \"k\""), "{v}");
    }

    #[test]
    fn concurrent_write_and_read_may_see_old_or_new() {
        for seen in ["a", "b"] {
            let h = vec![
                w(1, 0, Some(10), "a"),
                w(1, 20, Some(40), "b"),
                r(2, 25, 35, s(seen)),
            ];
            assert!(check_key(&h), "read of {seen}");
        }
        // ...but not new-then-old, and equal timestamps count as overlapping.
        let h = vec![
            w(1, 0, Some(10), "a"),
            w(1, 20, Some(40), "b"),
            r(2, 25, 30, s("b")),
            r(2, 31, 35, s("a")),
        ];
        assert!(!check_key(&h));
        assert!(check_key(&[w(1, 0, Some(10), "a"), r(2, 10, 12, s("a"))]));
    }

    #[test]
    fn cas_succeeding_twice_from_same_value_fails() {
        let seq = vec![
            w(1, 0, Some(10), "a"),
            cas(1, 20, Some(30), s("a"), "b", true),
            cas(2, 40, Some(50), s("a"), "c", true),
        ];
        assert!(!check_key(&seq));
        let conc = vec![
            w(1, 0, Some(10), "a"),
            cas(1, 20, Some(50), s("a"), "b", true),
            cas(2, 20, Some(50), s("a"), "c", true),
        ];
        assert!(!check_key(&conc));
        let creates = vec![
            cas(1, 0, Some(9), None, "a", true),
            cas(2, 1, Some(8), None, "b", true),
        ];
        assert!(!check_key(&creates));
    }

    #[test]
    fn unknown_outcome_ops() {
        let base = || vec![w(1, 0, Some(10), "a"), w(2, 20, None, "b")];
        for (seen, ok) in [("b", true), ("a", true), ("zz", false)] {
            let mut h = base();
            h.push(r(3, 100, 110, s(seen)));
            assert_eq!(check_key(&h), ok, "read of {seen}");
        }
        // Once the unknown write is observed, it cannot be un-observed.
        let mut h = base();
        h.extend([r(3, 100, 110, s("b")), r(3, 120, 130, s("a"))]);
        assert!(!check_key(&h));
        // Unknown CAS: may take effect only if its expectation held.
        let mut h = vec![w(1, 0, Some(10), "a"), cas(2, 20, None, s("a"), "b", false)];
        h.push(r(3, 100, 110, s("b")));
        assert!(check_key(&h));
        h[1] = cas(2, 20, None, s("x"), "b", true);
        assert!(!check_key(&h));
        // Reads with unknown outcome are dropped.
        assert!(check_key(&[op(
            1,
            0,
            None,
            OpKind::Read { result: s("nope") }
        )]));
    }

    #[test]
    fn read_of_value_never_written_fails() {
        let h = vec![w(1, 0, Some(10), "a"), r(2, 5, 15, s("ghost"))];
        assert!(!check_key(&h));
        assert!(!check_key(&[r(1, 0, 1, s("ghost"))]));
    }

    #[test]
    fn keys_are_checked_independently() {
        let mut h = vec![w(1, 0, Some(10), "a"), r(2, 20, 30, s("a"))];
        let mut other = vec![w(3, 0, Some(10), "x"), r(4, 20, 30, s("a"))];
        for o in &mut other {
            o.key = "other".into();
        }
        assert_eq!(check(&h), Ok(()));
        h.extend(other);
        let v = check(&h).unwrap_err();
        assert_eq!(v.key, "other");
        assert!(!v.message.is_empty());
        let bad = Violation {
            key: v.key.clone(),
            message: v.message.clone(),
        };
        assert_eq!(bad, v);
    }

    struct Lcg(u64);
    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    /// A truly linearizable history: each op takes effect atomically at a
    /// random point inside its interval; per-client ops are sequential.
    fn simulate(seed: u64, clients: u64, per_client: usize) -> Vec<Operation> {
        let mut rng = Lcg(seed);
        let mut slots = Vec::new(); // (linearization point, call, ret, client, unknown)
        for client in 0..clients {
            let mut t = rng.below(50);
            for _ in 0..per_client {
                let call = t + rng.below(20);
                let dur = 1 + rng.below(100);
                slots.push((
                    call + rng.below(dur + 1),
                    call,
                    call + dur,
                    client,
                    rng.below(40) == 0,
                ));
                t = call + dur + 1;
            }
        }
        slots.sort_unstable();
        let (mut state, mut written): (Option<String>, Vec<String>) = (None, Vec::new());
        let mut history = Vec::new();
        for (i, &(_, call, ret, client, unknown)) in slots.iter().enumerate() {
            let value = format!("v{i}");
            let takes_effect = !unknown || rng.below(2) == 0;
            let kind = match rng.below(10) {
                0..=3 => OpKind::Read {
                    result: state.clone(),
                },
                4..=6 => {
                    if takes_effect {
                        state = Some(value.clone());
                    }
                    OpKind::Write { value }
                }
                _ => {
                    let expected = match rng.below(4) {
                        0 if !written.is_empty() => {
                            Some(written[rng.below(written.len() as u64) as usize].clone())
                        }
                        1 => None,
                        _ => state.clone(),
                    };
                    let succeeded = expected == state && takes_effect;
                    if succeeded {
                        state = Some(value.clone());
                    }
                    OpKind::Cas {
                        expected,
                        new: value,
                        succeeded,
                    }
                }
            };
            if let OpKind::Write { value } | OpKind::Cas { new: value, .. } = &kind {
                written.push(value.clone());
            }
            history.push(Operation {
                client,
                key: "k".into(),
                call,
                ret: (!unknown).then_some(ret),
                kind,
            });
        }
        history.sort_by_key(|o| o.call);
        history
    }

    fn known_write(o: &Operation) -> Option<(u64, u64, String)> {
        match (&o.kind, o.ret) {
            (OpKind::Write { value }, Some(ret)) => Some((o.call, ret, value.clone())),
            _ => None,
        }
    }

    #[test]
    fn randomized_linearizable_history_passes_and_mutations_fail() {
        for seed in 1..=6 {
            let h = simulate(seed, 8, 150);
            assert_eq!(check(&h), Ok(()), "seed {seed}");
            let reads: Vec<usize> = (0..h.len())
                .filter(|&i| h[i].ret.is_some() && matches!(h[i].kind, OpKind::Read { .. }))
                .collect();
            let writes: Vec<(u64, u64, String)> = h.iter().filter_map(known_write).collect();

            // Mutation 1: an early read returns a value first written after it returned.
            let i = reads[reads.len() / 4];
            let (_, _, future) = writes.iter().find(|wr| wr.0 > h[i].ret.unwrap()).unwrap();
            let mut bad = h.clone();
            bad[i].kind = OpKind::Read {
                result: Some(future.clone()),
            };
            let v = check(&bad).unwrap_err();
            assert!(v.message.contains("cannot linearize"), "{v}");

            // Mutation 2: a late read returns a value overwritten by a write
            // that completed strictly before the read began.
            let i = reads[reads.len() * 3 / 4];
            let (w2_call, _, _) = writes.iter().rev().find(|wr| wr.1 < h[i].call).unwrap();
            let (_, _, old) = writes.iter().rev().find(|wr| wr.1 < *w2_call).unwrap();
            assert_ne!(
                h[i].kind,
                OpKind::Read {
                    result: Some(old.clone())
                }
            );
            let mut bad = h.clone();
            bad[i].kind = OpKind::Read {
                result: Some(old.clone()),
            };
            assert!(check(&bad).is_err(), "seed {seed}");
        }
    }

    #[test]
    fn randomized_high_concurrency_many_keys() {
        // Sized for a debug build on a slow machine; speed is a benchmark's job, not a test's.
        let mut all = Vec::new();
        for (n, seed) in [(16, 11), (8, 12)] {
            let mut h = simulate(seed, n, 1000 / n as usize);
            for o in &mut h {
                o.key = format!("key-{seed}");
            }
            all.extend(h);
        }
        assert_eq!(check(&all), Ok(()));
    }
}

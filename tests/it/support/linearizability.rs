//! Linearizability checker for register / compare-and-swap histories.
//!
//! A history is a list of client operations (reads, blind writes and CAS) on
//! string keys, each with an invocation time and, when known, a return time.
//! Every key is an independent register that starts absent. Linearizability is
//! compositional (P-compositionality), so the history is split by key and each
//! key is checked on its own with the Wing & Gong / Lowe (WGL) search, as in
//! porcupine: repeatedly linearize a pending op whose model step is legal and
//! that was called before the first pending return, backtrack when none is
//! left, and memoize (linearized-set bitset, register state) so that no
//! configuration is explored twice. Reads with an unknown outcome are dropped;
//! writes and CAS with an unknown outcome return at +infinity and may stay
//! un-linearized (never took effect); such a CAS, if linearized, succeeds (a
//! failed CAS is a no-op). The search succeeds once every op with a known
//! return is linearized. Equal timestamps count as overlapping. Several sound
//! prunings (see `search`) keep it fast on histories of thousands of ops with
//! dozens of concurrent clients; a history that is *not* linearizable needs
//! an exhaustive search up to the violation, which can take seconds there.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

/// What an operation did (and, when it returned, observed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpKind {
    /// Read the key; `None` means the key was absent.
    Read { result: Option<String> },
    /// Unconditionally set the key.
    Write { value: String },
    /// Set the key to `new` iff it equals `expected` (`None` = "create only if
    /// absent"). `succeeded` is ignored when the outcome is unknown.
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
        let show = |v: &Option<String>| v.as_ref().map_or("absent".into(), |s| format!("{s:?}"));
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
    /// Where the search got stuck, naming the ops involved.
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

/// Checks `ops` as a single register; their `key` fields are ignored.
pub fn check_key(ops: &[Operation]) -> bool {
    check_register(&ops.iter().collect::<Vec<_>>()).is_ok()
}

/// Register state: 0 = absent, 1 = any value that no read or CAS observes
/// (such values behave alike, so merging them helps the cache), `i + 2` =
/// interned observed value `i`.
type State = u32;

#[derive(Clone, Copy)]
enum Step {
    Read(State),
    Write(State),
    /// Expected, new, succeeded.
    Cas(State, State, bool),
}

impl Step {
    fn apply(self, state: State) -> Option<State> {
        match self {
            Step::Read(v) => (state == v).then_some(state),
            Step::Write(v) => Some(v),
            Step::Cas(expected, new, true) => (state == expected).then_some(new),
            Step::Cas(expected, _, false) => (state != expected).then_some(state),
        }
    }

    /// The value the register must hold when this op takes effect.
    fn needs(self) -> Option<State> {
        match self {
            Step::Read(v) | Step::Cas(v, _, true) => Some(v),
            _ => None,
        }
    }

    /// The value this op leaves in the register, if it changes it.
    fn sets(self) -> Option<State> {
        match self {
            Step::Write(v) | Step::Cas(_, v, true) => Some(v),
            _ => None,
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

fn check_register<'a>(history: &[&'a Operation]) -> Result<(), String> {
    let observed: HashSet<&str> = (history.iter())
        .filter_map(|o| match &o.kind {
            OpKind::Read { result } if o.ret.is_some() => result.as_deref(),
            OpKind::Cas { expected, .. } => expected.as_deref(),
            _ => None,
        })
        .collect();
    let (mut interned, mut values) = (HashMap::new(), Vec::new());
    let mut intern = |v: Option<&'a String>| match v {
        None => 0,
        Some(v) if !observed.contains(v.as_str()) => 1,
        Some(v) => *interned.entry(v.as_str()).or_insert_with(|| {
            values.push(v.as_str());
            State::try_from(values.len() + 1).expect("fewer than 2^32 distinct values")
        }),
    };
    let (mut ops, mut unknown) = (Vec::new(), Vec::new());
    for &src in history {
        let step = match &src.kind {
            OpKind::Read { .. } if src.ret.is_none() => continue,
            OpKind::Read { result } => Step::Read(intern(result.as_ref())),
            OpKind::Write { value } => Step::Write(intern(Some(value))),
            OpKind::Cas {
                expected,
                new,
                succeeded,
            } => {
                let ok = src.ret.is_none() || *succeeded;
                Step::Cas(intern(expected.as_ref()), intern(Some(new)), ok)
            }
        };
        let op = |ret| Op {
            step,
            call: src.call,
            ret,
            src,
        };
        match src.ret {
            Some(ret) => ops.push(op(ret.max(src.call))), // clamp a bogus ret < call
            None => unknown.push(op(u64::MAX)),
        }
    }
    ops.sort_by_key(|o| o.call);
    unknown.sort_by_key(|o| o.call);
    let n_known = ops.len();
    ops.extend(unknown);
    let Some(stuck) = search(&ops, n_known, values.len() + 2) else {
        return Ok(());
    };

    let state = match stuck.state {
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
    let then = match stuck.waiting {
        Some((op, true)) => format!(
            "{} can no longer take effect: nothing pending sets the value it needs in time",
            ops[op].src
        ),
        waiting => format!(
            "{} must take effect before any op that starts after it returns{}; no pending op can \
             go next: [{}]",
            ops[stuck.blocked].src,
            waiting.map_or(String::new(), |(op, _)| format!(
                ", but {} still needs the current value",
                ops[op].src
            )),
            list(&stuck.candidates),
        ),
    };
    Err(format!(
        "cannot linearize: the longest partial linearization covers {}/{n_known} completed ops, ends with [{}] and \
         leaves the register {state}; then {then}",
        stuck.done,
        list(&stuck.recent),
    ))
}

/// The deepest dead end of the search, for the report.
struct Stuck {
    done: usize,
    state: State,
    recent: Vec<usize>,
    candidates: Vec<usize>,
    /// The pending known op that returns first.
    blocked: usize,
    /// A pending op needing a value the register can no longer come to hold
    /// (`true`), or needing the current value, which nothing could set again.
    waiting: Option<(usize, bool)>,
}

/// One linearization step on the search stack: the op, the register state
/// before it, and the index of the next candidate to try once it is
/// backtracked (`None` if it was committed without branching).
struct Frame(usize, State, Option<usize>);

/// Search state. Known ops (indices `..n_known`) are sorted by call, unknown
/// ones (indices `n_known..`) too.
struct Search<'s, 'a> {
    ops: &'s [Op<'a>],
    n_known: usize,
    known_bits: Vec<u64>,
    unknown_bits: Vec<u64>,
    /// All known ops before `frontier` are linearized and none after
    /// `reach[frontier]` (the last op called before `frontier` returns), so
    /// the bits in between identify the linearized set.
    frontier: usize,
    reach: Vec<usize>,
    /// Scratch cache key: frontier, state, bits from `frontier`'s word on.
    key: Vec<u64>,
    /// Cache key -> antichain of the unknown-op sets seen with it.
    cache: HashMap<Box<[u64]>, Vec<Box<[u64]>>>,
    stack: Vec<Frame>,
    state: State,
    done: usize,
    /// Per value: [pending known ops needing it, pending ops other than
    /// unknown-outcome CAS setting it, pending known failed CAS expecting it].
    counts: Vec<[u32; 3]>,
    /// Values needed by a pending known op but with no such setter left.
    needy: BTreeSet<State>,
    /// Per value: the known ops needing it and the ops that may set it, by
    /// index; whether an unknown-outcome CAS expects it.
    consumers: Vec<Vec<usize>>,
    setters: Vec<Vec<usize>>,
    cas_expects: Vec<bool>,
    stuck: Option<Stuck>,
}

/// The tail of the sorted `list` from `first` on.
fn after(list: &[usize], first: usize) -> &[usize] {
    &list[list.partition_point(|&o| o < first)..]
}

fn subset(a: &[u64], b: &[u64]) -> bool {
    a.iter().zip(b).all(|(x, y)| x & !y == 0)
}

impl<'s, 'a> Search<'s, 'a> {
    fn new(ops: &'s [Op<'a>], n_known: usize, values: usize) -> Self {
        let known = &ops[..n_known];
        let mut s = Search {
            ops,
            n_known,
            known_bits: vec![0; n_known.div_ceil(64)],
            unknown_bits: vec![0; (ops.len() - n_known).div_ceil(64)],
            frontier: 0,
            reach: known
                .iter()
                .map(|o| known.partition_point(|p| p.call <= o.ret) - 1)
                .collect(),
            key: Vec::new(),
            cache: HashMap::new(),
            stack: Vec::new(),
            state: 0,
            done: 0,
            counts: vec![[0; 3]; values],
            needy: BTreeSet::new(),
            consumers: vec![Vec::new(); values],
            setters: vec![Vec::new(); values],
            cas_expects: vec![false; values],
            stuck: None,
        };
        (0..ops.len()).for_each(|op| s.count(op, false));
        for (i, op) in ops.iter().enumerate() {
            if let Some(v) = op.step.sets() {
                s.setters[v as usize].push(i);
            }
            if let (true, Some(v)) = (i < n_known, op.step.needs()) {
                s.consumers[v as usize].push(i);
            }
            if let (true, Step::Cas(expected, ..)) = (i >= n_known, op.step) {
                s.cas_expects[expected as usize] = true;
            }
        }
        s
    }

    /// Updates `counts` and `needy` as `op` gets linearized (or undone).
    fn count(&mut self, op: usize, linearize: bool) {
        let (step, known) = (self.ops[op].step, op < self.n_known);
        let fails = match step {
            Step::Cas(expected, _, false) => Some(expected),
            _ => None,
        };
        let sets = step
            .sets()
            .filter(|_| known || matches!(step, Step::Write(_)));
        for (i, v) in [(0, step.needs().filter(|_| known)), (1, sets), (2, fails)] {
            let Some(v) = v else { continue };
            let c = &mut self.counts[v as usize];
            c[i] = if linearize { c[i] - 1 } else { c[i] + 1 };
            if c[0] > 0 && c[1] == 0 {
                self.needy.insert(v)
            } else {
                self.needy.remove(&v)
            };
        }
    }

    /// Whether the register may still come to hold `v` (over-approximated;
    /// `depth` bounds the chains of unknown-outcome CAS followed).
    fn viable(&self, v: State, depth: u32) -> bool {
        let by_cas = |&u: &usize| {
            !self.linearized(u)
                && self.ops[u]
                    .step
                    .needs()
                    .is_some_and(|e| self.viable(e, depth - 1))
        };
        v == self.state
            || self.counts[v as usize][1] > 0
            || depth > 0 && self.unknown_cas(v).any(by_cas)
    }

    /// The unknown-outcome CAS ops that would set `v`.
    fn unknown_cas(&self, v: State) -> impl Iterator<Item = &usize> {
        let setters = &self.setters[v as usize];
        let unknown = &setters[setters.partition_point(|&o| o < self.n_known)..];
        unknown
            .iter()
            .filter(|&&u| matches!(self.ops[u].step, Step::Cas(..)))
    }

    /// A pending known op needing `v` that returns before any pending op
    /// setting `v` is called: the register must hold `v` until it takes
    /// effect, so it is stuck if `v` is not current (and pins it if it is).
    fn strands(&self, v: State) -> Option<usize> {
        let (ops, pending) = (self.ops, |o: &&usize| !self.linearized(**o));
        let mut first: Option<usize> = None; // by return; the lists go by call
        for &o in after(&self.consumers[v as usize], self.frontier)
            .iter()
            .filter(pending)
        {
            match first {
                Some(f) if ops[o].call > ops[f].ret => break,
                Some(f) if ops[o].ret >= ops[f].ret => {}
                _ => first = Some(o),
            }
        }
        let needed_by = ops[first?].ret;
        // Setters: known ones first, by call; unknown ones after, by call.
        let mut setters = after(&self.setters[v as usize], self.frontier)
            .iter()
            .filter(pending);
        let first_known = setters.clone().next().filter(|&&o| o < self.n_known);
        let settable = |o: &usize| ops[*o].call <= needed_by;
        let settable =
            first_known.is_some_and(settable) || setters.any(|o| *o >= self.n_known && settable(o));
        first.filter(|_| !settable)
    }

    /// Whether a pending known op needs a value the register can no longer
    /// come to hold: then no completion exists.
    fn dead(&self) -> bool {
        self.needy.iter().any(|&v| !self.viable(v, 3))
    }

    fn linearized(&self, op: usize) -> bool {
        let (bits, i) = match op.checked_sub(self.n_known) {
            None => (&self.known_bits, op),
            Some(u) => (&self.unknown_bits, u),
        };
        bits[i / 64] & (1 << (i % 64)) != 0
    }

    fn toggle(&mut self, op: usize) {
        let Some(u) = op.checked_sub(self.n_known) else {
            self.known_bits[op / 64] ^= 1 << (op % 64);
            let on = self.linearized(op);
            self.done = self.done + usize::from(on) - usize::from(!on);
            self.frontier = self.frontier.min(op);
            while self.frontier < self.n_known && self.linearized(self.frontier) {
                self.frontier += 1;
            }
            return;
        };
        self.unknown_bits[u / 64] ^= 1 << (u % 64);
    }

    /// The pending known ops called before the first pending return, and
    /// the op with that return. Needs a pending known op.
    fn window(&self) -> (Vec<usize>, usize) {
        let (ops, mut out, mut first) = (self.ops, Vec::new(), self.frontier);
        // Sorted by call, so once a call is past the earliest pending return
        // seen so far, no later op can be in the window or lower that return.
        for o in self.frontier..self.n_known {
            if ops[o].call > ops[first].ret {
                break;
            } else if !self.linearized(o) {
                if ops[o].ret < ops[first].ret {
                    first = o;
                }
                out.push(o);
            }
        }
        out.retain(|&o| ops[o].call <= ops[first].ret);
        (out, first)
    }

    /// Candidates of the current configuration in a deterministic order: the
    /// window, likeliest first (earliest interval midpoint), then the unknown
    /// ops called by the first pending return, minus hopeless ones.
    fn candidates(&self) -> Vec<usize> {
        let ops = self.ops;
        let (mut out, first) = self.window();
        if self.stranded(&out) {
            return Vec::new();
        }
        // Known writes of the same value are interchangeable (swapping two in
        // a linearization keeps it valid): try only the one returning first.
        let mut writes: Vec<_> = (out.iter())
            .filter_map(|&o| match ops[o].step {
                Step::Write(v) => Some((v, ops[o].ret, o)),
                _ => None,
            })
            .collect();
        writes.sort_unstable();
        writes.dedup_by_key(|w| w.0);
        out.retain(|&o| !matches!(ops[o].step, Step::Write(_)) || writes.iter().any(|w| w.2 == o));
        out.sort_by_key(|&o| (ops[o].call / 2 + ops[o].ret / 2, o));
        let unknown = (self.n_known..ops.len()).take_while(|&u| ops[u].call <= ops[first].ret);
        out.extend(unknown.filter(|&u| !self.linearized(u) && self.observable(u)));
        // An op replacing a stranding value without consuming it is hopeless.
        if self.strands(self.state).is_some() {
            let (s, step) = (self.state, |o: usize| ops[o].step);
            out.retain(|&o| {
                step(o).sets().is_none_or(|x| x == s)
                    || o < self.n_known && step(o).needs() == Some(s)
            });
        }
        out
    }

    /// Whether an op of `window` needs a value that is not current and
    /// strands.
    fn stranded(&self, window: &[usize]) -> bool {
        let needs = |o: usize| self.ops[o].step.needs().filter(|&v| v != self.state);
        window
            .iter()
            .any(|&o| needs(o).is_some_and(|v| self.strands(v).is_some()))
    }

    /// An unknown-outcome op is worth linearizing only if a pending op could
    /// observe the value it sets (or the change away from the current one);
    /// otherwise any completion stays valid with the op left out.
    fn observable(&self, u: usize) -> bool {
        self.ops[u].step.sets().is_some_and(|x| {
            let needed = self.counts[x as usize][0] > 0 || self.cas_expects[x as usize];
            needed || self.counts[self.state as usize][2] > 0
        })
    }

    /// Linearizes `op` next unless that is illegal, hopeless or dominated by
    /// a configuration already visited.
    fn try_push(&mut self, op: usize, resume: Option<usize>) -> bool {
        // A blind write right after an unknown-outcome op would hide it: any
        // such completion stays valid with the unknown op left out.
        let after_unknown = self.stack.last().is_some_and(|f| f.0 >= self.n_known);
        if after_unknown && matches!(self.ops[op].step, Step::Write(_)) {
            return false;
        }
        let Some(new_state) = self.ops[op].step.apply(self.state) else {
            return false;
        };
        self.toggle(op);
        self.count(op, true);
        let prev = std::mem::replace(&mut self.state, new_state);
        self.stack.push(Frame(op, prev, resume));
        if self.dead() || prev != new_state && self.strands(prev).is_some() {
            self.note_stuck(&[]);
        } else if self.remember() {
            return true;
        }
        self.pop();
        false
    }

    /// Caches the current configuration; false if a visited one dominates it
    /// (same known ops and state, a subset of the unknown ops): any completion
    /// of this one would also complete that one.
    fn remember(&mut self) -> bool {
        self.key.clear();
        self.key
            .extend([self.frontier as u64, u64::from(self.state)]);
        if let Some(&last) = self.reach.get(self.frontier) {
            self.key
                .extend_from_slice(&self.known_bits[self.frontier / 64..=last / 64]);
        }
        let unknown = self.unknown_bits.as_slice();
        match self.cache.get_mut(self.key.as_slice()) {
            Some(sets) if sets.iter().any(|s| subset(s, unknown)) => return false,
            Some(sets) => {
                sets.retain(|s| !subset(unknown, s));
                sets.push(unknown.into());
            }
            None => {
                self.cache
                    .insert(self.key.as_slice().into(), vec![unknown.into()]);
            }
        }
        true
    }

    fn pop(&mut self) -> Option<Frame> {
        let frame = self.stack.pop()?;
        self.state = frame.1;
        self.toggle(frame.0);
        self.count(frame.0, false);
        Some(frame)
    }

    /// Records the current configuration if it is the deepest dead end yet.
    fn note_stuck(&mut self, candidates: &[usize]) {
        if self.stuck.as_ref().is_some_and(|s| s.done >= self.done) {
            return;
        }
        let needs = |op: usize| self.ops[op].step.needs().filter(|&v| v != self.state);
        let mut pending = (0..self.n_known).filter(|&op| !self.linearized(op));
        let dead = pending.find_map(|op| {
            let v = needs(op)?;
            if self.viable(v, 3) {
                self.strands(v)
            } else {
                Some(op)
            }
        });
        self.stuck = Some(Stuck {
            done: self.done,
            state: self.state,
            recent: self.stack.iter().rev().take(3).rev().map(|f| f.0).collect(),
            candidates: candidates.iter().copied().take(8).collect(),
            blocked: self.window().1,
            waiting: dead
                .map(|op| (op, true))
                .or(self.strands(self.state).map(|op| (op, false))),
        });
    }
}

/// WGL search over `ops`, whose first `n_known` entries have known returns.
/// Returns `None` if linearizable, otherwise the deepest dead end.
///
/// Prunings, all sound:
/// - The cache (see `remember`).
/// - A legal read or failed CAS (never changes the state) can be moved to the
///   front of any completion, so it is committed without trying
///   alternatives; if that fails, the configuration fails.
/// - A configuration fails at once if a pending known op needs a value that
///   the register can no longer come to hold (see `dead`).
/// - Hopeless or redundant candidates are skipped (see `candidates`,
///   `observable`, `try_push`).
fn search(ops: &[Op<'_>], n_known: usize, values: usize) -> Option<Stuck> {
    if n_known == 0 {
        return None;
    }
    let mut s = Search::new(ops, n_known, values);
    if s.dead() {
        s.note_stuck(&[]);
        return s.stuck;
    }
    let (mut cands, mut next, mut fresh, mut saved) = (Vec::new(), 0, true, Vec::new());
    while s.frontier < n_known {
        if fresh {
            (cands, next) = (s.candidates(), 0);
            let state = s.state;
            let forced = cands.iter().copied().find(|&o| {
                let step = ops[o].step;
                o < n_known && step.sets().is_none() && step.apply(state).is_some()
            });
            // Committing the first legal read or failed CAS is enough: if
            // that fails (now, or already in the cache), so does this.
            fresh = forced.is_some_and(|o| s.try_push(o, None));
            if forced.is_some() && !fresh {
                next = cands.len();
            }
        } else if let Some(&op) = cands.get(next) {
            next += 1;
            fresh = s.try_push(op, Some(next));
        } else {
            s.note_stuck(&cands);
            next = loop {
                cands = saved.pop().unwrap_or_default();
                match s.pop() {
                    None => return s.stuck,
                    Some(Frame(_, _, Some(r))) => break r,
                    Some(_) => {}
                }
            };
        }
        if fresh {
            saved.push(std::mem::take(&mut cands)); // the parent's, for backtracking
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
    fn r(call: u64, ret: u64, result: Option<String>) -> Operation {
        op(1, call, Some(ret), OpKind::Read { result })
    }
    fn w(call: u64, ret: Option<u64>, value: &str) -> Operation {
        op(
            2,
            call,
            ret,
            OpKind::Write {
                value: value.into(),
            },
        )
    }
    fn cas(
        call: u64,
        ret: Option<u64>,
        expected: Option<String>,
        new: &str,
        ok: bool,
    ) -> Operation {
        op(
            3,
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
            r(0, 1, None),
            cas(2, Some(3), None, "a", true),
            cas(4, Some(5), None, "b", false),
            r(6, 7, s("a")),
            w(8, Some(9), "b"),
            cas(10, Some(11), s("a"), "c", false),
            cas(12, Some(13), s("b"), "c", true),
            r(14, 15, s("c")),
        ];
        assert!(check_key(&h));
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn stale_read_after_completed_write_fails() {
        let h = vec![w(0, Some(10), "a"), w(20, Some(30), "b"), r(40, 50, s("a"))];
        assert!(!check_key(&h));
        let v = check(&h).unwrap_err();
        assert_eq!(v.key, "k");
        assert!(
            v.message.contains("read -> \"a\" [40, 50]"),
            "{}",
            v.message
        );
        assert!(v.to_string().contains("key \"k\""), "{v}");
    }

    #[test]
    fn concurrent_write_and_read_may_see_old_or_new() {
        for seen in ["a", "b"] {
            let h = vec![
                w(0, Some(10), "a"),
                w(20, Some(40), "b"),
                r(25, 35, s(seen)),
            ];
            assert!(check_key(&h), "read of {seen}");
        }
        // ...but not new then old. Equal timestamps count as overlapping.
        let h = vec![
            w(0, Some(10), "a"),
            w(20, Some(40), "b"),
            r(25, 30, s("b")),
            r(31, 35, s("a")),
        ];
        assert!(!check_key(&h));
        assert!(check_key(&[w(0, Some(10), "a"), r(10, 12, None)]));
    }

    #[test]
    fn cas_succeeding_twice_from_same_value_fails() {
        let a = || w(0, Some(10), "a");
        assert!(!check_key(&[
            a(),
            cas(20, Some(30), s("a"), "b", true),
            cas(40, Some(50), s("a"), "c", true)
        ]));
        assert!(!check_key(&[
            a(),
            cas(20, Some(50), s("a"), "b", true),
            cas(20, Some(50), s("a"), "c", true)
        ]));
        assert!(!check_key(&[
            cas(0, Some(9), None, "a", true),
            cas(1, Some(8), None, "b", true)
        ]));
        // With an intervening write back to "a" it is fine.
        let h = [
            a(),
            cas(20, Some(30), s("a"), "b", true),
            w(31, Some(32), "a"),
            cas(40, Some(50), s("a"), "c", true),
        ];
        assert!(check_key(&h));
    }

    #[test]
    fn unknown_outcome_ops() {
        let base = || vec![w(0, Some(10), "a"), w(20, None, "b")];
        for (seen, ok) in [("b", true), ("a", true), ("zz", false)] {
            let mut h = base();
            h.push(r(100, 110, s(seen)));
            assert_eq!(check_key(&h), ok, "read of {seen}");
        }
        // Once the unknown write is observed, it cannot be un-observed.
        let mut h = base();
        h.extend([r(100, 110, s("b")), r(120, 130, s("a"))]);
        assert!(!check_key(&h));
        // An unknown CAS may take effect only if its expectation held.
        let mut h = vec![
            w(0, Some(10), "a"),
            cas(20, None, s("a"), "b", false),
            r(100, 110, s("b")),
        ];
        assert!(check_key(&h));
        h[1] = cas(20, None, s("x"), "b", true);
        assert!(!check_key(&h));
        // Reads with an unknown outcome are dropped.
        assert!(check_key(&[op(
            1,
            0,
            None,
            OpKind::Read { result: s("nope") }
        )]));
    }

    #[test]
    fn read_of_value_never_written_fails() {
        assert!(!check_key(&[w(0, Some(10), "a"), r(5, 15, s("ghost"))]));
        let v = check(&[r(0, 1, s("ghost"))]).unwrap_err();
        assert!(v.message.contains("ghost"), "{v}");
    }

    #[test]
    fn keys_are_checked_independently() {
        let mut h = vec![w(0, Some(10), "a"), r(20, 30, s("a"))];
        assert_eq!(check(&h), Ok(()));
        h.extend([w(0, Some(10), "x"), r(20, 30, s("a"))].map(|o| Operation {
            key: "other".into(),
            ..o
        }));
        let v = check(&h).unwrap_err();
        assert_eq!(
            v,
            Violation {
                key: "other".into(),
                message: v.message.clone()
            }
        );
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
    /// random point inside its interval; each client's ops are sequential.
    /// Op `i` writes `v{i % values}`; about 1 op in 40 has an unknown outcome.
    fn simulate(seed: u64, clients: u64, per_client: usize, values: usize) -> Vec<Operation> {
        let mut rng = Lcg(seed);
        let mut slots = Vec::new(); // (linearization point, call, ret, client, unknown)
        for client in 0..clients {
            let mut t = rng.below(50);
            for _ in 0..per_client {
                let (call, dur) = (t + rng.below(20), 1 + rng.below(100));
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
            let new = format!("v{}", i % values);
            let takes_effect = !unknown || rng.below(2) == 0;
            let kind = match rng.below(10) {
                0..=3 => OpKind::Read {
                    result: state.clone(),
                },
                4..=6 => {
                    state = if takes_effect {
                        Some(new.clone())
                    } else {
                        state
                    };
                    OpKind::Write { value: new }
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
                    state = if succeeded { Some(new.clone()) } else { state };
                    OpKind::Cas {
                        expected,
                        new,
                        succeeded,
                    }
                }
            };
            written.push(format!("v{}", i % values));
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

    #[test]
    fn randomized_linearizable_history_passes_and_mutations_fail() {
        for seed in 1..=4 {
            let h = simulate(seed, 16, 60, usize::MAX);
            assert_eq!(check(&h), Ok(()), "seed {seed}");
            let is_read = |o: &Operation| o.ret.is_some() && matches!(o.kind, OpKind::Read { .. });
            let reads: Vec<usize> = (0..h.len()).filter(|&i| is_read(&h[i])).collect();
            let writes: Vec<(u64, u64, String)> = (h.iter())
                .filter_map(|o| match (&o.kind, o.ret) {
                    (OpKind::Write { value }, Some(ret)) => Some((o.call, ret, value.clone())),
                    _ => None,
                })
                .collect();
            let mutate = |i: usize, value: &String| {
                let mut bad = h.clone();
                assert_ne!(
                    bad[i].kind,
                    OpKind::Read {
                        result: Some(value.clone())
                    }
                );
                bad[i].kind = OpKind::Read {
                    result: Some(value.clone()),
                };
                check(&bad).unwrap_err()
            };
            // An early read returns a value first written after it returned.
            let i = reads[reads.len() / 4];
            let (_, _, future) = writes.iter().find(|w| w.0 > h[i].ret.unwrap()).unwrap();
            let v = mutate(i, future);
            assert!(v.message.contains("cannot linearize"), "{v}");
            // A late read returns a value overwritten by a write that completed
            // before the read began (and itself began after the value's write).
            let i = reads[reads.len() * 3 / 4];
            let (w2_call, _, _) = writes.iter().rev().find(|w| w.1 < h[i].call).unwrap();
            let (_, _, old) = writes.iter().rev().find(|w| w.1 < *w2_call).unwrap();
            mutate(i, old);
        }
    }

    #[test]
    fn randomized_high_concurrency_and_repeated_values() {
        // Speed is measured by benchmarks, not asserted here: this only checks the answer.
        let mut all = Vec::new();
        for (seed, clients, values) in [
            (11, 64, usize::MAX),
            (12, 32, usize::MAX),
            (13, 8, 3),
            (14, 16, 5),
        ] {
            let h = simulate(seed, clients, 3000 / clients as usize, values);
            all.extend(h.into_iter().map(|o| Operation {
                key: format!("key-{seed}"),
                ..o
            }));
        }
        assert_eq!(check(&all), Ok(()));
    }
}

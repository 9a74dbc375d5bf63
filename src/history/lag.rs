//! What a read does when this node's index of archived runs lags the store revision it
//! needs ([`lag_plan`], pure): wait for the index, give up at once so that a peer whose
//! index is complete answers instead, or give up at once and answer "unavailable". Who
//! asks the peer, and how, is the API's business (`api/forward.rs`); this file only
//! decides from what the read is ([`ReadOrigin`]) and how far behind the index is
//! ([`IndexLag`]).

/// Where a read comes from, as far as a lagging index is concerned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadOrigin {
    /// A read only this node can answer: a stream, or a node with no peer to ask. It
    /// waits for the index as long as [`super::INDEX_WAIT`] allows.
    #[default]
    Local,
    /// A client's plain read that a peer can answer instead (the node has peers).
    Forwardable,
    /// A read a peer forwarded to this node: answered at once, never forwarded again.
    Forwarded,
}

/// How far this node's index is behind the store revision a read needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexLag {
    /// The follower's first sync of this process has not finished: the index is being
    /// rebuilt (or checked), how far behind is unknown and may be all of it.
    Rebuilding,
    /// `segments` segments are recorded after the revision the index holds.
    Behind { segments: i64 },
}

/// What a read does about a lagging index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LagPlan {
    /// Wait for the index to catch up, for at most [`super::INDEX_WAIT`]; a read still
    /// behind after that is forwarded if it is [`ReadOrigin::Forwardable`].
    Wait,
    /// Give up at once: a peer is asked instead.
    Forward,
    /// Give up at once: answer "unavailable" (503), which the peer that forwarded the
    /// read takes as "ask the next one".
    Answer,
}

/// The segments behind past which an index counts as rebuilding rather than slightly
/// behind: more than it indexes in well under [`super::INDEX_WAIT`] (a follower indexes
/// about 15 segments of 1,000 runs a second from local object storage; object storage
/// over the network is slower per segment).
pub const FAR_BEHIND_SEGMENTS: i64 = 16;

/// What a read from `origin` does about an index `lag` behind: a forwarded read never
/// waits (its sender is waiting for it, and will ask another peer); a forwardable one
/// waits only when the index is slightly behind in normal operation, and is forwarded at
/// once while the index is rebuilt or far behind; a local one waits, as there is nobody
/// else to ask.
pub fn lag_plan(origin: ReadOrigin, lag: IndexLag) -> LagPlan {
    match (origin, lag) {
        (ReadOrigin::Forwarded, _) => LagPlan::Answer,
        (ReadOrigin::Local, _) => LagPlan::Wait,
        (ReadOrigin::Forwardable, IndexLag::Rebuilding) => LagPlan::Forward,
        (ReadOrigin::Forwardable, IndexLag::Behind { segments }) => {
            if segments > FAR_BEHIND_SEGMENTS {
                LagPlan::Forward
            } else {
                LagPlan::Wait
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLIGHTLY: IndexLag = IndexLag::Behind { segments: 1 };
    const FAR: IndexLag = IndexLag::Behind {
        segments: FAR_BEHIND_SEGMENTS + 1,
    };

    #[test]
    fn a_forwarded_read_is_answered_at_once_however_far_behind_the_index_is() {
        for lag in [IndexLag::Rebuilding, SLIGHTLY, FAR] {
            assert_eq!(
                lag_plan(ReadOrigin::Forwarded, lag),
                LagPlan::Answer,
                "{lag:?}"
            );
        }
    }

    #[test]
    fn a_rebuilding_or_far_behind_index_forwards_at_once() {
        assert_eq!(
            lag_plan(ReadOrigin::Forwardable, IndexLag::Rebuilding),
            LagPlan::Forward
        );
        assert_eq!(lag_plan(ReadOrigin::Forwardable, FAR), LagPlan::Forward);
    }

    #[test]
    fn an_index_slightly_behind_waits_as_in_normal_operation() {
        assert_eq!(lag_plan(ReadOrigin::Forwardable, SLIGHTLY), LagPlan::Wait);
        let edge = IndexLag::Behind {
            segments: FAR_BEHIND_SEGMENTS,
        };
        assert_eq!(lag_plan(ReadOrigin::Forwardable, edge), LagPlan::Wait);
    }

    #[test]
    fn a_read_with_nobody_else_to_ask_waits() {
        for lag in [IndexLag::Rebuilding, SLIGHTLY, FAR] {
            assert_eq!(lag_plan(ReadOrigin::Local, lag), LagPlan::Wait, "{lag:?}");
        }
    }
}

//! The peer protocol: one request/response enum pair, carried as bincode bodies over
//! any [`Transport`](crate::network::Transport) (HTTP between processes, direct calls in
//! the simulated network). Raft's own RPCs travel here next to the store's: forwarded
//! proposals, read-index requests, lease keepalives and membership requests.

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use store::{Command, CommandResult};

use crate::error::KvError;
use crate::types::{LogId, NodeAddr, NodeId, TypeConfig};

/// The version of the peer protocol: [`PeerRequest`] and [`PeerResponse`] as bincode.
/// Bump it whenever their encoding changes. Every transport carries the sender's version
/// and a node answers only a version it [`speaks`]; anything else is refused before a
/// byte of the body is decoded, so nodes of incompatible builds never exchange Raft
/// state (a rolling upgrade between them stops at the first node, with
/// [`incompatible`]'s message, and nothing is corrupted).
pub const PEER_PROTOCOL: u32 = 1;
/// The oldest peer protocol this build still speaks.
pub const MIN_PEER_PROTOCOL: u32 = 1;

/// Whether a node of this build answers a peer speaking `version`.
pub fn speaks(version: u32) -> bool {
    (MIN_PEER_PROTOCOL..=PEER_PROTOCOL).contains(&version)
}

/// Why a node refuses a peer speaking `theirs` when it speaks `ours` (0: the peer sent
/// no version, a build from before versions were exchanged).
pub fn incompatible(theirs: u32, ours: u32) -> String {
    let theirs = match theirs {
        0 => "no peer protocol version (an older build)".to_string(),
        v => format!("peer protocol {v}"),
    };
    format!(
        "incompatible peer: it speaks {theirs}, this node speaks peer protocol {ours}; \
         run Cairn builds of the same peer protocol on every node (OPERATIONS.md: rolling upgrade)"
    )
}

#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// Propose a command on the leader, forwarded by member `from`.
    Propose {
        from: NodeId,
        cmd: Command,
    },
    /// The leader's read point for a linearizable read on a follower.
    ReadIndex,
    /// Refresh a lease on the leader; answers the TTL.
    KeepAlive(i64),
    /// Remaining seconds of a lease, measured by the leader.
    LeaseRemaining(i64),
    /// Add a node to the cluster: as a learner, then (unless `learner`) as a voter once
    /// it caught up.
    Join {
        node_id: NodeId,
        addr: NodeAddr,
        learner: bool,
    },
    /// Make a caught-up learner a voter.
    Promote {
        node_id: NodeId,
    },
    /// Make a voter a learner (it keeps replicating but no longer votes or counts
    /// toward quorum).
    Demote {
        node_id: NodeId,
    },
    /// Remove a node from the cluster.
    Remove {
        node_id: NodeId,
    },
    Status,
    /// Whether the node's process keeps session lease `0` alive (a [`Session`] of its
    /// own): a lock contender asks its predecessor's node, so a holder that was killed
    /// and restarted (answering, but without the session) loses the lock at once.
    /// Appended last: an older node cannot decode it and answers 400, a "don't know".
    ///
    /// [`Session`]: crate::concurrency::Session
    HoldsSession(i64),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    Propose(Result<CommandResult, KvError>),
    ReadIndex(Result<Option<LogId>, KvError>),
    KeepAlive(Result<i64, KvError>),
    LeaseRemaining(Result<i64, KvError>),
    Join(Result<JoinResponse, KvError>),
    Remove(Result<(), KvError>),
    Promote(Result<(), KvError>),
    Demote(Result<(), KvError>),
    Status(NodeStatus),
    /// The request was not handled ([`admit`] refused it).
    Refused(Refusal),
    HoldsSession(bool),
}

/// How far above this node's current term a vote request's term may be. An honest
/// candidate raises its term by one per election (at most one every ~0.3 s with the
/// fastest timing), so a jump this large means a month of back-to-back failed elections;
/// a forged request could otherwise take the term to `u64::MAX` in one step.
pub const MAX_TERM_JUMP: u64 = 1 << 20;

/// No Raft message may carry a term above this (half of `u64::MAX`: unreachable by
/// elections, and leaves room for every `term + 1` openraft computes).
pub const MAX_TERM: u64 = u64::MAX / 2;

/// Why a peer request was refused before reaching Raft.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum Refusal {
    #[error("node {0} is not a member of this cluster")]
    NotAMember(NodeId),
    #[error("term {term} is absurd (current term {current})")]
    AbsurdTerm { term: u64, current: u64 },
    /// A snapshot chunk failed the receiver's checks ([`crate::snapshot_intake`]).
    #[error(transparent)]
    SnapshotChunk(#[from] crate::snapshot_intake::ChunkRefusal),
}

/// Sanity checks on a peer request before it reaches openraft (security review H2):
/// - Vote, Append, Snapshot and Propose must come from a member (voter or learner) of
///   this node's membership, as `is_member` tells; a node with no membership yet (one
///   waiting to join) takes Raft messages from anyone holding the peer token.
/// - A term above [`MAX_TERM`] is refused in every Raft message, and a vote request's
///   term more than [`MAX_TERM_JUMP`] above `current_term` too.
///
/// Without the term checks, openraft 0.9.25 takes any vote request whose last log id is
/// not behind its own once the leader lease has lapsed (`Engine::handle_vote_req`): it
/// persists the request's vote as its own (`VoteHandler::update_vote` → `SaveVote`), so
/// one request with term `u64::MAX` sets the persisted term to `u64::MAX` for good. The
/// next election on that node then computes `term + 1` (`Engine::elect`): in a debug
/// build that panics on overflow; in a release build it wraps to term 0, the new vote is
/// below the saved one, and `update_vote(..).unwrap()` ("it won't reject itself")
/// panics, so the Raft core dies either way and the node never elects a leader again.
/// Append and Snapshot requests update the vote the same way.
pub fn admit(
    req: &PeerRequest,
    current_term: u64,
    is_member: impl Fn(NodeId) -> bool,
) -> Result<(), Refusal> {
    let (from, term, is_vote) = match req {
        PeerRequest::Append(r) => (
            r.vote.leader_id().node_id,
            Some(r.vote.leader_id().term),
            false,
        ),
        PeerRequest::Vote(r) => (
            r.vote.leader_id().node_id,
            Some(r.vote.leader_id().term),
            true,
        ),
        PeerRequest::Snapshot(r) => (
            r.vote.leader_id().node_id,
            Some(r.vote.leader_id().term),
            false,
        ),
        PeerRequest::Propose { from, .. } => (*from, None, false),
        _ => return Ok(()),
    };
    if let Some(term) = term {
        let too_far = is_vote && term > current_term.saturating_add(MAX_TERM_JUMP);
        if term > MAX_TERM || too_far {
            return Err(Refusal::AbsurdTerm {
                term,
                current: current_term,
            });
        }
    }
    if !is_member(from) {
        return Err(Refusal::NotAMember(from));
    }
    Ok(())
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinResponse {
    pub cluster_id: u64,
    pub leader: NodeId,
    pub voters: Vec<NodeId>,
}

/// A node's Raft role, as its status reports it. On the wire (bincode and JSON) it is the
/// string of [`NodeState::as_str`], as when the field was a string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "&'static str", try_from = "String")]
pub enum NodeState {
    Leader,
    Follower,
    Candidate,
    Learner,
    /// The Raft node stopped (shutdown or a fatal error).
    Shutdown,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Leader => "leader",
            NodeState::Follower => "follower",
            NodeState::Candidate => "candidate",
            NodeState::Learner => "learner",
            NodeState::Shutdown => "shutdown",
        }
    }
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<NodeState> for &'static str {
    fn from(s: NodeState) -> Self {
        s.as_str()
    }
}

impl TryFrom<String> for NodeState {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        [
            NodeState::Leader,
            NodeState::Follower,
            NodeState::Candidate,
            NodeState::Learner,
            NodeState::Shutdown,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
        .ok_or_else(|| format!("unknown node state {s:?}"))
    }
}

impl From<openraft::ServerState> for NodeState {
    fn from(s: openraft::ServerState) -> Self {
        use openraft::ServerState as S;
        match s {
            S::Leader => NodeState::Leader,
            S::Follower => NodeState::Follower,
            S::Candidate => NodeState::Candidate,
            S::Learner => NodeState::Learner,
            S::Shutdown => NodeState::Shutdown,
        }
    }
}

/// A node's view of itself and the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_id: NodeId,
    pub cluster_id: u64,
    pub addr: String,
    pub state: NodeState,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    /// The highest log index this node knows committed: on the leader, the index a
    /// quorum of every voter config has matched in this term (openraft's replication
    /// metrics); elsewhere the last applied index, a lower bound (openraft 0.9's metrics
    /// carry no commit index, and a node applies what it learns is committed).
    pub committed: Option<u64>,
    pub applied: Option<u64>,
    pub revision: i64,
    pub compact_revision: i64,
    pub voters: Vec<(NodeId, String)>,
    pub learners: Vec<(NodeId, String)>,
    pub engine: String,
    pub db_size: u64,
    pub keys: usize,
}

#[cfg(test)]
mod tests {
    use openraft::raft::VoteRequest;

    use super::*;
    use crate::types::Vote;

    fn vote(term: u64, from: NodeId) -> PeerRequest {
        PeerRequest::Vote(VoteRequest::new(Vote::new(term, from), None))
    }

    #[test]
    fn a_vote_from_a_member_within_the_term_bound_is_admitted() {
        let members = |id| id == 1 || id == 2;
        assert_eq!(admit(&vote(8, 2), 7, members), Ok(()));
        assert_eq!(admit(&vote(7 + MAX_TERM_JUMP, 2), 7, members), Ok(()));
    }

    #[test]
    fn absurd_terms_are_refused() {
        let members = |_| true;
        for term in [u64::MAX, MAX_TERM + 1, 8 + MAX_TERM_JUMP] {
            assert_eq!(
                admit(&vote(term, 2), 7, members),
                Err(Refusal::AbsurdTerm { term, current: 7 })
            );
        }
        // Near the top, the jump bound saturates instead of overflowing.
        assert!(admit(&vote(u64::MAX, 2), u64::MAX - 1, members).is_err());
    }

    #[test]
    fn a_node_state_travels_as_the_string_it_was() {
        for (st, text) in [
            (NodeState::Leader, "leader"),
            (NodeState::Follower, "follower"),
            (NodeState::Candidate, "candidate"),
            (NodeState::Learner, "learner"),
            (NodeState::Shutdown, "shutdown"),
        ] {
            assert_eq!(st.to_string(), text);
            let bin = crate::types::encode(&st);
            assert_eq!(
                bin,
                crate::types::encode(&text.to_string()),
                "bincode of {text}"
            );
            assert_eq!(crate::types::decode::<NodeState>(&bin), Ok(st));
            let json = serde_json::to_string(&st).expect("serializes");
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<NodeState>(&json).ok(), Some(st));
        }
        assert!(serde_json::from_str::<NodeState>("\"emperor\"").is_err());
    }

    #[test]
    fn raft_messages_and_proposals_from_non_members_are_refused() {
        let members = |id| id == 1;
        assert_eq!(admit(&vote(8, 9), 7, members), Err(Refusal::NotAMember(9)));
        let propose = PeerRequest::Propose {
            from: 9,
            cmd: Command::LeaseRevoke { id: 1 },
        };
        assert_eq!(admit(&propose, 7, members), Err(Refusal::NotAMember(9)));
        // Requests that are not Raft messages or proposals are not checked here.
        assert_eq!(admit(&PeerRequest::Status, 7, members), Ok(()));
        let join = PeerRequest::Join {
            node_id: 9,
            addr: NodeAddr::default(),
            learner: false,
        };
        assert_eq!(admit(&join, 7, members), Ok(()));
    }
}

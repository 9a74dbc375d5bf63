//! Property tests of the peer decoder (security review H2): arbitrary bytes, and short
//! bodies with huge length prefixes, never panic and never make the decoder allocate
//! beyond bincode's limit for the body's size class ([`store::codec::limit_for`]) plus
//! serde's bounded preallocations. This test binary's allocator refuses any allocation
//! past that budget while a body is decoded, which aborts the test: before the limit,
//! the 14-byte `Join` bomb asked for 2^44 bytes.
//!
//! One `#[test]` only, so no other test allocates in parallel while the budget is set.

use std::alloc::System;

use cap::Cap;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use raft::rpc::PeerRequest;

#[global_allocator]
static ALLOC: Cap<System> = Cap::new(System, usize::MAX);

/// Above the size class: serde preallocates at most 1 MiB per sequence being decoded,
/// and a peer request nests only a few (entries, a batch, a txn's ops, a key).
const SLACK: usize = 8 << 20;

fn decode_within_budget(bytes: &[u8]) -> bool {
    let budget = store::codec::limit_for(bytes.len()) + SLACK;
    ALLOC
        .set_limit(ALLOC.allocated() + budget)
        .expect("a budget above what is allocated");
    let ok = raft::types::decode::<PeerRequest>(bytes).is_ok();
    ALLOC.set_limit(usize::MAX).expect("lifting the budget");
    ok
}

/// A variant tag, a few small fields, then a length prefix of `len` in bincode's varint
/// (`0xfd` + 8 bytes little-endian for a u64) and a short tail.
fn with_length_prefix(head: &[u8], len: u64, tail: &[u8]) -> Vec<u8> {
    let mut b = head.to_vec();
    b.push(0xfd);
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(tail);
    b
}

#[test]
fn the_peer_decoder_never_panics_nor_allocates_beyond_its_limit() {
    // Security review H2: PeerRequest::Join { node_id: 5, addr: String(len = 2^44) }.
    let bomb = b"\x07\x05\xfd\x00\x00\x00\x00\x00\x10\x00\x00abc";
    assert!(!decode_within_budget(bomb), "the join bomb is refused");
    // A valid request still decodes.
    let join = PeerRequest::Join {
        node_id: 5,
        addr: raft::types::NodeAddr {
            addr: "http://127.0.0.1:1".into(),
        },
        learner: false,
    };
    assert!(decode_within_budget(&raft::types::encode(&join)));

    let mut runner = TestRunner::new(Config {
        cases: 2000,
        failure_persistence: None,
        ..Config::default()
    });
    let arbitrary = proptest::collection::vec(any::<u8>(), 0..512);
    runner
        .run(&arbitrary, |bytes| {
            decode_within_budget(&bytes);
            Ok(())
        })
        .expect("arbitrary bytes");
    // Every variant tag and a few leading bytes, then a huge length prefix: wherever
    // it lands (a string, a byte buffer, a sequence, a map), nothing is allocated past
    // the budget.
    let prefixed = (
        proptest::collection::vec(any::<u8>(), 0..12),
        prop_oneof![
            Just(u64::MAX),
            Just(1u64 << 44),
            Just(1u64 << 32),
            1u64 << 20..u64::MAX
        ],
        proptest::collection::vec(any::<u8>(), 0..32),
    );
    runner
        .run(&prefixed, |(head, len, tail)| {
            decode_within_budget(&with_length_prefix(&head, len, &tail));
            Ok(())
        })
        .expect("huge length prefixes");
}

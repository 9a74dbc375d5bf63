//! Persistence: reopening the state machine, snapshots fixed when taken, and dump/restore
//! (including corrupt and truncated dumps).

use super::*;

/// A history with every kind of record: versions, deletions, leases, compaction.
fn build_history(m: &Mvcc) {
    grant(m, 1, 30);
    grant(m, 2, 60);
    put(m, "a", "1");
    put(m, "b", "1");
    put_lease(m, "l/1", "x", 1);
    put_lease(m, "l/2", "x", 1);
    put_lease(m, "l/3", "x", 2);
    put(m, "a", "2");
    delete(m, KeyRange::key("b"));
    compact(m, 4);
    apply(
        m,
        Command::Incr {
            key: "seq".into(),
            delta: 3,
        },
    );
    put(m, "a", "3");
    put(m, "b", "again");
    delete(m, KeyRange::key("l/2"));
    put(m, "bin\x00\u{ff}", "\x00");
}

#[test]
fn reopening_the_state_machine_restores_the_same_state() {
    for (mut t, m) in stores() {
        let name = t.kind.as_str();
        build_history(&m);
        let extra = {
            let mut b = WriteBatch::new();
            b.put(Cf::Meta, "applied", "log-17");
            b
        };
        m.apply(vec![None], extra).unwrap();
        let before = observe(&m);
        assert_eq!(before.compact_revision, 4);
        drop(m);

        // Over the same engine instance (every kind).
        let m = open(&t);
        assert_eq!(observe(&m), before, "{name}");
        assert_eq!(
            m.meta(b"applied").unwrap(),
            Some(b"log-17".to_vec()),
            "{name}"
        );
        drop(m);

        // Over a reopened engine (on-disk kinds).
        if t.on_disk() {
            t.reopen();
            let m = open(&t);
            assert_eq!(observe(&m), before, "{name}: after reopening the engine");
            assert_eq!(
                m.meta(b"applied").unwrap(),
                Some(b"log-17".to_vec()),
                "{name}"
            );
            // And it carries on from there.
            assert_eq!(
                put(&m, "after", "1").revision,
                before.revision + 1,
                "{name}"
            );
            assert_eq!(grant(&m, 0, 5), 3, "{name}: lease ids are not reused");
            apply(&m, Command::LeaseRevoke { id: 1 });
            assert_eq!(
                get(&m, "l/1"),
                None,
                "{name}: reloaded leases still own their keys"
            );
        }
    }
}

#[test]
fn a_snapshot_is_fixed_when_taken_and_later_writes_stay_out_of_its_dump() {
    for (t, src) in stores() {
        let name = t.kind.as_str();
        build_history(&src);
        let expected = observe(&src);
        let fixed = src.snapshot().unwrap();
        // Writes, deletes and a compaction after the snapshot was fixed (a snapshot build
        // does not hold applies up on engines with a point-in-time view).
        put(&src, "after/1", "x");
        put(&src, "a", "changed");
        compact(&src, src.revision());
        assert_ne!(observe(&src), expected, "{name}: the source moved on");
        let mut bytes = Vec::new();
        fixed.write_to(&mut bytes).unwrap();
        let dst_t = open_engine(EngineKind::Mem);
        let dst = open(&dst_t);
        dst.restore(&mut Cursor::new(&bytes), WriteBatch::new())
            .unwrap();
        assert_eq!(observe(&dst), expected, "{name}");
    }
}

#[test]
fn dump_then_restore_reproduces_the_state_on_every_engine() {
    for (src_t, src) in stores() {
        build_history(&src);
        let expected = observe(&src);
        let bytes = dump(&src);
        for kind in EngineKind::all() {
            let name = format!("{} -> {}", src_t.kind.as_str(), kind.as_str());
            let t = open_engine(kind);
            let dst = open(&t);
            // The target had its own, different state; the restore replaces all of it.
            for i in 0..30 {
                put(&dst, &format!("old/{i}"), "x");
            }
            grant(&dst, 9, 9);
            let mut extra = WriteBatch::new();
            extra.put(Cf::Meta, "applied", "snap-1");
            extra.put(Cf::RaftMeta, "vote", "kept-with-it");
            dst.restore(&mut Cursor::new(&bytes), extra).unwrap();
            assert_eq!(observe(&dst), expected, "{name}");
            assert_eq!(
                dst.meta(b"applied").unwrap(),
                Some(b"snap-1".to_vec()),
                "{name}"
            );
            assert_eq!(
                t.engine.get(Cf::RaftMeta, b"vote").unwrap(),
                Some(b"kept-with-it".to_vec()),
                "{name}"
            );
            let again = Mvcc::open(t.engine.clone()).unwrap();
            assert_eq!(observe(&again), expected, "{name}: after reopen");
            // The restored store carries on from the restored revision.
            let next = expected.revision + 1;
            let keys_before = dst.key_count();
            assert_eq!(put(&dst, "next", "1").revision, next, "{name}");
            assert_eq!(
                get(&dst, "next"),
                Some(kv("next", "1", next, next, 1, 0)),
                "{name}"
            );
            assert_eq!(dst.key_count(), keys_before + 1, "{name}");
        }
    }
}

#[test]
fn a_corrupt_or_truncated_dump_is_refused_and_changes_nothing() {
    let src_t = open_engine(EngineKind::Mem);
    let src = open(&src_t);
    build_history(&src);
    let good = dump(&src);

    let mut bad: Vec<(String, Vec<u8>)> = Vec::new();
    for len in [
        0,
        4,
        8,
        9,
        20,
        good.len() / 2,
        good.len() - 5,
        good.len() - 1,
    ] {
        bad.push((format!("truncated to {len}"), good[..len].to_vec()));
    }
    for pos in [
        0,
        8,
        9,
        12,
        good.len() / 3,
        good.len() / 2,
        good.len() - 5,
        good.len() - 1,
    ] {
        let mut b = good.clone();
        b[pos] ^= 0x5a;
        bad.push((format!("byte {pos} flipped"), b));
    }
    // Well-formed, correctly checksummed, but holding a Raft log record.
    let mut foreign = Vec::new();
    {
        let mut w = SnapshotWriter::new(&mut foreign).unwrap();
        w.record(Cf::Current, b"k", b"v").unwrap();
        w.record(Cf::RaftLog, b"\x00", b"entry").unwrap();
        w.finish().unwrap();
    }
    bad.push(("a Raft log record".into(), foreign));
    let mut trailing_garbage_in_len = good.clone();
    trailing_garbage_in_len.truncate(good.len() - 4);
    trailing_garbage_in_len.extend_from_slice(&[0, 0, 0]);
    bad.push(("short checksum".into(), trailing_garbage_in_len));

    for (t, m) in stores() {
        let name = t.kind.as_str();
        put(&m, "mine", "1");
        grant(&m, 4, 4);
        put_lease(&m, "leased", "1", 4);
        compact(&m, 2);
        let before = observe(&m);
        let raw_before = dump(&m);
        for (what, bytes) in &bad {
            let mut extra = WriteBatch::new();
            extra.put(Cf::Meta, "applied", "must-not-appear");
            let r = m.restore(&mut Cursor::new(bytes), extra);
            assert!(r.is_err(), "{name}: {what} was accepted");
            assert_eq!(observe(&m), before, "{name}: {what}");
            assert_eq!(dump(&m), raw_before, "{name}: {what}");
            assert_eq!(m.meta(b"applied").unwrap(), None, "{name}: {what}");
        }
        // The good one still works afterwards.
        m.restore(&mut Cursor::new(&good), WriteBatch::new())
            .unwrap();
        assert_eq!(observe(&m), observe(&src), "{name}");
    }
}

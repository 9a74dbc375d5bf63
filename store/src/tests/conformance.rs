//! Engine conformance: every engine kind must behave identically behind the [`Engine`]
//! trait (point ops, ordered scans with bounds and limits, column-family isolation,
//! range deletes, batch semantics, persistence across reopen for on-disk engines, and the
//! typed error of a data dir that is already open).
#![allow(clippy::unwrap_used)]

use crate::engine::{self, Cf, Durability, Engine, EngineError, Pair, WriteBatch};

use super::all_engines;

fn put(e: &dyn Engine, cf: Cf, k: &[u8], v: &[u8]) {
    let mut b = WriteBatch::new();
    b.put(cf, k, v);
    e.write(b, Durability::Buffered).unwrap();
}

fn pairs(items: &[(&[u8], &[u8])]) -> Vec<Pair> {
    items
        .iter()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect()
}

fn keys(ps: &[Pair]) -> Vec<Vec<u8>> {
    ps.iter().map(|(k, _)| k.clone()).collect()
}

fn all(e: &dyn Engine, cf: Cf) -> Vec<Pair> {
    e.scan(cf, &[], None, usize::MAX, false).unwrap()
}

#[test]
fn get_put_delete() {
    for t in all_engines() {
        let e = t.engine.as_ref();
        let name = e.name();
        assert_eq!(name, t.kind.as_str());
        assert_eq!(e.get(Cf::Current, b"k").unwrap(), None, "{name}");

        put(e, Cf::Current, b"k", b"v1");
        assert_eq!(
            e.get(Cf::Current, b"k").unwrap(),
            Some(b"v1".to_vec()),
            "{name}"
        );
        put(e, Cf::Current, b"k", b"v2");
        assert_eq!(
            e.get(Cf::Current, b"k").unwrap(),
            Some(b"v2".to_vec()),
            "{name}"
        );

        // Empty keys and values, and bytes at both ends of the range, are ordinary data.
        put(e, Cf::Current, b"", b"");
        put(e, Cf::Current, b"\x00\xff", b"\xff\x00");
        put(e, Cf::Current, b"\xff\xff", b"x");
        assert_eq!(e.get(Cf::Current, b"").unwrap(), Some(Vec::new()), "{name}");
        assert_eq!(
            e.get(Cf::Current, b"\x00\xff").unwrap(),
            Some(b"\xff\x00".to_vec()),
            "{name}"
        );
        assert_eq!(
            e.get(Cf::Current, b"\xff\xff").unwrap(),
            Some(b"x".to_vec()),
            "{name}"
        );
        assert_eq!(
            e.get(Cf::Current, b"\xff").unwrap(),
            None,
            "{name}: no prefix match"
        );

        let mut b = WriteBatch::new();
        b.delete(Cf::Current, b"k");
        b.delete(Cf::Current, b"never-existed");
        e.write(b, Durability::Buffered).unwrap();
        assert_eq!(e.get(Cf::Current, b"k").unwrap(), None, "{name}");
        assert_eq!(
            keys(&all(e, Cf::Current)),
            vec![b"".to_vec(), b"\x00\xff".to_vec(), b"\xff\xff".to_vec()],
            "{name}"
        );

        // An empty batch is a no-op.
        e.write(WriteBatch::new(), Durability::Sync).unwrap();
        assert_eq!(all(e, Cf::Current).len(), 3, "{name}");
    }
}

#[test]
fn scans_forward_and_reverse_with_bounds_and_limits() {
    for t in all_engines() {
        let e = t.engine.as_ref();
        let name = e.name();
        let mut b = WriteBatch::new();
        for i in 0..10u8 {
            b.put(Cf::History, vec![b'k', b'0' + i], vec![i]);
        }
        // Neighbours in other families and odd keys that must stay out of History scans.
        b.put(Cf::Current, b"k5", b"other");
        b.put(Cf::Events, b"", b"other");
        b.put(Cf::Meta, b"\xff\xff\xff", b"other");
        e.write(b, Durability::Buffered).unwrap();

        let k = |i: u8| vec![b'k', b'0' + i];
        let expect = |r: std::ops::Range<u8>| -> Vec<Pair> { r.map(|i| (k(i), vec![i])).collect() };

        let fwd = e.scan(Cf::History, &[], None, usize::MAX, false).unwrap();
        assert_eq!(fwd, expect(0..10), "{name}: full forward scan");
        let rev = e.scan(Cf::History, &[], None, usize::MAX, true).unwrap();
        let mut expected_rev = expect(0..10);
        expected_rev.reverse();
        assert_eq!(rev, expected_rev, "{name}: full reverse scan");

        // Limits count from the scan's starting end.
        assert_eq!(
            e.scan(Cf::History, &[], None, 3, false).unwrap(),
            expect(0..3),
            "{name}"
        );
        let mut last3 = expect(7..10);
        last3.reverse();
        assert_eq!(
            e.scan(Cf::History, &[], None, 3, true).unwrap(),
            last3,
            "{name}"
        );
        assert_eq!(
            e.scan(Cf::History, &[], None, 1, true).unwrap(),
            expect(9..10),
            "{name}"
        );
        assert_eq!(
            e.scan(Cf::History, &[], None, 10, false).unwrap(),
            expect(0..10),
            "{name}"
        );
        assert_eq!(
            e.scan(Cf::History, &[], None, 11, false).unwrap(),
            expect(0..10),
            "{name}"
        );
        assert!(
            e.scan(Cf::History, &[], None, 0, false).unwrap().is_empty(),
            "{name}: limit 0 returns nothing forward"
        );
        assert!(
            e.scan(Cf::History, &[], None, 0, true).unwrap().is_empty(),
            "{name}: limit 0 returns nothing in reverse"
        );

        // Start is inclusive, end exclusive, in both directions.
        assert_eq!(
            e.scan(Cf::History, &k(3), Some(&k(6)), usize::MAX, false)
                .unwrap(),
            expect(3..6),
            "{name}: [k3, k6)"
        );
        let mut mid_rev = expect(3..6);
        mid_rev.reverse();
        assert_eq!(
            e.scan(Cf::History, &k(3), Some(&k(6)), usize::MAX, true)
                .unwrap(),
            mid_rev,
            "{name}: [k3, k6) reversed"
        );
        let mut top2 = expect(4..6);
        top2.reverse();
        assert_eq!(
            e.scan(Cf::History, &k(3), Some(&k(6)), 2, true).unwrap(),
            top2,
            "{name}: reverse with an end bound starts below the end"
        );
        // Bounds that fall between keys.
        assert_eq!(
            e.scan(Cf::History, b"k2x", Some(b"k5\x00"), usize::MAX, false)
                .unwrap(),
            expect(3..6),
            "{name}"
        );
        // Open end = to the end of the family, not beyond it.
        assert_eq!(
            e.scan(Cf::History, &k(8), None, usize::MAX, false).unwrap(),
            expect(8..10),
            "{name}"
        );
        assert_eq!(
            e.scan(Cf::History, &k(8), None, usize::MAX, true).unwrap(),
            vec![(k(9), vec![9]), (k(8), vec![8])],
            "{name}"
        );
        // Empty and inverted intervals.
        for (s, end) in [(k(5), k(5)), (k(6), k(2)), (b"z".to_vec(), b"zz".to_vec())] {
            for reverse in [false, true] {
                assert!(
                    e.scan(Cf::History, &s, Some(&end), usize::MAX, reverse)
                        .unwrap()
                        .is_empty(),
                    "{name}: [{s:?}, {end:?}) reverse={reverse}"
                );
            }
        }
        assert!(
            e.scan(Cf::History, b"l", None, usize::MAX, false)
                .unwrap()
                .is_empty(),
            "{name}"
        );
    }
}

#[test]
fn column_families_are_isolated() {
    for t in all_engines() {
        let e = t.engine.as_ref();
        let name = e.name();
        let mut b = WriteBatch::new();
        for (i, cf) in Cf::ALL.into_iter().enumerate() {
            for key in [&b""[..], b"same", b"\xff", b"\xff\xff\xff"] {
                b.put(cf, key, vec![i as u8]);
            }
        }
        e.write(b, Durability::Buffered).unwrap();

        for (i, cf) in Cf::ALL.into_iter().enumerate() {
            assert_eq!(
                e.get(cf, b"same").unwrap(),
                Some(vec![i as u8]),
                "{name} {cf:?}"
            );
            let fwd = all(e, cf);
            assert_eq!(
                fwd,
                pairs(&[
                    (b"", &[i as u8]),
                    (b"same", &[i as u8]),
                    (b"\xff", &[i as u8]),
                    (b"\xff\xff\xff", &[i as u8])
                ]),
                "{name} {cf:?}: a scan sees only its own family"
            );
            let rev = e.scan(cf, &[], None, usize::MAX, true).unwrap();
            assert_eq!(rev.len(), 4, "{name} {cf:?}");
            assert_eq!(rev[0].0, b"\xff\xff\xff".to_vec(), "{name} {cf:?}");
            assert_eq!(Cf::from_prefix(cf.prefix()), Some(cf));
        }

        // Deleting in one family leaves the same key in the others.
        let mut b = WriteBatch::new();
        b.delete(Cf::Current, b"same");
        b.delete_range(Cf::History, Vec::new(), None);
        e.write(b, Durability::Buffered).unwrap();
        assert_eq!(e.get(Cf::Current, b"same").unwrap(), None, "{name}");
        assert!(all(e, Cf::History).is_empty(), "{name}");
        for cf in Cf::ALL
            .into_iter()
            .filter(|c| ![Cf::Current, Cf::History].contains(c))
        {
            assert_eq!(all(e, cf).len(), 4, "{name} {cf:?} untouched");
        }
        assert_eq!(all(e, Cf::Current).len(), 3, "{name}");
    }
}

#[test]
fn delete_range_with_and_without_end() {
    for t in all_engines() {
        let e = t.engine.as_ref();
        let name = e.name();
        let mut b = WriteBatch::new();
        for k in ["a", "b", "b\x00", "c", "d", "e"] {
            b.put(Cf::Lease, k, "v");
            b.put(Cf::Events, k, "v");
        }
        e.write(b, Durability::Buffered).unwrap();

        let mut b = WriteBatch::new();
        b.delete_range(Cf::Lease, "b", Some(b"d".to_vec()));
        e.write(b, Durability::Buffered).unwrap();
        assert_eq!(
            keys(&all(e, Cf::Lease)),
            vec![b"a".to_vec(), b"d".to_vec(), b"e".to_vec()],
            "{name}: [b, d) removed, end exclusive"
        );

        // Empty and inverted ranges delete nothing.
        let mut b = WriteBatch::new();
        b.delete_range(Cf::Lease, "d", Some(b"d".to_vec()));
        b.delete_range(Cf::Lease, "e", Some(b"a".to_vec()));
        e.write(b, Durability::Buffered).unwrap();
        assert_eq!(all(e, Cf::Lease).len(), 3, "{name}");

        let mut b = WriteBatch::new();
        b.delete_range(Cf::Lease, "d", None);
        e.write(b, Durability::Buffered).unwrap();
        assert_eq!(
            keys(&all(e, Cf::Lease)),
            vec![b"a".to_vec()],
            "{name}: [d, end of family)"
        );

        assert_eq!(
            all(e, Cf::Events).len(),
            6,
            "{name}: another family is untouched"
        );
        let mut b = WriteBatch::new();
        b.delete_range(Cf::Events, Vec::new(), None);
        e.write(b, Durability::Buffered).unwrap();
        assert!(all(e, Cf::Events).is_empty(), "{name}");
        assert_eq!(keys(&all(e, Cf::Lease)), vec![b"a".to_vec()], "{name}");
    }
}

#[test]
fn a_batch_applies_all_its_ops_in_order() {
    for t in all_engines() {
        let e = t.engine.as_ref();
        let name = e.name();
        let mut b = WriteBatch::new();
        b.put(Cf::Current, "doomed", "x");
        b.put(Cf::Current, "replaced", "old");
        b.put(Cf::Current, "range/1", "x");
        e.write(b, Durability::Buffered).unwrap();

        let mut b = WriteBatch::new();
        // Across families, in one batch.
        b.put(Cf::Meta, "revision", "7");
        b.put(Cf::History, "h", "1");
        b.delete(Cf::Current, "doomed");
        // Later ops on the same key win.
        b.put(Cf::Current, "replaced", "mid");
        b.put(Cf::Current, "replaced", "new");
        b.put(Cf::Current, "put-then-delete", "x");
        b.delete(Cf::Current, "put-then-delete");
        b.delete(Cf::Current, "delete-then-put");
        b.put(Cf::Current, "delete-then-put", "y");
        // A range delete covers keys written earlier in the same batch too.
        b.put(Cf::Current, "range/2", "x");
        b.delete_range(Cf::Current, "range/", Some(b"range0".to_vec()));
        b.put(Cf::Current, "range/3", "survives");
        assert_eq!(b.len(), 12);
        e.write(b, Durability::Buffered).unwrap();

        assert_eq!(
            e.get(Cf::Meta, b"revision").unwrap(),
            Some(b"7".to_vec()),
            "{name}"
        );
        assert_eq!(
            e.get(Cf::History, b"h").unwrap(),
            Some(b"1".to_vec()),
            "{name}"
        );
        assert_eq!(
            all(e, Cf::Current),
            pairs(&[
                (b"delete-then-put", b"y"),
                (b"range/3", b"survives"),
                (b"replaced", b"new"),
            ]),
            "{name}"
        );
    }
}

#[test]
fn synced_writes_survive_reopen_of_on_disk_engines() {
    for mut t in all_engines().into_iter().filter(|t| t.on_disk()) {
        let name = t.kind.as_str();
        let e = t.engine.clone();
        let mut b = WriteBatch::new();
        for cf in Cf::ALL {
            for i in 0..50u32 {
                b.put(cf, i.to_be_bytes(), format!("{cf:?}-{i}"));
            }
        }
        e.write(b, Durability::Sync).unwrap();
        // A buffered write followed by a synced one: the sync covers both.
        let mut b = WriteBatch::new();
        b.delete(Cf::Current, 0u32.to_be_bytes());
        b.delete_range(
            Cf::History,
            10u32.to_be_bytes(),
            Some(20u32.to_be_bytes().to_vec()),
        );
        e.write(b, Durability::Buffered).unwrap();
        let mut b = WriteBatch::new();
        b.put(Cf::RaftMeta, "vote", "v");
        b.delete_range(Cf::Events, Vec::new(), None);
        e.write(b, Durability::Sync).unwrap();
        drop(e);

        t.reopen();
        let e = t.engine.as_ref();
        assert_eq!(e.name(), name);
        assert_eq!(
            e.get(Cf::RaftMeta, b"vote").unwrap(),
            Some(b"v".to_vec()),
            "{name}"
        );
        assert_eq!(
            e.get(Cf::Current, &0u32.to_be_bytes()).unwrap(),
            None,
            "{name}"
        );
        assert_eq!(all(e, Cf::Current).len(), 49, "{name}");
        assert_eq!(all(e, Cf::History).len(), 40, "{name}");
        assert!(all(e, Cf::Events).is_empty(), "{name}");
        assert_eq!(all(e, Cf::RaftLog).len(), 50, "{name}");
        assert_eq!(
            e.get(Cf::Lease, &49u32.to_be_bytes()).unwrap(),
            Some(b"Lease-49".to_vec()),
            "{name}"
        );
        assert_eq!(
            e.scan(Cf::Meta, &[], None, 2, true).unwrap(),
            vec![
                (49u32.to_be_bytes().to_vec(), b"Meta-49".to_vec()),
                (48u32.to_be_bytes().to_vec(), b"Meta-48".to_vec()),
            ],
            "{name}"
        );

        // Writes keep working after the reopen, and survive a second one.
        let mut b = WriteBatch::new();
        b.put(Cf::Current, "after", "reopen");
        e.write(b, Durability::Sync).unwrap();
        t.reopen();
        assert_eq!(
            t.engine.get(Cf::Current, b"after").unwrap(),
            Some(b"reopen".to_vec()),
            "{name}"
        );
        assert_eq!(all(t.engine.as_ref(), Cf::Current).len(), 50, "{name}");
    }
}

/// A data dir another handle has open is refused as `EngineError::Locked`, told apart by
/// the engine library's error kind (the CLI matches on it to say "in use by another
/// cairn"), with the library's error kept as the source.
#[test]
fn opening_a_data_dir_that_is_open_is_refused_as_locked() {
    for t in all_engines().into_iter().filter(|t| t.on_disk()) {
        let name = t.kind.as_str();
        let Err(e) = engine::open(t.kind, t.dir.path()) else {
            panic!("{name}: a second open of an open data dir succeeded");
        };
        assert!(matches!(e, EngineError::Locked(_)), "{name}: {e:?}");
        assert!(std::error::Error::source(&e).is_some(), "{name}: no source");
    }
}

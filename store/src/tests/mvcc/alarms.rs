//! Alarms (`crate::alarm`): a `NOSPACE` alarm refuses what may grow the database on every
//! replica alike, persists with the state machine and its snapshots, and a store or a
//! snapshot written before alarms existed has none.

use super::*;
use crate::alarm::{AlarmAction, AlarmMember, AlarmType};

const MEMBER: AlarmMember = AlarmMember {
    member_id: 42,
    alarm: AlarmType::NoSpace,
};

fn alarm(m: &Mvcc, action: AlarmAction) -> Vec<AlarmMember> {
    match apply(
        m,
        Command::Alarm {
            action,
            member: MEMBER,
        },
    ) {
        CommandResult::Alarm { alarms, .. } => alarms,
        other => panic!("alarm failed: {other:?}"),
    }
}

#[test]
fn an_active_nospace_alarm_refuses_growing_writes_and_lets_deletes_and_reads_through() {
    for (t, m) in stores() {
        let name = t.kind.as_str();
        put(&m, "a", "1");
        put(&m, "b", "1");
        let lease = grant(&m, 0, 30);
        let rev = m.revision();
        assert_eq!(alarm(&m, AlarmAction::Activate), vec![MEMBER], "{name}");
        assert_eq!(
            m.revision(),
            rev,
            "{name}: an alarm does not move the revision"
        );

        let refused = apply(&m, Command::Put(PutRequest::new("c", "1")));
        assert_eq!(err(refused), StoreError::NoSpace, "{name}");
        let refused = apply(&m, Command::LeaseGrant { id: 0, ttl: 30 });
        assert_eq!(err(refused), StoreError::NoSpace, "{name}");
        // In a batch, each command is judged on its own.
        let batch = apply(
            &m,
            Command::Batch(vec![
                Command::Put(PutRequest::new("d", "1")),
                Command::DeleteRange(DeleteRangeRequest {
                    range: KeyRange::key("b"),
                    prev_kv: false,
                }),
            ]),
        );
        let CommandResult::Batch(rs) = batch else {
            panic!("{name}: {batch:?}")
        };
        assert_eq!(rs[0], CommandResult::Error(StoreError::NoSpace), "{name}");
        assert!(matches!(rs[1], CommandResult::DeleteRange(_)), "{name}");
        assert_eq!(m.revision(), rev + 1, "{name}: only the delete wrote");

        // Freeing space stays possible; reads go on.
        delete(&m, KeyRange::key("a"));
        compact(&m, m.revision());
        assert!(matches!(
            apply(&m, Command::LeaseRevoke { id: lease }),
            CommandResult::LeaseRevoke { .. }
        ));
        assert_eq!(get(&m, "a"), None, "{name}");

        assert_eq!(alarm(&m, AlarmAction::Deactivate), vec![], "{name}");
        put(&m, "c", "after");
        assert_eq!(value_of(&get(&m, "c")), Some("after"), "{name}");
    }
}

#[test]
fn alarms_persist_across_reopening_and_travel_in_snapshots() {
    for (mut t, m) in stores() {
        let name = t.kind.as_str();
        put(&m, "a", "1");
        alarm(&m, AlarmAction::Activate);
        let mut dump = Vec::new();
        m.dump(&mut dump).unwrap();
        drop(m);

        let m = open(&t);
        assert_eq!(m.alarms(), vec![MEMBER], "{name}: after reopening");
        drop(m);
        if t.on_disk() {
            t.reopen();
            let m = open(&t);
            assert_eq!(
                m.alarms(),
                vec![MEMBER],
                "{name}: after reopening the engine"
            );
            drop(m);
        }

        let fresh = open_engine(t.kind);
        let restored = open(&fresh);
        restored
            .restore(&mut Cursor::new(dump), WriteBatch::new())
            .unwrap();
        assert_eq!(restored.alarms(), vec![MEMBER], "{name}: restored");
        assert_eq!(
            err(apply(&restored, Command::Put(PutRequest::new("b", "1")))),
            StoreError::NoSpace,
            "{name}: the restored replica refuses as the others do"
        );
    }
}

#[test]
fn a_store_and_a_snapshot_from_before_alarms_have_none() {
    for (t, m) in stores() {
        let name = t.kind.as_str();
        // A dump of a store that never had an alarm has no alarm record at all, as one
        // written before alarms existed.
        put(&m, "a", "1");
        let mut old = Vec::new();
        m.dump(&mut old).unwrap();
        assert_eq!(m.meta(b"alarms").unwrap(), None, "{name}");

        alarm(&m, AlarmAction::Activate);
        m.restore(&mut Cursor::new(old), WriteBatch::new()).unwrap();
        assert_eq!(
            m.alarms(),
            vec![],
            "{name}: the old snapshot replaced the alarms"
        );
        put(&m, "b", "1");
    }
}

#[test]
fn log_entries_encoded_before_alarms_decode_unchanged() {
    // The encodings of commands as written before `Command::Alarm` was appended: the
    // variant index comes first, so appending a variant changes none of them.
    let compact = crate::codec::encode(&Command::Compact { revision: 5 });
    assert_eq!(compact, vec![3, 10]);
    let revoke = crate::codec::encode(&Command::LeaseRevoke { id: 1 });
    assert_eq!(revoke, vec![5, 2]);
    let decoded: Command = crate::codec::decode(&[3, 10]).unwrap();
    assert_eq!(decoded, Command::Compact { revision: 5 });
    let decoded: CommandResult = crate::codec::decode(&[3, 10]).unwrap();
    assert_eq!(decoded, CommandResult::Compact { revision: 5 });
}

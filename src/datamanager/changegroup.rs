//! Change groups: optimistic-concurrency tokens over store revisions (Agola's change
//! groups). A writer reads a token recording the revision of each named group, and its
//! write commits only if no other writer touched any of those groups since; the write
//! then touches them itself. Group keys hold no data; their mod revision is the version.
//! Groups untouched for longer than the horizon are deleted, and tokens older than the
//! horizon are refused, so a deleted group cannot make an old token look current.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use cairn_client::run::Run;
use serde::{Deserialize, Serialize};
use store::{Compare, RequestOp};

use super::keys;
use super::runs::run_write_ops;
use super::{Datamanager, DmError, Versioned, delete, put, unchanged};

/// Tokens older than this many revisions are refused and group keys this old deleted.
pub const HORIZON_REVISIONS: i64 = 5_000;

/// The revisions of some change groups as read at `cur_revision`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeGroupToken {
    pub cur_revision: i64,
    /// Group name → mod revision of its key (0: absent).
    pub groups: BTreeMap<String, i64>,
}

impl ChangeGroupToken {
    /// `base64(JSON)`, opaque to clients.
    pub fn encode(&self) -> String {
        STANDARD.encode(serde_json::to_vec(self).expect("tokens always serialize"))
    }

    pub fn decode(s: &str) -> Result<ChangeGroupToken, DmError> {
        let invalid = |why: String| DmError::Invalid {
            what: "change group token",
            why,
        };
        let bytes = STANDARD.decode(s).map_err(|e| invalid(e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))
    }
}

/// A group name is one path segment of at most 256 characters.
pub fn validate_name(name: &str) -> Result<(), DmError> {
    if name.is_empty() || name.len() > 256 || name.contains('/') || name.contains('\0') {
        return Err(DmError::Invalid {
            what: "change group name",
            why: format!("{name:?} must be 1..=256 characters without '/'"),
        });
    }
    Ok(())
}

/// The compares that make a write conditional on `token` and the puts that touch its
/// groups.
fn guard(token: &ChangeGroupToken) -> (Vec<Compare>, Vec<RequestOp>) {
    let mut compare = Vec::new();
    let mut ops = Vec::new();
    for (name, rev) in &token.groups {
        compare.push(unchanged(keys::change_group(name), *rev));
        ops.push(put(keys::change_group(name), Vec::new()));
    }
    (compare, ops)
}

impl Datamanager {
    /// A token for `names` as of now.
    pub async fn change_group_token(&self, names: &[String]) -> Result<ChangeGroupToken, DmError> {
        for n in names {
            validate_name(n)?;
        }
        let keys: Vec<String> = names.iter().map(|n| keys::change_group(n)).collect();
        let revision = self.kv().header().revision;
        let mut groups = BTreeMap::new();
        for (name, kv) in names.iter().zip(self.get_many_json_raw(&keys).await?) {
            groups.insert(name.clone(), kv.map_or(0, |kv| kv.mod_revision));
        }
        Ok(ChangeGroupToken {
            cur_revision: revision,
            groups,
        })
    }

    /// Writes `run` over `prev` only if no group of `token` changed since the token was
    /// read; touches those groups.
    pub async fn update_run_guarded(
        &self,
        prev: &Versioned<Run>,
        run: &Run,
        token: &ChangeGroupToken,
    ) -> Result<i64, DmError> {
        let now = self.kv().header().revision;
        if token.cur_revision + HORIZON_REVISIONS < now {
            return Err(DmError::Conflict("change group token expired".into()));
        }
        let (mut compare, mut ops) = guard(token);
        compare.push(unchanged(keys::run(&run.id), prev.mod_revision));
        ops.extend(run_write_ops(Some(&prev.value), run));
        let resp = self.commit(compare, ops).await?;
        if !resp.succeeded {
            return Err(DmError::Conflict(format!(
                "run {} or its change groups",
                run.id
            )));
        }
        Ok(resp.revision)
    }

    /// Deletes change-group keys untouched for more than the horizon.
    pub async fn compact_change_groups(&self) -> Result<usize, DmError> {
        let now = self.kv().header().revision;
        let old: Vec<store::KeyValue> = self
            .scan(keys::CHANGE_GROUP, true)
            .await?
            .into_iter()
            .filter(|kv| kv.mod_revision + HORIZON_REVISIONS < now)
            .collect();
        let mut deleted = 0;
        for kv in old {
            let key = String::from_utf8_lossy(&kv.key).into_owned();
            let resp = self
                .commit(
                    vec![unchanged(key.clone(), kv.mod_revision)],
                    vec![delete(key)],
                )
                .await?;
            deleted += usize::from(resp.succeeded);
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        let mut t = ChangeGroupToken {
            cur_revision: 42,
            ..ChangeGroupToken::default()
        };
        t.groups.insert("queue-g".into(), 7);
        assert_eq!(ChangeGroupToken::decode(&t.encode()).expect("decodes"), t);
        assert!(ChangeGroupToken::decode("not base64!").is_err());
    }

    #[test]
    fn group_names_are_one_segment() {
        assert!(validate_name("counter-p1").is_ok());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name("").is_err());
        assert!(validate_name(&"x".repeat(257)).is_err());
    }
}

#[cfg(test)]
mod store_tests {
    use cairn_client::runconfig::RunConfig;

    use super::*;
    use crate::datamanager::testing::TestStore;

    #[tokio::test]
    async fn a_token_guards_against_a_concurrent_writer_of_the_same_group() {
        let st = TestStore::start().await;
        let dm = st.dm();
        let created = dm
            .create_run("/project/p/branch/a", |id, counter| {
                let config = RunConfig {
                    id: id.to_string(),
                    group: "/project/p/branch/a".into(),
                    ..RunConfig::default()
                };
                let run = crate::runservice::new_run(&config, counter, chrono::Utc::now());
                (config, run)
            })
            .await
            .expect("create");
        let group = vec!["queue-x".to_string()];
        let t1 = dm.change_group_token(&group).await.expect("token");
        let t2 = dm.change_group_token(&group).await.expect("token");
        let mut a = created.run.value.clone();
        a.stop = true;
        let rev = dm
            .update_run_guarded(&created.run, &a, &t1)
            .await
            .expect("first wins");
        // The second writer read the group before the first wrote it: refused, even
        // though it writes the run at its new revision.
        let fresh = Versioned {
            value: a.clone(),
            mod_revision: rev,
        };
        assert!(matches!(
            dm.update_run_guarded(&fresh, &a, &t2).await,
            Err(DmError::Conflict(_))
        ));
    }
}

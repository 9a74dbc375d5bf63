//! Creations made once: the record of each run made under a client's idempotency key
//! (`POST /runs` with `Idempotency-Key`), written in the run's own creation transaction,
//! so that a request sent again after a lost answer finds the runs instead of making
//! more. A record also holds a digest of the request, so the same key with another
//! request is refused rather than answered with unrelated runs. Records are dropped by
//! the scheduler's housekeeping once [`IDEMPOTENCY_KEY_TTL_SECS`] old.
//!
//! [`IDEMPOTENCY_KEY_TTL_SECS`]: cairn_client::api::IDEMPOTENCY_KEY_TTL_SECS

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Datamanager, DmError, decode, delete, keys};

/// A creation request under an idempotency key.
#[derive(Clone, Debug)]
pub struct CreateOnce {
    /// The key's digest (any bytes a client sends become 64 hex characters).
    key_digest: String,
    /// The request's digest.
    pub fingerprint: String,
    pub at: DateTime<Utc>,
}

impl CreateOnce {
    /// `key` as the client sent it (validated by the caller) and the request's canonical
    /// bytes.
    pub fn new(key: &str, request: &[u8], at: DateTime<Utc>) -> CreateOnce {
        CreateOnce {
            key_digest: hex(&Sha256::digest(key.as_bytes())),
            fingerprint: hex(&Sha256::digest(request)),
            at,
        }
    }

    /// The record key of the `n`-th run made by the request.
    pub(crate) fn record_key(&self, n: usize) -> String {
        format!("{}{}/{n}", keys::CREATE_ONCE, self.key_digest)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What is stored per run made under a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateRecord {
    pub fingerprint: String,
    pub run_id: String,
    pub created_at: DateTime<Utc>,
}

/// What an earlier creation under the same key means for this one: the run it made, or a
/// refusal when the request differs.
pub(crate) fn earlier_run(once: &CreateOnce, key: &str, stored: &[u8]) -> Result<String, DmError> {
    let record: CreateRecord = decode(key, stored)?;
    if record.fingerprint != once.fingerprint {
        return Err(DmError::Refused(
            "this idempotency key was used for another request: send a new key with a \
             changed request"
                .into(),
        ));
    }
    Ok(record.run_id)
}

impl Datamanager {
    /// Deletes the records made before `cutoff`; returns how many.
    pub async fn expire_create_records(&self, cutoff: DateTime<Utc>) -> Result<usize, DmError> {
        let kvs = self.scan(keys::CREATE_ONCE, false).await?;
        let doomed: Vec<String> = kvs
            .iter()
            .filter_map(|kv| {
                let key = String::from_utf8_lossy(&kv.key).into_owned();
                // A record that cannot be read is dropped too: it can only refuse.
                let old = serde_json::from_slice::<CreateRecord>(&kv.value)
                    .map_or(true, |r| r.created_at < cutoff);
                old.then_some(key)
            })
            .collect();
        for chunk in doomed.chunks(128) {
            self.commit(vec![], chunk.iter().cloned().map(delete).collect())
                .await?;
        }
        Ok(doomed.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).expect("a time")
    }

    #[test]
    fn any_key_becomes_one_path_element_and_requests_differ_by_digest() {
        let a = CreateOnce::new("../../x/y", b"{}", at(1));
        let k = a.record_key(3);
        let rest = k.strip_prefix(keys::CREATE_ONCE).expect("under the prefix");
        let (digest, n) = rest.split_once('/').expect("digest/n");
        assert_eq!(digest.len(), 64);
        assert!(digest.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(n, "3");
        let b = CreateOnce::new("../../x/y", b"{\"a\":1}", at(1));
        assert_eq!(a.record_key(0), b.record_key(0));
        assert_ne!(a.fingerprint, b.fingerprint);
    }

    #[test]
    fn an_earlier_record_gives_its_run_only_to_the_same_request() {
        let once = CreateOnce::new("k", b"request", at(5));
        let record = CreateRecord {
            fingerprint: once.fingerprint.clone(),
            run_id: "r7".into(),
            created_at: at(5),
        };
        let stored = serde_json::to_vec(&record).expect("JSON");
        assert_eq!(
            earlier_run(&once, "k0", &stored).expect("the same request"),
            "r7"
        );
        let other = CreateOnce::new("k", b"another request", at(6));
        assert!(matches!(
            earlier_run(&other, "k0", &stored),
            Err(DmError::Refused(_))
        ));
        assert!(matches!(
            earlier_run(&once, "k0", b"not json"),
            Err(DmError::Corrupt { .. })
        ));
    }
}

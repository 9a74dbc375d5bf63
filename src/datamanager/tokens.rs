//! Stored credentials: the tokens made with `cairn token create` (a role, a name) and
//! each executor's own credential, issued when it registers. Only a SHA-256 of each
//! secret is stored, never the secret; the API compares in constant time
//! (`api::auth`).
//!
//! ```text
//! cairn.<token id>.<secret>       a stored token   (rs/token/<token id>)
//! cairnx.<executor id>.<secret>   an executor's    (rs/xcred/<executor id>, one per executor)
//! ```

use cairn_client::api::{TokenInfo, TokenRole};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::keys;
use super::{Datamanager, DmError, delete, encode, put};

/// Prefix of a stored token.
pub const STORED_PREFIX: &str = "cairn.";
/// Prefix of an executor's credential.
pub const EXECUTOR_PREFIX: &str = "cairnx.";

/// A `cairn token create` token, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredToken {
    pub id: String,
    pub name: String,
    pub role: TokenRole,
    /// Hex SHA-256 of the secret.
    pub sha256: String,
    pub created: chrono::DateTime<chrono::Utc>,
}

impl StoredToken {
    pub fn info(&self) -> TokenInfo {
        TokenInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            role: self.role,
            created: self.created,
        }
    }
}

/// An executor's credential, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorCredential {
    pub executor_id: String,
    /// Hex SHA-256 of the secret.
    pub sha256: String,
    pub created: chrono::DateTime<chrono::Utc>,
}

/// A bearer token split into its kind, id and secret (not checked yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presented<'a> {
    Stored {
        id: &'a str,
        secret: &'a str,
    },
    Executor {
        executor_id: &'a str,
        secret: &'a str,
    },
    /// Anything else: only the admin token can match it.
    Other,
}

/// Splits `token`; pure.
pub fn parse(token: &str) -> Presented<'_> {
    if let Some(rest) = token.strip_prefix(EXECUTOR_PREFIX)
        && let Some((executor_id, secret)) = rest.rsplit_once('.')
        && !executor_id.is_empty()
        && !secret.is_empty()
    {
        return Presented::Executor {
            executor_id,
            secret,
        };
    }
    if let Some(rest) = token.strip_prefix(STORED_PREFIX)
        && let Some((id, secret)) = rest.split_once('.')
        && !id.is_empty()
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && !secret.is_empty()
    {
        return Presented::Stored { id, secret };
    }
    Presented::Other
}

/// The SHA-256 of a secret.
pub fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The hex SHA-256 of a secret, as stored.
pub fn hex_digest(secret: &str) -> String {
    hex(&digest(secret))
}

/// Parses a stored hex digest.
pub fn parse_digest(hex_str: &str) -> Option<[u8; 32]> {
    if hex_str.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex_str.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `n` random bytes, hex.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::thread_rng().fill(&mut bytes[..]);
    hex(&bytes)
}

impl Datamanager {
    /// Makes a stored token; returns it with the token string (its only appearance).
    pub async fn create_token(
        &self,
        role: TokenRole,
        name: &str,
    ) -> Result<(StoredToken, String), DmError> {
        let id = random_hex(8);
        let secret = random_hex(24);
        let stored = StoredToken {
            id: id.clone(),
            name: name.to_string(),
            role,
            sha256: hex_digest(&secret),
            created: chrono::Utc::now(),
        };
        self.commit(
            vec![super::absent(keys::token(&id))],
            vec![put(keys::token(&id), encode(&stored))],
        )
        .await?;
        Ok((stored, format!("{STORED_PREFIX}{id}.{secret}")))
    }

    pub async fn token(&self, id: &str) -> Result<Option<StoredToken>, DmError> {
        Ok(self.get_json(&keys::token(id)).await?.map(|v| v.value))
    }

    pub async fn tokens(&self) -> Result<Vec<StoredToken>, DmError> {
        Ok(self
            .scan_json(keys::TOKEN)
            .await?
            .into_iter()
            .map(|v| v.value)
            .collect())
    }

    /// Deletes a stored token; `NotFound` when there is none.
    pub async fn revoke_token(&self, id: &str) -> Result<(), DmError> {
        if self.token(id).await?.is_none() {
            return Err(DmError::not_found("token", id));
        }
        self.commit(vec![], vec![delete(keys::token(id))]).await?;
        Ok(())
    }

    /// Issues executor `executor_id` a new credential (replacing any older one); returns
    /// the credential string (its only appearance).
    pub async fn issue_executor_credential(&self, executor_id: &str) -> Result<String, DmError> {
        let secret = random_hex(24);
        let cred = ExecutorCredential {
            executor_id: executor_id.to_string(),
            sha256: hex_digest(&secret),
            created: chrono::Utc::now(),
        };
        self.commit(
            vec![],
            vec![put(keys::executor_credential(executor_id), encode(&cred))],
        )
        .await?;
        Ok(format!("{EXECUTOR_PREFIX}{executor_id}.{secret}"))
    }

    pub async fn executor_credential(
        &self,
        executor_id: &str,
    ) -> Result<Option<ExecutorCredential>, DmError> {
        Ok(self
            .get_json(&keys::executor_credential(executor_id))
            .await?
            .map(|v| v.value))
    }

    /// Revokes executor `executor_id`'s credential (none is fine).
    pub async fn revoke_executor_credential(&self, executor_id: &str) -> Result<(), DmError> {
        self.commit(vec![], vec![delete(keys::executor_credential(executor_id))])
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_split_into_kind_id_and_secret() {
        assert_eq!(
            parse("cairnx.exec-1.ab.cd"),
            Presented::Executor {
                executor_id: "exec-1.ab",
                secret: "cd"
            }
        );
        assert_eq!(
            parse("cairn.0123abcd.s3cr3t"),
            Presented::Stored {
                id: "0123abcd",
                secret: "s3cr3t"
            }
        );
        for other in [
            "",
            "cairn.",
            "cairn..x",
            "cairn.zz.x",
            "cairnx.x",
            "cairnx..x",
            "test-token",
        ] {
            assert_eq!(parse(other), Presented::Other, "{other:?}");
        }
    }

    #[test]
    fn digests_round_trip_through_hex() {
        let d = digest("secret");
        assert_eq!(parse_digest(&hex_digest("secret")), Some(d));
        assert_eq!(parse_digest("zz"), None);
        assert_eq!(parse_digest(&"g".repeat(64)), None);
    }
}

//! Byte encodings of the state machine's records: order-preserving key escaping for the
//! history family, big-endian revisions, and the bincode configuration for values.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::StoreError;

/// Encodes a value with the one bincode configuration used everywhere in the store.
pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(v, bincode::config::standard())
        .expect("encoding plain data to a Vec cannot fail")
}

/// Decodes a value written by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(StoreError::corrupt)
}

/// Big-endian bytes of a non-negative revision or id, so byte order is numeric order.
pub fn be(n: i64) -> [u8; 8] {
    (n as u64).to_be_bytes()
}

pub fn from_be(b: &[u8]) -> Result<i64, StoreError> {
    let arr: [u8; 8] = b
        .try_into()
        .map_err(|_| StoreError::corrupt(format!("expected 8 bytes, got {}", b.len())))?;
    Ok(u64::from_be_bytes(arr) as i64)
}

/// Order-preserving escape of an arbitrary key: `0x00` becomes `0x00 0xff`. Comparing
/// escaped keys compares the originals, and `escape(k) ++ [0, 0]` sorts after `escape(k)`
/// but before the escape of any longer key starting with `k`.
pub fn escape(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 10);
    for &b in key {
        out.push(b);
        if b == 0 {
            out.push(0xff);
        }
    }
    out
}

/// The history-family key of `key` at `revision`.
pub fn history_key(key: &[u8], revision: i64) -> Vec<u8> {
    let mut k = escape(key);
    k.extend_from_slice(&[0, 0]);
    k.extend_from_slice(&be(revision));
    k
}

/// The history-family prefix of every version of `key`.
pub fn history_prefix(key: &[u8]) -> Vec<u8> {
    let mut k = escape(key);
    k.extend_from_slice(&[0, 0]);
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_history_keys_sort_by_key_then_revision() {
        let keys: Vec<&[u8]> = vec![
            b"", b"\0", b"\0\0", b"\0\x01", b"a", b"a\0", b"a\0b", b"ab", b"b",
        ];
        let mut encoded = Vec::new();
        for k in &keys {
            for rev in [1i64, 2, 300] {
                encoded.push(history_key(k, rev));
            }
        }
        let mut sorted = encoded.clone();
        sorted.sort();
        assert_eq!(
            encoded, sorted,
            "encoding must preserve (key, revision) order"
        );
    }

    #[test]
    fn history_keys_of_a_range_fall_between_the_escaped_bounds() {
        let (start, end) = (escape(b"a"), escape(b"a\0b"));
        assert!(history_key(b"a", 5) >= start && history_key(b"a", 5) < end);
        assert!(history_key(b"a\0", 5) < end);
        assert!(history_key(b"a\0b", 5) >= end);
    }
}

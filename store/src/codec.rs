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

/// Decodes a value written by [`encode`], with bincode's size limit set to the size class
/// of `bytes` (see [`limit_for`]): a length prefix that claims more than that is refused
/// before anything is allocated, so a 14-byte input cannot make bincode allocate 2^44
/// bytes (bincode 2 allocates a `String` or byte buffer of the claimed length *before*
/// reading it, and with no limit it does not check the claim at all).
///
/// Only strings and byte buffers claim against the limit (sequences and maps decoded
/// through serde grow as their elements arrive; serde caps their preallocation at 1 MiB).
/// Integers claim their in-memory size (a u64 claims 8 bytes for a 1-byte varint), so the
/// limit is the size class of 16 × `bytes.len()`: a valid encoding is never refused.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    // Integers claim their in-memory size (up to 16 bytes for an i128) though a varint
    // takes one byte: a valid encoding claims at most CLAIM_FACTOR × its length.
    match limit_for(bytes.len().saturating_mul(CLAIM_FACTOR)) {
        KIB_4 => decode_limited::<T, KIB_4>(bytes),
        KIB_256 => decode_limited::<T, KIB_256>(bytes),
        MIB_4 => decode_limited::<T, MIB_4>(bytes),
        MIB_64 => decode_limited::<T, MIB_64>(bytes),
        GIB_1 => decode_limited::<T, GIB_1>(bytes),
        _ => decode_limited::<T, { usize::MAX }>(bytes),
    }
}

/// How many bytes bincode may claim per byte read (a 1-byte varint claims an i128's 16).
const CLAIM_FACTOR: usize = 16;

const KIB_4: usize = 4 << 10;
const KIB_256: usize = 256 << 10;
const MIB_4: usize = 4 << 20;
const MIB_64: usize = 64 << 20;
const GIB_1: usize = 1 << 30;

/// The limit [`decode`] uses for an input of `len` bytes: the smallest of 4 KiB,
/// 256 KiB, 4 MiB, 64 MiB and 1 GiB that holds it (no limit above 1 GiB).
pub const fn limit_for(len: usize) -> usize {
    if len <= KIB_4 {
        KIB_4
    } else if len <= KIB_256 {
        KIB_256
    } else if len <= MIB_4 {
        MIB_4
    } else if len <= MIB_64 {
        MIB_64
    } else if len <= GIB_1 {
        GIB_1
    } else {
        usize::MAX
    }
}

/// Decodes with bincode's limit set to `LIMIT` bytes: no string or byte buffer (nor all
/// of them together) is allocated beyond it; a larger claim is an error.
pub fn decode_limited<T: DeserializeOwned, const LIMIT: usize>(
    bytes: &[u8],
) -> Result<T, StoreError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard().with_limit::<LIMIT>())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// H2 (security review): `PeerRequest::Join { node_id: 5, addr: String(len = 2^44) }` in
    /// 14 bytes; the same shape here as a (u8, u8, String) tuple.
    #[test]
    fn a_huge_length_prefix_is_refused_before_allocating() {
        let bomb = b"\x07\x05\xfd\x00\x00\x00\x00\x00\x10\x00\x00abc";
        let r: Result<(u8, u8, String), _> = decode(bomb);
        assert!(r.is_err());
        let r: Result<(u8, u8, Vec<u8>), _> = decode(bomb);
        assert!(r.is_err());
    }

    #[test]
    fn values_at_the_edge_of_a_size_class_still_decode() {
        for len in [0usize, 100, KIB_4 - 8, KIB_4 + 1, KIB_256 + 10] {
            let v = (7u64, "x".repeat(len), vec![1u8; len / 2]);
            let bytes = encode(&v);
            let back: (u64, String, Vec<u8>) = decode(&bytes).expect("a valid encoding decodes");
            assert_eq!(back, v);
        }
    }

    /// Small integers are 1-byte varints but claim 8 bytes each: a record of them (raft
    /// log entries of many small commands) was refused as "LimitExceeded", which stopped
    /// the node.
    #[test]
    fn many_small_integers_decode() {
        for n in [100usize, 600, 4000, 40_000] {
            let v: Vec<u64> = (0..n as u64).map(|i| i % 100).collect();
            let bytes = encode(&v);
            assert!(bytes.len() < n + 8);
            assert_eq!(decode::<Vec<u64>>(&bytes).expect("decodes"), v, "{n}");
        }
    }

    #[test]
    fn a_nested_batch_is_refused_and_a_flat_one_decodes() {
        use crate::Command;
        let flat = Command::Batch(vec![
            Command::LeaseRevoke { id: 1 },
            Command::Compact { revision: 2 },
        ]);
        assert_eq!(decode::<Command>(&encode(&flat)), Ok(flat.clone()));
        let nested = Command::Batch(vec![flat]);
        assert!(decode::<Command>(&encode(&nested)).is_err());
        // A well-formed command after a refused one still decodes (no flag left set).
        let again = Command::Batch(vec![Command::LeaseRevoke { id: 3 }]);
        assert_eq!(decode::<Command>(&encode(&again)), Ok(again.clone()));
    }

    proptest::proptest! {
        /// Arbitrary bytes never panic, whatever type they are decoded as.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = decode::<(u8, String, Vec<u8>, Option<Vec<String>>)>(&bytes);
            let _ = decode::<crate::Command>(&bytes);
        }
    }
}

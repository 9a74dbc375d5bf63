//! HMAC-SHA256 (RFC 2104) over `sha2`: the authentication of exports.

use sha2::{Digest, Sha256};

/// HMAC-SHA256 (RFC 2104) over `sha2`.
#[derive(Clone)]
pub(super) struct HmacSha256 {
    inner: Sha256,
    outer_pad: [u8; 64],
}

impl HmacSha256 {
    pub(super) fn new(key: &[u8]) -> HmacSha256 {
        let mut block = [0u8; 64];
        if key.len() > block.len() {
            block[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let mut inner = Sha256::new();
        inner.update(block.map(|b| b ^ 0x36));
        HmacSha256 {
            inner,
            outer_pad: block.map(|b| b ^ 0x5c),
        }
    }

    pub(super) fn update(&mut self, data: &[u8]) {
        self.inner.update(data);
    }

    pub(super) fn finalize(self) -> [u8; 32] {
        let mut outer = Sha256::new();
        outer.update(self.outer_pad);
        outer.update(self.inner.finalize());
        outer.finalize().into()
    }
}

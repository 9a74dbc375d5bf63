//! Disk space as a node sees it: the free bytes of its data dir's file system, and
//! [`SpaceWatch`], the engine wrapper that notices when the engine itself ran out of space.
//!
//! A node's first defence is the `NOSPACE` alarm (`crate::alarms`), raised while the file
//! system still has [`crate::alarms::DISK_RESERVE_BYTES`] free, so the alarm's own log
//! entry, deletes and compactions still fit. If the disk fills anyway (another process
//! took the rest, one write larger than the reserve), the engine's write fails: Raft
//! cannot skip a log entry nor apply one twice, so openraft stops this node's Raft on the
//! storage error (an engine batch is atomic: the disk holds the last committed state,
//! with its applied log id). The node stays up: [`SpaceWatch::full`] makes it refuse
//! writes with the `NOSPACE` error, and serializable reads are served from the state in
//! memory (every entry in it was committed). A restart once space is freed recovers the
//! engine and replays the log.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use store::engine::Pair;
use store::{Cf, Durability, Engine, EngineError, Scan, WriteBatch};

/// Bytes free for an unprivileged writer on the file system holding `dir` (`None` when it
/// cannot be read).
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    // The two counts are `u64` on 64-bit Linux and narrower elsewhere.
    #[allow(clippy::useless_conversion)]
    let (blocks, size) = (
        u64::from(st.blocks_available()),
        u64::from(st.fragment_size()),
    );
    Some(blocks.saturating_mul(size))
}

/// Whether `e` says the device or a disk quota is full. Engines wrap the OS error in their
/// own types (and some only keep its text), so the whole source chain is searched, for
/// the error kind and for the OS's message.
pub fn is_no_space(e: &EngineError) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && (io.kind() == std::io::ErrorKind::StorageFull
                || io.kind() == std::io::ErrorKind::QuotaExceeded)
        {
            return true;
        }
        let text = err.to_string();
        if text.contains("No space left on device") || text.contains("Disk quota exceeded") {
            return true;
        }
        cur = err.source();
    }
    false
}

/// An engine that remembers a write that failed for lack of space. Everything else is the
/// inner engine's.
pub struct SpaceWatch {
    inner: Arc<dyn Engine>,
    full: Arc<AtomicBool>,
}

impl SpaceWatch {
    pub fn new(inner: Arc<dyn Engine>) -> Self {
        Self {
            inner,
            full: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Set, for good, once a write failed for lack of space.
    pub fn full(&self) -> Arc<AtomicBool> {
        self.full.clone()
    }

    fn watch<T>(&self, r: Result<T, EngineError>) -> Result<T, EngineError> {
        if let Err(e) = &r
            && is_no_space(e)
            && !self.full.swap(true, Ordering::SeqCst)
        {
            tracing::error!(
                error = %e,
                "the disk is full: this node refuses writes (NOSPACE) and its Raft stops; free space and restart it"
            );
        }
        r
    }
}

impl Scan for SpaceWatch {
    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<Pair>, EngineError> {
        self.inner.scan(cf, start, end, limit, reverse)
    }
}

impl Engine for SpaceWatch {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.inner.get(cf, key)
    }

    fn get_many(&self, cf: Cf, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, EngineError> {
        self.inner.get_many(cf, keys)
    }

    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<(), EngineError> {
        self.watch(self.inner.write(batch, durability))
    }

    fn sync(&self) -> Result<(), EngineError> {
        self.watch(self.inner.sync())
    }

    fn size_on_disk(&self) -> u64 {
        self.inner.size_on_disk()
    }

    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn view(&self) -> Result<Option<Box<dyn Scan>>, EngineError> {
        self.inner.view()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: std::io::ErrorKind) -> EngineError {
        EngineError::Io(Box::new(std::io::Error::from(kind)))
    }

    #[test]
    fn a_full_device_or_quota_is_no_space_and_other_io_errors_are_not() {
        assert!(is_no_space(&io(std::io::ErrorKind::StorageFull)));
        assert!(is_no_space(&io(std::io::ErrorKind::QuotaExceeded)));
        assert!(is_no_space(&EngineError::Io(Box::new(
            std::io::Error::from_raw_os_error(28)
        ))));
        assert!(!is_no_space(&io(std::io::ErrorKind::PermissionDenied)));
        assert!(!is_no_space(&EngineError::UnknownEngine("x".into())));
    }
}

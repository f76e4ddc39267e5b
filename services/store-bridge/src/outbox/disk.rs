//! The outbox's disk: how much room it has, and a reserve file that keeps room for the writes that
//! free space (deletes of delivered records, WAL checkpoints) when everything else has filled it.
//! No delivery guarantee of its own.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Free bytes for an unprivileged writer on the filesystem holding `dir` (`None` if unknown).
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let s = rustix::fs::statvfs(dir).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

/// Whether a SQLite failure means "the disk cannot take this write now" (full, or failing to
/// write): the writer then stops acking and retries, instead of stopping the bridge.
pub fn is_storage_failure(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::{DiskFull, SystemIoFailure};
    matches!(
        e.sqlite_error_code(),
        Some(DiskFull) | Some(SystemIoFailure)
    )
}

/// A file of `bytes` zeros, given back when the disk fills up and taken again once it has room.
#[derive(Debug)]
pub struct Reserve {
    path: PathBuf,
    bytes: u64,
    /// Whether the file is in place now.
    held: bool,
}

impl Reserve {
    /// Takes the reserve in `dir` (logged, not fatal, when the disk has no room for it already).
    pub fn take(dir: &Path, bytes: u64) -> Reserve {
        let mut r = Reserve {
            path: dir.join("outbox.reserve"),
            bytes,
            held: false,
        };
        if bytes > 0
            && let Err(e) = r.fill()
        {
            tracing::warn!(path = %r.path.display(), bytes, error = %e, "cannot take the outbox disk reserve: a full disk may block deletes");
        }
        r
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    #[cfg(test)]
    pub fn is_held(&self) -> bool {
        self.held
    }

    /// Gives the reserve back to the filesystem (so deletes and checkpoints can write).
    pub fn release(&mut self) {
        if self.held {
            let _ = std::fs::remove_file(&self.path);
            self.held = false;
        }
    }

    /// Takes the reserve again; an error leaves it released.
    pub fn fill(&mut self) -> std::io::Result<()> {
        if self.held || self.bytes == 0 {
            return Ok(());
        }
        let res = (|| {
            let mut f = std::fs::File::create(&self.path)?;
            let chunk = vec![0u8; 64 * 1024];
            let mut left = self.bytes;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                f.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            f.sync_all()
        })();
        match res {
            Ok(()) => {
                self.held = true;
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(&self.path);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_taken_released_and_taken_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Reserve::take(dir.path(), 100_000);
        let file = dir.path().join("outbox.reserve");
        assert!(r.is_held());
        assert_eq!(std::fs::metadata(&file).unwrap().len(), 100_000);
        r.release();
        assert!(!file.exists() && !r.is_held());
        r.fill().unwrap();
        assert_eq!(std::fs::metadata(&file).unwrap().len(), 100_000);
        assert!(free_bytes(dir.path()).is_some_and(|b| b > 0));
    }
}

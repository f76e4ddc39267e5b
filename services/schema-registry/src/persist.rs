//! Durable storage of the registry: an append-only JSON-lines log in the data directory, one line
//! per transaction (a mutation and all its effects), replayed on start.
//!
//! Guarantee: `append` returns only after the line has been written and `fsync`ed (and, for a
//! newly created log, after the directory entry has been `fsync`ed), so every acknowledged mutation
//! survives a crash or power loss. A transaction is one line, written with a single `write_all`:
//! after a crash it is either entirely present or detected as a torn tail. On open, a torn or
//! unparseable *last* line (never acknowledged, because its fsync did not complete) is cut off;
//! an unparseable line anywhere else is reported as corruption and the registry refuses to start.
//! The log file is locked (`flock`) while open, so two registries cannot share a data directory.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Name of the log file inside the data directory.
pub const LOG_FILE: &str = "registry.jsonl";

/// How long `open` waits for another holder of the data directory to let go (a restart in the
/// same process may still be dropping the previous instance).
const LOCK_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} line {line} is corrupt: {reason}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> PersistError + 'a {
    move |source| PersistError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// An open, locked, append-only log.
#[derive(Debug)]
pub struct Log {
    file: File,
    path: PathBuf,
    /// Length of the committed prefix: a failed append is cut back to it.
    len: u64,
}

impl Log {
    /// Opens (creating if needed) the log in `dir`, locks it and returns every committed entry in
    /// write order.
    pub fn open<T: DeserializeOwned>(dir: &Path) -> Result<(Log, Vec<T>), PersistError> {
        let dir_existed = dir.is_dir();
        std::fs::create_dir_all(dir).map_err(io("create directory", dir))?;
        if !dir_existed && let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        let path = dir.join(LOG_FILE);
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io("open", &path))?;
        lock(&file, &path)?;
        if !existed {
            sync_dir(dir)?;
        }
        let mut bytes = Vec::new();
        file.seek(SeekFrom::Start(0)).map_err(io("seek", &path))?;
        file.read_to_end(&mut bytes).map_err(io("read", &path))?;
        let (entries, good_len) = parse_entries::<T>(&bytes, &path)?;
        if good_len < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                dropped_bytes = bytes.len() - good_len,
                "cutting off a torn (never acknowledged) last log entry"
            );
            file.set_len(good_len as u64)
                .map_err(io("truncate", &path))?;
            file.sync_all().map_err(io("fsync", &path))?;
        }
        let len = good_len as u64;
        Ok((Log { file, path, len }, entries))
    }

    /// Appends one entry as one line and fsyncs it. On failure the log is cut back to its last
    /// committed entry (best effort), so a half-written line never sits before later entries.
    pub fn append<T: Serialize>(&mut self, entry: &T) -> Result<(), PersistError> {
        let mut line = serde_json::to_vec(entry).map_err(|e| PersistError::Io {
            op: "serialise entry for",
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        line.push(b'\n');
        let written = self
            .file
            .write_all(&line)
            .map_err(io("append to", &self.path))
            .and_then(|()| self.file.sync_data().map_err(io("fsync", &self.path)));
        match written {
            Ok(()) => {
                self.len += line.len() as u64;
                Ok(())
            }
            Err(e) => {
                if let Err(cut) = self
                    .file
                    .set_len(self.len)
                    .and_then(|()| self.file.sync_data())
                {
                    tracing::error!(path = %self.path.display(), error = %cut, "cannot cut back a failed append");
                }
                Err(e)
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Parses newline-terminated JSON entries. Returns the entries and the length of the prefix that
/// holds them; a bad or unterminated last line is excluded, a bad earlier line is an error.
fn parse_entries<T: DeserializeOwned>(
    bytes: &[u8],
    path: &Path,
) -> Result<(Vec<T>, usize), PersistError> {
    let mut entries = Vec::new();
    let mut pos = 0;
    let mut line_no = 0;
    while pos < bytes.len() {
        line_no += 1;
        let rest = &bytes[pos..];
        let Some(nl) = rest.iter().position(|b| *b == b'\n') else {
            // Unterminated tail: a write that never completed.
            return Ok((entries, pos));
        };
        let line = &rest[..nl];
        let next = pos + nl + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            pos = next;
            continue;
        }
        match serde_json::from_slice::<T>(line) {
            Ok(entry) => entries.push(entry),
            Err(_) if next == bytes.len() => return Ok((entries, pos)),
            Err(e) => {
                return Err(PersistError::Corrupt {
                    path: path.to_path_buf(),
                    line: line_no,
                    reason: e.to_string(),
                });
            }
        }
        pos = next;
    }
    Ok((entries, pos))
}

fn lock(file: &File, path: &Path) -> Result<(), PersistError> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(TryLockError::WouldBlock) => {
                return Err(PersistError::Io {
                    op: "lock",
                    path: path.to_path_buf(),
                    source: std::io::Error::other(
                        "the data directory is in use by another registry",
                    ),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io("lock", path)(e)),
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), PersistError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync directory", dir))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, serde::Deserialize, PartialEq)]
    struct E {
        n: u32,
    }

    #[test]
    fn round_trip_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, old) = Log::open::<E>(dir.path()).unwrap();
            assert!(old.is_empty());
            log.append(&E { n: 1 }).unwrap();
            log.append(&E { n: 2 }).unwrap();
        }
        // Simulate a crash in the middle of a third write.
        let path = dir.path().join(LOG_FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"n\":").unwrap();
        drop(f);
        {
            let (mut log, old) = Log::open::<E>(dir.path()).unwrap();
            assert_eq!(old, vec![E { n: 1 }, E { n: 2 }]);
            log.append(&E { n: 3 }).unwrap();
        }
        let (_log, old) = Log::open::<E>(dir.path()).unwrap();
        assert_eq!(old, vec![E { n: 1 }, E { n: 2 }, E { n: 3 }]);
    }

    #[test]
    fn corruption_in_the_middle_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(LOG_FILE),
            b"{\"n\":1}\ngarbage\n{\"n\":2}\n",
        )
        .unwrap();
        let err = Log::open::<E>(dir.path()).unwrap_err();
        assert!(
            matches!(err, PersistError::Corrupt { line: 2, .. }),
            "{err}"
        );
    }
}

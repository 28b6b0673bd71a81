//! Commit detection without locks: the WAL-index header in the `-shm` file.
//!
//! SQLite's WAL index starts with two copies of a 48-byte header (format documented at
//! sqlite.org/walformat.html, §2.1). Every commit, by any connection in any process, rewrites it —
//! the frame count, checksums and a change counter all move — writing the second copy, a memory
//! barrier, then the first. Readers take the first, then the second, and trust the header only if
//! the two agree. We do the same: if both copies agree and equal what this thread saw at its last
//! sync, nothing has been committed since, and the in-memory view is current. Otherwise the
//! caller falls back to `PRAGMA data_version` and the change log. This check replaced a
//! `PRAGMA data_version` per request, whose `fcntl` locks cost about a quarter of `/me`'s
//! throughput (BENCHMARKS.md).

use memmap2::{Mmap, MmapOptions};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{Ordering, fence};

/// Bytes of one header copy.
const HEADER_BYTES: usize = 48;

/// A read-only mapping of the first two header copies of a database's `-shm` file.
#[derive(Debug)]
pub(super) struct WalWatch {
    map: Mmap,
}

pub(super) type Header = [u8; HEADER_BYTES];

impl WalWatch {
    /// Maps `<db>-shm`. Fails if the database is not in WAL mode or not open anywhere.
    pub(super) fn open(db_path: &Path) -> std::io::Result<Self> {
        let mut shm = PathBuf::from(db_path).into_os_string();
        shm.push("-shm");
        let file = File::open(shm)?;
        if file.metadata()?.len() < (2 * HEADER_BYTES) as u64 {
            return Err(std::io::Error::other("WAL index too short"));
        }
        // SAFETY: the mapping is read-only, and SQLite keeps the -shm file at least this long
        // while any connection is open; the store holds connections open for its whole life.
        // Other processes write the bytes concurrently, which is why every read below is
        // volatile and the result is only ever compared, never trusted as a structure.
        let map = unsafe { MmapOptions::new().len(2 * HEADER_BYTES).map(&file)? };
        Ok(Self { map })
    }

    /// The header, when both copies agree; `None` while a writer is half-way through.
    pub(super) fn header(&self) -> Option<Header> {
        let base = self.map.as_ptr();
        // SAFETY: both reads stay inside the 96 mapped bytes; `Header` is plain bytes with
        // alignment 1, so any bit pattern is valid.
        let first: Header = unsafe { std::ptr::read_volatile(base.cast::<Header>()) };
        fence(Ordering::Acquire);
        let second: Header =
            unsafe { std::ptr::read_volatile(base.add(HEADER_BYTES).cast::<Header>()) };
        (first == second).then_some(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_moves_with_every_commit_from_any_connection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let writer = rusqlite::Connection::open(&path).unwrap();
        writer
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))
            .unwrap();
        writer.execute_batch("CREATE TABLE t (x)").unwrap();
        let watch = WalWatch::open(&path).unwrap();
        let before = watch.header().unwrap();
        assert_eq!(watch.header(), Some(before), "stable without commits");
        writer.execute("INSERT INTO t VALUES (1)", []).unwrap();
        let after_one = watch.header().unwrap();
        assert_ne!(after_one, before);
        let other = rusqlite::Connection::open(&path).unwrap();
        other.execute("INSERT INTO t VALUES (2)", []).unwrap();
        assert_ne!(watch.header().unwrap(), after_one);
        // Reads do not move it.
        let settled = watch.header().unwrap();
        let _: i64 = other
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(watch.header(), Some(settled));
    }
}

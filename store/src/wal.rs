//! The write-ahead log: checksummed, length-prefixed records in one file,
//! flushed per the `fsync` policy, replayed on restart (a torn tail is cut
//! off) and rewritten from a snapshot when it grows too large.

use crate::config::Fsync;
use crate::core::WalRecord;
use crate::seeded::stable_hash;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Under `fsync = never`, records stay in the process until this much piles up.
const NEVER_BUFFER_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("write-ahead log {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

pub struct Wal {
    path: PathBuf,
    file: File,
    policy: Fsync,
    buf: Vec<u8>,
    len_bytes: u64,
    /// Size right after the last rewrite: compaction waits until the log doubles past it.
    base_bytes: u64,
    unsynced: bool,
    last_sync: Instant,
}

fn frame(rec: &WalRecord, out: &mut Vec<u8>) {
    let payload = rec.as_bytes();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&(stable_hash(payload) as u32).to_le_bytes());
    out.extend_from_slice(payload);
}

impl Wal {
    /// Opens (creating) the log in `dir` and returns it with the records it holds.
    pub fn open(dir: &Path, policy: Fsync) -> Result<(Wal, Vec<WalRecord>), WalError> {
        let path = dir.join("wal.log");
        let io = |source| WalError::Io {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut bytes = Vec::new();
        if path.exists() {
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(io)?;
        }
        let mut records = Vec::new();
        let mut pos = 0usize;
        while pos + 8 <= bytes.len() {
            let len =
                u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap_or_default()) as usize;
            let sum = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap_or_default());
            let end = pos + 8 + len;
            if end > bytes.len() || stable_hash(&bytes[pos + 8..end]) as u32 != sum {
                break;
            }
            // Decoding is the core's: it refuses records it cannot read
            // instead of cutting them off here as if they were torn.
            records.push(WalRecord::from_bytes(bytes[pos + 8..end].to_vec()));
            pos = end;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        // Cut a torn tail so that new records follow the last good one.
        file.set_len(pos as u64).map_err(io)?;
        let wal = Wal {
            path,
            file,
            policy,
            buf: Vec::new(),
            len_bytes: pos as u64,
            base_bytes: 0,
            unsynced: false,
            last_sync: Instant::now(),
        };
        Ok((wal, records))
    }

    fn io(&self, source: std::io::Error) -> WalError {
        WalError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }

    pub fn append(&mut self, rec: &WalRecord) {
        let before = self.buf.len();
        frame(rec, &mut self.buf);
        self.len_bytes += (self.buf.len() - before) as u64;
    }

    /// Makes appended records as durable as the policy promises. Called before
    /// the driver sends or replies anything that depends on them.
    pub fn commit(&mut self) -> Result<(), WalError> {
        match self.policy {
            Fsync::Never => {
                if self.buf.len() >= NEVER_BUFFER_BYTES {
                    self.write_out()?;
                }
            }
            Fsync::IntervalMs(_) => self.write_out()?,
            Fsync::Always => {
                if !self.buf.is_empty() {
                    self.write_out()?;
                    self.file.sync_data().map_err(|e| self.io(e))?;
                    self.unsynced = false;
                    self.last_sync = Instant::now();
                }
            }
        }
        Ok(())
    }

    fn write_out(&mut self) -> Result<(), WalError> {
        if !self.buf.is_empty() {
            let buf = std::mem::take(&mut self.buf);
            self.file.write_all(&buf).map_err(|e| self.io(e))?;
            self.unsynced = true;
        }
        Ok(())
    }

    /// For `interval:MS`: syncs if the interval has passed.
    pub fn sync_if_due(&mut self) -> Result<(), WalError> {
        if let Fsync::IntervalMs(ms) = self.policy {
            if self.unsynced && self.last_sync.elapsed() >= Duration::from_millis(ms) {
                self.file.sync_data().map_err(|e| self.io(e))?;
                self.unsynced = false;
                self.last_sync = Instant::now();
            }
        }
        Ok(())
    }

    pub fn len_bytes(&self) -> u64 {
        self.len_bytes
    }

    /// Whether the log has grown enough past `threshold_bytes` (and past twice
    /// its size after the last rewrite) to be worth rewriting.
    pub fn wants_compaction(&self, threshold_bytes: u64) -> bool {
        self.len_bytes > threshold_bytes.max(2 * self.base_bytes)
    }

    /// Replaces the log with `records` (a snapshot of the state), atomically.
    pub fn rewrite(&mut self, records: &[WalRecord]) -> Result<(), WalError> {
        let mut out = Vec::new();
        for r in records {
            frame(r, &mut out);
        }
        let tmp = self.path.with_extension("log.tmp");
        let io = |source| WalError::Io {
            path: tmp.display().to_string(),
            source,
        };
        {
            let mut f = File::create(&tmp).map_err(io)?;
            f.write_all(&out).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|e| self.io(e))?;
        self.buf.clear();
        self.len_bytes = out.len() as u64;
        self.base_bytes = self.len_bytes;
        self.unsynced = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(epoch: u64) -> WalRecord {
        WalRecord::from_bytes(format!("meta {epoch}").into_bytes())
    }

    #[test]
    fn always_survives_reopen_and_never_keeps_records_in_the_process() {
        let dir = tempfile::tempdir().unwrap();
        for (policy, expect) in [
            (Fsync::Always, 2usize),
            (Fsync::IntervalMs(50), 2),
            (Fsync::Never, 0),
        ] {
            let sub = dir.path().join(format!("{policy:?}"));
            let (mut wal, recs) = Wal::open(&sub, policy).unwrap();
            assert!(recs.is_empty());
            wal.append(&meta(1));
            wal.append(&meta(2));
            wal.commit().unwrap();
            // Dropping without a final flush is what a SIGKILL does to the buffer.
            drop(wal);
            let (_, recs) = Wal::open(&sub, policy).unwrap();
            assert_eq!(recs.len(), expect, "{policy:?}");
        }
    }

    #[test]
    fn torn_tail_is_cut_and_rewrite_compacts() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), Fsync::Always).unwrap();
        for e in 0..100 {
            wal.append(&meta(e));
        }
        wal.commit().unwrap();
        let full = wal.len_bytes();
        drop(wal);
        let path = dir.path().join("wal.log");
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(full - 3).unwrap();
        let (mut wal, recs) = Wal::open(dir.path(), Fsync::Always).unwrap();
        assert_eq!(recs.len(), 99);
        assert!(wal.wants_compaction(100));
        wal.rewrite(&[meta(500)]).unwrap();
        assert!(wal.len_bytes() < full / 50);
        assert!(
            !wal.wants_compaction(1),
            "a fresh snapshot waits for the log to double"
        );
        wal.append(&meta(501));
        wal.commit().unwrap();
        drop(wal);
        let (_, recs) = Wal::open(dir.path(), Fsync::Always).unwrap();
        assert_eq!(recs, vec![meta(500), meta(501)]);
    }
}

//! The write-ahead log of an index directory: adds and deletes since the last checkpoint, one
//! checksummed record each, appended and fsync'd before the write is acknowledged. A checkpoint
//! (see [`super::Index::checkpoint`]) turns the log into the next generation's data files and
//! retires it; opening replays it.
//!
//! ```text
//! wal.<gen>.log   header: b"TWXWAL01" + generation (u64 LE)        16 bytes
//!                 record: payload length (u32 LE) + crc32 of the payload (u32 LE) + payload
//!   payload of an add:    1u8, first id u64, rows u32, dim u32, rows×dim f32 LE, rows JSON lines
//!   payload of a delete:  2u8, count u32, count × id u64
//! ```
//!
//! The log applies to the generation in its name only: after a checkpoint commits generation
//! g+1, `wal.<g>.log` is garbage whatever it holds. A last record that is cut short or fails
//! its checksum (a power cut mid-append) ends the log: it is dropped, never applied in part, and
//! the writer truncates it before appending. Damage with whole records after it is no cut-short
//! write but corruption: the log is refused as it is, never truncated (acknowledged records
//! would be lost and their ids handed out again).
//!
//! One writer at a time per directory: [`WriterLock`] holds an exclusive `flock` on
//! `write.lock` for as long as a writing handle lives.

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::store::Item;

/// First 8 bytes of every log.
const MAGIC: &[u8; 8] = b"TWXWAL01";
/// Header: magic + generation.
pub const HEADER_BYTES: u64 = 16;
/// Record kind bytes.
const ADD: u8 = 1;
const DELETE: u8 = 2;
/// File name of the writer lock.
pub const LOCK_FILE: &str = "write.lock";
/// The largest record accepted on replay (a length past this is a torn or damaged header).
const MAX_RECORD: u32 = 1 << 30;

/// The log file name of generation `gen`.
pub fn wal_name(gen: u64) -> String {
    format!("wal.{gen}.log")
}

/// One logged write.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// Items `first_id..first_id + items.len()` with their vectors (row-major, as stored).
    Add {
        first_id: u64,
        dim: usize,
        vectors: Vec<f32>,
        items: Vec<Item>,
    },
    /// Items deleted (tombstoned).
    Delete { ids: Vec<u64> },
}

impl Record {
    /// The payload bytes (without length and checksum).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Record::Add {
                first_id,
                dim,
                vectors,
                items,
            } => {
                let mut b = Vec::with_capacity(17 + vectors.len() * 4 + items.len() * 64);
                b.push(ADD);
                b.extend_from_slice(&first_id.to_le_bytes());
                b.extend_from_slice(&(items.len() as u32).to_le_bytes());
                b.extend_from_slice(&(*dim as u32).to_le_bytes());
                for x in vectors {
                    b.extend_from_slice(&x.to_le_bytes());
                }
                for it in items {
                    // Serialising a plain struct of strings and a JSON value cannot fail.
                    serde_json::to_writer(&mut b, it).expect("item serialises");
                    b.push(b'\n');
                }
                b
            }
            Record::Delete { ids } => {
                let mut b = Vec::with_capacity(5 + ids.len() * 8);
                b.push(DELETE);
                b.extend_from_slice(&(ids.len() as u32).to_le_bytes());
                for id in ids {
                    b.extend_from_slice(&id.to_le_bytes());
                }
                b
            }
        }
    }

    /// Parse a payload whose checksum matched; `at` names the record in errors.
    fn decode(p: &[u8], path: &Path, at: u64) -> Result<Record> {
        let bad = |msg: String| Error::corrupt(path, format!("record at byte {at}: {msg}"));
        let u32_at = |o: usize| -> Result<u32> {
            p.get(o..o + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| bad("cut short".into()))
        };
        let u64_at = |o: usize| -> Result<u64> {
            p.get(o..o + 8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
                .ok_or_else(|| bad("cut short".into()))
        };
        match p.first() {
            Some(&ADD) => {
                let first_id = u64_at(1)?;
                let rows = u32_at(9)? as usize;
                let dim = u32_at(13)? as usize;
                let vb = rows
                    .checked_mul(dim)
                    .and_then(|n| n.checked_mul(4))
                    .and_then(|n| p.get(17..n.checked_add(17)?))
                    .ok_or_else(|| bad(format!("{rows} vectors of dimension {dim} do not fit")))?;
                let vend = 17 + vb.len();
                let vectors: Vec<f32> = vb
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                if vectors.iter().any(|x| !x.is_finite()) {
                    return Err(bad("non-finite vector value".into()));
                }
                let text = std::str::from_utf8(&p[vend..])
                    .map_err(|_| bad("items are not UTF-8".into()))?;
                let items: Vec<Item> = text
                    .lines()
                    .map(|l| serde_json::from_str(l).map_err(|e| bad(format!("item: {e}"))))
                    .collect::<Result<_>>()?;
                if items.len() != rows {
                    return Err(bad(format!("{} items for {rows} vectors", items.len())));
                }
                Ok(Record::Add {
                    first_id,
                    dim,
                    vectors,
                    items,
                })
            }
            Some(&DELETE) => {
                let n = u32_at(1)? as usize;
                if p.len() != 5 + n * 8 {
                    return Err(bad(format!("{} bytes for {n} ids", p.len())));
                }
                Ok(Record::Delete {
                    ids: (0..n).map(|i| u64_at(5 + i * 8)).collect::<Result<_>>()?,
                })
            }
            Some(k) => Err(bad(format!("unknown record kind {k}"))),
            None => Err(bad("empty record".into())),
        }
    }
}

/// What [`read`] found in a log.
#[derive(Debug, Default)]
pub struct Replay {
    /// The whole records, in order.
    pub records: Vec<Record>,
    /// Bytes up to the end of the last whole record (the header's 16 for an empty log; 0 when
    /// the file does not exist).
    pub valid_bytes: u64,
    /// Bytes after that: a torn or damaged tail, dropped.
    pub torn_bytes: u64,
}

/// Read `dir/wal.<gen>.log`. A missing file is an empty log. A header of the wrong magic or
/// generation is an error (the file is not this generation's log); a torn tail is reported in
/// [`Replay::torn_bytes`], not applied.
pub fn read(dir: &Path, gen: u64) -> Result<Replay> {
    let path = dir.join(wal_name(gen));
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Replay::default()),
        Err(e) => return Err(Error::io(&path, e)),
    };
    if (bytes.len() as u64) < HEADER_BYTES {
        // A log whose creation was cut short holds no record.
        if !MAGIC.starts_with(&bytes[..bytes.len().min(8)]) {
            return Err(Error::corrupt(&path, "not a twindex write-ahead log"));
        }
        return Ok(Replay {
            records: Vec::new(),
            valid_bytes: 0,
            torn_bytes: bytes.len() as u64,
        });
    }
    if &bytes[..8] != MAGIC {
        return Err(Error::corrupt(&path, "not a twindex write-ahead log"));
    }
    let g = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    if g != gen {
        return Err(Error::corrupt(
            &path,
            format!("log of generation {g} under the name of generation {gen}"),
        ));
    }
    let mut at = HEADER_BYTES as usize;
    let mut records = Vec::new();
    while let Some(payload) = whole_record(&bytes, at) {
        records.push(Record::decode(payload, &path, at as u64)?);
        at += 8 + payload.len();
    }
    if let Some(next) = damage_before_records(&bytes, at) {
        return Err(Error::corrupt(
            &path,
            format!(
                "the record at byte {at} is damaged but whole records follow it (from byte {next}): not a write cut short, so nothing is dropped or truncated; the log is left as it is"
            ),
        ));
    }
    Ok(Replay {
        records,
        valid_bytes: at as u64,
        torn_bytes: (bytes.len() - at) as u64,
    })
}

/// The payload of the whole, checksummed record at byte `at` of a log, if there is one.
fn whole_record(bytes: &[u8], at: usize) -> Option<&[u8]> {
    let head = bytes.get(at..at + 8)?;
    let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
    // Every record holds at least its kind byte: a zero length is unwritten space.
    if len == 0 || len > MAX_RECORD {
        return None;
    }
    let payload = bytes.get(at + 8..at + 8 + len as usize)?;
    (crc32fast::hash(payload) == crc).then_some(payload)
}

/// Where a whole record starts after the bad bytes from `at` on, if one does. A write cut short
/// (a power cut mid-append) leaves a prefix of one record, or that record's extent with
/// unwritten (zero) bytes: nothing whole after it. A flipped byte inside the log leaves whole,
/// acknowledged records after the damage: those must never be dropped as a "torn tail". A
/// damaged length field hides where the next record starts, so every later offset is tried
/// (a false match needs a crc32 collision).
fn damage_before_records(bytes: &[u8], at: usize) -> Option<usize> {
    if at >= bytes.len() || bytes[at..].iter().all(|&b| b == 0) {
        return None;
    }
    (at + 1..bytes.len().saturating_sub(7))
        .find(|&i| whole_record(bytes, i).is_some_and(|p| p[0] == ADD || p[0] == DELETE))
}

/// Appends records to one generation's log, fsync'ing each.
#[derive(Debug)]
pub struct WalWriter {
    file: File,
    path: PathBuf,
    len: u64,
}

impl WalWriter {
    /// Open `dir/wal.<gen>.log` for appending after its `valid_bytes` (a torn tail is cut off
    /// first); created with its header when `valid_bytes` is 0.
    pub fn open(dir: &Path, gen: u64, valid_bytes: u64) -> Result<WalWriter> {
        let path = dir.join(wal_name(gen));
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let io = |e| Error::io(&path, e);
        if valid_bytes < HEADER_BYTES {
            file.set_len(0).map_err(io)?;
            let mut h = Vec::with_capacity(16);
            h.extend_from_slice(MAGIC);
            h.extend_from_slice(&gen.to_le_bytes());
            file.write_all(&h).map_err(io)?;
            file.sync_all().map_err(io)?;
            crate::fsutil::sync_dir(dir)?;
        } else if file.metadata().map_err(io)?.len() != valid_bytes {
            file.set_len(valid_bytes).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        let len = valid_bytes.max(HEADER_BYTES);
        use std::io::Seek;
        file.seek(std::io::SeekFrom::Start(len)).map_err(io)?;
        Ok(WalWriter { file, path, len })
    }

    /// Append one record and fsync it: when this returns `Ok` the record survives a crash.
    /// On failure the log is cut back to where it was (or the error says it could not be).
    pub fn append(&mut self, payload: &[u8]) -> Result<()> {
        if payload.len() as u64 > MAX_RECORD as u64 {
            return Err(Error::InvalidArgument(format!(
                "one write of {} bytes is larger than a log record may be ({} bytes): add fewer items at once",
                payload.len(),
                MAX_RECORD
            )));
        }
        let mut buf = Vec::with_capacity(8 + payload.len());
        buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        buf.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        buf.extend_from_slice(payload);
        let res = self
            .file
            .write_all(&buf)
            .and_then(|_| self.file.sync_data());
        if let Err(e) = res {
            use std::io::Seek;
            let undo = self
                .file
                .set_len(self.len)
                .and_then(|_| self.file.seek(std::io::SeekFrom::Start(self.len)))
                .and_then(|_| self.file.sync_data());
            return Err(match undo {
                Ok(_) => Error::io(&self.path, e),
                Err(u) => Error::Msg(format!(
                    "{}: append failed ({e}) and the log could not be cut back ({u}); reopen the index",
                    self.path.display()
                )),
            });
        }
        self.len += buf.len() as u64;
        Ok(())
    }

    /// Bytes in the log (header included).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the log holds no record.
    pub fn is_empty(&self) -> bool {
        self.len <= HEADER_BYTES
    }
}

/// An exclusive lock on an index directory's `write.lock`, held while a writing handle lives
/// (released by the OS if the process dies).
#[derive(Debug)]
pub struct WriterLock {
    _file: File,
}

/// How long a writer waits for another process's writer lock, in ms (see [`set_writer_wait`]).
static WRITER_WAIT_MS: AtomicU64 = AtomicU64::new(0);

/// How long every writer of this process waits for the writer lock of an index that another
/// writer holds before it gives up: 0 (the library's default) refuses at once; the CLI's
/// `--wait SECONDS` sets it (default 10 s there).
pub fn set_writer_wait(wait: Duration) {
    WRITER_WAIT_MS.store(
        wait.as_millis().min(u64::MAX as u128) as u64,
        Ordering::Relaxed,
    );
}

impl WriterLock {
    /// Take the lock, waiting up to the bound of [`set_writer_wait`] while another writer
    /// holds it, then failing with a message naming the directory.
    pub fn acquire(dir: &Path) -> Result<WriterLock> {
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let wait = Duration::from_millis(WRITER_WAIT_MS.load(Ordering::Relaxed));
        let start = Instant::now();
        let mut pause = Duration::from_millis(5);
        loop {
            // SAFETY: flock on a file descriptor we own.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(WriterLock { _file: file });
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::WouldBlock {
                return Err(Error::io(&path, e));
            }
            let waited = start.elapsed();
            if waited >= wait {
                let how = match wait.is_zero() {
                    true => "try again when it has finished (or wait for it: --wait SECONDS)"
                        .to_string(),
                    false => format!(
                        "waited {:.1} s for it (--wait); try again when it has finished",
                        waited.as_secs_f64()
                    ),
                };
                return Err(Error::Busy(format!(
                    "{}: another twindex process is writing this index (it holds {LOCK_FILE}); {how}",
                    dir.display()
                )));
            }
            std::thread::sleep(pause.min(wait - waited));
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// Whether some process holds the writer lock of `dir` now (false when the lock file
    /// does not exist or cannot be opened).
    pub fn is_held(dir: &Path) -> bool {
        let Ok(file) = File::open(dir.join(LOCK_FILE)) else {
            return false;
        };
        // SAFETY: flock on a file descriptor we own; a shared lock taken here is released
        // when `file` closes.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
        rc != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(s: &str) -> Item {
        Item {
            label: "l".into(),
            source: s.into(),
            payload: None,
        }
    }

    #[test]
    fn records_round_trip_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let add = Record::Add {
            first_id: 7,
            dim: 2,
            vectors: vec![1.0, 2.0, 3.0, 4.0],
            items: vec![item("a"), item("b\nc")],
        };
        let del = Record::Delete { ids: vec![7, 3] };
        let mut w = WalWriter::open(dir.path(), 5, 0).unwrap();
        w.append(&add.encode()).unwrap();
        w.append(&del.encode()).unwrap();
        let whole = w.len();
        drop(w);
        let r = read(dir.path(), 5).unwrap();
        assert_eq!(r.records, vec![add.clone(), del.clone()]);
        assert_eq!((r.valid_bytes, r.torn_bytes), (whole, 0));
        // Cut at every byte inside the last record: only the first record survives.
        let path = dir.path().join(wal_name(5));
        let bytes = std::fs::read(&path).unwrap();
        let first_end = HEADER_BYTES as usize + 8 + add.encode().len();
        for cut in first_end..bytes.len() {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let r = read(dir.path(), 5).unwrap();
            assert_eq!(r.records, vec![add.clone()], "cut at {cut}");
            assert_eq!(r.torn_bytes as usize, cut - first_end);
        }
        // A flipped bit in the last record's payload fails its checksum.
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        assert_eq!(read(dir.path(), 5).unwrap().records.len(), 1);
        // The writer cuts the torn tail before appending.
        let r = read(dir.path(), 5).unwrap();
        let mut w = WalWriter::open(dir.path(), 5, r.valid_bytes).unwrap();
        w.append(&del.encode()).unwrap();
        drop(w);
        assert_eq!(read(dir.path(), 5).unwrap().records, vec![add, del]);
        // Another generation's name is refused; a missing log is empty.
        std::fs::copy(&path, dir.path().join(wal_name(6))).unwrap();
        assert!(read(dir.path(), 6).is_err());
        assert!(read(dir.path(), 9).unwrap().records.is_empty());
    }

    #[test]
    fn one_writer_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!WriterLock::is_held(dir.path()));
        let l = WriterLock::acquire(dir.path()).unwrap();
        assert!(WriterLock::is_held(dir.path()));
        let e = WriterLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(e.contains("another twindex process is writing"), "{e}");
        drop(l);
        assert!(!WriterLock::is_held(dir.path()));
        WriterLock::acquire(dir.path()).unwrap();
    }

    /// A damaged byte anywhere in a record followed by whole records is corruption, not a torn
    /// write: the log is refused and left as it is, so no acknowledged record is dropped and no
    /// id handed out again (issue 25: a flipped byte in the 2nd of 3 records lost the 3rd).
    #[test]
    fn damage_before_whole_records_is_refused_never_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let recs: Vec<Record> = (0..3)
            .map(|i| Record::Add {
                first_id: 100 * i,
                dim: 2,
                vectors: vec![i as f32, 1.0],
                items: vec![item(&format!("text {i}"))],
            })
            .collect();
        let mut w = WalWriter::open(dir.path(), 1, 0).unwrap();
        let mut starts = Vec::new();
        for r in &recs {
            starts.push(w.len() as usize);
            w.append(&r.encode()).unwrap();
        }
        drop(w);
        let path = dir.path().join(wal_name(1));
        let bytes = std::fs::read(&path).unwrap();
        // Every byte of the 2nd record (length, checksum, payload) flipped in turn.
        for at in starts[1]..starts[2] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            std::fs::write(&path, &bad).unwrap();
            let e = read(dir.path(), 1).unwrap_err().to_string();
            assert!(
                e.contains(&format!("the record at byte {}", starts[1])),
                "{at}: {e}"
            );
            assert!(e.contains("whole records follow"), "{e}");
            assert_eq!(
                std::fs::read(&path).unwrap(),
                bad,
                "the log is left as it is"
            );
        }
        // Damage in the last record, or zeros where a write did not land, is a torn tail.
        let mut bad = bytes.clone();
        bad[starts[2] + 9] ^= 0x10;
        std::fs::write(&path, &bad).unwrap();
        assert_eq!(read(dir.path(), 1).unwrap().records, recs[..2]);
        let mut zeros = bytes.clone();
        zeros[starts[2]..].fill(0);
        std::fs::write(&path, &zeros).unwrap();
        assert_eq!(read(dir.path(), 1).unwrap().records, recs[..2]);
    }
}

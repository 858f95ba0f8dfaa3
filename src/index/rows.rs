//! Full-precision vectors of a quantized graph, read only to re-rank: either in memory or
//! memory-mapped from the index's `vectors.<gen>.f32` file (read-only, `MADV_RANDOM`), so
//! that the resident set of a reopened quantized index is the codes and the graph. Rows added
//! after opening live in memory behind the mapped ones until the index is reopened.
//!
//! A mapped file's pages become resident as a search touches them (a re-ranked candidate);
//! they are file pages the kernel can drop and re-read at will, not anonymous memory.

use crate::error::{Error, Result};
use std::path::Path;

use super::manifest::FileEntry;
use super::store::check_sha256;

/// A read-only mapping of a whole file.
pub(super) struct Mapped {
    ptr: *const u8,
    len: usize,
}

// SAFETY: the mapping is read-only and never changes (index data files are immutable once
// written); it is unmapped only on drop.
unsafe impl Send for Mapped {}
unsafe impl Sync for Mapped {}

impl Drop for Mapped {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: ptr/len are the mapping made in `map_file`.
            unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
        }
    }
}

impl Mapped {
    /// Map the data file `path` after checking its size and sha256 against `entry` (a pass
    /// over the mapping: call [`Self::release`] once done with the pages).
    pub(super) fn open_checked(path: &Path, entry: &FileEntry) -> Result<Mapped> {
        let m = Self::open_sized(path, entry)?;
        check_sha256(path, m.bytes(), entry)?;
        Ok(m)
    }

    /// Map the data file `path` after checking its size against `entry` (nothing is read).
    pub(super) fn open_sized(path: &Path, entry: &FileEntry) -> Result<Mapped> {
        let len = std::fs::metadata(path)
            .map_err(|e| Error::io(path, e))?
            .len();
        if len != entry.bytes {
            return Err(Error::corrupt(
                path,
                format!("file is {len} bytes, the manifest says {}", entry.bytes),
            ));
        }
        map_file(path, len as usize)
    }

    /// Drop the pages a pass made resident from this process (they stay in the page cache; a
    /// later read faults them back in), and ask for no read-ahead on later faults.
    pub(super) fn release(&self) {
        if self.len > 0 {
            // SAFETY: advice on our own read-only mapping; its content is the file's either way.
            unsafe {
                libc::madvise(self.ptr as *mut libc::c_void, self.len, libc::MADV_DONTNEED);
                libc::madvise(self.ptr as *mut libc::c_void, self.len, libc::MADV_RANDOM);
            }
        }
    }

    pub(super) fn bytes(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: a live read-only mapping of len bytes.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

#[cfg(unix)]
fn map_file(path: &Path, len: usize) -> Result<Mapped> {
    use std::os::unix::io::AsRawFd;
    if len == 0 {
        return Ok(Mapped {
            ptr: std::ptr::null(),
            len: 0,
        });
    }
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: a fresh read-only private mapping of an open file; checked for MAP_FAILED.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            f.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(Error::io(path, std::io::Error::last_os_error()));
    }
    Ok(Mapped {
        ptr: ptr as *const u8,
        len,
    })
}

/// Rows of `dim` floats: an optional mapped prefix, then rows in memory.
pub struct Rows {
    dim: usize,
    mapped: Option<Mapped>,
    mapped_rows: usize,
    tail: Vec<f32>,
}

impl std::fmt::Debug for Rows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rows")
            .field("dim", &self.dim)
            .field("mapped_rows", &self.mapped_rows)
            .field("memory_rows", &(self.tail.len() / self.dim.max(1)))
            .finish()
    }
}

impl Rows {
    /// Rows held in memory.
    pub fn from_vec(dim: usize, v: Vec<f32>) -> Self {
        Rows {
            dim,
            mapped: None,
            mapped_rows: 0,
            tail: v,
        }
    }

    /// Map the vectors file `dir/entry.name` of `rows × dim` little-endian floats, checking
    /// its size against the manifest: nothing is read, so opening costs the same at any size.
    /// Its sha256 and that every value is finite are checked by [`Rows::check_vectors`]
    /// (`twindex index verify`).
    pub fn map_vectors(dir: &Path, entry: &FileEntry, rows: usize, dim: usize) -> Result<Self> {
        let path = dir.join(&entry.name);
        if cfg!(not(all(unix, target_endian = "little"))) {
            let bytes = super::store::read_data_file(dir, entry)?;
            let v = super::store::parse_vectors(&bytes, rows, dim, &path)?;
            return Ok(Rows::from_vec(dim, v));
        }
        // The file's own size against the manifest is checked on mapping.
        let want = rows as u64 * dim as u64 * 4;
        if entry.bytes != want {
            return Err(Error::corrupt(
                &path,
                format!(
                    "the manifest says {} bytes, {rows} vectors of dimension {dim} are {want}",
                    entry.bytes
                ),
            ));
        }
        let m = Mapped::open_sized(&path, entry)?;
        let r = Rows {
            dim,
            mapped: Some(m),
            mapped_rows: rows,
            tail: Vec::new(),
        };
        r.release();
        Ok(r)
    }

    /// [`Rows::map_vectors`], then the file checked whole: its sha256 against the manifest
    /// and every value finite (passes over the mapping, released again).
    pub fn check_vectors(dir: &Path, entry: &FileEntry, rows: usize, dim: usize) -> Result<Self> {
        let r = Self::map_vectors(dir, entry, rows, dim)?;
        let path = dir.join(&entry.name);
        // Read into memory instead (not unix): checked as read.
        let Some(m) = &r.mapped else {
            return Ok(r);
        };
        let bytes = m.bytes();
        check_sha256(&path, bytes, entry)?;
        let bad = bytes
            .chunks_exact(4)
            .position(|b| !f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite());
        r.release();
        match bad {
            Some(i) => Err(Error::corrupt(
                &path,
                format!("at byte {}: non-finite value", 4 * i),
            )),
            None => Ok(r),
        }
    }

    /// Drop the mapped pages a pass over every row made resident from this process (they stay
    /// in the page cache; a later read faults them back in), and ask for no read-ahead on
    /// later faults: re-ranking reads scattered rows.
    pub fn release(&self) {
        if let Some(m) = &self.mapped {
            m.release();
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.mapped_rows + self.tail.len() / self.dim.max(1)
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows that are memory-mapped (the rest are in memory).
    pub fn mapped_rows(&self) -> usize {
        self.mapped_rows
    }

    /// Row `i` (panics when out of range, like slice indexing).
    #[inline(always)]
    pub fn row(&self, i: usize) -> &[f32] {
        if i < self.mapped_rows {
            let m = self.mapped.as_ref().expect("mapped rows have a mapping");
            // SAFETY: i < mapped_rows, and the mapping holds mapped_rows × dim floats (checked
            // in `map_vectors`); mmap returns page-aligned memory, so every row is 4-aligned.
            unsafe { std::slice::from_raw_parts((m.ptr as *const f32).add(i * self.dim), self.dim) }
        } else {
            let j = (i - self.mapped_rows) * self.dim;
            &self.tail[j..j + self.dim]
        }
    }

    /// Start of row `i`, for prefetching.
    #[inline(always)]
    pub fn row_ptr(&self, i: usize) -> *const f32 {
        self.row(i).as_ptr()
    }

    /// Append rows (in memory).
    pub fn extend(&mut self, v: &[f32]) {
        self.tail.extend_from_slice(v);
    }

    /// Bytes held in memory (the mapped rows are not counted: they are file pages).
    pub fn memory_bytes(&self) -> usize {
        self.tail.capacity() * 4
    }
}

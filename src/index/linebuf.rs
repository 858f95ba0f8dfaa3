//! Zeroed, 64-byte-aligned memory for the HNSW graph's node blocks that grows without copying:
//! one anonymous mapping, grown on Linux with `mremap` (the kernel moves page tables, never the
//! bytes), elsewhere by mapping anew and copying. At a million 384-d nodes (1.7 GB) a grow by
//! copying took seconds, during which the add held the graph and every reader waited.
//!
//! A buffer may also start as a copy-on-write view of a file ([`LineBuf::map_file`]): an
//! index opened from disk maps its graph file's node blocks instead of reading them, so opening
//! costs no time or memory in proportion to the index; a node written later (an add) gets its
//! own page, the file never changes.

use crate::error::{Error, Result};
use std::ptr::NonNull;

/// A run of `len` zero-initialised `T`s (plain data: any bit pattern, no drop) in one mapping of
/// `cap` of them.
pub struct LineBuf<T: Copy> {
    ptr: NonNull<T>,
    len: usize,
    cap: usize,
    /// Bytes at the start of the mapping that view a file (0: all anonymous). Such a mapping
    /// is two regions, which `mremap` cannot move as one: it grows by copying, once.
    file_bytes: usize,
}

// SAFETY: the buffer owns its mapping outright (like a Vec of plain-data T); sharing across
// threads is governed by its owner (HnswGraph documents its rules).
unsafe impl<T: Copy + Send> Send for LineBuf<T> {}
unsafe impl<T: Copy + Sync> Sync for LineBuf<T> {}

impl<T: Copy> Default for LineBuf<T> {
    fn default() -> Self {
        LineBuf {
            ptr: NonNull::dangling(),
            len: 0,
            cap: 0,
            file_bytes: 0,
        }
    }
}

impl<T: Copy> LineBuf<T> {
    /// Elements in use.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no element is in use.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Elements the mapping holds.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// The first element (dangling while the capacity is 0).
    #[inline(always)]
    pub fn as_ptr(&self) -> *mut T {
        self.ptr.as_ptr()
    }

    /// Grow to `len` elements, the new ones zero; the mapping grows by at least half when it
    /// must. Never shrinks. The whole mapping is advised to use transparent huge pages (the
    /// graph search jumps between nodes at random, so 2 MiB pages save most TLB misses): all of
    /// it, so that the kernel keeps it one region, which `mremap` needs (advising only its
    /// 2 MiB-aligned middle split it in three, and growing it then failed).
    pub fn grow_zeroed(&mut self, len: usize) -> Result<()> {
        if len <= self.len {
            return Ok(());
        }
        if len > self.cap {
            let size = std::mem::size_of::<T>();
            let want = len.max(self.cap + self.cap / 2);
            let bytes = want
                .checked_mul(size)
                .ok_or_else(|| Error::Msg(format!("{want} graph lines overflow")))?;
            let old_bytes = self.cap * size;
            if self.file_bytes > 0 {
                self.copy_to_anonymous(bytes)?;
                self.len = len;
                return Ok(());
            }
            let p = if self.cap == 0 {
                map(bytes)?
            } else {
                remap(self.ptr.as_ptr() as *mut u8, old_bytes, bytes)?
            };
            self.ptr = NonNull::new(p as *mut T).expect("a mapping is never null");
            self.cap = bytes / size;
            advise_huge_pages(p, bytes);
        }
        // Fresh anonymous pages read as zero, and nothing beyond `len` was ever written (the
        // buffer never shrinks), so the new elements are zero already.
        self.len = len;
        Ok(())
    }
}

impl<T: Copy> LineBuf<T> {
    /// A buffer of `len` elements whose bytes are `file`'s from byte `offset` on, mapped
    /// copy-on-write (Linux): nothing is read now, pages are faulted in as they are touched,
    /// writes go to private pages. `offset` and the mapped length (`len` elements rounded up
    /// to [`FILE_ALIGN`]) must lie in the file, and the bytes past the `len` elements up to
    /// that rounding must be zero (the writer pads them). Room for as many elements again
    /// is reserved behind them (address space only), so that adds grow in place.
    #[cfg(target_os = "linux")]
    pub fn map_file(
        file: &std::fs::File,
        offset: u64,
        len: usize,
        path: &std::path::Path,
    ) -> Result<Self> {
        use std::os::unix::io::AsRawFd;
        let size = std::mem::size_of::<T>();
        if len == 0 {
            return Ok(LineBuf::default());
        }
        let bytes = len
            .checked_mul(size)
            .ok_or_else(|| Error::Msg(format!("{len} graph lines overflow")))?;
        let file_bytes = bytes.div_ceil(FILE_ALIGN) * FILE_ALIGN;
        let cap_bytes = (2 * file_bytes).max(file_bytes + (16 << 20)) / size * size;
        // SAFETY: a fresh private anonymous reservation, checked for failure.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                cap_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Error::Msg(format!(
                "could not reserve {cap_bytes} bytes for the graph: {}",
                std::io::Error::last_os_error()
            )));
        }
        // SAFETY: replaces the first `file_bytes` of the reservation just made (MAP_FIXED on
        // our own mapping) with a private view of the file; checked for failure.
        let q = unsafe {
            libc::mmap(
                p,
                file_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_FIXED,
                file.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if q == libc::MAP_FAILED {
            let e = std::io::Error::last_os_error();
            // SAFETY: the reservation made above, unmapped once.
            unsafe { libc::munmap(p, cap_bytes) };
            return Err(Error::io(path, e));
        }
        // SAFETY: advice on our own mappings: the graph walk jumps between nodes at random, so
        // read-ahead would fetch pages no search needs; the reserved room may use huge pages.
        unsafe {
            libc::madvise(p, file_bytes, libc::MADV_RANDOM);
        }
        advise_huge_pages(
            (p as *mut u8).wrapping_add(file_bytes),
            cap_bytes - file_bytes,
        );
        Ok(LineBuf {
            ptr: NonNull::new(p as *mut T).expect("a mapping is never null"),
            len,
            cap: cap_bytes / size,
            file_bytes,
        })
    }

    /// Copy a buffer that views a file into anonymous memory of its own, on huge pages: for
    /// a long-running process (a server, a benchmark), whose searches on the view took about
    /// 10% longer on MNIST-784 (page faults, small pages: the cause was not isolated). A
    /// one-off command is better served by the view. Nothing to do otherwise.
    pub fn copy_into_memory(&mut self) -> Result<()> {
        if self.file_bytes == 0 {
            return Ok(());
        }
        self.copy_to_anonymous(self.cap * std::mem::size_of::<T>())
    }

    /// Move the `len` elements into a fresh anonymous mapping of `bytes` (advised to use huge
    /// pages before they are written) and unmap the old one, both its regions.
    fn copy_to_anonymous(&mut self, bytes: usize) -> Result<()> {
        let size = std::mem::size_of::<T>();
        let p = map(bytes)?;
        advise_huge_pages(p, bytes);
        // SAFETY: two distinct live mappings; `len` elements are in use in the old one and
        // fit the new one (`bytes` >= the old capacity); the old one is unmapped once.
        unsafe {
            std::ptr::copy_nonoverlapping(self.ptr.as_ptr() as *const u8, p, self.len * size);
            libc::munmap(self.ptr.as_ptr() as *mut libc::c_void, self.cap * size);
        }
        self.ptr = NonNull::new(p as *mut T).expect("a mapping is never null");
        self.cap = bytes / size;
        self.file_bytes = 0;
        Ok(())
    }
}

/// The alignment of a mapped region's start and length in a file (a multiple of every page
/// size Linux uses).
pub const FILE_ALIGN: usize = 1 << 16;

impl<T: Copy> Drop for LineBuf<T> {
    fn drop(&mut self) {
        if self.cap > 0 {
            // SAFETY: the mapping made by `map`/`remap`, of this many bytes, unmapped once.
            unsafe {
                libc::munmap(
                    self.ptr.as_ptr() as *mut libc::c_void,
                    self.cap * std::mem::size_of::<T>(),
                );
            }
        }
    }
}

/// Ask the kernel to back the whole mapping `[p, p + bytes)` with transparent huge pages (a
/// hint; errors ignored).
fn advise_huge_pages(p: *mut u8, bytes: usize) {
    #[cfg(target_os = "linux")]
    // SAFETY: a page-aligned mapping of `bytes` that we own; madvise only sets a flag on it.
    unsafe {
        libc::madvise(p as *mut libc::c_void, bytes, libc::MADV_HUGEPAGE);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (p, bytes);
}

fn map(bytes: usize) -> Result<*mut u8> {
    // SAFETY: a fresh private anonymous mapping; the result is checked.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(Error::Msg(format!(
            "could not map {bytes} bytes for the graph: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(p as *mut u8)
}

#[cfg(target_os = "linux")]
fn remap(old: *mut u8, old_bytes: usize, bytes: usize) -> Result<*mut u8> {
    // SAFETY: `old` is a mapping of `old_bytes` made by `map`/`remap`; on success it is replaced
    // by the returned one (same contents, possibly moved), on failure left as it was.
    let p = unsafe {
        libc::mremap(
            old as *mut libc::c_void,
            old_bytes,
            bytes,
            libc::MREMAP_MAYMOVE,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(Error::Msg(format!(
            "could not grow the graph's mapping to {bytes} bytes: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(p as *mut u8)
}

#[cfg(not(target_os = "linux"))]
fn remap(old: *mut u8, old_bytes: usize, bytes: usize) -> Result<*mut u8> {
    let p = map(bytes)?;
    // SAFETY: two distinct live mappings, `old_bytes` <= `bytes`; the old one is unmapped after.
    unsafe {
        std::ptr::copy_nonoverlapping(old, p, old_bytes);
        libc::munmap(old as *mut libc::c_void, old_bytes);
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::LineBuf;

    /// Grown many times (moved by the kernel or not), every element written before reads back,
    /// and every new element reads zero.
    #[test]
    fn growing_keeps_contents_and_zeroes_the_rest() {
        let mut b: LineBuf<[u64; 8]> = LineBuf::default();
        let mut n = 0;
        for step in [1usize, 3, 1000, 7, 70_000, 5, 300_000, 600_000] {
            b.grow_zeroed(n + step).unwrap();
            for i in 0..n + step {
                // SAFETY: i < len.
                let v = unsafe { *b.as_ptr().add(i) };
                let want = if i < n { [i as u64; 8] } else { [0; 8] };
                assert_eq!(v, want, "element {i} after growing to {}", n + step);
            }
            for i in n..n + step {
                // SAFETY: i < len; the buffer is owned here.
                unsafe { *b.as_ptr().add(i) = [i as u64; 8] };
            }
            n += step;
            assert!(b.capacity() >= b.len());
        }
    }
}

//! Zeroed, 64-byte-aligned memory that grows without copying, for the HNSW graph's node blocks
//! and the index's other per-item arrays (ids, tombstones, levels, upper-level lists, visit
//! marks): one anonymous mapping, grown on Linux with `mremap` (the kernel moves page tables,
//! never the bytes), elsewhere by mapping anew and copying. At a million 384-d nodes (1.7 GB) a grow by copying
//! took seconds, during which the add held the graph and every reader waited; the per-item
//! arrays, grown by a `Vec`'s doubling, stalled the first add after opening a 1M-item index
//! for 45-68 ms.
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
            // Whole pages: a small buffer that grows one element at a time maps a page once
            // (only where pages hold whole elements, so that `cap * size` stays the mapping's
            // length for mremap and munmap).
            let bytes = want
                .checked_mul(size)
                .and_then(|b| match PAGE % size {
                    0 => b.checked_next_multiple_of(PAGE),
                    _ => Some(b),
                })
                .ok_or_else(|| Error::Msg(format!("{want} elements overflow")))?;
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
    /// `len` zero elements.
    pub fn zeroed(len: usize) -> Self {
        let mut b = LineBuf::default();
        b.resize_zeroed(len);
        b
    }

    /// A buffer holding `items`.
    pub fn from_slice(items: &[T]) -> Self {
        let mut b = LineBuf::default();
        b.extend_from_slice(items);
        b
    }

    /// Grow to `len` elements, the new ones zero (as [`LineBuf::grow_zeroed`]); like a `Vec`,
    /// panics when the memory cannot be mapped.
    pub fn resize_zeroed(&mut self, len: usize) {
        if let Err(e) = self.grow_zeroed(len) {
            panic!("{e}");
        }
    }

    /// Append `items` (panics as [`LineBuf::resize_zeroed`]).
    pub fn extend_from_slice(&mut self, items: &[T]) {
        let n = self.len;
        self.resize_zeroed(n + items.len());
        // SAFETY: the buffer now holds n + items.len() elements; `items` is not inside it
        // (it is borrowed while `self` is borrowed mutably).
        unsafe { std::ptr::copy_nonoverlapping(items.as_ptr(), self.as_ptr().add(n), items.len()) };
    }

    /// Append `item` (panics as [`LineBuf::resize_zeroed`]).
    pub fn push(&mut self, item: T) {
        self.extend_from_slice(std::slice::from_ref(&item));
    }

    /// Keep the first `len` elements; those dropped are zeroed, so that growing again finds
    /// zeros (the mapping is kept).
    pub fn truncate(&mut self, len: usize) {
        if len < self.len {
            // SAFETY: elements len..self.len lie in the mapping; T is plain data.
            unsafe { std::ptr::write_bytes(self.as_ptr().add(len), 0, self.len - len) };
            self.len = len;
        }
    }

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

impl<T: Copy> std::fmt::Debug for LineBuf<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineBuf")
            .field("len", &self.len)
            .field("capacity", &self.cap)
            .finish()
    }
}

impl<T: Copy> std::ops::Deref for LineBuf<T> {
    type Target = [T];
    #[inline(always)]
    fn deref(&self) -> &[T] {
        // SAFETY: `len` initialised elements at `ptr` (dangling and 0 while nothing is mapped).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Copy> std::ops::DerefMut for LineBuf<T> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<'a, T: Copy> IntoIterator for &'a LineBuf<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<T: Copy> FromIterator<T> for LineBuf<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut b = LineBuf::default();
        for item in iter {
            b.push(item);
        }
        b
    }
}

/// Mappings grow by whole pages of this size.
const PAGE: usize = 4096;

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
            "could not map {bytes} bytes of index memory: {}",
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
            "could not grow an index mapping to {bytes} bytes: {}",
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

    /// The Vec-like helpers against a Vec oracle: pushes, extensions, a truncation (then
    /// growing again reads zeros, not what was dropped), slices and iteration.
    #[test]
    fn vec_like_use_matches_a_vec() {
        let mut b: LineBuf<u64> = LineBuf::default();
        let mut v: Vec<u64> = Vec::new();
        assert!(b.is_empty() && b.iter().next().is_none());
        for i in 0..5000u64 {
            b.push(i * 3);
            v.push(i * 3);
        }
        b.extend_from_slice(&[7, 8, 9]);
        v.extend_from_slice(&[7, 8, 9]);
        assert_eq!(&b[..], &v[..]);
        b.truncate(100);
        v.truncate(100);
        b.resize_zeroed(150);
        v.resize(150, 0);
        assert_eq!(&b[..], &v[..]);
        b[3] = 42;
        v[3] = 42;
        assert_eq!((&b).into_iter().sum::<u64>(), v.iter().sum::<u64>());
        let c: LineBuf<u64> = v.iter().copied().collect();
        assert_eq!(&c[..], &v[..]);
        assert_eq!(LineBuf::from_slice(&v[..10]).len(), 10);
    }
}

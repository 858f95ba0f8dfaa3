//! Maintaining an index directory: delete by id, compact (drop deleted slots), checkpoint
//! (write the log into the data files). Each opens the index for writing, with its path named
//! in the error, and reports what it did.

use crate::error::{Error, Result};
use crate::index::Index;
use crate::query::build::BuildProgress;
use serde::Serialize;
use std::path::Path;

/// Open the index in `dir` for writing (its writer lock held), with the path in the error.
pub fn open_writer(dir: &Path) -> Result<Index> {
    Index::open_writer(dir)
        .map_err(|e| Error::Msg(format!("opening index {} for writing: {e}", dir.display())))
}

/// What [`compact`] did.
#[derive(Debug, Clone, Serialize)]
pub struct Compacted {
    /// Live items.
    pub items: usize,
    /// Deleted slots reclaimed.
    pub reclaimed: usize,
    /// The index's generation after compacting.
    pub generation: u64,
}

/// Rebuild the index in `dir` without its deleted items (stage `compacting`).
pub fn compact(dir: &Path, p: &dyn BuildProgress) -> Result<Compacted> {
    let mut idx = open_writer(dir)?;
    let before = idx.slot_count();
    p.stage("compacting", idx.len() as u64);
    idx.compact(&|n| p.advance(n as u64))?;
    p.done();
    Ok(Compacted {
        items: idx.len(),
        reclaimed: before - idx.slot_count(),
        generation: idx.manifest().generation,
    })
}

/// What [`checkpoint`] did.
#[derive(Debug, Clone, Serialize)]
pub struct Checkpointed {
    /// Logged writes now in the data files.
    pub records: u64,
    /// Bytes of log retired.
    pub log_bytes: u64,
    /// The index's generation after the checkpoint.
    pub generation: u64,
    /// Live items.
    pub items: usize,
}

/// Write the write-ahead log of the index in `dir` into its data files and retire it.
pub fn checkpoint(dir: &Path) -> Result<Checkpointed> {
    let mut idx = open_writer(dir)?;
    let (log_bytes, records) = idx.log_size();
    idx.checkpoint()?;
    Ok(Checkpointed {
        records,
        log_bytes,
        generation: idx.manifest().generation,
        items: idx.len(),
    })
}

/// Delete `ids` from the index in `dir` (tombstones); returns the live items left. The
/// index is not loaded: one log record is appended ([`crate::index::engine::append_delete`]),
/// unless the log is due a checkpoint or the index predates the items' catalogue.
pub fn delete(dir: &Path, ids: &[u64]) -> Result<usize> {
    if let Some(n) = crate::index::engine::append_delete(dir, ids)? {
        return Ok(n);
    }
    let mut idx = open_writer(dir)?;
    idx.delete(ids)?;
    Ok(idx.len())
}

/// Check the index in `dir` whole (see [`Index::verify`]): what opening leaves unread.
pub fn verify(dir: &Path) -> Result<crate::index::engine::Verified> {
    let idx = Index::open(dir)
        .map_err(|e| Error::Msg(format!("opening index {}: {e}", dir.display())))?;
    idx.verify()
}

//! The items of an index (label, source, payload per slot), kept so that a reopened index's
//! resident set is its vectors (or codes) and graph, not its texts.
//!
//! Labels stay in memory, packed in one buffer (filtered searches test a label per candidate,
//! and `labels()` scans them all). The rest of an item is read on demand: on open, the
//! `items.<gen>.jsonl` file is memory-mapped, checked (size, sha256, every line parsed) in one
//! pass whose pages are then released from the process, and only the start of each line is
//! kept; [`Items::get`] parses one line when a caller asks for that item. Items added after
//! opening live in memory behind the mapped ones until the next checkpoint maps the new file.

use std::borrow::Cow;
use std::path::Path;

use crate::error::{Error, Result};

use super::manifest::FileEntry;
use super::rows::Mapped;
use super::store::{self, Item};

/// The items of every slot: a mapped prefix, then items in memory.
#[derive(Default)]
pub struct Items {
    mapped: Option<Mapped>,
    /// Byte offset of each mapped line, then the end of the last (`mapped_len + 1` entries, or
    /// none without a mapping).
    starts: Vec<u64>,
    /// Every slot's label, concatenated; slot `s`'s label ends at `label_ends[s]`.
    label_bytes: String,
    label_ends: Vec<u32>,
    /// Items after the mapped ones.
    tail: Vec<Item>,
}

impl std::fmt::Debug for Items {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Items")
            .field("mapped", &self.mapped_len())
            .field("memory", &self.tail.len())
            .finish()
    }
}

impl Items {
    /// Items held in memory.
    pub fn from_vec(items: Vec<Item>) -> Result<Self> {
        let mut out = Items::default();
        out.extend(items)?;
        Ok(out)
    }

    /// Map the items file `dir/entry.name`, checking its size and sha256 against the manifest
    /// and parsing every line; returns the ids in slot order and the items.
    pub fn map(dir: &Path, entry: &FileEntry) -> Result<(Vec<u64>, Self)> {
        let path = dir.join(&entry.name);
        if cfg!(not(unix)) {
            let (ids, items) = store::parse_items(&store::read_data_file(dir, entry)?, &path)?;
            return Ok((ids, Items::from_vec(items)?));
        }
        let m = Mapped::open_checked(&path, entry)?;
        let bytes = m.bytes();
        let text = std::str::from_utf8(bytes).map_err(|e| {
            Error::corrupt(&path, format!("at byte {}: not UTF-8", e.valid_up_to()))
        })?;
        let mut out = Items::default();
        let mut ids = Vec::new();
        let mut at = 0usize;
        for (i, line) in text.split_inclusive('\n').enumerate() {
            let start = at;
            at += line.len();
            let body = line.strip_suffix('\n').unwrap_or(line);
            if body.is_empty() {
                continue;
            }
            let (id, item) = store::parse_item_line(body)
                .map_err(|e| Error::corrupt(&path, format!("line {}: {e}", i + 1)))?;
            ids.push(id);
            out.starts.push(start as u64);
            out.push_label(&item.label)?;
        }
        out.starts.push(at as u64);
        if ids.is_empty() {
            out.starts.clear();
        } else {
            m.release();
            out.mapped = Some(m);
        }
        Ok((ids, out))
    }

    /// Map the items file just written from these items by [`Self::write`] (the next
    /// generation's), so that the items in memory leave it. Only the line starts are read
    /// again: the labels are these, and every line was parsed when it was opened or added.
    /// On an error (the file's size, checksum or line count) nothing changes.
    pub fn remap(&mut self, dir: &Path, entry: &FileEntry) -> Result<()> {
        if cfg!(not(unix)) {
            return Ok(());
        }
        let path = dir.join(&entry.name);
        let m = Mapped::open_checked(&path, entry)?;
        let bytes = m.bytes();
        let mut starts = Vec::with_capacity(self.len() + 1);
        let mut at = 0usize;
        for line in bytes.split_inclusive(|&b| b == b'\n') {
            if line != b"\n" {
                starts.push(at as u64);
            }
            at += line.len();
        }
        if starts.len() != self.len() {
            return Err(Error::corrupt(
                &path,
                format!("{} lines for {} items", starts.len(), self.len()),
            ));
        }
        starts.push(at as u64);
        m.release();
        self.mapped = (!bytes.is_empty()).then_some(m);
        self.starts = if self.mapped.is_some() {
            starts
        } else {
            Vec::new()
        };
        self.tail.clear();
        Ok(())
    }

    fn push_label(&mut self, label: &str) -> Result<()> {
        self.label_bytes.push_str(label);
        let end = u32::try_from(self.label_bytes.len())
            .map_err(|_| Error::InvalidArgument("the labels of one index exceed 4 GiB".into()))?;
        self.label_ends.push(end);
        Ok(())
    }

    /// Slots read from the mapped file.
    pub fn mapped_len(&self) -> usize {
        self.starts.len().saturating_sub(1)
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.label_ends.len()
    }

    /// Whether there are no slots.
    pub fn is_empty(&self) -> bool {
        self.label_ends.is_empty()
    }

    /// The label of `slot` (panics when out of range, like slice indexing).
    pub fn label(&self, slot: usize) -> &str {
        let start = if slot == 0 {
            0
        } else {
            self.label_ends[slot - 1] as usize
        };
        &self.label_bytes[start..self.label_ends[slot] as usize]
    }

    /// The item of `slot`: parsed from the mapped file, or borrowed from memory.
    pub fn get(&self, slot: usize) -> Result<Cow<'_, Item>> {
        let n = self.mapped_len();
        if slot >= n {
            return self
                .tail
                .get(slot - n)
                .map(Cow::Borrowed)
                .ok_or_else(|| Error::InvalidArgument(format!("no item in slot {slot}")));
        }
        let m = self.mapped.as_ref().expect("mapped slots have a mapping");
        let line = &m.bytes()[self.starts[slot] as usize..self.starts[slot + 1] as usize];
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let parsed = std::str::from_utf8(line)
            .map_err(|e| e.to_string())
            .and_then(store::parse_item_line);
        match parsed {
            Ok((_, item)) => Ok(Cow::Owned(item)),
            Err(e) => Err(Error::Msg(format!(
                "item of slot {slot} changed on disk since it was opened: {e}"
            ))),
        }
    }

    /// Append items (in memory).
    pub fn extend(&mut self, items: Vec<Item>) -> Result<()> {
        for it in &items {
            self.push_label(&it.label)?;
        }
        self.tail.extend(items);
        Ok(())
    }

    /// The items of `slots`, in that order, in memory.
    pub fn select(&self, slots: &[usize]) -> Result<Items> {
        let items = slots
            .iter()
            .map(|&s| self.get(s).map(Cow::into_owned))
            .collect::<Result<Vec<_>>>()?;
        Items::from_vec(items)
    }

    /// Write every slot as a line of the items file with its id from `ids` (slot order).
    /// Mapped lines are copied as they are (they hold the same id: slots only move in a
    /// compaction, which [`Self::select`]s into memory first).
    pub fn write(&self, w: &mut dyn std::io::Write, ids: &[u64]) -> std::io::Result<()> {
        let n = self.mapped_len();
        if let Some(m) = &self.mapped {
            let end = self.starts[n] as usize;
            let body = &m.bytes()[..end];
            w.write_all(body)?;
            if !body.ends_with(b"\n") {
                w.write_all(b"\n")?;
            }
            m.release();
        }
        store::write_items(w, ids[n..].iter().copied().zip(self.tail.iter()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::manifest::FileEntry;

    fn item(label: &str, source: &str, payload: Option<serde_json::Value>) -> Item {
        Item {
            label: label.into(),
            source: source.into(),
            payload,
        }
    }

    #[test]
    fn mapped_items_read_back_and_write_identically() {
        let dir = tempfile::tempdir().unwrap();
        let items = vec![
            item("a", "first text", None),
            item(
                "",
                "second \"quoted\"\nline",
                Some(serde_json::json!({"k": [1, 2]})),
            ),
            item("ünï", "third", None),
        ];
        let ids = [4u64, 9, 10];
        let entry: FileEntry = store::write_data_file(dir.path(), "items.1.jsonl", |w| {
            store::write_items(w, ids.iter().copied().zip(items.iter()))
        })
        .unwrap();
        let (got_ids, mut mapped) = Items::map(dir.path(), &entry).unwrap();
        assert_eq!(got_ids, ids);
        assert_eq!(mapped.mapped_len(), 3);
        for (s, it) in items.iter().enumerate() {
            assert_eq!(&*mapped.get(s).unwrap(), it);
            assert_eq!(mapped.label(s), it.label);
        }
        // Items added after opening come after the mapped ones.
        mapped.extend(vec![item("z", "added", None)]).unwrap();
        assert_eq!(mapped.len(), 4);
        assert_eq!(mapped.label(3), "z");
        assert_eq!(mapped.get(3).unwrap().source, "added");
        assert!(mapped.get(4).is_err());
        // Writing out gives the file a fresh in-memory store would write.
        let all_ids = [4u64, 9, 10, 11];
        let mut from_map = Vec::new();
        mapped.write(&mut from_map, &all_ids).unwrap();
        let mut all = items.clone();
        all.push(item("z", "added", None));
        let mut fresh = Vec::new();
        Items::from_vec(all.clone())
            .unwrap()
            .write(&mut fresh, &all_ids)
            .unwrap();
        assert_eq!(from_map, fresh);
        // The next generation's file, written from them, is mapped in their place.
        let next =
            store::write_data_file(dir.path(), "items.2.jsonl", |w| mapped.write(w, &all_ids))
                .unwrap();
        mapped.remap(dir.path(), &next).unwrap();
        assert_eq!((mapped.mapped_len(), mapped.len()), (4, 4));
        for (s, it) in all.iter().enumerate() {
            assert_eq!(&*mapped.get(s).unwrap(), it);
            assert_eq!(mapped.label(s), it.label);
        }
        // A file of another length is refused and changes nothing.
        assert!(mapped.remap(dir.path(), &entry).is_err());
        assert_eq!(mapped.get(3).unwrap().source, "added");
        let sel = mapped.select(&[3, 0]).unwrap();
        assert_eq!(&*sel.get(0).unwrap(), &all[3]);
        assert_eq!(sel.label(1), "a");
    }

    #[test]
    fn damaged_items_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let items = [item("a", "x", None)];
        let entry = store::write_data_file(dir.path(), "items.1.jsonl", |w| {
            store::write_items(w, [(0u64, &items[0])].into_iter())
        })
        .unwrap();
        let path = dir.path().join("items.1.jsonl");
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = Items::map(dir.path(), &entry).unwrap_err().to_string();
        assert!(err.contains("checksum"), "{err}");
    }
}

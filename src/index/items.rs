//! The items of an index (label, source, payload per slot), kept so that a reopened index's
//! resident set is its vectors (or codes) and graph, not its texts.
//!
//! Opening reads no line: the `items.<gen>.idx` catalogue (ids, where each line of
//! `items.<gen>.jsonl` starts, labels) and the items file are memory-mapped, the catalogue's
//! structure checked ([`Items::open_catalog`]); [`Items::get`] parses one line when a caller
//! asks for that item, and labels are read from the catalogue (filtered searches test one per
//! candidate). Indexes written before the catalogue are opened by parsing every line once
//! ([`Items::map`]), keeping the labels in memory and each line's start. Items added after
//! opening live in memory behind the mapped ones until the next checkpoint maps the new files.

use std::borrow::Cow;
use std::path::Path;

use crate::error::{Error, Result};

use super::linebuf::LineBuf;
use super::manifest::FileEntry;
use super::rows::Mapped;
use super::store::{self, Item};

/// The items of every slot: a mapped prefix, then items in memory.
#[derive(Default)]
pub struct Items {
    mapped: Option<Mapped>,
    /// The mapped catalogue of the mapped items file, when opened from one: the line starts
    /// and labels of its slots (then `starts` is empty and the labels below follow its).
    catalog: Option<Catalog>,
    /// Byte offset of each mapped line, then the end of the last (`mapped_len + 1` entries, or
    /// none without a mapping or with a catalogue).
    starts: Vec<u64>,
    /// The labels of the slots after the catalogue's (every slot's without one),
    /// concatenated; the `i`-th one's ends at `label_ends[i]`.
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
    pub fn map(dir: &Path, entry: &FileEntry) -> Result<(LineBuf<u64>, Self)> {
        let path = dir.join(&entry.name);
        if cfg!(not(unix)) {
            let (ids, items) = store::parse_items(&store::read_data_file(dir, entry)?, &path)?;
            return Ok((LineBuf::from_slice(&ids), Items::from_vec(items)?));
        }
        let m = Mapped::open_checked(&path, entry)?;
        let bytes = m.bytes();
        let text = std::str::from_utf8(bytes).map_err(|e| {
            Error::corrupt(&path, format!("at byte {}: not UTF-8", e.valid_up_to()))
        })?;
        let mut out = Items::default();
        let mut ids = LineBuf::default();
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
    pub fn remap(&mut self, dir: &Path, entry: &FileEntry, cat: Option<&FileEntry>) -> Result<()> {
        if cfg!(not(unix)) {
            return Ok(());
        }
        if let Some(cat) = cat.filter(|_| cfg!(target_endian = "little")) {
            let (_, items) = Self::open_catalog(dir, entry, cat)?;
            if items.len() != self.len() {
                return Err(Error::corrupt(
                    dir.join(&cat.name),
                    format!("{} items for {}", items.len(), self.len()),
                ));
            }
            *self = items;
            return Ok(());
        }
        let path = dir.join(&entry.name);
        let m = Mapped::open_checked(&path, entry)?;
        let bytes = m.bytes();
        let starts = line_starts(bytes);
        if starts.len() != self.len() + 1 {
            return Err(Error::corrupt(
                &path,
                format!("{} lines for {} items", starts.len() - 1, self.len()),
            ));
        }
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

    /// Write the catalogue of the items file `jsonl` (just written from these items with
    /// [`Self::write`] and `ids`): a header, every slot's id (u64), where each line starts
    /// (u64, then the file's end), where each label ends (u32) and the labels, little-endian.
    /// Opening reads it instead of parsing every line ([`Self::open_catalog`]).
    pub fn write_catalog(
        &self,
        w: &mut dyn std::io::Write,
        ids: &[u64],
        jsonl: &Path,
    ) -> std::io::Result<()> {
        let len = std::fs::metadata(jsonl)?.len();
        let m = if cfg!(unix) {
            Some(map_whole(jsonl, len).map_err(std::io::Error::other)?)
        } else {
            None
        };
        let read;
        let bytes = match &m {
            Some(m) => m.bytes(),
            None => {
                read = std::fs::read(jsonl)?;
                &read[..]
            }
        };
        let starts = line_starts(bytes);
        if let Some(m) = &m {
            m.release();
        }
        if starts.len() != ids.len() + 1 || self.len() != ids.len() {
            return Err(std::io::Error::other(format!(
                "{}: {} lines for {} items",
                jsonl.display(),
                starts.len() - 1,
                ids.len()
            )));
        }
        let mut buf = Vec::with_capacity(CATALOG_HEADER + 20 * ids.len() + 16);
        buf.extend_from_slice(CATALOG_MAGIC);
        buf.extend_from_slice(&CATALOG_VERSION.to_le_bytes());
        buf.extend_from_slice(&0u32.to_le_bytes());
        buf.extend_from_slice(&(ids.len() as u64).to_le_bytes());
        let labels: Vec<&str> = (0..ids.len()).map(|s| self.label(s)).collect();
        let total: usize = labels.iter().map(|l| l.len()).sum();
        if u32::try_from(total).is_err() {
            return Err(std::io::Error::other(
                "the labels of one index exceed 4 GiB",
            ));
        }
        buf.extend_from_slice(&(total as u64).to_le_bytes());
        for &id in ids {
            buf.extend_from_slice(&id.to_le_bytes());
        }
        for &st in &starts {
            buf.extend_from_slice(&st.to_le_bytes());
        }
        let mut end = 0u32;
        for l in &labels {
            end += l.len() as u32;
            buf.extend_from_slice(&end.to_le_bytes());
        }
        buf.resize(buf.len().div_ceil(8) * 8, 0);
        for l in &labels {
            buf.extend_from_slice(l.as_bytes());
        }
        w.write_all(&buf)
    }

    /// Open the items from the catalogue `cat` and the items file `entry` of `dir`, both
    /// mapped, no line parsed: the catalogue's header, its size, the ids (copied out, they
    /// must ascend), the label ends (in order, on character boundaries) and the labels (UTF-8)
    /// are checked; the line starts are read when an item is (a start that does not fit the
    /// items file is an error then). Returns the ids in slot order and the items. The sha256
    /// of both files is checked by `twindex index verify`.
    pub fn open_catalog(
        dir: &Path,
        entry: &FileEntry,
        cat: &FileEntry,
    ) -> Result<(LineBuf<u64>, Self)> {
        let cpath = store::sized_data_file(dir, cat)?;
        let ipath = store::sized_data_file(dir, entry)?;
        if cfg!(not(all(unix, target_endian = "little"))) {
            let (ids, items) = store::parse_items(&store::read_data_file(dir, entry)?, &ipath)?;
            return Ok((LineBuf::from_slice(&ids), Items::from_vec(items)?));
        }
        let m = Mapped::open_sized(&cpath, cat)?;
        let c = Catalog::check(m, entry.bytes).map_err(|msg| Error::corrupt(&cpath, msg))?;
        let ids = LineBuf::from_slice(c.ids());
        let n = c.n;
        let mut out = Items::default();
        if n > 0 {
            let m = Mapped::open_sized(&ipath, entry)?;
            m.release();
            out.mapped = Some(m);
            out.catalog = Some(c);
        }
        Ok((ids, out))
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
        match &self.catalog {
            Some(c) => c.n,
            None => self.starts.len().saturating_sub(1),
        }
    }

    /// Where the mapped line of `slot` starts (`slot <= mapped_len`; the last is the end).
    fn start(&self, slot: usize) -> u64 {
        match &self.catalog {
            Some(c) => c.start(slot),
            None => self.starts[slot],
        }
    }

    /// Slots whose label the catalogue holds.
    fn catalog_len(&self) -> usize {
        self.catalog.as_ref().map_or(0, |c| c.n)
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.catalog_len() + self.label_ends.len()
    }

    /// Whether there are no slots.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The label of `slot` (panics when out of range, like slice indexing).
    pub fn label(&self, slot: usize) -> &str {
        if let Some(c) = self.catalog.as_ref().filter(|c| slot < c.n) {
            return c.label(slot);
        }
        let i = slot - self.catalog_len();
        let start = if i == 0 {
            0
        } else {
            self.label_ends[i - 1] as usize
        };
        &self.label_bytes[start..self.label_ends[i] as usize]
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
        let (a, b) = (self.start(slot) as usize, self.start(slot + 1) as usize);
        let line = m.bytes().get(a..b).unwrap_or_default();
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
            let end = self.start(n) as usize;
            let body = m.bytes().get(..end).ok_or_else(|| {
                std::io::Error::other("the items file is shorter than its catalogue says")
            })?;
            w.write_all(body)?;
            if !body.ends_with(b"\n") {
                w.write_all(b"\n")?;
            }
            m.release();
        }
        store::write_items(w, ids[n..].iter().copied().zip(self.tail.iter()))
    }
}

/// The catalogue's header: magic, version, 0, item count, label bytes.
const CATALOG_HEADER: usize = 32;
const CATALOG_MAGIC: &[u8; 8] = b"TWXITEMC";
const CATALOG_VERSION: u32 = 1;

/// A mapped catalogue (see [`Items::write_catalog`]), its structure checked.
struct Catalog {
    m: Mapped,
    n: usize,
    /// Where the line starts, the label ends and the labels begin.
    starts_at: usize,
    ends_at: usize,
    labels_at: usize,
}

impl Catalog {
    /// Check the header, the size (for `items_bytes` of items file), the order of the ids
    /// and of the label ends, and the labels' UTF-8.
    fn check(m: Mapped, items_bytes: u64) -> std::result::Result<Catalog, String> {
        let b = m.bytes();
        if b.len() < CATALOG_HEADER || &b[..8] != CATALOG_MAGIC {
            return Err("not a twindex items catalogue (bad header)".into());
        }
        let version = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
        if version != CATALOG_VERSION {
            return Err(format!(
                "catalogue version {version}, expected {CATALOG_VERSION}"
            ));
        }
        let n = u64::from_le_bytes(b[16..24].try_into().expect("8 bytes"));
        let nl = u64::from_le_bytes(b[24..32].try_into().expect("8 bytes"));
        let labels_at = (CATALOG_HEADER as u64 + 20 * n.min(b.len() as u64) + 8).div_ceil(8) * 8;
        if n > b.len() as u64 || labels_at.checked_add(nl) != Some(b.len() as u64) {
            return Err(format!(
                "{} bytes do not hold {n} items and {nl} label bytes",
                b.len()
            ));
        }
        let n = n as usize;
        let c = Catalog {
            n,
            starts_at: CATALOG_HEADER + 8 * n,
            ends_at: CATALOG_HEADER + 16 * n + 8,
            labels_at: labels_at as usize,
            m,
        };
        let ids = c.ids();
        if let Some(i) = (1..n).find(|&i| ids[i - 1] >= ids[i]) {
            return Err(format!("item {}: id {} does not ascend", i + 1, ids[i]));
        }
        if n > 0 && c.start(n) != items_bytes {
            return Err(format!(
                "the items end at byte {}, the items file has {items_bytes}",
                c.start(n)
            ));
        }
        let labels = std::str::from_utf8(&c.m.bytes()[c.labels_at..])
            .map_err(|e| format!("labels are not UTF-8 at byte {}", e.valid_up_to()))?;
        let mut prev = 0;
        for i in 0..n {
            let e = c.end(i);
            if e < prev || e > labels.len() || !labels.is_char_boundary(e) {
                return Err(format!(
                    "label {} ends out of order or inside a character",
                    i + 1
                ));
            }
            prev = e;
        }
        if n > 0 && prev != labels.len() {
            return Err(format!("labels end at {prev} of {} bytes", labels.len()));
        }
        c.m.release();
        Ok(c)
    }

    fn ids(&self) -> &[u64] {
        let b = &self.m.bytes()[CATALOG_HEADER..self.starts_at];
        // SAFETY: a mapping is page-aligned and the ids start 32 bytes in, so they are 8-byte
        // aligned; any bytes are valid u64s (little-endian here, as written).
        unsafe { std::slice::from_raw_parts(b.as_ptr() as *const u64, self.n) }
    }

    fn start(&self, slot: usize) -> u64 {
        let o = self.starts_at + 8 * slot;
        u64::from_le_bytes(self.m.bytes()[o..o + 8].try_into().expect("8 bytes"))
    }

    fn end(&self, slot: usize) -> usize {
        let o = self.ends_at + 4 * slot;
        u32::from_le_bytes(self.m.bytes()[o..o + 4].try_into().expect("4 bytes")) as usize
    }

    fn label(&self, slot: usize) -> &str {
        let a = if slot == 0 { 0 } else { self.end(slot - 1) };
        let b = &self.m.bytes()[self.labels_at + a..self.labels_at + self.end(slot)];
        // SAFETY: checked on opening: the labels are UTF-8 and every end is a character
        // boundary, in order.
        unsafe { std::str::from_utf8_unchecked(b) }
    }
}

/// Where each non-empty line of `bytes` starts, then the end of the bytes.
fn line_starts(bytes: &[u8]) -> Vec<u64> {
    let mut starts = Vec::new();
    let mut at = 0usize;
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        if line != b"\n" {
            starts.push(at as u64);
        }
        at += line.len();
    }
    starts.push(at as u64);
    starts
}

/// Map a whole file of `len` bytes (unchecked: for reading what was just written).
fn map_whole(path: &Path, len: u64) -> Result<Mapped> {
    let entry = FileEntry {
        name: String::new(),
        bytes: len,
        sha256: String::new(),
    };
    Mapped::open_sized(path, &entry)
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
        assert_eq!(got_ids[..], ids);
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
        mapped.remap(dir.path(), &next, None).unwrap();
        assert_eq!((mapped.mapped_len(), mapped.len()), (4, 4));
        for (s, it) in all.iter().enumerate() {
            assert_eq!(&*mapped.get(s).unwrap(), it);
            assert_eq!(mapped.label(s), it.label);
        }
        // A file of another length is refused and changes nothing.
        assert!(mapped.remap(dir.path(), &entry, None).is_err());
        assert_eq!(mapped.get(3).unwrap().source, "added");
        let sel = mapped.select(&[3, 0]).unwrap();
        assert_eq!(&*sel.get(0).unwrap(), &all[3]);
        assert_eq!(sel.label(1), "a");
    }

    /// The catalogue opens the items as parsing the file does (ids, labels, items), labels
    /// added after it follow its own, and a catalogue whose structure is damaged is refused
    /// by name.
    #[test]
    fn the_catalogue_opens_what_the_items_file_holds() {
        let dir = tempfile::tempdir().unwrap();
        let items = vec![
            item("ann", "a", None),
            item("", "b \"q\"", Some(serde_json::json!([1]))),
            item("zoë", "c", None),
        ];
        let ids = [3u64, 4, 9];
        let src = Items::from_vec(items.clone()).unwrap();
        let entry =
            store::write_data_file(dir.path(), "items.1.jsonl", |w| src.write(w, &ids)).unwrap();
        let jsonl = dir.path().join("items.1.jsonl");
        let cat = store::write_data_file(dir.path(), "items.1.idx", |w| {
            src.write_catalog(w, &ids, &jsonl)
        })
        .unwrap();
        let (got, mut opened) = Items::open_catalog(dir.path(), &entry, &cat).unwrap();
        assert_eq!(got[..], ids);
        for (s, it) in items.iter().enumerate() {
            assert_eq!(&*opened.get(s).unwrap(), it);
            assert_eq!(opened.label(s), it.label);
        }
        opened.extend(vec![item("later", "d", None)]).unwrap();
        assert_eq!(
            (opened.len(), opened.label(3), opened.label(2)),
            (4, "later", "zoë")
        );
        // Label ends out of order: refused at open, naming the catalogue.
        let cpath = dir.path().join("items.1.idx");
        let good = std::fs::read(&cpath).unwrap();
        let ends_at = CATALOG_HEADER + 16 * 3 + 8;
        let mut bad = good.clone();
        bad[ends_at..ends_at + 4].copy_from_slice(&9u32.to_le_bytes());
        std::fs::write(&cpath, &bad).unwrap();
        let e = Items::open_catalog(dir.path(), &entry, &cat)
            .unwrap_err()
            .to_string();
        assert!(e.contains("items.1.idx") && e.contains("label 1"), "{e}");
        // Ids that do not ascend.
        let mut bad = good.clone();
        bad[CATALOG_HEADER + 8..CATALOG_HEADER + 16].copy_from_slice(&1u64.to_le_bytes());
        std::fs::write(&cpath, &bad).unwrap();
        let e = Items::open_catalog(dir.path(), &entry, &cat)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not ascend"), "{e}");
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

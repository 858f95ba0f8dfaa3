//! The on-disk format of an index directory: reading and writing the manifest and the data
//! files, with sha256 checksums, and removal of files no manifest refers to.
//!
//! ```text
//! INDEX_DIR/
//!   manifest.json          the commit point (written last, atomically)
//!   vectors.<gen>.f32      slot_count × dim little-endian f32
//!   items.<gen>.jsonl      one JSON object a slot: {"id","label","source","payload"?}
//!   tombstones.<gen>.u64   sorted little-endian u64 ids of deleted items
//!   graph.<gen>.hnsw       HNSW links (own backend only)
//! ```
//!
//! A commit writes the changed data files under the new generation's names (each atomically:
//! temp file, fsync, rename, fsync dir), then the manifest, then removes files of older
//! generations. A crash at any point leaves the previous manifest and all its files intact.

use crate::error::{Error, Result};
use crate::fsutil::{atomic_write_json, atomic_write_with};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

use super::manifest::{FileEntry, Manifest, FORMAT_VERSION, MANIFEST_FILE};

/// Data-file kinds and extensions: `<kind>.<generation>.<ext>`. The cleanup removes only
/// names of exactly this shape (and their temporary files), never anything else a user keeps
/// in the directory.
const DATA_FILES: [(&str, &str); 6] = [
    ("vectors", "f32"),
    ("items", "jsonl"),
    ("items", "idx"),
    ("tombstones", "u64"),
    ("graph", "hnsw"),
    ("wal", "log"),
];

/// Whether `name` is a data file of some generation (`vectors.12.f32`).
fn is_data_file(name: &str) -> bool {
    DATA_FILES.iter().any(|(kind, ext)| {
        name.strip_prefix(kind)
            .and_then(|r| r.strip_prefix('.'))
            .and_then(|r| r.strip_suffix(ext))
            .and_then(|r| r.strip_suffix('.'))
            .is_some_and(|g| !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// Whether `name` is a file an index writes (a data file, a log or one of their temporaries;
/// not the manifest or the lock).
pub fn is_index_file(name: &str) -> bool {
    is_data_file(name) || is_temp_file(name)
}

/// Whether `name` is a temporary file left by an interrupted write of a data file or the
/// manifest (`.vectors.12.f32.<pid>.tmp`, `.manifest.json.<pid>.tmp`).
fn is_temp_file(name: &str) -> bool {
    let Some(inner) = name.strip_prefix('.').and_then(|r| r.strip_suffix(".tmp")) else {
        return false;
    };
    let Some((target, pid)) = inner.rsplit_once('.') else {
        return false;
    };
    !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
        && (target == MANIFEST_FILE || is_data_file(target))
}

/// An item: what a stored vector stands for.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Item {
    /// Class or group label (may be empty).
    pub label: String,
    /// Where the item came from: a file path, or the text itself for text items.
    pub source: String,
    /// Anything else the caller wants back with search results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
}

#[derive(Serialize, Deserialize)]
struct ItemLine {
    id: u64,
    label: String,
    source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payload: Option<Value>,
}

struct HashWriter<'a> {
    inner: &'a mut dyn Write,
    hasher: Sha256,
    bytes: u64,
}

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Atomically write `dir/name` with the bytes `fill` produces; returns its manifest entry.
pub fn write_data_file(
    dir: &Path,
    name: &str,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<FileEntry> {
    let mut entry = None;
    atomic_write_with(&dir.join(name), |w| {
        let mut hw = HashWriter {
            inner: w,
            hasher: Sha256::new(),
            bytes: 0,
        };
        fill(&mut hw)?;
        entry = Some(FileEntry {
            name: name.to_string(),
            bytes: hw.bytes,
            sha256: hex(&hw.hasher.finalize()),
        });
        Ok(())
    })?;
    entry.ok_or_else(|| Error::Msg(format!("{name}: nothing was written")))
}

/// The path of the data file `dir/entry.name`, checked cheaply: a plain file name, and the
/// file's size the manifest's (a `stat`; the sha256 is left to [`read_data_file`] and
/// `twindex index verify`).
pub fn sized_data_file(dir: &Path, entry: &FileEntry) -> Result<std::path::PathBuf> {
    if entry.name.contains('/') || entry.name.contains('\\') || entry.name.starts_with('.') {
        return Err(Error::corrupt(
            dir.join(MANIFEST_FILE),
            format!("data file name {:?} is not a plain file name", entry.name),
        ));
    }
    let path = dir.join(&entry.name);
    let len = std::fs::metadata(&path)
        .map_err(|e| Error::io(&path, e))?
        .len();
    check_size(&path, len, entry)?;
    Ok(path)
}

fn check_size(path: &Path, len: u64, entry: &FileEntry) -> Result<()> {
    if len != entry.bytes {
        return Err(Error::corrupt(
            path,
            format!(
                "file is {len} bytes, the manifest says {} (truncated or replaced)",
                entry.bytes
            ),
        ));
    }
    Ok(())
}

/// Read `dir/entry.name` and check its size and sha256 against the manifest.
pub fn read_data_file(dir: &Path, entry: &FileEntry) -> Result<Vec<u8>> {
    let path = sized_data_file(dir, entry)?;
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    check_size(&path, bytes.len() as u64, entry)?;
    check_sha256(&path, &bytes, entry)?;
    Ok(bytes)
}

/// Check `bytes` (the file `path`) against the manifest's sha256.
pub fn check_sha256(path: &Path, bytes: &[u8], entry: &FileEntry) -> Result<()> {
    let got = sha256_hex(bytes);
    if got != entry.sha256 {
        return Err(Error::corrupt(
            path,
            format!(
                "checksum mismatch: sha256 is {got}, the manifest says {} (the file is damaged)",
                entry.sha256
            ),
        ));
    }
    Ok(())
}

/// Read and check `dir/manifest.json`: valid JSON, a supported `format_version`, sane fields.
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST_FILE);
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    if bytes.is_empty() {
        return Err(Error::corrupt(
            &path,
            "manifest is empty (the index is damaged)",
        ));
    }
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
        Error::corrupt(
            &path,
            format!("manifest is not valid JSON ({e}); the index is damaged or truncated"),
        )
    })?;
    match v.get("format_version").and_then(Value::as_u64) {
        Some(n) if n == FORMAT_VERSION as u64 => {}
        Some(n) => {
            return Err(Error::corrupt(
                &path,
                format!("format_version {n} is not supported; this build reads {FORMAT_VERSION}"),
            ))
        }
        None => {
            return Err(Error::corrupt(
                &path,
                "manifest has no numeric format_version (not a twindex index?)",
            ))
        }
    }
    let mut m: Manifest = serde_json::from_value(v)
        .map_err(|e| Error::corrupt(&path, format!("manifest fields are invalid: {e}")))?;
    // Written by every commit since the write-ahead log came in; older manifests lack it.
    if let Some(want) = m.checksum.take() {
        let got = manifest_checksum(&m);
        if got != want {
            return Err(Error::corrupt(
                &path,
                format!("manifest checksum mismatch: its content hashes to {got}, it says {want} (edited or damaged; an index's settings cannot be changed by editing the manifest)"),
            ));
        }
    }
    if m.dim == 0 {
        return Err(Error::corrupt(&path, "manifest dim is 0"));
    }
    if m.item_count > m.slot_count {
        return Err(Error::corrupt(
            &path,
            format!(
                "item_count {} exceeds slot_count {}",
                m.item_count, m.slot_count
            ),
        ));
    }
    m.hnsw
        .validate()
        .map_err(|e| Error::corrupt(&path, format!("manifest hnsw parameters: {e}")))?;
    Ok(m)
}

/// sha256 of the manifest's content without its checksum field (compact JSON).
fn manifest_checksum(m: &Manifest) -> String {
    let mut c = m.clone();
    c.checksum = None;
    // A struct of plain fields always serialises.
    sha256_hex(&serde_json::to_vec(&c).expect("manifest serialises"))
}

/// Atomically replace `dir/manifest.json` (the commit point), with its checksum.
pub fn write_manifest(dir: &Path, m: &Manifest) -> Result<()> {
    let mut c = m.clone();
    c.checksum = Some(manifest_checksum(m));
    atomic_write_json(&dir.join(MANIFEST_FILE), &c)
}

/// Remove data files and stale temporary files that `m` does not refer to. Best effort: a
/// failure leaves garbage, never damage, so errors are ignored.
pub fn remove_unreferenced(dir: &Path, m: &Manifest) {
    let keep: Vec<&str> = [
        Some(&m.files.vectors),
        Some(&m.files.items),
        Some(&m.files.tombstones),
        m.files.graph.as_ref(),
        m.files.catalog.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|e| e.name.as_str())
    .collect();
    let log = super::wal::wal_name(m.generation);
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = is_data_file(&name) || is_temp_file(&name);
        if ours && !keep.contains(&name.as_str()) && name != log {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Vectors as little-endian f32 bytes.
pub fn write_vectors(
    w: &mut dyn Write,
    rows: impl Iterator<Item = impl AsRef<[f32]>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    for r in rows {
        buf.clear();
        for x in r.as_ref() {
            buf.extend_from_slice(&x.to_le_bytes());
        }
        w.write_all(&buf)?;
    }
    Ok(())
}

/// Parse the vectors file: exactly `rows × dim` f32.
pub fn parse_vectors(bytes: &[u8], rows: usize, dim: usize, path: &Path) -> Result<Vec<f32>> {
    let want = rows as u64 * dim as u64 * 4;
    if bytes.len() as u64 != want {
        return Err(Error::corrupt(
            path,
            format!(
                "{} bytes is not {rows} vectors of dimension {dim} ({want} bytes)",
                bytes.len()
            ),
        ));
    }
    let v: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(Error::corrupt(
            path,
            format!("at byte {}: non-finite value {}", 4 * i, v[i]),
        ));
    }
    Ok(v)
}

/// Items as JSON lines, with their ids.
pub fn write_items<'a>(
    w: &mut dyn Write,
    items: impl Iterator<Item = (u64, &'a Item)>,
) -> std::io::Result<()> {
    for (id, it) in items {
        let line = ItemLine {
            id,
            label: it.label.clone(),
            source: it.source.clone(),
            payload: it.payload.clone(),
        };
        serde_json::to_writer(&mut *w, &line)?;
        w.write_all(b"\n")?;
    }
    Ok(())
}

/// Parse the items file into ids and items.
pub fn parse_items(bytes: &[u8], path: &Path) -> Result<(Vec<u64>, Vec<Item>)> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| Error::corrupt(path, format!("at byte {}: not UTF-8", e.valid_up_to())))?;
    let mut ids = Vec::new();
    let mut items = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let (id, item) = parse_item_line(line)
            .map_err(|e| Error::corrupt(path, format!("line {}: {e}", i + 1)))?;
        ids.push(id);
        items.push(item);
    }
    Ok((ids, items))
}

/// One line of the items file: its id and item.
pub fn parse_item_line(line: &str) -> std::result::Result<(u64, Item), String> {
    let l: ItemLine = serde_json::from_str(line).map_err(|e| e.to_string())?;
    Ok((
        l.id,
        Item {
            label: l.label,
            source: l.source,
            payload: l.payload,
        },
    ))
}

/// Tombstones as sorted little-endian u64.
pub fn write_ids(w: &mut dyn Write, ids: &[u64]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(ids.len() * 8);
    for id in ids {
        buf.extend_from_slice(&id.to_le_bytes());
    }
    w.write_all(&buf)
}

/// Parse the tombstones file.
pub fn parse_ids(bytes: &[u8], path: &Path) -> Result<Vec<u64>> {
    if !bytes.len().is_multiple_of(8) {
        return Err(Error::corrupt(
            path,
            format!("{} bytes is not a whole number of u64 ids", bytes.len()),
        ));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleanup_matches_only_our_names() {
        for ours in [
            "vectors.3.f32",
            "items.12.jsonl",
            "tombstones.0.u64",
            "graph.7.hnsw",
            ".graph.7.hnsw.1234.tmp",
            ".manifest.json.99.tmp",
        ] {
            assert!(is_data_file(ours) || is_temp_file(ours), "{ours}");
        }
        for theirs in [
            "vectors.npy",
            "vectors.f32",
            "vectors.x.f32",
            "items.jsonl",
            "graph.7.hnsw.bak",
            "manifest.json",
            ".manifest.json.tmp",
            ".vectors.npy.12.tmp",
            "notes.txt",
        ] {
            assert!(!is_data_file(theirs) && !is_temp_file(theirs), "{theirs}");
        }
    }
}

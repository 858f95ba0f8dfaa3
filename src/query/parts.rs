//! Embedding parts: an index exported as Parquet (or `.npy`), a big corpus embedded shard by
//! shard on many machines (`embed --shard I/N`), and sets of parts checked before a push (one
//! encoder, one dimension, one metric, each shard once).
//!
//! Sharding cuts the corpus into blocks of [`TEXT_BLOCK`] texts (or [`IMAGE_BLOCK`] images)
//! and gives shard `I` of `N` the blocks `[I·B/N, (I+1)·B/N)`. Each block is encoded alone, as a
//! single `embed` (one shard of one) encodes it, so the parts' rows, concatenated in shard
//! order, are bit for bit the single run's.

use crate::corpus::text::TextRow;
use crate::error::{Error, Result};
use crate::index::parquet::{self, PartMeta, PartRows, Shard};
use crate::index::{vecio, EncoderRecord, Index, Matrix};
use crate::model::{ImageModel, TextEncoder};
use crate::query::build::BuildProgress;
use serde::Serialize;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Texts encoded together (and the unit of sharding for texts).
pub const TEXT_BLOCK: usize = 1024;
/// Images embedded together (and the unit of sharding for images).
pub const IMAGE_BLOCK: usize = 2048;

/// Shard `index` of `of` (0-based), from `I/N` on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardSpec {
    pub index: usize,
    pub of: usize,
}

impl std::str::FromStr for ShardSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<ShardSpec> {
        let bad = || {
            Error::InvalidArgument(format!(
                "--shard {s:?}: expected I/N with 0 <= I < N (e.g. 0/4 ... 3/4)"
            ))
        };
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (i, n): (usize, usize) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if n == 0 || i >= n {
            return Err(bad());
        }
        Ok(ShardSpec { index: i, of: n })
    }
}

impl Default for ShardSpec {
    fn default() -> Self {
        ShardSpec { index: 0, of: 1 }
    }
}

/// The rows of shard `s` of a corpus of `total` rows cut into blocks of `block`.
pub fn shard_range(total: usize, block: usize, s: ShardSpec) -> std::ops::Range<usize> {
    let blocks = total.div_ceil(block);
    let b0 = blocks * s.index / s.of;
    let b1 = blocks * (s.index + 1) / s.of;
    (b0 * block).min(total)..(b1 * block).min(total)
}

fn shard_meta(s: ShardSpec, range: &std::ops::Range<usize>, total: usize) -> Shard {
    Shard {
        index: s.index,
        of: s.of,
        first_row: range.start,
        total_rows: total,
    }
}

/// Ids of text rows: the id column's integers when given, else the row's position in the
/// corpus (0-based).
fn text_ids(rows: &[TextRow], source: &str) -> Result<Vec<i64>> {
    rows.iter()
        .enumerate()
        .map(|(n, r)| match &r.id {
            None => Ok(n as i64),
            Some(s) => s.trim().parse::<i64>().map_err(|_| {
                Error::format(
                    source,
                    format!("line {}: id {s:?} is not an integer (Milvus primary keys are int64); leave out --id-column to number the rows", r.line),
                )
            }),
        })
        .collect()
}

/// Embed shard `shard` of the texts `rows` with `enc` (whose manifest record is `record`).
/// `progress` gets the rows done so far.
pub fn embed_text_shard(
    enc: &TextEncoder,
    record: &EncoderRecord,
    rows: &[TextRow],
    source: &str,
    shard: ShardSpec,
    progress: &dyn Fn(usize),
) -> Result<(PartMeta, PartRows)> {
    let ids = text_ids(rows, source)?;
    let range = shard_range(rows.len(), TEXT_BLOCK, shard);
    let mut out = PartRows {
        dim: enc.dim(),
        ..Default::default()
    };
    for start in range.clone().step_by(TEXT_BLOCK) {
        let end = (start + TEXT_BLOCK).min(range.end);
        let texts: Vec<&str> = rows[start..end].iter().map(|r| r.text.as_str()).collect();
        out.vectors.extend(enc.encode(&texts, 32)?);
        out.ids.extend(&ids[start..end]);
        out.labels
            .extend(rows[start..end].iter().map(|r| r.label.clone()));
        out.texts.extend(texts.iter().map(|t| t.to_string()));
        progress(end - range.start);
    }
    let meta = PartMeta {
        twindex: env!("CARGO_PKG_VERSION").to_string(),
        encoder: record.clone(),
        dim: enc.dim(),
        metric: crate::index::Metric::Cosine,
        normalize: true,
        threshold: None,
        calibration: None,
        hnsw: None,
        rows: out.len(),
        shard: Some(shard_meta(shard, &range, rows.len())),
        source: source.to_string(),
    };
    Ok((meta, out))
}

/// Images to embed: pixels row-major (`n · height · width` bytes), with labels and sources.
pub struct ImageRows<'a> {
    pub pixels: &'a [u8],
    pub labels: Vec<String>,
    pub sources: Vec<String>,
}

/// Embed shard `shard` of `images` with the image encoder `model` (record `record`); ids are
/// the images' positions in the corpus.
pub fn embed_image_shard(
    model: &ImageModel,
    record: &EncoderRecord,
    images: &ImageRows,
    source: &str,
    shard: ShardSpec,
    progress: &dyn Fn(usize),
) -> Result<(PartMeta, PartRows)> {
    let n = images.labels.len();
    let per = model.config.preprocess.height * model.config.preprocess.width;
    if images.pixels.len() != n * per || images.sources.len() != n {
        return Err(Error::Shape(format!(
            "{source}: {} pixel bytes, {} sources for {n} images of {per} pixels",
            images.pixels.len(),
            images.sources.len()
        )));
    }
    let range = shard_range(n, IMAGE_BLOCK, shard);
    let mut out = PartRows {
        dim: model.config.dim,
        ..Default::default()
    };
    for start in range.clone().step_by(IMAGE_BLOCK) {
        let end = (start + IMAGE_BLOCK).min(range.end);
        out.vectors.extend(model.embed_pixels(
            &images.pixels[start * per..end * per],
            end - start,
            512,
        )?);
        out.ids.extend(start as i64..end as i64);
        out.labels.extend_from_slice(&images.labels[start..end]);
        out.texts.extend_from_slice(&images.sources[start..end]);
        progress(end - range.start);
    }
    let meta = PartMeta {
        twindex: env!("CARGO_PKG_VERSION").to_string(),
        encoder: record.clone(),
        dim: model.config.dim,
        metric: model.config.metric,
        normalize: false,
        threshold: Some(model.config.threshold).filter(|t| t.is_finite()),
        calibration: None,
        hnsw: None,
        rows: out.len(),
        shard: Some(shard_meta(shard, &range, n)),
        source: source.to_string(),
    };
    Ok((meta, out))
}

/// What an index says about its rows as a part: its encoder record (an image encoder's folder
/// made absolute, so the part or collection can find it), metric, calibration and HNSW.
pub fn index_meta(index: &Index) -> Result<PartMeta> {
    let m = index.manifest();
    let mut encoder = m.encoder.clone();
    if let EncoderRecord::Image { path, .. } = &mut encoder {
        let abs = std::fs::canonicalize(index.dir().join(&*path))
            .map_err(|e| Error::io(index.dir().join(&*path), e))?;
        *path = abs.display().to_string();
    }
    Ok(PartMeta {
        twindex: env!("CARGO_PKG_VERSION").to_string(),
        encoder,
        dim: index.dim(),
        metric: index.metric(),
        normalize: m.normalize,
        threshold: index.threshold_distance(),
        calibration: index
            .calibration()
            .map(|c| serde_json::to_value(c).unwrap_or(Value::Null)),
        hnsw: Some(json!({
            "m": m.hnsw.m,
            "ef_construction": m.hnsw.ef_construction,
            "ef_search": m.hnsw.ef_search,
        })),
        rows: index.len(),
        shard: None,
        source: index.dir().display().to_string(),
    })
}

/// Every live item of `index`, in id order: id, label, source (the text of a text item),
/// stored vector.
pub fn index_rows(index: &Index) -> Result<PartRows> {
    let mut rows = PartRows {
        dim: index.dim(),
        ..Default::default()
    };
    for id in index.ids() {
        let v = index.get(id)?;
        rows.ids.push(id as i64);
        rows.labels.push(v.item.label.clone());
        rows.texts.push(v.item.source.clone());
        rows.vectors.extend_from_slice(v.vector);
    }
    Ok(rows)
}

/// Embed shard `shard` of the texts in `path` (lines, or a TSV's `columns`) with the text
/// model in `model` (default: MiniLM), reporting the stage `encoding`.
pub fn embed_text_file(
    model: Option<&Path>,
    path: &Path,
    columns: &crate::corpus::text::TextColumns,
    shard: ShardSpec,
    p: &dyn BuildProgress,
) -> Result<(PartMeta, PartRows)> {
    let model_dir = match model {
        Some(m) => m.to_path_buf(),
        None => crate::corpus::resolve::default_text_model()?,
    };
    let enc = TextEncoder::load(&model_dir)
        .map_err(|e| Error::Msg(format!("loading text encoder {}: {e}", model_dir.display())))?;
    let record = crate::query::encoder::text_record(&model_dir, &enc)?;
    let rows = crate::corpus::text::read_texts(path, columns)?;
    p.stage(
        "encoding",
        shard_range(rows.len(), TEXT_BLOCK, shard).len() as u64,
    );
    let source = path.display().to_string();
    let out = embed_text_shard(&enc, &record, &rows, &source, shard, &|n| {
        p.advance(n as u64)
    });
    p.done();
    out
}

/// Embed shard `shard` of an image corpus (`mnist`, an IDX folder's training images, or a
/// folder of images) with the image encoder in `model` (default: the shipped MNIST encoder;
/// image folders need one), reporting the stage `embedding`.
pub fn embed_image_corpus(
    model: Option<&Path>,
    corpus: &str,
    shard: ShardSpec,
    p: &dyn BuildProgress,
) -> Result<(PartMeta, PartRows)> {
    use crate::corpus::resolve;
    let folder = resolve::is_image_folder(corpus);
    let model_dir = match model {
        Some(m) => m.to_path_buf(),
        None if folder => {
            return Err(Error::Msg(format!(
                "embedding the image folder {corpus} needs --model DIR"
            )))
        }
        None => resolve::default_image_model()?,
    };
    let model = ImageModel::load(&model_dir)
        .map_err(|e| Error::Msg(format!("loading encoder {}: {e}", model_dir.display())))?;
    let abs = std::fs::canonicalize(&model_dir).map_err(|e| Error::io(&model_dir, e))?;
    let record =
        crate::query::encoder::image_record(&model, &abs.display().to_string(), &abs, &abs)?;
    let c = crate::query::build::load_image_corpus(&model, corpus, None)?;
    let (labels, sources): (Vec<String>, Vec<String>) =
        c.items.into_iter().map(|i| (i.label, i.source)).unzip();
    let pixels = c.set.pixels;
    let images = ImageRows {
        pixels: &pixels,
        labels,
        sources,
    };
    let r = shard_range(images.labels.len(), IMAGE_BLOCK, shard);
    p.stage("embedding", r.len() as u64);
    let out = embed_image_shard(&model, &record, &images, corpus, shard, &|n| {
        p.advance(n as u64)
    });
    p.done();
    out
}

/// What `index push` sends: the collection's metadata, the input named for the report, and
/// the rows part by part (an index is one part; each input is opened once).
pub struct PushInput {
    pub meta: crate::query::milvus::CollectionMeta,
    pub source: String,
    pub rows: Box<dyn Iterator<Item = Result<PartRows>>>,
    /// A line for the user (e.g. that only some shards were given).
    pub note: Option<String>,
}

/// The push input of an index directory or, without one, of the parts matching `parts`
/// (globs expanded; all of one encoder). Parts without HNSW parameters get `m` and
/// `ef_construction`.
pub fn push_input(
    index: Option<&Path>,
    parts: &[String],
    m: usize,
    ef_construction: usize,
) -> Result<PushInput> {
    use crate::query::milvus::CollectionMeta;
    if let Some(dir) = index {
        let idx = Index::open(dir)
            .map_err(|e| Error::Msg(format!("opening index {}: {e}", dir.display())))?;
        let meta = CollectionMeta::from_part(&index_meta(&idx)?);
        let rows = index_rows(&idx);
        return Ok(PushInput {
            meta,
            source: dir.display().to_string(),
            rows: Box::new(std::iter::once(rows)),
            note: None,
        });
    }
    let mut paths: Vec<PathBuf> = Vec::new();
    for p in parts {
        paths.extend(expand_glob(p)?);
    }
    let (first, metas) = check_parts(&paths)?;
    let mut meta = CollectionMeta::from_part(&first);
    if first.hnsw.is_none() {
        meta.hnsw.m = m;
        meta.hnsw.ef_construction = ef_construction;
    }
    let shards: Vec<String> = metas
        .iter()
        .filter_map(|m| m.shard.map(|s| format!("{}/{}", s.index, s.of)))
        .collect();
    let note = first.shard.filter(|s| shards.len() < s.of).map(|s| {
        format!(
            "note: {} of {} shards given ({}); push the others later into the same collection",
            shards.len(),
            s.of,
            shards.join(", ")
        )
    });
    let source = paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" ");
    let rows = paths
        .into_iter()
        .map(|p| parquet::read_part(&p).map(|(_, r)| r));
    Ok(PushInput {
        meta,
        source,
        rows: Box::new(rows),
        note,
    })
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One Parquet file (+ `PATH.json`).
    Parquet,
    /// `NAME.npy` (float32, rows x dim) with two files beside it: `NAME.items.jsonl`
    /// (`{"id", "label", "text"}` a line, in the same order) and `NAME.twindex.json` (the
    /// metadata). See [`npy_sidecars`].
    Npy,
}

impl std::str::FromStr for ExportFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<ExportFormat> {
        let choices: [(&[&str], _); 2] = [
            (&["parquet"], ExportFormat::Parquet),
            (&["npy"], ExportFormat::Npy),
        ];
        crate::error::parse_choice("--format", s, &choices)
    }
}

/// What `embed --shard` wrote (the keys of `embed --json`).
#[derive(Debug, Clone, Serialize)]
pub struct EmbedReport {
    pub out: String,
    /// `I/N`.
    pub shard: String,
    pub first_row: usize,
    pub rows: usize,
    pub total_rows: usize,
    pub dim: usize,
    pub encoder_sha256: String,
    pub seconds: f64,
    pub cpu_seconds: f64,
}

impl EmbedReport {
    /// One line for a person.
    pub fn summary(&self) -> String {
        format!(
            "shard {}: rows {}..{} of {} embedded ({} dims) to {} in {:.1} s ({:.1} CPU-s)",
            self.shard,
            self.first_row,
            self.first_row + self.rows,
            self.total_rows,
            self.dim,
            self.out,
            self.seconds,
            self.cpu_seconds
        )
    }
}

/// `embed --shard I/N`: encode shard `shard` of `source` (texts or an image corpus) into the
/// new Parquet part `out`, recording `threshold` (a distance) when given (an image encoder's
/// own calibrated threshold is recorded without it).
pub fn embed_part(
    source: &crate::query::BuildSource,
    shard: ShardSpec,
    out: &Path,
    threshold: Option<f32>,
    p: &dyn BuildProgress,
) -> Result<EmbedReport> {
    use crate::query::BuildSource;
    if out.exists() {
        return Err(Error::InvalidArgument(format!(
            "{}: already exists; twindex writes parts only to new paths",
            out.display()
        )));
    }
    let sw = crate::timing::Stopwatch::start();
    let (mut meta, rows) = match source {
        BuildSource::Text {
            model,
            path,
            columns,
        } => embed_text_file(model.as_deref(), path, columns, shard, p)?,
        BuildSource::Images {
            model,
            corpus,
            label_column: None,
        } => embed_image_corpus(model.as_deref(), corpus, shard, p)?,
        _ => {
            return Err(Error::InvalidArgument(
                "embed takes --text FILE or --corpus NAME".into(),
            ))
        }
    };
    if threshold.is_some() {
        meta.threshold = threshold;
    }
    parquet::write_part(out, &rows, &meta)?;
    let sh = meta
        .shard
        .ok_or_else(|| Error::Msg("embed wrote a part without its shard".into()))?;
    Ok(EmbedReport {
        out: out.display().to_string(),
        shard: format!("{}/{}", sh.index, sh.of),
        first_row: sh.first_row,
        rows: rows.len(),
        total_rows: sh.total_rows,
        dim: rows.dim,
        encoder_sha256: meta.encoder_sha256().to_string(),
        seconds: sw.wall(),
        cpu_seconds: sw.cpu(),
    })
}

/// What [`export_index`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Exported {
    pub rows: usize,
    pub dim: usize,
    pub metric: crate::index::Metric,
    pub encoder_sha256: String,
    /// The duplicate threshold (a distance), when calibrated.
    pub threshold: Option<f32>,
}

/// Export the live items of the index in `index` (ids, labels, sources, vectors, with its
/// encoder and threshold) to `out` in `format` (see [`write_export`]).
pub fn export_index(index: &Path, out: &Path, format: ExportFormat) -> Result<Exported> {
    let idx = Index::open(index)
        .map_err(|e| Error::Msg(format!("opening index {}: {e}", index.display())))?;
    let meta = index_meta(&idx)?;
    let rows = index_rows(&idx)?;
    write_export(out, format, &meta, &rows)?;
    Ok(Exported {
        rows: rows.len(),
        dim: rows.dim,
        encoder_sha256: meta.encoder_sha256().to_string(),
        metric: meta.metric,
        threshold: meta.threshold,
    })
}

/// The two files an `.npy` export writes beside `NAME.npy`: `NAME.items.jsonl` (the items)
/// and `NAME.twindex.json` (the metadata).
pub fn npy_sidecars(npy: &Path) -> (PathBuf, PathBuf) {
    let stem = npy.with_extension("");
    let with = |ext: &str| PathBuf::from(format!("{}.{ext}", stem.display()));
    (with("items.jsonl"), with("twindex.json"))
}

/// Write `rows` and `meta` at `out` in `format`. Nothing is replaced: `out` (and for `npy`,
/// which needs an `out` ending in `.npy`, its sidecars) must not exist.
pub fn write_export(
    out: &Path,
    format: ExportFormat,
    meta: &PartMeta,
    rows: &PartRows,
) -> Result<()> {
    let exists = |p: &Path| -> Result<()> {
        if p.exists() || p.is_symlink() {
            return Err(Error::InvalidArgument(format!(
                "{}: already exists; twindex writes exports and parts only to new paths",
                p.display()
            )));
        }
        Ok(())
    };
    exists(out)?;
    match format {
        ExportFormat::Parquet => parquet::write_part(out, rows, meta),
        ExportFormat::Npy => {
            if out.extension().and_then(|e| e.to_str()) != Some("npy") {
                return Err(Error::InvalidArgument(format!(
                    "--out {}: an npy export is the .npy file itself (its items and metadata go beside it): give a path ending in .npy",
                    out.display()
                )));
            }
            let (items, meta_path) = npy_sidecars(out);
            exists(&items)?;
            exists(&meta_path)?;
            let res = (|| {
                vecio::write_npy(
                    out,
                    &Matrix {
                        rows: rows.len(),
                        cols: rows.dim,
                        data: rows.vectors.clone(),
                    },
                )?;
                let mut lines = String::new();
                for i in 0..rows.len() {
                    lines.push_str(
                        &json!({"id": rows.ids[i], "label": rows.labels[i], "text": rows.texts[i]})
                            .to_string(),
                    );
                    lines.push('\n');
                }
                crate::fsutil::atomic_write(&items, lines.as_bytes())?;
                crate::fsutil::atomic_write_json(&meta_path, meta)
            })();
            if res.is_err() {
                for f in [out, items.as_path(), meta_path.as_path()] {
                    let _ = std::fs::remove_file(f);
                }
            }
            res
        }
    }
}

/// Read an `.npy` export (the `.npy` file, its sidecars beside it) back.
pub fn read_npy_export(npy: &Path) -> Result<(PartMeta, PartRows)> {
    let (items_path, meta_path) = npy_sidecars(npy);
    let meta: PartMeta = crate::fsutil::read_json(&meta_path)?;
    let m = vecio::read_npy(npy)?;
    let items = crate::corpus::text::read_utf8(&items_path)?;
    let mut rows = PartRows {
        dim: m.cols,
        vectors: m.data,
        ..Default::default()
    };
    for (n, l) in items.lines().enumerate() {
        let v: Value = serde_json::from_str(l)
            .map_err(|e| Error::format(&items_path, format!("line {}: {e}", n + 1)))?;
        rows.ids.push(v["id"].as_i64().unwrap_or(-1));
        rows.labels
            .push(v["label"].as_str().unwrap_or("").to_string());
        rows.texts
            .push(v["text"].as_str().unwrap_or("").to_string());
    }
    if rows.len() != m.rows || rows.len() != meta.rows {
        return Err(Error::format(
            npy,
            format!(
                "{} vectors, {} items, metadata says {} rows",
                m.rows,
                rows.len(),
                meta.rows
            ),
        ));
    }
    Ok((meta, rows))
}

/// Files matching `pattern`, sorted: a path whose last component may hold `*` and `?`
/// (so a quoted `'part-*.parquet'` works without a shell). No match is an error.
pub fn expand_glob(pattern: &str) -> Result<Vec<PathBuf>> {
    let p = Path::new(pattern);
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if !name.contains(['*', '?']) {
        return Ok(vec![p.to_path_buf()]);
    }
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
        let e = e.map_err(|e| Error::io(&dir, e))?;
        if let Some(n) = e.file_name().to_str() {
            if wildcard(name.as_bytes(), n.as_bytes()) && !n.ends_with(".json") {
                out.push(dir.join(n));
            }
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "--parts {pattern:?}: no file matches"
        )));
    }
    Ok(out)
}

fn wildcard(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => wildcard(&p[1..], s) || (!s.is_empty() && wildcard(p, &s[1..])),
        (Some(b'?'), Some(_)) => wildcard(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => wildcard(&p[1..], &s[1..]),
        _ => false,
    }
}

/// A checked set of parts: one encoder, dimension and metric; each shard at most once, all of
/// one cut. Returns the first part's metadata (the set's) and, per file, its metadata.
pub fn check_parts(paths: &[PathBuf]) -> Result<(PartMeta, Vec<PartMeta>)> {
    let metas: Vec<PartMeta> = paths
        .iter()
        .map(|p| parquet::read_meta(p))
        .collect::<Result<_>>()?;
    let first = metas
        .first()
        .ok_or_else(|| Error::InvalidArgument("no parts given".into()))?;
    let mut seen: Vec<(usize, &Path)> = Vec::new();
    for (p, m) in paths.iter().zip(&metas) {
        if m.encoder_sha256() != first.encoder_sha256() {
            return Err(Error::InvalidArgument(format!(
                "{}: embedded by another encoder (sha256 {}…) than {} ({}…): parts of different encoders cannot be mixed",
                p.display(),
                m.encoder_sha256().get(..12).unwrap_or(m.encoder_sha256()),
                paths[0].display(),
                first.encoder_sha256().get(..12).unwrap_or(first.encoder_sha256()),
            )));
        }
        if m.dim != first.dim || m.metric != first.metric {
            return Err(Error::InvalidArgument(format!(
                "{}: {} vectors of dimension {}, but {} holds {} of {}",
                p.display(),
                m.metric,
                m.dim,
                paths[0].display(),
                first.metric,
                first.dim
            )));
        }
        if let (Some(s), Some(f)) = (m.shard, first.shard) {
            if s.of != f.of || s.total_rows != f.total_rows {
                return Err(Error::InvalidArgument(format!(
                    "{}: shard {}/{} of {} rows, but {} is a shard of {} of {} rows: parts of different cuts",
                    p.display(),
                    s.index,
                    s.of,
                    s.total_rows,
                    paths[0].display(),
                    f.of,
                    f.total_rows
                )));
            }
            if let Some((_, q)) = seen.iter().find(|(i, _)| *i == s.index) {
                return Err(Error::InvalidArgument(format!(
                    "{} and {} are both shard {}/{}",
                    q.display(),
                    p.display(),
                    s.index,
                    s.of
                )));
            }
            seen.push((s.index, p));
        }
    }
    Ok((first.clone(), metas))
}

/// Build a local index at `out` from parts (a complete set: their ids, in shard order, must
/// be 0, 1, 2, ...): the vectors as embedded, the encoder and threshold the parts record.
/// Image encoders are copied into the index, as `index build` does.
pub fn build_index_from_parts(
    out: &Path,
    paths: &[PathBuf],
    backend: crate::index::Backend,
    hnsw: crate::index::HnswParams,
    progress: &crate::index::Progress,
) -> Result<Index> {
    let (first, metas) = check_parts(paths)?;
    let mut order: Vec<usize> = (0..paths.len()).collect();
    order.sort_by_key(|&i| metas[i].shard.map_or(0, |s| s.index));
    if let Some(s) = first.shard {
        if metas.len() != s.of {
            return Err(Error::InvalidArgument(format!(
                "{} of {} shards given: a local index needs them all",
                metas.len(),
                s.of
            )));
        }
    }
    let mut rows = PartRows {
        dim: first.dim,
        ..Default::default()
    };
    for &i in &order {
        let (_, r) = parquet::read_part(&paths[i])?;
        rows.extend(r);
    }
    if let Some(n) = rows
        .ids
        .iter()
        .enumerate()
        .position(|(n, &id)| id != n as i64)
    {
        return Err(Error::InvalidArgument(format!(
            "row {n} has id {}: a local index numbers its items 0, 1, 2, ... so the parts' ids must too",
            rows.ids[n]
        )));
    }
    let metric = first.metric;
    let cfg = crate::index::IndexConfig {
        metric,
        normalize: first.normalize || metric.normalizes(),
        backend,
        hnsw,
    };
    let items = rows
        .labels
        .into_iter()
        .zip(rows.texts)
        .map(|(label, source)| crate::index::Item {
            label,
            source,
            payload: None,
        })
        .collect();
    Index::check_new_dir(out)?;
    let existed = out.exists();
    let made = (|| -> Result<Index> {
        let record = if let EncoderRecord::Image { path, .. } = &first.encoder {
            let dir = PathBuf::from(path);
            let model = ImageModel::load(&dir)?;
            let sha = ImageModel::content_hash(&dir)?;
            if sha != first.encoder_sha256() {
                return Err(Error::corrupt(
                    &dir,
                    format!(
                        "encoder files have sha256 {sha}, the parts were embedded with {}",
                        first.encoder_sha256()
                    ),
                ));
            }
            std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
            super::encoder::embed_image_encoder(&model, &dir, out)?
        } else {
            first.encoder.clone()
        };
        Index::create(out, cfg, record, rows.dim, &rows.vectors, items, progress)
    })();
    let mut idx = match made {
        Ok(i) => i,
        Err(e) => {
            if !existed {
                let _ = std::fs::remove_dir_all(out);
            }
            return Err(e);
        }
    };
    if let Some(t) = first.threshold {
        idx.set_calibration(Some(crate::index::Calibration {
            threshold: metric.similarity(t),
            precision: f64::NAN,
            recall: f64::NAN,
            f1: f64::NAN,
            method: "from parts".into(),
            extra: json!({ "parts": paths.len() }),
        }))?;
    }
    Ok(idx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_corpus_once_on_block_boundaries() {
        for total in [0usize, 1, 1023, 1024, 1025, 117_659] {
            for of in [1usize, 2, 3, 4, 7] {
                let mut next = 0;
                for index in 0..of {
                    let r = shard_range(total, TEXT_BLOCK, ShardSpec { index, of });
                    assert_eq!(r.start, next, "total {total} shard {index}/{of}");
                    assert!(r.start.is_multiple_of(TEXT_BLOCK) || r.start == total);
                    next = r.end;
                }
                assert_eq!(next, total);
            }
        }
    }

    #[test]
    fn shard_specs_parse_and_bad_ones_are_refused() {
        assert_eq!(
            "2/4".parse::<ShardSpec>().unwrap(),
            ShardSpec { index: 2, of: 4 }
        );
        for bad in ["4/4", "1/0", "x/2", "3", "-1/2"] {
            let e = bad.parse::<ShardSpec>().unwrap_err().to_string();
            assert!(e.contains("--shard") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn globs_match_names() {
        assert!(wildcard(b"part-*.parquet", b"part-0.parquet"));
        assert!(!wildcard(b"part-*.parquet", b"part-0.parquet.json"));
        assert!(wildcard(b"p?rt", b"part"));
        assert!(!wildcard(b"p?rt", b"prt"));
    }
}

//! The engine's front door: a [`Searcher`] is an index directory opened once with its encoder
//! and calibration. Through `&self`, from any number of threads, it embeds (text, image bytes
//! or files, raw vectors, stored ids), searches (k, ef, label filter), decides
//! (`distance <= threshold`, the one rule), identifies and verifies, enrols and deletes
//! (durable through the write-ahead log), stores a calibration, dedups and reports stats. The
//! CLI, the HTTP server and the remote backends are thin front ends over it.
//!
//! The store is the local index directory or, with [`Searcher::open_milvus`], a Milvus
//! collection pushed by `twindex index push` ([`super::milvus`]): the same embedding, the same
//! answers and the same decision rule, with the neighbours found by Milvus.
//!
//! Concurrency: readers share a read lock on the index and never wait for an encode or a disk
//! write; one writer at a time (a mutex) encodes and logs without blocking them, then holds the
//! write lock only to insert into the in-memory graph. A reader always sees whole writes.

use crate::error::{Error, Result};
use crate::index::{is_duplicate, Calibration, Dedup, EncoderRecord, Index, Item};
use crate::model::{ImageModel, TextEncoder};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLockReadGuard};

use super::backend::{Backend, Local};
use super::encoder;
use super::milvus::{MilvusUri, Remote};
use super::verify::{self, Aggregate, Verification};

/// One neighbour of a query (the `query --json` `results` entries of ../shared/CLI.md).
#[derive(Debug, Clone, Serialize)]
pub struct QueryHit {
    pub id: u64,
    pub label: String,
    pub source: String,
    /// Distance under the index's metric (smaller = closer).
    pub distance: f32,
    /// Similarity (greater = closer), from [`crate::index::Metric::similarity`].
    pub similarity: f32,
    /// Whether the neighbour is within the duplicate threshold (`distance <= threshold`);
    /// false when no threshold is known.
    pub duplicate: bool,
}

/// The `k` nearest items of `query`, with the duplicate decision taken at
/// `threshold_distance` when given, else at the index's calibrated threshold.
pub fn search(
    index: &Index,
    query: &[f32],
    k: usize,
    ef: Option<usize>,
    threshold_distance: Option<f32>,
) -> Result<Vec<QueryHit>> {
    search_filtered(index, query, k, ef, threshold_distance, None)
}

fn search_filtered(
    index: &Index,
    query: &[f32],
    k: usize,
    ef: Option<usize>,
    threshold_distance: Option<f32>,
    label: Option<&str>,
) -> Result<Vec<QueryHit>> {
    let thr = threshold_distance.or_else(|| index.threshold_distance());
    let metric = index.metric();
    let keep = |l: &str| Some(l) == label;
    let filter: Option<&(dyn Fn(&str) -> bool + Sync)> = match label {
        Some(_) => Some(&keep),
        None => None,
    };
    index
        .search_where(query, k, ef, filter)?
        .into_iter()
        .map(|h| {
            let v = index.get(h.id)?;
            Ok(QueryHit {
                id: h.id,
                label: v.item.label.clone(),
                source: v.item.source.clone(),
                distance: h.distance,
                similarity: metric.similarity(h.distance),
                duplicate: thr.is_some_and(|t| is_duplicate(h.distance, t)),
            })
        })
        .collect()
}

/// What an index embeds its queries with.
pub enum Encoder {
    /// An image encoder (copied into the index directory).
    Image(Box<ImageModel>),
    /// A text encoder (referenced by path, checked by sha256).
    Text(Box<TextEncoder>),
    /// None: an index of raw vectors, queried by vector or stored id.
    Vectors,
}

impl Encoder {
    /// The encoder the index in `dir` records (`model`: a text model's folder when it moved),
    /// its files checked against the recorded sha256.
    pub fn load(dir: &Path, rec: &EncoderRecord, model: Option<&Path>) -> Result<Encoder> {
        Ok(match rec {
            EncoderRecord::Text { .. } => {
                Encoder::Text(Box::new(encoder::load_text_encoder_from(dir, rec, model)?))
            }
            _ => match encoder::load_index_encoder(dir, rec)? {
                Some(m) => Encoder::Image(Box::new(m)),
                None => Encoder::Vectors,
            },
        })
    }

    /// `"image"`, `"text"` or `"vectors"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Encoder::Image(_) => "image",
            Encoder::Text(_) => "text",
            Encoder::Vectors => "vectors",
        }
    }

    /// Embed queries for the index in `dir` (of dimension `dim`; `stored` gives an item's
    /// stored vector): texts in shared forward passes and images likewise. Errors name the
    /// failing query by position when there are many.
    pub fn embed_many(
        &self,
        dir: &Path,
        dim: usize,
        qs: &[Query],
        stored: &dyn Fn(u64) -> Result<Vec<f32>>,
    ) -> Result<Vec<Vec<f32>>> {
        let mut out: Vec<Option<Vec<f32>>> = vec![None; qs.len()];
        let mut texts: Vec<(usize, &str)> = Vec::new();
        let mut pixels: Vec<u8> = Vec::new();
        let mut image_at: Vec<usize> = Vec::new();
        let mut idx_cache = HashMap::new();
        let (text_enc, image_enc) = match self {
            Encoder::Text(t) => (Some(&**t), None),
            Encoder::Image(m) => (None, Some(&**m)),
            Encoder::Vectors => (None, None),
        };
        let at = |i: usize, e: Error| -> Error {
            if qs.len() == 1 {
                e
            } else {
                Error::InvalidArgument(format!("query {}: {e}", i + 1))
            }
        };
        for (i, q) in qs.iter().enumerate() {
            match *q {
                Query::Text(t) => {
                    if t.trim().is_empty() {
                        return Err(at(
                            i,
                            Error::Empty("the query text is empty (or only spaces)".into()),
                        ));
                    }
                    if text_enc.is_none() {
                        return Err(at(i, self.wrong_kind(dir, "a text")));
                    }
                    texts.push((i, t));
                }
                Query::ImageBytes(b, name) => {
                    let m = image_enc.ok_or_else(|| at(i, self.wrong_kind(dir, "an image")))?;
                    let px = m.config.preprocess.load_query_bytes(b, Path::new(name));
                    pixels.extend(px.map_err(|e| at(i, e))?);
                    image_at.push(i);
                }
                Query::Image(spec) => {
                    let m = image_enc.ok_or_else(|| at(i, self.wrong_kind(dir, "an image")))?;
                    let px = load_image_spec(m, spec, &mut idx_cache);
                    pixels.extend(px.map_err(|e| at(i, e))?);
                    image_at.push(i);
                }
                Query::Vector(v) => {
                    if v.len() != dim {
                        return Err(at(i, Error::dim(dim, v.len(), "query vector")));
                    }
                    if let Some(j) = v.iter().position(|x| !x.is_finite()) {
                        return Err(at(
                            i,
                            Error::InvalidArgument(format!(
                                "query vector: value {j} is {} (must be finite)",
                                v[j]
                            )),
                        ));
                    }
                    out[i] = Some(v.to_vec());
                }
                Query::Id(id) => {
                    out[i] = Some(stored(id).map_err(|e| at(i, e))?);
                }
            }
        }
        if let (Some(enc), false) = (text_enc, texts.is_empty()) {
            let strs: Vec<&str> = texts.iter().map(|(_, t)| *t).collect();
            let v = enc.encode(&strs, TEXT_BATCH)?;
            for ((i, _), row) in texts.iter().zip(v.chunks(enc.dim())) {
                out[*i] = Some(row.to_vec());
            }
        }
        if let (Some(m), false) = (image_enc, image_at.is_empty()) {
            let v = m.embed_pixels(&pixels, image_at.len(), IMAGE_BATCH)?;
            for (&i, row) in image_at.iter().zip(v.chunks(m.config.dim)) {
                out[i] = Some(row.to_vec());
            }
        }
        out.into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::Empty("a query was left unembedded".into()))
    }

    fn wrong_kind(&self, dir: &Path, what: &str) -> Error {
        let hint = match self {
            Encoder::Text(_) => "it is a text index: query it with a text, a vector or an id",
            Encoder::Image(_) => "it is an image index: query it with an image, a vector or an id",
            Encoder::Vectors => {
                "it is an index of raw vectors (no encoder): query it with a vector or an id"
            }
        };
        Error::InvalidArgument(format!(
            "{}: {what} cannot be embedded here; {hint}",
            dir.display()
        ))
    }
}

/// Something to embed or look up.
#[derive(Debug, Clone, Copy)]
pub enum Query<'a> {
    /// A text (text indexes).
    Text(&'a str),
    /// An encoded image (PNG, PGM, JPEG bytes) and what to call it in errors.
    ImageBytes(&'a [u8], &'a str),
    /// An image file, or an item of an IDX images file as `FILE:N`.
    Image(&'a str),
    /// A raw vector of the index's dimension.
    Vector(&'a [f32]),
    /// The stored vector of a live item.
    Id(u64),
}

impl Query<'_> {
    /// What to call the query in output (texts shortened and control characters escaped).
    pub fn describe(&self) -> String {
        match self {
            Query::Text(t) => shorten(t, 80),
            Query::ImageBytes(_, name) | Query::Image(name) => shorten(name, 200),
            Query::Vector(v) => format!("vector of {}", v.len()),
            Query::Id(id) => format!("item {id}"),
        }
    }
}

/// `s` with control characters escaped, cut to `max` characters with an ellipsis.
pub fn shorten(s: &str, max: usize) -> String {
    let mut out = String::new();
    for (n, c) in s.chars().enumerate() {
        if n == max {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// How to search.
#[derive(Debug, Clone, Default)]
pub struct SearchOptions {
    /// Neighbours to return (0 means 10).
    pub k: usize,
    /// Search breadth; default the index's `ef_search`. Larger: better recall, slower.
    pub ef: Option<usize>,
    /// Duplicate threshold as a distance; default the index's calibrated one.
    pub threshold: Option<f32>,
    /// Only items with this label.
    pub label: Option<String>,
}

/// The answer to one query.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    /// The neighbours, nearest first.
    pub results: Vec<QueryHit>,
    /// The threshold (a distance) the decisions were taken at; `None`: no threshold known, so
    /// no neighbour is called a duplicate.
    pub threshold: Option<f32>,
    /// For labelled indexes: the nearest neighbour's label when it is a duplicate, else
    /// `"unknown"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

/// Where a face is in a query photo: dlib's inclusive box in photo pixels and the
/// detector's score.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct FaceBox {
    /// `[left, top, right, bottom]`.
    #[serde(rename = "box")]
    pub rect: [i64; 4],
    /// The detector's score (greater: surer).
    pub score: f32,
}

impl FaceBox {
    fn of(c: &crate::model::dlib_faces::FaceChip) -> FaceBox {
        let r = c.rect;
        FaceBox {
            rect: [r.left, r.top, r.right, r.bottom],
            score: c.score,
        }
    }
}

impl std::fmt::Display for FaceBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [l, t, r, b] = self.rect;
        write!(f, "({l}, {t}, {r}, {b}), detection score {:.3}", self.score)
    }
}

/// A face found in a photo and its embedding.
pub type EmbeddedFace = (FaceBox, Vec<f32>);

/// One face of a query photo and the index's answer for it.
#[derive(Debug, Clone, Serialize)]
pub struct FaceAnswer {
    #[serde(flatten)]
    pub face: FaceBox,
    #[serde(flatten)]
    pub answer: Answer,
}

/// What a query gets back: an answer, or, from an index whose encoder finds faces, an answer
/// for each face of a photo.
#[derive(Debug, Clone)]
pub enum Reply {
    One(Answer),
    Faces(Vec<FaceAnswer>),
}

/// One face of a photo checked against a claimed identity.
#[derive(Debug, Clone, Serialize)]
pub struct FaceVerification {
    #[serde(flatten)]
    pub face: FaceBox,
    #[serde(flatten)]
    pub verification: Verification,
}

/// A new item for [`Searcher::add`].
#[derive(Debug, Clone)]
pub struct NewItem<'a> {
    pub content: Query<'a>,
    pub label: String,
    /// Where it came from; default: the text itself, the image's name, or `vector`.
    pub source: Option<String>,
}

/// Figures about an open index (`GET /v1/indexes/{name}`, `index stats`).
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub dir: String,
    pub items: usize,
    pub slots: usize,
    pub dim: usize,
    pub metric: crate::index::Metric,
    pub backend: String,
    /// What the graph walk scores (`none`, `sq8`); `none` for other engines.
    pub quantize: String,
    /// Quantized graphs: candidates re-scored on the f32 vectors.
    pub rerank: Option<usize>,
    pub encoder: String,
    /// The calibrated threshold as a distance.
    pub threshold: Option<f32>,
    pub generation: u64,
    pub log_bytes: u64,
    pub log_records: u64,
    pub memory_bytes: usize,
}

/// How to open a [`Searcher`].
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Take the writer lock at open (a server that enrols); otherwise the searcher is
    /// read-only and a write fails.
    pub writable: bool,
    /// Use the text model in this folder instead of the path the index recorded (its files
    /// must still have the recorded sha256): for an index whose model folder moved.
    pub model: Option<PathBuf>,
}

/// An index opened with its encoder and calibration. See the module docs.
pub struct Searcher {
    dir: PathBuf,
    encoder: Encoder,
    /// Where the vectors are: the local index or a Milvus collection.
    store: Box<dyn Backend>,
    writer: Mutex<()>,
    writable: bool,
}

impl std::fmt::Debug for Searcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Searcher")
            .field("dir", &self.dir)
            .field("encoder", &self.encoder.kind())
            .finish()
    }
}

/// Texts encoded in one forward pass.
const TEXT_BATCH: usize = 32;
/// Images embedded in one forward pass.
const IMAGE_BATCH: usize = 256;

impl Searcher {
    /// Open `dir` and the encoder its manifest names.
    pub fn open(dir: &Path, opts: &OpenOptions) -> Result<Searcher> {
        let index = if opts.writable {
            Index::open_writer(dir)?
        } else {
            Index::open(dir)?
        };
        let encoder = Encoder::load(dir, &index.manifest().encoder, opts.model.as_deref())?;
        Ok(Searcher {
            dir: dir.to_path_buf(),
            encoder,
            store: Box::new(Local::new(index)),
            writer: Mutex::new(()),
            writable: opts.writable,
        })
    }

    /// Open a Milvus collection made by `twindex index push`, with the encoder its description
    /// records (`opts.model` replaces the recorded folder; the files must have the recorded
    /// sha256 either way). `opts.writable` allows adds and deletes.
    pub fn open_milvus(uri: &MilvusUri, collection: &str, opts: &OpenOptions) -> Result<Searcher> {
        let remote = Remote::open(uri, collection)?;
        let name = PathBuf::from(remote.uri());
        let rec = &remote.meta().encoder;
        let encoder = load_recorded_encoder(&name, rec, opts.model.as_deref())?;
        let dim = remote.meta().dim;
        let got = match &encoder {
            Encoder::Text(t) => Some(t.dim()),
            Encoder::Image(m) => Some(m.config.dim),
            Encoder::Vectors => None,
        };
        if let Some(got) = got.filter(|&g| g != dim) {
            return Err(Error::dim(
                dim,
                got,
                format!("the encoder of {}", name.display()),
            ));
        }
        Ok(Searcher {
            dir: name,
            encoder,
            store: Box::new(remote),
            writer: Mutex::new(()),
            writable: opts.writable,
        })
    }

    /// The index directory (for a Milvus collection, its `milvus://HOST:PORT/COLLECTION`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the vectors live in Milvus.
    pub fn is_remote(&self) -> bool {
        self.store.local().is_none()
    }

    /// The encoder.
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// A read view of the local index (a consistent snapshot for as long as it is held;
    /// writers wait for it to be dropped before their in-memory step). An error for a Milvus
    /// collection, which has no local index.
    pub fn index(&self) -> Result<RwLockReadGuard<'_, Index>> {
        Ok(self.local("this operation")?.read())
    }

    /// Copy a local index's mapped graph into memory (see [`Index::load_graph`]): for a
    /// server. Nothing to do for Milvus.
    pub fn load_graph(&self) -> Result<()> {
        match self.store.local() {
            Some(l) => l.write().load_graph(),
            None => Ok(()),
        }
    }

    /// The local index, or an error naming `what` needs it.
    fn local(&self, what: &str) -> Result<&Local> {
        self.store.local().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{}: {what} needs a local index; a Milvus collection does it in Milvus itself",
                self.dir.display()
            ))
        })
    }

    /// The index's dimension.
    pub fn dim(&self) -> usize {
        self.store.dim()
    }

    /// Live items (for a Milvus collection, its row count; 0 when Milvus does not answer).
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// Whether there are no live items.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The metric.
    pub fn metric(&self) -> crate::index::Metric {
        self.store.metric()
    }

    /// The calibrated threshold as a distance.
    pub fn threshold(&self) -> Option<f32> {
        self.store.threshold()
    }

    /// Embed one query.
    pub fn embed(&self, q: &Query) -> Result<Vec<f32>> {
        self.embed_many(std::slice::from_ref(q))?
            .pop()
            .ok_or_else(|| Error::Empty("no embedding for the query".into()))
    }

    /// Embed many queries, texts in shared forward passes and images likewise (what a server's
    /// batching queue calls). Errors name the failing query by position when there are many.
    pub fn embed_many(&self, qs: &[Query]) -> Result<Vec<Vec<f32>>> {
        self.encoder.embed_many(&self.dir, self.dim(), qs, &|id| {
            self.store.stored_vector(id)
        })
    }

    /// The neighbours of an embedded query, with decisions.
    pub fn search_vector(&self, v: &[f32], o: &SearchOptions) -> Result<Answer> {
        let mut a = self.store.answers(std::slice::from_ref(&v.to_vec()), o)?;
        a.pop()
            .ok_or_else(|| Error::Empty("the backend gave no answer".into()))
    }

    /// The neighbours of many embedded queries (searched in parallel under one snapshot).
    pub fn search_vectors(&self, vs: &[Vec<f32>], o: &SearchOptions) -> Result<Vec<Answer>> {
        self.store.answers(vs, o)
    }

    /// Embed and search one query.
    pub fn query(&self, q: &Query, o: &SearchOptions) -> Result<Answer> {
        let v = self.embed(q)?;
        self.search_vector(&v, o)
    }

    /// Embed many queries together, then search each (in parallel) under one snapshot.
    pub fn query_many(&self, qs: &[Query], o: &SearchOptions) -> Result<Vec<Answer>> {
        let vs = self.embed_many(qs)?;
        self.store.answers(&vs, o)
    }

    /// Whether the index's encoder finds faces in photos: an image query then has one answer
    /// per face ([`Searcher::query_faces`]), and an enrolment photo must show exactly one.
    pub fn detects_faces(&self) -> bool {
        matches!(&self.encoder, Encoder::Image(m) if m.config.preprocess.detects_faces())
    }

    /// Every face of a photo query (an image file or its bytes) with its embedding, best
    /// detection first; `None` when the encoder does not find faces or `q` is no photo.
    pub fn embed_faces(&self, q: &Query) -> Result<Option<Vec<EmbeddedFace>>> {
        let Encoder::Image(m) = &self.encoder else {
            return Ok(None);
        };
        let p = &m.config.preprocess;
        if !p.detects_faces() {
            return Ok(None);
        }
        let read;
        let (bytes, name): (&[u8], &str) = match *q {
            Query::ImageBytes(b, name) => (b, name),
            Query::Image(file) => {
                read = crate::fsutil::read_regular(Path::new(file))?;
                (&read, file)
            }
            _ => return Ok(None),
        };
        let Some(found) = p.photo_faces(bytes, Path::new(name))? else {
            return Ok(None);
        };
        let pixels: Vec<u8> = found.iter().flat_map(|f| f.chip.iter().copied()).collect();
        let v = m.embed_pixels(&pixels, found.len(), IMAGE_BATCH)?;
        Ok(Some(
            found
                .iter()
                .zip(v.chunks(m.config.dim))
                .map(|(f, e)| (FaceBox::of(f), e.to_vec()))
                .collect(),
        ))
    }

    /// One answer per face of a photo query (none when no face is found); `None` when the
    /// encoder does not find faces or `q` is no photo (use [`Searcher::query`]).
    pub fn query_faces(&self, q: &Query, o: &SearchOptions) -> Result<Option<Vec<FaceAnswer>>> {
        let Some(faces) = self.embed_faces(q)? else {
            return Ok(None);
        };
        let (boxes, vs): (Vec<FaceBox>, Vec<Vec<f32>>) = faces.into_iter().unzip();
        let answers = if vs.is_empty() {
            Vec::new()
        } else {
            self.store.answers(&vs, o)?
        };
        Ok(Some(
            boxes
                .into_iter()
                .zip(answers)
                .map(|(face, answer)| FaceAnswer { face, answer })
                .collect(),
        ))
    }

    /// Answer many queries: as [`Searcher::query_many`], except that a photo sent to an index
    /// whose encoder finds faces gets an answer for each face ([`Searcher::query_faces`]).
    pub fn replies(&self, qs: &[Query], o: &SearchOptions) -> Result<Vec<Reply>> {
        if !self.detects_faces() {
            return Ok(self
                .query_many(qs, o)?
                .into_iter()
                .map(Reply::One)
                .collect());
        }
        qs.iter()
            .map(|q| match self.query_faces(q, o)? {
                Some(faces) => Ok(Reply::Faces(faces)),
                None => self.query(q, o).map(Reply::One),
            })
            .collect()
    }

    /// [`Searcher::verify`] for each face of a photo query; `None` as [`Searcher::query_faces`].
    pub fn verify_faces(
        &self,
        q: &Query,
        label: &str,
        threshold: Option<f32>,
        aggregate: Aggregate,
    ) -> Result<Option<Vec<FaceVerification>>> {
        let Some(faces) = self.embed_faces(q)? else {
            return Ok(None);
        };
        faces
            .into_iter()
            .map(|(face, v)| {
                Ok(FaceVerification {
                    face,
                    verification: self.verify_vector(&v, label, threshold, aggregate)?,
                })
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// Accept or reject the claim that `q` is the enrolled `label` (see [`verify::verify`]).
    pub fn verify(
        &self,
        q: &Query,
        label: &str,
        threshold: Option<f32>,
        aggregate: Aggregate,
    ) -> Result<Verification> {
        let v = self.embed(q)?;
        self.verify_vector(&v, label, threshold, aggregate)
    }

    /// [`Searcher::verify`] for an embedded query.
    pub fn verify_vector(
        &self,
        v: &[f32],
        label: &str,
        threshold: Option<f32>,
        aggregate: Aggregate,
    ) -> Result<Verification> {
        self.store.verify(&self.dir, v, label, threshold, aggregate)
    }

    /// Enrol items: embedded with the index's encoder (no lock held), then logged durably and
    /// inserted. Returns their ids once the add is durable.
    pub fn add(&self, items: &[NewItem]) -> Result<Vec<u64>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let qs: Vec<Query> = items.iter().map(|i| i.content).collect();
        let vectors: Vec<f32> = self.embed_many(&qs)?.concat();
        let stored: Vec<Item> = items
            .iter()
            .map(|i| Item {
                label: i.label.clone(),
                source: i.source.clone().unwrap_or_else(|| match i.content {
                    Query::Text(t) => t.to_string(),
                    Query::ImageBytes(_, n) | Query::Image(n) => n.to_string(),
                    Query::Vector(_) => "vector".into(),
                    Query::Id(id) => format!("copy of item {id}"),
                }),
                payload: None,
            })
            .collect();
        self.add_vectors(&vectors, stored)
    }

    /// Enrol items with their vectors (row-major, the index's dimension).
    pub fn add_vectors(&self, vectors: &[f32], items: Vec<Item>) -> Result<Vec<u64>> {
        self.check_writable()?;
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        self.store.add_vectors(vectors, items)
    }

    /// Delete items by id (all live and distinct, or nothing is deleted). Durable on return.
    pub fn delete(&self, ids: &[u64]) -> Result<()> {
        self.check_writable()?;
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        self.store.delete(ids)
    }

    /// Store a calibration (a checkpoint).
    pub fn set_calibration(&self, c: Option<Calibration>) -> Result<()> {
        self.check_writable()?;
        let local = self.local("storing a calibration")?;
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        local.write().set_calibration(c)
    }

    /// Distances between the two sides of labelled pairs, embedded with the index's encoder
    /// (what calibration sweeps over).
    pub fn pair_distances(&self, pairs: &[(Query, Query)]) -> Result<Vec<f32>> {
        // Each distinct text, file or id is embedded once, however many pairs it is in (a
        // photo through the face detector costs about a second).
        let mut at: HashMap<String, usize> = HashMap::new();
        let mut qs: Vec<Query> = Vec::new();
        let mut sides: Vec<usize> = Vec::with_capacity(pairs.len() * 2);
        for q in pairs.iter().flat_map(|(a, b)| [a, b]) {
            let key = match *q {
                Query::Text(t) => Some(format!("t{t}")),
                Query::Image(f) => Some(format!("f{f}")),
                Query::Id(id) => Some(format!("#{id}")),
                Query::ImageBytes(..) | Query::Vector(_) => None,
            };
            let i = match key.as_ref().and_then(|k| at.get(k)) {
                Some(&i) => i,
                None => {
                    qs.push(*q);
                    if let Some(k) = key {
                        at.insert(k, qs.len() - 1);
                    }
                    qs.len() - 1
                }
            };
            sides.push(i);
        }
        let mut vs = Vec::with_capacity(qs.len());
        for chunk in qs.chunks(2048) {
            vs.extend(self.embed_many(chunk)?);
        }
        let metric = self.metric();
        Ok(sides
            .chunks(2)
            .map(|p| metric.distance(&vs[p[0]], &vs[p[1]]))
            .collect())
    }

    /// Write the log into the next generation (readers keep searching meanwhile).
    pub fn checkpoint(&self) -> Result<()> {
        self.check_writable()?;
        let local = self.local("a checkpoint")?;
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        local.checkpoint()
    }

    /// Rebuild without deleted items (readers keep searching the old graph meanwhile).
    pub fn compact(&self) -> Result<()> {
        self.check_writable()?;
        let local = self.local("compaction")?;
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let g = local.read().write_compacted(&|_| {})?;
        local.write().install(g);
        Ok(())
    }

    /// All pairs of items within `threshold` (default: the calibrated one) and their clusters.
    pub fn dedup(&self, threshold: Option<f32>) -> Result<Dedup> {
        let idx = self.index()?;
        let t = threshold
            .or_else(|| idx.threshold_distance())
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "{}: no calibrated threshold; pass one or calibrate the index",
                    self.dir.display()
                ))
            })?;
        idx.dedup(t)
    }

    /// Figures about the index: constant time (a server's `GET /v1/indexes` calls it).
    pub fn stats(&self) -> Stats {
        self.store
            .stats(&self.dir.display().to_string(), self.encoder.kind())
    }

    /// The distinct labels of the live items, sorted (a scan of every item; local indexes).
    pub fn labels(&self) -> Result<Vec<String>> {
        Ok(self.index()?.labels())
    }

    /// Checkpoint what the log holds (when writable) and release the index.
    pub fn close(self) -> Result<()> {
        self.store.close(self.writable)
    }

    fn check_writable(&self) -> Result<()> {
        if !self.writable {
            return Err(Error::InvalidArgument(format!(
                "{}: opened read-only; open it writable to add, delete or calibrate",
                self.dir.display()
            )));
        }
        Ok(())
    }
}

/// The encoder a remote collection's description records: a text model by path, an image
/// model's folder by absolute path; `model` replaces the folder (same sha256 required).
fn load_recorded_encoder(
    name: &Path,
    rec: &EncoderRecord,
    model: Option<&Path>,
) -> Result<Encoder> {
    match rec {
        EncoderRecord::Text { .. } => Ok(Encoder::Text(Box::new(encoder::load_text_encoder_from(
            name, rec, model,
        )?))),
        _ => {
            let mut rec = rec.clone();
            if let (Some(m), EncoderRecord::Image { path, .. }) = (model, &mut rec) {
                *path = m.display().to_string();
            }
            Ok(match encoder::load_index_encoder(Path::new(""), &rec)? {
                Some(m) => Encoder::Image(Box::new(m)),
                None => Encoder::Vectors,
            })
        }
    }
}

/// Search `idx` for `v` and decide.
pub(super) fn answer(idx: &Index, v: &[f32], o: &SearchOptions) -> Result<Answer> {
    check_threshold(o, idx.metric())?;
    let k = if o.k == 0 { 10 } else { o.k };
    let results = search_filtered(idx, v, k, o.ef, o.threshold, o.label.as_deref())?;
    let threshold = o.threshold.or_else(|| idx.threshold_distance());
    Ok(decided(results, threshold))
}

/// A threshold given with the query must be a valid distance for `metric`.
pub(super) fn check_threshold(o: &SearchOptions, metric: crate::index::Metric) -> Result<()> {
    match o.threshold {
        Some(t) => metric.check_threshold(t).map(|_| ()),
        None => Ok(()),
    }
}

/// The answer for hits already decided at `threshold`, with the identity for labelled ones.
pub(super) fn decided(results: Vec<QueryHit>, threshold: Option<f32>) -> Answer {
    let labelled = results.iter().any(|h| !h.label.is_empty());
    let identity = labelled.then(|| verify::identify(&results));
    Answer {
        results,
        threshold,
        identity,
    }
}

/// Pixels of an image file, or of item N of an IDX images file given as `FILE:N` (each IDX file
/// decompressed once per cache).
pub fn load_image_spec(
    model: &ImageModel,
    spec: &str,
    cache: &mut HashMap<PathBuf, crate::corpus::idx::IdxArray>,
) -> Result<Vec<u8>> {
    let p = &model.config.preprocess;
    if let Some((file, n)) = spec.rsplit_once(':') {
        if let Ok(n) = n.parse::<usize>() {
            let path = Path::new(file);
            if !cache.contains_key(path) {
                cache.insert(path.to_path_buf(), crate::corpus::idx::read_images(path)?);
            }
            let a = &cache[path];
            if n >= a.dims[0] {
                return Err(Error::InvalidArgument(format!(
                    "{file}: item {n} requested, the file holds {} images",
                    a.dims[0]
                )));
            }
            if (a.dims[1], a.dims[2]) != (p.height, p.width) {
                return Err(Error::InvalidArgument(format!(
                    "{file}: images are {}x{}, the encoder expects {}x{}",
                    a.dims[1], a.dims[2], p.height, p.width
                )));
            }
            let per = p.height * p.width;
            return Ok(a.data[n * per..(n + 1) * per].to_vec());
        }
    }
    p.load_query_file(Path::new(spec))
}

//! Building an index directory: from an image corpus, texts, raw vectors or embedding parts.
//! Encoding in chunks, the graph, the encoder record and calibration, clean-up when a build
//! fails (nothing half-written is left behind), and the build record (`build.json`).

use crate::corpus::text::{read_texts, TextColumns};
use crate::corpus::{resolve, ImageSet};
use crate::error::{Error, Result};
use crate::index::{
    Backend, Calibration, EncoderRecord, HnswParams, Index, IndexConfig, Item, Metric,
};
use crate::model::{ImageModel, TextEncoder};
use crate::query::encoder;
use crate::timing::Stopwatch;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The build record's file name inside an index directory.
pub const BUILD_FILE: &str = "build.json";

/// Build time of an index, written beside its manifest by `index build` (`build.json`).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildRecord {
    /// The whole build: reading, encoding, graph, writing.
    pub build_seconds: f64,
    pub build_cpu_seconds: f64,
    pub threads: usize,
    /// The graph (and writing it) alone.
    #[serde(default)]
    pub graph_seconds: f64,
    #[serde(default)]
    pub graph_cpu_seconds: f64,
}

impl BuildRecord {
    /// The record of the index in `index` (zeros when absent or unreadable).
    pub fn read(index: &Path) -> BuildRecord {
        crate::fsutil::read_json(&index.join(BUILD_FILE)).unwrap_or_default()
    }

    /// Write it into the index directory `index` (atomically).
    pub fn write(&self, index: &Path) -> Result<()> {
        crate::fsutil::atomic_write_json(&index.join(BUILD_FILE), self)
    }
}

/// Where a long build reports: stages with a length (a progress bar) and one-line notes.
pub trait BuildProgress: Sync {
    /// A new stage (`"encoding"`, `"embedding"`, `"indexing"`) of `len` steps (0: unknown).
    fn stage(&self, name: &str, len: u64);
    /// Steps done in the current stage.
    fn advance(&self, done: u64);
    /// The current stage is over.
    fn done(&self);
    /// A line for the user (what was read, how long it took).
    fn note(&self, msg: &str);
}

/// Reports nothing.
pub struct Silent;

impl BuildProgress for Silent {
    fn stage(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn done(&self) {}
    fn note(&self, _: &str) {}
}

/// What an index is built from.
#[derive(Debug, Clone)]
pub enum BuildSource {
    /// Embedding parts (`embed` / `export` Parquet files): their vectors, encoder and threshold
    /// as they are.
    Parts(Vec<PathBuf>),
    /// Texts (lines, or a TSV's columns) encoded with a text model (default: MiniLM).
    Text {
        model: Option<PathBuf>,
        path: PathBuf,
        columns: TextColumns,
    },
    /// Raw vectors (`.npy`, `.fvecs`, or an IDX images file) under `metric`.
    Vectors { path: PathBuf, metric: Metric },
    /// An image corpus (`mnist`, an IDX folder, or an image folder) embedded with an image
    /// encoder (default: the shipped MNIST encoder; image folders need one).
    Images {
        model: Option<PathBuf>,
        corpus: String,
        label_column: Option<String>,
    },
}

/// A built index with its build record and size on disk.
pub struct Built {
    pub index: Index,
    pub record: BuildRecord,
    pub bytes: u64,
}

impl Built {
    /// One line for a person: where, how many, how long, how big.
    pub fn summary(&self, out: &Path) -> String {
        let (idx, r) = (&self.index, &self.record);
        format!(
            "built {} ({} items, dim {}, {}) in {:.1} s ({:.1} CPU-s), {:.1} MB on disk",
            out.display(),
            idx.len(),
            idx.dim(),
            idx.manifest().backend.name(),
            r.build_seconds,
            r.build_cpu_seconds,
            self.bytes as f64 / 1e6
        )
    }

    /// The report of `index build --json`.
    pub fn to_json(&self, out: &Path) -> serde_json::Value {
        let (idx, r) = (&self.index, &self.record);
        serde_json::json!({
            "index": out.display().to_string(),
            "items": idx.len(),
            "dim": idx.dim(),
            "metric": idx.metric().name(),
            "backend": idx.manifest().backend.name(),
            "build_seconds": r.build_seconds,
            "build_cpu_seconds": r.build_cpu_seconds,
            "graph_seconds": r.graph_seconds,
            "graph_cpu_seconds": r.graph_cpu_seconds,
            "index_bytes": self.bytes,
        })
    }
}

fn ctx(what: String) -> impl FnOnce(Error) -> Error {
    move |e| Error::Msg(format!("{what}: {e}"))
}

/// Build a new index in `out` from `source`, write its `build.json`, and return it.
pub fn build_index(
    out: &Path,
    source: &BuildSource,
    backend: Backend,
    hnsw: HnswParams,
    p: &dyn BuildProgress,
) -> Result<Built> {
    let total = Stopwatch::start();
    let (index, graph_wall, graph_cpu) = match source {
        BuildSource::Parts(paths) => {
            p.stage("indexing", 0);
            let sw = Stopwatch::start();
            let idx =
                crate::query::parts::build_index_from_parts(out, paths, backend, hnsw, &|n| {
                    p.advance(n as u64)
                })?;
            p.done();
            (idx, sw.wall(), sw.cpu())
        }
        BuildSource::Text {
            model,
            path,
            columns,
        } => {
            let model_dir = match model {
                Some(m) => m.clone(),
                None => resolve::default_text_model()?,
            };
            let enc = TextEncoder::load(&model_dir)
                .map_err(ctx(format!("loading text encoder {}", model_dir.display())))?;
            let rows = read_texts(path, columns)?;
            let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
            let sw = Stopwatch::start();
            let vectors = encode_texts(&enc, &texts, p)?;
            p.note(&format!(
                "encoded {} texts with {} in {:.1} s ({:.1} CPU-s)",
                texts.len(),
                model_dir.display(),
                sw.wall(),
                sw.cpu()
            ));
            let items = rows
                .into_iter()
                .map(|r| Item {
                    label: r.label,
                    source: r.id.unwrap_or(r.text),
                    payload: None,
                })
                .collect();
            let cfg = IndexConfig {
                metric: Metric::Cosine,
                normalize: true,
                backend,
                hnsw,
            };
            let rec = encoder::text_record(&model_dir, &enc)?;
            create_index(out, cfg, enc.dim(), &vectors, items, |_| Ok(rec), p)?
        }
        BuildSource::Vectors { path, metric } => {
            let (rows, dim, data) = read_vectors(path)?;
            if rows == 0 {
                return Err(Error::Msg(format!(
                    "{}: no vectors to index",
                    path.display()
                )));
            }
            p.note(&format!(
                "indexing {rows} vectors of dimension {dim} from {}",
                path.display()
            ));
            let items = (0..rows)
                .map(|i| Item {
                    label: String::new(),
                    source: format!("{}#{i}", path.display()),
                    payload: None,
                })
                .collect();
            let cfg = IndexConfig {
                metric: *metric,
                normalize: false,
                backend,
                hnsw,
            };
            create_index(
                out,
                cfg,
                dim,
                &data,
                items,
                |_| Ok(encoder::vectors_record(path, dim)),
                p,
            )?
        }
        BuildSource::Images {
            model,
            corpus,
            label_column,
        } => {
            let folder = resolve::is_image_folder(corpus);
            let model_dir = match model {
                Some(m) => m.clone(),
                None if folder => return Err(Error::Msg(format!(
                    "indexing the image folder {corpus} needs --model DIR: an encoder trained on such images (e.g. corpora/encoders/orl-faces/fold-0)"
                ))),
                None => resolve::default_image_model()?,
            };
            let model = ImageModel::load(&model_dir)
                .map_err(ctx(format!("loading encoder {}", model_dir.display())))?;
            let c = load_image_corpus(&model, corpus, label_column.as_deref())?;
            let sw = Stopwatch::start();
            let vectors = embed_images(&model, &c.set, p)?;
            p.note(&match c.classes {
                Some(classes) => format!(
                    "embedded {} images of {classes} labels from {corpus} with {}",
                    c.set.n,
                    model_dir.display()
                ),
                None => format!(
                    "embedded {} images with {} in {:.1} s ({:.0} images/s)",
                    c.set.n,
                    model_dir.display(),
                    sw.wall(),
                    c.set.n as f64 / sw.wall()
                ),
            });
            let items = c.items;
            let cfg = IndexConfig {
                metric: Metric::L2,
                normalize: false,
                backend,
                hnsw,
            };
            index_embedded_images(out, cfg, &model, &model_dir, &vectors, items, p)?
        }
    };
    let record = BuildRecord {
        build_seconds: total.wall(),
        build_cpu_seconds: total.cpu(),
        threads: rayon::current_num_threads(),
        graph_seconds: graph_wall,
        graph_cpu_seconds: graph_cpu,
    };
    record.write(out)?;
    Ok(Built {
        index,
        record,
        bytes: dir_bytes(out),
    })
}

/// An image corpus read for an encoder: its images (preprocessed as the encoder expects) and
/// their items.
pub struct ImageCorpus {
    pub set: ImageSet,
    /// Labelled with the folder's labels, or the encoder's class names for an IDX corpus;
    /// sources are the image files, or `IMAGES_FILE:N`.
    pub items: Vec<Item>,
    /// A folder of images: its number of labels (`None` for an IDX corpus).
    pub classes: Option<usize>,
}

/// Read the corpus named `corpus` for `model`: a folder of images (labels from sub-folders or
/// the `label_column` of labels.tsv, default `label`), else an IDX corpus (`mnist` or a
/// folder), whose training split is taken.
pub fn load_image_corpus(
    model: &ImageModel,
    corpus: &str,
    label_column: Option<&str>,
) -> Result<ImageCorpus> {
    if resolve::is_image_folder(corpus) {
        let f = crate::corpus::folder::ImageFolder::scan(
            Path::new(corpus),
            label_column.unwrap_or("label"),
        )?;
        let set = crate::model::image::load_set(&f.items, &f.classes, &model.config.preprocess)?;
        let items = f
            .items
            .iter()
            .map(|it| Item {
                label: it.label.clone(),
                source: it.path.display().to_string(),
                payload: None,
            })
            .collect();
        return Ok(ImageCorpus {
            set,
            items,
            classes: Some(f.classes.len()),
        });
    }
    let (dir, data) = resolve::load_corpus(corpus)?;
    let items = idx_items(model, &dir, &data.train);
    Ok(ImageCorpus {
        set: data.train,
        items,
        classes: None,
    })
}

/// Index image embeddings `vectors` (of `model`, loaded from `model_dir`) in `out`: the
/// encoder is copied into the index and the model's threshold becomes its calibration.
/// Returns the index and the graph's wall and CPU seconds.
pub fn index_embedded_images(
    out: &Path,
    config: IndexConfig,
    model: &ImageModel,
    model_dir: &Path,
    vectors: &[f32],
    items: Vec<Item>,
    p: &dyn BuildProgress,
) -> Result<(Index, f64, f64)> {
    let (mut idx, w, c) = create_index(
        out,
        config,
        model.config.dim,
        vectors,
        items,
        |o| encoder::embed_image_encoder(model, model_dir, o),
        p,
    )?;
    idx.set_calibration(Some(encoder_calibration(model)))?;
    Ok((idx, w, c))
}

/// Create an index of `vectors` with `items` in `out`, removing the directory again on
/// failure when this call created it (nothing half-written is left behind). `encoder_rec`
/// writes the encoder into the new directory and returns the manifest's record. Returns the
/// index and the wall and CPU seconds of the graph (and writing it).
pub fn create_index(
    out: &Path,
    config: IndexConfig,
    dim: usize,
    vectors: &[f32],
    items: Vec<Item>,
    encoder_rec: impl FnOnce(&Path) -> Result<EncoderRecord>,
    p: &dyn BuildProgress,
) -> Result<(Index, f64, f64)> {
    Index::check_new_dir(out).map_err(ctx("--out".into()))?;
    let existed = out.exists();
    let res = (|| -> Result<(Index, f64, f64)> {
        std::fs::create_dir_all(out)
            .map_err(|e| Error::Msg(format!("creating {}: {e}", out.display())))?;
        let rec = encoder_rec(out)?;
        p.stage("indexing", items.len() as u64);
        let sw = Stopwatch::start();
        let idx = Index::create(out, config, rec, dim, vectors, items, &|n| {
            p.advance(n as u64)
        })?;
        p.done();
        Ok((idx, sw.wall(), sw.cpu()))
    })();
    if res.is_err() && !existed {
        let _ = std::fs::remove_dir_all(out);
    }
    res
}

/// Encode `texts` in chunks of 1,024 (32 a batch), reporting the stage `encoding`.
pub fn encode_texts(enc: &TextEncoder, texts: &[&str], p: &dyn BuildProgress) -> Result<Vec<f32>> {
    p.stage("encoding", texts.len() as u64);
    let mut vectors = Vec::with_capacity(texts.len() * enc.dim());
    for (i, chunk) in texts.chunks(1024).enumerate() {
        vectors.extend(enc.encode(chunk, 32)?);
        p.advance((i * 1024 + chunk.len()) as u64);
    }
    p.done();
    Ok(vectors)
}

/// Embed an image set in chunks of 2,048 (512 a batch), reporting the stage `embedding`;
/// `n * dim` floats.
pub fn embed_images(model: &ImageModel, set: &ImageSet, p: &dyn BuildProgress) -> Result<Vec<f32>> {
    // Colour encoders (the face-finding one) read 3 bytes a pixel.
    let per = set.rows * set.cols * model.config.preprocess.channels;
    p.stage("embedding", set.n as u64);
    let mut out = Vec::with_capacity(set.n * model.config.dim);
    for start in (0..set.n).step_by(2048) {
        let m = 2048.min(set.n - start);
        out.extend(model.embed_pixels(&set.pixels[start * per..(start + m) * per], m, 512)?);
        p.advance((start + m) as u64);
    }
    p.done();
    Ok(out)
}

/// The items of an IDX corpus's training images: labelled with `model`'s class names, each
/// source `IMAGES_FILE:N`.
pub fn idx_items(model: &ImageModel, dir: &Path, set: &ImageSet) -> Vec<Item> {
    let src = resolve::images_file(dir);
    (0..set.n)
        .map(|i| Item {
            label: class_name(model, set.labels[i]),
            source: format!("{}:{i}", src.display()),
            payload: None,
        })
        .collect()
}

/// Human name of class `label` for `model` (its class names, else the number).
pub fn class_name(model: &ImageModel, label: u32) -> String {
    model
        .config
        .class_names
        .get(label as usize)
        .cloned()
        .unwrap_or_else(|| label.to_string())
}

/// The image encoder's own duplicate threshold as an index calibration.
pub fn encoder_calibration(model: &ImageModel) -> Calibration {
    let c = model.config.calibration.as_ref().map(|c| &c.report);
    let get = |f: fn(&crate::calibration::ThresholdReport) -> f64| c.map_or(f64::NAN, f);
    Calibration {
        threshold: Metric::L2.similarity(model.config.threshold),
        precision: get(|r| r.precision),
        recall: get(|r| r.recall),
        f1: get(|r| r.f1),
        method: c
            .map(|r| format!("encoder default ({} on training pairs)", r.method.name()))
            .unwrap_or_else(|| "encoder default".into()),
        extra: serde_json::json!({ "threshold_distance": model.config.threshold }),
    }
}

/// Vectors from `.npy`, `.fvecs`, or an IDX images file (pixels as floats 0..255):
/// `(rows, dim, row-major data)`.
pub fn read_vectors(path: &Path) -> Result<(usize, usize, Vec<f32>)> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if ext == "npy" || ext == "fvecs" {
        let m = crate::index::vecio::read_vectors(path)?;
        return Ok((m.rows, m.cols, m.data));
    }
    let a = crate::corpus::idx::read_images(path)?;
    let dim = a.dims[1] * a.dims[2];
    Ok((a.dims[0], dim, a.data.iter().map(|&p| p as f32).collect()))
}

/// Total bytes of the files in `dir` and its sub-directories (an index's size on disk).
pub fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_bytes(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_build_leaves_no_directory_and_the_record_round_trips() {
        let tmp = std::env::temp_dir().join(format!("twindex-build-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let out = tmp.join("idx");
        // Three vectors of dimension 2, but four items: Index::create refuses.
        let items = (0..4)
            .map(|i| Item {
                label: String::new(),
                source: format!("v#{i}"),
                payload: None,
            })
            .collect();
        let r = create_index(
            &out,
            IndexConfig::default(),
            2,
            &[0.0; 6],
            items,
            |_| Ok(EncoderRecord::vectors("v#", 2)),
            &Silent,
        );
        assert!(r.is_err());
        assert!(
            !out.exists(),
            "a failed build must remove the directory it made"
        );
        // A successful one, with its build record.
        let vpath = tmp.join("v.fvecs");
        std::fs::create_dir_all(&tmp).unwrap();
        let m = crate::index::Matrix {
            rows: 3,
            cols: 2,
            data: vec![0.0, 0.0, 1.0, 0.0, 0.0, 1.0],
        };
        crate::index::vecio::write_fvecs(&vpath, &m).unwrap();
        let src = BuildSource::Vectors {
            path: vpath,
            metric: Metric::L2,
        };
        let b = build_index(&out, &src, Backend::Flat, HnswParams::default(), &Silent).unwrap();
        assert_eq!(b.index.len(), 3);
        assert_eq!(BuildRecord::read(&out), b.record);
        assert!(b.bytes > 0);
        // A second build into the same directory is refused and leaves the first intact.
        assert!(build_index(&out, &src, Backend::Flat, HnswParams::default(), &Silent).is_err());
        assert_eq!(Index::open(&out).unwrap().len(), 3);
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}

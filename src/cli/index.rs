//! `twindex index build|add|delete|compact`.

use super::common;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use serde_json::json;
use std::path::{Path, PathBuf};
use twindex::index::{Backend, HnswParams, Index, IndexConfig, Item, Metric, Quantize};
use twindex::model::{ImageModel, TextEncoder};
use twindex::query::{encoder, NewItem, OpenOptions, Query, Searcher};

#[derive(Debug, Subcommand)]
pub enum IndexCmd {
    /// Build a new index from a corpus (with an encoder) or from raw vectors.
    Build(BuildArgs),
    /// Add items to an existing index, encoded with its own encoder (no rebuild).
    Add(AddArgs),
    /// Delete items by id (tombstones; `compact` reclaims the space).
    Delete(DeleteArgs),
    /// Rebuild the index without its deleted items.
    Compact(CompactArgs),
    /// Write the write-ahead log into the index's data files and retire it.
    Checkpoint(CompactArgs),
    /// Items, dimension, metric, encoder, threshold, log size.
    Stats(CompactArgs),
    /// Put an index, or embedding parts, into a Milvus collection (HNSW, the index's metric,
    /// the encoder and threshold in its description).
    Push(super::scale::PushArgs),
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Encoder directory (config.json + model.safetensors). Default: the shipped MNIST encoder.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Image corpus to embed: `mnist` (its 60,000 training images), a folder of IDX files, or a
    /// folder of images (labels from sub-folder names or labels.tsv): each image is enrolled
    /// under its label.
    #[arg(long, conflicts_with = "vectors")]
    pub corpus: Option<String>,
    /// Raw vectors instead of a corpus: `.npy` (float32 2-d), `.fvecs`, or an IDX images file
    /// (each image's pixels as floats 0..255).
    #[arg(long, conflicts_with = "text")]
    pub vectors: Option<PathBuf>,
    /// Texts to index, one a line (blank lines skipped; duplicates kept), or a TSV with a
    /// header when --text-column is given; encoded with the text model `--model` (a
    /// sentence-transformers folder; default ../shared/models/all-MiniLM-L6-v2).
    #[arg(long, conflicts_with = "corpus")]
    pub text: Option<PathBuf>,
    /// Embedding parts (`twindex embed` / `export` Parquet files; a quoted glob is expanded):
    /// the index takes their vectors, encoder and threshold as they are (no encoding). Their
    /// ids, in shard order, must be 0, 1, 2, ...
    #[arg(long, num_args = 1.., conflicts_with_all = ["text", "vectors", "corpus", "model"])]
    pub parts: Vec<String>,
    /// --text as a TSV: the header name of the column holding the text.
    #[arg(long, requires = "text")]
    pub text_column: Option<String>,
    /// --text as a TSV: the column whose value becomes each item's source (e.g. a question id)
    /// instead of the text itself.
    #[arg(long, requires = "text_column")]
    pub id_column: Option<String>,
    /// Output index directory (must not already hold an index).
    #[arg(long)]
    pub out: PathBuf,
    /// Distance for raw vectors (encoders fix their own): l2, cosine or dot.
    #[arg(long, default_value = "l2")]
    pub metric: String,
    /// Search engine: hnsw (twindex's own), hnsw_rs, or flat (exact).
    #[arg(long, default_value = "hnsw")]
    pub backend: String,
    /// HNSW links per node. Larger: better recall, more memory, slower build.
    #[arg(long, default_value_t = 16)]
    pub m: usize,
    /// HNSW candidate list while building. Larger: better graph, slower build.
    #[arg(long, default_value_t = 200)]
    pub ef_construction: usize,
    /// Default search breadth for queries. Larger: better recall, slower queries.
    #[arg(long, default_value_t = 64)]
    pub ef_search: usize,
    /// Seed for the HNSW level draws.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// What the HNSW walk scores: none (f32 vectors) or sq8 (one byte a dimension, the best
    /// --rerank candidates re-scored on the f32 vectors, which stay on disk, memory-mapped).
    #[arg(long, default_value = "none")]
    pub quantize: String,
    /// Quantized indexes: candidates re-scored exactly per query. Larger: better recall,
    /// slower queries.
    #[arg(long, default_value_t = twindex::index::DEFAULT_RERANK)]
    pub rerank: usize,
    /// Column holding the label: of labels.tsv (image folders with a labels.tsv; default
    /// `label`), or of the --text TSV (default: no label).
    #[arg(long)]
    pub label_column: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    #[arg(long)]
    pub index: PathBuf,
    /// Label given to every added item (e.g. a person's name).
    #[arg(long, default_value = "")]
    pub label: String,
    /// Image files (PNG, PGM, JPEG) or IDX items as FILE:N (image indexes).
    pub items: Vec<String>,
    /// A text to add (text indexes). Repeat for many.
    #[arg(long)]
    pub text: Vec<String>,
    /// Texts to add, one a line (text indexes).
    #[arg(long)]
    pub text_file: Option<PathBuf>,
    /// Raw vectors to add (`.npy` float32 2-d or `.fvecs`) of the index's dimension.
    #[arg(long)]
    pub vectors: Option<PathBuf>,
    /// Text indexes: the text model's folder, when it moved since the index was built.
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[arg(long)]
    pub index: PathBuf,
    #[arg(required = true)]
    pub ids: Vec<u64>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CompactArgs {
    #[arg(long)]
    pub index: PathBuf,
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: IndexCmd) -> Result<()> {
    match cmd {
        IndexCmd::Build(a) => build(a),
        IndexCmd::Push(a) => super::scale::push(a),
        IndexCmd::Add(a) => add(a),
        IndexCmd::Delete(a) => {
            let mut idx = open_writer(&a.index)?;
            idx.delete(&a.ids)?;
            let n = idx.len();
            eprintln!(
                "deleted {} item(s); {} remain in {}",
                a.ids.len(),
                n,
                a.index.display()
            );
            if a.json {
                common::print_json(&json!({ "deleted": a.ids, "items": n }))?;
            }
            Ok(())
        }
        IndexCmd::Compact(a) => {
            let mut idx = open_writer(&a.index)?;
            let before = idx.slot_count();
            let pb = common::bar(idx.len() as u64, "compacting");
            idx.compact(&|n| pb.set_position(n as u64))?;
            pb.finish_and_clear();
            eprintln!(
                "compacted {}: {} items ({} deleted slots reclaimed)",
                a.index.display(),
                idx.len(),
                before - idx.slot_count()
            );
            if a.json {
                common::print_json(
                    &json!({ "items": idx.len(), "reclaimed": before - idx.slot_count(), "generation": idx.manifest().generation }),
                )?;
            }
            Ok(())
        }
        IndexCmd::Checkpoint(a) => {
            let mut idx = open_writer(&a.index)?;
            let (bytes, records) = idx.log_size();
            idx.checkpoint()?;
            eprintln!(
                "checkpointed {}: {records} logged write(s) ({bytes} bytes) now in generation {}",
                a.index.display(),
                idx.manifest().generation
            );
            if a.json {
                common::print_json(
                    &json!({ "records": records, "log_bytes": bytes, "generation": idx.manifest().generation, "items": idx.len() }),
                )?;
            }
            Ok(())
        }
        IndexCmd::Stats(a) => {
            let s = twindex::query::Searcher::open(&a.index, &Default::default())
                .with_context(|| format!("opening index {}", a.index.display()))?;
            let st = s.stats();
            let labels = s.labels()?.len();
            if a.json {
                let mut j = serde_json::to_value(&st)?;
                j["labels"] = json!(labels);
                return common::print_json(&j);
            }
            println!("index      {}", st.dir);
            println!("items      {} ({} slots)", st.items, st.slots);
            println!("vectors    {} dims, {}, {}", st.dim, st.metric, st.backend);
            if let Some(r) = st.rerank {
                println!(
                    "quantized  {} (the walk), best {r} re-scored on the f32 vectors",
                    st.quantize
                );
            }
            println!("encoder    {}", st.encoder);
            match st.threshold {
                Some(t) => println!("threshold  distance <= {t:.4}"),
                None => println!("threshold  none calibrated"),
            }
            println!("labels     {labels}");
            println!(
                "log        {} write(s), {} bytes (generation {})",
                st.log_records, st.log_bytes, st.generation
            );
            Ok(())
        }
    }
}

/// Open an index with the path in the error.
pub fn open(dir: &Path) -> Result<Index> {
    Index::open(dir).with_context(|| format!("opening index {}", dir.display()))
}

/// Open an index for writing (its writer lock held), with the path in the error.
pub fn open_writer(dir: &Path) -> Result<Index> {
    Index::open_writer(dir).with_context(|| format!("opening index {} for writing", dir.display()))
}

/// Build an index of `vectors` with `items` into `out`, removing the directory again on
/// failure when this call created it (nothing half-written is left behind).
pub fn create_index(
    out: &Path,
    config: IndexConfig,
    dim: usize,
    vectors: &[f32],
    items: Vec<Item>,
    encoder_rec: impl FnOnce(&Path) -> twindex::Result<serde_json::Value>,
) -> Result<(Index, f64, f64)> {
    Index::check_new_dir(out).context("--out")?;
    let existed = out.exists();
    let res = (|| -> Result<(Index, f64, f64)> {
        common::ensure_dir(out)?;
        let rec = encoder_rec(out)?;
        let pb = common::bar(items.len() as u64, "indexing");
        let sw = twindex::timing::Stopwatch::start();
        let idx = Index::create(out, config, rec, dim, vectors, items, &|n| {
            pb.set_position(n as u64)
        })?;
        pb.finish_and_clear();
        Ok((idx, sw.wall(), sw.cpu()))
    })();
    if res.is_err() && !existed {
        let _ = std::fs::remove_dir_all(out);
    }
    res
}

fn build(a: BuildArgs) -> Result<()> {
    // Every path first: nothing is encoded for minutes before a bad --out is noticed.
    Index::check_new_dir(&a.out).context("--out")?;
    let total = twindex::timing::Stopwatch::start();
    let backend: Backend = a.backend.parse()?;
    let hnsw = HnswParams {
        m: a.m,
        ef_construction: a.ef_construction,
        ef_search: a.ef_search,
        seed: a.seed,
        quantize: a
            .quantize
            .parse::<Quantize>()
            .map_err(|e| anyhow::anyhow!("--quantize: {e}"))?,
        rerank: a.rerank,
    };
    hnsw.validate().context("index build")?;
    let (idx, wall, cpu) = if !a.parts.is_empty() {
        let mut paths = Vec::new();
        for p in &a.parts {
            paths.extend(twindex::query::parts::expand_glob(p)?);
        }
        let pb = common::bar(0, "indexing");
        let sw = twindex::timing::Stopwatch::start();
        let idx =
            twindex::query::parts::build_index_from_parts(&a.out, &paths, backend, hnsw, &|n| {
                pb.set_position(n as u64)
            })?;
        pb.finish_and_clear();
        (idx, sw.wall(), sw.cpu())
    } else if let Some(tpath) = &a.text {
        let model_dir = match &a.model {
            Some(m) => m.clone(),
            None => super::eval::default_text_model()?,
        };
        let enc = TextEncoder::load(&model_dir)
            .with_context(|| format!("loading text encoder {}", model_dir.display()))?;
        let rows = twindex::corpus::text::read_texts(
            tpath,
            &twindex::corpus::text::TextColumns {
                text: a.text_column.clone(),
                id: a.id_column.clone(),
                label: a.label_column.clone(),
            },
        )?;
        let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
        let sw = twindex::timing::Stopwatch::start();
        let pb = common::bar(texts.len() as u64, "encoding");
        let mut vectors = Vec::with_capacity(texts.len() * enc.dim());
        for chunk in texts.chunks(1024) {
            vectors.extend(enc.encode(chunk, 32)?);
            pb.inc(chunk.len() as u64);
        }
        pb.finish_and_clear();
        eprintln!(
            "encoded {} texts with {} in {:.1} s ({:.1} CPU-s)",
            texts.len(),
            model_dir.display(),
            sw.wall(),
            sw.cpu()
        );
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
        create_index(&a.out, cfg, enc.dim(), &vectors, items, |_| Ok(rec))?
    } else if let Some(vpath) = &a.vectors {
        let metric: Metric = match a.metric.as_str() {
            "l2" => Metric::L2,
            "cosine" => Metric::Cosine,
            "dot" => Metric::Dot,
            m => bail!("unknown metric {m:?}: expected l2, cosine or dot"),
        };
        let (rows, dim, data) = common::read_vectors_any(vpath)?;
        if rows == 0 {
            bail!("{}: no vectors to index", vpath.display());
        }
        eprintln!(
            "indexing {rows} vectors of dimension {dim} from {}",
            vpath.display()
        );
        let items = (0..rows)
            .map(|i| Item {
                label: String::new(),
                source: format!("{}#{i}", vpath.display()),
                payload: None,
            })
            .collect();
        let cfg = IndexConfig {
            metric,
            normalize: false,
            backend,
            hnsw,
        };
        create_index(&a.out, cfg, dim, &data, items, |_| {
            Ok(encoder::vectors_record(vpath, dim))
        })?
    } else {
        let corpus = a.corpus.as_deref().unwrap_or("mnist");
        let model_dir = match &a.model {
            Some(m) => m.clone(),
            None if super::protocol::is_image_folder(corpus) => bail!(
                "indexing the image folder {corpus} needs --model DIR: an encoder trained on such images (e.g. corpora/encoders/orl-faces/fold-0)"
            ),
            None => common::default_model_dir()?,
        };
        let model = ImageModel::load(&model_dir)
            .with_context(|| format!("loading encoder {}", model_dir.display()))?;
        let cfg = IndexConfig {
            metric: Metric::L2,
            normalize: false,
            backend,
            hnsw,
        };
        let (vectors, items): (Vec<f32>, Vec<Item>) = if super::protocol::is_image_folder(corpus) {
            let f = twindex::corpus::folder::ImageFolder::scan(
                Path::new(corpus),
                a.label_column.as_deref().unwrap_or("label"),
            )?;
            let set =
                twindex::model::image::load_set(&f.items, &f.classes, &model.config.preprocess)?;
            let vectors = common::embed_with_bar(&model, &set)?;
            let items = f
                .items
                .iter()
                .map(|it| Item {
                    label: it.label.clone(),
                    source: it.path.display().to_string(),
                    payload: None,
                })
                .collect();
            eprintln!(
                "embedded {} images of {} labels from {} with {}",
                f.items.len(),
                f.classes.len(),
                corpus,
                model_dir.display()
            );
            (vectors, items)
        } else {
            let (dir, data) = common::load_corpus(corpus)?;
            let set = &data.train;
            let sw = twindex::timing::Stopwatch::start();
            let vectors = common::embed_with_bar(&model, set)?;
            eprintln!(
                "embedded {} images with {} in {:.1} s ({:.0} images/s)",
                set.n,
                model_dir.display(),
                sw.wall(),
                set.n as f64 / sw.wall()
            );
            let src = common::images_file(&dir);
            let items = (0..set.n)
                .map(|i| Item {
                    label: common::class_name(&model, set.labels[i]),
                    source: format!("{}:{i}", src.display()),
                    payload: None,
                })
                .collect();
            (vectors, items)
        };
        let (mut idx, w, c) =
            create_index(&a.out, cfg, model.config.dim, &vectors, items, |out| {
                encoder::embed_image_encoder(&model, &model_dir, out)
            })?;
        idx.set_calibration(Some(common::model_calibration(&model)))?;
        (idx, w, c)
    };
    // The whole build (reading, encoding, graph, writing); the graph alone beside it.
    let (graph_wall, graph_cpu) = (wall, cpu);
    let (wall, cpu) = (total.wall(), total.cpu());
    twindex::fsutil::atomic_write_json(
        &a.out.join("build.json"),
        &common::BuildRecord {
            build_seconds: wall,
            build_cpu_seconds: cpu,
            threads: rayon::current_num_threads(),
            graph_seconds: graph_wall,
            graph_cpu_seconds: graph_cpu,
        },
    )?;
    let bytes = common::dir_bytes(&a.out);
    eprintln!(
        "built {} ({} items, dim {}, {}) in {:.1} s ({:.1} CPU-s), {:.1} MB on disk",
        a.out.display(),
        idx.len(),
        idx.dim(),
        idx.manifest().backend.name(),
        wall,
        cpu,
        bytes as f64 / 1e6
    );
    if a.json {
        common::print_json(&json!({
            "index": a.out.display().to_string(),
            "items": idx.len(),
            "dim": idx.dim(),
            "metric": idx.metric().name(),
            "backend": idx.manifest().backend.name(),
            "build_seconds": wall,
            "build_cpu_seconds": cpu,
            "graph_seconds": graph_wall,
            "graph_cpu_seconds": graph_cpu,
            "index_bytes": bytes,
        }))?;
    }
    Ok(())
}

fn add(a: AddArgs) -> Result<()> {
    let texts = match &a.text_file {
        Some(p) => twindex::corpus::text::read_lines(p)?,
        None => Vec::new(),
    };
    let vectors = match &a.vectors {
        Some(p) => Some(common::read_vectors_any(p)?),
        None => None,
    };
    if a.items.is_empty() && a.text.is_empty() && texts.is_empty() && vectors.is_none() {
        bail!("nothing to add: give image files, --text STR, --text-file F or --vectors FILE");
    }
    let s = Searcher::open(
        &a.index,
        &OpenOptions {
            writable: true,
            model: a.model.clone(),
        },
    )
    .with_context(|| format!("opening index {} for writing", a.index.display()))?;
    let mut ids = Vec::new();
    let new: Vec<NewItem> = a
        .text
        .iter()
        .chain(&texts)
        .map(|t| NewItem {
            content: Query::Text(t),
            label: a.label.clone(),
            source: None,
        })
        .chain(a.items.iter().map(|i| NewItem {
            content: Query::Image(i),
            label: a.label.clone(),
            source: None,
        }))
        .collect();
    // In chunks: each one encoded, logged and acknowledged on its own.
    for chunk in new.chunks(1024) {
        ids.extend(s.add(chunk)?);
    }
    if let (Some((rows, dim, data)), Some(p)) = (&vectors, &a.vectors) {
        if *dim != s.dim() {
            bail!(
                "{}: vectors of dimension {dim}, the index holds dimension {}",
                p.display(),
                s.dim()
            );
        }
        let items = (0..*rows)
            .map(|i| Item {
                label: a.label.clone(),
                source: format!("{}#{i}", p.display()),
                payload: None,
            })
            .collect();
        ids.extend(s.add_vectors(data, items)?);
    }
    let n = s.stats().items;
    eprintln!(
        "added {} item(s) to {} (ids {}); {} items now",
        ids.len(),
        a.index.display(),
        id_ranges(&ids),
        n
    );
    if a.json {
        common::print_json(&json!({ "ids": ids, "items": n }))?;
    }
    Ok(())
}

/// Ids as ranges: `0-9, 12`.
fn id_ranges(ids: &[u64]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let mut j = i;
        while j + 1 < ids.len() && ids[j + 1] == ids[j] + 1 {
            j += 1;
        }
        out.push(if j == i {
            ids[i].to_string()
        } else {
            format!("{}-{}", ids[i], ids[j])
        });
        i = j + 1;
    }
    out.join(", ")
}

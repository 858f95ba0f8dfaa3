//! Beyond one machine: `twindex export`, `twindex embed --shard I/N` and `twindex index push`
//! (into Milvus).

use super::common;
use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;
use std::path::{Path, PathBuf};
use twindex::index::parquet;
use twindex::index::Index;
use twindex::model::{ImageModel, TextEncoder};
use twindex::query::milvus::{self, CollectionMeta, MilvusUri, PushOptions};
use twindex::query::parts::{self, ExportFormat, ImageRows, ShardSpec};

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The index directory to export.
    #[arg(long)]
    pub index: PathBuf,
    /// parquet (one file: id, label, text, vector; metadata in its footer and in PATH.json) or
    /// npy (a folder: vectors.npy, items.jsonl, twindex.json).
    #[arg(long, default_value = "parquet")]
    pub format: String,
    /// Where to write (must not exist).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub json: bool,
}

pub fn export(a: ExportArgs) -> Result<()> {
    let format: ExportFormat = a.format.parse()?;
    let idx =
        Index::open(&a.index).with_context(|| format!("opening index {}", a.index.display()))?;
    let sw = twindex::timing::Stopwatch::start();
    let meta = parts::index_meta(&idx)?;
    let rows = parts::index_rows(&idx)?;
    parts::write_export(&a.out, format, &meta, &rows)?;
    let j = json!({
        "out": a.out.display().to_string(),
        "format": a.format,
        "rows": rows.len(),
        "dim": rows.dim,
        "metric": meta.metric,
        "encoder_sha256": meta.encoder_sha256(),
        "threshold": meta.threshold,
        "seconds": sw.wall(),
    });
    if a.json {
        return common::print_json(&j);
    }
    println!(
        "exported {} items ({} dims, {}) of {} to {} in {:.1} s",
        rows.len(),
        rows.dim,
        meta.metric,
        a.index.display(),
        a.out.display(),
        sw.wall()
    );
    Ok(())
}

#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// Encoder: a text model folder (sentence-transformers layout) for --text, an image encoder
    /// for --corpus. Default: ../shared/models/all-MiniLM-L6-v2 for --text.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Texts, one a line (blank lines skipped), or a TSV with --text-column; `.gz` is read as
    /// gzip.
    #[arg(long, conflicts_with = "corpus")]
    pub text: Option<PathBuf>,
    /// --text as a TSV: the header name of the text column.
    #[arg(long, requires = "text")]
    pub text_column: Option<String>,
    /// --text as a TSV: a column of integer ids (default: the row number, from 0).
    #[arg(long, requires = "text_column")]
    pub id_column: Option<String>,
    /// --text as a TSV: the label column.
    #[arg(long, requires = "text_column")]
    pub label_column: Option<String>,
    /// Image corpus: `mnist`, a folder of IDX files, or a folder of images.
    #[arg(long)]
    pub corpus: Option<String>,
    /// This machine's shard: I/N (0 <= I < N) of the corpus, cut on block boundaries so the
    /// parts concatenated in shard order equal a single run's rows.
    #[arg(long, default_value = "0/1")]
    pub shard: String,
    /// The part to write (Parquet; must not exist).
    #[arg(long)]
    pub out: PathBuf,
    /// A duplicate threshold (a distance) to record in the part, e.g. one calibrated on pairs
    /// with this encoder: `index push` and `index build --parts` take it from there. (An image
    /// encoder's own calibrated threshold is recorded without it.)
    #[arg(long, value_parser = common::parse_threshold)]
    pub threshold: Option<f32>,
    #[arg(long)]
    pub json: bool,
}

pub fn embed(a: EmbedArgs) -> Result<()> {
    let shard: ShardSpec = a.shard.parse()?;
    if a.out.exists() {
        bail!(
            "{}: already exists; twindex writes parts only to new paths",
            a.out.display()
        );
    }
    let sw = twindex::timing::Stopwatch::start();
    let (meta, rows) = if let Some(tpath) = &a.text {
        let model_dir = match &a.model {
            Some(m) => m.clone(),
            None => super::eval::default_text_model()?,
        };
        let enc = TextEncoder::load(&model_dir)
            .with_context(|| format!("loading text encoder {}", model_dir.display()))?;
        let record = twindex::query::encoder::text_record(&model_dir, &enc)?;
        let rows = twindex::corpus::text::read_texts(
            tpath,
            &twindex::corpus::text::TextColumns {
                text: a.text_column.clone(),
                id: a.id_column.clone(),
                label: a.label_column.clone(),
            },
        )?;
        let r = parts::shard_range(rows.len(), parts::TEXT_BLOCK, shard);
        let pb = common::bar(r.len() as u64, "encoding");
        let out = parts::embed_text_shard(
            &enc,
            &record,
            &rows,
            &tpath.display().to_string(),
            shard,
            &|n| pb.set_position(n as u64),
        )?;
        pb.finish_and_clear();
        out
    } else {
        let corpus = a.corpus.as_deref().unwrap_or("mnist");
        let model_dir = match &a.model {
            Some(m) => m.clone(),
            None if super::protocol::is_image_folder(corpus) => {
                bail!("embedding the image folder {corpus} needs --model DIR")
            }
            None => common::default_model_dir()?,
        };
        let model = ImageModel::load(&model_dir)
            .with_context(|| format!("loading encoder {}", model_dir.display()))?;
        let abs = std::fs::canonicalize(&model_dir)?;
        let record =
            twindex::query::encoder::image_record(&model, &abs.display().to_string(), &abs, &abs)?;
        let (pixels, labels, sources) = if super::protocol::is_image_folder(corpus) {
            let f = twindex::corpus::folder::ImageFolder::scan(Path::new(corpus), "label")?;
            let set =
                twindex::model::image::load_set(&f.items, &f.classes, &model.config.preprocess)?;
            (
                set.pixels,
                f.items.iter().map(|i| i.label.clone()).collect(),
                f.items
                    .iter()
                    .map(|i| i.path.display().to_string())
                    .collect(),
            )
        } else {
            let (dir, data) = common::load_corpus(corpus)?;
            let set = data.train;
            let src = common::images_file(&dir);
            (
                set.pixels,
                set.labels
                    .iter()
                    .map(|&l| common::class_name(&model, l))
                    .collect(),
                (0..set.n)
                    .map(|i| format!("{}:{i}", src.display()))
                    .collect(),
            )
        };
        let images = ImageRows {
            pixels: &pixels,
            labels,
            sources,
        };
        let r = parts::shard_range(images.labels.len(), parts::IMAGE_BLOCK, shard);
        let pb = common::bar(r.len() as u64, "embedding");
        let out = parts::embed_image_shard(&model, &record, &images, corpus, shard, &|n| {
            pb.set_position(n as u64)
        })?;
        pb.finish_and_clear();
        out
    };
    let mut meta = meta;
    if let Some(t) = a.threshold {
        meta.threshold = Some(t);
    }
    parquet::write_part(&a.out, &rows, &meta)?;
    let sh = meta.shard.expect("embed writes a shard");
    let j = json!({
        "out": a.out.display().to_string(),
        "shard": format!("{}/{}", sh.index, sh.of),
        "first_row": sh.first_row,
        "rows": rows.len(),
        "total_rows": sh.total_rows,
        "dim": rows.dim,
        "encoder_sha256": meta.encoder_sha256(),
        "seconds": sw.wall(),
        "cpu_seconds": sw.cpu(),
    });
    if a.json {
        return common::print_json(&j);
    }
    println!(
        "shard {}/{}: rows {}..{} of {} embedded ({} dims) to {} in {:.1} s ({:.1} CPU-s)",
        sh.index,
        sh.of,
        sh.first_row,
        sh.first_row + rows.len(),
        sh.total_rows,
        rows.dim,
        a.out.display(),
        sw.wall(),
        sw.cpu()
    );
    Ok(())
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// Push this index directory's live items (with its threshold, M and efConstruction).
    #[arg(long, required_unless_present = "parts", conflicts_with = "parts")]
    pub index: Option<PathBuf>,
    /// Push embedding parts (`twindex embed` or `export` files; a quoted glob such as
    /// 'part-*.parquet' is expanded here). All must share one encoder.
    #[arg(long, num_args = 1..)]
    pub parts: Vec<String>,
    /// Milvus address: milvus://HOST:PORT (or HOST:PORT).
    #[arg(long)]
    pub milvus: String,
    /// The collection: created if missing; if it exists, it must be twindex's, of the same
    /// encoder, and not hold the pushed ids.
    #[arg(long)]
    pub collection: String,
    /// Duplicate threshold (a distance) to record, for parts that carry none (e.g. `embed`
    /// parts of a text model calibrated elsewhere).
    #[arg(long, value_parser = common::parse_threshold)]
    pub threshold: Option<f32>,
    /// Parts only: HNSW links per node of Milvus' index.
    #[arg(long, default_value_t = 16)]
    pub m: usize,
    /// Parts only: HNSW efConstruction of Milvus' index.
    #[arg(long, default_value_t = 200)]
    pub ef_construction: usize,
    /// Shards (DML channels) of a new collection (default: Milvus' own). More spread the inserts
    /// of a cluster over more data nodes.
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=64))]
    pub shards: Option<i32>,
    /// Rows per insert call.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub batch: u64,
    #[arg(long)]
    pub json: bool,
}

pub fn push(a: PushArgs) -> Result<()> {
    let uri = MilvusUri::parse(&a.milvus)?;
    if let Some(c) = &uri.collection {
        if c != &a.collection {
            bail!(
                "--milvus names the collection {c}, --collection {}: give one",
                a.collection
            );
        }
    }
    milvus::check_collection_name(&a.collection)?;
    // The metadata and the rows, part by part (an index is one part); each input opened once.
    type Parts = Box<dyn Iterator<Item = twindex::Result<parquet::Rows>>>;
    let (mut meta, source, mut iter): (CollectionMeta, String, Parts) = match &a.index {
        Some(dir) => {
            let idx =
                Index::open(dir).with_context(|| format!("opening index {}", dir.display()))?;
            let meta = CollectionMeta::from_part(&parts::index_meta(&idx)?);
            let rows = parts::index_rows(&idx);
            (
                meta,
                dir.display().to_string(),
                Box::new(std::iter::once(rows)),
            )
        }
        None => {
            let mut paths: Vec<PathBuf> = Vec::new();
            for p in &a.parts {
                paths.extend(parts::expand_glob(p)?);
            }
            let (first, metas) = parts::check_parts(&paths)?;
            let mut m = CollectionMeta::from_part(&first);
            if first.hnsw.is_none() {
                m.hnsw.m = a.m;
                m.hnsw.ef_construction = a.ef_construction;
            }
            let shards: Vec<String> = metas
                .iter()
                .filter_map(|m| m.shard.map(|s| format!("{}/{}", s.index, s.of)))
                .collect();
            if let Some(s) = first.shard {
                if shards.len() < s.of {
                    eprintln!(
                        "note: {} of {} shards given ({}); push the others later into the same collection",
                        shards.len(),
                        s.of,
                        shards.join(", ")
                    );
                }
            }
            let source = paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" ");
            let rows = paths
                .into_iter()
                .map(|p| parquet::read_part(&p).map(|(_, r)| r));
            (m, source, Box::new(rows))
        }
    };
    if let Some(t) = a.threshold {
        meta.threshold = Some(t);
    }
    let pb = common::bar(0, "pushing");
    let rep = milvus::push(
        &uri,
        &a.collection,
        &meta,
        &mut iter,
        &PushOptions {
            batch: a.batch as usize,
            shards: a.shards,
        },
        &|n| pb.set_position(n as u64),
    );
    pb.finish_and_clear();
    let rep = rep?;
    if a.json {
        let mut j = serde_json::to_value(&rep)?;
        j["milvus"] = json!(uri.endpoint);
        j["source"] = json!(source);
        j["threshold"] = json!(meta.threshold);
        j["encoder_sha256"] = json!(meta.encoder_sha256());
        return common::print_json(&j);
    }
    println!(
        "pushed {} vectors ({} dims, {}) into {} collection {} at {}: {} rows now; {:.0} vectors/s inserting, {:.0} vectors/s until indexed and loaded ({:.1} s)",
        rep.rows,
        meta.dim,
        meta.metric,
        if rep.created { "the new" } else { "the existing" },
        a.collection,
        uri.endpoint,
        rep.total_rows,
        rep.insert_vectors_per_second,
        rep.vectors_per_second,
        rep.seconds
    );
    if rep.truncated_sources > 0 {
        println!(
            "note: {} source texts were longer than Milvus' {} bytes and were cut",
            rep.truncated_sources,
            milvus::MAX_SOURCE
        );
    }
    if meta.threshold.is_none() {
        println!("note: no threshold recorded: queries will call no neighbour a duplicate (pass --threshold)");
    }
    Ok(())
}

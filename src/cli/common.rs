//! Helpers shared by subcommands: corpus lookup, JSON output, progress bars.

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Resolve a corpus name: `mnist` means the shipped `corpora/mnist` (falling back to
/// `../shared/corpora/mnist`); anything else is a folder path.
pub fn corpus_dir(name: &str) -> Result<PathBuf> {
    if name == "mnist" {
        for cand in [
            repo_root().join("corpora/mnist"),
            PathBuf::from("corpora/mnist"),
            repo_root().join("../shared/corpora/mnist"),
        ] {
            if cand.join("train-labels-idx1-ubyte.gz").exists() {
                return Ok(cand);
            }
        }
        anyhow::bail!(
            "corpus `mnist`: corpora/mnist not found (expected the shipped copy beside Cargo.toml)"
        );
    }
    let p = PathBuf::from(name);
    if !p.exists() {
        anyhow::bail!("corpus {name}: no such folder (expected `mnist` or a folder of IDX files)");
    }
    Ok(p)
}

/// The repository root: the build-time manifest dir when it still exists, else the cwd.
pub fn repo_root() -> PathBuf {
    let m = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if m.join("corpora").exists() {
        m
    } else {
        PathBuf::from(".")
    }
}

/// Print one JSON object on stdout.
pub fn print_json(v: &serde_json::Value) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

/// A progress bar on stderr (hidden when stderr is not a terminal and `CI` is set).
pub fn bar(len: u64, msg: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {prefix}")
            .unwrap()
            .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    pb
}

/// Load an MNIST-style corpus with context.
pub fn load_corpus(name: &str) -> Result<(PathBuf, twindex::corpus::TrainTest)> {
    let dir = corpus_dir(name)?;
    let data = twindex::corpus::load_idx_corpus(&dir)
        .with_context(|| format!("loading corpus {}", dir.display()))?;
    Ok((dir, data))
}

/// Check a path is not an existing file when we are about to make a directory there.
pub fn ensure_dir(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))
}

/// The shipped default image encoder (`corpora/encoders/mnist-cnn`).
pub fn default_model_dir() -> Result<PathBuf> {
    let p = repo_root().join("corpora/encoders/mnist-cnn");
    if !p.join("config.json").exists() {
        anyhow::bail!(
            "the shipped encoder {} is missing: pass --model DIR (a directory made by `twindex train`)",
            p.display()
        );
    }
    Ok(p)
}

/// The images file of an IDX corpus folder (for item sources).
pub fn images_file(dir: &Path) -> PathBuf {
    let p = twindex::corpus::idx::IdxCorpusPaths::in_dir(dir)
        .map(|p| p.train_images)
        .unwrap_or_else(|_| dir.to_path_buf());
    // Relative to the working directory when inside it: shorter, and stable across clones.
    match std::env::current_dir() {
        Ok(cwd) => p.strip_prefix(&cwd).map(Path::to_path_buf).unwrap_or(p),
        Err(_) => p,
    }
}

/// Human name of class `label` for `model` (its class names, else the number).
pub fn class_name(model: &twindex::model::ImageModel, label: u32) -> String {
    model
        .config
        .class_names
        .get(label as usize)
        .cloned()
        .unwrap_or_else(|| label.to_string())
}

/// Embed an image set with a progress bar; `n * dim` floats.
pub fn embed_with_bar(
    model: &twindex::model::ImageModel,
    set: &twindex::corpus::ImageSet,
) -> Result<Vec<f32>> {
    let per = set.rows * set.cols;
    let pb = bar(set.n as u64, "embedding");
    let mut out = Vec::with_capacity(set.n * model.config.dim);
    for start in (0..set.n).step_by(2048) {
        let m = 2048.min(set.n - start);
        out.extend(model.embed_pixels(&set.pixels[start * per..(start + m) * per], m, 512)?);
        pb.set_position((start + m) as u64);
    }
    pb.finish_and_clear();
    Ok(out)
}

/// The model's duplicate threshold as an index calibration.
pub fn model_calibration(model: &twindex::model::ImageModel) -> twindex::index::Calibration {
    let c = model.config.calibration.as_ref();
    let get = |k: &str| {
        c.and_then(|v| v.get(k))
            .and_then(|v| v.as_f64())
            .unwrap_or(f64::NAN)
    };
    twindex::index::Calibration {
        threshold: twindex::index::Metric::L2.similarity(model.config.threshold),
        precision: get("precision"),
        recall: get("recall"),
        f1: get("f1"),
        method: c
            .and_then(|v| v.get("method"))
            .and_then(|v| v.as_str())
            .map(|m| format!("encoder default ({m} on training pairs)"))
            .unwrap_or_else(|| "encoder default".into()),
        extra: serde_json::json!({ "threshold_distance": model.config.threshold }),
    }
}

/// Total bytes of the files directly in `dir` and its sub-directories.
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

/// Vectors from `.npy`, `.fvecs`, or an IDX images file (pixels as floats 0..255):
/// `(rows, dim, row-major data)`.
pub fn read_vectors_any(path: &Path) -> Result<(usize, usize, Vec<f32>)> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if ext == "npy" || ext == "fvecs" {
        let m = twindex::index::vecio::read_vectors(path)?;
        return Ok((m.rows, m.cols, m.data));
    }
    let a = twindex::corpus::idx::read_images(path)?;
    let dim = a.dims[1] * a.dims[2];
    Ok((a.dims[0], dim, a.data.iter().map(|&p| p as f32).collect()))
}

/// Build time of an index, written beside its manifest by `index build` (`build.json`).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
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

/// Read `build.json` of an index (zeros when absent).
pub fn read_build_record(index: &Path) -> BuildRecord {
    twindex::fsutil::read_json(&index.join("build.json")).unwrap_or_default()
}

/// `--threshold`: a finite distance (negative allowed, NaN and infinities refused).
pub fn parse_threshold(s: &str) -> std::result::Result<f32, String> {
    let v: f32 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number (expected a distance such as 0.5)"))?;
    if !v.is_finite() {
        return Err(format!("{s:?} is not a finite distance"));
    }
    Ok(v)
}

//! The evaluation runs of the image-folder protocols (`eval --protocol orl|signatures`): with a
//! trained encoder, a folder of per-fold encoders, or raw pixels as the baseline.

use super::train::{folder_preprocess, orl_summary, FolderOptions};
use super::{
    calibrate_pairs, orl_fold_report, orl_fold_with_model, orl_folds, orl_report, raw_embeddings,
    Aggregate, OrlReport,
};
use crate::corpus::folder::ImageFolder;
use crate::corpus::Protocol;
use crate::error::{Error, Result};
use crate::model::image::{load_set, CONFIG_FILE};
use crate::model::{ImageModel, Preprocess};
use crate::train::{Observer, Progress};
use serde::Serialize;
use std::path::Path;

/// What a protocol is scored with.
#[derive(Debug, Clone)]
pub enum Scored<'a> {
    /// A trained encoder directory; for ORL also a folder of `fold-0..fold-3` encoders.
    Encoder(&'a Path),
    /// Raw pixels preprocessed as given: the baseline.
    RawPixels(Preprocess),
}

impl Scored<'_> {
    /// The `model` field of a report: the encoder's path or `raw pixels`.
    fn name(&self) -> String {
        match self {
            Scored::Encoder(p) => p.display().to_string(),
            Scored::RawPixels(_) => "raw pixels".into(),
        }
    }
}

/// A protocol's report from `eval`: what was scored (`model`) and, for signatures, where the
/// threshold came from.
#[derive(Debug, Clone, Serialize)]
pub struct ProtocolEvalReport<R> {
    #[serde(flatten)]
    pub report: R,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold_source: Option<&'static str>,
    pub model: String,
}

fn load_model(dir: &Path, what: &str) -> Result<ImageModel> {
    ImageModel::load(dir).map_err(|e| Error::Msg(format!("loading {what} {}: {e}", dir.display())))
}

/// The ORL protocol on the folder `corpus` (only `only_folds` when not empty). With an encoder
/// directory, the same encoder for every fold, its threshold calibrated per fold on the fold's
/// training subjects (best F1); with a folder of `fold-F` encoders, each fold's own; with raw
/// pixels, calibrated like a single encoder. `mirror_average` turns on mirror averaging.
pub fn evaluate_orl(
    corpus: &Path,
    label_column: &str,
    only_folds: &[usize],
    with: &Scored,
    mirror_average: bool,
    on: &Observer,
) -> Result<ProtocolEvalReport<OrlReport>> {
    let f = ImageFolder::scan(corpus, label_column)?;
    let folds = super::select_orl_folds(orl_folds(&f)?, only_folds)?;
    // An encoder directory (not a folder of fold-F encoders): the same encoder for every fold,
    // so the faces are embedded once.
    let single = match with {
        Scored::Encoder(base) if base.join(CONFIG_FILE).exists() => {
            let mut m = load_model(base, "encoder")?;
            m.config.preprocess.mirror_average |= mirror_average;
            let set = load_set(&f.items, &f.classes, &m.config.preprocess)?;
            let emb = m.embed_pixels(&set.pixels, set.n, 64)?;
            Some((m, emb))
        }
        _ => None,
    };
    let mut reps = Vec::new();
    for fold in &folds {
        let r = match (with, &single) {
            (Scored::RawPixels(pre), _) => {
                let items = f.with_labels(&fold.unseen_subjects);
                let set = load_set(&items, &fold.unseen_subjects, pre)?;
                let emb = raw_embeddings(&set, pre);
                // Raw pixels have no calibrated threshold: use the fold's training subjects'
                // pairs (best F1), as an encoder's would be.
                let tr = f.with_labels(&fold.train_subjects);
                let tset = load_set(&tr, &fold.train_subjects, pre)?;
                let temb = raw_embeddings(&tset, pre);
                let (thr, _) = calibrate_pairs(&temb, set.rows * set.cols, &tset.labels, None)?;
                let dim = set.rows * set.cols;
                orl_fold_report(fold.fold, &emb, dim, fold.unseen_subjects.len(), 10, thr)?
            }
            (Scored::Encoder(_), Some((m, all_emb))) => {
                // One encoder for every fold (a pretrained one that saw none of these people):
                // its threshold is calibrated, per fold, on the pairs of the fold's training
                // subjects (best F1), never on the unseen ones. All faces were embedded once;
                // each fold takes its rows.
                let dim = m.config.dim;
                let rows = |subjects: &[String]| -> (Vec<f32>, Vec<u32>) {
                    let mut e = Vec::new();
                    let mut l = Vec::new();
                    for (i, it) in f.items.iter().enumerate() {
                        if let Some(c) = subjects.iter().position(|s| s == &it.label) {
                            e.extend_from_slice(&all_emb[i * dim..(i + 1) * dim]);
                            l.push(c as u32);
                        }
                    }
                    (e, l)
                };
                let (temb, tlab) = rows(&fold.train_subjects);
                let (thr, _) = calibrate_pairs(&temb, dim, &tlab, None)?;
                let (uemb, _) = rows(&fold.unseen_subjects);
                orl_fold_report(fold.fold, &uemb, dim, fold.unseen_subjects.len(), 10, thr)?
            }
            (Scored::Encoder(base), None) => {
                let dir = base.join(format!("fold-{}", fold.fold));
                let mut m = load_model(&dir, &format!("the fold-{} encoder", fold.fold))?;
                m.config.preprocess.mirror_average |= mirror_average;
                orl_fold_with_model(&f, fold, &m)?
            }
        };
        reps.push(r);
    }
    let report = orl_report(reps);
    on(Progress::Line(orl_summary(&report)));
    Ok(ProtocolEvalReport {
        report,
        threshold_source: None,
        model: with.name(),
    })
}

/// `eval --protocol orl|signatures` on `corpus` (the user's word: `mnist` means the
/// protocol's default): with `model` (a trained encoder; for ORL a folder of `fold-0..fold-3`
/// encoders; default the protocol's shipped one, named on `on`) or, with `raw`, raw pixels
/// preprocessed as `opts` say. The report as JSON, with the run's `seconds`.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_protocol(
    p: Protocol,
    corpus: &str,
    model: Option<&Path>,
    raw: bool,
    opts: &FolderOptions,
    agg: Aggregate,
    test_writers: &[usize],
    on: &Observer,
) -> Result<serde_json::Value> {
    if p == Protocol::SignaturesOnline {
        return Err(Error::InvalidArgument(
            "--protocol signatures-online is evaluated by the online scorers, not an image encoder"
                .into(),
        ));
    }
    let sw = crate::timing::Stopwatch::start();
    let corpus = p.corpus_or_default(corpus);
    let shipped;
    let with = match (model, raw) {
        (_, true) => Scored::RawPixels(folder_preprocess(opts, p == Protocol::Signatures)?),
        (Some(m), false) => Scored::Encoder(m),
        (None, false) => {
            shipped = p.default_model().ok_or_else(|| Error::InvalidArgument(
                "no shipped encoder for this protocol: pass --model DIR (made by `twindex train image --protocol ...`) or --raw".into(),
            ))?;
            on(Progress::Line(format!("encoder: {}", shipped.display())));
            Scored::Encoder(&shipped)
        }
    };
    let mut v = match p {
        Protocol::Orl => serde_json::to_value(evaluate_orl(
            &corpus,
            &opts.label_column,
            &opts.folds,
            &with,
            opts.mirror_average,
            on,
        )?),
        _ => {
            let (train_writers, dev_writers) = opts.signatures.eval_writers()?;
            let run = crate::eval::signatures::SignatureEvalRun {
                corpus: &corpus,
                with: &with,
                aggregate: agg,
                test_writers: test_writers.to_vec(),
                dev_writers,
                train_writers,
            };
            serde_json::to_value(crate::eval::signatures::evaluate_signature_corpus(
                &run, on,
            )?)
        }
    }
    .map_err(|e| Error::Msg(format!("the protocol's report as JSON: {e}")))?;
    v["seconds"] = serde_json::json!(sw.wall());
    Ok(v)
}

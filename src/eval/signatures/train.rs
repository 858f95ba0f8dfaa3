//! Training one offline signature encoder on the training writers of several corpora at once
//! (`train image --protocol signatures --signature-corpus DIR:TRAIN:DEV ...`): every writer's
//! genuine signatures are a class and his forgeries another, named by corpus; the epoch is
//! chosen on the dev writers of every corpus (ROC-AUC over their pairs), and the three
//! thresholds of the protocol are chosen there too (each at the pooled dev equal error rate).
//! Test writers are never read.

use super::{
    check_disjoint, check_in_corpus, eer_distance_threshold, embed, of_writers, pair_figures,
    pair_scores, parse_writers, signet_pairs, writer_ranges, Embedder, PairFigures,
};
use crate::calibration::{CalibrationMethod, EncoderCalibration};
use crate::corpus::folder::FolderItem;
use crate::corpus::signatures::Signature;
use crate::error::{Error, Result};
use crate::eval::protocol::{read_signatures, signature_scores, train_split, Aggregate};
use crate::index::Metric;
use crate::model::{ImageModel, Preprocess};
use crate::train::{EnsembleTrainConfig, ImageTrainConfig, Observer, Progress};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One corpus of a training run: its folder, training writers and dev writers.
#[derive(Debug, Clone, PartialEq)]
pub struct SignatureSource {
    pub dir: PathBuf,
    pub train: Vec<usize>,
    pub dev: Vec<usize>,
}

impl SignatureSource {
    /// The corpus's short name (its folder's name), which prefixes its class names.
    pub fn tag(&self) -> String {
        corpus_tag(&self.dir)
    }

    /// `NAME:TRAIN:DEV` as a training record writes it.
    pub fn record(&self) -> String {
        format!(
            "{}:{}:{}",
            self.tag(),
            writer_ranges(&self.train),
            writer_ranges(&self.dev)
        )
    }
}

/// A corpus folder's short name: its last path component.
pub fn corpus_tag(dir: &Path) -> String {
    dir.canonicalize()
        .unwrap_or_else(|_| dir.to_path_buf())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `DIR:TRAIN:DEV` (e.g. `../shared/corpora/signatures-cedar:1-30:31-35`).
pub fn parse_source(s: &str) -> Result<SignatureSource> {
    let mut parts = s.rsplitn(3, ':');
    let (dev, train, dir) = (parts.next(), parts.next(), parts.next());
    let (Some(dev), Some(train), Some(dir)) = (dev, train, dir) else {
        return Err(Error::InvalidArgument(format!(
            "--signature-corpus {s:?}: expected DIR:TRAIN:DEV, e.g. ../shared/corpora/signatures-cedar:1-30:31-35"
        )));
    };
    Ok(SignatureSource {
        dir: PathBuf::from(dir),
        train: parse_writers("--signature-corpus TRAIN", train)?,
        dev: parse_writers("--signature-corpus DEV", dev)?,
    })
}

/// The training sources an encoder's record lists (`NAME:TRAIN:DEV; ...`), by corpus name.
pub fn recorded_sources(record: &str) -> Vec<(String, Vec<usize>, Vec<usize>)> {
    record
        .split(';')
        .filter_map(|e| {
            let s = parse_source(e.trim()).ok()?;
            Some((s.dir.display().to_string(), s.train, s.dev))
        })
        .collect()
}

/// The dev figures of one corpus at the pooled thresholds.
#[derive(Debug, Clone, Serialize)]
pub struct SourceDevReport {
    pub corpus: String,
    pub train_writers: String,
    pub dev_writers: String,
    pub dev: PairFigures,
    /// The bank's EER on the dev writers (5 references, nearest), one threshold.
    pub dev_bank_eer_global: f64,
    /// The same with the per-writer threshold (spread of the references).
    pub dev_bank_eer_per_writer: f64,
}

/// What a multi-corpus training run reports.
#[derive(Debug, Clone, Serialize)]
pub struct SignatureTrainReport {
    pub model: String,
    pub seed: u64,
    pub selected_epoch: Option<usize>,
    pub pair_threshold: f32,
    pub threshold: f32,
    pub spread_threshold: f32,
    pub sources: Vec<SourceDevReport>,
    pub wall_seconds: f64,
    pub cpu_seconds: f64,
}

/// Train one encoder on `sources`, choose its epoch and thresholds on their dev writers, save
/// it to `out`.
#[allow(clippy::too_many_arguments)]
pub fn train_signature_corpora(
    sources: &[SignatureSource],
    pre: &Preprocess,
    cfg: &ImageTrainConfig,
    ens: Option<&EnsembleTrainConfig>,
    agg: Aggregate,
    command: &str,
    out: &Path,
    on: &Observer,
) -> Result<SignatureTrainReport> {
    if sources.is_empty() {
        return Err(Error::InvalidArgument(
            "--signature-corpus: at least one DIR:TRAIN:DEV".into(),
        ));
    }
    let mut all: Vec<(SignatureSource, Vec<Signature>)> = Vec::new();
    let (mut tr, mut dv) = (Vec::new(), Vec::new());
    for s in sources {
        let sigs = read_signatures(&s.dir)?;
        check_in_corpus(&sigs, &s.train, "--signature-corpus TRAIN", &s.dir)?;
        check_in_corpus(&sigs, &s.dev, "--signature-corpus DEV", &s.dir)?;
        check_disjoint(&s.train, "TRAIN", &s.dev, "DEV")?;
        let tag = s.tag();
        if all.iter().any(|(o, _)| o.tag() == tag) {
            return Err(Error::InvalidArgument(format!(
                "--signature-corpus: {tag} is named twice"
            )));
        }
        let relabel = |x: &Signature| FolderItem {
            path: x.item.path.clone(),
            label: format!("{tag}/{}", x.item.label),
        };
        tr.extend(of_writers(&sigs, &s.train).iter().map(relabel));
        dv.extend(of_writers(&sigs, &s.dev).iter().map(relabel));
        on(Progress::Line(format!(
            "{tag}: training writers {}, dev writers {}",
            writer_ranges(&s.train),
            writer_ranges(&s.dev)
        )));
        all.push((s.clone(), sigs));
    }
    let record: Vec<String> = all.iter().map(|(s, _)| s.record()).collect();
    let record = record.join("; ");
    // The epoch is chosen on the dev writers' SigNet pairs (genuine-genuine vs
    // genuine-forged of one writer), which needs each writer's two classes side by side.
    let dev_classes = crate::corpus::folder::classes_of(&dv);
    check_class_pairs(&dev_classes)?;
    let mut cfg = cfg.clone();
    cfg.dev_score = Some(signet_dev_roc_auc);
    let cfg = &cfg;
    let mut o = train_split(&tr, &dv, pre, cfg, ens, &record, None, "signatures", on)?;
    // The thresholds, pooled over every corpus's dev writers.
    let (mut ps, mut py, mut bd, mut bdn, mut bg) = (vec![], vec![], vec![], vec![], vec![]);
    let mut per = Vec::new();
    let embedder = Embedder::Model(&o.model);
    for (s, sigs) in &all {
        let dev = of_writers(sigs, &s.dev);
        let (emb, dim) = embed(&dev, &embedder)?;
        let (a, b) = pair_scores(&emb, dim, &signet_pairs(&dev, &s.dev));
        let (d, g, _) = signature_scores(&dev, &emb, dim, 5, agg)?;
        let (dn, _, _) = signature_scores(&dev, &emb, dim, 5, Aggregate::MinNorm)?;
        per.push((s, a.clone(), b.clone(), d.clone(), dn.clone(), g.clone()));
        ps.extend(a);
        py.extend(b);
        bd.extend(d);
        bdn.extend(dn);
        bg.extend(g);
    }
    let pair_threshold = eer_distance_threshold(&ps, &py)?;
    let neg = |d: &[f32]| d.iter().map(|&x| -x).collect::<Vec<f32>>();
    let global = -crate::eval::eer(&neg(&bd), &bg)?.1;
    let spread = -crate::eval::eer(&neg(&bdn), &bg)?.1;
    let mut sources_out = Vec::new();
    for (s, a, b, d, dn, g) in per {
        let dev = pair_figures(&a, &b, pair_threshold)?;
        let r = SourceDevReport {
            corpus: s.tag(),
            train_writers: writer_ranges(&s.train),
            dev_writers: writer_ranges(&s.dev),
            dev,
            dev_bank_eer_global: crate::eval::eer(&neg(&d), &g)?.0,
            dev_bank_eer_per_writer: crate::eval::eer(&neg(&dn), &g)?.0,
        };
        on(Progress::Line(format!(
            "{} dev writers {}: accuracy {:.4} (FAR {:.4}, FRR {:.4}) at the pooled threshold, EER {:.4}, ROC-AUC {:.4}; bank EER {:.4} global, {:.4} per writer",
            r.corpus, r.dev_writers, r.dev.pair_accuracy, r.dev.far, r.dev.frr, r.dev.eer, r.dev.roc_auc, r.dev_bank_eer_global, r.dev_bank_eer_per_writer
        )));
        sources_out.push(r);
    }
    // The stored threshold decides `verify` (nearest of a writer's references); its record in
    // the one score convention (similarity of the metric).
    let sims: Vec<f32> = bd.iter().map(|&d| Metric::L2.similarity(d)).collect();
    let mut rep = crate::eval::calibrate_best_f1(&sims, &bg)?;
    rep.threshold = Metric::L2.similarity(global);
    rep.method = CalibrationMethod::Eer;
    let rep = rep.measured_on(&sims, &bg)?;
    let m = &mut o.model;
    m.config.threshold = global;
    m.config.metric = Metric::L2;
    m.config.calibration = Some(EncoderCalibration {
        report: rep,
        aggregate: Some(agg),
        writers: Some(format!(
            "dev writers {} (5 references each, genuine 1-5; every other signature of the writer questioned)",
            record
        )),
        pair_threshold: Some(pair_threshold),
        spread_threshold: Some(spread),
    });
    m.config.training.corpus = record;
    m.config.training.command = Some(command.to_string());
    m.save(out)?;
    Ok(SignatureTrainReport {
        model: out.display().to_string(),
        seed: cfg.seed,
        selected_epoch: m.config.training.selected_epoch,
        pair_threshold,
        threshold: global,
        spread_threshold: spread,
        sources: sources_out,
        wall_seconds: o.wall_seconds,
        cpu_seconds: o.cpu_seconds,
    })
}

/// The dev classes must come in pairs `W`, `W-forged` (class `2k` a writer's genuine
/// signatures, `2k + 1` his forgeries), as [`signet_dev_roc_auc`] reads them.
fn check_class_pairs(classes: &[String]) -> Result<()> {
    let ok = classes.len().is_multiple_of(2)
        && classes
            .chunks(2)
            .all(|c| c[1] == format!("{}-forged", c[0]));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "signature dev writers need both genuine and forged signatures each; dev classes: {}",
            classes.join(", ")
        )))
    }
}

/// ROC-AUC of the dev writers' SigNet pairs: rows of class `2k` (a writer's genuine
/// signatures) against each other (positive) and against class `2k + 1` (his forgeries,
/// negative). The training loop's dev score for signatures.
pub fn signet_dev_roc_auc(emb: &[f32], dim: usize, labels: &[u32]) -> Result<f64> {
    let row = |i: usize| &emb[i * dim..(i + 1) * dim];
    let (mut s, mut y) = (Vec::new(), Vec::new());
    for i in 0..labels.len() {
        if labels[i] % 2 == 1 {
            continue;
        }
        for j in 0..labels.len() {
            let (a, b) = (labels[i], labels[j]);
            if a / 2 != b / 2 || (b == a && j <= i) {
                continue;
            }
            s.push(Metric::L2.similarity(Metric::L2.distance(row(i), row(j))));
            y.push(a == b);
        }
    }
    crate::eval::roc_auc(&s, &y)
}

/// The encoder's training writers of the corpus `dir`, if its record names that corpus.
pub fn trained_writers_of(model: &ImageModel, dir: &Path) -> Option<Vec<usize>> {
    let tag = corpus_tag(dir);
    recorded_sources(&model.config.training.corpus)
        .into_iter()
        .find(|(t, _, _)| *t == tag)
        .map(|(_, mut tr, dev)| {
            tr.extend(dev);
            tr
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Classes 0 (genuine of writer A), 1 (A's forgeries): 1-d rows 0.0, 0.1 (class 0) and
    /// 5.0 (class 1) give genuine pair distance 0.1 and forged pairs 5.0, 4.9: AUC 1. Class 2
    /// (writer B's genuine) is never compared with A's rows.
    #[test]
    fn signet_dev_score_by_hand() {
        let auc = signet_dev_roc_auc(&[0.0, 0.1, 5.0, 0.05, 9.0], 1, &[0, 0, 1, 2, 3]).unwrap();
        assert_eq!(auc, 1.0);
        // Now A's genuine pair is 5 apart and his forgery 0.05 and 4.95 from them: both forged
        // pairs beat the genuine one; writer B's forged pair (0.0 vs 9.0, distance 9) does
        // not: the positive outranks 1 of 3 negatives, AUC 1/3.
        let auc = signet_dev_roc_auc(&[0.0, 5.0, 0.05, 0.0, 9.0], 1, &[0, 0, 1, 2, 3]).unwrap();
        assert!((auc - 1.0 / 3.0).abs() < 1e-12, "{auc}");
        assert!(check_class_pairs(&["a".into(), "a-forged".into()]).is_ok());
        assert!(check_class_pairs(&["a".into(), "b".into()]).is_err());
    }

    #[test]
    fn sources_parse_and_record() {
        let s = parse_source("../x/signatures-cedar:1-30:31-35").unwrap();
        assert_eq!(s.dir, PathBuf::from("../x/signatures-cedar"));
        assert_eq!(s.train, (1..=30).collect::<Vec<_>>());
        assert_eq!(s.record(), "signatures-cedar:1-30:31-35");
        let r = recorded_sources("a:1-3:4-5; b:1-2:3");
        assert_eq!(r[1], ("b".to_string(), vec![1, 2], vec![3]));
        assert!(parse_source("nocolons")
            .unwrap_err()
            .to_string()
            .contains("DIR:TRAIN:DEV"));
    }
}

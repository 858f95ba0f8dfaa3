//! The offline signature protocol over any signature folder ([`crate::corpus::signatures`]):
//! writer-independent (train, dev and test writers disjoint, each a flag), scored two ways.
//!
//! - **SigNet's pairs** (Dey et al. 2017): every genuine-genuine pair and every
//!   genuine-forged pair of each test writer (BHSig260: 276 + 720 a writer), scored by the
//!   distance of the two embeddings. `pair_accuracy` is SigNet's accuracy,
//!   `(1 - FAR + 1 - FRR) / 2`, at a threshold chosen on dev writers (the equal-error point of
//!   their pairs); `far`, `frr` there; `eer` and `roc_auc` need no threshold.
//! - **The bank's view**: genuine samples 1-5 of a writer are the enrolled references; every
//!   other signature of the writer is questioned (genuine: accept; forged: reject), scored by
//!   its distance to the nearest reference. `eer_global`: one threshold for everybody.
//!   `eer_per_writer`: a threshold per writer set from his references alone, as `k` times the
//!   mean distance among his 5 references (the nearest-reference distance divided by that
//!   spread, one `k` for all); `k` is chosen on dev writers.
//!
//! Training runs on several corpora at once are in [`train`].

mod train;

pub use train::{
    corpus_tag, parse_source, recorded_sources, train_signature_corpora, trained_writers_of,
    SignatureSource, SignatureTrainReport, SourceDevReport,
};

use super::protocol::{raw_embeddings, read_signatures, signature_scores, Aggregate, Scored};
use super::{eer, far_frr_at, roc_auc};
use crate::corpus::signatures::{writers_of, Signature};
use crate::error::{Error, Result};
use crate::index::Metric;
use crate::model::{ImageModel, Preprocess};
use crate::train::{Observer, Progress};
use serde::Serialize;
use std::path::Path;

/// The signature protocol's writer flags (`train image` and `eval --protocol signatures`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SignatureArgs {
    /// --protocol signatures: the training writers (A-B). `eval` refuses test or dev writers
    /// among them.
    #[arg(long)]
    pub train_writers: Option<String>,
    /// --protocol signatures: dev writers (A-B): `train` chooses the epoch and the thresholds
    /// on them; `eval` recalibrates the thresholds on them (default: the encoder's own).
    #[arg(long)]
    pub dev_writers: Option<String>,
    /// `train image --protocol signatures`: a corpus to train on as DIR:TRAIN:DEV, e.g.
    /// ../shared/corpora/signatures-cedar:1-30:31-35 (repeatable; several train one encoder).
    #[arg(long = "signature-corpus", value_name = "DIR:TRAIN:DEV")]
    pub corpora: Vec<String>,
}

impl SignatureArgs {
    /// The corpora a training run reads: every `--signature-corpus`, or else `corpus` with
    /// `--train-writers` (default 1-16) and `--dev-writers` (default 17-20: SVC2004's split).
    pub fn sources(&self, corpus: &str) -> Result<Vec<SignatureSource>> {
        if !self.corpora.is_empty() {
            if self.train_writers.is_some() || self.dev_writers.is_some() {
                return Err(Error::InvalidArgument(
                    "--signature-corpus DIR:TRAIN:DEV names its own writers: drop --train-writers / --dev-writers".into(),
                ));
            }
            return self.corpora.iter().map(|s| parse_source(s)).collect();
        }
        let train = self.train_writers.as_deref().unwrap_or("1-16");
        let dev = self.dev_writers.as_deref().unwrap_or("17-20");
        Ok(vec![SignatureSource {
            dir: corpus.into(),
            train: parse_writers("--train-writers", train)?,
            dev: parse_writers("--dev-writers", dev)?,
        }])
    }

    /// The parsed `--train-writers` and `--dev-writers` of an evaluation.
    pub fn eval_writers(&self) -> Result<(Writers, Writers)> {
        let p = |flag, v: &Option<String>| v.as_deref().map(|s| parse_writers(flag, s)).transpose();
        Ok((
            p("--train-writers", &self.train_writers)?,
            p("--dev-writers", &self.dev_writers)?,
        ))
    }
}

/// An optional writer set (a flag not given: `None`).
pub type Writers = Option<Vec<usize>>;

/// Writers `A-B` (or `A`) of a flag, parsed; the error names the flag.
pub fn parse_writers(flag: &str, s: &str) -> Result<Vec<usize>> {
    super::pen_signatures::parse_writer_range(s)
        .map_err(|e| Error::InvalidArgument(format!("{flag}: {e}")))
}

/// `A-B` for a sorted list of writers (`A-B, C-D` when it has gaps).
pub use crate::query::add::id_ranges as writer_ranges;

/// Every writer of `writers` must be in the corpus `root` (whose signatures are `sigs`).
pub fn check_in_corpus(
    sigs: &[Signature],
    writers: &[usize],
    flag: &str,
    root: &Path,
) -> Result<()> {
    let have = writers_of(sigs);
    if let Some(w) = writers.iter().find(|w| !have.contains(w)) {
        return Err(Error::InvalidArgument(format!(
            "{flag} {}: writer {w} is not in {} (it has writers {})",
            writer_ranges(writers),
            root.display(),
            writer_ranges(&have)
        )));
    }
    Ok(())
}

/// Two writer sets of a writer-independent protocol must not share a writer.
pub fn check_disjoint(a: &[usize], a_flag: &str, b: &[usize], b_flag: &str) -> Result<()> {
    if let Some(w) = a.iter().find(|w| b.contains(w)) {
        return Err(Error::InvalidArgument(format!(
            "{a_flag} {} and {b_flag} {} overlap (writer {w}): the protocol is writer-independent",
            writer_ranges(a),
            writer_ranges(b)
        )));
    }
    Ok(())
}

/// SigNet's pairs of `writers`: for each, every genuine-genuine pair `(i, j, true)` and every
/// genuine-forged pair `(g, f, false)`, as indices into `sigs`.
pub fn signet_pairs(sigs: &[Signature], writers: &[usize]) -> Vec<(usize, usize, bool)> {
    let mut out = Vec::new();
    for &w in writers {
        let g: Vec<usize> = (0..sigs.len())
            .filter(|&i| sigs[i].writer == w && sigs[i].genuine)
            .collect();
        let f: Vec<usize> = (0..sigs.len())
            .filter(|&i| sigs[i].writer == w && !sigs[i].genuine)
            .collect();
        for (k, &a) in g.iter().enumerate() {
            for &b in &g[k + 1..] {
                out.push((a, b, true));
            }
        }
        for &a in &g {
            for &b in &f {
                out.push((a, b, false));
            }
        }
    }
    out
}

/// Similarities (`1 - L2 distance`, the one score convention) and labels of `pairs` of `emb`
/// rows of width `dim`.
pub fn pair_scores(
    emb: &[f32],
    dim: usize,
    pairs: &[(usize, usize, bool)],
) -> (Vec<f32>, Vec<bool>) {
    let row = |i: usize| &emb[i * dim..(i + 1) * dim];
    pairs
        .iter()
        .map(|&(a, b, same)| {
            (
                Metric::L2.similarity(Metric::L2.distance(row(a), row(b))),
                same,
            )
        })
        .unzip()
}

/// The distance threshold at the equal error rate of `scores` (similarities).
pub fn eer_distance_threshold(scores: &[f32], labels: &[bool]) -> Result<f32> {
    Ok(Metric::L2.distance_for_similarity(eer(scores, labels)?.1))
}

/// SigNet's figures on the test writers' pairs.
#[derive(Debug, Clone, Serialize)]
pub struct PairFigures {
    /// SigNet's accuracy `1 - (FAR + FRR) / 2` at `threshold` (chosen on dev writers).
    pub pair_accuracy: f64,
    /// Share of all pairs decided right at `threshold` (forged pairs outnumber genuine ones).
    pub pair_accuracy_unweighted: f64,
    pub far: f64,
    pub frr: f64,
    pub eer: f64,
    pub roc_auc: f64,
    /// The best `1 - (FAR + FRR) / 2` over every threshold of the test pairs themselves: how
    /// SigNet's tables read; optimistic, for comparison only.
    pub best_pair_accuracy_on_test: f64,
    /// The distance threshold (`distance <= threshold`: same writer, genuine).
    pub threshold: f32,
    pub n_genuine_pairs: usize,
    pub n_forged_pairs: usize,
}

/// SigNet's figures of pair similarities `scores` (genuine pair: `true`) at a distance
/// threshold.
pub fn pair_figures(scores: &[f32], same: &[bool], threshold: f32) -> Result<PairFigures> {
    let (far, frr) = far_frr_at(scores, same, Metric::L2.similarity(threshold))?;
    let (pos, neg) = (
        same.iter().filter(|&&s| s).count(),
        same.iter().filter(|&&s| !s).count(),
    );
    let right = (1.0 - frr) * pos as f64 + (1.0 - far) * neg as f64;
    let best = super::roc_curve(scores, same)?
        .iter()
        .map(|&(fpr, tpr, _)| (tpr + 1.0 - fpr) / 2.0)
        .fold(0.0f64, f64::max);
    Ok(PairFigures {
        pair_accuracy: 1.0 - (far + frr) / 2.0,
        pair_accuracy_unweighted: right / (pos + neg) as f64,
        far,
        frr,
        eer: eer(scores, same)?.0,
        roc_auc: roc_auc(scores, same)?,
        best_pair_accuracy_on_test: best,
        threshold,
        n_genuine_pairs: pos,
        n_forged_pairs: neg,
    })
}

/// The bank's view: 5 enrolled references, a questioned signature.
#[derive(Debug, Clone, Serialize)]
pub struct BankFigures {
    pub references: usize,
    /// How the distances to the references combine (`min`: the nearest).
    pub aggregate: Aggregate,
    /// One threshold for every writer: EER and ROC-AUC, FAR and FRR at the dev threshold.
    pub eer_global: f64,
    pub roc_auc_global: f64,
    pub threshold_global: f32,
    pub far_global: f64,
    pub frr_global: f64,
    /// A threshold per writer from his references alone: `spread_threshold` times the mean
    /// distance among his references (`spread_threshold` chosen on dev writers).
    pub eer_per_writer: f64,
    pub roc_auc_per_writer: f64,
    pub spread_threshold: f32,
    pub far_per_writer: f64,
    pub frr_per_writer: f64,
    pub n_genuine: usize,
    pub n_forged: usize,
}

/// The normalised aggregate of `agg` (min -> min-norm, mean -> mean-norm).
fn normalised(agg: Aggregate) -> Aggregate {
    match agg {
        Aggregate::Min | Aggregate::MinNorm => Aggregate::MinNorm,
        Aggregate::Mean | Aggregate::MeanNorm => Aggregate::MeanNorm,
    }
}

/// The plain aggregate of `agg` (min-norm -> min, mean-norm -> mean).
fn plain(agg: Aggregate) -> Aggregate {
    match agg {
        Aggregate::Min | Aggregate::MinNorm => Aggregate::Min,
        Aggregate::Mean | Aggregate::MeanNorm => Aggregate::Mean,
    }
}

/// The bank's thresholds chosen on dev writers: (global distance threshold, spread multiple),
/// each at the dev writers' equal error rate.
pub fn bank_thresholds(
    sigs: &[Signature],
    emb: &[f32],
    dim: usize,
    agg: Aggregate,
) -> Result<(f32, f32)> {
    let (d, g, _) = signature_scores(sigs, emb, dim, 5, plain(agg))?;
    let (dn, _, _) = signature_scores(sigs, emb, dim, 5, normalised(agg))?;
    let neg = |d: &[f32]| d.iter().map(|&x| -x).collect::<Vec<f32>>();
    Ok((-eer(&neg(&d), &g)?.1, -eer(&neg(&dn), &g)?.1))
}

/// The bank's view of `sigs` (only the test writers) at dev-chosen thresholds.
pub fn bank_figures(
    sigs: &[Signature],
    emb: &[f32],
    dim: usize,
    agg: Aggregate,
    thresholds: (f32, f32),
) -> Result<BankFigures> {
    let (d, g, _) = signature_scores(sigs, emb, dim, 5, plain(agg))?;
    let (dn, _, _) = signature_scores(sigs, emb, dim, 5, normalised(agg))?;
    // Scores as "greater: more alike" for the metrics: negated distances (the ratio is not a
    // distance of the metric, so no metric conversion here).
    let neg = |d: &[f32]| d.iter().map(|&x| -x).collect::<Vec<f32>>();
    let (s, sn) = (neg(&d), neg(&dn));
    let (far_g, frr_g) = far_frr_at(&s, &g, -thresholds.0)?;
    let (far_w, frr_w) = far_frr_at(&sn, &g, -thresholds.1)?;
    Ok(BankFigures {
        references: 5,
        aggregate: plain(agg),
        eer_global: eer(&s, &g)?.0,
        roc_auc_global: roc_auc(&s, &g)?,
        threshold_global: thresholds.0,
        far_global: far_g,
        frr_global: frr_g,
        eer_per_writer: eer(&sn, &g)?.0,
        roc_auc_per_writer: roc_auc(&sn, &g)?,
        spread_threshold: thresholds.1,
        far_per_writer: far_w,
        frr_per_writer: frr_w,
        n_genuine: g.iter().filter(|&&x| x).count(),
        n_forged: g.iter().filter(|&&x| !x).count(),
    })
}

/// The signatures of `writers` (in corpus order).
pub fn of_writers(sigs: &[Signature], writers: &[usize]) -> Vec<Signature> {
    sigs.iter()
        .filter(|s| writers.contains(&s.writer))
        .cloned()
        .collect()
}

/// The three thresholds the protocol decides with, and where they came from.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub pair: f32,
    pub global: f32,
    pub spread: f32,
}

/// Embed `sigs` with what is scored: the encoder, or raw pixels (`pre`).
pub fn embed(sigs: &[Signature], with: &Embedder<'_>) -> Result<(Vec<f32>, usize)> {
    let items: Vec<_> = sigs.iter().map(|s| s.item.clone()).collect();
    let classes = crate::corpus::folder::classes_of(&items);
    match with {
        Embedder::Model(m) => {
            let set = crate::model::image::load_set(&items, &classes, &m.config.preprocess)?;
            Ok((m.embed_pixels(&set.pixels, set.n, 128)?, m.config.dim))
        }
        Embedder::Raw(pre) => {
            let set = crate::model::image::load_set(&items, &classes, pre)?;
            Ok((raw_embeddings(&set, pre), set.rows * set.cols))
        }
    }
}

/// An encoder or raw pixels, ready to embed.
pub enum Embedder<'a> {
    Model(&'a ImageModel),
    Raw(Preprocess),
}

/// The three thresholds chosen on `dev` signatures (each at the dev equal error rate).
pub fn dev_thresholds(
    dev: &[Signature],
    emb: &[f32],
    dim: usize,
    agg: Aggregate,
) -> Result<Thresholds> {
    let writers = writers_of(dev);
    let (s, y) = pair_scores(emb, dim, &signet_pairs(dev, &writers));
    let pair = eer_distance_threshold(&s, &y)?;
    let (global, spread) = bank_thresholds(dev, emb, dim, agg)?;
    Ok(Thresholds {
        pair,
        global,
        spread,
    })
}

/// What `eval --protocol signatures` runs.
pub struct SignatureEvalRun<'a> {
    pub corpus: &'a Path,
    pub with: &'a Scored<'a>,
    pub aggregate: Aggregate,
    pub test_writers: Vec<usize>,
    pub dev_writers: Option<Vec<usize>>,
    pub train_writers: Option<Vec<usize>>,
}

/// What `eval --protocol signatures` reports.
#[derive(Debug, Clone, Serialize)]
pub struct SignatureEvalReport {
    pub protocol: &'static str,
    pub corpus: String,
    pub model: String,
    pub test_writers: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev_writers: Option<String>,
    /// Where the thresholds came from: the encoder's calibration (its dev writers), or the
    /// `--dev-writers` of this corpus.
    pub threshold_source: String,
    #[serde(flatten)]
    pub pairs: PairFigures,
    pub bank: BankFigures,
    pub seconds: f64,
    pub cpu_seconds: f64,
}

/// `eval --protocol signatures`: SigNet's pairs and the bank's view on the test writers.
pub fn evaluate_signature_corpus(
    run: &SignatureEvalRun,
    on: &Observer,
) -> Result<SignatureEvalReport> {
    let sw = crate::timing::Stopwatch::start();
    let sigs = read_signatures(run.corpus)?;
    check_in_corpus(&sigs, &run.test_writers, "--test-writers", run.corpus)?;
    if let Some(d) = &run.dev_writers {
        check_in_corpus(&sigs, d, "--dev-writers", run.corpus)?;
        check_disjoint(d, "--dev-writers", &run.test_writers, "--test-writers")?;
    }
    if let Some(t) = &run.train_writers {
        check_disjoint(t, "--train-writers", &run.test_writers, "--test-writers")?;
        if let Some(d) = &run.dev_writers {
            check_disjoint(t, "--train-writers", d, "--dev-writers")?;
        }
    }
    let model;
    let (embedder, stored) = match run.with {
        Scored::Encoder(dir) => {
            model = ImageModel::load(dir)
                .map_err(|e| Error::Msg(format!("loading encoder {}: {e}", dir.display())))?;
            let m = &model;
            let stored = m.config.calibration.as_ref().and_then(|c| {
                Some(Thresholds {
                    pair: c.pair_threshold?,
                    global: m.config.threshold,
                    spread: c.spread_threshold?,
                })
            });
            if let Some(tr) = trained_writers_of(m, run.corpus) {
                check_disjoint(
                    &tr,
                    "the encoder's training and dev writers",
                    &run.test_writers,
                    "--test-writers",
                )?;
            }
            (Embedder::Model(m), stored)
        }
        Scored::RawPixels(pre) => (Embedder::Raw(pre.clone()), None),
    };
    let test = of_writers(&sigs, &run.test_writers);
    let (thr, source) = match (&run.dev_writers, stored) {
        (Some(d), _) => {
            let dev = of_writers(&sigs, d);
            let (emb, dim) = embed(&dev, &embedder)?;
            (
                dev_thresholds(&dev, &emb, dim, run.aggregate)?,
                format!("calibrated on --dev-writers {} of this corpus", writer_ranges(d)),
            )
        }
        (None, Some(t)) => (t, "the encoder's own (calibrated on its dev writers)".to_string()),
        (None, None) => {
            return Err(Error::InvalidArgument(format!(
                "{}: no calibrated signature thresholds to decide with: pass --dev-writers A-B (writers of this corpus outside --test-writers)",
                run.with_name()
            )))
        }
    };
    let (emb, dim) = embed(&test, &embedder)?;
    let (s, y) = pair_scores(&emb, dim, &signet_pairs(&test, &run.test_writers));
    let pairs = pair_figures(&s, &y, thr.pair)?;
    let bank = bank_figures(&test, &emb, dim, run.aggregate, (thr.global, thr.spread))?;
    let r = SignatureEvalReport {
        protocol: "signatures",
        corpus: run.corpus.display().to_string(),
        model: run.with_name(),
        test_writers: writer_ranges(&run.test_writers),
        dev_writers: run.dev_writers.as_deref().map(writer_ranges),
        threshold_source: source,
        pairs,
        bank,
        seconds: sw.wall(),
        cpu_seconds: sw.cpu(),
    };
    on(Progress::Line(summary(&r)));
    Ok(r)
}

impl SignatureEvalRun<'_> {
    fn with_name(&self) -> String {
        match self.with {
            Scored::Encoder(p) => p.display().to_string(),
            Scored::RawPixels(_) => "raw pixels".into(),
        }
    }
}

/// One line of a signature evaluation.
pub fn summary(r: &SignatureEvalReport) -> String {
    let (p, b) = (&r.pairs, &r.bank);
    format!(
        "signatures, writers {} ({} genuine + {} forged pairs): accuracy {:.4} (FAR {:.4}, FRR {:.4}) at the dev threshold, EER {:.4}, ROC-AUC {:.4}; bank (5 references, {}): EER {:.4} global, {:.4} per writer",
        r.test_writers,
        p.n_genuine_pairs,
        p.n_forged_pairs,
        p.pair_accuracy,
        p.far,
        p.frr,
        p.eer,
        p.roc_auc,
        b.aggregate.name(),
        b.eer_global,
        b.eer_per_writer
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::folder::FolderItem;

    fn sig(w: usize, s: usize, g: bool) -> Signature {
        Signature {
            item: FolderItem {
                path: format!("{w}/{s}{g}").into(),
                label: String::new(),
            },
            writer: w,
            sample: s,
            genuine: g,
        }
    }

    /// SigNet's pair counts: n genuine give n(n-1)/2 genuine pairs and n x f forged pairs.
    #[test]
    fn signet_pair_counts() {
        let mut sigs = Vec::new();
        for w in [1, 2] {
            sigs.extend((1..=4).map(|s| sig(w, s, true)));
            sigs.extend((1..=3).map(|s| sig(w, s, false)));
        }
        let p = signet_pairs(&sigs, &[1, 2]);
        // Per writer 4*3/2 = 6 genuine and 4*3 = 12 forged pairs.
        assert_eq!(p.iter().filter(|x| x.2).count(), 12);
        assert_eq!(p.iter().filter(|x| !x.2).count(), 24);
        assert!(p.iter().all(|&(a, b, _)| sigs[a].writer == sigs[b].writer));
        assert_eq!(writer_ranges(&[1, 2, 3, 7, 9, 10]), "1-3, 7, 9-10");
        let e = check_disjoint(&[1, 2, 3], "--train-writers", &[3, 4], "--test-writers")
            .unwrap_err()
            .to_string();
        assert!(e.contains("overlap (writer 3)"), "{e}");
    }

    /// SigNet's accuracy by hand: similarities of 2 genuine pairs {0.9, 0.4} and 2 forged
    /// {0.5, 0.1}; at distance threshold 0.55 (similarity >= 0.45) one genuine pair is
    /// rejected (FRR 1/2) and one forged accepted (FAR 1/2): accuracy 1 - (1/2 + 1/2)/2 = 0.5,
    /// unweighted 2/4. Best over thresholds: similarity >= 0.9 gives TPR 1/2, FPR 0: 0.75.
    #[test]
    fn pair_figures_by_hand() {
        let f = pair_figures(&[0.9, 0.4, 0.5, 0.1], &[true, true, false, false], 0.55).unwrap();
        assert_eq!((f.far, f.frr), (0.5, 0.5));
        assert_eq!(f.pair_accuracy, 0.5);
        assert_eq!(f.pair_accuracy_unweighted, 0.5);
        assert_eq!(f.best_pair_accuracy_on_test, 0.75);
        assert_eq!(f.roc_auc, 0.75);
    }

    /// The bank's per-writer threshold removes a writer's scale: writer 2's signatures are 10x
    /// as spread as writer 1's, so one global threshold cannot separate both, the spread-scaled
    /// one can. 1-d embeddings: references at 0, 1, 2, 3, 4 (writer 1; mean pairwise distance
    /// 2) and 0, 10, ..., 40 (writer 2; 20); genuine questioned at 4.5 / 45, forged at 9 / 90.
    /// Nearest-reference distances: genuine 0.5, 5; forged 5, 50: global EER > 0. Divided by
    /// the spread: genuine 0.25, 0.25; forged 2.5, 2.5: EER 0.
    #[test]
    fn bank_per_writer_threshold_by_hand() {
        let mut sigs = Vec::new();
        let mut emb = Vec::new();
        for (w, scale) in [(1, 1.0f32), (2, 10.0)] {
            for s in 1..=5 {
                sigs.push(sig(w, s, true));
                emb.push((s - 1) as f32 * scale);
            }
            sigs.push(sig(w, 6, true));
            emb.push(4.5 * scale);
            sigs.push(sig(w, 1, false));
            emb.push(9.0 * scale);
        }
        let b = bank_figures(&sigs, &emb, 1, Aggregate::Min, (1.0, 1.0)).unwrap();
        assert!(b.eer_global > 0.0, "{}", b.eer_global);
        assert_eq!(b.eer_per_writer, 0.0);
        // At k = 1: genuine 0.25 accepted, forged 2.5 rejected.
        assert_eq!((b.far_per_writer, b.frr_per_writer), (0.0, 0.0));
        // At the global distance 1.0: writer 2's genuine (5) rejected, writer 1's forged (5)
        // rejected: FAR 0, FRR 1/2.
        assert_eq!((b.far_global, b.frr_global), (0.0, 0.5));
        let (tg, ts) = bank_thresholds(&sigs, &emb, 1, Aggregate::Min).unwrap();
        assert!(ts > 0.25 && ts < 2.5, "{ts}");
        assert!(tg > 0.0, "{tg}");
    }
}

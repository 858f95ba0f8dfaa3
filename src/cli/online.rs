//! Online signatures (pen trajectories): `train sequence`, `eval --protocol signatures-online`
//! and `verify --signature FILE --references FILE...`. Parse, call the library, print.

use super::common;
use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;
use std::path::{Path, PathBuf};
use twindex::corpus::trajectory::read_trajectory;
use twindex::eval::online::{
    self, parse_writer_range, DtwScorer, OnlineCalibration, OnlineCorpus, OnlineReport, Scorer,
};
use twindex::eval::protocol::Aggregate;
use twindex::model::pen::{PenFeature, PenPreprocess, Resample, ALL_FEATURES};
use twindex::model::sequence::{SequenceModel, SequenceModelConfig, SequenceNetConfig};
use twindex::train::sequence::{train_sequence, SequenceItem, SequenceTrainConfig};
use twindex::train::{LossKind, Miner};

/// The corpus read by default: SVC2004 Task 1 trajectories in ../shared.
pub fn default_corpus() -> PathBuf {
    common::repo_root().join("../shared/corpora/signatures-svc2004-online")
}

/// The shipped sequence encoder, if present.
pub fn default_model() -> Option<PathBuf> {
    let d = common::repo_root().join("corpora/encoders/signatures-online");
    d.join("config.json").exists().then_some(d)
}

/// DTW settings from the command line.
#[derive(Debug, Clone, Args)]
pub struct DtwArgs {
    /// DTW scorer: Sakoe-Chiba band half-width, in points.
    #[arg(long, default_value_t = DtwScorer::default().band)]
    pub dtw_band: usize,
    /// DTW scorer: features per point (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = DtwScorer::default().preprocess.features)]
    pub dtw_features: Vec<PenFeature>,
    /// DTW scorer: resampled points.
    #[arg(long, default_value_t = PenPreprocess::default().points)]
    pub dtw_points: usize,
    /// DTW scorer: how the distances to the references are combined.
    #[arg(long, value_enum, default_value_t = DtwScorer::default().aggregate)]
    pub dtw_aggregate: Aggregate,
    /// DTW scorer: resample uniformly in time or along the path.
    #[arg(long, value_enum, default_value_t = DtwScorer::default().preprocess.resample)]
    pub dtw_resample: Resample,
    /// DTW scorer: do not standardise each feature over the signature.
    #[arg(long)]
    pub dtw_raw_features: bool,
    /// DTW scorer: weight of the tempo term, |ln T - mean ln T_ref| over pen-down times T
    /// (0: DTW alone).
    #[arg(long, default_value_t = DtwScorer::default().tempo_weight)]
    pub dtw_tempo_weight: f32,
}

impl DtwArgs {
    fn scorer(&self) -> DtwScorer {
        DtwScorer {
            preprocess: PenPreprocess {
                points: self.dtw_points,
                features: self.dtw_features.clone(),
                standardize: !self.dtw_raw_features,
                resample: self.dtw_resample,
            },
            band: self.dtw_band,
            aggregate: self.dtw_aggregate,
            tempo_weight: self.dtw_tempo_weight,
        }
    }
}

/// `eval --protocol signatures-online` flags.
#[derive(Debug, Clone, Args)]
pub struct OnlineEvalArgs {
    /// signatures and signatures-online: the writers tested (A-B).
    #[arg(long, default_value = "21-30")]
    pub test_writers: String,
    /// signatures-online without an encoder: the writers on which DTW's threshold is chosen.
    #[arg(long, default_value = "1-20")]
    pub calibration_writers: String,
    /// signatures-online: the scorer (default: fusion with an encoder, else dtw).
    #[arg(long, value_enum)]
    pub scorer: Option<Scorer>,
    /// signatures-online: genuine samples 1..=N of each writer are the references.
    #[arg(long, default_value_t = 5)]
    pub references: usize,
    #[command(flatten)]
    pub dtw: DtwArgs,
}

/// `twindex train sequence` flags.
#[derive(Debug, Args)]
pub struct SequenceArgs {
    /// The protocol: `signatures-online` (SVC2004 Task 1 trajectories).
    #[arg(long, value_enum)]
    pub protocol: super::protocol::Protocol,
    /// Folder of U{u}S{s}.TXT files (default ../shared/corpora/signatures-svc2004-online).
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Writers trained on.
    #[arg(long, default_value = "1-15")]
    pub train_writers: String,
    /// Writers held out of training: the epoch, aggregates, thresholds and fusion weights are
    /// chosen on them.
    #[arg(long, default_value = "16-20")]
    pub holdout_writers: String,
    /// Genuine samples 1..=N of each writer are the references.
    #[arg(long, default_value_t = 5)]
    pub references: usize,
    /// Twin input features (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = ALL_FEATURES.to_vec())]
    pub features: Vec<PenFeature>,
    /// Twin input: resample uniformly in time or along the path.
    #[arg(long, value_enum, default_value_t = Resample::Time)]
    pub resample: Resample,
    /// Twin input: resampled points (a multiple of --segments).
    #[arg(long, default_value_t = 120)]
    pub points: usize,
    /// Width of each time-delay layer (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = SequenceNetConfig::default().widths)]
    pub widths: Vec<usize>,
    /// Dilation of each time-delay layer (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = SequenceNetConfig::default().dilations)]
    pub dilations: Vec<usize>,
    /// Context points per time-delay layer (odd).
    #[arg(long, default_value_t = 5)]
    pub kernel: usize,
    /// Spans of the signature pooled separately.
    #[arg(long, default_value_t = 4)]
    pub segments: usize,
    /// Embedding dimension.
    #[arg(long, default_value_t = 64)]
    pub dim: usize,
    /// Towers trained side by side from different initial weights, embeddings concatenated.
    #[arg(long, default_value_t = 1)]
    pub members: usize,
    /// Pool only the mean of each span (not mean and standard deviation).
    #[arg(long)]
    pub no_std_pooling: bool,
    /// Train on 8 pseudo-writers per writer (mirrored in x, y, written backwards).
    #[arg(long)]
    pub pseudo_writers: bool,
    /// Largest random change of the writing speed (time-warp augmentation; 0: none).
    #[arg(long, default_value_t = 0.3)]
    pub aug_time_warp: f64,
    /// `triplet` (mined) or `contrastive` (every pair with a genuine member).
    #[arg(long, value_enum, default_value_t = LossKind::Triplet)]
    pub loss: LossKind,
    #[arg(long, value_enum, default_value_t = Miner::SemiHard)]
    pub miner: Miner,
    #[arg(long, default_value_t = 0.2)]
    pub margin: f32,
    #[arg(long)]
    pub squared: bool,
    #[arg(long, default_value_t = 40)]
    pub epochs: usize,
    /// Writers per batch.
    #[arg(long, default_value_t = 8)]
    pub writers_per_batch: usize,
    /// Genuine signatures per writer in a batch.
    #[arg(long, default_value_t = 6)]
    pub genuine_per_writer: usize,
    /// Skilled forgeries per writer in a batch.
    #[arg(long, default_value_t = 4)]
    pub forgeries_per_writer: usize,
    /// Batches per epoch (0: cover the genuine signatures once).
    #[arg(long, default_value_t = 0)]
    pub steps_per_epoch: usize,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// No random affine distortion of the training trajectories.
    #[arg(long)]
    pub no_augment: bool,
    #[command(flatten)]
    pub dtw: DtwArgs,
    /// Output encoder directory (config.json + model.safetensors).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub json: bool,
}

fn load_corpus(dir: &Path) -> Result<OnlineCorpus> {
    if !dir.exists() {
        bail!(
            "{}: no such corpus folder (SVC2004 Task 1 trajectories U{{u}}S{{s}}.TXT; pass --corpus DIR)",
            dir.display()
        );
    }
    Ok(OnlineCorpus::load(dir)?)
}

fn calibration_of(m: &SequenceModel, dir: &Path) -> Result<OnlineCalibration> {
    let v = m.config.calibration.clone().with_context(|| {
        format!(
            "{}: the encoder has no online calibration (train it with `twindex train sequence`)",
            dir.display()
        )
    })?;
    serde_json::from_value(v).with_context(|| format!("{}: calibration", dir.display()))
}

/// `twindex train sequence --protocol signatures-online`.
pub fn run_train(a: SequenceArgs) -> Result<()> {
    if a.protocol != super::protocol::Protocol::SignaturesOnline {
        bail!("train sequence: --protocol must be signatures-online");
    }
    let dir = a.corpus.clone().unwrap_or_else(default_corpus);
    let corpus = load_corpus(&dir)?;
    let train_w = parse_writer_range(&a.train_writers)?;
    let hold_w = parse_writer_range(&a.holdout_writers)?;
    if train_w.iter().any(|w| hold_w.contains(w)) {
        bail!("--train-writers and --holdout-writers overlap");
    }
    let pre = PenPreprocess {
        points: a.points,
        features: a.features.clone(),
        standardize: true,
        resample: a.resample,
    };
    let net = SequenceNetConfig {
        widths: a.widths.clone(),
        dilations: a.dilations.clone(),
        kernel: a.kernel,
        segments: a.segments,
        dim: a.dim,
        std_pooling: !a.no_std_pooling,
        members: a.members,
    };
    let cfg = SequenceTrainConfig {
        loss: a.loss,
        miner: a.miner,
        margin: a.margin,
        squared: a.squared,
        epochs: a.epochs,
        writers_per_batch: a.writers_per_batch,
        genuine_per_writer: a.genuine_per_writer,
        forgeries_per_writer: a.forgeries_per_writer,
        steps_per_epoch: a.steps_per_epoch,
        lr: a.lr,
        seed: a.seed,
        augment: !a.no_augment,
        aug_time_warp: a.aug_time_warp,
        pseudo_writers: a.pseudo_writers,
        ..Default::default()
    };
    let items: Vec<SequenceItem> = corpus
        .sigs
        .iter()
        .zip(&corpus.trajectories)
        .filter(|(s, _)| train_w.contains(&s.writer))
        .map(|(s, t)| SequenceItem {
            trajectory: t.clone(),
            writer: s.writer,
            genuine: s.genuine,
        })
        .collect();
    if items.is_empty() {
        bail!(
            "{}: no signatures of writers {}",
            dir.display(),
            a.train_writers
        );
    }
    let hold_trials = online::online_trials(&corpus.sigs, &hold_w, a.references, false)?;
    let hold_feats = corpus.features(&pre)?;
    eprintln!(
        "training the sequence twin on {} signatures of writers {}; epochs chosen on writers {} ({} trials)",
        items.len(),
        a.train_writers,
        a.holdout_writers,
        hold_trials.len()
    );
    let mut evaluate = |m: &SequenceModel, _epoch: usize| -> twindex::Result<f64> {
        let emb = m.embed(&hold_feats, 128)?;
        let d = online::twin_trial_distances(&hold_trials, Aggregate::MinNorm, &emb, m.config.dim);
        Ok(1.0 - online::choice_for(&hold_trials, Aggregate::MinNorm, &d)?.holdout_eer)
    };
    let mut on_epoch = |e: &twindex::train::sequence::SequenceEpoch| {
        eprintln!(
            "epoch {:>3}: loss {:.4}  hold-out EER {:.4}  ({:.1} s, {:.1} CPU-s)",
            e.epoch,
            e.loss,
            1.0 - e.score,
            e.wall_seconds,
            e.cpu_seconds
        );
    };
    let mut o = train_sequence(
        &items,
        &cfg,
        SequenceModelConfig::new(pre, net),
        &mut on_epoch,
        &mut evaluate,
    )?;
    let cal = online::calibrate_online(&corpus, &o.model, &a.dtw.scorer(), &hold_w, a.references)?;
    o.model.config.threshold = cal.twin.threshold;
    o.model.config.calibration = Some(serde_json::to_value(&cal)?);
    o.model.config.training["command"] = json!(super::train::command_line());
    o.model.config.training["train_writers"] = json!(train_w);
    o.model.config.training["corpus"] = json!(dir.display().to_string());
    o.model.save(&a.out)?;
    eprintln!(
        "untrained network: hold-out EER {:.4}",
        1.0 - o.untrained_score
    );
    eprintln!(
        "kept epoch {}; on hold-out writers {}: twin EER {:.4} ({:?}), dtw EER {:.4}, fusion EER {:.4} (weights {:?}); training {:.1} s, {:.1} CPU-s; saved {}",
        o.selected_epoch,
        a.holdout_writers,
        cal.twin.holdout_eer,
        cal.twin.aggregate,
        cal.dtw_choice.holdout_eer,
        cal.fusion_choice.holdout_eer,
        cal.fusion.weights,
        o.wall_seconds,
        o.cpu_seconds,
        a.out.display()
    );
    if a.json {
        common::print_json(&json!({
            "model": a.out.display().to_string(),
            "selected_epoch": o.selected_epoch,
            "untrained_holdout_eer": 1.0 - o.untrained_score,
            "train_writers": train_w,
            "holdout_writers": hold_w,
            "calibration": cal,
            "wall_seconds": o.wall_seconds,
            "cpu_seconds": o.cpu_seconds,
            "history": o.history,
        }))?;
    }
    Ok(())
}

fn print_report(r: &OnlineReport, chosen: &str) {
    eprintln!(
        "signatures-online, {} scorer, writers {}-{} ({} references, {} genuine / {} skilled / {} random questioned): EER {:.4}, ROC-AUC {:.4}, random-forgery EER {:.4}, mean per-writer EER {:.4}",
        r.scorer,
        r.writers.first().unwrap_or(&0),
        r.writers.last().unwrap_or(&0),
        r.references,
        r.n_genuine,
        r.n_skilled,
        r.n_random,
        r.eer,
        r.roc_auc,
        r.random_forgery_eer,
        r.mean_writer_eer
    );
    if let (Some(t), Some(far), Some(frr), Some(rf)) = (r.threshold, r.far, r.frr, r.random_far) {
        eprintln!(
            "  at the threshold {t:.4} ({chosen}): FAR {far:.4} (skilled), FRR {frr:.4}, FAR {rf:.4} (random)"
        );
    }
}

/// `twindex eval --protocol signatures-online`.
pub fn run_eval(
    corpus: Option<&str>,
    model: Option<&Path>,
    a: &OnlineEvalArgs,
    json_out: bool,
) -> Result<()> {
    let dir = corpus.map(PathBuf::from).unwrap_or_else(default_corpus);
    let model_dir = model.map(Path::to_path_buf).or_else(|| {
        if a.scorer == Some(Scorer::Dtw) {
            None
        } else {
            default_model()
        }
    });
    let scorer = a.scorer.unwrap_or(if model_dir.is_some() {
        Scorer::Fusion
    } else {
        Scorer::Dtw
    });
    let sw = twindex::timing::Stopwatch::start();
    let corpus = load_corpus(&dir)?;
    let test = parse_writer_range(&a.test_writers)?;
    let loaded = match &model_dir {
        Some(d) => {
            let m = SequenceModel::load(d)
                .with_context(|| format!("loading sequence encoder {}", d.display()))?;
            let cal = calibration_of(&m, d)?;
            if test.iter().any(|w| cal.holdout_writers.contains(w)) {
                eprintln!(
                    "warning: test writers overlap the encoder's hold-out writers {:?}",
                    cal.holdout_writers
                );
            }
            Some((m, cal))
        }
        None => None,
    };
    // DTW: the encoder's settings and threshold when there is an encoder, else the flags and
    // a threshold chosen on --calibration-writers.
    let (dtw, dtw_thr, chosen) = match (&loaded, scorer) {
        (Some((_, cal)), Scorer::Dtw) => (
            cal.dtw.clone(),
            Some(cal.dtw_choice.threshold),
            format!("DTW threshold: EER point of hold-out writers {:?}", cal.holdout_writers),
        ),
        (Some((_, cal)), Scorer::Twin) => (
            cal.dtw.clone(),
            None,
            format!(
                "twin aggregate {:?} and threshold: lowest EER / EER point of hold-out writers {:?}; epoch chosen on the same writers",
                cal.twin.aggregate, cal.holdout_writers
            ),
        ),
        (Some((_, cal)), Scorer::Fusion) => (
            cal.dtw.clone(),
            None,
            format!(
                "fusion weights (logistic, twin + dtw) and threshold fitted on hold-out writers {:?}",
                cal.holdout_writers
            ),
        ),
        (None, _) => {
            let d = a.dtw.scorer();
            let cw = parse_writer_range(&a.calibration_writers)?;
            if cw.iter().any(|w| test.contains(w)) {
                bail!("--calibration-writers overlap --test-writers: the threshold would be chosen on test figures");
            }
            let trials = online::online_trials(&corpus.sigs, &cw, a.references, false)?;
            let feats = corpus.features(&d.preprocess)?;
            let dist = d.trial_distances(&trials, &feats, &corpus.pen_down_seconds());
            let thr = online::eer_threshold(&trials, &dist)?;
            (
                d,
                Some(thr),
                format!(
                    "DTW threshold: EER point of writers {}; the default DTW settings were chosen on writers 1-20",
                    a.calibration_writers
                ),
            )
        }
    };
    let r = online::evaluate_online(
        &corpus,
        &test,
        a.references,
        scorer,
        loaded.as_ref().map(|(m, c)| (m, c)),
        &dtw,
        dtw_thr,
    )?;
    print_report(&r, &chosen);
    if json_out {
        let mut v = serde_json::to_value(&r)?;
        v["model"] = json!(model_dir.map(|d| d.display().to_string()));
        v["corpus"] = json!(dir.display().to_string());
        v["chosen"] = json!(chosen);
        if scorer == Scorer::Dtw {
            v["dtw"] = serde_json::to_value(&dtw)?;
        }
        v["seconds"] = json!(sw.wall());
        v["cpu_seconds"] = json!(sw.cpu());
        common::print_json(&v)?;
    }
    Ok(())
}

/// `twindex verify --signature FILE --references FILE...`.
pub fn run_verify(
    signature: &Path,
    references: &[PathBuf],
    model: Option<&Path>,
    scorer: Option<Scorer>,
    threshold: Option<f32>,
    json_out: bool,
) -> Result<()> {
    let model_dir = model.map(Path::to_path_buf).or_else(default_model);
    let loaded = match &model_dir {
        Some(d) => {
            let m = SequenceModel::load(d)
                .with_context(|| format!("loading sequence encoder {}", d.display()))?;
            let cal = calibration_of(&m, d)?;
            Some((m, cal))
        }
        None => None,
    };
    let scorer = scorer.unwrap_or(if loaded.is_some() {
        Scorer::Fusion
    } else {
        Scorer::Dtw
    });
    let (dtw, dtw_thr) = match &loaded {
        Some((_, cal)) => (cal.dtw.clone(), cal.dtw_choice.threshold),
        None => {
            if scorer != Scorer::Dtw {
                bail!("the {} scorer needs a sequence encoder: pass --model DIR (made by `twindex train sequence`)", scorer.name());
            }
            (
                DtwScorer::default(),
                threshold.unwrap_or(online::DEFAULT_DTW_THRESHOLD),
            )
        }
    };
    let q = read_trajectory(signature)?;
    let refs = references
        .iter()
        .map(|p| read_trajectory(p))
        .collect::<twindex::Result<Vec<_>>>()?;
    let mut d = online::verify_online(
        &q,
        &refs,
        scorer,
        loaded.as_ref().map(|(m, c)| (m, c)),
        &dtw,
        dtw_thr,
    )?;
    if let Some(t) = threshold {
        d.threshold = t;
        d.accepted = twindex::index::is_duplicate(d.distance, t);
    }
    if json_out {
        let mut v = serde_json::to_value(&d)?;
        v["signature"] = json!(signature.display().to_string());
        v["model"] = json!(model_dir.map(|d| d.display().to_string()));
        return common::print_json(&v);
    }
    println!(
        "{}: {} ({} distance {:.4} {} threshold {:.4}, {} reference(s))",
        signature.display(),
        if d.accepted { "ACCEPTED" } else { "REJECTED" },
        scorer.name(),
        d.distance,
        if d.accepted { "<=" } else { ">" },
        d.threshold,
        d.references
    );
    Ok(())
}

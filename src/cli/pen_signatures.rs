//! Online signatures (pen trajectories): `eval --protocol signatures-online` and `verify
//! --signature FILE --references FILE...` (`train sequence` is in `train_sequence.rs`). Parse,
//! call the library, print.

use super::common;
use anyhow::Result;
use clap::Args;
use std::path::{Path, PathBuf};
use twindex::eval::pen_signatures::{self, DtwScorer, PenEvalRun, Scorer};
use twindex::eval::protocol::Aggregate;
use twindex::model::pen::{PenFeature, PenPreprocess, Resample};

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
    #[arg(long, default_value_t = DtwScorer::default().tempo_weight, allow_negative_numbers = true, value_parser = super::common::parse_weight)]
    pub dtw_tempo_weight: f32,
}

impl DtwArgs {
    pub fn scorer(&self) -> DtwScorer {
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
pub struct PenEvalArgs {
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
    /// signatures-online: choose the DTW verifier by nested cross-validation over
    /// --calibration-writers in N folds, then score --test-writers once.
    #[arg(long, value_name = "N")]
    pub cross_validate: Option<usize>,
    #[command(flatten)]
    pub dtw: DtwArgs,
}

/// `twindex eval --protocol signatures-online`.
pub fn run_eval(
    corpus: Option<&str>,
    model: Option<&Path>,
    a: &PenEvalArgs,
    json_out: bool,
) -> Result<()> {
    let online = twindex::corpus::Protocol::SignaturesOnline;
    let dir = corpus
        .map(PathBuf::from)
        .unwrap_or_else(|| online.default_corpus());
    if let Some(k) = a.cross_validate {
        let w = pen_signatures::parse_writer_range;
        let (cv, test) = (w(&a.calibration_writers)?, w(&a.test_writers)?);
        let on = super::protocol::progress();
        let r = pen_signatures::cross_validate_online(&dir, &cv, k, &test, &on)?;
        return match json_out {
            true => common::print_json(&serde_json::to_value(&r)?),
            false => Ok(()),
        };
    }
    let model_dir = model.map(Path::to_path_buf).or_else(|| {
        (a.scorer != Some(Scorer::Dtw))
            .then(|| online.default_model())
            .flatten()
    });
    let run = PenEvalRun {
        corpus: &dir,
        model: model_dir.as_deref(),
        scorer: a.scorer,
        test_writers: &a.test_writers,
        calibration_writers: &a.calibration_writers,
        references: a.references,
        dtw: a.dtw.scorer(),
    };
    let r = pen_signatures::evaluate_signatures_online(&run, &super::protocol::progress())?;
    if json_out {
        common::print_json(&serde_json::to_value(&r)?)?;
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
    let model_dir = model
        .map(Path::to_path_buf)
        .or_else(|| twindex::corpus::Protocol::SignaturesOnline.default_model());
    let v = pen_signatures::verify_signature(
        signature,
        references,
        model_dir.as_deref(),
        scorer,
        threshold,
    )?;
    if json_out {
        return common::print_json(&serde_json::to_value(&v)?);
    }
    println!("{}", v.summary());
    Ok(())
}

//! The calibration records an encoder carries in its `config.json`: how its duplicate threshold
//! was chosen and what it measured there ([`ThresholdReport`]), with the verification
//! aggregate it holds for ([`Aggregate`]), as one typed [`EncoderCalibration`]. Plain data below
//! every layer, so encoder configs (`model`) can hold them; `eval` computes them (its
//! `impl ThresholdReport`), `query` verifies with the aggregate, and nothing reads them back by
//! JSON key.

use serde::{Deserialize, Serialize};

/// How a [`ThresholdReport`] chose its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CalibrationMethod {
    /// The threshold of best F1 (sentence-transformers' `BinaryClassificationEvaluator`).
    BestF1,
    /// The lowest threshold (most recall) whose precision reaches a target.
    TargetPrecision,
    /// The lowest threshold (most recall) whose false accept rate stays within a target.
    TargetFar,
    /// The threshold of the equal error rate (FAR = FRR) on the calibration pairs.
    Eer,
}

/// A threshold chosen on labelled pairs and every figure measured at it (what `eval` reports;
/// the index stores the summary it needs as `index::Calibration`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdReport {
    /// How the threshold was chosen.
    pub method: CalibrationMethod,
    /// The target precision or FAR the method aimed at; `None` for best F1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<f64>,
    /// A pair is a duplicate iff `score >= threshold`.
    pub threshold: f32,
    /// tp / (tp + fp) at the threshold (0 when nothing is accepted).
    pub precision: f64,
    /// tp / (tp + fn) at the threshold.
    pub recall: f64,
    /// F1 at the threshold.
    pub f1: f64,
    /// False accept rate fp / negatives at the threshold.
    pub far: f64,
    /// False reject rate fn / positives at the threshold.
    pub frr: f64,
    /// (tp + tn) / pairs at the threshold.
    pub accuracy: f64,
    /// Number of pairs measured.
    pub n_pairs: usize,
    /// Number of positive pairs among them.
    pub n_positive: usize,
}

/// How a questioned signature is compared with a writer's references.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Aggregate {
    /// Distance to the nearest reference.
    Min,
    /// Mean distance to the references.
    Mean,
    /// `min`, divided by the mean distance between the references themselves: a writer whose
    /// genuine signatures vary a lot is allowed more (needs at least 2 references).
    #[value(name = "min-norm")]
    #[serde(rename = "min-norm")]
    MinNorm,
    /// `mean`, divided by the mean distance between the references.
    #[value(name = "mean-norm")]
    #[serde(rename = "mean-norm")]
    MeanNorm,
}

/// What an image encoder's `config.json` records under `calibration`: the threshold's report,
/// and for the signature protocol the aggregate it was calibrated with and the writers it was
/// calibrated on. Reads the records earlier versions wrote (the same keys).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncoderCalibration {
    #[serde(flatten)]
    pub report: ThresholdReport,
    /// The aggregate over a writer's references the threshold holds for (signatures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<Aggregate>,
    /// Which writers and signatures the threshold was calibrated on (signatures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writers: Option<String>,
    /// Signatures: the distance threshold of two single signatures (SigNet's pairs), chosen
    /// at the equal error rate of the dev writers' pairs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pair_threshold: Option<f32>,
    /// Signatures, the bank's per-writer threshold: a questioned signature is accepted iff its
    /// nearest-reference distance is at most `spread_threshold` times the mean distance among
    /// that writer's references (chosen at the dev writers' equal error rate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread_threshold: Option<f32>,
}

impl From<ThresholdReport> for EncoderCalibration {
    fn from(report: ThresholdReport) -> Self {
        EncoderCalibration {
            report,
            aggregate: None,
            writers: None,
            pair_threshold: None,
            spread_threshold: None,
        }
    }
}

impl CalibrationMethod {
    /// The name as recorded (`best_f1`, `target_precision`, `target_far`).
    pub fn name(self) -> &'static str {
        match self {
            CalibrationMethod::BestF1 => "best_f1",
            CalibrationMethod::TargetPrecision => "target_precision",
            CalibrationMethod::TargetFar => "target_far",
            CalibrationMethod::Eer => "eer",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The record of the shipped signature encoder (written by an earlier version, keys sorted)
    /// reads into the typed record, keeps every field, and names its method as recorded.
    #[test]
    fn reads_the_records_earlier_versions_wrote() {
        let old = r#"{"accuracy": 0.65, "aggregate": "min", "f1": 0.67, "far": 0.495,
            "frr": 0.15, "method": "best_f1", "n_pairs": 350, "n_positive": 150,
            "precision": 0.56, "recall": 0.84, "threshold": 0.37108027935028076,
            "writers": "21-30 (5 references each)"}"#;
        let c: EncoderCalibration = serde_json::from_str(old).unwrap();
        assert_eq!(c.aggregate, Some(Aggregate::Min));
        assert_eq!(c.report.method.name(), "best_f1");
        assert_eq!(
            c.report.threshold,
            "0.37108027935028076".parse::<f32>().unwrap()
        );
        assert_eq!(c.report.n_pairs, 350);
        assert_eq!(c.writers.as_deref(), Some("21-30 (5 references each)"));
        let back: serde_json::Value = serde_json::to_value(&c).unwrap();
        let want: serde_json::Value = serde_json::from_str(old).unwrap();
        assert_eq!(back, want);
        // a plain report (MNIST, ORL) has neither aggregate nor writers
        let plain = r#"{"accuracy": 0.99, "f1": 0.99, "far": 0.003, "frr": 0.003,
            "method": "target_far", "target": 0.01, "n_pairs": 9020, "n_positive": 4510,
            "precision": 0.99, "recall": 0.99, "threshold": -0.1371212601661682}"#;
        let c: EncoderCalibration = serde_json::from_str(plain).unwrap();
        assert_eq!((c.aggregate, c.writers.as_deref()), (None, None));
        assert_eq!(c.report.target, Some(0.01));
        assert!(serde_json::from_str::<EncoderCalibration>(r#"{"method": "best_f1"}"#).is_err());
    }
}

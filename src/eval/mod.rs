//! Evaluation: pair-classification and retrieval metrics, threshold calibration, plots, and the
//! demo's headline figures ([`demo`]).
//!
//! Scores are similarities (greater means more alike); a pair is predicted positive iff
//! `score >= threshold`; positives are labelled `true`.

pub mod calibrate;
pub mod clustering;
pub mod demo;
pub mod dtw;
pub mod image;
pub mod metrics;
pub mod pen_signatures;
pub mod plot;
pub mod protocol;
pub mod signatures;
pub mod text;

pub use calibrate::{
    calibrate_best_f1, calibrate_target_far, calibrate_target_precision, CalibrationMethod,
    ThresholdReport,
};
pub use clustering::{ami, cluster_scores, kmeans_deterministic, nmi};
pub use metrics::{
    accuracy_at, ann_recall, average_precision, best_accuracy, best_f1, confusion_at, eer,
    far_frr_at, map_at_r, mrr_at_k, ndcg_at_k, pair_report, precision_at_1, r_precision,
    recall_at_k, retrieval_report, roc_auc, roc_curve, Confusion, PairReport, RetrievalReport,
};
pub use plot::{pair_grid_image, roc_svg, write_pair_grid_png, write_roc_svg, PairTile, RocSeries};

//! One calibration pipeline for image encoders: embed a labelled set, score its pairs, choose
//! the threshold (best F1, or the lowest threshold within a false-accept rate), store it.

use crate::corpus::ImageSet;
use crate::error::Result;
use crate::eval::{calibrate_best_f1, calibrate_target_far, ThresholdReport};
use crate::index::Metric;
use crate::model::ImageModel;

/// Which pairs of a labelled set calibrate an encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalibrationPairs {
    /// Every pair of the set (small dev sets: held-out classes, signature writers).
    All,
    /// The seed protocol's pairs of the set ([`crate::corpus::seed_pairs`] with this seed):
    /// MNIST-style corpora, too large for all pairs.
    Seeded(u64),
}

/// Calibrate `model` on `set`: embed it, score `pairs`, choose the distance threshold (best F1,
/// or with `target_far` the lowest threshold whose false-accept rate is at most that), and
/// store the threshold and the calibration record in `model.config`. Returns the calibration
/// (its threshold a similarity, `1 - distance`).
pub fn calibrate_encoder(
    model: &mut ImageModel,
    set: &ImageSet,
    pairs: CalibrationPairs,
    target_far: Option<f64>,
) -> Result<ThresholdReport> {
    let (threshold, cal) = match pairs {
        CalibrationPairs::All => {
            let emb = model.embed_pixels(&set.pixels, set.n, 256)?;
            super::calibrate_pairs(&emb, model.config.dim, &set.labels, target_far)?
        }
        CalibrationPairs::Seeded(seed) => {
            let emb = crate::train::image::embed_set(model, set)?;
            let pairs = crate::corpus::seed_pairs(&set.labels, seed)?;
            let dist = crate::train::image::pair_distances(&emb, model.config.dim, &pairs);
            let (scores, labels) = crate::eval::image::pair_scores(&dist, &pairs);
            let cal = match target_far {
                Some(t) => calibrate_target_far(&scores, &labels, t)?,
                None => calibrate_best_f1(&scores, &labels)?,
            };
            (Metric::L2.distance_for_similarity(cal.threshold), cal)
        }
    };
    model.config.threshold = threshold;
    // A plain struct of numbers and strings always serialises.
    model.config.calibration = Some(cal.clone().into());
    Ok(cal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Arch, ImageModelConfig};

    /// A small random-weight LeNet and a labelled set of 12 noisy images of 3 classes.
    fn model_and_set() -> (ImageModel, ImageSet) {
        let model = ImageModel::new_trainable(ImageModelConfig::new(Arch::Lenet, 28, 28, 1), 7)
            .expect("a LeNet builds");
        let n = 12;
        let mut pixels = vec![0u8; n * 28 * 28];
        for (i, px) in pixels.iter_mut().enumerate() {
            let (img, at) = (i / (28 * 28), i % (28 * 28));
            // Class c lights up rows 9c..9c+9; a little per-image texture on top.
            let class = img % 3;
            let row = at / 28;
            *px = if row / 9 == class { 200 } else { 0 } + ((at * 7 + img * 13) % 40) as u8;
        }
        let labels = (0..n as u32).map(|i| i % 3).collect();
        let set = ImageSet {
            n,
            rows: 28,
            cols: 28,
            pixels,
            labels,
        };
        (model, set)
    }

    /// The oracle: all pairs of the embeddings calibrated directly with
    /// [`super::super::calibrate_pairs`]; `calibrate_encoder` must store exactly that
    /// threshold (a distance) and record.
    #[test]
    fn all_pairs_store_the_threshold_of_calibrate_pairs() {
        let (mut model, set) = model_and_set();
        let emb = model.embed_pixels(&set.pixels, set.n, 256).unwrap();
        let (want_thr, want) =
            super::super::calibrate_pairs(&emb, model.config.dim, &set.labels, None).unwrap();
        let got = calibrate_encoder(&mut model, &set, CalibrationPairs::All, None).unwrap();
        assert_eq!(got.threshold, want.threshold);
        assert_eq!(got.n_pairs, 12 * 11 / 2);
        assert_eq!(model.config.threshold, want_thr);
        assert_eq!(model.config.calibration, Some(want.clone().into()));
        // The stored distance threshold is the similarity threshold converted once.
        assert_eq!(
            model.config.threshold,
            Metric::L2.distance_for_similarity(got.threshold)
        );
    }

    /// Seeded pairs: the seed protocol's pairs, scored with the training loop's distances.
    #[test]
    fn seeded_pairs_use_the_seed_protocol() {
        let (mut model, set) = model_and_set();
        let emb = crate::train::image::embed_set(&model, &set).unwrap();
        let pairs = crate::corpus::seed_pairs(&set.labels, 3).unwrap();
        let dist = crate::train::image::pair_distances(&emb, model.config.dim, &pairs);
        let (s, y) = crate::eval::image::pair_scores(&dist, &pairs);
        let want = calibrate_best_f1(&s, &y).unwrap();
        let got = calibrate_encoder(&mut model, &set, CalibrationPairs::Seeded(3), None).unwrap();
        assert_eq!(got.n_pairs, pairs.len());
        assert_eq!(got.threshold, want.threshold);
        assert_eq!(
            model.config.threshold,
            Metric::L2.distance_for_similarity(want.threshold)
        );
        // A target false-accept rate picks the FAR-bounded threshold instead.
        let far =
            calibrate_encoder(&mut model, &set, CalibrationPairs::Seeded(3), Some(0.0)).unwrap();
        assert_eq!(far.far, 0.0);
    }
}

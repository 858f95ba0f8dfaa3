//! Ensembles of image encoders: K twin towers trained on different triplets, used as one
//! encoder. An ensemble embeds an image by L2-normalising each member's embedding, scaling
//! member `i` by its weight `w_i`, concatenating, and normalising the result again:
//!
//! `e(x) = concat(w_1 n(e_1(x)), ..., w_K n(e_K(x))) / sqrt(sum w_i^2)`
//!
//! so the squared distance of two ensemble embeddings is the weighted mean of the members'
//! squared distances, `sum w_i^2 d_i^2 / sum w_i^2`, and an ensemble is an ordinary
//! unit-length encoder to everything downstream (the index, the threshold, `query`, `verify`,
//! `eval`). One directory holds it: `config.json` (this [`EnsembleConfig`] in its `ensemble`
//! field) and one `model.safetensors` with member `i`'s weights under `member{i}.`.

use super::cnn::{l2_normalize, Arch, ImageEncoder};
use super::image::TrainingRecord;
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

/// How the members of an ensemble were made to differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EnsembleBy {
    /// Each member on all the training data with its own seed: its own initial weights, batch
    /// order, mined triplets and augmentation.
    Seed,
    /// Each member on its own bootstrap sample (every class's images drawn with replacement,
    /// as many as the class has), and its own seed.
    Bagging,
    /// The seed article's recipe: a first encoder trained on everything (member 0), its
    /// training classes clustered (k-means over their mean embeddings) into K-1 groups of
    /// similar classes, and one learner per group (members 1..K-1), started from the first
    /// encoder and trained on that group's images only, so its P x K batches hold only the hard
    /// negatives of similar classes.
    Cluster,
}

impl EnsembleBy {
    /// The name used in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            EnsembleBy::Seed => "seed",
            EnsembleBy::Bagging => "bagging",
            EnsembleBy::Cluster => "cluster",
        }
    }
}

/// One member of an ensemble.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberConfig {
    /// The member's network.
    pub arch: Arch,
    /// Its embedding dimension (before the ensemble's scaling).
    pub dim: usize,
    /// Its weight `w_i` in the concatenation (> 0). Equal weights: every member counts alike.
    pub weight: f32,
    /// Its own calibrated duplicate threshold (a distance), for using it alone
    /// ([`super::ImageModel::member`]).
    pub threshold: f32,
    /// The classes it was trained on, when not all of the ensemble's (`cluster`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
    /// How it was trained.
    #[serde(default)]
    pub training: TrainingRecord,
}

/// The `ensemble` field of an ensemble's `config.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnsembleConfig {
    /// How the members were made to differ.
    pub by: EnsembleBy,
    /// The members, in the order of their weights' prefixes `member0.`, `member1.`, ...
    pub members: Vec<MemberConfig>,
}

impl EnsembleConfig {
    /// The ensemble's embedding dimension: the members' dimensions summed.
    pub fn dim(&self) -> usize {
        self.members.iter().map(|m| m.dim).sum()
    }

    /// The weights' name prefix of member `i`.
    pub fn prefix(i: usize) -> String {
        format!("member{i}")
    }

    /// Reject an ensemble that cannot embed: no members, a member's weight not finite and
    /// positive, a dimension that does not match its network.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.members.is_empty() {
            return Err("an ensemble needs at least one member".into());
        }
        for (i, m) in self.members.iter().enumerate() {
            if !(m.weight.is_finite() && m.weight > 0.0) {
                return Err(format!(
                    "member {i}: weight {} must be a positive number",
                    m.weight
                ));
            }
            if m.arch == Arch::DlibResnet {
                return Err(format!(
                    "member {i}: dlib-resnet members are not supported (it aligns its own input)"
                ));
            }
            if m.dim != m.arch.dim() {
                return Err(format!(
                    "member {i}: dim {} does not match its {} network ({})",
                    m.dim,
                    m.arch.name(),
                    m.arch.dim()
                ));
            }
        }
        Ok(())
    }
}

/// The members' networks and weights: a [`Module`] from `[B, H, W, C]` inputs to `[B, dim]`
/// unit embeddings.
#[derive(Debug, Clone)]
pub struct Ensemble {
    members: Vec<ImageEncoder>,
    /// `w_i / sqrt(sum w^2)`: the final normalisation folded into the weights (each scaled
    /// member embedding has norm `w_i`, so the concatenation's norm is `sqrt(sum w^2)`).
    scales: Vec<f64>,
}

impl Ensemble {
    /// Build the members for `height x width x channels` inputs, member `i`'s layers under
    /// `vb.pp("member{i}")`.
    pub fn new(
        vb: VarBuilder,
        cfg: &EnsembleConfig,
        height: usize,
        width: usize,
        channels: usize,
    ) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::Msg)?;
        let members = cfg
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                ImageEncoder::new(
                    vb.pp(EnsembleConfig::prefix(i)),
                    m.arch,
                    height,
                    width,
                    channels,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self::from_members(
            members,
            &cfg.members.iter().map(|m| m.weight).collect::<Vec<_>>(),
        ))
    }

    /// An ensemble of already built encoders with these weights (positive, one per member).
    pub fn from_members(members: Vec<ImageEncoder>, weights: &[f32]) -> Self {
        let norm = weights
            .iter()
            .map(|&w| (w as f64) * (w as f64))
            .sum::<f64>()
            .sqrt()
            .max(1e-12);
        Ensemble {
            members,
            scales: weights.iter().map(|&w| w as f64 / norm).collect(),
        }
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there are no members (never, for a validated config).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Member `i`'s network.
    pub fn member(&self, i: usize) -> Option<&ImageEncoder> {
        self.members.get(i)
    }
}

impl Module for Ensemble {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let parts = self
            .members
            .iter()
            .zip(&self.scales)
            .map(|(m, &s)| l2_normalize(&m.forward(x)?)?.affine(s, 0.0))
            .collect::<Result<Vec<_>>>()?;
        // Each part has norm `s_i` and sum s_i^2 = 1: the concatenation is already unit
        // length up to rounding; normalise once more so it is exactly what the docs promise.
        l2_normalize(&Tensor::cat(&parts, 1)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    fn config(weights: &[f32]) -> EnsembleConfig {
        EnsembleConfig {
            by: EnsembleBy::Seed,
            members: weights
                .iter()
                .map(|&w| MemberConfig {
                    arch: Arch::Cnn,
                    dim: 64,
                    weight: w,
                    threshold: 1.0,
                    classes: Vec::new(),
                    training: TrainingRecord::default(),
                })
                .collect(),
        }
    }

    /// Oracle: the squared distance of two ensemble embeddings is the weighted mean of the
    /// members' squared distances, `sum w_i^2 d_i^2 / sum w_i^2`, computed here in f64 from
    /// each member's own (unit) embeddings.
    #[test]
    fn distance_is_the_weighted_mean_of_member_distances() {
        let vm = VarMap::new();
        let vb = crate::model::seeded::seeded_var_builder(&vm, 7);
        let weights = [1.0f32, 2.0, 0.5];
        let ens = Ensemble::new(vb, &config(&weights), 28, 28, 1).unwrap();
        let x = Tensor::rand(0f32, 1.0, (2, 28, 28, 1), &Device::Cpu).unwrap();
        let e = ens.forward(&x).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(e[0].len(), 3 * 64);
        for row in &e {
            let n: f64 = row.iter().map(|&v| v as f64 * v as f64).sum();
            assert!((n - 1.0).abs() < 1e-5, "unit length, got {n}");
        }
        let d2 = |a: &[f32], b: &[f32]| -> f64 {
            a.iter()
                .zip(b)
                .map(|(&p, &q)| (p as f64 - q as f64).powi(2))
                .sum()
        };
        let (mut num, mut den) = (0.0, 0.0);
        for (i, &w) in weights.iter().enumerate() {
            let m = ens.member(i).unwrap().forward(&x).unwrap();
            let m = m.to_vec2::<f32>().unwrap();
            num += (w as f64).powi(2) * d2(&m[0], &m[1]);
            den += (w as f64).powi(2);
        }
        let got = d2(&e[0], &e[1]);
        assert!(
            (got - num / den).abs() < 1e-5,
            "ensemble d^2 {got} vs weighted mean {}",
            num / den
        );
    }

    #[test]
    fn bad_configs_are_refused() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let e = Ensemble::new(vb.clone(), &config(&[]), 28, 28, 1).unwrap_err();
        assert!(e.to_string().contains("at least one member"), "{e}");
        let e = Ensemble::new(vb.clone(), &config(&[1.0, 0.0]), 28, 28, 1).unwrap_err();
        assert!(e.to_string().contains("member 1: weight 0"), "{e}");
        let mut c = config(&[1.0]);
        c.members[0].dim = 10;
        let e = Ensemble::new(vb, &c, 28, 28, 1).unwrap_err();
        assert!(e.to_string().contains("dim 10"), "{e}");
    }
}

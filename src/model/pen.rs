//! Pen-trajectory preprocessing: from the points of a [`Trajectory`] to a fixed-length sequence
//! of per-point features (`[T, C]`, time-major), as the sequence twin and the DTW scorer see
//! it. The configuration is stored in the sequence encoder's `config.json`, like the image
//! encoders' [`super::Preprocess`].
//!
//! Steps: keep the pen-down points (the strokes, joined in writing order; a pen-up jump becomes
//! one large step, marked by [`PenFeature::PenJump`]); centre on the centroid and divide by the
//! positions' standard deviation (position and scale invariance; the aspect ratio is kept);
//! resample to `points` points uniformly over the sample index (the tablet samples at a fixed
//! rate, so this is uniform in writing time with pen-up gaps removed); compute the features;
//! optionally standardise each feature over the signature.

use crate::corpus::trajectory::Trajectory;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// One feature per resampled point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum PenFeature {
    /// Normalised position.
    X,
    Y,
    /// Step to the next point (forward difference; the last repeats the one before).
    Dx,
    Dy,
    /// Step length.
    Speed,
    /// Direction of the step as sine and cosine (0 where the pen stands still).
    SinDir,
    CosDir,
    /// Change of direction between consecutive steps, in radians (-pi..pi).
    Curvature,
    /// 1 where the step crosses a pen-up gap (a jump to the next stroke), else 0.
    PenJump,
    /// Writing time of the step (pen-down samples), relative to the mean step: constant 1
    /// under time resampling; the writing rhythm under arc-length resampling.
    Dt,
}

/// Where the resampled points lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Resample {
    /// Uniform over the pen-down samples (uniform in writing time): keeps the rhythm in the
    /// spacing of the points.
    Time,
    /// Uniform along the path (pen-up jumps included as straight lines): the same shape gives
    /// the same points whatever the speed; the rhythm goes to [`PenFeature::Dt`].
    ArcLength,
}

/// How a trajectory becomes a feature sequence. As flags (`twindex train sequence`), the twin's
/// input, whose features default to all of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(default)]
pub struct PenPreprocess {
    /// Twin input: resampled points (a multiple of --segments). Default 120. More: finer
    /// detail, slower DTW (quadratic in this) and a larger network input.
    #[arg(long, default_value_t = 120)]
    pub points: usize,
    /// Twin input features (comma-separated), in order. Library default x, y, dx, dy.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = ALL_FEATURES.to_vec())]
    pub features: Vec<PenFeature>,
    /// Standardise each feature over the signature (zero mean, unit variance). Default true:
    /// every feature weighs the same in a distance.
    #[arg(skip = true)]
    pub standardize: bool,
    /// Twin input: resample uniformly in time (default) or along the path.
    #[arg(long, value_enum, default_value_t = Resample::Time)]
    pub resample: Resample,
}

impl Default for PenPreprocess {
    fn default() -> Self {
        PenPreprocess {
            points: 120,
            features: vec![PenFeature::X, PenFeature::Y, PenFeature::Dx, PenFeature::Dy],
            standardize: true,
            resample: Resample::Time,
        }
    }
}

/// All features, in the order listed in [`PenFeature`].
pub const ALL_FEATURES: [PenFeature; 10] = [
    PenFeature::X,
    PenFeature::Y,
    PenFeature::Dx,
    PenFeature::Dy,
    PenFeature::Speed,
    PenFeature::SinDir,
    PenFeature::CosDir,
    PenFeature::Curvature,
    PenFeature::PenJump,
    PenFeature::Dt,
];

impl PenPreprocess {
    /// Features per point.
    pub fn channels(&self) -> usize {
        self.features.len()
    }

    /// Check the configuration.
    pub fn validate(&self) -> Result<()> {
        if self.points < 3 || self.features.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "pen preprocessing needs at least 3 points and one feature (got {} points, {} features)",
                self.points,
                self.features.len()
            )));
        }
        Ok(())
    }

    /// The feature sequence of `traj`: `points x channels` values, time-major.
    pub fn apply(&self, traj: &Trajectory) -> Result<Vec<f32>> {
        self.validate()?;
        // Pen-down points; `jump_before[i]`: a pen-up gap lies between kept points i-1 and i.
        let (mut xs, mut ys, mut jump_before) = (Vec::new(), Vec::new(), Vec::new());
        let mut ts = Vec::new();
        let mut gap = false;
        // Time as the count of pen-down samples before (the tablet's fixed rate; pen-up time
        // left out, as the resampling over the sample index leaves it out).
        for p in &traj.points {
            if p.down {
                ts.push(xs.len() as f64);
                xs.push(p.x);
                ys.push(p.y);
                jump_before.push(gap && xs.len() > 1);
                gap = false;
            } else {
                gap = true;
            }
        }
        if xs.len() < 2 {
            return Err(Error::format(
                &traj.path,
                format!(
                    "{} pen-down point(s): a signature needs at least 2",
                    xs.len()
                ),
            ));
        }
        let n = xs.len() as f64;
        let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
        let var = xs
            .iter()
            .zip(&ys)
            .map(|(x, y)| (x - mx).powi(2) + (y - my).powi(2))
            .sum::<f64>()
            / n;
        let scale = var.sqrt().max(1e-9);
        // Resample at fractional indices u_k = k (n-1)/(T-1).
        let t = self.points;
        // Fractional indices into the kept points of the resampled points.
        let us: Vec<f64> = match self.resample {
            Resample::Time => {
                let step = (n - 1.0) / (t - 1) as f64;
                (0..t).map(|k| k as f64 * step).collect()
            }
            Resample::ArcLength => {
                let mut cum = vec![0f64; xs.len()];
                for i in 1..xs.len() {
                    cum[i] = cum[i - 1] + (xs[i] - xs[i - 1]).hypot(ys[i] - ys[i - 1]);
                }
                let total = cum[xs.len() - 1];
                if total <= 0.0 {
                    let step = (n - 1.0) / (t - 1) as f64;
                    (0..t).map(|k| k as f64 * step).collect()
                } else {
                    let mut i = 0;
                    (0..t)
                        .map(|k| {
                            let target = total * k as f64 / (t - 1) as f64;
                            while i + 2 < xs.len() && cum[i + 1] < target {
                                i += 1;
                            }
                            let seg = cum[i + 1] - cum[i];
                            let f = if seg > 0.0 {
                                ((target - cum[i]) / seg).clamp(0.0, 1.0)
                            } else {
                                1.0
                            };
                            i as f64 + f
                        })
                        .collect()
                }
            }
        };
        let at = |v: &[f64], u: f64| {
            let i = (u.floor() as usize).min(v.len() - 2);
            let f = u - i as f64;
            v[i] * (1.0 - f) + v[i + 1] * f
        };
        let mut rx = Vec::with_capacity(t);
        let mut ry = Vec::with_capacity(t);
        let mut rt = Vec::with_capacity(t);
        let mut jump = vec![0f64; t];
        for k in 0..t {
            let u = us[k];
            rx.push((at(&xs, u) - mx) / scale);
            ry.push((at(&ys, u) - my) / scale);
            rt.push(at(&ts, u));
            if k + 1 < t {
                // Original points strictly after u and up to the next sample position.
                let (lo, hi) = (u, us[k + 1]);
                let first = lo.floor() as usize + 1;
                let last = (hi.ceil() as usize).min(xs.len() - 1);
                if (first..=last).any(|i| jump_before[i]) {
                    jump[k] = 1.0;
                }
            }
        }
        let (dx, dy) = (diffs(&rx), diffs(&ry));
        let speed: Vec<f64> = dx.iter().zip(&dy).map(|(a, b)| a.hypot(*b)).collect();
        let dir: Vec<f64> = dx.iter().zip(&dy).map(|(a, b)| b.atan2(*a)).collect();
        let mut out = vec![0f32; t * self.features.len()];
        let c = self.features.len();
        for (j, f) in self.features.iter().enumerate() {
            let col: Vec<f64> = match f {
                PenFeature::X => rx.clone(),
                PenFeature::Y => ry.clone(),
                PenFeature::Dx => dx.clone(),
                PenFeature::Dy => dy.clone(),
                PenFeature::Speed => speed.clone(),
                PenFeature::SinDir => (0..t)
                    .map(|k| {
                        if speed[k] > 0.0 {
                            dy[k] / speed[k]
                        } else {
                            0.0
                        }
                    })
                    .collect(),
                PenFeature::CosDir => (0..t)
                    .map(|k| {
                        if speed[k] > 0.0 {
                            dx[k] / speed[k]
                        } else {
                            0.0
                        }
                    })
                    .collect(),
                PenFeature::Curvature => (0..t)
                    .map(|k| {
                        if k == 0 || speed[k] == 0.0 || speed[k - 1] == 0.0 {
                            0.0
                        } else {
                            let d = dir[k] - dir[k - 1];
                            d.sin().atan2(d.cos())
                        }
                    })
                    .collect(),
                PenFeature::PenJump => jump.clone(),
                PenFeature::Dt => {
                    let d = diffs(&rt);
                    let total = rt[t - 1] - rt[0];
                    d.iter().map(|v| v * t as f64 / total.max(1e-9)).collect()
                }
            };
            let col = if self.standardize && *f != PenFeature::PenJump {
                standardized(col)
            } else {
                col
            };
            for k in 0..t {
                out[k * c + j] = col[k] as f32;
            }
        }
        Ok(out)
    }
}

/// Forward differences, the last one repeating the one before.
fn diffs(v: &[f64]) -> Vec<f64> {
    let t = v.len();
    (0..t)
        .map(|k| {
            let k = k.min(t - 2);
            v[k + 1] - v[k]
        })
        .collect()
}

fn standardized(mut v: Vec<f64>) -> Vec<f64> {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let s = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n).sqrt();
    for x in &mut v {
        *x = if s > 1e-12 { (*x - m) / s } else { 0.0 };
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::trajectory::PenPoint;

    fn traj(pts: &[(f64, f64, bool)]) -> Trajectory {
        Trajectory {
            path: "t".into(),
            points: pts
                .iter()
                .enumerate()
                .map(|(i, &(x, y, down))| PenPoint {
                    x,
                    y,
                    t: i as f64 * 10.0,
                    down,
                })
                .collect(),
        }
    }

    /// A straight stroke: positions resampled linearly, constant steps, a pen-up gap marked.
    #[test]
    fn straight_line_and_jump() {
        let p = PenPreprocess {
            points: 5,
            features: ALL_FEATURES.to_vec(),
            standardize: false,
            resample: Resample::Time,
        };
        // Points x = 0, 1, 2, 3, 4 on y = 0: centroid 2, spread sqrt(mean((x-2)^2)) = sqrt(2).
        let t = traj(&[
            (0.0, 0.0, true),
            (1.0, 0.0, true),
            (2.0, 0.0, true),
            (3.0, 0.0, true),
            (4.0, 0.0, true),
        ]);
        let f = p.apply(&t).unwrap();
        let c = 10;
        let s = 2f64.sqrt();
        for k in 0..5 {
            assert!((f[k * c] as f64 - (k as f64 - 2.0) / s).abs() < 1e-6);
            assert!((f[k * c + 2] as f64 - 1.0 / s).abs() < 1e-6, "dx");
            assert_eq!(f[k * c + 6], 1.0, "cos dir");
            assert_eq!(f[k * c + 7], 0.0, "curvature");
            assert_eq!(f[k * c + 8], 0.0, "no jump");
        }
        // Pen lifted between the 2nd and 3rd down points.
        let t = traj(&[
            (0.0, 0.0, true),
            (1.0, 0.0, true),
            (5.0, 5.0, false),
            (2.0, 0.0, true),
            (3.0, 0.0, true),
            (4.0, 0.0, true),
        ]);
        let f = p.apply(&t).unwrap();
        let jumps: Vec<f32> = (0..5).map(|k| f[k * c + 8]).collect();
        assert_eq!(jumps, vec![0.0, 1.0, 0.0, 0.0, 0.0]);
    }
}

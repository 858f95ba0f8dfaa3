//! Twin-network losses as free functions over tensors (STYLE habit 3).
//!
//! Shapes: embeddings `[N, D]`; distances and labels `[N]`. `y = 1` marks a similar pair.

use candle_core::{Result, Tensor, D};

/// The floor under a squared distance before its square root (Keras' `K.epsilon()`), which keeps
/// the gradient of `sqrt` finite for identical embeddings.
pub const DIST_EPS: f64 = 1e-7;

fn check_rows(a: &Tensor, b: &Tensor, what: &str) -> Result<()> {
    if a.rank() != 2 || a.dims() != b.dims() {
        candle_core::bail!(
            "{what}: expected two [N, D] tensors of the same shape, got {:?} and {:?}",
            a.dims(),
            b.dims()
        );
    }
    Ok(())
}

/// Row-wise squared Euclidean distance `sum((a-b)^2)`: `[N, D] x [N, D] -> [N]`.
pub fn squared_distance(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    check_rows(a, b, "squared_distance")?;
    (a - b)?.sqr()?.sum(D::Minus1)
}

/// Row-wise Euclidean distance `sqrt(max(sum((a-b)^2), eps))` as in the seed.
pub fn euclidean_distance(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    squared_distance(a, b)?.clamp(DIST_EPS, f64::MAX)?.sqrt()
}

/// Contrastive loss, mean over pairs: `y*d^2 + (1-y)*max(0, margin-d)^2`.
/// `d`: distances `[N]`; `y`: 1.0 (similar) or 0.0 (dissimilar) `[N]`.
pub fn contrastive(d: &Tensor, y: &Tensor, margin: f64) -> Result<Tensor> {
    if d.rank() != 1 || d.dims() != y.dims() {
        candle_core::bail!(
            "contrastive: expected d and y of shape [N], got {:?} and {:?}",
            d.dims(),
            y.dims()
        );
    }
    let pos = (y * d.sqr()?)?;
    let hinge = (d.affine(-1.0, margin)?.relu()?.sqr()? * y.affine(-1.0, 1.0)?)?;
    (pos + hinge)?.mean_all()
}

/// Triplet loss, mean over triplets: `max(0, d_ap - d_an + margin)`. `d_ap`, `d_an`: `[N]`.
pub fn triplet(d_ap: &Tensor, d_an: &Tensor, margin: f64) -> Result<Tensor> {
    if d_ap.rank() != 1 || d_ap.dims() != d_an.dims() {
        candle_core::bail!(
            "triplet: expected d_ap and d_an of shape [N], got {:?} and {:?}",
            d_ap.dims(),
            d_an.dims()
        );
    }
    (d_ap - d_an)?.affine(1.0, margin)?.relu()?.mean_all()
}

/// Triplet loss over mined `(anchor, positive, negative)` rows of `emb` (`[N, D]`);
/// `squared` uses squared Euclidean distances (FaceNet) instead of plain ones.
pub fn triplet_mined(
    emb: &Tensor,
    triplets: &[super::mining::Triplet],
    margin: f64,
    squared: bool,
) -> Result<Tensor> {
    if triplets.is_empty() {
        candle_core::bail!("triplet_mined: no triplets");
    }
    let dev = emb.device();
    let idx = |f: fn(&super::mining::Triplet) -> u32| -> Result<Tensor> {
        Tensor::from_vec(
            triplets.iter().map(f).collect::<Vec<u32>>(),
            triplets.len(),
            dev,
        )
    };
    let a = emb.index_select(&idx(|t| t.a)?, 0)?;
    let p = emb.index_select(&idx(|t| t.p)?, 0)?;
    let n = emb.index_select(&idx(|t| t.n)?, 0)?;
    let (dap, dan) = if squared {
        (squared_distance(&a, &p)?, squared_distance(&a, &n)?)
    } else {
        (euclidean_distance(&a, &p)?, euclidean_distance(&a, &n)?)
    };
    triplet(&dap, &dan, margin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Oracle: the losses and their gradients in f64, written out by hand.
    #[test]
    fn contrastive_value_and_gradient_match_f64() {
        let a = [
            [0.1f64, 0.5, -0.3],
            [1.0, 0.0, 0.2],
            [0.0, 0.0, 0.0],
            [0.3, -0.2, 0.9],
        ];
        let b = [
            [0.2f64, 0.1, -0.1],
            [0.0, 0.5, 0.2],
            [0.3, 0.4, 0.0],
            [0.31, -0.2, 0.9],
        ];
        let y = [1.0f64, 0.0, 0.0, 1.0];
        let m = 1.0;
        // d_i = sqrt(sum (a-b)^2); L = mean(y d^2 + (1-y) max(0, m-d)^2)
        // dL/da_i = (1/N) * [y*2(a-b) + (1-y)*(-2)max(0,m-d) * (a-b)/d]
        let n = a.len() as f64;
        let mut loss = 0.0;
        let mut grad = [[0.0f64; 3]; 4];
        for i in 0..4 {
            let diff: Vec<f64> = (0..3).map(|j| a[i][j] - b[i][j]).collect();
            let d = diff.iter().map(|x| x * x).sum::<f64>().sqrt();
            let h = (m - d).max(0.0);
            loss += y[i] * d * d + (1.0 - y[i]) * h * h;
            for j in 0..3 {
                grad[i][j] = (y[i] * 2.0 * diff[j] - (1.0 - y[i]) * 2.0 * h * diff[j] / d) / n;
            }
        }
        loss /= n;
        let dev = Device::Cpu;
        let flat = |x: &[[f64; 3]; 4]| x.iter().flatten().map(|&v| v as f32).collect::<Vec<_>>();
        let av = Var::from_vec(flat(&a), (4, 3), &dev).unwrap();
        let bt = Tensor::from_vec(flat(&b), (4, 3), &dev).unwrap();
        let yt =
            Tensor::from_vec(y.iter().map(|&v| v as f32).collect::<Vec<_>>(), 4, &dev).unwrap();
        let d = euclidean_distance(&av, &bt).unwrap();
        let l = contrastive(&d, &yt, m).unwrap();
        let got = l.to_scalar::<f32>().unwrap() as f64;
        assert!((got - loss).abs() < 1e-6, "loss {got} vs {loss}");
        let g = l.backward().unwrap();
        let ga = g.get(&av).unwrap().to_vec2::<f32>().unwrap();
        for i in 0..4 {
            for j in 0..3 {
                assert!(
                    (ga[i][j] as f64 - grad[i][j]).abs() < 1e-5,
                    "grad[{i}][{j}] {} vs {}",
                    ga[i][j],
                    grad[i][j]
                );
            }
        }
    }

    #[test]
    fn triplet_value_and_gradient_match_f64() {
        let dev = Device::Cpu;
        // d_ap, d_an pairs: (0.2, 1.5) -> 0, (0.9, 1.0) -> 0.4, (1.2, 0.3) -> 1.4 with margin 0.5
        // mean = (0 + 0.4 + 1.4) / 3 = 0.6; d/d(d_ap) = [0, 1/3, 1/3]
        let dap = Var::from_vec(vec![0.2f32, 0.9, 1.2], 3, &dev).unwrap();
        let dan = Tensor::from_vec(vec![1.5f32, 1.0, 0.3], 3, &dev).unwrap();
        let l = triplet(&dap, &dan, 0.5).unwrap();
        assert!((l.to_scalar::<f32>().unwrap() - 0.6).abs() < 1e-6);
        let g = l
            .backward()
            .unwrap()
            .get(&dap)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let want = [0.0, 1.0 / 3.0, 1.0 / 3.0];
        for k in 0..3 {
            assert!((g[k] - want[k]).abs() < 1e-6, "{g:?}");
        }
    }

    #[test]
    fn bad_shapes_are_rejected() {
        let dev = Device::Cpu;
        let a = Tensor::zeros((3, 2), candle_core::DType::F32, &dev).unwrap();
        let b = Tensor::zeros((2, 2), candle_core::DType::F32, &dev).unwrap();
        assert!(euclidean_distance(&a, &b).is_err());
        let d = Tensor::zeros(3, candle_core::DType::F32, &dev).unwrap();
        let y = Tensor::zeros(4, candle_core::DType::F32, &dev).unwrap();
        assert!(contrastive(&d, &y, 1.0).is_err());
        assert!(triplet(&d, &y, 1.0).is_err());
    }
}

//! A small residual network with batch normalisation for from-scratch image encoders (faces,
//! signatures), over NHWC batches: a 3x3 stem, three stages of one residual block each with
//! 2x2 max-pooling between them, global average pooling, Dense to 128-d, L2-normalised.
//!
//! Batch normalisation normalises with the batch's statistics while training and with running
//! statistics (kept in the weights file as `running_mean` / `running_var`) at inference.

use super::cnn::{dense, l2_normalize, Conv};
use super::cnn_ops::{self, Act};
use candle_core::{Result, Tensor, Var};
use candle_nn::{Init, Linear, Module, VarBuilder};

/// Channels of the three stages. Larger: more capacity, quadratically more compute per block.
pub const STAGE_CHANNELS: [usize; 3] = [32, 64, 128];
/// Embedding dimension.
pub const DIM: usize = 128;
/// Weight of the newest batch in the running statistics (PyTorch's default).
const MOMENTUM: f64 = 0.1;
const EPS: f64 = 1e-5;

/// Batch normalisation over the channels (last axis) of an NHWC tensor.
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    gamma: Tensor,
    beta: Tensor,
    running_mean: Var,
    running_var: Var,
}

impl BatchNorm2d {
    /// `weight` (1), `bias` (0), `running_mean` (0), `running_var` (1), each `[c]`. With a
    /// trainable var builder the running statistics are variables of its map (saved with the
    /// weights; they get no gradient, so the optimiser leaves them alone).
    pub fn new(vb: VarBuilder, c: usize) -> Result<Self> {
        let gamma = vb.get_with_hints(c, "weight", Init::Const(1.0))?;
        let beta = vb.get_with_hints(c, "bias", Init::Const(0.0))?;
        let rm = vb.get_with_hints(c, "running_mean", Init::Const(0.0))?;
        let rv = vb.get_with_hints(c, "running_var", Init::Const(1.0))?;
        Ok(BatchNorm2d {
            gamma,
            beta,
            running_mean: Var::from_tensor(&rm)?,
            running_var: Var::from_tensor(&rv)?,
        })
    }

    /// Normalise `x` `[B, H, W, C]`: with the batch's mean and (biased) variance when `train`
    /// (and fold them into the running statistics, the variance unbiased), else with the
    /// running statistics.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let c = *dims
            .last()
            .ok_or_else(|| candle_core::Error::Msg("batch norm of a scalar".into()))?;
        if c != self.gamma.dim(0)? {
            candle_core::bail!(
                "batch norm: expected {} channels, got shape {dims:?}",
                self.gamma.dim(0)?
            );
        }
        let n = x.elem_count() / c;
        let x2 = x.reshape((n, c))?;
        let (mean, var) = if train {
            if n < 2 {
                candle_core::bail!(
                    "batch norm while training needs at least 2 values per channel, got {n}"
                );
            }
            let mean = x2.mean_keepdim(0)?;
            let var = x2.broadcast_sub(&mean)?.sqr()?.mean_keepdim(0)?;
            let m = MOMENTUM;
            let unbiased = (n as f64) / (n as f64 - 1.0);
            let rm = (self.running_mean.as_tensor().affine(1.0 - m, 0.0)?
                + mean.detach().squeeze(0)?.affine(m, 0.0)?)?;
            let rv = (self.running_var.as_tensor().affine(1.0 - m, 0.0)?
                + var.detach().squeeze(0)?.affine(m * unbiased, 0.0)?)?;
            self.running_mean.set(&rm)?;
            self.running_var.set(&rv)?;
            (mean, var)
        } else {
            (
                self.running_mean.as_tensor().unsqueeze(0)?,
                self.running_var.as_tensor().unsqueeze(0)?,
            )
        };
        let scale = (var + EPS)?
            .sqrt()?
            .recip()?
            .broadcast_mul(&self.gamma.unsqueeze(0)?)?;
        let y = x2
            .broadcast_sub(&mean)?
            .broadcast_mul(&scale)?
            .broadcast_add(&self.beta.unsqueeze(0)?)?;
        y.reshape(dims)
    }

    /// The running mean and variance (for tests and inspection).
    pub fn running_stats(&self) -> (&Tensor, &Tensor) {
        (self.running_mean.as_tensor(), self.running_var.as_tensor())
    }
}

/// Zero-pad H and W of an NHWC tensor by `p` on each side (a "same" 3x3 convolution).
fn pad_hw(x: &Tensor, p: usize) -> Result<Tensor> {
    x.pad_with_zeros(1, p, p)?.pad_with_zeros(2, p, p)
}

/// conv3x3 ("same") -> batch norm.
#[derive(Debug, Clone)]
struct ConvBn {
    conv: Conv,
    bn: BatchNorm2d,
    k: usize,
}

impl ConvBn {
    fn new(vb: VarBuilder, c_in: usize, c_out: usize, k: usize, input_grad: bool) -> Result<Self> {
        Ok(ConvBn {
            // He-uniform weights (ReLU follows); the bias is redundant before batch norm but
            // kept by the fused op (batch norm subtracts it again).
            conv: Conv::new(vb.pp("conv"), c_in, c_out, k, Act::Relu, input_grad)?
                .with_act(Act::Identity),
            bn: BatchNorm2d::new(vb.pp("bn"), c_out)?,
            k,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = if self.k > 1 {
            pad_hw(x, self.k / 2)?
        } else {
            x.clone()
        };
        self.bn.forward_t(&self.conv.forward(&x)?, train)
    }
}

/// `relu(bn(conv(relu(bn(conv(x))))) + skip(x))`, the skip a 1x1 conv + bn when the channels
/// change, else the identity.
#[derive(Debug, Clone)]
struct Block {
    a: ConvBn,
    b: ConvBn,
    proj: Option<ConvBn>,
}

impl Block {
    fn new(vb: VarBuilder, c_in: usize, c_out: usize) -> Result<Self> {
        Ok(Block {
            a: ConvBn::new(vb.pp("a"), c_in, c_out, 3, true)?,
            b: ConvBn::new(vb.pp("b"), c_out, c_out, 3, true)?,
            proj: if c_in != c_out {
                Some(ConvBn::new(vb.pp("proj"), c_in, c_out, 1, true)?)
            } else {
                None
            },
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let h = self.a.forward_t(x, train)?.relu()?;
        let h = self.b.forward_t(&h, train)?;
        let skip = match &self.proj {
            Some(p) => p.forward_t(x, train)?,
            None => x.clone(),
        };
        (h + skip)?.relu()
    }
}

/// The residual encoder: `[B, H, W, C]` in `[0,1]` (or standardised) to `[B, 128]`, unit norm.
#[derive(Debug, Clone)]
pub struct ResNet {
    stem: ConvBn,
    blocks: Vec<Block>,
    fc: Linear,
}

impl ResNet {
    /// Weights named `stem.*`, `block1..3.*`, `fc.*`. Inputs of at least 8x8.
    pub fn new(vb: VarBuilder, height: usize, width: usize, channels: usize) -> Result<Self> {
        if height < 8 || width < 8 {
            candle_core::bail!("resnet encoders need inputs of at least 8x8, got {height}x{width}");
        }
        let [c1, c2, c3] = STAGE_CHANNELS;
        Ok(ResNet {
            stem: ConvBn::new(vb.pp("stem"), channels, c1, 3, false)?,
            blocks: vec![
                Block::new(vb.pp("block1"), c1, c1)?,
                Block::new(vb.pp("block2"), c1, c2)?,
                Block::new(vb.pp("block3"), c2, c3)?,
            ],
            fc: dense(vb.pp("fc"), c3, DIM, false)?,
        })
    }

    /// Stem, then each block after a 2x2 max-pool, global average pool, Dense, L2 norm.
    /// `train`: batch norm on the batch's statistics (and update the running ones).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = self.stem.forward_t(x, train)?.relu()?;
        for b in &self.blocks {
            h = b.forward_t(&cnn_ops::max_pool2(&h)?, train)?;
        }
        let pooled = h.mean(1)?.mean(1)?;
        l2_normalize(&self.fc.forward(&pooled)?)
    }

    /// Every batch-norm layer, in order (tests).
    pub fn batch_norms(&self) -> Vec<&BatchNorm2d> {
        let mut v = vec![&self.stem.bn];
        for b in &self.blocks {
            v.push(&b.a.bn);
            v.push(&b.b.bn);
            if let Some(p) = &b.proj {
                v.push(&p.bn);
            }
        }
        v
    }
}

impl Module for ResNet {
    /// Inference: batch norm with the running statistics.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_t(x, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    /// Oracle, by hand: one channel, values 1, 2, 3, 6 (B=1, H=2, W=2). Batch mean 3, biased
    /// variance (4 + 1 + 0 + 9) / 4 = 3.5, unbiased 14 / 3. After one training pass the running
    /// mean is 0.9 * 0 + 0.1 * 3 = 0.3 and the running variance 0.9 * 1 + 0.1 * 14/3 =
    /// 1.3666667. Training output: (x - 3) / sqrt(3.5 + 1e-5); inference output of the same
    /// x: (x - 0.3) / sqrt(1.3666667 + 1e-5).
    #[test]
    fn batch_norm_trains_on_the_batch_and_infers_with_running_stats() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let bn = BatchNorm2d::new(vb, 1).unwrap();
        let xs = [1f32, 2.0, 3.0, 6.0];
        let x = Tensor::from_vec(xs.to_vec(), (1, 2, 2, 1), &Device::Cpu).unwrap();
        let y = bn.forward_t(&x, true).unwrap().flatten_all().unwrap();
        let y = y.to_vec1::<f32>().unwrap();
        for (a, v) in y.iter().zip(xs) {
            let want = (v as f64 - 3.0) / (3.5f64 + 1e-5).sqrt();
            assert!((*a as f64 - want).abs() < 1e-5, "train {a} vs {want}");
        }
        let (rm, rv) = bn.running_stats();
        let rm = rm.to_vec1::<f32>().unwrap()[0] as f64;
        let rv = rv.to_vec1::<f32>().unwrap()[0] as f64;
        assert!((rm - 0.3).abs() < 1e-6, "running mean {rm}");
        assert!(
            (rv - (0.9 + 0.1 * 14.0 / 3.0)).abs() < 1e-6,
            "running var {rv}"
        );
        // The running statistics are the var map's (so they are saved with the weights).
        let saved = vm.data().lock().unwrap()["running_mean"]
            .as_tensor()
            .to_vec1::<f32>();
        assert_eq!(saved.unwrap()[0] as f64, rm);
        let e = bn.forward_t(&x, false).unwrap().flatten_all().unwrap();
        for (a, v) in e.to_vec1::<f32>().unwrap().iter().zip(xs) {
            let want = (v as f64 - 0.3) / (0.9 + 0.1 * 14.0 / 3.0 + 1e-5f64).sqrt();
            assert!((*a as f64 - want).abs() < 1e-5, "eval {a} vs {want}");
        }
        // Inference leaves the running statistics alone.
        let rm2 = bn.running_stats().0.to_vec1::<f32>().unwrap()[0] as f64;
        assert_eq!(rm, rm2);
    }

    /// At inference an image's embedding does not depend on the rest of its batch (running
    /// statistics), while training it does (batch statistics).
    #[test]
    fn resnet_inference_is_per_image() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let net = ResNet::new(vb, 16, 12, 1).unwrap();
        let x = Tensor::rand(0f32, 1.0, (4, 16, 12, 1), &Device::Cpu).unwrap();
        let first = x.narrow(0, 0, 1).unwrap();
        let all = net.forward_t(&x, false).unwrap().narrow(0, 0, 1).unwrap();
        let one = net.forward_t(&first, false).unwrap();
        let d = (all - &one).unwrap().abs().unwrap().max_all().unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-5);
        let all_t = net.forward_t(&x, true).unwrap().narrow(0, 0, 1).unwrap();
        let d = (all_t - &one).unwrap().abs().unwrap().max_all().unwrap();
        assert!(
            d.to_scalar::<f32>().unwrap() > 1e-3,
            "training mode uses the batch"
        );
        assert_eq!(one.dims(), &[1, DIM]);
    }
}

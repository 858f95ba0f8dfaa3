//! Image encoders: the classic LeNet twin tower and a stronger CNN, over NHWC batches.

use super::ops::{self, Act};
use candle_core::{Module, Result, Tensor};
use candle_nn::{Init, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

/// Which image network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// The seed's network: Conv(4,5x5,tanh) -> AvgPool(2) -> Conv(16,5x5,tanh) -> AvgPool(2)
    /// -> Flatten -> Dense(10,tanh). 10-d embeddings, not normalised.
    Lenet,
    /// Conv(32,5x5,relu) -> MaxPool(2) -> Conv(64,5x5,relu) -> MaxPool(2) -> Flatten ->
    /// Dense(256,relu) -> Dense(64), L2-normalised. Stronger; about 12x the compute of `lenet`.
    Cnn,
}

impl Arch {
    /// Embedding dimension.
    pub fn dim(self) -> usize {
        match self {
            Arch::Lenet => 10,
            Arch::Cnn => 64,
        }
    }
    /// Whether the output is L2-normalised.
    pub fn normalized(self) -> bool {
        matches!(self, Arch::Cnn)
    }
    /// The name used in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Lenet => "lenet",
            Arch::Cnn => "cnn",
        }
    }
}

/// A convolution layer (HWIO weights) with fused bias and activation.
#[derive(Debug, Clone)]
pub struct Conv {
    w: Tensor,
    b: Tensor,
    act: Act,
    input_grad: bool,
}

impl Conv {
    /// Glorot-uniform weights (as Keras' default) or He-uniform for ReLU; zero bias.
    pub fn new(
        vb: VarBuilder,
        c_in: usize,
        c_out: usize,
        k: usize,
        act: Act,
        input_grad: bool,
    ) -> Result<Self> {
        let (fan_in, fan_out) = ((k * k * c_in) as f64, (k * k * c_out) as f64);
        let limit = match act {
            Act::Relu => (6.0 / fan_in).sqrt(),
            _ => (6.0 / (fan_in + fan_out)).sqrt(),
        };
        let w = vb.get_with_hints(
            (k, k, c_in, c_out),
            "weight",
            Init::Uniform {
                lo: -limit,
                up: limit,
            },
        )?;
        let b = vb.get_with_hints(c_out, "bias", Init::Const(0.0))?;
        Ok(Conv {
            w,
            b,
            act,
            input_grad,
        })
    }
}

impl Module for Conv {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::conv2d_act(x, &self.w, &self.b, self.act, self.input_grad)
    }
}

impl Conv {
    /// The convolution followed by 2x2 pooling, fused into one op.
    pub fn forward_pool(&self, x: &Tensor, pool: ops::Pool2) -> Result<Tensor> {
        ops::conv2d_act_pool(x, &self.w, &self.b, self.act, self.input_grad, pool)
    }
}

/// A dense layer with Glorot-uniform (or He-uniform) init, weight `[out, in]` as candle-nn.
pub fn dense(vb: VarBuilder, d_in: usize, d_out: usize, relu: bool) -> Result<Linear> {
    let limit = if relu {
        (6.0 / d_in as f64).sqrt()
    } else {
        (6.0 / (d_in + d_out) as f64).sqrt()
    };
    let w = vb.get_with_hints(
        (d_out, d_in),
        "weight",
        Init::Uniform {
            lo: -limit,
            up: limit,
        },
    )?;
    let b = vb.get_with_hints(d_out, "bias", Init::Const(0.0))?;
    Ok(Linear::new(w, Some(b)))
}

/// An image encoder: `[B, H, W, C]` pixels in `[0,1]` to `[B, dim]` embeddings.
#[derive(Debug, Clone)]
pub struct ImageEncoder {
    arch: Arch,
    conv1: Conv,
    conv2: Conv,
    fc1: Linear,
    fc2: Option<Linear>,
}

/// Spatial size after `valid 5x5 conv -> pool2` twice.
fn feature_side(side: usize) -> usize {
    ((side - 4) / 2 - 4) / 2
}

impl ImageEncoder {
    /// Build the network for `height x width x channels` inputs (at least 16x16).
    pub fn new(
        vb: VarBuilder,
        arch: Arch,
        height: usize,
        width: usize,
        channels: usize,
    ) -> Result<Self> {
        if height < 16 || width < 16 {
            candle_core::bail!(
                "image encoders need inputs of at least 16x16, got {height}x{width}"
            );
        }
        let flat = feature_side(height) * feature_side(width);
        Ok(match arch {
            Arch::Lenet => ImageEncoder {
                arch,
                conv1: Conv::new(vb.pp("conv1"), channels, 4, 5, Act::Tanh, false)?,
                conv2: Conv::new(vb.pp("conv2"), 4, 16, 5, Act::Tanh, true)?,
                fc1: dense(vb.pp("fc1"), flat * 16, 10, false)?,
                fc2: None,
            },
            Arch::Cnn => ImageEncoder {
                arch,
                conv1: Conv::new(vb.pp("conv1"), channels, 32, 5, Act::Relu, false)?,
                conv2: Conv::new(vb.pp("conv2"), 32, 64, 5, Act::Relu, true)?,
                fc1: dense(vb.pp("fc1"), flat * 64, 256, true)?,
                fc2: Some(dense(vb.pp("fc2"), 256, 64, false)?),
            },
        })
    }

    /// The architecture.
    pub fn arch(&self) -> Arch {
        self.arch
    }
}

impl Module for ImageEncoder {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let pool = match self.arch {
            Arch::Lenet => ops::Pool2::Avg,
            Arch::Cnn => ops::Pool2::Max,
        };
        let h = self.conv1.forward_pool(x, pool)?;
        let h = self.conv2.forward_pool(&h, pool)?;
        let h = h.flatten_from(1)?;
        match &self.fc2 {
            None => ops::tanh(&self.fc1.forward(&h)?),
            Some(fc2) => {
                let h = self.fc1.forward(&h)?.relu()?;
                let e = fc2.forward(&h)?;
                l2_normalize(&e)
            }
        }
    }
}

/// Row-wise L2 normalisation of `[B, D]` (with a small floor on the norm).
pub fn l2_normalize(e: &Tensor) -> Result<Tensor> {
    let n = e.sqr()?.sum_keepdim(1)?.clamp(1e-12, f64::MAX)?.sqrt()?;
    e.broadcast_div(&n)
}

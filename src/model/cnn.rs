//! Image encoders: the classic LeNet twin tower and a stronger CNN, over NHWC batches.

use super::cnn_ops::{self, Act};
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
    /// For faces and signatures (larger inputs, few classes): 3x3 convolutions
    /// Conv(32)-Conv(32)-MaxPool-Conv(64)-Conv(64)-MaxPool-Conv(128)-MaxPool, ReLU, then
    /// Dense(128), L2-normalised. Inputs of at least 32x32.
    Deep,
    /// A small ResNet with batch normalisation ([`super::resnet`]): 3x3 stem, three residual
    /// blocks of 32, 64 and 128 channels between 2x2 max-pools, global average pooling,
    /// Dense(128), L2-normalised. For faces and signatures; inputs of at least 8x8.
    Resnet,
    /// dlib's pretrained face ResNet-29 (128-d, Euclidean, not normalised) on aligned 150x150
    /// face chips. Inference only: made by `twindex import dlib-face`, not by `train`.
    #[value(name = "dlib-resnet")]
    #[serde(rename = "dlib-resnet")]
    DlibResnet,
}

impl Arch {
    /// Embedding dimension.
    pub fn dim(self) -> usize {
        match self {
            Arch::Lenet => 10,
            Arch::Cnn => 64,
            Arch::Deep => 128,
            Arch::Resnet => super::resnet::DIM,
            Arch::DlibResnet => 128,
        }
    }
    /// Whether the output is L2-normalised.
    pub fn normalized(self) -> bool {
        matches!(self, Arch::Cnn | Arch::Deep | Arch::Resnet)
    }
    /// The name used in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Lenet => "lenet",
            Arch::Cnn => "cnn",
            Arch::Deep => "deep",
            Arch::Resnet => "resnet",
            Arch::DlibResnet => "dlib-resnet",
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

impl Conv {
    /// The same convolution with another fused activation (e.g. `Identity` before a batch
    /// norm, with weights initialised for the ReLU that follows it).
    pub fn with_act(self, act: Act) -> Self {
        Conv { act, ..self }
    }
}

impl Module for Conv {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        cnn_ops::conv2d_act(x, &self.w, &self.b, self.act, self.input_grad)
    }
}

impl Conv {
    /// The convolution followed by 2x2 pooling, fused into one op.
    pub fn forward_pool(&self, x: &Tensor, pool: cnn_ops::Pool2) -> Result<Tensor> {
        cnn_ops::conv2d_act_pool(x, &self.w, &self.b, self.act, self.input_grad, pool)
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
    net: Net,
}

/// The layers behind an [`ImageEncoder`].
#[derive(Debug, Clone)]
enum Net {
    /// The trainable towers (`lenet`, `cnn`, `deep`).
    Tower {
        /// Convolutions, each followed by 2x2 pooling or not.
        convs: Vec<(Conv, Option<cnn_ops::Pool2>)>,
        fc1: Linear,
        fc2: Option<Linear>,
    },
    /// The residual network with batch normalisation (`resnet`).
    Resnet(super::resnet::ResNet),
    /// dlib's pretrained face network (`dlib-resnet`).
    Dlib(std::sync::Arc<super::dlib::DlibResNet>),
    /// Several towers used as one ([`super::ensemble::Ensemble`]).
    Ensemble(std::sync::Arc<super::ensemble::Ensemble>),
}

/// Spatial size after `valid 5x5 conv -> pool2` twice.
fn feature_side(side: usize) -> usize {
    ((side - 4) / 2 - 4) / 2
}

/// Spatial size after the `deep` stack: (3x3, 3x3, pool), (3x3, 3x3, pool), (3x3, pool).
fn deep_side(side: usize) -> usize {
    (((side - 4) / 2 - 4) / 2 - 2) / 2
}

impl ImageEncoder {
    /// Build the network for `height x width x channels` inputs (at least 16x16; 32x32 for
    /// `deep`).
    pub fn new(
        vb: VarBuilder,
        arch: Arch,
        height: usize,
        width: usize,
        channels: usize,
    ) -> Result<Self> {
        if arch == Arch::DlibResnet {
            candle_core::bail!(
                "dlib-resnet is a pretrained network: `twindex import dlib-face` makes it, it cannot be initialised or trained here"
            );
        }
        if arch == Arch::Resnet {
            return Ok(ImageEncoder {
                arch,
                net: Net::Resnet(super::resnet::ResNet::new(vb, height, width, channels)?),
            });
        }
        let min = if arch == Arch::Deep { 32 } else { 16 };
        if height < min || width < min {
            candle_core::bail!(
                "{} encoders need inputs of at least {min}x{min}, got {height}x{width}",
                arch.name()
            );
        }
        let flat = feature_side(height) * feature_side(width);
        let (avg, max) = (Some(cnn_ops::Pool2::Avg), Some(cnn_ops::Pool2::Max));
        Ok(match arch {
            Arch::Lenet => ImageEncoder {
                arch,
                net: Net::Tower {
                    convs: vec![
                        (
                            Conv::new(vb.pp("conv1"), channels, 4, 5, Act::Tanh, false)?,
                            avg,
                        ),
                        (Conv::new(vb.pp("conv2"), 4, 16, 5, Act::Tanh, true)?, avg),
                    ],
                    fc1: dense(vb.pp("fc1"), flat * 16, 10, false)?,
                    fc2: None,
                },
            },
            Arch::Cnn => ImageEncoder {
                arch,
                net: Net::Tower {
                    convs: vec![
                        (
                            Conv::new(vb.pp("conv1"), channels, 32, 5, Act::Relu, false)?,
                            max,
                        ),
                        (Conv::new(vb.pp("conv2"), 32, 64, 5, Act::Relu, true)?, max),
                    ],
                    fc1: dense(vb.pp("fc1"), flat * 64, 256, true)?,
                    fc2: Some(dense(vb.pp("fc2"), 256, 64, false)?),
                },
            },
            Arch::Deep => {
                let flat = deep_side(height) * deep_side(width) * 128;
                let c = |name: &str, i: usize, o: usize, grad: bool| {
                    Conv::new(vb.pp(name), i, o, 3, Act::Relu, grad)
                };
                ImageEncoder {
                    arch,
                    net: Net::Tower {
                        convs: vec![
                            (c("conv1", channels, 32, false)?, None),
                            (c("conv2", 32, 32, true)?, max),
                            (c("conv3", 32, 64, true)?, None),
                            (c("conv4", 64, 64, true)?, max),
                            (c("conv5", 64, 128, true)?, max),
                        ],
                        fc1: dense(vb.pp("fc1"), flat, 128, false)?,
                        fc2: None,
                    },
                }
            }
            Arch::DlibResnet | Arch::Resnet => unreachable!("handled above"),
        })
    }

    /// Wrap dlib's pretrained face network.
    pub fn dlib(net: super::dlib::DlibResNet) -> Self {
        ImageEncoder {
            arch: Arch::DlibResnet,
            net: Net::Dlib(std::sync::Arc::new(net)),
        }
    }

    /// Wrap an ensemble of towers; `arch` is its members' network (the first member's).
    pub fn ensemble(arch: Arch, e: super::ensemble::Ensemble) -> Self {
        ImageEncoder {
            arch,
            net: Net::Ensemble(std::sync::Arc::new(e)),
        }
    }

    /// The ensemble behind this encoder, if it is one.
    pub fn as_ensemble(&self) -> Option<&super::ensemble::Ensemble> {
        match &self.net {
            Net::Ensemble(e) => Some(e),
            _ => None,
        }
    }

    /// Embed `x`; `train` switches batch normalisation (`resnet`) to the batch's statistics
    /// and updates its running ones. The other networks behave the same either way.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match &self.net {
            Net::Resnet(r) => r.forward_t(x, train),
            _ => self.forward(x),
        }
    }

    /// The residual network behind this encoder, if it is one.
    pub fn as_resnet(&self) -> Option<&super::resnet::ResNet> {
        match &self.net {
            Net::Resnet(r) => Some(r),
            _ => None,
        }
    }

    /// The architecture (of the members, for an ensemble).
    pub fn arch(&self) -> Arch {
        self.arch
    }
}

impl Module for ImageEncoder {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (convs, fc1, fc2) = match &self.net {
            Net::Dlib(net) => return net.forward(x),
            Net::Resnet(r) => return r.forward_t(x, false),
            Net::Ensemble(e) => return e.forward(x),
            Net::Tower { convs, fc1, fc2 } => (convs, fc1, fc2),
        };
        let mut h = x.clone();
        for (conv, pool) in convs {
            h = match pool {
                Some(p) => conv.forward_pool(&h, *p)?,
                None => conv.forward(&h)?,
            };
        }
        let h = h.flatten_from(1)?;
        match (self.arch, fc2) {
            (Arch::Lenet, _) => cnn_ops::tanh(&fc1.forward(&h)?),
            (_, Some(fc2)) => {
                let h = fc1.forward(&h)?.relu()?;
                l2_normalize(&fc2.forward(&h)?)
            }
            (_, None) => l2_normalize(&fc1.forward(&h)?),
        }
    }
}

/// Row-wise L2 normalisation of `[B, D]` (with a small floor on the norm).
pub fn l2_normalize(e: &Tensor) -> Result<Tensor> {
    let n = e.sqr()?.sum_keepdim(1)?.clamp(1e-12, f64::MAX)?.sqrt()?;
    e.broadcast_div(&n)
}

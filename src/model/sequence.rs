//! The sequence twin for pen trajectories: a time-delay neural network (TDNN: 1-D dilated
//! convolutions over time, written as a linear layer over each point's context window) on the
//! feature sequence of [`super::pen::PenPreprocess`], pooled over `segments` equal spans of the
//! signature (so the embedding keeps the coarse writing order) into an L2-normalised
//! embedding. Saved as an encoder directory: `config.json` + `model.safetensors`.

use super::cnn::l2_normalize;
use super::pen::PenPreprocess;
use crate::error::{Error, Result};
use crate::fsutil;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The `format` of a sequence encoder's config.json.
pub const SEQUENCE_FORMAT: &str = "twindex-sequence-encoder";
pub use super::encoder_dir::{CONFIG_FILE, WEIGHTS_FILE};

/// The network's shape (also flags of `twindex train sequence`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(default)]
pub struct SequenceNetConfig {
    /// Width of each time-delay layer (comma-separated). Wider: more capacity, slower,
    /// easier to over-fit 20 writers.
    #[arg(long, value_delimiter = ',', default_values_t = [64, 64, 64])]
    pub widths: Vec<usize>,
    /// Dilation of each time-delay layer (comma-separated; as many as widths): 1,2,4 with
    /// kernel 5 makes the last layer see 1 + 4*(1+2+4) = 29 points.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 4])]
    pub dilations: Vec<usize>,
    /// Context points per time-delay layer (odd).
    #[arg(long, default_value_t = 5)]
    pub kernel: usize,
    /// Spans of the signature pooled separately (must divide the points; 1: global average).
    #[arg(long, default_value_t = 4)]
    pub segments: usize,
    /// Embedding dimension.
    #[arg(long, default_value_t = 64)]
    pub dim: usize,
    /// `--no-std-pooling`: pool only the mean of each span (by default its standard deviation
    /// too: x-vector statistics pooling).
    #[arg(long = "no-std-pooling", action = clap::ArgAction::SetFalse)]
    pub std_pooling: bool,
    /// Towers trained side by side from different initial weights, embeddings concatenated
    /// (an ensemble in one encoder). More: steadier, proportionally slower.
    #[arg(long, default_value_t = 1)]
    pub members: usize,
}

impl Default for SequenceNetConfig {
    fn default() -> Self {
        SequenceNetConfig {
            widths: vec![64, 64, 64],
            dilations: vec![1, 2, 4],
            kernel: 5,
            segments: 4,
            dim: 64,
            std_pooling: true,
            members: 1,
        }
    }
}

/// One time-delay layer: each output point is a linear map of the `kernel` input points
/// `t + (j - kernel/2) * dilation` (zero outside the sequence), then ReLU.
pub struct TimeDelay {
    linear: Linear,
    kernel: usize,
    dilation: usize,
}

impl TimeDelay {
    pub fn new(
        vb: VarBuilder,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        dilation: usize,
    ) -> Result<Self> {
        Ok(TimeDelay {
            linear: super::cnn::dense(vb, c_in * kernel, c_out, true)?,
            kernel,
            dilation,
        })
    }
}

impl Module for TimeDelay {
    /// `[B, T, C_in] -> [B, T, C_out]`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let t = x.dim(1)?;
        let pad = self.dilation * (self.kernel / 2);
        let xp = x.pad_with_zeros(1, pad, pad)?;
        let taps = (0..self.kernel)
            .map(|j| xp.narrow(1, j * self.dilation, t))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let ctx = Tensor::cat(&taps, 2)?;
        self.linear.forward(&ctx)?.relu()
    }
}

/// One tower of the sequence twin.
pub struct SequenceTower {
    layers: Vec<TimeDelay>,
    head: Linear,
    segments: usize,
    std_pooling: bool,
}

impl SequenceTower {
    /// Layers `tdnn{i}` and `head`, for inputs of `channels` features.
    pub fn new(vb: VarBuilder, cfg: &SequenceNetConfig, channels: usize) -> Result<Self> {
        if cfg.widths.is_empty()
            || cfg.widths.len() != cfg.dilations.len()
            || cfg.kernel.is_multiple_of(2)
            || cfg.segments == 0
            || cfg.dim == 0
        {
            return Err(Error::InvalidArgument(format!(
                "sequence network: need as many widths as dilations (got {:?} and {:?}), an odd kernel (got {}), segments and dim >= 1",
                cfg.widths, cfg.dilations, cfg.kernel
            )));
        }
        let mut layers = Vec::new();
        let mut c = channels;
        for (i, (&w, &d)) in cfg.widths.iter().zip(&cfg.dilations).enumerate() {
            layers.push(TimeDelay::new(
                vb.pp(format!("tdnn{i}")),
                c,
                w,
                cfg.kernel,
                d,
            )?);
            c = w;
        }
        let stats = if cfg.std_pooling { 2 } else { 1 };
        let head = super::cnn::dense(vb.pp("head"), c * cfg.segments * stats, cfg.dim, false)?;
        Ok(SequenceTower {
            layers,
            head,
            segments: cfg.segments,
            std_pooling: cfg.std_pooling,
        })
    }
}

impl Module for SequenceTower {
    /// `[B, T, C] -> [B, dim]`, rows of unit length. `T` must be a multiple of `segments`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        for l in &self.layers {
            h = l.forward(&h)?;
        }
        let (b, t, c) = h.dims3()?;
        if t % self.segments != 0 {
            candle_core::bail!(
                "sequence encoder: {t} points do not split into {} segments",
                self.segments
            );
        }
        let spans = h.reshape((b, self.segments, t / self.segments, c))?;
        let mean = spans.mean_keepdim(2)?;
        let pooled = if self.std_pooling {
            let var = spans.broadcast_sub(&mean)?.sqr()?.mean_keepdim(2)?;
            let std = (var + 1e-5)?.sqrt()?;
            Tensor::cat(&[mean, std], 3)?.reshape((b, self.segments * c * 2))?
        } else {
            mean.reshape((b, self.segments * c))?
        };
        l2_normalize(&self.head.forward(&pooled)?)
    }
}

/// The sequence twin: `members` towers of the same shape, trained side by side from different
/// initial weights (each with its own loss); the embedding is their unit-length embeddings
/// concatenated and divided by `sqrt(members)`, so its squared distances are the members'
/// mean squared distance. One member: a plain tower (variables `tdnn{i}`, `head`); more:
/// `member{m}.tdnn{i}`, `member{m}.head`.
pub struct SequenceEncoder {
    towers: Vec<SequenceTower>,
}

impl SequenceEncoder {
    pub fn new(vb: VarBuilder, cfg: &SequenceNetConfig, channels: usize) -> Result<Self> {
        if cfg.members == 0 {
            return Err(Error::InvalidArgument(
                "sequence network: members must be at least 1".into(),
            ));
        }
        let towers = if cfg.members == 1 {
            vec![SequenceTower::new(vb, cfg, channels)?]
        } else {
            (0..cfg.members)
                .map(|m| SequenceTower::new(vb.pp(format!("member{m}")), cfg, channels))
                .collect::<Result<_>>()?
        };
        Ok(SequenceEncoder { towers })
    }

    /// Each member's embedding `[B, dim]` (unit rows), for training.
    pub fn forward_members(&self, x: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        self.towers.iter().map(|t| t.forward(x)).collect()
    }
}

impl Module for SequenceEncoder {
    /// `[B, T, C] -> [B, members * dim]`, rows of unit length.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if self.towers.len() == 1 {
            return self.towers[0].forward(x);
        }
        let parts = self.forward_members(x)?;
        Tensor::cat(&parts, 1)? / (self.towers.len() as f64).sqrt()
    }
}

/// Everything needed to rebuild and use a sequence encoder (its `config.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SequenceModelConfig {
    pub format: String,
    pub format_version: u32,
    pub preprocess: PenPreprocess,
    pub net: SequenceNetConfig,
    pub dim: usize,
    /// Distance between embeddings: always "l2".
    pub metric: crate::metric::Metric,
    /// The decision threshold (on the aggregated distance of the twin scorer), chosen on
    /// hold-out training writers; see `calibration` for the other scorers.
    pub threshold: f32,
    /// What was chosen on which writers: aggregates, thresholds, the DTW settings and the
    /// fusion weights (JSON written by the online protocol).
    #[serde(default)]
    pub calibration: Option<serde_json::Value>,
    /// How it was trained (loss, epochs, selected epoch, writers, history, command).
    #[serde(default)]
    pub training: serde_json::Value,
}

impl SequenceModelConfig {
    pub fn new(preprocess: PenPreprocess, net: SequenceNetConfig) -> Self {
        SequenceModelConfig {
            format: SEQUENCE_FORMAT.into(),
            format_version: 1,
            dim: net.dim * net.members.max(1),
            preprocess,
            net,
            metric: crate::metric::Metric::L2,
            threshold: 0.0,
            calibration: None,
            training: serde_json::Value::Null,
        }
    }

    fn check(&self, path: &Path) -> Result<()> {
        if self.format != SEQUENCE_FORMAT || self.format_version != 1 {
            return Err(Error::corrupt(
                path,
                format!(
                    "format {:?} version {}: expected {SEQUENCE_FORMAT:?} version 1",
                    self.format, self.format_version
                ),
            ));
        }
        if !self
            .preprocess
            .points
            .is_multiple_of(self.net.segments.max(1))
        {
            return Err(Error::corrupt(
                path,
                format!(
                    "{} points do not split into {} segments",
                    self.preprocess.points, self.net.segments
                ),
            ));
        }
        self.preprocess.validate()
    }
}

/// A loaded or trainable sequence encoder.
pub struct SequenceModel {
    pub config: SequenceModelConfig,
    pub encoder: SequenceEncoder,
    /// The variables (present when built for training).
    pub varmap: Option<VarMap>,
    pub dir: Option<PathBuf>,
}

impl SequenceModel {
    /// A freshly initialised, trainable encoder; the initial weights depend only on `seed`.
    pub fn new_trainable(config: SequenceModelConfig, seed: u64) -> Result<Self> {
        config.check(Path::new("(new sequence encoder)"))?;
        let varmap = VarMap::new();
        let vb = super::seeded::seeded_var_builder(&varmap, seed);
        let encoder = SequenceEncoder::new(vb, &config.net, config.preprocess.channels())?;
        Ok(SequenceModel {
            config,
            encoder,
            varmap: Some(varmap),
            dir: None,
        })
    }

    /// Load `config.json` + `model.safetensors` from `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let cfg_path = dir.join(CONFIG_FILE);
        let config: SequenceModelConfig = fsutil::read_json(&cfg_path)?;
        config.check(&cfg_path)?;
        let wpath = dir.join(WEIGHTS_FILE);
        let bytes = std::fs::read(&wpath).map_err(|e| Error::io(&wpath, e))?;
        let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, &Device::Cpu)
            .map_err(|e| Error::corrupt(&wpath, format!("not a readable safetensors file: {e}")))?;
        let encoder =
            SequenceEncoder::new(vb, &config.net, config.preprocess.channels()).map_err(|e| {
                Error::corrupt(
                    &wpath,
                    format!("weights do not fit the configured network: {e}"),
                )
            })?;
        Ok(SequenceModel {
            config,
            encoder,
            varmap: None,
            dir: Some(dir.to_path_buf()),
        })
    }

    /// Save config and weights into `dir` (created if needed), each file written atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        super::encoder_dir::save_weights(self.varmap.as_ref(), dir)?;
        super::encoder_dir::save_config(&self.config, dir)
    }

    /// Stack feature sequences (each `points x channels`) into the input `[B, T, C]`.
    pub fn input_tensor(&self, seqs: &[&[f32]]) -> Result<Tensor> {
        let (t, c) = (
            self.config.preprocess.points,
            self.config.preprocess.channels(),
        );
        let mut flat = Vec::with_capacity(seqs.len() * t * c);
        for s in seqs {
            if s.len() != t * c {
                return Err(Error::dim(t * c, s.len(), "feature sequence"));
            }
            flat.extend_from_slice(s);
        }
        Ok(Tensor::from_vec(flat, (seqs.len(), t, c), &Device::Cpu)?)
    }

    /// Embeddings of feature sequences, `n x dim` row-major.
    pub fn embed(&self, seqs: &[Vec<f32>], batch: usize) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(seqs.len() * self.config.dim);
        for chunk in seqs.chunks(batch.max(1)) {
            let refs: Vec<&[f32]> = chunk.iter().map(Vec::as_slice).collect();
            let e = self.encoder.forward(&self.input_tensor(&refs)?)?;
            out.extend(e.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(out)
    }
}

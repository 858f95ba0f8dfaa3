//! Cross-batch memory (XBM; Wang et al., CVPR 2020; pytorch-metric-learning's
//! `CrossBatchMemory`): a ring of the last `size` embeddings (detached) and their labels, the
//! reference set of any pair loss ([`super::pair_loss`]), so that each batch is compared with
//! many more items than it holds. The batch is enqueued first; its own slots are never its
//! positives.

use super::pairs::PairMask;
use candle_core::{bail, DType, Result, Tensor};

/// The memory: a ring of `size` embeddings of dimension `dim`.
#[derive(Debug, Clone)]
pub struct CrossBatchMemory {
    size: usize,
    dim: usize,
    emb: Vec<f64>,
    labels: Vec<u32>,
    /// The next slot to write.
    next: usize,
    /// Whether every slot has been written once.
    filled: bool,
}

impl CrossBatchMemory {
    /// An empty memory of `size` slots (PML's default 1024) for `dim`-d embeddings.
    pub fn new(size: usize, dim: usize) -> Result<Self> {
        if size == 0 || dim == 0 {
            bail!("cross-batch memory: size and dimension must be positive (got {size} and {dim})");
        }
        Ok(CrossBatchMemory {
            size,
            dim,
            emb: vec![0.0; size * dim],
            labels: vec![0; size],
            next: 0,
            filled: false,
        })
    }

    /// Slots.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Slots written so far (at most `size`).
    pub fn len(&self) -> usize {
        if self.filled {
            self.size
        } else {
            self.next
        }
    }

    /// Whether nothing was enqueued yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Enqueue a batch `emb` `[B, dim]` (values only: no gradient flows into the memory) with
    /// its `labels`; returns the slot of each row.
    pub fn enqueue(&mut self, emb: &Tensor, labels: &[u32]) -> Result<Vec<usize>> {
        let (b, d) = emb.dims2()?;
        if d != self.dim || labels.len() != b || b > self.size {
            bail!(
                "cross-batch memory of {}x{}: a {b}x{d} batch with {} labels (the batch must fit the memory)",
                self.size,
                self.dim,
                labels.len()
            );
        }
        let v = emb.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
        let mut slots = Vec::with_capacity(b);
        for (r, &label) in labels.iter().enumerate() {
            let s = (self.next + r) % self.size;
            self.emb[s * d..(s + 1) * d].copy_from_slice(&v[r * d..(r + 1) * d]);
            self.labels[s] = label;
            slots.push(s);
        }
        let prev = self.next;
        self.next = (self.next + b) % self.size;
        if !self.filled && self.next <= prev {
            self.filled = true;
        }
        Ok(slots)
    }

    /// The memory as a reference set: embeddings `[len, dim]` (a constant, in `like`'s dtype
    /// and device) and their labels.
    pub fn reference(&self, like: &Tensor) -> Result<(Tensor, Vec<u32>)> {
        let n = self.len();
        let t = Tensor::from_vec(
            self.emb[..n * self.dim].to_vec(),
            (n, self.dim),
            like.device(),
        )?
        .to_dtype(like.dtype())?;
        Ok((t, self.labels[..n].to_vec()))
    }

    /// Enqueue `emb` and return the memory as the reference set with the pairs of the batch
    /// against it (every pair but a row with its own slot): what a pair loss then takes.
    pub fn step(&mut self, emb: &Tensor, labels: &[u32]) -> Result<(Tensor, PairMask)> {
        let slots = self.enqueue(emb, labels)?;
        let (reference, ref_labels) = self.reference(emb)?;
        let mask = PairMask::against(labels, &ref_labels, Some(&slots))?;
        Ok((reference, mask))
    }
}

//! Training twin encoders: losses (twin and triplet losses; pytorch-metric-learning's pair and
//! proxy losses; a cross-batch memory), online mining and the training loops (images, ensembles of
//! image encoders; text fine-tuning).

pub mod ensemble;
pub mod image;
pub mod loss;
pub mod mining;
pub mod pair_loss;
pub mod pairs;
pub mod progress;
pub mod proxy_anchor;
pub mod sequence;
pub mod text;
pub mod xbm;

pub use ensemble::{train_ensemble, EnsembleOutcome, EnsembleTrainConfig};
pub use image::{
    scheduled_lr, train_image, train_image_from, train_image_with, Augmentation, ImageTrainConfig,
    LossKind, Schedule, TrainEvent, TrainOutcome,
};
pub use mining::{Miner, Triplet};
pub use pair_loss::PairLoss;
pub use pairs::PairMask;
pub use progress::{Observer, Progress, Throughput};
pub use proxy_anchor::proxy_anchor;
pub use text::{
    fine_tune_text, train_text, TextLoss, TextTrainConfig, TextTrainEvent, TextTrainOutcome,
    TextTrainReport, TextTrainRun,
};
pub use xbm::CrossBatchMemory;

/// Training allocates and frees large tensors every step: keep freed memory in the heap instead
/// of returning it to the kernel (measured: a third less system time, from page faults, in text
/// training; an eighth of the LeNet step). Call before the training threads start.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; called before the training threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

//! Training twin encoders: losses, online mining and the training loop.

pub mod image;
pub mod loss;
pub mod mining;

pub use image::{
    train_image, train_image_with, Augmentation, ImageTrainConfig, LossKind, TrainEvent,
    TrainOutcome,
};
pub use mining::{Miner, Triplet};

//! Training twin encoders: losses, online mining and the training loops (images; text
//! fine-tuning).

pub mod image;
pub mod loss;
pub mod mining;
pub mod text;

pub use image::{
    train_image, train_image_with, Augmentation, ImageTrainConfig, LossKind, TrainEvent,
    TrainOutcome,
};
pub use mining::{Miner, Triplet};
pub use text::{train_text, TextLoss, TextTrainConfig, TextTrainEvent, TextTrainOutcome};

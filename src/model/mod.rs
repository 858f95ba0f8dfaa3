//! Encoders as candle modules: image CNNs (with fast custom ops) and their on-disk form, and
//! the sentence-transformers text encoder (BERT/MiniLM); ensembles of image encoders.

pub mod bert;
pub mod cnn;
pub mod dlib;
pub mod ensemble;
pub mod fastbert;
pub mod image;
pub mod kernels;
pub mod ops;
pub mod pen;
pub mod seeded;
pub mod sequence;
pub mod text;

pub use cnn::{Arch, ImageEncoder};
pub use ensemble::{Ensemble, EnsembleBy, EnsembleConfig, MemberConfig};
pub use fastbert::{FastBert, TextBackend};
pub use image::{ImageModel, ImageModelConfig, Preprocess, TrainingRecord};
pub use kernels::Precision;
pub use text::{TextEncoder, TextModelParts};

impl From<candle_core::Error> for crate::error::Error {
    fn from(e: candle_core::Error) -> Self {
        crate::error::Error::Tensor(e.to_string())
    }
}

//! # twindex
//!
//! An embedding index and near-duplicate search engine built on similarity learning: train twin
//! (Siamese) encoders with contrastive and triplet losses, index a corpus as embeddings, and
//! answer "is this a duplicate of something I have?" with a calibrated threshold.
//!
//! Modules, in dependency order: [`error`] (with [`fsutil`], [`timing`], [`cpu`], [`metric`], [`calibration`]) <- [`corpus`],
//! [`index`], [`model`] <- [`train`], [`query`] <- [`eval`], [`serve`]; the `twindex` binary's `cli` sits
//! on top. [`index`] knows nothing of candle; [`model`] knows nothing of [`index`].

pub mod calibration;
pub mod corpus;
pub mod cpu;
pub mod error;
pub mod eval;
pub mod fsutil;
pub mod index;
pub mod metric;
pub mod model;
pub mod query;
pub mod serve;
#[cfg(test)]
pub(crate) mod testutil;
pub mod timing;
pub mod train;

pub use error::{Error, Result};

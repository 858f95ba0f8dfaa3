//! Answering queries: k nearest neighbours with the duplicate decision.

pub mod encoder;
pub mod searcher;

pub use searcher::{search, QueryHit};

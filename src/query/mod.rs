//! Answering queries: k nearest neighbours with the duplicate decision.

pub mod encoder;
pub mod searcher;
pub mod verify;

pub use searcher::{search, QueryHit};
pub use verify::{identify, verify, Verification};

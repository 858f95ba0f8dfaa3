//! Answering queries: the [`Searcher`] (an index opened with its encoder), k nearest
//! neighbours with the duplicate decision, identification and verification.

mod backend;
pub mod encoder;
pub mod milvus;
pub mod parts;
pub mod searcher;
pub mod verify;

pub use searcher::{
    search, shorten, Answer, Encoder, NewItem, OpenOptions, Query, QueryHit, SearchOptions,
    Searcher, Stats,
};
pub use verify::{identify, verify, Aggregate, Verification};

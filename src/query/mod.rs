//! Answering queries: the [`Searcher`] (an index opened with its encoder), k nearest
//! neighbours with the duplicate decision, identification and verification.
//!
//! Around it: building an index directory from a corpus, texts, vectors or parts ([`build`]),
//! adding to one ([`add`]) and maintaining it ([`maintain`]); hybrid BM25 + dense fusion
//! ([`hybrid`]); benchmark inputs and the bench runner ([`bench`](mod@bench)); embedding parts, exports
//! and push inputs ([`parts`]); Milvus ([`milvus`]); answers and figures as a person reads them
//! ([`render`]).

pub mod add;
pub mod attendance;
mod backend;
pub mod bench;
pub mod build;
pub mod encoder;
pub mod hybrid;
pub mod maintain;
pub mod milvus;
pub mod negatives;
pub mod parts;
pub mod render;
pub mod searcher;
pub mod verify;

pub use build::{build_index, BuildProgress, BuildRecord, BuildSource, Built};
pub use searcher::{
    search, shorten, Answer, Encoder, FaceAnswer, FaceBox, FaceVerification, NewItem, OpenOptions,
    Query, QueryHit, SearchOptions, Searcher, Stats,
};
pub use verify::{identify, verify, Aggregate, Verification};

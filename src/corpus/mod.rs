//! Corpus readers (IDX, raw or gzipped) and samplers (seed pairs, P x K batches); corpus names
//! (`mnist`, IDX folders, image folders) and the shipped encoders resolved to paths
//! ([`resolve`]).

pub mod folder;
pub mod idx;
pub mod image_file;
pub mod pairs;
pub mod resolve;
pub mod sampler;
pub mod signatures;
pub mod text;
pub mod trajectory;

pub use idx::{load_idx_corpus, read_idx, read_image_set, ImageSet, TrainTest};
pub use resolve::{corpus_dir, is_image_folder, load_corpus, Protocol};
pub use sampler::{seed_pairs, Pair, PkSampler};

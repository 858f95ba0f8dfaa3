//! Integration tests: one binary, a module per area.

mod cli;
mod corpus;
pub mod data;
mod decision;
mod dlib_detect;
mod dlib_face;
mod engine;
mod ensemble;
mod face_photos;
mod faces;
mod hostile;
mod index_crash;
mod index_engine;
mod index_graph;
mod index_io;
mod index_quant;
mod negatives;
mod pen_signatures;
mod pml_oracle;
mod props;
mod scale;
mod serve;
mod signatures;
mod text;
mod text_train;
mod train;

/// An input a test needs that the repository does not ship (under ../shared, dlib's models, the
/// Milvus server). Such a test carries `#[cfg_attr(not(has_X), ignore = "needs X: ...")]` (the cfgs
/// come from build.rs), so a missing input shows as an ignored test in the summary; when the test
/// runs, the input must be there, and a missing one fails it naming the file (always so under
/// `CI`, where build.rs ignores nothing).
pub fn require_input(what: &std::path::Path) {
    assert!(
        what.exists(),
        "{} is absent (build.rs saw it or CI is set; `touch build.rs` to look again)",
        what.display()
    );
}

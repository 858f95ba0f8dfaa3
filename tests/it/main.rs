//! Integration tests: one binary, a module per area.

mod cli;
mod corpus;
mod decision;
mod dlib_face;
mod engine;
mod ensemble;
mod faces;
mod hostile;
mod index_crash;
mod index_engine;
mod index_graph;
mod index_io;
mod index_quant;
mod online;
mod scale;
mod serve;
mod text;
mod text_train;
mod train;

/// Whether the input `what` (a file or folder a test needs, e.g. under ../shared) is there. On
/// a developer's machine a missing input skips the test with a printed reason; when `CI` is set
/// (CI has ../shared and fetches dlib's models) it fails the test instead.
pub fn input_present(what: &std::path::Path, why: &str) -> bool {
    if what.exists() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{} is absent ({why}); CI must have it", what.display());
    }
    println!("skipped: {} is absent ({why})", what.display());
    false
}

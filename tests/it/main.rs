//! Integration tests: one binary, a module per area.

mod cli;
mod corpus;
mod dlib_face;
mod faces;
mod index_crash;
mod index_engine;
mod index_graph;
mod index_io;
mod serve;
mod text;
mod text_train;
mod train;

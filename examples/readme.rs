//! The README's library example: open the index that `twindex demo` builds (the shipped MNIST
//! encoder over the 60,000 training digits) and ask for the neighbours of a test digit.
//!
//! ```text
//! cargo run --release -- demo                 # builds index/mnist-demo once
//! cargo run --release --example readme
//! ```

use std::path::Path;
use twindex::query::{OpenOptions, Query, SearchOptions, Searcher};

fn main() -> twindex::Result<()> {
    let searcher = Searcher::open(Path::new("index/mnist-demo"), &OpenOptions::default())?;
    let digit = Query::Image("corpora/mnist/t10k-images-idx3-ubyte.gz:3");
    let answer = searcher.query(&digit, &SearchOptions::default())?; // the 10 nearest
    for hit in answer.results {
        let (id, label, d, dup) = (hit.id, hit.label, hit.distance, hit.duplicate);
        println!("{id} ({label}): distance {d:.4}, duplicate: {dup}");
    }
    Ok(())
}

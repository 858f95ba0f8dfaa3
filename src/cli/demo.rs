//! `twindex demo`: the main job on the shipped default. Loads the shipped MNIST encoder, builds
//! (or reopens) an HNSW index of the 60,000 training digits under `index/mnist-demo`, queries a
//! few test digits, and prints neighbours, duplicate decisions and headline metrics.

use super::common;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use twindex::eval::demo::run_demo;
use twindex::query::render::hits_table;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Encoder directory (default: the shipped `corpora/encoders/mnist-cnn`).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Where the demo index lives (rebuilt when missing or built with another encoder).
    #[arg(long, default_value = "index/mnist-demo")]
    pub index: PathBuf,
    /// Test digits to show.
    #[arg(long, default_value_t = 4)]
    pub show: usize,
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: DemoArgs) -> Result<()> {
    let model_dir = match &a.model {
        Some(m) => m.clone(),
        None => common::default_model_dir()?,
    };
    let r = run_demo(&model_dir, &a.index, a.show, &common::Bars::default())?;
    if a.json {
        return common::print_json(&serde_json::to_value(&r)?);
    }
    for q in &r.queries {
        let what = format!("{} (a {})", q.query, q.label);
        println!("{}\n", hits_table(&what, r.index_threshold, &q.results));
    }
    println!("{}", r.headline(rayon::current_num_threads()));
    Ok(())
}

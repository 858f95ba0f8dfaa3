//! `twindex demo`: the main job on the shipped default. Loads the shipped MNIST encoder, builds
//! (or reopens) an HNSW index of the 60,000 training digits under `index/mnist-demo`, queries a
//! few test digits, and prints neighbours, duplicate decisions and headline metrics.

use super::{common, query::print_table};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use twindex::eval::demo::run_demo;

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
        print_table(
            &mut std::io::stdout().lock(),
            &what,
            r.index_threshold,
            &q.results,
        )?;
        println!();
    }
    println!(
        "headline (MNIST test set, {} threads):",
        rayon::current_num_threads()
    );
    println!(
        "  test pairs ({}): accuracy {:.4} at distance <= {:.4}, ROC-AUC {:.4}",
        r.test_pairs, r.test_pair_accuracy, r.encoder_threshold, r.roc_auc
    );
    println!(
        "  10,000 test digits vs the 60,000-item index: precision@1 {:.4}, {:.0} queries/s",
        r.precision_at_1, r.queries_per_second
    );
    println!(
        "  HNSW recall@10 against exact search (1,000 queries): {:.4}",
        r.hnsw_recall_at_10
    );
    println!("  total {:.1} s", r.seconds);
    Ok(())
}

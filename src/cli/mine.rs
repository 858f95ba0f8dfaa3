//! `twindex mine-negatives`: hard negatives for labelled text pairs, mined from a text index.

use anyhow::Result;
use std::path::PathBuf;
use twindex::query::negatives::{mine_negatives, write_negatives, MineOptions};
use twindex::query::{OpenOptions, Searcher};

#[derive(Debug, clap::Args)]
pub struct MineArgs {
    /// A text index (`index build --text`): its items are the candidate negatives.
    #[arg(long)]
    pub index: PathBuf,
    /// Labelled pairs (TSV, as `train text --pairs`): one row for each duplicate pair, the
    /// first text the anchor; the pairs' duplicate groups are the known positives.
    #[arg(long)]
    pub pairs: PathBuf,
    #[command(flatten)]
    pub opts: MineOptions,
    /// Output TSV, a new file: anchor, positive, negative_1, ... (`train text --loss mnrl`).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: MineArgs) -> Result<()> {
    twindex::fsutil::check_new_file(&a.out, "--out")?;
    let pairs = twindex::corpus::pairs::read_pairs_tsv(&a.pairs)?;
    let s = Searcher::open(&a.index, &OpenOptions::default())?;
    let (rows, report) = mine_negatives(&s, &pairs, &a.opts)?;
    write_negatives(&rows, &a.out)?;
    if a.json {
        return super::common::print_json(&serde_json::to_value(&report)?);
    }
    println!("{report}\nwrote {}", a.out.display());
    Ok(())
}

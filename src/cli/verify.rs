//! `twindex verify`: accept or reject the claim that an image is an enrolled person or signer.

use super::common;
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use twindex::query::{Aggregate, Query, Searcher};

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[arg(long)]
    pub index: PathBuf,
    /// The claimed identity: a label given at enrolment (`index add --label`).
    #[arg(long)]
    pub label: String,
    /// The image to check (PNG, PGM, JPEG, or an IDX item FILE:N).
    pub file: String,
    /// Decision threshold as a distance (default: the index's calibrated one).
    #[arg(long, allow_negative_numbers = true, value_parser = common::parse_threshold)]
    pub threshold: Option<f32>,
    /// How the distances to the label's enrolled images are combined.
    #[arg(long, value_enum, default_value_t = Aggregate::Min)]
    pub aggregate: Aggregate,
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: VerifyArgs) -> Result<()> {
    let s = Searcher::open(&a.index, &Default::default())
        .with_context(|| format!("opening index {}", a.index.display()))?;
    let r = s.verify(&Query::Image(&a.file), &a.label, a.threshold, a.aggregate)?;
    if a.json {
        let mut j = serde_json::to_value(&r)?;
        j["file"] = serde_json::json!(a.file);
        return common::print_json(&j);
    }
    println!(
        "{}: {} as {:?} ({} distance {:.4} {} threshold {:.4}, {} enrolled image(s))",
        a.file,
        if r.accepted { "ACCEPTED" } else { "REJECTED" },
        r.label,
        r.aggregate.describe(),
        r.distance,
        if r.accepted { "<=" } else { ">" },
        r.threshold,
        r.references
    );
    Ok(())
}

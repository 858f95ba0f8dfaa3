//! `twindex verify`: accept or reject the claim that an image is an enrolled person or signer,
//! or (`--signature FILE --references FILE...`) that a pen trajectory is by the writer of the
//! reference trajectories.

use super::common;
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use twindex::query::{render, Aggregate, Query, Searcher};

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[arg(long, required_unless_present = "signature")]
    pub index: Option<PathBuf>,
    /// The claimed identity: a label given at enrolment (`index add --label`).
    #[arg(long, required_unless_present = "signature")]
    pub label: Option<String>,
    /// The image to check (PNG, PGM, JPEG, or an IDX item FILE:N).
    #[arg(required_unless_present = "signature")]
    pub file: Option<String>,
    /// Online signatures: the questioned pen trajectory (SVC2004 .TXT or x,y,t,pen CSV).
    #[arg(long, conflicts_with_all = ["index", "label", "file"], requires = "references")]
    pub signature: Option<PathBuf>,
    /// Online signatures: the claimed writer's reference trajectories.
    #[arg(long, num_args = 1.., requires = "signature")]
    pub references: Vec<PathBuf>,
    /// Online signatures: the sequence encoder (default corpora/encoders/signatures-online).
    #[arg(long, requires = "signature")]
    pub model: Option<PathBuf>,
    /// Online signatures: the scorer (default fusion with an encoder, else dtw).
    #[arg(long, value_enum, requires = "signature")]
    pub scorer: Option<twindex::eval::pen_signatures::Scorer>,
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
    if let Some(sig) = &a.signature {
        return super::pen_signatures::run_verify(
            sig,
            &a.references,
            a.model.as_deref(),
            a.scorer,
            a.threshold,
            a.json,
        );
    }
    let (Some(index), Some(label), Some(file)) = (&a.index, &a.label, &a.file) else {
        anyhow::bail!("verify needs --index, --label and FILE (or --signature and --references)");
    };
    let (index, label, file) = (index.clone(), label.clone(), file.clone());
    let s = Searcher::open(&index, &Default::default())
        .with_context(|| format!("opening index {}", index.display()))?;
    let q = Query::Image(&file);
    if let Some(faces) = s.verify_faces(&q, &label, a.threshold, a.aggregate)? {
        if a.json {
            let mut j = render::face_verdicts_json(&label, &faces);
            j["file"] = serde_json::json!(file);
            return common::print_json(&j);
        }
        println!("{}", render::face_verdicts(&file, &faces));
        return Ok(());
    }
    let r = s.verify(&q, &label, a.threshold, a.aggregate)?;
    if a.json {
        let mut j = serde_json::to_value(&r)?;
        j["file"] = serde_json::json!(file);
        return common::print_json(&j);
    }
    println!("{}: {}", file, r.verdict());
    Ok(())
}

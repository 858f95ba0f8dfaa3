//! `twindex attendance`: who of a roll (a face index) was seen in a folder of frames.

use super::common;
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use twindex::query::attendance::{frame_files, take_attendance};
use twindex::query::Searcher;

#[derive(Debug, Args)]
pub struct AttendanceArgs {
    /// The roll: an index of people, one photo each, built with a face-finding encoder
    /// (`twindex import dlib-face --detect`).
    #[arg(long)]
    pub index: PathBuf,
    /// The frames: a folder of photos (PNG, JPEG, PGM), or photo files.
    #[arg(required = true)]
    pub frames: Vec<PathBuf>,
    /// Same-person threshold as a distance (default: the roll's calibrated one).
    #[arg(long, allow_negative_numbers = true, value_parser = common::parse_threshold)]
    pub threshold: Option<f32>,
    /// Print the run as one JSON object (seen, absent, unknown).
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: AttendanceArgs) -> Result<()> {
    let mut frames = Vec::new();
    for f in &a.frames {
        if f.is_dir() {
            frames.extend(frame_files(f)?);
        } else {
            frames.push(f.clone());
        }
    }
    let s = Searcher::open(&a.index, &Default::default())
        .with_context(|| format!("opening index {}", a.index.display()))?;
    let bar = common::bar(frames.len() as u64, "frames");
    let r = take_attendance(&s, &frames, a.threshold, &|i| bar.set_position(i as u64))?;
    bar.finish_and_clear();
    if a.json {
        return common::print_json(&serde_json::to_value(&r)?);
    }
    println!("{}", r.table());
    Ok(())
}

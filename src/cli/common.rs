//! Helpers shared by subcommands: JSON output, progress bars, argument parsers.

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::sync::Mutex;

pub use twindex::corpus::resolve::{default_image_model as default_model_dir, repo_root};

/// Print one JSON object on stdout.
pub fn print_json(v: &serde_json::Value) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

/// A progress bar on stderr (hidden when stderr is not a terminal and `CI` is set).
pub fn bar(len: u64, msg: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {prefix}")
            .unwrap()
            .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    pb
}

/// A library build's progress as bars and notes on stderr.
#[derive(Default)]
pub struct Bars(Mutex<Option<ProgressBar>>);

impl twindex::query::BuildProgress for Bars {
    fn stage(&self, name: &str, len: u64) {
        *self.0.lock().unwrap() = Some(bar(len, name));
    }
    fn advance(&self, done: u64) {
        if let Some(pb) = &*self.0.lock().unwrap() {
            pb.set_position(done);
        }
    }
    fn done(&self) {
        if let Some(pb) = self.0.lock().unwrap().take() {
            pb.finish_and_clear();
        }
    }
    fn note(&self, msg: &str) {
        eprintln!("{msg}");
    }
}

/// A weight: a finite number, 0 or more (NaN, infinities and negatives refused in one line).
pub fn parse_weight(s: &str) -> std::result::Result<f32, String> {
    match s.trim().parse::<f32>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{s:?}: expected a finite weight, 0 or more")),
    }
}

/// `--threshold`: a finite distance (negative allowed, NaN and infinities refused).
pub fn parse_threshold(s: &str) -> std::result::Result<f32, String> {
    let v: f32 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number (expected a distance such as 0.5)"))?;
    if !v.is_finite() {
        return Err(format!("{s:?} is not a finite distance"));
    }
    Ok(v)
}

//! Bin-only: clap structs and one file per subcommand, each with `run(args)`.

mod attendance;
mod bench;
mod build;
mod calibrate;
mod common;
mod dedup;
mod demo;
mod eval;
mod import;
mod index;
mod mine;
mod pen_signatures;
mod protocol;
mod push;
mod query;
mod scale;
mod serve;
mod train;
mod train_sequence;
mod train_text;
mod verify;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// twindex: train twin encoders, index a corpus, find near-duplicates.
#[derive(Debug, Parser)]
#[command(name = "twindex", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Worker threads for training, embedding and index building (default: all cores).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// Commands that write an index: how long to wait while another process writes it, in
    /// seconds (0: refuse at once).
    #[arg(long, global = true, default_value_t = 10.0, value_parser = parse_wait)]
    pub wait: f64,
}

fn parse_wait(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(w) if (0.0..=86_400.0).contains(&w) => Ok(w),
        _ => Err(format!("{s:?}: expected seconds from 0 to 86400")),
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The main job on the shipped default: MNIST encoder, index, queries, headline metrics.
    Demo(demo::DemoArgs),
    /// Train an encoder (image or text).
    #[command(subcommand)]
    Train(train::TrainCmd),
    /// Measure an encoder on a labelled corpus (pair accuracy, ROC-AUC, AP, P@1, MAP@R).
    Eval(eval::EvalArgs),
    /// Bring in a pretrained encoder from another tool's files (dlib's face models).
    #[command(subcommand)]
    Import(import::ImportCmd),
    /// Build and maintain index directories.
    #[command(subcommand)]
    Index(index::IndexCmd),
    /// The k nearest items of a query, with the duplicate decision.
    Query(query::QueryArgs),
    /// Accept or reject the claim that an image is an enrolled person or signer.
    Verify(verify::VerifyArgs),
    /// Who of a roll (a face index) was seen in a folder of frames, who was not, and strangers.
    Attendance(attendance::AttendanceArgs),
    /// Every pair of items within the duplicate threshold, and their clusters.
    Dedup(dedup::DedupArgs),
    /// Serve indexes over HTTP: JSON API, search page, metrics (see docs/serving.md).
    Serve(serve::ServeArgs),
    /// Choose the duplicate threshold from labelled pairs and store it in the index.
    Calibrate(calibrate::CalibrateArgs),
    /// Recall@k against exact search, queries/s and latency over an ef sweep.
    Bench(bench::BenchArgs),
    /// Write an index's items and vectors as Parquet (or .npy) with its encoder and threshold.
    Export(scale::ExportArgs),
    /// Hard negatives for text pairs from a text index, for `train text --loss mnrl`.
    MineNegatives(mine::MineArgs),
    /// Encode one shard of a big corpus into a Parquet part (`--shard I/N` on N machines).
    Embed(scale::EmbedArgs),
}

/// The most worker threads `--threads` accepts (more only waits on thread start-up).
const MAX_THREADS: usize = 1024;

/// Parse arguments, run, print errors as one line, map to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    twindex::index::wal::set_writer_wait(std::time::Duration::from_secs_f64(cli.wait));
    if let Some(t) = cli.threads {
        if t == 0 || t > MAX_THREADS {
            eprintln!(
                "twindex: --threads {t}: expected 1 to {MAX_THREADS} (this machine has {} cores)",
                std::thread::available_parallelism().map_or(1, |n| n.get())
            );
            return ExitCode::from(2);
        }
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global();
    }
    // candle's element-wise thread pool reads CANDLE_NUM_THREADS when first used; make it the
    // same size as the rayon pool (its waiting threads spin, which costs CPU on a busy machine).
    // Image training is the exception: its heavy layers are twindex's own ops on rayon, candle's
    // ops there are tiny, and waking candle's pool for each cost a quarter of a LeNet step.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        let n = match &cli.command {
            Command::Train(train::TrainCmd::Image(_)) => 1,
            _ => rayon::current_num_threads(),
        };
        std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
    }
    let res = match cli.command {
        Command::Demo(a) => demo::run(a),
        Command::Train(c) => train::run(c),
        Command::Dedup(a) => dedup::run(a),
        Command::Calibrate(a) => calibrate::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Export(a) => scale::export(a),
        Command::Embed(a) => scale::embed(a),
        Command::Eval(a) => eval::run(a),
        Command::Import(c) => import::run(c),
        Command::Index(c) => index::run(c),
        Command::Query(a) => query::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Attendance(a) => attendance::run(a),
        Command::Serve(a) => serve::run(a),
        Command::MineNegatives(a) => mine::run(a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            eprintln!("twindex: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

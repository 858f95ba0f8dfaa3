//! What a training or evaluation run reports while it works: finished lines and where its
//! progress bar stands (the binary prints them on stderr; a library caller may ignore them),
//! and how fast a training run went.

use serde::Serialize;

/// One report of a run in progress.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// A finished line of text (a progress bar showing is cleared first).
    Line(String),
    /// A line worth printing only where no progress bar shows (stderr is not a terminal).
    Quiet(String),
    /// Where the progress bar labelled `label` stands: `pos` of `len`, with an optional
    /// `prefix` (e.g. the loss); a new label starts a new bar.
    Bar {
        label: String,
        len: u64,
        pos: u64,
        prefix: Option<String>,
    },
}

/// Where a run's [`Progress`] goes (called from training threads too).
pub type Observer<'a> = dyn Fn(Progress) + Sync + 'a;

/// How fast a training run went: flattened into the training reports (`train ... --json`,
/// the training record) as these keys.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub threads: usize,
    pub train_examples: usize,
    /// Training time only (evaluation excluded), as the trainer measured it.
    pub wall_seconds: f64,
    pub cpu_seconds: f64,
    /// Examples per second, for losses on pairs only (an example is a pair).
    pub pairs_per_second: Option<f64>,
    pub pairs_per_cpu_second: Option<f64>,
    pub examples_per_second: f64,
}

impl Throughput {
    /// The rates of `examples` trained in `wall_seconds` and `cpu_seconds` on the current
    /// rayon pool; `pairs` when the loss takes pairs.
    pub fn new(examples: usize, wall_seconds: f64, cpu_seconds: f64, pairs: bool) -> Self {
        let eps = examples as f64;
        Throughput {
            threads: rayon::current_num_threads(),
            train_examples: examples,
            wall_seconds,
            cpu_seconds,
            pairs_per_second: pairs.then(|| eps / wall_seconds),
            pairs_per_cpu_second: pairs.then(|| eps / cpu_seconds),
            examples_per_second: eps / wall_seconds,
        }
    }
}

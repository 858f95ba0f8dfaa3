//! What a training or evaluation run reports while it works: finished lines and where its
//! progress bar stands. The binary prints them on stderr; a library caller may ignore them.

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

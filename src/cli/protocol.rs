//! What the long runs (`train`, `eval --protocol`) share on the command line: the command
//! line itself for training records, and their progress printed on stderr.

use super::common;
use std::sync::Mutex;
use twindex::train::Progress;

/// This process's command line, program name as `twindex` (for the training record).
pub fn command_line() -> String {
    std::iter::once("twindex".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Prints a run's progress on stderr: lines as they come (clearing the bar), one progress bar
/// per label, quiet lines only where no bar shows (stderr not a terminal).
pub fn progress() -> impl Fn(Progress) + Sync {
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let bar: Mutex<Option<(String, indicatif::ProgressBar)>> = Mutex::new(None);
    move |p| {
        let mut cur = bar.lock().unwrap_or_else(|e| e.into_inner());
        match p {
            Progress::Line(s) => {
                if let Some((_, b)) = cur.take() {
                    b.finish_and_clear();
                }
                eprintln!("{s}");
            }
            Progress::Quiet(s) if !tty => eprintln!("{s}"),
            Progress::Quiet(_) => {}
            Progress::Bar {
                label,
                len,
                pos,
                prefix,
            } => {
                let b = match cur.take() {
                    Some((l, b)) if l == label => b,
                    _ => common::bar(len, &label),
                };
                b.set_position(pos);
                if let Some(x) = prefix {
                    b.set_prefix(x);
                }
                *cur = Some((label, b));
            }
        }
    }
}

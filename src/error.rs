//! The crate's one error type. Every variant names the thing that was wrong: the file, the
//! offset or line, what was expected and what was found.

use std::path::PathBuf;

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in twindex's library code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error on a named file. The cause is part of the message (not a separate
    /// `source`), so error chains print it once.
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },

    /// A file whose content does not match its format.
    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },

    /// Two things that must have the same dimension do not.
    #[error("dimension mismatch{}: expected {expected}, got {got}", context_suffix(.context))]
    DimensionMismatch {
        expected: usize,
        got: usize,
        context: String,
    },

    /// A tensor or array with the wrong shape.
    #[error("shape mismatch: {0}")]
    Shape(String),

    /// An argument or configuration value out of its allowed range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// An item id that the index does not hold (or holds only as deleted).
    #[error("no item with id {0} in the index")]
    UnknownId(u64),

    /// An input with nothing in it where something is required.
    #[error("empty input: {0}")]
    Empty(String),

    /// An index or model that refuses to open: wrong version, other encoder, bad checksum.
    #[error("{path}: {msg}")]
    Corrupt { path: PathBuf, msg: String },

    /// Errors from the tensor library (candle); converted in `model` so this file depends on
    /// nothing but std, serde_json and thiserror.
    #[error("tensor error: {0}")]
    Tensor(String),

    /// JSON (de)serialisation.
    #[error("{path}: invalid JSON: {cause}")]
    Json {
        path: PathBuf,
        cause: serde_json::Error,
    },

    /// The resource is held by someone else (another process writing the same index);
    /// trying again later may succeed.
    #[error("{0}")]
    Busy(String),

    /// Anything else, with a message.
    #[error("{0}")]
    Msg(String),
}

fn context_suffix(c: &str) -> String {
    if c.is_empty() {
        String::new()
    } else {
        format!(" in {c}")
    }
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, cause: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            cause,
        }
    }

    /// A format error in `path`.
    pub fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            msg: msg.into(),
        }
    }

    /// A corrupt or mismatching index/model at `path`.
    pub fn corrupt(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Corrupt {
            path: path.into(),
            msg: msg.into(),
        }
    }

    /// Dimension mismatch with a context ("query", "index.vectors", ...).
    pub fn dim(expected: usize, got: usize, context: impl Into<String>) -> Self {
        Error::DimensionMismatch {
            expected,
            got,
            context: context.into(),
        }
    }
}

/// `s` as one of `choices`, each a value with the names that mean it (the first is the one an
/// error lists): what every `FromStr` of a fixed set of names does. An unknown name is an
/// [`Error::InvalidArgument`] naming `what`, `s` and the names expected.
pub fn parse_choice<T: Copy>(what: &str, s: &str, choices: &[(&[&str], T)]) -> Result<T> {
    if let Some(&(_, v)) = choices.iter().find(|(names, _)| names.contains(&s)) {
        return Ok(v);
    }
    let names: Vec<&str> = choices.iter().map(|(n, _)| n[0]).collect();
    let expected = match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.join(""),
    };
    Err(Error::InvalidArgument(format!(
        "{what} {s:?}: expected {expected}"
    )))
}

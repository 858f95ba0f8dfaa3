//! Labelled text pairs from a TSV with a header (Quora question pairs, MRPC, ...): the two text
//! columns and the label column are found by name.

use crate::error::{Error, Result};
use std::path::Path;

/// One labelled pair.
#[derive(Debug, Clone, PartialEq)]
pub struct TextPair {
    pub a: String,
    pub b: String,
    /// True for a duplicate / paraphrase.
    pub duplicate: bool,
}

const A_NAMES: [&str; 5] = ["q1", "question1", "sentence1", "text1", "a"];
const B_NAMES: [&str; 5] = ["q2", "question2", "sentence2", "text2", "b"];
const Y_NAMES: [&str; 4] = ["is_duplicate", "label", "duplicate", "y"];

/// Read plain labelled pairs: `a<TAB>b<TAB>label` a line (label 1 = duplicate, 0 = not; blank
/// lines and a header line are skipped), as [`TextPair`]s of the raw `a` and `b` fields.
pub fn read_plain_pairs(path: &Path) -> Result<Vec<TextPair>> {
    let text = super::text::read_utf8(path)?;
    let mut out = Vec::new();
    for (ln, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 3 {
            return Err(Error::Msg(format!(
                "{}:{}: expected 3 tab-separated columns a, b, label",
                path.display(),
                ln + 1
            )));
        }
        let duplicate = match f[2].trim() {
            "1" => true,
            "0" => false,
            _ if ln == 0 => continue,
            other => {
                return Err(Error::Msg(format!(
                    "{}:{}: label {other:?}: expected 0 or 1",
                    path.display(),
                    ln + 1
                )))
            }
        };
        out.push(TextPair {
            a: f[0].to_string(),
            b: f[1].to_string(),
            duplicate,
        });
    }
    Ok(out)
}

/// Read a pairs TSV. The header must name a first-text column (`q1`, `question1`,
/// `sentence1`...), a second-text column and a 0/1 label column (`is_duplicate`, `label`).
pub fn read_pairs_tsv(path: &Path) -> Result<Vec<TextPair>> {
    let text = super::text::read_utf8(path)?;
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .ok_or_else(|| Error::Empty(format!("{} is empty", path.display())))?
        .split('\t')
        .map(|h| h.trim().to_lowercase())
        .collect();
    let find = |names: &[&str], what: &str| {
        header
            .iter()
            .position(|h| names.contains(&h.as_str()))
            .ok_or_else(|| {
                Error::format(
                    path,
                    format!(
                        "line 1: no {what} column (expected one of {names:?}) in header {header:?}"
                    ),
                )
            })
    };
    let (ia, ib, iy) = (
        find(&A_NAMES, "first-text")?,
        find(&B_NAMES, "second-text")?,
        find(&Y_NAMES, "label")?,
    );
    let mut out = Vec::new();
    for (n, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        let get = |i: usize| {
            f.get(i).copied().ok_or_else(|| {
                Error::format(
                    path,
                    format!(
                        "line {}: {} columns, expected at least {}",
                        n + 2,
                        f.len(),
                        header.len().min(ia.max(ib).max(iy) + 1)
                    ),
                )
            })
        };
        let duplicate = match get(iy)?.trim() {
            "1" => true,
            "0" => false,
            other => {
                return Err(Error::format(
                    path,
                    format!("line {}: label {other:?}, expected 0 or 1", n + 2),
                ))
            }
        };
        out.push(TextPair {
            a: get(ia)?.to_string(),
            b: get(ib)?.to_string(),
            duplicate,
        });
    }
    if out.is_empty() {
        return Err(Error::Empty(format!("{} holds no pairs", path.display())));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_named_columns_and_rejects_bad_rows() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.tsv");
        std::fs::write(&p, "id\tq1\tq2\tis_duplicate\n7\tHow old are you?\tWhat is your age?\t1\n8\tWhere are you living?\tWhere are you going?\t0\n").unwrap();
        let v = read_pairs_tsv(&p).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].b, "What is your age?");
        assert!(v[0].duplicate && !v[1].duplicate);
        std::fs::write(&p, "q1\tq2\tis_duplicate\na\tb\tmaybe\n").unwrap();
        assert!(read_pairs_tsv(&p)
            .unwrap_err()
            .to_string()
            .contains("line 2"));
        std::fs::write(&p, "x\ty\n").unwrap();
        assert!(read_pairs_tsv(&p)
            .unwrap_err()
            .to_string()
            .contains("no first-text column"));
    }
}

//! Labelled text pairs from a TSV with a header (Quora question pairs, MRPC, ...): the two text
//! columns and the label column are found by name.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::Path;

/// One labelled pair.
#[derive(Debug, Clone, PartialEq)]
pub struct TextPair {
    pub a: String,
    pub b: String,
    /// True for a duplicate / paraphrase.
    pub duplicate: bool,
    /// Hard negatives of `a` (the `negative_*` columns of a mined-negatives file, which
    /// [`crate::query::negatives`] writes); empty for plain labelled pairs.
    pub negatives: Vec<String>,
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
            negatives: Vec::new(),
        });
    }
    Ok(out)
}

/// Read a pairs TSV. The header must name a first-text column (`q1`, `question1`,
/// `sentence1`...), a second-text column and a 0/1 label column (`is_duplicate`, `label`); or
/// be a mined-negatives file (`anchor`, `positive`, `negative_1`, ... as
/// [`crate::query::negatives`] writes it and sentence-transformers' `mine_hard_negatives`
/// n-tuples read): each row then is a duplicate pair with its hard negatives.
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
    let negatives: Vec<usize> = (0..header.len())
        .filter(|&i| header[i].starts_with("negative"))
        .collect();
    let tuples = header.iter().any(|h| h == "anchor") && header.iter().any(|h| h == "positive");
    if !negatives.is_empty() && !tuples {
        return Err(Error::format(
            path,
            format!(
                "line 1: negative columns need an anchor and a positive column (header {header:?})"
            ),
        ));
    }
    let (ia, ib, iy) = if tuples {
        // A label column, when there is one (sentence-transformers' labeled pairs), decides.
        let iy = header.iter().position(|h| Y_NAMES.contains(&h.as_str()));
        (
            find(&["anchor"], "anchor")?,
            find(&["positive"], "positive")?,
            iy,
        )
    } else {
        (
            find(&A_NAMES, "first-text")?,
            find(&B_NAMES, "second-text")?,
            Some(find(&Y_NAMES, "label")?),
        )
    };
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
                        "line {}: {} columns, expected {}",
                        n + 2,
                        f.len(),
                        header.len()
                    ),
                )
            })
        };
        let duplicate = match iy.map(|iy| get(iy).map(str::trim)).transpose()? {
            None | Some("1") => true,
            Some("0") => false,
            Some(other) => {
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
            negatives: negatives
                .iter()
                .map(|&i| match get(i)? {
                    t if t.trim().is_empty() => Err(Error::format(
                        path,
                        format!("line {}: column {:?} is empty", n + 2, header[i]),
                    )),
                    t => Ok(t.to_string()),
                })
                .collect::<Result<_>>()?,
        });
    }
    if out.is_empty() {
        return Err(Error::Empty(format!("{} holds no pairs", path.display())));
    }
    Ok(out)
}

/// Duplicate groups: the connected components of the duplicate pairs over distinct texts.
/// Returns the distinct texts (first-seen order) and a group label per text.
pub fn duplicate_groups(pairs: &[TextPair]) -> (Vec<String>, Vec<u32>) {
    let mut id: HashMap<&str, usize> = HashMap::new();
    let mut texts: Vec<String> = Vec::new();
    for p in pairs {
        for t in [p.a.as_str(), p.b.as_str()] {
            id.entry(t).or_insert_with(|| {
                texts.push(t.to_string());
                texts.len() - 1
            });
        }
    }
    let mut parent: Vec<usize> = (0..texts.len()).collect();
    fn root(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    for p in pairs.iter().filter(|p| p.duplicate) {
        let (a, b) = (
            root(&mut parent, id[p.a.as_str()]),
            root(&mut parent, id[p.b.as_str()]),
        );
        if a != b {
            parent[a.max(b)] = a.min(b);
        }
    }
    let mut label_of_root: HashMap<usize, u32> = HashMap::new();
    let labels = (0..texts.len())
        .map(|i| {
            let r = root(&mut parent, i);
            let next = label_of_root.len() as u32;
            *label_of_root.entry(r).or_insert(next)
        })
        .collect();
    (texts, labels)
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
        std::fs::write(
            &p,
            "anchor\tpositive\tnegative_1\tnegative_2\na\tb\tc\td\nx\ty\tz\n",
        )
        .unwrap();
        let e = read_pairs_tsv(&p).unwrap_err().to_string();
        assert!(e.contains("line 3: 3 columns, expected 4"), "{e}");
        std::fs::write(&p, "anchor\tpositive\tnegative_1\tnegative_2\na\tb\tc\td\n").unwrap();
        let v = read_pairs_tsv(&p).unwrap();
        assert_eq!(
            (v[0].a.as_str(), v[0].b.as_str(), v[0].duplicate),
            ("a", "b", true)
        );
        assert_eq!(v[0].negatives, ["c", "d"]);
        std::fs::write(&p, "anchor\tpositive\tnegative_1\na\tb\t \n").unwrap();
        let e = read_pairs_tsv(&p).unwrap_err().to_string();
        assert!(e.contains("line 2: column \"negative_1\" is empty"), "{e}");
        std::fs::write(&p, "q1\tq2\tis_duplicate\tnegative_1\na\tb\t1\tc\n").unwrap();
        let e = read_pairs_tsv(&p).unwrap_err().to_string();
        assert!(e.contains("need an anchor and a positive"), "{e}");
        // Labelled pairs in the anchor/positive layout keep their labels.
        std::fs::write(&p, "anchor\tpositive\tlabel\na\tb\t0\nc\td\t1\n").unwrap();
        let v = read_pairs_tsv(&p).unwrap();
        assert!(!v[0].duplicate && v[1].duplicate && v[0].negatives.is_empty());
    }
}

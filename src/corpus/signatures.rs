//! Offline signature folders: one sub-folder per writer holding `genuine-NN.png` and
//! `forged-NN.png` (BHSig260, CEDAR as converted here), or any folder whose `labels.tsv` lists
//! `path`, `user` (or `writer`), `sample` and `label` (`genuine` | `forged`), as the SVC2004
//! renderings do. Every listed file must exist; a folder in neither layout is refused in one
//! line naming it.

use super::folder::{natural_cmp, FolderItem, LABELS_FILE};
use crate::error::{Error, Result};
use std::path::Path;

/// One signature image with its writer, sample number and whether it is genuine. The item's
/// label is the writer (`"12"`) for genuine signatures and `"12-forged"` for forgeries, so a
/// writer's forgeries are a class of their own when training.
#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    pub item: FolderItem,
    pub writer: usize,
    pub sample: usize,
    pub genuine: bool,
}

fn signature(root: &Path, rel: &str, writer: usize, sample: usize, genuine: bool) -> Signature {
    Signature {
        item: FolderItem {
            path: root.join(rel),
            label: if genuine {
                format!("{writer}")
            } else {
                format!("{writer}-forged")
            },
        },
        writer,
        sample,
        genuine,
    }
}

/// Read a signature folder: its `labels.tsv` when there is one, else the
/// `<writer>/genuine-NN.png`, `<writer>/forged-NN.png` layout. Sorted by writer, then genuine
/// before forged, then sample.
pub fn read_signature_folder(root: &Path) -> Result<Vec<Signature>> {
    if !root.is_dir() {
        return Err(Error::format(
            root,
            "not a folder (a signature corpus is a folder of <writer>/genuine-NN.png and forged-NN.png, or one with a labels.tsv)",
        ));
    }
    let tsv = root.join(LABELS_FILE);
    let mut out = if tsv.exists() {
        read_labels(root, &tsv)?
    } else {
        scan_layout(root)?
    };
    out.sort_by(|a, b| {
        (a.writer, !a.genuine, a.sample)
            .cmp(&(b.writer, !b.genuine, b.sample))
            .then_with(|| natural_cmp(&a.item.label, &b.item.label))
    });
    if let Some(w) = out.windows(2).find(|w| {
        (w[0].writer, w[0].genuine, w[0].sample) == (w[1].writer, w[1].genuine, w[1].sample)
    }) {
        return Err(Error::format(
            root,
            format!(
                "writer {} has two {} signatures numbered {} ({} and {})",
                w[0].writer,
                if w[0].genuine { "genuine" } else { "forged" },
                w[0].sample,
                w[0].item.path.display(),
                w[1].item.path.display()
            ),
        ));
    }
    Ok(out)
}

fn read_labels(root: &Path, tsv: &Path) -> Result<Vec<Signature>> {
    let text = std::fs::read_to_string(tsv).map_err(|e| Error::io(tsv, e))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or("")
        .split('\t')
        .map(str::trim)
        .collect();
    let col = |names: &[&str]| {
        header
            .iter()
            .position(|h| names.contains(h))
            .ok_or_else(|| {
                Error::format(
                    tsv,
                    format!(
                        "no {:?} column (a signature folder's labels.tsv has path, user or writer, sample, label)",
                        names[0]
                    ),
                )
            })
    };
    let (pc, uc) = (col(&["path"])?, col(&["user", "writer"])?);
    let (sc, lc) = (col(&["sample"])?, col(&["label"])?);
    let mut out = Vec::new();
    for (n, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split('\t').map(str::trim).collect();
        let bad = |what: &str| Error::format(tsv, format!("line {}: {what}", n + 2));
        if f.len() < header.len() {
            return Err(bad(&format!(
                "{} fields, the header has {}",
                f.len(),
                header.len()
            )));
        }
        let writer = f[uc]
            .parse()
            .map_err(|_| bad(&format!("writer {:?} is not a number", f[uc])))?;
        let sample = f[sc]
            .parse()
            .map_err(|_| bad(&format!("sample {:?} is not a number", f[sc])))?;
        let genuine = match f[lc] {
            "genuine" => true,
            "forged" => false,
            x => return Err(bad(&format!("label {x:?} is neither genuine nor forged"))),
        };
        let s = signature(root, f[pc], writer, sample, genuine);
        if !s.item.path.is_file() {
            return Err(bad(&format!("{} does not exist", s.item.path.display())));
        }
        out.push(s);
    }
    if out.is_empty() {
        return Err(Error::Empty(format!(
            "{}: no signatures listed",
            tsv.display()
        )));
    }
    Ok(out)
}

/// `genuine-NN.png` / `forged-NN.png` (any image extension) in numbered writer folders.
fn scan_layout(root: &Path) -> Result<Vec<Signature>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(root).map_err(|e| Error::io(root, e))?;
    for e in entries {
        let e = e.map_err(|e| Error::io(root, e))?;
        let name = e.file_name().to_string_lossy().to_string();
        let digits: String = name.chars().filter(|c| c.is_ascii_digit()).collect();
        let Ok(writer) = digits.parse::<usize>() else {
            continue;
        };
        if !e.path().is_dir() {
            continue;
        }
        let files = std::fs::read_dir(e.path()).map_err(|err| Error::io(e.path(), err))?;
        for f in files {
            let f = f.map_err(|err| Error::io(e.path(), err))?;
            let file = f.file_name().to_string_lossy().to_string();
            let Some((stem, _ext)) = file.rsplit_once('.') else {
                continue;
            };
            let (genuine, num) = if let Some(n) = stem.strip_prefix("genuine-") {
                (true, n)
            } else if let Some(n) = stem.strip_prefix("forged-") {
                (false, n)
            } else {
                continue;
            };
            let sample = num.parse().map_err(|_| {
                Error::format(
                    f.path(),
                    "expected genuine-NN or forged-NN with NN a number",
                )
            })?;
            out.push(signature(
                root,
                &format!("{name}/{file}"),
                writer,
                sample,
                genuine,
            ));
        }
    }
    if out.is_empty() {
        return Err(Error::format(
            root,
            format!("not a signature folder: no {LABELS_FILE} and no <writer>/genuine-NN.png or forged-NN.png files"),
        ));
    }
    Ok(out)
}

/// The writers present in `sigs`, ascending, each once.
pub fn writers_of(sigs: &[Signature]) -> Vec<usize> {
    let mut w: Vec<usize> = sigs.iter().map(|s| s.writer).collect();
    w.sort_unstable();
    w.dedup();
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_without_labels_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        for (w, f) in [
            ("001", "genuine-01.png"),
            ("001", "forged-02.png"),
            ("002", "genuine-01.png"),
        ] {
            std::fs::create_dir_all(dir.path().join(w)).unwrap();
            std::fs::write(dir.path().join(w).join(f), b"x").unwrap();
        }
        let s = read_signature_folder(dir.path()).unwrap();
        let got: Vec<(usize, usize, bool, &str)> = s
            .iter()
            .map(|s| (s.writer, s.sample, s.genuine, s.item.label.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, 1, true, "1"),
                (1, 2, false, "1-forged"),
                (2, 1, true, "2")
            ]
        );
        // A labels.tsv naming a missing file is refused naming it and its line.
        std::fs::write(
            dir.path().join(LABELS_FILE),
            "path\twriter\tsample\tlabel\n001/genuine-01.png\t1\t1\tgenuine\n001/nope.png\t1\t2\tgenuine\n",
        )
        .unwrap();
        let e = read_signature_folder(dir.path()).unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("nope.png"), "{e}");
        let empty = tempfile::tempdir().unwrap();
        let e = read_signature_folder(empty.path()).unwrap_err().to_string();
        assert!(e.contains("not a signature folder"), "{e}");
    }
}

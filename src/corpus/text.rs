//! Text files: one text a line, or a TSV with a header naming its columns (`.gz`: gzip). Read as UTF-8 (a
//! byte-order mark is skipped; invalid bytes are an error naming the line), from regular files
//! only.

use crate::error::{Error, Result};
use std::path::Path;

/// The content of a UTF-8 text file, without a leading byte-order mark. Invalid UTF-8 is an
/// error naming the line and byte; a FIFO or device is refused.
pub fn read_utf8(path: &Path) -> Result<String> {
    let mut bytes = crate::fsutil::read_regular(path)?;
    if path.extension().is_some_and(|e| e == "gz") {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| Error::format(path, format!("not a readable gzip file ({e})")))?;
        bytes = out;
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(s.to_string()),
        Err(e) => {
            let at = e.valid_up_to();
            let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
            Err(Error::format(
                path,
                format!(
                    "line {line}: not UTF-8 (invalid byte at offset {at}); save the file as UTF-8"
                ),
            ))
        }
    }
}

/// One text to index, with its optional id and label.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TextRow {
    pub text: String,
    pub id: Option<String>,
    pub label: String,
    /// 1-based line in the file.
    pub line: usize,
}

/// Which TSV columns hold what (by header name). `text: None` reads the file as plain lines.
#[derive(Debug, Clone, Default)]
pub struct TextColumns {
    pub text: Option<String>,
    pub id: Option<String>,
    pub label: Option<String>,
}

/// Read texts to index: plain lines (blank lines skipped; each line's surrounding spaces
/// trimmed) or, with `cols.text`, a TSV whose header names the text, id and label columns.
/// An empty result is an error.
pub fn read_texts(path: &Path, cols: &TextColumns) -> Result<Vec<TextRow>> {
    let raw = read_utf8(path)?;
    let mut out = Vec::new();
    match &cols.text {
        None => {
            if cols.id.is_some() || cols.label.is_some() {
                return Err(Error::InvalidArgument(
                    "an id or label column needs a text column (--text-column) too".into(),
                ));
            }
            for (n, l) in raw.lines().enumerate() {
                let t = l.trim();
                if !t.is_empty() {
                    out.push(TextRow {
                        text: t.to_string(),
                        line: n + 1,
                        ..TextRow::default()
                    });
                }
            }
        }
        Some(tc) => {
            let mut lines = raw.lines().enumerate();
            let header: Vec<&str> = lines
                .next()
                .map(|(_, h)| h.split('\t').map(str::trim).collect())
                .unwrap_or_default();
            let col = |name: &str| -> Result<usize> {
                header.iter().position(|h| *h == name).ok_or_else(|| {
                    Error::format(
                        path,
                        format!("line 1: no column {name:?} in the header {header:?}"),
                    )
                })
            };
            let ti = col(tc)?;
            let ii = cols.id.as_deref().map(col).transpose()?;
            let li = cols.label.as_deref().map(col).transpose()?;
            for (n, l) in lines {
                if l.trim().is_empty() {
                    continue;
                }
                let f: Vec<&str> = l.split('\t').collect();
                let get = |i: usize| {
                    f.get(i).map(|s| s.trim().to_string()).ok_or_else(|| {
                        Error::format(
                            path,
                            format!(
                                "line {}: {} columns, the header has {}",
                                n + 1,
                                f.len(),
                                header.len()
                            ),
                        )
                    })
                };
                let text = get(ti)?;
                if text.is_empty() {
                    return Err(Error::format(
                        path,
                        format!("line {}: the text column {tc:?} is empty", n + 1),
                    ));
                }
                out.push(TextRow {
                    text,
                    id: ii.map(get).transpose()?,
                    label: li.map(get).transpose()?.unwrap_or_default(),
                    line: n + 1,
                });
            }
        }
    }
    if out.is_empty() {
        return Err(Error::Empty(format!(
            "{}: no texts (expected one text a line, or a TSV with a header)",
            path.display()
        )));
    }
    Ok(out)
}

/// The texts of a plain file, one a line (see [`read_texts`]).
pub fn read_lines(path: &Path) -> Result<Vec<String>> {
    Ok(read_texts(path, &TextColumns::default())?
        .into_iter()
        .map(|r| r.text)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bom_columns_and_bad_utf8_are_handled() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.tsv");
        std::fs::write(
            &p,
            "\u{feff}id\tq\tlabel\na1\thow are you\tx\n\nb2\tfine\ty\n",
        )
        .unwrap();
        let cols = TextColumns {
            text: Some("q".into()),
            id: Some("id".into()),
            label: Some("label".into()),
        };
        let r = read_texts(&p, &cols).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[1],
            TextRow {
                text: "fine".into(),
                id: Some("b2".into()),
                label: "y".into(),
                line: 4
            }
        );
        // Plain lines: the BOM is not part of the first text.
        let plain = read_texts(&p, &TextColumns::default()).unwrap();
        assert_eq!(plain[0].text, "id\tq\tlabel");
        let e = read_texts(
            &p,
            &TextColumns {
                text: Some("nope".into()),
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no column \"nope\""), "{e}");
        std::fs::write(&p, b"ok\nfine\nbad \xff here\n").unwrap();
        let e = read_texts(&p, &TextColumns::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3: not UTF-8"), "{e}");
        std::fs::write(&p, " \n\n").unwrap();
        assert!(matches!(
            read_texts(&p, &TextColumns::default()),
            Err(Error::Empty(_))
        ));
    }
}

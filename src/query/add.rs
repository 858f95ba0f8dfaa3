//! Adding to an open index: texts and images encoded with its own encoder, raw vectors of its
//! dimension; in chunks, each encoded, logged and acknowledged on its own.

use crate::error::{Error, Result};
use crate::index::{Item, Matrix};
use crate::query::{NewItem, Query, Searcher};
use std::path::Path;

/// What to add, all under one label.
#[derive(Debug, Default)]
pub struct Additions<'a> {
    /// Texts (text indexes).
    pub texts: Vec<&'a str>,
    /// Image files or IDX items `FILE:N` (image indexes).
    pub images: Vec<&'a str>,
    /// Raw vectors read from a file: the file, and its vectors.
    pub vectors: Option<(&'a Path, Matrix<f32>)>,
    /// The label of every added item (e.g. a person's name).
    pub label: String,
}

impl<'a> Additions<'a> {
    /// Texts, images and the raw vectors of the file `vectors` (`.npy`, `.fvecs`, or an IDX
    /// images file), read here. Nothing to add is an error.
    pub fn new(
        texts: Vec<&'a str>,
        images: Vec<&'a str>,
        vectors: Option<&'a Path>,
        label: String,
    ) -> Result<Self> {
        let vectors = match vectors {
            Some(p) => {
                let (rows, cols, data) = crate::query::build::read_vectors(p)?;
                Some((p, Matrix { rows, cols, data }))
            }
            None => None,
        };
        if texts.is_empty() && images.is_empty() && vectors.is_none() {
            return Err(Error::Msg(
                "nothing to add: give image files, --text STR, --text-file F or --vectors FILE"
                    .into(),
            ));
        }
        Ok(Additions {
            texts,
            images,
            vectors,
            label,
        })
    }
}

/// Add `what` to the index of `s` (texts, then images, in chunks of 1,024; then the vectors,
/// which must have the index's dimension); returns the new ids.
pub fn add_items(s: &Searcher, what: &Additions) -> Result<Vec<u64>> {
    let new: Vec<NewItem> = what
        .texts
        .iter()
        .map(|t| Query::Text(t))
        .chain(what.images.iter().map(|i| Query::Image(i)))
        .map(|content| NewItem {
            content,
            label: what.label.clone(),
            source: None,
        })
        .collect();
    let mut ids = Vec::new();
    for chunk in new.chunks(1024) {
        ids.extend(s.add(chunk)?);
    }
    if let Some((p, m)) = &what.vectors {
        let dim = m.cols;
        if dim != s.dim() {
            return Err(Error::Msg(format!(
                "{}: vectors of dimension {dim}, the index holds dimension {}",
                p.display(),
                s.dim()
            )));
        }
        let items = (0..m.rows)
            .map(|i| Item {
                label: what.label.clone(),
                source: format!("{}#{i}", p.display()),
                payload: None,
            })
            .collect();
        ids.extend(s.add_vectors(&m.data, items)?);
    }
    Ok(ids)
}

/// Ids as ranges: `0-9, 12`.
pub fn id_ranges(ids: &[u64]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let mut j = i;
        while j + 1 < ids.len() && ids[j + 1] == ids[j] + 1 {
            j += 1;
        }
        out.push(if j == i {
            ids[i].to_string()
        } else {
            format!("{}-{}", ids[i], ids[j])
        });
        i = j + 1;
    }
    out.join(", ")
}

#[cfg(test)]
mod tests {
    use super::id_ranges;

    #[test]
    fn ids_print_as_ranges() {
        assert_eq!(id_ranges(&[0, 1, 2, 5, 7, 8]), "0-2, 5, 7-8");
        assert_eq!(id_ranges(&[]), "");
    }
}

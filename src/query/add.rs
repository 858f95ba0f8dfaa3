//! Adding to an open index: texts and images encoded with its own encoder, raw vectors of its
//! dimension; encoded in chunks, logged and acknowledged as one write.

use crate::error::{Error, Result};
use crate::index::{Appended, Item, Matrix};
use crate::query::{Encoder, Query, Searcher};
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

/// The vectors and items of `what` for the index in `dir` (of dimension `dim`, encoder `enc`):
/// texts, then images (encoded in chunks of 1,024 so a forward pass stays bounded), then the
/// raw vectors (which must have the index's dimension).
fn embedded(
    enc: &Encoder,
    dir: &Path,
    dim: usize,
    what: &Additions,
) -> Result<(Vec<f32>, Vec<Item>)> {
    if let Some((p, m)) = &what.vectors {
        if m.cols != dim {
            return Err(Error::Msg(format!(
                "{}: vectors of dimension {}, the index holds dimension {}",
                p.display(),
                m.cols,
                dim
            )));
        }
    }
    let contents: Vec<Query> = what
        .texts
        .iter()
        .map(|t| Query::Text(t))
        .chain(what.images.iter().map(|i| Query::Image(i)))
        .collect();
    let no_ids = |id: u64| -> Result<Vec<f32>> {
        Err(Error::InvalidArgument(format!(
            "item {id}: not an addition"
        )))
    };
    let mut vectors = Vec::new();
    for chunk in contents.chunks(1024) {
        vectors.extend(enc.embed_many(dir, dim, chunk, &no_ids)?.concat());
    }
    let mut items: Vec<Item> = what
        .texts
        .iter()
        .chain(&what.images)
        .map(|source| Item {
            label: what.label.clone(),
            source: source.to_string(),
            payload: None,
        })
        .collect();
    if let Some((p, m)) = &what.vectors {
        vectors.extend_from_slice(&m.data);
        items.extend((0..m.rows).map(|i| Item {
            label: what.label.clone(),
            source: format!("{}#{i}", p.display()),
            payload: None,
        }));
    }
    Ok((vectors, items))
}

/// Add `what` to the index of `s` as one write (see [`embedded`]), all in one logged record.
/// A command killed part-way adds nothing, and a retry adds no duplicates (issue 25: it
/// committed each 1,024 as it went). Returns the new ids.
pub fn add_items(s: &Searcher, what: &Additions) -> Result<Vec<u64>> {
    let (vectors, items) = embedded(s.encoder(), s.dir(), s.dim(), what)?;
    s.add_vectors(&vectors, items)
}

/// Add `what` to the index in `dir` without loading the index: its encoder is loaded (`model`:
/// a text model's folder when it moved), the items embedded and one record appended to the
/// write-ahead log ([`crate::index::append_add`]), so an add costs the same at a million items
/// as at a thousand. `Ok(None)`, having written nothing, when the log is due a checkpoint: add
/// through an opened [`Searcher`] ([`add_items`]) then, which checkpoints.
pub fn append_items(
    dir: &Path,
    model: Option<&Path>,
    what: &Additions,
) -> Result<Option<Appended>> {
    let m = crate::index::store::read_manifest(dir)?;
    let enc = Encoder::load(dir, &m.encoder, model)?;
    let (vectors, items) = embedded(&enc, dir, m.dim, what)?;
    crate::index::append_add(dir, &m.encoder, &vectors, items)
}

/// `index add`: [`append_items`], or, when the log is due a checkpoint, [`add_items`] through
/// the opened index (which checkpoints). Returns the new ids and the live items now.
pub fn add_to_index(dir: &Path, model: Option<&Path>, what: &Additions) -> Result<Appended> {
    if let Some(r) = append_items(dir, model, what)? {
        return Ok(r);
    }
    let opts = crate::query::OpenOptions {
        writable: true,
        model: model.map(Path::to_path_buf),
    };
    let s = Searcher::open(dir, &opts)?;
    let ids = add_items(&s, what)?;
    let items = s.stats().items;
    s.close()?;
    Ok(Appended { ids, items })
}

/// Sorted ids (or writers) as ranges: `0-9, 12`.
pub fn id_ranges<T>(ids: &[T]) -> String
where
    T: Copy + PartialEq + std::fmt::Display + std::ops::Add<Output = T> + From<u8>,
{
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let mut j = i;
        while j + 1 < ids.len() && ids[j + 1] == ids[j] + T::from(1) {
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
        assert_eq!(id_ranges::<u64>(&[]), "");
    }
}

//! Folders of image files as corpora: labels from sub-folder names or from a `labels.tsv`.
//!
//! `root/NAME/*.png|pgm|jpg` gives class `NAME` to every image below `root/NAME`. A
//! `root/labels.tsv` with a header naming a `path` column (relative to `root`) and a label
//! column (default `label`) takes precedence. Items and classes are in natural order
//! (`s2` before `s10`), so a corpus reads the same on every machine.

use super::idx::ImageSet;
use crate::error::{Error, Result};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// File extensions read as images.
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "pgm", "pnm", "jpg", "jpeg"];

/// The labels file looked for in a corpus folder.
pub const LABELS_FILE: &str = "labels.tsv";

/// One image of a folder corpus.
#[derive(Debug, Clone, PartialEq)]
pub struct FolderItem {
    pub path: PathBuf,
    pub label: String,
}

/// An image folder: its items and its class names (natural order).
#[derive(Debug, Clone)]
pub struct ImageFolder {
    pub root: PathBuf,
    pub items: Vec<FolderItem>,
    pub classes: Vec<String>,
}

/// Compare strings with digit runs compared as numbers (`s2` < `s10`).
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, _) => return std::cmp::Ordering::Less,
            (_, None) => return std::cmp::Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let nx = x.iter().take_while(|c| c.is_ascii_digit()).count();
                let ny = y.iter().take_while(|c| c.is_ascii_digit()).count();
                let (dx, dy) = (&x[..nx], &y[..ny]);
                let strip = |s: &[u8]| s.iter().skip_while(|&&c| c == b'0').count();
                let ord = strip(dx)
                    .cmp(&strip(dy))
                    .then_with(|| dx[nx - strip(dx)..].cmp(&dy[ny - strip(dy)..]))
                    .then(nx.cmp(&ny));
                if ord != std::cmp::Ordering::Equal {
                    return ord;
                }
                x = &x[nx..];
                y = &y[ny..];
            }
            (Some(c), Some(d)) => {
                if c != d {
                    return c.cmp(d);
                }
                x = &x[1..];
                y = &y[1..];
            }
        }
    }
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        .unwrap_or(false)
}

fn list_images(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for ent in rd {
        let ent = ent.map_err(|e| Error::io(dir, e))?;
        let p = ent.path();
        if p.is_dir() {
            list_images(&p, out)?;
        } else if is_image(&p) {
            out.push(p);
        }
    }
    Ok(())
}

impl ImageFolder {
    /// Scan `root` (labels from `labels.tsv` column `label_column`, else sub-folder names).
    pub fn scan(root: &Path, label_column: &str) -> Result<ImageFolder> {
        if !root.is_dir() {
            return Err(Error::io(
                root,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no such folder (expected a folder of images in per-class sub-folders or with a labels.tsv)",
                ),
            ));
        }
        let tsv = root.join(LABELS_FILE);
        let mut items = if tsv.exists() {
            read_labels_tsv(root, &tsv, label_column)?
        } else {
            let mut items = Vec::new();
            let rd = std::fs::read_dir(root).map_err(|e| Error::io(root, e))?;
            for ent in rd {
                let ent = ent.map_err(|e| Error::io(root, e))?;
                let p = ent.path();
                if !p.is_dir() {
                    continue;
                }
                let label = ent.file_name().to_string_lossy().into_owned();
                let mut files = Vec::new();
                list_images(&p, &mut files)?;
                items.extend(files.into_iter().map(|path| FolderItem {
                    path,
                    label: label.clone(),
                }));
            }
            items
        };
        if items.is_empty() {
            return Err(Error::Empty(format!(
                "{}: no images found (expected PNG, PGM or JPEG files in per-class sub-folders, or a {LABELS_FILE} with path and {label_column} columns)",
                root.display()
            )));
        }
        items.sort_by(|a, b| {
            natural_cmp(&a.label, &b.label)
                .then_with(|| natural_cmp(&a.path.to_string_lossy(), &b.path.to_string_lossy()))
        });
        let mut classes: Vec<String> = items.iter().map(|i| i.label.clone()).collect();
        classes.dedup();
        Ok(ImageFolder {
            root: root.to_path_buf(),
            items,
            classes,
        })
    }

    /// Items whose label is one of `labels` (in this folder's order).
    pub fn with_labels(&self, labels: &[String]) -> Vec<FolderItem> {
        self.items
            .iter()
            .filter(|i| labels.contains(&i.label))
            .cloned()
            .collect()
    }
}

fn read_labels_tsv(root: &Path, tsv: &Path, label_column: &str) -> Result<Vec<FolderItem>> {
    let text = std::fs::read_to_string(tsv).map_err(|e| Error::io(tsv, e))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .ok_or_else(|| Error::format(tsv, "empty file: expected a header with path and label"))?
        .split('\t')
        .collect();
    let col = |name: &str| {
        header.iter().position(|h| h.trim() == name).ok_or_else(|| {
            Error::format(
                tsv,
                format!("no {name:?} column in the header (found {header:?})"),
            )
        })
    };
    let (pc, lc) = (col("path")?, col(label_column)?);
    let mut items = Vec::new();
    for (n, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() <= pc.max(lc) {
            return Err(Error::format(
                tsv,
                format!(
                    "line {}: {} fields, expected at least {}",
                    n + 2,
                    f.len(),
                    pc.max(lc) + 1
                ),
            ));
        }
        items.push(FolderItem {
            path: root.join(f[pc].trim()),
            label: f[lc].trim().to_string(),
        });
    }
    Ok(items)
}

/// Read `items` with `load` (a path to `height x width` pixels: the model's preprocessing,
/// see `model::image::load_set`) into an [`ImageSet`] whose labels index `classes`. Every file
/// is read; the first that fails is the error (naming it).
pub fn load_set_with(
    items: &[FolderItem],
    classes: &[String],
    height: usize,
    width: usize,
    load: impl Fn(&Path) -> Result<Vec<u8>> + Sync,
) -> Result<ImageSet> {
    let per = height * width;
    let labels = items
        .iter()
        .map(|it| {
            classes
                .iter()
                .position(|c| c == &it.label)
                .map(|c| c as u32)
                .ok_or_else(|| Error::InvalidArgument(format!("unknown class {:?}", it.label)))
        })
        .collect::<Result<Vec<u32>>>()?;
    let imgs: Vec<Vec<u8>> = items
        .par_iter()
        .map(|it| load(&it.path))
        .collect::<Result<_>>()?;
    let mut pixels = Vec::with_capacity(items.len() * per);
    for im in imgs {
        pixels.extend(im);
    }
    Ok(ImageSet {
        n: items.len(),
        rows: height,
        cols: width,
        pixels,
        labels,
    })
}

/// Class names in first-seen order of `items`, as [`load_set_with`] wants them.
pub fn classes_of(items: &[FolderItem]) -> Vec<String> {
    let mut classes: Vec<String> = Vec::new();
    for it in items {
        if !classes.contains(&it.label) {
            classes.push(it.label.clone());
        }
    }
    classes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut v = vec![
            "s10",
            "s2",
            "s1",
            "a",
            "s02",
            "user3/U3S12.png",
            "user3/U3S2.png",
        ];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            vec![
                "a",
                "s1",
                "s2",
                "s02",
                "s10",
                "user3/U3S2.png",
                "user3/U3S12.png"
            ]
        );
    }

    fn pgm(w: usize, h: usize, v: u8) -> Vec<u8> {
        let mut b = format!("P5\n{w} {h}\n255\n").into_bytes();
        b.extend(std::iter::repeat_n(v, w * h));
        b
    }

    #[test]
    fn scans_subfolders_and_tsv() {
        let d = tempfile::tempdir().unwrap();
        for (c, n) in [("s2", 2), ("s10", 3)] {
            std::fs::create_dir(d.path().join(c)).unwrap();
            for i in 1..=n {
                std::fs::write(d.path().join(c).join(format!("{i}.pgm")), pgm(4, 4, i)).unwrap();
            }
        }
        std::fs::write(d.path().join("s2/notes.txt"), b"not an image").unwrap();
        let f = ImageFolder::scan(d.path(), "label").unwrap();
        assert_eq!(f.classes, vec!["s2", "s10"]);
        assert_eq!(f.items.len(), 5);
        let pre = |p: &Path| crate::corpus::image_file::load_grey(p, 16, 16, 0);
        let set = load_set_with(&f.items, &f.classes, 16, 16, pre).unwrap();
        assert_eq!((set.n, set.rows, set.cols), (5, 16, 16));
        assert_eq!(set.labels, vec![0, 0, 1, 1, 1]);

        // labels.tsv wins over folder names; a missing column is named.
        std::fs::write(
            d.path().join(LABELS_FILE),
            "path\tuser\tkind\ns2/1.pgm\t2\tgenuine\ns10/3.pgm\t10\tforged\n",
        )
        .unwrap();
        let f = ImageFolder::scan(d.path(), "user").unwrap();
        assert_eq!(f.classes, vec!["2", "10"]);
        let e = ImageFolder::scan(d.path(), "label")
            .unwrap_err()
            .to_string();
        assert!(e.contains("labels.tsv") && e.contains("\"label\""), "{e}");

        // A listed file that is not an image is an error naming it.
        std::fs::write(d.path().join(LABELS_FILE), "path\tlabel\ns2/notes.txt\tx\n").unwrap();
        let f = ImageFolder::scan(d.path(), "label").unwrap();
        let e = load_set_with(&f.items, &f.classes, 16, 16, pre)
            .unwrap_err()
            .to_string();
        assert!(e.contains("notes.txt"), "{e}");

        // An empty folder is an error naming it.
        let empty = tempfile::tempdir().unwrap();
        let e = ImageFolder::scan(empty.path(), "label")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no images"), "{e}");
    }
}

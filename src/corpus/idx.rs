//! IDX files (the MNIST format), raw or gzipped.
//!
//! An IDX file is a big-endian header `0x00 0x00 TYPE NDIM`, then `NDIM` u32 dimensions, then the
//! data. twindex reads the unsigned-byte type (`0x08`) used by MNIST: `0x0801` for labels
//! (1-d) and `0x0803` for images (3-d). Every mismatch names the file and what was expected.

use crate::error::{Error, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// An IDX array of unsigned bytes.
#[derive(Debug, Clone)]
pub struct IdxArray {
    /// Dimensions, outermost first (images: `[n, rows, cols]`).
    pub dims: Vec<usize>,
    /// The row-major data, `dims.iter().product()` bytes.
    pub data: Vec<u8>,
}

/// Read a whole file, gunzipping it when it starts with the gzip magic (`1f 8b`).
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if raw.len() >= 2 && raw[0] == 0x1f && raw[1] == 0x8b {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| {
                Error::format(
                    path,
                    format!(
                        "gzip stream is damaged or truncated ({e}) after {} decompressed bytes",
                        out.len()
                    ),
                )
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parse IDX bytes (already decompressed). `path` is only used in error messages.
pub fn parse_idx(path: &Path, bytes: &[u8]) -> Result<IdxArray> {
    if bytes.len() < 4 {
        return Err(Error::format(
            path,
            format!(
                "file is {} bytes, shorter than the 4-byte IDX magic",
                bytes.len()
            ),
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(Error::format(
            path,
            format!(
                "bad IDX magic {:02x}{:02x}{:02x}{:02x}: expected 0000 then type and rank (e.g. 00000803 for images, 00000801 for labels)",
                bytes[0], bytes[1], bytes[2], bytes[3]
            ),
        ));
    }
    if bytes[2] != 0x08 {
        return Err(Error::format(
            path,
            format!(
                "IDX data type 0x{:02x} is not supported: expected 0x08 (unsigned byte)",
                bytes[2]
            ),
        ));
    }
    let ndim = bytes[3] as usize;
    if ndim == 0 {
        return Err(Error::format(
            path,
            "IDX rank is 0: expected at least one dimension",
        ));
    }
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(Error::format(
            path,
            format!(
                "truncated header: {ndim} dimensions need {header} bytes, file has {}",
                bytes.len()
            ),
        ));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|i| {
            let o = 4 + 4 * i;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect();
    let count = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::format(path, format!("dimensions {dims:?} overflow")))?;
    let have = bytes.len() - header;
    if have != count {
        let what = if have < count {
            "truncated"
        } else {
            "trailing bytes"
        };
        return Err(Error::format(
            path,
            format!(
                "{what}: dimensions {dims:?} need {count} data bytes after the {header}-byte header, found {have}"
            ),
        ));
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// Read an IDX file (raw or gzipped).
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let bytes = read_maybe_gz(path)?;
    parse_idx(path, &bytes)
}

/// A set of greyscale images of one size with optional labels.
#[derive(Debug, Clone)]
pub struct ImageSet {
    /// Number of images.
    pub n: usize,
    /// Rows (height) of each image.
    pub rows: usize,
    /// Columns (width) of each image.
    pub cols: usize,
    /// `n * rows * cols` pixels, image after image, row-major, 0..=255.
    pub pixels: Vec<u8>,
    /// One label per image (class id).
    pub labels: Vec<u32>,
}

impl ImageSet {
    /// The pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let s = self.rows * self.cols;
        &self.pixels[i * s..(i + 1) * s]
    }

    /// Pixels of image `i` as floats in `[0, 1]` (pixel / 255).
    pub fn image_f32(&self, i: usize) -> Vec<f32> {
        self.image(i).iter().map(|&p| p as f32 / 255.0).collect()
    }

    /// The images at `idx`, in that order.
    pub fn subset(&self, idx: &[usize]) -> ImageSet {
        let mut pixels = Vec::with_capacity(idx.len() * self.rows * self.cols);
        for &i in idx {
            pixels.extend_from_slice(self.image(i));
        }
        ImageSet {
            n: idx.len(),
            rows: self.rows,
            cols: self.cols,
            pixels,
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
        }
    }

    /// Split off `n` images as a held-out set, the same share of every class (a seeded draw):
    /// `(rest, held_out)`, each in the original order.
    pub fn split_holdout(&self, n: usize, seed: u64) -> (ImageSet, ImageSet) {
        let n = n.min(self.n);
        let mut held = vec![false; self.n];
        let mut taken = 0;
        let classes = crate::corpus::sampler::class_indices(&self.labels);
        for (c, members) in classes.iter().enumerate() {
            let mut m = members.clone();
            crate::corpus::sampler::shuffle(&mut m, seed.wrapping_add(c as u64));
            // Largest-remainder share of n for this class (the last class takes what is left).
            let share = if c + 1 == classes.len() {
                n - taken
            } else {
                ((n * members.len()) as f64 / self.n as f64).round() as usize
            };
            for &i in m.iter().take(share.min(n - taken)) {
                held[i] = true;
                taken += 1;
            }
        }
        let (h, r): (Vec<usize>, Vec<usize>) = (0..self.n).partition(|&i| held[i]);
        (self.subset(&r), self.subset(&h))
    }

    /// Number of distinct classes (max label + 1).
    pub fn n_classes(&self) -> usize {
        self.labels
            .iter()
            .map(|&l| l as usize + 1)
            .max()
            .unwrap_or(0)
    }
}

/// Read an images file (`0x0803`, 3-d).
pub fn read_images(path: &Path) -> Result<IdxArray> {
    let a = read_idx(path)?;
    if a.dims.len() != 3 {
        return Err(Error::format(
            path,
            format!(
                "expected a 3-d images file (magic 00000803), found {} dimensions {:?}",
                a.dims.len(),
                a.dims
            ),
        ));
    }
    Ok(a)
}

/// Read a labels file (`0x0801`, 1-d).
pub fn read_labels(path: &Path) -> Result<Vec<u32>> {
    let a = read_idx(path)?;
    if a.dims.len() != 1 {
        return Err(Error::format(
            path,
            format!(
                "expected a 1-d labels file (magic 00000801), found {} dimensions {:?}",
                a.dims.len(),
                a.dims
            ),
        ));
    }
    Ok(a.data.into_iter().map(u32::from).collect())
}

/// Read an images file and its labels file, checking that the counts agree.
pub fn read_image_set(images: &Path, labels: &Path) -> Result<ImageSet> {
    let a = read_images(images)?;
    let l = read_labels(labels)?;
    if a.dims[0] != l.len() {
        return Err(Error::format(
            labels,
            format!(
                "{} labels but {} has {} images: expected the same count",
                l.len(),
                images.display(),
                a.dims[0]
            ),
        ));
    }
    if a.dims[0] == 0 {
        return Err(Error::Empty(format!(
            "{} holds no images",
            images.display()
        )));
    }
    Ok(ImageSet {
        n: a.dims[0],
        rows: a.dims[1],
        cols: a.dims[2],
        pixels: a.data,
        labels: l,
    })
}

/// The four files of an MNIST-style corpus under a folder or prefix.
#[derive(Debug, Clone)]
pub struct IdxCorpusPaths {
    pub train_images: PathBuf,
    pub train_labels: PathBuf,
    pub test_images: PathBuf,
    pub test_labels: PathBuf,
}

impl IdxCorpusPaths {
    /// The canonical MNIST names in `dir` (`train-images-idx3-ubyte[.gz]`, ...); `.gz` is preferred
    /// when both exist, and a missing file is reported by name.
    pub fn in_dir(dir: &Path) -> Result<Self> {
        let pick = |stem: &str| -> Result<PathBuf> {
            let gz = dir.join(format!("{stem}.gz"));
            let raw = dir.join(stem);
            if gz.exists() {
                Ok(gz)
            } else if raw.exists() {
                Ok(raw)
            } else {
                Err(Error::io(
                    gz,
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("no {stem} or {stem}.gz in this folder"),
                    ),
                ))
            }
        };
        Ok(IdxCorpusPaths {
            train_images: pick("train-images-idx3-ubyte")?,
            train_labels: pick("train-labels-idx1-ubyte")?,
            test_images: pick("t10k-images-idx3-ubyte")?,
            test_labels: pick("t10k-labels-idx1-ubyte")?,
        })
    }
}

/// A train/test pair of image sets.
#[derive(Debug, Clone)]
pub struct TrainTest {
    pub train: ImageSet,
    pub test: ImageSet,
}

/// Load an MNIST-style corpus from a folder holding the four canonical IDX files.
pub fn load_idx_corpus(dir: &Path) -> Result<TrainTest> {
    let p = IdxCorpusPaths::in_dir(dir)?;
    let train = read_image_set(&p.train_images, &p.train_labels)?;
    let test = read_image_set(&p.test_images, &p.test_labels)?;
    if (train.rows, train.cols) != (test.rows, test.cols) {
        return Err(Error::format(
            &p.test_images,
            format!(
                "test images are {}x{} but train images are {}x{}: expected the same size",
                test.rows, test.cols, train.rows, train.cols
            ),
        ));
    }
    Ok(TrainTest { train, test })
}

/// Encode a 3-d unsigned-byte IDX array (used by tests and tools).
pub fn encode_idx(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holdout_split_is_stratified_disjoint_and_complete() {
        // 10 classes of 10 images; image i has label i % 10 and pixel value i.
        let set = ImageSet {
            n: 100,
            rows: 1,
            cols: 1,
            pixels: (0..100u8).collect(),
            labels: (0..100u32).map(|i| i % 10).collect(),
        };
        let (rest, held) = set.split_holdout(20, 7);
        assert_eq!((rest.n, held.n), (80, 20));
        for c in 0..10 {
            assert_eq!(
                held.labels.iter().filter(|&&l| l == c).count(),
                2,
                "class {c}"
            );
        }
        let mut all: Vec<u8> = rest.pixels.iter().chain(&held.pixels).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..100u8).collect::<Vec<_>>());
        for (p, l) in held.pixels.iter().zip(&held.labels) {
            assert_eq!(*p as u32 % 10, *l, "labels travel with their images");
        }
        assert_eq!(set.split_holdout(20, 7).1.pixels, held.pixels, "seeded");
        assert_ne!(set.split_holdout(20, 8).1.pixels, held.pixels);
    }

    #[test]
    fn round_trip_and_errors() {
        let p = Path::new("mem.idx");
        let bytes = encode_idx(&[2, 2, 3], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        let a = parse_idx(p, &bytes).unwrap();
        assert_eq!(a.dims, vec![2, 2, 3]);
        assert_eq!(a.data[11], 12);

        let e = parse_idx(p, &bytes[..bytes.len() - 1])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("mem.idx") && e.contains("truncated") && e.contains("found 11"),
            "{e}"
        );
        let mut bad = bytes.clone();
        bad[1] = 7;
        let e = parse_idx(p, &bad).unwrap_err().to_string();
        assert!(e.contains("bad IDX magic"), "{e}");
        let e = parse_idx(p, &bytes[..9]).unwrap_err().to_string();
        assert!(e.contains("truncated header"), "{e}");
        let mut extra = bytes.clone();
        extra.push(0);
        let e = parse_idx(p, &extra).unwrap_err().to_string();
        assert!(e.contains("trailing bytes"), "{e}");
        let mut ty = bytes;
        ty[2] = 0x0d;
        assert!(parse_idx(p, &ty)
            .unwrap_err()
            .to_string()
            .contains("not supported"));
    }
}

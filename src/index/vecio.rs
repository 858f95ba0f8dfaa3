//! Vector file formats: `.fvecs` / `.ivecs` (the ANN-benchmark formats: per row a
//! little-endian int32 dimension, then that many float32 / int32) and `.npy` (float32, 2-d,
//! C order, little-endian). Errors name the file and the byte offset.

use crate::error::{Error, Result};
use crate::fsutil::atomic_write_with;
use std::path::Path;

/// A dense row-major matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix<T> {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<T>,
}

impl<T> Matrix<T> {
    /// Row `i` (panics past the end, like slice indexing).
    pub fn row(&self, i: usize) -> &[T] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// Iterate over the rows.
    pub fn iter_rows(&self) -> impl Iterator<Item = &[T]> {
        self.data.chunks_exact(self.cols.max(1)).take(self.rows)
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

fn at(path: &Path, off: usize, msg: impl std::fmt::Display) -> Error {
    Error::format(path, format!("at byte {off}: {msg}"))
}

/// Parse `*vecs` content with 4-byte elements.
fn parse_vecs<T>(bytes: &[u8], path: &Path, conv: impl Fn([u8; 4]) -> T) -> Result<Matrix<T>> {
    let mut off = 0;
    let mut cols = None;
    let mut data = Vec::new();
    let mut rows = 0;
    while off < bytes.len() {
        let head = bytes.get(off..off + 4).ok_or_else(|| {
            at(
                path,
                off,
                format!("row {rows}: file ends inside the dimension field"),
            )
        })?;
        let d = i32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        if d <= 0 {
            return Err(at(
                path,
                off,
                format!("row {rows}: dimension {d} is not positive"),
            ));
        }
        let d = d as usize;
        match cols {
            None => cols = Some(d),
            Some(c) if c != d => {
                return Err(at(
                    path,
                    off,
                    format!("row {rows} has dimension {d}, the first row {c}"),
                ))
            }
            _ => {}
        }
        let body = bytes.get(off + 4..off + 4 + 4 * d).ok_or_else(|| {
            at(
                path,
                off + 4,
                format!(
                    "row {rows}: file ends after {} of {} bytes",
                    bytes.len() - off - 4,
                    4 * d
                ),
            )
        })?;
        data.extend(body.chunks_exact(4).map(|b| conv([b[0], b[1], b[2], b[3]])));
        off += 4 + 4 * d;
        rows += 1;
    }
    Ok(Matrix {
        rows,
        cols: cols.unwrap_or(0),
        data,
    })
}

/// Read a `.fvecs` file. An empty file gives 0 rows of 0 columns.
pub fn read_fvecs(path: &Path) -> Result<Matrix<f32>> {
    parse_vecs(&read(path)?, path, f32::from_le_bytes)
}

/// Read an `.ivecs` file (ground-truth neighbour ids).
pub fn read_ivecs(path: &Path) -> Result<Matrix<i32>> {
    parse_vecs(&read(path)?, path, i32::from_le_bytes)
}

fn write_vecs<T: Copy>(path: &Path, m: &Matrix<T>, le: impl Fn(T) -> [u8; 4]) -> Result<()> {
    check_shape(m)?;
    atomic_write_with(path, |w| {
        let mut buf = Vec::with_capacity(4 + 4 * m.cols);
        for r in m.iter_rows() {
            buf.clear();
            buf.extend_from_slice(&(m.cols as i32).to_le_bytes());
            for &x in r {
                buf.extend_from_slice(&le(x));
            }
            w.write_all(&buf)?;
        }
        Ok(())
    })
}

fn check_shape<T>(m: &Matrix<T>) -> Result<()> {
    if m.data.len() != m.rows * m.cols || m.cols > i32::MAX as usize {
        return Err(Error::Shape(format!(
            "matrix of {} values is not {} x {}",
            m.data.len(),
            m.rows,
            m.cols
        )));
    }
    Ok(())
}

/// Write a `.fvecs` file atomically.
pub fn write_fvecs(path: &Path, m: &Matrix<f32>) -> Result<()> {
    write_vecs(path, m, f32::to_le_bytes)
}

/// Write an `.ivecs` file atomically.
pub fn write_ivecs(path: &Path, m: &Matrix<i32>) -> Result<()> {
    write_vecs(path, m, i32::to_le_bytes)
}

const NPY_MAGIC: &[u8] = b"\x93NUMPY";

/// Read a `.npy` file holding a 2-d little-endian float32 array in C order.
pub fn read_npy(path: &Path) -> Result<Matrix<f32>> {
    let bytes = read(path)?;
    if bytes.len() < 10 || &bytes[..6] != NPY_MAGIC {
        return Err(at(path, 0, "not a .npy file (bad magic)"));
    }
    let major = bytes[6];
    let (hlen, hstart) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            let b = bytes
                .get(8..12)
                .ok_or_else(|| at(path, 8, "file ends inside the header length"))?;
            (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12)
        }
        v => {
            return Err(at(
                path,
                6,
                format!("npy format version {v} is not supported"),
            ))
        }
    };
    let header = bytes.get(hstart..hstart + hlen).ok_or_else(|| {
        at(
            path,
            hstart,
            format!("file ends inside the {hlen}-byte header"),
        )
    })?;
    let header = std::str::from_utf8(header).map_err(|_| at(path, hstart, "header is not text"))?;
    let descr =
        dict_value(header, "descr").ok_or_else(|| at(path, hstart, "header has no 'descr'"))?;
    let descr = descr.trim().trim_matches(|c| c == '\'' || c == '"');
    let little = cfg!(target_endian = "little");
    if !(descr == "<f4" || (descr == "=f4" && little)) {
        return Err(at(
            path,
            hstart,
            format!("dtype {descr:?} is not supported: expected little-endian float32 '<f4'"),
        ));
    }
    let fortran = dict_value(header, "fortran_order")
        .ok_or_else(|| at(path, hstart, "header has no 'fortran_order'"))?;
    if fortran.trim() != "False" {
        return Err(at(
            path,
            hstart,
            "Fortran-order arrays are not supported: save in C order",
        ));
    }
    let shape =
        dict_value(header, "shape").ok_or_else(|| at(path, hstart, "header has no 'shape'"))?;
    let dims: Vec<usize> = shape
        .trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| {
            at(
                path,
                hstart,
                format!("shape {shape:?} is not a tuple of sizes"),
            )
        })?;
    let (rows, cols) = match dims[..] {
        [r, c] => (r, c),
        _ => {
            return Err(at(
                path,
                hstart,
                format!(
                    "array has {} dimensions {dims:?}; expected 2 (rows, dim)",
                    dims.len()
                ),
            ))
        }
    };
    let data_start = hstart + hlen;
    let want = rows
        .checked_mul(cols)
        .and_then(|n| n.checked_mul(4))
        .ok_or_else(|| at(path, hstart, format!("shape {dims:?} is too large")))?;
    let body = &bytes[data_start..];
    if body.len() != want {
        return Err(at(
            path,
            data_start,
            format!(
                "data is {} bytes, shape ({rows}, {cols}) of float32 needs {want}",
                body.len()
            ),
        ));
    }
    Ok(Matrix {
        rows,
        cols,
        data: body
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    })
}

/// The text after `'key':` in a Python dict literal, up to the next top-level comma.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("'{key}':");
    let start = header.find(&pat)? + pat.len();
    let rest = &header[start..];
    let mut depth = 0i32;
    for (i, c) in rest.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' | '}' if depth == 0 => return Some(&rest[..i]),
            _ => {}
        }
    }
    Some(rest)
}

/// Write a 2-d float32 `.npy` file (format 1.0) atomically.
pub fn write_npy(path: &Path, m: &Matrix<f32>) -> Result<()> {
    check_shape(m)?;
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}",
        m.rows, m.cols
    );
    // Pad so that the data starts 64-byte aligned; the header ends with a newline.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    if header.len() > u16::MAX as usize {
        return Err(Error::Shape("npy header too long".into()));
    }
    atomic_write_with(path, |w| {
        w.write_all(NPY_MAGIC)?;
        w.write_all(&[1, 0])?;
        w.write_all(&(header.len() as u16).to_le_bytes())?;
        w.write_all(header.as_bytes())?;
        let mut buf = Vec::with_capacity(4 * m.cols);
        for r in m.iter_rows() {
            buf.clear();
            r.iter()
                .for_each(|x| buf.extend_from_slice(&x.to_le_bytes()));
            w.write_all(&buf)?;
        }
        Ok(())
    })
}

/// Read vectors by extension: `.fvecs` or `.npy`.
pub fn read_vectors(path: &Path) -> Result<Matrix<f32>> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("fvecs") => read_fvecs(path),
        Some("npy") => read_npy(path),
        _ => Err(Error::format(
            path,
            "unknown vector file type: expected .fvecs or .npy",
        )),
    }
}

//! Pen trajectories (online signatures): SVC2004 text files and a plain `x,y,t,pen` CSV form,
//! and the SVC2004 corpus layout (`U{user}S{sample}.TXT`).
//!
//! SVC2004 Task 1 (`U1S1.TXT`): the first line is the number of points N, then N lines
//! `X Y T BUTTON` (integer tablet coordinates, time in ms, 1 = pen down, 0 = pen up; a few
//! files of users 16, 25 and 26 also have 2-5 mid-stroke, read as pen down). The CSV
//! form has one `x,y,t,pen` line per point and an optional header line starting with `x`.
//! Blank lines and `\r` line ends are accepted; anything else malformed is an error naming the
//! file and the line.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// How far the clock may step back between two points before the file is rejected as
/// non-monotonic, in ms. SVC2004's tablet clock jitters: 54 of the 1,200 Task 1 files of users
/// 1-30 step back, by at most 25 ms, between points 10 ms apart. Such steps are kept in the
/// data as read and smoothed over by [`Trajectory::monotonic_times`].
pub const MAX_TIME_BACKSTEP_MS: f64 = 50.0;

/// One sample of the pen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PenPoint {
    pub x: f64,
    pub y: f64,
    /// Time in ms.
    pub t: f64,
    /// Pen on the tablet.
    pub down: bool,
}

/// A pen trajectory read from `path`.
#[derive(Debug, Clone, PartialEq)]
pub struct Trajectory {
    pub path: PathBuf,
    pub points: Vec<PenPoint>,
}

impl Trajectory {
    /// Times made non-decreasing (a backward step of the clock repeats the previous time).
    pub fn monotonic_times(&self) -> Vec<f64> {
        let mut last = f64::NEG_INFINITY;
        self.points
            .iter()
            .map(|p| {
                last = last.max(p.t);
                last
            })
            .collect()
    }
}

fn parse_num(path: &Path, line: usize, field: &str, s: &str) -> Result<f64> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(Error::format(
            path,
            format!("line {line}: {field} is not a number: {:?}", s.trim()),
        )),
    }
}

fn parse_point(path: &Path, line: usize, fields: &[&str]) -> Result<PenPoint> {
    if fields.len() != 4 {
        return Err(Error::format(
            path,
            format!(
                "line {line}: expected 4 fields (x y t pen), got {}",
                fields.len()
            ),
        ));
    }
    let x = parse_num(path, line, "x", fields[0])?;
    let y = parse_num(path, line, "y", fields[1])?;
    let t = parse_num(path, line, "t", fields[2])?;
    let pen = parse_num(path, line, "pen", fields[3])?;
    if pen < 0.0 || pen.fract() != 0.0 {
        return Err(Error::format(
            path,
            format!("line {line}: pen must be a whole number >= 0 (0 = up), got {pen}"),
        ));
    }
    Ok(PenPoint {
        x,
        y,
        t,
        down: pen != 0.0,
    })
}

/// Parse trajectory text (SVC2004 or CSV, told apart by the first line: one number is
/// SVC2004's point count). `path` names the source in errors.
pub fn parse_trajectory(path: &Path, text: &str) -> Result<Trajectory> {
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty())
        .collect();
    let Some(&(first_no, first)) = lines.first() else {
        return Err(Error::format(path, "zero points: the file is empty"));
    };
    let svc = !first.contains([',', ' ', '\t']);
    let mut points = Vec::new();
    let mut numbers = Vec::new();
    if svc {
        let n: usize = first.parse().map_err(|_| {
            Error::format(
                path,
                format!("line {first_no}: point count is not a whole number: {first:?}"),
            )
        })?;
        let body = &lines[1..];
        if body.len() != n {
            return Err(Error::format(
                path,
                format!(
                    "line {first_no}: point count says {n} points, the file has {}",
                    body.len()
                ),
            ));
        }
        for &(no, l) in body {
            let f: Vec<&str> = l.split_whitespace().collect();
            points.push(parse_point(path, no, &f)?);
            numbers.push(no);
        }
    } else {
        let header = first
            .trim_start_matches('\u{feff}')
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic());
        for &(no, l) in &lines[usize::from(header)..] {
            let f: Vec<&str> = l.split(',').collect();
            points.push(parse_point(path, no, &f)?);
            numbers.push(no);
        }
    }
    if points.is_empty() {
        return Err(Error::format(path, "zero points"));
    }
    if !points.iter().any(|p| p.down) {
        return Err(Error::format(path, "no pen-down point"));
    }
    for i in 1..points.len() {
        if points[i].t < points[i - 1].t - MAX_TIME_BACKSTEP_MS {
            return Err(Error::format(
                path,
                format!(
                    "line {}: time goes back from {} to {} ms (non-monotonic; at most {} ms of clock jitter is accepted)",
                    numbers[i],
                    points[i - 1].t,
                    points[i].t,
                    MAX_TIME_BACKSTEP_MS
                ),
            ));
        }
    }
    Ok(Trajectory {
        path: path.to_path_buf(),
        points,
    })
}

/// Read a trajectory file (SVC2004 `.TXT` or `x,y,t,pen` CSV).
pub fn read_trajectory(path: &Path) -> Result<Trajectory> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_trajectory(path, &text)
}

/// One online signature of an SVC2004-style corpus.
#[derive(Debug, Clone, PartialEq)]
pub struct PenSignature {
    pub path: PathBuf,
    pub writer: usize,
    pub sample: usize,
    /// Samples 1-20 are genuine, 21-40 skilled forgeries.
    pub genuine: bool,
}

/// `U{u}S{s}.TXT` (any case) -> (u, s).
pub fn svc_name(name: &str) -> Option<(usize, usize)> {
    let up = name.to_ascii_uppercase();
    let stem = up.strip_suffix(".TXT")?.strip_prefix('U')?;
    let (u, s) = stem.split_once('S')?;
    Some((u.parse().ok()?, s.parse().ok()?))
}

/// The signatures of an SVC2004 Task 1 folder (files `U{u}S{s}.TXT`), sorted by writer and
/// sample. Only the listing: the files are read when used.
pub fn scan_svc2004(dir: &Path) -> Result<Vec<PenSignature>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(|e| Error::io(dir, e))?;
        let name = e.file_name().to_string_lossy().to_string();
        if let Some((writer, sample)) = svc_name(&name) {
            out.push(PenSignature {
                path: e.path(),
                writer,
                sample,
                genuine: sample <= 20,
            });
        }
    }
    if out.is_empty() {
        return Err(Error::Empty(format!(
            "{}: no SVC2004 trajectory files (U{{user}}S{{sample}}.TXT)",
            dir.display()
        )));
    }
    out.sort_by_key(|s| (s.writer, s.sample));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svc_and_csv_forms() {
        let p = Path::new("a.txt");
        let t = parse_trajectory(p, "2\r\n1 2 10 0\r\n3 4 20 1\r\n").unwrap();
        assert_eq!(t.points.len(), 2);
        assert_eq!(
            t.points[1],
            PenPoint {
                x: 3.0,
                y: 4.0,
                t: 20.0,
                down: true
            }
        );
        let c = parse_trajectory(p, "x,y,t,pen\n1,2,10,1\n3.5,4,20,1\n").unwrap();
        assert_eq!(c.points[1].x, 3.5);
        let c = parse_trajectory(p, "1,2,10,1\n3.5,4,20,1\n").unwrap();
        assert_eq!(c.points.len(), 2);
        assert_eq!(svc_name("U12S33.TXT"), Some((12, 33)));
        assert_eq!(svc_name("README.txt"), None);
    }

    #[test]
    fn backstep_error_names_the_line() {
        let e = parse_trajectory(Path::new("b.txt"), "3\n0 0 100 1\n1 1 110 1\n2 2 10 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("b.txt") && e.contains("line 4"), "{e}");
        let e = parse_trajectory(Path::new("b.csv"), "x,y,t,pen\n0,0,100,1\n1,1,10,1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3"), "{e}");
        // Clock jitter within the tolerance is accepted and smoothed.
        let t =
            parse_trajectory(Path::new("c.txt"), "3\n0 0 100 1\n1 1 92 1\n2 2 110 1\n").unwrap();
        assert_eq!(t.monotonic_times(), vec![100.0, 100.0, 110.0]);
    }
}
